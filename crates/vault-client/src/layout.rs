//! Where every copy of a file version belongs: check and repair ask only
//! this module (PUT and GET use [`nodes_for_part`], which it is built on).
//! Today's layout is the brief's (four parts, each on
//! two neighbouring nodes chosen by the MD5 placement, the manifest on
//! every node); a future layout (more nodes, erasure coding) changes this
//! module, not its callers.

use crate::manifest::Manifest;
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
