//! The `vault-node` binary as an operator runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vault_node() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vault-node"));
    c.env_remove("VAULT_PASSWORD").env("RUST_LOG", "info");
    c
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = vault_node();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_describes_every_command_and_option() {
    let top = stdout(&run(&["--help"], &[]));
    for cmd in ["certs", "serve", "dev-cluster", "user"] {
        assert!(top.contains(cmd), "{cmd} missing from:\n{top}");
    }
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["certs", "--help"],
            &[
                "--dir", "--node", "--san", "--force", "--days", "--ca-key", "Renewal",
            ],
        ),
        (
            &["serve", "--help"],
            &[
                "--root",
                "--port",
                "--users",
                "--certs",
                "--name",
                "--listen",
                "--max-blob",
                "--max-connections",
                "--max-connections-per-source",
                "--login-timeout",
                "--quota",
            ],
        ),
        (&["dev-cluster", "--help"], &["--dir", "--base-port"]),
        (&["user", "--help"], &["add", "remove", "list"]),
        (&["user", "add", "--help"], &["--users", "VAULT_PASSWORD"]),
    ];
    for (args, needles) in cases {
        let out = run(args, &[]);
        assert!(out.status.success(), "{args:?}");
        let text = stdout(&out);
        for n in *needles {
            assert!(text.contains(n), "{n} missing from {args:?}:\n{text}");
        }
    }
}

#[test]
fn user_add_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("dfs.conf");
    std::fs::write(
        &users,
        "Username: Alice\nPassword: 0123456789abcdef0123456789abcdef\nbob secret\n",
    )
    .unwrap();
    let u = users.to_str().unwrap();
    let out = run(
        &["user", "add", "Carol", "--users", u],
        &[("VAULT_PASSWORD", "Magellan101")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(!text.contains("Magellan101"));
    let line = text.lines().last().unwrap();
    assert!(
        line.starts_with("Carol argon2id m=65536,t=3,p=1 "),
        "{line}"
    );

    let out = run(
        &["user", "add", "carol", "--users", u],
        &[("VAULT_PASSWORD", "x")],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let out = run(&["user", "list", "--users", u], &[]);
    assert_eq!(stdout(&out), "Alice\tmd5\nbob\tplain\nCarol\targon2id\n");
    assert!(!stdout(&out).contains("secret"));

    let out = run(&["user", "remove", "ALICE", "--users", u], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["user", "list", "--users", u], &[]);
    assert_eq!(stdout(&out), "bob\tplain\nCarol\targon2id\n");
}

#[test]
fn serve_reports_a_malformed_users_file_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("dfs.conf");
    std::fs::write(&users, "# users\nPassword: orphan\n").unwrap();
    let out = run(
        &[
            "serve",
            "--root",
            dir.path().join("DFS1").to_str().unwrap(),
            "--port",
            "0",
            "--users",
            users.to_str().unwrap(),
            "--certs",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("dfs.conf:2:") && err.contains("without a username"),
        "{err}"
    );
    assert!(!err.contains("orphan"), "{err}");
}

fn wait_for_line(child: &mut std::process::Child, needle: &str) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return seen;
            }
        }
    }
    panic!("{needle:?} never logged:\n{seen}");
}

#[cfg(unix)]
#[test]
fn serve_starts_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = d.join("certs");
    let out = run(
        &["certs", "--dir", certs.to_str().unwrap(), "--node", "DFS1"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let users = d.join("dfs.conf");
    std::fs::write(&users, "alice Crimson33\n").unwrap();
    let root = d.join("DFS1");
    let mut child = vault_node()
        .args([
            "serve",
            "--root",
            root.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--users",
            users.to_str().unwrap(),
            "--certs",
            certs.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = wait_for_line(&mut child, "node listening");
    assert!(
        log.contains("legacy plain-text password") && log.contains("alice"),
        "{log}"
    );
    assert!(!log.contains("Crimson33"), "{log}");
    assert!(Path::new(&root.join(".vault/node.secret")).exists());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "node did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn certs_keeps_the_ca_key_out_and_serve_warns_about_the_old_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = d.join("certs");
    let certs_arg = certs.to_str().unwrap();
    let out = run(&["certs", "--dir", certs_arg, "--node", "DFS1"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ca-private"), "{text}");
    assert!(text.contains("cluster.secret"), "{text}");
    let key = d.join("ca-private/ca.key");
    assert!(key.is_file() && !certs.join("ca.key").exists());
    // The old layout: the CA key in the certs folder, no cluster secret.
    std::fs::rename(&key, certs.join("ca.key")).unwrap();
    std::fs::remove_file(certs.join("cluster.secret")).unwrap();
    let users = d.join("dfs.conf");
    std::fs::write(&users, "alice Crimson33\n").unwrap();
    let mut child = vault_node()
        .args(["serve", "--root", d.join("DFS1").to_str().unwrap()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--users",
            users.to_str().unwrap(),
        ])
        .args(["--certs", certs_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = wait_for_line(&mut child, "node listening");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        log.contains("CA private key is in the certificates folder"),
        "{log}"
    );
    assert!(log.contains("no cluster secret"), "{log}");
    // Renewal moves the key out and makes the secret.
    let out = run(&["certs", "--dir", certs_arg, "--node", "DFS1"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("moved the CA private key"),
        "{}",
        stdout(&out)
    );
    assert!(key.is_file() && !certs.join("ca.key").exists());
    assert!(certs.join("cluster.secret").is_file());
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Streams a 1 GiB blob through a real node process and checks its peak
/// memory stays under 64 MiB. Slow: run with `--ignored`.
#[cfg(target_os = "linux")]
#[tokio::test]
#[ignore]
async fn node_memory_stays_bounded_for_huge_blobs() {
    use vault_node::testing::raw::read_response;
    use vault_node::testing::RawClient;
    use wire::{BlobId, Request, Response};
    const LEN: u64 = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = d.join("certs");
    assert!(run(
        &["certs", "--dir", certs.to_str().unwrap(), "--node", "DFS1"],
        &[]
    )
    .status
    .success());
    let users = d.join("dfs.conf");
    std::fs::write(&users, "alice Crimson33\n").unwrap();
    let mut child = vault_node()
        .args([
            "serve",
            "--root",
            d.join("DFS1").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--users",
            users.to_str().unwrap(),
            "--certs",
            certs.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ca = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let c = RawClient::connect(addr, &ca, "DFS1").await.unwrap();
    assert_eq!(
        c.login_md5("alice", "Crimson33").await.unwrap(),
        Response::LoggedIn
    );

    let id = BlobId::new("p-huge").unwrap();
    let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
    send.write_all(&wire::encode_request(&Request::PutBlob {
        id: id.clone(),
        len: LEN,
        expect: None,
    }))
    .await
    .unwrap();
    let chunk = vec![0x42u8; 1 << 20];
    for _ in 0..(LEN >> 20) {
        send.write_all(&chunk).await.unwrap();
    }
    send.finish().unwrap();
    assert_eq!(read_response(&mut recv).await.unwrap().0, Response::Stored);

    let (mut send, mut recv) = c.conn.open_bi().await.unwrap();
    send.write_all(&wire::encode_request(&Request::GetBlob { id }))
        .await
        .unwrap();
    send.finish().unwrap();
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(1 << 20, true).await.unwrap() {
        got += chunk.bytes.len() as u64;
    }
    let frame_len = wire::encode_response(&Response::Blob { len: LEN }).len() as u64;
    assert_eq!(got, frame_len + LEN);
    let peak = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("node peak RSS: {} MiB", peak / 1024);
    assert!(peak < 64 * 1024, "node peak RSS {peak} KiB");
}
