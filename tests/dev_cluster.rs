//! `vault-node dev-cluster`'s terminal control, end to end through the real
//! binaries: `stop DFS3` takes a node down for real (the client sees it
//! dead), `start DFS3` brings it back on its port, `quit` ends the cluster.
//! With `--nodes 6`, six nodes, each reachable and each under control.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use vault_tests::*;

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn a_node_stopped_and_started_from_the_terminal() {
    with_timeout(LIMIT, || {
        let tmp = tempfile::tempdir().expect("temp dir");
        let d = tmp.path();
        let mut dc = DevCluster::start_with(d, &[]);
        dc.wait_line("its banner", |l| {
            l.contains("Vault dev cluster: four nodes running")
        });
        let banner_hint = dc.wait_line("the control hint", |l| l.starts_with("Type `stop DFS3`"));
        assert!(banner_hint.contains("`start DFS3`"), "{banner_hint}");
        // Then each node's state: all four listen.
        let first_status = dc.wait_line("the nodes' state", |l| l.starts_with("DFS1 running"));
        let dfs3 = dc.addr("DFS3");
        assert!(
            first_status.contains(&format!("DFS3 running ({dfs3})")),
            "{first_status}"
        );
        assert!(!dfs3.ends_with(":0"), "{dfs3}");

        let first = random(100_000);
        std::fs::write(d.join("first.bin"), &first).unwrap();
        std::fs::write(d.join("second.bin"), random(50_000)).unwrap();
        ok(&dc.client(&["put", "first.bin"]));

        let status = dc.say("status");
        assert!(
            status.contains(&format!("DFS3 running ({dfs3})")),
            "{status}"
        );

        // Stopped for real: the client finds DFS3 dead.
        let said = dc.say("stop DFS3");
        assert_eq!(
            said,
            format!("DFS3 stopped ({dfs3}); `start DFS3` brings it back")
        );
        let o = dc.client(&["put", "second.bin"]);
        assert!(!o.status.success(), "put with DFS3 stopped succeeded");
        let err = stderr(&o);
        assert!(err.contains("DFS3"), "{err}");
        assert!(err.contains("--degraded"), "{err}");
        // Three of four nodes still rebuild a file.
        ok(&dc.client(&["get", "first.bin", "-o", "first.copy"]));
        assert_eq!(std::fs::read(d.join("first.copy")).unwrap(), first);

        let status = dc.say("status");
        assert!(
            status.contains(&format!("DFS3 stopped ({dfs3})")),
            "{status}"
        );
        let said = dc.say("stop 3");
        assert!(said.contains("already stopped"), "{said}");

        // Back on its port: PUT needs all four again and gets them.
        let said = dc.say("start dfs3");
        assert_eq!(said, format!("DFS3 started again on {dfs3}"));
        ok(&dc.client(&["put", "second.bin"]));

        let said = dc.say("frobnicate");
        assert!(said.contains("commands: stop DFSn, start DFSn"), "{said}");

        // `quit` ends the cluster, exit status 0.
        dc.quit();
    });
}

/// Connects to node `name` at `addr` over QUIC, trusting only the dev
/// cluster's CA and expecting `name`'s certificate, and says `Hello`.
fn hello(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    ca_pem: &str,
    name: &str,
) -> Result<(), String> {
    rt.block_on(async {
        let client = vault_node::testing::RawClient::connect(addr, ca_pem, name)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let hello = client.hello("alice").await.map_err(|e| format!("{e:#}"));
        client.conn.close(0u32.into(), b"done");
        client.endpoint.wait_idle().await;
        hello.map(|_| ())
    })
}

