//! QUIC sessions to nodes. This is the only module that touches streams.
//!
//! The endpoint trusts exactly one root: the cluster CA. Each node is dialled
//! with its name from `dfc.conf` as the TLS server name, so a node presenting
//! another node's certificate is refused. Every request opens its own
//! bidirectional stream on the node's single connection.
//!
//! Everything a node says is bounded (frame sizes, listing length and
//! duration, stalls) and every string it sends is passed through
//! [`sanitize`] before it can reach a terminal.

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream, TransportConfig, VarInt};
use thiserror::Error;
use wire::{
    decode_frame_header, decode_response, encode_request, BlobId, ErrorCode, Request, Response,
    FRAME_PREFIX_LEN,
};

use crate::config::ServerEntry;

mod batch;

pub(crate) use batch::BatchLimit;
pub use batch::{DataPage, PutFailure};

/// How long a dial may take before the node counts as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a small request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one step of the login exchange may take (hello, proof, key
/// record): tiny requests, so a node that accepts the connection and then
/// says nothing holds a command up for seconds, not for the request timeout.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a bulk transfer may go without progress before the node counts
/// as stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the client proves a connection alive when it has nothing else
/// to send.
pub const KEEP_ALIVE: Duration = Duration::from_millis(400);
/// How long a connection may go without hearing from the node before the
/// node counts as dead: a killed or frozen node fails every request in
/// flight on it within this time, whatever those requests' own deadlines.
/// A live node acknowledges the keep-alives even while it is busy, so a
/// slow transfer is left to [`STALL_TIMEOUT`].
pub const DEAD_AFTER: Duration = Duration::from_secs(2);

/// Most blobs a client accepts in one node's listing (a hostile node must
/// not make LIST grow without bound): about 330,000 files' worth.
pub const MAX_LISTING: usize = 1_000_000;
/// Longest a whole listing of one node may take.
pub const LISTING_DEADLINE: Duration = Duration::from_secs(300);
/// Longest node-supplied text kept for messages.
const MAX_NODE_TEXT: usize = 300;

/// Limits on talking to nodes: time, and how much of a listing is
/// believed. The defaults suit real use; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Dial and TLS handshake.
    pub connect: Duration,
    /// A small request, start to end.
    pub request: Duration,
    /// One step of the login exchange.
    pub login: Duration,
    /// A bulk transfer without progress.
    pub stall: Duration,
    /// A whole listing of one node.
    pub listing: Duration,
    /// Most entries accepted in one node's listing.
    pub listing_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: CONNECT_TIMEOUT,
            request: REQUEST_TIMEOUT,
            login: LOGIN_TIMEOUT,
            stall: STALL_TIMEOUT,
            listing: LISTING_DEADLINE,
            listing_entries: MAX_LISTING,
        }
    }
}

/// Makes node-supplied text safe to print: control characters (escape
/// sequences, carriage returns, bells, C1 controls) and bidirectional
/// overrides become `?`, and the text is cut to a bounded length.
pub fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_NODE_TEXT {
            out.push_str("...");
            break;
        }
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}');
        out.push(if c.is_control() || bidi { '?' } else { c });
    }
    out
}

/// Network and protocol failures talking to one node.
#[derive(Debug, Clone, Error)]
pub enum NetError {
    /// The address did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The node did not answer in time.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made or was lost.
    #[error("{0}")]
    Connection(String),
    /// The node broke the protocol (malformed or unexpected response).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The node refused the request. Codes the client knows are put in its
    /// own words (a node's text is only a detail).
    #[error("{}", describe(*code, message))]
    Node {
        /// Reason code.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
    },
}

/// The message for a node's refusal.
fn describe(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::NoSpace => "no space left on the node".into(),
        _ => message.to_string(),
    }
}

impl NetError {
    /// Whether the node answered with this error code.
    pub fn is_code(&self, want: ErrorCode) -> bool {
        matches!(self, NetError::Node { code, .. } if *code == want)
    }
}

