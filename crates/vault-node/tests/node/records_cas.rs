//! Key-record writes naming the stored record (`PutRecord.expect_record`):
//! the one way a record may be replaced by another of the same generation,
//! which is how clients that created one vault at once converge.

use vault_node::kdf;
use vault_node::testing::raw::error_code;
use vault_node::testing::{cheap_kdf, timed, users_text, TestNode};
use wire::{ErrorCode, Request, Response, UserRecord};

fn record(generation: u64, wrapped: u8, login_key: Option<Vec<u8>>) -> UserRecord {
    UserRecord {
        format: wire::STORAGE_FORMAT,
        generation,
        kdf: cheap_kdf(1),
        login_key,
        wrapped_key: vec![wrapped; 72],
    }
}

fn put(expect: u64, record: &UserRecord, read: Option<&UserRecord>) -> Request {
    Request::PutRecord {
        expect_generation: expect,
        record: record.clone(),
        expect_record: read.map(|r| wire::record_hash(r).to_vec()),
    }
}

async fn stored(c: &vault_node::testing::RawClient) -> Option<UserRecord> {
    match c.call(&Request::GetRecord).await {
        Response::Record(r) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_same_generation_record_replaces_only_the_record_named() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        let c = node.md5_client("bob", "Velvet77").await.unwrap();
        let (ours, theirs, third) = (record(1, 1, None), record(1, 2, None), record(1, 3, None));
        // Nothing stored: a write naming a record finds none.
        let resp = c.call(&put(0, &theirs, Some(&ours))).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Conflict), "{resp:?}");
        assert_eq!(c.call(&put(0, &ours, None)).await, Response::RecordStored);
        // Same generation without naming the stored record: refused.
        let resp = c.call(&put(1, &theirs, None)).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Conflict), "{resp:?}");
        // Naming another record: refused.
        let resp = c.call(&put(1, &theirs, Some(&third))).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Conflict), "{resp:?}");
        // The right record but the wrong generation: refused.
        let resp = c.call(&put(0, &theirs, Some(&ours))).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Conflict), "{resp:?}");
        assert_eq!(stored(&c).await, Some(ours.clone()));
        // Naming the stored record: replaced.
        assert_eq!(
            c.call(&put(1, &theirs, Some(&ours))).await,
            Response::RecordStored
        );
        assert_eq!(stored(&c).await, Some(theirs.clone()));
        // The old hash no longer matches: the loser cannot take it back.
        let resp = c.call(&put(1, &ours, Some(&ours))).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Conflict), "{resp:?}");
        // A malformed hash is refused before anything is looked at.
        let bad = Request::PutRecord {
            expect_generation: 1,
            record: third.clone(),
            expect_record: Some(vec![0; 5]),
        };
        let resp = c.call(&bad).await;
        assert_ne!(resp, Response::RecordStored);
        assert_eq!(stored(&c).await, Some(theirs));
    })
    .await
}

#[tokio::test]
async fn a_same_generation_replacement_keeps_the_login_key_rules() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        // Alice (legacy) upgrades; a legacy session cannot replace the
        // upgraded record, even naming it, and nobody removes the key.
        let c = node.md5_client("alice", "Crimson33").await.unwrap();
        let key = kdf::public_key_for_password(b"Crimson33", &cheap_kdf(1)).unwrap();
        let upgraded = record(1, 1, Some(key.to_vec()));
        assert_eq!(
            c.call(&put(0, &upgraded, None)).await,
            Response::RecordStored
        );
        let other = record(1, 2, Some(key.to_vec()));
        let c2 = node.md5_client("alice", "Crimson33").await;
        assert!(c2.is_err(), "MD5 refused once upgraded");
        let s = node.raw_client().await.unwrap();
        let resp = s
            .login_signature("DFS1", "alice", "Crimson33")
            .await
            .unwrap();
        assert_eq!(resp, Response::LoggedIn);
        let downgrade = record(1, 3, None);
        let resp = s.call(&put(1, &downgrade, Some(&upgraded))).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::AuthFailed), "{resp:?}");
        // The same login key: replaced, and the session stays logged in.
        assert_eq!(
            s.call(&put(1, &other, Some(&upgraded))).await,
            Response::RecordStored
        );
        assert_eq!(stored(&s).await, Some(other));
    })
    .await
}
