//! The operations: one file each. Every operation takes `&Vault`, reports
//! progress through [`Progress`], and returns a partial success as `Ok`
//! with warnings.
//!
//! - [`put`]: encrypt, split and place one file, streaming; commit with
//!   the manifest.
//! - [`put_many`]: many files (a tree), streamed: current versions learned
//!   a chunk at a time, unchanged files skipped, small files in batches,
//!   several in flight.
//! - [`get`]: fetch one copy of each part, fail over, verify, rename.
//! - [`get_many`]: a whole tree: small files in batches, each part from
//!   the less loaded holder, the other one when a copy fails.
//! - [`list`]: merge what the nodes hold; flag files they cannot rebuild.
//! - [`delete`]: remove a file's parts and manifest everywhere reachable.
//! - [`rotate`]: change the password without re-encrypting data.
//! - [`check`]: is every copy where the layout says (and, verified,
//!   authentic)? Orphaned parts.
//! - [`status`]: every node, up or down, with what it says of itself.
//! - [`repair`]: restore missing and corrupt copies from good ones, bring
//!   stale nodes up to date, collect old orphans.
//! - `part_stream` (private): reading one stored copy of a part, chunks
//!   authenticated in order; GET, check and repair all read through it.

pub mod check;
pub(crate) mod commit;
pub mod delete;
pub mod get;
pub mod get_many;
pub mod list;
mod part_stream;
pub mod put;
pub mod put_many;
pub mod rebalance;
pub mod repair;
pub mod rotate;
pub(crate) mod shards;
pub mod status;

use crate::layout::Redundancy;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tokio::task::JoinSet;
use wire::BlobId;

use crate::crypto::keys::KeyError;
use crate::manifest::{Manifest, ManifestError, MAX_SEALED_LEN};
use crate::net::NetError;
use crate::vault::{OpenError, Vault};