/// A connection-level failure in words, with its cause ("connection
/// lost: timed out" for a node that went silent).
fn conn_err(e: impl std::error::Error) -> NetError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    // TLS alert 120: no application protocol in common, i.e. a node of
    // another protocol version (Vault 0.1 spoke `vault/1`).
    if text.contains("error 120") || text.contains("no_application_protocol") {
        return NetError::Connection(
            "the node speaks another protocol version (vault/1 is Vault 0.1); upgrade nodes and clients together".into(),
        );
    }
    NetError::Connection(sanitize(&text))
}

/// A TLS refusal because the node at `name`'s address presented another
/// node's certificate, put in words that point at the likely cause: the
/// `Server` lines of dfc.conf out of order. Any other error is returned as
/// it is.
fn wrong_node(e: NetError, name: &str, addr: &str) -> NetError {
    let NetError::Connection(text) = &e else {
        return e;
    };
    if !text.contains("certificate not valid for name") {
        return e;
    }
    // rustls: `... certificate is only valid for DnsName("DFS2")`.
    let presented = text
        .split("DnsName(\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .filter(|n| !n.is_empty() && n.len() <= 64);
    let whose = presented.map_or_else(|| "another node's".to_string(), |n| format!("{n}'s"));
    NetError::Connection(format!(
        "the node at {name}'s address ({addr}) presents {whose} certificate: are the Server lines in dfc.conf in order?"
    ))
}

/// Why the client endpoint could not be set up.
#[derive(Debug, Error)]
pub enum EndpointError {
    /// The CA file is not usable PEM or holds no certificate.
    #[error("the cluster CA file is unusable: {0}")]
    Ca(String),
    /// TLS could not be configured.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The UDP socket could not be opened.
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Builds the client endpoint, trusting only the CA certificates in `ca_pem`.
pub fn client_endpoint(ca_pem: &[u8]) -> Result<Endpoint, EndpointError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| EndpointError::Ca(format!("malformed certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| EndpointError::Ca(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(EndpointError::Ca("it holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| EndpointError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport()));

    let socket = udp_socket()?;
    let mut endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Transport limits sized for loopback and LAN bulk transfer while keeping
/// the client's buffered data (and so its memory) bounded.
fn transport() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(4 << 20));
    t.receive_window(VarInt::from_u32(16 << 20));
    t.send_window(8 << 20);
    t.max_idle_timeout(Some(
        DEAD_AFTER
            .try_into()
            .expect("DEAD_AFTER is a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t
}

/// A dual-stack UDP socket with enlarged buffers (loopback's 208 KiB
/// default drops packets at full speed). Falls back to IPv4.
fn udp_socket() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let make = |v6: bool| -> std::io::Result<UdpSocket> {
        let (domain, addr): (Domain, SocketAddr) = if v6 {
            (Domain::IPV6, (Ipv6Addr::UNSPECIFIED, 0).into())
        } else {
            (Domain::IPV4, ([0, 0, 0, 0], 0).into())
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if v6 {
            s.set_only_v6(false)?;
        }
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&addr.into())?;
        Ok(s.into())
    };
    make(true).or_else(|_| make(false))
}

/// A logged-in (or logging-in) connection to one node.
#[derive(Clone)]
pub struct Session {
    /// 0-based node number (dfc.conf order).
    pub node: usize,
    /// The node's name (`DFS1`...).
    pub name: String,
    conn: Connection,
    limits: Limits,
    /// Shared by every clone: see [`Session::mark_quiet`].
    quiet: Arc<AtomicBool>,
}

/// Dials `server` and completes the TLS handshake within the connect
/// timeout.
pub async fn dial(
    endpoint: &Endpoint,
    node: usize,
    server: &ServerEntry,
    limits: Limits,
) -> Result<Session, NetError> {
    let target = format!("{}:{}", server.host, server.port);
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target)
            .await
            .map_err(|_| NetError::Resolve(target.clone()))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| NetError::Resolve(target.clone()))?;
        let connecting = endpoint.connect(addr, &server.name).map_err(conn_err)?;
        connecting
            .await
            .map_err(|e| wrong_node(conn_err(e), &server.name, &target))
    };
    let conn = match tokio::time::timeout(limits.connect, attempt).await {
        Ok(conn) => conn?,
        Err(_) => {
            // The dropped handshake lingers in the endpoint, closing, for
            // three probe timeouts (3 s from the default initial RTT):
            // [`finish`] must not wait for it.
            ABANDONED.fetch_add(1, Ordering::Relaxed);
            return Err(NetError::Timeout);
        }
    };
    Ok(Session {
        node,
        name: server.name.clone(),
        conn,
        limits,
        quiet: Arc::new(AtomicBool::new(false)),
    })
}

