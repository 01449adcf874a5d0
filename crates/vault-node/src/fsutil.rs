//! Small file-system helpers: random names, private files, a guard that
//! removes a temp file unless it was committed, and the crate's one atomic
//! replacement (temp file, write, `sync_all`, rename, fsync the folder):
//! [`write_atomic`] for bytes in memory (records, certificates, secrets,
//! the users file), and its steps, [`Synced`] (synced, then renamed) and
//! [`sync_dir`], for the blob store's uploads, which record each rename in
//! the index and sync a batch's folder once.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `n` random bytes as lower-case hex.
pub(crate) fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| io::Error::other(format!("random generator: {e}")))?;
    Ok(hex::encode(buf))
}

/// Opens a new file (failing if it exists) readable by its owner only.
pub(crate) fn create_new_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Flushes a folder's entries (a rename inside it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// Deletes the file at `path` when dropped, unless [`TempGuard::commit`]
/// was called. Runs on every failure path, including a dropped task.
#[derive(Debug)]
pub(crate) struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempGuard { path: Some(path) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The file was renamed away: nothing left to clean up.
    pub(crate) fn commit(mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove temp file");
                }
            }
        }
    }
}

/// A temp file whose bytes are all written and on disk (`sync_all`),
/// closed, waiting to be renamed into place; removed if dropped first.
#[derive(Debug)]
pub(crate) struct Synced {
    guard: TempGuard,
    meta: fs::Metadata,
}

impl Synced {
    /// Flushes `file`, written in full at `guard`'s path, to disk and
    /// closes it.
    pub(crate) fn new(file: File, guard: TempGuard) -> io::Result<Synced> {
        file.sync_all()?;
        let meta = file.metadata()?;
        drop(file);
        Ok(Synced { guard, meta })
    }

    /// The synced file's metadata (length, modification time).
    pub(crate) fn metadata(&self) -> &fs::Metadata {
        &self.meta
    }

    /// Where the synced file is (for reading it back).
    pub(crate) fn path(&self) -> &Path {
        self.guard.path()
    }

    /// Renames the file over `target`. It is visible at once and durable
    /// once `target`'s folder is synced ([`sync_dir`]), which the caller
    /// must do before telling anyone it is stored. On failure the temp
    /// file is removed.
    pub(crate) fn rename(self, target: &Path) -> io::Result<()> {
        fs::rename(self.guard.path(), target)?;
        self.guard.commit();
        Ok(())
    }
}

/// The folder holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Replaces `path` with `data` atomically. With `private`, a new file is
/// created mode 0600; otherwise an existing file's permissions are kept.
pub(crate) fn write_atomic(path: &Path, data: &[u8], private: bool) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_dir(path).join(format!(".{name}.{}.tmp", random_hex(8)?));
    let guard = TempGuard::new(tmp);
    let mut file = create_new_private(guard.path())?;
    if !private {
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
    }
    file.write_all(data)?;
    Synced::new(file, guard)?.rename(path)?;
    sync_dir(&parent_dir(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", true).unwrap();
        write_atomic(&p, b"two", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn a_synced_file_is_removed_unless_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, target) = (dir.path().join("t.tmp"), dir.path().join("t"));
        let guard = TempGuard::new(tmp.clone());
        let mut file = create_new_private(guard.path()).unwrap();
        file.write_all(b"abc").unwrap();
        let synced = Synced::new(file, guard).unwrap();
        assert_eq!(synced.metadata().len(), 3);
        drop(synced);
        assert!(!tmp.exists() && !target.exists());
        // A failed rename removes it too.
        let guard = TempGuard::new(tmp.clone());
        let file = create_new_private(guard.path()).unwrap();
        let synced = Synced::new(file, guard).unwrap();
        assert!(synced.rename(&dir.path().join("no/such/dir")).is_err());
        assert!(!tmp.exists());
    }

    #[test]
    fn guard_removes_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, b"x").unwrap();
        drop(TempGuard::new(a.clone()));
        assert!(!a.exists());
        let b = dir.path().join("b");
        fs::write(&b, b"x").unwrap();
        TempGuard::new(b.clone()).commit();
        assert!(b.exists());
    }
}
