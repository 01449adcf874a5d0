//! Range reads (`ops::get::read_range`), as the gateway's Range GET does
//! them: only the chunks asked for, from one copy, the other taking over
//! from the next chunk not yet sent; and the node's ranged blob read
//! underneath (`Session::get_range`).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use vault_client::crypto::stream::{CHUNK_LEN, CT_CHUNK_LEN};
use vault_client::manifest::Manifest;
use vault_client::ops::{self, OpError};
use vault_client::placement::nodes_for_part;
use vault_client::vault::Vault;
use vault_node::testing::lie::Honest;
use vault_node::testing::{self, timed, TestCluster};
use wire::Request;

use super::common::*;

/// Part blobs start with a five-byte header.
const HEADER_LEN: usize = 5;

/// Reads `range` of `m` through `read_range`: the bytes, or the error
/// with the bytes sent before it. Every piece is at most one chunk.
pub(crate) async fn read(
    v: &Vault,
    m: &Manifest,
    range: Range<u64>,
) -> (Vec<u8>, Result<(), OpError>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let reader = async {
        let r = ops::get::read_range(v, m, range, &tx).await;
        drop(tx);
        r
    };
    let collect = async {
        let mut out = Vec::new();
        while let Some(piece) = rx.recv().await {
            assert!(
                !piece.is_empty() && piece.len() <= CHUNK_LEN,
                "{}",
                piece.len()
            );
            out.extend_from_slice(&piece);
        }
        out
    };
    let (r, out) = tokio::join!(reader, collect);
    (out, r)
}

async fn read_ok(v: &Vault, m: &Manifest, range: Range<u64>, src: &[u8]) {
    let (got, r) = read(v, m, range.clone()).await;
    r.unwrap_or_else(|e| panic!("{range:?} of {}: {e}", src.len()));
    let want = &src[range.start as usize..range.end as usize];
    assert!(
        got == want,
        "{range:?} of {}: {} bytes, wrong",
        src.len(),
        got.len()
    );
}

fn alice() -> String {
    testing::plain_user("Alice", ALICE)
}

/// Part `k` of `m`: its plaintext offset and length, its blob id, and its
/// two holders (the first is tried first).
fn part(v: &Vault, m: &Manifest, k: usize) -> (u64, u64, String, [usize; 2]) {
    let (offset, len) = m.parts()[k];
    let id = v.master().part_id(&m.file_id, k).as_str().to_string();
    (offset, len, id, nodes_for_part(m.placement(), k))
}

