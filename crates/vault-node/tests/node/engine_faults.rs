//! Damage the storage engine meets at start (review of issue 17): one
//! user's damaged or missing index does not stop the node, and that user
//! gets errors, never an empty store.

use vault_node::store::db::DB_FILE;
use vault_node::testing::raw::error_code;
use vault_node::testing::{timed, users_text, TestNode};
use wire::{ErrorCode, Request, Response};

/// A node with a small blob for alice, a file blob (over the inline
/// bound) for bob, stopped.
async fn stopped_node_with_blobs() -> TestNode {
    let mut node = TestNode::start(&users_text()).await.unwrap();
    let a = node.md5_client("alice", "Crimson33").await.unwrap();
    assert_eq!(a.put("a-1", b"alice's").await, Response::Stored);
    let b = node.md5_client("bob", "Velvet77").await.unwrap();
    assert_eq!(b.put("b-1", &vec![9u8; 100_000]).await, Response::Stored);
    drop((a, b));
    node.stop().await.unwrap();
    node
}

/// Alice is served as before; bob's requests fail on the node (not
/// "not found", not an empty listing).
async fn alice_served_bob_refused(node: &TestNode) {
    let a = node.md5_client("alice", "Crimson33").await.unwrap();
    let (resp, bytes) = a.get("a-1").await;
    assert!(matches!(resp, Response::Blob { .. }), "{resp:?}");
    assert_eq!(bytes, b"alice's");
    let b = node.md5_client("bob", "Velvet77").await.unwrap();
    let (resp, _) = b.get("b-1").await;
    assert_eq!(error_code(&resp), Some(ErrorCode::Internal), "{resp:?}");
    let list = Request::List {
        after: None,
        limit: 10,
        prefix: None,
    };
    let resp = b.call(&list).await;
    assert_eq!(error_code(&resp), Some(ErrorCode::Internal), "{resp:?}");
}

#[tokio::test]
async fn a_damaged_user_index_does_not_stop_the_node() {
    timed(async {
        let mut node = stopped_node_with_blobs().await;
        let index = node.root().join("bob").join(DB_FILE);
        std::fs::write(&index, vec![0x5a; 16 << 10]).unwrap();
        node.restart_with(|_| {}).await.expect("the node starts");
        alice_served_bob_refused(&node).await;
    })
    .await
}

#[tokio::test]
async fn a_missing_user_index_beside_blob_files_is_refused_not_emptied() {
    timed(async {
        let mut node = stopped_node_with_blobs().await;
        let dir = node.root().join("bob");
        std::fs::remove_file(dir.join(DB_FILE)).unwrap();
        node.restart_with(|_| {}).await.expect("the node starts");
        alice_served_bob_refused(&node).await;
        assert!(!dir.join(DB_FILE).exists(), "no empty index was made");
        // Bob's blob file is still there for whoever restores the index.
        assert!(std::fs::read_dir(&dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("b-1.")));
    })
    .await
}
