//! Erasure-coded files (`Redundancy rs K+M`, issue 19) on real in-process
//! nodes: any M nodes down, every pair down, what the classic layout loses
//! and RS(2,2) does not, and nodes lying about shards.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use vault_client::config::ClientConfig;
use vault_client::erasure::Scheme;
use vault_client::manifest::Manifest;
use vault_client::net::client_endpoint;
use vault_client::ops::{self, OpError};
use vault_client::vault::{OpenOptions, Vault};
use vault_node::testing::{self, TestCluster};
use zeroize::Zeroizing;

use super::common::*;

/// A test body under a limit of its own: these stop and start nodes many
/// times.
async fn within<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test timed out")
}

/// `n` in-process nodes DFS1..DFSn knowing Alice (upgraded login, so any
/// one node lets her in).
async fn cluster(n: usize) -> TestCluster {
    TestCluster::start_n(n, &testing::upgraded_user("Alice", ALICE).unwrap())
        .await
        .unwrap()
}

/// The 0-based node called `name` (`DFS3` is 2).
fn node_of(name: &str) -> usize {
    name[3..].parse::<usize>().unwrap() - 1
}

/// Alice's dfc.conf for `c` with `redundancy` (a `Redundancy` line, or
/// none for the default).
fn config_rs(c: &TestCluster, redundancy: Option<&str>) -> ClientConfig {
    let mut text = c.dfc_text("Alice", None);
    if let Some(line) = redundancy {
        text.push_str(line);
        text.push('\n');
    }
    ClientConfig::parse(&text, &c.dir().join("dfc.conf")).unwrap()
}

async fn open_rs(c: &TestCluster, redundancy: Option<&str>) -> Vault {
    let endpoint = client_endpoint(c.ca_pem().as_bytes()).unwrap();
    let options = OpenOptions {
        state: None,
        limits: limits(),
    };
    Vault::open_with(
        &endpoint,
        &config_rs(c, redundancy),
        &Zeroizing::new(ALICE.into()),
        &options,
    )
    .await
    .unwrap()
}

/// Reads `name` back whole (with `allow_stale` when fewer than a majority
/// of the nodes can answer) through GET and through a range read.
async fn read_back(v: &Vault, c: &TestCluster, name: &str, allow_stale: bool) -> Vec<u8> {
    let (m, _) = ops::get::find_with(v, name, allow_stale).await.unwrap();
    let out = c.dir().join(format!("{name}.out"));
    ops::get::get_version(v, &m, &out, true, progress())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// The bytes `range` of `m` through `read_range` (which must succeed).
async fn read_range(v: &Vault, m: &Manifest, range: std::ops::Range<u64>) -> Vec<u8> {
    let (out, r) = super::range::read(v, m, range).await;
    r.unwrap();
    out
}

const SIZES: [usize; 5] = [0, 1, 63 * 1024, 64 * 1024 + 1, 5 << 20];

/// Six nodes, RS(4,2): each file's six shards on six distinct nodes,
/// 1.5x the bytes, and with every pair of nodes stopped in turn every
/// file reads back byte for byte, whole and by range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_rs_4_2_survive_every_pair_down() {
    within(600, async {
        let mut c = cluster(6).await;
        let v = open_rs(&c, None).await;
        assert_eq!(
            v.redundancy(),
            vault_client::layout::Redundancy::Rs(Scheme::new(4, 2).unwrap())
        );
        let mut files = Vec::new();
        // The sizes: 0, 1, 63 KiB, 64 KiB + 1, 5 MiB and 50 MiB.
        for (n, size) in SIZES.into_iter().chain([50 << 20]).enumerate() {
            let name = format!("f{n}.bin");
            let bytes = data(size, n as u64 + 1);
            put(&v, &c, &name, &bytes).await;
            files.push((name, bytes));
        }
        // Where the shards went: one per node, 1.5x the data in all.
        let m = ops::get::find(&v, "f4.bin").await.unwrap();
        let layout = m.shards.clone().expect("an erasure-coded manifest");
        assert_eq!(layout.scheme, Scheme::new(4, 2).unwrap());
        let mut nodes = layout.nodes.clone();
        nodes.sort();
        assert_eq!(nodes, ["DFS1", "DFS2", "DFS3", "DFS4", "DFS5", "DFS6"]);
        let ids = v
            .master()
            .sharded("alice", &m.shards.as_ref().unwrap().data_id, 6)
            .ids;
        let mut stored = 0;
        for (i, name) in layout.nodes.iter().enumerate() {
            let node = node_of(name);
            let blob = c.blob(node, "alice", ids[i].as_str()).await.unwrap();
            stored += blob.expect("every shard stored").len();
        }
        let ratio = stored as f64 / (5 << 20) as f64;
        assert!((1.49..1.52).contains(&ratio), "{ratio}");
        v.close();

        for a in 0..6 {
            for b in a + 1..6 {
                c.stop(a).await.unwrap();
                c.stop(b).await.unwrap();
                let v = open_rs(&c, None).await;
                for (name, bytes) in &files {
                    let back = read_back(&v, &c, name, false).await;
                    assert!(
                        back == *bytes,
                        "{name} with DFS{} and DFS{} down",
                        a + 1,
                        b + 1
                    );
                }
                // A range across a chunk boundary of the 5 MiB file.
                let m = ops::get::find(&v, "f4.bin").await.unwrap();
                let r = 65_000..200_000u64;
                assert!(read_range(&v, &m, r.clone()).await == files[4].1[65_000..200_000]);
                v.close();
                c.restart(a).await.unwrap();
                c.restart(b).await.unwrap();
            }
        }
    })
    .await
}

