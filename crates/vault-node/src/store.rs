//! Per-user blob folders, each with its own index database.
//!
//! `<root>/<user>/` holds everything the node keeps for a user:
//! `index.redb`, a redb database (see `db`) with one entry per blob (id,
//! length, modification time, where its bytes are), the bytes of blobs of
//! at most [`StoreLimits::inline_max`] bytes (inline), and the running
//! totals; larger blobs as files `<id>.<n>` (`n` recorded in the entry;
//! a blob of a converted 0.2 folder keeps its name `<id>`); and `.tmp/`,
//! uploads in progress. Removing a user is removing the folder. Paths are
//! built only from a lower-case user name that passed
//! [`wire::normalize_user`] and a [`BlobId`] (one plain component each).
//!
//! A 0.2 folder (one file per blob, no index) is converted in place the
//! first time it is opened ([`BlobStore::convert_all`] does every folder
//! at start), crash-safely and resumably. From then on nothing scans the
//! folder: listings, stats and usage are read from the database, whose
//! size does not grow the node's memory. The node must be the folder's
//! only writer.
//!
//! Every write (a put, a batch, deletes) is handed to the user's one
//! writer thread, which gathers whatever is queued into one transaction
//! and one commit (group commit) and answers each request once its commit
//! is durable. A conditional upload ([`wire::Expect`]) is checked by the
//! writer inside the transaction, in order, so no other writer of the user
//! can slip in between.
//!
//! Uploads reserve their announced length plus [`BLOB_OVERHEAD`] per blob
//! against the node's per-user quota, and a place per new id under the
//! per-user blob count cap ([`StoreLimits::max_blobs`]), before any byte
//! is read; the reservation (kept in memory) is given back when the upload
//! ends, stored or not. A blob of at most [`StoreLimits::inline_max`]
//! bytes is gathered in memory; a larger one in a temp file written under
//! a node-wide bound ([`StoreLimits::max_upload_io`]).
//!
//! Reads (`read`: one blob, several, or a listing page with contents)
//! take inline blobs from the database and open every file before
//! anything is sent, so what is announced is what streams. The files held
//! open for replies are bounded node-wide
//! ([`StoreLimits::max_reply_files`]), and each open blob carries the
//! deadline of the whole reply ([`StoreLimits::reply_deadline`]).

pub mod db;
mod index;
pub mod maintenance;
pub mod offline;
mod read;
mod upload;

use std::collections::HashMap;
use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::ReadableDatabase;
use thiserror::Error;
use tokio::sync::{OnceCell, Semaphore};
use wire::{BlobId, BlobStat, ListEntry};

use db::{db_err, Entry, Job, UserDb, BLOBS};
use index::Refusal;
pub use index::BLOB_OVERHEAD;
pub use read::{BlobReader, DataEntry, DataLimits, DataPage, OpenBlob};
pub use upload::{PendingBlob, PutBatch, MAX_EXPECT_LEN};

/// Name of the per-user folder of uploads in progress.
pub const TMP_DIR: &str = ".tmp";

/// Default [`StoreLimits::max_blobs`]: one million blobs per user. A
/// classic layout puts about three blobs of a file on each node (its
/// manifest and two parts), so this is about 330,000 files per user. With
/// [`BLOB_OVERHEAD`], a quota below 4 GiB bites first.
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
/// Default [`StoreLimits::inline_max`]: 64 KiB, which holds every
/// manifest and tombstone and the parts of small files.
pub const DEFAULT_INLINE_MAX: u64 = 64 << 10;
/// Default [`StoreLimits::max_upload_memory`]: 256 MiB.
pub const DEFAULT_MAX_UPLOAD_MEMORY: usize = 256 << 20;

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
    /// Largest blob kept inside the user's database (inline) instead of a
    /// file of its own; uploads of at most this many bytes are gathered in
    /// memory.
    pub inline_max: u64,
    /// Most bytes of uploads gathered in memory at once, node-wide
    /// (reserved at an upload's announced length, which is at most
    /// [`StoreLimits::inline_max`]); an upload that finds no room goes to
    /// a temp file instead, so it is never refused for it.
    pub max_upload_memory: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_blobs: DEFAULT_MAX_BLOBS,
            max_reply_files: DEFAULT_MAX_REPLY_FILES,
            reply_files_wait: DEFAULT_REPLY_FILES_WAIT,
            reply_deadline: DEFAULT_REPLY_DEADLINE,
            max_upload_io: DEFAULT_MAX_UPLOAD_IO,
            inline_max: DEFAULT_INLINE_MAX,
            max_upload_memory: DEFAULT_MAX_UPLOAD_MEMORY,
        }
    }
}

