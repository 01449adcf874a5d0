//! The catalog: every file of the vault, or of one prefix, from the
//! manifests the reachable nodes hold, read many per round trip.
//!
//! Each reachable node streams its manifests (`ListData` pages of up to 512,
//! contents inline) in id order on its own task, a page or two ahead; the
//! pages are merged by id, so memory holds a few pages per node plus one
//! small entry per file kept. For each manifest id the distinct copies are
//! opened (identical copies once): the newest valid one wins, as for a
//! single file. Names are inside the manifests, so the prefix filter comes
//! after decryption; nodes never learn it.
//!
//! [`presence`] then asks the nodes, in batches, which part copies they
//! hold (`StatBlobs`), for LIST's `[incomplete]` and the checks that build
//! on it.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use wire::{BlobId, MAX_BATCH};

use crate::crypto::format::{is_format1_id, part_blob_len, MANIFEST_ID_PREFIX};
use crate::manifest::{Manifest, MAX_SEALED_LEN};
use crate::net::{NetError, Session};
use crate::path::under;
use crate::placement::{nodes_for_part, PARTS};
use crate::vault::Vault;

/// Entries per `ListData` page.
const PAGE_ENTRIES: u32 = 512;
/// Inline bytes per page.
const PAGE_BYTES: u32 = 4 << 20;
/// `StatBlobs` requests in flight per node.
const STAT_CONCURRENCY: usize = 8;
/// Files whose part copies are asked about at a time.
const PRESENCE_WINDOW: usize = 8192;

/// The copies of one manifest: (node, contents; `None` when listed without).
type Copies = Vec<(usize, Option<Vec<u8>>)>;

/// One file as the reachable nodes know it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The manifest's id.
    pub id: BlobId,
    /// The newest valid version (possibly a tombstone).
    pub newest: Manifest,
    /// Its sealed bytes, as a node holds them (what repair copies).
    pub sealed: Vec<u8>,
    /// Nodes (bit i = node i) holding a manifest of exactly that version.
    pub current_on: u32,
    /// Nodes (bit i = node i) listing this manifest id at all.
    pub listed_on: u32,
    /// Older versions seen, whose parts may still be stored.
    pub older: Vec<Manifest>,
}

impl Entry {
    /// The newest version if it is a live file (not a tombstone).
    pub fn live(&self) -> Option<&Manifest> {
        (!self.newest.deleted).then_some(&self.newest)
    }
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Files (tombstones included) under the prefix, by name.
    pub entries: Vec<Entry>,
    /// `node: problem` for each node whose listing could not be used whole.
    pub problems: Vec<String>,
    /// Manifests that failed authentication or were not format 2.
    pub unreadable: usize,
    /// Format-1 (Vault 0.1) manifests on the node holding the most.
    pub format1_objects: usize,
}

impl Catalog {
    /// The live files, by name.
    pub fn live(&self) -> impl Iterator<Item = &Manifest> {
        self.entries.iter().filter_map(Entry::live)
    }

    /// The entry of `name`, if any (tombstones included).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.newest.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// What one node's listing task sends.
enum Page {
    Entries(Vec<(BlobId, Option<Vec<u8>>)>),
    Failed(String),
}

/// Streams one node's manifests, page by page, into `tx`.
async fn list_node(s: Session, tx: mpsc::Sender<Page>) {
    let limits = s.limits();
    let run = async {
        let mut after: Option<BlobId> = None;
        let mut seen = 0usize;
        loop {
            let page = s
                .list_data(
                    after.as_ref(),
                    MANIFEST_ID_PREFIX,
                    PAGE_ENTRIES,
                    PAGE_BYTES,
                    MAX_SEALED_LEN as u32,
                )
                .await
                .map_err(|e| e.to_string())?;
            seen += page.entries.len();
            if seen > limits.listing_entries {
                return Err(format!(
                    "listing exceeds {} entries; ignoring the rest of this node's listing",
                    limits.listing_entries
                ));
            }
            after = page.entries.last().map(|(e, _)| e.id.clone());
            let more = page.more;
            let entries = page.entries.into_iter().map(|(e, d)| (e.id, d)).collect();
            if tx.send(Page::Entries(entries)).await.is_err() || !more {
                return Ok(());
            }
        }
    };
    let outcome = tokio::time::timeout(limits.listing, run).await;
    let failed = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => format!(
            "listing took longer than {} s; ignoring the rest of this node's listing",
            limits.listing.as_secs()
        ),
    };
    let _ = tx.send(Page::Failed(failed)).await;
}

