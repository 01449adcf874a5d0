//! The commit: writing new manifests (a PUT's new version, a DELETE's
//! tombstone) so that a write counts only once a majority of the manifest
//! holders ([`super::quorum`]) has it, and two writers of one name end with
//! one version everywhere.
//!
//! 1. Every ready node gets the manifest as a conditional write: replace
//!    only what the writer read there (`Expect::Hash` of that copy, or
//!    `Expect::Absent`; a node whose copy is not known is asked for
//!    `Absent`, so anything there makes it refuse). Each node does the
//!    check and the replacement atomically, so of two writers who read the
//!    same copy only one replaces it there.
//! 2. Where every node took it, it is committed. Otherwise the writer
//!    settles the name: it reads every node's copy again and ranks the
//!    valid ones ([`super::rank`]: version, then how many nodes hold it,
//!    tombstone, file id). If its own manifest ranks first it writes it,
//!    conditionally again, to the nodes holding something lower; if another
//!    writer's ranks first it replaces its own copies with that one. Both
//!    writers of a race rank alike, so they converge on one version; a few
//!    rounds at most.
//! 3. The outcome: committed (some read found it on a quorum, even if a
//!    newer version followed; with the other manifests it outranked on the
//!    way, whose parts go with the replaced version's), lost to another
//!    writer (its parts may be removed only when its manifest is on no
//!    node), or not committed (too few nodes took it; the parts stay, since
//!    a node that took the manifest may still serve it).

use std::collections::HashMap;

use wire::{content_hash, BlobId, ErrorCode, Expect, MAX_BATCH, MAX_BATCH_BYTES};

use super::{first_ranked, holders, quorum, rank, NodeTasks};
use crate::manifest::{Manifest, MAX_SEALED_LEN};
use crate::net::{NetError, Session};
use crate::vault::Vault;

/// Settling rounds before a writer gives up (each is one read and one
/// write per node).
const SETTLE_ROUNDS: usize = 4;

/// One conditional write: (write, id, bytes, condition).
type Conditional = (usize, BlobId, Vec<u8>, Expect);
/// Each node's conditional writes.
type PerNode = HashMap<usize, Vec<Conditional>>;

/// One manifest to commit.
pub(crate) struct Write {
    /// The manifest id (derived from the name).
    pub id: BlobId,
    /// The new manifest.
    pub manifest: Manifest,
    /// Its sealed bytes.
    pub sealed: Vec<u8>,
    /// What the writer read on each node (indexed by node): `Some(expect)`
    /// where the node answered, `None` where it is not known.
    pub seen: Vec<Option<Expect>>,
}

impl Write {
    /// `seen` from the copies a read returned: nodes that answered get the
    /// condition "what they answered", the others none.
    pub fn seen_from(
        node_count: usize,
        copies: &[(usize, Option<Vec<u8>>)],
    ) -> Vec<Option<Expect>> {
        let mut seen = vec![None; node_count];
        for (node, copy) in copies {
            if let Some(slot) = seen.get_mut(*node) {
                *slot = Some(Expect::of(copy.as_deref()));
            }
        }
        seen
    }
}

/// How a commit ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// On at least a quorum of nodes (it may have been superseded since by
    /// a newer version); `missed` names the others and why.
    Committed {
        /// `node: reason` for each node without it.
        missed: Vec<String>,
        /// Other manifests of the name the commit found and outranked on
        /// the way (besides what the writer read first): their parts are
        /// the caller's to remove with the replaced version's.
        replaced: Vec<Manifest>,
    },
    /// Another writer's manifest of the name ranks first and was kept.
    Lost {
        /// The version kept (boxed: a manifest is large beside the other
        /// outcomes).
        winner: Box<Manifest>,
        /// Whether this writer's manifest may still be on some node (then
        /// its parts must stay, for `repair` to judge).
        left: bool,
    },
    /// Fewer than a quorum took it.
    NotCommitted {
        /// `node: reason` for each node without it.
        why: Vec<String>,
        /// Whether it may be on some node (then its parts must stay).
        left: bool,
    },
}

/// Per write, per node: what happened to one conditional write.
#[derive(Debug, Clone)]
enum Sent {
    Stored,
    Conflict,
    /// Refused for another reason (the node answered: it has not stored).
    Refused(String),
    /// No answer: it may or may not have landed.
    Unknown(String),
}

