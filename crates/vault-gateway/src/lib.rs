//! Vault's local gateway (`vault-client serve`): the vault as an S3
//! endpoint and a web page, served from the user's own machine. The keys
//! stay in this process: S3 clients and the browser get plaintext over
//! loopback, the nodes get only what `vault-client` sends them.
//!
//! - [`s3`]: the S3 API (`s3s`: protocol, SigV4 of headers, presigned
//!   URLs and `aws-chunked` bodies with trailers) over the vault.
//! - [`web`]: the web page and its small JSON API.
//! - [`backend`]: what both share: the vault, the spool, the listing.
//! - [`spool`]: the private folder uploads wait in for their MD5.
#![forbid(unsafe_code)]

pub mod backend;
pub mod s3;
pub mod spool;
pub mod web;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Result};
use tokio::net::TcpListener;
use vault_client::vault::Vault;
use zeroize::Zeroizing;

use crate::backend::Backend;
use crate::spool::Spool;

/// The S3 endpoint's default address.
pub const DEFAULT_S3: &str = "127.0.0.1:9000";
/// The web page's default address.
pub const DEFAULT_WEB: &str = "127.0.0.1:9001";
/// How long requests under way may take to finish at shutdown before they
/// are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Connections served at once per endpoint; more wait in the kernel's
/// backlog.
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    subtle::ConstantTimeEq::ct_eq(a, b)
}

/// How often the gateway looks for nodes it lost, to log in again.
pub const REDIAL_EVERY: Duration = Duration::from_secs(15);

