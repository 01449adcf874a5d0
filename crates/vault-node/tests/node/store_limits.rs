//! The store's resource limits through a real node: the per-blob quota
//! overhead, the blob count cap, the bound on files held open for replies
//! with the reply deadline, and the bound on uploads' blocking file work.

use std::time::{Duration, Instant};

use quinn::RecvStream;
use vault_node::store::BLOB_OVERHEAD;
use vault_node::testing::raw::{error_code, split_response};
use vault_node::testing::{timed, users_text, TestNode};
use wire::{encode_request, BlobId, ErrorCode, Request, Response, FRAME_PREFIX_LEN};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

fn message(resp: &Response) -> &str {
    match resp {
        Response::Error { message, .. } => message,
        _ => "",
    }
}

#[tokio::test]
async fn zero_length_blobs_count_against_the_quota() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.quota = Some(3 * BLOB_OVERHEAD))
            .await
            .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        for name in ["e-1", "e-2", "e-3"] {
            assert_eq!(c.put(name, b"").await, Response::Stored);
        }
        let resp = c.put("e-4", b"").await;
        assert_eq!(
            error_code(&resp),
            Some(ErrorCode::QuotaExceeded),
            "{resp:?}"
        );
        let overhead = format!("plus {BLOB_OVERHEAD} bytes");
        assert!(message(&resp).contains(&overhead), "{resp:?}");
        let resp = c.put_blobs(&[("e-4", b""), ("e-5", b"")]).await;
        assert_eq!(
            error_code(&resp),
            Some(ErrorCode::QuotaExceeded),
            "{resp:?}"
        );
        // Replacing one costs nothing more.
        assert_eq!(c.put("e-1", b"").await, Response::Stored);
        assert_eq!(
            node.stored_blobs().await.unwrap(),
            ["alice/e-1", "alice/e-2", "alice/e-3"]
        );
    })
    .await
}

#[tokio::test]
async fn the_blob_count_cap_refuses_new_blobs_but_not_replacements() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.store.max_blobs = 3)
            .await
            .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(
            c.put_blobs(&[("b-1", b"1"), ("b-2", b"2")]).await,
            Response::BatchStored { failed: vec![] }
        );
        assert_eq!(c.put("b-3", b"3").await, Response::Stored);
        let resp = c.put("b-4", b"4").await;
        assert_eq!(
            error_code(&resp),
            Some(ErrorCode::QuotaExceeded),
            "{resp:?}"
        );
        assert!(
            message(&resp).contains("at most 3 blobs per user"),
            "{resp:?}"
        );
        // A batch adding one new blob among replacements is refused whole.
        let resp = c.put_blobs(&[("b-1", b"x"), ("b-5", b"5")]).await;
        assert_eq!(
            error_code(&resp),
            Some(ErrorCode::QuotaExceeded),
            "{resp:?}"
        );
        // Replacements are always allowed.
        assert_eq!(c.put("b-3", b"33").await, Response::Stored);
        assert_eq!(
            c.put_blobs(&[("b-1", b"11"), ("b-2", b"22")]).await,
            Response::BatchStored { failed: vec![] }
        );
        // Another user has a count of their own; deleting makes room.
        let bob = node.md5_client("bob", "Velvet77").await.unwrap();
        assert_eq!(bob.put("b-4", b"4").await, Response::Stored);
        assert!(matches!(
            c.call(&Request::Delete { id: id("b-2") }).await,
            Response::Deleted
        ));
        assert_eq!(c.put("b-4", b"4").await, Response::Stored);
        assert_eq!(
            node.stored_blobs().await.unwrap(),
            ["alice/b-1", "alice/b-3", "alice/b-4", "bob/b-4"]
        );
    })
    .await
}

/// Sends `GetBlobs` of `names` and reads only the response frame (and
/// whatever bytes came with it), leaving the rest of the answer unread.
async fn get_blobs_head(conn: quinn::Connection, names: Vec<String>) -> (Response, RecvStream) {
    let req = Request::GetBlobs {
        ids: names.iter().map(|n| id(n)).collect(),
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_request(&req)).await.unwrap();
    send.finish().unwrap();
    let mut got = Vec::new();
    loop {
        if got.len() >= FRAME_PREFIX_LEN {
            let prefix: &[u8; FRAME_PREFIX_LEN] = got[..FRAME_PREFIX_LEN].try_into().unwrap();
            let body = wire::decode_frame_header(prefix).unwrap();
            if got.len() >= FRAME_PREFIX_LEN + body {
                let (resp, _) = split_response(&got).unwrap();
                return (resp, recv);
            }
        }
        match recv.read_chunk(64 * 1024, true).await.unwrap() {
            Some(chunk) => got.extend_from_slice(&chunk.bytes),
            None => {
                let (resp, _) = split_response(&got).unwrap();
                return (resp, recv);
            }
        }
    }
}

