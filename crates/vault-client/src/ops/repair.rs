//! REPAIR: bring every file back to full redundancy, from the copies that
//! are good, re-encrypting nothing.
//!
//! From a [`check`] survey:
//! 1. nodes missing a file's newest manifest (or holding an older one or a
//!    corrupt one, or missing a tombstone) get the sealed bytes another
//!    node holds, by a conditional write: the node replaces only exactly
//!    the copy the survey saw there (or stores it only if it still has
//!    none), and never a copy that ranks as high ([`crate::ops::rank`]). A
//!    node whose answer did not cover the file (down, or its listing cut
//!    short) is unknown and never written to. A node that changed since
//!    the survey answers `Conflict`: it is skipped and reported, and the
//!    next repair sees it. So repair moves rolled-back nodes forward and
//!    never moves a node back;
//! 2. every missing or corrupt part copy is copied from the other copy of
//!    the same part, which is authenticated on the way (a bad source is
//!    never spread): small ones in batches (`GetBlobs` then `PutBlobs`),
//!    large ones streamed through a decryptor with bounded memory;
//! 3. with the whole vault surveyed, parts no live file references are
//!    removed once they are older than the grace period (so a PUT running
//!    elsewhere keeps its parts);
//! 4. a second survey says whether the vault is fully redundant now.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinSet;
use wire::{BlobId, ErrorCode, Expect, MAX_BATCH, MAX_BATCH_BYTES};

use super::check::{self, judged, open_part, CopyState, Survey};
use super::part_stream::{PartError, PartReader, ReadOptions};
use super::{no_progress, rank, OpError, ProgressRef};
use crate::crypto::format::{part_blob_len, PART_HEADER};
use crate::manifest::Manifest;
use crate::net::{BatchLimit, NetError, Session};
use crate::vault::Vault;

/// Parts up to this size are copied in batches; larger ones streamed.
const BATCH_PART: u64 = 4 << 20;
/// Most blobs and bytes per batch of copies.
const COPY_BATCH: BatchLimit = BatchLimit::new(MAX_BATCH, 16 << 20);

/// How REPAIR goes about it.
#[derive(Debug, Clone, Copy)]
pub struct RepairOptions {
    /// Authenticate every copy first (finds silent corruption).
    pub verify: bool,
    /// Orphans younger than this stay.
    pub grace: Duration,
    /// First move erasure-coded files' shards to where placement now
    /// wants them (after nodes were added or removed:
    /// [`super::rebalance`]).
    pub rebalance: bool,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            verify: false,
            grace: Duration::from_secs(3600),
            rebalance: false,
        }
    }
}

/// What REPAIR did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Part copies written.
    pub copies_restored: usize,
    /// Shards moved by a rebalance.
    pub shards_moved: usize,
    /// Manifest copies written (tombstones included).
    pub manifests_fixed: usize,
    /// Manifest copies not written because the node no longer held what
    /// the survey saw (`Conflict`), or holds a copy that cannot be
    /// replaced safely: `node: name: why`. Nothing is lost; the next
    /// repair looks again.
    pub skipped: Vec<String>,
    /// Orphaned parts removed.
    pub orphans_removed: usize,
    /// Bytes written to nodes.
    pub bytes_moved: u64,
    /// What could not be repaired, and why.
    pub failures: Vec<String>,
    /// The survey taken after the repair.
    pub after: Survey,
}

/// Repairs the files under `prefix` ("" for the whole vault, the only case
/// in which orphans are collected).
pub async fn repair(
    vault: &Vault,
    prefix: &str,
    options: RepairOptions,
    progress: ProgressRef,
) -> Result<RepairReport, OpError> {
    let mut report = RepairReport::default();
    if options.rebalance {
        let moved = super::rebalance::rebalance(vault, prefix, progress.clone()).await?;
        report.shards_moved = moved.shards_moved;
        report.bytes_moved += moved.bytes_moved;
        report.failures.extend(moved.failures);
    }
    let survey = check::survey(vault, prefix, options.verify, progress).await?;
    fix_manifests(vault, &survey, &mut report).await;
    let bad = fix_parts(vault, &survey, &mut report).await;
    if survey.orphans_checked {
        remove_orphans(vault, &survey, options.grace, &mut report).await;
    }
    report.after = check::survey(vault, prefix, false, no_progress()).await?;
    mark_bad(&mut report.after, &bad);
    Ok(report)
}

/// A source copy that failed while being copied: not there, or not
/// authentic.
struct BadCopy {
    file_id: Vec<u8>,
    version: u64,
    part: usize,
    node: usize,
    state: CopyState,
}

