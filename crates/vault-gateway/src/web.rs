//! The web page: the vault's folders in a browser, served by the gateway
//! process (plain HTML and a little JS from `web/`, no build step), with a
//! small JSON API under `/api/`.
//!
//! Routes (all need the session cookie, except the first visit; every one
//! but the page shell's three also needs the session's CSRF token):
//!
//! | method, path | what |
//! |---|---|
//! | `GET /?token=T` | first visit: sets the session cookie, redirects to `/#k=CSRF` |
//! | `GET /` | the page shell (no secret in it) |
//! | `GET /app.js`, `GET /app.css` | its script and style |
//! | `GET /api/list?prefix=F` | folder `F`'s subfolders and files (each with its download key `k`) |
//! | `GET /api/file?name=N` | file `N`'s bytes, as an attachment (`&k=` instead of the header) |
//! | `PUT /api/file?name=N` | stores the body as `N` (streamed to the spool) |
//! | `DELETE /api/file?name=N` | deletes `N` |
//! | `POST /api/folder?name=F` | makes the empty folder `F` |
//! | `DELETE /api/folder?name=F` | removes the empty folder `F` |
//! | `GET /api/status` | every node, up or down |
//!
//! Security (the page holds the vault's plaintext and its keys are in this
//! process):
//!
//! - **Token, then a session.** The `web:` line's token (compared in
//!   constant time) is accepted only on `GET /?token=`; it makes a new
//!   session (a random cookie value and a random CSRF token), sets the
//!   cookie (`HttpOnly; SameSite=Strict; Path=/`) and redirects to
//!   `/#k=CSRF`, so the token leaves the address bar. The token stays
//!   valid for the gateway's lifetime; each visit makes a new session.
//!   Sessions live in memory only (at most [`MAX_SESSIONS`], dropped after
//!   [`SESSION_IDLE`] unused): a restarted gateway has a new token and no
//!   sessions.
//! - **The cookie alone authorizes nothing but the page shell.** Cookies
//!   are not tied to a port, and `SameSite` counts every port of a host
//!   as the same site, so any server on `127.0.0.1` the browser visits
//!   receives the cookie and can replay it. With the cookie alone only
//!   `GET /`, `/app.js` and `/app.css` answer, and none of them holds a
//!   secret. The CSRF token reaches the page only in the redirect's URL
//!   fragment (never sent to a server); the page's script keeps it in
//!   `sessionStorage` (this tab only) and removes the fragment from the
//!   address bar. Every other request (every `/api/` one, `GET`s
//!   included) needs the cookie *and* the header `X-CSRF-Token` equal to
//!   the session's CSRF token (compared in constant time), else `403`
//!   with no details and nothing changes. A tab without the CSRF token (a
//!   new tab, an expired session) says to open the `web:` line's URL
//!   again.
//! - **Downloads** are plain links, which cannot send a header: instead,
//!   `GET /api/file` (and only it) accepts `k=` = hex HMAC-SHA256, keyed
//!   with the session's CSRF token, of `vault-web download\0` followed by
//!   the file's name. The listing gives each file its `k`, so a download
//!   URL (kept in the browser's history and downloads list) opens that one
//!   file, with that session's cookie, and reveals neither the CSRF token
//!   nor any other file. `Referrer-Policy: no-referrer` keeps URLs from
//!   leaving in a `Referer`.
//! - **DNS rebinding.** A request is served only when its `Host` header is
//!   the bound address exactly (`127.0.0.1:PORT`), or `localhost:PORT`
//!   when the bound address is a loopback one, or, when the gateway is
//!   bound on an unspecified address (`0.0.0.0`, `--allow-remote`), an IP
//!   literal with the bound port (a rebound DNS name never is one).
//!   Anything else: `421 Misdirected Request`.
//! - **Cross-site requests.** A request with an `Origin` header must come
//!   from this very origin (`http://HOST`), else `403`. No CORS header is
//!   ever sent.
//! - **Headers.** Every answer carries `Content-Security-Policy:
//!   default-src 'self'; frame-ancestors 'none'; form-action 'self';
//!   base-uri 'none'` (no inline script or style: the page loads `/app.js`
//!   and `/app.css`), `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY` and
//!   `Cache-Control: no-store`.
//! - **Downloaded bytes** are `application/octet-stream` with
//!   `Content-Disposition: attachment`, whatever type the file was stored
//!   with, so no stored file is ever rendered as a page of this origin.
//! - **Bounds.** Names are vault names (`check_name`), else `400`; a
//!   listing answers at most [`MAX_ENTRIES`] entries (`truncated` says when
//!   there were more); query strings at most [`MAX_QUERY`] bytes. Upload
//!   bodies have no size limit: they are streamed into the private spool,
//!   never held in memory.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use vault_client::manifest::Extra;
use vault_client::ops::OpError;

