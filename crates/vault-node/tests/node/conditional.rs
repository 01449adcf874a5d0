//! Conditional writes (`PutBlob{expect}`, `PutItem{expect}`) through a
//! real node: `Absent` and `Hash` conditions, and concurrent writers that
//! expect the same old bytes, of which exactly one wins while the loser
//! leaves nothing behind (no change, no temp file, no quota held).

use std::path::Path;

use quinn::{RecvStream, SendStream};
use vault_node::store::offline::uploads_in_progress;
use vault_node::store::{BLOB_OVERHEAD, MAX_EXPECT_LEN};
use vault_node::testing::raw::{error_code, read_response};
use vault_node::testing::{eventually, timed, users_text, RawClient, TestNode};
use wire::{encode_request, BlobId, ErrorCode, Expect, PutItem, Request, Response};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

fn temp_files(root: &Path, user: &str) -> usize {
    std::fs::read_dir(root.join(user).join(".tmp")).map_or(0, |d| d.count())
}

/// No upload of `user`'s is left: none in progress (no quota held), no
/// temp file.
fn nothing_left(root: &Path, user: &str) -> bool {
    uploads_in_progress(root, user) == 0 && temp_files(root, user) == 0
}

/// `PutBlob` of `data` as `name` under `expect`.
async fn put_if(c: &RawClient, name: &str, data: &[u8], expect: Option<Expect>) -> Response {
    let req = Request::PutBlob {
        id: id(name),
        len: data.len() as u64,
        expect,
    };
    c.request(&req, data).await.unwrap().0
}

/// Sends `req` and all of `bulk` but not the FIN: the node waits for it
/// before committing.
async fn send_unfinished(c: &RawClient, req: &Request, bulk: &[u8]) -> (SendStream, RecvStream) {
    let (mut send, recv) = c.conn.open_bi().await.unwrap();
    send.write_all(&encode_request(req)).await.unwrap();
    send.write_all(bulk).await.unwrap();
    (send, recv)
}

#[tokio::test]
async fn absent_is_refused_when_a_blob_exists_and_accepted_when_not() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(
            put_if(&c, "m-1", b"first", Some(Expect::Absent)).await,
            Response::Stored
        );
        let resp = put_if(&c, "m-1", b"second", Some(Expect::Absent)).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Conflict), "{resp:?}");
        assert_eq!(c.get("m-1").await.1, b"first");
        // Another user's blob of that id is no obstacle.
        let bob = node.md5_client("bob", "Velvet77").await.unwrap();
        assert_eq!(
            put_if(&bob, "m-1", b"bob's", Some(Expect::Absent)).await,
            Response::Stored
        );
        // Deleted: absent again.
        assert!(matches!(
            c.call(&Request::Delete { id: id("m-1") }).await,
            Response::Deleted
        ));
        assert_eq!(
            put_if(&c, "m-1", b"third", Some(Expect::Absent)).await,
            Response::Stored
        );
        assert_eq!(c.get("m-1").await.1, b"third");
        assert!(eventually(|| nothing_left(node.root(), "alice")).await);
    })
    .await
}

#[tokio::test]
async fn hash_is_accepted_only_for_the_exact_current_bytes() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(c.put("m-1", b"v1").await, Response::Stored);
        for wrong in [
            Expect::of(Some(b"v0")),
            Expect::of(Some(b"v1 ")),
            Expect::of(Some(b"")),
            Expect::Absent,
        ] {
            let resp = put_if(&c, "m-1", b"v2", Some(wrong.clone())).await;
            assert_eq!(error_code(&resp), Some(ErrorCode::Conflict), "{wrong:?}");
        }
        assert_eq!(c.get("m-1").await.1, b"v1");
        let v1 = Expect::of(Some(b"v1"));
        assert_eq!(
            put_if(&c, "m-1", b"v2", Some(v1.clone())).await,
            Response::Stored
        );
        // The old bytes no longer match; the new ones do.
        let resp = put_if(&c, "m-1", b"v3", Some(v1)).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Conflict));
        let v2 = Expect::of(Some(b"v2"));
        assert_eq!(
            put_if(&c, "m-1", b"v3", Some(v2.clone())).await,
            Response::Stored
        );
        assert_eq!(c.get("m-1").await.1, b"v3");
        // A hash never matches a blob that is not there.
        let resp = put_if(&c, "m-none", b"x", Some(v2)).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Conflict));
        assert!(node
            .stored_blobs()
            .await
            .unwrap()
            .iter()
            .all(|f| f != "alice/m-none"));
        // A condition on a stored blob too large to hash is refused as such.
        let big = vec![7u8; MAX_EXPECT_LEN as usize + 1];
        assert_eq!(c.put("p-big", &big).await, Response::Stored);
        let resp = put_if(&c, "p-big", b"x", Some(Expect::of(Some(&big)))).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::BadRequest), "{resp:?}");
        assert_eq!(c.get("p-big").await.1.len(), big.len());
        assert!(eventually(|| nothing_left(node.root(), "alice")).await);
    })
    .await
}

