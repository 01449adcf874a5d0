//! `vault-node dev-cluster`: N nodes in one process (four by default,
//! `--nodes N` from [`MIN_NODES`] to [`MAX_NODES`]), for trying Vault.
//!
//! In `DIR` (default `vault-dev`): `certs/` (an existing CA is re-used;
//! its key in `ca-private/ca.key`, outside `certs/`; `certs/cluster.secret`
//! shared by the nodes), `dfs.conf` with the demo users in the classic MD5 form, `dfc.conf` for
//! the client (the client finds `certs/ca.pem` next to it), and the node
//! roots `DFS1`..`DFSN`. Existing `dfs.conf`/`dfc.conf` are kept; a new
//! `dfc.conf` names the ports the nodes got (with base port 0, ports the
//! system picks) and, for other than four nodes, says in a comment which
//! redundancy the client uses by default ([`dfc_conf`]).
//!
//! A `DIR` made for another number of nodes is refused ([`existing_nodes`]):
//! running fewer nodes would leave the files stored on the others
//! unreachable, running more would not match the kept `dfc.conf`. Nothing
//! of the user's is ever deleted; the error says how to run it with its
//! own number of nodes or start over in another folder.
//!
//! While it runs, lines typed into its terminal control the nodes
//! ([`parse_command`]): `stop DFS3` shuts one node down for real (its
//! connections and QUIC endpoint closed, its UDP port released), `start
//! DFS3` binds it again on the same port with the same root and
//! certificates, `status`, `help`, `quit`. The end of standard input
//! leaves the cluster running until Ctrl-C or SIGTERM.

use std::future::Future;
use std::io::{BufRead, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use md5::{Digest, Md5};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::records::RecordStore;
use crate::server::{NodeConfig, Server};
use crate::users::UserDb;

/// Demo users (name, password) written to a new `dfs.conf`.
pub const DEMO_USERS: [(&str, &str); 3] = [
    ("Alice", "Crimson33"),
    ("Bob", "Velvet77"),
    ("Eve", "Magellan101"),
];

/// Number of nodes without `--nodes`.
pub const DEFAULT_NODES: usize = 4;

/// Fewest nodes of a dev cluster (Reed-Solomon 2+1).
pub const MIN_NODES: usize = 3;

/// Most nodes of a dev cluster.
pub const MAX_NODES: usize = 32;

/// Checks a number of nodes for `--nodes`: [`MIN_NODES`]..=[`MAX_NODES`].
pub fn check_node_count(nodes: usize) -> Result<usize, String> {
    if (MIN_NODES..=MAX_NODES).contains(&nodes) {
        Ok(nodes)
    } else {
        Err(format!(
            "a dev cluster has {MIN_NODES} to {MAX_NODES} nodes, not {nodes}"
        ))
    }
}

/// The names of `nodes` nodes: `DFS1`..`DFSn`.
pub fn node_names(nodes: usize) -> Vec<String> {
    (1..=nodes).map(|i| format!("DFS{i}")).collect()
}

/// "four", "six"...: how the banner counts nodes (digits beyond twelve).
fn count_words(n: usize) -> String {
    const WORDS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    WORDS
        .get(n)
        .map_or_else(|| n.to_string(), |w| (*w).to_string())
}

/// The Reed-Solomon shape the client uses by default with `servers`
/// servers other than four (four: the classic layout): `(K, M)`, 2+1 with
/// three, else (N-2)+2.
pub fn default_rs(servers: usize) -> (usize, usize) {
    if servers <= 3 {
        (2, 1)
    } else {
        (servers - 2, 2)
    }
}

/// Default folder of the dev cluster.
pub const DEFAULT_DIR: &str = "vault-dev";

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn dfs_conf() -> String {
    let mut s = String::from(
        "# Vault dev-cluster users, classic dfs.conf form (MD5 digests: legacy).\n\
         # `vault-client rotate` upgrades an account; `vault-node user add` adds one.\n",
    );
    for (name, password) in DEMO_USERS {
        s.push_str(&format!(
            "Username: {name}\nPassword: {}\n",
            md5_hex(password)
        ));
    }
    s
}

/// The `dfc.conf` of a new dev cluster whose nodes listen on `addrs`
/// (`DFS1` on the first...). With other than four servers, a comment
/// before them says which redundancy the client uses by default; with
/// four, the file is the classic one, unchanged.
pub fn dfc_conf(addrs: &[SocketAddr]) -> String {
    let mut s = String::from("# Vault dev-cluster client configuration.\n");
    if addrs.len() != DEFAULT_NODES {
        let (k, m) = default_rs(addrs.len());
        let with_three = if addrs.len() == 3 {
            ""
        } else {
            " (rs 2+1 with three)"
        };
        s.push_str(&format!(
            "# {} servers: the client stores files as Reed-Solomon rs {k}+{m} by default{with_three}; \
             a Redundancy line changes it\n",
            addrs.len()
        ));
    }
    for (name, addr) in node_names(addrs.len()).iter().zip(addrs) {
        s.push_str(&format!("Server {name} {addr}\n"));
    }
    let (name, password) = DEMO_USERS[0];
    s.push_str(&format!(
        "Username: {name}\nPassword: {}\n",
        md5_hex(password)
    ));
    s
}

fn write_if_missing(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.exists() {
        tracing::info!(path = %path.display(), "keeping the existing file");
        return Ok(());
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), false)
        .with_context(|| format!("failed to write {}", path.display()))
}

