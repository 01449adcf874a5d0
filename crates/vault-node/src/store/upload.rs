//! Uploads: one blob ([`PendingBlob`], for `PutBlob`) or a batch
//! ([`PutBatch`], for `PutBlobs`).
//!
//! A blob of at most the inline bound is gathered in memory, if the
//! node-wide budget for that ([`super::StoreLimits::max_upload_memory`])
//! has room for its announced length (else it goes to a temp file too,
//! never refused); a larger one in a buffer written to a temp file under
//! `.tmp/` on blocking threads and synced. Buffers grow as bytes arrive:
//! an announced length allocates nothing. Then the upload (a batch: all its blobs) goes to the user's
//! writer (`db`), which stores it in its next transaction (inline, or
//! renaming the file to `<id>.<n>`) and answers once that is committed.
//! A temp file that is not stored is removed, and quota is given back,
//! whatever ends the upload; once handed to the writer, an upload's
//! reservation is held until the writer answers (even if the request is
//! dropped meanwhile), so a reservation is always given back after its
//! blob counts in the database's totals, never before.
//!
//! A reservation is checked under the user's reservation lock against
//! the stored lengths and totals of one read transaction, so a commit or
//! delete landing meanwhile is counted once: as stored, or as reserved
//! (both, at worst, for a moment).
//!
//! A condition ([`Expect`]) is checked by the writer inside the
//! transaction that stores the blob, so nothing can change the blob
//! between the check and the replacement. A `PutBlob`'s condition is also
//! checked before its bytes are read, to refuse early; the check in the
//! writer is the one that counts.
//!
//! Every blocking file operation of an upload takes a permit of its
//! user's share first, then one of the node-wide bound ([`IoBound`]), so
//! uploads never hold more than [`super::StoreLimits::max_upload_io`]
//! blocking threads, and one user's uploads at most a quarter of those
//! (at least one): another user's upload never queues behind more than
//! that share of any one user's work.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use wire::{BlobId, Expect, PutItem};

use super::db::{self, Data, Job, PutOp, UploadTicket, UserDb};
use super::index::Hold;
use super::{blocking, is_no_space, lock, BlobStore, PutError, TMP_DIR};
use crate::fsutil::{random_hex, Synced, TempGuard};

/// Upload bytes gathered before one blocking write.
const WRITE_BUF: usize = 512 * 1024;

/// Blobs of a batch written and synced on blocking threads at once, while
/// the next ones arrive: parallel syncs cost little more than one.
const MAX_SYNCING: usize = 8;

/// Most buffered bytes those blobs hold between them, so a batch holds
/// about as much memory as one upload.
const MAX_SYNCING_BYTES: usize = WRITE_BUF;

/// Largest stored blob a condition ([`Expect::Hash`]) is compared with:
/// it is read and hashed by the user's writer. Conditions are for
/// manifests, which are far smaller. A `PutBlob` whose condition names a
/// larger stored blob is refused (`BadRequest`); a larger blob found at
/// the commit never matches (`Conflict`).
pub const MAX_EXPECT_LEN: u64 = 1 << 20;

/// Quota (and places under the blob count cap) held by an upload, and its
/// share of the node's in-memory upload budget if its bytes are gathered
/// in memory; given back on drop (once the upload is stored, its blob
/// counts in the database's totals instead).
#[derive(Debug)]
struct Reservation {
    db: Arc<UserDb>,
    hold: Hold,
    /// Bytes of [`super::StoreLimits::max_upload_memory`] held.
    memory: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Moves `hold` of this reservation to one of its own.
    fn split(&mut self, hold: Hold) -> Reservation {
        let hold = Hold {
            charge: hold.charge.min(self.hold.charge),
            slots: hold.slots.min(self.hold.slots),
        };
        self.hold.charge -= hold.charge;
        self.hold.slots -= hold.slots;
        Reservation {
            db: self.db.clone(),
            hold,
            memory: None,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.hold != Hold::default() {
            lock(&self.db.reserved).release(self.hold);
        }
    }
}

/// The bound on an upload's blocking file work: its user's share, then
/// the node-wide bound.
#[derive(Debug, Clone)]
pub(super) struct IoBound {
    pub(super) user: Arc<Semaphore>,
    pub(super) node: Arc<Semaphore>,
}

/// Permits of an [`IoBound`], held while the work runs.
type IoPermit = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// Runs `f` on a blocking thread once a permit of `io` is free.
async fn bounded<T: Send + 'static>(
    io: &IoBound,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let permit = io_permit(io).await?;
    blocking(move || {
        let _permit = permit;
        f()
    })
    .await
}

