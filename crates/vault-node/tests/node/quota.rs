//! Per-user quota, status figures and listing times, through a real node.

use std::time::Duration;

use vault_node::store::offline::uploads_in_progress;
use vault_node::testing::raw::{error_code, read_response};
use vault_node::testing::{eventually, timed, users_text, RawClient, TestNode};
use wire::{BlobId, ErrorCode, Request, Response};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

/// What each blob counts against the quota besides its bytes.
const O: u64 = vault_node::store::BLOB_OVERHEAD;

/// Sends a `PutBlob` frame and no bytes, keeping the stream open, and
/// returns the node's answer: it must come without the upload.
async fn announce_only(c: &RawClient, name: &str, len: u64) -> Response {
    let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
    let req = Request::PutBlob {
        id: id(name),
        len,
        expect: None,
    };
    send.write_all(&wire::encode_request(&req)).await.unwrap();
    let (resp, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut recv))
        .await
        .expect("the node waited for the upload before refusing it")
        .unwrap();
    drop(send);
    resp
}

#[tokio::test]
async fn uploads_over_the_quota_are_refused_before_any_byte() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.quota = Some(100 + 2 * O))
            .await
            .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("p-a", &[1; 60]).await, Response::Stored);
        let resp = announce_only(&c, "p-b", 41).await;
        let Response::Error { code, message } = resp else {
            panic!("not refused: {resp:?}");
        };
        assert_eq!(code, ErrorCode::QuotaExceeded);
        for needle in [
            "quota".to_string(),
            format!("{} bytes", 100 + 2 * O),
            format!("{} bytes", 60 + O),
            format!("{} bytes", 41 + O),
        ] {
            assert!(message.contains(&needle), "{needle} missing: {message}");
        }
        assert_eq!(node.stored_blobs().await.unwrap(), vec!["alice/p-a"]);
        // Exactly up to the quota fits; replacing counts the difference.
        assert_eq!(c.put("p-b", &[2; 40]).await, Response::Stored);
        assert_eq!(c.put("p-a", &[3; 60]).await, Response::Stored);
        assert_eq!(
            error_code(&c.put("p-a", &[3; 61]).await),
            Some(ErrorCode::QuotaExceeded)
        );
        // Another user has a quota of their own.
        let bob = node.md5_client("bob", "Velvet77").await.unwrap();
        assert_eq!(bob.put("p-a", &[4; 100]).await, Response::Stored);
        match c.call(&Request::Status).await {
            Response::Status(s) => {
                assert_eq!((s.blobs, s.bytes, s.quota), (2, 100, Some(100 + 2 * O)));
                assert!(s.free_bytes.is_some_and(|f| f > 0), "{s:?}");
            }
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn an_upload_in_progress_holds_its_share_of_the_quota() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.quota = Some(100 + 2 * O))
            .await
            .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
        let req = Request::PutBlob {
            id: id("p-slow"),
            len: 60,
            expect: None,
        };
        send.write_all(&wire::encode_request(&req)).await.unwrap();
        send.write_all(&[5; 30]).await.unwrap();
        // Its quota is reserved: it is under way (in memory, being small).
        assert!(
            eventually(|| uploads_in_progress(node.root(), "alice") == 1).await,
            "upload never started"
        );
        // 60 reserved + 41 > 100 (with their overheads), though nothing is
        // stored yet.
        assert_eq!(
            error_code(&announce_only(&c, "p-other", 41).await),
            Some(ErrorCode::QuotaExceeded)
        );
        send.write_all(&[5; 30]).await.unwrap();
        send.finish().unwrap();
        assert_eq!(read_response(&mut recv).await.unwrap().0, Response::Stored);
        assert_eq!(c.put("p-other", &[6; 40]).await, Response::Stored);
    })
    .await
}

#[tokio::test]
async fn listings_carry_modification_times_and_status_has_no_quota_by_default() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("p-1", b"abc").await, Response::Stored);
        let Response::Listing { entries, more } = c
            .call(&Request::List {
                after: None,
                limit: 10,
                prefix: None,
            })
            .await
        else {
            panic!("no listing");
        };
        assert!(!more);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].len, 3);
        assert!(
            entries[0].modified + 60 >= now && entries[0].modified <= now + 60,
            "{entries:?}"
        );
        match c.call(&Request::Status).await {
            Response::Status(s) => assert_eq!(s.quota, None),
            other => panic!("{other:?}"),
        }
    })
    .await
}