/// What `serve` was asked for.
#[derive(Clone)]
pub struct Options {
    /// Where the S3 endpoint listens.
    pub s3: SocketAddr,
    /// Where the web page listens.
    pub web: SocketAddr,
    /// Whether non-loopback addresses may be bound.
    pub allow_remote: bool,
    /// The dfc.conf in use: the spool and the stored S3 secret live beside
    /// it.
    pub config: PathBuf,
    /// The S3 secret from `VAULT_S3_SECRET`, if set.
    pub secret: Option<Zeroizing<String>>,
    /// Logs in again, for nodes that were down or restarted.
    pub reopen: Option<backend::Reopen>,
    /// Uploads store with one node unusable, as `put --degraded`.
    pub degraded: bool,
    /// The vault password: an S3 secret equal to it is refused.
    pub password: Option<Zeroizing<String>>,
}

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without `--allow-remote`.
    #[error("{0} is not a loopback address: the gateway serves plaintext and holds your keys; pass --allow-remote to serve other machines (and put TLS in front)")]
    Remote(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The spool folder.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The S3 secret is the vault password.
    #[error("the S3 secret ({0}) is the vault password: choose another secret")]
    SecretIsPassword(String),
    /// The stored S3 secret.
    #[error("S3 secret {}: {source}", path.display())]
    Secret {
        /// Its file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// `<config>` with `suffix` appended to its file name.
pub fn beside(config: &Path, suffix: &str) -> PathBuf {
    let mut s = config.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The S3 secret: the one given, else the one stored beside dfc.conf,
/// else a new one stored there (0600). `true` when it was made now (it is
/// then printed once).
fn secret(opts: &Options) -> Result<(Zeroizing<String>, bool), ServeError> {
    if let Some(s) = &opts.secret {
        return Ok((s.clone(), false));
    }
    let path = beside(&opts.config, ".s3-secret");
    let err = |source| ServeError::Secret {
        path: path.clone(),
        source,
    };
    match read_private(&path) {
        Ok(s) if !s.trim().is_empty() && s.trim().len() <= 128 => {
            return Ok((Zeroizing::new(s.trim().to_string()), false))
        }
        Ok(_) => {
            return Err(err(std::io::Error::other(
                "empty or too long; remove it to have a new one made",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // Written whole under a temporary name, then moved into place.
    let s = Zeroizing::new(spool::random_hex(20).map_err(err)?);
    let tmp = beside(
        &opts.config,
        &format!(".s3-secret.{}", spool::random_hex(4).map_err(err)?),
    );
    let written = (|| {
        let mut f = spool::create_private(&tmp)?;
        f.write_all(s.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, &path)
    })();
    let _ = std::fs::remove_file(&tmp);
    written.map_err(err)?;
    Ok((s, true))
}

/// Reads the stored secret, refusing a link, a file of another user or one
/// others can read or write (someone else could have planted it).
fn read_private(path: &Path) -> std::io::Result<Zeroizing<String>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file()
        || meta.mode() & 0o077 != 0
        || meta.uid() != rustix::process::getuid().as_raw()
    {
        return Err(std::io::Error::other(
            "not a private file of this user (it must be mode 0600 and yours); remove it to have a new one made",
        ));
    }
    let mut s = Zeroizing::new(String::new());
    std::io::Read::by_ref(&mut f)
        .take(1024)
        .read_to_string(&mut s)?;
    Ok(s)
}

/// SigV4 keys: the vault user (any case) and the secret.
struct Auth {
    user: String,
    secret: SecretKey,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key.eq_ignore_ascii_case(&self.user) {
            Ok(self.secret.clone())
        } else {
            Err(s3_error!(InvalidAccessKeyId))
        }
    }
}

/// Bucket names are vault folder names (one name component).
struct FolderNames;

impl s3s::validation::NameValidation for FolderNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        !name.contains('/') && name.len() <= 255 && vault_client::path::check_name(name).is_ok()
    }
}

/// Runs the gateway over `vault` until `shutdown` resolves, writing the
/// `s3:` and `web:` lines to `out` as soon as each endpoint accepts
/// connections. Requests under way then get [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    vault: Vault,
    opts: Options,
    shutdown: impl Future<Output = ()>,
    out: &mut (dyn Write + Send),
) -> Result<(), ServeError> {
    for addr in [opts.s3, opts.web] {
        if !addr.ip().is_loopback() {
            if !opts.allow_remote {
                return Err(ServeError::Remote(addr));
            }
            eprintln!(
                "warning: serving on {addr}, reachable from other machines: anyone who can reach it and has the S3 secret or the web token reads and changes your vault in plaintext; use TLS in front of it"
            );
        }
    }
    let (secret, made) = secret(&opts)?;
    if let Some(p) = &opts.password {
        if bool::from(subtle_eq(secret.as_bytes(), p.as_bytes())) {
            return Err(ServeError::SecretIsPassword(if opts.secret.is_some() {
                "VAULT_S3_SECRET".into()
            } else {
                beside(&opts.config, ".s3-secret").display().to_string()
            }));
        }
    }
    let spool = Spool::open(&beside(&opts.config, ".spool"))?;
    let user = vault.user().to_string();
    let backend = Arc::new(Backend::new(vault, spool, opts.degraded));

    let s3_listener = TcpListener::bind(opts.s3)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.s3,
            source,
        })?;
    let web_listener = TcpListener::bind(opts.web)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.web,
            source,
        })?;
    let s3_addr = s3_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: opts.s3,
            source,
        })?;
    let web_addr = web_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: opts.web,
            source,
        })?;

    let api = s3::VaultS3::new(backend.clone());
    let mut builder = S3ServiceBuilder::new(api.clone());
    builder.set_auth(Auth {
        user: user.clone(),
        secret: SecretKey::from(secret.as_str()),
    });
    builder.set_validation(FolderNames);
    // POST Object (browser form uploads) is not offered: s3s would buffer a
    // form's file before checking its signature, so no form body is read.
    let mut config = s3s::config::S3Config::default();
    config.post_object_max_file_size = 0;
    config.form_max_field_size = 16 << 10;
    config.form_max_fields_size = 64 << 10;
    config.form_max_parts = 16;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        config,
    ))));
    let s3_service = builder.build();

    let token = spool::random_hex(16).map_err(|source| ServeError::Secret {
        path: PathBuf::from("(random)"),
        source,
    })?;
    let web = web::Web::new(backend.clone(), token.clone(), web_addr);

    let _ = writeln!(
        out,
        "s3: http://{s3_addr} access-key {user}{}",
        if made {
            format!(
                " secret-key {} (made now and kept in {}; set VAULT_S3_SECRET to choose one)",
                secret.as_str(),
                beside(&opts.config, ".s3-secret").display()
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(out, "web: http://{web_addr}/?token={token}");
    let _ = out.flush();

    // Abandoned multipart uploads expire while the gateway runs.
    let sweeper = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                api.expire_uploads();
            }
        })
    };
    // Nodes that were down at the start, or died since, are logged in to
    // again when they come back.
    let redialer = opts.reopen.clone().map(|reopen| {
        let backend = backend.clone();
        tokio::spawn(async move {
            // Each try is a login (Argon2id and every node): a node that
            // stays down is tried less and less often, down to every 5 min.
            let mut wait = REDIAL_EVERY;
            loop {
                tokio::time::sleep(wait).await;
                wait = match backend.redial(&reopen).await {
                    Some(false) => (wait * 2).min(Duration::from_secs(300)),
                    _ => REDIAL_EVERY,
                };
            }
        })
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let s3_task = tokio::spawn(accept_loop(s3_listener, stop_rx.clone(), Front(s3_service)));
    let web_task = tokio::spawn(accept_loop(
        web_listener,
        stop_rx,
        hyper::service::service_fn(move |req| web.clone().handle(req)),
    ));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = s3_task.await;
        let _ = web_task.await;
    })
    .await;
    sweeper.abort();
    if let Some(r) = redialer {
        r.abort();
    }
    backend.vault().close();
    // Unfinished multipart uploads are plaintext: not left behind.
    if let Err(e) = backend.spool.clear() {
        tracing::warn!("could not empty the spool: {e}");
    }
    Ok(())
}

