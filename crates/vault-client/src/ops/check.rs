//! CHECK: is every file where the layout says, on every node?
//!
//! A survey reads the catalog (every manifest, many per round trip), asks
//! every node which part copies it holds (`StatBlobs`, right length), and
//! with `verify` downloads and authenticates every copy (small ones in
//! batches, large ones streamed), so bit rot and tampering are found. Each
//! file gets a state per manifest copy and per part copy. With no prefix it
//! also lists every node's parts to find the ones no manifest references
//! (orphans: a client killed during PUT, a node that finished an upload
//! after its client died).
//!
//! A copy is *unknown* when its node could not say: the node is down, or
//! its listing (or `StatBlobs` answer) failed, timed out or was cut short
//! before that id. Unknown is never missing: a node that was not heard is
//! never judged, and repair never writes to it.
//!
//! A file is *degraded* when any copy is not good (missing, corrupt,
//! stale, or unknown), *unreachable* when some part has no good copy but
//! one on a node that could not say, and *lost* when some part has no good
//! copy and every node that should hold one answered that it does not (or
//! holds a corrupt one). [`crate::ops::repair`] works from the same survey.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use wire::{BlobId, MAX_BATCH};

use super::part_stream::{PartError, PartReader, ReadOptions};
use super::{OpError, ProgressRef};
use crate::catalog::{self, Entry};
use crate::crypto::format::{
    part_blob_len, HEADER_LEN, PART_HEADER, PART_ID_PREFIX, SHARD_ID_PREFIX,
};
use crate::crypto::stream::open_all;
use crate::layout::{self, Copy};
use crate::manifest::Manifest;
use crate::net::{BatchLimit, Session};
use crate::path::normalize_prefix;
use crate::vault::Vault;

/// Parts up to this size are verified in batches; larger ones streamed.
const BATCH_PART: u64 = 4 << 20;
/// Most blobs and bytes per verifying `GetBlobs`.
const VERIFY_BATCH: BatchLimit = BatchLimit::new(MAX_BATCH, 16 << 20);

/// The state of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyState {
    /// Where it belongs, the right size (and, verified, authentic).
    Good,
    /// Not on its node (or the wrong size).
    Missing,
    /// On its node, but it fails authentication.
    Corrupt,
    /// A manifest copy of an older version.
    Stale,
    /// Its node could not be asked, or its answer (a listing cut short)
    /// did not reach this copy: it may be there, in any version.
    Unknown,
}

