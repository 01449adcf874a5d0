//! STATUS: every node, up or down, with what it says of itself.

use serde::Serialize;
use tokio::task::JoinSet;
use wire::{NodeStatus, Request, Response};

use crate::net::{sanitize, unexpected};
use crate::vault::Vault;

/// One node's status.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The node's name.
    pub name: String,
    /// Whether it is usable.
    pub up: bool,
    /// Why not, when it is not.
    pub error: Option<String>,
    /// Round-trip time, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Software version it reports.
    pub version: Option<String>,
    /// Free space on its disk, bytes.
    pub free_bytes: Option<u64>,
    /// This user's blobs on it.
    pub blobs: Option<u64>,
    /// This user's bytes on it.
    pub bytes: Option<u64>,
    /// Its per-user quota, bytes.
    pub quota: Option<u64>,
}

/// Asks every usable node for its status, at once; the others are
/// reported down with the reason.
pub async fn status(vault: &Vault) -> Vec<NodeReport> {
    let mut out: Vec<NodeReport> = (0..vault.node_count())
        .map(|i| NodeReport {
            name: vault.node_name(i).to_string(),
            up: false,
            error: vault.node_login(i).reason(),
            rtt_ms: None,
            version: None,
            free_bytes: None,
            blobs: None,
            bytes: None,
            quota: None,
        })
        .collect();
    let mut set = JoinSet::new();
    for s in vault.ready() {
        let s = s.clone();
        set.spawn(async move {
            let r = match s.call(&Request::Status).await {
                Ok(Response::Status(st)) => Ok(st),
                Ok(other) => Err(unexpected("Status", &other).to_string()),
                Err(e) => Err(e.to_string()),
            };
            (s.node, s.rtt(), r)
        });
    }
    while let Some(joined) = set.join_next().await {
        let Ok((node, rtt, r)) = joined else { continue };
        let slot = &mut out[node];
        match r {
            Ok(NodeStatus {
                version,
                blobs,
                bytes,
                quota,
                free_bytes,
                ..
            }) => {
                slot.up = true;
                slot.error = None;
                slot.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                slot.version = Some(sanitize(&version));
                slot.free_bytes = free_bytes;
                slot.blobs = Some(blobs);
                slot.bytes = Some(bytes);
                slot.quota = quota;
            }
            Err(e) => slot.error = Some(e),
        }
    }
    out
}