use crate::backend::{Backend, Error, FRESH_FOR};

/// The page shell (the same for every session: no secret in it).
const INDEX_HTML: &str = include_str!("web/index.html");
/// The page's script.
const APP_JS: &str = include_str!("web/app.js");
/// The page's style.
const APP_CSS: &str = include_str!("web/app.css");

/// The session cookie's name.
const COOKIE: &str = "vault_session";
/// Sessions kept at most (the oldest is dropped for a new one).
pub const MAX_SESSIONS: usize = 32;
/// A session unused this long is dropped.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Entries (folders and files) one listing answers at most.
pub const MAX_ENTRIES: usize = 10_000;
/// The longest query string accepted (a vault name is at most 4096 bytes,
/// percent-encoded up to three times that).
pub const MAX_QUERY: usize = 16 * 1024;

/// One browser's session.
struct Session {
    /// The cookie's value.
    id: String,
    /// What every request but the page shell's must carry in
    /// `X-CSRF-Token` (and the key of the download links' `k`).
    csrf: String,
    /// Last request.
    used: Instant,
}

/// The web page's server state.
pub struct Web {
    backend: Arc<Backend>,
    token: String,
    addr: SocketAddr,
    sessions: Mutex<Vec<Session>>,
}

/// A response body.
pub type WebBody = BoxBody<Bytes, std::io::Error>;