/// Commits `writes` (manifests of distinct names); one outcome per write,
/// in order.
pub(crate) async fn commit(vault: &Vault, writes: &[Write]) -> Vec<Outcome> {
    let n = vault.node_count();
    let mut per_node: PerNode = HashMap::new();
    for s in vault.ready() {
        for (i, w) in writes.iter().enumerate() {
            let expect = w
                .seen
                .get(s.node)
                .cloned()
                .flatten()
                .unwrap_or(Expect::Absent);
            per_node
                .entry(s.node)
                .or_default()
                .push((i, w.id.clone(), w.sealed.clone(), expect));
        }
    }
    let mut sent = put_conditional(vault, writes.len(), per_node).await;
    let ready: Vec<usize> = vault.ready().map(|s| s.node).collect();
    let mut out = Vec::with_capacity(writes.len());
    let mut unsettled = Vec::new();
    for (i, answers) in sent.iter().enumerate() {
        let stored = ready
            .iter()
            .filter(|&&node| matches!(answers.get(&node), Some(Sent::Stored)))
            .count();
        if stored == ready.len() && stored >= quorum(vault) {
            out.push(Some(Outcome::Committed {
                missed: missed(vault, n, &ready, answers, true),
                replaced: Vec::new(),
            }));
        } else {
            out.push(None);
            unsettled.push(i);
        }
    }
    if !unsettled.is_empty() {
        settle(vault, writes, &unsettled, &mut sent, &mut out).await;
    }
    out.into_iter()
        .map(|o| o.expect("every write settled"))
        .collect()
}

/// `node: reason` for every manifest holder that does not hold the write
/// (for a `committed` one, only the nodes that were usable: the others are
/// named once by the caller).
fn missed(
    vault: &Vault,
    n: usize,
    ready: &[usize],
    sent: &HashMap<usize, Sent>,
    committed: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for node in crate::layout::manifest_nodes(n) {
        let name = vault.node_name(node);
        match sent.get(&node) {
            Some(Sent::Stored) => {}
            Some(Sent::Conflict) => out.push(format!("{name}: holds another version")),
            Some(Sent::Refused(why) | Sent::Unknown(why)) => out.push(format!("{name}: {why}")),
            None if ready.contains(&node) => out.push(format!("{name}: not written")),
            // A node unusable since the login is the caller's to name once
            // (a degraded PUT says so), not once per file.
            None if committed => {}
            None => {
                let why = vault
                    .unavailable()
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .map_or_else(|| "unreachable".to_string(), |(_, why)| why);
                out.push(format!("{name}: {why}"));
            }
        }
    }
    out
}

/// Sends each node its conditional writes `(write, id, bytes, expect)`;
/// per write (of `count`), what each node answered.
async fn put_conditional(
    vault: &Vault,
    count: usize,
    per_node: PerNode,
) -> Vec<HashMap<usize, Sent>> {
    let mut set = NodeTasks::new();
    let mut asked: HashMap<usize, Vec<usize>> = HashMap::new();
    for (node, list) in per_node {
        let Some(s) = vault.session(node).cloned() else {
            continue;
        };
        asked.insert(node, list.iter().map(|(i, ..)| *i).collect());
        set.spawn(node, async move { put_list(&s, list).await });
    }
    let mut out = vec![HashMap::new(); count];
    while let Some((node, joined)) = set.next(vault).await {
        match joined {
            Ok(answers) => {
                for (i, sent) in answers {
                    out[i].insert(node, sent);
                }
            }
            // A failed task may have sent some writes: their outcome is
            // not known.
            Err(why) => {
                for &i in asked.get(&node).into_iter().flatten() {
                    out[i].insert(node, Sent::Unknown(why.clone()));
                }
            }
        }
    }
    out
}

