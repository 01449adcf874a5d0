//! The catalog: every file of the vault, or of one prefix, from the
//! manifests the reachable nodes hold, read many per round trip.
//!
//! Each reachable node streams its manifests (`ListData` pages of up to 512,
//! contents inline) in id order on its own task, a page or two ahead; the
//! pages are merged by id, so memory holds a few pages per node plus one
//! small entry per file kept. For each manifest id the distinct copies are
//! opened (identical copies once): the newest valid one by
//! [`crate::ops::rank`] wins, as for a single file. Names are inside the
//! manifests, so the prefix filter comes after decryption; nodes never
//! learn it.
//!
//! A node's listing time ([`crate::net::Limits::listing`]) counts only the
//! time spent waiting for that node's answers, never the time its task
//! waits for the merge to take a page: a slow node slows the merge, but it
//! cannot use up the other nodes' budgets. A listing cut short (failed,
//! timed out, too long) says nothing about the ids after the last one it
//! reached: each [`Entry`] records which nodes' listings covered it
//! ([`Entry::known_on`]), and [`Catalog::complete`] which ran to their end.
//!
//! [`presence`] then asks the nodes, in batches, which part copies they
//! hold (`StatBlobs`), for LIST's `[incomplete]` and the checks that build
//! on it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use wire::{BlobId, MAX_BATCH};

use crate::crypto::format::{is_format1_id, part_blob_len, MANIFEST_ID_PREFIX};
use crate::manifest::{Manifest, MAX_SEALED_LEN};
use crate::net::{NetError, Session};
use crate::ops::first_ranked;
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
    /// Nodes (bit i = node i) whose answer covered this id: they either
    /// listed it or listed past it (so they hold no copy). A node not here
    /// is unknown for this id (down, or its listing was cut short before
    /// it): it may hold any version.
    pub known_on: u32,
    /// Each copy a node listed, as listed: what a conditional write to
    /// that node must expect to replace.
    pub copies: Vec<NodeCopy>,
    /// Older versions seen, whose parts may still be stored.
    pub older: Vec<Manifest>,
}

/// One node's copy of a manifest, as the survey saw it.
#[derive(Debug, Clone)]
pub struct NodeCopy {
    /// The node.
    pub node: usize,
    /// [`wire::content_hash`] of the sealed bytes it listed (`None`: it
    /// listed the id without its contents, too large to be a manifest).
    pub hash: Option<[u8; wire::CONTENT_HASH_LEN]>,
    /// The manifest, if the copy opened (`None`: corrupt, another format,
    /// or listed without contents).
    pub manifest: Option<Manifest>,
}

impl Entry {
    /// The newest version if it is a live file (not a tombstone).
    pub fn live(&self) -> Option<&Manifest> {
        (!self.newest.deleted).then_some(&self.newest)
    }

    /// Node `node`'s copy, if it listed one.
    pub fn copy_on(&self, node: usize) -> Option<&NodeCopy> {
        self.copies.iter().find(|c| c.node == node)
    }

    /// How many of the nodes that listed this id hold exactly `m`'s
    /// version and file id (what [`rank`](crate::ops::rank) weighs).
    pub fn holders(&self, m: &Manifest) -> u32 {
        self.copies
            .iter()
            .filter(|c| {
                c.manifest
                    .as_ref()
                    .is_some_and(|o| o.version == m.version && o.file_id == m.file_id)
            })
            .count() as u32
    }

    /// Every distinct valid version the nodes listed (newest included):
    /// the manifests whose parts may still be stored.
    pub fn versions(&self) -> impl Iterator<Item = &Manifest> {
        std::iter::once(&self.newest).chain(&self.older)
    }
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Files (tombstones included) under the prefix, by name.
    pub entries: Vec<Entry>,
    /// `node: problem` for each node whose listing could not be used whole.
    pub problems: Vec<String>,
    /// Nodes (bit i = node i) whose manifest listing ran to its end: for
    /// them, an id the catalog does not list is one they do not hold. A
    /// node down, failed, timed out or cut short is not here.
    pub complete: u32,
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
    /// The listing ran to its end.
    Done,
    Failed(String),
}

