//! The client against lying nodes: one test per attack the threat model
//! names. Four real nodes run in-process (`vault_node::testing`); a hostile
//! proxy holding a node's own certificate stands in front of one of them
//! and lies. Each test asserts that the client detects the lie, uses a good
//! copy where one exists, and gives the liar nothing it must not have (no
//! MD5 of a password, no record of its own on the other nodes).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_client::ops;
use vault_client::vault::{OpenError, Vault};
use vault_node::testing::lie::{
    when, ClaimScheme, FlipBlob, FloodListing, ForgeRecord, RawAnswer, ReplayBlob, ServeInstead,
    StallOn, TruncateBlob,
};
use vault_node::testing::{self, timed, Lie, Reply, TestCluster};
use wire::{AuthScheme, KdfParams, UserRecord};

use super::common::*;

// --- Data: flip, truncate, swap, replay, stall ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_part_copy_is_caught_and_the_other_copy_used() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let flip = Arc::new(FlipBlob::new("p2-"));
        c.make_hostile(1, flip.clone()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let bytes = data(300_000, 1);
        put(&v, &c, "a.bin", &bytes).await;
        let failovers = get_ok(&v, &c, "a.bin", &bytes).await;
        assert!(flip.hits() > 0, "the lie was exercised");
        assert!(
            failovers.iter().all(|f| f.starts_with("DFS2")),
            "{failovers:?}"
        );
        assert!(!failovers.is_empty());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_part_copy_is_caught_and_the_other_copy_used() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let cut = Arc::new(TruncateBlob::drop_last("p2-", 100));
        c.make_hostile(2, cut.clone()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let bytes = data(200_001, 2);
        put(&v, &c, "t.bin", &bytes).await;
        let failovers = get_ok(&v, &c, "t.bin", &bytes).await;
        assert!(cut.hits() > 0);
        assert!(
            failovers.iter().any(|f| f.starts_with("DFS3")),
            "{failovers:?}"
        );
    })
    .await
}

