//! Erasure-coded files (`Redundancy rs K+M`, [`crate::erasure`]): where a
//! new version's shards go, PUT's shard uploads, and reading a version
//! back from any K of its shards.
//!
//! PUT reads the file once, in order: each 64 KiB chunk is sealed (one
//! STREAM per file version), coded into K+M shard chunks, and shard `i`'s
//! chunk is queued for node `i`'s upload. Each upload runs on its own task
//! behind a bounded queue, so memory is bounded whatever the file size.
//!
//! GET reads K shards at once, data shards first (they need no decoding),
//! each from its own node on its own task, chunk by chunk. A shard whose
//! node fails, sends a chunk that fails its tag, or (while another shard is
//! left to try) stays silent for [`SWITCH_AFTER`], is replaced by another
//! shard read from the same chunk on; the chunks already received from the
//! others are kept. Only chunks that decoded from K authenticated shard
//! chunks and then opened under the STREAM AEAD are handed on.

use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::get::SWITCH_AFTER;
use super::{OpError, ProgressRef};
use crate::crypto::format::{HEADER_LEN, SHARD_HEADER};
use crate::crypto::keys::ShardedKeys;
use crate::crypto::stream::{Decryptor, Encryptor, CHUNK_LEN, CT_CHUNK_LEN};
use crate::erasure::{Scheme, ShardDecoder, ShardEncoder, SHARD_TAG_LEN};
use crate::manifest::{Manifest, Shards};
use crate::net::{Download, NetError, Session};
use crate::vault::Vault;
use wire::BlobId;

/// Shard chunks queued per upload between the coder and the network.
const QUEUE_DEPTH: usize = 8;

/// How many times the read of one shard is tried again after it failed
/// without proving the shard bad (see `read_chunks_as`).
const MAX_RETRIES: usize = 2;

/// Slowest rate (bytes/s) a node may serve a shard at before another shard
/// is read instead (after a grace period).
const MIN_RATE: u64 = 256 << 10;

/// The keys of the erasure-coded data `layout` describes.
pub(crate) fn keys_of(vault: &Vault, layout: &Shards) -> ShardedKeys {
    vault
        .master()
        .sharded(vault.user(), &layout.data_id, layout.scheme.shards())
}

/// The session to the node recorded for each shard, if it is usable, and
/// the node's name with why not otherwise.
fn sources(vault: &Vault, layout: &Shards) -> Vec<(Option<Session>, String, String)> {
    layout
        .nodes
        .iter()
        .map(|name| match vault.node_index(name) {
            Some(i) => (
                vault.session(i).filter(|s| !s.is_closed()).cloned(),
                name.clone(),
                vault.why_unusable(i),
            ),
            None => (None, name.clone(), "is no longer in dfc.conf".into()),
        })
        .collect()
}