/// Why a command failed.
#[derive(Debug, Error)]
pub enum OpError {
    /// The vault has no file of that name.
    #[error("no such file in the vault: {0}")]
    NotFound(String),
    /// The output file exists and replacing it was not asked for.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The operation needs nodes that are not available.
    #[error("{0}")]
    Unavailable(String),
    /// A node failed during the operation.
    #[error("{node}: {source}")]
    Node {
        /// The node's name.
        node: String,
        /// What happened.
        source: NetError,
    },
    /// The file cannot be stored under that name.
    #[error("bad file name: {0}")]
    BadName(String),
    /// Too few nodes answered to know the current version (a majority of
    /// the manifest holders must); the message names the missing nodes.
    #[error("{0}")]
    NoQuorum(String),
    /// Another client stored or deleted the same name at the same moment,
    /// and its version was kept.
    #[error("{0}")]
    Conflict(String),
    /// The request cannot be carried out as given.
    #[error("{0}")]
    Refused(String),
    /// The vault could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Key material failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A step of a transfer, announced through [`Progress::phase`].
///
/// A PUT reads each large file twice: once to learn its size and MD5 (the
/// placement needs them before any part is sent), then to encrypt and send
/// it. Each pass of a file is announced before its first byte is counted:
/// `Hashing(name)`, then [`Progress::hashed`] for the bytes read, then
/// `Uploading(name)`, then [`Progress::advance`] for the bytes sent. Small
/// files stored in batches (`put -r`, several files) have no separate
/// pass and no announcement: they advance by their size once stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase<'a> {
    /// The MD5 pass of the file with this vault name begins.
    Hashing(&'a str),
    /// Encrypting and sending the file with this vault name begins.
    Uploading(&'a str),
}

/// Where a transfer has got to: told how many more bytes were processed.
///
/// [`Progress::advance`] counts a file's bytes once (sent for a PUT,
/// written for a GET, verified for check); the MD5 pass of a PUT is
/// counted apart, through [`Progress::hashed`], so a sink can show it as a
/// phase of the same bar instead of counting the file twice.
pub trait Progress: Send + Sync {
    /// `bytes` more bytes were processed.
    fn advance(&self, bytes: u64);

    /// The work turned out to be `bytes` in all (when it was not known at
    /// the start).
    fn set_total(&self, bytes: u64) {
        let _ = bytes;
    }

    /// A phase of the transfer begins (see [`Phase`]). Does nothing by
    /// default.
    fn phase(&self, phase: Phase<'_>) {
        let _ = phase;
    }

    /// `bytes` more bytes were read by a PUT's MD5 pass (after
    /// [`Phase::Hashing`]). By default they count as [`Progress::advance`]
    /// (a sink that knows nothing of phases sees a large file's bytes
    /// twice, hashed then sent); a sink that shows file bytes once
    /// overrides this.
    fn hashed(&self, bytes: u64) {
        self.advance(bytes);
    }
}

/// Progress nobody watches.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _bytes: u64) {}
}

impl Progress for std::sync::atomic::AtomicU64 {
    fn advance(&self, bytes: u64) {
        self.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A shareable progress sink.
pub type ProgressRef = Arc<dyn Progress>;

/// Seconds since the Unix epoch, by this machine's clock.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tasks each working for one node. A task that panics (a bug, or a node
/// answer no check foresaw) comes back as an error naming its node, never
/// silently dropped.
pub(crate) struct NodeTasks<T> {
    set: JoinSet<T>,
    nodes: std::collections::HashMap<tokio::task::Id, usize>,
}

impl<T: Send + 'static> NodeTasks<T> {
    pub(crate) fn new() -> Self {
        NodeTasks {
            set: JoinSet::new(),
            nodes: std::collections::HashMap::new(),
        }
    }

    /// Runs `f` for node `node`.
    pub(crate) fn spawn(
        &mut self,
        node: usize,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) {
        let task = self.set.spawn(f);
        self.nodes.insert(task.id(), node);
    }

    /// The next task to end: its node, and its output or why it failed.
    pub(crate) async fn next(&mut self, vault: &Vault) -> Option<(usize, Result<T, String>)> {
        let joined = self.set.join_next_with_id().await?;
        Some(match joined {
            Ok((id, out)) => (self.nodes.remove(&id).unwrap_or(usize::MAX), Ok(out)),
            Err(e) => {
                let node = self.nodes.remove(&e.id()).unwrap_or(usize::MAX);
                let name = vault.node_names().nth(node).unwrap_or("a node");
                tracing::warn!(node = %name, "a task failed: {e}");
                (node, Err(format!("{name}: the client's task failed ({e})")))
            }
        })
    }
}

/// Progress nobody watches, shareable.
pub fn no_progress() -> ProgressRef {
    Arc::new(NoProgress)
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> OpError + '_ {
    move |source| OpError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How many of the manifest holders must answer a read, and take a write,
/// for it to count: a majority of the nodes the layout keeps manifests on
/// (3 of 4). Any two such majorities share a node, so a write that counted
/// is seen by every read that counts.
pub fn quorum(vault: &Vault) -> usize {
    crate::layout::manifest_nodes(vault.node_count()).count() / 2 + 1
}

/// Whether a read that heard from the nodes in `answered` (a bit per node)
/// may be believed. With fewer than [`quorum`] answers the read is refused,
/// naming the nodes missing and why; with `allow_stale` it goes on and the
/// same text comes back as the warning to show (the result may be old).
pub fn check_quorum(
    vault: &Vault,
    answered: u32,
    problems: &[String],
    allow_stale: bool,
) -> Result<Option<String>, OpError> {
    let need = quorum(vault);
    let got = answered.count_ones() as usize;
    if got >= need {
        return Ok(None);
    }
    let mut missing: Vec<String> = Vec::new();
    for node in crate::layout::manifest_nodes(vault.node_count()) {
        if answered & (1 << node) != 0 {
            continue;
        }
        let name = vault.node_name(node);
        let why = vault
            .unavailable()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, why)| why)
            .or_else(|| {
                problems
                    .iter()
                    .find(|p| p.starts_with(&format!("{name}:")))
                    .map(|p| p[name.len() + 1..].trim().to_string())
            })
            .unwrap_or_else(|| "did not answer".into());
        missing.push(format!("{name} {why}"));
    }
    let text = format!(
        "only {got} of {} nodes answered ({}); a read needs {need} so that an old version or a deleted file is never taken for the current one",
        vault.node_count(),
        missing.join("; ")
    );
    if allow_stale {
        Ok(Some(format!("{text}: what follows may be stale")))
    } else {
        Err(OpError::NoQuorum(format!(
            "{text} (--allow-stale reads anyway, marked as possibly stale)"
        )))
    }
}

/// The nodes (bit i = node i) whose manifest listing a catalog could use
/// whole.
pub fn catalog_answered(vault: &Vault, catalog: &crate::catalog::Catalog) -> u32 {
    let ready = vault.ready().fold(0u32, |bits, s| bits | 1 << s.node);
    catalog.complete & ready
}

/// Every valid manifest version the reachable nodes hold for one name.
pub struct Versions {
    /// `(node, manifest)` for each node that served a valid manifest.
    pub found: Vec<(usize, Manifest)>,
    /// Nodes (bit i = node i) that answered: with a copy, valid or not, or
    /// with none.
    pub answered: u32,
    /// What each answering node holds: its sealed copy, or `None`.
    pub copies: Vec<(usize, Option<Vec<u8>>)>,
    /// `node: problem` for each node asked that did not answer.
    pub problems: Vec<String>,
}

/// The order of two valid manifests of one name, the one rule every reader,
/// writer and repair uses: the higher version wins; between two different
/// manifests of one version (concurrent writers, or a write that lost its
/// condition on most nodes) the one more of the answering nodes hold wins,
/// then a tombstone, then the larger file id. So a manifest one node held
/// back never beats the one a majority took.
pub fn rank(m: &Manifest, holders: u32) -> (u64, u32, bool, &[u8]) {
    (m.version, holders, m.deleted, &m.file_id[..])
}

/// How many of `all` (one manifest per node copy) are exactly `m`'s
/// version and file: the holders [`rank`] weighs.
pub fn holders(m: &Manifest, all: &[&Manifest]) -> u32 {
    all.iter()
        .filter(|o| o.version == m.version && o.file_id == m.file_id)
        .count() as u32
}

/// The position in `all` (one manifest per node copy) of the one that
/// ranks first, holders counted among `all`.
pub fn first_ranked(all: &[&Manifest]) -> Option<usize> {
    (0..all.len()).max_by(|&a, &b| {
        rank(all[a], holders(all[a], all)).cmp(&rank(all[b], holders(all[b], all)))
    })
}

impl Versions {
    /// The newest version (which may be a tombstone), by [`rank`].
    pub fn newest(&self) -> Option<&Manifest> {
        let all: Vec<&Manifest> = self.found.iter().map(|(_, m)| m).collect();
        first_ranked(&all).map(|i| all[i])
    }

