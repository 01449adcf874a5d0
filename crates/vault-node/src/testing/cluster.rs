//! [`TestCluster`]: four (or any number of) real nodes in this process.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::lie::{Honest, Lie};
use super::node::Instance;
use super::observed::Observed;
use super::proxy::{Proxy, Target};
use super::raw::RawClient;
use crate::server::NodeConfig;
use crate::store::offline;
use crate::users::UserDb;

/// The nodes' names, in `dfc.conf` order (node `i` is `NODE_NAMES[i]`).
pub const NODE_NAMES: [&str; 4] = ["DFS1", "DFS2", "DFS3", "DFS4"];

struct Slot {
    node: Instance,
    proxy: Option<Proxy>,
}

/// Four nodes `DFS1`..`DFS4` on 127.0.0.1 (port 0), their roots
/// `<dir>/DFS1`..`<dir>/DFS4` in one temp dir, certificates from a fresh
/// cluster CA made at start ([`crate::certs::generate`]; nothing written to
/// disk but `ca.pem` by [`TestCluster::write_dfc`]).
///
/// Node numbers `i` are 0-based (node 0 is `DFS1`). Dropping the cluster
/// signals every node and proxy to stop and removes the temp dir; use
/// [`TestCluster::stop`] to wait for a node's shutdown.
///
/// Needs a tokio runtime (the nodes and proxies run as tasks on it).
pub struct TestCluster {
    ca_pem: String,
    nodes: Vec<Slot>,
    // Last, so nodes are signalled before their roots go away.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = (0..self.len()).map(|i| self.addr(i)).collect();
        f.debug_struct("TestCluster")
            .field("dir", &self.dir.path())
            .field("addrs", &addrs)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// Starts four nodes sharing one users-file text.
    pub async fn start(users: &str) -> anyhow::Result<TestCluster> {
        Self::start_each([users; 4]).await
    }

    /// Starts four nodes, node `i` with users-file text `users[i]`.
    pub async fn start_each(users: [&str; 4]) -> anyhow::Result<TestCluster> {
        Self::start_with(users, |_, _| {}).await
    }

    /// [`TestCluster::start_each`], with `tweak(i, config)` adjusting each
    /// node's configuration (limits, throttling, grace...) before it binds.
    pub async fn start_with(
        users: [&str; 4],
        tweak: impl FnMut(usize, &mut NodeConfig),
    ) -> anyhow::Result<TestCluster> {
        Self::start_many(&users, tweak).await
    }

    /// Starts `n` nodes `DFS1`..`DFSn` (erasure-coded layouts) sharing one
    /// users-file text.
    pub async fn start_n(n: usize, users: &str) -> anyhow::Result<TestCluster> {
        Self::start_many(&vec![users; n], |_, _| {}).await
    }