/// Uploads every shard of `m` (whose [`Manifest::shards`] is `layout`)
/// read from `path`. Shards whose node is unusable are skipped (a
/// degraded PUT, see [`place`]); with `degraded`, a shard whose upload
/// fails is dropped as long as K+1 are stored. Returns a warning per shard
/// left missing.
///
/// Long tail: a node whose queue stays full (it takes its shard slower
/// than the others take theirs) is waited for at most [`LAG_GRACE`] or a
/// quarter of the time spent so far, whichever is longer, in all; then its
/// upload is abandoned (the node discards what it got) and the PUT goes on
/// without that shard, which `repair` completes later. One shard may be
/// left behind so, and with `degraded` as many as keep K+1 stored.
pub(crate) async fn upload(
    vault: &Vault,
    path: &Path,
    m: &Manifest,
    layout: &Shards,
    degraded: bool,
    progress: ProgressRef,
) -> Result<Vec<String>, OpError> {
    let scheme = layout.scheme;
    let keys = keys_of(vault, layout);
    let blob_len = scheme.shard_blob_len(m.size);
    let mut senders: Vec<Option<mpsc::Sender<Vec<u8>>>> = Vec::new();
    let mut tasks: Vec<(usize, String, UploadTask)> = Vec::new();
    let mut missing = 0;
    for (i, (session, name, _)) in sources(vault, layout).into_iter().enumerate() {
        let Some(s) = session else {
            senders.push(None);
            missing += 1;
            continue;
        };
        let (tx, task) = spawn_upload(s, keys.ids[i].clone(), blob_len);
        senders.push(Some(tx));
        tasks.push((i, name, task));
    }
    // Shards that may be left behind: one, or with `degraded` as many as
    // keep K+1 stored.
    let spare = if degraded {
        scheme.shards() - missing - (scheme.data() + 1).min(scheme.shards() - missing)
    } else {
        1
    };
    let shown = path.to_path_buf();
    let file = File::open(path).map_err(super::io_err(path))?;
    let size = m.size;
    let (ctx, crx) = mpsc::channel::<Vec<Vec<u8>>>(2);
    let coder =
        tokio::task::spawn_blocking(move || code_file(&file, size, scheme, &keys, ctx, &progress));
    let abandoned = fan_out(crx, senders, spare).await;
    let mut failed = Vec::new();
    let mut warnings = Vec::new();
    for (i, name, task) in tasks {
        if abandoned.contains(&i) {
            task.abort();
            warnings.push(format!(
                "{name} took its shard much slower than the others: it was left for `vault-client repair` to complete"
            ));
            continue;
        }
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{name}: {e}")),
            Err(e) => failed.push(format!("{name}: upload task failed: {e}")),
        }
    }
    match coder.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(OpError::Io {
                path: shown,
                source: e,
            })
        }
        Err(e) => return Err(OpError::Unavailable(format!("coding task failed: {e}"))),
    }
    let stored = scheme.shards() - missing - failed.len() - abandoned.len();
    if !degraded && missing > 0 {
        // A node placement counted on went away before its upload began.
        let gone: Vec<String> = sources(vault, layout)
            .into_iter()
            .filter(|(s, _, _)| s.is_none())
            .map(|(_, name, why)| format!("{name}: {why}"))
            .collect();
        failed.extend(gone);
    }
    if failed.is_empty() {
        return Ok(warnings);
    }
    if degraded && stored > scheme.data() {
        warnings.extend(
            failed
                .into_iter()
                .map(|f| format!("{f}: that shard is missing until you run repair")),
        );
        return Ok(warnings);
    }
    Err(OpError::Unavailable(format!(
        "{} of the {} shards could not be stored ({})",
        failed.len(),
        scheme.shards(),
        failed.join("; ")
    )))
}

/// A shard upload running on its own task.
type UploadTask = JoinHandle<Result<(), NetError>>;

/// Starts uploading shard blob `id` (`blob_len` bytes) to `s` on a task:
/// the header, then every shard chunk queued on the returned sender, then
/// the node's confirmation once the sender is dropped. Dropping or
/// aborting the task before that resets the stream, and the node keeps
/// nothing.
fn spawn_upload(s: Session, id: BlobId, blob_len: u64) -> (mpsc::Sender<Vec<u8>>, UploadTask) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE_DEPTH);
    let task = tokio::spawn(async move {
        let mut up = s.put(&id, blob_len).await?;
        up.write(&SHARD_HEADER).await?;
        while let Some(chunk) = rx.recv().await {
            up.write(&chunk).await?;
        }
        up.finish().await
    });
    (tx, task)
}

/// How long a PUT waits, in all, for a node slower than the others before
/// leaving its shard behind (or a quarter of the PUT's time so far, if
/// longer).
pub(crate) const LAG_GRACE: Duration = Duration::from_secs(1);

/// Hands each coded chunk's shard chunks to the uploads, in order; returns
/// the shards it abandoned for lagging (at most `spare`; see [`upload`]).
async fn fan_out(
    mut rx: mpsc::Receiver<Vec<Vec<u8>>>,
    mut senders: Vec<Option<mpsc::Sender<Vec<u8>>>>,
    spare: usize,
) -> Vec<usize> {
    let started = tokio::time::Instant::now();
    let mut waited = vec![Duration::ZERO; senders.len()];
    let mut abandoned = Vec::new();
    while let Some(chunks) = rx.recv().await {
        for (i, chunk) in chunks.into_iter().enumerate() {
            let Some(tx) = senders.get(i).and_then(Option::as_ref) else {
                continue;
            };
            let chunk = match tx.try_send(chunk) {
                Ok(()) => continue,
                // Its upload ended: it reports its own error.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    senders[i] = None;
                    continue;
                }
                Err(mpsc::error::TrySendError::Full(chunk)) => chunk,
            };
            let since = tokio::time::Instant::now();
            let sent = if abandoned.len() < spare {
                let allowance = LAG_GRACE
                    .max(started.elapsed() / 4)
                    .saturating_sub(waited[i]);
                tokio::time::timeout(allowance, tx.send(chunk)).await
            } else {
                Ok(tx.send(chunk).await)
            };
            waited[i] += since.elapsed();
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => senders[i] = None,
                Err(_) => {
                    tracing::warn!(
                        shard = i,
                        "a node lags behind the others: its shard is left for repair"
                    );
                    senders[i] = None;
                    abandoned.push(i);
                }
            }
        }
    }
    abandoned
}

