//! What a connection may do before it logs in: small frames only, and no
//! `Status`.

use std::time::Duration;

use vault_node::testing::raw::{error_code, split_response, MAX_RESPONSE_LEN};
use vault_node::testing::{timed, users_text, TestNode};
use wire::{ErrorCode, Request, Response};

/// A frame prefix announcing a body of `len` bytes.
fn prefix(len: u32) -> Vec<u8> {
    let mut p = wire::PROTOCOL_VERSION.to_be_bytes().to_vec();
    p.extend_from_slice(&len.to_be_bytes());
    p
}

#[tokio::test]
async fn a_large_frame_before_login_is_refused_before_its_body_arrives() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.raw_client().await.unwrap();
        // Announce 64 KiB, send none of it, and keep the stream open: the
        // node must answer from the announcement alone.
        let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
        send.write_all(&prefix(64 << 10)).await.unwrap();
        let answer =
            tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(MAX_RESPONSE_LEN))
                .await
                .expect("the node waited for the announced body")
                .unwrap();
        let (resp, _) = split_response(&answer).unwrap();
        assert_eq!(error_code(&resp), Some(ErrorCode::TooLarge), "{resp:?}");
        let Response::Error { message, .. } = &resp else {
            unreachable!()
        };
        assert!(message.contains("before login"), "{message}");
        // The connection still logs in, and then larger frames are fine.
        assert_eq!(
            c.login_md5("alice", "Crimson33").await.unwrap(),
            Response::LoggedIn
        );
        // A 2 KiB frame after login is served.
        let ids = (0..200)
            .map(|i| wire::BlobId::new(format!("p-{i:08}")).unwrap())
            .collect();
        let stat = Request::StatBlobs { ids };
        assert!(wire::encode_request(&stat).len() > 2048);
        let (resp, _) = c.request(&stat, &[]).await.unwrap();
        assert!(matches!(resp, Response::Stats { .. }), "{resp:?}");
    })
    .await
}

#[tokio::test]
async fn hello_and_login_frames_fit_the_pre_login_limit() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        // The longest user name there is, with a signature proof.
        let long = "u".repeat(wire::MAX_USER_LEN);
        let c = node.raw_client().await.unwrap();
        c.hello(&long).await.unwrap();
        let login = Request::Login {
            user: long,
            proof: wire::Proof::Signature(vec![0; 64]),
        };
        let resp = c.call(&login).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::AuthFailed), "{resp:?}");
    })
    .await
}

#[tokio::test]
async fn status_needs_a_login() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.quota = Some(1 << 20))
            .await
            .unwrap();
        let c = node.raw_client().await.unwrap();
        let resp = c.call(&Request::Status).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::NotLoggedIn), "{resp:?}");
        // After a login it answers, with this user's usage.
        c.login_md5("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("p-1", b"abc").await, Response::Stored);
        match c.call(&Request::Status).await {
            Response::Status(s) => {
                assert_eq!((s.name.as_str(), s.quota), ("DFS1", Some(1 << 20)));
                assert!(s.blobs >= 1, "{s:?}");
            }
            other => panic!("{other:?}"),
        }
    })
    .await
}
