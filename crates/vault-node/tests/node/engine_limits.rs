//! The storage engine's bound on upload bytes gathered in memory
//! (`StoreLimits::max_upload_memory`), through a real node: small uploads
//! past it go to temp files instead, and are stored all the same.

use vault_node::testing::raw::read_response;
use vault_node::testing::{eventually, timed, users_text, TestNode};
use wire::{BlobId, Request, Response};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

#[tokio::test]
async fn small_uploads_past_the_memory_budget_go_to_temp_files_and_are_stored() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.store.max_upload_memory = 1000)
            .await
            .unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        // Two small uploads in progress at once: the budget holds one of
        // them in memory, the other goes to a temp file (which one depends
        // on which the node starts first).
        let mut streams = Vec::new();
        for (name, len) in [("m-1", 1000u64), ("m-2", 500)] {
            let (mut send, recv) = c.conn.open_bi().await.unwrap();
            let req = Request::PutBlob {
                id: id(name),
                len,
                expect: None,
            };
            send.write_all(&wire::encode_request(&req)).await.unwrap();
            send.write_all(&[1u8; 10]).await.unwrap();
            streams.push((send, recv, len));
        }
        let tmp = node.root().join("alice/.tmp");
        let count = |p: &std::path::Path| std::fs::read_dir(p).map_or(0, |d| d.count());
        assert!(
            eventually(|| count(&tmp) == 1).await,
            "one small upload goes to a temp file: {:?}",
            node.upload_files()
        );
        assert_eq!(count(&tmp), 1, "the other stays in memory");
        for (mut send, mut recv, len) in streams {
            send.write_all(&vec![1u8; len as usize - 10]).await.unwrap();
            send.finish().unwrap();
            let (resp, _) = read_response(&mut recv).await.unwrap();
            assert_eq!(resp, Response::Stored);
        }
        assert_eq!(c.get("m-1").await.1, vec![1u8; 1000]);
        assert_eq!(c.get("m-2").await.1, vec![1u8; 500]);
        assert!(
            eventually(|| count(&tmp) == 0).await,
            "temp file left behind"
        );
    })
    .await
}
