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
use wire::{BlobId, MAX_BATCH};

use super::{fetch_versions, put_everywhere, remove_parts, Broadcast, OpError};
use crate::catalog::{self, Entry};
use crate::path::normalize_prefix;
use crate::placement::{nodes_for_part, PARTS};
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

/// Deletes `name`.
pub async fn delete_file(vault: &Vault, name: &str) -> Result<DeleteReport, OpError> {
    let id = vault.master().manifest_id(name);
    let versions = fetch_versions(vault, &id, None).await;
    let Some(newest) = versions.live().cloned() else {
        return Err(OpError::NotFound(name.to_string()));
    };
    let tombstone = newest
        .tombstone()?
        .seal(vault.master(), vault.user(), &id)?;
    let Broadcast {
        written, failed, ..
    } = put_everywhere(vault, &id, &tombstone).await;
    if written == 0 {
        return Err(OpError::Unavailable(format!(
            "{name}: no node accepted the delete ({}); nothing was changed",
            failed.join("; ")
        )));
    }
    // The file is gone for every reader from here on; its parts can go.
    for m in versions.distinct() {
        if !m.deleted {
            remove_parts(vault, m).await;
        }
    }
    let mut warnings = Vec::new();
    if !failed.is_empty() {
        warnings.push(format!(
            "{name}: {} kept the old manifest (the tombstone elsewhere overrides it)",
            failed.join("; ")
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
    let mut tombstones = Vec::with_capacity(entries.len());
    for e in &entries {
        let t = e.newest.tombstone()?;
        tombstones.push(t.seal(vault.master(), vault.user(), &e.id)?);
    }
    // 1. Tombstones, one request per node.
    let mut set = JoinSet::new();
    for s in vault.ready() {
        let s = s.clone();
        let blobs: Vec<(BlobId, Vec<u8>)> = entries
            .iter()
            .zip(&tombstones)
            .map(|(e, t)| (e.id.clone(), t.clone()))
            .collect();
        set.spawn(async move {
            let mut failed = Vec::new();
            for (start, chunk) in blobs
                .chunks(MAX_BATCH)
                .enumerate()
                .map(|(i, c)| (i * MAX_BATCH, c))
            {
                let refs: Vec<(BlobId, &[u8])> = chunk
                    .iter()
                    .map(|(id, b)| (id.clone(), b.as_slice()))
                    .collect();
                match s.put_blobs(&refs).await {
                    Ok(fails) => failed.extend(
                        fails
                            .into_iter()
                            .map(|f| (start + f.index, f.error.to_string())),
                    ),
                    Err(e) => {
                        failed.extend((start..start + chunk.len()).map(|i| (i, e.to_string())))
                    }
                }
            }
            (s.name.clone(), failed)
        });
    }
    let ready = vault.ready().count();
    let mut missed: Vec<Vec<String>> = vec![Vec::new(); entries.len()];
    while let Some(joined) = set.join_next().await {
        let Ok((node, failed)) = joined else { continue };
        for (i, why) in failed {
            missed[i].push(format!("{node}: {why}"));
        }
    }
    // 2. Every version's parts, for the files whose tombstone landed.
    let mut remove: HashMap<usize, Vec<BlobId>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if missed[i].len() == ready {
            summary.failed.push((
                e.newest.name.clone(),
                OpError::Unavailable(format!(
                    "no node took the delete ({}); nothing was changed",
                    missed[i].join("; ")
                )),
            ));
            continue;
        }
        if !missed[i].is_empty() {
            summary.warnings.push(format!(
                "{}: {} kept the old manifest (the tombstone elsewhere overrides it)",
                e.newest.name,
                missed[i].join("; ")
            ));
        }
        summary.deleted.push(e.newest.name.clone());
        for m in std::iter::once(&e.newest).chain(&e.older) {
            if m.deleted {
                continue;
            }
            for k in 0..PARTS {
                let id = vault.master().part_id(&m.file_id, k);
                for node in nodes_for_part(m.placement(), k) {
                    remove.entry(node).or_default().push(id.clone());
                }
            }
        }
    }
    let mut set = JoinSet::new();
    for (node, ids) in remove {
        let Some(s) = vault.session(node).cloned() else {
            continue;
        };
        set.spawn(async move {
            for chunk in ids.chunks(MAX_BATCH) {
                if let Err(e) = s.delete_blobs(chunk).await {
                    tracing::warn!(node = %s.name, "could not remove parts: {e}");
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    summary.unreachable = vault.unavailable().into_iter().map(|(n, _)| n).collect();
    Ok(summary)
}
