//! The test kit itself (`vault_node::testing`, feature `testing`): the
//! cluster, the raw client and the hostile proxy do what their docs say.
//! The ready-made lies are in `testing_lies`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vault_node::testing::lie::{when, Chain, RawAnswer, StallOn};
use vault_node::testing::raw::{error_code, frame, oversized_frame_header};
use vault_node::testing::{
    md5_digest, timed, users_text, Honest, Lie, RawClient, Reply, TestCluster, Verdict,
};
use wire::{encode_request, BlobId, ErrorCode, Proof, Request, Response};

/// What a client waits for an answer that must not come.
const PATIENCE: Duration = Duration::from_millis(300);

fn id(s: &str) -> BlobId {
    BlobId::new(s).unwrap()
}

fn list_frame() -> Vec<u8> {
    encode_request(&Request::List {
        after: None,
        limit: 256,
        prefix: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_honest_proxy_is_transparent() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let direct = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        let seen = c.make_hostile(1, Arc::new(Honest)).await.unwrap();
        assert_ne!(c.addr(1), c.node_addr(1));
        let proxied = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        let big: Vec<u8> = (0..3_000_003u32).map(|n| (n % 251) as u8).collect();
        assert_eq!(proxied.put("p-big", &big).await, Response::Stored);
        assert_eq!(proxied.put("p-empty", b"").await, Response::Stored);
        assert_eq!(direct.put("m-small", b"manifest").await, Response::Stored);
        // Every answer, byte for byte, as the node gives it directly.
        let mut put = encode_request(&Request::PutBlob {
            id: id("p-twice"),
            len: 4,
            expect: None,
        });
        put.extend_from_slice(b"four");
        let get = |s: &str| encode_request(&Request::GetBlob { id: id(s) });
        assert_eq!(
            direct.exchange(&put).await.unwrap(),
            proxied.exchange(&put).await.unwrap()
        );
        for bytes in [
            get("p-big"),
            get("p-empty"),
            get("m-small"),
            get("p-none"),
            list_frame(),
        ] {
            let a = direct.exchange(&bytes).await.unwrap();
            let b = proxied.exchange(&bytes).await.unwrap();
            assert_eq!(a, b);
        }
        let (resp, bulk) = proxied.get("p-big").await;
        assert_eq!(
            resp,
            Response::Blob {
                len: big.len() as u64
            }
        );
        assert_eq!(bulk, big);
        // Hello: same scheme, a fresh challenge of the same size.
        let fresh = RawClient::connect(c.node_addr(1), c.ca_pem(), "DFS2")
            .await
            .unwrap();
        let via_proxy = c.raw_client(1).await.unwrap();
        let (c1, s1) = fresh.hello("carol").await.unwrap();
        let (c2, s2) = via_proxy.hello("carol").await.unwrap();
        assert_eq!((c1.len(), s1), (c2.len(), s2));
        // A refused login, message included.
        let wrong = |c: RawClient| async move { c.login_md5("bob", "wrong").await.unwrap() };
        let refused = wrong(fresh).await;
        assert_eq!(error_code(&refused), Some(ErrorCode::AuthFailed));
        assert_eq!(refused, wrong(via_proxy).await);
        assert_eq!(seen.connections(), 2);
        let puts = seen.count(|r| matches!(r, Request::PutBlob { .. }));
        assert_eq!(puts, 3);
        assert!(matches!(seen.requests()[0], Request::Hello { .. }));
    })
    .await;
}

/// Tells the test when a forwarded request's answer came back.
struct Signal(mpsc::UnboundedSender<()>);

