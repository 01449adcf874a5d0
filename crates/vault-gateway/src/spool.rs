//! The private folder where uploads wait: a PUT needs the whole file's MD5
//! before its parts can be placed, so the bytes are written here first
//! (plaintext, on the user's own machine only), then stored as a vault PUT
//! and removed.
//!
//! The folder is `<dfc.conf>.spool/`, mode 0700, files 0600. One gateway
//! at a time uses it (`lock`, held with `flock` while the gateway runs);
//! whatever an earlier gateway left (it was killed) is removed at start.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The spool folder, locked for this process.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Held open: the `flock` lasts as long as it.
    _lock: File,
}

/// A file in the spool, removed when dropped.
#[derive(Debug)]
pub struct SpoolFile {
    /// Where it is.
    pub path: PathBuf,
}

impl SpoolFile {
    /// A guard for `path`: removed when dropped unless disarmed.
    pub fn at(path: PathBuf) -> SpoolFile {
        SpoolFile { path }
    }

    /// Keeps the file (it was moved into place).
    pub fn disarm(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another gateway holds it.
    #[error(
        "{0} is in use by another `vault-client serve` for this dfc.conf; stop that one first"
    )]
    InUse(String),
    /// The folder could not be made or cleared.
    #[error("spool folder {}: {source}", path.display())]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// Opens (making it when missing) the spool folder `dir`, locks it and
    /// empties it of everything an earlier gateway left.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(dir)(e)),
        }
        let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
        if !meta.is_dir() {
            return Err(io(dir)(std::io::Error::other("not a folder")));
        }
        // Private whatever it was made with.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(SpoolError::InUse(dir.display().to_string()))
            }
            Err(e) => return Err(io(&lock_path)(e.into())),
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        let left = spool.clear().map_err(io(dir))?;
        if left > 0 {
            tracing::info!("removed {left} spooled uploads an earlier gateway left");
        }
        Ok(spool)
    }

    /// Removes everything but the lock; how many entries went. At start,
    /// and when the gateway stops (unfinished multipart uploads hold
    /// plaintext).
    pub fn clear(&self) -> std::io::Result<usize> {
        let mut n = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name() == "lock" {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
            n += 1;
        }
        Ok(n)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, not yet created, spool file name (random), removed when the
    /// returned guard drops.
    pub fn file(&self) -> std::io::Result<SpoolFile> {
        Ok(SpoolFile {
            path: self.dir.join(format!("up-{}", random_hex(12)?)),
        })
    }

    /// A new private folder for one multipart upload (removed by
    /// [`Spool::remove_upload`]).
    pub fn upload_dir(&self, id: &str) -> std::io::Result<PathBuf> {
        let dir = self.dir.join(format!("mpu-{id}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(dir)
    }

    /// Removes a multipart upload's folder.
    pub fn remove_upload(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join(format!("mpu-{id}")));
    }
}

/// `n` random bytes in hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(b))
}

/// Creates `path` (new, 0600) for writing.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}
