//! One user's database, `<root>/<user>/index.redb` (redb), and its writer.
//!
//! Tables:
//! - `blobs`: blob id → (length, modification time, place): place 0 is
//!   inline (the bytes are in `data`), 1 is a file named exactly the id
//!   (a blob of a converted 0.2 folder), `n >= 2` a file named `<id>.<n>`.
//!   Ids are `[a-z0-9_-]`, so a name with a dot is never an id.
//! - `data`: blob id → bytes of an inline blob (kept apart so range scans
//!   of `blobs` stay compact).
//! - `meta`: layout version, the converted flag, the totals (bytes and
//!   blob count, so usage is O(1)) and the counter naming the next file.
//!
//! Every change goes through the database's one writer thread
//! : it takes every queued job (up to `MAX_OPS`
//! operations or `MAX_BYTES` bytes) into one write transaction, checks
//! each conditional put in order inside it, renames new files into place
//! and syncs the folder, commits (durably: `Durability::Immediate`, redb's
//! default), and only then answers. Files a commit made obsolete are removed
//! after it: a crash leaves at worst an unreferenced file, which
//! `vault-node fsck --fix` removes. Reads use read transactions and never
//! wait for the writer.
//!
//! A transaction that fails (an I/O error, a full disk, a panic, caught
//! and logged) answers each of its jobs and every queued one with the
//! cause, and the writer stops: the database is marked broken and the
//! store reopens it on the next request (redb refuses every transaction
//! after an I/O error until it is reopened). Files it renamed into place
//! are removed if it failed before `commit()`; after that call they stay
//! (the commit may be durable, e.g. when only the final fsync failed), and
//! so do the files it would have made obsolete.
//!
//! Damage is an error, never a wrong answer: an inline entry without its
//! data row (or of another length), a file entry whose file is missing,
//! and a folder holding `<id>.<n>` files but no database (opening it would
//! make an empty index) are refused, naming the blob or folder.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use tokio::sync::oneshot;
use wire::{BlobId, Expect};

use super::index::Reserved;
use super::upload::MAX_EXPECT_LEN;
use super::PutError;
use crate::fsutil::{sync_dir, Synced};

/// The database's file name in a user folder.
pub const DB_FILE: &str = "index.redb";

/// Blob id → (length, modification time, place).
pub(crate) const BLOBS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("blobs");
/// Blob id → bytes of an inline blob.
pub(crate) const DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("data");
/// Layout version, converted flag, totals, file counter.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const LAYOUT: &str = "layout";
const CONVERTED: &str = "converted";
const BYTES: &str = "bytes";
const COUNT: &str = "count";
const NEXT_FILE: &str = "next_file";
/// The layout this code writes.
pub(crate) const LAYOUT_VERSION: u64 = 1;

/// Most operations in one write transaction.
pub(crate) const MAX_OPS: usize = 4096;
/// Most blob bytes in one write transaction (inline bytes and files'
/// lengths counted alike); a single larger job still goes alone.
pub(crate) const MAX_BYTES: u64 = 64 << 20;
/// Page cache of one user database.
const CACHE_BYTES: usize = 16 << 20;
/// How long opening waits for a database that this process is still
/// closing (an in-process node restarted on the same root).
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// Where a blob's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// In [`DATA`].
    Inline,
    /// A file: 1 is named exactly the id, `n >= 2` is `<id>.<n>`.
    File(u64),
}

/// An index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub len: u64,
    pub modified: u64,
    pub place: Place,
}

impl Entry {
    pub(crate) fn decode((len, modified, place): (u64, u64, u64)) -> Entry {
        Entry {
            len,
            modified,
            place: if place == 0 {
                Place::Inline
            } else {
                Place::File(place)
            },
        }
    }

    fn encode(self) -> (u64, u64, u64) {
        let place = match self.place {
            Place::Inline => 0,
            Place::File(n) => n.max(1),
        };
        (self.len, self.modified, place)
    }
}

/// The name of file `n` of blob `id`.
pub(crate) fn file_name(id: &str, n: u64) -> String {
    if n <= 1 {
        id.to_string()
    } else {
        format!("{id}.{n}")
    }
}

/// A redb error as an I/O error (an I/O cause kept as it is, so a full
/// disk stays recognisable).
pub(crate) fn db_err(e: impl Into<redb::Error>) -> io::Error {
    match e.into() {
        redb::Error::Io(e) => e,
        e => io::Error::other(format!("blob index: {e}")),
    }
}

/// A copy of `e` for each of several waiters.
fn copy_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The bytes of an upload, as the writer gets them.
#[derive(Debug)]
pub(crate) enum Data {
    /// Held in memory (at most the inline bound).
    Bytes(Vec<u8>),
    /// A synced temp file.
    Temp(Synced),
}

impl Data {
    fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::Temp(s) => s.metadata().len(),
        }
    }
}

/// One put for the writer.
#[derive(Debug)]
pub(crate) struct PutOp {
    pub id: BlobId,
    pub data: Data,
    pub expect: Option<Expect>,
}

/// A job for the writer: its operations go into one transaction.
#[derive(Debug)]
pub(crate) enum Job {
    /// Puts (one, or a batch's), each with its own outcome.
    Put {
        ops: Vec<PutOp>,
        reply: oneshot::Sender<io::Result<Vec<Result<(), PutError>>>>,
    },
    /// Deletes: whether each id was there.
    Delete {
        ids: Vec<BlobId>,
        reply: oneshot::Sender<io::Result<Vec<bool>>>,
    },
}

