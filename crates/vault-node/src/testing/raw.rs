//! A raw protocol client and helpers for hand-made frames.
//!
//! [`RawClient`] speaks the wire protocol with no conveniences beyond
//! framing: one bidirectional stream per request, the request frame and
//! its bulk bytes, FIN, then everything the node sends back until its FIN
//! (at most [`MAX_RESPONSE_LEN`] bytes). It does no retries, no fail-over
//! and no checks of its own, so a test sees exactly what a node (or a
//! hostile proxy) answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use wire::{
    decode_frame_header, decode_response, encode_request, AuthScheme, BlobId, ErrorCode, Proof,
    PutItem, Request, Response, FRAME_PREFIX_LEN,
};

use crate::kdf;

/// Most bytes [`RawClient`] reads from one response stream (frame and bulk).
pub const MAX_RESPONSE_LEN: usize = 256 << 20;

/// Time [`RawClient::connect`] gives the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time [`RawClient::closed_by_node`] waits for the close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Client TLS for QUIC trusting only the CA in `ca_pem`, TLS 1.3, ALPN
/// [`wire::ALPN`]: what a Vault client presents to a node.
pub fn client_tls(ca_pem: &str) -> anyhow::Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.context("failed to parse the CA PEM")?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in the CA PEM");
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
pub struct RawClient {
    /// The client's own endpoint (127.0.0.1, port 0).
    pub endpoint: quinn::Endpoint,
    /// The connection to the node (or to the proxy in front of it).
    pub conn: quinn::Connection,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient")
            .field("peer", &self.conn.remote_address())
            .finish_non_exhaustive()
    }
}

