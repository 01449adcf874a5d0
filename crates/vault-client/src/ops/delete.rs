//! DELETE: remove a file's parts and manifest from every reachable node.
//!
//! With all four nodes reachable nothing of the file remains. With a node
//! down, the reachable nodes keep a sealed tombstone (a newer version marked
//! deleted) in place of the manifest, so the stale copy on the missing node
//! cannot bring the file back when it returns.

use tokio::task::JoinSet;

use super::{fetch_versions, remove_parts, OpError};
use crate::vault::Vault;

/// What DELETE did.
#[derive(Debug, Clone)]
pub struct DeleteReport {
    /// Nodes that could not be reached (they still hold the old copy, which
    /// the tombstone overrides).
    pub unreachable: Vec<String>,
}

/// Deletes `name`.
pub async fn delete_file(vault: &Vault, name: &str) -> Result<DeleteReport, OpError> {
    let id = vault.master.manifest_id(name);
    let versions = fetch_versions(vault, &id, None).await;
    let Some(newest) = versions.live().cloned() else {
        return Err(OpError::NotFound(name.to_string()));
    };
    for m in versions.distinct() {
        remove_parts(vault, m).await;
    }
    let unreachable: Vec<String> = vault.unavailable().into_iter().map(|(n, _)| n).collect();
    let tombstone = if unreachable.is_empty() {
        None
    } else {
        Some(newest.tombstone()?.seal(&vault.master, &vault.user, &id)?)
    };
    let mut set = JoinSet::new();
    for s in vault.ready() {
        let (s, id, tomb) = (s.clone(), id.clone(), tombstone.clone());
        set.spawn(async move {
            let r = match tomb {
                Some(t) => s.put_bytes(&id, &t).await,
                None => s.delete(&id).await.map(|_| ()),
            };
            (s.name.clone(), r)
        });
    }
    let mut failed = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((node, Err(e))) = joined {
            failed.push(format!("{node}: {e}"));
        }
    }
    if !failed.is_empty() {
        return Err(OpError::Unavailable(format!(
            "{name}: delete incomplete: {}",
            failed.join("; ")
        )));
    }
    Ok(DeleteReport { unreachable })
}