/// Marks the copies repair found bad in the survey taken after it (which
/// does not download anything): a file whose only copy of a part failed
/// authentication is reported lost, not merely degraded.
fn mark_bad(after: &mut Survey, bad: &[BadCopy]) {
    for b in bad {
        for (f, h) in after.files.iter_mut().enumerate() {
            let m = &after.entries[f].newest;
            if m.deleted || m.file_id != b.file_id || m.version != b.version {
                continue;
            }
            for (part, node, state) in &mut h.parts {
                if *part == b.part && *node == b.node && *state == CopyState::Good {
                    *state = b.state;
                }
            }
        }
    }
}

/// One manifest copy to write: the id, the name (for messages), what the
/// node must still hold, and the sealed bytes.
type ManifestWrite = (BlobId, String, Expect, Vec<u8>);

/// What to write to `node` for file `f`, if anything: `Err` says why a
/// copy that is not good must be left alone.
fn manifest_write(
    survey: &Survey,
    f: usize,
    node: usize,
    state: CopyState,
) -> Option<Result<ManifestWrite, String>> {
    if !matches!(
        state,
        CopyState::Missing | CopyState::Stale | CopyState::Corrupt
    ) {
        return None;
    }
    let e = &survey.entries[f];
    // The survey saw this node's answer for this id (a copy, or a listing
    // past it): never write on a node that was not heard.
    if e.known_on & (1 << node) == 0 {
        return None;
    }
    let newest = rank(&e.newest, e.holders(&e.newest));
    let expect = match e.copy_on(node) {
        None => Expect::Absent,
        Some(c) => {
            if let Some(m) = &c.manifest {
                if rank(m, e.holders(m)) >= newest {
                    return None;
                }
            }
            match c.hash {
                Some(h) => Expect::Hash(h.to_vec()),
                None => {
                    return Some(Err(
                        "its copy was listed without contents; not replaced".into()
                    ))
                }
            }
        }
    };
    Some(Ok((
        e.id.clone(),
        e.newest.name.clone(),
        expect,
        e.sealed.clone(),
    )))
}

async fn fix_manifests(vault: &Vault, survey: &Survey, report: &mut RepairReport) {
    let mut per_node: HashMap<usize, Vec<ManifestWrite>> = HashMap::new();
    for (f, h) in survey.files.iter().enumerate() {
        for &(node, state) in &h.manifests {
            match manifest_write(survey, f, node, state) {
                None => {}
                Some(Ok(w)) => per_node.entry(node).or_default().push(w),
                Some(Err(why)) => {
                    report
                        .skipped
                        .push(format!("{}: {}: {why}", vault.node_name(node), h.name))
                }
            }
        }
    }
    for (node, writes) in per_node {
        let Some(s) = vault.session(node) else {
            continue;
        };
        let items: Vec<(BlobId, &[u8], Option<Expect>)> = writes
            .iter()
            .map(|(id, _, expect, b)| (id.clone(), b.as_slice(), Some(expect.clone())))
            .collect();
        for batch in s.put_blobs_batched(&items, MAX_BATCH_BYTES).await {
            match batch.result {
                Ok(failed) => {
                    for ((_, name, _, b), f) in writes[batch.range].iter().zip(failed) {
                        match f {
                            None => {
                                report.manifests_fixed += 1;
                                report.bytes_moved += b.len() as u64;
                            }
                            Some(e) if e.is_code(ErrorCode::Conflict) => {
                                report.skipped.push(format!(
                                    "{}: {name}: changed since the survey; left as it is",
                                    s.name
                                ))
                            }
                            Some(e) => report
                                .failures
                                .push(format!("{}: manifest of {name}: {e}", s.name)),
                        }
                    }
                }
                Err(e) => report.failures.push(format!("{}: manifests: {e}", s.name)),
            }
        }
    }
}

/// One copy to restore: the file, the part, where from, where to.
#[derive(Clone)]
struct Job {
    manifest: Manifest,
    part: usize,
    from: usize,
    to: usize,
}

impl Job {
    /// The source copy, found in `state`.
    fn bad_source(&self, state: CopyState) -> BadCopy {
        BadCopy {
            file_id: self.manifest.file_id.clone(),
            version: self.manifest.version,
            part: self.part,
            node: self.from,
            state,
        }
    }
}