impl Job {
    fn weight(&self) -> (usize, u64) {
        match self {
            Job::Put { ops, .. } => (
                ops.len(),
                ops.iter().fold(0u64, |t, o| t.saturating_add(o.data.len())),
            ),
            Job::Delete { ids, .. } => (ids.len(), 0),
        }
    }

    fn fail(self, e: &io::Error) {
        match self {
            Job::Put { reply, .. } => {
                let _ = reply.send(Err(copy_err(e)));
            }
            Job::Delete { reply, .. } => {
                let _ = reply.send(Err(copy_err(e)));
            }
        }
    }
}

/// The reply channel of a job being worked on.
enum Reply {
    Put(oneshot::Sender<io::Result<Vec<Result<(), PutError>>>>),
    Delete(oneshot::Sender<io::Result<Vec<bool>>>),
}

impl Reply {
    fn fail(self, e: &io::Error) {
        match self {
            Reply::Put(reply) => {
                let _ = reply.send(Err(copy_err(e)));
            }
            Reply::Delete(reply) => {
                let _ = reply.send(Err(copy_err(e)));
            }
        }
    }
}

/// Faults a unit test injects into a writer's next transaction.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The transaction fails before its commit with `ENOSPC`, and (as
    /// redb latches an I/O failure) every later transaction of this
    /// database fails too, until it is reopened.
    NoSpace,
    /// The transaction panics before its commit.
    Panic,
    /// The commit is durable but reports an error (a failed final fsync).
    AfterCommit,
}

/// The fault hook shared by a [`UserDb`] and its writer.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    next: Mutex<Option<Fault>>,
    latched: AtomicBool,
}

#[cfg(test)]
impl Faults {
    /// Before the commit: the injected failure, if any.
    fn before_commit(&self) -> io::Result<()> {
        if self.latched.load(Ordering::Relaxed) {
            return Err(io::Error::other("Previous I/O error occurred (injected)"));
        }
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        match *next {
            Some(Fault::NoSpace) => {
                *next = None;
                self.latched.store(true, Ordering::Relaxed);
                Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::NOSPC.raw_os_error(),
                ))
            }
            Some(Fault::Panic) => {
                *next = None;
                drop(next);
                panic!("injected writer panic");
            }
            _ => Ok(()),
        }
    }

    /// After a successful commit: the injected failure, if any.
    fn after_commit(&self) -> io::Result<()> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if *next == Some(Fault::AfterCommit) {
            *next = None;
            return Err(io::Error::other("injected failure of the final fsync"));
        }
        Ok(())
    }
}

/// The running totals of a user's blobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Number of blobs.
    pub count: u64,
    /// Sum of their lengths.
    pub bytes: u64,
}

/// One user's open database, its writer and its uploads' reservations.
#[derive(Debug)]
pub(crate) struct UserDb {
    pub(crate) db: Arc<Database>,
    pub(crate) dir: PathBuf,
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Quota and blob places held by uploads in progress.
    pub(crate) reserved: Mutex<Reserved>,
    /// Write transactions committed by the writer.
    commits: Arc<AtomicU64>,
    /// Uploads in progress (single or batch), for tests and diagnostics.
    pub(crate) uploads: Arc<AtomicU64>,
    /// The inline bound of the writer.
    inline_max: u64,
    /// Set when a transaction failed or the writer stopped: the store
    /// drops this database from its cache and the next request reopens it
    /// (redb refuses every later transaction after an I/O error).
    broken: Arc<AtomicBool>,
    /// Faults injected by unit tests.
    #[cfg(test)]
    pub(crate) faults: Arc<Faults>,
}

/// Counts one upload in progress of a [`UserDb`] while alive.
#[derive(Debug)]
pub(crate) struct UploadTicket(Arc<AtomicU64>);

impl UploadTicket {
    pub(crate) fn new(db: &UserDb) -> UploadTicket {
        db.uploads.fetch_add(1, Ordering::Relaxed);
        UploadTicket(db.uploads.clone())
    }
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for UserDb {
    fn drop(&mut self) {
        drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// Opens (creating if missing) the database in `dir`, with its tables.
/// `wait`: retry for a while if this process is still closing it.
pub(crate) fn open_database(dir: &Path, wait: bool) -> io::Result<Database> {
    let path = dir.join(DB_FILE);
    let start = Instant::now();
    loop {
        match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => {
                init_tables(&db)?;
                return Ok(db);
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if wait && start.elapsed() < OPEN_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    AlreadyOpen(path.display().to_string()),
                ))
            }
            Err(e) => return Err(db_err(e)),
        }
    }
}

/// The database is open elsewhere (a node serving this root).
#[derive(Debug, thiserror::Error)]
#[error("{0} is open in another process")]
pub struct AlreadyOpen(pub String);

/// Whether `e` says the database is open elsewhere.
pub fn is_already_open(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<AlreadyOpen>())
}

