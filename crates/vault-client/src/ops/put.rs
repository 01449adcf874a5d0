//! PUT: hash, split, encrypt and place a file, then commit its manifest.
//!
//! Order of events, so that readers see the old version or the new one and
//! never a mix: (1) every part copy is uploaded under fresh ids no manifest
//! references; (2) the sealed manifest replaces the old one on each node
//! (the commit); (3) the old version's parts are removed. A failure before
//! (2) removes the new parts and leaves the old version in place.
//!
//! The placement needs each file's MD5 before any part is sent, so a PUT
//! reads a file twice. [`PutBatch::start`] begins the MD5 pass of every file
//! at once, on one thread, so it can overlap with opening the vault (dialling
//! and Argon2id); [`put_file`] is the one-file shorthand.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{
    commit::{commit, Outcome, Write},
    fetch_versions, io_err, quorum, remove_parts, require_nodes, shards, OpError, Phase,
    ProgressRef,
};
use crate::crypto::format::{part_blob_len, PART_HEADER};
use crate::crypto::keys::{random_bytes, PartKeys, FILE_ID_LEN};
use crate::crypto::stream::{Encryptor, CHUNK_LEN};
use crate::layout::Redundancy;
use crate::manifest::Manifest;
use crate::net::{NetError, Session};
use crate::placement::nodes_for_part;
use crate::vault::Vault;

/// What a successful PUT stored.
#[derive(Debug, Clone)]
pub struct PutReport {
    /// Name in the vault.
    pub name: String,
    /// Plaintext size.
    pub size: u64,
    /// Version number written.
    pub version: u64,
    /// What did not go as it should, though the file is stored.
    pub warnings: Vec<String>,
}

/// Size and modification time: enough to notice a file rewritten while
/// being stored.
/// A file's size and modification time: what tells that it changed.
type Fingerprint = (u64, std::time::SystemTime);

fn fingerprint_of(m: &std::fs::Metadata) -> Option<Fingerprint> {
    Some((m.len(), m.modified().ok()?))
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    fingerprint_of(&std::fs::metadata(path).ok()?)
}

/// A file's size and MD5, and its fingerprint while they were computed.
pub(crate) struct Hashed {
    size: u64,
    md5: [u8; 16],
    fingerprint: Fingerprint,
}

fn changed(path: &Path) -> OpError {
    OpError::Refused(format!(
        "{} changed while it was being stored; nothing was changed in the vault",
        path.display()
    ))
}

/// Chunks in flight per part between the reader/encryptor and the network.
const PIPELINE_DEPTH: usize = 8;

/// The vault name for a local path: its final component, as UTF-8.
pub fn name_for(path: &Path) -> Result<String, OpError> {
    crate::path::file_name(path).map_err(|e| OpError::BadName(e.to_string()))
}

/// The MD5 pass of the file stored as `name`, announced as
/// [`Phase::Hashing`] and counted through [`super::Progress::hashed`]. A
/// file that changes during it is refused (its size and MD5 would describe
/// no version of it).
fn md5_file(path: &Path, name: &str, progress: &ProgressRef) -> Result<Hashed, std::io::Error> {
    progress.phase(Phase::Hashing(name));
    let mut file = File::open(path)?;
    let unreadable = || std::io::Error::other("cannot read the file's modification time");
    let before = fingerprint_of(&file.metadata()?).ok_or_else(unreadable)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.hashed(n as u64);
    }
    if total != before.0 || fingerprint(path) != Some(before) {
        return Err(std::io::Error::other(
            "the file changed while it was being read; nothing was stored",
        ));
    }
    Ok(Hashed {
        size: total,
        md5: hasher.finalize().into(),
        fingerprint: before,
    })
}

/// A file's size and MD5, being computed ahead of time.
pub(crate) type Hashing = tokio::sync::oneshot::Receiver<std::io::Result<Hashed>>;

/// A file waiting in a [`PutBatch`].
struct Queued {
    path: PathBuf,
    progress: ProgressRef,
    hashing: Hashing,
}

/// Files to store, whose MD5 pass has started.
pub struct PutBatch {
    queue: VecDeque<Queued>,
}

