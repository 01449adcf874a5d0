//! Replacing a local file atomically: a temporary file in the same folder,
//! written, `sync_all`, given its permissions, renamed over the target, and
//! the folder synced. A guard removes the temporary file on any failure.
//! The one implementation in the client crate.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Extension of the hidden file a download is written to before it is
/// published: `.NAME.<hex>.vault-partial`.
pub(crate) const PARTIAL_EXT: &str = "vault-partial";

/// How long a partial download must have gone unwritten, with no process
/// holding it, before [`sweep_partials`] removes it.
pub(crate) const PARTIAL_STALE: Duration = Duration::from_secs(60);

/// Creates the hidden partial file a download of `target` is written to,
/// locked (`flock`) for as long as it is open: while the downloading
/// process lives, [`sweep_partials`] leaves it alone.
pub(crate) fn create_partial(target: &Path) -> io::Result<(PathBuf, File)> {
    let (tmp, file) = create_temp_beside(target, PARTIAL_EXT, false)?;
    // Where locks are unsupported the file is not locked, and the sweep
    // (which cannot lock it either) never removes it.
    let _ = file.try_lock();
    Ok((tmp, file))
}

/// Removes the partial downloads in `dir` left by downloads that died
/// (killed, or the machine stopped): hidden `*.vault-partial` files that
/// no process holds and that were last written [`PARTIAL_STALE`] ago or
/// more. Returns how many went. Best effort: anything it cannot read,
/// lock or remove stays.
pub(crate) fn sweep_partials(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with('.') || !name.ends_with(&format!(".{PARTIAL_EXT}")) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let stale = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= PARTIAL_STALE);
        if !meta.is_file() || !stale {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed partial downloads left by interrupted GETs");
    }
    removed
}

/// Gives `file` the modification time `mtime_ns` (nanoseconds since the
/// epoch, as a manifest stores it); `None` leaves the time alone.
pub(crate) fn set_mtime_ns(file: &File, mtime_ns: Option<u64>) -> io::Result<()> {
    let Some(ns) = mtime_ns else {
        return Ok(());
    };
    let when = std::time::UNIX_EPOCH + Duration::from_nanos(ns);
    file.set_modified(when)
}

/// One file of [`write_many`]: where, what, and its stored time.
pub(crate) struct NewFile<'a> {
    pub target: &'a Path,
    pub contents: &'a [u8],
    pub mtime_ns: Option<u64>,
}

/// Writes new files through temporary files beside them (given their
/// stored modification times), each with its own result, published with
/// [`publish`]. A file appears under its name only with all its bytes
/// durable, and a crash leaves at most a `.vault-partial`; at a fraction
/// of the cost of syncing each file and folder: every file is written to its partial first, then
/// one `syncfs` per file system makes them all durable, then they are
/// published, then one more `syncfs` makes the names durable. Where
/// `syncfs` is not available, each file is synced on its own.
pub(crate) fn write_many(files: &[NewFile<'_>], replace: bool) -> Vec<io::Result<()>> {
    let mut results: Vec<io::Result<()>> = Vec::with_capacity(files.len());
    let mut open: Vec<Option<(PathBuf, File, TempGuard)>> = Vec::with_capacity(files.len());
    for f in files {
        let written = (|| {
            let (tmp, mut file) = create_partial(f.target)?;
            let guard = TempGuard::new(tmp.clone());
            file.write_all(f.contents)?;
            set_mtime_ns(&file, f.mtime_ns)?;
            Ok::<_, io::Error>((tmp, file, guard))
        })();
        match written {
            Ok(w) => {
                open.push(Some(w));
                results.push(Ok(()));
            }
            Err(e) => {
                open.push(None);
                results.push(Err(e));
            }
        }
    }
    let files_open: Vec<&File> = open.iter().flatten().map(|(_, f, _)| f).collect();
    if let Err(e) = sync_all_of(&files_open) {
        for (r, o) in results.iter_mut().zip(&open) {
            if o.is_some() {
                *r = Err(io::Error::new(e.kind(), e.to_string()));
            }
        }
        return results;
    }
    let mut published: Vec<File> = Vec::new();
    for ((r, o), f) in results.iter_mut().zip(open).zip(files) {
        let Some((tmp, file, guard)) = o else {
            continue;
        };
        match publish(&tmp, f.target, replace) {
            Ok(()) => {
                if replace {
                    guard.disarm();
                } else {
                    drop(guard);
                }
                published.push(file);
            }
            Err(e) => *r = Err(e),
        }
    }
    // The new names: one more sync of the same file systems.
    let refs: Vec<&File> = published.iter().collect();
    if let Err(e) = sync_all_of(&refs) {
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(io::Error::new(e.kind(), e.to_string()));
        }
    }
    results
}