/// Reads `file` in order, seals and codes every chunk, and sends each
/// chunk's K+M shard chunks down `out` (to [`fan_out`]). Runs on a
/// blocking thread; stops early, quietly, when `out` is closed.
fn code_file(
    file: &File,
    size: u64,
    scheme: Scheme,
    keys: &ShardedKeys,
    out: mpsc::Sender<Vec<Vec<u8>>>,
    progress: &ProgressRef,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut enc = Encryptor::new(&keys.stream, &keys.ad);
    let mut coder = ShardEncoder::new(scheme, keys.shard_key.clone());
    let mut done = 0u64;
    let mut buf = Vec::with_capacity(CHUNK_LEN + 16);
    for (j, _, last) in Scheme::chunk_lens(size) {
        let n = ((size - done) as usize).min(CHUNK_LEN);
        buf.clear();
        buf.resize(n, 0);
        file.read_exact_at(&mut buf, done)?;
        enc.seal_chunk(&mut buf, last)
            .map_err(|_| std::io::Error::other("encryption failed"))?;
        let mut shards: Vec<Vec<u8>> = (0..scheme.shards())
            .map(|_| Vec::with_capacity(scheme.shard_len(buf.len()) + SHARD_TAG_LEN))
            .collect();
        coder
            .encode(j, last, &buf, &mut shards)
            .map_err(|_| std::io::Error::other("erasure coding failed"))?;
        done += n as u64;
        if out.blocking_send(shards).is_err() {
            return Ok(());
        }
        progress.advance(n as u64);
    }
    Ok(())
}

/// Why reading one shard failed. Authentication failures are one opaque
/// variant.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShardError {
    #[error("sent nothing for {0:?}")]
    Silent(Duration),
    #[error("shard missing")]
    Missing,
    #[error("shard has the wrong size")]
    WrongSize,
    #[error("shard is not in storage format 3")]
    NotFormat3,
    #[error("decryption failed")]
    Auth,
    #[error("too slow (over {0:?})")]
    TooSlow(Duration),
    #[error("{0}")]
    Net(#[from] NetError),
}

/// One shard blob being read, chunk by chunk, raw (shard bytes and tag):
/// the length the manifest implies, the header when read from the start,
/// then exactly the chunks due, then the end of the stream.
struct ShardReader {
    dl: Download,
    received: u64,
    end: u64,
}

impl ShardReader {
    /// Asks `s` for the chunks `chunks` of shard blob `id` of a file of
    /// `size` bytes: the whole blob when that is all of them, else a
    /// ranged read of exactly their bytes (a node that stores shards knows
    /// ranged reads, as they came in the same release: a refusal is not
    /// met by reading the whole blob). The header is checked when read.
    async fn open(
        s: &Session,
        id: &BlobId,
        scheme: Scheme,
        size: u64,
        chunks: Range<u64>,
        silence: Option<Duration>,
    ) -> Result<Self, ShardError> {
        let blob_len = scheme.shard_blob_len(size);
        let total = Scheme::chunk_lens(size).total();
        let start = match chunks.start {
            0 => 0,
            j => scheme.chunk_offset(j),
        };
        let end = if chunks.end >= total {
            blob_len
        } else {
            scheme.chunk_offset(chunks.end)
        };
        let dl = if start == 0 && end == blob_len {
            within(silence, s.get(id)).await?
        } else {
            within(silence, s.get_range(id, start, Some(end - start))).await?
        };
        let dl = dl.ok_or(ShardError::Missing)?;
        if dl.total != blob_len {
            dl.cancel();
            return Err(ShardError::WrongSize);
        }
        let mut reader = ShardReader {
            dl,
            received: start,
            end,
        };
        if start == 0 {
            let header = reader.exactly(HEADER_LEN, silence).await?;
            if header != SHARD_HEADER {
                reader.dl.cancel();
                return Err(ShardError::NotFormat3);
            }
        }
        Ok(reader)
    }

