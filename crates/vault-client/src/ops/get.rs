//! GET: newest valid manifest, one copy of each part, failover, verify,
//! rename.
//!
//! Parts are decrypted chunk by chunk as they arrive and written at their
//! offset in a temporary file beside the target. Only authenticated
//! plaintext is ever written; the temporary file becomes the target only
//! when all four parts decrypted completely, and is removed otherwise.
//!
//! A node that dies mid-GET (killed, frozen, cut off) costs about a second,
//! not its connection's idle timeout: the manifest lookup goes on without
//! a last node silent for [`SWITCH_AFTER`] after the others answered, and
//! a part whose holder sends nothing for [`SWITCH_AFTER`] is taken over by
//! the other copy, from the first chunk not yet written.

use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::part_stream::{part_chunks, PartError, PartReader, ReadOptions};
use super::{check_quorum, fetch_versions_within, io_err, shards, OpError, ProgressRef};
use crate::crypto::keys::PartKeys;
use crate::crypto::stream::CHUNK_LEN;
use crate::erasure::Scheme;
use crate::fsutil::{
    create_partial, parent_dir, publish, set_mtime_ns, sweep_partials, sync_dir, TempGuard,
};
use crate::manifest::{Manifest, Shards};
use crate::net::Session;
use crate::placement::nodes_for_part;
use crate::vault::Vault;

/// Slowest transfer rate (bytes/s) a node may serve a part at before the
/// other copy is tried.
const MIN_RATE: u64 = 1 << 20;

/// How long a node may stay silent while another could serve instead: the
/// last node to answer the manifest lookup, or a part's holder (its answer,
/// or the next bytes) while the other holder is left to try. Half the
/// connection's idle timeout ([`crate::net::DEAD_AFTER`]), so a dead node
/// costs a GET about a second; a live node silent this long is merely
/// passed over (the other copy serves; it is tried again if that fails).
pub const SWITCH_AFTER: Duration = Duration::from_secs(1);

/// What a successful GET wrote.
#[derive(Debug, Clone)]
pub struct GetReport {
    /// Where the file was written.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Nodes that failed along the way and were replaced by the other copy.
    pub failovers: Vec<String>,
}

/// Looks up the newest live version of `name`. A last node silent
/// [`SWITCH_AFTER`] after the others answered is left out (and its copies
/// are then tried last).
///
/// Refuses ([`OpError::NoQuorum`]) unless a majority of the manifest
/// holders answered: with fewer, an old version or a deleted file could be
/// all that is left to see.
pub async fn find(vault: &Vault, name: &str) -> Result<Manifest, OpError> {
    find_with(vault, name, false).await.map(|(m, _)| m)
}

/// [`find`] that, with `allow_stale`, goes on with fewer answers than a
/// quorum and returns the warning to show (the version may be old).
pub async fn find_with(
    vault: &Vault,
    name: &str,
    allow_stale: bool,
) -> Result<(Manifest, Option<String>), OpError> {
    let id = vault.master().manifest_id(name);
    let versions = fetch_versions_within(vault, &id, None, Some(SWITCH_AFTER)).await;
    let stale = check_quorum(vault, versions.answered, &versions.problems, allow_stale)?;
    // A folder marker (an empty S3 bucket) is no file to read.
    let m = versions
        .live()
        .filter(|m| !m.is_folder())
        .cloned()
        .ok_or_else(|| OpError::NotFound(name.to_string()))?;
    Ok((m, stale))
}

/// Fetches `name` into `out`. Refuses to replace an existing file unless
/// `replace`. `progress` advances by the file's size.
pub async fn get_file(
    vault: &Vault,
    name: &str,
    out: &Path,
    replace: bool,
    progress: ProgressRef,
) -> Result<GetReport, OpError> {
    let m = find(vault, name).await?;
    sweep_beside(out);
    get_version(vault, &m, out, replace, progress).await
}

/// Removes the partial downloads interrupted GETs left in the folder `out`
/// is to be written to (abandoned ones only: no process holds their lock
/// and they were not written for a minute); how many went. [`get_file`] does
/// this itself; a caller of [`get_version`] does it first.
pub fn sweep_beside(out: &Path) -> usize {
    sweep_partials(&parent_dir(out))
}

