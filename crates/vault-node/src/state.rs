//! What every handler of a running node shares, and preparing its root.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use zeroize::Zeroizing;

use crate::fsutil::{create_new_private, sync_dir};
use crate::records::RecordStore;
use crate::store::BlobStore;
use crate::throttle::Throttle;
use crate::users::UserDb;

/// Folder under the root for node metadata (never a user folder: user
/// names cannot start with a dot).
pub(crate) const META_DIR: &str = ".vault";

/// Shared state of a running node.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// The node's name (`DFS1`), bound into login signatures.
    pub name: String,
    pub users: UserDb,
    pub blobs: BlobStore,
    pub records: RecordStore,
    pub throttle: Throttle,
    /// Key for decoy salts of unknown users.
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
    load_or_create_secret(&path).with_context(|| format!("failed to load {}", path.display()))
}

fn load_or_create_secret(path: &Path) -> std::io::Result<Zeroizing<[u8; 32]>> {
    let mut secret = Zeroizing::new([0u8; 32]);
    match std::fs::File::open(path) {
        Ok(mut f) => {
            let mut buf = Zeroizing::new(Vec::new());
            Read::by_ref(&mut f).take(33).read_to_end(&mut buf)?;
            if buf.len() != 32 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "node secret must be exactly 32 bytes",
                ));
            }
            secret.copy_from_slice(&buf);
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            getrandom::fill(secret.as_mut())
                .map_err(|e| std::io::Error::other(format!("random generator: {e}")))?;
            let mut f = create_new_private(path)?;
            f.write_all(secret.as_ref())?;
            f.sync_all()?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            Ok(secret)
        }
        Err(e) => Err(e),
    }
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
