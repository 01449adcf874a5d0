//! Batch requests (`GetBlobs`, `PutBlobs`, `DeleteBlobs`, `StatBlobs`)
//! through a real node: answers, bounds, failures that leave nothing
//! behind, and users kept apart.

use std::path::Path;
use std::time::Duration;

use vault_node::store::offline::uploads_in_progress;
use vault_node::testing::raw::{error_code, read_response};
use vault_node::testing::{eventually, timed, users_text, RawClient, TestNode};
use wire::{
    encode_request, BlobId, BlobStat, ErrorCode, PutItem, Request, Response, MAX_BATCH,
    MAX_BATCH_BYTES,
};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

fn ids(names: &[&str]) -> Vec<BlobId> {
    names.iter().map(|n| id(n)).collect()
}

/// Names and lengths of a batch's blobs.
type Blobs<'a> = &'a [(&'a str, usize)];

fn items(blobs: Blobs) -> Vec<PutItem> {
    blobs
        .iter()
        .map(|(n, len)| PutItem {
            id: id(n),
            len: *len as u64,
            expect: None,
        })
        .collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8 ^ seed).collect()
}

fn temp_files(root: &Path, user: &str) -> usize {
    std::fs::read_dir(root.join(user).join(".tmp")).map_or(0, |d| d.count())
}

/// No upload of `user`'s is left: none in progress (no quota held), no
/// temp file.
fn nothing_left(root: &Path, user: &str) -> bool {
    uploads_in_progress(root, user) == 0 && temp_files(root, user) == 0
}

/// Sends a request frame and no bytes, keeping the stream open, and
/// returns the node's answer: it must come without the upload.
async fn announce_only(c: &RawClient, req: &Request) -> Response {
    let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
    send.write_all(&encode_request(req)).await.unwrap();
    let (resp, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut recv))
        .await
        .expect("the node waited for the upload before refusing it")
        .unwrap();
    drop(send);
    resp
}

#[tokio::test]
async fn put_blobs_stores_each_blob_and_get_blobs_reads_them_back() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let big = pattern(3 << 20, 1);
        let small = pattern(100, 2);
        assert_eq!(c.put("p2-old", b"old").await, Response::Stored);
        let stored = c
            .put_blobs(&[("p2-big", &big), ("m2-empty", b""), ("p2-old", &small)])
            .await;
        assert_eq!(stored, Response::BatchStored { failed: vec![] });

        let (resp, parts) = c
            .get_blobs(&["p2-old", "p2-none", "p2-big", "m2-empty", "p2-old"])
            .await;
        let want = [Some(100), None, Some(big.len() as u64), Some(0), Some(100)];
        assert_eq!(
            resp,
            Response::Blobs {
                lens: want.to_vec()
            }
        );
        assert_eq!(parts.len(), 4);
        assert!(parts[0] == small && parts[1] == big && parts[2].is_empty() && parts[3] == small);
        // Nothing found is an answer too.
        assert_eq!(
            c.get_blobs(&["x", "y"]).await,
            (
                Response::Blobs {
                    lens: vec![None, None]
                },
                vec![]
            )
        );
        assert_eq!(
            c.get_blobs(&[]).await,
            (Response::Blobs { lens: vec![] }, vec![])
        );
        match c.call(&Request::Status).await {
            Response::Status(s) => assert_eq!((s.blobs, s.bytes), (3, big.len() as u64 + 100)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            node.stored_blobs().await.unwrap(),
            ["alice/m2-empty", "alice/p2-big", "alice/p2-old"]
        );
        assert!(eventually(|| nothing_left(node.root(), "alice")).await);
    })
    .await
}

#[tokio::test]
async fn get_blobs_refuses_more_bytes_than_one_answer_carries() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let half = (MAX_BATCH_BYTES / 2) as usize;
        assert_eq!(c.put("p2-half", &vec![7; half]).await, Response::Stored);
        assert_eq!(c.put("p2-one", b"1").await, Response::Stored);
        let (resp, parts) = c.get_blobs(&["p2-half", "p2-half"]).await;
        assert_eq!(parts.len(), 2, "exactly the bound is fine: {resp:?}");
        let (resp, parts) = c.get_blobs(&["p2-half", "p2-one", "p2-half"]).await;
        let Response::Error { code, message } = resp else {
            panic!("not refused: {resp:?}");
        };
        assert_eq!(code, ErrorCode::TooLarge);
        assert!(
            message.contains(&(MAX_BATCH_BYTES + 1).to_string()),
            "{message}"
        );
        assert!(parts.is_empty());
    })
    .await
}

