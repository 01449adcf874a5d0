//! A running `vault-node dev-cluster` driven through its terminal: its
//! printed lines read with a bound, commands typed on its standard input
//! (`stop DFS3`, `start DFS3`, `quit`), and `vault-client` run on the
//! dfc.conf it writes. Used by `dev_cluster.rs` and `erasure.rs`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{bin, collect};

/// The password of the dev cluster's demo accounts, until `rotate`.
pub const DEMO_PASSWORD: &str = "Crimson33";

/// How long [`DevCluster::wait_line`] waits for a line, and
/// [`DevCluster::quit`] for the exit.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `vault-node dev-cluster`, killed by its pid when dropped
/// (every failure path included) unless it has exited; on a panic the last
/// lines of its log are printed.
pub struct DevCluster {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Every line it printed so far, for failure messages.
    seen: Vec<String>,
    /// The cluster's folder (`--dir`).
    pub dir: PathBuf,
    /// Its dfc.conf (`<dir>/dfc.conf`; [`DevCluster::start`] checks that
    /// the banner names it).
    pub conf: PathBuf,
    /// The password [`DevCluster::client`] logs in with: the one the banner
    /// prints ([`DevCluster::start`]), else [`DEMO_PASSWORD`].
    pub password: String,
    /// The demo user the banner names ([`DevCluster::start`]); empty after
    /// [`DevCluster::start_with`], which reads no line.
    pub user: String,
    /// Its standard error (the nodes' log).
    log: PathBuf,
}

impl DevCluster {
    /// Starts `dev-cluster --dir <dir> --base-port 0 --nodes <nodes>` (its
    /// log in `<dir>.log`) and reads its banner up to the nodes' state:
    /// the demo user, password and dfc.conf it names, every node running.
    pub fn start(dir: &Path, nodes: usize) -> DevCluster {
        let mut dc = Self::spawn(
            dir,
            dir.with_extension("log"),
            &["--nodes", &nodes.to_string()],
        );
        // "Vault dev cluster: six nodes running; ...": the count is checked
        // on the nodes' state below.
        dc.wait_line("its banner", |l| {
            l.starts_with("Vault dev cluster: ") && l.contains(" nodes running")
        });
        // "Try, as Alice (password Crimson33):"
        let try_as = dc.wait_line("the demo user", |l| l.starts_with("Try, as "));
        dc.user = try_as
            .trim_start_matches("Try, as ")
            .split_whitespace()
            .next()
            .expect("a user name")
            .to_string();
        // "  VAULT_PASSWORD=Crimson33 <client> -c <conf> put README.md"
        let put = dc.wait_line("how to put a file", |l| {
            l.trim_start().starts_with("VAULT_PASSWORD=") && l.ends_with(" put README.md")
        });
        let put = put.trim_start();
        let (password, rest) = put
            .trim_start_matches("VAULT_PASSWORD=")
            .split_once(' ')
            .expect("a command after the password");
        dc.password = password.to_string();
        let conf = rest
            .split_once(" -c ")
            .and_then(|(_, c)| c.strip_suffix(" put README.md"))
            .unwrap_or_else(|| panic!("no -c in {put:?}"));
        assert_eq!(PathBuf::from(conf), dc.conf);
        let status = dc.wait_line("the nodes' state", |l| l.starts_with("DFS1 running"));
        for k in 1..=nodes {
            assert!(status.contains(&format!("DFS{k} running")), "{status}");
        }
        let more = format!("DFS{} ", nodes + 1);
        assert!(!status.contains(&more), "more than {nodes} nodes: {status}");
        dc
    }

    /// Starts `dev-cluster --dir <dir>/vault-dev --base-port 0 <extra>`
    /// (`extra` e.g. `--nodes 6`; its log in `<dir>/dev-cluster.log`) and
    /// reads no line: the caller waits for what it wants to see.
    pub fn start_with(dir: &Path, extra: &[&str]) -> DevCluster {
        Self::spawn(&dir.join("vault-dev"), dir.join("dev-cluster.log"), extra)
    }