async fn fix_parts(vault: &Vault, survey: &Survey, report: &mut RepairReport) -> Vec<BadCopy> {
    let mut bad = Vec::new();
    let mut small: Vec<Job> = Vec::new();
    let mut large: Vec<Job> = Vec::new();
    // Erasure-coded files: per file, the shards to rebuild and where.
    let mut coded: std::collections::BTreeMap<usize, Vec<(usize, crate::net::Session)>> =
        Default::default();
    for (f, h) in survey.files.iter().enumerate() {
        let Some(m) = survey.entries[f].live() else {
            continue;
        };
        for &(part, to, state) in &h.parts {
            if !matches!(state, CopyState::Missing | CopyState::Corrupt) {
                continue;
            }
            if m.shards.is_some() {
                match vault.session(to).filter(|s| !s.is_closed()) {
                    Some(s) => coded.entry(f).or_default().push((part, s.clone())),
                    None => report.failures.push(format!(
                        "{}: shard {} cannot be rebuilt on {}: {}",
                        m.name,
                        part + 1,
                        vault.node_name(to),
                        vault.why_unusable(to)
                    )),
                }
                continue;
            }
            let from = h
                .parts
                .iter()
                .find(|(p, n, s)| *p == part && *n != to && *s == CopyState::Good)
                .map(|(_, n, _)| *n);
            let Some(from) = from else {
                report.failures.push(format!(
                    "{}: part {} has no good copy to restore from",
                    m.name,
                    part + 1
                ));
                continue;
            };
            let job = Job {
                manifest: m.clone(),
                part,
                from,
                to,
            };
            if m.parts()[part].1 <= BATCH_PART {
                small.push(job);
            } else {
                large.push(job);
            }
        }
    }
    // Shards: decoded from K others and coded again, one file at a time.
    for (f, targets) in coded {
        let h = &survey.files[f];
        let Some(m) = survey.entries[f].live() else {
            continue;
        };
        let Some(layout) = &m.shards else { continue };
        let good = h
            .parts
            .iter()
            .filter(|(_, _, s)| *s == CopyState::Good)
            .count();
        if good < layout.scheme.data() {
            report.failures.push(format!(
                "{}: only {good} of its {} shards are good and {} are needed: it cannot be rebuilt",
                m.name,
                layout.scheme.shards(),
                layout.scheme.data()
            ));
            continue;
        }
        let skip: Vec<usize> = targets.iter().map(|(i, _)| *i).collect();
        match super::shards::rebuild(vault, m, layout, &targets, &skip).await {
            Ok((bytes, sources)) => {
                report.copies_restored += targets.len();
                report.bytes_moved += bytes;
                bad.extend(sources.into_iter().filter_map(|i| {
                    let node = vault.node_index(layout.nodes.get(i)?)?;
                    Some(BadCopy {
                        file_id: m.file_id.clone(),
                        version: m.version,
                        part: i,
                        node,
                        state: CopyState::Corrupt,
                    })
                }));
            }
            Err(e) => report.failures.push(format!("{}: {e}", m.name)),
        }
    }
    // Small copies: batches per source node, within COPY_BATCH each.
    let mut by_source: HashMap<usize, Vec<Job>> = HashMap::new();
    for j in small {
        by_source.entry(j.from).or_default().push(j);
    }
    let mut set = JoinSet::new();
    for (from, jobs) in by_source {
        let v = vault.clone();
        set.spawn(async move { copy_small(&v, from, jobs).await });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((copies, bytes, mut failures, mut found)) => {
                report.copies_restored += copies;
                report.bytes_moved += bytes;
                report.failures.append(&mut failures);
                bad.append(&mut found);
            }
            Err(e) => report.failures.push(format!("copy task failed: {e}")),
        }
    }
    for j in large {
        match copy_stream(vault, &j).await {
            Ok(bytes) => {
                report.copies_restored += 1;
                report.bytes_moved += bytes;
            }
            Err((e, source)) => {
                report.failures.push(format!(
                    "{}: part {} to {}: {e}",
                    j.manifest.name,
                    j.part + 1,
                    vault.node_name(j.to)
                ));
                if let Some(state) = source {
                    bad.push(j.bad_source(state));
                }
            }
        }
    }
    bad
}

