//! LIST: merge what the reachable nodes hold, one entry per file, flagging
//! files the reachable nodes cannot rebuild.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use wire::BlobId;

use super::{fetch_versions, OpError};
use crate::crypto::format::{is_format1_id, is_manifest_id, part_blob_len};
use crate::vault::Vault;

/// Manifests fetched at once.
const FETCH_CONCURRENCY: usize = 16;

/// The vault's files, and what LIST noticed on the way.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// One entry per file, by name.
    pub files: Vec<Listed>,
    /// Objects stored by Vault 0.1 (storage format 1), which this version
    /// does not read, counted on the node holding the most.
    pub format1_objects: usize,
    /// `node: problem` for each node whose listing could not be used.
    pub problems: Vec<String>,
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

/// Lists the vault. Nodes that could not be listed are left out and named
/// in [`Listing::problems`] (the caller also reports
/// [`Vault::unavailable`]).
pub async fn list(vault: &Vault) -> Result<Listing, OpError> {
    let mut set = JoinSet::new();
    for s in vault.ready() {
        let s = s.clone();
        set.spawn(async move { (s.node, s.list_all().await) });
    }
    let mut held: HashMap<usize, HashMap<BlobId, u64>> = HashMap::new();
    let mut listing = Listing::default();
    while let Some(joined) = set.join_next().await {
        let Ok((node, result)) = joined else { continue };
        match result {
            Ok(entries) => {
                let old = entries
                    .iter()
                    .filter(|e| is_format1_id(e.id.as_str()))
                    .count();
                listing.format1_objects = listing.format1_objects.max(old);
                held.insert(node, entries.into_iter().map(|e| (e.id, e.len)).collect());
            }
            Err(e) => listing
                .problems
                .push(format!("{}: {e}", vault.node_name(node))),
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
                let part = vault.master().part_id(&m.file_id, k);
                let want = part_blob_len(*len);
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
    while let Some(joined) = set.join_next().await {
        if let Ok(Some(l)) = joined {
            listing.files.push(l);
        }
    }
    listing.files.sort_by(|a, b| a.name.cmp(&b.name));
    listing.problems.sort();
    Ok(listing)
}