    /// The newest version if it is a live file.
    pub fn live(&self) -> Option<&Manifest> {
        self.newest().filter(|m| !m.deleted)
    }

    /// Highest version number seen (0 if none).
    pub fn max_version(&self) -> u64 {
        self.newest().map_or(0, |m| m.version)
    }

    /// Distinct file versions seen (for removing their parts).
    pub fn distinct(&self) -> Vec<&Manifest> {
        let mut out: Vec<&Manifest> = Vec::new();
        for (_, m) in &self.found {
            if !out.iter().any(|o| o.file_id == m.file_id) {
                out.push(m);
            }
        }
        out
    }
}

/// Fetches and opens manifest `id` from the given nodes (all ready nodes if
/// `nodes` is `None`), in parallel. Nodes that fail or serve something that
/// does not open are skipped: a bad copy never wins.
pub async fn fetch_versions(vault: &Vault, id: &BlobId, nodes: Option<&[usize]>) -> Versions {
    fetch_versions_within(vault, id, nodes, None).await
}

/// [`fetch_versions`] that, with `straggler`, waits only that long for the
/// last node once every other one has answered (or failed): a node that
/// died since the login is left behind in that time instead of when its
/// connection times out. The node left behind is marked quiet
/// ([`Session::mark_quiet`]). What it alone holds (a newer manifest that
/// reached no other node) is missed, as when it is down.
///
/// [`Session::mark_quiet`]: crate::net::Session::mark_quiet
pub async fn fetch_versions_within(
    vault: &Vault,
    id: &BlobId,
    nodes: Option<&[usize]>,
    straggler: Option<std::time::Duration>,
) -> Versions {
    let mut set = NodeTasks::new();
    let mut pending = Vec::new();
    for s in vault.ready() {
        if nodes.is_some_and(|n| !n.contains(&s.node)) {
            continue;
        }
        let s = s.clone();
        let id = id.clone();
        pending.push(s.node);
        set.spawn(
            s.node,
            async move { s.get_bytes(&id, MAX_SEALED_LEN).await },
        );
    }
    let total = pending.len();
    let mut found = Vec::new();
    let mut answered = 0u32;
    let mut copies = Vec::new();
    let mut problems = Vec::new();
    let mut last_since = None;
    loop {
        let joined = match straggler {
            Some(grace) if total > 1 && pending.len() == 1 => {
                let since = *last_since.get_or_insert_with(tokio::time::Instant::now);
                match tokio::time::timeout_at(since + grace, set.next(vault)).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        let node = pending[0];
                        tracing::warn!(node = %vault.node_name(node), "no answer {grace:?} after the other nodes; going on without it");
                        if let Some(s) = vault.session(node) {
                            s.mark_quiet();
                        }
                        problems.push(format!(
                            "{}: no answer {grace:?} after the other nodes",
                            vault.node_name(node)
                        ));
                        break;
                    }
                }
            }
            _ => set.next(vault).await,
        };
        let Some((node, joined)) = joined else { break };
        let result = match joined {
            Ok(result) => result,
            Err(why) => {
                pending.retain(|&n| n != node);
                problems.push(why);
                continue;
            }
        };
        pending.retain(|&n| n != node);
        if result.is_ok() {
            answered |= 1 << node;
        }
        match result {
            Ok(Some(sealed)) => match Manifest::open(&sealed, vault.master(), vault.user(), id) {
                Ok(m) => {
                    found.push((node, m));
                    copies.push((node, Some(sealed)));
                }
                Err(ManifestError::OtherFormat) => {
                    tracing::warn!(node = %vault.node_name(node), "ignoring a manifest that is not in storage format 2");
                    copies.push((node, Some(sealed)));
                }
                Err(ManifestError::Decryption) => {
                    tracing::warn!(node = %vault.node_name(node), "ignoring a manifest that fails authentication");
                    copies.push((node, Some(sealed)));
                }
            },
            Ok(None) => copies.push((node, None)),
            Err(e) => {
                tracing::warn!(node = %vault.node_name(node), "manifest read failed: {e}");
                problems.push(format!("{}: {e}", vault.node_name(node)));
            }
        }
    }
    Versions {
        found,
        answered,
        copies,
        problems,
    }
}

