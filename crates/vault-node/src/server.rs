//! The node's QUIC endpoint: TLS 1.3 with the node's certificate, caps on
//! connections and streams, and the shutdown sequence.
//!
//! ```no_run
//! # async fn demo(cfg: vault_node::NodeConfig) -> anyhow::Result<()> {
//! let server = vault_node::Server::bind(cfg)?;
//! println!("listening on {}", server.local_addr());
//! server.run(vault_node::server::shutdown_signal()).await
//! # }
//! ```
//!
//! Admission: a connection attempt from an address that has not proved it
//! can receive packets is answered with a QUIC Retry; only validated
//! attempts take one of the [`NodeConfig::max_connections`] slots (see
//! `admission` for the per-source cap and eviction). Each connection then
//! runs in a task of its own (`connection`); one that has not logged in
//! within [`NodeConfig::login_timeout`] is closed. One user may hold at
//! most [`NodeConfig::max_connections_per_user`] logged-in connections
//! (a login over it is answered `Busy`) and run at most
//! [`NodeConfig::max_requests_per_user`] requests at once (over it: `Busy`).
//!
//! Shutdown: when the future given to [`Server::run`] completes, the accept
//! loop stops, connections stop taking new requests (answering
//! `ShuttingDown`), in-flight requests get [`NodeConfig::shutdown_grace`]
//! to finish and are then aborted (their uploads' temp files removed), and
//! the endpoint is closed and drained.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{EndpointConfig, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::admission::{Admission, Limits, Source, UserCaps, UserLimits};
use crate::auth::LoginState;
use crate::connection::{refuse, ConnTask, MAX_REFUSING};
use crate::records::RecordStore;
use crate::secret::ClusterSecret;
use crate::state::{prepare_root, Shared, META_DIR};
use crate::store::maintenance::RootLock;
use crate::store::{BlobStore, StoreLimits};
use crate::throttle::{Throttle, ThrottleConfig};
use crate::users::UserDb;

/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default cap on simultaneous requests (streams) per connection.
pub const DEFAULT_MAX_STREAMS: u32 = 64;
/// Default time in-flight requests get to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default time a connection has to log in.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The per-source cap when none is configured: a quarter of the node's
/// cap, at least 4.
pub fn default_max_connections_per_source(max_connections: usize) -> usize {
    (max_connections / 4).max(4)
}
/// The per-user cap on logged-in connections when none is configured: an
/// eighth of the node's cap, at least 8.
pub fn default_max_connections_per_user(max_connections: usize) -> usize {
    (max_connections / 8).max(8)
}
/// The per-user cap on requests running at once when none is configured:
/// four connections' worth of streams.
pub fn default_max_requests_per_user(max_streams_per_connection: u32) -> usize {
    usize::try_from(max_streams_per_connection)
        .unwrap_or(usize::MAX)
        .saturating_mul(4)
        .max(1)
}
/// UDP socket buffer size asked of the kernel (both directions).
const SOCKET_BUFFER: usize = 4 << 20;
/// Connections idle this long are dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a node needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    /// Node name (`DFS1`): the certificate's name, bound into login signatures.
    pub name: String,
    /// Root folder of the node's data.
    pub root: PathBuf,
    /// UDP address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Who may log in.
    pub users: UserDb,
    /// The node's certificate chain, PEM.
    pub cert_pem: String,
    /// The node's private key, PEM.
    pub key_pem: String,
    /// Largest blob accepted, in bytes.
    pub max_blob_len: u64,
    /// Most bytes one user may keep on this node, uploads in progress
    /// included (`None`: no limit).
    pub quota: Option<u64>,
    /// The blob store's limits: blobs per user, files held open for
    /// replies and the reply deadline, blocking file work of uploads.
    pub store: StoreLimits,
    /// Most simultaneous connections. A new one over the cap evicts the
    /// oldest connection that has not logged in; it is refused (closed
    /// with `node busy`) only if every connection has logged in.
    pub max_connections: usize,
    /// Most simultaneous connections from one source (an IPv4 address or
    /// an IPv6 /64), with the same eviction rule; `None`:
    /// [`default_max_connections_per_source`].
    pub max_connections_per_source: Option<usize>,
    /// Most connections logged in as one user at once; a login over it is
    /// answered `Busy` (logged-in connections are never evicted, so this
    /// keeps one account from holding every slot). `None`:
    /// [`default_max_connections_per_user`].
    pub max_connections_per_user: Option<usize>,
    /// Most requests one user may have running at once, over all their
    /// connections; one over it is answered `Busy`. `None`:
    /// [`default_max_requests_per_user`].
    pub max_requests_per_user: Option<usize>,
    /// Time a connection has to log in (counted from its first packet)
    /// before it is closed.
    pub login_timeout: Duration,
    /// Most simultaneous requests (QUIC streams) per connection.
    pub max_streams_per_connection: u32,
    /// Failed-login throttling thresholds.
    pub throttle: ThrottleConfig,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// The cluster's shared secret (`<certs>/cluster.secret`): keys the
    /// decoy salts of unknown user names, so every node of the cluster
    /// announces the same one. `None`: the node's own secret, which makes
    /// unknown names recognisable by comparing nodes.
    pub cluster_secret: Option<ClusterSecret>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("root", &self.root)
            .field("listen", &self.listen)
            .field("max_blob_len", &self.max_blob_len)
            .field("quota", &self.quota)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_source",
                &self.max_connections_per_source,
            )
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("max_requests_per_user", &self.max_requests_per_user)
            .field("login_timeout", &self.login_timeout)
            .field(
                "max_streams_per_connection",
                &self.max_streams_per_connection,
            )
            .field("shutdown_grace", &self.shutdown_grace)
            .field("cluster_secret", &self.cluster_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// A configuration with default limits.
    pub fn new(
        name: impl Into<String>,
        root: impl Into<PathBuf>,
        listen: SocketAddr,
        users: UserDb,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        NodeConfig {
            name: name.into(),
            root: root.into(),
            listen,
            users,
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            max_blob_len: wire::DEFAULT_MAX_BLOB_LEN,
            quota: None,
            store: StoreLimits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_source: None,
            max_connections_per_user: None,
            max_requests_per_user: None,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            max_streams_per_connection: DEFAULT_MAX_STREAMS,
            throttle: ThrottleConfig::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            cluster_secret: None,
        }
    }
}