/// Reads a few bytes every 100 ms until the stream ends or fails.
async fn trickle(mut recv: RecvStream) {
    let mut buf = [0u8; 64];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return,
        }
    }
}

#[tokio::test]
async fn a_reply_not_taken_within_its_deadline_is_reset_and_its_files_closed() {
    timed(async {
        let deadline = Duration::from_secs(1);
        let node = TestNode::start_with(&users_text(), |c| {
            c.store.max_reply_files = 8;
            c.store.reply_files_wait = Duration::from_millis(100);
            c.store.reply_deadline = deadline;
        })
        .await
        .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        // 8 blobs of 1 MiB: far more than the reader's window takes.
        let names: Vec<String> = (0..8).map(|i| format!("p-{i}")).collect();
        let blob = vec![5u8; 1 << 20];
        let items: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &blob[..])).collect();
        assert_eq!(
            c.put_blobs(&items).await,
            Response::BatchStored { failed: vec![] }
        );
        let started = Instant::now();
        let (head, mut slow) = get_blobs_head(c.conn.clone(), names.clone()).await;
        assert!(matches!(head, Response::Blobs { .. }), "{head:?}");
        // The slow reader holds the node's files for replies: another
        // reply that needs them all waits, then is refused as busy.
        let (busy, _) = get_blobs_head(c.conn.clone(), names.clone()).await;
        assert_eq!(error_code(&busy), Some(ErrorCode::Busy), "{busy:?}");
        // At the deadline its stream is reset, though it kept reading...
        let mut buf = [0u8; 256];
        let mut taken = 0usize;
        let reset = loop {
            match slow.read(&mut buf).await {
                Ok(Some(n)) => taken += n,
                Ok(None) => break false,
                Err(_) => break true,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(reset, "the slow reply was sent whole ({taken} bytes)");
        assert!(
            started.elapsed() < deadline + Duration::from_secs(5),
            "reset late: {:?}",
            started.elapsed()
        );
        // ...and its files are closed: a whole reply fits again (polled: the
        // node closes them as the reset goes out).
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut tries = 0;
        let (resp, parts) = loop {
            let (resp, parts) = c.get_blobs(&all).await;
            tries += 1;
            if error_code(&resp) != Some(ErrorCode::Busy) || tries == 50 {
                break (resp, parts);
            }
        };
        assert!(matches!(resp, Response::Blobs { .. }), "{resp:?}");
        assert!(parts.iter().all(|p| *p == blob));
    })
    .await
}

