//! The hostile proxy: a QUIC server presenting a node's own certificate,
//! in front of that node, consulting a [`Lie`] for every request.
//!
//! Started by [`TestCluster::make_hostile`](crate::testing::TestCluster::make_hostile).
//! Each client connection gets its own upstream connection to the real
//! node (trusting the cluster CA, server name = the node's name), made
//! before the client's handshake is accepted: while the node is down, the
//! proxy refuses connections. Every client stream is one request:
//!
//! 1. read the request frame (bounded by [`wire::MAX_FRAME_BODY_LEN`]) and,
//!    for `PutBlob` and `PutBlobs`, its bulk bytes (at most
//!    [`MAX_BULK_LEN`]), within [`REQUEST_TIMEOUT`];
//! 2. record it in [`Observed`], ask [`Lie::on_request`];
//! 3. if forwarded: send the exact bytes received to the node, read its
//!    response frame and, for `Blob`, `BlobRange`, `Blobs` and `DataListing`, the bulk
//!    it announces ([`response_bulk_len`]; same bounds, within
//!    [`UPSTREAM_TIMEOUT`]), ask [`Lie::on_response`];
//! 4. write the [`Reply`].
//!
//! Requests that do not decode, uploads over the limit, timeouts, a node
//! failing mid-exchange and lies that panic are logged and the client's
//! stream is reset. When the node closes the upstream connection (it
//! stopped), the proxy closes the client's connection with the node's own
//! code and reason.
//!
//! # A slow link
//!
//! [`TestCluster::slow_down`](crate::testing::TestCluster::slow_down) gives
//! the proxy a rate in bytes per second, shared by every stream of every
//! client connection to it (one schedule: parallel uploads split the rate;
//! bursts of at most 1/16 s worth). While it is set:
//!
//! - step 1 reads an upload's bulk in chunks of at most 1/16 s worth
//!   (64 KiB at most), waiting its turn after each, so the client's data
//!   waits in the proxy's QUIC receive buffer and the proxy grants flow
//!   control credit at the rate;
//! - connections accepted while it is set advertise a connection receive
//!   window of 1/8 s worth (32 KiB to 16 MiB) instead of 16 MiB, so a
//!   client's writes block once that much is in flight; live connections
//!   have their window shrunk the same way (credit already granted stays
//!   granted) and grown back to 16 MiB when the rate is lifted;
//! - step 4 writes the bulk of a [`Reply::Send`] (a `Blob`, `BlobRange`,
//!   `Blobs` or `DataListing` answer's bytes) in such chunks, each after
//!   its turn.
//!
//! Frames, [`Reply::Raw`] bytes and the exchange with the node are not
//! slowed (the node sees a fast client), and the timeouts above still
//! apply. A rate change takes effect at once, waking streams waiting their
//! turn. With no rate set (the default, and after it is lifted) the proxy
//! reads and writes as described above, in one piece.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{
    Connection, ConnectionError, IdleTimeout, RecvStream, SendStream, TransportConfig, VarInt,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use wire::{
    decode_frame_header, decode_request, decode_response, Request, Response, FRAME_PREFIX_LEN,
};

use super::lie::{Lie, Reply, Verdict};
use super::observed::Observed;
use super::raw::{client_tls, frame_of, request_bulk_len, response_bulk_len};

/// Largest upload or served blob the proxy buffers (256 MiB).
pub const MAX_BULK_LEN: usize = 256 << 20;
/// Time a client has to send a whole request (frame and bulk).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Time the real node has to take a forwarded request and answer it.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// Time the proxy gives the real node to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to write a reply, and then for the client to acknowledge it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream error code of [`Reply::Reset`].
const RESET: VarInt = VarInt::from_u32(1);
/// The proxy's connection receive window with no rate set.
const RECEIVE_WINDOW: u64 = 16 << 20;
/// Smallest connection receive window under a rate.
const MIN_SLOW_WINDOW: u64 = 32 << 10;
/// Largest chunk read or written at once under a rate.
const MAX_PACED_CHUNK: u64 = 64 << 10;