/// One node's place in the merge.
struct Head {
    node: usize,
    rx: mpsc::Receiver<Page>,
    page: std::vec::IntoIter<(BlobId, Option<Vec<u8>>)>,
    next: Option<(BlobId, Option<Vec<u8>>)>,
}

impl Head {
    /// Moves to the node's next entry, fetching the next page if needed.
    async fn advance(&mut self, problems: &mut Vec<String>, names: &[String]) {
        loop {
            if let Some(e) = self.page.next() {
                self.next = Some(e);
                return;
            }
            match self.rx.recv().await {
                Some(Page::Entries(entries)) => self.page = entries.into_iter(),
                Some(Page::Failed(why)) => {
                    problems.push(format!("{}: {why}", names[self.node]));
                    self.next = None;
                    return;
                }
                None => {
                    self.next = None;
                    return;
                }
            }
        }
    }
}

/// Reads every manifest the reachable nodes hold and keeps the files under
/// `prefix` (a normalised prefix; empty: all).
pub async fn scan(vault: &Vault, prefix: &str) -> Catalog {
    scan_with(vault, prefix, true).await
}

/// [`scan`] without keeping each entry's sealed bytes ([`Entry::sealed`]
/// is empty): what reading needs, in less memory.
pub async fn scan_light(vault: &Vault, prefix: &str) -> Catalog {
    scan_with(vault, prefix, false).await
}

async fn scan_with(vault: &Vault, prefix: &str, keep_sealed: bool) -> Catalog {
    let names: Vec<String> = vault.node_names().map(str::to_string).collect();
    let mut heads = Vec::new();
    for s in vault.ready() {
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(list_node(s.clone(), tx));
        heads.push(Head {
            node: s.node,
            rx,
            page: Vec::new().into_iter(),
            next: None,
        });
    }
    let mut catalog = Catalog::default();
    for h in &mut heads {
        h.advance(&mut catalog.problems, &names).await;
    }
    while let Some(min) = heads
        .iter()
        .filter_map(|h| h.next.as_ref().map(|(id, _)| id.clone()))
        .min()
    {
        let mut copies: Copies = Vec::new();
        for h in &mut heads {
            if h.next.as_ref().is_some_and(|(id, _)| *id == min) {
                let (_, data) = h.next.take().expect("checked");
                copies.push((h.node, data));
                h.advance(&mut catalog.problems, &names).await;
            }
        }
        if let Some(mut entry) = merge(vault, &min, copies, &mut catalog.unreadable) {
            if under(&entry.newest.name, prefix) {
                if !keep_sealed {
                    entry.sealed = Vec::new();
                }
                catalog.entries.push(entry);
            }
        }
    }
    catalog
        .entries
        .sort_by(|a, b| a.newest.name.cmp(&b.newest.name));
    catalog.problems.sort();
    catalog.format1_objects = count_format1(vault).await;
    catalog
}