fn init_tables(db: &Database) -> io::Result<()> {
    // Made already (with its tables): nothing to write.
    let made = match db.begin_read().map_err(db_err)?.open_table(META) {
        Ok(meta) => meta.get(LAYOUT).map_err(db_err)?.map(|v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(db_err(e)),
    };
    if made == Some(LAYOUT_VERSION) {
        return Ok(());
    }
    let txn = db.begin_write().map_err(db_err)?;
    {
        txn.open_table(BLOBS).map_err(db_err)?;
        txn.open_table(DATA).map_err(db_err)?;
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let layout = meta.get(LAYOUT).map_err(db_err)?.map(|v| v.value());
        match layout {
            None => {
                meta.insert(LAYOUT, LAYOUT_VERSION).map_err(db_err)?;
            }
            Some(LAYOUT_VERSION) => {}
            Some(v) => {
                return Err(io::Error::other(format!(
                    "blob index layout {v} is newer than this node's ({LAYOUT_VERSION})"
                )))
            }
        }
    }
    txn.commit().map_err(db_err)
}

fn meta_get(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> io::Result<u64> {
    Ok(meta.get(key).map_err(db_err)?.map_or(0, |v| v.value()))
}

/// The totals and converted flag as committed.
pub(crate) fn read_totals(db: &Database) -> io::Result<(Totals, bool)> {
    let txn = db.begin_read().map_err(db_err)?;
    let meta = txn.open_table(META).map_err(db_err)?;
    Ok((
        Totals {
            count: meta_get(&meta, COUNT)?,
            bytes: meta_get(&meta, BYTES)?,
        },
        meta_get(&meta, CONVERTED)? == 1,
    ))
}

impl UserDb {
    /// Opens `dir`'s database (creating the folder and the database if
    /// needed), converts a 0.2 folder first if it was not yet, and starts
    /// its writer.
    pub(crate) fn open(dir: &Path, inline_max: u64) -> io::Result<UserDb> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(root) = dir.parent() {
                sync_dir(root)?;
            }
        }
        check_index_present(dir)?;
        let db = open_database(dir, true)?;
        let user = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        convert(&db, dir, &user, inline_max, &mut Convert::default())?;
        let db = Arc::new(db);
        let (sender, receiver) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicBool::new(false));
        #[cfg(test)]
        let faults = Arc::new(Faults::default());
        let writer = Writer {
            db: db.clone(),
            dir: dir.to_path_buf(),
            inline_max,
            commits: commits.clone(),
            broken: broken.clone(),
            #[cfg(test)]
            faults: faults.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("blob-writer-{user}"))
            .spawn(move || writer.run(receiver))?;
        Ok(UserDb {
            db,
            dir: dir.to_path_buf(),
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            reserved: Mutex::default(),
            commits,
            uploads: Arc::default(),
            inline_max,
            broken,
            #[cfg(test)]
            faults,
        })
    }

    /// Hands `job` to the writer.
    pub(crate) fn submit(&self, job: Job) -> io::Result<()> {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let sent = match sender.as_ref() {
            Some(s) => s.send(job).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer is gone: the next request reopens the database.
            self.broken.store(true, Ordering::Relaxed);
            Err(io::Error::other("blob writer stopped"))
        }
    }

    /// Whether a transaction failed or the writer stopped: this database
    /// must be reopened before it is used again.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Runs `job` in a transaction of its own on this thread (blocking,
    /// outside the writer thread: redb orders it with the writer's), for
    /// maintenance and test tools.
    pub(crate) fn run_now(&self, job: Job) {
        let writer = Writer {
            db: self.db.clone(),
            dir: self.dir.clone(),
            inline_max: self.inline_max,
            commits: self.commits.clone(),
            broken: self.broken.clone(),
            #[cfg(test)]
            faults: self.faults.clone(),
        };
        if let Err(e) = writer.transact(vec![job]) {
            writer.broken.store(true, Ordering::Relaxed);
            drop(e);
        }
    }

    /// Write transactions committed so far.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The committed totals.
    pub(crate) fn totals(&self) -> io::Result<Totals> {
        Ok(read_totals(&self.db)?.0)
    }
}

/// The writer of one database.
struct Writer {
    db: Arc<Database>,
    dir: PathBuf,
    inline_max: u64,
    commits: Arc<AtomicU64>,
    broken: Arc<AtomicBool>,
    #[cfg(test)]
    faults: Arc<Faults>,
}

/// What a transaction did to files.
#[derive(Default)]
struct FileChanges {
    /// Files renamed into place (removed again if the commit fails).
    added: Vec<PathBuf>,
    /// Files the commit makes obsolete (removed after it).
    obsolete: Vec<PathBuf>,
}

/// The outcome of one job, sent once the commit is durable.
enum Outcome {
    Put(
        oneshot::Sender<io::Result<Vec<Result<(), PutError>>>>,
        Vec<Result<(), PutError>>,
    ),
    Delete(oneshot::Sender<io::Result<Vec<bool>>>, Vec<bool>),
}

impl Writer {
    fn run(self, receiver: mpsc::Receiver<Job>) {
        let mut queue = VecDeque::new();
        while let Ok(first) = receiver.recv() {
            queue.push_back(first);
            while let Ok(j) = receiver.try_recv() {
                queue.push_back(j);
            }
            while !queue.is_empty() {
                let mut jobs = Vec::new();
                let (mut ops, mut bytes) = (0usize, 0u64);
                while let Some(j) = queue.front() {
                    let (o, b) = j.weight();
                    if !jobs.is_empty()
                        && (ops.saturating_add(o) > MAX_OPS || bytes.saturating_add(b) > MAX_BYTES)
                    {
                        break;
                    }
                    ops = ops.saturating_add(o);
                    bytes = bytes.saturating_add(b);
                    jobs.extend(queue.pop_front());
                }
                if let Err(e) = self.transact(jobs) {
                    // redb refuses every later transaction after an I/O
                    // error: stop, answer what is queued with the cause,
                    // and let the store reopen the database.
                    self.broken.store(true, Ordering::Relaxed);
                    for j in queue.drain(..) {
                        j.fail(&e);
                    }
                    while let Ok(j) = receiver.try_recv() {
                        j.fail(&e);
                    }
                    return;
                }
                // Whatever arrived during that commit goes into the next.
                while let Ok(j) = receiver.try_recv() {
                    queue.push_back(j);
                }
            }
        }
    }