impl PutBatch {
    /// Starts the MD5 pass of `files`, in order, on one blocking thread.
    /// Each file's progress hears [`Phase::Hashing`] and counts its size
    /// through [`super::Progress::hashed`] in this pass, then hears
    /// [`Phase::Uploading`] and advances by its size while it is encrypted
    /// and sent. Needs a tokio runtime.
    pub fn start(files: Vec<(PathBuf, ProgressRef)>) -> PutBatch {
        let hashing = hash_all(
            files
                .iter()
                .map(|(path, progress)| (path.clone(), shown_name(path), progress.clone()))
                .collect(),
        );
        let queue = files
            .into_iter()
            .zip(hashing)
            .map(|((path, progress), hashing)| Queued {
                path,
                progress,
                hashing,
            })
            .collect();
        PutBatch { queue }
    }

    /// Stores the next file: its local path and the outcome; `None` when
    /// every file was done.
    pub async fn next(&mut self, vault: &Vault) -> Option<(PathBuf, Result<PutReport, OpError>)> {
        let q = self.queue.pop_front()?;
        let result = match name_for(&q.path) {
            Ok(name) => store(vault, &q.path, &name, q.progress, q.hashing, false, None)
                .await
                .map(|(report, _)| report),
            Err(e) => Err(e),
        };
        Some((q.path, result))
    }
}

/// Stores `path` in the vault under its file name. `progress` hears
/// [`Phase::Hashing`] and counts the file's size through
/// [`super::Progress::hashed`] (the MD5 pass), then hears
/// [`Phase::Uploading`] and advances by the file's size (the upload).
pub async fn put_file(
    vault: &Vault,
    path: &Path,
    progress: ProgressRef,
) -> Result<PutReport, OpError> {
    let mut batch = PutBatch::start(vec![(path.to_path_buf(), progress)]);
    match batch.next(vault).await {
        Some((_, result)) => result,
        None => unreachable!("a batch of one file yields one result"),
    }
}

/// Starts the MD5 pass of `files`, in order, on one blocking thread (a
/// pass is skipped when nobody waits for it any more). Each file comes
/// with the name its progress is told ([`Phase::Hashing`]).
pub(crate) fn hash_all(files: Vec<(PathBuf, String, ProgressRef)>) -> Vec<Hashing> {
    let mut jobs = Vec::new();
    let mut receivers = Vec::new();
    for (path, name, progress) in files {
        let (tx, rx) = tokio::sync::oneshot::channel();
        jobs.push((path, name, progress, tx));
        receivers.push(rx);
    }
    tokio::task::spawn_blocking(move || {
        for (path, name, progress, tx) in jobs {
            if tx.is_closed() {
                continue;
            }
            let _ = tx.send(md5_file(&path, &name, &progress));
        }
    });
    receivers
}

/// The name a file's progress is told: its vault name, or (when it has
/// none) the path as given.
fn shown_name(path: &Path) -> String {
    name_for(path).unwrap_or_else(|_| path.display().to_string())
}

/// A file the gateway spooled to local disk, whose MD5 it computed as the
/// bytes came in: stored under `name` without a second MD5 pass.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// The spooled file (not changed while it is stored).
    pub path: PathBuf,
    /// The vault name.
    pub name: String,
    /// MD5 of the file's contents.
    pub md5: [u8; 16],
    /// Metadata kept in the manifest.
    pub extra: crate::manifest::Extra,
    /// The modification time to record (nanoseconds since the epoch).
    pub mtime_ns: Option<u64>,
    /// Store with one node unusable, as `put --degraded` (its copies are
    /// skipped; `repair` restores them).
    pub degraded: bool,
}

/// Stores a spooled file (see [`Spooled`]), as [`put_file`] stores one:
/// what was stored, and the manifest committed.
pub async fn put_spooled(
    vault: &Vault,
    spooled: Spooled,
    progress: ProgressRef,
) -> Result<(PutReport, Manifest), OpError> {
    let meta = std::fs::metadata(&spooled.path).map_err(io_err(&spooled.path))?;
    let hashed = Hashed {
        size: meta.len(),
        md5: spooled.md5,
        fingerprint: fingerprint_of(&meta).ok_or_else(|| changed(&spooled.path))?,
    };
    let (tx, hashing) = tokio::sync::oneshot::channel();
    let _ = tx.send(Ok(hashed));
    let given = Some((spooled.extra, spooled.mtime_ns));
    store(
        vault,
        &spooled.path,
        &spooled.name,
        progress,
        hashing,
        spooled.degraded,
        given,
    )
    .await
}