/// The test: several connections of one user ask for many blobs
/// each and read the answers very slowly, more files than the process may
/// hold open; another user's uploads still all succeed.
#[tokio::test]
async fn a_reader_trickling_get_blobs_answers_cannot_make_other_users_uploads_fail() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| {
            c.store.max_reply_files = 600;
            c.store.reply_files_wait = Duration::from_millis(200);
            c.store.reply_deadline = Duration::from_secs(3);
        })
        .await
        .unwrap();
        // 512 blobs of 16 KiB: an answer of 8 MiB, far more than a
        // reader's window takes, so the node holds most files open.
        let a = node.md5_client("alice", "Crimson33").await.unwrap();
        let names: Vec<String> = (0..wire::MAX_BATCH).map(|i| format!("p-{i:03}")).collect();
        let blob = vec![3u8; 16 << 10];
        let items: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &blob[..])).collect();
        assert_eq!(
            a.put_blobs(&items).await,
            Response::BatchStored { failed: vec![] }
        );
        let baseline = open_files();
        // 4 connections x 16 requests x 512 files: about 32,000 files, more
        // than the usual open-file limits, were they all opened.
        let mut readers = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..4 {
            let c = node.md5_client("alice", "Crimson33").await.unwrap();
            let mut heads = Vec::new();
            for _ in 0..16 {
                heads.push(get_blobs_head(c.conn.clone(), names.clone()));
            }
            for (head, recv) in crate::join_all(heads).await {
                assert!(
                    matches!(head, Response::Blobs { .. })
                        || error_code(&head) == Some(ErrorCode::Busy),
                    "{head:?}"
                );
                readers.push(tokio::spawn(trickle(recv)));
            }
            conns.push(c);
        }
        // The node holds at most its bound of files for them (this test
        // process is the node: its open files tell, where /proc does).
        if let (Some(before), Some(now)) = (baseline, open_files()) {
            assert!(
                now < before + 600 + 2000,
                "{now} files open, {before} before the readers came"
            );
        }
        // Meanwhile bob's uploads all succeed.
        let bob = node.md5_client("bob", "Velvet77").await.unwrap();
        for i in 0..20 {
            let name = format!("p-{i}");
            assert_eq!(
                bob.put(&name, &[i as u8; 4096]).await,
                Response::Stored,
                "put {i}"
            );
            let batch: Vec<(String, Vec<u8>)> = (0..8)
                .map(|j| (format!("q-{i}-{j}"), vec![j as u8; 2048]))
                .collect();
            let batch: Vec<(&str, &[u8])> = batch
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect();
            assert_eq!(
                bob.put_blobs(&batch).await,
                Response::BatchStored { failed: vec![] },
                "batch {i}"
            );
        }
        assert_eq!(bob.get("p-19").await.1, vec![19u8; 4096]);
        for r in readers {
            r.abort();
        }
        drop(conns);
    })
    .await
}

/// Files this process has open, where `/proc` tells.
fn open_files() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// Batch uploads cannot take every blocking thread: one user's many
/// large concurrent `PutBlobs` keep to the node's bound on uploads'
/// blocking file work (here 2, a user's share 1), so the runtime never
/// needs more blocking threads than that and a few for everything else,
/// and another user's small requests all complete meanwhile.
///
/// The runtime's threads are named, and kept alive once started, so the
/// number of them at the end is the most that were ever busy at once.
#[test]
fn batch_uploads_cannot_take_the_blocking_pool() {
    const NAME: &str = "vault-io-bound";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(256)
        .thread_keep_alive(Duration::from_secs(600))
        .thread_name(NAME)
        .enable_all()
        .build()
        .unwrap();
    let threads = || {
        std::fs::read_dir("/proc/self/task").ok().map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == NAME)
                })
                .count()
        })
    };
    rt.block_on(timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.store.max_upload_io = 2)
            .await
            .unwrap();
        let blob = vec![9u8; 256 << 10];
        let mut floods = Vec::new();
        for i in 0..8 {
            let c = node.md5_client("alice", "Crimson33").await.unwrap();
            let blob = blob.clone();
            floods.push(tokio::spawn(async move {
                for round in 0..4 {
                    let names: Vec<String> =
                        (0..16).map(|j| format!("p-{i}-{round}-{j}")).collect();
                    let items: Vec<(&str, &[u8])> =
                        names.iter().map(|n| (n.as_str(), &blob[..])).collect();
                    assert_eq!(
                        c.put_blobs(&items).await,
                        Response::BatchStored { failed: vec![] }
                    );
                }
            }));
        }
        let bob = node.md5_client("bob", "Velvet77").await.unwrap();
        let mut rounds = 0;
        while floods.iter().any(|f| !f.is_finished()) || rounds < 5 {
            let name = format!("m-{rounds}");
            let started = Instant::now();
            assert_eq!(
                bob.put(&name, &[rounds as u8; 1024]).await,
                Response::Stored
            );
            assert_eq!(bob.get(&name).await.1, vec![rounds as u8; 1024]);
            let took = started.elapsed();
            assert!(took < Duration::from_secs(10), "bob waited {took:?}");
            rounds += 1;
        }
        for f in floods {
            f.await.unwrap();
        }
        // 2 workers, 2 for uploads, and up to 10 for reads, folder checks
        // and the node's other blocking work (a loaded machine starts a
        // few more of those); unbounded, the 8 batches' syncs start 18 or
        // more.
        if let Some(n) = threads() {
            assert!(n <= 2 + 2 + 10, "{n} runtime threads were started");
        }
    }));
}