/// One node of the dev cluster, bound and ready to serve: its
/// configuration (listening on the port it got, so a restart re-uses it)
/// and its server.
#[derive(Debug)]
pub struct Prepared {
    /// The node's configuration, kept to bind it again after a `stop`.
    pub config: NodeConfig,
    /// The bound node.
    pub server: Server,
}

/// The ports of `nodes` nodes from `base_port`: `base_port`..`base_port +
/// nodes - 1`, or all 0 (each node on a free port the system picks) with
/// `base_port` 0.
pub fn ports(base_port: u16, nodes: usize) -> anyhow::Result<Vec<u16>> {
    let nodes = check_node_count(nodes).map_err(anyhow::Error::msg)?;
    if base_port == 0 {
        return Ok(vec![0; nodes]);
    }
    let last = u16::try_from(nodes - 1)
        .ok()
        .and_then(|n| base_port.checked_add(n));
    if last.is_none() {
        anyhow::bail!(
            "base port {base_port} leaves no room for {} nodes",
            count_words(nodes)
        );
    }
    Ok((0..nodes).map(|i| base_port + i as u16).collect())
}

/// How many nodes the dev cluster in `dir` was made with: the highest `n`
/// for which the node root `DFSn` or its certificate `certs/DFSn.pem`
/// exists (0 for a new folder). A wiped node root with its certificate
/// kept still counts.
pub fn existing_nodes(dir: &Path) -> usize {
    // The highest `DFSn<suffix>` in `folder` (folders only, or files only).
    let highest = |folder: &Path, suffix: &str, folders: bool| -> usize {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return 0;
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() == folders))
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                let n: usize = name
                    .strip_prefix("DFS")?
                    .strip_suffix(suffix)?
                    .parse()
                    .ok()?;
                // Only the names the dev cluster writes: `DFS6`, not `DFS06`.
                (n > 0 && name == format!("DFS{n}{suffix}")).then_some(n)
            })
            .max()
            .unwrap_or(0)
    };
    highest(dir, "", true).max(highest(&dir.join("certs"), ".pem", false))
}

/// Refuses a `dir` made for another number of nodes than `nodes`, naming
/// it, how many it holds and how to go on; deletes nothing.
fn check_existing(dir: &Path, nodes: usize) -> anyhow::Result<()> {
    let held = existing_nodes(dir);
    if held == 0 || held == nodes {
        return Ok(());
    }
    let shown = dir.display();
    anyhow::bail!(
        "{shown} holds a dev cluster of {held} nodes (DFS1..DFS{held}), not {nodes}: \
         run it as it is with `vault-node dev-cluster --dir {shown} --nodes {held}`, \
         or start over with {nodes} nodes in another folder (`--dir vault-dev{nodes}`); \
         nothing was changed (its DFSn folders hold the stored files: delete {shown} \
         yourself only if nothing in it matters)"
    );
}

/// Creates (or re-uses) the dev cluster's files in `dir` and binds
/// `nodes` nodes (`DFS1`..`DFSn`) on 127.0.0.1, ports
/// `base_port`..`base_port + nodes - 1`; with `base_port` 0, each on a
/// free port the system picks. A new `dfc.conf` names the ports the nodes
/// got. Refuses a number of nodes outside [`MIN_NODES`]..=[`MAX_NODES`],
/// and a `dir` made for another number of nodes ([`existing_nodes`]).
pub fn prepare(dir: &Path, base_port: u16, nodes: usize) -> anyhow::Result<Vec<Prepared>> {
    let ports = ports(base_port, nodes)?;
    prepare_with(dir, &ports)
}

/// [`prepare`] with node `i` (0-based) bound to port `ports[i]`.
fn prepare_with(dir: &Path, ports: &[u16]) -> anyhow::Result<Vec<Prepared>> {
    check_node_count(ports.len()).map_err(anyhow::Error::msg)?;
    check_existing(dir, ports.len())?;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let certs = dir.join("certs");
    let names = node_names(ports.len());
    let options = crate::certs::CertOptions::default();
    let written = crate::certs::write_dir(&certs, &names, &crate::certs::default_sans(), &options)?;
    if let Some(old) = written.moved_ca_key_from {
        tracing::warn!(from = %old.display(), to = %written.ca_key.display(), "moved the CA key out of the certificates folder");
    }
    let secret_path = certs.join(crate::secret::CLUSTER_SECRET_FILE);
    let cluster_secret = crate::secret::ClusterSecret::read(&secret_path)
        .with_context(|| format!("failed to read {}", secret_path.display()))?;
    let users_path = dir.join("dfs.conf");
    write_if_missing(&users_path, &dfs_conf())?;
    let users = UserDb::load(&users_path)?;
    let mut nodes = Vec::new();
    for (name, &port) in names.iter().zip(ports) {
        let read = |ext: &str| {
            let p = certs.join(format!("{name}.{ext}"));
            std::fs::read_to_string(&p).with_context(|| format!("failed to read {}", p.display()))
        };
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let mut config = NodeConfig::new(
            name.as_str(),
            dir.join(name),
            listen,
            users.clone(),
            read("pem")?,
            read("key")?,
        );
        config.cluster_secret = cluster_secret.clone();
        // A `stop` should look like a node dying, not wait out long uploads.
        config.shutdown_grace = STOP_GRACE;
        let server =
            Server::bind(config.clone()).with_context(|| format!("failed to start {name}"))?;
        // A restart binds the port the node got (base port 0: the system's pick).
        config.listen = server.local_addr();
        nodes.push(Prepared { config, server });
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.config.listen).collect();
    let dfc = dir.join("dfc.conf");
    write_if_missing(&dfc, &dfc_conf(&addrs))?;
    if let Ok(text) = std::fs::read_to_string(&dfc) {
        let missing: Vec<String> = names
            .iter()
            .zip(&addrs)
            .filter(|(_, a)| !text.contains(&a.to_string()))
            .map(|(n, a)| format!("{n} {a}"))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                path = %dfc.display(),
                nodes = %missing.join(", "),
                "the kept dfc.conf does not name these node addresses; fix its Server lines or remove it"
            );
        }
    }
    Ok(nodes)
}