/// The user's share first: a user waits for the node-wide bound with at
/// most its share of requests at a time.
async fn io_permit(io: &IoBound) -> io::Result<IoPermit> {
    let closed = |_| io::Error::other("upload I/O bound closed");
    let user = io.user.clone().acquire_owned().await.map_err(closed)?;
    let node = io.node.clone().acquire_owned().await.map_err(closed)?;
    Ok((user, node))
}

/// Checks `expect` for blob `id` as committed now (the early check of a
/// `PutBlob`; the writer checks again at the commit). Blocking.
fn check_early(db: &UserDb, id: &BlobId, expect: &Expect) -> Result<(), PutError> {
    let Some(found) = db::lookup(db, id.as_str())? else {
        return if expect.holds(None) {
            Ok(())
        } else {
            Err(PutError::Conflict)
        };
    };
    if let Expect::Hash(_) = expect {
        if found.len > MAX_EXPECT_LEN {
            return Err(PutError::BadCondition(format!(
                "a condition can only name a stored blob of at most {MAX_EXPECT_LEN} \
                 bytes; this one holds {} bytes",
                found.len
            )));
        }
    }
    if matches!(expect, Expect::Absent) {
        return Err(PutError::Conflict);
    }
    let bytes = match db::read_blob(db, id.as_str(), MAX_EXPECT_LEN)? {
        Some(b) => b,
        None => {
            return if expect.holds(None) {
                Ok(())
            } else {
                Err(PutError::Conflict)
            }
        }
    };
    if expect.holds(Some(&wire::content_hash(&bytes))) {
        Ok(())
    } else {
        Err(PutError::Conflict)
    }
}

/// A new temp file's path under `tmp_dir`.
fn temp_path(tmp_dir: &Path) -> io::Result<PathBuf> {
    Ok(tmp_dir.join(format!("{}.tmp", random_hex(16)?)))
}