#[test]
fn six_nodes_each_reachable_and_under_control() {
    with_timeout(LIMIT, || {
        let tmp = tempfile::tempdir().expect("temp dir");
        let d = tmp.path();
        let mut dc = DevCluster::start_with(d, &["--nodes", "6"]);
        dc.wait_line("its banner", |l| {
            l.contains("Vault dev cluster: six nodes running")
        });
        let status = dc.wait_line("the nodes' state", |l| l.starts_with("DFS1 running"));

        // dfc.conf: the redundancy comment before six Server lines, with the
        // ports the nodes actually bound (the status line names them too).
        let conf = std::fs::read_to_string(dc.dir.join("dfc.conf")).expect("read dfc.conf");
        let comment = "# 6 servers: the client stores files as Reed-Solomon rs 4+2 by default \
                       (rs 2+1 with three); a Redundancy line changes it";
        let lines: Vec<&str> = conf.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == comment)
            .unwrap_or_else(|| panic!("no redundancy comment in dfc.conf:\n{conf}"));
        let servers: Vec<(usize, &str)> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("Server "))
            .map(|(i, l)| (i, *l))
            .collect();
        assert_eq!(servers.len(), 6, "{conf}");
        assert!(servers.iter().all(|(i, _)| *i > at), "{conf}");
        // The Redundancy line itself is the user's to add.
        assert!(
            !conf
                .lines()
                .any(|l| l.trim_start().starts_with("Redundancy")),
            "{conf}"
        );
        let mut addrs = Vec::new();
        for (k, (_, line)) in servers.iter().enumerate() {
            let name = format!("DFS{}", k + 1);
            let addr = dc.addr(&name);
            assert_eq!(*line, format!("Server {name} {addr}"));
            assert!(!addr.ends_with(":0"), "{addr}");
            assert!(
                status.contains(&format!("{name} running ({addr})")),
                "{status}"
            );
            addrs.push(addr.parse::<SocketAddr>().expect("a socket address"));
        }

        // Each of the six answers QUIC with its own certificate, and Hello.
        let ca_pem = std::fs::read_to_string(dc.dir.join("certs/ca.pem")).expect("read the CA");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        for (k, addr) in addrs.iter().enumerate() {
            let name = format!("DFS{}", k + 1);
            if let Err(e) = hello(&rt, *addr, &ca_pem, &name) {
                panic!("{name} at {addr}: {e}");
            }
        }

        // The sixth node under control from the terminal.
        let dfs6 = addrs[5];
        let said = dc.say("stop DFS6");
        assert_eq!(
            said,
            format!("DFS6 stopped ({dfs6}); `start DFS6` brings it back")
        );
        let status = dc.say("status");
        assert!(
            status.contains(&format!("DFS6 stopped ({dfs6})")),
            "{status}"
        );
        assert!(
            status.contains(&format!("DFS5 running ({})", addrs[4])),
            "{status}"
        );
        assert!(
            hello(&rt, dfs6, &ca_pem, "DFS6").is_err(),
            "DFS6 answers while stopped"
        );
        let said = dc.say("stop 6");
        assert!(said.contains("already stopped"), "{said}");
        // No seventh node.
        let said = dc.say("stop DFS7");
        assert!(
            said.contains("the nodes are DFS1, DFS2, DFS3, DFS4, DFS5, DFS6 (or 1..6)"),
            "{said}"
        );
        let said = dc.say("start 7");
        assert!(said.contains("no node \"7\""), "{said}");
        let said = dc.say("start DFS6");
        assert_eq!(said, format!("DFS6 started again on {dfs6}"));
        hello(&rt, dfs6, &ca_pem, "DFS6").expect("DFS6 answers again on its port");
        let status = dc.say("status");
        for (k, addr) in addrs.iter().enumerate() {
            assert!(
                status.contains(&format!("DFS{} running ({addr})", k + 1)),
                "{status}"
            );
        }
        dc.quit();

        // The folder holds six nodes now: four (the default) is refused,
        // naming the folder and what it holds, and nothing is started.
        let out = Command::new(bin("vault-node"))
            .arg("dev-cluster")
            .arg("--dir")
            .arg(&dc.dir)
            .args(["--base-port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vault-node dev-cluster");
        let out = collect(out, "dev-cluster on a six-node folder");
        assert!(!out.status.success(), "four nodes ran in a six-node folder");
        let err = stderr(&out);
        assert!(err.contains(&dc.dir.display().to_string()), "{err}");
        assert!(err.contains("holds a dev cluster of 6 nodes"), "{err}");
        assert!(err.contains("--nodes 6"), "{err}");
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    });
}
