//! [`TestNode`]: one real node in this process; and `Instance`, the
//! start, stop and restart mechanics it shares with
//! [`TestCluster`](super::TestCluster).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::raw::RawClient;
use crate::server::{NodeConfig, Server};
use crate::store::offline;
use crate::users::UserDb;

/// How long a restart keeps trying to re-bind the node's port while the
/// stopped endpoint lets go of it.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// One node `DFS1` on 127.0.0.1 (port 0), its root `<dir>/DFS1` in a temp
/// dir of its own, its certificate from a fresh cluster CA made at start.
///
/// For tests of one node's behaviour (limits, login, shutdown); use
/// [`TestCluster`](super::TestCluster) for what needs four. Dropping it
/// signals the node to stop and removes the temp dir; use
/// [`TestNode::stop`] to wait for the shutdown.
///
/// Needs a tokio runtime (the node runs as a task on it).
pub struct TestNode {
    ca_pem: String,
    node: Instance,
    // Last, so the node is signalled before its root goes away.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("dir", &self.dir.path())
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

impl TestNode {
    /// Starts `DFS1` with users-file text `users` and default limits.
    pub async fn start(users: &str) -> anyhow::Result<TestNode> {
        Self::start_with(users, |_| {}).await
    }

    /// [`TestNode::start`], with `tweak` adjusting the configuration
    /// (limits, throttling, grace, cluster secret, even name and
    /// certificate) before the node binds.
    pub async fn start_with(
        users: &str,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> anyhow::Result<TestNode> {
        let dir = tempfile::Builder::new()
            .prefix("vault-node-")
            .tempdir()
            .context("failed to create the node's temp dir")?;
        let name = super::NODE_NAMES[0];
        let certs = crate::certs::generate(&[name], &crate::certs::default_sans())?;
        let Some(cert) = certs.nodes.into_iter().next() else {
            bail!("no certificate made for {name}");
        };
        let mut config = NodeConfig::new(
            name,
            dir.path().join(name),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            UserDb::parse(users, &format!("{name} users"))?,
            cert.cert_pem,
            cert.key_pem,
        );
        tweak(&mut config);
        Ok(TestNode {
            ca_pem: certs.ca_cert_pem,
            node: Instance::start(config)?,
            dir,
        })
    }

    /// The node's name (`DFS1` unless a tweak changed it).
    pub fn name(&self) -> &str {
        &self.node.config.name
    }

    /// Where the node listens.
    pub fn addr(&self) -> SocketAddr {
        self.node.config.listen
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The node's configuration as it was last started.
    pub fn config(&self) -> &NodeConfig {
        &self.node.config
    }

    /// The node's root folder.
    pub fn root(&self) -> &Path {
        &self.node.config.root
    }

    /// Whether the node is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.node.is_running()
    }

    /// A [`RawClient`] connected to the node, expecting its certificate.
    pub async fn raw_client(&self) -> anyhow::Result<RawClient> {
        RawClient::connect(self.addr(), &self.ca_pem, self.name()).await
    }

    /// A [`RawClient`] logged in as `user` with the MD5 proof of
    /// `password`; an error unless the node answered `LoggedIn`.
    pub async fn md5_client(&self, user: &str, password: &str) -> anyhow::Result<RawClient> {
        let client = self.raw_client().await?;
        client.login_md5_ok(user, password).await?;
        Ok(client)
    }

    /// Tells the node to shut down and returns at once; [`TestNode::stop`]
    /// then waits for the shutdown to end.
    pub fn signal_stop(&mut self) {
        self.node.signal_stop();
    }

    /// Stops the node and waits until it has shut down (in-flight requests
    /// get its shutdown grace). A stopped node stays stopped.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.node.stop().await
    }

