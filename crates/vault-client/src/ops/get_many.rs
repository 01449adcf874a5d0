//! GET of a whole tree (`get -r PREFIX`): every live file under the prefix,
//! recreated below a local folder.
//!
//! The files come from one catalog scan. Small files (up to
//! [`super::put_many::SMALL_FILE`]) are fetched in batches: each part is
//! read from one of its two holders (the less loaded one), all of a node's
//! parts of the batch in one `GetBlobs`; a copy that is missing or fails
//! authentication is read again from the other holder. A file is written to
//! a temporary name beside its place and moved there only when all four
//! parts decrypted. Larger files stream through [`super::get`]. A few
//! batches are in flight at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wire::{BlobId, MAX_BATCH};

use super::check::open_part;
use super::get::get_version;
use super::put_many::SMALL_FILE;
use super::{NodeTasks, OpError, ProgressRef};
use crate::catalog;
use crate::fsutil::{write_many, NewFile};
use crate::manifest::Manifest;
use crate::net::BatchLimit;
use crate::path::{local_path, normalize_prefix};
use crate::placement::{nodes_for_part, PARTS};
use crate::vault::Vault;

/// Most files, and plaintext bytes, in one batch.
const BATCH: BatchLimit = BatchLimit::new(128, 8 << 20);
/// Batches in flight at once.
const IN_FLIGHT: usize = 3;

/// What a GET of a tree did, file by file (by name).
#[derive(Debug, Default)]
pub struct GetSummary {
    /// Each file: its name, where it goes, and its size or why it failed.
    pub files: Vec<(String, PathBuf, Result<u64, OpError>)>,
    /// `node: problem` for nodes whose listing could not be used.
    pub problems: Vec<String>,
    /// Set when fewer than a quorum of nodes could be listed and the
    /// caller allowed it: why the files may be old versions.
    pub stale: Option<String>,
}

impl GetSummary {
    /// Files written.
    pub fn written(&self) -> usize {
        self.files.iter().filter(|(_, _, r)| r.is_ok()).count()
    }

    /// Files not written.
    pub fn failed(&self) -> usize {
        self.files.len() - self.written()
    }
}

/// Fetches every live file under `prefix` into `dir`: `photos/2024/a.jpg`
/// with prefix `photos` goes to `dir/photos/2024/a.jpg`. Existing files are
/// replaced only with `replace`. `progress` is told the total of the
/// files to fetch, then advances by each file's size.
///
/// Refuses ([`OpError::NoQuorum`]) unless a majority of the manifest
/// holders could be listed whole.
pub async fn get_tree(
    vault: &Vault,
    prefix: &str,
    dir: &Path,
    replace: bool,
    progress: ProgressRef,
) -> Result<GetSummary, OpError> {
    get_tree_with(vault, prefix, dir, replace, progress, false).await
}