    /// The next `n` bytes of the blob.
    async fn exactly(
        &mut self,
        n: usize,
        silence: Option<Duration>,
    ) -> Result<Vec<u8>, ShardError> {
        if self.received + n as u64 > self.end {
            return Err(ShardError::WrongSize);
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let piece = within(silence, self.dl.next_chunk(n - out.len()))
                .await?
                .ok_or(NetError::Protocol("blob shorter than announced".into()))?;
            out.extend_from_slice(&piece);
        }
        self.received += n as u64;
        Ok(out)
    }

    /// After the last chunk: the node must end the stream there.
    async fn end(&mut self, silence: Option<Duration>) -> Result<(), ShardError> {
        match within(silence, self.dl.next_chunk(1)).await? {
            None => Ok(()),
            Some(_) => Err(NetError::Protocol("blob longer than announced".into()).into()),
        }
    }
}

/// `step`, given up as [`ShardError::Silent`] after `silence` if set.
async fn within<T>(
    silence: Option<Duration>,
    step: impl std::future::Future<Output = Result<T, NetError>>,
) -> Result<T, ShardError> {
    match silence {
        Some(limit) => tokio::time::timeout(limit, step)
            .await
            .map_err(|_| ShardError::Silent(limit))?
            .map_err(ShardError::from),
        None => step.await.map_err(ShardError::from),
    }
}

/// A shard being read on its own task: its chunks arrive on `rx`, in
/// order, from the chunk it was opened at.
struct Pump {
    shard: usize,
    name: String,
    /// The session it reads from, to try again later.
    session: Session,
    rx: mpsc::Receiver<Result<Vec<u8>, ShardError>>,
    task: JoinHandle<()>,
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The plaintext chunks `chunks` of the erasure-coded version `m`, sent
/// down `tx` in order (chunk index, plaintext), each once and only after
/// it authenticated; returns the failures it recovered from (a node and
/// why, for the report). Fails with [`OpError::Unavailable`] when fewer
/// than K shards can be read, naming every node and why; the chunks sent
/// before are all authenticated. Stops quietly when the receiver goes away.
pub(crate) async fn read_chunks(
    vault: &Vault,
    m: &Manifest,
    layout: &Shards,
    chunks: Range<u64>,
    tx: mpsc::Sender<(u64, Vec<u8>)>,
) -> Result<Vec<String>, OpError> {
    read_chunks_as(vault, m, layout, chunks, &[], Deliver::Plain, tx)
        .await
        .map(|r| r.problems)
}

/// What [`read_chunks_as`] hands on for each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deliver {
    /// The plaintext.
    Plain,
    /// The ciphertext chunk (it was opened all the same, so it is known
    /// good): what repair re-encodes.
    Ciphertext,
}

/// What a read of shards ran into on the way.
#[derive(Debug, Default)]
pub(crate) struct ReadReport {
    /// `node: why` for every failure recovered from.
    pub problems: Vec<String>,
    /// Shards that failed their tag or were missing or malformed: their
    /// copies are bad, not merely unreachable.
    pub bad: Vec<usize>,
}

