//! The consistency contract against hostile and failing nodes: a write
//! counts once a majority of the manifest holders (3 of 4) has it, a read
//! believes a version only when a majority answered, and two writers of one
//! name end with one version everywhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vault_client::ops::{self, OpError};
use vault_client::vault::Vault;
use vault_node::testing::{self, timed, Lie, Reply, TestCluster, Verdict};
use wire::{BatchFailure, ErrorCode, Request, Response};

use super::common::*;

/// The manifest copy each node holds of `name` (None: none).
async fn manifests_on_disk(c: &TestCluster, v: &Vault, name: &str) -> Vec<Option<Vec<u8>>> {
    let id = v.master().manifest_id(name);
    let mut out = Vec::new();
    for i in 0..4 {
        out.push(c.blob(i, v.user(), id.as_str()).await.unwrap());
    }
    out
}

async fn get_bytes(v: &Vault, c: &TestCluster, name: &str) -> Result<Vec<u8>, OpError> {
    let out = c.dir().join(format!("got-{}", name.replace('/', "_")));
    let _ = std::fs::remove_file(&out);
    ops::get::get_file(v, name, &out, true, progress()).await?;
    Ok(std::fs::read(&out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_colluders_on_old_disks_cannot_roll_back_or_undelete() {
    timed(async {
        let mut c = TestCluster::start(&testing::upgraded_user("Alice", ALICE).unwrap())
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let (v1, v2) = (data(40_000, 1), data(40_000, 2));
        put(&v, &c, "f.bin", &v1).await;
        put(&v, &c, "gone.bin", &data(1_000, 3)).await;
        v.close();
        // DFS1 and DFS3 keep their disks as they are now...
        let mut old: Vec<std::path::PathBuf> = Vec::new();
        for i in [0, 2] {
            let keep = c.dir().join(format!("old-{i}"));
            c.snapshot_user(i, "alice", &keep).await.unwrap();
            old.push(keep);
        }
        // ...the file gets a new version and the other one is deleted...
        let v = open(&c, "alice", ALICE).await.unwrap();
        put(&v, &c, "f.bin", &v2).await;
        ops::delete::delete_file(&v, "gone.bin").await.unwrap();
        v.close();
        // ...and then they serve their old disks again.
        for (&i, keep) in [0usize, 2].iter().zip(&old) {
            c.restore_user(i, "alice", keep).await.unwrap();
        }

        // With DFS2 and DFS4 down, the colluders are all there is: refuse.
        c.stop(1).await.unwrap();
        c.stop(3).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let e = get_bytes(&v, &c, "f.bin").await.unwrap_err();
        assert!(matches!(e, OpError::NoQuorum(_)), "{e}");
        let text = e.to_string();
        assert!(text.contains("DFS2") && text.contains("DFS4"), "{text}");
        let e = ops::list::list(&v, "").await.unwrap_err();
        assert!(matches!(e, OpError::NoQuorum(_)), "{e}");
        // Asked to read anyway, the answer is marked as possibly stale.
        let listing = ops::list::list_with(&v, "", true).await.unwrap();
        assert!(listing.stale.is_some());
        let (_, stale) = ops::get::find_with(&v, "f.bin", true).await.unwrap();
        assert!(stale.is_some());
        // A write cannot go through two nodes either.
        let e = ops::delete::delete_file(&v, "f.bin").await.unwrap_err();
        assert!(matches!(e, OpError::NoQuorum(_)), "{e}");
        v.close();

        // All four up: the new version, and the file stays deleted.
        c.restart(1).await.unwrap();
        c.restart(3).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        assert_eq!(get_bytes(&v, &c, "f.bin").await.unwrap(), v2);
        let names: Vec<String> = ops::list::list(&v, "")
            .await
            .unwrap()
            .files
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["f.bin"]);
        let r = ops::repair::repair(&v, "", Default::default(), progress())
            .await
            .unwrap();
        assert_eq!(r.after.exit_code(), 0, "{:?}", r.failures);
        v.close();

        // After repair, every three-node view agrees.
        for down in 0..4 {
            c.stop(down).await.unwrap();
            let v = open(&c, "alice", ALICE).await.unwrap();
            assert_eq!(
                get_bytes(&v, &c, "f.bin").await.unwrap(),
                v2,
                "DFS{} down",
                down + 1
            );
            let listing = ops::list::list(&v, "").await.unwrap();
            let names: Vec<&str> = listing.files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["f.bin"], "DFS{} down", down + 1);
            v.close();
            c.restart(down).await.unwrap();
        }
    })
    .await
}

/// Acknowledges every manifest write and stores nothing.
struct DropManifests(AtomicUsize);

/// Refuses every manifest write as over the quota.
struct RefuseManifests;

fn manifest_batch(req: &Request) -> Option<usize> {
    match req {
        Request::PutBlobs { items } if items.iter().all(|i| i.id.as_str().starts_with("m2-")) => {
            Some(items.len())
        }
        Request::PutBlob { id, .. } if id.as_str().starts_with("m2-") => Some(0),
        _ => None,
    }
}

impl Lie for DropManifests {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        match manifest_batch(req) {
            Some(0) => Verdict::Answer(Reply::Send(Response::Stored, vec![])),
            Some(_) => {
                self.0.fetch_add(1, Ordering::Relaxed);
                Verdict::Answer(Reply::Send(
                    Response::BatchStored { failed: vec![] },
                    vec![],
                ))
            }
            None => Verdict::Forward,
        }
    }
}