/// Handshakes given up on (by every endpoint of this process): they
/// stay among an endpoint's connections until their close timer fires.
static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// How long [`finish`] waits, at most, for the close of the connections
/// that were up to reach their nodes.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(1);

/// Lets the close of every connection that was up reach its node (so the
/// node frees its slot at once rather than at its idle timeout) before the
/// process exits. Call after the sessions are closed.
///
/// [`Endpoint::wait_idle`] alone would also wait for handshakes given up
/// on, which stay for three probe timeouts (about 3 s) after a dial to an
/// unreachable node timed out: that would add a second to every command
/// while a node is down. So this waits, polling the endpoint's connection
/// count, only until no more than those abandoned handshakes remain, and
/// never longer than [`FINISH_TIMEOUT`].
pub async fn finish(endpoint: &Endpoint) {
    let done = async {
        loop {
            if endpoint.open_connections() <= ABANDONED.load(Ordering::Relaxed) {
                return;
            }
            tokio::select! {
                () = endpoint.wait_idle() => return,
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    };
    let _ = tokio::time::timeout(FINISH_TIMEOUT, done).await;
}

async fn read_frame(recv: &mut RecvStream) -> Result<Response, NetError> {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    recv.read_exact(&mut prefix).await.map_err(conn_err)?;
    let len = decode_frame_header(&prefix).map_err(|e| NetError::Protocol(e.to_string()))?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(conn_err)?;
    let resp = decode_response(&body).map_err(|e| NetError::Protocol(sanitize(&e.to_string())))?;
    match resp {
        Response::Error { code, message } => Err(NetError::Node {
            code,
            message: sanitize(&message),
        }),
        other => Ok(other),
    }
}

/// A response's kind, for messages (never its node-supplied fields).
fn kind(r: &Response) -> &'static str {
    match r {
        Response::Challenge { .. } => "Challenge",
        Response::LoggedIn => "LoggedIn",
        Response::Stored => "Stored",
        Response::Blob { .. } => "Blob",
        Response::BlobRange { .. } => "BlobRange",
        Response::Listing { .. } => "Listing",
        Response::Deleted => "Deleted",
        Response::Status(_) => "Status",
        Response::DataListing { .. } => "DataListing",
        Response::Blobs { .. } => "Blobs",
        Response::BatchStored { .. } => "BatchStored",
        Response::BatchDeleted { .. } => "BatchDeleted",
        Response::Stats { .. } => "Stats",
        Response::Record(_) => "Record",
        Response::RecordStored => "RecordStored",
        Response::Error { .. } => "Error",
    }
}

/// The error for a response of the wrong kind.
pub fn unexpected(what: &str, got: &Response) -> NetError {
    NetError::Protocol(format!("expected {what}, got {}", kind(got)))
}

impl Session {
    /// Closes the connection politely.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }

    async fn open(&self, req: &Request) -> Result<(SendStream, RecvStream), NetError> {
        let (mut send, recv) = self.conn.open_bi().await.map_err(conn_err)?;
        send.write_all(&encode_request(req))
            .await
            .map_err(conn_err)?;
        Ok((send, recv))
    }

    /// [`Session::call`] under the login timeout.
    pub async fn call_login(&self, req: &Request) -> Result<Response, NetError> {
        tokio::time::timeout(self.limits.login, self.call(req))
            .await
            .map_err(|_| NetError::Timeout)?
    }

    /// Sends a request without bulk data and returns the (non-error) answer.
    pub async fn call(&self, req: &Request) -> Result<Response, NetError> {
        let exchange = async {
            let (mut send, mut recv) = self.open(req).await?;
            send.finish().map_err(conn_err)?;
            let resp = read_frame(&mut recv).await;
            if !matches!(resp, Err(NetError::Connection(_))) {
                self.heard();
            }
            let resp = resp?;
            let _ = recv.read_to_end(0).await;
            Ok(resp)
        };
        tokio::time::timeout(self.limits.request, exchange)
            .await
            .map_err(|_| NetError::Timeout)?
    }

    /// Whether the connection is gone (closed, lost, or the node went
    /// silent for [`DEAD_AFTER`]): every request on it fails at once.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Notes that the node left a request unanswered while the other
    /// nodes answered theirs: operations with a choice of nodes try the
    /// others first. Its next answer clears the note.
    pub fn mark_quiet(&self) {
        self.quiet.store(true, Ordering::Relaxed);
    }

    /// Whether the node is better avoided: marked quiet and silent since,
    /// or its connection is gone.
    pub fn is_quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed) || self.is_closed()
    }

    /// The node answered.
    fn heard(&self) {
        self.quiet.store(false, Ordering::Relaxed);
    }

    /// The connection's current round-trip time.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// The time limits this session applies.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Starts an upload of exactly `len` bytes to blob `id`.
    pub async fn put(&self, id: &BlobId, len: u64) -> Result<Upload, NetError> {
        self.put_if(id, len, None).await
    }

    /// [`Session::put`] that replaces only what `expect` says the node
    /// holds; otherwise the node answers `Conflict` and changes nothing.
    pub async fn put_if(
        &self,
        id: &BlobId,
        len: u64,
        expect: Option<wire::Expect>,
    ) -> Result<Upload, NetError> {
        let req = Request::PutBlob {
            id: id.clone(),
            len,
            expect,
        };
        let (send, recv) = tokio::time::timeout(self.limits.request, self.open(&req))
            .await
            .map_err(|_| NetError::Timeout)??;
        Ok(Upload {
            send,
            recv,
            remaining: len,
            limits: self.limits,
        })
    }

    /// Uploads a small blob held in memory.
    pub async fn put_bytes(&self, id: &BlobId, bytes: &[u8]) -> Result<(), NetError> {
        self.put_bytes_if(id, bytes, None).await
    }

    /// [`Session::put_bytes`] under a condition (see [`Session::put_if`]).
    pub async fn put_bytes_if(
        &self,
        id: &BlobId,
        bytes: &[u8],
        expect: Option<wire::Expect>,
    ) -> Result<(), NetError> {
        let mut up = self.put_if(id, bytes.len() as u64, expect).await?;
        up.write(bytes).await?;
        up.finish().await
    }

    /// Starts a download of blob `id`; `Ok(None)` if the node has no such blob.
    pub async fn get(&self, id: &BlobId) -> Result<Option<Download>, NetError> {
        let req = Request::GetBlob { id: id.clone() };
        self.download(&req, |resp| match resp {
            Response::Blob { len } => Ok((len, len)),
            other => Err(unexpected("Blob", &other)),
        })
        .await
    }

    /// Starts a download of part of blob `id`: the bytes from `offset` on,
    /// at most `len` of them (`None`: to the end). `Ok(None)` if the node
    /// has no such blob. The [`Download`]'s `total` is the whole blob's
    /// length as the node announced it, and its `len` the bytes that
    /// follow: exactly `min(len, total - offset)`, or the answer is a
    /// protocol error. An `offset` past the end is refused by the node
    /// (`BadRequest`), as is the request by a node that predates it.
    pub async fn get_range(
        &self,
        id: &BlobId,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<Download>, NetError> {
        let req = Request::GetBlobRange {
            id: id.clone(),
            offset,
            len,
        };
        self.download(&req, |resp| match resp {
            Response::BlobRange { total, len: got } => {
                let due = total
                    .checked_sub(offset)
                    .map(|rest| len.map_or(rest, |l| l.min(rest)));
                if due != Some(got) {
                    return Err(NetError::Protocol(format!(
                        "asked for bytes from {offset} of a blob of {total}, got {got}"
                    )));
                }
                Ok((got, total))
            }
            other => Err(unexpected("BlobRange", &other)),
        })
        .await
    }

    /// Sends `req` and, when `accept` takes the answer as `(bytes that
    /// follow, whole blob's length)`, the [`Download`] of those bytes;
    /// `Ok(None)` for a blob the node does not hold.
    async fn download(
        &self,
        req: &Request,
        accept: impl FnOnce(Response) -> Result<(u64, u64), NetError>,
    ) -> Result<Option<Download>, NetError> {
        let opened = async {
            let (mut send, mut recv) = self.open(req).await?;
            send.finish().map_err(conn_err)?;
            let resp = read_frame(&mut recv).await;
            if !matches!(resp, Err(NetError::Connection(_))) {
                self.heard();
            }
            match resp {
                Ok(resp) => match accept(resp) {
                    Ok((len, total)) => Ok(Some(Download {
                        recv,
                        remaining: len,
                        len,
                        total,
                        stall: self.limits.stall,
                    })),
                    Err(e) => {
                        let _ = recv.stop(0u32.into());
                        Err(e)
                    }
                },
                Err(e) if e.is_code(ErrorCode::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        };
        tokio::time::timeout(self.limits.request, opened)
            .await
            .map_err(|_| NetError::Timeout)?
    }

    /// Reads a whole small blob, refusing blobs over `max` bytes.
    /// The whole read must finish within the request timeout, so a node
    /// trickling bytes cannot hold a command up.
    pub async fn get_bytes(&self, id: &BlobId, max: usize) -> Result<Option<Vec<u8>>, NetError> {
        let read = async {
            let Some(mut dl) = self.get(id).await? else {
                return Ok(None);
            };
            if dl.len > max as u64 {
                let len = dl.len;
                dl.cancel();
                return Err(NetError::Protocol(format!(
                    "blob of {len} bytes is too large"
                )));
            }
            let mut out = Vec::with_capacity(dl.len as usize);
            while let Some(chunk) = dl.next_chunk(64 * 1024).await? {
                out.extend_from_slice(&chunk);
            }
            Ok(Some(out))
        };
        tokio::time::timeout(self.limits.request, read)
            .await
            .map_err(|_| NetError::Timeout)?
    }
}

/// Writes bulk bytes of a request, giving up when nothing moves for the
/// stall timeout. A node that refuses the rest mid-stream (disk full, quota)
/// stops the stream and answers why: that answer is the error returned,
/// not the bare "stopped".
pub(crate) async fn send_bulk(
    send: &mut SendStream,
    recv: &mut RecvStream,
    bytes: &[u8],
    limits: Limits,
) -> Result<(), NetError> {
    match tokio::time::timeout(limits.stall, send.write_all(bytes)).await {
        Err(_) => Err(NetError::Timeout),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ quinn::WriteError::Stopped(_))) => {
            match tokio::time::timeout(limits.request, read_frame(recv)).await {
                Ok(Err(answer @ NetError::Node { .. })) => Err(answer),
                _ => Err(conn_err(e)),
            }
        }
        Ok(Err(e)) => Err(conn_err(e)),
    }
}

