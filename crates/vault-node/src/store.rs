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
//! plus [`BLOB_OVERHEAD`] per blob against the node's per-user quota, and
//! a place per new id under the per-user blob count cap
//! ([`StoreLimits::max_blobs`]), before any byte is read; the reservation
//! is settled when the blob is committed and given back when the upload
//! ends otherwise. A conditional upload ([`wire::Expect`]) is checked
//! under the index lock, together with the rename that replaces the blob,
//! so no other writer of the user can slip in between. The blocking file
//! work of uploads runs under a node-wide bound
//! ([`StoreLimits::max_upload_io`]), so uploads cannot take every
//! blocking thread.
//!
//! Reads (`read`: one blob, several, or a listing page with contents)
//! open every file before anything is sent, so what is announced is what
//! streams. The files held open for replies are bounded node-wide
//! ([`StoreLimits::max_reply_files`]), and each open file carries the
//! deadline of the whole reply ([`StoreLimits::reply_deadline`]).

mod index;
mod read;
mod upload;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{OnceCell, Semaphore};
use wire::{BlobId, BlobStat, ListEntry};

use crate::fsutil::sync_dir;
pub use index::BLOB_OVERHEAD;
use index::{Refusal, UserIndex};
pub use read::{DataEntry, DataLimits, DataPage, OpenBlob};
pub use upload::{PendingBlob, PutBatch, MAX_EXPECT_LEN};

/// Name of the per-user folder of uploads in progress.
pub const TMP_DIR: &str = ".tmp";

/// Default [`StoreLimits::max_blobs`]: one million blobs per user. The
/// index keeps about 150 bytes of memory per blob, so one user's index
/// stays under about 150 MB; a classic layout puts about three blobs of a
/// file on each node (its manifest and two parts), so this is about
/// 330,000 files per user. With [`BLOB_OVERHEAD`], a quota below 4 GiB
/// bites first.
pub const DEFAULT_MAX_BLOBS: u64 = 1_000_000;
/// Default [`StoreLimits::max_reply_files`]: two full `GetBlobs` answers'
/// worth ([`wire::MAX_BATCH`] files each). The process's open-file limit
/// (`ulimit -n`) must leave room above it for uploads and connections.
pub const DEFAULT_MAX_REPLY_FILES: usize = 1024;
/// Default [`StoreLimits::reply_files_wait`].
pub const DEFAULT_REPLY_FILES_WAIT: Duration = Duration::from_secs(5);
/// Default [`StoreLimits::reply_deadline`]: a full answer
/// ([`wire::MAX_BATCH_BYTES`], 64 MiB) at about 2 Mbit/s.
pub const DEFAULT_REPLY_DEADLINE: Duration = Duration::from_secs(300);
/// Default [`StoreLimits::max_upload_io`]: an eighth of tokio's default
/// pool of 512 blocking threads.
pub const DEFAULT_MAX_UPLOAD_IO: usize = 64;

/// The store's resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most blobs one user may keep on the node, new ids being uploaded
    /// included; an upload of a new id over it is refused
    /// ([`PutError::TooManyBlobs`]). Replacing a blob is always allowed.
    pub max_blobs: u64,
    /// Most files held open at once, node-wide, for replies (`GetBlob`,
    /// `GetBlobs`, `ListData`). A reply's files are counted from when they
    /// are opened until each has been sent (or the reply ends). A read
    /// that needs more than are free waits up to
    /// [`StoreLimits::reply_files_wait`], then is refused as busy; one
    /// that needs more than the bound is refused at once.
    pub max_reply_files: usize,
    /// How long a read waits for its share of
    /// [`StoreLimits::max_reply_files`].
    pub reply_files_wait: Duration,
    /// Time a reply has to be sent whole, counted from when its files were
    /// opened; a reader that does not take the bytes in time has the
    /// stream reset and the files closed.
    pub reply_deadline: Duration,
    /// Most blocking file operations of uploads (writes, syncs, renames)
    /// at once, node-wide; one user's uploads take at most a quarter of
    /// them (at least one).
    pub max_upload_io: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_blobs: DEFAULT_MAX_BLOBS,
            max_reply_files: DEFAULT_MAX_REPLY_FILES,
            reply_files_wait: DEFAULT_REPLY_FILES_WAIT,
            reply_deadline: DEFAULT_REPLY_DEADLINE,
            max_upload_io: DEFAULT_MAX_UPLOAD_IO,
        }
    }
}