    /// Runs `jobs` in one transaction and answers every one of them (the
    /// cause of a failure included). `Err`: the transaction failed or
    /// panicked, and the database must be reopened.
    fn transact(&self, jobs: Vec<Job>) -> io::Result<()> {
        let mut files = FileChanges::default();
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut pending = jobs.into_iter();
        // The reply of the job being worked on, answered on a failure.
        let mut current: Option<Reply> = None;
        // Whether `commit()` was called: after that the commit may be on
        // disk even if it reports an error.
        let mut committing = false;
        let result = catch_unwind(AssertUnwindSafe(|| -> io::Result<()> {
            let txn = self.db.begin_write().map_err(db_err)?;
            {
                let mut t = Tables::open(&txn)?;
                for job in pending.by_ref() {
                    match job {
                        Job::Put { ops, reply } => {
                            current = Some(Reply::Put(reply));
                            let mut results = Vec::with_capacity(ops.len());
                            for op in ops {
                                results.push(self.put(&mut t, op, &mut files)?);
                            }
                            if let Some(Reply::Put(reply)) = current.take() {
                                outcomes.push(Outcome::Put(reply, results));
                            }
                        }
                        Job::Delete { ids, reply } => {
                            current = Some(Reply::Delete(reply));
                            let mut found = Vec::with_capacity(ids.len());
                            for id in ids {
                                found.push(self.delete(&mut t, &id, &mut files)?);
                            }
                            if let Some(Reply::Delete(reply)) = current.take() {
                                outcomes.push(Outcome::Delete(reply, found));
                            }
                        }
                    }
                }
                t.save()?;
            }
            if !files.added.is_empty() {
                sync_dir(&self.dir)?;
            }
            #[cfg(test)]
            self.faults.before_commit()?;
            committing = true;
            txn.commit().map_err(db_err)?;
            #[cfg(test)]
            self.faults.after_commit()?;
            Ok(())
        }));
        let result = result.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            tracing::error!(dir = %self.dir.display(), "blob writer panicked: {what}");
            Err(io::Error::other(format!("blob writer panicked: {what}")))
        });
        match result {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                for f in &files.obsolete {
                    let _ = std::fs::remove_file(f);
                }
                for o in outcomes {
                    match o {
                        Outcome::Put(reply, r) => {
                            let _ = reply.send(Ok(r));
                        }
                        Outcome::Delete(reply, r) => {
                            let _ = reply.send(Ok(r));
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "blob index commit failed");
                // Before anyone is answered, so that a request sent after
                // the answer reopens the database.
                self.broken.store(true, Ordering::Relaxed);
                // Before `commit()` nothing is on disk: the new files go.
                // After it the commit may be durable (a failed final
                // fsync): its files stay (an orphan is removed by `fsck
                // --fix`), and so do the ones it made obsolete.
                if !committing {
                    for f in &files.added {
                        let _ = std::fs::remove_file(f);
                    }
                }
                for o in outcomes {
                    match o {
                        Outcome::Put(reply, _) => {
                            let _ = reply.send(Err(copy_err(&e)));
                        }
                        Outcome::Delete(reply, _) => {
                            let _ = reply.send(Err(copy_err(&e)));
                        }
                    }
                }
                if let Some(reply) = current {
                    reply.fail(&e);
                }
                for job in pending {
                    job.fail(&e);
                }
                Err(e)
            }
        }
    }

    /// One put inside the transaction: `Ok(Err)` for this put alone,
    /// `Err` fails the transaction.
    fn put(
        &self,
        t: &mut Tables<'_>,
        op: PutOp,
        files: &mut FileChanges,
    ) -> io::Result<Result<(), PutError>> {
        let key = op.id.as_str();
        let old = t.get(key)?;
        if let Some(expect) = &op.expect {
            match expect_holds(t, &self.dir, key, old, expect) {
                Ok(true) => {}
                Ok(false) => return Ok(Err(PutError::Conflict)),
                Err(e) => return Ok(Err(PutError::from(e))),
            }
        }
        let len = op.data.len();
        let place = if len <= self.inline_max {
            let bytes = match op.data {
                Data::Bytes(b) => b,
                Data::Temp(s) => match read_bounded(s.path(), self.inline_max) {
                    Ok(b) => b,
                    Err(e) => return Ok(Err(PutError::from(e))),
                },
            };
            t.data.insert(key, bytes.as_slice()).map_err(db_err)?;
            Place::Inline
        } else {
            let synced = match op.data {
                Data::Temp(s) => s,
                Data::Bytes(_) => {
                    return Ok(Err(PutError::Io(io::Error::other(
                        "a buffered upload over the inline bound",
                    ))))
                }
            };
            let n = t.next_file.max(2);
            t.next_file = n.checked_add(1).ok_or_else(|| overflow("file counter"))?;
            let path = self.dir.join(file_name(key, n));
            if let Err(e) = synced.rename(&path) {
                return Ok(Err(PutError::from(e)));
            }
            files.added.push(path);
            if matches!(
                old,
                Some(Entry {
                    place: Place::Inline,
                    ..
                })
            ) {
                t.data.remove(key).map_err(db_err)?;
            }
            Place::File(n)
        };
        let entry = Entry {
            len,
            modified: now_secs(),
            place,
        };
        t.blobs.insert(key, entry.encode()).map_err(db_err)?;
        match old {
            Some(o) => {
                t.totals.bytes = t.totals.bytes.saturating_sub(o.len);
                if let Place::File(m) = o.place {
                    files.obsolete.push(self.dir.join(file_name(key, m)));
                }
            }
            None => {
                t.totals.count = t
                    .totals
                    .count
                    .checked_add(1)
                    .ok_or_else(|| overflow("blob count"))?
            }
        }
        t.totals.bytes = t.totals.bytes.saturating_add(len);
        Ok(Ok(()))
    }

    fn delete(&self, t: &mut Tables<'_>, id: &BlobId, files: &mut FileChanges) -> io::Result<bool> {
        let key = id.as_str();
        let Some(old) = t.get(key)? else {
            return Ok(false);
        };
        t.blobs.remove(key).map_err(db_err)?;
        match old.place {
            Place::Inline => {
                t.data.remove(key).map_err(db_err)?;
            }
            Place::File(m) => files.obsolete.push(self.dir.join(file_name(key, m))),
        }
        t.totals.count = t.totals.count.saturating_sub(1);
        t.totals.bytes = t.totals.bytes.saturating_sub(old.len);
        Ok(true)
    }
}

