//! DELETE: replace a file's manifest with a sealed tombstone on every
//! reachable node, then remove its parts.
//!
//! The tombstone is a newer version marked deleted. It stays (a few hundred
//! bytes) so that version numbers never go back: a node that missed the
//! delete, or one replaying an old manifest later, always loses to it.
//! Tombstones go first, so an interrupted delete never leaves a manifest
//! pointing at removed parts.

use super::{fetch_versions, put_everywhere, remove_parts, Broadcast, OpError};
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
