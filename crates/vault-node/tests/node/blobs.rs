//! Blob requests over a real QUIC connection to an in-process node.

use vault_node::testing::raw::{error_code, raw_frame, read_response, RawRequest};
use vault_node::testing::{eventually, timed, users_text, TestNode};
use wire::{BlobId, ErrorCode, Request, Response};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn put_get_list_delete_round_trip() {
    timed(async {
        let mut node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let big = pattern(5 * 1024 * 1024 + 17);
        assert_eq!(c.put("p-big", &big).await, Response::Stored);
        assert_eq!(c.put("m-empty", b"").await, Response::Stored);
        assert_eq!(c.put("p-small", b"hello").await, Response::Stored);

        let (resp, bytes) = c.get("p-big").await;
        assert_eq!(
            resp,
            Response::Blob {
                len: big.len() as u64
            }
        );
        assert!(bytes == big, "big blob differs");
        assert_eq!(c.get("m-empty").await, (Response::Blob { len: 0 }, vec![]));

        // Replacing is atomic and visible.
        assert_eq!(c.put("p-small", b"bye").await, Response::Stored);
        assert_eq!(c.get("p-small").await.1, b"bye");

        let (resp, _) = c.get("p-none").await;
        assert_eq!(error_code(&resp), Some(ErrorCode::NotFound));

        let listing = c
            .call(&Request::List {
                after: None,
                limit: 256,
                prefix: None,
            })
            .await;
        let Response::Listing { entries, more } = listing else {
            panic!("{listing:?}")
        };
        assert!(!more);
        let got: Vec<(&str, u64)> = entries.iter().map(|e| (e.id.as_str(), e.len)).collect();
        assert_eq!(
            got,
            [("m-empty", 0), ("p-big", big.len() as u64), ("p-small", 3)]
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(entries
            .iter()
            .all(|e| e.modified + 60 > now && e.modified <= now + 1));

        match c.call(&Request::Status).await {
            Response::Status(s) => {
                assert_eq!(s.name, "DFS1");
                assert_eq!((s.blobs, s.bytes), (3, big.len() as u64 + 3));
            }
            other => panic!("{other:?}"),
        }

        assert_eq!(
            c.call(&Request::Delete { id: id("p-small") }).await,
            Response::Deleted
        );
        let again = c.call(&Request::Delete { id: id("p-small") }).await;
        assert_eq!(error_code(&again), Some(ErrorCode::NotFound));
        assert_eq!(
            error_code(&c.get("p-small").await.0),
            Some(ErrorCode::NotFound)
        );
        assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
        node.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn list_paginates_in_id_order() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let mut ids: Vec<String> = (0..23).map(|i| format!("b-{:03}", (i * 7) % 23)).collect();
        for i in &ids {
            assert_eq!(c.put(i, i.as_bytes()).await, Response::Stored);
        }
        ids.sort();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let resp = c
                .call(&Request::List {
                    after: after.clone(),
                    limit: 5,
                    prefix: None,
                })
                .await;
            let Response::Listing { entries, more } = resp else {
                panic!("{resp:?}")
            };
            assert!(entries.len() <= 5);
            after = entries.last().map(|e| e.id.clone());
            seen.extend(entries.into_iter().map(|e| e.id.to_string()));
            if !more {
                break;
            }
        }
        assert_eq!(seen, ids);
        // The limit is bounded by the protocol.
        let resp = c
            .call(&Request::List {
                after: None,
                limit: 1000,
                prefix: None,
            })
            .await;
        assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest));
    })
    .await
}

#[tokio::test]
async fn users_are_isolated() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let bob = node.md5_client("bob", "Velvet77").await.unwrap();
        assert_eq!(bob.put("p-secret", b"bob's bytes").await, Response::Stored);

        let alice = node.md5_client("ALICE", "Crimson33").await.unwrap();
        assert_eq!(
            error_code(&alice.get("p-secret").await.0),
            Some(ErrorCode::NotFound)
        );
        let del = alice.call(&Request::Delete { id: id("p-secret") }).await;
        assert_eq!(error_code(&del), Some(ErrorCode::NotFound));
        assert_eq!(
            alice
                .call(&Request::List {
                    after: None,
                    limit: 10,
                    prefix: None,
                })
                .await,
            Response::Listing {
                entries: vec![],
                more: false
            }
        );
        // Alice writing the same id writes her own blob, not Bob's.
        assert_eq!(alice.put("p-secret", b"alice").await, Response::Stored);
        assert_eq!(bob.get("p-secret").await.1, b"bob's bytes");
        assert_eq!(alice.get("p-secret").await.1, b"alice");
        let files = node.stored_blobs().await.unwrap();
        assert_eq!(files, vec!["alice/p-secret", "bob/p-secret"], "{files:?}");
    })
    .await
}

