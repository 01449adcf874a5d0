//! Uploads: one blob ([`PendingBlob`], for `PutBlob`) or a batch
//! ([`PutBatch`], for `PutBlobs`).
//!
//! Bytes are gathered in a buffer and written to a temp file under
//! `.tmp/` on blocking threads. A blob becomes visible only by a rename
//! after its bytes are synced, recorded in the index under its lock; the
//! folder is synced before the upload is reported stored (once per blob,
//! or once per batch). A temp file that is not renamed is removed, and
//! quota that no blob took is given back, whatever ends the upload.
//!
//! A condition ([`Expect`]) is checked under the index lock, just before
//! the rename and with the lock held across both: every rename into the
//! folder and every removal from it happens under that lock, so nothing
//! can change the blob between the check and the replacement. A
//! `PutBlob`'s condition is also checked before its bytes are read, to
//! refuse early; the check at the rename is the one that counts.
//!
//! Every blocking file operation of an upload takes a permit of its
//! user's share first, then one of the node-wide bound ([`IoBound`]), so
//! uploads never hold more than [`super::StoreLimits::max_upload_io`]
//! blocking threads, and one user's uploads at most a quarter of those
//! (at least one): another user's upload never queues behind more than
//! that share of any one user's work.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use wire::{BlobId, Expect, PutItem};

use super::index::{self, BlobMeta, Hold, UserIndex};
use super::{blocking, is_no_space, lock, BlobStore, PutError, TMP_DIR};
use crate::fsutil::{random_hex, sync_dir, Synced, TempGuard};

/// Upload bytes gathered before one blocking write.
const WRITE_BUF: usize = 512 * 1024;

/// Blobs of a batch written and synced on blocking threads at once, while
/// the next ones arrive: parallel syncs cost little more than one.
const MAX_SYNCING: usize = 8;

/// Most buffered bytes those blobs hold between them, so a batch holds
/// about as much memory as one upload.
const MAX_SYNCING_BYTES: usize = WRITE_BUF;

/// Largest stored blob a condition ([`Expect::Hash`]) is compared with:
/// it is read and hashed under the user's index lock. Conditions are for
/// manifests, which are far smaller. A `PutBlob` whose condition names a
/// larger stored blob is refused (`BadRequest`); a larger blob found at
/// the rename never matches (`Conflict`).
pub const MAX_EXPECT_LEN: u64 = 1 << 20;

