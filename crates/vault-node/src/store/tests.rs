use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

/// What each blob counts against the quota besides its bytes.
const O: u64 = BLOB_OVERHEAD;

async fn put(
    store: &BlobStore,
    name: &str,
    data: &[u8],
    quota: Option<u64>,
) -> Result<(), PutError> {
    let mut p = store
        .begin_put("alice", &id(name), data.len() as u64, quota, None)
        .await?;
    p.write(data).await?;
    p.commit().await
}

fn ids(entries: &[ListEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

#[tokio::test]
async fn put_list_delete() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    for name in ["c", "a", "b", "d"] {
        put(&store, name, name.as_bytes(), None).await.unwrap();
    }
    let (page, more) = store.list("alice", None, "", 2).await.unwrap();
    assert_eq!(ids(&page), ["a", "b"]);
    assert!(more);
    let (page, more) = store.list("alice", Some(id("b")), "", 2).await.unwrap();
    assert_eq!(ids(&page), ["c", "d"]);
    assert!(!more);
    assert_eq!(store.usage("alice").await.unwrap(), (4, 4));
    assert!(store.delete("alice", &id("a")).await.unwrap());
    assert!(!store.delete("alice", &id("a")).await.unwrap());
    assert!(store.open("alice", &id("a")).await.unwrap().is_none());
    assert_eq!(store.usage("alice").await.unwrap(), (3, 3));
    assert_eq!(
        store.list("bob", None, "", 10).await.unwrap(),
        (vec![], false)
    );
}

#[tokio::test]
async fn batches_delete_and_stat_by_position() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    for name in ["a", "b", "c"] {
        put(&store, name, name.as_bytes(), None).await.unwrap();
    }
    let stats = store.stat_many("alice", &[id("c"), id("x")]).await.unwrap();
    let lens: Vec<Option<u64>> = stats.iter().map(|s| s.map(|s| s.len)).collect();
    assert_eq!(lens, [Some(1), None]);
    let gone = [id("a"), id("x"), id("c"), id("a")];
    assert_eq!(store.delete_many("alice", &gone).await.unwrap(), [1, 3]);
    assert_eq!(store.usage("alice").await.unwrap(), (1, 1));
    assert!(store.stat_many("alice", &[id("a")]).await.unwrap()[0].is_none());
    assert!(store.open("alice", &id("a")).await.unwrap().is_none());
}

#[tokio::test]
async fn data_pages_list_what_the_index_holds() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    for (name, len) in [("m-a", 3), ("m-b", 3), ("m-c", 3), ("m-d", 50), ("n-a", 1)] {
        put(&store, name, &vec![7; len], None).await.unwrap();
    }
    // `m-b` is gone, `m-c` grew.
    assert!(store.delete("alice", &id("m-b")).await.unwrap());
    put(&store, "m-c", &[8; 5], None).await.unwrap();
    let limits = DataLimits {
        max_entries: 10,
        max_inline: 10,
        max_bytes: 100,
    };
    let page = store.list_data("alice", None, "m-", limits).await.unwrap();
    assert!(!page.more);
    let got: Vec<(&str, u64, bool)> = page
        .entries
        .iter()
        .map(|e| (e.entry.id.as_str(), e.entry.len, e.data.is_some()))
        .collect();
    assert_eq!(
        got,
        [("m-a", 3, true), ("m-c", 5, true), ("m-d", 50, false)]
    );
    // The byte budget: the first entry always, then only what fits.
    let tight = DataLimits {
        max_bytes: 4,
        ..limits
    };
    let page = store.list_data("alice", None, "m-", tight).await.unwrap();
    assert!(page.more);
    assert_eq!(page.entries.len(), 1);
    let page = store
        .list_data("alice", Some(id("m-a")), "m-", tight)
        .await
        .unwrap();
    assert_eq!(
        page.entries.len(),
        2,
        "m-c (5 bytes) comes first, m-d costs nothing"
    );
    assert!(!page.more);
}

