//! Where every copy of a file version belongs, and where a new one goes:
//! the redundancy of new files ([`Redundancy`]), the classic placement
//! ([`part_copies`], built on [`nodes_for_part`]), the erasure-coded one
//! (`place` for a new version, [`wanted`] for a rebalance, both by
//! rendezvous hashing), and every stored blob of a version with its node
//! ([`blob_copies`]).
//! Today's layout is the brief's (four parts, each on
//! two neighbouring nodes chosen by the MD5 placement, the manifest on
//! every node); a future layout (more nodes, erasure coding) changes this
//! module, not its callers.

use crate::erasure::Scheme;
use crate::manifest::{Manifest, Shards};
use crate::placement::rendezvous::{rank, Candidate};
use crate::vault::Vault;

/// How new files are stored: dfc.conf's `Redundancy` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redundancy {
    /// The brief's layout: four parts, each on two of exactly four nodes
    /// by the MD5 placement table. The default with four servers.
    Classic,
    /// Reed-Solomon: K data and M parity shards on K+M distinct nodes
    /// chosen by rendezvous hashing; any K rebuild the file.
    Rs(Scheme),
}

impl Redundancy {
    /// The default for `servers` configured nodes: classic with four,
    /// `rs (N-2)+2` with more, `rs 2+1` with three.
    pub fn default_for(servers: usize) -> Option<Redundancy> {
        match servers {
            4 => Some(Redundancy::Classic),
            3 => Scheme::new(2, 1).ok().map(Redundancy::Rs),
            n if n > 4 => Scheme::new(n - 2, 2).ok().map(Redundancy::Rs),
            _ => None,
        }
    }
}

impl std::fmt::Display for Redundancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Redundancy::Classic => f.write_str("classic"),
            Redundancy::Rs(s) => write!(f, "{s}"),
        }
    }
}
use crate::placement::{nodes_for_part, PARTS};

/// One copy of one part: which part, on which node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Copy {
    /// The part (0-based).
    pub part: usize,
    /// The node (0-based, dfc.conf order).
    pub node: usize,
}

/// Every part copy of `m`, part by part.
pub fn part_copies(m: &Manifest) -> Vec<Copy> {
    (0..PARTS)
        .flat_map(|part| {
            nodes_for_part(m.placement(), part)
                .into_iter()
                .map(move |node| Copy { part, node })
        })
        .collect()
}

/// The nodes that keep a copy of part `part` of `m`.
pub fn holders(m: &Manifest, part: usize) -> Vec<usize> {
    nodes_for_part(m.placement(), part).to_vec()
}

/// Every stored blob of the version `m` and the node (0-based, dfc.conf
/// order) that should hold it: classic, each part's two copies; erasure
/// coded, each shard on the node the manifest records (a recorded node no
/// longer in dfc.conf is left out: nothing can be asked of it).
pub fn blob_copies(vault: &crate::vault::Vault, m: &Manifest) -> Vec<(usize, wire::BlobId)> {
    match &m.shards {
        None => part_copies(m)
            .into_iter()
            .map(|c| (c.node, vault.master().part_id(&m.file_id, c.part)))
            .collect(),
        Some(layout) => {
            let ids = vault
                .master()
                .sharded(vault.user(), &layout.data_id, layout.scheme.shards())
                .ids;
            layout
                .nodes
                .iter()
                .zip(ids)
                .filter_map(|(name, id)| Some((vault.node_index(name)?, id)))
                .collect()
        }
    }
}