/// Streams one node's manifests, page by page, into `tx`. The node's time
/// budget ([`crate::net::Limits::listing`]) is spent only while waiting
/// for its answers: time blocked handing a page to the merge (which may be
/// waiting on another, slower node) is not the node's.
async fn list_node(s: Session, tx: mpsc::Sender<Page>) {
    let limits = s.limits();
    let mut spent = Duration::ZERO;
    let mut after: Option<BlobId> = None;
    let mut seen = 0usize;
    let failed = loop {
        let Some(left) = limits.listing.checked_sub(spent).filter(|d| !d.is_zero()) else {
            break too_slow(limits.listing);
        };
        let started = tokio::time::Instant::now();
        let page = tokio::time::timeout(
            left,
            s.list_data(
                after.as_ref(),
                MANIFEST_ID_PREFIX,
                PAGE_ENTRIES,
                PAGE_BYTES,
                MAX_SEALED_LEN as u32,
            ),
        )
        .await;
        spent += started.elapsed();
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break too_slow(limits.listing),
        };
        seen = seen.saturating_add(page.entries.len());
        if seen > limits.listing_entries {
            break format!(
                "listing exceeds {} entries; ignoring the rest of this node's listing",
                limits.listing_entries
            );
        }
        after = page.entries.last().map(|(e, _)| e.id.clone());
        let more = page.more;
        let entries = page.entries.into_iter().map(|(e, d)| (e.id, d)).collect();
        if tx.send(Page::Entries(entries)).await.is_err() {
            return;
        }
        if !more {
            let _ = tx.send(Page::Done).await;
            return;
        }
    };
    let _ = tx.send(Page::Failed(failed)).await;
}

/// The problem of a listing that used up its time.
fn too_slow(budget: Duration) -> String {
    format!(
        "listing took longer than {} s; ignoring the rest of this node's listing",
        budget.as_secs_f64()
    )
}

/// One node's place in the merge.
struct Head {
    node: usize,
    rx: mpsc::Receiver<Page>,
    page: std::vec::IntoIter<(BlobId, Option<Vec<u8>>)>,
    next: Option<(BlobId, Option<Vec<u8>>)>,
    /// The listing ran to its end (meaningful once `next` is `None`).
    complete: bool,
}

impl Head {
    fn new(node: usize, rx: mpsc::Receiver<Page>) -> Head {
        Head {
            node,
            rx,
            page: Vec::new().into_iter(),
            next: None,
            complete: false,
        }
    }

    /// Moves to the node's next entry, fetching the next page if needed.
    async fn advance(&mut self, problems: &mut Vec<String>, names: &[String]) {
        loop {
            if let Some(e) = self.page.next() {
                self.next = Some(e);
                return;
            }
            self.next = None;
            match self.rx.recv().await {
                Some(Page::Entries(entries)) => self.page = entries.into_iter(),
                Some(Page::Done) => {
                    self.complete = true;
                    return;
                }
                Some(Page::Failed(why)) => {
                    problems.push(format!("{}: {why}", names[self.node]));
                    return;
                }
                None => {
                    problems.push(format!(
                        "{}: listing ended early; ignoring the rest of this node's listing",
                        names[self.node]
                    ));
                    return;
                }
            }
        }
    }

