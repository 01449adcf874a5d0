//! LIST: merge what the reachable nodes hold, one entry per file, flagging
//! files the reachable nodes cannot rebuild.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wire::BlobId;

use super::{fetch_versions, OpError};
use crate::crypto::stream::ciphertext_len;
use crate::vault::Vault;

/// Manifests fetched at once.
const FETCH_CONCURRENCY: usize = 16;

/// Manifest ids are `m-` and 64 lower-case hex digits; anything else a node
/// lists is not worth a fetch.
fn is_manifest_id(id: &str) -> bool {
    id.strip_prefix("m-")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One file in the listing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    /// Name in the vault.
    pub name: String,
    /// Plaintext size.
    pub size: u64,
    /// Version number.
    pub version: u64,
    /// Whether the reachable nodes hold a valid copy of every part.
    pub complete: bool,
}

/// Lists the vault. Nodes that could not be listed are left out (the
/// caller reports [`Vault::unavailable`]).
pub async fn list(vault: &Arc<Vault>) -> Result<Vec<Listed>, OpError> {
    let mut set = JoinSet::new();
    for s in vault.ready() {
        let s = s.clone();
        set.spawn(async move { (s.node, s.list_all().await) });
    }
    let mut held: HashMap<usize, HashMap<BlobId, u64>> = HashMap::new();
    while let Some(joined) = set.join_next().await {
        let Ok((node, result)) = joined else { continue };
        match result {
            Ok(entries) => {
                held.insert(node, entries.into_iter().map(|e| (e.id, e.len)).collect());
            }
            Err(e) => tracing::warn!(node = %vault.names[node], "listing failed: {e}"),
        }
    }
    let manifests: BTreeSet<BlobId> = held
        .values()
        .flat_map(|m| m.keys())
        .filter(|id| is_manifest_id(id.as_str()))
        .cloned()
        .collect();

    let held = Arc::new(held);
    let limit = Arc::new(Semaphore::new(FETCH_CONCURRENCY));
    let mut set = JoinSet::new();
    for id in manifests {
        let (vault, held, limit) = (vault.clone(), held.clone(), limit.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.ok()?;
            let nodes: Vec<usize> = held
                .iter()
                .filter(|(_, ids)| ids.contains_key(&id))
                .map(|(n, _)| *n)
                .collect();
            let versions = fetch_versions(&vault, &id, Some(&nodes)).await;
            let m = versions.live()?.clone();
            let complete = m.parts().iter().enumerate().all(|(k, (_, len))| {
                let part = vault.master.part_id(&m.file_id, k);
                let want = ciphertext_len(*len);
                held.values().any(|ids| ids.get(&part) == Some(&want))
            });
            Some(Listed {
                name: m.name,
                size: m.size,
                version: m.version,
                complete,
            })
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok(Some(l)) = joined {
            out.push(l);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
