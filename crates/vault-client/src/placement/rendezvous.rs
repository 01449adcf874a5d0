//! Rendezvous (highest random weight) placement of erasure-coded files over
//! any number of nodes (issue 19).
//!
//! Every node gets a score for a file: a hash of the file id and the node's
//! name, scaled by the node's capacity weight (`w / -ln(u)`, `u` the hash
//! read as a number in (0, 1): the weighted form of Schindelhauer and
//! Schomaker, so a node of weight 2 is chosen about twice as often). A
//! file's K+M shards go to the K+M best-scoring nodes, shard `i` to the
//! `i`-th best. Adding a node changes a file's set only when the new node
//! outscores one of them (about (K+M)/N of files, one shard each): about
//! 1/N of all shards move. Removing a node moves only its own shards.
//!
//! Placement is computed once, at PUT, and recorded in the sealed manifest
//! by node name: a GET reads the recorded nodes and never recomputes
//! placement from today's configuration. Only `repair --rebalance` asks
//! again, and moves what is no longer where placement wants it. Names are
//! compared case-insensitively, as everywhere in dfc.conf.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

/// A node placement may choose: its name (as in dfc.conf) and capacity
/// weight (relative; equal weights give every node the same share).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    /// The node's name.
    pub name: &'a str,
    /// Its relative capacity, greater than 0.
    pub weight: f64,
}

/// The node's hash for a file: 64 bits of BLAKE2b-256 over a label, the
/// file id and the lower-case name.
fn hash(file_id: &[u8], name: &str) -> u64 {
    let mut h = Blake2b::<U32>::new();
    h.update(b"vault placement v3");
    h.update((file_id.len() as u64).to_be_bytes());
    h.update(file_id);
    let name = name.to_ascii_lowercase();
    h.update((name.len() as u64).to_be_bytes());
    h.update(name.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The node's score for a file: `weight / -ln(u)`, `u` in (0, 1).
fn score(file_id: &[u8], c: &Candidate<'_>) -> f64 {
    // 53 bits, centred in their interval: never 0, never 1.
    let u = ((hash(file_id, c.name) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    c.weight / -u.ln()
}

/// The `count` nodes placement wants for `file_id`, best first, as indices
/// into `nodes` (fewer if there are fewer nodes with a positive weight).
/// Ties (the same name twice) go to the earlier node.
pub fn rank(file_id: &[u8], nodes: &[Candidate<'_>], count: usize) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = nodes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.weight > 0.0 && c.weight.is_finite())
        .map(|(i, c)| (score(file_id, c), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(count).map(|(_, i)| i).collect()
}

/// What moving one file's shards to where placement now wants them takes:
/// for each shard held by a node that is no longer wanted (removed from
/// dfc.conf, or outscored by a new node), the wanted node that should take
/// it. Shards already on a wanted node stay where they are, so only the
/// shards that must move do.
///
/// `held[i]` is the node recorded for shard `i`; `wanted` the nodes
/// [`rank`] gives now (names; as many as shards).
pub fn moves<'a>(held: &[&str], wanted: &[&'a str]) -> Vec<(usize, &'a str)> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let mut free = wanted.iter().filter(|w| !held.iter().any(|h| same(h, w)));
    held.iter()
        .enumerate()
        .filter(|(_, h)| !wanted.iter().any(|w| same(h, w)))
        .filter_map(|(i, _)| Some((i, *free.next()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[String]) -> Vec<Candidate<'_>> {
        names
            .iter()
            .map(|n| Candidate {
                name: n,
                weight: 1.0,
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("DFS{i}")).collect()
    }

    fn file(i: u32) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id
    }

    #[test]
    fn distinct_deterministic_and_case_blind() {
        let six = names(6);
        let lower: Vec<String> = six.iter().map(|n| n.to_lowercase()).collect();
        for f in 0..200 {
            let r = rank(&file(f), &nodes(&six), 6);
            let mut sorted = r.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4, 5]);
            assert_eq!(r, rank(&file(f), &nodes(&six), 6));
            assert_eq!(r, rank(&file(f), &nodes(&lower), 6));
            assert_eq!(r[..4], rank(&file(f), &nodes(&six), 4)[..]);
        }
        assert_eq!(rank(&file(1), &nodes(&six), 9).len(), 6);
    }

    #[test]
    fn every_node_gets_its_share() {
        let six = names(6);
        let mut first = [0u32; 6];
        let mut any = [0u32; 6];
        for f in 0..6000 {
            let r = rank(&file(f), &nodes(&six), 3);
            first[r[0]] += 1;
            for i in r {
                any[i] += 1;
            }
        }
        for n in 0..6 {
            assert!((850..1150).contains(&first[n]), "{first:?}");
            assert!((2700..3300).contains(&any[n]), "{any:?}");
        }
    }

    #[test]
    fn weights_are_honoured() {
        let names = names(3);
        let cands = [
            Candidate {
                name: &names[0],
                weight: 2.0,
            },
            Candidate {
                name: &names[1],
                weight: 1.0,
            },
            Candidate {
                name: &names[2],
                weight: 1.0,
            },
        ];
        let mut first = [0u32; 3];
        for f in 0..8000 {
            first[rank(&file(f), &cands, 1)[0]] += 1;
        }
        // Expected shares 1/2, 1/4, 1/4.
        assert!((3700..4300).contains(&first[0]), "{first:?}");
        assert!((1800..2200).contains(&first[1]), "{first:?}");
        // A weight of 0 takes no shard.
        let none = [
            Candidate {
                name: "a",
                weight: 0.0,
            },
            cands[1],
        ];
        assert_eq!(rank(&file(1), &none, 2), vec![1]);
    }

    /// Growing from six nodes to seven moves about 1/7 of the shards, and
    /// only to the new node; shrinking moves only the lost node's shards.
    #[test]
    fn adding_or_removing_a_node_moves_about_one_nth() {
        let six = names(6);
        let seven = names(7);
        let files = 3000;
        let (mut moved, mut total) = (0usize, 0usize);
        for f in 0..files {
            let id = file(f);
            let before: Vec<&str> = rank(&id, &nodes(&six), 6)
                .into_iter()
                .map(|i| six[i].as_str())
                .collect();
            let after: Vec<&str> = rank(&id, &nodes(&seven), 6)
                .into_iter()
                .map(|i| seven[i].as_str())
                .collect();
            let m = moves(&before, &after);
            assert!(m.len() <= 1);
            for (_, to) in &m {
                assert_eq!(*to, "DFS7");
            }
            moved += m.len();
            total += before.len();

            // DFS2 removed: its shard, and only it, moves.
            let five: Vec<String> = six.iter().filter(|n| *n != "DFS2").cloned().collect();
            let wanted: Vec<&str> = rank(&id, &nodes(&five), 5)
                .into_iter()
                .map(|i| five[i].as_str())
                .collect();
            let four_plus: Vec<&str> = before[..5].to_vec();
            let m = moves(&four_plus, &wanted);
            let on_dfs2 = four_plus.iter().filter(|n| **n == "DFS2").count();
            assert_eq!(m.len(), on_dfs2);
            assert!(m.iter().all(|(i, _)| four_plus[*i] == "DFS2"));
        }
        let share = moved as f64 / total as f64;
        assert!((0.10..0.19).contains(&share), "moved {share}");
    }
}