/// Equal, in time that depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key` (at most one block long,
/// as the CSRF token is).
fn hmac_sha256(key: &[u8], msg: &[&[u8]]) -> [u8; 32] {
    use s3s::crypto::{Checksum, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::checksum(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(&k.map(|b| b ^ 0x36));
    for m in msg {
        inner.update(m);
    }
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(&k.map(|b| b ^ 0x5c));
    outer.update(&inner);
    outer.finalize()
}

/// The download key of file `name` in the session whose CSRF token is
/// `csrf`: what `GET /api/file` accepts as `k=` instead of the header.
fn download_key(csrf: &str, name: &str) -> String {
    hex::encode(hmac_sha256(
        csrf.as_bytes(),
        &[b"vault-web download\0", name.as_bytes()],
    ))
}

fn full(body: impl Into<Bytes>) -> WebBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<WebBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    r
}

/// A refusal with no details.
fn bare(status: StatusCode) -> Response<WebBody> {
    respond(
        status,
        "text/plain; charset=utf-8",
        status.canonical_reason().unwrap_or("refused").to_string() + "\n",
    )
}

fn json_ok(status: StatusCode, v: serde_json::Value) -> Response<WebBody> {
    respond(status, "application/json", v.to_string())
}

fn json_err(status: StatusCode, msg: impl std::fmt::Display) -> Response<WebBody> {
    json_ok(status, json!({ "error": msg.to_string() }))
}

/// The HTTP status and message for a backend error.
fn backend_err(e: Error) -> Response<WebBody> {
    let status = match &e {
        Error::Op(OpError::NotFound(_)) => StatusCode::NOT_FOUND,
        Error::Op(OpError::BadName(_) | OpError::Refused(_)) => StatusCode::BAD_REQUEST,
        Error::Op(OpError::Conflict(_)) => StatusCode::CONFLICT,
        Error::Op(OpError::NoQuorum(_) | OpError::Unavailable(_) | OpError::Node { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::BadDigest(_) | Error::Body(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_err(status, e)
}

/// Decodes one `application/x-www-form-urlencoded` component; `None` when
/// it is not UTF-8 or has a bad escape.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                let h = std::str::from_utf8(h).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The query parameter `key`, decoded. `Err` on a malformed query.
fn param(query: &str, key: &str) -> Result<Option<String>, &'static str> {
    if query.len() > MAX_QUERY {
        return Err("query string too long");
    }
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return percent_decode(v)
                .map(Some)
                .ok_or("malformed query string (bad %-escape or not UTF-8)");
        }
    }
    Ok(None)
}

/// The vault name in parameter `name`, checked.
#[allow(clippy::result_large_err)]
fn name_param(query: &str) -> Result<String, Response<WebBody>> {
    match param(query, "name") {
        Err(m) => Err(json_err(StatusCode::BAD_REQUEST, m)),
        Ok(None) => Err(json_err(StatusCode::BAD_REQUEST, "missing name")),
        Ok(Some(n)) => match vault_client::path::check_name(&n) {
            Ok(_) => Ok(n),
            Err(e) => Err(json_err(StatusCode::BAD_REQUEST, format!("bad name: {e}"))),
        },
    }
}

/// Every value of cookie `name` in the request.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// `attachment` with the file's last name component, ASCII fallback and
/// RFC 5987 UTF-8 form.
fn disposition(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let ascii: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut enc = String::new();
    for b in base.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{enc}")
}

impl Web {
    /// The page for `backend`, opened with `token`, served on `addr`.
    pub fn new(backend: Arc<Backend>, token: String, addr: SocketAddr) -> Arc<Web> {
        Arc::new(Web {
            backend,
            token,
            addr,
            sessions: Mutex::new(Vec::new()),
        })
    }

    /// Whether `host` (the `Host` header) names this server: the bound
    /// address exactly; `localhost:PORT` when bound on loopback; any IP
    /// literal with the bound port when bound on an unspecified address.
    /// A DNS name other than `localhost` never is (DNS rebinding).
    fn host_ok(&self, host: &str) -> bool {
        let port = self.addr.port();
        if host == self.addr.to_string() {
            return true;
        }
        if self.addr.ip().is_loopback() && host.eq_ignore_ascii_case(&format!("localhost:{port}")) {
            return true;
        }
        if self.addr.ip().is_unspecified() {
            if let Ok(a) = host.parse::<SocketAddr>() {
                return a.port() == port;
            }
        }
        false
    }

    /// A new session: its cookie value and CSRF token. The oldest goes
    /// when full.
    fn new_session(&self) -> std::io::Result<(String, String)> {
        let id = crate::spool::random_hex(32)?;
        let csrf = crate::spool::random_hex(32)?;
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|x| x.used.elapsed() < SESSION_IDLE);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s
                .iter()
                .enumerate()
                .min_by_key(|(_, x)| x.used)
                .map(|(i, _)| i)
            {
                s.swap_remove(oldest);
            }
        }
        s.push(Session {
            id: id.clone(),
            csrf: csrf.clone(),
            used: Instant::now(),
        });
        Ok((id, csrf))
    }

    /// The CSRF token of the live session the request's cookie names
    /// (every session compared in constant time).
    fn session(&self, headers: &HeaderMap) -> Option<String> {
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|x| x.used.elapsed() < SESSION_IDLE);
        let mut found = None;
        for value in cookies(headers, COOKIE) {
            for x in s.iter_mut() {
                if ct_eq(x.id.as_bytes(), value.as_bytes()) {
                    x.used = Instant::now();
                    found = Some(x.csrf.clone());
                }
            }
        }
        found
    }

    /// Whether a request that is not for the page shell carries its
    /// session's CSRF token: in `X-CSRF-Token`, or, for `GET /api/file`
    /// only, as the file's download key in `k=` (both compared in constant
    /// time).
    fn csrf_ok(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        csrf: &str,
    ) -> bool {
        if let Some(given) = headers.get("x-csrf-token") {
            return ct_eq(given.as_bytes(), csrf.as_bytes());
        }
        if *method == Method::GET && path == "/api/file" {
            if let (Ok(Some(name)), Ok(Some(k))) = (param(query, "name"), param(query, "k")) {
                return ct_eq(k.as_bytes(), download_key(csrf, &name).as_bytes());
            }
        }
        false
    }

    /// Answers one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<WebBody>, Infallible> {
        let mut r = self.route(req).await;
        let h = r.headers_mut();
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        );
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }

    async fn route(&self, req: Request<hyper::body::Incoming>) -> Response<WebBody> {
        // DNS rebinding: only our own address as Host.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !self.host_ok(&host) {
            return bare(StatusCode::MISDIRECTED_REQUEST);
        }
        // A cross-origin request (one that says so) is refused outright.
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            if origin.as_bytes() != format!("http://{host}").as_bytes() {
                return bare(StatusCode::FORBIDDEN);
            }
        }
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let method = req.method().clone();

        // The first visit: the token for a session.
        if method == Method::GET && path == "/" {
            if let Ok(Some(token)) = param(&query, "token") {
                if !ct_eq(token.as_bytes(), self.token.as_bytes()) {
                    return bare(StatusCode::FORBIDDEN);
                }
                let (id, csrf) = match self.new_session() {
                    Ok(x) => x,
                    Err(_) => return bare(StatusCode::INTERNAL_SERVER_ERROR),
                };
                let mut r = bare(StatusCode::SEE_OTHER);
                let h = r.headers_mut();
                // The CSRF token in the fragment: the browser never sends
                // it to a server; the page's script takes it from there.
                if let Ok(v) = HeaderValue::from_str(&format!("/#k={csrf}")) {
                    h.insert(header::LOCATION, v);
                }
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/"
                )) {
                    h.insert(header::SET_COOKIE, v);
                }
                return r;
            }
        }

        let Some(csrf) = self.session(req.headers()) else {
            if method == Method::GET && path == "/" {
                return respond(
                    StatusCode::FORBIDDEN,
                    "text/plain; charset=utf-8",
                    "Forbidden: open the URL printed on the `web:` line of \
                     `vault-client serve` again.\n",
                );
            }
            return bare(StatusCode::FORBIDDEN);
        };
        // The cookie alone (which every server on this host may have seen)
        // opens only the page shell; everything else needs the CSRF token.
        let shell = method == Method::GET && matches!(path.as_str(), "/" | "/app.js" | "/app.css");
        if !shell && !self.csrf_ok(&method, &path, &query, req.headers(), &csrf) {
            return bare(StatusCode::FORBIDDEN);
        }

        match (method, path.as_str()) {
            (Method::GET, "/") => respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
            (Method::GET, "/app.js") => {
                respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
            }
            (Method::GET, "/app.css") => {
                respond(StatusCode::OK, "text/css; charset=utf-8", APP_CSS)
            }
            (Method::GET, "/api/list") => self.list(&query, &csrf).await,
            (Method::GET, "/api/status") => self.status().await,
            (Method::GET, "/api/file") => self.download(&query).await,
            (Method::PUT, "/api/file") => self.upload(&query, req).await,
            (Method::DELETE, "/api/file") => self.delete(&query).await,
            (Method::POST, "/api/folder") => self.make_folder(&query).await,
            (Method::DELETE, "/api/folder") => self.remove_folder(&query).await,
            (_, "/" | "/app.js" | "/app.css" | "/api/list" | "/api/status" | "/api/file")
            | (_, "/api/folder") => json_err(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => json_err(StatusCode::NOT_FOUND, "no such page"),
        }
    }

    /// `GET /api/list?prefix=F`: `{prefix, folders: [name], files: [{name,
    /// size, mtime_ms, etag, k}], truncated}`; names are full vault names,
    /// `k` the file's download key in this session (`csrf`).
    async fn list(&self, query: &str, csrf: &str) -> Response<WebBody> {
        let prefix = match param(query, "prefix") {
            Err(m) => return json_err(StatusCode::BAD_REQUEST, m),
            Ok(p) => p.unwrap_or_default(),
        };
        let prefix = match vault_client::path::normalize_prefix(&prefix) {
            Ok(p) => p,
            Err(e) => return json_err(StatusCode::BAD_REQUEST, format!("bad folder name: {e}")),
        };
        let r = self
            .backend
            .with_listing(FRESH_FOR, |snap| {
                if !prefix.is_empty() && !snap.is_folder(&prefix) {
                    return None;
                }
                let under = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                let mut folders: BTreeSet<String> = BTreeSet::new();
                let mut files = Vec::new();
                let mut truncated = false;
                let mut last_folder: Option<String> = None;
                for o in snap.starting(&under, None) {
                    let rest = &o.name[under.len()..];
                    if rest.is_empty() {
                        continue; // the folder's own marker
                    }
                    let folder = match rest.split_once('/') {
                        Some((top, _)) => Some(top),
                        None if o.folder => Some(rest),
                        None => None,
                    };
                    if let Some(top) = folder {
                        let full = format!("{under}{top}");
                        if last_folder.as_deref() == Some(full.as_str()) {
                            continue;
                        }
                        if folders.len() + files.len() >= MAX_ENTRIES {
                            truncated = true;
                            break;
                        }
                        folders.insert(full.clone());
                        last_folder = Some(full);
                        continue;
                    }
                    if folders.len() + files.len() >= MAX_ENTRIES {
                        truncated = true;
                        break;
                    }
                    files.push(json!({
                        "name": o.name,
                        "size": o.size,
                        "mtime_ms": o.mtime_ns / 1_000_000,
                        "etag": o.etag,
                        "k": download_key(csrf, &o.name),
                    }));
                }
                Some(json!({
                    "prefix": prefix,
                    "folders": folders.into_iter().collect::<Vec<_>>(),
                    "files": files,
                    "truncated": truncated,
                }))
            })
            .await;
        match r {
            Ok(Some(v)) => json_ok(StatusCode::OK, v),
            Ok(None) => json_err(StatusCode::NOT_FOUND, format!("no such folder: {prefix}")),
            Err(e) => backend_err(e),
        }
    }

    /// `GET /api/status`: `[{name, up, error}]`, as `vault-client status`.
    async fn status(&self) -> Response<WebBody> {
        let nodes: Vec<_> = self
            .backend
            .status()
            .await
            .into_iter()
            .map(|n| json!({ "name": n.name, "up": n.up, "error": n.error }))
            .collect();
        json_ok(StatusCode::OK, json!({ "nodes": nodes }))
    }

    /// `GET /api/file?name=N`: the bytes, streamed from the nodes.
    async fn download(&self, query: &str) -> Response<WebBody> {
        let name = match name_param(query) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let m = match self.backend.head(&name).await {
            Ok(m) => m,
            Err(e) => return backend_err(e),
        };
        let size = m.size;
        let stream = self.backend.read(m, 0..size);
        let body = StreamBody::new(futures::StreamExt::map(stream, |piece| {
            piece.map(hyper::body::Frame::data)
        }));
        let mut r = Response::new(BodyExt::boxed(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        if let Ok(v) = HeaderValue::from_str(&disposition(&name)) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        r
    }

    /// `PUT /api/file?name=N`: the body, spooled then stored.
    async fn upload(&self, query: &str, req: Request<hyper::body::Incoming>) -> Response<WebBody> {
        let name = match name_param(query) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200 && !v.chars().any(char::is_control))
            .map(str::to_string);
        let body = req.into_body().into_data_stream();
        let (spooled, received) = match self.backend.spool_upload(body, &mut |_| {}).await {
            Ok(x) => x,
            Err(e) => return backend_err(e),
        };
        let extra = Extra {
            content_type,
            ..Extra::default()
        };
        match self
            .backend
            .store(&name, &spooled.path, &received, extra)
            .await
        {
            Ok(m) => json_ok(
                StatusCode::CREATED,
                json!({ "name": name, "size": m.size, "etag": m.etag() }),
            ),
            Err(e) => backend_err(e),
        }
    }

    /// `DELETE /api/file?name=N`.
    async fn delete(&self, query: &str) -> Response<WebBody> {
        let name = match name_param(query) {
            Ok(n) => n,
            Err(r) => return r,
        };
        // A folder marker is not a file: DELETE /api/folder removes it.
        match self.backend.head(&name).await {
            Ok(_) => {}
            Err(e) => return backend_err(e),
        }
        match self.backend.delete(&name).await {
            Ok(true) => json_ok(StatusCode::OK, json!({ "deleted": name })),
            Ok(false) => json_err(StatusCode::NOT_FOUND, format!("no such file: {name}")),
            Err(e) => backend_err(e),
        }
    }

    /// `POST /api/folder?name=F`: an empty folder.
    async fn make_folder(&self, query: &str) -> Response<WebBody> {
        let name = match name_param(query) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let exists = self
            .backend
            .with_listing(FRESH_FOR, |s| {
                s.objects.contains_key(&name) || s.is_folder(&name)
            })
            .await;
        match exists {
            Ok(true) => return json_err(StatusCode::CONFLICT, format!("{name} already exists")),
            Ok(false) => {}
            Err(e) => return backend_err(e),
        }
        match self.backend.make_folder(&name).await {
            Ok(_) => json_ok(StatusCode::CREATED, json!({ "folder": name })),
            Err(e) => backend_err(e),
        }
    }

    /// `DELETE /api/folder?name=F`: only an empty folder.
    async fn remove_folder(&self, query: &str) -> Response<WebBody> {
        let name = match name_param(query) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let state = self
            .backend
            .with_listing(FRESH_FOR, |s| {
                let under = format!("{name}/");
                let empty = s.starting(&under, None).next().is_none();
                (
                    s.is_folder(&name),
                    empty,
                    s.objects.get(&name).is_some_and(|o| o.folder),
                )
            })
            .await;
        match state {
            Err(e) => backend_err(e),
            Ok((false, _, _)) => json_err(StatusCode::NOT_FOUND, format!("no such folder: {name}")),
            Ok((true, false, _)) => {
                json_err(StatusCode::CONFLICT, format!("folder {name} is not empty"))
            }
            Ok((true, true, marker)) => {
                if marker {
                    // Only if the name still holds the marker (never a file
                    // stored under it since the listing).
                    if let Err(e) = self.backend.delete_marker(&name).await {
                        return backend_err(e);
                    }
                }
                json_ok(StatusCode::OK, json!({ "deleted": name }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        assert_eq!(param("a=1&name=x%2Fy+z", "name"), Ok(Some("x/y z".into())));
        assert_eq!(param("a=1", "name"), Ok(None));
        assert!(param("name=%ZZ", "name").is_err());
        assert!(param("name=%FF", "name").is_err());
        assert!(param("name=%4", "name").is_err());
    }

    #[test]
    fn disposition_is_safe() {
        let d = disposition("a/b\"c\r\né.txt");
        assert!(HeaderValue::from_str(&d).is_ok(), "{d}");
        assert!(d.contains("filename*=UTF-8''b%22c%0D%0A%C3%A9.txt"), "{d}");
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test cases 1 and 2.
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], &[b"Hi There"])),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_ne!(download_key("a", "x"), download_key("b", "x"));
        assert_ne!(download_key("a", "x"), download_key("a", "y"));
    }

    #[test]
    fn compares_in_constant_time_shape() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