impl RawClient {
    /// Connects to `addr`, trusting only `ca_pem` and expecting the
    /// certificate of `server_name` (`DFS1`...); fails after
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        server_name: &str,
    ) -> anyhow::Result<RawClient> {
        Self::connect_with(addr, ca_pem, server_name, None).await
    }

    /// [`RawClient::connect`], with QUIC keep-alives every `keep_alive` if
    /// given, so the connection never goes idle (a client that holds a
    /// connection without using it).
    pub async fn connect_with(
        addr: SocketAddr,
        ca_pem: &str,
        server_name: &str,
        keep_alive: Option<Duration>,
    ) -> anyhow::Result<RawClient> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let mut config = client_tls(ca_pem)?;
        if let Some(every) = keep_alive {
            let mut transport = quinn::TransportConfig::default();
            transport.keep_alive_interval(Some(every));
            config.transport_config(Arc::new(transport));
        }
        endpoint.set_default_client_config(config);
        let connecting = endpoint.connect(addr, server_name)?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(conn) => {
                conn.with_context(|| format!("failed to connect to {server_name} at {addr}"))?
            }
            Err(_) => bail!("{server_name} at {addr} did not answer within {CONNECT_TIMEOUT:?}"),
        };
        Ok(RawClient { endpoint, conn })
    }

    /// The application close code and reason the peer closed the connection
    /// with, waiting for the close up to [`CLOSE_WAIT`]; `None` if it did not
    /// close in that time or closed another way (a transport error, a
    /// timeout).
    pub async fn closed_by_node(&self) -> Option<(u64, String)> {
        let err = tokio::time::timeout(CLOSE_WAIT, self.conn.closed())
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

    /// Sends `bytes` as the whole request stream (then FIN) and returns
    /// every byte the peer sent back before its FIN, undecoded.
    pub async fn exchange(&self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(bytes).await?;
        send.finish()?;
        recv.read_to_end(MAX_RESPONSE_LEN)
            .await
            .context("reading the response")
    }

    /// Sends `bytes` as the whole request stream, then decodes the response
    /// frame; returns it with whatever bulk follows it.
    pub async fn raw(&self, bytes: &[u8]) -> anyhow::Result<(Response, Vec<u8>)> {
        split_response(&self.exchange(bytes).await?)
    }

    /// Sends `req` and `bulk` (the upload bytes of a `PutBlob`).
    pub async fn request(&self, req: &Request, bulk: &[u8]) -> anyhow::Result<(Response, Vec<u8>)> {
        let mut bytes = encode_request(req);
        bytes.extend_from_slice(bulk);
        self.raw(&bytes).await
    }

    /// Sends `req` without bulk and returns the response.
    ///
    /// # Panics
    ///
    /// On a transport error or an undecodable response (see
    /// [`RawClient::request`] for the fallible form).
    pub async fn call(&self, req: &Request) -> Response {
        match self.request(req, &[]).await {
            Ok((resp, _)) => resp,
            Err(e) => panic!("request {req:?} failed: {e:#}"),
        }
    }

    /// `Hello` for `user`: the challenge and the announced scheme.
    pub async fn hello(&self, user: &str) -> anyhow::Result<(Vec<u8>, AuthScheme)> {
        let req = Request::Hello { user: user.into() };
        match self.request(&req, &[]).await?.0 {
            Response::Challenge { challenge, scheme } => Ok((challenge, scheme)),
            other => bail!("unexpected hello answer {other:?}"),
        }
    }

    /// `Hello`, then `Login` with the MD5 proof of `password`; returns the
    /// login answer (`LoggedIn` or an error).
    pub async fn login_md5(&self, user: &str, password: &str) -> anyhow::Result<Response> {
        self.hello(user).await?;
        let proof = Proof::LegacyMd5(super::md5_digest(password).to_vec());
        let req = Request::Login {
            user: user.into(),
            proof,
        };
        Ok(self.request(&req, &[]).await?.0)
    }

    /// [`RawClient::login_md5`], and an error unless it answered `LoggedIn`.
    pub(super) async fn login_md5_ok(&self, user: &str, password: &str) -> anyhow::Result<()> {
        match self.login_md5(user, password).await? {
            Response::LoggedIn => Ok(()),
            other => bail!("login as {user} refused: {other:?}"),
        }
    }

    /// `Hello`, derive the login key from the announced salt and costs
    /// (Argon2id), sign the challenge for node `node`, `Login`.
    pub async fn login_signature(
        &self,
        node: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Response> {
        let (challenge, scheme) = self.hello(user).await?;
        let AuthScheme::Upgraded(params) = scheme else {
            bail!("node announced a legacy scheme");
        };
        let root = kdf::derive_root(password.as_bytes(), &params)?;
        let pair = kdf::login_key_pair(&kdf::login_seed(&root));
        let lower = user.to_ascii_lowercase();
        let sig = pair.sign(&wire::login_message(node, &lower, &challenge));
        let req = Request::Login {
            user: user.into(),
            proof: Proof::Signature(sig.as_ref().to_vec()),
        };
        Ok(self.request(&req, &[]).await?.0)
    }

    /// Stores `data` as blob `id`.
    ///
    /// # Panics
    ///
    /// On an invalid id or a transport error.
    pub async fn put(&self, id: &str, data: &[u8]) -> Response {
        let req = Request::PutBlob {
            id: BlobId::new(id).expect("valid blob id"),
            len: data.len() as u64,
            expect: None,
        };
        match self.request(&req, data).await {
            Ok((resp, _)) => resp,
            Err(e) => panic!("put {id} failed: {e:#}"),
        }
    }

    /// Sends `req` and `bulk`, and splits the answer's bulk into each
    /// blob's bytes ([`bulk_parts`]): for `GetBlobs`, `ListData`, `GetBlob`.
    pub async fn request_parts(
        &self,
        req: &Request,
        bulk: &[u8],
    ) -> anyhow::Result<(Response, Vec<Vec<u8>>)> {
        let (resp, bytes) = self.request(req, bulk).await?;
        let parts = bulk_parts(req, &resp, &bytes)?;
        Ok((resp, parts))
    }

    /// Stores each `(id, bytes)` with one `PutBlobs`; returns the answer.
    ///
    /// # Panics
    ///
    /// On an invalid id or a transport error.
    pub async fn put_blobs(&self, items: &[(&str, &[u8])]) -> Response {
        let req = Request::PutBlobs {
            items: items
                .iter()
                .map(|(id, data)| PutItem {
                    id: BlobId::new(*id).expect("valid blob id"),
                    len: data.len() as u64,
                    expect: None,
                })
                .collect(),
        };
        let bulk: Vec<u8> = items
            .iter()
            .flat_map(|(_, data)| data.iter().copied())
            .collect();
        match self.request(&req, &bulk).await {
            Ok((resp, _)) => resp,
            Err(e) => panic!("put_blobs failed: {e:#}"),
        }
    }

    /// Reads `ids` with one `GetBlobs`: the answer, and the bytes of each
    /// blob found, in order.
    ///
    /// # Panics
    ///
    /// On an invalid id, a transport error, or bytes that do not add up to
    /// the announced lengths.
    pub async fn get_blobs(&self, ids: &[&str]) -> (Response, Vec<Vec<u8>>) {
        let req = Request::GetBlobs {
            ids: ids
                .iter()
                .map(|id| BlobId::new(*id).expect("valid blob id"))
                .collect(),
        };
        match self.request_parts(&req, &[]).await {
            Ok(answer) => answer,
            Err(e) => panic!("get_blobs failed: {e:#}"),
        }
    }

    /// Reads blob `id`: the response and the bytes after it.
    ///
    /// # Panics
    ///
    /// On an invalid id or a transport error.
    pub async fn get(&self, id: &str) -> (Response, Vec<u8>) {
        let req = Request::GetBlob {
            id: BlobId::new(id).expect("valid blob id"),
        };
        match self.request(&req, &[]).await {
            Ok(answer) => answer,
            Err(e) => panic!("get {id} failed: {e:#}"),
        }
    }
}

/// Bulk bytes that follow `req`'s frame: a `PutBlob`'s length, the sum of
/// a `PutBlobs`' item lengths (saturating), 0 for every other request.
pub fn request_bulk_len(req: &Request) -> u64 {
    match req {
        Request::PutBlob { len, .. } => *len,
        Request::PutBlobs { items } => items.iter().fold(0u64, |t, i| t.saturating_add(i.len)),
        _ => 0,
    }
}

/// Bulk bytes that follow `resp`'s frame, the answer to `req`: a `Blob`'s
/// or a `BlobRange`'s length, the sum of a `Blobs`' found lengths, the sum of the lengths of
/// a `DataListing`'s entries carried inline (at most the `ListData`'s
/// `max_inline` bytes long); 0 for every other answer (saturating).
pub fn response_bulk_len(req: &Request, resp: &Response) -> u64 {
    bulk_lens(req, resp).fold(0u64, |t, n| t.saturating_add(n))
}

/// The length of each blob whose bytes follow `resp`, in order.
fn bulk_lens<'a>(req: &'a Request, resp: &'a Response) -> Box<dyn Iterator<Item = u64> + 'a> {
    match (resp, req) {
        (Response::Blob { len }, _) | (Response::BlobRange { len, .. }, _) => {
            Box::new(std::iter::once(*len))
        }
        (Response::Blobs { lens }, _) => Box::new(lens.iter().flatten().copied()),
        (Response::DataListing { entries, .. }, Request::ListData { max_inline, .. }) => {
            let max = u64::from(*max_inline);
            Box::new(entries.iter().map(|e| e.len).filter(move |n| *n <= max))
        }
        _ => Box::new(std::iter::empty()),
    }
}

/// Splits the bulk after `resp` (the answer to `req`) into each blob's
/// bytes, in order (see [`response_bulk_len`]); an error unless the bytes
/// are exactly as many as announced.
pub fn bulk_parts(req: &Request, resp: &Response, bulk: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut rest = bulk;
    let mut parts = Vec::new();
    for len in bulk_lens(req, resp) {
        let n = usize::try_from(len)
            .ok()
            .filter(|n| *n <= rest.len())
            .ok_or_else(|| anyhow!("the answer announces more bytes than followed it"))?;
        let (part, tail) = rest.split_at(n);
        parts.push(part.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        bail!("{} bytes followed the announced ones", rest.len());
    }
    Ok(parts)
}

/// Reads a response stream to its FIN (at most [`MAX_RESPONSE_LEN`] bytes)
/// and splits it like [`split_response`]: for requests sent by hand on a
/// stream of [`RawClient::conn`].
pub async fn read_response(recv: &mut quinn::RecvStream) -> anyhow::Result<(Response, Vec<u8>)> {
    let all = recv
        .read_to_end(MAX_RESPONSE_LEN)
        .await
        .context("reading the response")?;
    split_response(&all)
}

/// Splits a whole response stream into its decoded frame and the bytes
/// after it.
pub fn split_response(all: &[u8]) -> anyhow::Result<(Response, Vec<u8>)> {
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

/// `version | length | body` around `body`, whatever the three are.
pub fn frame(version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = version.to_be_bytes().to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A frame of the current protocol version carrying `msg` as CBOR, with no
/// size check (unlike [`wire::encode_response`], which panics on bodies
/// over [`wire::MAX_FRAME_BODY_LEN`]): an oversized message gives a frame
/// whose header announces its true, oversized length.
pub fn frame_of<T: Serialize>(msg: &T) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    ciborium::into_writer(msg, &mut body).context("failed to encode CBOR")?;
    let len = u32::try_from(body.len()).context("body longer than 4 GiB")?;
    let mut out = wire::PROTOCOL_VERSION.to_be_bytes().to_vec();
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// A frame prefix of the current version announcing a body one byte over
/// [`wire::MAX_FRAME_BODY_LEN`], with no body: what a peer must refuse
/// before allocating anything.
pub fn oversized_frame_header() -> Vec<u8> {
    let mut out = wire::PROTOCOL_VERSION.to_be_bytes().to_vec();
    out.extend_from_slice(&(wire::MAX_FRAME_BODY_LEN as u32 + 1).to_be_bytes());
    out
}

/// Requests with unvalidated string ids, serialised exactly like
/// [`wire::Request`] (serde's externally tagged enums), to get hostile ids
/// past the encoder's validation. Frame them with [`raw_frame`].
#[derive(Debug, Clone, Serialize)]
pub enum RawRequest {
    /// `PutBlob` with any id.
    PutBlob {
        /// Unchecked id.
        id: String,
        /// Announced length.
        len: u64,
    },
    /// `GetBlob` with any id.
    GetBlob {
        /// Unchecked id.
        id: String,
    },
    /// `List` with any resume point and limit.
    List {
        /// Unchecked resume point.
        after: Option<String>,
        /// Unchecked page size.
        limit: u32,
    },
    /// `Delete` with any id.
    Delete {
        /// Unchecked id.
        id: String,
    },
}

/// A current-version frame around `req`.
pub fn raw_frame(req: &RawRequest) -> Vec<u8> {
    let mut body = Vec::new();
    ciborium::into_writer(req, &mut body).expect("writing CBOR to a Vec cannot fail");
    frame(wire::PROTOCOL_VERSION, &body)
}

/// The code of an error response, `None` for any other response.
pub fn error_code(resp: &Response) -> Option<ErrorCode> {
    match resp {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}