/// [`read_chunks`] that never reads the shards in `skip` and hands on
/// what `deliver` says.
pub(crate) async fn read_chunks_as(
    vault: &Vault,
    m: &Manifest,
    layout: &Shards,
    chunks: Range<u64>,
    skip: &[usize],
    deliver: Deliver,
    tx: mpsc::Sender<(u64, Vec<u8>)>,
) -> Result<ReadReport, OpError> {
    let mut bad_shards: Vec<usize> = Vec::new();
    let scheme = layout.scheme;
    let keys = keys_of(vault, layout);
    let all = Scheme::chunk_lens(m.size);
    let chunks = chunks.start..chunks.end.min(all.total());
    let k = scheme.data();
    let mut problems: Vec<String> = Vec::new();
    // Shards to try: data shards first (no decoding), quiet nodes last.
    let mut spare: VecDeque<(usize, Session, String)> = VecDeque::new();
    let mut unusable = Vec::new();
    for (i, (session, name, why)) in sources(vault, layout).into_iter().enumerate() {
        match session {
            _ if skip.contains(&i) => {}
            Some(s) => spare.push_back((i, s, name)),
            None => unusable.push(format!("{name}: {why}")),
        }
    }
    spare
        .make_contiguous()
        .sort_by_key(|(i, s, _)| (s.is_quiet(), *i >= k, *i));
    // Whether another shard is left to try: only then is a silent node
    // given up on (read by the pumps at each wait, not fixed at open).
    let spare_left = Arc::new(AtomicBool::new(!spare.is_empty()));
    // Reads of a shard that failed without proving it bad (a reset, a
    // timeout, silence) are tried again later, this many times at most:
    // a node resets a reply it could not finish in time, and a long GET
    // must not lose shards for that.
    let mut retries = vec![0usize; scheme.shards()];
    let mut dec = ShardDecoder::new(scheme, keys.shard_key.clone());
    let mut pumps: Vec<Pump> = Vec::new();
    let mut out = Vec::new();
    for j in chunks.clone() {
        let (len, last) = all.at(j).expect("within the file");
        // This chunk's shard chunks received so far, by shard.
        let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
        // The chunk as handed on, once the fast path opened it.
        let mut opened: Option<Vec<u8>> = None;
        let mut fast_failed = false;
        let decoded = loop {
            // Enough readers for K shard chunks of this chunk.
            loop {
                let pending = pumps
                    .iter()
                    .filter(|p| !got.iter().any(|(i, _)| *i == p.shard))
                    .count();
                if got.len() + pending >= k {
                    break;
                }
                let Some((i, s, name)) = spare.pop_front() else {
                    break;
                };
                // Only a shard not tried yet counts as one to switch to: a
                // retry of a failed one must not arm the silence limit.
                let fresh = spare.iter().any(|(i, _, _)| retries[*i] == 0);
                spare_left.store(fresh, Ordering::Relaxed);
                let silence = fresh.then_some(SWITCH_AFTER);
                let window = j..chunks.end.min(j + WINDOW);
                let deadline = window_deadline(scheme, window.end - window.start);
                let opened = tokio::time::timeout(
                    deadline,
                    ShardReader::open(&s, &keys.ids[i], scheme, m.size, window.clone(), silence),
                )
                .await
                .unwrap_or(Err(ShardError::TooSlow(deadline)));
                match opened {
                    Ok(reader) => pumps.push(pump(
                        ShardSource {
                            shard: i,
                            name,
                            session: s,
                            id: keys.ids[i].clone(),
                            scheme,
                            size: m.size,
                        },
                        reader,
                        j..chunks.end,
                        spare_left.clone(),
                    )),
                    Err(e) => {
                        if judged(&e).is_some() {
                            bad_shards.push(i);
                        } else if retries[i] < MAX_RETRIES {
                            retries[i] += 1;
                            spare.push_back((i, s, name.clone()));
                        }
                        problems.push(format!("{name}: {e}"));
                    }
                }
            }
            // One chunk from every reader that has not given this one yet.
            let mut failed = Vec::new();
            for pump in pumps.iter_mut() {
                if got.iter().any(|(i, _)| *i == pump.shard) {
                    continue;
                }
                let next = tokio::select! {
                    biased;
                    () = tx.closed() => return Ok(ReadReport { problems, bad: bad_shards }),
                    next = pump.rx.recv() => next,
                };
                let retry = match next {
                    Some(Ok(chunk)) => {
                        // Progress earns the retries back: only a node that
                        // keeps failing without delivering runs out.
                        retries[pump.shard] = 0;
                        got.push((pump.shard, chunk));
                        continue;
                    }
                    Some(Err(e)) => {
                        problems.push(format!("{}: {e}", pump.name));
                        if judged(&e).is_some() {
                            bad_shards.push(pump.shard);
                            false
                        } else {
                            true
                        }
                    }
                    None => {
                        problems.push(format!("{}: the shard's read ended early", pump.name));
                        true
                    }
                };
                failed.push(pump.shard);
                if retry && retries[pump.shard] < MAX_RETRIES {
                    retries[pump.shard] += 1;
                    spare.push_back((pump.shard, pump.session.clone(), pump.name.clone()));
                }
            }
            pumps.retain(|p| !failed.contains(&p.shard));
            if got.len() < k {
                let pending = pumps
                    .iter()
                    .any(|p| !got.iter().any(|(i, _)| *i == p.shard));
                if !pending && spare.is_empty() {
                    break false;
                }
                continue;
            }
            // Fast path: with the K data shards at hand, the chunk is their
            // bytes as they are, and the STREAM AEAD authenticates it whole.
            // The shards' own tags are checked only when it fails, to find
            // the bad one.
            if !fast_failed && (0..k).all(|i| got.iter().any(|(g, _)| *g == i)) {
                let s_len = scheme.shard_len(len);
                out.clear();
                for i in 0..k {
                    let (_, c) = got.iter().find(|(g, _)| *g == i).expect("present");
                    out.extend_from_slice(&c[..s_len]);
                }
                out.truncate(len);
                let cipher = (deliver == Deliver::Ciphertext).then(|| out.clone());
                let mut d = Decryptor::with_counter(&keys.stream, &keys.ad, j.into());
                if d.open_chunk(&mut out, last).is_ok() {
                    opened = Some(cipher.unwrap_or_else(|| std::mem::take(&mut out)));
                    break true;
                }
                fast_failed = true;
            }
            let shards: Vec<(usize, &[u8])> = got.iter().map(|(i, c)| (*i, &c[..])).collect();
            let bad = match dec.decode(j, last, len, &shards, &mut out) {
                Ok(report) => {
                    // Decoded from the good ones; the bad ones' readers go.
                    for i in &report.bad {
                        problems.push(format!("{}: decryption failed", layout.nodes[*i]));
                        pumps.retain(|p| p.shard != *i);
                        bad_shards.push(*i);
                    }
                    break true;
                }
                Err(_) => got
                    .iter()
                    .filter(|(i, c)| !dec.verify(*i, j, last, len, c))
                    .map(|(i, _)| *i)
                    .collect::<Vec<_>>(),
            };
            if bad.is_empty() {
                // Cannot happen (K authenticated shard chunks decode), but
                // never loop on it.
                break false;
            }
            for i in &bad {
                problems.push(format!("{}: decryption failed", layout.nodes[*i]));
                got.retain(|(g, _)| g != i);
                pumps.retain(|p| p.shard != *i);
                bad_shards.push(*i);
            }
        };
        if !decoded {
            let mut why = problems.clone();
            why.extend(unusable.iter().cloned());
            return Err(OpError::Unavailable(format!(
                "chunk {} cannot be rebuilt: fewer than {k} of its {} shards could be read ({})",
                j + 1,
                scheme.shards(),
                why.join("; ")
            )));
        }
        let chunk = match opened {
            Some(chunk) => chunk,
            None => {
                let cipher = (deliver == Deliver::Ciphertext).then(|| out.clone());
                Decryptor::with_counter(&keys.stream, &keys.ad, j.into())
                    .open_chunk(&mut out, last)
                    .map_err(|_| OpError::Unavailable("decryption failed".into()))?;
                cipher.unwrap_or_else(|| std::mem::take(&mut out))
            }
        };
        if tx.send((j, chunk)).await.is_err() {
            return Ok(ReadReport {
                problems,
                bad: bad_shards,
            });
        }
        // Decryption and decoding are the CPU-heavy part: let the
        // connections' drivers run between chunks.
        tokio::task::yield_now().await;
    }
    bad_shards.sort_unstable();
    bad_shards.dedup();
    Ok(ReadReport {
        problems,
        bad: bad_shards,
    })
}