/// Where the shards of a new version of a file with id `file_id` go: the
/// K+M nodes rendezvous hashing ranks first among the usable ones. With
/// fewer usable nodes, a `degraded` PUT takes the best-ranked unusable
/// ones for the missing shards (stored later by `repair`) as long as at
/// least K+1 shards can be stored; otherwise the PUT is refused, naming
/// the nodes. Returns the layout and a warning per shard left missing.
pub(crate) fn place(
    vault: &Vault,
    scheme: Scheme,
    file_id: &[u8],
    degraded: bool,
) -> Result<(Shards, Vec<String>), crate::ops::OpError> {
    let names: Vec<&str> = vault.node_names().collect();
    let candidates: Vec<Candidate<'_>> = names
        .iter()
        .map(|name| Candidate { name, weight: 1.0 })
        .collect();
    let ranked = rank(file_id, &candidates, names.len());
    let usable = |i: usize| vault.session(i).is_some_and(|s| !s.is_closed());
    let n = scheme.shards();
    let mut chosen: Vec<usize> = ranked
        .iter()
        .copied()
        .filter(|&i| usable(i))
        .take(n)
        .collect();
    let mut warnings = Vec::new();
    if chosen.len() < n {
        let down: Vec<String> = (0..names.len())
            .filter(|&i| !usable(i))
            .map(|i| format!("{} {}", vault.node_name(i), vault.why_unusable(i)))
            .collect();
        let need = scheme.data() + 1;
        if !degraded || chosen.len() < need {
            let hint = if !degraded && chosen.len() >= need {
                format!(" (put --degraded stores with at least {need} of the {n} shards; repair completes it later)")
            } else {
                String::new()
            };
            return Err(crate::ops::OpError::Unavailable(format!(
                "PUT with {scheme} needs {n} usable nodes{}: {} of {} are ({}){hint}",
                if degraded {
                    format!(" (a degraded PUT at least {need})")
                } else {
                    String::new()
                },
                chosen.len(),
                names.len(),
                down.join("; ")
            )));
        }
        for &i in ranked.iter().filter(|&&i| !usable(i)) {
            if chosen.len() == n {
                break;
            }
            warnings.push(format!(
                "{} was not usable ({}): its shard is missing until you run repair with it back",
                vault.node_name(i),
                vault.why_unusable(i)
            ));
            chosen.push(i);
        }
    }
    let shards = Shards {
        scheme,
        data_id: file_id.to_vec(),
        nodes: chosen
            .iter()
            .map(|&i| vault.node_name(i).to_string())
            .collect(),
    };
    Ok((shards, warnings))
}

/// The nodes placement wants today for data `data_id` coded into `count`
/// shards: names, best first.
pub fn wanted(vault: &Vault, data_id: &[u8], count: usize) -> Vec<String> {
    let names: Vec<&str> = vault.node_names().collect();
    let candidates: Vec<Candidate<'_>> = names
        .iter()
        .map(|name| Candidate { name, weight: 1.0 })
        .collect();
    rank(data_id, &candidates, count)
        .into_iter()
        .map(|i| names[i].to_string())
        .collect()
}

/// The nodes that keep a file's manifest: all of them.
pub fn manifest_nodes(node_count: usize) -> impl Iterator<Item = usize> {
    0..node_count
}

/// Number of parts a file is split into.
pub fn parts() -> usize {
    PARTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_has_two_copies_on_distinct_neighbours() {
        for x in 0u8..4 {
            let m = Manifest {
                name: "a".into(),
                size: 10,
                md5: {
                    let mut d = vec![0; 16];
                    d[15] = x;
                    d
                },
                file_id: vec![1; 16],
                version: 1,
                deleted: false,
                mtime_ns: None,
                extra: Default::default(),
                shards: None,
            };
            let copies = part_copies(&m);
            assert_eq!(copies.len(), 8);
            for part in 0..4 {
                let nodes: Vec<usize> = copies
                    .iter()
                    .filter(|c| c.part == part)
                    .map(|c| c.node)
                    .collect();
                assert_eq!(nodes, holders(&m, part));
                assert_ne!(nodes[0], nodes[1]);
                assert_eq!((nodes[0] + 3) % 4, nodes[1], "neighbours");
            }
            // Every node keeps exactly two parts.
            for node in 0..4 {
                assert_eq!(copies.iter().filter(|c| c.node == node).count(), 2);
            }
        }
    }
}
