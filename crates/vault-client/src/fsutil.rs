//! Replacing a local file atomically: a temporary file in the same folder,
//! written, `sync_all`, given its permissions, renamed over the target, and
//! the folder synced. A guard removes the temporary file on any failure.
//! The one implementation in the client crate.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Deletes a temporary file when dropped, unless disarmed.
#[derive(Debug)]
pub(crate) struct TempGuard(Option<PathBuf>);

impl TempGuard {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempGuard(Some(path))
    }

    /// The file was renamed away or must stay.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// The folder holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates a new file next to `target` named `.<target name>.<random>.<ext>`:
/// readable by its owner only if `private`, else with the usual mode (the
/// umask decides).
pub(crate) fn create_temp_beside(
    target: &Path,
    ext: &str,
    private: bool,
) -> io::Result<(PathBuf, File)> {
    let dir = parent_dir(target);
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut last_err = None;
    for _ in 0..8 {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = dir.join(format!(".{base}.{}.{ext}", hex::encode(rnd)));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        match opts.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temporary file")))
}

/// Flushes a folder's entries (a rename inside it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Moves a finished temporary file to `target`: renamed over it with
/// `replace`, else hard-linked so an existing `target` (even one that
/// appeared meanwhile) is never replaced (`AlreadyExists`). The temporary
/// name is removed either way by the caller's guard.
pub(crate) fn publish(tmp: &Path, target: &Path, replace: bool) -> io::Result<()> {
    if replace {
        fs::rename(tmp, target)
    } else {
        fs::hard_link(tmp, target)
    }
}

/// Writes `contents` to a new file at `target` through a temporary file
/// beside it (synced), published with [`publish`]; the usual file mode.
pub(crate) fn write_new(target: &Path, contents: &[u8], replace: bool) -> io::Result<()> {
    let (tmp, mut file) = create_temp_beside(target, "vault-partial", false)?;
    let guard = TempGuard::new(tmp.clone());
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    publish(&tmp, target, replace)?;
    if replace {
        // Renamed away: nothing left to remove.
        guard.disarm();
    } else {
        // Linked: the temporary name goes with the guard.
        drop(guard);
    }
    sync_dir(&parent_dir(target))
}

/// Replaces `target` with `contents` atomically. An existing target keeps
/// its permissions; a new one is created readable by its owner only.
pub(crate) fn write_atomic(target: &Path, contents: &[u8]) -> io::Result<()> {
    let permissions = fs::metadata(target).ok().map(|m| m.permissions());
    let (tmp, mut file) = create_temp_beside(target, "tmp", true)?;
    let guard = TempGuard::new(tmp.clone());
    if let Some(p) = permissions {
        file.set_permissions(p)?;
    }
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, target)?;
    guard.disarm();
    sync_dir(&parent_dir(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_keeps_permissions_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        }
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o640
            );
        }
    }
}