/// The users (lower-case names) whose key record on some node of the dev
/// cluster of `nodes` nodes in `dir` holds a login key: they ran
/// `vault-client rotate`, so their demo password no longer works and their
/// legacy `dfs.conf` entry no longer logs anyone in.
pub async fn rotated_users(dir: &Path, nodes: usize) -> Vec<String> {
    let mut rotated = Vec::new();
    let names = node_names(nodes);
    for (user, _) in DEMO_USERS {
        let user = user.to_ascii_lowercase();
        for name in &names {
            let store = RecordStore::new(dir.join(name).join(".vault").join("records"));
            if let Ok(Some(record)) = store.get(&user).await {
                if record.login_key.is_some() {
                    rotated.push(user);
                    break;
                }
            }
        }
    }
    rotated
}

/// How to run the client: the `vault-client` built beside this binary
/// (`cargo build --release` builds both), else `cargo run`.
fn client_command() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vault-client")))
        .filter(|c| c.is_file())
        .map_or_else(
            || "cargo run --release -p vault-client --".to_string(),
            |c| c.display().to_string(),
        )
}

/// What to try, printed when the cluster of `nodes` nodes is up; `rotated`
/// are the users [`rotated_users`] found, whose demo password is no longer
/// theirs.
pub fn instructions(dir: &Path, nodes: usize, rotated: &[String]) -> String {
    let conf = dir.join("dfc.conf");
    let conf = conf.display();
    let is_rotated = |u: &str| rotated.iter().any(|r| r.eq_ignore_ascii_case(u));
    let (user, password) = DEMO_USERS[0];
    let (as_user, password) = if is_rotated(user) {
        (
            format!("{user} (she ran `rotate`: give her new password)"),
            "<new password>",
        )
    } else {
        (format!("{user} (password {password})"), password)
    };
    let others: Vec<String> = DEMO_USERS[1..]
        .iter()
        .map(|(u, p)| {
            if is_rotated(u) {
                format!("{u} (rotated: own password)")
            } else {
                format!("{u}/{p}")
            }
        })
        .collect();
    let client = client_command();
    let redundancy = if nodes == DEFAULT_NODES {
        String::new()
    } else {
        let (k, m) = default_rs(nodes);
        format!(
            "Files are stored as Reed-Solomon rs {k}+{m} by default: they stay readable \
             with any {} of the {} nodes down (a Redundancy line in {conf} changes it).\n\n",
            count_words(m),
            count_words(nodes)
        )
    };
    format!(
        "Vault dev cluster: {} nodes running; Ctrl-C stops them.\n\
         \n\
         {redundancy}\
         Try, as {as_user}:\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} put README.md\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} list\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} get README.md -o /tmp/README.copy\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} delete README.md\n\
         \x20 {client} -c {conf}            (interactive prompt)\n\
         \x20 VAULT_PASSWORD={password} {client} -c {conf} serve   (S3 for aws/rclone on :9000, a web page on :9001)\n\
         \n\
         Other demo users: {} (copy {conf} and change Username:/Password:).\n\
         `vault-client rotate` upgrades an account.\n\
         \n\
         {CONTROL_HINT}\n",
        count_words(nodes),
        others.join(", ")
    )
}

/// How the banner explains the terminal control.
pub const CONTROL_HINT: &str =
    "Type `stop DFS3` to stop a node and watch failover, `start DFS3` to \
     bring it back, `status`, `help`.";

/// The answer to a line that is no command, for a cluster of `nodes` nodes.
pub fn commands_hint(nodes: usize) -> String {
    format!(
        "commands: stop DFSn, start DFSn, status, help, quit (DFSn: DFS1..DFS{nodes}, or 1..{nodes})"
    )
}

/// Time in-flight requests get when a dev node stops: a `stop` should look
/// like a node going away, not wait out a long upload.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long `start` keeps trying while the stopped node's port is still
/// being released.
const REBIND_FOR: Duration = Duration::from_secs(5);

/// The longest command line read from the terminal; the rest of a longer
/// line is skipped.
const MAX_COMMAND_LINE: u64 = 256;

/// A command typed into the dev cluster's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop node `i` (0-based): its endpoint closed, its port released.
    Stop(usize),
    /// Start node `i` again on its port.
    Start(usize),
    /// Each node: running or stopped, and its address.
    Status,
    /// The commands.
    Help,
    /// Stop the cluster (as Ctrl-C).
    Quit,
}