/// Rebuilds the shards `targets` (shard, session to the node that is to
/// hold it) of the erasure-coded version `m`, streaming: every chunk
/// decoded from K shards not in `skip` (each tag checked, the chunk
/// opened), coded again,
/// and the targets' shard chunks uploaded, replacing what those nodes
/// hold under the shard ids. Returns the bytes written and the source
/// shards found bad on the way; fails, writing nothing that counts (an
/// unfinished upload is discarded by the node), when fewer than K good
/// shards can be read.
pub(crate) async fn rebuild(
    vault: &Vault,
    m: &Manifest,
    layout: &Shards,
    targets: &[(usize, Session)],
    skip: &[usize],
) -> Result<(u64, Vec<usize>), OpError> {
    let scheme = layout.scheme;
    let keys = keys_of(vault, layout);
    let blob_len = scheme.shard_blob_len(m.size);
    let mut senders = Vec::new();
    let mut uploads = Vec::new();
    for (i, s) in targets {
        let (tx, task) = spawn_upload(s.clone(), keys.ids[*i].clone(), blob_len);
        senders.push((*i, tx));
        uploads.push((s.name.clone(), task));
    }
    let (ctx, mut crx) = mpsc::channel::<(u64, Vec<u8>)>(QUEUE_DEPTH);
    let chunks = 0..Scheme::chunk_lens(m.size).total();
    let read = read_chunks_as(vault, m, layout, chunks, skip, Deliver::Ciphertext, ctx);
    let lens: Vec<bool> = Scheme::chunk_lens(m.size)
        .map(|(_, _, last)| last)
        .collect();
    let code = async {
        let mut coder = ShardEncoder::new(scheme, keys.shard_key.clone());
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); scheme.shards()];
        while let Some((j, ct)) = crx.recv().await {
            for b in &mut out {
                b.clear();
            }
            let last = lens.get(j as usize).copied().unwrap_or(true);
            coder
                .encode(j, last, &ct, &mut out)
                .map_err(|_| OpError::Unavailable("erasure coding failed".into()))?;
            for (i, tx) in &senders {
                // An upload that failed reports its own error below.
                let _ = tx.send(std::mem::take(&mut out[*i])).await;
            }
        }
        drop(senders);
        Ok::<(), OpError>(())
    };
    let (read, coded) = tokio::join!(read, code);
    let report = match (read, coded) {
        (Ok(report), Ok(())) => report,
        (Err(e), _) | (_, Err(e)) => {
            for (_, task) in &uploads {
                task.abort();
            }
            return Err(e);
        }
    };
    let mut failed = Vec::new();
    for (name, task) in uploads {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{name}: {e}")),
            Err(e) => failed.push(format!("{name}: upload task failed: {e}")),
        }
    }
    if !failed.is_empty() {
        return Err(OpError::Unavailable(format!(
            "rebuilt shards could not be stored ({})",
            failed.join("; ")
        )));
    }
    Ok((blob_len * targets.len() as u64, report.bad))
}