/// Fetches the file version `m` (from [`find`]) into `out`.
pub async fn get_version(
    vault: &Vault,
    m: &Manifest,
    out: &Path,
    replace: bool,
    progress: ProgressRef,
) -> Result<GetReport, OpError> {
    if out.exists() && !replace {
        return Err(OpError::Exists(out.to_path_buf()));
    }
    let dir = parent_dir(out);
    let (tmp_path, file) = create_partial(out).map_err(io_err(&dir))?;
    let guard = TempGuard::new(tmp_path.clone());
    file.set_len(m.size).map_err(io_err(&tmp_path))?;
    let file = Arc::new(file);

    let failovers = match &m.shards {
        None => fetch_parts(vault, m, &file, progress).await?,
        Some(layout) => fetch_shards(vault, m, layout, &file, &tmp_path, progress).await?,
    };
    // The stored modification time, set before the file is published so
    // that no reader sees it with another (the partial stays locked).
    set_mtime_ns(&file, m.mtime_ns).map_err(io_err(&tmp_path))?;
    file.sync_all().map_err(io_err(&tmp_path))?;
    // Never replace a file that appeared meanwhile unless asked to. The
    // partial file stays open (locked against sweeps) until published.
    publish(&tmp_path, out, replace).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            OpError::Exists(out.to_path_buf())
        } else {
            OpError::Io {
                path: out.to_path_buf(),
                source: e,
            }
        }
    })?;
    if replace {
        guard.disarm();
    } else {
        // The link is in place; the temporary name goes with the guard.
        drop(guard);
    }
    drop(file);
    let _ = sync_dir(&dir);
    Ok(GetReport {
        path: out.to_path_buf(),
        size: m.size,
        failovers,
    })
}

/// The four parts of the classic version `m`, each from either copy,
/// written at their place in `file`; the failovers recovered from.
async fn fetch_parts(
    vault: &Vault,
    m: &Manifest,
    file: &Arc<File>,
    progress: ProgressRef,
) -> Result<Vec<String>, OpError> {
    let mut set = JoinSet::new();
    for (k, (offset, len)) in m.parts().into_iter().enumerate() {
        let (candidates, holders) = holders_of(vault, m, k);
        let job = PartFetch {
            k,
            len,
            keys: vault.master().part(vault.user(), &m.file_id, m.version, k),
            chunks: 0..part_chunks(len),
            sink: Sink::File {
                file: file.clone(),
                offset,
                progress: progress.clone(),
            },
        };
        set.spawn(async move { job.run(candidates, holders).await });
    }
    let mut failovers = Vec::new();
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(mut f)) => failovers.append(&mut f),
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    set.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_err.get_or_insert(OpError::Unavailable(format!("part task failed: {e}")));
            }
        }
    }
    first_err.map_or(Ok(failovers), Err)
}

/// The erasure-coded version `m`, chunk by chunk from any K shards,
/// written in order into `file` (at `path`); the failovers recovered from.
async fn fetch_shards(
    vault: &Vault,
    m: &Manifest,
    layout: &Shards,
    file: &Arc<File>,
    path: &Path,
    progress: ProgressRef,
) -> Result<Vec<String>, OpError> {
    let (tx, mut rx) = mpsc::channel::<(u64, Vec<u8>)>(CHUNKS_BUFFERED);
    let chunks = 0..Scheme::chunk_lens(m.size).total();
    let read = shards::read_chunks(vault, m, layout, chunks, tx);
    // `rx` moves in: a failed write drops it, which stops the read (it
    // would otherwise wait forever for room in the channel).
    let write = async move {
        while let Some((j, plain)) = rx.recv().await {
            file.write_all_at(&plain, j * CHUNK_LEN as u64)
                .map_err(io_err(path))?;
            progress.advance(plain.len() as u64);
        }
        Ok::<(), OpError>(())
    };
    let (read, written) = tokio::join!(read, write);
    let failovers = read?;
    written?;
    Ok(failovers)
}

/// Parts a range read fetches at once: the one being sent and the next,
/// read ahead into a bounded buffer.
const PARTS_IN_FLIGHT: usize = 2;

/// Chunks (64 KiB each) of plaintext a range read buffers per part in
/// flight, besides what the connection itself buffers.
const CHUNKS_BUFFERED: usize = 16;

/// Chunks a range read asks a node for at once (3 MiB). With the stream's
/// receive window (4 MiB) the node can always send a whole window at once,
/// so its reply never stays open while a slow HTTP client reads (a node
/// resets replies not taken within its reply deadline); the next window is
/// asked for as the reader takes the bytes.
const WINDOW_CHUNKS: u64 = 48;