/// Parses one line typed into the terminal of a dev cluster of `nodes`
/// nodes: `Ok(None)` for a blank line, `Err` with the one-line answer for
/// anything else unknown (a node outside `DFS1`..`DFSn` included).
pub fn parse_command(line: &str, nodes: usize) -> Result<Option<Control>, String> {
    let hint = || commands_hint(nodes);
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else {
        return Ok(None);
    };
    let arg = words.next();
    if words.next().is_some() {
        return Err(format!("too many words; {}", hint()));
    }
    let verb = verb.to_ascii_lowercase();
    let node = |verb: &str| -> Result<usize, String> {
        let Some(arg) = arg else {
            return Err(format!("{verb} which node? e.g. `{verb} DFS3`"));
        };
        node_index(arg, nodes).ok_or_else(|| {
            let shown: String = arg.chars().take(16).collect();
            let names = if nodes <= 8 {
                node_names(nodes).join(", ")
            } else {
                format!("DFS1..DFS{nodes}")
            };
            format!("no node {shown:?}; the nodes are {names} (or 1..{nodes})")
        })
    };
    let simple = |c: Control| {
        if arg.is_some() {
            Err(format!("`{verb}` takes no argument; {}", hint()))
        } else {
            Ok(Some(c))
        }
    };
    match verb.as_str() {
        "stop" => Ok(Some(Control::Stop(node("stop")?))),
        "start" => Ok(Some(Control::Start(node("start")?))),
        "status" => simple(Control::Status),
        "help" | "?" => simple(Control::Help),
        "quit" | "exit" => simple(Control::Quit),
        _ => {
            let shown: String = verb.chars().take(16).collect();
            Err(format!("unknown command {shown:?}; {}", hint()))
        }
    }
}

/// `DFS3`, `dfs3` or `3`: the node's index, among `nodes` nodes.
fn node_index(arg: &str, nodes: usize) -> Option<usize> {
    let n = match arg.get(..3) {
        // A name exactly as written: `DFS3`, not `DFS03`.
        Some(prefix) if prefix.eq_ignore_ascii_case("DFS") => {
            let digits = &arg[3..];
            digits
                .parse::<usize>()
                .ok()
                .filter(|n| digits == n.to_string())?
        }
        _ => arg.parse::<usize>().ok()?,
    };
    (1..=nodes).contains(&n).then(|| n - 1)
}

/// Reads command lines from `input` until its end, sending each (at most
/// [`MAX_COMMAND_LINE`] bytes; a longer line is cut) to `tx`. Stops early
/// when nobody listens any more.
fn read_commands(mut input: impl BufRead, tx: &mpsc::UnboundedSender<String>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut input)
            .take(MAX_COMMAND_LINE)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') && buf.len() as u64 == MAX_COMMAND_LINE {
            // Skip the rest of an over-long line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                match (&mut input)
                    .take(MAX_COMMAND_LINE)
                    .read_until(b'\n', &mut rest)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) if rest.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
        }
        if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
            return;
        }
    }
}

/// Lines typed into this process's terminal, read on a thread of their own
/// (a pending read never holds up the exit). At the end of standard input
/// the channel closes; the cluster keeps running.
fn stdin_commands() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name("dev-cluster-stdin".into())
        .spawn(move || read_commands(std::io::stdin().lock(), &tx));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot read commands from the terminal");
    }
    rx
}

/// A running node: how to stop it and its task.
#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// One node of a [`DevCluster`].
#[derive(Debug)]
struct DevNode {
    config: NodeConfig,
    running: Option<Running>,
}

fn spawn_node(server: Server) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        // A dropped sender stops the node too.
        let _ = rx.await;
    }));
    Running { stop, task }
}

/// The nodes of a running dev cluster, each of which can be stopped and
/// started again on its port.
#[derive(Debug)]
pub struct DevCluster {
    nodes: Vec<DevNode>,
}

impl DevCluster {
    /// Starts serving the [`prepare`]d nodes (inside a tokio runtime).
    pub fn start(prepared: Vec<Prepared>) -> DevCluster {
        let nodes = prepared
            .into_iter()
            .map(|p| DevNode {
                config: p.config,
                running: Some(spawn_node(p.server)),
            })
            .collect();
        DevCluster { nodes }
    }

    /// Node `i`'s name and address.
    fn name_addr(&self, i: usize) -> (&str, SocketAddr) {
        let c = &self.nodes[i].config;
        (c.name.as_str(), c.listen)
    }

