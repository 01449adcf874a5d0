//! DELETE: replace a file's manifest with a sealed tombstone on every
//! reachable node, then remove its parts.
//!
//! The tombstone is a newer version marked deleted. It stays (a few hundred
//! bytes) so that version numbers never go back: a node that missed the
//! delete, or one replaying an old manifest later, always loses to it.
//! Tombstones go first, so an interrupted delete never leaves a manifest
//! pointing at removed parts.

use std::collections::HashMap;

use tokio::task::JoinSet;
use wire::BlobId;

use super::commit::{commit, Outcome, Write};
use super::put::conflict;
use super::{check_quorum, fetch_versions, quorum, remove_parts, OpError};
use crate::catalog::{self, Entry};
use crate::path::normalize_prefix;
use crate::vault::Vault;

/// What DELETE did.
#[derive(Debug, Clone)]
pub struct DeleteReport {
    /// Nodes that could not be reached (they still hold the old copy, which
    /// the tombstone overrides).
    pub unreachable: Vec<String>,
    /// What did not go as it should, though the file is deleted.
    pub warnings: Vec<String>,
}

/// Deletes `name`. The tombstone must reach a quorum of the manifest
/// holders (it is written like a PUT's manifest, conditionally); only then
/// do the parts go.
pub async fn delete_file(vault: &Vault, name: &str) -> Result<DeleteReport, OpError> {
    let id = vault.master().manifest_id(name);
    let versions = fetch_versions(vault, &id, None).await;
    check_quorum(vault, versions.answered, &versions.problems, false)?;
    let Some(newest) = versions.live().cloned() else {
        return Err(OpError::NotFound(name.to_string()));
    };
    let tombstone = newest.tombstone()?;
    let write = Write {
        sealed: tombstone.seal(vault.master(), vault.user(), &id)?,
        id,
        manifest: tombstone,
        seen: Write::seen_from(vault.node_count(), &versions.copies),
    };
    let outcome = commit(vault, std::slice::from_ref(&write))
        .await
        .pop()
        .expect("one write, one outcome");
    let (missed, replaced) = match outcome {
        Outcome::Committed { missed, replaced } => (missed, replaced),
        Outcome::Lost { winner, .. } => return Err(conflict(name, &winner)),
        Outcome::NotCommitted { why, .. } => {
            return Err(OpError::Unavailable(format!(
            "{name}: not deleted: the delete reached fewer than {} nodes ({}); run DELETE again",
            quorum(vault),
            why.join("; ")
        )))
        }
    };
    // The file is gone for every reader from here on; its parts can go.
    let mut removed: Vec<&[u8]> = Vec::new();
    for m in versions.distinct().into_iter().chain(&replaced) {
        if !m.deleted && !removed.contains(&&m.file_id[..]) {
            removed.push(&m.file_id);
            remove_parts(vault, m).await;
        }
    }
    let mut warnings = Vec::new();
    if !missed.is_empty() {
        warnings.push(format!(
            "{name}: {} kept the old manifest (the tombstone on the others overrides it; repair brings it up to date)",
            missed.join("; ")
        ));
    }
    let unreachable = vault.unavailable().into_iter().map(|(n, _)| n).collect();
    Ok(DeleteReport {
        unreachable,
        warnings,
    })
}

/// What a DELETE of a tree did.
#[derive(Debug, Default)]
pub struct DeleteSummary {
    /// Names deleted.
    pub deleted: Vec<String>,
    /// Names not deleted, and why.
    pub failed: Vec<(String, OpError)>,
    /// Nodes that could not be reached (they keep their old copies, which
    /// the tombstones elsewhere override).
    pub unreachable: Vec<String>,
    /// What did not go as it should, though the files are deleted.
    pub warnings: Vec<String>,
}