    /// Stops the node if it runs, then starts it again on the same address
    /// and root after `tweak` changed the stored configuration (another
    /// users file, say).
    pub async fn restart_with(
        &mut self,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> anyhow::Result<()> {
        self.node.restart_with(tweak).await
    }

    /// Every blob the node stores, of every user, as sorted `user/id`
    /// strings (`alice/p-1`); uploads in progress are not blobs.
    ///
    /// Works whether the node runs or is stopped. On today's layout (one
    /// file per blob, [`crate::store::offline`]) it lists the files.
    pub async fn stored_blobs(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for user in offline::users(self.root())? {
            for id in offline::blob_ids(self.root(), &user)? {
                out.push(format!("{user}/{id}"));
            }
        }
        Ok(out)
    }

    /// The node's uploads in progress: every file in a user's uploads
    /// folder (`<root>/<user>/.tmp/`), as sorted `user/.tmp/name` strings.
    /// Empty once every upload was committed or given up.
    pub fn upload_files(&self) -> Vec<String> {
        let mut out = self.user_files();
        out.retain(|p| p.split('/').nth(1) == Some(crate::store::TMP_DIR));
        out
    }

    /// Every file under the root, as sorted `/`-separated relative paths
    /// (`alice/p-1`, `alice/.tmp/...`), except the node's own metadata
    /// under `.vault/`: the raw disk, for what is not a blob (uploads in
    /// progress). For blobs, [`TestNode::stored_blobs`].
    pub fn user_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(self.root(), self.root(), &mut out);
        out.retain(|p| !p.starts_with(".vault/"));
        out.sort();
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(base, &p, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
            out.push(parts.join("/"));
        }
    }
}

/// A node's configuration and, while it runs, its task.
pub(super) struct Instance {
    /// The node's configuration; `listen` is the address it was bound to.
    pub(super) config: NodeConfig,
    running: Option<Running>,
}

struct Running {
    /// `None` once the stop was signalled.
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Instance {
    /// Binds `config` and runs the node.
    pub(super) fn start(mut config: NodeConfig) -> anyhow::Result<Instance> {
        let server = Server::bind(config.clone())
            .with_context(|| format!("failed to start {}", config.name))?;
        config.listen = server.local_addr();
        Ok(Instance {
            config,
            running: Some(spawn(server)),
        })
    }

    pub(super) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Tells the node to shut down, without waiting.
    pub(super) fn signal_stop(&mut self) {
        if let Some(stop) = self.running.as_mut().and_then(|r| r.stop.take()) {
            let _ = stop.send(());
        }
    }

    /// Stops the node and waits for its `run` to return.
    pub(super) async fn stop(&mut self) -> anyhow::Result<()> {
        self.signal_stop();
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        running
            .task
            .await
            .with_context(|| format!("node {} panicked", self.config.name))?
    }

    /// Stops the node if it runs, applies `tweak` to its configuration and
    /// starts it again (on the same address unless `tweak` changed it).
    pub(super) async fn restart_with(
        &mut self,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> anyhow::Result<()> {
        self.stop().await?;
        tweak(&mut self.config);
        let server = bind_again(&self.config).await?;
        self.config.listen = server.local_addr();
        self.running = Some(spawn(server));
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn spawn(server: Server) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        task,
    }
}

/// Binds `config` again. A node that just stopped may hold its UDP port a
/// moment longer (its endpoint's driver task closes the socket after
/// `run` returns), so "address in use" is retried until
/// [`REBIND_TIMEOUT`]; any other error is returned at once.
async fn bind_again(config: &NodeConfig) -> anyhow::Result<Server> {
    let deadline = Instant::now() + REBIND_TIMEOUT;
    loop {
        match Server::bind(config.clone()) {
            Ok(server) => return Ok(server),
            Err(e) if addr_in_use(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => {
                if addr_in_use(&e) {
                    bail!(
                        "{} still in use after {REBIND_TIMEOUT:?}: {e:#}",
                        config.listen
                    );
                }
                return Err(e.context(format!("failed to restart {}", config.name)));
            }
        }
    }
}

fn addr_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}
