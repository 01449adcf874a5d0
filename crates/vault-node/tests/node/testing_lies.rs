//! The ready-made lies of `vault_node::testing::lie` do what their docs
//! say, through a real proxy in front of a real node.

use std::sync::Arc;

use vault_node::testing::lie::{
    when, ClaimScheme, ErrorText, FlipBlob, FloodListing, ForgeRecord, ReplayBlob, ServeInstead,
    TruncateBlob,
};
use vault_node::testing::raw::error_code;
use vault_node::testing::{cheap_kdf, timed, users_text, TestCluster};
use wire::{AuthScheme, BlobId, ErrorCode, Request, Response, UserRecord};

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_blob_flips_exactly_one_bit_of_matching_blobs() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let data: Vec<u8> = (0..1001u32).map(|n| n as u8).collect();
        let direct = c.md5_client(0, "alice", "Crimson33").await.unwrap();
        for name in ["p-one", "m-one"] {
            assert_eq!(direct.put(name, &data).await, Response::Stored);
        }
        assert_eq!(direct.put("p-empty", b"").await, Response::Stored);
        let flip = Arc::new(FlipBlob::new("p-"));
        c.make_hostile(0, flip.clone()).await.unwrap();
        let client = c.md5_client(0, "alice", "Crimson33").await.unwrap();
        let (resp, got) = client.get("p-one").await;
        assert_eq!(resp, Response::Blob { len: 1001 });
        let diffs: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
        assert_eq!(diffs, [500]);
        assert_eq!(got[500] ^ data[500], 0x01);
        assert_eq!(
            client.get("m-one").await.1,
            data,
            "other prefixes untouched"
        );
        assert_eq!(client.get("p-empty").await.1, b"");
        assert_eq!(flip.hits(), 1);
        // At a chosen offset.
        let first = Arc::new(FlipBlob::new("p-").at(0));
        c.make_hostile(0, first.clone()).await.unwrap();
        let got = c
            .md5_client(0, "alice", "Crimson33")
            .await
            .unwrap()
            .get("p-one")
            .await
            .1;
        assert_eq!(got[0], data[0] ^ 1);
        assert_eq!(got[1..], data[1..]);
        assert_eq!(first.hits(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_blob_cuts_honestly_or_mid_stream() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let data = vec![7u8; 5000];
        assert_eq!(
            c.md5_client(2, "alice", "Crimson33")
                .await
                .unwrap()
                .put("p-t", &data)
                .await,
            Response::Stored
        );
        let cut = Arc::new(TruncateBlob::keep("p-", 100));
        c.make_hostile(2, cut.clone()).await.unwrap();
        let client = c.md5_client(2, "alice", "Crimson33").await.unwrap();
        assert_eq!(
            client.get("p-t").await,
            (Response::Blob { len: 100 }, data[..100].to_vec())
        );
        c.make_hostile(2, Arc::new(TruncateBlob::drop_last("p-", 1).short_stream()))
            .await
            .unwrap();
        let client = c.md5_client(2, "alice", "Crimson33").await.unwrap();
        let (resp, bulk) = client.get("p-t").await;
        assert_eq!(
            resp,
            Response::Blob { len: 5000 },
            "the real length announced"
        );
        assert_eq!(bulk.len(), 4999, "the stream ends early");
        assert_eq!(cut.hits(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_instead_swaps_in_another_users_blob() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let bob = c.raw_client(3).await.unwrap();
        assert_eq!(
            bob.login_md5("Bob", "Velvet77").await.unwrap(),
            Response::LoggedIn
        );
        assert_eq!(bob.put("p-bob", b"bob's part").await, Response::Stored);
        assert_eq!(
            c.md5_client(3, "alice", "Crimson33")
                .await
                .unwrap()
                .put("p-mine", b"alice's part")
                .await,
            Response::Stored
        );
        let bobs = c.blob(3, "Bob", "p-bob").await.unwrap().unwrap();
        let swap = Arc::new(ServeInstead::map([(id("p-mine"), bobs)].into()));
        c.make_hostile(3, swap.clone()).await.unwrap();
        let client = c.md5_client(3, "alice", "Crimson33").await.unwrap();
        let (resp, bulk) = client.get("p-mine").await;
        assert_eq!(
            (resp, bulk.as_slice()),
            (Response::Blob { len: 10 }, &b"bob's part"[..])
        );
        let (resp, _) = client.get("p-other").await;
        assert_eq!(
            error_code(&resp),
            Some(ErrorCode::NotFound),
            "others forwarded"
        );
        assert_eq!(swap.hits(), 1);
        // From a map, for ids the node does not even hold.
        let map = [(id("p-ghost"), b"boo".to_vec())].into_iter().collect();
        c.make_hostile(3, Arc::new(ServeInstead::map(map)))
            .await
            .unwrap();
        let client = c.md5_client(3, "alice", "Crimson33").await.unwrap();
        assert_eq!(client.get("p-ghost").await.1, b"boo");
        // From a file, read at request time.
        let file = c.dir().join("instead.bin");
        let lie = Arc::new(ServeInstead::file(id("p-mine"), &file));
        c.make_hostile(3, lie.clone()).await.unwrap();
        std::fs::write(&file, b"from a file").unwrap();
        let client = c.md5_client(3, "alice", "Crimson33").await.unwrap();
        assert_eq!(client.get("p-mine").await.1, b"from a file");
        assert_eq!(lie.hits(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_blob_keeps_serving_the_first_version() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let replay = Arc::new(ReplayBlob::new("m-"));
        c.make_hostile(1, replay.clone()).await.unwrap();
        let client = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        assert_eq!(client.put("m-doc", b"version one").await, Response::Stored);
        assert_eq!(client.put("m-doc", b"version two").await, Response::Stored);
        let on_disk = c.blob(1, "alice", "m-doc").await.unwrap();
        assert_eq!(
            on_disk.as_deref(),
            Some(&b"version two"[..]),
            "the node stored the new version"
        );
        assert_eq!(client.get("m-doc").await.1, b"version one");
        let delete = Request::Delete { id: id("m-doc") };
        assert_eq!(client.call(&delete).await, Response::Deleted);
        assert_eq!(client.get("m-doc").await.1, b"version one", "even deleted");
        assert_eq!(replay.hits(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_scheme_rewrites_the_announced_scheme() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let (_, real) = c.raw_client(0).await.unwrap().hello("carol").await.unwrap();
        assert_eq!(real, AuthScheme::Upgraded(cheap_kdf(7)));
        let claim = Arc::new(ClaimScheme::legacy());
        c.make_hostile(0, claim.clone()).await.unwrap();
        let (challenge, scheme) = c.raw_client(0).await.unwrap().hello("carol").await.unwrap();
        assert_eq!(
            (challenge.len(), scheme),
            (wire::CHALLENGE_LEN, AuthScheme::Legacy)
        );
        assert_eq!(claim.hits(), 1);
        let costly = ClaimScheme::upgraded(cheap_kdf(9)).only_for("CAROL");
        c.make_hostile(0, Arc::new(costly)).await.unwrap();
        let client = c.raw_client(0).await.unwrap();
        assert_eq!(
            client.hello("carol").await.unwrap().1,
            AuthScheme::Upgraded(cheap_kdf(9))
        );
        assert_eq!(client.hello("alice").await.unwrap().1, AuthScheme::Legacy);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forge_record_rewrites_key_records() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let record = UserRecord {
            format: wire::STORAGE_FORMAT,
            generation: 1,
            kdf: cheap_kdf(1),
            login_key: None,
            wrapped_key: vec![5; 72],
        };
        let put = Request::PutRecord {
            expect_generation: 0,
            record: record.clone(),
            expect_record: None,
        };
        assert_eq!(
            c.md5_client(2, "alice", "Crimson33")
                .await
                .unwrap()
                .call(&put)
                .await,
            Response::RecordStored
        );
        let forge = Arc::new(ForgeRecord::new(|real| {
            real.map(|mut r| {
                r.kdf.m_kib = u32::MAX;
                r
            })
        }));
        c.make_hostile(2, forge.clone()).await.unwrap();
        let Response::Record(Some(got)) = c
            .md5_client(2, "alice", "Crimson33")
            .await
            .unwrap()
            .call(&Request::GetRecord)
            .await
        else {
            panic!("no record");
        };
        assert_eq!(got.kdf.m_kib, u32::MAX);
        assert_eq!(got.wrapped_key, record.wrapped_key);
        assert_eq!(forge.hits(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_text_carries_escape_sequences_unchanged() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let text = "disk \x1b]0;pwned\x07on fire\x1b[2J";
        let lie = ErrorText::new(when::get_blob(""), text).code(ErrorCode::NotFound);
        c.make_hostile(3, Arc::new(lie)).await.unwrap();
        let (resp, _) = c
            .md5_client(3, "alice", "Crimson33")
            .await
            .unwrap()
            .get("p-x")
            .await;
        assert_eq!(resp, Response::error(ErrorCode::NotFound, text));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_listing_never_ends() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let flood = Arc::new(FloodListing::new("m"));
        c.make_hostile(2, flood.clone()).await.unwrap();
        let client = c.md5_client(2, "alice", "Crimson33").await.unwrap();
        let mut after = None;
        let mut last: Option<BlobId> = None;
        for _ in 0..5 {
            let req = Request::List {
                after,
                limit: 256,
                prefix: None,
            };
            let Response::Listing { entries, more } = client.call(&req).await else {
                panic!("no listing");
            };
            assert!(more);
            assert_eq!(entries.len(), 256);
            for e in &entries {
                assert!(last.as_ref().is_none_or(|l| *l < e.id));
                last = Some(e.id.clone());
            }
            after = last.clone();
        }
        assert_eq!(flood.hits(), 5);
    })
    .await;
}
