//! Shared by the test kit's own tests (`testing_kit.rs`, `testing_lies.rs`).
#![allow(dead_code)]

use vault_node::testing::{self, RawClient, TestCluster};
use wire::{encode_request, BlobId, KdfParams, Request, Response};

pub fn cheap_kdf(salt: u8) -> KdfParams {
    KdfParams {
        salt: vec![salt; 16],
        m_kib: 256,
        t: 1,
        p: 1,
    }
}

/// Alice: MD5 entry; Bob: plain entry; Carol: upgraded (cheap costs).
pub fn users() -> String {
    format!(
        "{}{}{}",
        testing::md5_user("Alice", "Crimson33"),
        testing::plain_user("Bob", "Velvet77"),
        testing::upgraded_user_with("Carol", "Lapis-4", &cheap_kdf(7)).unwrap()
    )
}

pub async fn cluster() -> TestCluster {
    TestCluster::start(&users()).await.unwrap()
}

/// A client of node `i` (or its proxy) logged in as Alice.
pub async fn alice(c: &TestCluster, i: usize) -> RawClient {
    let client = c.raw_client(i).await.unwrap();
    let r = client.login_md5("alice", "Crimson33").await.unwrap();
    assert_eq!(r, Response::LoggedIn);
    client
}

pub fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

pub fn list_frame() -> Vec<u8> {
    encode_request(&Request::List {
        after: None,
        limit: 256,
    })
}