#[tokio::test]
async fn delete_blobs_and_stat_blobs_answer_per_id() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let stored = c
            .put_blobs(&[("a", b"1"), ("b", b"22"), ("c", b"333")])
            .await;
        assert_eq!(stored, Response::BatchStored { failed: vec![] });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let Response::Stats { entries } = c
            .call(&Request::StatBlobs {
                ids: ids(&["c", "x", "a"]),
            })
            .await
        else {
            panic!("no stats");
        };
        let lens: Vec<Option<u64>> = entries.iter().map(|e| e.map(|s| s.len)).collect();
        assert_eq!(lens, [Some(3), None, Some(1)]);
        assert!(entries
            .iter()
            .flatten()
            .all(|s| s.modified + 60 > now && s.modified <= now + 60));

        let resp = c
            .call(&Request::DeleteBlobs {
                ids: ids(&["a", "x", "c", "a"]),
            })
            .await;
        assert_eq!(
            resp,
            Response::BatchDeleted {
                missing: vec![1, 3]
            }
        );
        assert_eq!(node.stored_blobs().await.unwrap(), ["alice/b"]);
        let Response::Stats { entries } = c
            .call(&Request::StatBlobs {
                ids: ids(&["a", "b", "c"]),
            })
            .await
        else {
            panic!("no stats");
        };
        assert!(matches!(
            entries[..],
            [None, Some(BlobStat { len: 2, .. }), None]
        ));
        assert_eq!(
            c.call(&Request::DeleteBlobs { ids: vec![] }).await,
            Response::BatchDeleted { missing: vec![] }
        );
    })
    .await
}

#[tokio::test]
async fn a_batch_over_the_quota_is_refused_before_any_byte() {
    timed(async {
        // Each blob counts its length plus the per-blob overhead.
        const O: u64 = vault_node::store::BLOB_OVERHEAD;
        let node = TestNode::start_with(&users_text(), |c| c.quota = Some(100 + 3 * O))
            .await
            .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("a", &[1; 40]).await, Response::Stored);
        // 40 stored, and 61 more do not fit in 100 (and three overheads).
        let req = Request::PutBlobs {
            items: items(&[("b", 50), ("c", 11)]),
        };
        let resp = announce_only(&c, &req).await;
        let Response::Error { code, message } = resp else {
            panic!("not refused: {resp:?}");
        };
        assert_eq!(code, ErrorCode::QuotaExceeded);
        let need = format!("these 2 blobs need {} bytes", 61 + 2 * O);
        assert!(message.contains(&need), "{message}");
        assert_eq!(node.stored_blobs().await.unwrap(), ["alice/a"]);
        let ok = c
            .put_blobs(&[("a", &[2; 50]), ("b", &[3; 11]), ("c", &[4; 39])])
            .await;
        assert_eq!(ok, Response::BatchStored { failed: vec![] });
        match c.call(&Request::Status).await {
            Response::Status(s) => assert_eq!((s.blobs, s.bytes), (3, 100)),
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_batch_with_a_blob_over_the_node_limit_is_refused_before_any_byte() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.max_blob_len = 1024)
            .await
            .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let req = Request::PutBlobs {
            items: items(&[("a", 10), ("b", 1025)]),
        };
        let resp = announce_only(&c, &req).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::TooLarge), "{resp:?}");
        assert!(node.stored_blobs().await.unwrap().is_empty());
        assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
    })
    .await
}

#[tokio::test]
async fn a_short_or_long_batch_stores_nothing() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("b", b"old").await, Response::Stored);
        let cases: [(Blobs, &[u8]); 4] = [
            // The first blob whole, the second cut short.
            (&[("a", 3), ("b", 10)], b"aaabbb"),
            // Nothing at all.
            (&[("a", 3)], b""),
            // Every blob whole, then more.
            (&[("a", 3), ("b", 3)], b"aaabbbc"),
            (&[("a", 0)], b"x"),
        ];
        for (batch, bulk) in cases {
            let req = Request::PutBlobs {
                items: items(batch),
            };
            let (resp, _) = c.request(&req, bulk).await.unwrap();
            assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest), "{batch:?}");
            let Response::Error { message, .. } = resp else {
                unreachable!()
            };
            assert!(message.contains("nothing was stored"), "{message}");
        }
        assert!(eventually(|| nothing_left(node.root(), "alice")).await);
        assert_eq!(node.stored_blobs().await.unwrap(), ["alice/b"]);
        assert_eq!(c.get("b").await.1, b"old");
        match c.call(&Request::Status).await {
            Response::Status(s) => assert_eq!((s.blobs, s.bytes), (1, 3)),
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_reset_or_dropped_batch_leaves_no_blob_and_no_temp_file() {
    timed(async {
        let quota = (20 << 20) + vault_node::store::BLOB_OVERHEAD;
        let node = TestNode::start_with(&users_text(), |c| c.quota = Some(quota))
            .await
            .unwrap();
        for end in ["reset", "close"] {
            let c = node.md5_client("alice", "Crimson33").await.unwrap();
            let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
            let req = Request::PutBlobs {
                items: items(&[("small", 100), ("big", 8 << 20)]),
            };
            send.write_all(&encode_request(&req)).await.unwrap();
            send.write_all(&[1; 100]).await.unwrap();
            send.write_all(&vec![2; 2 << 20]).await.unwrap();
            // The small blob is held in memory, the big one (over the
            // inline bound) in a temp file: both are on their way once the
            // batch is under way and that temp file exists.
            let root = node.root().to_path_buf();
            assert!(
                eventually(
                    || uploads_in_progress(&root, "alice") == 1 && temp_files(&root, "alice") == 1
                )
                .await,
                "the upload never started ({end})"
            );
            if end == "reset" {
                send.reset(9u32.into()).unwrap();
                // The node answers (best effort) or just ends the stream.
                let _ = read_response(&mut recv).await;
            } else {
                c.conn.close(0u32.into(), b"gone");
            }
            assert!(
                eventually(|| nothing_left(&root, "alice")).await,
                "an upload or temp file left behind ({end})"
            );
            let blobs = node.stored_blobs().await.unwrap();
            assert!(blobs.is_empty(), "{blobs:?}");
            assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
        }
        // Nothing stayed reserved: the whole quota is there.
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("all", &vec![0; 20 << 20]).await, Response::Stored);
    })
    .await
}