/// What the survey found for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileHealth {
    /// The file's name.
    pub name: String,
    /// A deleted file (its tombstone still belongs on every node).
    pub deleted: bool,
    /// Each manifest copy: (node, state).
    pub manifests: Vec<(usize, CopyState)>,
    /// Each part copy: (part, node, state); empty for a deleted file. For
    /// an erasure-coded file, each shard: (shard, node, state), a shard on
    /// a node no longer in dfc.conf left out (it counts as missing).
    pub parts: Vec<(usize, usize, CopyState)>,
    /// For an erasure-coded file, K: the shards that rebuild it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards_needed: Option<usize>,
    /// For an erasure-coded file, shards its manifest puts on nodes no
    /// longer in dfc.conf: not counted as good; `repair --rebalance` moves
    /// them.
    #[serde(skip_serializing_if = "is_zero")]
    pub shards_elsewhere: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl FileHealth {
    /// Some copy is not good.
    pub fn degraded(&self) -> bool {
        self.shards_elsewhere > 0
            || self.manifests.iter().any(|(_, s)| *s != CopyState::Good)
            || self.parts.iter().any(|(_, _, s)| *s != CopyState::Good)
    }

    /// Some part has no good copy, and every node that should hold one
    /// answered (none is unknown): the evidence says it is gone.
    pub fn lost(&self) -> bool {
        if let Some((good, unknown, k)) = self.shard_counts() {
            return good + unknown < k;
        }
        self.short_parts().any(|k| {
            !self
                .parts
                .iter()
                .any(|(p, _, s)| *p == k && *s == CopyState::Unknown)
        })
    }

    /// Not [`FileHealth::lost`], but some part has no good copy and a copy
    /// on a node that could not say (down, or its answer cut short): it
    /// cannot be rebuilt now, and may be whole once that node answers.
    pub fn unreachable(&self) -> bool {
        if let Some((good, unknown, k)) = self.shard_counts() {
            return good < k && good + unknown >= k;
        }
        !self.lost() && self.short_parts().next().is_some()
    }

    /// An erasure-coded live file's good and unknown shards, and K.
    fn shard_counts(&self) -> Option<(usize, usize, usize)> {
        let k = self.shards_needed.filter(|_| !self.deleted)?;
        let count = |state| self.parts.iter().filter(|(_, _, s)| *s == state).count();
        Some((count(CopyState::Good), count(CopyState::Unknown), k))
    }

    /// The nodes whose copies are unknown, sorted, each once.
    pub fn unknown_on(&self) -> Vec<usize> {
        let mut nodes: Vec<usize> = self
            .manifests
            .iter()
            .copied()
            .chain(self.parts.iter().map(|&(_, n, s)| (n, s)))
            .filter(|(_, s)| *s == CopyState::Unknown)
            .map(|(n, _)| n)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The parts (of a live file) without a good copy.
    fn short_parts(&self) -> impl Iterator<Item = usize> + '_ {
        (0..if self.deleted { 0 } else { layout::parts() }).filter(|&k| {
            !self
                .parts
                .iter()
                .any(|(p, _, s)| *p == k && *s == CopyState::Good)
        })
    }
}

/// A stored part no live manifest references.
#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    /// Node holding it.
    pub node: usize,
    /// Its id.
    pub id: String,
    /// Its size.
    pub len: u64,
    /// Its modification time, seconds since the Unix epoch.
    pub modified: u64,
}

/// A survey of the vault (or of a prefix).
#[derive(Debug, Default)]
pub struct Survey {
    /// Every file under the prefix, tombstones included, by name.
    pub files: Vec<FileHealth>,
    /// The catalog entries the files come from (same order).
    pub entries: Vec<Entry>,
    /// Orphaned parts (only when the whole vault was surveyed).
    pub orphans: Vec<Orphan>,
    /// Whether orphans were looked for (no prefix, every node listed).
    pub orphans_checked: bool,
    /// Bytes downloaded and authenticated.
    pub verified_bytes: u64,
    /// Nodes (bit i = node i) whose manifest listing ran to its end.
    pub complete: u32,
    /// When the manifests were read (seconds since the Unix epoch): a part
    /// is an orphan only if no manifest read then refers to it, so only
    /// parts older than that by the grace period may go.
    pub taken_at: u64,
    /// `node: problem` for nodes that could not be asked everything.
    pub problems: Vec<String>,
}

impl Survey {
    /// Files with some copy not good.
    pub fn degraded(&self) -> usize {
        self.files.iter().filter(|f| f.degraded()).count()
    }

    /// Files lost: some part has no good copy on any node that answered,
    /// and no node that could not say might hold one.
    pub fn lost(&self) -> usize {
        self.files.iter().filter(|f| f.lost()).count()
    }

    /// Files that cannot be rebuilt now, but only because a node that
    /// should hold a copy could not say ([`FileHealth::unreachable`]).
    pub fn unreachable(&self) -> usize {
        self.files.iter().filter(|f| f.unreachable()).count()
    }

    /// 0: fully redundant; 1: degraded (some copy missing, stale, corrupt
    /// or unknown) but every file can be rebuilt; 2: some file is lost or
    /// unreachable (cannot be rebuilt from the nodes that answered).
    pub fn exit_code(&self) -> i32 {
        if self.lost() > 0 || self.unreachable() > 0 {
            2
        } else if self.degraded() > 0 || !self.problems.is_empty() {
            1
        } else {
            0
        }
    }
}