fn create_new(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Bytes on their way to a temp file, removed on drop.
#[derive(Debug)]
struct TempWriter {
    /// `None` before a lazy writer's file exists, and while a write is in
    /// flight on a blocking thread.
    file: Option<File>,
    created: bool,
    /// Bytes not yet written: QUIC hands over packet-sized pieces, and one
    /// blocking write per piece would cost more than the copy.
    buf: Vec<u8>,
    guard: TempGuard,
    written: u64,
    /// The store's upload I/O bound.
    io: IoBound,
}

impl TempWriter {
    /// A writer whose file is created with the first write that reaches
    /// the disk. Its buffer grows as bytes arrive.
    fn lazy(path: PathBuf, io: IoBound) -> TempWriter {
        TempWriter {
            file: None,
            created: false,
            buf: Vec::new(),
            guard: TempGuard::new(path),
            written: 0,
            io,
        }
    }

    /// A writer whose file exists from the start (an upload in progress
    /// shows in `.tmp/`).
    async fn create(path: PathBuf, io: IoBound) -> io::Result<TempWriter> {
        let mut w = TempWriter::lazy(path, io);
        let path = w.guard.path().to_path_buf();
        w.created = true;
        w.file = Some(bounded(&w.io, move || create_new(&path)).await?);
        Ok(w)
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        grow(&mut self.buf, bytes.len(), WRITE_BUF);
        self.buf.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.buf.len() >= WRITE_BUF {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the buffered bytes on a blocking thread.
    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self.open_file()?;
        let path = self.guard.path().to_path_buf();
        let buf = std::mem::take(&mut self.buf);
        let (file, mut buf) = bounded(&self.io, move || {
            let mut file = file.map_or_else(|| create_new(&path), Ok)?;
            file.write_all(&buf)?;
            Ok((file, buf))
        })
        .await?;
        buf.clear();
        self.buf = buf;
        self.file = Some(file);
        Ok(())
    }

    /// The open file (`None`: to be created), or an error if an earlier
    /// write failed.
    fn open_file(&mut self) -> io::Result<Option<File>> {
        match self.file.take() {
            Some(f) => Ok(Some(f)),
            None if !self.created => {
                self.created = true;
                Ok(None)
            }
            None => Err(io::Error::other("an earlier write failed")),
        }
    }

    /// Writes what is buffered and syncs the file: blocking, for a
    /// blocking thread.
    fn finish(mut self) -> io::Result<Synced> {
        let mut file = match self.open_file()? {
            Some(f) => f,
            None => create_new(self.guard.path())?,
        };
        file.write_all(&self.buf)?;
        Synced::new(file, self.guard)
    }
}

/// Makes room in `buf` for `extra` more bytes: its capacity at least
/// doubles, but not past `cap` (unless the bytes need more), so a buffer
/// never holds much more than it is expected to.
fn grow(buf: &mut Vec<u8>, extra: usize, cap: usize) {
    let need = buf.len().saturating_add(extra);
    if need > buf.capacity() {
        let target = need
            .max(buf.capacity().saturating_mul(2))
            .min(cap.max(need));
        buf.reserve_exact(target - buf.len());
    }
}

/// Where an upload's bytes gather: in memory (at most its announced
/// length, which is at most the inline bound, and which its reservation
/// holds of the node's memory budget) or in a temp file.
#[derive(Debug)]
enum Sink {
    /// The bytes so far, and the announced length.
    Memory(Vec<u8>, usize),
    File(TempWriter),
}

impl Sink {
    /// An in-memory sink for `len` bytes: allocates nothing yet.
    fn memory(len: usize) -> Sink {
        Sink::Memory(Vec::new(), len)
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Memory(buf, len) => {
                if buf.len().saturating_add(bytes.len()) > *len {
                    return Err(io::Error::other("upload longer than announced"));
                }
                grow(buf, bytes.len(), *len);
                buf.extend_from_slice(bytes);
                Ok(())
            }
            Sink::File(w) => w.write(bytes).await,
        }
    }

    fn written(&self) -> u64 {
        match self {
            Sink::Memory(b, _) => b.len() as u64,
            Sink::File(w) => w.written,
        }
    }
}

/// Hands `ops` to `db`'s writer as one job and waits for its durable
/// commit: each op's outcome, in order.
///
/// `held` (the ops' reservations) is given back only once the writer
/// has answered, even if this future is dropped first: until the commit,
/// the blobs count nowhere else, and a reservation checked meanwhile
/// must still see them.
async fn store_ops(
    db: &UserDb,
    ops: Vec<PutOp>,
    held: Vec<Reservation>,
) -> Result<Vec<Result<(), PutError>>, PutError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    db.submit(Job::Put { ops, reply })?;
    let waiter = tokio::spawn(async move {
        let answer = answer.await;
        drop(held);
        answer
    });
    let results = waiter
        .await
        .map_err(|e| io::Error::other(format!("commit waiter failed: {e}")))?
        .map_err(|_| io::Error::other("blob writer stopped"))??;
    Ok(results)
}

impl BlobStore {
    /// Reserves `items` for `user` against `quota` and the blob count cap,
    /// counting what the database holds now.
    async fn reserve(
        &self,
        db: &Arc<UserDb>,
        items: Vec<(BlobId, u64)>,
        quota: Option<u64>,
    ) -> Result<Vec<Hold>, PutError> {
        let max_blobs = self.limits.max_blobs;
        let db = db.clone();
        blocking(move || {
            // The lock first, then one read transaction: a commit can give
            // its reservation back only after its blob counts in the
            // totals, and a delete cannot land between the lengths and
            // the totals.
            let mut reserved = lock(&db.reserved);
            let (stored, totals) = db::stored_lens(&db, items.iter().map(|(id, _)| id))?;
            Ok(reserved.reserve_many(
                (totals.count, totals.bytes),
                |id| stored.get(id).copied(),
                items.iter().map(|(id, n)| (id, *n)),
                quota,
                max_blobs,
            ))
        })
        .await?
        .map_err(PutError::from)
    }