    /// Whether node `i` serves (a node whose task ended by itself is not).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i]
            .running
            .as_ref()
            .is_some_and(|r| !r.task.is_finished())
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].config.listen
    }

    /// Stops node `i` for real: its connections closed, its endpoint
    /// closed and its UDP port released. Answers with one line.
    pub async fn stop(&mut self, i: usize) -> String {
        let (name, addr) = self.name_addr(i);
        let (name, addr) = (name.to_string(), addr);
        let Some(running) = self.nodes[i].running.take() else {
            return format!("{name} is already stopped; `start {name}` brings it back");
        };
        let result = stop_node(running).await;
        match result {
            Ok(()) => format!("{name} stopped ({addr}); `start {name}` brings it back"),
            Err(e) => format!(
                "{name} stopped ({addr}) with an error: {e:#}; `start {name}` brings it back"
            ),
        }
    }

    /// Starts node `i` again: the same root, certificates and port.
    /// Answers with one line.
    pub async fn start_node(&mut self, i: usize) -> String {
        let (name, addr) = self.name_addr(i);
        let (name, addr) = (name.to_string(), addr);
        if self.is_running(i) {
            return format!("{name} is already running on {addr}");
        }
        if let Some(ended) = self.nodes[i].running.take() {
            // Its task ended by itself: collect it before binding again.
            let _ = stop_node(ended).await;
        }
        match bind_again(&self.nodes[i].config).await {
            Ok(server) => {
                self.nodes[i].running = Some(spawn_node(server));
                format!("{name} started again on {addr}")
            }
            Err(e) => format!("{name} could not start: {e:#}"),
        }
    }

    /// Each node, running or stopped, with its address, on one line.
    pub fn status(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let (name, addr) = self.name_addr(i);
                let state = if self.is_running(i) {
                    "running"
                } else {
                    "stopped"
                };
                format!("{name} {state} ({addr})")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Carries out `command` (not [`Control::Quit`], which is the caller's)
    /// and answers with one line.
    pub async fn apply(&mut self, command: Control) -> String {
        match command {
            Control::Stop(i) => self.stop(i).await,
            Control::Start(i) => self.start_node(i).await,
            Control::Status => self.status(),
            Control::Help => "stop DFSn (or stop n): stop a node, its port closed as if it died; \
                 start DFSn: start it again on its port; status: each node's state and address; \
                 quit or Ctrl-C: stop the cluster"
                .to_string(),
            Control::Quit => "stopping the dev cluster".to_string(),
        }
    }

    /// Stops every running node; the first error, if any.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let running: Vec<Running> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.running.take())
            .collect();
        let mut tasks = Vec::new();
        for r in running {
            let _ = r.stop.send(());
            tasks.push(r.task);
        }
        let mut result = Ok(());
        for task in tasks {
            let done = match task.await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("node task failed: {e}")),
            };
            if let (Err(e), true) = (done, result.is_ok()) {
                result = Err(e);
            }
        }
        result
    }
}

async fn stop_node(running: Running) -> anyhow::Result<()> {
    let _ = running.stop.send(());
    match running.task.await {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("node task failed: {e}")),
    }
}