    /// Whether this node's listing covers `id`, the smallest id not merged
    /// yet: it has reached `id` or beyond, or it ran to its end.
    fn covers(&self, id: &BlobId) -> bool {
        match &self.next {
            Some((next, _)) => next >= id,
            None => self.complete,
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
        heads.push(Head::new(s.node, rx));
    }
    let mut catalog = Catalog::default();
    let mut unreadable = 0usize;
    let complete = merge_heads(
        heads,
        &names,
        &mut catalog.problems,
        |id, copies, known_on| {
            if let Some(mut entry) = merge(vault, &id, copies, known_on, &mut unreadable) {
                if under(&entry.newest.name, prefix) {
                    if !keep_sealed {
                        entry.sealed = Vec::new();
                    }
                    catalog.entries.push(entry);
                }
            }
        },
    )
    .await;
    catalog.unreadable = unreadable;
    catalog.complete = complete;
    catalog
        .entries
        .sort_by(|a, b| a.newest.name.cmp(&b.newest.name));
    catalog.problems.sort();
    catalog.format1_objects = count_format1(vault).await;
    catalog
}

/// Merges the nodes' listings by id: `each(id, copies, known_on)` for
/// every id some node listed, in id order, with the nodes whose listings
/// covered it. Returns the nodes whose listings ran to their end.
async fn merge_heads(
    mut heads: Vec<Head>,
    names: &[String],
    problems: &mut Vec<String>,
    mut each: impl FnMut(BlobId, Copies, u32),
) -> u32 {
    for h in &mut heads {
        h.advance(problems, names).await;
    }
    while let Some(min) = heads
        .iter()
        .filter_map(|h| h.next.as_ref().map(|(id, _)| id.clone()))
        .min()
    {
        // Which listings reached this id, before any head moves past it.
        let known_on = heads
            .iter()
            .filter(|h| h.covers(&min))
            .fold(0u32, |k, h| k | 1 << h.node);
        let mut copies: Copies = Vec::new();
        for h in &mut heads {
            if h.next.as_ref().is_some_and(|(id, _)| *id == min) {
                let (_, data) = h.next.take().expect("checked");
                copies.push((h.node, data));
                h.advance(problems, names).await;
            }
        }
        each(min, copies, known_on);
    }
    heads
        .iter()
        .filter(|h| h.complete)
        .fold(0u32, |k, h| k | 1 << h.node)
}

/// Opens the copies of one manifest id and keeps the newest valid version
/// (by [`rank`](crate::ops::rank)); `known_on`: the nodes whose answers covered the id.
fn merge(
    vault: &Vault,
    id: &BlobId,
    copies: Copies,
    known_on: u32,
    unreadable: &mut usize,
) -> Option<Entry> {
    let mut opened: Vec<(Vec<u8>, Option<Manifest>)> = Vec::new();
    let mut listed: Vec<NodeCopy> = Vec::new();
    // (node, index into `opened`) of each copy that opened.
    let mut found: Vec<(usize, usize)> = Vec::new();
    let mut listed_on = 0u32;
    for (node, data) in copies {
        listed_on |= 1 << node;
        let Some(data) = data else {
            *unreadable += 1;
            listed.push(NodeCopy {
                node,
                hash: None,
                manifest: None,
            });
            continue;
        };
        let hash = wire::content_hash(&data);
        let at = match opened.iter().position(|(d, _)| *d == data) {
            Some(at) => at,
            None => {
                // Another format or a failed authentication: not this copy.
                let m = Manifest::open(&data, vault.master(), vault.user(), id).ok();
                opened.push((data, m));
                opened.len() - 1
            }
        };
        let manifest = opened[at].1.clone();
        match manifest {
            Some(_) => found.push((node, at)),
            None => *unreadable += 1,
        }
        listed.push(NodeCopy {
            node,
            hash: Some(hash),
            manifest,
        });
    }
    let all: Vec<&Manifest> = found
        .iter()
        .map(|&(_, at)| opened[at].1.as_ref().expect("opened"))
        .collect();
    let at = found[first_ranked(&all)?].1;
    let newest = opened[at].1.clone().expect("opened");
    let mut current_on = 0u32;
    let mut older: Vec<Manifest> = Vec::new();
    for &(node, i) in &found {
        let m = opened[i].1.as_ref().expect("opened");
        if m.version == newest.version && m.file_id == newest.file_id {
            current_on |= 1 << node;
        } else if !older.iter().any(|o| o.file_id == m.file_id) {
            older.push(m.clone());
        }
    }
    let sealed = opened.swap_remove(at).0;
    Some(Entry {
        id: id.clone(),
        newest,
        sealed,
        current_on,
        listed_on,
        known_on,
        copies: listed,
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
    // Per id: the nodes that answered for it.
    let mut known: HashMap<BlobId, u32> = HashMap::new();
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
                    *known.entry(id.clone()).or_default() |= 1 << node;
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
            let known_on = known.get(&id).copied().unwrap_or(0);
            if let Some(entry) = merge(vault, &id, c, known_on, &mut unreadable) {
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
    /// For each erasure-coded file asked about, each shard: held by its
    /// recorded node with the right length (`Some(true)`), not
    /// (`Some(false)`), or unknown (`None`: the node is down, failed to
    /// answer or is no longer in dfc.conf); `None` for a classic file.
    pub shards: Vec<Option<Vec<Option<bool>>>>,
    /// `node: problem` for nodes that could not be asked.
    pub problems: Vec<String>,
    /// Nodes (bit i = node i) that failed to answer: their copies are
    /// unknown, not missing.
    pub failed: u32,
}

impl Presence {
    /// Whether file `i` can be rebuilt from the copies found.
    pub fn complete(&self, i: usize, m: &Manifest) -> bool {
        match (&self.shards[i], &m.shards) {
            (Some(held), Some(layout)) => {
                held.iter().filter(|h| **h == Some(true)).count() >= layout.scheme.data()
            }
            _ => self.parts[i].iter().all(|&holders| holders != 0),
        }
    }
}

/// Asks the reachable nodes which part copies of `files` they hold. With
/// `every_copy`, both holders of every part are asked; otherwise the second
/// holder only when the first lacks a good copy (enough to know whether a
/// file can be rebuilt).
pub async fn presence(vault: &Vault, files: &[&Manifest], every_copy: bool) -> Presence {
    let coded: Vec<(&Manifest, &crate::manifest::Shards)> = files
        .iter()
        .filter_map(|m| Some((*m, m.shards.as_ref()?)))
        .collect();
    let (held, problems) = crate::ops::shards::presence(vault, &coded).await;
    let mut held = held.into_iter();
    let mut out = Presence {
        parts: vec![[0; PARTS]; files.len()],
        shards: files
            .iter()
            .map(|m| m.shards.as_ref().and_then(|_| held.next()))
            .collect(),
        problems,
        failed: 0,
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
                if m.shards.is_some() {
                    continue;
                }
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
    out.failed = failed;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> BlobId {
        BlobId::new(format!("m2-{s}")).unwrap()
    }

    /// A node's listing as its task would send it: pages of ids, then how
    /// it ended (`None`: its task vanished without a word).
    fn head(node: usize, pages: &[&[&str]], end: Option<Page>) -> Head {
        let (tx, rx) = mpsc::channel(pages.len() + 1);
        for p in pages {
            let entries = p.iter().map(|s| (id(s), Some(vec![1]))).collect();
            tx.try_send(Page::Entries(entries)).unwrap();
        }
        if let Some(end) = end {
            tx.try_send(end).unwrap();
        }
        Head::new(node, rx)
    }

    async fn merged(heads: Vec<Head>) -> (Vec<(String, u32, u32)>, u32, Vec<String>) {
        let names: Vec<String> = (1..=4).map(|i| format!("DFS{i}")).collect();
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        let complete = merge_heads(heads, &names, &mut problems, |id, copies, known| {
            let listed = copies.iter().fold(0u32, |k, (n, _)| k | 1 << n);
            seen.push((id.as_str()[3..].to_string(), listed, known));
        })
        .await;
        (seen, complete, problems)
    }

    #[tokio::test]
    async fn a_listing_cut_short_is_unknown_past_its_last_id_never_missing() {
        let heads = vec![
            // DFS1: whole.
            head(0, &[&["a", "c"], &["e"]], Some(Page::Done)),
            // DFS2: failed (timed out) after "b".
            head(1, &[&["a", "b"]], Some(Page::Failed("timed out".into()))),
            // DFS3: whole, holds only "c".
            head(2, &[&["c"]], Some(Page::Done)),
            // DFS4: its task ended without saying the listing was done.
            head(3, &[&["a"], &["d"]], None),
        ];
        let (seen, complete, problems) = merged(heads).await;
        assert_eq!(complete, 0b0101);
        assert_eq!(
            seen,
            [
                ("a".into(), 0b1011, 0b1111),
                // DFS2 listed "b" itself; DFS4 is at "d": both cover it.
                ("b".into(), 0b0010, 0b1111),
                // DFS2's listing stopped at "b": unknown from here on.
                ("c".into(), 0b0101, 0b1101),
                ("d".into(), 0b1000, 0b1101),
                // DFS4's listing ended early after "d": unknown for "e".
                ("e".into(), 0b0001, 0b0101),
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("DFS2: timed out"), "{problems:?}");
        assert!(problems[1].starts_with("DFS4: listing ended early"));
    }

    #[tokio::test]
    async fn an_empty_complete_listing_covers_every_id() {
        let heads = vec![
            head(0, &[&["a"]], Some(Page::Done)),
            head(1, &[], Some(Page::Done)),
            head(2, &[], Some(Page::Failed("refused".into()))),
        ];
        let (seen, complete, _) = merged(heads).await;
        assert_eq!(complete, 0b011);
        assert_eq!(seen, [("a".into(), 0b001, 0b011)]);
    }
}