    /// Starts an upload of `len` bytes as blob `id` for `user`, first
    /// reserving its charge against `quota` and a place under the blob
    /// count cap (refused with [`PutError::Quota`] or
    /// [`PutError::TooManyBlobs`] before anything is written). With
    /// `expect`, the condition is checked now too
    /// ([`PutError::Conflict`], or [`PutError::BadCondition`] for a stored
    /// blob over [`MAX_EXPECT_LEN`]), and again, atomically, at the
    /// commit.
    pub async fn begin_put(
        &self,
        user: &str,
        id: &BlobId,
        len: u64,
        quota: Option<u64>,
        expect: Option<&Expect>,
    ) -> Result<PendingBlob, PutError> {
        let dir = self.user_dir(user)?;
        let db = self.db(user).await?;
        if let Some(expect) = expect {
            let (db, id, expect) = (db.clone(), id.clone(), expect.clone());
            blocking(move || Ok(check_early(&db, &id, &expect))).await??;
        }
        let hold = self.reserve(&db, vec![(id.clone(), len)], quota).await?[0];
        let ticket = UploadTicket::new(&db);
        let mut reservation = Reservation {
            db,
            hold,
            memory: None,
        };
        let inline_max = self.limits.inline_max;
        reservation.memory = memory_permit(&self.upload_memory, len, inline_max);
        let sink = if reservation.memory.is_some() {
            Sink::memory(len as usize)
        } else {
            let tmp_dir = self.tmp_dir(&dir).await?;
            let io = self.upload_bound(user);
            Sink::File(TempWriter::create(temp_path(&tmp_dir)?, io).await?)
        };
        Ok(PendingBlob {
            _ticket: ticket,
            sink,
            io: self.upload_bound(user),
            id: id.clone(),
            reservation,
            expect: expect.cloned(),
        })
    }

    /// The user folder's `.tmp`, made if missing.
    async fn tmp_dir(&self, dir: &Path) -> io::Result<PathBuf> {
        let tmp_dir = dir.join(TMP_DIR);
        if tokio::fs::metadata(&tmp_dir).await.is_err() {
            let tmp = tmp_dir.clone();
            blocking(move || std::fs::create_dir_all(&tmp)).await?;
        }
        Ok(tmp_dir)
    }

    /// Starts a batch upload of `items` for `user`, first reserving their
    /// total charge against `quota` and their new ids under the blob count
    /// cap, all or nothing (refused with [`PutError::Quota`] or
    /// [`PutError::TooManyBlobs`] before anything is written). Each item's
    /// condition is checked at the commit.
    pub async fn begin_batch(
        &self,
        user: &str,
        items: &[PutItem],
        quota: Option<u64>,
    ) -> Result<PutBatch, PutError> {
        let dir = self.user_dir(user)?;
        let db = self.db(user).await?;
        let holds = self
            .reserve(
                &db,
                items.iter().map(|i| (i.id.clone(), i.len)).collect(),
                quota,
            )
            .await?;
        let total = holds.iter().fold(Hold::default(), |t, h| Hold {
            charge: t.charge.saturating_add(h.charge),
            slots: t.slots.saturating_add(h.slots),
        });
        let ticket = UploadTicket::new(&db);
        let reservation = Reservation {
            db,
            hold: total,
            memory: None,
        };
        let tmp_dir = self.tmp_dir(&dir).await?;
        Ok(PutBatch {
            _ticket: ticket,
            tmp_dir,
            inline_max: self.limits.inline_max,
            memory: self.upload_memory.clone(),
            reservation,
            holds,
            expects: items.iter().map(|i| i.expect.clone()).collect(),
            io: self.upload_bound(user),
            next: 0,
            current: None,
            in_memory: 0,
            syncing: VecDeque::new(),
            ready: Vec::new(),
            failed: Vec::new(),
        })
    }
}

/// `len` bytes of the node's in-memory upload budget `memory`, if an
/// upload of `len` bytes may be gathered in memory (at most `inline_max`)
/// and the budget has room for it now.
fn memory_permit(
    memory: &Arc<Semaphore>,
    len: u64,
    inline_max: u64,
) -> Option<OwnedSemaphorePermit> {
    if len > inline_max {
        return None;
    }
    let n = u32::try_from(len).ok()?;
    memory.clone().try_acquire_many_owned(n).ok()
}

/// An upload in progress: bytes gather in memory (a blob of at most the
/// inline bound, if the node's budget has room) or in a temp file that is
/// removed unless [`PendingBlob::commit`] stores it.
#[derive(Debug)]
pub struct PendingBlob {
    _ticket: UploadTicket,
    sink: Sink,
    io: IoBound,
    id: BlobId,
    reservation: Reservation,
    expect: Option<Expect>,
}