/// A node bound to its UDP socket, ready to [`run`](Server::run).
pub struct Server {
    node: Arc<Shared>,
    socket: UdpSocket,
    local_addr: SocketAddr,
    quic: quinn::ServerConfig,
    limits: Limits,
    user_caps: Arc<UserCaps>,
    login_timeout: Duration,
    grace: Duration,
    /// `<root>/.vault/lock`, held until the node has stopped.
    root_lock: RootLock,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.node.name)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Locks the root (`<root>/.vault/lock`: another node serving it, or
    /// `fsck`/`compact` running on it, is an error), prepares it (folders,
    /// node secret, leftover uploads removed), loads the certificate and
    /// binds the UDP socket. Needs no runtime. The lock is released when
    /// the `Server` is dropped or its [`Server::run`] returns.
    pub fn bind(config: NodeConfig) -> anyhow::Result<Server> {
        if config.name.is_empty() {
            bail!("node name is empty");
        }
        if config.max_connections == 0 {
            bail!("max connections must be at least 1");
        }
        if config.max_connections_per_source == Some(0) {
            bail!("max connections per source must be at least 1");
        }
        if config.max_connections_per_user == Some(0) {
            bail!("max connections per user must be at least 1");
        }
        if config.max_requests_per_user == Some(0) {
            bail!("max requests per user must be at least 1");
        }
        if config.login_timeout.is_zero() {
            bail!("login timeout must be longer than zero");
        }
        let limits = Limits {
            total: config.max_connections,
            per_source: config
                .max_connections_per_source
                .unwrap_or_else(|| default_max_connections_per_source(config.max_connections)),
        };
        let user_caps = UserCaps::new(UserLimits {
            connections: config
                .max_connections_per_user
                .unwrap_or_else(|| default_max_connections_per_user(config.max_connections)),
            requests: config.max_requests_per_user.unwrap_or_else(|| {
                default_max_requests_per_user(config.max_streams_per_connection)
            }),
        });
        let quic = quic_config(&config)?;
        // Before anything touches the root: a second node on it would
        // remove the first one's uploads in progress.
        let root_lock = RootLock::serve(&config.root).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                anyhow::Error::new(e)
            } else {
                anyhow::Error::new(e)
                    .context(format!("failed to lock the root {}", config.root.display()))
            }
        })?;
        let node_secret = prepare_root(&config.root)?;
        let secret = match config.cluster_secret {
            Some(cluster) => cluster.into_inner(),
            None => node_secret,
        };
        let socket = bind_socket(config.listen)?;
        let local_addr = socket
            .local_addr()
            .context("failed to read the bound address")?;
        let blobs = BlobStore::with_limits(&config.root, config.store.clone());
        // A 0.2 root (one file per blob) is converted before serving.
        blobs.convert_all().with_context(|| {
            format!(
                "failed to open the blob indexes under {}",
                config.root.display()
            )
        })?;
        let node = Shared {
            name: config.name,
            users: config.users,
            blobs,
            records: RecordStore::new(config.root.join(META_DIR).join("records")),
            throttle: Throttle::new(config.throttle),
            secret,
            max_blob_len: config.max_blob_len,
            quota: config.quota,
        };
        Ok(Server {
            node: Arc::new(node),
            socket,
            local_addr,
            quic,
            limits,
            user_caps,
            login_timeout: config.login_timeout,
            grace: config.shutdown_grace,
            root_lock,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then shuts down cleanly. Every
    /// log line of the node, its connections' included, carries a `node`
    /// field with its name (a `node` span).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        use tracing::Instrument;
        let span = tracing::info_span!("node", node = %self.node.name);
        self.serve(shutdown).instrument(span).await
    }

    async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        use tracing::Instrument;
        let endpoint = quinn::Endpoint::new(
            EndpointConfig::default(),
            Some(self.quic),
            self.socket,
            Arc::new(quinn::TokioRuntime),
        )
        .context("failed to start the QUIC endpoint")?;
        let node = self.node;
        tracing::info!(name = %node.name, addr = %self.local_addr, "node listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        let admission = Admission::new(self.limits);
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = conns.join_next(), if !conns.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!("connection task panicked");
                        }
                    }
                }
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    if !incoming.remote_address_validated() && incoming.may_retry() {
                        // Stateless: costs the node one packet, and a
                        // spoofed source never gets past it.
                        if let Err(e) = incoming.retry() {
                            e.into_incoming().ignore();
                        }
                        continue;
                    }
                    let peer = incoming.remote_address();
                    let login = Arc::new(Mutex::new(LoginState::with_caps(peer, self.user_caps.clone())));
                    match admission.admit(Source::of(peer.ip()), login.clone()) {
                        Ok(slot) => {
                            let task = ConnTask {
                                node: node.clone(),
                                login,
                                slot,
                                login_timeout: self.login_timeout,
                                shutdown: stop_rx.clone(),
                            };
                            conns.spawn(task.run(incoming).in_current_span());
                        }
                        Err(why) => refuse(incoming, why, &refusing),
                    }
                }
            }
        }
        tracing::info!(name = %node.name, "shutting down");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = conns.len(),
                "requests still running after the grace period; aborting them"
            );
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
        endpoint.close(VarInt::from_u32(0), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
        tracing::info!(name = %node.name, "node stopped");
        drop(self.root_lock);
        Ok(())
    }
}