/// Opens the copies of one manifest id and keeps the newest valid version.
fn merge(vault: &Vault, id: &BlobId, copies: Copies, unreadable: &mut usize) -> Option<Entry> {
    let mut opened: Vec<(Vec<u8>, Option<Manifest>)> = Vec::new();
    let mut found: Vec<(usize, Manifest, usize)> = Vec::new();
    let mut listed_on = 0u32;
    for (node, data) in copies {
        listed_on |= 1 << node;
        let Some(data) = data else {
            *unreadable += 1;
            continue;
        };
        let at = match opened.iter().position(|(d, _)| *d == data) {
            Some(at) => at,
            None => {
                // Another format or a failed authentication: not this copy.
                let m = Manifest::open(&data, vault.master(), vault.user(), id).ok();
                opened.push((data, m));
                opened.len() - 1
            }
        };
        match &opened[at].1 {
            Some(m) => found.push((node, m.clone(), at)),
            None => *unreadable += 1,
        }
    }
    let (newest, at) = found
        .iter()
        .map(|(_, m, at)| (m, *at))
        .max_by(|(a, _), (b, _)| {
            (a.version, a.deleted, &a.file_id).cmp(&(b.version, b.deleted, &b.file_id))
        })
        .map(|(m, at)| (m.clone(), at))?;
    let sealed = opened.swap_remove(at).0;
    let mut current_on = 0u32;
    let mut older: Vec<Manifest> = Vec::new();
    for (node, m, _) in found {
        if m.version == newest.version && m.file_id == newest.file_id {
            current_on |= 1 << node;
        } else if !older.iter().any(|o| o.file_id == m.file_id) {
            older.push(m);
        }
    }
    Some(Entry {
        id: id.clone(),
        newest,
        sealed,
        current_on,
        listed_on,
        older,
    })
}

/// Manifests fetched per `GetBlobs` request.
const LOOKUP_BATCH: usize = 256;

/// The entries of `names` (those with a valid manifest on some reachable
/// node), learned with a few `GetBlobs` per node instead of a round trip
/// per name; and `node: problem` for nodes that could not answer.
pub async fn lookup(vault: &Vault, names: &[String]) -> (HashMap<String, Entry>, Vec<String>) {
    let ids: Vec<BlobId> = names
        .iter()
        .map(|n| vault.master().manifest_id(n))
        .collect();
    let mut copies: HashMap<BlobId, Copies> = HashMap::new();
    let mut problems = Vec::new();
    let mut set = JoinSet::new();
    for s in vault.ready() {
        for chunk in ids.chunks(LOOKUP_BATCH) {
            let (s, chunk) = (s.clone(), chunk.to_vec());
            set.spawn(async move {
                let max = (chunk.len() * MAX_SEALED_LEN) as u64;
                let got = s.get_blobs(&chunk, max).await;
                (s.node, chunk, got)
            });
        }
    }
    while let Some(joined) = set.join_next().await {
        let Ok((node, chunk, got)) = joined else {
            continue;
        };
        match got {
            Ok(blobs) => {
                for (id, data) in chunk.into_iter().zip(blobs) {
                    if let Some(data) = data {
                        copies.entry(id).or_default().push((node, Some(data)));
                    }
                }
            }
            Err(e) => problems.push(format!("{}: {e}", vault.node_name(node))),
        }
    }
    let mut unreadable = 0;
    let mut out = HashMap::new();
    for (name, id) in names.iter().zip(ids) {
        if let Some(c) = copies.remove(&id) {
            if let Some(entry) = merge(vault, &id, c, &mut unreadable) {
                out.insert(name.clone(), entry);
            }
        }
    }
    problems.sort();
    problems.dedup();
    (out, problems)
}

/// Format-1 manifests (`m-` ids) on the node holding the most: a page is
/// enough to say there are some.
async fn count_format1(vault: &Vault) -> usize {
    let mut set = JoinSet::new();
    for s in vault.ready() {
        let s = s.clone();
        set.spawn(async move {
            s.call(&wire::Request::List {
                after: None,
                limit: wire::MAX_LIST_PAGE,
                prefix: Some("m-".into()),
            })
            .await
        });
    }
    let mut most = 0;
    while let Some(joined) = set.join_next().await {
        if let Ok(Ok(wire::Response::Listing { entries, .. })) = joined {
            let n = entries
                .iter()
                .filter(|e| is_format1_id(e.id.as_str()))
                .count();
            most = most.max(n);
        }
    }
    most
}