/// Deletes every live file under `prefix` (which may not be empty: a whole
/// vault is deleted folder by folder, on purpose). Tombstones go first, in
/// one request per node, then every version's parts.
pub async fn delete_tree(vault: &Vault, prefix: &str) -> Result<DeleteSummary, OpError> {
    let prefix = normalize_prefix(prefix).map_err(|e| OpError::BadName(e.to_string()))?;
    if prefix.is_empty() {
        return Err(OpError::Refused(
            "refusing to delete the whole vault; name a folder (or delete each top folder)".into(),
        ));
    }
    let catalog = catalog::scan(vault, &prefix).await;
    let entries: Vec<&Entry> = catalog
        .entries
        .iter()
        .filter(|e| e.live().is_some())
        .collect();
    if entries.is_empty() {
        return Err(OpError::NotFound(prefix));
    }
    let mut summary = DeleteSummary {
        warnings: catalog.problems.clone(),
        ..DeleteSummary::default()
    };
    // 1. Tombstones, conditionally, many per request; each counts once a
    //    quorum holds it.
    let mut writes = Vec::with_capacity(entries.len());
    for e in &entries {
        let t = e.newest.tombstone()?;
        writes.push(Write {
            sealed: t.seal(vault.master(), vault.user(), &e.id)?,
            id: e.id.clone(),
            manifest: t,
            seen: seen_from_entry(vault, e),
        });
    }
    let outcomes = commit(vault, &writes).await;
    // 2. Every version's parts, for the files whose tombstone counted.
    let mut remove: HashMap<usize, Vec<BlobId>> = HashMap::new();
    for (e, outcome) in entries.iter().zip(outcomes) {
        let name = e.newest.name.clone();
        let mut superseded: Vec<crate::manifest::Manifest> = Vec::new();
        match outcome {
            Outcome::Committed { missed, replaced } => {
                superseded.extend(replaced);
                if !missed.is_empty() {
                    summary.warnings.push(format!(
                        "{name}: {} kept the old manifest (the tombstone on the others overrides it; repair brings it up to date)",
                        missed.join("; ")
                    ));
                }
            }
            Outcome::Lost { winner, .. } => {
                let e = conflict(&name, &winner);
                summary.failed.push((name, e));
                continue;
            }
            Outcome::NotCommitted { why, .. } => {
                summary.failed.push((
                    name,
                    OpError::Unavailable(format!(
                        "not deleted: the delete reached fewer than {} nodes ({}); run DELETE again",
                        quorum(vault),
                        why.join("; ")
                    )),
                ));
                continue;
            }
        }
        summary.deleted.push(e.newest.name.clone());
        for m in std::iter::once(&e.newest)
            .chain(&e.older)
            .chain(&superseded)
        {
            if m.deleted {
                continue;
            }
            for (node, id) in crate::layout::blob_copies(vault, m) {
                remove.entry(node).or_default().push(id);
            }
        }
    }
    let mut set = JoinSet::new();
    for (node, ids) in remove {
        let Some(s) = vault.session(node).cloned() else {
            continue;
        };
        set.spawn(async move {
            for e in s.delete_blobs_batched(&ids).await {
                tracing::warn!(node = %s.name, "could not remove parts: {e}");
            }
        });
    }
    while set.join_next().await.is_some() {}
    summary.unreachable = vault.unavailable().into_iter().map(|(n, _)| n).collect();
    Ok(summary)
}

/// What a catalog entry says each node holds, as the condition of a write
/// over it: the copy the node listed, nothing where its answer covered the
/// id without one, not known where it did not answer for the id.
pub(crate) fn seen_from_entry(vault: &Vault, e: &Entry) -> Vec<Option<wire::Expect>> {
    (0..vault.node_count())
        .map(|node| match e.copy_on(node) {
            Some(copy) => copy.hash.map(|h| wire::Expect::Hash(h.to_vec())),
            None if e.known_on & (1 << node) != 0 => Some(wire::Expect::Absent),
            None => None,
        })
        .collect()
}
