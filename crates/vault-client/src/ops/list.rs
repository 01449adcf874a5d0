//! LIST: every file of the vault (or under a prefix), from the manifests
//! the reachable nodes hold, read many per round trip; a file the reachable
//! nodes cannot rebuild is flagged incomplete.

use serde::Serialize;

use super::OpError;
use crate::catalog;
use crate::manifest::Manifest;
use crate::path::normalize_prefix;
use crate::vault::Vault;

/// The vault's files, and what LIST noticed on the way.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// One entry per file, by name.
    pub files: Vec<Listed>,
    /// Objects stored by Vault 0.1 (storage format 1), which this version
    /// does not read, on the node holding the most.
    pub format1_objects: usize,
    /// Manifests that failed authentication (a node's damaged or forged
    /// copies; the good copies elsewhere were used).
    pub unreadable: usize,
    /// `node: problem` for each node whose listing could not be used.
    pub problems: Vec<String>,
    /// Set when fewer than a quorum of nodes could be listed and the
    /// caller allowed it: why the listing may be stale.
    pub stale: Option<String>,
}

/// One file in the listing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    /// Name in the vault (a relative path).
    pub name: String,
    /// Plaintext size.
    pub size: u64,
    /// Version number.
    pub version: u64,
    /// Whether the reachable nodes hold a valid copy of every part.
    pub complete: bool,
}

/// Lists the files under `prefix` ("" for all). Nodes that could not be
/// listed are named in [`Listing::problems`] (the caller also reports
/// [`Vault::unavailable`]).
///
/// Refuses ([`OpError::NoQuorum`]) unless a majority of the manifest
/// holders could be listed whole: with fewer, old versions and deleted
/// files could be all that is left to see.
pub async fn list(vault: &Vault, prefix: &str) -> Result<Listing, OpError> {
    list_with(vault, prefix, false).await
}

/// [`list`] that, with `allow_stale`, goes on with fewer nodes than a
/// quorum and says so in [`Listing::stale`].
pub async fn list_with(vault: &Vault, prefix: &str, allow_stale: bool) -> Result<Listing, OpError> {
    let prefix = normalize_prefix(prefix).map_err(|e| OpError::BadName(e.to_string()))?;
    let started = std::time::Instant::now();
    let catalog = catalog::scan_light(vault, &prefix).await;
    let answered = super::catalog_answered(vault, &catalog);
    let stale = super::check_quorum(vault, answered, &catalog.problems, allow_stale)?;
    tracing::debug!(files = catalog.entries.len(), elapsed = ?started.elapsed(), "manifests read");
    let live: Vec<&Manifest> = catalog.live().collect();
    let presence = catalog::presence(vault, &live, false).await;
    tracing::debug!(elapsed = ?started.elapsed(), "parts checked");
    // A folder marker (an empty S3 bucket) shows as `name/` while the
    // folder holds no file; beside files it would only repeat them.
    let holds_files = |folder: &str| {
        live.iter()
            .any(|f| !f.is_folder() && f.name != folder && crate::path::under(&f.name, folder))
    };
    let files = live
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.is_folder() || !holds_files(&m.name))
        .map(|(i, m)| Listed {
            name: if m.is_folder() {
                format!("{}/", m.name)
            } else {
                m.name.clone()
            },
            size: m.size,
            version: m.version,
            complete: presence.complete(i, m),
        })
        .collect();
    let mut problems = catalog.problems;
    problems.extend(presence.problems);
    problems.sort();
    problems.dedup();
    Ok(Listing {
        files,
        format1_objects: catalog.format1_objects,
        unreadable: catalog.unreadable,
        problems,
        stale,
    })
}