/// The open tables of a write transaction and the totals being updated.
pub(crate) struct Tables<'t> {
    pub blobs: Table<'t, &'static str, (u64, u64, u64)>,
    pub data: Table<'t, &'static str, &'static [u8]>,
    pub meta: Table<'t, &'static str, u64>,
    pub totals: Totals,
    pub next_file: u64,
}

impl<'t> Tables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> io::Result<Tables<'t>> {
        let blobs = txn.open_table(BLOBS).map_err(db_err)?;
        let data = txn.open_table(DATA).map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let totals = Totals {
            count: meta_get(&meta, COUNT)?,
            bytes: meta_get(&meta, BYTES)?,
        };
        let next_file = meta_get(&meta, NEXT_FILE)?;
        Ok(Tables {
            blobs,
            data,
            meta,
            totals,
            next_file,
        })
    }

    pub(crate) fn get(&self, key: &str) -> io::Result<Option<Entry>> {
        Ok(self
            .blobs
            .get(key)
            .map_err(db_err)?
            .map(|v| Entry::decode(v.value())))
    }

    /// Writes the totals and counter back.
    pub(crate) fn save(&mut self) -> io::Result<()> {
        self.meta.insert(COUNT, self.totals.count).map_err(db_err)?;
        self.meta.insert(BYTES, self.totals.bytes).map_err(db_err)?;
        self.meta
            .insert(NEXT_FILE, self.next_file)
            .map_err(db_err)?;
        Ok(())
    }

    fn set_converted(&mut self) -> io::Result<()> {
        self.meta.insert(CONVERTED, 1).map_err(db_err)?;
        Ok(())
    }
}

/// A counter read from the database would overflow.
fn overflow(what: &str) -> io::Error {
    io::Error::other(format!("blob index damaged: the {what} overflows"))
}

/// The index says more than the store holds (a damaged database or
/// folder): an error, never an empty or absent blob.
pub(crate) fn damaged(key: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("blob index damaged: blob {key}: {what} (see vault-node fsck)"),
    )
}

/// The bytes of inline blob `key` (entry `entry`): an error if its data
/// row is missing or not `entry.len` bytes long.
pub(crate) fn inline_data(
    data: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    entry: &Entry,
) -> io::Result<Vec<u8>> {
    let bytes = data
        .get(key)
        .map_err(db_err)?
        .map(|v| v.value().to_vec())
        .ok_or_else(|| damaged(key, "its inline bytes are missing"))?;
    if bytes.len() as u64 != entry.len {
        return Err(damaged(
            key,
            "its inline bytes are not of the indexed length",
        ));
    }
    Ok(bytes)
}