/// One node's conditional writes, in requests of at most [`MAX_BATCH`].
async fn put_list(s: &Session, list: Vec<Conditional>) -> Vec<(usize, Sent)> {
    let items: Vec<(BlobId, &[u8], Option<Expect>)> = list
        .iter()
        .map(|(_, id, b, e)| (id.clone(), b.as_slice(), Some(e.clone())))
        .collect();
    let mut out = Vec::with_capacity(list.len());
    for batch in s.put_blobs_batched(&items, MAX_BATCH_BYTES).await {
        let writes = list[batch.range].iter().map(|(i, ..)| *i);
        match batch.result {
            Ok(each) => out.extend(writes.zip(each).map(|(i, failed)| {
                let sent = match failed {
                    None => Sent::Stored,
                    Some(e) if e.is_code(ErrorCode::Conflict) => Sent::Conflict,
                    Some(e) => Sent::Refused(e.to_string()),
                };
                (i, sent)
            })),
            Err(e) => {
                // The node answered with an error for the whole request,
                // or did not answer: only the first is a sure "not stored".
                let sent = if matches!(e, NetError::Node { .. }) {
                    Sent::Refused(e.to_string())
                } else {
                    Sent::Unknown(e.to_string())
                };
                out.extend(writes.map(|i| (i, sent.clone())));
            }
        }
    }
    out
}

/// What one node holds of one name, read again while settling.
#[derive(Clone)]
enum Held {
    Nothing,
    /// A copy, valid (`Some`) or not.
    Copy(Vec<u8>, Option<Box<Manifest>>),
}

/// Reads every ready node's copy of the manifests `ids` (one `GetBlobs`
/// per node and chunk); per id, node -> what it holds (nodes that failed
/// are left out).
async fn read_all(vault: &Vault, writes: &[Write], which: &[usize]) -> Vec<HashMap<usize, Held>> {
    let ids: Vec<BlobId> = which.iter().map(|&i| writes[i].id.clone()).collect();
    let mut set = NodeTasks::new();
    for s in vault.ready() {
        let (s, ids) = (s.clone(), ids.clone());
        set.spawn(s.node, async move {
            s.get_blobs_batched(&ids, MAX_BATCH / 2, |r| (r.len() * MAX_SEALED_LEN) as u64)
                .await
        });
    }
    let mut out = vec![HashMap::new(); which.len()];
    // A node that failed is left out: what it holds is not known.
    while let Some((node, joined)) = set.next(vault).await {
        let Ok(Ok(got)) = joined else {
            continue;
        };
        for (at, data) in got.into_iter().enumerate() {
            let held = match data {
                None => Held::Nothing,
                Some(bytes) => {
                    let w = &writes[which[at]];
                    let m = crate::manifest::Manifest::open(
                        &bytes,
                        vault.master(),
                        vault.user(),
                        &w.id,
                    )
                    .ok()
                    .map(Box::new);
                    Held::Copy(bytes, m)
                }
            };
            out[at].insert(node, held);
        }
    }
    out
}

/// `None` when `w`'s own manifest ranks first among `copies` (as it does
/// when nothing valid is there); otherwise the copy that does.
fn first(w: &Write, copies: &HashMap<usize, Held>) -> Option<(Manifest, Vec<u8>)> {
    let valid: Vec<(&Manifest, &Vec<u8>)> = copies
        .values()
        .filter_map(|h| match h {
            Held::Copy(b, Some(m)) => Some((&**m, b)),
            _ => None,
        })
        .collect();
    let all: Vec<&Manifest> = valid.iter().map(|(m, _)| *m).collect();
    let (m, b) = valid[first_ranked(&all)?];
    let beats_ours = rank(m, holders(m, &all)) > rank(&w.manifest, holders(&w.manifest, &all));
    (beats_ours && m.file_id != w.manifest.file_id).then(|| (m.clone(), b.clone()))
}