/// Three of six nodes down: more than M = 2. The read is refused, naming
/// the nodes, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_down_is_refused_naming_the_nodes() {
    within(120, async {
        let mut c = cluster(6).await;
        let v = open_rs(&c, None).await;
        put(&v, &c, "a.bin", &data(300_000, 7)).await;
        let m = ops::get::find(&v, "a.bin").await.unwrap();
        v.close();
        for i in [1, 3, 5] {
            c.stop(i).await.unwrap();
        }
        let v = open_rs(&c, None).await;
        let out = c.dir().join("a.out");
        let err = ops::get::get_file(&v, "a.bin", &out, false, progress())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, OpError::NoQuorum(_)), "{text}");
        for n in ["DFS2", "DFS4", "DFS6"] {
            assert!(text.contains(n), "{text}");
        }
        // Reading past the quorum rule still cannot rebuild the chunks.
        let err = ops::get::get_version(&v, &m, &out, false, progress())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, OpError::Unavailable(_)), "{text}");
        assert!(text.contains("fewer than 4"), "{text}");
        for n in ["DFS2", "DFS4", "DFS6"] {
            assert!(text.contains(n), "{text}");
        }
        assert!(!out.exists());
        assert_eq!(leftovers(c.dir()), 0);
    })
    .await
}

/// Partial files left beside the output.
fn leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".vault-partial")
        })
        .count()
}

/// Four nodes: the classic layout loses a file when two neighbouring nodes
/// are down, RS(2,2) at the same 2x cost loses nothing with any pair down.
/// With two of four nodes down no majority answers, so the read needs
/// `allow_stale` (it cannot rule out an older version the two hidden nodes
/// would outrank); the bytes are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_2_2_on_four_nodes_survives_the_pairs_classic_loses() {
    within(240, async {
        let mut c = cluster(4).await;
        let classic = data(200_000, 3);
        let coded = data(200_000, 4);
        let v = open_rs(&c, None).await;
        put(&v, &c, "classic.bin", &classic).await;
        v.close();
        let v = open_rs(&c, Some("Redundancy rs 2+2")).await;
        put(&v, &c, "coded.bin", &coded).await;
        let m = ops::get::find(&v, "coded.bin").await.unwrap();
        assert_eq!(
            m.shards.as_ref().unwrap().scheme,
            Scheme::new(2, 2).unwrap()
        );
        let x = ops::get::find(&v, "classic.bin").await.unwrap();
        assert!(x.shards.is_none());
        v.close();
        let mut classic_lost = 0;
        for a in 0..4 {
            for b in a + 1..4 {
                c.stop(a).await.unwrap();
                c.stop(b).await.unwrap();
                let v = open_rs(&c, Some("Redundancy rs 2+2")).await;
                assert!(read_back(&v, &c, "coded.bin", true).await == coded);
                let out = c.dir().join("classic.out");
                let (m, _) = ops::get::find_with(&v, "classic.bin", true).await.unwrap();
                match ops::get::get_version(&v, &m, &out, true, progress()).await {
                    Ok(_) => assert!(std::fs::read(&out).unwrap() == classic),
                    Err(e) => {
                        assert!(matches!(e, OpError::Unavailable(_)), "{e}");
                        classic_lost += 1;
                    }
                }
                v.close();
                c.restart(a).await.unwrap();
                c.restart(b).await.unwrap();
            }
        }
        // The four neighbouring pairs of the ring lose a part each.
        assert_eq!(classic_lost, 4);
    })
    .await
}