/// Removes the parts of `m` (best effort), asking each ready node only for
/// the copies the layout put there: a node never learns which other ids
/// belong to the same file.
pub async fn remove_parts(vault: &Vault, m: &Manifest) {
    let mut per_node: std::collections::HashMap<usize, Vec<BlobId>> =
        std::collections::HashMap::new();
    for (node, id) in crate::layout::blob_copies(vault, m) {
        per_node.entry(node).or_default().push(id);
    }
    let mut set = JoinSet::new();
    // One request per node; a node already known dead is not waited on
    // (what it keeps is an orphan for `repair`).
    for s in vault.ready().filter(|s| !s.is_closed()) {
        let Some(ids) = per_node.remove(&s.node) else {
            continue;
        };
        let s = s.clone();
        set.spawn(async move {
            if let Err(e) = s.delete_blobs(&ids).await {
                tracing::warn!(node = %s.name, "could not remove parts: {e}");
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// How many usable nodes a PUT needs: classic, all four (three with
/// `degraded`: every part keeps a copy); erasure-coded, K+M (K+1 with
/// `degraded`: one shard to spare); never fewer than a [`quorum`] for the
/// manifest.
pub fn put_needs(vault: &Vault, degraded: bool) -> usize {
    let n = vault.node_count();
    let data = match vault.redundancy() {
        Redundancy::Classic if degraded => n - 1,
        Redundancy::Classic => n,
        Redundancy::Rs(s) if degraded => s.data() + 1,
        Redundancy::Rs(s) => s.shards(),
    };
    data.max(quorum(vault))
}

/// Whether a PUT can go on with `out` nodes unusable (see [`put_needs`]).
pub fn put_tolerates(vault: &Vault, out: usize, degraded: bool) -> bool {
    vault.node_count().saturating_sub(out) >= put_needs(vault, degraded)
}

/// A count in words up to twelve, as messages say them.
pub(crate) fn count_word(n: usize) -> String {
    const WORDS: [&str; 13] = [
        "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    WORDS
        .get(n)
        .map_or_else(|| n.to_string(), |w| (*w).to_string())
}

/// Fails unless enough nodes are usable for a PUT ([`put_needs`]),
/// naming the ones that are not; returns a warning per unusable node when
/// it goes on without them. Classic without `degraded`: [`require_all`].
pub fn require_nodes(vault: &Vault, what: &str, degraded: bool) -> Result<Vec<String>, OpError> {
    if !degraded && vault.redundancy() == Redundancy::Classic {
        return require_all(vault, what).map(|()| Vec::new());
    }
    let missing = vault.unavailable();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    if put_tolerates(vault, missing.len(), degraded) {
        return Ok(missing
            .iter()
            .map(|(name, why)| match vault.redundancy() {
                Redundancy::Classic => format!(
                    "{name} was not usable ({why}): its copies are missing until you run repair with it back"
                ),
                Redundancy::Rs(_) => format!("{name} was not usable ({why})"),
            })
            .collect());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
    let need = count_word(put_needs(vault, degraded));
    Err(OpError::Unavailable(if degraded {
        format!("a degraded {what} needs {need} nodes: {}", names.join("; "))
    } else {
        let hint = if put_tolerates(vault, missing.len(), true) {
            " (put --degraded stores with fewer nodes; repair completes it later)"
        } else {
            ""
        };
        format!(
            "{what} needs {need} of the {} nodes: {}{hint}",
            vault.node_count(),
            names.join("; ")
        )
    }))
}

/// Fails unless every node is ready, naming the ones that are not.
pub fn require_all(vault: &Vault, what: &str) -> Result<(), OpError> {
    let missing = vault.unavailable();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
    let hint = if what == "PUT" && missing.len() == 1 {
        " (put --degraded stores with one node down; repair completes it later)"
    } else {
        ""
    };
    Err(OpError::Unavailable(format!(
        "{what} needs all {} nodes: {}{hint}",
        count_word(vault.node_count()),
        names.join("; ")
    )))
}
