use std::time::Duration;

use super::*;

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

/// What each blob counts against the quota besides its bytes.
const O: u64 = super::super::BLOB_OVERHEAD;

fn item(name: &str, len: usize) -> PutItem {
    PutItem {
        id: id(name),
        len: len as u64,
        expect: None,
    }
}

fn temp_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("alice").join(TMP_DIR)).map_or(0, |d| d.count())
}

/// Polls until the blocking threads a dropped batch left behind are done.
async fn no_temp_files(root: &Path) -> bool {
    for _ in 0..500 {
        if temp_files(root) == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Sends `blobs` through a batch: start, write (in two pieces), end each.
async fn receive(batch: &mut PutBatch, blobs: &[(&str, &[u8])]) -> Result<(), PutError> {
    for (name, data) in blobs {
        batch.start(&id(name), data.len() as u64).await?;
        let (a, b) = data.split_at(data.len() / 2);
        batch.write(a).await?;
        batch.write(b).await?;
        batch.end().await?;
    }
    Ok(())
}

/// The stored bytes of `alice`'s blob `name` (`None`: absent).
async fn read_back(store: &BlobStore, name: &str) -> Option<Vec<u8>> {
    let mut blob = store.open("alice", &id(name)).await.unwrap()?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut blob.file, &mut out).unwrap();
    Some(out)
}

fn items(blobs: &[(&str, &[u8])]) -> Vec<PutItem> {
    blobs.iter().map(|(n, d)| item(n, d.len())).collect()
}

#[tokio::test]
async fn a_batch_shows_nothing_before_its_commit_and_every_blob_after() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let big = vec![9u8; WRITE_BUF * 2 + 3];
    let many: Vec<(String, Vec<u8>)> = (0..3 * MAX_SYNCING)
        .map(|i| (format!("s-{i:02}"), vec![i as u8; i]))
        .collect();
    let mut blobs: Vec<(&str, &[u8])> = vec![("big", &big), ("empty", b"")];
    blobs.extend(many.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    let mut batch = store
        .begin_batch("alice", &items(&blobs), None)
        .await
        .unwrap();
    receive(&mut batch, &blobs).await.unwrap();
    // Nothing is visible before the commit.
    assert_eq!(store.usage("alice").await.unwrap(), (0, 0));
    assert!(read_back(&store, "big").await.is_none());
    let failed = batch.commit().await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    for (name, data) in &blobs {
        assert_eq!(read_back(&store, name).await.unwrap(), *data);
    }
    let bytes: usize = blobs.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(
        store.usage("alice").await.unwrap(),
        (blobs.len() as u64, bytes as u64)
    );
    assert_eq!(store.reserved("alice").await, 0);
    assert_eq!(temp_files(root.path()), 0);
}

#[tokio::test]
async fn a_repeated_id_ends_as_its_last_copy() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let blobs: [(&str, &[u8]); 2] = [("a", b"first"), ("a", b"second!")];
    let mut batch = store
        .begin_batch("alice", &items(&blobs), Some(12 + 2 * O))
        .await
        .unwrap();
    receive(&mut batch, &blobs).await.unwrap();
    assert!(batch.commit().await.unwrap().is_empty());
    assert_eq!(read_back(&store, "a").await.unwrap(), b"second!");
    assert_eq!(store.usage("alice").await.unwrap(), (1, 7));
    assert_eq!(store.reserved("alice").await, 0);
}

#[tokio::test]
async fn a_dropped_batch_leaves_nothing_and_gives_its_quota_back() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let data = vec![1u8; 1000];
    let names: Vec<String> = (0..2 * MAX_SYNCING).map(|i| format!("d-{i}")).collect();
    let blobs: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &data[..])).collect();
    let mut batch = store
        .begin_batch("alice", &items(&blobs), Some(20_000 + 16 * O))
        .await
        .unwrap();
    assert_eq!(store.reserved("alice").await, 16_000 + 16 * O);
    // Every blob received, some still syncing, one more half-way.
    receive(&mut batch, &blobs[..blobs.len() - 1])
        .await
        .unwrap();
    batch.start(&id("d-last"), 1000).await.unwrap();
    batch.write(&data[..500]).await.unwrap();
    drop(batch);
    assert_eq!(store.reserved("alice").await, 0);
    assert!(no_temp_files(root.path()).await, "temp files left");
    assert_eq!(store.usage("alice").await.unwrap(), (0, 0));
    let files: Vec<_> = std::fs::read_dir(root.path().join("alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut files: Vec<String> = files
        .into_iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [TMP_DIR, db::DB_FILE],
        "only the temp folder and index"
    );
}

