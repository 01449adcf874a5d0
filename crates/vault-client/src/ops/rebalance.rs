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
//! 3. the old copies are left: `repair`'s orphan sweep removes them once
//!    no manifest names them on their node, after the grace period.
//!
//! A file that changed meanwhile (another version committed) loses the
//! race and is left as the other writer made it; what this wrote on new
//! nodes is then unreferenced (reported). Classic files keep their layout:
//! the MD5 table names the first four servers of dfc.conf, which is why
//! new servers are added after them.

use super::commit::{commit, Outcome, Write};
use super::{fetch_versions, OpError};
use crate::crypto::keys::{random_bytes, FILE_ID_LEN};
use crate::layout::wanted;
use crate::manifest::Manifest;
use crate::placement::rendezvous::moves;
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
        // Held by a node placement no longer has (one left dfc.conf) and
        // nowhere to go: fewer servers than the file's K+M.
        let stranded = held
            .iter()
            .filter(|h| !want_refs.iter().any(|w| w.eq_ignore_ascii_case(h)))
            .count();
        if stranded > planned.len() {
            report.failures.push(format!(
                "{}: its {} shards need {} servers and dfc.conf lists {}; {} stay where they are",
                m.name,
                layout.scheme,
                layout.scheme.shards(),
                vault.node_count(),
                stranded - planned.len()
            ));
        }
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
        // Read from every good shard but those moving off a node that is
        // gone or bad: an old copy still good is read like any other.
        let skip: Vec<usize> = (0..layout.scheme.shards())
            .filter(|i| {
                !h.parts
                    .iter()
                    .any(|(p, _, s)| p == i && *s == super::check::CopyState::Good)
            })
            .collect();
        match move_file(vault, m, &targets, &planned, &skip).await {
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
/// new nodes; `skip`: shards not to read), then records the new places in
/// a newer manifest version (the old copies stay, for the orphan sweep):
/// the bytes written.
async fn move_file(
    vault: &Vault,
    m: &Manifest,
    targets: &[(usize, crate::net::Session)],
    planned: &[(usize, &str)],
    skip: &[usize],
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
    let (bytes, _bad) = super::shards::rebuild(vault, m, layout, targets, skip).await?;
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
        // The old copies stay: a reader that opened the old version reads
        // them still, and they become orphans that `repair` collects once
        // no manifest names them on their node, after the grace period.
        // (Deleting them here would also trust the new nodes' word that
        // they stored the moved shards.) The other versions the commit
        // outranked share this data: nothing of theirs is removed either.
        Outcome::Committed { .. } => Ok(bytes),
        Outcome::Lost { winner, .. } => Err(super::put::conflict(&m.name, &winner)),
        Outcome::NotCommitted { why, .. } => Err(OpError::Unavailable(format!(
            "the moved shards could not be recorded on a majority ({}); the file stays where it was",
            why.join("; ")
        ))),
    }
}