/// Three nodes, RS(2,1) by default: any one node down, every file reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_rs_2_1() {
    within(120, async {
        let mut c = cluster(3).await;
        let v = open_rs(&c, None).await;
        let files: Vec<(String, Vec<u8>)> = SIZES
            .iter()
            .enumerate()
            .map(|(n, &size)| (format!("t{n}"), data(size, 20 + n as u64)))
            .collect();
        for (name, bytes) in &files {
            put(&v, &c, name, bytes).await;
        }
        let m = ops::get::find(&v, "t4").await.unwrap();
        assert_eq!(m.shards.unwrap().scheme, Scheme::new(2, 1).unwrap());
        v.close();
        for down in 0..3 {
            c.stop(down).await.unwrap();
            let v = open_rs(&c, None).await;
            for (name, bytes) in &files {
                assert!(read_back(&v, &c, name, false).await == *bytes, "{name}");
            }
            v.close();
            c.restart(down).await.unwrap();
        }
    })
    .await
}

/// Nodes lying about shards: a flipped byte, another file's shard under
/// this id, an older version's shard replayed. Each is caught by its tag
/// and another shard used; the file reads back right and the liar is
/// named. With fewer than K good shards left, GET fails with nothing
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_shards_are_caught_and_replaced() {
    within(120, async {
        let c = cluster(6).await;
        let v = open_rs(&c, None).await;
        let old = data(300_000, 30);
        put(&v, &c, "a.bin", &old).await;
        let m_old = ops::get::find(&v, "a.bin").await.unwrap();
        let other = data(300_000, 31);
        put(&v, &c, "b.bin", &other).await;
        let m_other = ops::get::find(&v, "b.bin").await.unwrap();
        let new = data(300_000, 32);
        // The old version's shards, kept as a node would keep a copy.
        let shard_of = |m: &Manifest| {
            let l = m.shards.clone().unwrap();
            let ids = v
                .master()
                .sharded("alice", &m.shards.as_ref().unwrap().data_id, 6)
                .ids;
            l.nodes
                .iter()
                .map(|n| node_of(n))
                .zip(ids)
                .collect::<Vec<_>>()
        };
        let mut old_shards = Vec::new();
        for (node, id) in shard_of(&m_old) {
            old_shards.push(c.blob(node, "alice", id.as_str()).await.unwrap().unwrap());
        }
        put(&v, &c, "a.bin", &new).await;
        let m = ops::get::find(&v, "a.bin").await.unwrap();
        let ours = shard_of(&m);
        let theirs = shard_of(&m_other);
        // Shard 0 (a data shard): one byte flipped in its second chunk.
        let (n0, id0) = &ours[0];
        let mut flipped = c.blob(*n0, "alice", id0.as_str()).await.unwrap().unwrap();
        let at = Scheme::new(4, 2).unwrap().chunk_offset(1) as usize + 3;
        flipped[at] ^= 1;
        c.set_blob(*n0, "alice", id0.as_str(), &flipped)
            .await
            .unwrap();
        // Shard 1: the same shard of another file.
        let (n1, id1) = &ours[1];
        let (tn, tid) = &theirs[1];
        let foreign = c.blob(*tn, "alice", tid.as_str()).await.unwrap().unwrap();
        c.set_blob(*n1, "alice", id1.as_str(), &foreign)
            .await
            .unwrap();
        assert!(read_back(&v, &c, "a.bin", false).await == new);
        let out = c.dir().join("a.out");
        let report = ops::get::get_version(&v, &m, &out, true, progress())
            .await
            .unwrap();
        let said = report.failovers.join("; ");
        for (n, _) in [&ours[0], &ours[1]] {
            assert!(
                said.contains(&format!("DFS{}: decryption failed", n + 1)),
                "{said}"
            );
        }
        // Shard 4: the old version's shard 4 replayed: a third bad shard,
        // fewer than K = 4 good. GET fails and writes nothing.
        let (n4, id4) = &ours[4];
        c.set_blob(*n4, "alice", id4.as_str(), &old_shards[4])
            .await
            .unwrap();
        std::fs::remove_file(&out).unwrap();
        let err = ops::get::get_version(&v, &m, &out, false, progress())
            .await
            .unwrap_err();
        assert!(matches!(err, OpError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("fewer than 4"), "{err}");
        assert!(!out.exists());
        assert_eq!(leftovers(c.dir()), 0);
    })
    .await
}

/// `check` per shard: a shard with a flipped byte is found only by
/// `--verify`; with it and another shard gone the file is degraded (exit 1)
/// and `repair` rebuilds both from the four good ones (decode, code again);
/// with three gone it is lost (exit 2) and repair writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_per_shard() {
    within(120, async {
        let c = cluster(6).await;
        let v = open_rs(&c, None).await;
        put(&v, &c, "a.bin", &data(200_000, 40)).await;
        let m = ops::get::find(&v, "a.bin").await.unwrap();
        let layout = m.shards.clone().unwrap();
        let ids = v
            .master()
            .sharded("alice", &m.shards.as_ref().unwrap().data_id, 6)
            .ids;
        let node = |i: usize| node_of(&layout.nodes[i]);
        let survey = ops::check::survey(&v, "", false, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 0, "{:?}", survey.files);
        assert_eq!(survey.files[0].parts.len(), 6);
        let listing = ops::list::list(&v, "").await.unwrap();
        assert!(listing.files[0].complete, "LIST: not [incomplete]");

        // A flipped byte: found only by --verify.
        let mut blob = c
            .blob(node(2), "alice", ids[2].as_str())
            .await
            .unwrap()
            .unwrap();
        blob[100] ^= 1;
        c.set_blob(node(2), "alice", ids[2].as_str(), &blob)
            .await
            .unwrap();
        let survey = ops::check::survey(&v, "", false, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 0);
        let survey = ops::check::survey(&v, "", true, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 1);
        let corrupt: Vec<_> = survey.files[0]
            .parts
            .iter()
            .filter(|p| p.2 == ops::check::CopyState::Corrupt)
            .map(|p| p.0)
            .collect();
        assert_eq!(corrupt, vec![2]);

        // Shard 5 removed too: two bad of six, still K = 4 good.
        assert!(c
            .remove_blob(node(5), "alice", ids[5].as_str())
            .await
            .unwrap());
        let survey = ops::check::survey(&v, "", true, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 1);
        assert!(!survey.files[0].lost());
        // Repair rebuilds both from the four good shards, byte for byte.
        let options = ops::repair::RepairOptions {
            verify: true,
            ..Default::default()
        };
        let report = ops::repair::repair(&v, "", options, progress())
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.copies_restored, 2);
        assert_eq!(report.after.exit_code(), 0, "{:?}", report.after.files);
        let survey = ops::check::survey(&v, "", true, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 0);
        assert!(read_back(&v, &c, "a.bin", false).await == data(200_000, 40));

        // Three removed: fewer than K, lost; repair writes nothing.
        for i in [0, 1, 3] {
            assert!(c
                .remove_blob(node(i), "alice", ids[i].as_str())
                .await
                .unwrap());
        }
        let survey = ops::check::survey(&v, "", true, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 2);
        assert!(survey.files[0].lost());
        let listing = ops::list::list(&v, "").await.unwrap();
        assert!(!listing.files[0].complete, "LIST: [incomplete]");
        let report = ops::repair::repair(&v, "", Default::default(), progress())
            .await
            .unwrap();
        assert!(
            report
                .failures
                .iter()
                .any(|f| f.contains("cannot be rebuilt")),
            "{:?}",
            report.failures
        );
        for i in [0, 1, 3] {
            assert!(c
                .blob(node(i), "alice", ids[i].as_str())
                .await
                .unwrap()
                .is_none());
        }
    })
    .await
}

