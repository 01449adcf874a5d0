//! In-process nodes and a raw QUIC test client for the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use md5::{Digest, Md5};
use ring::signature::KeyPair;
use serde::Serialize;
use tokio::sync::oneshot;
use vault_node::certs::{self, ClusterCerts};
use vault_node::{kdf, NodeConfig, Server, ThrottleConfig, UserDb};
use wire::{
    decode_frame_header, decode_response, encode_request, AuthScheme, KdfParams, Proof, Request,
    Response, FRAME_PREFIX_LEN,
};

/// Upper bound on any single test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body under [`TEST_TIMEOUT`].
pub async fn timed<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// Cheap Argon2id costs for test accounts (the node does not care).
pub fn cheap_kdf(salt: u8) -> KdfParams {
    KdfParams {
        salt: vec![salt; 16],
        m_kib: 256,
        t: 1,
        p: 1,
    }
}

pub fn md5(s: &str) -> Vec<u8> {
    Md5::digest(s.as_bytes()).to_vec()
}

/// alice: MD5 entry (Crimson33); bob: plain entry (Velvet77); carol:
/// upgraded entry (Magellan101, cheap costs).
pub fn users_text() -> String {
    let key = kdf::public_key_for_password(b"Magellan101", &cheap_kdf(7)).unwrap();
    format!(
        "# test users\r\nUsername: Alice\r\nPassword: {}\r\n\r\nBob Velvet77\r\n{}\r\n",
        hex::encode(md5("Crimson33")),
        vault_node::users::upgraded_line("Carol", &cheap_kdf(7), &key)
    )
}

pub struct Cluster {
    pub certs: ClusterCerts,
}

impl Cluster {
    pub fn new() -> Self {
        Cluster {
            certs: certs::generate(&["DFS1", "DFS2"], &certs::default_sans()).unwrap(),
        }
    }

    pub fn config(&self, node: usize, root: &Path) -> NodeConfig {
        let n = &self.certs.nodes[node];
        let users = UserDb::parse(&users_text(), "test-users").unwrap();
        NodeConfig::new(
            n.name.clone(),
            root,
            "127.0.0.1:0".parse().unwrap(),
            users,
            n.cert_pem.clone(),
            n.key_pem.clone(),
        )
    }
}

/// A node running in this process.
pub struct TestNode {
    pub name: String,
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestNode {
    /// Starts DFS1 with default settings in a fresh temp root.
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    /// Starts DFS1 after `tweak` adjusted its configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let cluster = Cluster::new();
        let dir = tempfile::tempdir().unwrap();
        let mut config = cluster.config(0, dir.path());
        tweak(&mut config);
        let mut node = Self::spawn(config, cluster.certs.ca_cert_pem.clone());
        node._dir = Some(dir);
        node
    }

    /// Runs `config` (the caller keeps its root alive).
    pub fn spawn(config: NodeConfig, ca_pem: String) -> TestNode {
        let name = config.name.clone();
        let root = config.root.clone();
        let server = Server::bind(config).unwrap();
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestNode {
            name,
            addr,
            ca_pem,
            root,
            _dir: None,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr, &self.ca_pem, &self.name)
            .await
            .unwrap()
    }

    /// A client logged in as `user` with the MD5 proof of `password`.
    pub async fn md5_client(&self, user: &str, password: &str) -> Client {
        let c = self.client().await;
        let r = c.login_md5(user, password).await.unwrap();
        assert_eq!(r, Response::LoggedIn, "login as {user}");
        c
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await?,
            None => Ok(()),
        }
    }

    /// A closure that signals shutdown without waiting for it.
    pub fn stop_signal(&mut self) -> impl FnOnce() + Send + 'static {
        let tx = self.stop.take();
        move || {
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        }
    }

    /// Every file under the root, relative, except the node's metadata.
    pub fn user_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
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
        } else {
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        }
    }
}

/// Polls `cond` until it holds, up to 10 s; for effects the node makes
/// after a client went away.
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

pub fn client_tls(ca_pem: &str) -> anyhow::Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// A raw protocol client: one stream per request, no conveniences beyond
/// framing.
pub struct Client {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
}