#[tokio::test]
async fn requests_need_login() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.raw_client().await.unwrap();
        for req in [
            Request::PutBlob {
                id: id("x"),
                len: 0,
                expect: None,
            },
            Request::GetBlob { id: id("x") },
            Request::List {
                after: None,
                limit: 1,
                prefix: None,
            },
            Request::Delete { id: id("x") },
            Request::GetRecord,
            // Free space and quota are no one's business before login.
            Request::Status,
        ] {
            let resp = c.call(&req).await;
            assert_eq!(error_code(&resp), Some(ErrorCode::NotLoggedIn), "{req:?}");
        }
        assert!(node.stored_blobs().await.unwrap().is_empty());
        assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
    })
    .await
}

#[tokio::test]
async fn hostile_ids_are_refused_and_nothing_is_written() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let long = "a".repeat(10_000);
        let hostile = [
            "..",
            ".",
            "../../etc/passwd",
            "a/b",
            "/abs",
            "",
            "a\0b",
            "ünï",
            "UPPER",
            "a.b",
            &long,
            "..\\x",
            ".tmp",
        ];
        for bad in hostile {
            for raw in [
                RawRequest::PutBlob {
                    id: bad.into(),
                    len: 4,
                },
                RawRequest::GetBlob { id: bad.into() },
                RawRequest::Delete { id: bad.into() },
                RawRequest::List {
                    after: Some(bad.into()),
                    limit: 10,
                },
            ] {
                let mut bytes = raw_frame(&raw);
                if matches!(raw, RawRequest::PutBlob { .. }) {
                    bytes.extend_from_slice(b"evil");
                }
                let (resp, _) = c.raw(&bytes).await.unwrap();
                assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest), "{bad:?}");
            }
        }
        let blobs = node.stored_blobs().await.unwrap();
        assert!(blobs.is_empty(), "{blobs:?}");
        assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
        // The connection still works.
        assert_eq!(c.put("ok", b"1").await, Response::Stored);
    })
    .await
}

#[tokio::test]
async fn oversized_blob_is_refused_before_reading() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.max_blob_len = 1024)
            .await
            .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("fits", &[1; 1024]).await, Response::Stored);
        // Announce more than the cap; send only a little (the node must not wait for it).
        let req = Request::PutBlob {
            id: id("big"),
            len: 1 << 40,
            expect: None,
        };
        let (resp, _) = c.request(&req, &[0; 10]).await.unwrap();
        assert_eq!(error_code(&resp), Some(ErrorCode::TooLarge));
        assert_eq!(node.stored_blobs().await.unwrap(), vec!["alice/fits"]);
    })
    .await
}

#[tokio::test]
async fn upload_must_match_announced_length() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        // More bytes than announced.
        let req = Request::PutBlob {
            id: id("long"),
            len: 3,
            expect: None,
        };
        let (resp, _) = c.request(&req, b"abcdef").await.unwrap();
        assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest));
        // Fewer bytes, then FIN.
        let req = Request::PutBlob {
            id: id("short"),
            len: 10,
            expect: None,
        };
        let (resp, _) = c.request(&req, b"abc").await.unwrap();
        assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest));
        let blobs = node.stored_blobs().await.unwrap();
        assert!(blobs.is_empty(), "{blobs:?}");
        assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
    })
    .await
}

#[tokio::test]
async fn dropped_upload_leaves_no_blob_and_no_temp_file() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("p-keep", b"old").await, Response::Stored);
        let (mut send, _recv) = c.conn.open_bi().await.unwrap();
        let req = Request::PutBlob {
            id: id("p-keep"),
            len: 8 << 20,
            expect: None,
        };
        send.write_all(&wire::encode_request(&req)).await.unwrap();
        send.write_all(&vec![7u8; 1 << 20]).await.unwrap();
        // The upload is in progress once its temp file exists.
        let tmp = node.root().join("alice/.tmp");
        let count = |p: &std::path::Path| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
        assert!(
            eventually(|| count(&tmp) == 1).await,
            "upload never started"
        );
        c.conn.close(0u32.into(), b"gone");
        assert!(
            eventually(|| count(&tmp) == 0).await,
            "temp file left behind"
        );
        // The old blob is intact.
        let c2 = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c2.get("p-keep").await.1, b"old");
        assert_eq!(node.stored_blobs().await.unwrap(), vec!["alice/p-keep"]);
    })
    .await
}

#[tokio::test]
async fn reset_upload_leaves_nothing() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
        let req = Request::PutBlob {
            id: id("p-reset"),
            len: 1 << 20,
            expect: None,
        };
        send.write_all(&wire::encode_request(&req)).await.unwrap();
        send.write_all(&[1u8; 1000]).await.unwrap();
        let tmp = node.root().join("alice/.tmp");
        let count = |p: &std::path::Path| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
        assert!(eventually(|| count(&tmp) == 1).await);
        send.reset(9u32.into()).unwrap();
        // The node answers (best effort) or just ends the stream.
        let _ = read_response(&mut recv).await;
        assert!(eventually(|| count(&tmp) == 0).await);
        assert_eq!(
            error_code(&c.get("p-reset").await.0),
            Some(ErrorCode::NotFound)
        );
    })
    .await
}
