//! Connection slots: address validation, eviction of connections that never
//! log in, and the login timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vault_node::testing::{timed, users_text, RawClient, TestNode};
use wire::Response;

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
        assert!(matches!(
            c.call(&wire::Request::Status).await,
            Response::Status(_)
        ));
        assert_eq!(retries.load(Ordering::SeqCst), 1);
        relay.abort();
    })
    .await
}