/// An upload in progress. Dropping it without [`Upload::finish`] resets the
/// stream, and the node discards what it received.
pub struct Upload {
    send: SendStream,
    recv: RecvStream,
    remaining: u64,
    limits: Limits,
}

impl Upload {
    /// Sends the next bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        if bytes.len() as u64 > self.remaining {
            return Err(NetError::Protocol("upload longer than announced".into()));
        }
        send_bulk(&mut self.send, &mut self.recv, bytes, self.limits).await?;
        self.remaining -= bytes.len() as u64;
        Ok(())
    }

    /// Ends the upload and waits until the node has stored the blob durably.
    pub async fn finish(mut self) -> Result<(), NetError> {
        if self.remaining != 0 {
            return Err(NetError::Protocol("upload shorter than announced".into()));
        }
        self.send.finish().map_err(conn_err)?;
        let resp = tokio::time::timeout(self.limits.request, read_frame(&mut self.recv))
            .await
            .map_err(|_| NetError::Timeout)??;
        match resp {
            Response::Stored => Ok(()),
            other => Err(unexpected("Stored", &other)),
        }
    }

    /// Abandons the upload.
    pub fn abort(mut self) {
        let _ = self.send.reset(1u32.into());
    }
}

/// A download in progress.
pub struct Download {
    recv: RecvStream,
    remaining: u64,
    /// Bytes the node announced to send: the whole blob for
    /// [`Session::get`], the range for [`Session::get_range`].
    pub len: u64,
    /// The whole blob's length as the node announced it (equal to `len`
    /// for [`Session::get`]).
    pub total: u64,
    stall: Duration,
}