/// Makes `files` (and the folders naming them) durable: one `syncfs` per
/// file system on Linux, else `sync_all` of each.
fn sync_all_of(files: &[&File]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let mut done: Vec<u64> = Vec::new();
        for f in files {
            let dev = f.metadata()?.dev();
            if !done.contains(&dev) {
                rustix::fs::syncfs(f)?;
                done.push(dev);
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        for f in files {
            f.sync_all()?;
        }
        Ok(())
    }
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

    /// Makes `path` look last written `ago` in the past.
    fn age(path: &Path, ago: Duration) {
        let when = std::time::SystemTime::now() - ago;
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn write_many_publishes_each_file_with_its_bytes_and_time_and_reports_each_failure() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        let b = dir.path().join("b.bin");
        std::fs::write(&b, b"already here").unwrap();
        let c = dir.path().join("no such folder").join("c.bin");
        let files = [
            NewFile {
                target: &a,
                contents: b"alpha",
                mtime_ns: Some(1_000_000_000_000_000_000),
            },
            NewFile {
                target: &b,
                contents: b"beta",
                mtime_ns: None,
            },
            NewFile {
                target: &c,
                contents: b"gamma",
                mtime_ns: None,
            },
        ];
        let results = write_many(&files, false);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert_eq!(
            results[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(results[2].is_err());
        assert_eq!(std::fs::read(&a).unwrap(), b"alpha");
        assert_eq!(std::fs::read(&b).unwrap(), b"already here");
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        assert_eq!(
            mtime,
            std::time::UNIX_EPOCH + Duration::from_nanos(1_000_000_000_000_000_000)
        );
        // No partial file is left behind, whatever happened to each file.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(PARTIAL_EXT)), "{names:?}");
        // Replacing writes over an existing file.
        let again = write_many(&files[1..2], true);
        assert!(again[0].is_ok());
        assert_eq!(std::fs::read(&b).unwrap(), b"beta");
    }

    #[test]
    fn sweep_removes_only_abandoned_old_partials() {
        let dir = tempfile::tempdir().unwrap();
        let old = PARTIAL_STALE + Duration::from_secs(5);
        // A download still running (its file open and locked), for long.
        let (live, live_file) = create_partial(&dir.path().join("live.bin")).unwrap();
        age(&live, old);
        // One whose process died long ago, and one that died a moment ago.
        let (dead, file) = create_partial(&dir.path().join("dead.bin")).unwrap();
        drop(file);
        age(&dead, old);
        let (recent, file) = create_partial(&dir.path().join("recent.bin")).unwrap();
        drop(file);
        // The user's own files, even hidden and old, are never touched.
        let own = dir.path().join(".notes.vault-partial.txt");
        fs::write(&own, b"mine").unwrap();
        age(&own, old);
        let plain = dir.path().join("dead.bin");
        fs::write(&plain, b"mine").unwrap();
        age(&plain, old);

        assert_eq!(sweep_partials(dir.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists() && recent.exists() && own.exists() && plain.exists());
        drop(live_file);
        assert_eq!(sweep_partials(dir.path()), 1);
        assert!(!live.exists());
    }

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