/// Surveys the files under `prefix` ("" for the whole vault). With
/// `verify`, every part copy found is downloaded and authenticated;
/// `progress` advances by the bytes verified.
pub async fn survey(
    vault: &Vault,
    prefix: &str,
    verify: bool,
    progress: ProgressRef,
) -> Result<Survey, OpError> {
    let prefix = normalize_prefix(prefix).map_err(|e| OpError::BadName(e.to_string()))?;
    let taken_at = super::unix_now();
    let catalog = catalog::scan(vault, &prefix).await;
    let mut out = Survey {
        taken_at,
        problems: catalog.problems.clone(),
        complete: catalog.complete,
        ..Survey::default()
    };
    let n = vault.node_count();
    let live: Vec<&Manifest> = catalog.live().collect();
    let presence = catalog::presence(vault, &live, true).await;
    out.problems.extend(presence.problems.iter().cloned());

    let mut live_index = 0usize;
    for e in &catalog.entries {
        let manifests = layout::manifest_nodes(n)
            .map(|node| (node, manifest_state(vault, e, node)))
            .collect();
        let mut parts = Vec::new();
        let mut shards_needed = None;
        let mut shards_elsewhere = 0;
        if let Some(m) = e.live() {
            let bits = presence.parts[live_index];
            live_index += 1;
            if let Some(layout) = &m.shards {
                shards_needed = Some(layout.scheme.data());
                let held = presence.shards[live_index - 1].clone().unwrap_or_default();
                for (i, name) in layout.nodes.iter().enumerate() {
                    let Some(node) = vault.node_index(name) else {
                        shards_elsewhere += 1;
                        continue;
                    };
                    let state = match held.get(i).copied().flatten() {
                        Some(true) => CopyState::Good,
                        Some(false) => CopyState::Missing,
                        None => CopyState::Unknown,
                    };
                    parts.push((i, node, state));
                }
            }
            for Copy { part, node } in layout::part_copies(m)
                .into_iter()
                .filter(|_| m.shards.is_none())
            {
                let state = if bits[part] & (1 << node) != 0 {
                    CopyState::Good
                } else if vault.session(node).is_none() || presence.failed & (1 << node) != 0 {
                    CopyState::Unknown
                } else {
                    CopyState::Missing
                };
                parts.push((part, node, state));
            }
        }
        out.files.push(FileHealth {
            name: e.newest.name.clone(),
            deleted: e.newest.deleted,
            manifests,
            parts,
            shards_needed,
            shards_elsewhere,
        });
    }
    out.entries = catalog.entries;
    if verify {
        verify_all(vault, &mut out, &progress).await;
    }
    // Orphans only from a whole, clean survey: every node up, every
    // manifest listing run to its end, every presence question answered.
    // A manifest a cut listing left out must not make its parts look
    // unreferenced.
    let all = (1u32 << n) - 1;
    if prefix.is_empty()
        && vault.ready().count() == n
        && out.complete == all
        && presence.failed == 0
        && out.problems.is_empty()
    {
        match orphans(vault, &out.entries).await {
            Ok(o) => {
                out.orphans = o;
                out.orphans_checked = true;
            }
            Err(e) => out.problems.push(e),
        }
    }
    out.problems.sort();
    out.problems.dedup();
    Ok(out)
}

/// The state of `e`'s manifest copy on `node`: unknown unless the node's
/// answer covered the id ([`Entry::known_on`]).
fn manifest_state(vault: &Vault, e: &Entry, node: usize) -> CopyState {
    let bit = 1u32 << node;
    if vault.session(node).is_none() {
        CopyState::Unknown
    } else if e.current_on & bit != 0 {
        CopyState::Good
    } else if let Some(c) = e.copy_on(node) {
        if c.manifest.is_some() {
            CopyState::Stale
        } else {
            CopyState::Corrupt
        }
    } else if e.known_on & bit != 0 {
        CopyState::Missing
    } else {
        CopyState::Unknown
    }
}