impl PendingBlob {
    /// Appends bytes to the upload.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), PutError> {
        Ok(self.sink.write(bytes).await?)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.sink.written()
    }

    /// Makes the upload durable and visible: a file is synced, then the
    /// user's writer checks the condition and stores the blob in its next
    /// transaction, answering once that is committed. A condition that no
    /// longer holds is [`PutError::Conflict`], and nothing changed.
    pub async fn commit(self) -> Result<(), PutError> {
        let PendingBlob {
            sink,
            io,
            id,
            reservation,
            expect,
            ..
        } = self;
        let data = match sink {
            Sink::Memory(b, _) => Data::Bytes(b),
            Sink::File(w) => Data::Temp(bounded(&io, move || w.finish()).await?),
        };
        let op = PutOp { id, data, expect };
        let db = reservation.db.clone();
        let mut results = store_ops(&db, vec![op], vec![reservation]).await?;
        results.pop().unwrap_or(Ok(()))
    }
}

/// Most bytes of a batch's small blobs held in memory until its commit;
/// past it they go to temp files too.
const BATCH_MEMORY: usize = 8 << 20;

/// A batch upload (`PutBlobs`): its blobs arrive one after the other
/// ([`PutBatch::start`], [`PutBatch::write`], [`PutBatch::end`]); a small
/// one (at most the inline bound) is kept in memory, a larger one written
/// to a temp file and synced (several at once, on blocking threads) as
/// soon as its bytes are in. None is stored before [`PutBatch::commit`],
/// which hands them all to the user's writer as one job: one transaction,
/// one commit.
///
/// So an upload that ends early, long or never (the batch dropped)
/// leaves nothing behind: no blob of the batch, no temp file, no quota
/// held. A blob that fails on its own (an I/O error other than a full
/// disk, or its condition not holding) is dropped and reported by
/// `commit`; a full disk fails the batch.
#[derive(Debug)]
pub struct PutBatch {
    _ticket: UploadTicket,
    tmp_dir: PathBuf,
    inline_max: u64,
    /// The node's in-memory upload budget.
    memory: Arc<Semaphore>,
    /// Quota reserved for the batch and not yet handed to a blob.
    reservation: Reservation,
    /// What each item reserved, by position.
    holds: Vec<Hold>,
    /// Each item's condition, by position.
    expects: Vec<Option<Expect>>,
    /// The store's upload I/O bound.
    io: IoBound,
    /// Position in the batch of the next blob to start.
    next: u32,
    /// The blob being received.
    current: Option<Current>,
    /// Bytes of small blobs held in memory.
    in_memory: usize,
    /// Blobs being written and synced on blocking threads, oldest first.
    syncing: VecDeque<Syncing>,
    /// Blobs received in full, waiting for the commit, in batch order.
    ready: Vec<Ready>,
    /// Blobs that failed on their own: position and error.
    failed: Vec<(u32, PutError)>,
}

#[derive(Debug)]
struct Current {
    pos: u32,
    id: BlobId,
    /// `None` once the blob failed: its further bytes are dropped.
    writing: Option<(Sink, Reservation)>,
}

#[derive(Debug)]
struct Syncing {
    pos: u32,
    id: BlobId,
    /// Bytes it still had buffered.
    buffered: usize,
    reservation: Reservation,
    task: JoinHandle<io::Result<Synced>>,
}

#[derive(Debug)]
struct Ready {
    pos: u32,
    id: BlobId,
    reservation: Reservation,
    data: Data,
}

impl PutBatch {
    /// Starts the batch's next blob: `len` bytes as `id`. A blob still
    /// being received is ended first.
    pub async fn start(&mut self, id: &BlobId, len: u64) -> Result<(), PutError> {
        self.end().await?;
        let pos = self.next;
        self.next += 1;
        let hold = self.holds.get(pos as usize).copied().unwrap_or_default();
        let mut reservation = self.reservation.split(hold);
        let small = len <= self.inline_max
            && self
                .in_memory
                .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                <= BATCH_MEMORY;
        if small {
            reservation.memory = memory_permit(&self.memory, len, self.inline_max);
        }
        let writing = if reservation.memory.is_some() {
            self.in_memory += len as usize;
            Some((Sink::memory(len as usize), reservation))
        } else {
            match temp_path(&self.tmp_dir) {
                Ok(path) => Some((
                    Sink::File(TempWriter::lazy(path, self.io.clone())),
                    reservation,
                )),
                Err(e) => {
                    self.failed.push((pos, PutError::Io(e)));
                    None
                }
            }
        };
        self.current = Some(Current {
            pos,
            id: id.clone(),
            writing,
        });
        Ok(())
    }