/// Two of six nodes wiped (manifests and shards gone): `check` says
/// degraded (1), `repair` puts back every manifest and rebuilds every
/// shard (exit 0 afterwards), `check --verify` is clean; then two other
/// nodes stopped, and every file still reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_wiped_then_repaired_then_two_others_down() {
    within(180, async {
        let mut c = cluster(6).await;
        let v = open_rs(&c, None).await;
        let mut files = Vec::new();
        for (n, size) in SIZES.into_iter().enumerate() {
            let name = format!("w{n}.bin");
            let bytes = data(size, 50 + n as u64);
            put(&v, &c, &name, &bytes).await;
            files.push((name, bytes));
        }
        for node in [1, 4] {
            for id in c.blob_ids(node, "alice").await.unwrap() {
                c.remove_blob(node, "alice", &id).await.unwrap();
            }
        }
        let survey = ops::check::survey(&v, "", false, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 1, "{:?}", survey.files);
        let report = ops::repair::repair(&v, "", Default::default(), progress())
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert!(report.manifests_fixed >= 2 * files.len());
        assert_eq!(report.after.exit_code(), 0, "{:?}", report.after.files);
        let survey = ops::check::survey(&v, "", true, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 0);
        v.close();
        for node in [0, 5] {
            c.stop(node).await.unwrap();
        }
        let v = open_rs(&c, None).await;
        for (name, bytes) in &files {
            assert!(read_back(&v, &c, name, false).await == *bytes, "{name}");
        }
    })
    .await
}