/// Copies small parts from node `from`: fetch in batches, authenticate,
/// then store on each destination in batches. Returns (copies, bytes,
/// failures, source copies found bad).
async fn copy_small(
    vault: &Vault,
    from: usize,
    jobs: Vec<Job>,
) -> (usize, u64, Vec<String>, Vec<BadCopy>) {
    let (mut copies, mut bytes, mut failures, mut bad) = (0usize, 0u64, Vec::new(), Vec::new());
    let Some(src) = vault.session(from).cloned() else {
        return (
            0,
            0,
            vec![format!(
                "{}: {}",
                vault.node_name(from),
                vault.why_unusable(from)
            )],
            bad,
        );
    };
    let len = |j: &Job| part_blob_len(j.manifest.parts()[j.part].1);
    for range in COPY_BATCH.split(&jobs, len) {
        let chunk = &jobs[range];
        let size: u64 = chunk.iter().map(len).sum();
        let ids: Vec<BlobId> = chunk
            .iter()
            .map(|j| vault.master().part_id(&j.manifest.file_id, j.part))
            .collect();
        let got = match src.get_blobs(&ids, size).await {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{}: {e}", src.name));
                continue;
            }
        };
        let mut to_write: HashMap<usize, Vec<(BlobId, Vec<u8>, String)>> = HashMap::new();
        for ((j, id), blob) in chunk.iter().zip(ids).zip(got) {
            match blob {
                Some(b) if open_part(vault, &j.manifest, j.part, &b).is_ok() => {
                    to_write
                        .entry(j.to)
                        .or_default()
                        .push((id, b, j.manifest.name.clone()));
                }
                found => {
                    failures.push(format!(
                        "{}: part {}: the copy on {} is not good either",
                        j.manifest.name,
                        j.part + 1,
                        src.name
                    ));
                    bad.push(j.bad_source(if found.is_some() {
                        CopyState::Corrupt
                    } else {
                        CopyState::Missing
                    }));
                }
            }
        }
        for (to, blobs) in to_write {
            let Some(dst) = vault.session(to) else {
                continue;
            };
            let items: Vec<(BlobId, &[u8], Option<Expect>)> = blobs
                .iter()
                .map(|(id, b, _)| (id.clone(), b.as_slice(), None))
                .collect();
            // One request: the blobs came in one batch, within its bounds.
            for batch in dst.put_blobs_batched(&items, MAX_BATCH_BYTES).await {
                match batch.result {
                    Ok(failed) => {
                        for ((_, b, name), f) in blobs[batch.range].iter().zip(failed) {
                            match f {
                                Some(e) => failures.push(format!("{name}: to {}: {e}", dst.name)),
                                None => {
                                    copies += 1;
                                    bytes += b.len() as u64;
                                }
                            }
                        }
                    }
                    Err(e) => failures.push(format!("{}: {e}", dst.name)),
                }
            }
        }
    }
    (copies, bytes, failures, bad)
}

/// Why a streamed copy failed, and the source's state if that proved it
/// bad.
type CopyFailure = (String, Option<CopyState>);

/// Streams one large copy from its source to its destination,
/// authenticating every chunk on the way: a bad source aborts the upload,
/// and the destination keeps nothing.
async fn copy_stream(vault: &Vault, j: &Job) -> Result<u64, CopyFailure> {
    let src = vault
        .session(j.from)
        .ok_or(("source unreachable".to_string(), None))?;
    let dst = vault
        .session(j.to)
        .ok_or(("destination unreachable".to_string(), None))?;
    let keys = vault.master().part(
        vault.user(),
        &j.manifest.file_id,
        j.manifest.version,
        j.part,
    );
    let plain_len = j.manifest.parts()[j.part].1;
    let options = ReadOptions {
        keep_ciphertext: true,
        ..ReadOptions::default()
    };
    let from_src = |e: PartError| (format!("{}: {e}", src.name), judged(&e));
    let at_dst = |e: NetError| (format!("{}: {e}", dst.name), None);
    let mut part = PartReader::open(src, &keys, plain_len, options)
        .await
        .map_err(from_src)?;
    let expected = part_blob_len(plain_len);
    let mut up = match dst.put(&keys.id, expected).await {
        Ok(up) => up,
        Err(e) => {
            part.cancel();
            return Err(at_dst(e));
        }
    };
    // Only what authenticated is forwarded: the header the reader checked,
    // then each chunk once it opened.
    let result: Result<(), CopyFailure> = async {
        up.write(&PART_HEADER).await.map_err(at_dst)?;
        while part.next().await.map_err(from_src)?.is_some() {
            up.write(part.ciphertext()).await.map_err(at_dst)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            up.finish().await.map_err(at_dst)?;
            Ok(expected)
        }
        Err(e) => {
            up.abort();
            Err(e)
        }
    }
}

