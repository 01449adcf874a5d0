//! Test harness for end-to-end tests: real `vault-node` and `vault-client`
//! binaries, four nodes on loopback ports the nodes pick themselves,
//! certificates made by `vault-node certs` at test time.

pub mod dev_cluster;
pub mod gateway;

pub use dev_cluster::DevCluster;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one client command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a workspace binary, built (once per test process, a no-op when
/// it is fresh) so a test never runs a stale binary. `.ci/run` builds
/// everything before `cargo test --workspace`, so there this build only
/// checks; it is the fallback for a developer running one test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-xxxx -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // The build `.ci/run` makes before the tests: a no-op after it.
        // `--bins` too: `vault-client` lives in vault-cli, a package with
        // no tests of its own, whose binary `--tests` alone does not build.
        cmd.args(["build", "--quiet", "--workspace", "--bins", "--tests"]);
        // Without the variables cargo sets for a test process: build
        // scripts (ring's) watch some of them, and seeing them changed
        // they would rebuild half the tree here, inside a test's time
        // limit, and again in the next outer cargo run.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let set_for_tests = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ];
            if set_for_tests.iter().any(|p| key.starts_with(p)) {
                cmd.env_remove(key);
            }
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    dir.join(name)
}

/// Random bytes from the OS.
pub fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).expect("randomness");
    v
}

/// Lower-case hex MD5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `f` on its own thread and fails the test if it takes longer than
/// `limit`; node processes registered in `procs` are killed either way.
pub fn with_timeout<F: FnOnce() + Send + 'static>(limit: Duration, f: F) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => handle.join().expect("test thread"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The test panicked: surface its panic.
            if let Err(p) = handle.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            kill_all_registered();
            panic!("test timed out after {limit:?}");
        }
    }
}

pub(crate) static REGISTRY: Mutex<Vec<Arc<Mutex<Option<Child>>>>> = Mutex::new(Vec::new());

fn kill_all_registered() {
    for c in REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if let Some(mut child) = c.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One running node process.
pub struct Node {
    /// `DFS1`...
    pub name: String,
    /// Its storage root.
    pub root: PathBuf,
    /// Where it listens.
    pub addr: String,
    child: Arc<Mutex<Option<Child>>>,
}

impl Node {
    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn is_running(&self) -> bool {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }
}

/// A client started by [`Cluster::spawn_client`], still running.
pub struct Running {
    /// Its process id.
    pub pid: u32,
    child: Arc<Mutex<Option<Child>>>,
    what: String,
}

impl Running {
    /// Whether it has exited (without collecting its output).
    pub fn exited(&self) -> bool {
        match self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// Kills it with SIGKILL, by its own pid, and reaps it.
    pub fn kill(self) -> Output {
        let status = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success() || self.exited(),
            "kill -KILL {} failed",
            self.pid
        );
        self.wait()
    }

    /// Waits for it to exit (at most [`COMMAND_TIMEOUT`]; then it is
    /// killed and the test fails) and returns its output.
    pub fn wait(self) -> Output {
        let child = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("the client was reaped already");
        collect(child, &self.what)
    }
}

/// Waits for `child` (a client) to exit, at most [`COMMAND_TIMEOUT`]; then
/// it is killed by its pid and the test fails, naming `what` it ran.
pub fn collect(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(out) => out.expect("client output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("vault-client {what} timed out");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A UDP relay in front of one node that limits the bytes passing through
/// it (both ways together) to a rate, dropping what is over it, as a slow
/// link would: QUIC slows down and stays connected. For one client at a
/// time (the last one that sent).
pub struct Relay {
    /// The address to give clients instead of the node's.
    pub addr: String,
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A token bucket: bytes may pass while tokens last.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Bytes that may pass at once before the rate applies.
const RELAY_BURST: f64 = 64.0 * 1024.0;

impl Relay {
    /// A relay to `target` passing at most `rate` bytes a second
    /// ([`Relay::UNLIMITED`] for no limit).
    pub fn start(target: &str, rate: u64) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("relay socket"));
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("relay socket"));
        back.connect(target).expect("relay target");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("socket timeout");
        }
        let addr = front.local_addr().expect("relay address").to_string();
        let rate = Arc::new(AtomicU64::new(rate));
        let stop = Arc::new(AtomicBool::new(false));
        let bucket = Arc::new(Mutex::new(Bucket {
            tokens: RELAY_BURST,
            last: Instant::now(),
        }));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let pass = {
            let (rate, bucket) = (rate.clone(), bucket.clone());
            move |n: usize| -> bool {
                let rate = rate.load(Ordering::Relaxed);
                if rate == Relay::UNLIMITED {
                    return true;
                }
                let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let refill = now.duration_since(b.last).as_secs_f64() * rate as f64;
                b.tokens = (b.tokens + refill).min(RELAY_BURST);
                b.last = now;
                if b.tokens >= n as f64 {
                    b.tokens -= n as f64;
                    true
                } else {
                    false
                }
            }
        };
        let up = {
            let (front, back, stop, client, pass) = (
                front.clone(),
                back.clone(),
                stop.clone(),
                client.clone(),
                pass.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                        if pass(n) {
                            let _ = back.send(&buf[..n]);
                        }
                    }
                }
            })
        };
        let down = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = back.recv(&mut buf) {
                        let to = *client.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(to) = to {
                            if pass(n) {
                                let _ = front.send_to(&buf[..n], to);
                            }
                        }
                    }
                }
            })
        };
        Relay {
            addr,
            rate,
            stop,
            threads: vec![up, down],
        }
    }

    /// No limit.
    pub const UNLIMITED: u64 = u64::MAX;

    /// Changes the rate (bytes a second).
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Four nodes, their certificates, a dfs.conf and a dfc.conf in a temp dir.
pub struct Cluster {
    /// The temp dir holding everything.
    pub dir: tempfile::TempDir,
    /// The nodes, DFS1..DFS4.
    pub nodes: Vec<Node>,
    /// The client config.
    pub dfc: PathBuf,
    /// The node users file.
    pub dfs: PathBuf,
}

