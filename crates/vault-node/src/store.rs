//! Per-user blob folders.
//!
//! `<root>/<user>/<blob-id>` holds one blob; `<root>/<user>/.tmp/` holds
//! uploads in progress. A blob becomes visible only by `rename` after its
//! bytes are durable, so readers and listings never see a partial blob.
//! Paths are built only from a lower-case user name that passed
//! [`wire::normalize_user`] and a [`BlobId`] (one plain component each).
//!
//! Each user's folder is read once, the first time the user is touched;
//! from then on an in-memory `index` answers listings, stats and usage,
//! and every rename into the folder and every removal from it updates the
//! index under its lock. The node must be the folder's only writer: files
//! put there by hand show up after a restart.
//!
//! Uploads (`upload`: one blob, or a batch) reserve their announced length
//! against the node's per-user quota before any byte is read; the
//! reservation is settled when the blob is committed and given back when
//! the upload ends otherwise. Reads (`read`: one blob, several, or a
//! listing page with contents) open every file before anything is sent,
//! so what is announced is what streams.

mod index;
mod read;
mod upload;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use tokio::sync::OnceCell;
use wire::{BlobId, BlobStat, ListEntry};

use crate::fsutil::sync_dir;
use index::{OverQuota, UserIndex};
pub use read::{DataEntry, DataLimits, DataPage, OpenBlob};
pub use upload::{PendingBlob, PutBatch};

/// Name of the per-user folder of uploads in progress.
pub const TMP_DIR: &str = ".tmp";

/// The blob folders under a node's root.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    indexes: Arc<Indexes>,
}

/// One user's index once its folder was scanned.
type IndexCell = Arc<OnceCell<Arc<Mutex<UserIndex>>>>;

/// The indexes of every user touched so far.
#[derive(Debug, Default)]
struct Indexes {
    /// Each user's index, built on first use.
    users: Mutex<HashMap<String, IndexCell>>,
    /// Folder scans made to build indexes (instrumentation).
    scans: AtomicU64,
}

/// Why an upload could not be stored.
#[derive(Debug, Error)]
pub enum PutError {
    /// The upload would take the user over the node's quota.
    #[error(
        "quota exceeded: this node keeps at most {quota} bytes per user; you use {used} bytes \
         (uploads in progress included) and {} {requested} bytes{}",
        needing(*.blobs),
        replacing(*.blobs, *.replaced)
    )]
    Quota {
        /// The node's per-user quota in bytes.
        quota: u64,
        /// Bytes stored plus bytes reserved by uploads in progress.
        used: u64,
        /// The upload's announced length (a batch's: all its blobs').
        requested: u64,
        /// Size of the blobs it would replace (0 if none).
        replaced: u64,
        /// Number of distinct blobs the upload writes (1 unless a batch).
        blobs: usize,
    },
    /// The node's disk is full.
    #[error("the node's disk is full")]
    NoSpace(#[source] io::Error),
    /// Any other storage failure.
    #[error(transparent)]
    Io(io::Error),
}

fn needing(blobs: usize) -> String {
    if blobs == 1 {
        "this blob needs".into()
    } else {
        format!("these {blobs} blobs need")
    }
}

fn replacing(blobs: usize, replaced: u64) -> String {
    match (replaced, blobs) {
        (0, _) => String::new(),
        (_, 1) => format!(" (replacing one of {replaced} bytes)"),
        _ => format!(" (replacing some of {replaced} bytes in all)"),
    }
}

impl From<io::Error> for PutError {
    fn from(e: io::Error) -> Self {
        if is_no_space(&e) {
            PutError::NoSpace(e)
        } else {
            PutError::Io(e)
        }
    }
}

impl From<OverQuota> for PutError {
    fn from(q: OverQuota) -> Self {
        PutError::Quota {
            quota: q.quota,
            used: q.used,
            requested: q.requested,
            replaced: q.replaced,
            blobs: q.blobs,
        }
    }
}

/// Whether `e` says the file system is full (`ENOSPC`, or a file-system
/// quota: `EDQUOT`).
pub fn is_no_space(e: &io::Error) -> bool {
    // By error number: `ErrorKind::StorageFull` needs a newer Rust than the
    // workspace's minimum.
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        code == Errno::NOSPC.raw_os_error() || code == Errno::DQUOT.raw_os_error()
    }
    #[cfg(windows)]
    {
        // ERROR_HANDLE_DISK_FULL, ERROR_DISK_FULL
        code == 39 || code == 112
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = code;
        false
    }
}

/// Whether `e` says the node has too many files open (`EMFILE`,
/// `ENFILE`): a passing shortage, not a broken disk.
pub fn is_out_of_files(e: &io::Error) -> bool {
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        code == Errno::MFILE.raw_os_error() || code == Errno::NFILE.raw_os_error()
    }
    #[cfg(not(unix))]
    {
        let _ = code;
        false
    }
}

fn lock(index: &Mutex<UserIndex>) -> MutexGuard<'_, UserIndex> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad_user() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "invalid user folder name")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