/// Downloads and authenticates every copy the survey found good; marks
/// the ones that fail `Corrupt`.
async fn verify_all(vault: &Vault, survey: &mut Survey, progress: &ProgressRef) {
    // (file, index into its parts) per node, small and large apart.
    let mut small: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    let mut large: Vec<(usize, usize)> = Vec::new();
    let mut coded: Vec<(usize, usize)> = Vec::new();
    for (f, h) in survey.files.iter().enumerate() {
        let Some(m) = survey.entries[f].live() else {
            continue;
        };
        for (i, &(part, node, state)) in h.parts.iter().enumerate() {
            if state != CopyState::Good {
                continue;
            }
            if m.shards.is_some() {
                coded.push((f, i));
            } else if m.parts()[part].1 <= BATCH_PART {
                small.entry(node).or_default().push((f, i));
            } else {
                large.push((f, i));
            }
        }
    }
    let total: u64 = small
        .values()
        .flatten()
        .chain(&large)
        .map(|&(f, i)| survey.entries[f].newest.parts()[survey.files[f].parts[i].0].1)
        .sum();
    progress.set_total(total);
    let mut bad: Vec<(usize, usize, CopyState)> = Vec::new();
    let mut set = JoinSet::new();
    for (node, list) in small {
        let Some(s) = vault.session(node).cloned() else {
            continue;
        };
        let jobs: Vec<(usize, usize, BlobId, Manifest, usize)> = list
            .into_iter()
            .map(|(f, i)| {
                let m = survey.entries[f].newest.clone();
                let part = survey.files[f].parts[i].0;
                (f, i, vault.master().part_id(&m.file_id, part), m, part)
            })
            .collect();
        let (v, progress) = (vault.clone(), progress.clone());
        set.spawn(async move { verify_small(&v, &s, jobs, &progress).await });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((mut b, bytes, problem)) => {
                bad.append(&mut b);
                survey.verified_bytes += bytes;
                survey.problems.extend(problem);
            }
            Err(e) => survey.problems.push(format!("verify task failed: {e}")),
        }
    }
    for (f, i) in large {
        let (part, node, _) = survey.files[f].parts[i];
        let Some(s) = vault.session(node) else {
            continue;
        };
        let m = &survey.entries[f].newest;
        match authenticate_stream(vault, s, m, part, progress).await {
            Ok(bytes) => survey.verified_bytes += bytes,
            Err(e) => {
                let state = judged(&e).unwrap_or_else(|| {
                    survey.problems.push(format!("{}: {e}", s.name));
                    CopyState::Unknown
                });
                bad.push((f, i, state));
            }
        }
    }
    for (f, i) in coded {
        let (shard, node, _) = survey.files[f].parts[i];
        let Some(s) = vault.session(node) else {
            continue;
        };
        let m = &survey.entries[f].newest;
        let Some(layout) = &m.shards else { continue };
        match super::shards::verify(vault, s, m, layout, shard, progress).await {
            Ok(bytes) => survey.verified_bytes += bytes,
            Err(e) => {
                let state = super::shards::judged(&e).unwrap_or_else(|| {
                    survey.problems.push(format!("{}: {e}", s.name));
                    CopyState::Unknown
                });
                bad.push((f, i, state));
            }
        }
    }
    for (f, i, state) in bad {
        survey.files[f].parts[i].2 = state;
    }
}

/// A copy's state, if reading it proved it bad (rather than the
/// connection failing, which proves nothing about the copy).
pub(crate) fn judged(e: &PartError) -> Option<CopyState> {
    match e {
        PartError::Missing => Some(CopyState::Missing),
        PartError::WrongSize | PartError::NotFormat2 | PartError::Auth => Some(CopyState::Corrupt),
        PartError::Silent(_) | PartError::Net(_) => None,
    }
}

