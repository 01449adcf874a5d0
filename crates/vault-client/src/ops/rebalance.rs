//! `repair --rebalance`: moves the shards of erasure-coded files to where
//! placement now wants them, after nodes were added to or removed from
//! dfc.conf.
//!
//! For each erasure-coded file (its newest version), placement is asked
//! again over today's nodes ([`crate::placement::rendezvous`], keyed by the
//! data id, so a file's wanted nodes are the same on every machine). Only
//! the shards held by a node no longer wanted move
//! ([`crate::placement::rendezvous::moves`]), each to a wanted node holding
//! none of the file. The order keeps a readable copy at every step:
//!
//! 1. the moved shards are written to their new nodes (rebuilt from K
//!    others, every tag checked; `shards::rebuild`);
//! 2. a new manifest version records the new nodes (same data, same keys:
//!    the data id is kept), committed conditionally over the copies just
//!    read, like any PUT: it counts once a majority holds it;
//! 3. only then are the moved shards removed from their old nodes.
//!
//! A file that changed meanwhile (another version committed) loses the
//! race and is left as the other writer made it; what this wrote on new
//! nodes is then unreferenced (reported). Classic files keep their layout:
//! the MD5 table names the first four servers of dfc.conf, which is why
//! new servers are added after them.

use super::commit::{commit, Outcome, Write};
use super::{fetch_versions, OpError};
use crate::crypto::keys::{random_bytes, FILE_ID_LEN};
use crate::manifest::Manifest;
use crate::placement::rendezvous::{moves, rank, Candidate};
use crate::vault::Vault;

/// What a rebalance did.
#[derive(Debug, Default)]
pub struct RebalanceReport {
    /// Erasure-coded files looked at.
    pub files: usize,
    /// Shards written to their new nodes and recorded there.
    pub shards_moved: usize,
    /// Bytes written.
    pub bytes_moved: u64,
    /// What could not be moved, and why (nothing was lost: the file stays
    /// where its manifest says).
    pub failures: Vec<String>,
}

/// The nodes placement wants today for data `data_id` coded into `count`
/// shards: names, best first.
pub fn wanted(vault: &Vault, data_id: &[u8], count: usize) -> Vec<String> {
    let names: Vec<&str> = vault.node_names().collect();
    let candidates: Vec<Candidate<'_>> = names
        .iter()
        .map(|name| Candidate { name, weight: 1.0 })
        .collect();
    rank(data_id, &candidates, count)
        .into_iter()
        .map(|i| names[i].to_string())
        .collect()
}

/// Rebalances the erasure-coded files under `prefix` ("" for all).
pub async fn rebalance(
    vault: &Vault,
    prefix: &str,
    progress: super::ProgressRef,
) -> Result<RebalanceReport, OpError> {
    let survey = super::check::survey(vault, prefix, false, progress).await?;
    let mut report = RebalanceReport::default();
    for (f, h) in survey.files.iter().enumerate() {
        let Some(m) = survey.entries[f].live() else {
            continue;
        };
        let Some(layout) = &m.shards else { continue };
        report.files += 1;
        let want = wanted(vault, &layout.data_id, layout.scheme.shards());
        let held: Vec<&str> = layout.nodes.iter().map(String::as_str).collect();
        let want_refs: Vec<&str> = want.iter().map(String::as_str).collect();
        let planned = moves(&held, &want_refs);
        if planned.is_empty() {
            continue;
        }
        let good = h
            .parts
            .iter()
            .filter(|(_, _, s)| *s == super::check::CopyState::Good)
            .count();
        if good < layout.scheme.data() {
            report.failures.push(format!(
                "{}: only {good} of its shards are readable now; not moved (run repair first)",
                m.name
            ));
            continue;
        }
        let mut targets = Vec::new();
        let mut unusable = Vec::new();
        for (i, to) in &planned {
            match vault
                .node_index(to)
                .and_then(|n| vault.session(n).filter(|s| !s.is_closed()))
            {
                Some(s) => targets.push((*i, s.clone())),
                None => unusable.push(*to),
            }
        }
        if !unusable.is_empty() {
            report.failures.push(format!(
                "{}: not moved: {} not usable now",
                m.name,
                unusable.join(", ")
            ));
            continue;
        }
        match move_file(vault, m, &targets, &planned).await {
            Ok(bytes) => {
                report.shards_moved += planned.len();
                report.bytes_moved += bytes;
            }
            Err(e) => report.failures.push(format!("{}: {e}", m.name)),
        }
    }
    Ok(report)
}

/// Moves shards of `m` as `planned` says (`targets`: the sessions to the
/// new nodes), then records them and clears the old copies: the bytes
/// written.
async fn move_file(
    vault: &Vault,
    m: &Manifest,
    targets: &[(usize, crate::net::Session)],
    planned: &[(usize, &str)],
) -> Result<u64, OpError> {
    let layout = m.shards.as_ref().expect("an erasure-coded manifest");
    // What each node holds now: the condition of the commit.
    let id = vault.master().manifest_id(&m.name);
    let now = fetch_versions(vault, &id, None).await;
    if now.live().map(|l| &l.file_id) != Some(&m.file_id) {
        return Err(OpError::Conflict(
            "it changed since it was surveyed; run repair --rebalance again".into(),
        ));
    }
    let (bytes, _bad) = super::shards::rebuild(vault, m, layout, targets).await?;
    let mut moved = m.clone();
    moved.version = now.max_version() + 1;
    moved.file_id = random_bytes::<FILE_ID_LEN>()?.to_vec();
    let mut new_layout = layout.clone();
    for (i, to) in planned {
        new_layout.nodes[*i] = (*to).to_string();
    }
    moved.shards = Some(new_layout);
    let sealed = moved.seal(vault.master(), vault.user(), &id)?;
    let write = Write {
        id,
        manifest: moved,
        sealed,
        seen: Write::seen_from(vault.node_count(), &now.copies),
    };
    match commit(vault, std::slice::from_ref(&write))
        .await
        .pop()
        .expect("one write, one outcome")
    {
        Outcome::Committed { .. } => {
            // Recorded where a majority reads: the old copies can go.
            let ids = vault
                .master()
                .sharded(vault.user(), &layout.data_id, layout.scheme.shards())
                .ids;
            for (i, _) in planned {
                let Some(node) = vault.node_index(&layout.nodes[*i]) else {
                    continue;
                };
                if let Some(s) = vault.session(node).filter(|s| !s.is_closed()) {
                    if let Err(e) = s.delete_blobs(std::slice::from_ref(&ids[*i])).await {
                        tracing::warn!(node = %s.name, "could not remove a moved shard: {e}");
                    }
                }
            }
            Ok(bytes)
        }
        Outcome::Lost { winner, .. } => Err(super::put::conflict(&m.name, &winner)),
        Outcome::NotCommitted { why, .. } => Err(OpError::Unavailable(format!(
            "the moved shards could not be recorded on a majority ({}); the file stays where it was",
            why.join("; ")
        ))),
    }
}