/// Quota (and places under the blob count cap) held by an upload; given
/// back on drop unless settled.
#[derive(Debug)]
struct Reservation {
    index: Arc<Mutex<UserIndex>>,
    hold: Hold,
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
            index: self.index.clone(),
            hold,
        }
    }

    /// The upload became blob `id`, `meta`, in `ix`: the (locked) index
    /// this reservation was taken from.
    fn settle(mut self, ix: &mut UserIndex, id: BlobId, meta: BlobMeta) {
        ix.committed(id, meta, self.hold);
        self.hold = Hold::default();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Never dropped unsettled while its index is locked (the lock is
        // not reentrant).
        if self.hold != Hold::default() {
            lock(&self.index).release(self.hold);
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

/// Whether `expect` holds for blob `id` of folder `dir`, whose (locked)
/// index is `ix`: the stored bytes (at most [`MAX_EXPECT_LEN`]) are read
/// and hashed. Blocking.
fn expect_holds(
    ix: &UserIndex,
    dir: &Path,
    id: &BlobId,
    expect: &Expect,
) -> Result<bool, PutError> {
    let Some(meta) = ix.get(id) else {
        return Ok(expect.holds(None));
    };
    if matches!(expect, Expect::Absent) || meta.len > MAX_EXPECT_LEN {
        return Ok(false);
    }
    let file = match File::open(dir.join(id.as_str())) {
        Ok(f) => f,
        // Removed by hand behind the index's back.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(expect.holds(None)),
        Err(e) => return Err(PutError::Io(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_EXPECT_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(PutError::Io)?;
    if bytes.len() as u64 > MAX_EXPECT_LEN {
        return Ok(false);
    }
    Ok(expect.holds(Some(&wire::content_hash(&bytes))))
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
    /// A writer for about `len` bytes whose file is created with the first
    /// write that reaches the disk.
    fn lazy(path: PathBuf, len: u64, io: IoBound) -> TempWriter {
        let cap = usize::try_from(len).unwrap_or(WRITE_BUF).min(WRITE_BUF);
        TempWriter {
            file: None,
            created: false,
            buf: Vec::with_capacity(cap),
            guard: TempGuard::new(path),
            written: 0,
            io,
        }
    }

    /// A writer whose file exists from the start (an upload in progress
    /// shows in `.tmp/`).
    async fn create(path: PathBuf, len: u64, io: IoBound) -> io::Result<TempWriter> {
        let mut w = TempWriter::lazy(path, len, io);
        let path = w.guard.path().to_path_buf();
        w.created = true;
        w.file = Some(bounded(&w.io, move || create_new(&path)).await?);
        Ok(w)
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
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

/// Renames `synced` over `dir/id` and records it in the index, under the
/// index lock (so concurrent uploads of one id leave the index agreeing
/// with the folder), if `expect` (checked under that lock) holds. The
/// folder still needs a sync. On `Err` the temp file is removed and the
/// reservation given back.
fn publish(
    synced: Synced,
    dir: &Path,
    id: BlobId,
    reservation: Reservation,
    expect: Option<&Expect>,
) -> Result<(), PutError> {
    let meta = BlobMeta {
        len: synced.metadata().len(),
        modified: index::unix_secs(synced.metadata()),
    };
    let index = reservation.index.clone();
    let mut ix = lock(&index);
    let checked = match expect {
        None => Ok(()),
        Some(expect) => match expect_holds(&ix, dir, &id, expect) {
            Ok(true) => Ok(()),
            Ok(false) => Err(PutError::Conflict),
            Err(e) => Err(e),
        },
    };
    let result = checked.and_then(|()| {
        synced
            .rename(&dir.join(id.as_str()))
            .map_err(PutError::from)
    });
    match result {
        Ok(()) => {
            reservation.settle(&mut ix, id, meta);
            Ok(())
        }
        Err(e) => {
            // The lock first: the reservation takes it to give back.
            drop(ix);
            drop(reservation);
            Err(e)
        }
    }
}

impl BlobStore {
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
        let index = self.index(user).await?;
        if let Some(expect) = expect {
            let (index, dir, id, expect) = (index.clone(), dir.clone(), id.clone(), expect.clone());
            blocking(move || {
                let ix = lock(&index);
                if let (Expect::Hash(_), Some(meta)) = (&expect, ix.get(&id)) {
                    if meta.len > MAX_EXPECT_LEN {
                        return Ok(Err(PutError::BadCondition(format!(
                            "a condition can only name a stored blob of at most {MAX_EXPECT_LEN} \
                             bytes; this one holds {} bytes",
                            meta.len
                        ))));
                    }
                }
                Ok(match expect_holds(&ix, &dir, &id, &expect) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(PutError::Conflict),
                    Err(e) => Err(e),
                })
            })
            .await??;
        }
        let max_blobs = self.limits.max_blobs;
        let hold = lock(&index).reserve_many([(id, len)], quota, max_blobs)?[0];
        let reservation = Reservation { index, hold };
        let tmp_dir = self.tmp_dir(&dir).await?;
        let io = self.upload_bound(user);
        let writer = TempWriter::create(temp_path(&tmp_dir)?, len, io).await?;
        Ok(PendingBlob {
            writer,
            dir,
            id: id.clone(),
            reservation,
            expect: expect.cloned(),
        })
    }

    /// The user folder's `.tmp`, made if missing, with the root synced so
    /// a user folder made here (the user's first upload) is durable.
    async fn tmp_dir(&self, dir: &Path) -> io::Result<PathBuf> {
        let tmp_dir = dir.join(TMP_DIR);
        if tokio::fs::metadata(&tmp_dir).await.is_err() {
            let (dir, tmp) = (dir.to_path_buf(), tmp_dir.clone());
            // Synced whenever `.tmp` was missing (rare: once per user
            // folder), so no upload is acknowledged before its folder is
            // durable, however two first uploads interleave.
            blocking(move || {
                std::fs::create_dir_all(&tmp)?;
                if let Some(root) = dir.parent() {
                    sync_dir(root)?;
                }
                Ok(())
            })
            .await?;
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
        let index = self.index(user).await?;
        let max_blobs = self.limits.max_blobs;
        let holds =
            lock(&index).reserve_many(items.iter().map(|i| (&i.id, i.len)), quota, max_blobs)?;
        let total = holds.iter().fold(Hold::default(), |t, h| Hold {
            charge: t.charge.saturating_add(h.charge),
            slots: t.slots.saturating_add(h.slots),
        });
        let reservation = Reservation { index, hold: total };
        let tmp_dir = self.tmp_dir(&dir).await?;
        Ok(PutBatch {
            dir,
            tmp_dir,
            reservation,
            holds,
            expects: items.iter().map(|i| i.expect.clone()).collect(),
            io: self.upload_bound(user),
            next: 0,
            current: None,
            syncing: VecDeque::new(),
            ready: Vec::new(),
            failed: Vec::new(),
        })
    }
}

/// An upload in progress: bytes go to a temp file that is removed unless
/// [`PendingBlob::commit`] renames it into place.
#[derive(Debug)]
pub struct PendingBlob {
    writer: TempWriter,
    /// The user's folder.
    dir: PathBuf,
    id: BlobId,
    reservation: Reservation,
    expect: Option<Expect>,
}

impl PendingBlob {
    /// Appends bytes to the upload.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), PutError> {
        Ok(self.writer.write(bytes).await?)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.written
    }

    /// Makes the upload durable and visible: `sync_all`, check the
    /// condition and rename over the blob's name (under the index lock,
    /// recorded in the index), fsync the folder. A condition that no
    /// longer holds is [`PutError::Conflict`], and nothing changed.
    pub async fn commit(self) -> Result<(), PutError> {
        let PendingBlob {
            writer,
            dir,
            id,
            reservation,
            expect,
        } = self;
        let io = writer.io.clone();
        bounded(&io, move || {
            let synced = writer.finish()?;
            Ok(publish(synced, &dir, id, reservation, expect.as_ref())
                .and_then(|()| sync_dir(&dir).map_err(PutError::from)))
        })
        .await?
    }
}

/// A batch upload (`PutBlobs`): its blobs arrive one after the other
/// ([`PutBatch::start`], [`PutBatch::write`], [`PutBatch::end`]); each is
/// written to a temp file and synced (several at once, on blocking
/// threads) as soon as its bytes are in, and none is renamed into place
/// before [`PutBatch::commit`], which renames them all and syncs the
/// folder once.
///
/// So an upload that ends early, long or never (the batch dropped)
/// leaves nothing behind: no blob of the batch, no temp file, no quota
/// held. A blob that fails on its own (an I/O error other than a full
/// disk, or its condition not holding at the rename) is dropped and
/// reported by `commit`; a full disk fails the batch.
#[derive(Debug)]
pub struct PutBatch {
    /// The user's folder.
    dir: PathBuf,
    tmp_dir: PathBuf,
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
    /// Blobs being written and synced on blocking threads, oldest first.
    syncing: VecDeque<Syncing>,
    /// Blobs synced, waiting for the rename, in batch order.
    ready: Vec<Ready>,
    /// Blobs that failed on their own: position and error.
    failed: Vec<(u32, PutError)>,
}

#[derive(Debug)]
struct Current {
    pos: u32,
    id: BlobId,
    /// `None` once the blob failed: its further bytes are dropped.
    writing: Option<(TempWriter, Reservation)>,
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
    synced: Synced,
}

impl PutBatch {
    /// Starts the batch's next blob: `len` bytes as `id`. A blob still
    /// being received is ended first.
    pub async fn start(&mut self, id: &BlobId, len: u64) -> Result<(), PutError> {
        self.end().await?;
        let pos = self.next;
        self.next += 1;
        let hold = self.holds.get(pos as usize).copied().unwrap_or_default();
        let reservation = self.reservation.split(hold);
        let writing = match temp_path(&self.tmp_dir) {
            Ok(path) => Some((TempWriter::lazy(path, len, self.io.clone()), reservation)),
            Err(e) => {
                self.failed.push((pos, PutError::Io(e)));
                None
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
        let Some((writer, _)) = current.writing.as_mut() else {
            return Ok(());
        };
        if let Err(e) = writer.write(bytes).await {
            let pos = current.pos;
            current.writing = None;
            self.fail(pos, e)?;
        }
        Ok(())
    }

    /// The current blob's bytes are all in: its file is written and synced
    /// on a blocking thread while the next blob arrives.
    pub async fn end(&mut self) -> Result<(), PutError> {
        let Some(Current { pos, id, writing }) = self.current.take() else {
            return Ok(());
        };
        let Some((writer, reservation)) = writing else {
            return Ok(());
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

    /// Stores every blob received in full: waits for their syncs, renames
    /// them into place in batch order (each after its condition is checked
    /// under the index lock, and recorded in the index), then syncs the
    /// folder once, so all are durable when this returns `Ok`. Returns the
    /// blobs that failed on their own, by position ([`PutError::Conflict`]
    /// for a condition that did not hold).
    ///
    /// On `Err` (a full disk, or the folder sync failing) the blobs renamed
    /// before the failure stay; the others are removed.
    pub async fn commit(mut self) -> Result<Vec<(u32, PutError)>, PutError> {
        self.end().await?;
        while !self.syncing.is_empty() {
            self.wait_oldest().await?;
        }
        let dir = self.dir.clone();
        let ready = std::mem::take(&mut self.ready);
        let expects = std::mem::take(&mut self.expects);
        let renamed = bounded(&self.io, move || {
            let mut failed = Vec::new();
            let mut renamed_any = false;
            let mut full = None;
            for r in ready {
                let expect = expects.get(r.pos as usize).and_then(Option::as_ref);
                match publish(r.synced, &dir, r.id, r.reservation, expect) {
                    Ok(()) => renamed_any = true,
                    Err(PutError::NoSpace(e)) => {
                        // The rest are dropped: temp files removed.
                        full = Some(e);
                        break;
                    }
                    Err(e) => failed.push((r.pos, e)),
                }
            }
            if renamed_any {
                sync_dir(&dir)?;
            }
            Ok((failed, full))
        })
        .await?;
        let (failed, full) = renamed;
        if let Some(e) = full {
            return Err(PutError::NoSpace(e));
        }
        self.failed.extend(failed);
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
                    synced,
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