/// Refuses a folder whose database is missing while it holds blob files
/// `<id>.<n>` (which only an indexed folder has): opening would create an
/// empty index and lose them all silently.
fn check_index_present(dir: &Path) -> io::Result<()> {
    if dir.join(DB_FILE).exists() {
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((id, n)) = name.rsplit_once('.') else {
            continue;
        };
        if BlobId::new(id).is_ok() && n.parse::<u64>().is_ok_and(|n| n >= 2) {
            return Err(io::Error::other(format!(
                "{} holds blob files ({name}, ...) but no {DB_FILE}: its index is missing; \
                 restore {DB_FILE} from a backup (the folder is not served meanwhile)",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Reads the file at `path`, refusing one over `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::other("blob file longer than expected"));
    }
    Ok(bytes)
}

/// Whether `expect` holds for blob `key` (index entry `old`): the stored
/// bytes (at most [`MAX_EXPECT_LEN`]) are hashed.
fn expect_holds(
    t: &Tables<'_>,
    dir: &Path,
    key: &str,
    old: Option<Entry>,
    expect: &Expect,
) -> io::Result<bool> {
    let Some(entry) = old else {
        return Ok(expect.holds(None));
    };
    if matches!(expect, Expect::Absent) || entry.len > MAX_EXPECT_LEN {
        return Ok(false);
    }
    let bytes = match entry.place {
        Place::Inline => inline_data(&t.data, key, &entry)?,
        // The writer sees the last commit, whose files all exist: a
        // missing one is damage, not a blob deleted meanwhile.
        Place::File(n) => match read_bounded(&dir.join(file_name(key, n)), MAX_EXPECT_LEN) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(damaged(key, "its file is missing"))
            }
            Err(e) => return Err(e),
        },
    };
    Ok(expect.holds(Some(&wire::content_hash(&bytes))))
}

/// Where a conversion stops early (tests simulate a kill with it).
#[derive(Debug, Default, Clone)]
pub struct Convert {
    /// Blobs per transaction (0: the default, 4096).
    pub batch: usize,
    /// Stop after this many commits, before removing that batch's files.
    pub stop_after_commit: Option<usize>,
    /// Stop after this many batches are committed and their files removed.
    pub stop_after_batch: Option<usize>,
}

/// Converts a 0.2 user folder (one file per blob, named by its id) into
/// `db`, crash-safely and resumably, unless its converted flag is set: in
/// batches, each blob of at most `inline_max` bytes is copied into the
/// database, a larger one recorded as the file it is (place 1); the batch
/// is committed, and only then are the inlined files removed. A file whose
/// id is already inline with the same length (a run killed after its
/// commit) is removed; one already recorded as a file is skipped. The flag
/// is set at the end. `Ok(false)`: stopped early by `hook`.
pub(crate) fn convert(
    db: &Database,
    dir: &Path,
    user: &str,
    inline_max: u64,
    hook: &mut Convert,
) -> io::Result<bool> {
    if read_totals(db)?.1 {
        return Ok(true);
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if BlobId::new(name.as_str()).is_ok() && entry.file_type()?.is_file() {
            names.push(name);
        }
    }
    names.sort_unstable();
    let total = names.len();
    let batch = if hook.batch == 0 { 4096 } else { hook.batch };
    if total > 0 {
        tracing::info!("converting {user}: {total} blob files to the indexed layout");
    }
    let (mut done, mut commits) = (0usize, 0usize);
    for chunk in names.chunks(batch) {
        let mut remove = Vec::new();
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut t = Tables::open(&txn)?;
            for name in chunk {
                let path = dir.join(name);
                let meta = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let len = meta.len();
                match t.get(name)? {
                    Some(Entry {
                        place: Place::File(1),
                        ..
                    }) => {}
                    // Inlined by a run killed before it removed the file,
                    // or (another length) stale: the index wins.
                    Some(_) => remove.push(path),
                    None => {
                        let modified = super::index::unix_secs(&meta);
                        let place = if len <= inline_max {
                            let bytes = read_bounded(&path, inline_max)?;
                            t.data
                                .insert(name.as_str(), bytes.as_slice())
                                .map_err(db_err)?;
                            remove.push(path);
                            Place::Inline
                        } else {
                            Place::File(1)
                        };
                        let e = Entry {
                            len,
                            modified,
                            place,
                        };
                        t.blobs.insert(name.as_str(), e.encode()).map_err(db_err)?;
                        t.totals.count = t
                            .totals
                            .count
                            .checked_add(1)
                            .ok_or_else(|| overflow("blob count"))?;
                        t.totals.bytes = t.totals.bytes.saturating_add(len);
                    }
                }
            }
            t.save()?;
        }
        txn.commit().map_err(db_err)?;
        commits += 1;
        if hook.stop_after_commit == Some(commits) {
            return Ok(false);
        }
        for path in &remove {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        done += chunk.len();
        tracing::info!("converting {user}: {done} of {total} blobs");
        if hook.stop_after_batch == Some(commits) {
            return Ok(false);
        }
    }
    sync_dir(dir)?;
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut t = Tables::open(&txn)?;
        t.set_converted()?;
    }
    txn.commit().map_err(db_err)?;
    Ok(true)
}

/// Converts the 0.2 folder `dir` as a starting node does, with `hook` (for tests of an
/// interrupted conversion): `Ok(false)` if it stopped early.
pub fn convert_folder(dir: &Path, inline_max: u64, hook: &mut Convert) -> io::Result<bool> {
    check_index_present(dir)?;
    let db = open_database(dir, false)?;
    let user = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    convert(&db, dir, &user, inline_max, hook)
}

/// `id`'s index entry as committed now.
pub(crate) fn lookup(db: &UserDb, id: &str) -> io::Result<Option<Entry>> {
    let txn = db.db.begin_read().map_err(db_err)?;
    entry_in(&txn, id)
}

/// The index entry of `id` as read transaction `txn` sees it.
pub(crate) fn entry_in(txn: &ReadTransaction, id: &str) -> io::Result<Option<Entry>> {
    let blobs = txn.open_table(BLOBS).map_err(db_err)?;
    Ok(blobs
        .get(id)
        .map_err(db_err)?
        .map(|v| Entry::decode(v.value())))
}

/// The stored lengths of those of `ids` that are stored, and the totals,
/// as one read transaction sees them (so the two agree).
pub(crate) fn stored_lens<'a>(
    db: &UserDb,
    ids: impl Iterator<Item = &'a BlobId>,
) -> io::Result<(std::collections::HashMap<BlobId, u64>, Totals)> {
    let txn = db.db.begin_read().map_err(db_err)?;
    let meta = txn.open_table(META).map_err(db_err)?;
    let totals = Totals {
        count: meta_get(&meta, COUNT)?,
        bytes: meta_get(&meta, BYTES)?,
    };
    let blobs = txn.open_table(BLOBS).map_err(db_err)?;
    let mut out = std::collections::HashMap::new();
    for id in ids {
        if let Some(v) = blobs.get(id.as_str()).map_err(db_err)? {
            out.insert(id.clone(), Entry::decode(v.value()).len);
        }
    }
    Ok((out, totals))
}

/// The bytes of blob `id` as committed now, if it has at most `max`
/// (`None`: absent, or its file vanished).
pub(crate) fn read_blob(db: &UserDb, id: &str, max: u64) -> io::Result<Option<Vec<u8>>> {
    read_blob_in(&db.db, &db.dir, id, max)
}

/// [`read_blob`] on an open database of folder `dir`.
pub(crate) fn read_blob_in(
    db: &Database,
    dir: &Path,
    id: &str,
    max: u64,
) -> io::Result<Option<Vec<u8>>> {
    let txn = db.begin_read().map_err(db_err)?;
    let Some(entry) = entry_in(&txn, id)? else {
        return Ok(None);
    };
    match entry.place {
        Place::Inline => {
            let data = txn.open_table(DATA).map_err(db_err)?;
            Ok(Some(inline_data(&data, id, &entry)?))
        }
        Place::File(n) => match read_bounded(&dir.join(file_name(id, n)), max) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
    }
}

/// Stores `items` (id, bytes) inline in `dir`'s database in one
/// transaction, marking it converted: for tests that need a big index
/// fast (the test kit's feature only). `dir` must not be served.
#[cfg(any(test, feature = "testing"))]
pub fn fill_for_tests(
    dir: &Path,
    items: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let db = open_database(dir, false)?;
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut t = Tables::open(&txn)?;
        let now = now_secs();
        for (id, bytes) in items {
            BlobId::new(id.as_str())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid blob id"))?;
            let old = t.get(&id)?;
            t.data
                .insert(id.as_str(), bytes.as_slice())
                .map_err(db_err)?;
            let e = Entry {
                len: bytes.len() as u64,
                modified: now,
                place: Place::Inline,
            };
            t.blobs.insert(id.as_str(), e.encode()).map_err(db_err)?;
            if let Some(o) = old {
                t.totals.bytes = t.totals.bytes.saturating_sub(o.len);
            } else {
                t.totals.count = t
                    .totals
                    .count
                    .checked_add(1)
                    .ok_or_else(|| overflow("blob count"))?;
            }
            t.totals.bytes = t.totals.bytes.saturating_add(e.len);
        }
        t.save()?;
        t.set_converted()?;
    }
    txn.commit().map_err(db_err)
}

#[cfg(test)]
mod fault_tests {
    //! Failures of the writer and damage of the index (review of issue
    //! 17, findings 2, 5, 6, 7, 8, 10).

    use super::*;
    use crate::store::BlobStore;
    use std::future::Future;

    /// Fails a test that hangs instead of hanging the suite.
    async fn timed<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("test timed out")
    }

    fn id(s: &str) -> BlobId {
        BlobId::new(s).unwrap()
    }

    async fn put(
        store: &BlobStore,
        user: &str,
        name: &str,
        data: &[u8],
        expect: Option<&Expect>,
    ) -> Result<(), PutError> {
        let mut p = store
            .begin_put(user, &id(name), data.len() as u64, None, expect)
            .await?;
        p.write(data).await?;
        p.commit().await
    }

    async fn get(store: &BlobStore, name: &str) -> io::Result<Option<Vec<u8>>> {
        let Some(mut b) = store.open("alice", &id(name)).await? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        b.file.read_to_end(&mut out)?;
        Ok(Some(out))
    }

    /// Larger than the inline bound: stored as a file.
    fn big() -> Vec<u8> {
        vec![7u8; (crate::store::DEFAULT_INLINE_MAX + 1000) as usize]
    }

    async fn inject(store: &BlobStore, fault: Fault) {
        let db = store.db("alice").await.unwrap();
        *db.faults.next.lock().unwrap() = Some(fault);
    }

    /// Runs `f` in a write transaction of alice's open database.
    async fn edit(store: &BlobStore, f: impl FnOnce(&mut Tables<'_>)) {
        let db = store.db("alice").await.unwrap();
        let txn = db.db.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn).unwrap();
            f(&mut t);
        }
        txn.commit().unwrap();
    }

    /// The files of alice's folder named after blob `name`.
    fn blob_files(root: &Path, name: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join("alice"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n == name || n.starts_with(&format!("{name}.")))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_full_disk_on_commit_answers_no_space_and_the_next_write_reopens() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = BlobStore::new(root.path());
            put(&store, "alice", "a", b"one", None).await.unwrap();
            inject(&store, Fault::NoSpace).await;
            let err = put(&store, "alice", "b", b"two", None).await.unwrap_err();
            assert!(matches!(err, PutError::NoSpace(_)), "{err:?}");
            // redb refuses every transaction after an I/O error (simulated
            // by the hook's latch): the store reopens the database.
            put(&store, "alice", "c", b"three", None).await.unwrap();
            assert_eq!(
                get(&store, "a").await.unwrap().as_deref(),
                Some(&b"one"[..])
            );
            assert_eq!(get(&store, "b").await.unwrap(), None);
            assert_eq!(
                get(&store, "c").await.unwrap().as_deref(),
                Some(&b"three"[..])
            );
            assert_eq!(store.usage("alice").await.unwrap(), (2, 8));
            assert_eq!(store.databases_opened(), 2);
        })
        .await
    }

    #[tokio::test]
    async fn a_panicking_writer_fails_its_jobs_with_the_cause_and_the_next_write_reopens() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = BlobStore::new(root.path());
            put(&store, "alice", "a", b"one", None).await.unwrap();
            inject(&store, Fault::Panic).await;
            let err = put(&store, "alice", "b", b"two", None).await.unwrap_err();
            assert!(err.to_string().contains("panicked"), "{err}");
            put(&store, "alice", "c", b"three", None).await.unwrap();
            assert!(store.delete("alice", &id("a")).await.unwrap());
            assert_eq!(store.usage("alice").await.unwrap(), (1, 5));
        })
        .await
    }

    #[tokio::test]
    async fn a_counter_overflow_fails_the_job_with_the_cause() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = BlobStore::new(root.path());
            put(&store, "alice", "a", b"one", None).await.unwrap();
            edit(&store, |t| {
                t.next_file = u64::MAX;
                t.save().unwrap();
            })
            .await;
            let err = put(&store, "alice", "big", &big(), None).await.unwrap_err();
            assert!(err.to_string().contains("overflows"), "{err}");
            // Inline blobs need no file number: the user is served still.
            put(&store, "alice", "c", b"three", None).await.unwrap();
            assert_eq!(get(&store, "big").await.unwrap(), None);
            assert!(blob_files(root.path(), "big").is_empty());
        })
        .await
    }

    #[tokio::test]
    async fn a_commit_that_fails_after_commit_keeps_its_files() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = BlobStore::new(root.path());
            inject(&store, Fault::AfterCommit).await;
            let data = big();
            let err = put(&store, "alice", "big", &data, None).await.unwrap_err();
            assert!(err.to_string().contains("fsync"), "{err}");
            // The commit is durable: its entry has its bytes.
            assert_eq!(get(&store, "big").await.unwrap(), Some(data));
            assert_eq!(blob_files(root.path(), "big"), ["big.2"]);
        })
        .await
    }

    #[tokio::test]
    async fn a_missing_inline_row_is_an_error_not_an_empty_blob() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = BlobStore::new(root.path());
            put(&store, "alice", "a", b"one", None).await.unwrap();
            put(&store, "alice", "e", b"", None).await.unwrap();
            edit(&store, |t| {
                t.data.remove("a").unwrap();
                t.data.remove("e").unwrap();
            })
            .await;
            let err = get(&store, "a").await.unwrap_err();
            assert!(err.to_string().contains("damaged"), "{err}");
            // An empty blob without its row is damage too.
            assert!(get(&store, "e").await.is_err());
            // A condition on the empty contents does not hold on damage.
            let empty = Expect::of(Some(b""));
            let err = put(&store, "alice", "a", b"new", Some(&empty))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("damaged"), "{err}");
            // A row of another length than the entry's is damage as well.
            edit(&store, |t| {
                t.data.insert("a", &b"longer"[..]).unwrap();
            })
            .await;
            assert!(get(&store, "a").await.is_err());
        })
        .await
    }

    #[tokio::test]
    async fn a_missing_blob_file_is_an_error_not_absent() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            // A small inline bound: a file blob short enough for a
            // condition on its contents.
            let limits = crate::store::StoreLimits {
                inline_max: 100,
                ..Default::default()
            };
            let store = BlobStore::with_limits(root.path(), limits);
            let data = vec![3u8; 1000];
            put(&store, "alice", "big", &data, None).await.unwrap();
            std::fs::remove_file(root.path().join("alice").join("big.2")).unwrap();
            let err = get(&store, "big").await.unwrap_err();
            assert!(err.to_string().contains("missing"), "{err}");
            let cond = Expect::of(Some(&data));
            // Not stored (the early check or the writer's refuses it).
            assert!(put(&store, "alice", "big", b"x", Some(&cond))
                .await
                .is_err());
            // The writer's own check says why, not "changed".
            let db = store.db("alice").await.unwrap();
            let (reply, answer) = oneshot::channel();
            db.run_now(Job::Put {
                ops: vec![PutOp {
                    id: id("big"),
                    data: Data::Bytes(b"x".to_vec()),
                    expect: Some(cond),
                }],
                reply,
            });
            let mut results = answer.await.unwrap().unwrap();
            let err = results.pop().unwrap().unwrap_err();
            assert!(err.to_string().contains("missing"), "{err}");
            // Deleting it still works (fsck-free repair).
            assert!(store.delete("alice", &id("big")).await.unwrap());
            assert_eq!(get(&store, "big").await.unwrap(), None);
        })
        .await
    }

    #[tokio::test]
    async fn a_missing_index_beside_numbered_files_is_refused_not_emptied() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            {
                let store = BlobStore::new(root.path());
                put(&store, "alice", "big", &big(), None).await.unwrap();
                put(&store, "bob", "b", b"bob's", None).await.unwrap();
            }
            let dir = root.path().join("alice");
            std::fs::remove_file(dir.join(DB_FILE)).unwrap();
            let store = BlobStore::new(root.path());
            // Start goes on with the other users.
            assert_eq!(store.convert_all().unwrap(), 1);
            let err = store.usage("alice").await.unwrap_err();
            assert!(err.to_string().contains("no index.redb"), "{err}");
            assert!(store.list("alice", None, "", 10).await.is_err());
            assert!(!dir.join(DB_FILE).exists(), "no empty index made");
            assert_eq!(store.usage("bob").await.unwrap(), (1, 5));
            let err = convert_folder(&dir, DEFAULT_INLINE, &mut Convert::default()).unwrap_err();
            assert!(err.to_string().contains("no index.redb"), "{err}");
        })
        .await
    }

    const DEFAULT_INLINE: u64 = crate::store::DEFAULT_INLINE_MAX;

    #[tokio::test]
    async fn a_damaged_index_skips_that_user_at_start() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            {
                let store = BlobStore::new(root.path());
                put(&store, "alice", "a", b"one", None).await.unwrap();
                put(&store, "bob", "b", b"bob's", None).await.unwrap();
            }
            std::fs::write(root.path().join("alice").join(DB_FILE), vec![0x5a; 8192]).unwrap();
            let store = BlobStore::new(root.path());
            assert_eq!(store.convert_all().unwrap(), 1);
            let err = store.usage("alice").await.unwrap_err();
            assert!(err.to_string().contains("alice"), "names the folder: {err}");
            assert_eq!(store.usage("bob").await.unwrap(), (1, 5));
        })
        .await
    }
}