/// Chunks asked of a node at once when reading a shard: each reply is
/// bounded, so a node's reply deadline never cuts a long read short, and
/// a slow reader (an HTTP client of the gateway) never holds a node's
/// reply open for long.
const WINDOW: u64 = 48;

/// How long a node may take, in all, for a window of `chunks` chunks of
/// one shard: 30 s, and the bytes at [`MIN_RATE`]. Only the time spent
/// waiting for the node counts.
fn window_deadline(scheme: Scheme, chunks: u64) -> Duration {
    let bytes = chunks * (scheme.shard_len(CT_CHUNK_LEN) + SHARD_TAG_LEN) as u64;
    Duration::from_secs(30) + Duration::from_secs(bytes / MIN_RATE)
}

/// Where one shard is read from.
struct ShardSource {
    shard: usize,
    name: String,
    session: Session,
    id: BlobId,
    scheme: Scheme,
    /// The file's plaintext size.
    size: u64,
}

/// Starts reading shard chunks `chunks` on a task, a [`WINDOW`] at a
/// time: `first` is the open read of the first window, the next ones are
/// asked for as the reader takes the chunks. The node may stay silent
/// [`SWITCH_AFTER`] at most while `spare_left` says another shard could
/// take over, and any time otherwise, within each window's deadline.
fn pump(
    src: ShardSource,
    first: ShardReader,
    chunks: Range<u64>,
    spare_left: Arc<AtomicBool>,
) -> Pump {
    let (tx, rx) = mpsc::channel(4);
    let ShardSource {
        shard,
        name,
        session,
        id,
        scheme,
        size,
    } = src;
    let s = session.clone();
    let task = tokio::spawn(async move {
        let lens = Scheme::chunk_lens(size);
        let silence = || spare_left.load(Ordering::Relaxed).then_some(SWITCH_AFTER);
        let mut reader = Some(first);
        let mut j = chunks.start;
        while j < chunks.end {
            let window = j..chunks.end.min(j + WINDOW);
            let budget = window_deadline(scheme, window.end - window.start);
            let mut spent = Duration::ZERO;
            let mut r = match reader.take() {
                Some(r) => r,
                None => {
                    let started = tokio::time::Instant::now();
                    let opened = tokio::time::timeout(
                        budget,
                        ShardReader::open(&s, &id, scheme, size, window.clone(), silence()),
                    )
                    .await
                    .unwrap_or(Err(ShardError::TooSlow(budget)));
                    spent += started.elapsed();
                    match opened {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            };
            for c in window.clone() {
                let (len, _) = lens.at(c).expect("within the file");
                let started = tokio::time::Instant::now();
                let size = scheme.shard_len(len) + SHARD_TAG_LEN;
                let chunk =
                    tokio::time::timeout(budget.saturating_sub(spent), r.exactly(size, silence()))
                        .await
                        .unwrap_or(Err(ShardError::TooSlow(budget)));
                spent += started.elapsed();
                let failed = chunk.is_err();
                // Time spent waiting for the reader is not the node's.
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
            // The node must end its reply where it said it would.
            if let Err(e) = r.end(silence()).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
            j = window.end;
        }
    });
    Pump {
        shard,
        name,
        session,
        rx,
        task,
    }
}

/// How a shard copy fared in [`verify`]: what reading it proved.
pub(crate) fn judged(e: &ShardError) -> Option<super::check::CopyState> {
    use super::check::CopyState;
    match e {
        ShardError::Missing => Some(CopyState::Missing),
        ShardError::WrongSize | ShardError::NotFormat3 | ShardError::Auth => {
            Some(CopyState::Corrupt)
        }
        ShardError::Silent(_) | ShardError::TooSlow(_) | ShardError::Net(_) => None,
    }
}

/// Reads shard `i` of the erasure-coded version `m` whole from `s` and
/// checks every chunk's tag (`check --verify`): the bytes read.
pub(crate) async fn verify(
    vault: &Vault,
    s: &Session,
    m: &Manifest,
    layout: &Shards,
    i: usize,
    progress: &ProgressRef,
) -> Result<u64, ShardError> {
    let scheme = layout.scheme;
    let keys = keys_of(vault, layout);
    // A budget for the whole shard, as for a read window: a node
    // trickling bytes cannot hold `check --verify` for ever.
    let budget = window_deadline(scheme, Scheme::chunk_lens(m.size).total());
    tokio::time::timeout(budget, verify_within(s, &keys, m, scheme, i, progress))
        .await
        .unwrap_or(Err(ShardError::TooSlow(budget)))
}

/// [`verify`] without its time limit.
async fn verify_within(
    s: &Session,
    keys: &ShardedKeys,
    m: &Manifest,
    scheme: Scheme,
    i: usize,
    progress: &ProgressRef,
) -> Result<u64, ShardError> {
    let dec = ShardDecoder::new(scheme, keys.shard_key.clone());
    let mut reader = ShardReader::open(s, &keys.ids[i], scheme, m.size, 0..u64::MAX, None).await?;
    let mut bytes = HEADER_LEN as u64;
    for (j, len, last) in Scheme::chunk_lens(m.size) {
        let chunk = reader
            .exactly(scheme.shard_len(len) + SHARD_TAG_LEN, None)
            .await?;
        if !dec.verify(i, j, last, len, &chunk) {
            return Err(ShardError::Auth);
        }
        bytes += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
    }
    reader.end(None).await?;
    Ok(bytes)
}

/// Which shards of each erasure-coded version in `files` their recorded
/// nodes hold with the right length (`StatBlobs`): per file, per shard,
/// `Some(true)` held, `Some(false)` absent or of the wrong length, `None`
/// unknown (the node is down, failed to answer, or is no longer in
/// dfc.conf); and `node: problem` for nodes that failed.
pub(crate) async fn presence(
    vault: &Vault,
    files: &[(&Manifest, &Shards)],
) -> (Vec<Vec<Option<bool>>>, Vec<String>) {
    let mut out: Vec<Vec<Option<bool>>> = files
        .iter()
        .map(|(_, l)| vec![None; l.scheme.shards()])
        .collect();
    // Per node: (file, shard, id, expected length).
    let mut asks: std::collections::HashMap<usize, Vec<(usize, usize, BlobId, u64)>> =
        std::collections::HashMap::new();
    for (f, (m, layout)) in files.iter().enumerate() {
        let keys = keys_of(vault, layout);
        let len = layout.scheme.shard_blob_len(m.size);
        for (i, (name, id)) in layout.nodes.iter().zip(keys.ids).enumerate() {
            if let Some(node) = vault.node_index(name) {
                asks.entry(node).or_default().push((f, i, id, len));
            }
        }
    }
    let mut problems = Vec::new();
    for (node, list) in asks {
        let Some(s) = vault.session(node).filter(|s| !s.is_closed()) else {
            continue;
        };
        for batch in list.chunks(wire::MAX_BATCH) {
            let ids: Vec<BlobId> = batch.iter().map(|(_, _, id, _)| id.clone()).collect();
            match s.stat_blobs(&ids).await {
                Ok(stats) => {
                    for ((f, i, _, len), stat) in batch.iter().zip(stats) {
                        out[*f][*i] = Some(stat.is_some_and(|st| st.len == *len));
                    }
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", s.name));
                    break;
                }
            }
        }
    }
    (out, problems)
}