impl Download {
    /// The next piece of the blob (at most `max` bytes), `None` at the end.
    /// Fails if the node stalls or sends more or fewer bytes than announced.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<bytes::Bytes>, NetError> {
        if self.remaining == 0 {
            // Expect the end of the stream: nothing may follow.
            let tail = tokio::time::timeout(self.stall, self.recv.read_chunk(1, true))
                .await
                .map_err(|_| NetError::Timeout)?
                .map_err(conn_err)?;
            return match tail {
                None => Ok(None),
                Some(_) => Err(NetError::Protocol("blob longer than announced".into())),
            };
        }
        let want = (max as u64).min(self.remaining) as usize;
        let chunk = tokio::time::timeout(self.stall, self.recv.read_chunk(want, true))
            .await
            .map_err(|_| NetError::Timeout)?
            .map_err(conn_err)?;
        match chunk {
            Some(c) => {
                self.remaining -= c.bytes.len() as u64;
                Ok(Some(c.bytes))
            }
            None => Err(NetError::Protocol("blob shorter than announced".into())),
        }
    }

    /// Stops the download early.
    pub fn cancel(mut self) {
        let _ = self.recv.stop(0u32.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_nodes_certificate_points_at_the_server_lines() {
        let tls = NetError::Connection(
            "aborted by peer: the cryptographic handshake failed: error 42: invalid peer certificate: certificate not valid for name \"DFS1\"; certificate is only valid for DnsName(\"DFS2\")".into(),
        );
        let e = wrong_node(tls, "DFS1", "127.0.0.1:10001").to_string();
        assert_eq!(
            e,
            "the node at DFS1's address (127.0.0.1:10001) presents DFS2's certificate: are the Server lines in dfc.conf in order?"
        );
        let other = wrong_node(NetError::Timeout, "DFS1", "x").to_string();
        assert_eq!(other, "timed out");
    }

    #[test]
    fn node_text_loses_escape_sequences_and_is_bounded() {
        let hostile = "no blob \x1b]0;pwned\x07\x1b[2J\r\u{9b}31m \u{202e}txt.exe";
        let clean = sanitize(hostile);
        assert!(!clean.chars().any(|c| c.is_control()), "{clean:?}");
        assert!(!clean.contains('\u{202e}'));
        assert!(clean.starts_with("no blob ?]0;pwned?"));
        let long = "x".repeat(10_000);
        assert!(sanitize(&long).len() <= MAX_NODE_TEXT + 3);
        assert_eq!(sanitize("plain text, ünïcode"), "plain text, ünïcode");
    }
}