/// Long tail: one of six nodes behind a link far slower than the others.
/// The PUT does not wait for it: it stores the other five shards, leaves
/// that node's shard for repair and says so; the file reads back, and
/// once the link is fast again `repair` completes the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_is_left_behind_and_repaired_later() {
    within(180, async {
        let mut c = cluster(6).await;
        // 128 KiB/s: its 4 MiB shard of a 16 MiB file would take 32 s.
        c.slow_down(3, 128 << 10).await.unwrap();
        let v = open_rs(&c, None).await;
        let bytes = data(16 << 20, 60);
        let path = write(&c, "big.bin", &bytes);
        let started = std::time::Instant::now();
        let report = ops::put::put_file(&v, &path, progress()).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "{took:?}");
        let said = report.warnings.join("; ");
        assert!(said.contains("DFS4") && said.contains("repair"), "{said}");
        let m = ops::get::find(&v, "big.bin").await.unwrap();
        let layout = m.shards.clone().unwrap();
        let ids = v.master().sharded("alice", &layout.data_id, 6).ids;
        let slow = layout.nodes.iter().position(|n| n == "DFS4").unwrap();
        assert!(c
            .blob(3, "alice", ids[slow].as_str())
            .await
            .unwrap()
            .is_none());
        assert!(read_back(&v, &c, "big.bin", false).await == bytes);
        v.close();

        c.slow_down(3, 0).await.unwrap();
        let v = open_rs(&c, None).await;
        let survey = ops::check::survey(&v, "", false, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 1);
        let report = ops::repair::repair(&v, "", Default::default(), progress())
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.after.exit_code(), 0);
        assert!(c
            .blob(3, "alice", ids[slow].as_str())
            .await
            .unwrap()
            .is_some());
    })
    .await
}

/// Alice's dfc.conf listing only the nodes `nodes` of `c` (in that order),
/// with `redundancy`.
async fn open_nodes(c: &TestCluster, nodes: &[usize], redundancy: Option<&str>) -> Vault {
    let mut text = String::new();
    for &i in nodes {
        text.push_str(&format!("Server {} {}\n", c.name(i), c.addr(i)));
    }
    text.push_str("Username: Alice\n");
    if let Some(line) = redundancy {
        text.push_str(line);
        text.push('\n');
    }
    let cfg = ClientConfig::parse(&text, &c.dir().join("dfc.conf")).unwrap();
    let endpoint = client_endpoint(c.ca_pem().as_bytes()).unwrap();
    let options = OpenOptions {
        state: None,
        limits: limits(),
    };
    Vault::open_with(&endpoint, &cfg, &Zeroizing::new(ALICE.into()), &options)
        .await
        .unwrap()
}

