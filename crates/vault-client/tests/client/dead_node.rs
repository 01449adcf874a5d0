//! A node that dies during a PUT of many files is noticed once: without
//! `--degraded` the files not sent yet fail at once with one cause naming
//! it; with it, the PUT goes on without the dead node's copies.

use std::time::{Duration, Instant};

use vault_client::ops::{self, put_many::Outcome};
use vault_client::vault::Vault;
use vault_node::testing::{self, timed, TestCluster};

use super::common::*;

/// A tree of `n` small files under `c.dir()/tree`.
fn tree(c: &TestCluster, n: usize) -> Vec<vault_client::path::LocalFile> {
    let dir = c.dir().join("tree");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i:04}.txt")), data(2_000, i as u64)).unwrap();
    }
    vault_client::path::walk(&dir).unwrap().files
}

/// Stops node `i` and waits (bounded) until `v` sees its connection gone.
async fn kill(c: &mut TestCluster, v: &Vault, i: usize) {
    c.stop(i).await.unwrap();
    let s = v.session(i).unwrap().clone();
    assert!(
        testing::eventually(move || s.is_closed()).await,
        "the client never noticed DFS{} stopping",
        i + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dying_mid_put_fails_the_rest_at_once_with_one_cause() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let files = tree(&c, 600);
        let v = open(&c, "alice", ALICE).await.unwrap();
        kill(&mut c, &v, 1).await;
        let started = Instant::now();
        let plan = ops::put_many::PutPlan::start(files, Default::default(), progress());
        let summary = plan.run(&v).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(summary.stored(), 0);
        let causes: std::collections::BTreeSet<String> = summary
            .files
            .iter()
            .map(|(f, o)| match o {
                Outcome::Failed(e) => e.to_string().replacen(&f.name, "NAME", 1),
                other => panic!("{}: {other:?}", f.name),
            })
            .collect();
        assert_eq!(causes.len(), 1, "{causes:?}");
        let cause = causes.into_iter().next().unwrap();
        assert!(
            cause.contains("DFS2") && cause.contains("--degraded"),
            "{cause}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_degraded_the_put_goes_on_without_the_dead_node() {
    timed(async {
        let mut c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let files = tree(&c, 300);
        let v = open(&c, "alice", ALICE).await.unwrap();
        kill(&mut c, &v, 2).await;
        let options = ops::put_many::PutOptions {
            degraded: true,
            ..Default::default()
        };
        let summary = ops::put_many::PutPlan::start(files, options, progress())
            .run(&v)
            .await
            .unwrap();
        assert_eq!(summary.stored(), 300, "{:?}", summary.files.first());
        v.close();
        // Every file reads back from the three nodes, and repair completes
        // them once the node is back.
        let v = open(&c, "alice", ALICE).await.unwrap();
        let out = c.dir().join("fetched-f0007.txt");
        ops::get::get_file(&v, "tree/f0007.txt", &out, false, progress())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data(2_000, 7));
        v.close();
        c.restart(2).await.unwrap();
        let v = open(&c, "alice", ALICE).await.unwrap();
        let r = ops::repair::repair(&v, "", Default::default(), progress())
            .await
            .unwrap();
        assert_eq!(r.after.exit_code(), 0, "{:?}", r.failures);
    })
    .await
}

/// A node that never answers costs a command the dial timeout, not that
/// plus the seconds its abandoned handshake lingers in the endpoint:
/// `net::finish` waits only for the closes of the connections that were
/// up (which reach their node), not for the abandoned handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_costs_the_dial_timeout_and_no_more() {
    use vault_client::config::ServerEntry;
    use vault_client::net::{self, Limits, NetError};
    timed(async {
        let c = TestCluster::start(&testing::plain_user("Alice", ALICE))
            .await
            .unwrap();
        let endpoint = net::client_endpoint(c.ca_pem().as_bytes()).unwrap();
        // A socket that takes the handshake's packets and never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let entry = |i: usize, port: u16| ServerEntry {
            name: c.name(i).to_string(),
            host: "127.0.0.1".into(),
            port,
            line: i + 1,
        };
        let limits = Limits {
            connect: Duration::from_millis(300),
            ..Limits::default()
        };
        let dead = silent.local_addr().unwrap().port();
        let live = c.addr(1).port();
        let up = net::dial(&endpoint, 1, &entry(1, live), limits)
            .await
            .unwrap();
        match net::dial(&endpoint, 0, &entry(0, dead), limits).await {
            Err(NetError::Timeout) => {}
            other => panic!("expected a timeout, got {:?}", other.map(|s| s.name)),
        }
        up.close();
        // The abandoned handshake is still there: waiting for the endpoint
        // to be idle would take its close timer (about 3 s).
        assert!(endpoint.open_connections() >= 1);
        let started = Instant::now();
        net::finish(&endpoint).await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(700), "finish took {took:?}");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), endpoint.wait_idle())
                .await
                .is_err(),
            "the abandoned handshake was gone already: this test proves nothing"
        );
        assert_eq!(
            endpoint.open_connections(),
            1,
            "the live connection's close did not finish"
        );
    })
    .await;
}