/// The proxy's byte rate and its schedule, shared by all its streams.
struct Throttle {
    /// Bytes per second; 0 is unlimited.
    rate: watch::Sender<u64>,
    /// When the bytes granted so far have had their time at the rate.
    next: Mutex<Instant>,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle {
            rate: watch::channel(0).0,
            next: Mutex::new(Instant::now()),
        }
    }

    fn rate(&self) -> u64 {
        *self.rate.borrow()
    }

    fn limited(&self) -> bool {
        self.rate() != 0
    }

    /// Sets the rate (0 or `u64::MAX`: unlimited), restarting the schedule
    /// and waking every stream waiting its turn.
    fn set(&self, bytes_per_sec: u64) {
        let rate = if bytes_per_sec == u64::MAX {
            0
        } else {
            bytes_per_sec
        };
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.rate.send_replace(rate);
    }

    /// How many bytes to read or write before the next turn: 1/16 s worth,
    /// between 1 byte and [`MAX_PACED_CHUNK`].
    fn chunk(&self) -> usize {
        match self.rate() {
            0 => MAX_PACED_CHUNK as usize,
            rate => (rate / 16).clamp(1, MAX_PACED_CHUNK) as usize,
        }
    }

    /// Takes `n` bytes' turn: waits until they have had their time at the
    /// rate after every byte granted before them (at once if unlimited),
    /// or until the rate changes.
    async fn pace(&self, n: usize) {
        let mut changed = self.rate.subscribe();
        let rate = *changed.borrow_and_update();
        if rate == 0 || n == 0 {
            return;
        }
        let due = {
            // Up to one chunk's time of lag is made up, so timer
            // granularity does not eat into the rate; idle time beyond it
            // is not.
            let slack = Duration::from_secs_f64(self.chunk() as f64 / rate as f64);
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now.checked_sub(slack).unwrap_or(now));
            *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
            *next
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = changed.changed() => {}
        }
    }
}

/// The connection receive window for `rate` (0: unlimited).
fn receive_window(rate: u64) -> VarInt {
    let window = match rate {
        0 => RECEIVE_WINDOW,
        rate => (rate / 8).clamp(MIN_SLOW_WINDOW, RECEIVE_WINDOW),
    };
    VarInt::from_u64(window).unwrap_or(VarInt::MAX)
}

struct Shared {
    name: String,
    upstream: Mutex<SocketAddr>,
    lie: Mutex<Arc<dyn Lie>>,
    observed: Arc<Observed>,
    throttle: Arc<Throttle>,
}

impl Shared {
    fn lie(&self) -> Arc<dyn Lie> {
        self.lie.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy; dropping it stops it.
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    server: quinn::ServerConfig,
    _stop: oneshot::Sender<()>,
}

/// What the proxy needs to know of the node it stands in front of.
pub(crate) struct Target<'a> {
    pub name: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub ca_pem: &'a str,
    pub addr: SocketAddr,
}