    /// Spawns `dev-cluster --dir <dir> --base-port 0 <extra>`, its standard
    /// error into `log`, its lines read by a thread.
    fn spawn(dir: &Path, log: PathBuf, extra: &[&str]) -> DevCluster {
        let log_file = std::fs::File::create(&log).expect("create the log file");
        let mut child = Command::new(bin("vault-node"))
            .arg("dev-cluster")
            .arg("--dir")
            .arg(dir)
            .args(["--base-port", "0"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("VAULT_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn vault-node dev-cluster");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        DevCluster {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            dir: dir.to_path_buf(),
            conf: dir.join("dfc.conf"),
            password: DEMO_PASSWORD.to_string(),
            user: String::new(),
            log,
        }
    }

    /// Waits (at most 60 s) for a printed line that satisfies `want` and
    /// returns it; panics with everything printed so far otherwise.
    pub fn wait_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "dev-cluster did not print {what}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Types `command` into its terminal and returns the next non-blank
    /// line it prints.
    pub fn say(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("write to dev-cluster");
        self.stdin.flush().expect("flush");
        self.wait_line(&format!("an answer to {command:?}"), |l| {
            !l.trim().is_empty()
        })
    }

    /// The address of node `name` in its dfc.conf.
    pub fn addr(&self, name: &str) -> String {
        let conf = std::fs::read_to_string(&self.conf).expect("read dfc.conf");
        let prefix = format!("Server {name} ");
        conf.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in dfc.conf:\n{conf}"))
            .trim()
            .to_string()
    }

    /// Stops node `name` from the terminal; asserts it says so.
    pub fn stop(&mut self, name: &str) {
        let addr = self.addr(name);
        let said = self.say(&format!("stop {name}"));
        assert_eq!(
            said,
            format!("{name} stopped ({addr}); `start {name}` brings it back")
        );
    }

    /// Starts node `name` again from the terminal; asserts it says so.
    pub fn start_node(&mut self, name: &str) {
        let addr = self.addr(name);
        let said = self.say(&format!("start {name}"));
        assert_eq!(said, format!("{name} started again on {addr}"));
    }

    /// Types `quit`, then waits (at most 60 s) for it to exit; asserts exit
    /// status 0.
    pub fn quit(&mut self) {
        let said = self.say("quit");
        assert_eq!(said, "stopping the dev cluster");
        // Its standard output closes as it exits.
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("dev-cluster still runs 60 s after quit")
                }
            }
        }
        let status = self.child.wait().expect("wait for dev-cluster");
        assert!(status.success(), "dev-cluster exited with {status}");
    }

    /// Runs the client on its dfc.conf with [`DevCluster::password`], from
    /// the folder holding the cluster's folder (at most
    /// [`crate::COMMAND_TIMEOUT`]; then it is killed by its pid).
    pub fn client(&self, args: &[&str]) -> Output {
        let cwd = self.dir.parent().expect("the cluster folder's parent");
        self.client_env(cwd, &[], args)
    }

    /// [`DevCluster::client`] from `cwd`.
    pub fn client_in(&self, cwd: &Path, args: &[&str]) -> Output {
        self.client_env(cwd, &[], args)
    }

    /// [`DevCluster::client_in`] with more environment variables.
    pub fn client_env(&self, cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        let child = Command::new(bin("vault-client"))
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .current_dir(cwd)
            .env_remove("VAULT_NEW_PASSWORD")
            .env("VAULT_PASSWORD", &self.password)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vault-client");
        collect(child, &format!("{args:?}"))
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // By its own pid.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let all: Vec<&str> = log.lines().collect();
            let tail = &all[all.len().saturating_sub(40)..];
            eprintln!("--- dev-cluster log, last lines ---\n{}", tail.join("\n"));
        }
    }
}