/// Growing from four nodes (classic) to five (rs 3+2) to six (rs 4+2):
/// old files keep reading, new ones take the new layout, and
/// `repair --rebalance` moves only the shards placement now wants on
/// the sixth node. Afterwards every erasure-coded file survives every
/// pair of nodes down, and the classic ones any one node down. Then the
/// sixth node is removed from dfc.conf: a rebalance moves its shards to
/// the other five, and with it gone for good everything still reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_added_then_removed_with_rebalance() {
    within(300, async {
        let mut c = cluster(6).await;
        let classic: Vec<(String, Vec<u8>)> = (0..3)
            .map(|n| (format!("c{n}"), data(100_000 + n * 7000, 70 + n as u64)))
            .collect();
        let five: Vec<(String, Vec<u8>)> = (0..12)
            .map(|n| (format!("r{n}"), data(80_000 + n * 5000, 80 + n as u64)))
            .collect();
        let v = open_nodes(&c, &[0, 1, 2, 3], None).await;
        for (name, bytes) in &classic {
            put(&v, &c, name, bytes).await;
        }
        v.close();
        let v = open_nodes(&c, &[0, 1, 2, 3, 4], Some("Redundancy rs 3+2")).await;
        for (name, bytes) in &five {
            put(&v, &c, name, bytes).await;
        }
        v.close();

        let all = [0, 1, 2, 3, 4, 5];
        let v = open_nodes(&c, &all, Some("Redundancy rs 3+2")).await;
        for (name, bytes) in classic.iter().chain(&five) {
            assert!(read_back(&v, &c, name, false).await == *bytes, "{name}");
        }
        let fresh = data(300_000, 99);
        put(&v, &c, "new", &fresh).await;
        let before: Vec<Manifest> = {
            let mut out = Vec::new();
            for (name, _) in &five {
                out.push(ops::get::find(&v, name).await.unwrap());
            }
            out
        };
        let options = ops::repair::RepairOptions {
            rebalance: true,
            ..Default::default()
        };
        let report = ops::repair::repair(&v, "", options, progress())
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.after.exit_code(), 0, "{:?}", report.after.files);
        // Exactly the shards placement wants on DFS6 moved, one per file
        // whose wanted nodes include it, and nothing else.
        let mut expected = 0;
        for (m, (name, _)) in before.iter().zip(&five) {
            let layout = m.shards.as_ref().unwrap();
            let want = vault_client::layout::wanted(&v, &layout.data_id, 5);
            let after = ops::get::find(&v, name).await.unwrap();
            let nodes = &after.shards.as_ref().unwrap().nodes;
            if want.iter().any(|n| n == "DFS6") {
                expected += 1;
                let changed = nodes
                    .iter()
                    .zip(&layout.nodes)
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(changed, 1, "{name}");
                assert!(nodes.iter().any(|n| n == "DFS6"), "{name}");
            } else {
                assert_eq!(nodes, &layout.nodes, "{name}");
            }
        }
        assert!(
            expected > 0,
            "with twelve files some move (each 5/6 likely)"
        );
        assert_eq!(report.shards_moved, expected);
        // Nothing left on a node the manifests no longer name.
        let survey = ops::check::survey(&v, "", true, progress()).await.unwrap();
        assert_eq!(survey.exit_code(), 0);
        v.close();

        for a in 0..6 {
            for b in a + 1..6 {
                c.stop(a).await.unwrap();
                c.stop(b).await.unwrap();
                let v = open_nodes(&c, &all, Some("Redundancy rs 3+2")).await;
                for (name, bytes) in five
                    .iter()
                    .chain([("new".to_string(), fresh.clone())].iter())
                {
                    assert!(
                        read_back(&v, &c, name, false).await == *bytes,
                        "{name} {a} {b}"
                    );
                }
                v.close();
                c.restart(a).await.unwrap();
                c.restart(b).await.unwrap();
            }
        }
        for down in 0..4 {
            c.stop(down).await.unwrap();
            let v = open_nodes(&c, &all, None).await;
            for (name, bytes) in &classic {
                assert!(read_back(&v, &c, name, false).await == *bytes, "{name}");
            }
            v.close();
            c.restart(down).await.unwrap();
        }

        // DFS6 leaves: rebalance over the five others, then it is gone.
        let five_nodes = [0, 1, 2, 3, 4];
        let v = open_nodes(&c, &five_nodes, Some("Redundancy rs 3+2")).await;
        let report = ops::repair::repair(&v, "", options, progress())
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert!(report.shards_moved >= expected);
        assert_eq!(report.after.exit_code(), 0, "{:?}", report.after.files);
        v.close();
        c.stop(5).await.unwrap();
        for down in 0..5 {
            c.stop(down).await.unwrap();
            let v = open_nodes(&c, &five_nodes, Some("Redundancy rs 3+2")).await;
            for (name, bytes) in five
                .iter()
                .chain([("new".to_string(), fresh.clone())].iter())
            {
                assert!(
                    read_back(&v, &c, name, false).await == *bytes,
                    "{name} without DFS6 and {down}"
                );
            }
            v.close();
            c.restart(down).await.unwrap();
        }
    })
    .await
}