/// `blob` with one byte of ciphertext chunk `chunk` flipped.
fn flipped(mut blob: Vec<u8>, chunk: usize) -> Vec<u8> {
    blob[HEADER_LEN + chunk * CT_CHUNK_LEN + 100] ^= 0x40;
    blob
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_files_of_every_size_are_their_slices() {
    timed(async {
        let c = TestCluster::start(&alice()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let chunk = CHUNK_LEN as u64;
        for (i, size) in [0u64, 1, chunk, chunk + 1, 5 * 1024 * 1024 + 3]
            .into_iter()
            .enumerate()
        {
            let src = data(size as usize, 100 + i as u64);
            let name = format!("f{size}.bin");
            put(&v, &c, &name, &src).await;
            let m = ops::get::find(&v, &name).await.unwrap();
            let mut ranges = vec![0..0, size / 2..size / 2, 0..size, size..size];
            if size > 0 {
                ranges.extend([0..1, size - 1..size, size / 3..size - size / 5]);
            }
            // Across a chunk boundary of the file and of each part.
            for (offset, len) in m.parts() {
                for at in [offset, offset + chunk, offset + len] {
                    ranges.push(at.saturating_sub(10).min(size)..(at + 10).min(size));
                }
            }
            // Across parts: from the middle of one to the middle of the next.
            let p = m.parts();
            ranges.push(p[0].0 + p[0].1 / 2..p[2].0 + p[2].1 / 2);
            ranges.push((p[1].0 + 1).min(size)..size);
            for r in ranges {
                read_ok(&v, &m, r, &src).await;
            }
            // Past the end: refused, nothing sent.
            let (got, r) = read(&v, &m, 0..size + 1).await;
            assert!(matches!(r, Err(OpError::Refused(_))), "{r:?}");
            assert!(got.is_empty());
            #[allow(clippy::reversed_empty_ranges)]
            let (_, r) = read(&v, &m, 1..0).await;
            assert!(matches!(r, Err(OpError::Refused(_))), "{r:?}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_in_the_range_is_read_from_the_other_copy() {
    timed(async {
        let mut c = TestCluster::start(&alice()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let src = data(5 * 1024 * 1024, 7);
        put(&v, &c, "a.bin", &src).await;
        let m = ops::get::find(&v, "a.bin").await.unwrap();
        let (offset, _, id, [first, second]) = part(&v, &m, 1);
        // The copy tried first is corrupt in chunk 10 of part 2, in the
        // middle of the range (chunks 5 to 15).
        let good = c.blob(first, "alice", &id).await.unwrap().unwrap();
        c.set_blob(first, "alice", &id, &flipped(good.clone(), 10))
            .await
            .unwrap();
        let seen = c.make_hostile(first, Arc::new(Honest)).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let chunk = CHUNK_LEN as u64;
        let range = offset + 5 * chunk + 17..offset + 15 * chunk + 3;
        read_ok(&v, &m, range.clone(), &src).await;
        assert!(
            seen.count(|r| matches!(r, Request::GetBlobRange { .. })) > 0,
            "the corrupt copy was read"
        );

        // Both copies corrupt: an error naming the part and both nodes,
        // and only authenticated bytes before it (those of chunks 5 to 9).
        let other = c.blob(second, "alice", &id).await.unwrap().unwrap();
        c.set_blob(second, "alice", &id, &flipped(other, 10))
            .await
            .unwrap();
        let (got, r) = read(&v, &m, range.clone()).await;
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("part 2") && e.contains("decryption failed"),
            "{e}"
        );
        assert!(
            e.contains(c.name(first)) && e.contains(c.name(second)),
            "{e}"
        );
        let upto = (offset + 10 * chunk) as usize;
        assert!(
            got == src[range.start as usize..upto],
            "{} bytes sent before the error, not the {} authenticated ones",
            got.len(),
            upto - range.start as usize
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_another_part_is_caught() {
    timed(async {
        let c = TestCluster::start(&alice()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        // Parts 1 and 2 have the same length: only the keys and positions
        // tell them apart.
        let src = data(4 * 300_000, 8);
        put(&v, &c, "s.bin", &src).await;
        let m = ops::get::find(&v, "s.bin").await.unwrap();
        let (offset, len, id, [first, second]) = part(&v, &m, 1);
        let (_, len0, id0, [holder0, _]) = part(&v, &m, 0);
        assert_eq!(len, len0);
        let other = c.blob(holder0, "alice", &id0).await.unwrap().unwrap();
        c.set_blob(first, "alice", &id, &other).await.unwrap();
        let chunk = CHUNK_LEN as u64;
        let range = offset + 2 * chunk + 5..offset + len - 5;
        read_ok(&v, &m, range.clone(), &src).await;
        // With both copies swapped the range fails, nothing unauthenticated
        // sent.
        c.set_blob(second, "alice", &id, &other).await.unwrap();
        let (got, r) = read(&v, &m, range).await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("decryption failed"), "{e}");
        assert!(got.is_empty(), "{} bytes sent", got.len());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_dies_mid_range_is_replaced_without_a_gap_or_a_repeat() {
    timed(async {
        let mut c = TestCluster::start_with([alice().as_str(); 4], |_, config| {
            config.shutdown_grace = Duration::from_millis(100);
        })
        .await
        .unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        // Parts of 8 MiB: more than the connection buffers for one stream
        // (4 MiB) and the range read's own buffer, so the holder is still
        // sending when it dies.
        let src = data(32 << 20, 9);
        put(&v, &c, "big.bin", &src).await;
        let m = ops::get::find(&v, "big.bin").await.unwrap();
        let (offset, len, _, [first, _]) = part(&v, &m, 1);
        let range = offset + 12_345..offset + len;
        let (tx, mut rx) = mpsc::channel::<Bytes>(1);
        let reader = {
            let (v, m, range) = (&v, &m, range.clone());
            async move {
                let r = ops::get::read_range(v, m, range, &tx).await;
                drop(tx);
                r
            }
        };
        let slow = async {
            let mut out = Vec::new();
            // A few pieces, then the holder dies, then the rest.
            for _ in 0..8 {
                out.extend_from_slice(&rx.recv().await.unwrap());
            }
            c.stop(first).await.unwrap();
            while let Some(piece) = rx.recv().await {
                out.extend_from_slice(&piece);
            }
            out
        };
        let (r, got) = tokio::join!(reader, slow);
        r.unwrap();
        assert!(
            got == src[range.start as usize..range.end as usize],
            "{} bytes of {}",
            got.len(),
            range.end - range.start
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_at_the_end_asks_only_for_its_chunks() {
    timed(async {
        let mut c = TestCluster::start(&alice()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let src = data(5 * 1024 * 1024, 10);
        put(&v, &c, "e.bin", &src).await;
        let m = ops::get::find(&v, "e.bin").await.unwrap();
        let (_, len, id, holders) = part(&v, &m, 3);
        let stored = c.blob(holders[0], "alice", &id).await.unwrap().unwrap();

        // The node's ranged read: the total, then exactly the bytes asked.
        let s = v.session(holders[0]).unwrap();
        let blob_id = wire::BlobId::new(id.clone()).unwrap();
        let from = stored.len() as u64 - 1000;
        let mut dl = s.get_range(&blob_id, from, None).await.unwrap().unwrap();
        assert_eq!((dl.total, dl.len), (stored.len() as u64, 1000));
        let mut got = Vec::new();
        while let Some(piece) = dl.next_chunk(1 << 16).await.unwrap() {
            got.extend_from_slice(&piece);
        }
        assert!(got == stored[stored.len() - 1000..]);
        let dl = s.get_range(&blob_id, 5, Some(10)).await.unwrap().unwrap();
        assert_eq!((dl.total, dl.len), (stored.len() as u64, 10));
        dl.cancel();
        let e = match s.get_range(&blob_id, stored.len() as u64 + 1, None).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a range past the end was served"),
        };
        assert!(e.contains("beyond the end"), "{e}");

        // The last 100 bytes of the file: one chunk of one part asked for.
        let mut seen = Vec::new();
        for i in holders {
            seen.push(c.make_hostile(i, Arc::new(Honest)).await.unwrap());
        }
        let v = open(&c, "alice", ALICE).await.unwrap();
        let size = src.len() as u64;
        read_ok(&v, &m, size - 100..size, &src).await;
        let asked: Vec<Request> = seen.iter().flat_map(|o| o.requests()).collect();
        let last_chunk = (len - 1) / CHUNK_LEN as u64;
        let at = HEADER_LEN as u64 + last_chunk * CT_CHUNK_LEN as u64;
        let ranges: Vec<_> = asked
            .iter()
            .filter_map(|r| match r {
                Request::GetBlobRange {
                    id: got,
                    offset,
                    len,
                } if got.as_str() == id => Some((*offset, *len)),
                _ => None,
            })
            .collect();
        assert_eq!(ranges, [(at, Some(stored.len() as u64 - at))], "{asked:?}");
        assert!(!asked.iter().any(|r| matches!(r, Request::GetBlob { .. })));
    })
    .await
}

/// Throughput of a whole 256 MiB file through `read_range` against
/// `get_file` (four parts at once): prints both. Run with
/// `client range::throughput --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput_of_a_whole_file_range_against_get() {
    let c = TestCluster::start(&alice()).await.unwrap();
    let v = open(&c, "alice", ALICE).await.unwrap();
    let size = 256usize << 20;
    put(&v, &c, "big.bin", &data(size, 11)).await;
    let m = ops::get::find(&v, "big.bin").await.unwrap();
    let out = c.dir().join("out-big.bin");
    let start = std::time::Instant::now();
    ops::get::get_file(&v, "big.bin", &out, false, progress())
        .await
        .unwrap();
    let get = start.elapsed();
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let start = std::time::Instant::now();
    let count = async {
        let mut n = 0u64;
        while let Some(p) = rx.recv().await {
            n += p.len() as u64;
        }
        n
    };
    let reader = async {
        let r = ops::get::read_range(&v, &m, 0..size as u64, &tx).await;
        drop(tx);
        r
    };
    let (r, n) = tokio::join!(reader, count);
    r.unwrap();
    let range = start.elapsed();
    assert_eq!(n, size as u64);
    let mib = |d: Duration| (size >> 20) as f64 / d.as_secs_f64();
    println!(
        "get_file: {get:?} ({:.0} MiB/s); read_range: {range:?} ({:.0} MiB/s)",
        mib(get),
        mib(range)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_taking_over_a_part_asks_only_for_the_chunks_not_yet_written() {
    use vault_node::testing::lie::StallOn;
    timed(async {
        let mut c = TestCluster::start(&alice()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        // Parts of 256 KiB: four chunks each.
        let src = data(1 << 20, 12);
        put(&v, &c, "g.bin", &src).await;
        let m = ops::get::find(&v, "g.bin").await.unwrap();
        let (_, _, id, [first, second]) = part(&v, &m, 0);
        let stored = c.blob(first, "alice", &id).await.unwrap().unwrap();
        // The first holder sends two chunks and a bit, then nothing.
        let two = HEADER_LEN + 2 * CT_CHUNK_LEN;
        c.make_hostile(first, Arc::new(StallOn::mid_blob("p2-", two + 10)))
            .await
            .unwrap();
        let seen = c.make_hostile(second, Arc::new(Honest)).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let failovers = get_ok(&v, &c, "g.bin", &src).await;
        assert!(
            failovers.iter().any(|f| f.starts_with(c.name(first))),
            "{failovers:?}"
        );
        let asked: Vec<_> = seen
            .requests()
            .into_iter()
            .filter(|r| match r {
                Request::GetBlobRange { id: got, .. } | Request::GetBlob { id: got } => {
                    got.as_str() == id
                }
                _ => false,
            })
            .collect();
        let rest = (stored.len() - two) as u64;
        assert_eq!(
            asked,
            [Request::GetBlobRange {
                id: wire::BlobId::new(id.clone()).unwrap(),
                offset: two as u64,
                len: Some(rest),
            }]
        );
    })
    .await
}

/// A node from before ranged reads (Vault 0.2): a request it cannot
/// decode is answered `BadRequest`, as its request reader does.
struct NoRanges;

impl vault_node::testing::lie::Lie for NoRanges {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> vault_node::testing::lie::Verdict {
        match req {
            Request::GetBlobRange { .. } => {
                vault_node::testing::lie::Verdict::Answer(vault_node::testing::lie::Reply::Send(
                    wire::Response::error(wire::ErrorCode::BadRequest, "malformed request"),
                    Vec::new(),
                ))
            }
            _ => vault_node::testing::lie::Verdict::Forward,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_ranged_reads_are_read_whole() {
    timed(async {
        let mut c = TestCluster::start(&alice()).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let src = data(3 * 1024 * 1024 + 17, 11);
        put(&v, &c, "old.bin", &src).await;
        let m = ops::get::find(&v, "old.bin").await.unwrap();
        for i in 0..4 {
            c.make_hostile(i, Arc::new(NoRanges)).await.unwrap();
        }
        let v = open(&c, "alice", ALICE).await.unwrap();
        let size = src.len() as u64;
        // Inside a part, across parts, the end: every one from whole reads.
        for range in [100_000..200_000, 700_000..1_700_000, size - 10..size] {
            read_ok(&v, &m, range, &src).await;
        }
    })
    .await
}
