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

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
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
        let db = open_database(dir, true)?;
        let user = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        convert(&db, dir, &user, inline_max, &mut Convert::default())?;
        let db = Arc::new(db);
        let (sender, receiver) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            db: db.clone(),
            dir: dir.to_path_buf(),
            inline_max,
            commits: commits.clone(),
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
        })
    }

    /// Hands `job` to the writer.
    pub(crate) fn submit(&self, job: Job) -> io::Result<()> {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        match sender.as_ref() {
            Some(s) => s
                .send(job)
                .map_err(|_| io::Error::other("blob writer stopped")),
            None => Err(io::Error::other("blob writer stopped")),
        }
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
        };
        writer.transact(vec![job]);
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
                        && (ops + o > MAX_OPS || bytes.saturating_add(b) > MAX_BYTES)
                    {
                        break;
                    }
                    ops += o;
                    bytes = bytes.saturating_add(b);
                    jobs.extend(queue.pop_front());
                }
                self.transact(jobs);
                // Whatever arrived during that commit goes into the next.
                while let Ok(j) = receiver.try_recv() {
                    queue.push_back(j);
                }
            }
        }
    }

    /// Runs `jobs` in one transaction and answers them.
    fn transact(&self, jobs: Vec<Job>) {
        let mut files = FileChanges::default();
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut pending = jobs.into_iter();
        let result = (|| -> io::Result<()> {
            let txn = self.db.begin_write().map_err(db_err)?;
            {
                let mut t = Tables::open(&txn)?;
                for job in pending.by_ref() {
                    match job {
                        Job::Put { ops, reply } => {
                            let mut results = Vec::with_capacity(ops.len());
                            for op in ops {
                                results.push(self.put(&mut t, op, &mut files)?);
                            }
                            outcomes.push(Outcome::Put(reply, results));
                        }
                        Job::Delete { ids, reply } => {
                            let mut found = Vec::with_capacity(ids.len());
                            for id in ids {
                                found.push(self.delete(&mut t, &id, &mut files)?);
                            }
                            outcomes.push(Outcome::Delete(reply, found));
                        }
                    }
                }
                t.save()?;
            }
            if !files.added.is_empty() {
                sync_dir(&self.dir)?;
            }
            txn.commit().map_err(db_err)
        })();
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
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "blob index commit failed");
                for f in &files.added {
                    let _ = std::fs::remove_file(f);
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
                for job in pending {
                    job.fail(&e);
                }
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
            t.next_file = n + 1;
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
            None => t.totals.count += 1,
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
        Place::Inline => t
            .data
            .get(key)
            .map_err(db_err)?
            .map(|v| v.value().to_vec())
            .unwrap_or_default(),
        Place::File(n) => match read_bounded(&dir.join(file_name(key, n)), MAX_EXPECT_LEN) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(expect.holds(None)),
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
                        t.totals.count += 1;
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
    let db = open_database(dir, false)?;
    let user = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    convert(&db, dir, &user, inline_max, hook)
}

/// `id`'s index entry as committed now.
pub(crate) fn lookup(db: &UserDb, id: &str) -> io::Result<Option<Entry>> {
    let txn = db.db.begin_read().map_err(db_err)?;
    let blobs = txn.open_table(BLOBS).map_err(db_err)?;
    Ok(blobs
        .get(id)
        .map_err(db_err)?
        .map(|v| Entry::decode(v.value())))
}

/// The stored lengths of those of `ids` that are stored.
pub(crate) fn stored_lens<'a>(
    db: &UserDb,
    ids: impl Iterator<Item = &'a BlobId>,
) -> io::Result<std::collections::HashMap<BlobId, u64>> {
    let txn = db.db.begin_read().map_err(db_err)?;
    let blobs = txn.open_table(BLOBS).map_err(db_err)?;
    let mut out = std::collections::HashMap::new();
    for id in ids {
        if let Some(v) = blobs.get(id.as_str()).map_err(db_err)? {
            out.insert(id.clone(), Entry::decode(v.value()).len);
        }
    }
    Ok(out)
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
    let blobs = txn.open_table(BLOBS).map_err(db_err)?;
    let Some(entry) = blobs
        .get(id)
        .map_err(db_err)?
        .map(|v| Entry::decode(v.value()))
    else {
        return Ok(None);
    };
    match entry.place {
        Place::Inline => {
            let data = txn.open_table(DATA).map_err(db_err)?;
            Ok(data.get(id).map_err(db_err)?.map(|v| v.value().to_vec()))
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
                t.totals.count += 1;
            }
            t.totals.bytes = t.totals.bytes.saturating_add(e.len);
        }
        t.save()?;
        t.set_converted()?;
    }
    txn.commit().map_err(db_err)
}
