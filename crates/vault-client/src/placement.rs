//! The placement contract: how a file is split into four parts and which two
//! of the four nodes keep each part.
//!
//! Everything here is 0-based: node 0 is `DFS1` (the first `Server` line of
//! `dfc.conf`) and part 0 is the brief's part 1. With `x = MD5(contents) mod 4`
//! node `i` keeps parts `(i - x) mod 4` and `(i + 1 - x) mod 4`, so every part
//! lives on two neighbouring nodes and any three nodes hold every part.
//!
//! [`rendezvous`] places erasure-coded files (`Redundancy rs K+M`) over any
//! number of nodes.

pub mod rendezvous;

/// Number of parts a file is split into, and number of nodes.
pub const PARTS: usize = 4;

/// The placement value `x`: the MD5 digest of the file contents read as a
/// big-endian 128-bit integer, modulo 4.
///
/// Since 4 divides 2^8, this is the low two bits of the digest's last byte.
pub fn placement_x(md5: &[u8; 16]) -> usize {
    (u128::from_be_bytes(*md5) % PARTS as u128) as usize
}

/// The two 0-based parts node `node` (0-based) keeps when the placement
/// value is `x`: `[(node - x) mod 4, (node + 1 - x) mod 4]`.
///
/// `x` and `node` are taken modulo 4, so any value is accepted.
pub fn parts_for_node(x: usize, node: usize) -> [usize; 2] {
    let x = x % PARTS;
    let node = node % PARTS;
    let first = (node + PARTS - x) % PARTS;
    [first, (first + 1) % PARTS]
}

/// The two 0-based nodes that keep 0-based part `part` when the placement
/// value is `x`.
///
/// The first node is the one for which `part` is the first listed part of
/// [`parts_for_node`]; the second is the node before it, for which `part` is
/// the second listed part. `x` and `part` are taken modulo 4.
pub fn nodes_for_part(x: usize, part: usize) -> [usize; 2] {
    let x = x % PARTS;
    let part = part % PARTS;
    let first = (part + x) % PARTS;
    [first, (first + PARTS - 1) % PARTS]
}