/// A node resets a reply it could not finish within its deadline (here
/// 2 s): a range read whose reader pauses longer than that loses every
/// shard stream at once. The reads are opened again from the chunk
/// reached, and the bytes arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_reads_cut_by_the_node_are_opened_again() {
    within(120, async {
        let users = testing::upgraded_user("Alice", ALICE).unwrap();
        let c = TestCluster::start_many(&[users.as_str(); 3], |_, cfg| {
            cfg.store.reply_deadline = Duration::from_secs(2);
        })
        .await
        .unwrap();
        let v = open_rs(&c, None).await;
        let bytes = data(24 << 20, 90);
        put(&v, &c, "long.bin", &bytes).await;
        let m = ops::get::find(&v, "long.bin").await.unwrap();
        let (tx, mut rx) = mpsc::channel::<Bytes>(1);
        let reader = async {
            let r = ops::get::read_range(&v, &m, 0..m.size, &tx).await;
            drop(tx);
            r
        };
        let collect = async {
            let mut out = Vec::new();
            let mut paused = false;
            while let Some(piece) = rx.recv().await {
                out.extend_from_slice(&piece);
                if !paused && out.len() > 1 << 20 {
                    // A slow HTTP client: longer than the nodes' deadline.
                    paused = true;
                    tokio::time::sleep(Duration::from_secs(4)).await;
                }
            }
            out
        };
        let (r, out) = tokio::join!(reader, collect);
        r.unwrap();
        assert!(out == bytes);
    })
    .await
}

/// Shards no manifest refers to (an interrupted PUT, a lost rebalance
/// race) are orphans like classic parts: check lists them, repair (past
/// the grace) removes them, and every referenced shard stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_shards_are_found_and_collected() {
    within(120, async {
        let c = cluster(6).await;
        let v = open_rs(&c, None).await;
        let bytes = data(150_000, 77);
        put(&v, &c, "kept.bin", &bytes).await;
        let stray = format!("p3-{}", "ab".repeat(32));
        c.set_blob(2, "alice", &stray, b"leftover").await.unwrap();
        let survey = ops::check::survey(&v, "", false, progress()).await.unwrap();
        assert!(survey.orphans_checked);
        let ids: Vec<&str> = survey.orphans.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, vec![stray.as_str()]);
        let options = ops::repair::RepairOptions {
            grace: Duration::ZERO,
            ..Default::default()
        };
        let report = ops::repair::repair(&v, "", options, progress())
            .await
            .unwrap();
        assert_eq!(report.orphans_removed, 1);
        assert!(c.blob(2, "alice", &stray).await.unwrap().is_none());
        assert_eq!(report.after.exit_code(), 0);
        assert!(read_back(&v, &c, "kept.bin", false).await == bytes);
    })
    .await
}

/// Two colluding nodes of six serve their old disks again (an older
/// version of one file, a file since deleted) while two honest nodes are
/// down: four answer, a majority, and the honest two outrank the replay.
/// The client never presents the old version (the new one may be
/// unreadable with so few of its shards left, which GET says) nor the
/// deleted file; with a third node down it refuses to read at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_colluders_of_six_cannot_roll_back_or_undelete() {
    within(180, async {
        let mut c = cluster(6).await;
        let v = open_rs(&c, None).await;
        let (v1, v2) = (data(90_000, 101), data(90_000, 102));
        put(&v, &c, "f.bin", &v1).await;
        put(&v, &c, "gone.bin", &data(1_000, 103)).await;
        let old_version = ops::get::find(&v, "f.bin").await.unwrap().version;
        v.close();
        let mut old = Vec::new();
        for i in [0, 2] {
            let keep = c.dir().join(format!("old-{i}"));
            c.snapshot_user(i, "alice", &keep).await.unwrap();
            old.push(keep);
        }
        let v = open_rs(&c, None).await;
        put(&v, &c, "f.bin", &v2).await;
        ops::delete::delete_file(&v, "gone.bin").await.unwrap();
        v.close();
        for (&i, keep) in [0usize, 2].iter().zip(&old) {
            c.restore_user(i, "alice", keep).await.unwrap();
        }

        c.stop(1).await.unwrap();
        c.stop(3).await.unwrap();
        let v = open_rs(&c, None).await;
        let m = ops::get::find(&v, "f.bin").await.unwrap();
        assert!(m.version > old_version, "the replayed version won");
        let out = c.dir().join("f.out");
        match ops::get::get_version(&v, &m, &out, true, progress()).await {
            Ok(_) => assert!(std::fs::read(&out).unwrap() == v2),
            Err(e) => assert!(matches!(e, OpError::Unavailable(_)), "{e}"),
        }
        let names: Vec<String> = ops::list::list(&v, "")
            .await
            .unwrap()
            .files
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["f.bin"], "the deleted file stays deleted");
        v.close();

        c.stop(4).await.unwrap();
        let v = open_rs(&c, None).await;
        let e = ops::get::find(&v, "f.bin").await.unwrap_err();
        assert!(matches!(e, OpError::NoQuorum(_)), "{e}");
        v.close();

        for i in [1, 3, 4] {
            c.restart(i).await.unwrap();
        }
        let v = open_rs(&c, None).await;
        assert!(read_back(&v, &c, "f.bin", false).await == v2);
    })
    .await
}