impl Client {
    pub async fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        server_name: &str,
    ) -> anyhow::Result<Client> {
        Self::connect_with(addr, ca_pem, server_name, None).await
    }

    /// [`Client::connect`] with QUIC keep-alives every `keep_alive`, so the
    /// connection never goes idle.
    pub async fn connect_with(
        addr: SocketAddr,
        ca_pem: &str,
        server_name: &str,
        keep_alive: Option<Duration>,
    ) -> anyhow::Result<Client> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let mut config = client_tls(ca_pem)?;
        if let Some(every) = keep_alive {
            let mut transport = quinn::TransportConfig::default();
            transport.keep_alive_interval(Some(every));
            config.transport_config(Arc::new(transport));
        }
        endpoint.set_default_client_config(config);
        let conn = endpoint.connect(addr, server_name)?.await?;
        Ok(Client { endpoint, conn })
    }

    /// Sends `bytes` as the whole request stream, then reads the response
    /// frame and whatever bulk follows it.
    pub async fn raw(&self, bytes: &[u8]) -> anyhow::Result<(Response, Vec<u8>)> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(bytes).await?;
        send.finish()?;
        read_response(&mut recv).await
    }

    pub async fn request(&self, req: &Request, bulk: &[u8]) -> anyhow::Result<(Response, Vec<u8>)> {
        let mut bytes = encode_request(req);
        bytes.extend_from_slice(bulk);
        self.raw(&bytes).await
    }

    pub async fn call(&self, req: &Request) -> Response {
        self.request(req, &[]).await.unwrap().0
    }

    pub async fn hello(&self, user: &str) -> anyhow::Result<(Vec<u8>, AuthScheme)> {
        match self.call(&Request::Hello { user: user.into() }).await {
            Response::Challenge { challenge, scheme } => Ok((challenge, scheme)),
            other => bail!("unexpected hello answer {other:?}"),
        }
    }

    pub async fn login_md5(&self, user: &str, password: &str) -> anyhow::Result<Response> {
        self.hello(user).await?;
        let proof = Proof::LegacyMd5(md5(password));
        Ok(self
            .call(&Request::Login {
                user: user.into(),
                proof,
            })
            .await)
    }

    /// Hello, derive the login key from the announced salt and costs, sign.
    pub async fn login_signature(
        &self,
        node: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Response> {
        let (challenge, scheme) = self.hello(user).await?;
        let AuthScheme::Upgraded(kdf) = scheme else {
            bail!("node announced a legacy scheme");
        };
        let root = kdf::derive_root(password.as_bytes(), &kdf)?;
        let seed = kdf::login_seed(&root);
        let pair = kdf::login_key_pair(&seed);
        let _ = pair.public_key();
        let lower = user.to_ascii_lowercase();
        let sig = pair.sign(&wire::login_message(node, &lower, &challenge));
        let proof = Proof::Signature(sig.as_ref().to_vec());
        Ok(self
            .call(&Request::Login {
                user: user.into(),
                proof,
            })
            .await)
    }

    pub async fn put(&self, id: &str, data: &[u8]) -> Response {
        let req = Request::PutBlob {
            id: wire::BlobId::new(id).unwrap(),
            len: data.len() as u64,
        };
        self.request(&req, data).await.unwrap().0
    }

    pub async fn get(&self, id: &str) -> (Response, Vec<u8>) {
        let req = Request::GetBlob {
            id: wire::BlobId::new(id).unwrap(),
        };
        self.request(&req, &[]).await.unwrap()
    }
}

/// Reads one response frame and the bulk bytes after it, up to 64 MiB.
pub async fn read_response(recv: &mut quinn::RecvStream) -> anyhow::Result<(Response, Vec<u8>)> {
    let all = recv
        .read_to_end(64 << 20)
        .await
        .context("reading the response")?;
    let prefix: &[u8; FRAME_PREFIX_LEN] = all
        .get(..FRAME_PREFIX_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| anyhow!("short response"))?;
    let len = decode_frame_header(prefix)?;
    let body = all
        .get(FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + len)
        .ok_or_else(|| anyhow!("truncated response"))?;
    let resp = decode_response(body)?;
    Ok((resp, all[FRAME_PREFIX_LEN + len..].to_vec()))
}

/// Requests with unvalidated string ids, serialised exactly like
/// [`wire::Request`] (serde's externally tagged enums), to get hostile ids
/// past the client-side validation.
#[derive(Serialize)]
pub enum RawRequest {
    PutBlob { id: String, len: u64 },
    GetBlob { id: String },
    List { after: Option<String>, limit: u32 },
    Delete { id: String },
}

/// `version | length | body` around `body`.
pub fn frame(version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = version.to_be_bytes().to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn raw_frame(req: &RawRequest) -> Vec<u8> {
    let mut body = Vec::new();
    ciborium::into_writer(req, &mut body).unwrap();
    frame(wire::PROTOCOL_VERSION, &body)
}

pub fn error_code(resp: &Response) -> Option<wire::ErrorCode> {
    match resp {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// The application close code and reason the node closed `conn` with,
/// waiting for the close up to 5 s.
pub async fn closed_by_node(conn: &quinn::Connection) -> Option<(u64, String)> {
    let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .ok()?;
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => Some((
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        )),
        _ => None,
    }
}

pub fn tiny_throttle() -> ThrottleConfig {
    ThrottleConfig {
        free_failures: 2,
        base_delay: Duration::from_millis(300),
        max_ip_delay: Duration::from_millis(300),
        max_user_delay: Duration::from_millis(300),
        idle_reset: Duration::from_secs(60),
        max_tracked: 1000,
    }
}