/// [`get_tree`] that, with `allow_stale`, goes on with fewer nodes than a
/// quorum and says so in [`GetSummary::stale`].
pub async fn get_tree_with(
    vault: &Vault,
    prefix: &str,
    dir: &Path,
    replace: bool,
    progress: ProgressRef,
    allow_stale: bool,
) -> Result<GetSummary, OpError> {
    let prefix = normalize_prefix(prefix).map_err(|e| OpError::BadName(e.to_string()))?;
    let catalog = catalog::scan_light(vault, &prefix).await;
    let answered = super::catalog_answered(vault, &catalog);
    let stale = super::check_quorum(vault, answered, &catalog.problems, allow_stale)?;
    let mut summary = GetSummary {
        problems: catalog.problems.clone(),
        stale,
        ..GetSummary::default()
    };
    // Folder markers (empty S3 buckets) are not files to write.
    let files: Vec<Manifest> = catalog.live().filter(|m| !m.is_folder()).cloned().collect();
    if files.is_empty() {
        return Err(OpError::NotFound(if prefix.is_empty() {
            "(the vault is empty)".into()
        } else {
            prefix
        }));
    }
    // Partial downloads an interrupted GET left in the folders written to.
    let folders: std::collections::BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|m| local_path(dir, &prefix, &m.name).ok())
        .map(|t| crate::fsutil::parent_dir(&t))
        .collect();
    for folder in &folders {
        crate::fsutil::sweep_partials(folder);
    }
    let mut small: Vec<(usize, Manifest, PathBuf)> = Vec::new();
    let mut large: Vec<(usize, Manifest, PathBuf)> = Vec::new();
    let mut results: Vec<Option<Result<u64, OpError>>> = Vec::new();
    for (i, m) in files.iter().enumerate() {
        results.push(None);
        let target = match local_path(dir, &prefix, &m.name) {
            Ok(t) => t,
            Err(e) => {
                results[i] = Some(Err(OpError::BadName(e.to_string())));
                continue;
            }
        };
        if !replace && target.exists() {
            results[i] = Some(Err(OpError::Exists(target)));
            continue;
        }
        // Erasure-coded files stream one by one; batches are the classic
        // layout's, for now.
        if m.size <= SMALL_FILE && m.shards.is_none() {
            small.push((i, m.clone(), target));
        } else {
            large.push((i, m.clone(), target));
        }
    }

    progress.set_total(small.iter().chain(&large).map(|(_, m, _)| m.size).sum());
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut set = JoinSet::new();
    for batch in batches(small) {
        let permit = limit.clone().acquire_owned().await.expect("never closed");
        let (vault, progress) = (vault.clone(), progress.clone());
        set.spawn(async move {
            let _permit = permit;
            fetch_batch(&vault, batch, replace, &progress).await
        });
        while let Some(done) = set.try_join_next() {
            collect(done, &mut results);
        }
    }
    while let Some(done) = set.join_next().await {
        collect(done, &mut results);
    }
    for (i, m, target) in large {
        if let Some(parent) = target.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                results[i] = Some(Err(OpError::Io {
                    path: parent.to_path_buf(),
                    source: e,
                }));
                continue;
            }
        }
        let r = get_version(vault, &m, &target, replace, progress.clone()).await;
        results[i] = Some(r.map(|r| r.size));
    }

    for ((m, r), i) in files.into_iter().zip(results).zip(0..) {
        let target = local_path(dir, &prefix, &m.name).unwrap_or_default();
        let r = r.unwrap_or_else(|| {
            Err(OpError::Unavailable(format!(
                "file {i} was not fetched (its batch failed)"
            )))
        });
        summary.files.push((m.name, target, r));
    }
    Ok(summary)
}

/// One file's result: its size, or why it was not written.
type FileResult = Result<u64, OpError>;

fn collect(
    done: Result<Vec<(usize, FileResult)>, tokio::task::JoinError>,
    results: &mut [Option<FileResult>],
) {
    match done {
        Ok(rs) => {
            for (i, r) in rs {
                results[i] = Some(r);
            }
        }
        Err(e) => tracing::warn!("a batch task failed: {e}"),
    }
}

fn batches(files: Vec<(usize, Manifest, PathBuf)>) -> Vec<Vec<(usize, Manifest, PathBuf)>> {
    let ranges: Vec<_> = BATCH.split(&files, |f| f.1.size).collect();
    let mut files = files.into_iter();
    ranges
        .into_iter()
        .map(|r| files.by_ref().take(r.len()).collect())
        .collect()
}

/// Reads `ids` from `node` (in requests of at most [`MAX_BATCH`]).
async fn get_all(
    vault: &Vault,
    node: usize,
    ids: Vec<(BlobId, u64)>,
) -> Result<Vec<Option<Vec<u8>>>, String> {
    let s = vault
        .session(node)
        .ok_or_else(|| format!("{}: {}", vault.node_name(node), vault.why_unusable(node)))?;
    let (ids, lens): (Vec<BlobId>, Vec<u64>) = ids.into_iter().unzip();
    s.get_blobs_batched(&ids, MAX_BATCH, |r| lens[r].iter().sum())
        .await
        .map_err(|e| format!("{}: {e}", s.name))
}