    /// Appends bytes to the current blob. `Err` only for a full disk; any
    /// other failure drops this blob alone (and its further bytes).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), PutError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        let Some((sink, _)) = current.writing.as_mut() else {
            return Ok(());
        };
        if let Err(e) = sink.write(bytes).await {
            let pos = current.pos;
            current.writing = None;
            self.fail(pos, e)?;
        }
        Ok(())
    }

    /// The current blob's bytes are all in: a file is written and synced
    /// on a blocking thread while the next blob arrives.
    pub async fn end(&mut self) -> Result<(), PutError> {
        let Some(Current { pos, id, writing }) = self.current.take() else {
            return Ok(());
        };
        let Some((sink, reservation)) = writing else {
            return Ok(());
        };
        let writer = match sink {
            Sink::Memory(bytes, _) => {
                self.ready.push(Ready {
                    pos,
                    id,
                    reservation,
                    data: Data::Bytes(bytes),
                });
                return Ok(());
            }
            Sink::File(w) => w,
        };
        let buffered = writer.buf.len();
        while !self.syncing.is_empty()
            && (self.syncing.len() >= MAX_SYNCING
                || self.syncing_bytes() + buffered > MAX_SYNCING_BYTES)
        {
            self.wait_oldest().await?;
        }
        let permit = io_permit(&self.io).await?;
        self.syncing.push_back(Syncing {
            pos,
            id,
            buffered,
            reservation,
            task: tokio::task::spawn_blocking(move || {
                let _permit = permit;
                writer.finish()
            }),
        });
        Ok(())
    }

    /// Stores every blob received in full: waits for their syncs, then
    /// hands them to the user's writer as one job (each condition checked
    /// there, in batch order), durable when this returns `Ok`. Returns the
    /// blobs that failed on their own, by position ([`PutError::Conflict`]
    /// for a condition that did not hold).
    ///
    /// On `Err` (a full disk, or the commit failing) nothing of the batch
    /// is stored.
    pub async fn commit(mut self) -> Result<Vec<(u32, PutError)>, PutError> {
        self.end().await?;
        while !self.syncing.is_empty() {
            self.wait_oldest().await?;
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.sort_by_key(|r| r.pos);
        let expects = std::mem::take(&mut self.expects);
        let mut positions = Vec::with_capacity(ready.len());
        let mut reservations = Vec::with_capacity(ready.len());
        let mut ops = Vec::with_capacity(ready.len());
        for r in ready {
            let expect = expects.get(r.pos as usize).cloned().flatten();
            positions.push(r.pos);
            reservations.push(r.reservation);
            ops.push(PutOp {
                id: r.id,
                data: r.data,
                expect,
            });
        }
        if !ops.is_empty() {
            let results = store_ops(&self.reservation.db, ops, reservations).await?;
            for (pos, r) in positions.into_iter().zip(results) {
                match r {
                    Ok(()) => {}
                    Err(PutError::NoSpace(e)) => return Err(PutError::NoSpace(e)),
                    Err(e) => self.failed.push((pos, e)),
                }
            }
        }
        self.failed.sort_by_key(|(pos, _)| *pos);
        Ok(std::mem::take(&mut self.failed))
    }

    fn syncing_bytes(&self) -> usize {
        self.syncing.iter().map(|s| s.buffered).sum()
    }

    /// Waits for the oldest blob being synced: ready, or failed.
    async fn wait_oldest(&mut self) -> Result<(), PutError> {
        let Some(s) = self.syncing.pop_front() else {
            return Ok(());
        };
        let synced = match s.task.await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(format!("blocking task failed: {e}"))),
        };
        match synced {
            Ok(synced) => {
                self.ready.push(Ready {
                    pos: s.pos,
                    id: s.id,
                    reservation: s.reservation,
                    data: Data::Temp(synced),
                });
                Ok(())
            }
            Err(e) => {
                drop(s.reservation);
                self.fail(s.pos, e)
            }
        }
    }

    /// Blob `pos` failed with `e`: the batch fails if the disk is full.
    fn fail(&mut self, pos: u32, e: io::Error) -> Result<(), PutError> {
        if is_no_space(&e) {
            return Err(PutError::NoSpace(e));
        }
        self.failed.push((pos, PutError::Io(e)));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