impl Proxy {
    /// Binds 127.0.0.1:0 and starts serving. Needs a tokio runtime.
    pub(crate) fn start(target: Target<'_>, lie: Arc<dyn Lie>) -> anyhow::Result<Proxy> {
        let server = server_config(target.cert_pem, target.key_pem)?;
        let mut endpoint = quinn::Endpoint::server(server.clone(), "127.0.0.1:0".parse()?)
            .context("failed to bind the proxy")?;
        let mut client = client_tls(target.ca_pem)?;
        client.transport_config(Arc::new(upstream_transport()?));
        endpoint.set_default_client_config(client);
        let addr = endpoint.local_addr()?;
        let shared = Arc::new(Shared {
            name: target.name.to_string(),
            upstream: Mutex::new(target.addr),
            lie: Mutex::new(lie),
            observed: Arc::new(Observed::default()),
            throttle: Arc::new(Throttle::new()),
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(run(endpoint.clone(), shared.clone(), stopped));
        tracing::debug!(node = %target.name, %addr, "hostile proxy listening");
        Ok(Proxy {
            addr,
            shared,
            endpoint,
            server,
            _stop: stop,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn observed(&self) -> Arc<Observed> {
        self.shared.observed.clone()
    }

    /// Replaces the lie for streams opened from now on.
    pub(crate) fn set_lie(&self, lie: Arc<dyn Lie>) {
        *self.shared.lie.lock().unwrap_or_else(|e| e.into_inner()) = lie;
    }

    /// Moves the bulk of uploads and answers at `bytes_per_sec` at most,
    /// shared by all streams (0 or `u64::MAX`: unlimited); see the module
    /// docs. Applies at once to live streams and connections, and to
    /// connections accepted from now on.
    pub(crate) fn set_rate(&self, bytes_per_sec: u64) -> anyhow::Result<()> {
        self.shared.throttle.set(bytes_per_sec);
        let mut server = self.server.clone();
        server.transport_config(Arc::new(server_transport(self.shared.throttle.rate())?));
        self.endpoint.set_server_config(Some(server));
        Ok(())
    }

    /// Points new connections at the node's new address.
    pub(crate) fn set_upstream(&self, addr: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = addr;
    }
}

async fn run(endpoint: quinn::Endpoint, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(done) = conns.join_next(), if !conns.is_empty() => log_join("connection", done),
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    conns.spawn(serve(incoming, endpoint.clone(), shared.clone()));
                }
                None => break,
            },
        }
    }
    // Close first, so dropping the tasks' streams sends nothing more.
    endpoint.close(VarInt::from_u32(0), b"proxy stopped");
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, endpoint.wait_idle()).await;
    tracing::debug!(node = %shared.name, "hostile proxy stopped");
}

fn log_join(what: &str, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!("proxy {what} task panicked");
        }
    }
}

async fn serve(incoming: quinn::Incoming, endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let peer = incoming.remote_address();
    let upstream = async {
        let connecting = endpoint.connect(shared.upstream(), &shared.name)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(conn) => Ok(conn?),
            Err(_) => bail!("node did not answer within {CONNECT_TIMEOUT:?}"),
        }
    };
    let up = match upstream.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!(node = %shared.name, %peer, error = %e, "proxy: node unreachable; refusing the client");
            incoming.refuse();
            return;
        }
    };
    let down = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "proxy: client handshake failed");
            up.close(VarInt::from_u32(0), b"client gone");
            return;
        }
    };
    shared.observed.connected();
    let mut rate = shared.throttle.rate.subscribe();
    if *rate.borrow_and_update() != 0 {
        down.set_receive_window(receive_window(*rate.borrow()));
    }
    let mut streams = JoinSet::new();
    let node_closed = loop {
        tokio::select! {
            stream = down.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let (lie, observed, up) = (shared.lie(), shared.observed.clone(), up.clone());
                    let throttle = shared.throttle.clone();
                    streams.spawn(exchange(lie, observed, throttle, up, send, recv));
                }
                Err(_) => break None,
            },
            reason = up.closed() => break Some(reason),
            Ok(()) = rate.changed() => {
                down.set_receive_window(receive_window(*rate.borrow_and_update()));
            }
            Some(done) = streams.join_next(), if !streams.is_empty() => log_join("stream", done),
        }
    };
    match node_closed {
        Some(ConnectionError::ApplicationClosed(close)) => {
            down.close(close.error_code, &close.reason);
        }
        Some(other) => {
            tracing::debug!(node = %shared.name, error = %other, "proxy: node connection lost");
            down.close(VarInt::from_u32(0), b"node unreachable");
        }
        None => up.close(VarInt::from_u32(0), b"client gone"),
    }
    streams.abort_all();
    while streams.join_next().await.is_some() {}
}

/// A request as received: its exact frame bytes, decoded, and its bulk.
struct Received {
    frame: Vec<u8>,
    req: Request,
    bulk: Vec<u8>,
}

