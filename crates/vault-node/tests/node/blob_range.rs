//! `GetBlobRange`: part of a blob, inline (in the database) or in a file.

use vault_node::testing::raw::error_code;
use vault_node::testing::{timed, users_text, TestNode};
use wire::{BlobId, ErrorCode, Request, Response};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn range(id: &str, offset: u64, len: Option<u64>) -> Request {
    Request::GetBlobRange {
        id: BlobId::new(id).unwrap(),
        offset,
        len,
    }
}

#[tokio::test]
async fn ranges_of_inline_and_file_blobs() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        // 1000 bytes stay in the database; 300 KiB go to a file.
        let small = pattern(1000);
        let big = pattern(300 * 1024 + 7);
        assert_eq!(c.put("p-small", &small).await, Response::Stored);
        assert_eq!(c.put("p-big", &big).await, Response::Stored);
        for (id, bytes) in [("p-small", &small), ("p-big", &big)] {
            let total = bytes.len() as u64;
            let cases = [
                (0, None),
                (0, Some(10)),
                (total / 2, None),
                (total / 2, Some(100)),
                (total - 1, Some(1)),
                (total - 1, Some(50)),
                (total, None),
                (total, Some(5)),
                (3, Some(0)),
            ];
            for (offset, len) in cases {
                let (resp, got) = c.request(&range(id, offset, len), &[]).await.unwrap();
                let start = offset as usize;
                let end = len.map_or(bytes.len(), |l| (start + l as usize).min(bytes.len()));
                assert_eq!(
                    resp,
                    Response::BlobRange {
                        total,
                        len: (end - start) as u64
                    },
                    "{id} {offset} {len:?}"
                );
                assert!(
                    got == bytes[start..end],
                    "{id} {offset} {len:?}: wrong bytes"
                );
            }
            // Past the end: refused, in words.
            let (resp, got) = c.request(&range(id, total + 1, None), &[]).await.unwrap();
            assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest), "{resp:?}");
            let Response::Error { message, .. } = resp else {
                unreachable!()
            };
            assert!(message.contains("beyond the end"), "{message}");
            assert!(got.is_empty());
        }
        let (resp, _) = c.request(&range("p-none", 0, None), &[]).await.unwrap();
        assert_eq!(error_code(&resp), Some(ErrorCode::NotFound));
        // GetBlob is unchanged.
        assert_eq!(c.get("p-big").await.1, big);
    })
    .await
}

#[tokio::test]
async fn a_range_needs_a_login() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.raw_client().await.unwrap();
        let (resp, _) = c.request(&range("p-x", 0, None), &[]).await.unwrap();
        assert_eq!(error_code(&resp), Some(ErrorCode::NotLoggedIn));
    })
    .await
}
