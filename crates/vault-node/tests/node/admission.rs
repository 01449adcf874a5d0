//! Connection slots: address validation, eviction of connections that never
//! log in, and the login timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::net::Ipv4Addr;

use vault_node::store::offline::uploads_in_progress;
use vault_node::testing::raw::error_code;
use vault_node::testing::{eventually, timed, users_text, RawClient, TestNode};
use wire::{BlobId, ErrorCode, Request, Response};

use crate::sources::client_from;

/// Close codes the node uses (see `connection.rs`).
const EVICTED: u64 = 3;
const LOGIN_TIMEOUT: u64 = 4;

#[tokio::test]
async fn idle_connections_do_not_keep_a_real_client_out() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.max_connections = 8)
            .await
            .unwrap();
        // Eight connections that never log in and never go idle, all from
        // 127.0.0.1 like the real client below.
        let mut idle = Vec::new();
        for _ in 0..8 {
            let c = RawClient::connect_with(
                node.addr(),
                node.ca_pem(),
                "DFS1",
                Some(Duration::from_millis(200)),
            )
            .await
            .unwrap();
            idle.push(c);
        }
        let real = tokio::time::timeout(Duration::from_secs(5), async {
            let c = node.md5_client("alice", "Crimson33").await.unwrap();
            assert_eq!(c.put("p-real", b"stored").await, Response::Stored);
            c
        })
        .await
        .expect("a real client could not log in and store within 5 s");
        assert_eq!(real.get("p-real").await.1, b"stored");
        // The oldest idle connections made room: four for the per-source
        // cap of 4 while the flood arrived, one for the real client.
        for (i, c) in idle.iter().enumerate().take(5) {
            let (code, reason) = c
                .closed_by_node()
                .await
                .unwrap_or_else(|| panic!("idle connection {i} was not closed by the node"));
            assert_eq!(code, EVICTED, "{reason}");
            assert!(reason.contains("evicted"), "{reason}");
        }
        for c in &idle[5..] {
            assert!(
                c.conn.close_reason().is_none(),
                "a newer idle connection was closed"
            );
        }
    })
    .await
}

#[tokio::test]
async fn logged_in_connections_are_never_evicted() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.max_connections = 2)
            .await
            .unwrap();
        let a = node.md5_client("alice", "Crimson33").await.unwrap();
        let b = node.md5_client("bob", "Velvet77").await.unwrap();
        // Nothing can be evicted: the newcomer is refused.
        let third = node.raw_client().await.unwrap();
        let (_, reason) = third.closed_by_node().await.expect("not refused");
        assert!(reason.contains("busy"), "{reason}");
        assert_eq!(a.put("p-a", b"a").await, Response::Stored);
        assert_eq!(b.put("p-b", b"b").await, Response::Stored);
    })
    .await
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed_after_the_login_timeout() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| {
            c.login_timeout = Duration::from_millis(300)
        })
        .await
        .unwrap();
        let lazy = node.raw_client().await.unwrap();
        // A challenge alone is not a login.
        lazy.hello("alice").await.unwrap();
        let (code, reason) = lazy
            .closed_by_node()
            .await
            .expect("the idle connection was not closed");
        assert_eq!(code, LOGIN_TIMEOUT, "{reason}");
        assert!(reason.contains("login timeout"), "{reason}");
        // A connection that logged in in time stays open past the deadline.
        let busy = node.md5_client("alice", "Crimson33").await.unwrap();
        let still_open = tokio::time::timeout(Duration::from_millis(900), busy.conn.closed()).await;
        assert!(still_open.is_err(), "a logged-in connection was closed");
        assert_eq!(busy.put("p-1", b"x").await, Response::Stored);
    })
    .await
}

/// Whether a datagram from the server is a QUIC v1 Retry packet (long
/// header, type 3).
fn is_retry(datagram: &[u8]) -> bool {
    datagram
        .first()
        .is_some_and(|b| b & 0x80 != 0 && (b >> 4) & 0x03 == 3)
}

#[tokio::test]
async fn unvalidated_addresses_get_a_retry_first() {
    timed(async {
        let node = TestNode::start(&users_text()).await.unwrap();
        // A UDP relay between the client and the node that counts the
        // node's Retry packets.
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(node.addr()).await.unwrap();
        let relay_addr = front.local_addr().unwrap();
        let retries = Arc::new(AtomicUsize::new(0));
        let counted = retries.clone();
        let relay = tokio::spawn(async move {
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut a) => {
                        client = Some(from);
                        let _ = back.send(&a[..n]).await;
                    }
                    Ok(n) = back.recv(&mut b) => {
                        if is_retry(&b[..n]) {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        if let Some(to) = client {
                            let _ = front.send_to(&b[..n], to).await;
                        }
                    }
                }
            }
        });
        let c = RawClient::connect(relay_addr, node.ca_pem(), "DFS1")
            .await
            .unwrap();
        // (Status needs a login.)
        assert_eq!(
            c.login_md5("alice", "Crimson33").await.unwrap(),
            Response::LoggedIn
        );
        assert!(matches!(
            c.call(&wire::Request::Status).await,
            Response::Status(_)
        ));
        assert_eq!(retries.load(Ordering::SeqCst), 1);
        relay.abort();
    })
    .await
}

