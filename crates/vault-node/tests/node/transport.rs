//! TLS identity, malformed frames, connection caps and shutdown.

use std::time::Duration;

use vault_node::certs;
use vault_node::store::offline::uploads_in_progress;
use vault_node::testing::raw::{error_code, frame};
use vault_node::testing::{eventually, timed, users_text, RawClient, TestNode};
use wire::{BlobId, ErrorCode, Request, Response};

#[tokio::test]
async fn client_trusting_another_ca_cannot_connect() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let other = certs::generate(&["DFS1"], &certs::default_sans()).unwrap();
        let result = RawClient::connect(node.addr(), &other.ca_cert_pem, "DFS1").await;
        assert!(result.is_err(), "connected with a foreign CA");
        // The right CA still works.
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert!(matches!(
            c.call(&Request::Status).await,
            Response::Status(_)
        ));
    })
    .await
}

#[tokio::test]
async fn client_dialling_another_node_name_refuses_the_certificate() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap(); // presents DFS1's certificate
        let result = RawClient::connect(node.addr(), node.ca_pem(), "DFS2").await;
        let err = result.expect_err("DFS1's certificate accepted as DFS2");
        assert!(
            format!("{err:#}").to_lowercase().contains("certificate"),
            "{err:#}"
        );
    })
    .await
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_node_keeps_serving() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let oversized = {
            let mut f = wire::PROTOCOL_VERSION.to_be_bytes().to_vec();
            f.extend_from_slice(&u32::MAX.to_be_bytes());
            f
        };
        let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
            (
                "garbage",
                b"\xde\xad\xbe\xef\x00\x00\x00\x00garbage".to_vec(),
                ErrorCode::BadRequest,
            ),
            ("wrong version", frame(99, b"\xa0"), ErrorCode::BadRequest),
            ("oversized length", oversized, ErrorCode::TooLarge),
            (
                "not cbor",
                frame(wire::PROTOCOL_VERSION, b"\xff\xff\xff"),
                ErrorCode::BadRequest,
            ),
            (
                "unknown request",
                frame(wire::PROTOCOL_VERSION, b"\x64Nope"),
                ErrorCode::BadRequest,
            ),
            (
                "truncated body",
                {
                    let mut f = frame(wire::PROTOCOL_VERSION, b"\x66Status");
                    f.truncate(f.len() - 2);
                    f
                },
                ErrorCode::BadRequest,
            ),
            ("empty stream", vec![], ErrorCode::BadRequest),
            ("half a prefix", vec![0, 1, 0], ErrorCode::BadRequest),
        ];
        for (what, bytes, code) in cases {
            let (resp, _) = c.raw(&bytes).await.unwrap();
            assert_eq!(error_code(&resp), Some(code), "{what}: {resp:?}");
        }
        // The same connection and other clients still work.
        assert_eq!(c.put("still-ok", b"x").await, Response::Stored);
        let other = node.md5_client("bob", "Velvet77").await.unwrap();
        assert!(matches!(
            other.call(&Request::Status).await,
            Response::Status(_)
        ));
    })
    .await
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_with_a_reason() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.max_connections = 1)
            .await
            .unwrap();
        // Logged in, so it cannot be evicted to make room.
        let first = node.md5_client("alice", "Crimson33").await.unwrap();
        assert!(matches!(
            first.call(&Request::Status).await,
            Response::Status(_)
        ));
        let second = RawClient::connect(node.addr(), node.ca_pem(), "DFS1").await;
        let reason = match second {
            Err(e) => format!("{e:#}"),
            Ok(c) => format!("{}", c.conn.closed().await),
        };
        assert!(reason.contains("busy"), "{reason}");
        // Once the first leaves, there is room again.
        first.conn.close(0u32.into(), b"bye");
        let mut ok = false;
        for _ in 0..100 {
            if let Ok(c) = RawClient::connect(node.addr(), node.ca_pem(), "DFS1").await {
                if let Ok(Response::LoggedIn) = c.login_md5("bob", "Velvet77").await {
                    ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "no room after the first connection closed");
    })
    .await
}

#[tokio::test]
async fn run_returns_after_shutdown() {
    timed(async {
        let mut node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("p-1", b"kept").await, Response::Stored);
        node.stop().await.unwrap();
        // The connection is closed by the node.
        let err = c.conn.closed().await;
        assert!(
            format!("{err}").contains("shutdown") || format!("{err}").contains("closed"),
            "{err}"
        );
        assert_eq!(node.stored_blobs().await.unwrap(), vec!["alice/p-1"]);
    })
    .await
}

#[tokio::test]
async fn shutdown_aborts_a_stalled_upload_without_leaving_it_visible() {
    timed(async {
        let mut node = TestNode::start_with(&users_text(), |c| {
            c.shutdown_grace = Duration::from_millis(200)
        })
        .await
        .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let (mut send, _recv) = c.conn.open_bi().await.unwrap();
        let req = Request::PutBlob {
            id: BlobId::new("p-half").unwrap(),
            len: 1 << 20,
            expect: None,
        };
        send.write_all(&wire::encode_request(&req)).await.unwrap();
        send.write_all(&[3u8; 4096]).await.unwrap();
        // 1 MiB is over the inline bound: the upload goes to a temp file.
        let tmp = node.root().join("alice/.tmp");
        let count = |p: &std::path::Path| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
        assert!(
            eventually(|| count(&tmp) == 1 && uploads_in_progress(node.root(), "alice") == 1).await,
            "upload never started"
        );
        // The upload never completes: the grace period runs out.
        node.stop().await.unwrap();
        assert!(
            eventually(|| count(&tmp) == 0 && uploads_in_progress(node.root(), "alice") == 0).await,
            "temp file or upload left behind"
        );
        let blobs = node.stored_blobs().await.unwrap();
        assert!(blobs.is_empty(), "{blobs:?}");
        assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
    })
    .await
}

#[tokio::test]
async fn new_requests_during_shutdown_are_told_so() {
    timed(async {
        let mut node =
            TestNode::start_with(&users_text(), |c| c.shutdown_grace = Duration::from_secs(5))
                .await
                .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        // Keep one upload in flight so the connection stays open in the grace period.
        let (mut send, _recv) = c.conn.open_bi().await.unwrap();
        let req = Request::PutBlob {
            id: BlobId::new("p-slow").unwrap(),
            len: 10,
            expect: None,
        };
        send.write_all(&wire::encode_request(&req)).await.unwrap();
        send.write_all(b"12345").await.unwrap();
        // Its quota is reserved: it is under way (in memory, being small).
        assert!(eventually(|| uploads_in_progress(node.root(), "alice") == 1).await);
        node.signal_stop();
        // A new request on the open connection is refused as shutting down.
        let mut refused = false;
        for _ in 0..100 {
            match c.request(&Request::Status, &[]).await {
                Ok((resp, _)) if error_code(&resp) == Some(ErrorCode::ShuttingDown) => {
                    refused = true;
                    break;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(_) => break,
            }
        }
        assert!(refused, "no ShuttingDown answer");
        // The in-flight upload may still finish within the grace period.
        send.write_all(b"67890").await.unwrap();
        send.finish().unwrap();
        node.stop().await.unwrap();
        assert_eq!(node.stored_blobs().await.unwrap(), vec!["alice/p-slow"]);
        assert!(node.upload_files().is_empty(), "{:?}", node.upload_files());
    })
    .await
}