impl Lie for Signal {
    fn on_response(&self, _: &Request, resp: Response, bulk: Vec<u8>) -> Reply {
        let _ = self.0.send(());
        Reply::Send(resp, bulk)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_leaves_the_client_waiting() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let stall = Arc::new(StallOn::new(when::get_blob("p-")));
        c.make_hostile(1, stall.clone()).await.unwrap();
        let client = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        assert_eq!(client.put("p-s", b"data").await, Response::Stored);
        let waited = tokio::time::timeout(PATIENCE, client.get("p-s")).await;
        assert!(waited.is_err(), "answered: {waited:?}");
        // Only that stream hangs; the connection still serves.
        assert!(matches!(
            client.call(&Request::Status).await,
            Response::Status(_)
        ));
        assert_eq!(stall.hits(), 1);

        // After the node did the work: the upload is stored, never confirmed.
        let (tx, mut answered) = mpsc::unbounded_channel();
        let chain = Chain(vec![
            Arc::new(Signal(tx)),
            Arc::new(StallOn::after_node(when::put_blob(""))),
        ]);
        c.make_hostile(1, Arc::new(chain)).await.unwrap();
        let client = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        answered.recv().await; // the two login requests
        answered.recv().await;
        let waited = tokio::time::timeout(PATIENCE, client.put("p-late", b"late")).await;
        assert!(waited.is_err(), "answered: {waited:?}");
        answered.recv().await;
        let on_disk = c.blob(1, "alice", "p-late").await.unwrap();
        assert_eq!(on_disk.as_deref(), Some(&b"late"[..]));

        // Mid-blob: the frame and the first bytes, then nothing.
        c.make_hostile(1, Arc::new(StallOn::mid_blob("p-", 2)))
            .await
            .unwrap();
        let client = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        let (mut send, mut recv) = client.conn.open_bi().await.unwrap();
        send.write_all(&encode_request(&Request::GetBlob { id: id("p-s") }))
            .await
            .unwrap();
        send.finish().unwrap();
        let mut head = vec![0u8; wire::FRAME_PREFIX_LEN];
        recv.read_exact(&mut head).await.unwrap();
        let len = wire::decode_frame_header(head.as_slice().try_into().unwrap()).unwrap();
        let mut rest = vec![0u8; len + 2];
        recv.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest[len..], b"da");
        let more = tokio::time::timeout(PATIENCE, recv.read_chunk(1, true)).await;
        assert!(more.is_err(), "more arrived: {more:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_answers_arrive_verbatim() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let mut bytes = oversized_frame_header();
        bytes.extend_from_slice(b"\xff\x00garbage");
        let raw = Arc::new(RawAnswer::new(when::list(), bytes.clone()));
        let seen = c.make_hostile(0, raw.clone()).await.unwrap();
        let client = c.md5_client(0, "alice", "Crimson33").await.unwrap();
        assert_eq!(client.exchange(&list_frame()).await.unwrap(), bytes);
        assert_eq!(raw.hits(), 1);
        assert_eq!(seen.count(|r| matches!(r, Request::List { .. })), 1);
        // A frame of another version, with any body.
        let odd = frame(99, b"\xa1");
        c.make_hostile(0, Arc::new(RawAnswer::new(when::any(), odd.clone())))
            .await
            .unwrap();
        let client = c.raw_client(0).await.unwrap();
        assert_eq!(client.exchange(&list_frame()).await.unwrap(), odd);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_sees_the_md5_proof_of_a_legacy_login() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let seen = c.make_hostile(0, Arc::new(Honest)).await.unwrap();
        c.md5_client(0, "alice", "Crimson33").await.unwrap();
        let carol = c.raw_client(0).await.unwrap();
        let r = carol
            .login_signature("DFS1", "carol", "Magellan101")
            .await
            .unwrap();
        assert_eq!(r, Response::LoggedIn);
        let logins = seen.logins();
        assert_eq!(logins.len(), 2);
        assert_eq!(logins[0].0, "alice");
        assert_eq!(
            logins[0].1,
            Proof::LegacyMd5(md5_digest("Crimson33").to_vec())
        );
        assert!(matches!(&logins[1], (u, Proof::Signature(s)) if u == "carol" && s.len() == 64));
        assert_eq!(seen.connections(), 2);
        seen.clear();
        assert!(seen.requests().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_panicking_lies_reset_only_their_stream() {
    struct Mixed;
    impl Lie for Mixed {
        fn on_request(&self, req: &Request, _: &[u8]) -> Verdict {
            match req {
                Request::Status => Verdict::Answer(Reply::Reset),
                Request::GetRecord => panic!("a lie with a bug"),
                _ => Verdict::Forward,
            }
        }
    }
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        c.make_hostile(2, Arc::new(Mixed)).await.unwrap();
        let client = c.md5_client(2, "alice", "Crimson33").await.unwrap();
        assert!(client.request(&Request::Status, &[]).await.is_err());
        assert!(client.request(&Request::GetRecord, &[]).await.is_err());
        let (resp, _) = client
            .request(&Request::GetBlob { id: id("p-a") }, &[])
            .await
            .unwrap();
        assert_eq!(error_code(&resp), Some(ErrorCode::NotFound));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_address_and_the_proxy_follows() {
    timed(async {
        let mut c = TestCluster::start(&users_text()).await.unwrap();
        let node = c.node_addr(1);
        assert_eq!(
            c.md5_client(1, "alice", "Crimson33")
                .await
                .unwrap()
                .put("p-kept", b"kept")
                .await,
            Response::Stored
        );
        c.stop(1).await.unwrap();
        assert!(!c.is_running(1));
        c.restart(1).await.unwrap();
        assert!(c.is_running(1));
        assert_eq!(c.node_addr(1), node);
        assert_eq!(
            c.md5_client(1, "alice", "Crimson33")
                .await
                .unwrap()
                .get("p-kept")
                .await
                .1,
            b"kept"
        );

        let seen = c.make_hostile(1, Arc::new(Honest)).await.unwrap();
        let proxy = c.addr(1);
        let before = c.md5_client(1, "alice", "Crimson33").await.unwrap();
        c.restart(1).await.unwrap();
        assert_eq!((c.addr(1), c.node_addr(1)), (proxy, node));
        // The node's goodbye reaches the client through the proxy.
        let closed = before.conn.closed().await;
        assert!(closed.to_string().contains("shutdown"), "{closed}");
        assert_eq!(
            c.md5_client(1, "alice", "Crimson33")
                .await
                .unwrap()
                .get("p-kept")
                .await
                .1,
            b"kept"
        );
        assert_eq!(seen.connections(), 2);

        // While the node is down the proxy turns clients away.
        c.stop(1).await.unwrap();
        let refused = c.raw_client(1).await;
        assert!(refused.is_err());
        assert_eq!(seen.connections(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dfc_text_lists_the_nodes_in_order() {
    timed(async {
        let counter = AtomicUsize::new(0);
        let users = [&users_text()[..], "", "", ""];
        let mut c = TestCluster::start_with(users, |i, cfg| {
            counter.fetch_add(1, Ordering::SeqCst);
            cfg.max_streams_per_connection = 8 + i as u32;
        })
        .await
        .unwrap();
        assert_eq!(counter.load(Ordering::SeqCst), 4);
        assert_eq!(c.config(3).max_streams_per_connection, 11);
        c.make_hostile(2, Arc::new(Honest)).await.unwrap();
        let text = c.dfc_text("Alice", Some("Password: Crimson33"));
        let expected: String = (0..4)
            .map(|i| format!("Server DFS{} 127.0.0.1:{}\n", i + 1, c.addr(i).port()))
            .chain(["Username: Alice\nPassword: Crimson33\n".to_string()])
            .collect();
        assert_eq!(text, expected);
        assert!(text.contains(&c.addr(2).to_string()));
        assert!(!text.contains(&c.node_addr(2).to_string()));
        let conf = c.write_dfc("Alice", None).unwrap();
        assert_eq!(conf, c.dir().join("dfc.conf"));
        assert!(std::fs::read_to_string(&conf)
            .unwrap()
            .ends_with("Username: Alice\n"));
        let ca = std::fs::read_to_string(c.dir().join("certs/ca.pem")).unwrap();
        assert_eq!(ca, c.ca_pem());
        assert_eq!(c.root(0), c.dir().join("DFS1"));
        assert_eq!(c.user_dir(3, "Bob"), c.dir().join("DFS4").join("bob"));
        // Each node got its own users: Alice only exists on DFS1.
        let on_dfs2 = c.raw_client(1).await.unwrap();
        let r = on_dfs2.login_md5("alice", "Crimson33").await.unwrap();
        assert_eq!(error_code(&r), Some(ErrorCode::AuthFailed));
    })
    .await;
}