/// Fetches one batch of small files and writes them.
async fn fetch_batch(
    vault: &Vault,
    batch: Vec<(usize, Manifest, PathBuf)>,
    replace: bool,
    progress: &ProgressRef,
) -> Vec<(usize, Result<u64, OpError>)> {
    // parts[f][k]: the plaintext once a copy opened.
    let mut parts: Vec<[Option<Vec<u8>>; PARTS]> = vec![Default::default(); batch.len()];
    let mut why: Vec<Vec<String>> = vec![Vec::new(); batch.len()];
    // The node each part was asked of in the first round.
    let mut first: Vec<[Option<usize>; PARTS]> = vec![[None; PARTS]; batch.len()];
    for round in 0..2 {
        // Which node to ask for each missing part: in the first round the
        // less loaded reachable holder, in the second the other one.
        let mut load: HashMap<usize, u64> = HashMap::new();
        let mut asks: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for (f, (_, m, _)) in batch.iter().enumerate() {
            for (k, (_, len)) in m.parts().into_iter().enumerate() {
                if parts[f][k].is_some() {
                    continue;
                }
                let holders: Vec<usize> = nodes_for_part(m.placement(), k)
                    .into_iter()
                    .filter(|&n| vault.session(n).is_some())
                    .collect();
                let node = if round == 0 {
                    match holders.as_slice() {
                        [] => continue,
                        [a] => *a,
                        [a, b, ..] => {
                            if load.get(a).unwrap_or(&0) <= load.get(b).unwrap_or(&0) {
                                *a
                            } else {
                                *b
                            }
                        }
                    }
                } else {
                    match holders.into_iter().find(|&n| Some(n) != first[f][k]) {
                        Some(n) => n,
                        None => continue,
                    }
                };
                if round == 0 {
                    first[f][k] = Some(node);
                }
                *load.entry(node).or_default() += len;
                asks.entry(node).or_default().push((f, k));
            }
        }
        if asks.is_empty() {
            break;
        }
        let mut set = NodeTasks::new();
        let mut asked: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for (node, list) in asks {
            let ids: Vec<(BlobId, u64)> = list
                .iter()
                .map(|&(f, k)| {
                    let m = &batch[f].1;
                    let len = crate::crypto::format::part_blob_len(m.parts()[k].1);
                    (vault.master().part_id(&m.file_id, k), len)
                })
                .collect();
            let v = vault.clone();
            asked.insert(node, list.clone());
            set.spawn(node, async move { get_all(&v, node, ids).await });
        }
        while let Some((node, joined)) = set.next(vault).await {
            let list = asked.remove(&node).unwrap_or_default();
            let got = joined.and_then(|r| r);
            match got {
                Ok(blobs) => {
                    for ((f, k), blob) in list.into_iter().zip(blobs) {
                        let m = &batch[f].1;
                        match blob.map(|b| open_part(vault, m, k, &b)) {
                            Some(Ok(plain)) => parts[f][k] = Some(plain),
                            Some(Err(())) => {
                                why[f].push(format!("{}: decryption failed", vault.node_name(node)))
                            }
                            None => why[f].push(format!("{}: part missing", vault.node_name(node))),
                        }
                    }
                }
                Err(e) => {
                    for (f, _) in list {
                        why[f].push(e.clone());
                    }
                }
            }
        }
    }
    let mut results = Vec::new();
    let mut writes = Vec::new();
    for (f, (i, m, target)) in batch.into_iter().enumerate() {
        if parts[f].iter().all(Option::is_some) {
            let mut data = Vec::with_capacity(m.size as usize);
            for p in parts[f].iter_mut() {
                data.append(p.as_mut().expect("checked"));
            }
            writes.push((i, m, target, data));
        } else {
            why[f].dedup();
            results.push((
                i,
                Err(OpError::Unavailable(format!(
                    "{}: cannot be read from the nodes holding its parts ({})",
                    m.name,
                    why[f].join("; ")
                ))),
            ));
        }
    }
    let written = tokio::task::spawn_blocking(move || {
        // Folders first, then every file of the batch made durable and
        // published together (fsutil::write_many).
        let mut ready = Vec::new();
        let mut out = Vec::new();
        for (i, m, target, data) in writes {
            match make_parent(&target) {
                Ok(()) => ready.push((i, m, target, data)),
                Err(e) => out.push((i, m.size, Err(e))),
            }
        }
        let files: Vec<NewFile<'_>> = ready
            .iter()
            .map(|(_, m, target, data)| NewFile {
                target,
                contents: data,
                mtime_ns: m.mtime_ns,
            })
            .collect();
        let results = write_many(&files, replace);
        for ((i, m, target, _), r) in ready.iter().zip(results) {
            out.push((*i, m.size, r.map_err(|e| write_error(target, e))));
        }
        out
    })
    .await
    .unwrap_or_default();
    for (i, size, r) in written {
        if r.is_ok() {
            progress.advance(size);
        }
        results.push((i, r.map(|()| size)));
    }
    results
}

/// Creates `target`'s folder if needed.
fn make_parent(target: &Path) -> Result<(), OpError> {
    match target.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| OpError::Io {
            path: parent.to_path_buf(),
            source: e,
        }),
        None => Ok(()),
    }
}

/// A failed write of `target`: `Exists` when it appeared meanwhile.
fn write_error(target: &Path, e: std::io::Error) -> OpError {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        OpError::Exists(target.to_path_buf())
    } else {
        OpError::Io {
            path: target.to_path_buf(),
            source: e,
        }
    }
}