impl Lie for RefuseManifests {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        let quota = |index| BatchFailure {
            index,
            code: ErrorCode::QuotaExceeded,
            message: "over the quota".into(),
        };
        match manifest_batch(req) {
            Some(0) => Verdict::Answer(Reply::Send(
                Response::error(ErrorCode::QuotaExceeded, "over the quota"),
                vec![],
            )),
            Some(n) => Verdict::Answer(Reply::Send(
                Response::BatchStored {
                    failed: (0..n as u32).map(quota).collect(),
                },
                vec![],
            )),
            None => Verdict::Forward,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_only_a_liar_took_is_not_a_stored_file() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let v1 = data(30_000, 7);
        put(&v, &c, "doc.txt", &v1).await;
        let parts_before = part_files(&c).await;
        v.close();
        let dropper = Arc::new(DropManifests(AtomicUsize::new(0)));
        c.make_hostile(0, dropper.clone()).await.unwrap();
        for i in 1..4 {
            c.make_hostile(i, Arc::new(RefuseManifests)).await.unwrap();
        }
        let v = open(&c, "alice", ALICE).await.unwrap();
        let p = write(&c, "doc.txt", &data(30_000, 8));
        let e = ops::put::put_file(&v, &p, progress()).await.unwrap_err();
        assert!(
            dropper.0.load(Ordering::Relaxed) > 0,
            "the lie was exercised"
        );
        assert!(e.to_string().contains("not stored"), "{e}");
        // The old version is intact and current; the failed one left no parts.
        assert_eq!(get_bytes(&v, &c, "doc.txt").await.unwrap(), v1);
        assert_eq!(part_files(&c).await, parts_before);
    })
    .await
}