/// Three nodes with rs 2+1 grow to six: placement now wants other nodes
/// for two or all three shards of many files, more than M = 1 moves. The
/// rebalance reads the old copies too, so every such file moves; the old
/// copies stay until `repair` collects them as orphans (after the grace),
/// and nothing a manifest names is removed. Then a node leaves dfc.conf
/// while files still need six: check counts their shards there as not
/// good (degraded), and the rebalance says it has nowhere to put them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_shards_move_and_old_copies_are_swept() {
    within(240, async {
        let c = cluster(6).await;
        let files: Vec<(String, Vec<u8>)> = (0..10)
            .map(|n| (format!("m{n}"), data(70_000 + n * 3000, 200 + n as u64)))
            .collect();
        let v = open_nodes(&c, &[0, 1, 2], None).await;
        for (name, bytes) in &files {
            put(&v, &c, name, bytes).await;
        }
        v.close();
        let all = [0, 1, 2, 3, 4, 5];
        let v = open_nodes(&c, &all, Some("Redundancy rs 2+1")).await;
        let mut most = 0;
        for (name, _) in &files {
            let m = ops::get::find(&v, name).await.unwrap();
            let l = m.shards.unwrap();
            let want = vault_client::layout::wanted(&v, &l.data_id, 3);
            let moving = l.nodes.iter().filter(|n| !want.contains(n)).count();
            most = most.max(moving);
        }
        assert!(most >= 2, "some file moves more than M = 1 shards");
        let options = ops::repair::RepairOptions {
            rebalance: true,
            ..Default::default()
        };
        let report = ops::repair::repair(&v, "", options, progress())
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.after.exit_code(), 0);
        for (name, _) in &files {
            let m = ops::get::find(&v, name).await.unwrap();
            let l = m.shards.unwrap();
            let want = vault_client::layout::wanted(&v, &l.data_id, 3);
            assert!(l.nodes.iter().all(|n| want.contains(n)), "{name}");
        }
        // The old copies are orphans now; collected past the grace.
        let survey = ops::check::survey(&v, "", false, progress()).await.unwrap();
        assert!(
            survey.orphans.len() >= report.shards_moved,
            "{}",
            survey.orphans.len()
        );
        let sweep = ops::repair::RepairOptions {
            grace: Duration::ZERO,
            ..Default::default()
        };
        let swept = ops::repair::repair(&v, "", sweep, progress())
            .await
            .unwrap();
        assert_eq!(swept.orphans_removed, survey.orphans.len());
        assert_eq!(swept.after.exit_code(), 0);
        for (name, bytes) in &files {
            assert!(read_back(&v, &c, name, false).await == *bytes, "{name}");
        }
        put(&v, &c, "wide", &data(50_000, 250)).await;
        v.close();

        // rs 4+2 over six nodes, then DFS6 leaves dfc.conf: five servers
        // cannot hold six shards.
        let v = open_nodes(&c, &all, Some("Redundancy rs 4+2")).await;
        put(&v, &c, "six", &data(50_000, 251)).await;
        v.close();
        let v = open_nodes(&c, &[0, 1, 2, 3, 4], Some("Redundancy rs 3+2")).await;
        let survey = ops::check::survey(&v, "six", false, progress())
            .await
            .unwrap();
        assert_eq!(survey.files[0].shards_elsewhere, 1);
        assert_eq!(survey.exit_code(), 1);
        let report = ops::repair::repair(&v, "six", options, progress())
            .await
            .unwrap();
        assert!(
            report.failures.iter().any(|f| f.contains("need 6 servers")),
            "{:?}",
            report.failures
        );
    })
    .await
}