#[tokio::test]
async fn a_batch_over_the_quota_is_refused_whole() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let blobs: [(&str, &[u8]); 2] = [("a", &[1; 60]), ("b", &[2; 41])];
    let err = store
        .begin_batch("alice", &items(&blobs), Some(100 + 2 * O))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PutError::Quota {
                requested,
                blobs: 2,
                ..
            } if requested == 101 + 2 * O
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("these 2 blobs need {} bytes", 101 + 2 * O)),
        "{err}"
    );
    assert_eq!(store.reserved("alice").await, 0);
    // The batch holds its quota while it runs.
    let batch = store
        .begin_batch("alice", &items(&blobs[..1]), Some(100 + 2 * O))
        .await
        .unwrap();
    assert!(matches!(
        store
            .begin_put("alice", &id("c"), 41, Some(100 + 2 * O), None)
            .await,
        Err(PutError::Quota { .. })
    ));
    drop(batch);
    assert!(store
        .begin_put("alice", &id("c"), 41, Some(100 + 2 * O), None)
        .await
        .is_ok());
}

#[tokio::test]
async fn a_blob_that_fails_alone_is_reported_and_the_rest_stored() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let big = vec![0u8; WRITE_BUF];
    let blobs: [(&str, &[u8]); 3] = [("a", b"aaa"), ("b", &big), ("c", b"ccc")];
    let mut batch = store
        .begin_batch("alice", &items(&blobs), None)
        .await
        .unwrap();
    receive(&mut batch, &blobs[..1]).await.unwrap();
    batch.start(&id("b"), WRITE_BUF as u64).await.unwrap();
    // Writing to a file opened read-only fails, and not with a full disk.
    let readonly = root.path().join("readonly");
    std::fs::write(&readonly, b"").unwrap();
    poke_file(&mut batch, std::fs::File::open(&readonly).unwrap());
    batch.write(&vec![0; WRITE_BUF]).await.unwrap();
    batch.end().await.unwrap();
    receive(&mut batch, &blobs[2..]).await.unwrap();
    let failed = batch.commit().await.unwrap();
    assert_eq!(failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
    assert!(read_back(&store, "a").await.is_some() && read_back(&store, "c").await.is_some());
    assert!(read_back(&store, "b").await.is_none());
    assert_eq!(store.usage("alice").await.unwrap(), (2, 6));
    assert_eq!(store.reserved("alice").await, 0);
    assert_eq!(temp_files(root.path()), 0);
}

/// Makes the current blob of `batch` write to `file`.
fn poke_file(batch: &mut PutBatch, file: std::fs::File) {
    let current = batch.current.as_mut().expect("a current blob");
    let (sink, _) = current.writing.as_mut().expect("still writing");
    let Sink::File(writer) = sink else {
        panic!("a blob over the inline bound has a file");
    };
    writer.file = Some(file);
    writer.created = true;
}

#[cfg(target_os = "linux")]
fn dev_full() -> std::fs::File {
    // Every write to /dev/full fails with ENOSPC.
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_fails_the_batch_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let blobs: [(&str, &[u8]); 2] = [("a", b"aaa"), ("b", &[0; WRITE_BUF])];
    let mut batch = store
        .begin_batch("alice", &items(&blobs), None)
        .await
        .unwrap();
    receive(&mut batch, &blobs[..1]).await.unwrap();
    batch.start(&id("b"), WRITE_BUF as u64).await.unwrap();
    poke_file(&mut batch, dev_full());
    let err = batch.write(&vec![0; WRITE_BUF]).await.unwrap_err();
    assert!(matches!(err, PutError::NoSpace(_)), "{err:?}");
    drop(batch);
    assert!(no_temp_files(root.path()).await);
    assert_eq!(store.usage("alice").await.unwrap(), (0, 0));
    assert_eq!(store.reserved("alice").await, 0);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_is_reported_as_such_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = BlobStore::new(root.path());
    let len = WRITE_BUF as u64;
    let mut p = store
        .begin_put("alice", &id("big"), len, Some(len + O), None)
        .await
        .unwrap();
    let Sink::File(writer) = &mut p.sink else {
        panic!("a blob over the inline bound has a file");
    };
    writer.file = Some(dev_full());
    let err = p.write(&vec![0; WRITE_BUF]).await.unwrap_err();
    assert!(matches!(err, PutError::NoSpace(_)), "{err:?}");
    assert_eq!(err.to_string(), "the node's disk is full");
    drop(p);
    assert!(store.open("alice", &id("big")).await.unwrap().is_none());
    assert_eq!(temp_files(root.path()), 0);
    // The reservation was given back.
    assert!(store
        .begin_put("alice", &id("big"), len, Some(len + O), None)
        .await
        .is_ok());
}

/// Polls `cond` (bounded: about 10 s) until it holds.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Holds `db`'s write lock on a thread of its own until `release` is
/// dropped or sent to: the user's writer waits meanwhile.
fn block_writer(db: &Arc<UserDb>) -> std::sync::mpsc::Sender<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let db = db.clone();
    std::thread::spawn(move || {
        let txn = db.db.begin_write().unwrap();
        ready_tx.send(()).unwrap();
        let _ = release_rx.recv();
        txn.abort().unwrap();
    });
    ready_rx.recv().unwrap();
    release
}

