//! What every handler of a running node shares, and preparing its root.

use std::path::Path;

use anyhow::Context;
use zeroize::Zeroizing;

use crate::records::RecordStore;
use crate::store::BlobStore;
use crate::throttle::Throttle;
use crate::users::UserDb;

/// Folder under the root for node metadata (never a user folder: user
/// names cannot start with a dot).
pub(crate) const META_DIR: &str = ".vault";

/// Shared state of a running node.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The node's name (`DFS1`), bound into login signatures.
    pub name: String,
    pub users: UserDb,
    pub blobs: BlobStore,
    pub records: RecordStore,
    pub throttle: Throttle,
    /// Key for decoy salts of unknown users: the cluster secret, or the
    /// node secret when the node has none.
    pub secret: Zeroizing<[u8; 32]>,
    pub max_blob_len: u64,
    /// Most bytes a user may keep on this node (`None`: no limit).
    pub quota: Option<u64>,
}

/// Creates the root's folders, removes leftover uploads and loads (or
/// creates, mode 0600) the node secret.
pub(crate) fn prepare_root(root: &Path) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let records = root.join(META_DIR).join("records");
    std::fs::create_dir_all(&records)
        .with_context(|| format!("failed to create {}", records.display()))?;
    let removed = BlobStore::new(root)
        .clean_temp()
        .with_context(|| format!("failed to clean temp files under {}", root.display()))?;
    if removed > 0 {
        tracing::info!(removed, "removed interrupted uploads");
    }
    let path = root.join(META_DIR).join("node.secret");
    let (secret, _) = crate::secret::load_or_create(&path)
        .with_context(|| format!("failed to load {}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_created_once() {
        let root = tempfile::tempdir().unwrap();
        let a = prepare_root(root.path()).unwrap();
        let b = prepare_root(root.path()).unwrap();
        assert_eq!(*a, *b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let p = root.path().join(".vault/node.secret");
            assert_eq!(
                std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