/// Binds a stopped node again, retrying for a moment while its port is
/// still being released.
async fn bind_again(config: &NodeConfig) -> anyhow::Result<Server> {
    let deadline = tokio::time::Instant::now() + REBIND_FOR;
    loop {
        match Server::bind(config.clone()) {
            Ok(server) => return Ok(server),
            Err(e) if addr_in_use(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn addr_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// Runs the dev cluster of `nodes` nodes (see [`prepare`]), taking
/// commands typed into its terminal (see [`parse_command`]), until
/// `shutdown` completes or `quit` is typed. The end of standard input (run
/// in the background, under CI) leaves it running until `shutdown`.
pub async fn run(
    dir: &Path,
    base_port: u16,
    nodes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let prepared = prepare(dir, base_port, nodes)?;
    let rotated = rotated_users(dir, nodes).await;
    let users_path = dir.join("dfs.conf");
    if let Ok(users) = UserDb::load(&users_path) {
        users.warn_legacy_unless(&users_path.display().to_string(), |u| {
            rotated.iter().any(|r| r.as_str() == u)
        });
    }
    let mut cluster = DevCluster::start(prepared);
    println!("{}", instructions(dir, nodes, &rotated));
    println!("{}", cluster.status());
    let mut commands = stdin_commands();
    let mut reading = true;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            line = commands.recv(), if reading => {
                let Some(line) = line else {
                    // End of input: only a signal stops the cluster now.
                    reading = false;
                    continue;
                };
                match parse_command(&line, nodes) {
                    Ok(None) => {}
                    Ok(Some(Control::Quit)) => {
                        println!("{}", cluster.apply(Control::Quit).await);
                        break;
                    }
                    Ok(Some(command)) => println!("{}", cluster.apply(command).await),
                    Err(answer) => println!("{answer}"),
                }
            }
        }
    }
    cluster.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_files_parse() {
        let db = UserDb::parse(&dfs_conf(), "dfs.conf").unwrap();
        assert_eq!(db.len(), 3);
        let eve = db.get("eve").unwrap().credential.md5_digest().unwrap();
        assert_eq!(hex::encode(eve), md5_hex("Magellan101"));
        let addrs: Vec<SocketAddr> = (10001..=10004)
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .collect();
        let dfc = dfc_conf(&addrs);
        assert!(dfc.contains("Server DFS4 127.0.0.1:10004\n"));
        assert!(dfc.contains(&format!("Password: {}", md5_hex("Crimson33"))));
    }

    #[tokio::test]
    async fn hints_stay_true_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        assert!(rotated_users(dir.path(), 4).await.is_empty());
        let fresh = instructions(dir.path(), 4, &[]);
        assert!(
            fresh.contains("Try, as Alice (password Crimson33)"),
            "{fresh}"
        );
        // The banner says how to stop and start a node, not to run them by hand.
        assert!(fresh.contains(CONTROL_HINT), "{fresh}");
        assert!(!fresh.contains("separate"), "{fresh}");
        // Alice rotated: her record on a node holds a login key.
        let records = dir.path().join("DFS2/.vault/records");
        std::fs::create_dir_all(&records).unwrap();
        let store = RecordStore::new(records);
        let record = wire::UserRecord {
            format: wire::STORAGE_FORMAT,
            generation: 1,
            kdf: wire::KdfParams {
                salt: vec![1; 16],
                m_kib: 8192,
                t: 1,
                p: 1,
            },
            login_key: Some(vec![9; 32]),
            wrapped_key: vec![5; 72],
        };
        store.put("alice", 0, &record, true).await.unwrap();
        let rotated = rotated_users(dir.path(), 4).await;
        assert_eq!(rotated, ["alice"]);
        let text = instructions(dir.path(), 4, &rotated);
        assert!(!text.contains("Crimson33"), "{text}");
        assert!(text.contains("new password"), "{text}");
        assert!(text.contains("Bob/Velvet77"), "{text}");
    }

    #[tokio::test]
    async fn prepares_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let servers = prepare_with(dir.path(), &[0; 4]).unwrap();
        assert_eq!(servers.len(), 4);
        assert!(dir.path().join("certs/DFS4.key").exists());
        assert!(dir.path().join("certs/cluster.secret").exists());
        assert!(dir.path().join("ca-private/ca.key").exists());
        assert!(!dir.path().join("certs/ca.key").exists());
        assert!(dir.path().join("DFS1/.vault/node.secret").exists());
        let kept = "# mine\n";
        std::fs::write(dir.path().join("dfc.conf"), kept).unwrap();
        drop(servers);
        let again = prepare_with(dir.path(), &[0; 4]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("dfc.conf")).unwrap(),
            kept
        );
        drop(again);
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse_command("stop DFS3", 4), Ok(Some(Control::Stop(2))));
        assert_eq!(
            parse_command("  STOP dfs1 \n", 4),
            Ok(Some(Control::Stop(0)))
        );
        assert_eq!(parse_command("stop 4", 4), Ok(Some(Control::Stop(3))));
        assert_eq!(
            parse_command("Start Dfs3\r\n", 4),
            Ok(Some(Control::Start(2)))
        );
        assert_eq!(parse_command("start 2", 4), Ok(Some(Control::Start(1))));
        assert_eq!(parse_command("status", 4), Ok(Some(Control::Status)));
        assert_eq!(parse_command("HELP", 4), Ok(Some(Control::Help)));
        assert_eq!(parse_command("quit", 4), Ok(Some(Control::Quit)));
        assert_eq!(parse_command("exit", 4), Ok(Some(Control::Quit)));
        assert_eq!(parse_command("", 4), Ok(None));
        assert_eq!(parse_command("  \n", 4), Ok(None));
        for bad in ["stop DFS5", "stop 0", "stop 5", "start DFS", "stop -1"] {
            let e = parse_command(bad, 4).unwrap_err();
            assert!(e.contains("DFS1, DFS2, DFS3, DFS4"), "{bad}: {e}");
        }
        let e = parse_command("stop", 4).unwrap_err();
        assert!(e.contains("`stop DFS3`"), "{e}");
        for bad in ["frobnicate", "stop DFS3 now", "status DFS3", "kill DFS3"] {
            let e = parse_command(bad, 4).unwrap_err();
            assert!(e.contains(&commands_hint(4)), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
        // A long word is not echoed whole.
        let long = "x".repeat(200);
        assert!(parse_command(&long, 4).unwrap_err().len() < 150);
    }

    #[test]
    fn reads_bounded_lines_until_the_end() {
        let long = "y".repeat(3 * MAX_COMMAND_LINE as usize);
        let input = format!("stop DFS3\n{long}\nstatus\nquit");
        let (tx, mut rx) = mpsc::unbounded_channel();
        read_commands(input.as_bytes(), &tx);
        drop(tx);
        let mut lines = Vec::new();
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "stop DFS3\n");
        assert_eq!(lines[1].len(), MAX_COMMAND_LINE as usize);
        assert!(parse_command(&lines[1], 4).is_err());
        assert_eq!(lines[2], "status\n");
        assert_eq!(lines[3], "quit");
    }

    #[tokio::test]
    async fn a_stopped_node_releases_its_port_and_starts_again_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare(dir.path(), 0, 4).unwrap();
        let addrs: Vec<SocketAddr> = prepared.iter().map(|p| p.config.listen).collect();
        assert!(addrs.iter().all(|a| a.port() != 0), "{addrs:?}");
        // dfc.conf names the ports the nodes got.
        let dfc = std::fs::read_to_string(dir.path().join("dfc.conf")).unwrap();
        for (name, addr) in node_names(4).iter().zip(&addrs) {
            assert!(dfc.contains(&format!("Server {name} {addr}\n")), "{dfc}");
        }
        let mut cluster = DevCluster::start(prepared);
        let third = addrs[2];
        assert!(
            std::net::UdpSocket::bind(third).is_err(),
            "DFS3's port is free while it runs"
        );

        let said = cluster.apply(Control::Stop(2)).await;
        assert_eq!(
            said,
            format!("DFS3 stopped ({third}); `start DFS3` brings it back")
        );
        assert!(!cluster.is_running(2));
        assert!(cluster
            .status()
            .contains(&format!("DFS3 stopped ({third})")));
        assert!(cluster
            .status()
            .contains(&format!("DFS1 running ({})", addrs[0])));
        let again = cluster.apply(Control::Stop(2)).await;
        assert!(again.contains("already stopped"), "{again}");
        // The port is released (bounded poll: the endpoint's driver lets go
        // of the socket as it winds down).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let probe = loop {
            match std::net::UdpSocket::bind(third) {
                Ok(s) => break s,
                Err(_) if std::time::Instant::now() < deadline => tokio::task::yield_now().await,
                Err(e) => panic!("DFS3's port stays taken after stop: {e}"),
            }
        };
        drop(probe);

        let said = cluster.apply(Control::Start(2)).await;
        assert_eq!(said, format!("DFS3 started again on {third}"));
        assert!(cluster.is_running(2));
        assert_eq!(cluster.addr(2), third);
        assert!(
            std::net::UdpSocket::bind(third).is_err(),
            "DFS3 is not on its port again"
        );
        let again = cluster.apply(Control::Start(2)).await;
        assert_eq!(again, format!("DFS3 is already running on {third}"));
        tokio::time::timeout(Duration::from_secs(30), cluster.shutdown())
            .await
            .expect("the cluster stops")
            .unwrap();
    }

    fn loopback(ports: impl IntoIterator<Item = u16>) -> Vec<SocketAddr> {
        ports
            .into_iter()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .collect()
    }

    #[test]
    fn four_nodes_write_and_say_what_they_always_did() {
        let dfc = dfc_conf(&loopback(10001..=10004));
        let expected = format!(
            "# Vault dev-cluster client configuration.\n\
             Server DFS1 127.0.0.1:10001\n\
             Server DFS2 127.0.0.1:10002\n\
             Server DFS3 127.0.0.1:10003\n\
             Server DFS4 127.0.0.1:10004\n\
             Username: Alice\n\
             Password: {}\n",
            md5_hex("Crimson33")
        );
        assert_eq!(dfc, expected);
        assert_eq!(
            commands_hint(4),
            "commands: stop DFSn, start DFSn, status, help, quit (DFSn: DFS1..DFS4, or 1..4)"
        );
        let banner = instructions(Path::new("vault-dev"), DEFAULT_NODES, &[]);
        assert!(
            banner.starts_with(
                "Vault dev cluster: four nodes running; Ctrl-C stops them.\n\nTry, as Alice"
            ),
            "{banner}"
        );
        assert!(!banner.contains("Reed-Solomon"), "{banner}");
        assert_eq!(
            ports(10001, DEFAULT_NODES).unwrap(),
            [10001, 10002, 10003, 10004]
        );
        assert_eq!(
            ports(65533, 4).unwrap_err().to_string(),
            "base port 65533 leaves no room for four nodes"
        );
    }

    #[test]
    fn names_and_ports_for_any_number_of_nodes() {
        assert_eq!(
            node_names(6),
            ["DFS1", "DFS2", "DFS3", "DFS4", "DFS5", "DFS6"]
        );
        assert_eq!(node_names(32).last().unwrap(), "DFS32");
        assert_eq!(
            ports(10001, 6).unwrap(),
            [10001, 10002, 10003, 10004, 10005, 10006]
        );
        assert_eq!(ports(0, 6).unwrap(), [0; 6]);
        assert_eq!(ports(0, 3).unwrap(), [0; 3]);
        assert_eq!(ports(65530, 6).unwrap().last(), Some(&65535));
        let e = ports(65530, 7).unwrap_err().to_string();
        assert!(e.contains("no room for seven nodes"), "{e}");
        assert!(ports(65520, 32).is_err());
        assert_eq!(default_rs(3), (2, 1));
        assert_eq!(default_rs(6), (4, 2));
        assert_eq!(default_rs(12), (10, 2));
    }

    #[test]
    fn refuses_two_and_thirty_three_nodes() {
        for bad in [0, 1, 2, 33, 1000] {
            let e = check_node_count(bad).unwrap_err();
            assert_eq!(e, format!("a dev cluster has 3 to 32 nodes, not {bad}"));
            assert!(ports(0, bad).is_err());
            assert!(ports(10001, bad).is_err());
        }
        for good in [3, 4, 6, 32] {
            assert_eq!(check_node_count(good), Ok(good));
        }
        // Nothing is written for a refused number.
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("vault-dev");
        for bad in [2, 33] {
            let e = prepare(&cluster, 0, bad).unwrap_err().to_string();
            assert!(e.contains("3 to 32 nodes"), "{e}");
            assert!(!cluster.exists());
        }
    }

    #[test]
    fn the_client_file_names_the_default_redundancy() {
        let six = dfc_conf(&loopback(20001..=20006));
        let lines: Vec<&str> = six.lines().collect();
        assert_eq!(lines[0], "# Vault dev-cluster client configuration.");
        assert_eq!(
            lines[1],
            "# 6 servers: the client stores files as Reed-Solomon rs 4+2 by default \
             (rs 2+1 with three); a Redundancy line changes it"
        );
        let servers: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("Server "))
            .collect();
        assert_eq!(servers.len(), 6);
        assert_eq!(servers[5], "Server DFS6 127.0.0.1:20006");
        // The comment comes before the servers, and no Redundancy line.
        assert!(lines[2].starts_with("Server DFS1 "));
        assert!(!six.lines().any(|l| l.starts_with("Redundancy")), "{six}");
        let three = dfc_conf(&loopback(20001..=20003));
        assert!(three.contains(
            "\n# 3 servers: the client stores files as Reed-Solomon rs 2+1 by default; \
             a Redundancy line changes it\nServer DFS1 "
        ));
        let banner = instructions(Path::new("vault-dev"), 6, &[]);
        assert!(
            banner.starts_with("Vault dev cluster: six nodes running; Ctrl-C stops them.\n"),
            "{banner}"
        );
        assert!(banner.contains("rs 4+2"), "{banner}");
        assert!(banner.contains("any two of the six nodes"), "{banner}");
        assert!(banner.contains(CONTROL_HINT), "{banner}");
        let banner = instructions(Path::new("vault-dev"), 20, &[]);
        assert!(banner.contains("20 nodes running"), "{banner}");
    }

    #[test]
    fn commands_reach_every_node_and_only_those() {
        assert_eq!(parse_command("stop DFS6", 6), Ok(Some(Control::Stop(5))));
        assert_eq!(parse_command("stop 6", 6), Ok(Some(Control::Stop(5))));
        assert_eq!(parse_command("start dfs5", 6), Ok(Some(Control::Start(4))));
        assert_eq!(parse_command("stop 1", 3), Ok(Some(Control::Stop(0))));
        assert_eq!(parse_command("stop DFS32", 32), Ok(Some(Control::Stop(31))));
        assert_eq!(parse_command("start 32", 32), Ok(Some(Control::Start(31))));
        for bad in [
            "stop DFS7",
            "stop 7",
            "stop 0",
            "start DFS0",
            "stop DFS06",
            "stop DFS",
        ] {
            let e = parse_command(bad, 6).unwrap_err();
            assert!(
                e.contains("the nodes are DFS1, DFS2, DFS3, DFS4, DFS5, DFS6 (or 1..6)"),
                "{bad}: {e}"
            );
        }
        let e = parse_command("stop DFS4", 3).unwrap_err();
        assert!(e.contains("DFS1, DFS2, DFS3 (or 1..3)"), "{e}");
        let e = parse_command("stop 13", 12).unwrap_err();
        assert!(e.contains("the nodes are DFS1..DFS12 (or 1..12)"), "{e}");
        let e = parse_command("frobnicate", 6).unwrap_err();
        assert!(e.ends_with("(DFSn: DFS1..DFS6, or 1..6)"), "{e}");
    }

    #[tokio::test]
    async fn six_nodes_and_a_folder_made_for_another_number() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vault-dev");
        assert_eq!(existing_nodes(&dir), 0);
        let prepared = prepare(&dir, 0, 6).unwrap();
        assert_eq!(prepared.len(), 6);
        let addrs: Vec<SocketAddr> = prepared.iter().map(|p| p.config.listen).collect();
        assert!(addrs.iter().all(|a| a.port() != 0), "{addrs:?}");
        for (i, p) in prepared.iter().enumerate() {
            assert_eq!(p.config.name, format!("DFS{}", i + 1));
            assert_eq!(p.server.local_addr(), addrs[i]);
        }
        let dfc = std::fs::read_to_string(dir.join("dfc.conf")).unwrap();
        assert_eq!(dfc, dfc_conf(&addrs));
        for name in node_names(6) {
            assert!(dir.join(&name).is_dir(), "{name}");
            assert!(dir.join(format!("certs/{name}.pem")).exists(), "{name}");
        }
        drop(prepared);
        assert_eq!(existing_nodes(&dir), 6);
        let mark = dir.join("DFS6/kept");
        std::fs::write(&mark, b"mine").unwrap();

        // Fewer or more nodes than the folder holds: refused, nothing touched.
        for other in [4, 5, 8] {
            let e = prepare(&dir, 0, other).unwrap_err().to_string();
            assert!(e.contains(&dir.display().to_string()), "{e}");
            assert!(
                e.contains(&format!(
                    "holds a dev cluster of 6 nodes (DFS1..DFS6), not {other}"
                )),
                "{e}"
            );
            assert!(e.contains("--nodes 6"), "{e}");
            assert!(e.contains("another folder"), "{e}");
            assert!(e.contains("nothing was changed"), "{e}");
            assert_eq!(std::fs::read(&mark).unwrap(), b"mine");
            assert_eq!(std::fs::read_to_string(dir.join("dfc.conf")).unwrap(), dfc);
            assert!(!dir.join(format!("DFS{}", other.max(7))).exists());
            assert!(!dir.join("certs/DFS7.pem").exists());
        }
        // A wiped node root, its certificate kept: still six, and it runs.
        std::fs::remove_dir_all(dir.join("DFS6")).unwrap();
        assert_eq!(existing_nodes(&dir), 6);
        assert!(prepare(&dir, 0, 4).is_err());
        let again = prepare(&dir, 0, 6).unwrap();
        assert_eq!(again.len(), 6);
        assert!(dir.join("DFS6").is_dir());
        drop(again);
        // A four-node folder, the other way round.
        let four = tmp.path().join("four");
        drop(prepare(&four, 0, 4).unwrap());
        assert_eq!(existing_nodes(&four), 4);
        let e = prepare(&four, 0, 6).unwrap_err().to_string();
        assert!(e.contains("holds a dev cluster of 4 nodes"), "{e}");
        assert!(!four.join("DFS5").exists());
        // Names the dev cluster does not write do not count.
        std::fs::create_dir_all(four.join("DFS09")).unwrap();
        std::fs::write(four.join("DFS7"), b"a file, not a root").unwrap();
        assert_eq!(existing_nodes(&four), 4);
    }
}