/// Issue 15: bob opens as many logged-in connections as the node has slots
/// (256, from four addresses so the per-source cap does not stop him
/// first); alice still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_hold_every_slot() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| {
            c.login_timeout = Duration::from_secs(120)
        })
        .await
        .unwrap();
        let cap = node.config().max_connections;
        assert_eq!(cap, 256);
        let per_user = vault_node::server::default_max_connections_per_user(cap);
        let (mut bobs, mut logged_in, mut busy) = (Vec::new(), 0, 0);
        for i in 0..cap {
            let ip = Ipv4Addr::new(127, 0, 0, 2 + (i / 64) as u8);
            let c = client_from(ip, node.addr(), node.ca_pem(), "DFS1")
                .await
                .unwrap();
            let resp = c.login_md5("bob", "Velvet77").await.unwrap();
            match error_code(&resp) {
                None if resp == Response::LoggedIn => logged_in += 1,
                Some(ErrorCode::Busy) => {
                    let Response::Error { message, .. } = &resp else {
                        unreachable!()
                    };
                    assert!(message.contains("too many connections"), "{message}");
                    busy += 1;
                }
                _ => panic!("bob's login {i}: {resp:?}"),
            }
            bobs.push(c);
        }
        assert_eq!(logged_in, per_user, "bob's logged-in connections");
        assert_eq!(busy, cap - per_user);
        // Alice gets in (evicting one of bob's connections that could not
        // log in) and works.
        let alice = tokio::time::timeout(Duration::from_secs(5), async {
            let c = node.md5_client("alice", "Crimson33").await.unwrap();
            assert_eq!(c.put("p-alice", b"in").await, Response::Stored);
            c
        })
        .await
        .expect("alice could not log in and store within 5 s");
        assert_eq!(alice.get("p-alice").await.1, b"in");
        // Bob's logged-in connections still serve him; once one closes, he
        // may log in another.
        let first = bobs.remove(0);
        assert_eq!(first.put("p-bob", b"b").await, Response::Stored);
        first.conn.close(0u32.into(), b"bye");
        let mut again = false;
        for _ in 0..100 {
            let c = node.raw_client().await.unwrap();
            if c.login_md5("bob", "Velvet77").await.unwrap() == Response::LoggedIn {
                again = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(again, "bob's freed place was not given back");
    })
    .await
}

#[tokio::test]
async fn one_user_cannot_run_more_than_the_request_cap() {
    timed(async {
        let node = TestNode::start_with(&users_text(), |c| c.max_requests_per_user = Some(1))
            .await
            .unwrap();
        let bob1 = node.md5_client("bob", "Velvet77").await.unwrap();
        let bob2 = node.md5_client("bob", "Velvet77").await.unwrap();
        // An upload that waits for the rest of its bytes holds bob's one place.
        let (mut send, recv) = bob1.conn.open_bi().await.unwrap();
        let req = Request::PutBlob {
            id: BlobId::new("p-slow").unwrap(),
            len: 10,
            expect: None,
        };
        send.write_all(&wire::encode_request(&req)).await.unwrap();
        send.write_all(b"12345").await.unwrap();
        // Its quota is reserved: it is under way (in memory, being small).
        assert!(
            eventually(|| uploads_in_progress(node.root(), "bob") == 1).await,
            "upload never started"
        );
        // Another request of bob's, on another connection, is refused...
        let resp = bob2.call(&Request::GetRecord).await;
        assert_eq!(error_code(&resp), Some(ErrorCode::Busy), "{resp:?}");
        // ...alice's is not...
        let alice = node.md5_client("alice", "Crimson33").await.unwrap();
        assert_eq!(alice.put("p-a", b"a").await, Response::Stored);
        // ...and once the upload is done, bob may go on.
        send.write_all(b"67890").await.unwrap();
        send.finish().unwrap();
        let mut recv = recv;
        let (resp, _) = vault_node::testing::raw::read_response(&mut recv)
            .await
            .unwrap();
        assert_eq!(resp, Response::Stored);
        let mut served = false;
        for _ in 0..100 {
            if bob2.call(&Request::GetRecord).await == Response::Record(None) {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served, "bob's place was not freed");
    })
    .await
}