#[tokio::test]
async fn a_0_2_folder_is_converted_once_and_listed_from_the_index() {
    let root = tempfile::tempdir().unwrap();
    // Blobs already on disk when the node starts, plus names that are not
    // blobs.
    let dir = root.path().join("alice");
    std::fs::create_dir_all(dir.join(TMP_DIR)).unwrap();
    let mut expected = BTreeSet::new();
    for i in 0..500 {
        let name = format!("p-{i:04}");
        std::fs::write(dir.join(&name), vec![1u8; i % 7]).unwrap();
        expected.insert(name);
    }
    std::fs::write(dir.join("NOT-AN-ID.txt"), b"x").unwrap();
    std::fs::write(dir.join(TMP_DIR).join("1.tmp"), b"x").unwrap();
    let mtime = index::unix_secs(&std::fs::metadata(dir.join("p-0003")).unwrap());
    let store = BlobStore::new(root.path());
    let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let (page, more) = store.list("alice", after.clone(), "", 7).await.unwrap();
        pages += 1;
        after = page.last().map(|e| e.id.clone());
        seen.extend(page);
        if !more {
            break;
        }
    }
    assert_eq!(pages, 500usize.div_ceil(7));
    assert_eq!(
        seen.iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
        expected.iter().cloned().collect::<Vec<_>>()
    );
    assert_eq!(seen[3].len, 3);
    assert!(mtime > 0);
    assert_eq!(seen[3].modified, mtime);
    // Converted: the small files are now inline, gone from the folder.
    assert!(!dir.join("p-0003").exists());
    assert!(dir.join("NOT-AN-ID.txt").exists());
    put(&store, "p-new", b"abc", None).await.unwrap();
    assert!(store.delete("alice", &id("p-0000")).await.unwrap());
    let (page, _) = store.list("alice", None, "", 1).await.unwrap();
    assert_eq!(ids(&page), ["p-0001"]);
    let (page, more) = store
        .list("alice", Some(id("p-0499")), "", 5)
        .await
        .unwrap();
    assert_eq!((ids(&page), more), (vec!["p-new"], false));
    assert!(page[0].modified > 0);
    let total: u64 = (0..500u64).map(|i| i % 7).sum();
    assert_eq!(store.usage("alice").await.unwrap(), (500, total + 3));
    assert_eq!(store.databases_opened(), 1);
    // Another user is one more database.
    store.list("bob", None, "", 1).await.unwrap();
    assert_eq!(store.databases_opened(), 2);
}

#[tokio::test]
async fn concurrent_first_use_opens_one_database() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.usage("alice").await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.databases_opened(), 1);
}

#[tokio::test]
async fn quota_is_exact_and_counts_replacements_as_the_difference() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let q = Some(100 + 2 * O);
    put(&store, "a", &[1; 60], q).await.unwrap();
    put(&store, "b", &[2; 40], q).await.unwrap(); // exactly at the quota
                                                  // Even an empty blob counts its overhead.
    let err = put(&store, "c", &[], q).await.unwrap_err();
    assert!(
        matches!(
            err,
            PutError::Quota {
                quota,
                used,
                requested,
                replaced: 0,
                blobs: 1
            } if quota == 100 + 2 * O && used == quota && requested == O
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    for needle in [
        "quota".to_string(),
        format!("{} bytes", 100 + 2 * O),
        format!("{O} bytes"),
        format!("its length plus {O} bytes"),
    ] {
        assert!(msg.contains(&needle), "{msg}");
    }
    // Replacing "a" (60 bytes) with 60 bytes fits; with 61 it does not.
    put(&store, "a", &[4; 60], q).await.unwrap();
    let err = put(&store, "a", &[4; 61], q).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("replacing one of {} bytes", 60 + O)),
        "{err}"
    );
    // A refused upload leaves nothing behind.
    assert!(store.open("alice", &id("c")).await.unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(root.path().join("alice").join(TMP_DIR)).map_or(0, |d| d.count()),
        0
    );
    assert_eq!(store.usage("alice").await.unwrap(), (2, 100));
    // Deleting makes room.
    assert!(store.delete("alice", &id("b")).await.unwrap());
    put(&store, "c", &[3; 40], q).await.unwrap();
}

#[tokio::test]
async fn uploads_in_progress_hold_their_share_of_the_quota() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let q = Some(100 + 2 * O);
    let first = store
        .begin_put("alice", &id("x"), 60, q, None)
        .await
        .unwrap();
    // A committed upload settles its own reservation only.
    put(&store, "w", &[1; 10], q).await.unwrap();
    assert_eq!(store.reserved("alice").await, 60 + O);
    assert!(store.delete("alice", &id("w")).await.unwrap());
    // Together the two would exceed the quota: the second is refused.
    assert!(matches!(
        store.begin_put("alice", &id("y"), 60, q, None).await,
        Err(PutError::Quota { used, .. }) if used == 60 + O
    ));
    // An abandoned upload gives its share back.
    drop(first);
    assert_eq!(store.reserved("alice").await, 0);
    let mut second = store
        .begin_put("alice", &id("y"), 60, q, None)
        .await
        .unwrap();
    second.write(&[0; 60]).await.unwrap();
    second.commit().await.unwrap();
    assert_eq!(store.usage("alice").await.unwrap(), (1, 60));
    assert_eq!(store.reserved("alice").await, 0);
    // The committed share is not counted twice.
    assert!(store
        .begin_put("alice", &id("z"), 40, q, None)
        .await
        .is_ok());
}