/// Longest validity of a presigned URL (S3's: seven days).
const MAX_PRESIGNED_EXPIRY: u64 = 7 * 24 * 3600;

/// In front of s3s: what it lets through that S3 refuses, and the
/// connection handling of early answers.
#[derive(Clone)]
struct Front(s3s::service::S3Service);

/// An S3 error answer, as S3 writes it.
fn s3_error_response(status: u16, code: &str, message: &str) -> hyper::Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut resp = hyper::Response::new(s3s::Body::from(body));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    resp
}

/// A request refused before s3s sees it: browser form uploads (s3s would
/// read a form's file into memory before checking its signature) and
/// presigned URLs valid for longer than S3 allows.
fn refused_early(
    req: &hyper::Request<hyper::body::Incoming>,
) -> Option<hyper::Response<s3s::Body>> {
    let form = req.method() == hyper::Method::POST
        && req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| {
                t.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            });
    if form {
        return Some(s3_error_response(
            501,
            "NotImplemented",
            "POST Object (browser form uploads) is not supported",
        ));
    }
    let expires = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-Expires="))
            .map(|v| v.parse::<u64>().unwrap_or(u64::MAX))
    });
    if expires.is_some_and(|e| e > MAX_PRESIGNED_EXPIRY) {
        return Some(s3_error_response(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds",
        ));
    }
    None
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = hyper::Response<s3s::Body>;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let early = refused_early(&req);
        let has_body = req.method() == hyper::Method::PUT || req.method() == hyper::Method::POST;
        let fut = early
            .is_none()
            .then(|| hyper::service::Service::call(&self.0, req));
        Box::pin(async move {
            let mut resp = match (early, fut) {
                (Some(resp), _) => resp,
                (None, Some(fut)) => fut.await?,
                (None, None) => unreachable!("a request is refused early or served"),
            };
            // A refused upload's body may not have been read (the client
            // may even send it after an `Expect: 100-continue` it got no
            // answer to): the connection cannot carry another request.
            if has_body && !resp.status().is_success() {
                resp.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            if let Ok(id) = spool::random_hex(8) {
                let id = id.to_ascii_uppercase();
                if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("x-amz-request-id", v);
                }
                // An error body names the request too, as S3's do (clients
                // log it; it matches the header).
                if !resp.status().is_success() {
                    if let Some(body) = resp.body().bytes() {
                        if let Some(at) = body.windows(8).rposition(|w| w == b"</Error>") {
                            let mut with = body[..at].to_vec();
                            with.extend_from_slice(
                                format!("<RequestId>{id}</RequestId>").as_bytes(),
                            );
                            with.extend_from_slice(&body[at..]);
                            resp.headers_mut().remove(hyper::header::CONTENT_LENGTH);
                            *resp.body_mut() = s3s::Body::from(with);
                        }
                    }
                }
            }
            Ok(resp)
        })
    }
}

/// Accepts connections until `stop` turns true, serving each with `svc`;
/// then asks the connections under way to finish their request and close
/// (the caller bounds the wait).
async fn accept_loop<S, B>(
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
    svc: S,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept(), if conns.len() < MAX_CONNECTIONS => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: try again soon.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = svc.clone();
                let mut stop = stop.clone();
                conns.spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    let r = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = r {
                        tracing::debug!("connection: {e}");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}
