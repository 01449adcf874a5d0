//! `vault-node user add` without a terminal: `--password-stdin`,
//! `VAULT_PASSWORD`, and a hint when neither is given. Also: the lines a
//! serving node logs name the node.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `vault-node` in a new session (`setsid`): no controlling terminal, as
/// under cron, CI or a pipe from a remote shell.
fn detached() -> Command {
    let mut c = Command::new("setsid");
    c.arg(env!("CARGO_BIN_EXE_vault-node"))
        .env_remove("VAULT_PASSWORD")
        .env("RUST_LOG", "info");
    c
}

/// Runs it with `stdin` piped in, at most 60 s.
fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut c = detached();
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    // The child may exit without reading: ignore a broken pipe.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("vault-node {args:?} did not finish in 60 s");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(unix)]
#[test]
fn user_add_takes_the_password_from_a_pipe_or_the_environment_and_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("dfs.conf");
    let u = users.to_str().unwrap();

    // --password-stdin: the first line, its line end dropped.
    let out = run(
        &["user", "add", "Carol", "--users", u, "--password-stdin"],
        &[],
        "Magellan101\r\nignored\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = std::fs::read_to_string(&users).unwrap();
    assert!(file.contains("Carol argon2id "), "{file}");
    assert!(!file.contains("Magellan101"), "{file}");

    // VAULT_PASSWORD, stdin ignored.
    let out = run(
        &["user", "add", "Dave", "--users", u],
        &[("VAULT_PASSWORD", "Velvet77")],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&users)
        .unwrap()
        .contains("Dave argon2id "));

    // Neither, and no terminal: the error says how to give one.
    let out = run(&["user", "add", "Erin", "--users", u], &[], "Crimson33\n");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--password-stdin") && err.contains("VAULT_PASSWORD"),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
    assert!(!std::fs::read_to_string(&users).unwrap().contains("Erin"));

    // An empty line is refused, not stored as an empty password.
    let out = run(
        &["user", "add", "Erin", "--users", u, "--password-stdin"],
        &[],
        "\n",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no password"),
        "{}",
        text(&out.stderr)
    );

    // The help names both ways.
    let out = run(&["user", "add", "--help"], &[], "");
    let help = text(&out.stdout);
    assert!(
        help.contains("--password-stdin") && help.contains("VAULT_PASSWORD"),
        "{help}"
    );
}

#[cfg(unix)]
#[test]
fn a_serving_node_names_itself_on_its_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = d.join("certs");
    let out = run(
        &["certs", "--dir", certs.to_str().unwrap(), "--node", "DFS3"],
        &[],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let users = d.join("dfs.conf");
    std::fs::write(&users, "alice Crimson33\n").unwrap();
    let mut child = detached()
        .args(["serve", "--root"])
        .arg(d.join("DFS3"))
        .args(["--listen", "127.0.0.1:0", "--users"])
        .arg(&users)
        .arg("--certs")
        .arg(&certs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut listening = None;
    let mut seen = String::new();
    while listening.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("node listening") {
                listening = Some(line);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = listening.unwrap_or_else(|| panic!("no `node listening` line:\n{seen}"));
    // The `node` span: every line of the serving node carries it, the
    // start-up warnings included.
    assert!(line.contains("node{node=DFS3}"), "{line}");
    let legacy = seen
        .lines()
        .find(|l| l.contains("legacy plain-text password"))
        .unwrap_or_else(|| panic!("no legacy warning:\n{seen}"));
    assert!(legacy.contains("node{node=DFS3}"), "{legacy}");
}
