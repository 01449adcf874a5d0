//! 32-byte secrets kept in files of their own (mode 0600): the per-node
//! `node.secret` and the cluster-wide `cluster.secret`.
//!
//! The cluster secret is written by `vault-node certs` next to the
//! certificates and copied to every node with them. Nodes key the decoy
//! Argon2id salts of unknown user names with it, so all nodes of a cluster
//! announce the same salt for a name, exactly as they do for a real account
//! (whose salt is in the shared users file or key record). Without it, each
//! node would announce its own salt, and comparing two nodes' answers would
//! tell unknown names from real ones.

use std::io::{self, Read};
use std::path::Path;

use zeroize::Zeroizing;

use crate::fsutil::write_atomic;

/// File name of the cluster secret in the certificates folder.
pub const CLUSTER_SECRET_FILE: &str = "cluster.secret";

/// Length of every secret file.
pub const SECRET_LEN: usize = 32;

/// The cluster-wide secret; zeroed on drop, never printed.
#[derive(Clone)]
pub struct ClusterSecret(Zeroizing<[u8; SECRET_LEN]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// A fresh random secret.
    pub fn random() -> io::Result<Self> {
        Ok(ClusterSecret(random()?))
    }

    /// A secret with these bytes.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        ClusterSecret(Zeroizing::new(bytes))
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// Reads the secret at `path`; `None` if there is no such file.
    pub fn read(path: &Path) -> io::Result<Option<Self>> {
        Ok(read(path)?.map(ClusterSecret))
    }

    /// Reads the secret at `path`, creating it (mode 0600) if missing.
    /// `true` with the secret if it was created.
    pub fn load_or_create(path: &Path) -> io::Result<(Self, bool)> {
        let (secret, created) = load_or_create(path)?;
        Ok((ClusterSecret(secret), created))
    }

    pub(crate) fn into_inner(self) -> Zeroizing<[u8; SECRET_LEN]> {
        self.0
    }
}

fn random() -> io::Result<Zeroizing<[u8; SECRET_LEN]>> {
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    getrandom::fill(secret.as_mut())
        .map_err(|e| io::Error::other(format!("random generator: {e}")))?;
    Ok(secret)
}

/// Reads exactly [`SECRET_LEN`] bytes from `path` (reading at most one
/// more); `None` if the file does not exist.
pub(crate) fn read(path: &Path) -> io::Result<Option<Zeroizing<[u8; SECRET_LEN]>>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Zeroizing::new(Vec::new());
    Read::by_ref(&mut f)
        .take(SECRET_LEN as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() != SECRET_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("secret must be exactly {SECRET_LEN} bytes"),
        ));
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    secret.copy_from_slice(&buf);
    Ok(Some(secret))
}

/// Reads the secret at `path`, or creates it (random, mode 0600, written
/// atomically: a crash leaves no secret or the whole one, never a short
/// file).
pub(crate) fn load_or_create(path: &Path) -> io::Result<(Zeroizing<[u8; SECRET_LEN]>, bool)> {
    if let Some(secret) = read(path)? {
        return Ok((secret, false));
    }
    let secret = random()?;
    write_atomic(path, secret.as_ref(), true)?;
    Ok((secret, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(CLUSTER_SECRET_FILE);
        assert!(ClusterSecret::read(&p).unwrap().is_none());
        let (a, created) = ClusterSecret::load_or_create(&p).unwrap();
        assert!(created);
        let (b, created) = ClusterSecret::load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(a.expose(), b.expose());
        assert_eq!(format!("{a:?}"), "ClusterSecret(<redacted>)");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        for bad in [&[1u8; 31][..], &[1u8; 33][..], &[][..]] {
            std::fs::write(&p, bad).unwrap();
            assert!(ClusterSecret::read(&p).is_err(), "{} bytes", bad.len());
        }
    }
}