#[tokio::test]
async fn a_commit_dropped_after_its_hand_off_keeps_its_quota_until_the_writer_answers() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::new(root.path());
        let quota = Some(100 + O);
        let db = store.db("alice").await.unwrap();
        let release = block_writer(&db);
        let mut p = store
            .begin_put("alice", &id("a"), 100, quota, None)
            .await
            .unwrap();
        p.write(&[7; 100]).await.unwrap();
        // The commit is handed to the (blocked) writer, then the request
        // goes away: the blob is still to be committed.
        let mut commit = Box::pin(p.commit());
        tokio::select! {
            biased;
            r = &mut commit => panic!("committed with the writer blocked: {r:?}"),
            () = std::future::ready(()) => {}
        }
        drop(commit);
        let err = store
            .begin_put("alice", &id("b"), 0, quota, None)
            .await
            .expect_err("the queued blob must still count against the quota");
        assert!(matches!(err, PutError::Quota { .. }), "{err:?}");
        drop(release);
        assert!(
            eventually(|| db.totals().unwrap().count == 1).await,
            "the queued blob is stored"
        );
        assert!(
            eventually(|| lock(&db.reserved).charge == 0).await,
            "its reservation is given back once stored"
        );
        assert_eq!(store.usage("alice").await.unwrap(), (1, 100));
        let err = store
            .begin_put("alice", &id("b"), 0, quota, None)
            .await
            .expect_err("the stored blob counts against the quota");
        assert!(matches!(err, PutError::Quota { .. }), "{err:?}");
    })
    .await
    .unwrap();
}

fn is_memory(p: &PendingBlob) -> bool {
    matches!(p.sink, Sink::Memory(..))
}

#[tokio::test]
async fn an_in_memory_upload_allocates_as_its_bytes_arrive() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::new(root.path());
        let len = 60_000;
        let mut p = store
            .begin_put("alice", &id("a"), len as u64, None, None)
            .await
            .unwrap();
        let capacity = |p: &PendingBlob| match &p.sink {
            Sink::Memory(b, _) => b.capacity(),
            Sink::File(_) => panic!("a small upload goes to memory"),
        };
        assert_eq!(capacity(&p), 0, "an announced length allocates nothing");
        p.write(&[1; 10]).await.unwrap();
        assert!(capacity(&p) < 1000, "{}", capacity(&p));
        p.write(&vec![2; len - 10]).await.unwrap();
        assert!(capacity(&p) <= len, "{}", capacity(&p));
        assert!(
            p.write(&[3]).await.is_err(),
            "no byte past the announced length"
        );
        // A batch's small blob too.
        let mut batch = store
            .begin_batch("alice", &[item("b", len)], None)
            .await
            .unwrap();
        batch.start(&id("b"), len as u64).await.unwrap();
        let held = match &batch.current.as_ref().unwrap().writing {
            Some((Sink::Memory(b, _), _)) => b.capacity(),
            other => panic!("a small blob goes to memory: {other:?}"),
        };
        assert_eq!(held, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn small_uploads_go_to_temp_files_once_the_memory_budget_is_spent() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let root = tempfile::tempdir().unwrap();
        let limits = crate::store::StoreLimits {
            max_upload_memory: 1000,
            ..Default::default()
        };
        let store = BlobStore::with_limits(root.path(), limits);
        let mut a = store
            .begin_put("alice", &id("a"), 600, None, None)
            .await
            .unwrap();
        assert!(is_memory(&a));
        assert_eq!(store.upload_memory.available_permits(), 400);
        // No room left for this one: a temp file, not a refusal.
        let mut b = store
            .begin_put("alice", &id("b"), 600, None, None)
            .await
            .unwrap();
        assert!(!is_memory(&b), "over the budget: a temp file");
        assert_eq!(temp_files(root.path()), 1);
        // A batch: the blobs that fit in what is left stay in memory.
        let blobs: [(&str, &[u8]); 3] = [("c", &[3; 300]), ("d", &[4; 300]), ("e", &[5; 50])];
        let mut batch = store
            .begin_batch("alice", &items(&blobs), None)
            .await
            .unwrap();
        receive(&mut batch, &blobs).await.unwrap();
        assert_eq!(
            store.upload_memory.available_permits(),
            50,
            "c and e in memory, d in a temp file"
        );
        a.write(&[1; 600]).await.unwrap();
        b.write(&[2; 600]).await.unwrap();
        a.commit().await.unwrap();
        b.commit().await.unwrap();
        assert!(batch.commit().await.unwrap().is_empty());
        assert_eq!(read_back(&store, "a").await.unwrap(), vec![1; 600]);
        assert_eq!(read_back(&store, "b").await.unwrap(), vec![2; 600]);
        for (name, data) in blobs {
            assert_eq!(read_back(&store, name).await.unwrap(), data);
        }
        assert_eq!(store.upload_memory.available_permits(), 1000);
        assert!(no_temp_files(root.path()).await);
        // A dropped upload gives its share back.
        let c = store
            .begin_put("alice", &id("c"), 1000, None, None)
            .await
            .unwrap();
        assert!(is_memory(&c));
        assert_eq!(store.upload_memory.available_permits(), 0);
        drop(c);
        assert_eq!(store.upload_memory.available_permits(), 1000);
    })
    .await
    .unwrap();
}