#[tokio::test]
async fn batches_over_their_bounds_are_refused() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let names: Vec<String> = (0..=MAX_BATCH).map(|i| format!("p{i}")).collect();
        let too_many: Vec<BlobId> = names.iter().map(|n| id(n)).collect();
        let half = MAX_BATCH_BYTES / 2;
        for req in [
            Request::GetBlobs {
                ids: too_many.clone(),
            },
            Request::DeleteBlobs {
                ids: too_many.clone(),
            },
            Request::StatBlobs {
                ids: too_many.clone(),
            },
            Request::PutBlobs {
                items: too_many
                    .iter()
                    .map(|id| PutItem {
                        id: id.clone(),
                        len: 0,
                        expect: None,
                    })
                    .collect(),
            },
            Request::PutBlobs {
                items: items(&[("a", half as usize), ("b", half as usize + 1)]),
            },
            Request::PutBlobs {
                items: items(&[("a", 2), ("b", usize::MAX)]),
            },
        ] {
            let resp = announce_only(&c, &req).await;
            assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest), "{resp:?}");
        }
        // Exactly the bound in count is fine.
        let resp = c
            .call(&Request::StatBlobs {
                ids: too_many[..MAX_BATCH].to_vec(),
            })
            .await;
        assert!(matches!(resp, Response::Stats { entries } if entries.len() == MAX_BATCH));
        assert!(node.stored_blobs().await.unwrap().is_empty());
        assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
    })
    .await
}

#[tokio::test]
async fn batches_need_login_and_touch_only_the_users_folder() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let anon = node.raw_client().await.unwrap();
        for req in [
            Request::GetBlobs { ids: ids(&["x"]) },
            Request::PutBlobs { items: vec![] },
            Request::DeleteBlobs { ids: ids(&["x"]) },
            Request::StatBlobs { ids: ids(&["x"]) },
            Request::ListData {
                after: None,
                prefix: String::new(),
                max_entries: 1,
                max_bytes: 1,
                max_inline: 1,
            },
        ] {
            let resp = anon.call(&req).await;
            assert_eq!(error_code(&resp), Some(ErrorCode::NotLoggedIn), "{req:?}");
        }

        let bob = node.md5_client("bob", "Velvet77").await.unwrap();
        let stored = bob.put_blobs(&[("p-secret", b"bob's bytes")]).await;
        assert_eq!(stored, Response::BatchStored { failed: vec![] });
        let alice = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(
            alice.get_blobs(&["p-secret"]).await,
            (Response::Blobs { lens: vec![None] }, vec![])
        );
        assert_eq!(
            alice
                .call(&Request::StatBlobs {
                    ids: ids(&["p-secret"])
                })
                .await,
            Response::Stats {
                entries: vec![None]
            }
        );
        let req = Request::ListData {
            after: None,
            prefix: "p-".into(),
            max_entries: 10,
            max_bytes: 1000,
            max_inline: 1000,
        };
        assert_eq!(
            alice.request_parts(&req, &[]).await.unwrap(),
            (
                Response::DataListing {
                    entries: vec![],
                    more: false
                },
                vec![]
            )
        );
        assert_eq!(
            alice
                .call(&Request::DeleteBlobs {
                    ids: ids(&["p-secret"])
                })
                .await,
            Response::BatchDeleted { missing: vec![0] }
        );
        // Alice writing the same id writes her own blob.
        let stored = alice.put_blobs(&[("p-secret", b"alice")]).await;
        assert_eq!(stored, Response::BatchStored { failed: vec![] });
        assert_eq!(bob.get("p-secret").await.1, b"bob's bytes");
        assert_eq!(alice.get("p-secret").await.1, b"alice");
        assert_eq!(
            node.stored_blobs().await.unwrap(),
            ["alice/p-secret", "bob/p-secret"]
        );
    })
    .await
}
