//! Repair against a node that paces its listing to make the honest nodes'
//! listings run out of time, then serves the old manifests it kept
//! (issue 15, "one node can make `repair` destroy files").

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vault_client::net::Limits;
use vault_client::ops;
use vault_client::vault::Vault;
use vault_node::testing::lie::SlowReplayListing;
use vault_node::testing::{self, TestCluster};
use wire::BlobId;

use super::common::*;

/// Files stored as v1 then v2.
/// (The issue asks for about 3,000; storing two versions of 3,000 files
/// takes over a minute on a loaded two-core machine, so 2,000: still four
/// listing pages per node, and the replayed third spans two.)
const FILES: usize = 2000;
/// The whole test, which stores 4,000 versions and lists three times.
const TIMEOUT: Duration = Duration::from_secs(180);

/// Every manifest blob (`m2-…`) node `i` stores for alice.
async fn manifests(c: &TestCluster, i: usize) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for id in c.blob_ids(i, "alice").await.unwrap() {
        if id.starts_with("m2-") {
            let bytes = c.blob(i, "alice", &id).await.unwrap().unwrap();
            out.insert(id, bytes);
        }
    }
    out
}

fn contents(i: usize, version: u64) -> Vec<u8> {
    data(
        40 + (i % 7) + version as usize * 3,
        (i as u64) << 8 | version,
    )
}

async fn put_tree(v: &Vault, tree: &Path, version: u64) {
    for i in 0..FILES {
        let dir = tree.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:05}")), contents(i, version)).unwrap();
    }
    let walk = vault_client::path::walk(tree).unwrap();
    let options = ops::put_many::PutOptions::default();
    let summary = ops::put_many::PutPlan::start(walk.files, options, progress())
        .run(v)
        .await
        .unwrap();
    assert_eq!(summary.stored(), FILES, "version {version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_listing_node_cannot_make_repair_roll_back_files() {
    tokio::time::timeout(TIMEOUT, async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let tree = c.dir().join("tree");
        put_tree(&v, &tree, 1).await;
        // DFS1 keeps the v1 manifests.
        let kept: Vec<(BlobId, Vec<u8>)> = manifests(&c, 0)
            .await
            .into_iter()
            .map(|(id, b)| (BlobId::new(id).unwrap(), b))
            .collect();
        assert_eq!(kept.len(), FILES);
        put_tree(&v, &tree, 2).await;
        v.close();
        let mut before: Vec<BTreeMap<String, Vec<u8>>> = Vec::new();
        for i in 0..4 {
            before.push(manifests(&c, i).await);
        }
        for (i, b) in before.iter().enumerate() {
            assert_eq!(b.len(), FILES, "DFS{} holds every v2 manifest", i + 1);
        }

        // DFS1 answers its first listing page only just before the
        // listing deadline, with fake ids that sort before every real
        // one, then lists its kept v1 manifests of the last third of the
        // ids at once (and claims to hold nothing before them).
        let limits = Limits {
            request: Duration::from_secs(10),
            listing: Duration::from_secs(5),
            listing_entries: 50_000,
            ..limits()
        };
        let skip_to = kept[FILES * 2 / 3].0.clone();
        let lie = Arc::new(SlowReplayListing::new(
            "m2-",
            kept.clone(),
            Some(skip_to),
            1,
            limits.listing - Duration::from_millis(150),
        ));
        c.make_hostile(0, lie.clone()).await.unwrap();
        let v = open_with_limits(&c, "alice", ALICE, limits).await.unwrap();
        let report = ops::repair::repair(&v, "", Default::default(), progress())
            .await
            .unwrap();
        assert!(lie.hits() > 0, "the listing lie was exercised");

        // No honest node's manifest went backwards: DFS2-4 hold exactly
        // the v2 bytes they held before. DFS1's disk held v2 all along
        // (its v1 copies live in the lie), and anything written to it is
        // v2 too.
        for (i, b) in before.iter().enumerate() {
            let after = manifests(&c, i).await;
            for (id, bytes) in b {
                assert!(
                    after.get(id) == Some(bytes),
                    "DFS{}'s manifest {id} changed ({} repair failures, first {:?})",
                    i + 1,
                    report.failures.len(),
                    report.failures.first()
                );
            }
        }

        // Every file reads back as v2 (its newest manifest, as a reader
        // weighs the four nodes' copies, is v2); one
        // folder in ten (ids are spread evenly over folders, so it holds
        // its share of the files DFS1 replayed) is read whole, which
        // proves the parts are there too (writing every file out would
        // double the test's time).
        let names: Vec<String> = (0..FILES)
            .map(|i| format!("tree/d{}/f{i:05}", i % 10))
            .collect();
        let (found, problems) = vault_client::catalog::lookup(&v, &names).await;
        assert!(problems.is_empty(), "{problems:?}");
        for (i, name) in names.iter().enumerate() {
            let m = &found[name].newest;
            assert!(
                !m.deleted && m.size == contents(i, 2).len() as u64,
                "{name} is not v2"
            );
        }
        let out = c.dir().join("out");
        std::fs::create_dir(&out).unwrap();
        let got = ops::get_many::get_tree(&v, "tree/d3", &out, false, progress())
            .await
            .unwrap();
        assert_eq!(got.written(), FILES / 10, "{:?}", got.problems);
        for i in (3..FILES).step_by(10) {
            let path = out.join(format!("d3/f{i:05}"));
            assert!(
                std::fs::read(&path).unwrap() == contents(i, 2),
                "{} is not v2",
                path.display()
            );
        }
    })
    .await
    .expect("test timed out")
}