/// Installs handlers for Ctrl-C (SIGINT) and SIGTERM right away and
/// returns a future that completes on the first of them. Call it inside a
/// tokio runtime, before announcing that the node is up, so a signal sent
/// as soon as the node is announced is never missed.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = [SignalKind::interrupt(), SignalKind::terminate()].map(|kind| {
            signal(kind)
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for a shutdown signal"))
                .ok()
        });
        async move {
            let [int, term] = streams;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int) => {}
                () = wait(term) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn quic_config(config: &NodeConfig) -> anyhow::Result<quinn::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut config.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("failed to parse the node certificate")?;
    if certs.is_empty() {
        bail!("no certificate in the node certificate PEM");
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut config.key_pem.as_bytes())
        .context("failed to parse the node key")?
        .ok_or_else(|| anyhow!("no private key in the node key PEM"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 unavailable")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("node certificate and key do not match")?;
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).context("TLS config unusable for QUIC")?;
    let mut quic = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(8 << 20))
        .receive_window(VarInt::from_u32(16 << 20))
        .send_window(16 << 20)
        .max_idle_timeout(Some(IdleTimeout::try_from(IDLE_TIMEOUT)?));
    quic.transport_config(Arc::new(transport));
    Ok(quic)
}

fn bind_socket(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .context("failed to create the UDP socket")?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::warn!(error = %e, "could not enlarge the UDP send buffer");
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("failed to bind UDP {addr}"))?;
    socket
        .set_nonblocking(true)
        .context("failed to make the socket non-blocking")?;
    Ok(socket.into())
}
