//! The test kit's slow link ([`TestCluster::slow_down`]): one node's
//! uploads and downloads move at a bounded rate on the QUIC stream itself,
//! shared by its streams, and lifting it makes the node fast again. The
//! kit's own behaviour, not a product speed goal: the bounds are loose.

use std::time::{Duration, Instant};

use vault_node::testing::raw::{split_response, MAX_RESPONSE_LEN};
use vault_node::testing::{timed, users_text, RawClient, TestCluster};
use wire::{encode_request, BlobId, Request, Response};

const MIB: u64 = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

/// Uploads `data` as blob `id` with one `PutBlob`: the answer, how long
/// the client's writes took (until the last byte was taken by its QUIC
/// stream), and how long until the answer.
async fn timed_put(c: &RawClient, id: &str, data: &[u8]) -> (Response, Duration, Duration) {
    let req = Request::PutBlob {
        id: BlobId::new(id).unwrap(),
        len: data.len() as u64,
        expect: None,
    };
    let start = Instant::now();
    let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
    send.write_all(&encode_request(&req)).await.unwrap();
    send.write_all(data).await.unwrap();
    let written = start.elapsed();
    send.finish().unwrap();
    let answer = recv.read_to_end(MAX_RESPONSE_LEN).await.unwrap();
    let (resp, _) = split_response(&answer).unwrap();
    (resp, written, start.elapsed())
}

/// Reads blob `id`: its bytes (panicking unless the answer is `Blob`) and
/// how long they took.
async fn timed_get(c: &RawClient, id: &str) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let (resp, bytes) = c.get(id).await;
    let took = start.elapsed();
    assert_eq!(
        resp,
        Response::Blob {
            len: bytes.len() as u64
        }
    );
    (bytes, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_node_moves_its_bytes_at_the_rate() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        c.slow_down(0, MIB).await.unwrap();
        assert_ne!(c.addr(0), c.node_addr(0), "a proxy stands in front");
        assert_eq!(c.addr(1), c.node_addr(1), "node 1 is left alone");
        let dfc = c.dfc_text("alice", None);
        assert!(dfc.contains(&format!("Server DFS1 {}\n", c.addr(0))));
        let slow = c.md5_client(0, "alice", "Crimson33").await.unwrap();
        let fast = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        let data = pattern(3 * MIB as usize, 0);

        // Upload: the client's own writes block at the rate.
        let (resp, written, took) = timed_put(&slow, "p-slow", &data).await;
        eprintln!("slowed upload: writes {written:?}, answer {took:?}");
        assert_eq!(resp, Response::Stored);
        assert!(written >= Duration::from_secs(2), "writes took {written:?}");
        assert!(took >= Duration::from_millis(2500), "upload took {took:?}");
        assert_eq!(
            c.blob(0, "alice", "p-slow").await.unwrap(),
            Some(data.clone())
        );
        let (resp, _, took) = timed_put(&fast, "p-fast", &data).await;
        eprintln!("unthrottled upload: {took:?}");
        assert_eq!(resp, Response::Stored);
        assert!(took < Duration::from_secs(1), "upload took {took:?}");

        // Download: the bytes arrive at the rate, intact.
        let (bytes, took) = timed_get(&slow, "p-slow").await;
        eprintln!("slowed download: {took:?}");
        assert!(
            took >= Duration::from_millis(2500),
            "download took {took:?}"
        );
        assert!(bytes == data, "slowed download differs");
        let (bytes, took) = timed_get(&fast, "p-fast").await;
        eprintln!("unthrottled download: {took:?}");
        assert!(took < Duration::from_secs(1), "download took {took:?}");
        assert!(bytes == data, "unthrottled download differs");

        // Lifted: fast again, on the connection made while slow too.
        c.slow_down(0, 0).await.unwrap();
        let other = pattern(3 * MIB as usize, 0x5a);
        let (resp, _, took) = timed_put(&slow, "p-again", &other).await;
        eprintln!("lifted upload: {took:?}");
        assert_eq!(resp, Response::Stored);
        assert!(took < Duration::from_secs(1), "upload took {took:?}");
        let (bytes, took) = timed_get(&slow, "p-again").await;
        eprintln!("lifted download: {took:?}");
        assert!(took < Duration::from_secs(1), "download took {took:?}");
        assert!(bytes == other, "lifted download differs");
        let fresh = c.md5_client(0, "alice", "Crimson33").await.unwrap();
        let (bytes, took) = timed_get(&fresh, "p-slow").await;
        eprintln!("lifted download, new connection: {took:?}");
        assert!(took < Duration::from_secs(1), "download took {took:?}");
        assert!(bytes == data, "lifted download differs");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uploads_share_the_rate_and_a_lift_frees_them() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        c.slow_down(2, 2 * MIB).await.unwrap();
        let a = c.md5_client(2, "alice", "Crimson33").await.unwrap();
        let b = c.md5_client(2, "bob", "Velvet77").await.unwrap();
        let (da, db) = (pattern(3 * MIB as usize, 1), pattern(3 * MIB as usize, 2));
        // 6 MiB at 2 MiB/s: 3 s for both together (1.5 s each alone).
        let start = Instant::now();
        let (ra, rb) = tokio::join!(timed_put(&a, "p-a", &da), timed_put(&b, "p-b", &db));
        let took = start.elapsed();
        eprintln!("two parallel uploads: {took:?}");
        assert_eq!((ra.0, rb.0), (Response::Stored, Response::Stored));
        assert!(took >= Duration::from_millis(2500), "uploads took {took:?}");
        assert_eq!(c.blob(2, "alice", "p-a").await.unwrap(), Some(da.clone()));
        assert_eq!(c.blob(2, "bob", "p-b").await.unwrap(), Some(db));

        // A transfer under way at 64 KiB/s (48 s for 3 MiB) finishes soon
        // once the rate is lifted, whenever that happens during it.
        c.slow_down(2, 64 << 10).await.unwrap();
        let start = Instant::now();
        let download = tokio::spawn(async move { timed_get(&a, "p-a").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.slow_down(2, u64::MAX).await.unwrap();
        let (bytes, _) = download.await.unwrap();
        let took = start.elapsed();
        eprintln!("download lifted mid-way: {took:?}");
        assert!(took < Duration::from_secs(5), "download took {took:?}");
        assert!(bytes == da, "download lifted mid-way differs");
    })
    .await;
}