    /// One node per entry of `users` (its users-file text), `DFS1` first,
    /// each configuration adjusted by `tweak(i, config)` before it binds.
    pub async fn start_many(
        users: &[&str],
        mut tweak: impl FnMut(usize, &mut NodeConfig),
    ) -> anyhow::Result<TestCluster> {
        let dir = tempfile::Builder::new()
            .prefix("vault-cluster-")
            .tempdir()
            .context("failed to create the cluster's temp dir")?;
        let names: Vec<String> = (1..=users.len()).map(|i| format!("DFS{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let certs = crate::certs::generate(&names, &crate::certs::default_sans())?;
        let mut nodes = Vec::with_capacity(users.len());
        for (i, (cert, users)) in certs.nodes.into_iter().zip(users).enumerate() {
            let source = format!("{} users", cert.name);
            let users = UserDb::parse(users, &source)?;
            let mut config = NodeConfig::new(
                cert.name.clone(),
                dir.path().join(&cert.name),
                SocketAddr::from(([127, 0, 0, 1], 0)),
                users,
                cert.cert_pem,
                cert.key_pem,
            );
            tweak(i, &mut config);
            nodes.push(Slot {
                node: Instance::start(config)?,
                proxy: None,
            });
        }
        Ok(TestCluster {
            ca_pem: certs.ca_cert_pem,
            nodes,
            dir,
        })
    }

    fn slot(&self, i: usize) -> &Slot {
        let n = self.len();
        assert!(
            i < n,
            "node index {i} out of range: nodes are 0 (DFS1) to {} (DFS{n})",
            n - 1
        );
        &self.nodes[i]
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        let n = self.len();
        assert!(
            i < n,
            "node index {i} out of range: nodes are 0 (DFS1) to {} (DFS{n})",
            n - 1
        );
        &mut self.nodes[i]
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has at least one node (for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The temp dir holding the node roots (and what `write_dfc` writes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Node `i`'s name (`DFS1`...), what a client puts in the TLS server name.
    pub fn name(&self, i: usize) -> &str {
        &self.slot(i).node.config.name
    }

    /// Where a client must dial node `i`: the hostile proxy's address once
    /// [`TestCluster::make_hostile`] put one in front of it, else the node's.
    pub fn addr(&self, i: usize) -> SocketAddr {
        let slot = self.slot(i);
        match &slot.proxy {
            Some(p) => p.addr(),
            None => slot.node.config.listen,
        }
    }

    /// The real node's own address, proxy or not.
    pub fn node_addr(&self, i: usize) -> SocketAddr {
        self.slot(i).node.config.listen
    }

    /// Node `i`'s configuration as it was last started.
    pub fn config(&self, i: usize) -> &NodeConfig {
        &self.slot(i).node.config
    }

    /// Node `i`'s root folder.
    pub fn root(&self, i: usize) -> &Path {
        &self.slot(i).node.config.root
    }

    /// Node `i`'s folder for `user` (the lower-case name): everything the
    /// node keeps for the user. It exists once the user stored something.
    /// To read or change blobs, use [`TestCluster::blob`] and its siblings,
    /// not the files in it (their layout is the store's own).
    pub fn user_dir(&self, i: usize, user: &str) -> PathBuf {
        self.root(i).join(user.to_ascii_lowercase())
    }

    /// The bytes node `i` stores as `user`'s blob `id` (`None`: it holds
    /// none), as they are on its disk: what a test checks against what a
    /// proxy or a client was told.
    ///
    /// Works whether node `i` runs or is stopped. On today's layout (one
    /// file per blob, [`crate::store::offline`]) it reads the file.
    pub async fn blob(&self, i: usize, user: &str, id: &str) -> io::Result<Option<Vec<u8>>> {
        offline::read_blob(self.root(i), user, id)
    }

    /// Makes `bytes` node `i`'s stored blob `id` of `user`, replacing it or
    /// creating it, as a hostile edit of the node's disk would (the node
    /// is not asked: no quota, no condition). The node serves the new
    /// bytes from then on.
    ///
    /// Works whether node `i` runs or is stopped. On today's layout it
    /// writes the file: a running node serves a replaced blob's new bytes
    /// at once, but lists a blob created this way only after a restart.
    pub async fn set_blob(&self, i: usize, user: &str, id: &str, bytes: &[u8]) -> io::Result<()> {
        offline::write_blob(self.root(i), user, id, bytes)
    }

    /// Removes `user`'s blob `id` from node `i`'s disk, as a lost or
    /// wiped file would (the node is not asked); `false` if there was none.
    ///
    /// Works whether node `i` runs or is stopped. On today's layout it
    /// removes the file: a running node then fails to read it, and still
    /// lists it until a restart.
    pub async fn remove_blob(&self, i: usize, user: &str, id: &str) -> io::Result<bool> {
        offline::remove_blob(self.root(i), user, id)
    }

    /// The ids of the blobs node `i` stores for `user`, sorted (uploads in
    /// progress left out); empty if it stores none.
    ///
    /// Works whether node `i` runs or is stopped.
    pub async fn blob_ids(&self, i: usize, user: &str) -> io::Result<Vec<String>> {
        offline::blob_ids(self.root(i), user)
    }

    /// Keeps a copy of node `i`'s disk for `user` as it is now, in
    /// `<to>/<user>` (replacing an earlier copy there), to serve it again
    /// later with [`TestCluster::restore_user`]. A running node is stopped
    /// for the copy and started again after, so the copy is a state the
    /// node left on its disk.
    pub async fn snapshot_user(&mut self, i: usize, user: &str, to: &Path) -> anyhow::Result<()> {
        let running = self.is_running(i);
        self.stop(i).await?;
        offline::copy_user(self.root(i), to, user)
            .with_context(|| format!("failed to copy {}'s disk for {user}", self.name(i)))?;
        if running {
            self.restart(i).await?;
        }
        Ok(())
    }

    /// Replaces node `i`'s disk for `user` by the copy in `<from>/<user>`
    /// made by [`TestCluster::snapshot_user`]: the node serves its old disk
    /// again. A running node is stopped first and started again after; a
    /// stopped one stays stopped.
    pub async fn restore_user(&mut self, i: usize, user: &str, from: &Path) -> anyhow::Result<()> {
        let running = self.is_running(i);
        self.stop(i).await?;
        let root = self.root(i).to_path_buf();
        offline::copy_user(from, &root, user)
            .with_context(|| format!("failed to restore {}'s disk for {user}", self.name(i)))?;
        if running {
            self.restart(i).await?;
        }
        Ok(())
    }

    /// Whether node `i` is running (not stopped).
    pub fn is_running(&self, i: usize) -> bool {
        self.slot(i).node.is_running()
    }

    /// What the hostile proxy in front of node `i` received, if there is one.
    pub fn observed(&self, i: usize) -> Option<Arc<Observed>> {
        self.slot(i).proxy.as_ref().map(Proxy::observed)
    }

    /// A [`RawClient`] connected to [`TestCluster::addr`]`(i)`, expecting
    /// node `i`'s certificate.
    pub async fn raw_client(&self, i: usize) -> anyhow::Result<RawClient> {
        RawClient::connect(self.addr(i), &self.ca_pem, self.name(i)).await
    }

    /// A [`TestCluster::raw_client`] of node `i` logged in as `user` with
    /// the MD5 proof of `password`; an error unless the node (or its proxy)
    /// answered `LoggedIn`.
    pub async fn md5_client(
        &self,
        i: usize,
        user: &str,
        password: &str,
    ) -> anyhow::Result<RawClient> {
        let client = self.raw_client(i).await?;
        client.login_md5_ok(user, password).await?;
        Ok(client)
    }

    /// Stops node `i` and waits until it has shut down (in-flight requests
    /// get the node's shutdown grace). Its proxy, if any, keeps running and
    /// refuses connections while the node is down. A stopped node stays
    /// stopped.
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        self.slot_mut(i).node.stop().await
    }

    /// Stops node `i` if it runs, then starts it again on the same address
    /// and root, with the same configuration. Its proxy, if any, keeps its
    /// address and forwards new connections to the restarted node.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.restart_with(i, |_| {}).await
    }

    /// [`TestCluster::restart`] after `tweak` changed the stored
    /// configuration (another users file, say). If `tweak` changes
    /// `listen`, the node moves there (and its proxy follows).
    pub async fn restart_with(
        &mut self,
        i: usize,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> anyhow::Result<()> {
        let slot = self.slot_mut(i);
        slot.node.restart_with(tweak).await?;
        if let Some(proxy) = &slot.proxy {
            proxy.set_upstream(slot.node.config.listen);
        }
        Ok(())
    }

    /// Puts a hostile proxy in front of node `i`: a QUIC server on
    /// 127.0.0.1:0 presenting node `i`'s own certificate and key, asking
    /// `lie` about every request (see [`crate::testing::proxy`]). From now
    /// on [`TestCluster::addr`]`(i)`, [`TestCluster::dfc_text`] and
    /// [`TestCluster::raw_client`] point at the proxy; the node itself
    /// keeps running at [`TestCluster::node_addr`]`(i)`.
    ///
    /// On a node that already has a proxy, replaces the lie (for streams
    /// opened from then on) and returns the same [`Observed`].
    pub async fn make_hostile(
        &mut self,
        i: usize,
        lie: Arc<dyn Lie>,
    ) -> anyhow::Result<Arc<Observed>> {
        let ca_pem = self.ca_pem.clone();
        let slot = self.slot_mut(i);
        if let Some(proxy) = &slot.proxy {
            proxy.set_lie(lie);
            return Ok(proxy.observed());
        }
        let target = Target {
            name: &slot.node.config.name,
            cert_pem: &slot.node.config.cert_pem,
            key_pem: &slot.node.config.key_pem,
            ca_pem: &ca_pem,
            addr: slot.node.config.listen,
        };
        let proxy = Proxy::start(target, lie)?;
        let observed = proxy.observed();
        slot.proxy = Some(proxy);
        Ok(observed)
    }

    /// Puts node `i` behind a link of `bytes_per_sec` bytes per second:
    /// the proxy in front of it reads the bulk of uploads (`PutBlob`,
    /// `PutBlobs`) and writes the bulk of its answers (`Blob`, `BlobRange`,
    /// `Blobs`, `DataListing`) at that rate at most, shared by every stream
    /// of every client of node `i` (parallel uploads split it). The rate
    /// paces the QUIC streams themselves: the proxy grants flow control
    /// credit as it reads, with a receive window of 1/8 s worth, so a
    /// client's writes block; downloads arrive at the rate (see
    /// [`crate::testing::proxy`]). Frames and the exchange with the node are
    /// not slowed.
    ///
    /// `0` or `u64::MAX` lifts the limit (live connections too): the proxy
    /// moves bytes as fast as it can again. A rate change applies at once,
    /// also to transfers under way.
    ///
    /// A node without a proxy gets an honest one first, as
    /// [`TestCluster::make_hostile`]`(i, Arc::new(Honest))` would: from then
    /// on [`TestCluster::addr`]`(i)`, [`TestCluster::dfc_text`],
    /// [`TestCluster::write_dfc`] and [`TestCluster::raw_client`] point at
    /// it (connections made before still reach the node directly, at full
    /// speed). Lifting the limit of a node without a proxy does nothing. A
    /// later `make_hostile(i, ..)` keeps the rate; this keeps the lie.
    pub async fn slow_down(&mut self, i: usize, bytes_per_sec: u64) -> anyhow::Result<()> {
        let unlimited = bytes_per_sec == 0 || bytes_per_sec == u64::MAX;
        if self.slot(i).proxy.is_none() {
            if unlimited {
                return Ok(());
            }
            self.make_hostile(i, Arc::new(Honest)).await?;
        }
        match &self.slot(i).proxy {
            Some(proxy) => proxy.set_rate(bytes_per_sec),
            None => anyhow::bail!("no proxy in front of {}", self.name(i)),
        }
    }

    /// A classic `dfc.conf`: `Server DFSi 127.0.0.1:PORT` for every node
    /// in order (at [`TestCluster::addr`], so proxies included),
    /// `Username: USER`, then `password_line` verbatim if given (e.g.
    /// `Some("Password: Crimson33")`). Lines end in `\n`.
    pub fn dfc_text(&self, user: &str, password_line: Option<&str>) -> String {
        let mut text = String::new();
        for i in 0..self.len() {
            text.push_str(&format!("Server {} {}\n", self.name(i), self.addr(i)));
        }
        text.push_str(&format!("Username: {user}\n"));
        if let Some(line) = password_line {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Writes [`TestCluster::dfc_text`] to `<dir>/dfc.conf` and the CA to
    /// `<dir>/certs/ca.pem` (where the client looks for it by default), and
    /// returns the `dfc.conf` path, for `vault-client -c <path>`. Call it
    /// after any `make_hostile`: the file holds the addresses of the moment.
    pub fn write_dfc(&self, user: &str, password_line: Option<&str>) -> anyhow::Result<PathBuf> {
        let certs = self.dir().join("certs");
        std::fs::create_dir_all(&certs)
            .with_context(|| format!("failed to create {}", certs.display()))?;
        let ca = certs.join("ca.pem");
        std::fs::write(&ca, &self.ca_pem)
            .with_context(|| format!("failed to write {}", ca.display()))?;
        let conf = self.dir().join("dfc.conf");
        std::fs::write(&conf, self.dfc_text(user, password_line))
            .with_context(|| format!("failed to write {}", conf.display()))?;
        Ok(conf)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for slot in &mut self.nodes {
            // Dropping the proxy stops it.
            slot.proxy = None;
            slot.node.signal_stop();
        }
    }
}