/// Stores one file, streaming, under `name`. With `degraded`, one node
/// may be unusable: its copies are skipped (every part keeps one). `given`
/// is the metadata and modification time to record instead of the file's
/// own time and none.
pub(crate) async fn store(
    vault: &Vault,
    path: &Path,
    name: &str,
    progress: ProgressRef,
    hashing: Hashing,
    degraded: bool,
    given: Option<(crate::manifest::Extra, Option<u64>)>,
) -> Result<(PutReport, Manifest), OpError> {
    let mut warnings = require_nodes(vault, "PUT", degraded)?;
    let name = name.to_string();
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(OpError::BadName(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let (extra, mtime_ns) =
        given.unwrap_or_else(|| (Default::default(), crate::path::mtime_ns(&meta)));

    let hashed = hashing
        .await
        .map_err(|_| OpError::Unavailable("hashing task failed".into()))?;
    let Hashed {
        size,
        md5,
        fingerprint: hashed_as,
    } = hashed.map_err(io_err(path))?;
    // The MD5 pass may have run well before: the file must still be the
    // one it read, now and after the parts are sent.
    if fingerprint_of(&meta) != Some(hashed_as) {
        return Err(changed(path));
    }

    let manifest_id = vault.master().manifest_id(&name);
    let file_id = random_bytes::<FILE_ID_LEN>()?.to_vec();
    let layout = match vault.redundancy() {
        Redundancy::Classic => None,
        Redundancy::Rs(scheme) => {
            let (layout, missing) = crate::layout::place(vault, scheme, &file_id, degraded)?;
            warnings.extend(missing);
            Some(layout)
        }
    };
    let previous = fetch_versions(vault, &manifest_id, None).await;
    let manifest = Manifest {
        name: name.clone(),
        size,
        md5: md5.to_vec(),
        file_id,
        version: previous.max_version() + 1,
        deleted: false,
        mtime_ns,
        extra,
        shards: layout,
    };

    progress.phase(Phase::Uploading(&name));
    let uploaded = match &manifest.shards {
        None => upload_parts(vault, path, &manifest, progress).await,
        Some(layout) => shards::upload(vault, path, &manifest, layout, degraded, progress)
            .await
            .map(|lost| warnings.extend(lost)),
    };
    if let Err(e) = uploaded {
        remove_parts(vault, &manifest).await;
        return Err(e);
    }
    // The MD5 pass and the encrypt pass read the file separately: if it
    // changed in between, the parts and the manifest disagree.
    if fingerprint(path) != Some(hashed_as) {
        remove_parts(vault, &manifest).await;
        return Err(changed(path));
    }

    // Commit: the manifest, conditionally, on every node; it counts once
    // a quorum holds it.
    let sealed = manifest.seal(vault.master(), vault.user(), &manifest_id)?;
    let write = Write {
        id: manifest_id,
        manifest: manifest.clone(),
        sealed,
        seen: Write::seen_from(vault.node_count(), &previous.copies),
    };
    let outcome = commit(vault, std::slice::from_ref(&write))
        .await
        .pop()
        .expect("one write, one outcome");
    match outcome {
        Outcome::Committed { missed, replaced } => {
            // Every part copy landed, so the new version is complete
            // wherever its manifest is; the versions it replaces can go
            // (those read first, and any it outranked on the way).
            let mut gone: Vec<&Manifest> = previous.distinct();
            gone.extend(&replaced);
            let mut removed: Vec<&[u8]> = Vec::new();
            for old in gone {
                if old.file_id != manifest.file_id
                    && !old.deleted
                    && !removed.contains(&&old.file_id[..])
                {
                    removed.push(&old.file_id);
                    remove_parts(vault, old).await;
                }
            }
            if !missed.is_empty() {
                warnings.push(format!(
                    "{name}: stored, but the manifest could not be written to {}; run `vault-client repair` to restore full redundancy",
                    missed.join("; ")
                ));
            }
        }
        Outcome::Lost { winner, left } => {
            if !left {
                remove_parts(vault, &manifest).await;
            }
            return Err(conflict(&name, &winner));
        }
        Outcome::NotCommitted { why, left } => {
            if !left {
                remove_parts(vault, &manifest).await;
            }
            return Err(OpError::Unavailable(format!(
                "{name}: not stored: the manifest reached fewer than {} nodes ({}); {}",
                quorum(vault),
                why.join("; "),
                if left {
                    "run `vault-client repair`, then PUT again"
                } else {
                    "nothing was changed"
                }
            )));
        }
    }
    let report = PutReport {
        name,
        size,
        version: manifest.version,
        warnings,
    };
    Ok((report, manifest))
}

/// Uploads all eight part copies concurrently.
async fn upload_parts(
    vault: &Vault,
    path: &Path,
    m: &Manifest,
    progress: ProgressRef,
) -> Result<(), OpError> {
    let x = m.placement();
    let mut set = JoinSet::new();
    for (k, (offset, len)) in m.parts().into_iter().enumerate() {
        let targets: Vec<Session> = nodes_for_part(x, k)
            .iter()
            .filter_map(|&i| vault.session(i).cloned())
            .collect();
        if targets.is_empty() {
            return Err(OpError::Unavailable(format!(
                "no node holding part {} is reachable",
                k + 1
            )));
        }
        let job = PartJob {
            path: path.to_path_buf(),
            offset,
            len,
            keys: vault.master().part(vault.user(), &m.file_id, m.version, k),
        };
        let progress = progress.clone();
        set.spawn(async move { job.run(targets, progress).await });
    }
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        let err = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => OpError::Unavailable(format!("upload task failed: {e}")),
        };
        if first_err.is_none() {
            first_err = Some(err);
            set.abort_all();
        }
    }
    first_err.map_or(Ok(()), Err)
}