/// Serves, for every part id of `from`, the stored bytes of the same part
/// slot of `to` read from node `node`'s disk (`to_user`'s blobs).
async fn swap_parts(
    c: &TestCluster,
    node: usize,
    v_from: &Vault,
    from: &vault_client::manifest::Manifest,
    v_to: &Vault,
    to: &vault_client::manifest::Manifest,
    to_user: &str,
) -> Arc<ServeInstead> {
    let mut map = std::collections::HashMap::new();
    for k in 0..4 {
        let theirs = v_to.master().part_id(&to.file_id, k);
        if let Some(bytes) = c.blob(node, to_user, theirs.as_str()).await.unwrap() {
            map.insert(v_from.master().part_id(&from.file_id, k), bytes);
        }
    }
    assert!(!map.is_empty());
    Arc::new(ServeInstead::map(map))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_swapped_between_files_are_caught() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        // Same size, so a swap cannot be caught by length alone.
        let (a, b) = (data(200_000, 3), data(200_000, 4));
        put(&v, &c, "a.bin", &a).await;
        put(&v, &c, "b.bin", &b).await;
        let ma = ops::get::find(&v, "a.bin").await.unwrap();
        let mb = ops::get::find(&v, "b.bin").await.unwrap();
        let swap = swap_parts(&c, 0, &v, &ma, &v, &mb, "alice").await;
        c.make_hostile(0, swap.clone()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let failovers = get_ok(&v, &c, "a.bin", &a).await;
        assert!(swap.hits() > 0);
        assert!(
            failovers
                .iter()
                .any(|f| f.contains("DFS1") && f.contains("decryption failed")),
            "{failovers:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_swapped_between_users_are_caught() {
    timed(async {
        let users = format!(
            "{}{}",
            testing::plain_user("Alice", ALICE),
            testing::plain_user("Bob", "Velvet77")
        );
        let mut c = TestCluster::start(&users).await.unwrap();
        let alice = open(&c, "alice", ALICE).await.unwrap();
        let bob = open_at(&c, "bob", "Velvet77", Some(c.dir().join("bob.state")))
            .await
            .unwrap();
        let (a, b) = (data(100_000, 5), data(100_000, 6));
        put(&alice, &c, "same.bin", &a).await;
        put(&bob, &c, "same.bin", &b).await;
        let ma = ops::get::find(&alice, "same.bin").await.unwrap();
        let mb = ops::get::find(&bob, "same.bin").await.unwrap();
        let swap = swap_parts(&c, 3, &alice, &ma, &bob, &mb, "bob").await;
        c.make_hostile(3, swap.clone()).await.unwrap();
        let alice = open(&c, "alice", ALICE).await.unwrap();
        let failovers = get_ok(&alice, &c, "same.bin", &a).await;
        assert!(swap.hits() > 0);
        assert!(
            failovers.iter().any(|f| f.starts_with("DFS4")),
            "{failovers:?}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_manifest_loses_to_the_newest() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let replay = Arc::new(ReplayBlob::new("m2-"));
        c.make_hostile(0, replay.clone()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        put(&v, &c, "doc.txt", b"version one").await;
        put(&v, &c, "doc.txt", b"version two, longer").await;
        assert!(get_ok(&v, &c, "doc.txt", b"version two, longer")
            .await
            .is_empty());
        assert!(replay.hits() > 0, "DFS1 served the old manifest");
        let listed = ops::list::list(&v, "").await.unwrap();
        assert_eq!(listed.files.len(), 1);
        assert_eq!(listed.files[0].size, 19);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_node_is_given_up_on_and_the_other_copy_used() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let bytes = data(400_000, 7);
        put(&v, &c, "s.bin", &bytes).await;
        let stall = Arc::new(StallOn::mid_blob("p2-", 1000));
        c.make_hostile(1, stall.clone()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let start = Instant::now();
        let failovers = get_ok(&v, &c, "s.bin", &bytes).await;
        assert!(stall.hits() > 0);
        assert!(
            failovers.iter().any(|f| f.starts_with("DFS2")),
            "{failovers:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{:?}",
            start.elapsed()
        );
    })
    .await
}

// --- Listings, frames and text ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_listing_is_reported_and_the_others_used() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        put(&v, &c, "keep.txt", b"kept").await;
        let flood = Arc::new(FloodListing::new("m2-"));
        c.make_hostile(2, flood.clone()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let listed = ops::list::list(&v, "").await.unwrap();
        assert_eq!(listed.files.len(), 1, "{:?}", listed.files);
        assert!(listed.files[0].complete);
        assert_eq!(listed.problems.len(), 1, "{:?}", listed.problems);
        assert!(listed.problems[0].starts_with("DFS3") && listed.problems[0].contains("exceeds"));
        // Bounded: it stopped after about the limit, not a million entries.
        assert!(flood.hits() <= 5_000 / 256 + 2, "{} pages", flood.hits());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_frames_are_refused_and_failed_over() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let bytes = data(150_000, 8);
        put(&v, &c, "f.bin", &bytes).await;
        let huge = Arc::new(RawAnswer::new(
            when::get_blob("p2-"),
            testing::raw::oversized_frame_header(),
        ));
        c.make_hostile(0, huge.clone()).await.unwrap();
        let garbage = Arc::new(RawAnswer::new(
            when::get_blob(""),
            b"\x00\x02\x00\x00\x00\x05\xff\xff\xff\xff\xff".to_vec(),
        ));
        // DFS1 and DFS3 share no part: every part keeps one honest copy.
        c.make_hostile(2, garbage.clone()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let failovers = get_ok(&v, &c, "f.bin", &bytes).await;
        assert!(huge.hits() + garbage.hits() > 0);
        assert!(
            failovers.iter().all(|f| f.contains("protocol error")),
            "{failovers:?}"
        );
    })
    .await
}

/// Rewrites every `PutBlobs` answer (after the real node stored the
/// blobs) to report the first blob as failed 500 times over.
#[derive(Debug)]
struct RepeatFailure {
    hits: std::sync::atomic::AtomicUsize,
}

impl Lie for RepeatFailure {
    fn on_response(&self, req: &wire::Request, resp: wire::Response, bulk: Vec<u8>) -> Reply {
        if !matches!(req, wire::Request::PutBlobs { .. }) {
            return Reply::Send(resp, bulk);
        }
        self.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let failure = wire::BatchFailure {
            index: 0,
            code: wire::ErrorCode::Internal,
            message: "refused".into(),
        };
        Reply::Send(
            wire::Response::BatchStored {
                failed: vec![failure; 500],
            },
            bulk,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_repeating_a_batch_failure_cannot_get_new_parts_removed() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let tree = c.dir().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let put_tree = |v: Vault| {
            let tree = tree.clone();
            async move {
                let walk = vault_client::path::walk(&tree).unwrap();
                let options = ops::put_many::PutOptions::default();
                ops::put_many::PutPlan::start(walk.files, options, progress())
                    .run(&v)
                    .await
                    .unwrap()
            }
        };
        let old: Vec<Vec<u8>> = (0..6).map(|i| data(3_000 + i, i as u64 + 1)).collect();
        for (i, d) in old.iter().enumerate() {
            std::fs::write(tree.join(format!("f{i}")), d).unwrap();
        }
        assert_eq!(put_tree(v.clone()).await.stored(), 6);

        // DFS1 stores every blob it is sent, then says the first of each
        // batch failed, 500 times: one failure must not count as 500 (the
        // honest nodes took the new manifest; removing its parts would
        // leave the file unreadable).
        let lie = Arc::new(RepeatFailure {
            hits: Default::default(),
        });
        c.make_hostile(0, lie.clone()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let new: Vec<Vec<u8>> = (0..6).map(|i| data(4_000 + i, i as u64 + 50)).collect();
        for (i, d) in new.iter().enumerate() {
            std::fs::write(tree.join(format!("f{i}")), d).unwrap();
        }
        let summary = put_tree(v.clone()).await;
        std::fs::create_dir(c.dir().join("out-tree")).unwrap();
        assert!(lie.hits.load(std::sync::atomic::Ordering::SeqCst) > 0);
        for (i, (file, outcome)) in summary.files.iter().enumerate() {
            // Whatever PUT said, the file reads back: new bytes if it was
            // stored, old ones if not.
            let want = match outcome {
                ops::put_many::Outcome::Stored(_) => &new[i],
                _ => &old[i],
            };
            get_ok(&v, &c, &file.name, want).await;
        }
    })
    .await
}

// --- Key records ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_record_never_reaches_another_node_and_the_user_still_gets_in() {
    timed(async {
        let mut c = upgraded_alice("Saffron-99").await;
        let honest: Vec<Vec<u8>> = (1..4)
            .map(|i| std::fs::read(record_file(&c, i, "alice")).unwrap())
            .collect();
        // The proxy's own login key, at a much newer generation; then the
        // same with u64::MAX, then with the login key removed.
        let attacker = vault_node::kdf::public_key_for_password(
            b"attacker",
            &vault_node::kdf::new_params().unwrap(),
        )
        .unwrap();
        let forgeries: Vec<Box<dyn Fn(UserRecord) -> UserRecord + Send + Sync>> = vec![
            Box::new(move |mut r: UserRecord| {
                r.generation += 5;
                r.login_key = Some(attacker.to_vec());
                r
            }),
            Box::new(|mut r: UserRecord| {
                r.generation = u64::MAX;
                r
            }),
            Box::new(|mut r: UserRecord| {
                r.generation += 1;
                r.login_key = None;
                r
            }),
        ];
        for forge in forgeries {
            let lie = Arc::new(ForgeRecord::new(move |r: Option<UserRecord>| r.map(&forge)));
            c.make_hostile(0, lie.clone()).await.unwrap();
            let v = open(&c, "alice", "Saffron-99").await.unwrap();
            assert!(lie.hits() > 0);
            assert_eq!(v.record().generation, 2, "the honest record wins");
            v.close();
            for (i, before) in (1..4).zip(&honest) {
                assert!(
                    std::fs::read(record_file(&c, i, "alice")).unwrap() == *before,
                    "DFS{}'s record changed",
                    i + 1
                );
            }
        }
        // And the user still gets in everywhere, the liar included.
        c.make_hostile(0, Arc::new(testing::Honest)).await.unwrap();
        let v = open(&c, "alice", "Saffron-99").await.unwrap();
        assert!(v.unavailable().is_empty(), "{:?}", v.unavailable());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_old_records_are_refused_not_believed() {
    timed(async {
        let c = upgraded_alice("Second-2").await;
        // Keep the generation-2 records, rotate again to generation 3...
        let saved: Vec<Vec<u8>> = (0..4)
            .map(|i| std::fs::read(record_file(&c, i, "alice")).unwrap())
            .collect();
        rotate(&c, "alice", "Second-2", "Third-3").await.unwrap();
        // ...then every node serves the old record (a restored backup).
        for (i, bytes) in saved.iter().enumerate() {
            std::fs::write(record_file(&c, i, "alice"), bytes).unwrap();
        }
        let err = open(&c, "alice", "Second-2").await.unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::Rollback {
                    seen: 3,
                    found: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("dfc.conf.state"), "{err}");
    })
    .await
}

// --- Login schemes ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_legacy_for_an_upgraded_account_gets_no_md5() {
    timed(async {
        let mut c = upgraded_alice("Saffron-99").await;
        let seen = c
            .make_hostile(0, Arc::new(ClaimScheme::legacy()))
            .await
            .unwrap();
        // With the other three up: they carry on, DFS1 gets nothing.
        let v = open(&c, "alice", "Saffron-99").await.unwrap();
        assert_eq!(v.unavailable().len(), 1);
        assert!(
            v.unavailable()[0].1.contains("legacy"),
            "{:?}",
            v.unavailable()
        );
        v.close();
        // With the other three unreachable: still nothing.
        for i in 1..4 {
            c.stop(i).await.unwrap();
        }
        let err = open(&c, "alice", "Saffron-99").await.unwrap_err();
        assert!(err.to_string().contains("legacy"), "{err}");
        // A machine that never logged in (no state) is protected too: one
        // node alone cannot make it send an MD5.
        let fresh = open_at(&c, "alice", "Saffron-99", Some(c.dir().join("fresh.state"))).await;
        assert!(fresh.is_err());
        no_md5_reached(&seen);
        assert!(seen.count(|r| matches!(r, wire::Request::Hello { .. })) >= 3);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_upgraded_does_not_lock_a_legacy_account_out() {
    timed(async {
        let mut c = TestCluster::start(&testing::md5_user("Alice", ALICE))
            .await
            .unwrap();
        let fake = KdfParams {
            salt: vec![0x99; 16],
            m_kib: 65536,
            t: 3,
            p: 1,
        };
        let bytes = data(50_000, 9);
        let v = open(&c, "alice", ALICE).await.unwrap();
        put(&v, &c, "l.bin", &bytes).await;
        v.close();
        let seen = c
            .make_hostile(3, Arc::new(ClaimScheme::upgraded(fake)))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let down = v.unavailable();
        assert_eq!(down.len(), 1, "{down:?}");
        assert_eq!(down[0].0, "DFS4");
        get_ok(&v, &c, "l.bin", &bytes).await;
        v.close();
        // Two honest legacy nodes and the liar: two of four configured
        // nodes announcing Legacy are not a majority, so no MD5 goes out
        // (the price of the rule that no pair of nodes can obtain one).
        c.stop(0).await.unwrap();
        let err = open(&c, "alice", ALICE).await.unwrap_err();
        assert!(err.to_string().contains("3 of 4"), "{err}");
        // The liar got no MD5 (and, its salt differing from the one this
        // client knows, no signature either).
        no_md5_reached(&seen);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_upgraded_account_takes_the_salt_most_nodes_announce() {
    timed(async {
        let line = testing::upgraded_user("Carol", "Lapis-4").unwrap();
        let mut c = TestCluster::start(&line).await.unwrap();
        let fake = KdfParams {
            salt: vec![0x77; 16],
            m_kib: 65536,
            t: 3,
            p: 1,
        };
        let seen = c
            .make_hostile(0, Arc::new(ClaimScheme::upgraded(fake.clone())))
            .await
            .unwrap();
        let v = open(&c, "carol", "Lapis-4").await.unwrap();
        assert_ne!(v.record().kdf, fake, "the liar chose the salt");
        let honest = match c
            .raw_client(1)
            .await
            .unwrap()
            .hello("carol")
            .await
            .unwrap()
            .1
        {
            AuthScheme::Upgraded(k) => k,
            other => panic!("{other:?}"),
        };
        assert_eq!(v.record().kdf, honest);
        no_md5_reached(&seen);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_sends_no_md5_to_a_node_claiming_legacy() {
    timed(async {
        let mut c = upgraded_alice("Saffron-99").await;
        let seen = c
            .make_hostile(2, Arc::new(ClaimScheme::legacy()))
            .await
            .unwrap();
        let err = rotate(&c, "alice", "Saffron-99", "Next-Pass-1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("DFS3"), "{err}");
        no_md5_reached(&seen);
        // Nothing changed: the current password still opens everything.
        c.make_hostile(2, Arc::new(testing::Honest)).await.unwrap();
        let v = open(&c, "alice", "Saffron-99").await.unwrap();
        assert!(v.unavailable().is_empty());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_to_the_current_password_sends_no_md5() {
    timed(async {
        // A legacy account: its nodes take an MD5 of the old password
        // during a rotation, and must never get one of the new password.
        // Given the same password twice (as a user resuming a rotation
        // may), nothing reaches any node.
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let seen = c.make_hostile(0, Arc::new(testing::Honest)).await.unwrap();
        let err = rotate(&c, "alice", ALICE, ALICE).await.unwrap_err();
        assert!(err.to_string().contains("is the current one"), "{err}");
        no_md5_reached(&seen);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_costs_announced_by_a_node_are_refused_before_argon2() {
    timed(async {
        let mut c = upgraded_alice("Saffron-99").await;
        let absurd = KdfParams {
            salt: vec![1; 16],
            m_kib: u32::MAX,
            t: 1_000_000,
            p: 1,
        };
        c.make_hostile(1, Arc::new(ClaimScheme::upgraded(absurd)))
            .await
            .unwrap();
        let start = Instant::now();
        let v = open(&c, "alice", "Saffron-99").await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(v.unavailable().len(), 1);
        assert!(
            v.unavailable()[0].1.contains("unusable"),
            "{:?}",
            v.unavailable()
        );
    })
    .await
}

// --- Format 1 -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_data_is_recognised_and_refused_with_a_way_forward() {
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        // A Vault 0.1 record (no format field) on every node.
        #[derive(serde::Serialize)]
        struct V1 {
            generation: u64,
            kdf: KdfParams,
            #[serde(with = "serde_bytes")]
            login_key: Option<Vec<u8>>,
            #[serde(with = "serde_bytes")]
            wrapped_key: Vec<u8>,
        }
        let v1 = V1 {
            generation: 1,
            kdf: vault_client::crypto::keys::new_kdf_params().unwrap(),
            login_key: None,
            wrapped_key: vec![7; 72],
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&v1, &mut bytes).unwrap();
        for i in 0..4 {
            std::fs::write(record_file(&c, i, "alice"), &bytes).unwrap();
        }
        let err = open(&c, "alice", ALICE).await.unwrap_err();
        assert!(matches!(err, OpenError::OldFormat { .. }), "{err}");
        assert!(
            err.to_string().contains("Upgrading from Vault 0.1"),
            "{err}"
        );
    })
    .await
}

// --- Through the real binary ------------------------------------------------

fn client_bin() -> std::path::PathBuf {
    vault_tests::bin("vault-client")
}

fn run_cli(conf: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(client_bin());
    cmd.arg("-c").arg(conf).args(args);
    cmd.env_remove("VAULT_PASSWORD")
        .env_remove("VAULT_NEW_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_from_a_node_never_reach_the_terminal() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let conf = c.write_dfc("Alice", None).unwrap();
        let env = [("VAULT_PASSWORD", ALICE)];
        let file = write(&c, "e.bin", &data(10_000, 10));
        let put = tokio::task::spawn_blocking({
            let conf = conf.clone();
            move || run_cli(&conf, &env, &["put", file.to_str().unwrap()])
        });
        assert!(put.await.unwrap().status.success());
        let nasty = "no such blob \x1b]0;pwned\x07\x1b[2J\x1b[31m\r\u{9b}1m";
        let parts_and_lists = |r: &wire::Request| match r {
            wire::Request::GetBlob { id } => id.as_str().starts_with("p2-"),
            wire::Request::List { .. } | wire::Request::ListData { .. } => true,
            _ => false,
        };
        let lie = Arc::new(
            vault_node::testing::lie::ErrorText::new(parts_and_lists, nasty)
                .code(wire::ErrorCode::Internal),
        );
        c.make_hostile(0, lie.clone()).await.unwrap();
        let conf = c.write_dfc("Alice", None).unwrap();
        let out = tokio::task::spawn_blocking(move || {
            let out_path = conf.with_file_name("e.out");
            let get = run_cli(
                &conf,
                &env,
                &["get", "e.bin", "-o", out_path.to_str().unwrap()],
            );
            let list = run_cli(&conf, &env, &["list"]);
            (get, list)
        })
        .await
        .unwrap();
        assert!(lie.hits() > 0);
        for o in [&out.0, &out.1] {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            for stream in [&o.stdout, &o.stderr] {
                assert!(
                    !stream.iter().any(|&b| b == 0x1b || b == 0x07 || b == b'\r'),
                    "a control byte reached the terminal: {:?}",
                    String::from_utf8_lossy(stream)
                );
                assert!(!String::from_utf8_lossy(stream).contains('\u{9b}'));
            }
        }
        // The node's words still arrive, made harmless.
        assert!(String::from_utf8_lossy(&out.1.stderr).contains("no such blob ?]0;pwned?"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_is_finished_by_running_it_again() {
    timed(async {
        let mut c = TestCluster::start(&testing::md5_user("Alice", ALICE))
            .await
            .unwrap();
        // The classic dfc.conf: the Password line holds the MD5 digest.
        let digest = format!("Password: {}", md5_hex(ALICE));
        let conf = c.write_dfc("Alice", Some(&digest)).unwrap();
        let file = write(&c, "r.bin", &data(5_000, 11));
        let env_old = [("VAULT_PASSWORD", ALICE)];
        let conf2 = conf.clone();
        let file2 = file.clone();
        let put = tokio::task::spawn_blocking(move || {
            run_cli(&conf2, &env_old, &["put", file2.to_str().unwrap()])
        });
        assert!(put.await.unwrap().status.success());

        // DFS4 freezes after storing the new record, before answering: all
        // four nodes switch, and the client is killed before dfc.conf is
        // rewritten.
        c.make_hostile(3, Arc::new(StallOn::after_node(when::put_record())))
            .await
            .unwrap();
        let conf = c.write_dfc("Alice", Some(&digest)).unwrap();
        let mut child = std::process::Command::new(client_bin())
            .arg("-c")
            .arg(&conf)
            .arg("rotate")
            .env("VAULT_PASSWORD", ALICE)
            .env("VAULT_NEW_PASSWORD", "Topaz-12")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut switched = false;
        for _ in 0..600 {
            let mut n = 0;
            for i in 0..4 {
                let raw =
                    vault_node::testing::RawClient::connect(c.node_addr(i), c.ca_pem(), c.name(i))
                        .await
                        .unwrap();
                if matches!(raw.hello("alice").await.unwrap().1, AuthScheme::Upgraded(_)) {
                    n += 1;
                }
            }
            if n == 4 {
                switched = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(switched, "all four nodes switched");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(std::fs::read_to_string(&conf)
            .unwrap()
            .contains(&md5_hex(ALICE)));

        // Meanwhile the user tries both passwords, many times: told what is
        // going on, and nothing is sent that a node would count.
        for pw in [
            ALICE, "Topaz-12", ALICE, "Topaz-12", ALICE, "Topaz-12", ALICE,
        ] {
            let conf = conf.clone();
            let out = tokio::task::spawn_blocking(move || {
                run_cli(&conf, &[("VAULT_PASSWORD", pw)], &["list"])
            })
            .await
            .unwrap();
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("password change") && err.contains("not finished"),
                "{err}"
            );
        }
        // DFS4 is back. Running rotate again finishes at once.
        c.make_hostile(3, Arc::new(testing::Honest)).await.unwrap();
        let conf = c.write_dfc("Alice", Some(&digest)).unwrap();
        let start = Instant::now();
        let conf2 = conf.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_cli(
                &conf2,
                &[
                    ("VAULT_PASSWORD", ALICE),
                    ("VAULT_NEW_PASSWORD", "Topaz-12"),
                ],
                &["rotate"],
            )
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("finished the interrupted"));
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains(&md5_hex("Topaz-12")), "{text}");
        // The new password works, the old one is refused by the local check.
        let conf2 = conf.clone();
        let (new, old) = tokio::task::spawn_blocking(move || {
            (
                run_cli(&conf2, &[("VAULT_PASSWORD", "Topaz-12")], &["list"]),
                run_cli(&conf2, &[("VAULT_PASSWORD", ALICE)], &["list"]),
            )
        })
        .await
        .unwrap();
        assert!(
            new.status.success(),
            "{}",
            String::from_utf8_lossy(&new.stderr)
        );
        assert!(String::from_utf8_lossy(&new.stdout).contains("r.bin"));
        assert!(!old.status.success());
    })
    .await
}