async fn exchange(
    lie: Arc<dyn Lie>,
    observed: Arc<Observed>,
    throttle: Arc<Throttle>,
    up: Connection,
    send: SendStream,
    mut recv: RecvStream,
) {
    let read = read_request(&mut recv, &throttle);
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Err(_) => {
            tracing::warn!("proxy: request timed out; resetting the stream");
            Reply::Reset
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "proxy: bad request; resetting the stream");
            Reply::Reset
        }
        Ok(Ok(received)) => {
            observed.record(&received.req);
            respond(&*lie, &up, received).await
        }
    };
    let _ = recv.stop(VarInt::from_u32(0));
    write_reply(send, reply, &throttle).await;
}

/// Calls the lie, turning a panic into a reset stream.
fn ask<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::error!("proxy: the lie panicked in {what}; resetting the stream");
            None
        }
    }
}

async fn respond(lie: &dyn Lie, up: &Connection, r: Received) -> Reply {
    match ask("on_request", || lie.on_request(&r.req, &r.bulk)) {
        None => Reply::Reset,
        Some(Verdict::Answer(reply)) => reply,
        Some(Verdict::Forward) => {
            let answer =
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward(up, &r.req, &r.frame, &r.bulk));
            match answer.await {
                Ok(Ok((resp, bulk))) => ask("on_response", || lie.on_response(&r.req, resp, bulk))
                    .unwrap_or(Reply::Reset),
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "proxy: node exchange failed; resetting the stream");
                    Reply::Reset
                }
                Err(_) => {
                    tracing::warn!("proxy: node did not answer in time; resetting the stream");
                    Reply::Reset
                }
            }
        }
    }
}

fn bulk_len(len: u64, what: &str) -> anyhow::Result<usize> {
    usize::try_from(len)
        .ok()
        .filter(|n| *n <= MAX_BULK_LEN)
        .ok_or_else(|| {
            anyhow!("{what} of {len} bytes is over the proxy's {MAX_BULK_LEN}-byte limit")
        })
}

async fn read_frame(recv: &mut RecvStream) -> anyhow::Result<Vec<u8>> {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    recv.read_exact(&mut prefix)
        .await
        .context("reading the frame prefix")?;
    let len = decode_frame_header(&prefix)?;
    let mut frame = vec![0u8; FRAME_PREFIX_LEN + len];
    frame[..FRAME_PREFIX_LEN].copy_from_slice(&prefix);
    recv.read_exact(&mut frame[FRAME_PREFIX_LEN..])
        .await
        .context("reading the frame body")?;
    Ok(frame)
}

async fn read_request(recv: &mut RecvStream, throttle: &Throttle) -> anyhow::Result<Received> {
    let frame = read_frame(recv).await?;
    let req = decode_request(&frame[FRAME_PREFIX_LEN..])?;
    let bulk = match &req {
        // Exactly what the client sent up to its FIN, so the node sees the
        // same short upload; more than announced is refused here.
        Request::PutBlob { .. } | Request::PutBlobs { .. } => {
            let limit = bulk_len(request_bulk_len(&req), "upload")?;
            if throttle.limited() {
                read_paced(recv, limit, throttle).await?
            } else {
                recv.read_to_end(limit)
                    .await
                    .context("reading the upload")?
            }
        }
        _ => Vec::new(),
    };
    Ok(Received { frame, req, bulk })
}

/// `read_to_end(limit)` at the throttle's rate: a chunk, then its turn.
async fn read_paced(
    recv: &mut RecvStream,
    limit: usize,
    throttle: &Throttle,
) -> anyhow::Result<Vec<u8>> {
    let mut bulk = Vec::new();
    let mut buf = vec![0u8; MAX_PACED_CHUNK as usize];
    loop {
        // One byte more than is left, to see an upload over its length.
        let want = throttle.chunk().min(limit - bulk.len() + 1);
        let Some(n) = recv
            .read(&mut buf[..want])
            .await
            .context("reading the upload")?
        else {
            return Ok(bulk);
        };
        if n > limit - bulk.len() {
            bail!("reading the upload: more than the {limit} bytes announced");
        }
        bulk.extend_from_slice(&buf[..n]);
        throttle.pace(n).await;
    }
}