/// Verifies small copies on one node in batches: the (file, index) pairs
/// found not good and their state, the bytes authenticated, and why the
/// node could not be asked about the rest (left `Unknown`).
async fn verify_small(
    vault: &Vault,
    s: &Session,
    jobs: Vec<(usize, usize, BlobId, Manifest, usize)>,
    progress: &ProgressRef,
) -> (Vec<(usize, usize, CopyState)>, u64, Option<String>) {
    let mut bad = Vec::new();
    let mut bytes = 0u64;
    let len = |j: &(usize, usize, BlobId, Manifest, usize)| part_blob_len(j.3.parts()[j.4].1);
    for range in VERIFY_BATCH.split(&jobs, len) {
        let chunk = &jobs[range.clone()];
        let size: u64 = chunk.iter().map(len).sum();
        let ids: Vec<BlobId> = chunk.iter().map(|j| j.2.clone()).collect();
        let got = match s.get_blobs(&ids, size).await {
            Ok(got) => got,
            Err(e) => {
                bad.extend(
                    jobs[range.start..]
                        .iter()
                        .map(|j| (j.0, j.1, CopyState::Unknown)),
                );
                return (bad, bytes, Some(format!("{}: {e}", s.name)));
            }
        };
        for ((f, i, _, m, part), blob) in chunk.iter().zip(got) {
            match blob {
                Some(b) if open_part(vault, m, *part, &b).is_ok() => {
                    let n = m.parts()[*part].1;
                    bytes += n;
                    progress.advance(n);
                }
                Some(_) => bad.push((*f, *i, CopyState::Corrupt)),
                None => bad.push((*f, *i, CopyState::Missing)),
            }
        }
    }
    (bad, bytes, None)
}

/// Checks a part blob's header and opens it; the plaintext must have the
/// length the manifest gives.
pub(crate) fn open_part(vault: &Vault, m: &Manifest, k: usize, blob: &[u8]) -> Result<Vec<u8>, ()> {
    if blob.get(..HEADER_LEN) != Some(&PART_HEADER[..]) {
        return Err(());
    }
    let keys = vault.master().part(vault.user(), &m.file_id, m.version, k);
    let plain = open_all(&keys.key, &keys.ad, &blob[HEADER_LEN..]).map_err(|_| ())?;
    if plain.len() as u64 != m.parts()[k].1 {
        return Err(());
    }
    Ok(plain)
}

/// Streams one copy of part `k` of `m` from `s` and authenticates it,
/// keeping nothing: the plaintext bytes it held.
async fn authenticate_stream(
    vault: &Vault,
    s: &Session,
    m: &Manifest,
    k: usize,
    progress: &ProgressRef,
) -> Result<u64, PartError> {
    let keys = vault.master().part(vault.user(), &m.file_id, m.version, k);
    let mut part = PartReader::open(s, &keys, m.parts()[k].1, ReadOptions::default()).await?;
    let mut plain = 0u64;
    while let Some(chunk) = part.next().await? {
        plain += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
    }
    Ok(plain)
}