/// The blob folders under a node's root.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    indexes: Arc<Indexes>,
    limits: StoreLimits,
    /// Permits for files held open for replies.
    reply_files: Arc<Semaphore>,
    /// Permits for blocking file operations of uploads.
    upload_io: Arc<Semaphore>,
}

/// Each user's share of [`BlobStore::upload_io`]: a quarter of it, at
/// least 1.
fn upload_share(max_upload_io: usize) -> usize {
    (max_upload_io / 4).max(1)
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
    /// Each user's share of the upload I/O bound, made on first use.
    upload_shares: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Why an upload could not be stored.
#[derive(Debug, Error)]
pub enum PutError {
    /// The upload would take the user over the node's quota.
    #[error(
        "quota exceeded: this node keeps at most {quota} bytes per user, each blob counting as \
         its length plus {BLOB_OVERHEAD} bytes; you use {used} bytes (uploads in progress \
         included) and {} {requested} bytes{}",
        needing(*.blobs),
        replacing(*.blobs, *.replaced)
    )]
    Quota {
        /// The node's per-user quota in bytes.
        quota: u64,
        /// What the stored blobs and the uploads in progress count.
        used: u64,
        /// What the upload counts (a batch's: all its blobs').
        requested: u64,
        /// What the blobs it would replace count (0 if none).
        replaced: u64,
        /// Number of distinct blobs the upload writes (1 unless a batch).
        blobs: usize,
    },
    /// The upload would take the user over the node's blob count cap.
    #[error(
        "too many blobs: this node keeps at most {max} blobs per user; you have {held} \
         (new ones being uploaded included) and this upload adds {adding}; delete some first"
    )]
    TooManyBlobs {
        /// The cap.
        max: u64,
        /// Blobs stored plus new ones being uploaded.
        held: u64,
        /// New blobs the upload adds.
        adding: u64,
    },
    /// The write's condition ([`wire::Expect`]) did not hold: nothing
    /// changed.
    #[error("the stored blob changed since it was read")]
    Conflict,
    /// A condition the node does not check (on a stored blob over
    /// [`MAX_EXPECT_LEN`] bytes).
    #[error("{0}")]
    BadCondition(String),
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

impl From<Refusal> for PutError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Quota(q) => PutError::Quota {
                quota: q.quota,
                used: q.used,
                requested: q.requested,
                replaced: q.replaced,
                blobs: q.blobs,
            },
            Refusal::TooMany(t) => PutError::TooManyBlobs {
                max: t.max,
                held: t.held,
                adding: t.adding,
            },
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
/// `ENFILE`, or every [`StoreLimits::max_reply_files`] permit taken): a
/// passing shortage, not a broken disk.
pub fn is_out_of_files(e: &io::Error) -> bool {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<read::FilesBusy>())
    {
        return true;
    }
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
    /// Blob folders under `root`, with the default limits.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_limits(root, StoreLimits::default())
    }

    /// Blob folders under `root`, with `limits` (a bound of 0 counts as 1).
    pub fn with_limits(root: impl Into<PathBuf>, mut limits: StoreLimits) -> Self {
        limits.max_reply_files = limits.max_reply_files.clamp(1, Semaphore::MAX_PERMITS);
        limits.max_upload_io = limits.max_upload_io.clamp(1, Semaphore::MAX_PERMITS);
        BlobStore {
            root: root.into(),
            indexes: Arc::default(),
            reply_files: Arc::new(Semaphore::new(limits.max_reply_files)),
            upload_io: Arc::new(Semaphore::new(limits.max_upload_io)),
            limits,
        }
    }

    /// The store's limits.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The bound on `user`'s uploads' blocking file work.
    fn upload_bound(&self, user: &str) -> upload::IoBound {
        let mut shares = self
            .indexes
            .upload_shares
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let share = upload_share(self.limits.max_upload_io);
        let user = shares
            .entry(user.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(share)))
            .clone();
        upload::IoBound {
            user,
            node: self.upload_io.clone(),
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

    /// What `user`'s uploads in progress reserved against the quota.
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