/// Sends the plaintext bytes `range` of the file version `m` (from
/// [`find`]) down `tx`, in order, in pieces of at most one chunk
/// ([`CHUNK_LEN`], 64 KiB). Each byte is sent once and only after the
/// chunk holding it authenticated.
///
/// Only the parts overlapping `range` are read, and of each only the
/// chunks covering it (a ranged read of the node's blob, see
/// [`Session::get_range`]), from one holder at a time (quiet ones last);
/// when a holder fails or goes silent for [`SWITCH_AFTER`], the other copy
/// takes over from the first chunk not yet sent. The part being sent and
/// the next one are fetched at once, each into a bounded buffer, so memory
/// stays bounded whatever the file's size.
///
/// An empty range sends nothing; a range ending past `m.size` (or ending
/// before it starts) is [`OpError::Refused`], nothing sent. A part no
/// holder can serve is [`OpError::Unavailable`], naming the part and each
/// node's failure (`decryption failed` for a corrupt copy); the bytes sent
/// before it are all authenticated. If the receiver of `tx` goes away,
/// the node streams are stopped and this returns `Ok(())` at once.
pub async fn read_range(
    vault: &Vault,
    m: &Manifest,
    range: Range<u64>,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), OpError> {
    if range.start > range.end || range.end > m.size {
        return Err(OpError::Refused(format!(
            "bytes {}..{} are not within the file's {} bytes",
            range.start, range.end, m.size
        )));
    }
    if range.is_empty() {
        return Ok(());
    }
    if let Some(layout) = &m.shards {
        return read_range_sharded(vault, m, layout, range, tx).await;
    }
    let mut jobs: VecDeque<(PartFetch, mpsc::Receiver<Bytes>, u64)> = VecDeque::new();
    for (k, (offset, len)) in m.parts().into_iter().enumerate() {
        let from = range.start.max(offset);
        let to = range.end.min(offset + len);
        if from >= to {
            continue;
        }
        // The part's own bytes, and the chunks holding them.
        let (a, b) = (from - offset, to - offset);
        let (ptx, prx) = mpsc::channel(CHUNKS_BUFFERED);
        let job = PartFetch {
            k,
            len,
            keys: vault.master().part(vault.user(), &m.file_id, m.version, k),
            chunks: a / CHUNK_LEN as u64..b.div_ceil(CHUNK_LEN as u64),
            sink: Sink::Channel {
                tx: ptx,
                range: a..b,
            },
        };
        jobs.push_back((job, prx, b - a));
    }
    // The parts fetched, in order: their buffers and tasks (aborted, so
    // their node streams stopped, when this returns or is dropped).
    let mut buffers: VecDeque<(mpsc::Receiver<Bytes>, u64)> = VecDeque::new();
    let mut tasks = Running(VecDeque::new());
    loop {
        while tasks.0.len() < PARTS_IN_FLIGHT {
            let Some((job, prx, due)) = jobs.pop_front() else {
                break;
            };
            let (candidates, holders) = holders_of(vault, m, job.k);
            tasks.0.push_back(tokio::spawn(
                async move { job.run(candidates, holders).await },
            ));
            buffers.push_back((prx, due));
        }
        let Some((mut prx, due)) = buffers.pop_front() else {
            return Ok(());
        };
        let mut sent = 0u64;
        loop {
            let piece = tokio::select! {
                biased;
                () = tx.closed() => return Ok(()),
                piece = prx.recv() => piece,
            };
            let Some(piece) = piece else { break };
            sent += piece.len() as u64;
            if tx.send(piece).await.is_err() {
                return Ok(());
            }
        }
        let handle = tasks.0.pop_front().expect("one task per buffer");
        match handle.await {
            Ok(Ok(_)) if sent == due => {}
            Ok(Ok(_)) => {
                // A job ends well only once all its bytes are sent: never
                // end a range short without saying so.
                return Err(OpError::Unavailable(format!(
                    "a part of the range ended after {sent} of {due} bytes"
                )));
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(OpError::Unavailable(format!("part task failed: {e}"))),
        }
    }
}

/// [`read_range`] of an erasure-coded version: only the chunks covering
/// `range`, read on a task (aborted if this returns early or is dropped)
/// into a bounded buffer.
async fn read_range_sharded(
    vault: &Vault,
    m: &Manifest,
    layout: &Shards,
    range: Range<u64>,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), OpError> {
    let chunk = CHUNK_LEN as u64;
    let chunks = range.start / chunk..range.end.div_ceil(chunk);
    let (ctx, mut crx) = mpsc::channel::<(u64, Vec<u8>)>(CHUNKS_BUFFERED);
    let (vault2, m2, layout2) = (vault.clone(), m.clone(), layout.clone());
    let task = Running(VecDeque::from([tokio::spawn(async move {
        shards::read_chunks(&vault2, &m2, &layout2, chunks, ctx).await
    })]));
    let mut sent = range.start;
    loop {
        let next = tokio::select! {
            biased;
            () = tx.closed() => return Ok(()),
            next = crx.recv() => next,
        };
        let Some((j, plain)) = next else { break };
        let at = j * chunk;
        let end = at + plain.len() as u64;
        let (from, to) = (range.start.clamp(at, end), range.end.clamp(at, end));
        if from < to {
            let piece = Bytes::copy_from_slice(&plain[(from - at) as usize..(to - at) as usize]);
            if tx.send(piece).await.is_err() {
                return Ok(());
            }
            sent = to;
        }
    }
    let mut task = task;
    let handle = task.0.pop_front().expect("one task");
    match handle.await {
        Ok(Ok(_)) if sent == range.end => Ok(()),
        Ok(Ok(_)) => Err(OpError::Unavailable(format!(
            "the range ended after {} of {} bytes",
            sent - range.start,
            range.end - range.start
        ))),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(OpError::Unavailable(format!("shard task failed: {e}"))),
    }
}

/// The part fetches of a range read: aborted when dropped.
struct Running(VecDeque<JoinHandle<Result<Vec<String>, OpError>>>);

impl Drop for Running {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// The sessions to part `k`'s holders that are up, and each holder's
/// name with why it cannot be used if it cannot.
fn holders_of(vault: &Vault, m: &Manifest, k: usize) -> (Vec<Session>, Vec<(String, String)>) {
    let nodes = nodes_for_part(m.placement(), k);
    let candidates = nodes
        .iter()
        .filter_map(|&i| vault.session(i).cloned())
        .collect();
    let holders = nodes
        .iter()
        .map(|&i| (vault.node_name(i).to_string(), vault.why_unusable(i)))
        .collect();
    (candidates, holders)
}

/// One part (or some of its chunks) to fetch from either copy.
struct PartFetch {
    /// Part number (0-based).
    k: usize,
    /// The part's plaintext length.
    len: u64,
    keys: PartKeys,
    /// The chunks to read.
    chunks: Range<u64>,
    /// Where their plaintext goes.
    sink: Sink,
}

/// Where a part's plaintext goes.
enum Sink {
    /// Written at `offset` (the part's place) of the output file, with
    /// `progress` advanced.
    File {
        file: Arc<File>,
        offset: u64,
        progress: ProgressRef,
    },
    /// The bytes `range` of the part's plaintext, sent down `tx` in order
    /// (at most a chunk a message).
    Channel {
        tx: mpsc::Sender<Bytes>,
        range: Range<u64>,
    },
}

impl Sink {
    /// Takes `plain`, the authenticated chunk at `at` of the part's
    /// plaintext.
    async fn take(&self, at: u64, plain: &[u8]) -> Result<(), Failure> {
        match self {
            Sink::File {
                file,
                offset,
                progress,
            } => {
                file.write_all_at(plain, offset + at)
                    .map_err(|e| format!("writing the output: {e}"))?;
                progress.advance(plain.len() as u64);
            }
            Sink::Channel { tx, range } => {
                let end = at + plain.len() as u64;
                let from = range.start.clamp(at, end);
                let to = range.end.clamp(at, end);
                if from < to {
                    let piece = &plain[(from - at) as usize..(to - at) as usize];
                    tx.send(Bytes::copy_from_slice(piece))
                        .await
                        .map_err(|_| Failure::Gone)?;
                }
            }
        }
        Ok(())
    }
}

/// Why an attempt at a part ended.
enum Failure {
    /// The holder sent nothing for [`SWITCH_AFTER`] while the other could
    /// serve.
    Silent,
    /// Anything else, in words.
    Failed(String),
    /// Whoever wanted the bytes is gone: stop, trying no other copy.
    Gone,
}

impl From<PartError> for Failure {
    fn from(e: PartError) -> Self {
        match e {
            PartError::Silent(_) => Failure::Silent,
            other => Failure::Failed(other.to_string()),
        }
    }
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure::Failed(why)
    }
}

/// How much of a part is written: whole chunks, so another copy can take
/// over at the next one.
#[derive(Debug, Default)]
struct Written {
    /// The next chunk to write (the chunks before it, from the first one
    /// asked for, are written).
    chunks: u64,
    /// The last chunk asked for is among them: the job is complete.
    complete: bool,
}

impl PartFetch {
    /// Tries the holders in turn (quiet ones last), each taking over from
    /// the first chunk not yet written; returns the failures it recovered
    /// from. A holder passed over for silence is tried again, without the
    /// silence limit, if the others fail.
    async fn run(
        self,
        candidates: Vec<Session>,
        holders: Vec<(String, String)>,
    ) -> Result<Vec<String>, OpError> {
        let mut failures = Vec::new();
        let mut order = candidates.clone();
        order.sort_by_key(Session::is_quiet);
        let mut queue: VecDeque<(Session, bool)> = order.into_iter().map(|s| (s, false)).collect();
        let mut written = Written {
            chunks: self.chunks.start,
            complete: self.chunks.is_empty(),
        };
        while let Some((s, again)) = queue.pop_front() {
            let silence = (!queue.is_empty()).then_some(SWITCH_AFTER);
            let attempt = self.fetch_from(&s, &mut written, silence).await;
            let why = match attempt {
                Ok(()) => {
                    // A holder passed over for being quiet is a failover
                    // the user hears about too.
                    for (q, _) in queue.iter().filter(|(q, again)| !again && q.is_quiet()) {
                        failures.push(format!(
                            "{}: not answering, the other copy was used",
                            q.name
                        ));
                    }
                    return Ok(failures);
                }
                Err(Failure::Silent) => {
                    if !again {
                        queue.push_back((s.clone(), true));
                    }
                    format!("sent nothing for {SWITCH_AFTER:?}")
                }
                Err(Failure::Failed(why)) => why,
                Err(Failure::Gone) => return Ok(failures),
            };
            tracing::warn!(node = %s.name, part = self.k + 1, "falling back to the other copy: {why}");
            failures.push(format!("{}: {why}", s.name));
        }
        let mut why = failures.clone();
        why.extend(
            holders
                .iter()
                .filter(|(h, _)| !candidates.iter().any(|c| &c.name == h))
                .map(|(h, reason)| format!("{h}: {reason}")),
        );
        Err(OpError::Unavailable(format!(
            "part {} cannot be read from any node holding it ({})",
            self.k + 1,
            why.join("; ")
        )))
    }

    /// Fetches the part's chunks from `s`, from the first one not yet
    /// `written` (only those are asked for). With `silence`, gives up when
    /// `s` sends nothing for that long.
    ///
    /// A node must deliver at least [`MIN_RATE`] (after a grace period)
    /// or the other copy is used; only the time spent waiting for the
    /// node counts, not the time the sink takes (a slow reader of a range
    /// is not the node's fault).
    async fn fetch_from(
        &self,
        s: &Session,
        written: &mut Written,
        silence: Option<Duration>,
    ) -> Result<(), Failure> {
        if written.complete {
            return Ok(());
        }
        let to_read = (self.chunks.end - written.chunks).saturating_mul(CHUNK_LEN as u64);
        let deadline = Duration::from_secs(30) + Duration::from_secs(to_read / MIN_RATE);
        let mut left = deadline;
        let too_slow = || Failure::Failed(format!("too slow (over {deadline:?})"));
        // A file takes the bytes as fast as they come: one read. A channel
        // to an HTTP client may not: a window at a time.
        let window = match self.sink {
            Sink::File { .. } => u64::MAX,
            Sink::Channel { .. } => WINDOW_CHUNKS,
        };
        while !written.complete && written.chunks < self.chunks.end {
            let to_chunk = self.chunks.end.min(written.chunks.saturating_add(window));
            let options = ReadOptions {
                from_chunk: written.chunks,
                to_chunk: Some(to_chunk),
                silence,
                keep_ciphertext: false,
            };
            let started = Instant::now();
            let mut part =
                tokio::time::timeout(left, PartReader::open(s, &self.keys, self.len, options))
                    .await
                    .map_err(|_| too_slow())??;
            left = left.saturating_sub(started.elapsed());
            let mut done = written.chunks * CHUNK_LEN as u64;
            let first = written.chunks;
            loop {
                let started = Instant::now();
                let next = tokio::time::timeout(left, part.next())
                    .await
                    .map_err(|_| too_slow())??;
                left = left.saturating_sub(started.elapsed());
                let Some(plain) = next else { break };
                self.sink.take(done, plain).await?;
                done += plain.len() as u64;
                written.chunks += 1;
                // The end of this window is the end of the part's chunks
                // only for the last window.
                written.complete = part.opened_last() && to_chunk == self.chunks.end;
            }
            if written.chunks == first && !written.complete {
                return Err(Failure::Failed("sent no chunk of the range asked".into()));
            }
        }
        Ok(())
    }
}