/// Every node's parts that no manifest copy references: no version of
/// any file, on any node, newest or not.
async fn orphans(vault: &Vault, entries: &[Entry]) -> Result<Vec<Orphan>, String> {
    let mut referenced: HashSet<BlobId> = HashSet::new();
    let mut shards_on: HashSet<(usize, BlobId)> = HashSet::new();
    for e in entries {
        let copies = e.copies.iter().filter_map(|c| c.manifest.as_ref());
        for m in e.versions().chain(copies) {
            if m.deleted {
                continue;
            }
            if let Some(l) = &m.shards {
                // A shard id is the same on every node (rebalanced
                // versions share their data): it is referenced only on
                // the node a manifest names for it.
                let ids = vault
                    .master()
                    .sharded(vault.user(), &l.data_id, l.scheme.shards())
                    .ids;
                for (name, id) in l.nodes.iter().zip(ids) {
                    if let Some(node) = vault.node_index(name) {
                        shards_on.insert((node, id));
                    }
                }
                continue;
            }
            for k in 0..layout::parts() {
                referenced.insert(vault.master().part_id(&m.file_id, k));
            }
        }
    }
    let referenced = std::sync::Arc::new((referenced, shards_on));
    let mut set = JoinSet::new();
    for s in vault.ready() {
        let (s, referenced) = (s.clone(), referenced.clone());
        set.spawn(async move {
            let mut found = Vec::new();
            let mut after: Option<BlobId> = None;
            let limits = s.limits();
            let deadline = tokio::time::Instant::now() + limits.listing;
            let mut seen = 0usize;
            // Parts of classic files, then shards of erasure-coded ones.
            let mut prefixes = [PART_ID_PREFIX, SHARD_ID_PREFIX].into_iter();
            let mut prefix = prefixes.next().expect("two prefixes");
            loop {
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("{}: listing its parts took too long", s.name));
                }
                let page = s
                    .list_data(after.as_ref(), prefix, MAX_BATCH as u32, 1, 0)
                    .await
                    .map_err(|e| format!("{}: {e}", s.name))?;
                seen += page.entries.len();
                if seen > limits.listing_entries {
                    return Err(format!("{}: too many parts to list", s.name));
                }
                after = page.entries.last().map(|(e, _)| e.id.clone());
                for (e, _) in page.entries {
                    let (parts, shards) = &*referenced;
                    let used = if prefix == SHARD_ID_PREFIX {
                        shards.contains(&(s.node, e.id.clone()))
                    } else {
                        parts.contains(&e.id)
                    };
                    if !used {
                        found.push(Orphan {
                            node: s.node,
                            id: e.id.to_string(),
                            len: e.len,
                            modified: e.modified,
                        });
                    }
                }
                if !page.more {
                    match prefixes.next() {
                        Some(next) => {
                            prefix = next;
                            after = None;
                        }
                        None => return Ok(found),
                    }
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(mut o)) => all.append(&mut o),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("orphan listing failed: {e}")),
        }
    }
    all.sort_by(|a, b| (a.node, &a.id).cmp(&(b.node, &b.id)));
    Ok(all)
}

/// Orphans written at least `grace` before `at` (seconds since the Unix
/// epoch; repair passes [`Survey::taken_at`]).
pub fn expired(orphans: &[Orphan], grace: Duration, at: u64) -> Vec<&Orphan> {
    orphans
        .iter()
        .filter(|o| o.modified.saturating_add(grace.as_secs()) <= at)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use CopyState::*;

    fn file(parts: &[(usize, usize, CopyState)]) -> FileHealth {
        FileHealth {
            name: "f".into(),
            deleted: false,
            manifests: vec![(0, Good), (1, Unknown), (2, Good), (3, Good)],
            parts: parts.to_vec(),
            shards_needed: None,
            shards_elsewhere: 0,
        }
    }

    /// Both copies of every part good, but part 1's copies as given.
    fn with_part1(a: CopyState, b: CopyState) -> FileHealth {
        let mut parts = vec![(0, 0, a), (0, 1, b)];
        for k in 1..4 {
            parts.push((k, k, Good));
            parts.push((k, (k + 1) % 4, Good));
        }
        file(&parts)
    }

    #[test]
    fn unknown_copies_make_a_file_unreachable_or_degraded_never_lost() {
        let f = with_part1(Unknown, Missing);
        assert!(!f.lost() && f.unreachable() && f.degraded());
        assert_eq!(f.unknown_on(), [0, 1]);
        let f = with_part1(Missing, Corrupt);
        assert!(f.lost() && !f.unreachable());
        let f = with_part1(Good, Unknown);
        assert!(!f.lost() && !f.unreachable() && f.degraded());
        let survey = Survey {
            files: vec![with_part1(Unknown, Missing)],
            ..Survey::default()
        };
        assert_eq!((survey.lost(), survey.unreachable()), (0, 1));
        assert_eq!(survey.exit_code(), 2, "cannot be rebuilt now");
        let survey = Survey {
            files: vec![with_part1(Good, Unknown)],
            ..Survey::default()
        };
        assert_eq!(survey.exit_code(), 1);
    }
}