/// Every part blob on every node, sorted.
async fn part_files(c: &TestCluster) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for i in 0..4 {
        for id in c.blob_ids(i, "alice").await.unwrap() {
            if id.starts_with("p2-") {
                out.push((i, id));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_name_end_with_one_version_everywhere() {
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let a = open(&c, "alice", ALICE).await.unwrap();
        let b = open(&c, "alice", ALICE).await.unwrap();
        const ROUNDS: u64 = 50;
        let writer = |v: Vault, who: u64| {
            let dir = c.dir().join(format!("writer-{who}"));
            std::fs::create_dir_all(&dir).unwrap();
            async move {
                let mut stored = Vec::new();
                let mut lost = 0;
                for round in 0..ROUNDS {
                    let bytes = data(20_000 + round as usize, who * 1000 + round);
                    let p = dir.join("same.bin");
                    std::fs::write(&p, &bytes).unwrap();
                    match ops::put::put_file(&v, &p, progress()).await {
                        Ok(r) => stored.push((r.version, bytes)),
                        Err(OpError::Conflict(_)) => lost += 1,
                        Err(e) => panic!("writer {who}: {e}"),
                    }
                }
                (stored, lost)
            }
        };
        let (ra, rb) = tokio::join!(
            tokio::spawn(writer(a.clone(), 1)),
            tokio::spawn(writer(b.clone(), 2))
        );
        let ((sa, la), (sb, lb)) = (ra.unwrap(), rb.unwrap());
        assert!(!sa.is_empty() || !sb.is_empty());
        // No version number was reported stored by both writers.
        for (va, _) in &sa {
            assert!(
                !sb.iter().any(|(vb, _)| vb == va),
                "both writers were told version {va} was theirs"
            );
        }
        eprintln!(
            "writer 1: {} stored, {la} lost; writer 2: {} stored, {lb} lost",
            sa.len(),
            sb.len()
        );
        // Exactly one version, everywhere.
        let copies = manifests_on_disk(&c, &a, "same.bin").await;
        assert!(copies.iter().all(|m| m.is_some() && *m == copies[0]));
        // It is the newest one a writer was told it stored, and it reads back.
        let newest = sa.iter().chain(&sb).max_by_key(|(v, _)| *v).unwrap();
        let m = ops::get::find(&a, "same.bin").await.unwrap();
        assert_eq!(m.version, newest.0);
        assert_eq!(get_bytes(&a, &c, "same.bin").await.unwrap(), newest.1);
        // Every copy of its parts is there.
        let survey = ops::check::survey(&a, "", false, progress()).await.unwrap();
        assert_eq!(survey.degraded(), 0);
        assert_eq!(survey.lost(), 0);
        // The writers that lost took their parts back with them.
        assert!(survey.orphans_checked);
        assert!(
            survey.orphans.is_empty(),
            "{} orphaned parts",
            survey.orphans.len()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_do_not_show_name_lengths_or_tombstones() {
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let long = "n".repeat(200);
        put(&v, &c, "a", b"x").await;
        put(&v, &c, &long, b"x").await;
        let len_of = |name: String| {
            let (c, v) = (&c, &v);
            async move {
                manifests_on_disk(c, v, &name).await[0]
                    .as_ref()
                    .map(Vec::len)
                    .unwrap()
            }
        };
        let (short, long_len) = (len_of("a".into()).await, len_of(long).await);
        assert_eq!(short, long_len, "names of 1 and 200 bytes");
        ops::delete::delete_file(&v, "a").await.unwrap();
        assert_eq!(
            len_of("a".into()).await,
            short,
            "a tombstone looks like a manifest"
        );
    })
    .await
}

/// Answers every `GetBlobs` with lengths whose sum overflows.
struct OverflowingLengths;

impl Lie for OverflowingLengths {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        match req {
            Request::GetBlobs { ids } => Verdict::Answer(Reply::Send(
                Response::Blobs {
                    lens: (0..ids.len())
                        .map(|i| Some(if i == 0 { u64::MAX } else { 2 }))
                        .collect(),
                },
                vec![],
            )),
            _ => Verdict::Forward,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lengths_that_overflow_are_an_error_naming_the_node() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        // Two liars: the lookup before a PUT needs three answers, so the
        // PUT fails and must say who lied (one liar alone is outvoted).
        for liar in [1, 2] {
            c.make_hostile(liar, Arc::new(OverflowingLengths))
                .await
                .unwrap();
        }
        let v = open(&c, "alice", ALICE).await.unwrap();
        let dir = c.dir().join("tree");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), b"a").unwrap();
        std::fs::write(dir.join("b.txt"), b"b").unwrap();
        let files = vault_client::path::walk(&dir).unwrap().files;
        let plan = ops::put_many::PutPlan::start(files, Default::default(), progress());
        let e = plan.run(&v).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("DFS2") && text.contains("DFS3"), "{text}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_version_asks_each_node_only_for_the_parts_it_holds() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        c.make_hostile(0, Arc::new(testing::Honest)).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        put(&v, &c, "r.bin", &data(50_000, 11)).await;
        let held: Vec<String> = part_files(&c)
            .await
            .into_iter()
            .filter(|(node, _)| *node == 0)
            .map(|(_, id)| id)
            .collect();
        assert_eq!(held.len(), 2, "each node holds two of the four parts");
        let seen = c.observed(0).unwrap();
        seen.clear();
        // A new version removes the old one's parts; so does a delete.
        put(&v, &c, "r.bin", &data(50_000, 12)).await;
        ops::delete::delete_file(&v, "r.bin").await.unwrap();
        let mut asked = Vec::new();
        for r in seen.requests() {
            if let Request::DeleteBlobs { ids } | Request::StatBlobs { ids } = r {
                asked.extend(ids.into_iter().map(|i| i.as_str().to_string()));
            }
        }
        let parts: Vec<&String> = asked.iter().filter(|i| i.starts_with("p2-")).collect();
        assert!(!parts.is_empty(), "old parts were removed through DFS1");
        assert_eq!(
            parts.len(),
            4,
            "two parts of each of the two versions: {parts:?}"
        );
        assert!(held.iter().all(|h| parts.contains(&h)), "{parts:?}");
    })
    .await
}