#[tokio::test]
async fn of_two_put_blobs_expecting_the_same_bytes_exactly_one_wins() {
    timed(async {
        let len = 1000usize;
        // Room for the stored blob and one more of its size, no more: a
        // reservation kept by the loser would show.
        let quota = 2 * (len as u64 + BLOB_OVERHEAD);
        let node = TestNode::start_with(&users_text(), |c| c.quota = Some(quota))
            .await
            .unwrap();
        let a = node.md5_client("alice", "Crimson33").await.unwrap();
        let b = node.md5_client("alice", "Crimson33").await.unwrap();
        let mut current = vec![0u8; len];
        assert_eq!(a.put("m-race", &current).await, Response::Stored);
        for round in 1..=5u8 {
            let expect = Some(Expect::of(Some(&current)));
            let data = [vec![round; len], vec![round + 100; len]];
            let mut streams = Vec::new();
            for (c, d) in [&a, &b].into_iter().zip(&data) {
                let req = Request::PutBlob {
                    id: id("m-race"),
                    len: len as u64,
                    expect: expect.clone(),
                };
                // All but the last byte: both pass the early check and
                // wait, each holding its reservation.
                streams.push(send_unfinished(c, &req, &d[..len - 1]).await);
            }
            assert!(
                eventually(|| uploads_in_progress(node.root(), "alice") == 2).await,
                "both uploads under way"
            );
            let mut answers = Vec::new();
            for ((mut send, mut recv), d) in streams.into_iter().zip(&data) {
                send.write_all(&d[len - 1..]).await.unwrap();
                send.finish().unwrap();
                answers.push(async move { read_response(&mut recv).await.unwrap().0 });
            }
            let answers = crate::join_all(answers).await;
            let won: Vec<usize> = (0..2).filter(|i| answers[*i] == Response::Stored).collect();
            assert_eq!(won.len(), 1, "round {round}: {answers:?}");
            let lost = 1 - won[0];
            assert_eq!(error_code(&answers[lost]), Some(ErrorCode::Conflict));
            let (_, stored) = a.get("m-race").await;
            assert_eq!(stored, data[won[0]], "round {round}: the winner's bytes");
            current = stored;
            assert!(eventually(|| nothing_left(node.root(), "alice")).await);
        }
        // Nothing stayed reserved: one more blob of that size still fits.
        assert_eq!(a.put("m-other", &vec![1; len]).await, Response::Stored);
        assert_eq!(
            node.stored_blobs().await.unwrap(),
            ["alice/m-other", "alice/m-race"]
        );
    })
    .await
}

#[tokio::test]
async fn of_two_put_blobs_batches_expecting_the_same_bytes_exactly_one_item_wins() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let a = node.md5_client("alice", "Crimson33").await.unwrap();
        let b = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(a.put("m-race", b"old manifest").await, Response::Stored);
        let expect = Some(Expect::of(Some(b"old manifest")));
        let mut streams = Vec::new();
        for (c, who) in [(&a, "a"), (&b, "b")] {
            let manifest = format!("manifest by {who}");
            let part = format!("part by {who}");
            let req = Request::PutBlobs {
                items: vec![
                    PutItem {
                        id: id("m-race"),
                        len: manifest.len() as u64,
                        expect: expect.clone(),
                    },
                    PutItem {
                        id: id(&format!("p-{who}")),
                        len: part.len() as u64,
                        expect: None,
                    },
                ],
            };
            let bulk = [manifest.as_bytes(), part.as_bytes()].concat();
            streams.push(send_unfinished(c, &req, &bulk).await);
        }
        // Both batches hold their reservations; neither is committed
        // before its FIN.
        assert!(
            eventually(|| uploads_in_progress(node.root(), "alice") == 2).await,
            "both batches under way"
        );
        let mut answers = Vec::new();
        for (mut send, mut recv) in streams {
            send.finish().unwrap();
            answers.push(async move { read_response(&mut recv).await.unwrap().0 });
        }
        let answers = crate::join_all(answers).await;
        let failed: Vec<_> = answers
            .iter()
            .map(|r| match r {
                Response::BatchStored { failed } => failed.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        let lost: Vec<usize> = (0..2).filter(|i| !failed[*i].is_empty()).collect();
        assert_eq!(lost.len(), 1, "{answers:?}");
        let loser = &failed[lost[0]];
        assert_eq!(loser.len(), 1, "only the conditional item fails: {loser:?}");
        assert_eq!((loser[0].index, loser[0].code), (0, ErrorCode::Conflict));
        let winner = ["a", "b"][1 - lost[0]];
        assert_eq!(
            a.get("m-race").await.1,
            format!("manifest by {winner}").as_bytes()
        );
        // The other items of both batches were stored.
        assert_eq!(a.get("p-a").await.1, b"part by a");
        assert_eq!(a.get("p-b").await.1, b"part by b");
        assert!(eventually(|| nothing_left(node.root(), "alice")).await);
        // The loser's condition, retried on top of the winner, succeeds.
        let req = Request::PutBlobs {
            items: vec![PutItem {
                id: id("m-race"),
                len: 5,
                expect: Some(Expect::of(Some(format!("manifest by {winner}").as_bytes()))),
            }],
        };
        let (resp, _) = b.request(&req, b"fresh").await.unwrap();
        assert_eq!(resp, Response::BatchStored { failed: vec![] });
    })
    .await
}