/// The byte ranges of the four parts of an `n`-byte file, as
/// `(offset, len)` pairs.
///
/// With `c = ceil(n / 4)`, part `k` is bytes `[k*c, min(n, (k+1)*c))`. Parts
/// at the end may be empty (a 1-byte file has parts of 1, 0, 0 and 0 bytes).
/// The ranges are contiguous and cover `[0, n)` exactly, for every `u64`.
pub fn part_ranges(n: u64) -> [(u64, u64); PARTS] {
    // ceil(n / 4); `div_ceil` cannot overflow.
    let c = n.div_ceil(PARTS as u64);
    let mut out = [(0u64, 0u64); PARTS];
    for (k, slot) in out.iter_mut().enumerate() {
        // k * c <= 3 * ceil(n / 4) fits in u128 trivially; clamp to n.
        let start = (k as u128 * c as u128).min(n as u128) as u64;
        let end = ((k as u128 + 1) * c as u128).min(n as u128) as u64;
        *slot = (start, end - start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brief's table, 1-based, written out literally: row x, column DFSi.
    const TABLE: [[[usize; 2]; 4]; 4] = [
        [[1, 2], [2, 3], [3, 4], [4, 1]],
        [[4, 1], [1, 2], [2, 3], [3, 4]],
        [[3, 4], [4, 1], [1, 2], [2, 3]],
        [[2, 3], [3, 4], [4, 1], [1, 2]],
    ];

    #[test]
    fn parts_for_node_matches_the_brief_table() {
        for (x, row) in TABLE.iter().enumerate() {
            for (node, expected) in row.iter().enumerate() {
                let got = parts_for_node(x, node).map(|p| p + 1);
                assert_eq!(got, *expected, "x={x} DFS{}", node + 1);
            }
        }
    }

    #[test]
    fn nodes_for_part_is_consistent_with_parts_for_node() {
        for x in 0..PARTS {
            for part in 0..PARTS {
                let [a, b] = nodes_for_part(x, part);
                assert_ne!(a, b);
                assert_eq!(parts_for_node(x, a)[0], part, "x={x} part={part}");
                assert_eq!(parts_for_node(x, b)[1], part, "x={x} part={part}");
                // And no other node holds it.
                for node in 0..PARTS {
                    let holds = parts_for_node(x, node).contains(&part);
                    assert_eq!(holds, node == a || node == b);
                }
            }
        }
    }

    #[test]
    fn every_part_on_two_nodes_and_any_three_nodes_cover_all() {
        for x in 0..PARTS {
            let mut count = [0usize; PARTS];
            for node in 0..PARTS {
                let [p, q] = parts_for_node(x, node);
                assert_ne!(p, q);
                count[p] += 1;
                count[q] += 1;
            }
            assert_eq!(count, [2; PARTS], "x={x}");
            for down in 0..PARTS {
                let mut covered = [false; PARTS];
                for node in (0..PARTS).filter(|&n| n != down) {
                    for p in parts_for_node(x, node) {
                        covered[p] = true;
                    }
                }
                assert_eq!(covered, [true; PARTS], "x={x} node {down} down");
            }
        }
    }

    #[test]
    fn placement_x_on_known_digests() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e; 0x7e mod 4 = 2.
        let empty: [u8; 16] = hex::decode("d41d8cd98f00b204e9800998ecf8427e")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(placement_x(&empty), 2);
        // MD5("abc") = 900150983cd24fb0d6963f7d28e17f72; 0x72 mod 4 = 2.
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661; 0x61 mod 4 = 1.
        let a: [u8; 16] = hex::decode("0cc175b9c0f1b6a831c399e269772661")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(placement_x(&a), 1);
        let mut d = [0u8; 16];
        assert_eq!(placement_x(&d), 0);
        d[15] = 3;
        assert_eq!(placement_x(&d), 3);
        // High bytes never matter: 2^8 is a multiple of 4.
        d = [0xff; 16];
        d[15] = 0xfc;
        assert_eq!(placement_x(&d), 0);
    }

    fn check_ranges(n: u64) -> [(u64, u64); PARTS] {
        let r = part_ranges(n);
        let mut next = 0u64;
        for (off, len) in r {
            assert_eq!(off, next, "n={n}: {r:?}");
            next = off.checked_add(len).expect("no overflow");
        }
        assert_eq!(next, n, "n={n}: {r:?}");
        r
    }

    #[test]
    fn part_ranges_small_and_exact() {
        assert_eq!(check_ranges(0), [(0, 0); 4]);
        assert_eq!(check_ranges(1), [(0, 1), (1, 0), (1, 0), (1, 0)]);
        assert_eq!(check_ranges(2), [(0, 1), (1, 1), (2, 0), (2, 0)]);
        assert_eq!(check_ranges(3), [(0, 1), (1, 1), (2, 1), (3, 0)]);
        assert_eq!(check_ranges(4), [(0, 1), (1, 1), (2, 1), (3, 1)]);
        assert_eq!(check_ranges(5), [(0, 2), (2, 2), (4, 1), (5, 0)]);
        assert_eq!(check_ranges(7), [(0, 2), (2, 2), (4, 2), (6, 1)]);
        assert_eq!(check_ranges(8), [(0, 2), (2, 2), (4, 2), (6, 2)]);
        assert_eq!(check_ranges(9), [(0, 3), (3, 3), (6, 3), (9, 0)]);
        assert_eq!(
            check_ranges(1_000_001),
            [
                (0, 250_001),
                (250_001, 250_001),
                (500_002, 250_001),
                (750_003, 249_998)
            ]
        );
    }

    #[test]
    fn part_ranges_huge_sizes_do_not_overflow() {
        for n in [
            u64::MAX,
            u64::MAX - 1,
            u64::MAX - 2,
            u64::MAX - 3,
            u64::MAX / 4,
            u64::MAX / 4 * 3 + 1,
            1 << 63,
            (1 << 63) + 1,
        ] {
            let r = check_ranges(n);
            let c = n.div_ceil(4);
            assert_eq!(r[0], (0, c), "n={n}");
        }
        assert_eq!(
            part_ranges(u64::MAX),
            [
                (0, 1 << 62),
                (1 << 62, 1 << 62),
                (2 << 62, 1 << 62),
                (3 << 62, (1 << 62) - 1)
            ]
        );
    }
}