impl BlobStore {
    /// Blob folders under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        BlobStore {
            root: root.into(),
            indexes: Arc::default(),
        }
    }

    /// `<root>/<user>`; `user` must already be normalised (lower case).
    pub fn user_dir(&self, user: &str) -> io::Result<PathBuf> {
        if wire::normalize_user(user).as_deref() != Some(user) {
            return Err(bad_user());
        }
        Ok(self.root.join(user))
    }

    /// Number of folder scans made so far to build user indexes: one per
    /// user touched since start (for tests and diagnostics).
    pub fn directory_scans(&self) -> u64 {
        self.indexes.scans.load(Ordering::Relaxed)
    }

    /// `user`'s index, built by one scan of the folder on first use (a
    /// second caller waits for the first one's scan).
    async fn index(&self, user: &str) -> io::Result<Arc<Mutex<UserIndex>>> {
        let dir = self.user_dir(user)?;
        let cell = {
            let mut users = self.indexes.users.lock().unwrap_or_else(|p| p.into_inner());
            users.entry(user.to_string()).or_default().clone()
        };
        let index = cell
            .get_or_try_init(|| async {
                self.indexes.scans.fetch_add(1, Ordering::Relaxed);
                let index = blocking(move || UserIndex::scan(&dir)).await?;
                Ok::<_, io::Error>(Arc::new(Mutex::new(index)))
            })
            .await?;
        Ok(index.clone())
    }

    /// Removes every leftover upload (`<root>/*/.tmp/*`). Run at start.
    pub fn clean_temp(&self) -> io::Result<usize> {
        let mut removed = 0;
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_dir() || entry.file_name().to_string_lossy().starts_with('.')
            {
                continue;
            }
            let tmp = entry.path().join(TMP_DIR);
            let Ok(files) = std::fs::read_dir(&tmp) else {
                continue;
            };
            for f in files {
                let f = f?;
                if f.file_type()?.is_file() {
                    std::fs::remove_file(f.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Deletes blob `id`; `false` if there was none.
    pub async fn delete(&self, user: &str, id: &BlobId) -> io::Result<bool> {
        let missing = self.delete_many(user, std::slice::from_ref(id)).await?;
        Ok(missing.is_empty())
    }

    /// Deletes blobs `ids`, each removal recorded in the index under its
    /// lock, then syncs the folder once; returns the positions of the ids
    /// that were not there (a repeated id: every time after the first).
    /// On an error, the blobs before it are deleted (and synced), the rest
    /// are not.
    pub async fn delete_many(&self, user: &str, ids: &[BlobId]) -> io::Result<Vec<u32>> {
        let dir = self.user_dir(user)?;
        let index = self.index(user).await?;
        let ids = ids.to_vec();
        blocking(move || {
            let (mut missing, mut removed_any) = (Vec::new(), false);
            let mut failure = None;
            for (i, id) in (0u32..).zip(&ids) {
                let mut ix = lock(&index);
                match std::fs::remove_file(dir.join(id.as_str())) {
                    Ok(()) => removed_any = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(i),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                ix.removed(id);
            }
            if removed_any {
                sync_dir(&dir)?;
            }
            failure.map_or(Ok(missing), Err)
        })
        .await
    }

    /// One page of `user`'s blobs whose id starts with `prefix` (`""`:
    /// all), in id order after `after`, at most `limit` entries, and
    /// whether more follow. Served from the index: the folder is not read
    /// again.
    pub async fn list(
        &self,
        user: &str,
        after: Option<BlobId>,
        prefix: &str,
        limit: usize,
    ) -> io::Result<(Vec<ListEntry>, bool)> {
        let index = self.index(user).await?;
        let page = lock(&index).page(after.as_ref(), prefix, limit);
        Ok(page)
    }

    /// Size and time of each of `ids` (`None`: absent), from the index.
    pub async fn stat_many(&self, user: &str, ids: &[BlobId]) -> io::Result<Vec<Option<BlobStat>>> {
        let index = self.index(user).await?;
        let ix = lock(&index);
        Ok(ids
            .iter()
            .map(|id| {
                ix.get(id).map(|m| BlobStat {
                    len: m.len,
                    modified: m.modified,
                })
            })
            .collect())
    }

    /// Number of blobs and bytes held for `user`.
    pub async fn usage(&self, user: &str) -> io::Result<(u64, u64)> {
        let index = self.index(user).await?;
        let usage = lock(&index).usage();
        Ok(usage)
    }

    /// Bytes reserved by `user`'s uploads in progress.
    #[cfg(test)]
    async fn reserved(&self, user: &str) -> u64 {
        let index = self.index(user).await.unwrap();
        let reserved = lock(&index).reserved();
        reserved
    }

    /// Bytes available to the node on the file system of its root, if the
    /// platform tells.
    pub async fn free_bytes(&self) -> Option<u64> {
        #[cfg(unix)]
        {
            let root = self.root.clone();
            let stat = blocking(move || rustix::fs::statvfs(&root).map_err(io::Error::from))
                .await
                .ok()?;
            Some(stat.f_bavail.saturating_mul(stat.f_frsize))
        }
        #[cfg(not(unix))]
        {
            None
        }
    }
}

#[cfg(test)]
mod tests;