/// Sends `frame` (which decoded as `req`) and `bulk` to the node; its
/// answer and the bulk that follows it.
async fn forward(
    up: &Connection,
    req: &Request,
    frame: &[u8],
    bulk: &[u8],
) -> anyhow::Result<(Response, Vec<u8>)> {
    let (mut send, mut recv) = up.open_bi().await.context("opening a stream to the node")?;
    send.write_all(frame).await?;
    send.write_all(bulk).await?;
    send.finish()?;
    let frame = read_frame(&mut recv).await?;
    let resp = decode_response(&frame[FRAME_PREFIX_LEN..])?;
    let mut bulk = vec![0u8; bulk_len(response_bulk_len(req, &resp), "answer")?];
    recv.read_exact(&mut bulk)
        .await
        .context("reading the blob contents")?;
    let _ = recv.stop(VarInt::from_u32(0));
    Ok((resp, bulk))
}

async fn write_reply(mut send: SendStream, reply: Reply, throttle: &Throttle) {
    let (head, bulk, finish) = match reply {
        Reply::Send(resp, bulk) => match frame_of(&resp) {
            Ok(frame) => (frame, bulk, true),
            Err(e) => {
                tracing::error!(error = %e, "proxy: cannot encode the lie's response; resetting");
                let _ = send.reset(RESET);
                return;
            }
        },
        Reply::Raw(bytes) => (bytes, Vec::new(), true),
        Reply::StallAfter(bytes) => (bytes, Vec::new(), false),
        Reply::Stall => (Vec::new(), Vec::new(), false),
        Reply::Reset => {
            let _ = send.reset(RESET);
            return;
        }
    };
    let write = async {
        send.write_all(&head).await?;
        if !throttle.limited() {
            return send.write_all(&bulk).await;
        }
        let mut rest = &bulk[..];
        while !rest.is_empty() {
            let n = throttle.chunk().min(rest.len());
            throttle.pace(n).await;
            send.write_all(&rest[..n]).await?;
            rest = &rest[n..];
        }
        Ok(())
    };
    if !matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(()))) {
        let _ = send.reset(RESET);
        return;
    }
    if finish {
        let _ = send.finish();
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
    } else {
        // Stall: resolves when the client stops or resets its side, or the
        // connection goes away; the proxy stopping aborts this task.
        let _ = send.stopped().await;
    }
}

fn server_config(cert_pem: &str, key_pem: &str) -> anyhow::Result<quinn::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("failed to parse the node certificate")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("failed to parse the node key")?
        .ok_or_else(|| anyhow!("no private key in the node key PEM"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("node certificate and key do not match")?;
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut quic = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quic.transport_config(Arc::new(server_transport(0)?));
    Ok(quic)
}

/// The client-facing transport under `rate` (0: unlimited, the base).
fn server_transport(rate: u64) -> anyhow::Result<TransportConfig> {
    let mut transport = base_transport()?;
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    if rate != 0 {
        transport.receive_window(receive_window(rate));
    }
    Ok(transport)
}

/// Limits as the node's own: 64 streams, 8 MiB stream window, 30 s idle.
fn base_transport() -> anyhow::Result<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(crate::server::DEFAULT_MAX_STREAMS))
        .stream_receive_window(VarInt::from_u32(8 << 20))
        .receive_window(receive_window(0))
        .send_window(16 << 20)
        .max_idle_timeout(Some(IdleTimeout::try_from(Duration::from_secs(30))?));
    Ok(t)
}

/// The upstream side keeps its connection alive while the client's is.
fn upstream_transport() -> anyhow::Result<TransportConfig> {
    let mut t = base_transport()?;
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    Ok(t)
}