/// Settles the writes `which` that did not reach every node (see the
/// module's step 2), filling in their outcomes.
async fn settle(
    vault: &Vault,
    writes: &[Write],
    which: &[usize],
    sent: &mut [HashMap<usize, Sent>],
    out: &mut [Option<Outcome>],
) {
    let n = vault.node_count();
    // Per write: whether a read saw it on a quorum (then it counted, even
    // if a newer version follows later), and the lower-ranked manifests
    // seen while it ranked first (superseded by it).
    let mut seen = Seen::default();
    let mut open: Vec<usize> = which.to_vec();
    for _round in 0..SETTLE_ROUNDS {
        if open.is_empty() {
            break;
        }
        let held = read_all(vault, writes, &open).await;
        let mut per_node: PerNode = HashMap::new();
        let mut still = Vec::new();
        for (at, &i) in open.iter().enumerate() {
            seen.note(vault, &writes[i], i, &held[at]);
            let w = &writes[i];
            let decided = first(w, &held[at]);
            let target = match &decided {
                None => (&w.manifest, &w.sealed),
                Some((m, b)) => (m, b),
            };
            for (&node, h) in &held[at] {
                let replace = match h {
                    Held::Copy(bytes, _) if bytes == target.1 => false,
                    // Ours goes where nothing valid ranks above it: the
                    // version is higher, or a same-version copy of
                    // another writer ranks lower (checked by `first`).
                    Held::Nothing | Held::Copy(_, None) => decided.is_none(),
                    Held::Copy(_, Some(m)) if decided.is_none() => m.version <= target.0.version,
                    // Having lost, a writer replaces only its own copies.
                    Held::Copy(_, Some(m)) => m.file_id == w.manifest.file_id,
                };
                if replace {
                    let expect = match h {
                        Held::Nothing => Expect::Absent,
                        Held::Copy(bytes, _) => Expect::Hash(content_hash(bytes).to_vec()),
                    };
                    per_node.entry(node).or_default().push((
                        i,
                        w.id.clone(),
                        target.1.clone(),
                        expect,
                    ));
                    if still.last() != Some(&i) {
                        still.push(i);
                    }
                }
            }
        }
        if per_node.is_empty() {
            break;
        }
        let answers = put_conditional(vault, writes.len(), per_node).await;
        for (i, a) in answers.into_iter().enumerate() {
            sent[i].extend(a);
        }
        open = still;
    }
    // The final word: one more read of every write's name.
    let held = read_all(vault, writes, which).await;
    let ready: Vec<usize> = vault.ready().map(|s| s.node).collect();
    for (at, &i) in which.iter().enumerate() {
        seen.note(vault, &writes[i], i, &held[at]);
        let w = &writes[i];
        let copies = &held[at];
        let on = holding(w, copies);
        let unknown = ready.iter().any(|node| !copies.contains_key(node));
        let left = !on.is_empty() || unknown;
        let mut per = sent[i].clone();
        for (node, h) in copies {
            let ours = matches!(h, Held::Copy(_, Some(m)) if m.file_id == w.manifest.file_id);
            if ours {
                per.insert(*node, Sent::Stored);
            } else if matches!(per.get(node), Some(Sent::Stored)) {
                per.insert(*node, Sent::Conflict);
            }
        }
        let committed = seen.reached.contains(&i);
        out[i] = Some(match first(w, copies) {
            // Counted once, then outdone by a newer version: still ours.
            Some((winner, _)) if committed && winner.version > w.manifest.version => {
                Outcome::Committed {
                    missed: Vec::new(),
                    replaced: seen.replaced.remove(&i).unwrap_or_default(),
                }
            }
            Some((winner, _)) => Outcome::Lost {
                winner: Box::new(winner),
                left,
            },
            None if committed => Outcome::Committed {
                missed: missed(vault, n, &ready, &per, true),
                replaced: seen.replaced.remove(&i).unwrap_or_default(),
            },
            None => Outcome::NotCommitted {
                why: missed(vault, n, &ready, &per, false),
                left,
            },
        });
    }
}

/// What settling saw of each write over its reads.
#[derive(Default)]
struct Seen {
    /// Writes a read found on a quorum: they counted, even if a newer
    /// version follows later.
    reached: std::collections::HashSet<usize>,
    /// Per write, the lower-ranked manifests seen while it ranked first
    /// (superseded by it).
    replaced: HashMap<usize, Vec<Manifest>>,
}

impl Seen {
    fn note(&mut self, vault: &Vault, w: &Write, i: usize, copies: &HashMap<usize, Held>) {
        if holding(w, copies).len() >= quorum(vault) {
            self.reached.insert(i);
        }
        if first(w, copies).is_none() {
            let list = self.replaced.entry(i).or_default();
            for h in copies.values() {
                if let Held::Copy(_, Some(m)) = h {
                    if m.file_id != w.manifest.file_id
                        && !list.iter().any(|o| o.file_id == m.file_id)
                    {
                        list.push((**m).clone());
                    }
                }
            }
        }
    }
}

/// The nodes holding `w`'s own manifest.
fn holding(w: &Write, copies: &HashMap<usize, Held>) -> Vec<usize> {
    copies
        .iter()
        .filter(|(_, h)| matches!(h, Held::Copy(_, Some(m)) if m.file_id == w.manifest.file_id))
        .map(|(&node, _)| node)
        .collect()
}