/// Which copies of which parts the nodes hold with the right length.
pub struct Presence {
    /// For each file asked about, for each part, a bit per node holding a
    /// good copy (only the holders the placement names are asked).
    pub parts: Vec<[u32; PARTS]>,
    /// `node: problem` for nodes that could not be asked.
    pub problems: Vec<String>,
}

impl Presence {
    /// Whether file `i` can be rebuilt from the copies found.
    pub fn complete(&self, i: usize) -> bool {
        self.parts[i].iter().all(|&holders| holders != 0)
    }
}

/// Asks the reachable nodes which part copies of `files` they hold. With
/// `every_copy`, both holders of every part are asked; otherwise the second
/// holder only when the first lacks a good copy (enough to know whether a
/// file can be rebuilt).
pub async fn presence(vault: &Vault, files: &[&Manifest], every_copy: bool) -> Presence {
    let mut out = Presence {
        parts: vec![[0; PARTS]; files.len()],
        problems: Vec::new(),
    };
    // Nodes that failed to answer are not asked again.
    let mut failed = 0u32;
    // A window of files at a time: the questions in memory stay bounded
    // whatever the vault's size.
    for start in (0..files.len()).step_by(PRESENCE_WINDOW) {
        let end = (start + PRESENCE_WINDOW).min(files.len());
        for round in 0..2 {
            // Per node: (file, part, id, expected stored length).
            let mut asks: HashMap<usize, Vec<(usize, usize, BlobId, u64)>> = HashMap::new();
            for (f, m) in files.iter().enumerate().take(end).skip(start) {
                for (k, (_, len)) in m.parts().into_iter().enumerate() {
                    if !every_copy && out.parts[f][k] != 0 {
                        continue;
                    }
                    let node = nodes_for_part(m.placement(), k)[round];
                    if vault.session(node).is_none() || failed & (1 << node) != 0 {
                        continue;
                    }
                    asks.entry(node).or_default().push((
                        f,
                        k,
                        vault.master().part_id(&m.file_id, k),
                        part_blob_len(len),
                    ));
                }
            }
            let mut set = JoinSet::new();
            for (node, list) in asks {
                let s = vault.session(node).expect("checked").clone();
                set.spawn(async move { (node, stat_all(&s, list).await) });
            }
            while let Some(joined) = set.join_next().await {
                let Ok((node, result)) = joined else { continue };
                match result {
                    Ok(good) => {
                        for (f, k) in good {
                            out.parts[f][k] |= 1 << node;
                        }
                    }
                    Err(e) => {
                        failed |= 1 << node;
                        out.problems.push(format!("{}: {e}", vault.node_name(node)));
                    }
                }
            }
        }
    }
    out.problems.sort();
    out.problems.dedup();
    out
}

/// Asks one node about `list` in batches, several at once; returns the
/// (file, part) pairs it holds with the expected length.
async fn stat_all(
    s: &Session,
    list: Vec<(usize, usize, BlobId, u64)>,
) -> Result<Vec<(usize, usize)>, NetError> {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(STAT_CONCURRENCY));
    let mut set = JoinSet::new();
    for chunk in list.chunks(MAX_BATCH) {
        let chunk = chunk.to_vec();
        let (s, limit) = (s.clone(), limit.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let ids: Vec<BlobId> = chunk.iter().map(|(_, _, id, _)| id.clone()).collect();
            let stats = s.stat_blobs(&ids).await?;
            Ok::<_, NetError>(
                chunk
                    .into_iter()
                    .zip(stats)
                    .filter(|((_, _, _, want), st)| st.is_some_and(|st| st.len == *want))
                    .map(|((f, k, _, _), _)| (f, k))
                    .collect::<Vec<_>>(),
            )
        });
    }
    let mut good = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(mut g)) => good.append(&mut g),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(NetError::Connection(format!("stat task failed: {e}"))),
        }
    }
    Ok(good)
}