/// The blob folders under a node's root.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    dbs: Arc<Dbs>,
    limits: StoreLimits,
    /// Permits for files held open for replies.
    reply_files: Arc<Semaphore>,
    /// Permits for blocking file operations of uploads.
    upload_io: Arc<Semaphore>,
    /// Permits for upload bytes gathered in memory, one per byte.
    upload_memory: Arc<Semaphore>,
}

/// Each user's share of [`BlobStore::upload_io`]: a quarter of it, at
/// least 1.
fn upload_share(max_upload_io: usize) -> usize {
    (max_upload_io / 4).max(1)
}

/// One user's database once open.
type DbCell = Arc<OnceCell<Arc<UserDb>>>;

/// The open databases of every user touched so far.
#[derive(Debug, Default)]
struct Dbs {
    /// Each user's database, opened on first use.
    users: Mutex<HashMap<String, DbCell>>,
    /// Databases opened (instrumentation).
    opened: AtomicU64,
    /// Each user's share of the upload I/O bound, made on first use.
    upload_shares: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Dbs {
    /// `user`'s cell, a fresh one if the cached database is broken (a
    /// transaction failed or its writer stopped: redb refuses every later
    /// transaction after an I/O error, so it is reopened). The broken one
    /// is closed once the requests still holding it end.
    fn cell(&self, user: &str) -> DbCell {
        let mut users = lock(&self.users);
        let cell = users.entry(user.to_string()).or_default();
        if cell.get().is_some_and(|db| db.is_broken()) {
            tracing::warn!(user, "reopening the blob index after a failure");
            *cell = DbCell::default();
        }
        cell.clone()
    }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The error of opening the database of folder `dir`, naming it.
fn open_failed(dir: &str, e: io::Error) -> io::Error {
    if e.raw_os_error().is_some() || db::is_already_open(&e) {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!("the blob index of {dir} cannot be opened: {e}"),
    )
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
        let store = BlobStore {
            root: root.into(),
            dbs: Arc::default(),
            reply_files: Arc::new(Semaphore::new(limits.max_reply_files)),
            upload_io: Arc::new(Semaphore::new(limits.max_upload_io)),
            upload_memory: Arc::new(Semaphore::new(
                limits.max_upload_memory.min(Semaphore::MAX_PERMITS),
            )),
            limits,
        };
        live::register(&store.root, &store.dbs, store.limits.inline_max);
        store
    }

    /// The store's limits.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The bound on `user`'s uploads' blocking file work.
    fn upload_bound(&self, user: &str) -> upload::IoBound {
        let mut shares = self
            .dbs
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

    /// Number of user databases opened so far: one per user touched
    /// since start (for tests and diagnostics).
    pub fn databases_opened(&self) -> u64 {
        self.dbs.opened.load(Ordering::Relaxed)
    }

    /// `user`'s open database, opened on first use (a second caller waits
    /// for the first one's open; a 0.2 folder is converted then).
    async fn db(&self, user: &str) -> io::Result<Arc<UserDb>> {
        let dir = self.user_dir(user)?;
        let cell = self.dbs.cell(user);
        let inline_max = self.limits.inline_max;
        let db = cell
            .get_or_try_init(|| async {
                self.dbs.opened.fetch_add(1, Ordering::Relaxed);
                let shown = dir.display().to_string();
                let db = blocking(move || UserDb::open(&dir, inline_max))
                    .await
                    .map_err(|e| open_failed(&shown, e))?;
                Ok::<_, io::Error>(Arc::new(db))
            })
            .await?;
        Ok(db.clone())
    }

    /// Write transactions committed for `user` so far (group commit
    /// gathers concurrent writes into one).
    pub async fn commits(&self, user: &str) -> io::Result<u64> {
        Ok(self.db(user).await?.commits())
    }

    /// Opens every user folder's database once, converting 0.2 folders
    /// (one file per blob) in place, then closes them: run at start,
    /// before serving. A folder that cannot be opened (a damaged or
    /// missing index) is logged, naming the user, and skipped: the other
    /// users are served, and that user's requests fail with the cause
    /// until it is repaired. Returns the number of folders opened.
    pub fn convert_all(&self) -> io::Result<usize> {
        let mut n = 0;
        for user in offline::users(&self.root)? {
            let opened = self
                .user_dir(&user)
                .and_then(|dir| UserDb::open(&dir, self.limits.inline_max));
            match opened {
                Ok(db) => {
                    drop(db);
                    n += 1;
                }
                Err(e) => tracing::error!(
                    user = %user,
                    error = %e,
                    "cannot open the blob index of user {user}: not serving that user \
                     until it is repaired (see vault-node fsck)"
                ),
            }
        }
        Ok(n)
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

    /// Deletes blobs `ids` in one transaction (with whatever else is
    /// queued), durable when this returns; returns the positions of the
    /// ids that were not there (a repeated id: every time after the
    /// first). On an error nothing is deleted.
    pub async fn delete_many(&self, user: &str, ids: &[BlobId]) -> io::Result<Vec<u32>> {
        let db = self.db(user).await?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        db.submit(Job::Delete {
            ids: ids.to_vec(),
            reply,
        })?;
        let found = answer
            .await
            .map_err(|_| io::Error::other("blob writer stopped"))??;
        Ok((0u32..)
            .zip(found)
            .filter_map(|(i, f)| (!f).then_some(i))
            .collect())
    }

    /// One page of `user`'s blobs whose id starts with `prefix` (`""`:
    /// all), in id order after `after`, at most `limit` entries, and
    /// whether more follow: a range scan of the index.
    pub async fn list(
        &self,
        user: &str,
        after: Option<BlobId>,
        prefix: &str,
        limit: usize,
    ) -> io::Result<(Vec<ListEntry>, bool)> {
        let db = self.db(user).await?;
        let prefix = prefix.to_string();
        blocking(move || {
            let (page, more) = page(&db, after.as_ref(), &prefix, limit)?;
            Ok((
                page.into_iter()
                    .map(|(id, e)| ListEntry {
                        id,
                        len: e.len,
                        modified: e.modified,
                    })
                    .collect(),
                more,
            ))
        })
        .await
    }

    /// Size and time of each of `ids` (`None`: absent), from the index.
    pub async fn stat_many(&self, user: &str, ids: &[BlobId]) -> io::Result<Vec<Option<BlobStat>>> {
        let db = self.db(user).await?;
        let ids = ids.to_vec();
        blocking(move || {
            let txn = db.db.begin_read().map_err(db_err)?;
            let blobs = txn.open_table(BLOBS).map_err(db_err)?;
            ids.iter()
                .map(|id| {
                    Ok(blobs.get(id.as_str()).map_err(db_err)?.map(|v| {
                        let e = Entry::decode(v.value());
                        BlobStat {
                            len: e.len,
                            modified: e.modified,
                        }
                    }))
                })
                .collect()
        })
        .await
    }

    /// Number of blobs and bytes held for `user`: the totals kept in the
    /// index, O(1).
    pub async fn usage(&self, user: &str) -> io::Result<(u64, u64)> {
        let db = self.db(user).await?;
        let t = blocking(move || db.totals()).await?;
        Ok((t.count, t.bytes))
    }

    /// What `user`'s uploads in progress reserved against the quota.
    #[cfg(test)]
    async fn reserved(&self, user: &str) -> u64 {
        let db = self.db(user).await.unwrap();
        let reserved = lock(&db.reserved).charge;
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

/// The stores of this process, by root, so that tools working on a root
/// ([`offline`]) use the databases a store here holds open (redb allows
/// one opener per file).
pub(crate) mod live {
    use super::*;
    use std::path::Path;
    use std::sync::{OnceLock, Weak};

    type Registry = Mutex<HashMap<PathBuf, (Weak<Dbs>, u64)>>;

    fn registry() -> &'static Registry {
        static LIVE: OnceLock<Registry> = OnceLock::new();
        LIVE.get_or_init(Registry::default)
    }

    fn key(root: &Path) -> PathBuf {
        std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
    }

    pub(super) fn register(root: &Path, dbs: &Arc<Dbs>, inline_max: u64) {
        let mut map = lock(registry());
        map.retain(|_, (w, _)| w.strong_count() > 0);
        map.insert(key(root), (Arc::downgrade(dbs), inline_max));
    }

    /// Whether a store of this process serves `root`.
    pub(crate) fn is_live(root: &Path) -> bool {
        lock(registry())
            .get(&key(root))
            .is_some_and(|(w, _)| w.strong_count() > 0)
    }

    /// `user`'s database under `root`: the one a live store of this
    /// process holds (opened through it if it has not yet), or one opened
    /// here (`None` if the user has no folder and `create` is false).
    pub(crate) fn user_db(
        root: &Path,
        user: &str,
        create: bool,
    ) -> io::Result<Option<Arc<UserDb>>> {
        let dir = root.join(user);
        if !create && !dir.exists() {
            return Ok(None);
        }
        let found = lock(registry())
            .get(&key(root))
            .and_then(|(w, inline)| w.upgrade().map(|d| (d, *inline)));
        let Some((dbs, inline_max)) = found else {
            return Ok(Some(Arc::new(UserDb::open(&dir, DEFAULT_INLINE_MAX)?)));
        };
        let cell = dbs.cell(user);
        if let Some(db) = cell.get() {
            return Ok(Some(db.clone()));
        }
        let db = Arc::new(UserDb::open(&dir, inline_max)?);
        match cell.set(db.clone()) {
            Ok(()) => {
                dbs.opened.fetch_add(1, Ordering::Relaxed);
                Ok(Some(db))
            }
            Err(_) => Err(io::Error::other("the user's database is being opened")),
        }
    }

    /// `user`'s database under `root` if a live store of this process
    /// has it open already; never opens one (which would wait on, or
    /// hold up, the store's own opening of it).
    pub(crate) fn open_user_db(root: &Path, user: &str) -> Option<Arc<UserDb>> {
        let dbs = lock(registry())
            .get(&key(root))
            .and_then(|(w, _)| w.upgrade())?;
        let cell = lock(&dbs.users).get(user).cloned()?;
        cell.get().cloned()
    }
}

/// Up to `limit` index entries after `after` whose id starts with
/// `prefix` (`""`: every id), in id order, and whether more follow: one
/// range scan that starts at the later of `after` and `prefix` and stops
/// at the first id past the prefix. Blocking.
pub(crate) fn page(
    db: &UserDb,
    after: Option<&BlobId>,
    prefix: &str,
    limit: usize,
) -> io::Result<(Vec<(BlobId, Entry)>, bool)> {
    let txn = db.db.begin_read().map_err(db_err)?;
    let blobs = txn.open_table(BLOBS).map_err(db_err)?;
    // A non-empty prefix is itself a valid id: the smallest one it starts.
    let first = BlobId::new(prefix).ok();
    let start: Bound<&str> = match (after, first.as_ref()) {
        (Some(a), Some(p)) if a < p => Bound::Included(p.as_str()),
        (Some(a), _) => Bound::Excluded(a.as_str()),
        (None, Some(p)) => Bound::Included(p.as_str()),
        (None, None) => Bound::Unbounded,
    };
    let mut out = Vec::new();
    let range = blobs
        .range::<&str>((start, Bound::Unbounded))
        .map_err(db_err)?;
    for item in range {
        let (k, v) = item.map_err(db_err)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            return Ok((out, false));
        }
        if out.len() >= limit {
            return Ok((out, true));
        }
        let id = BlobId::new(key).map_err(|_| io::Error::other("invalid id in the blob index"))?;
        out.push((id, Entry::decode(v.value())));
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests;