async fn remove_orphans(
    vault: &Vault,
    survey: &Survey,
    grace: Duration,
    report: &mut RepairReport,
) {
    let mut per_node: HashMap<usize, Vec<BlobId>> = HashMap::new();
    for o in check::expired(&survey.orphans, grace, survey.taken_at) {
        if let Ok(id) = BlobId::new(o.id.clone()) {
            per_node.entry(o.node).or_default().push(id);
        }
    }
    let mut set = JoinSet::new();
    for (node, ids) in per_node {
        let Some(s) = vault.session(node).cloned() else {
            continue;
        };
        set.spawn(async move { delete_batches(&s, &ids).await });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(n)) => report.orphans_removed += n,
            Ok(Err(e)) => report.failures.push(e),
            Err(e) => report.failures.push(format!("delete task failed: {e}")),
        }
    }
}

/// Deletes `ids` in batches; how many were removed.
async fn delete_batches(s: &Session, ids: &[BlobId]) -> Result<usize, String> {
    let mut removed = 0;
    for chunk in ids.chunks(MAX_BATCH) {
        let missing = s
            .delete_blobs(chunk)
            .await
            .map_err(|e| format!("{}: removing orphans: {e}", s.name))?;
        removed += chunk.len() - missing;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Entry, NodeCopy};
    use crate::ops::check::FileHealth;

    fn manifest(version: u64, file_id: u8) -> Manifest {
        Manifest {
            name: "f".into(),
            size: 1,
            md5: vec![0; 16],
            file_id: vec![file_id; 16],
            version,
            deleted: false,
            mtime_ns: None,
            extra: Default::default(),
            shards: None,
        }
    }

    fn copy(node: usize, m: Option<Manifest>, bytes: &[u8]) -> NodeCopy {
        NodeCopy {
            node,
            hash: Some(wire::content_hash(bytes)),
            manifest: m,
        }
    }

    /// v2 on DFS2 and DFS3, v1 on DFS1, a corrupt copy on DFS4; DFS4's
    /// answer covered the id only if `known4`.
    fn survey(states: [CopyState; 4], known: u32) -> Survey {
        let v2 = manifest(2, 2);
        let entry = Entry {
            id: BlobId::new("m2-aa".to_string()).unwrap(),
            newest: v2.clone(),
            sealed: b"v2".to_vec(),
            current_on: 0b0110,
            listed_on: 0b1111,
            known_on: known,
            copies: vec![
                copy(0, Some(manifest(1, 1)), b"v1"),
                copy(1, Some(v2.clone()), b"v2"),
                copy(2, Some(v2), b"v2"),
                copy(3, None, b"junk"),
            ],
            older: vec![manifest(1, 1)],
        };
        Survey {
            files: vec![FileHealth {
                name: "f".into(),
                deleted: false,
                manifests: states.into_iter().enumerate().collect(),
                parts: Vec::new(),
                shards_needed: None,
                shards_elsewhere: 0,
            }],
            entries: vec![entry],
            ..Survey::default()
        }
    }

    fn expect_of(s: &Survey, node: usize) -> Option<Expect> {
        let state = s.files[0].manifests[node].1;
        manifest_write(s, 0, node, state).map(|w| w.unwrap().2)
    }

    #[test]
    fn manifest_writes_expect_exactly_what_the_survey_saw() {
        use CopyState::*;
        let s = survey([Stale, Good, Good, Corrupt], 0b1111);
        let hash = |b: &[u8]| Some(Expect::Hash(wire::content_hash(b).to_vec()));
        assert_eq!(expect_of(&s, 0), hash(b"v1"), "the v1 copy it listed");
        assert_eq!(expect_of(&s, 1), None, "good copies stay");
        assert_eq!(expect_of(&s, 3), hash(b"junk"), "the corrupt copy");
        // A node whose listing did not reach the id is never written to,
        // whatever state a caller gives it.
        let s = survey([Stale, Good, Good, Missing], 0b0111);
        assert_eq!(expect_of(&s, 3), None);
        // A node listing nothing there gets the copy only if still absent.
        let mut s = survey([Stale, Good, Good, Missing], 0b1111);
        s.entries[0].copies.pop();
        assert_eq!(expect_of(&s, 3), Some(Expect::Absent));
    }

    #[test]
    fn a_node_holding_a_copy_that_ranks_as_high_is_never_written() {
        use CopyState::*;
        let mut s = survey([Stale, Good, Good, Corrupt], 0b1111);
        // DFS1 holds a version 3 the survey's newest does not beat.
        s.entries[0].copies[0].manifest = Some(manifest(3, 9));
        assert_eq!(expect_of(&s, 0), None);
    }
}