#[tokio::test]
async fn concurrent_uploads_never_exceed_the_quota_together() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut p = store
                    .begin_put(
                        "alice",
                        &id(&format!("b{i}")),
                        30,
                        Some(3 * (30 + O) + 29),
                        None,
                    )
                    .await
                    .ok()?;
                // Let the other uploads start while this one is open.
                tokio::task::yield_now().await;
                p.write(&[7; 30]).await.unwrap();
                p.commit().await.unwrap();
                Some(())
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap().map_or(0, |()| 1);
    }
    assert_eq!(stored, 3);
    assert_eq!(store.usage("alice").await.unwrap(), (3, 90));
}

#[cfg(unix)]
#[test]
fn no_space_errors_are_recognised() {
    assert!(is_no_space(&io::Error::from_raw_os_error(
        rustix::io::Errno::NOSPC.raw_os_error()
    )));
    assert!(!is_no_space(&io::Error::from_raw_os_error(
        rustix::io::Errno::ACCESS.raw_os_error()
    )));
    assert!(!is_no_space(&io::Error::other("disk full")));
}

#[tokio::test]
async fn pages_stay_consistent_while_blobs_come_and_go() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    // Blobs present throughout: every even number.
    let stable: Vec<String> = (0..120).map(|i| format!("k{:03}", i * 2)).collect();
    for name in &stable {
        put(&store, name, b"s", None).await.unwrap();
    }
    // Churn: odd numbers added and removed in a loop, until told to stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let churn = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut rounds = 0u32;
            while !*stop_rx.borrow() {
                let name = format!("k{:03}", (rounds % 120) * 2 + 1);
                put(&store, &name, b"c", None).await.unwrap();
                if !rounds.is_multiple_of(3) {
                    store.delete("alice", &id(&name)).await.unwrap();
                }
                rounds += 1;
                tokio::task::yield_now().await;
            }
            rounds
        })
    };
    for _ in 0..20 {
        let (mut seen, mut after) = (Vec::new(), None::<BlobId>);
        loop {
            let (page, more) = store.list("alice", after.clone(), "", 9).await.unwrap();
            if let (Some(a), Some(first)) = (&after, page.first()) {
                assert!(first.id > *a, "page went backwards");
            }
            after = page.last().map(|e| e.id.clone());
            seen.extend(page.into_iter().map(|e| e.id.to_string()));
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "repeated or unordered"
        );
        let seen: BTreeSet<&String> = seen.iter().collect();
        for name in &stable {
            assert!(seen.contains(name), "{name} lost");
        }
    }
    stop_tx.send(true).unwrap();
    let rounds = tokio::time::timeout(Duration::from_secs(10), churn)
        .await
        .unwrap()
        .unwrap();
    assert!(rounds > 0);
}

#[tokio::test]
async fn dropped_upload_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let mut p = store
        .begin_put("alice", &id("x"), 7, None, None)
        .await
        .unwrap();
    p.write(b"partial").await.unwrap();
    drop(p);
    assert_eq!(
        std::fs::read_dir(root.path().join("alice/.tmp"))
            .into_iter()
            .flatten()
            .count(),
        0
    );
    assert!(!root.path().join("alice/x").exists());
}

#[test]
fn clean_temp_removes_leftovers() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bob/.tmp")).unwrap();
    std::fs::write(root.path().join("bob/.tmp/1.tmp"), b"x").unwrap();
    std::fs::write(root.path().join("bob/keep"), b"x").unwrap();
    assert_eq!(BlobStore::new(root.path()).clean_temp().unwrap(), 1);
    assert!(root.path().join("bob/keep").exists());
}

#[test]
fn refuses_unnormalised_users() {
    let store = BlobStore::new("/r");
    for bad in ["Alice", "..", "a/b", ".vault", ""] {
        assert!(store.user_dir(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn free_bytes_are_reported() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    #[cfg(unix)]
    assert!(store.free_bytes().await.is_some_and(|b| b > 0));
    #[cfg(not(unix))]
    assert_eq!(store.free_bytes().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_transactions() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    // Open the database first: its creation commits too.
    store.usage("alice").await.unwrap();
    let before = store.commits("alice").await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                put(&store, &format!("g-{i:03}"), &[i as u8; 100], None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let commits = store.commits("alice").await.unwrap() - before;
    assert_eq!(store.usage("alice").await.unwrap(), (200, 20_000));
    assert!(commits < 200, "{commits} commits for 200 puts");
    eprintln!("200 concurrent puts: {commits} commits");
}