/// Demo users: name, password.
pub const USERS: &[(&str, &str)] = &[
    ("Alice", "Crimson33"),
    ("Bob", "Velvet77"),
    ("Eve", "Magellan101"),
];

impl Cluster {
    /// Starts four nodes. `dfs.conf` stores the demo users as MD5 digests;
    /// `dfc.conf` logs in as Alice with her MD5 digest on the Password line.
    pub fn start() -> Cluster {
        let mut text =
            String::from("# demo users, MD5 digests as the classic configs stored them\n");
        for (u, p) in USERS {
            text.push_str(&format!(
                "Username: {u}\nPassword: {}\n\n",
                md5_hex(p.as_bytes())
            ));
        }
        let cluster = Self::start_with_users(&text);
        cluster.write_dfc("Alice", &format!("Password: {}", md5_hex(b"Crimson33")));
        cluster
    }

    /// Starts four nodes with `users` as their users file; dfc.conf is the
    /// caller's to write.
    pub fn start_with_users(users: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = dir.path().join("certs");
        let mut cmd = Command::new(bin("vault-node"));
        cmd.arg("certs").arg("--dir").arg(&certs);
        for i in 1..=4 {
            cmd.args(["--node", &format!("DFS{i}")]);
        }
        cmd.args(["--san", "127.0.0.1"]);
        let out = cmd.output().expect("run vault-node certs");
        assert!(
            out.status.success(),
            "certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let dfs = dir.path().join("dfs.conf");
        std::fs::write(&dfs, users).expect("write dfs.conf");

        let mut cluster = Cluster {
            dfc: dir.path().join("dfc.conf"),
            dfs,
            nodes: Vec::new(),
            dir,
        };
        for i in 1..=4 {
            let node = cluster.spawn_node(&format!("DFS{i}"), "127.0.0.1:0");
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Writes dfc.conf for `user` with the given password line ("" for none).
    pub fn write_dfc(&self, user: &str, password_line: &str) {
        let mut text = String::from("# test cluster\n");
        for n in &self.nodes {
            text.push_str(&format!("Server {} {}\n", n.name, n.addr));
        }
        text.push_str(&format!("Username: {user}\n"));
        if !password_line.is_empty() {
            text.push_str(password_line);
            text.push('\n');
        }
        std::fs::write(&self.dfc, text).expect("write dfc.conf");
    }

    fn spawn_node(&self, name: &str, listen: &str) -> Node {
        let root = self.dir.path().join(name);
        let port = listen.rsplit(':').next().expect("port").to_string();
        let mut cmd = Command::new(bin("vault-node"));
        // Every form of `serve` users have, one per node: DFS1 the classic
        // `dfs.py /DFS1 PORT` form (folder, users file and certificates from
        // the current folder), DFS2 `--listen IP --port PORT`, the others
        // `--listen IP:PORT`. All on loopback.
        match name {
            "DFS1" => {
                cmd.args(["serve", "/DFS1", &port, "--listen", "127.0.0.1"]);
            }
            "DFS2" => {
                cmd.arg("serve").arg("--root").arg(&root).args([
                    "--listen",
                    "127.0.0.1",
                    "--port",
                    &port,
                ]);
            }
            _ => {
                cmd.arg("serve")
                    .arg("--root")
                    .arg(&root)
                    .args(["--listen", listen, "--name", name]);
            }
        }
        if name != "DFS1" {
            cmd.arg("--users")
                .arg(&self.dfs)
                .arg("--certs")
                .arg(self.dir.path().join("certs"));
        }
        // The node's log goes to `logs/NAME.log` in the temp dir (appended
        // to across restarts), printed only when the test fails.
        let log = self.node_log(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let mut child = cmd
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("VAULT_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn vault-node serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let child = Arc::new(Mutex::new(Some(child)));
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.clone());
        let addr = rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("{name} did not report its address"));
        Node {
            name: name.to_string(),
            root,
            addr,
            child,
        }
    }

    /// The log file of node `name` (its standard error): `logs/NAME.log` in
    /// the temp dir. Set `VAULT_TEST_NODE_LOG` (a `RUST_LOG` filter,
    /// default `info`) to change what the nodes write.
    pub fn node_log(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join("logs");
        std::fs::create_dir_all(&dir).expect("create the log folder");
        dir.join(format!("{name}.log"))
    }

    /// The last `lines` lines of every node's log, each under a header.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let path = self.node_log(&n.name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let skip = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "--- {} log, last {} of {} lines ({}) ---\n",
                n.name,
                all.len() - skip,
                all.len(),
                path.display()
            ));
            for l in &all[skip..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Kills node `i` (0-based) as abruptly as a power cut.
    pub fn kill(&self, i: usize) {
        self.nodes[i].kill();
    }

    /// Sends `signal` (a `kill -s` name: `STOP`, `CONT`...) to node `i`'s
    /// process. To kill it, [`Cluster::kill`] (which also reaps it).
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].pid().expect("the node is running");
        signal_pid(pid, signal);
    }