struct PartJob {
    path: std::path::PathBuf,
    offset: u64,
    len: u64,
    keys: PartKeys,
}

impl PartJob {
    /// Reads and encrypts the part on a blocking thread and streams each
    /// sealed chunk to both target nodes.
    async fn run(self, targets: Vec<Session>, progress: ProgressRef) -> Result<(), OpError> {
        let blob_len = part_blob_len(self.len);
        let mut uploads = Vec::new();
        for s in &targets {
            let mut up = s
                .put(&self.keys.id, blob_len)
                .await
                .map_err(|source| OpError::Node {
                    node: s.name.clone(),
                    source,
                })?;
            up.write(&PART_HEADER)
                .await
                .map_err(|source| OpError::Node {
                    node: s.name.clone(),
                    source,
                })?;
            uploads.push(up);
        }
        let shown = self.path.clone();
        let (tx, mut rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(PIPELINE_DEPTH);
        let PartJob {
            path,
            offset,
            len,
            keys,
        } = self;
        let reader = tokio::task::spawn_blocking(move || {
            let send = |r| tx.blocking_send(r).is_ok();
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    send(Err(e));
                    return;
                }
            };
            let mut enc = Encryptor::new(&keys.key, &keys.ad);
            let mut done = 0u64;
            loop {
                let n = ((len - done) as usize).min(CHUNK_LEN);
                let last = done + n as u64 == len;
                let mut buf = vec![0u8; n];
                if let Err(e) = file.read_exact_at(&mut buf, offset + done) {
                    send(Err(e));
                    return;
                }
                if enc.seal_chunk(&mut buf, last).is_err() {
                    send(Err(std::io::Error::other("encryption failed")));
                    return;
                }
                done += n as u64;
                progress.advance(n as u64);
                if !send(Ok(buf)) || last {
                    return;
                }
            }
        });
        let node_err = |i: usize, source: NetError| OpError::Node {
            node: targets[i].name.clone(),
            source,
        };
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|e| OpError::Io {
                path: shown.clone(),
                source: e,
            })?;
            match uploads.as_mut_slice() {
                [a] => a.write(&chunk).await.map_err(|e| node_err(0, e))?,
                [a, b] => {
                    let (ra, rb) = tokio::join!(a.write(&chunk), b.write(&chunk));
                    ra.map_err(|e| node_err(0, e))?;
                    rb.map_err(|e| node_err(1, e))?;
                }
                _ => unreachable!("a part has one or two reachable holders"),
            }
        }
        let _ = reader.await;
        let mut it = uploads.into_iter();
        match (it.next(), it.next()) {
            (Some(a), None) => a.finish().await.map_err(|e| node_err(0, e))?,
            (Some(a), Some(b)) => {
                let (ra, rb) = tokio::join!(a.finish(), b.finish());
                ra.map_err(|e| node_err(0, e))?;
                rb.map_err(|e| node_err(1, e))?;
            }
            _ => unreachable!("a part has one or two reachable holders"),
        }
        Ok(())
    }
}

/// The error of a writer whose version lost to another client's.
pub(crate) fn conflict(name: &str, winner: &Manifest) -> OpError {
    let what = if winner.deleted {
        "deleted it"
    } else {
        "stored another version"
    };
    OpError::Conflict(format!(
        "{name}: another client {what} at the same moment (now version {}); this one was not kept: run the command again to store it on top",
        winner.version
    ))
}
