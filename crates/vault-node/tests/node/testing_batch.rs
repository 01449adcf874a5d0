//! The hostile proxy with batch requests: an honest one forwards each of
//! them unchanged, bulk included, and a lie sees and can rewrite the bulk
//! of `PutBlobs` and of `Blobs` and `DataListing` answers.

use std::sync::{Arc, Mutex};

use vault_node::testing::raw::response_bulk_len;
use vault_node::testing::{timed, users_text, Honest, Lie, Reply, TestCluster, Verdict};
use wire::{encode_request, BlobId, PutItem, Request, Response};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

fn put_blobs(blobs: &[(&str, &[u8])]) -> Vec<u8> {
    let req = Request::PutBlobs {
        items: blobs
            .iter()
            .map(|(n, d)| PutItem {
                id: id(n),
                len: d.len() as u64,
                expect: None,
            })
            .collect(),
    };
    let mut bytes = encode_request(&req);
    for (_, d) in blobs {
        bytes.extend_from_slice(d);
    }
    bytes
}

fn list_data(max_inline: u32) -> Request {
    Request::ListData {
        after: None,
        prefix: "m2-".into(),
        max_entries: 100,
        max_bytes: 1 << 20,
        max_inline,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_honest_proxy_forwards_batch_requests_unchanged() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let direct = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        let seen = c.make_hostile(1, Arc::new(Honest)).await.unwrap();
        let proxied = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        let big: Vec<u8> = (0..2_000_003u32).map(|n| (n % 251) as u8).collect();
        let put = put_blobs(&[
            ("m2-a", b"manifest a"),
            ("m2-b", b""),
            ("m2-c", &big),
            ("p2-a", b"part"),
        ]);
        // Stored through the proxy, answered as the node answers.
        let via = proxied.exchange(&put).await.unwrap();
        assert_eq!(via, direct.exchange(&put).await.unwrap());
        assert_eq!(
            wire::decode_response(&via[wire::FRAME_PREFIX_LEN..]).unwrap(),
            Response::BatchStored { failed: vec![] }
        );
        // Every answer, byte for byte, as the node gives it directly.
        let reads = [
            Request::GetBlobs {
                ids: vec![id("m2-c"), id("none"), id("m2-a"), id("m2-b")],
            },
            list_data(64 * 1024),
            list_data(0),
            Request::List {
                after: None,
                limit: 10,
                prefix: Some("p2-".into()),
            },
            Request::StatBlobs {
                ids: vec![id("p2-a"), id("none")],
            },
        ];
        for req in &reads {
            let bytes = encode_request(req);
            let a = direct.exchange(&bytes).await.unwrap();
            let b = proxied.exchange(&bytes).await.unwrap();
            assert!(a == b, "{req:?} differs through the proxy");
        }
        let (resp, parts) = proxied.get_blobs(&["m2-c", "m2-a"]).await;
        assert_eq!(
            resp,
            Response::Blobs {
                lens: vec![Some(big.len() as u64), Some(10)]
            }
        );
        assert!(parts[0] == big && parts[1] == b"manifest a");
        let delete = encode_request(&Request::DeleteBlobs {
            ids: vec![id("p2-a"), id("none")],
        });
        let via = proxied.exchange(&delete).await.unwrap();
        assert_eq!(
            wire::decode_response(&via[wire::FRAME_PREFIX_LEN..]).unwrap(),
            Response::BatchDeleted { missing: vec![1] }
        );
        assert_eq!(c.blob(1, "alice", "p2-a").await.unwrap(), None);
        let count = |f: fn(&Request) -> bool| seen.count(f);
        assert_eq!(count(|r| matches!(r, Request::PutBlobs { .. })), 1);
        assert_eq!(count(|r| matches!(r, Request::GetBlobs { .. })), 2);
        assert_eq!(count(|r| matches!(r, Request::ListData { .. })), 2);
        assert_eq!(count(|r| matches!(r, Request::StatBlobs { .. })), 1);
        assert_eq!(count(|r| matches!(r, Request::DeleteBlobs { .. })), 1);
        assert_eq!(
            count(|r| matches!(
                r,
                Request::List {
                    prefix: Some(_),
                    ..
                }
            )),
            1
        );
    })
    .await;
}

/// Remembers the bulk of every `PutBlobs` and reverses the bulk of every
/// `Blobs` and `DataListing` answer.
#[derive(Default)]
struct Reverse {
    uploads: Mutex<Vec<Vec<u8>>>,
    answers: Mutex<Vec<u64>>,
}

impl Lie for Reverse {
    fn on_request(&self, req: &Request, bulk: &[u8]) -> Verdict {
        if matches!(req, Request::PutBlobs { .. }) {
            self.uploads.lock().unwrap().push(bulk.to_vec());
        }
        Verdict::Forward
    }

    fn on_response(&self, req: &Request, resp: Response, mut bulk: Vec<u8>) -> Reply {
        if matches!(resp, Response::Blobs { .. } | Response::DataListing { .. }) {
            assert_eq!(bulk.len() as u64, response_bulk_len(req, &resp));
            self.answers.lock().unwrap().push(bulk.len() as u64);
            bulk.reverse();
        }
        Reply::Send(resp, bulk)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_see_and_rewrite_the_bulk_of_batches() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let lie = Arc::new(Reverse::default());
        c.make_hostile(2, lie.clone()).await.unwrap();
        let client = c.md5_client(2, "alice", "Crimson33").await.unwrap();
        let stored = client
            .put_blobs(&[("m2-a", b"abc"), ("m2-b", b"de"), ("m2-big", &[7; 300])])
            .await;
        assert_eq!(stored, Response::BatchStored { failed: vec![] });
        assert_eq!(
            lie.uploads.lock().unwrap()[..],
            [[b"abcde".as_slice(), &[7; 300]].concat()]
        );
        // Stored as sent: the node's disk has them unchanged.
        let on_disk = c.blob(2, "alice", "m2-a").await.unwrap();
        assert_eq!(on_disk.as_deref(), Some(&b"abc"[..]));

        let (resp, parts) = client.get_blobs(&["m2-a", "m2-b"]).await;
        assert_eq!(
            resp,
            Response::Blobs {
                lens: vec![Some(3), Some(2)]
            }
        );
        // The bytes of both, reversed as one: "abcde" became "edcba".
        assert_eq!(parts, [b"edc".to_vec(), b"ba".to_vec()]);
        let (resp, parts) = client.request_parts(&list_data(100), &[]).await.unwrap();
        let Response::DataListing { entries, more } = resp else {
            panic!("{resp:?}");
        };
        assert!(!more);
        assert_eq!(entries.len(), 3);
        assert_eq!(
            parts,
            [b"edc".to_vec(), b"ba".to_vec()],
            "m2-big is not inline"
        );
        assert_eq!(lie.answers.lock().unwrap()[..], [5, 5]);
    })
    .await;
}