    /// Freezes node `i` (SIGSTOP): its process and sockets stay, nothing
    /// answers. [`Cluster::thaw`] it before the test ends.
    pub fn freeze(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// Lets a frozen node `i` run again (SIGCONT).
    pub fn thaw(&self, i: usize) {
        self.signal(i, "CONT");
    }

    /// Restarts node `i` on the address it had.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.nodes[i].is_running());
        let (name, addr) = (self.nodes[i].name.clone(), self.nodes[i].addr.clone());
        self.nodes[i] = self.spawn_node(&name, &addr);
        assert_eq!(self.nodes[i].addr, addr);
    }

    /// Kills node `i` and starts it again on its address with an empty
    /// root (a replacement disk): nothing of the old root is kept, the key
    /// records under `.vault/records/` included.
    pub fn replace_empty(&mut self, i: usize) {
        self.kill(i);
        let root = self.nodes[i].root.clone();
        if root.exists() {
            std::fs::remove_dir_all(&root).expect("remove the node's root");
        }
        self.restart(i);
    }

    /// Writes a client config at `path` like dfc.conf but with the
    /// addresses given (`None`: the node's own), e.g. to send one node's
    /// traffic through a [`Relay`]. Its state file is `<path>.state`.
    pub fn write_dfc_at(
        &self,
        path: &Path,
        user: &str,
        password_line: &str,
        addrs: &[Option<String>],
    ) {
        let mut text = String::from("# test cluster, some nodes through relays\n");
        for (i, n) in self.nodes.iter().enumerate() {
            let addr = addrs
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| n.addr.clone());
            text.push_str(&format!("Server {} {}\n", n.name, addr));
        }
        text.push_str(&format!("Username: {user}\n"));
        if !password_line.is_empty() {
            text.push_str(password_line);
            text.push('\n');
        }
        std::fs::write(path, text).expect("write client config");
    }

    /// Starts the client with `args` (the cluster's dfc.conf unless `args`
    /// name one with `-c`) and `password` in VAULT_PASSWORD, without
    /// waiting for it: the running process, to wait for or kill by its pid.
    pub fn spawn_client(&self, password: &str, args: &[&str]) -> Running {
        let mut cmd = Command::new(bin("vault-client"));
        if !args.contains(&"-c") {
            cmd.arg("-c").arg(&self.dfc);
        }
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("VAULT_NEW_PASSWORD")
            .env("VAULT_PASSWORD", password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn vault-client");
        let pid = child.id();
        let child = Arc::new(Mutex::new(Some(child)));
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.clone());
        Running {
            pid,
            child,
            what: format!("{args:?}"),
        }
    }

    /// Runs the client with `args`, the cluster's dfc.conf and `password` in
    /// VAULT_PASSWORD, from the temp dir.
    pub fn client(&self, password: &str, args: &[&str]) -> Output {
        self.client_env(&[("VAULT_PASSWORD", password)], args, None)
    }

    /// Runs the client with extra environment and optional standard input.
    pub fn client_env(&self, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin("vault-client"));
        if !args.contains(&"-c") {
            cmd.arg("-c").arg(&self.dfc);
        }
        cmd.args(args).current_dir(self.dir.path());
        cmd.env_remove("VAULT_PASSWORD")
            .env_remove("VAULT_NEW_PASSWORD");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn vault-client");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut s = child.stdin.take().expect("stdin");
            s.write_all(input.as_bytes()).expect("write stdin");
        }
        collect(child, &format!("{args:?}"))
    }

    /// Every regular file under the node roots.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for n in &self.nodes {
            walk(&n.root, &mut out);
        }
        out
    }

    /// The ids of the blobs running node `i` lists for `user` (one of the
    /// demo [`USERS`], logged in with the MD5 proof of their password),
    /// sorted: asked over the network, so the node keeps running.
    pub fn blob_ids(&self, i: usize, user: &str) -> Vec<String> {
        self.live(i, user, false).into_iter().map(|e| e.0).collect()
    }

    /// Every blob running node `i` holds for `user` (a demo user): id and
    /// bytes, in id order, listed and read over the network.
    pub fn blobs(&self, i: usize, user: &str) -> Vec<(String, Vec<u8>)> {
        self.live(i, user, true)
            .into_iter()
            .map(|(id, _, bytes)| (id, bytes.expect("read")))
            .collect()
    }

    /// Id and size of each blob running node `i` lists for `user`.
    pub fn listing(&self, i: usize, user: &str) -> Vec<(String, u64)> {
        self.live(i, user, false)
            .into_iter()
            .map(|(id, len, _)| (id, len))
            .collect()
    }

    /// Logs in to running node `i` as demo user `user`, lists all of the
    /// user's blobs (id and size) and, if `read`, reads each; then closes
    /// the connection (a node caps each user's connections).
    fn live(&self, i: usize, user: &str, read: bool) -> Vec<(String, u64, Option<Vec<u8>>)> {
        let password = USERS
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(user))
            .unwrap_or_else(|| panic!("{user} is not a demo user"))
            .1;
        let ca = std::fs::read_to_string(self.dir.path().join("certs/ca.pem")).expect("ca.pem");
        let addr: SocketAddr = self.nodes[i].addr.parse().expect("node address");
        let name = self.nodes[i].name.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let client = tokio::time::timeout(START_TIMEOUT, async {
                let client = vault_node::testing::RawClient::connect(addr, &ca, &name)
                    .await
                    .expect("connect to the node");
                let login = client
                    .login_md5(user, password)
                    .await
                    .expect("log in to the node");
                assert_eq!(
                    login,
                    wire::Response::LoggedIn,
                    "{name}: {user} not logged in"
                );
                client
            })
            .await
            .expect("the node did not let us in in time");
            let work = async {
                let mut entries = Vec::new();
                let mut after = None;
                loop {
                    let req = wire::Request::List {
                        after: after.clone(),
                        limit: wire::MAX_LIST_PAGE,
                        prefix: None,
                    };
                    let resp = client.call(&req).await;
                    let wire::Response::Listing {
                        entries: page,
                        more,
                    } = resp
                    else {
                        panic!("{name} did not list: {resp:?}");
                    };
                    after = page.last().map(|e| e.id.clone());
                    entries.extend(page.into_iter().map(|e| (e.id.to_string(), e.len, None)));
                    if !more || after.is_none() {
                        break;
                    }
                }
                if read {
                    for (id, _, bytes) in &mut entries {
                        let (resp, got) = client.get(id).await;
                        assert!(
                            matches!(resp, wire::Response::Blob { .. }),
                            "{id}: {resp:?}"
                        );
                        *bytes = Some(got);
                    }
                }
                entries
            };
            let entries = tokio::time::timeout(COMMAND_TIMEOUT, work)
                .await
                .expect("the node did not answer in time");
            client.conn.close(0u32.into(), b"done");
            // The close reaches the node (bounded: it may be gone).
            let _ = tokio::time::timeout(Duration::from_secs(1), client.endpoint.wait_idle()).await;
            entries
        })
    }

    /// Runs `f` on node `i`'s root with the node stopped: kills it if it
    /// runs, calls `f` (which reads or edits the disk with
    /// [`vault_node::store::offline`]), and starts it again on its address
    /// if it ran. A running node's store is its own.
    pub fn with_disk<R>(&mut self, i: usize, f: impl FnOnce(&Path) -> R) -> R {
        let running = self.nodes[i].is_running();
        self.kill(i);
        let out = f(&self.nodes[i].root);
        if running {
            self.restart(i);
        }
        out
    }
}

/// Sends `signal` (a `kill -s` name) to process `pid`.
pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.kill();
        }
        // Quiet when the test passes; the nodes' last words when it fails.
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(LOG_TAIL_LINES));
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a command succeeded, showing its output otherwise.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Every regular file under `dir`, by `/`-separated path relative to it,
/// with its bytes: what a test compares a tree fetched back against.
pub fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read a folder").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under the root");
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read(&p).expect("read a file"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}
