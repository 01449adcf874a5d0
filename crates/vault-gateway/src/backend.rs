//! What the S3 endpoint and the web page share: the opened vault, the
//! spool, and a listing kept between requests.
//!
//! Reads of one object (HEAD, GET) always ask the nodes: the manifest with
//! a quorum, as `vault-client get` does. Listings come from a snapshot of
//! every manifest: this gateway's own writes change it at once, and it is
//! read again from the nodes when it is older than [`FRESH_FOR`] (a first
//! page; the later pages of one listing keep using it for up to
//! [`PAGES_FOR`], so that a long listing is one consistent view).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::Stream;
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;
use vault_client::catalog;
use vault_client::manifest::{Extra, Manifest};
use vault_client::ops::{self, OpError};
use vault_client::vault::Vault;

use crate::spool::{Spool, SpoolFile};

/// How old a listing snapshot may be for a new listing.
pub const FRESH_FOR: Duration = Duration::from_secs(2);
/// How long the later pages of a listing may use its snapshot.
pub const PAGES_FOR: Duration = Duration::from_secs(120);
/// Plaintext pieces in flight between a GET's node reads and its HTTP
/// response (each at most one 64 KiB chunk).
const READ_AHEAD: usize = 16;

/// One live file (or folder marker) of the vault, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Vault name.
    pub name: String,
    /// Plaintext size.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch (0 when unknown).
    pub mtime_ns: u64,
    /// S3 ETag, without quotes.
    pub etag: String,
    /// An empty folder's marker (an S3 bucket made by CreateBucket).
    pub folder: bool,
}

impl Object {
    fn of(m: &Manifest) -> Object {
        Object {
            name: m.name.clone(),
            size: m.size,
            mtime_ns: m.mtime_ns.unwrap_or(0),
            etag: m.etag(),
            folder: m.is_folder(),
        }
    }
}

/// Every live file of the vault, by name.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// When it was read from the nodes.
    taken: Option<Instant>,
    /// While a new snapshot is read: this gateway's writes meanwhile, to
    /// apply on top of it (the scan may have read the nodes before them).
    pending: Option<Vec<(String, Option<Object>)>>,
    /// The files and folder markers, by name.
    pub objects: BTreeMap<String, Object>,
}

impl Snapshot {
    /// The top-level folders (S3 buckets): each with the newest time seen
    /// in it.
    pub fn buckets(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for o in self.objects.values() {
            let top = match o.name.split_once('/') {
                Some((top, _)) => top,
                None if o.folder => o.name.as_str(),
                None => continue,
            };
            let t = out.entry(top.to_string()).or_insert(0);
            *t = (*t).max(o.mtime_ns);
        }
        out
    }

    /// Whether `folder` (a vault name) is a folder: a marker or a prefix
    /// of a file.
    pub fn is_folder(&self, folder: &str) -> bool {
        if self.objects.get(folder).is_some_and(|o| o.folder) {
            return true;
        }
        let prefix = format!("{folder}/");
        self.objects
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// The objects whose names start with `prefix` (plain string prefix),
    /// in name order, from the first name after `after`.
    pub fn starting<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Object> + 'a {
        let from = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_string()),
            _ => std::ops::Bound::Included(prefix.to_string()),
        };
        self.objects
            .range((from, std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, o)| o)
    }
}

/// Why a gateway operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the vault.
    #[error(transparent)]
    Op(#[from] OpError),
    /// The spool (local disk).
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    /// The uploaded bytes are not what the request said.
    #[error("{0}")]
    BadDigest(String),
    /// The request body failed (client went away, bad chunk signature).
    #[error("request body: {0}")]
    Body(String),
}

/// Opens the vault again (the command line's login, with the password it
/// holds): how a gateway that runs for days gets back nodes that were down
/// or restarted.
pub type Reopen = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vault, String>> + Send>>
        + Send
        + Sync,
>;

/// The opened vault, with the spool and the listing snapshot.
pub struct Backend {
    /// The vault; replaced when a reopen reaches more nodes.
    vault: std::sync::RwLock<Vault>,
    /// Where uploads wait for their MD5 and their PUT.
    pub spool: Spool,
    snapshot: std::sync::Mutex<Snapshot>,
    /// Held while a snapshot is read from the nodes: one scan at a time,
    /// while writes and listings of the current snapshot go on.
    scanning: tokio::sync::Mutex<()>,
    /// Uploads store with one node unusable (`serve --degraded`).
    degraded: bool,
}

/// What the bytes of an upload were checked to be.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Their MD5.
    pub md5: [u8; 16],
    /// Their number.
    pub size: u64,
}

impl Backend {
    /// A backend over `vault`, spooling into `spool`.
    pub fn new(vault: Vault, spool: Spool, degraded: bool) -> Backend {
        Backend {
            vault: std::sync::RwLock::new(vault),
            spool,
            snapshot: std::sync::Mutex::new(Snapshot::default()),
            scanning: tokio::sync::Mutex::new(()),
            degraded,
        }
    }

    /// The vault (a cheap handle; requests under way keep theirs when
    /// it is replaced).
    pub fn vault(&self) -> Vault {
        self.vault.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Nodes whose session is missing or closed.
    fn lost(vault: &Vault) -> usize {
        (0..vault.node_count())
            .filter(|&i| vault.session(i).is_none_or(|s| s.is_closed()))
            .count()
    }

    /// When a node is unreachable, logs in again through `reopen` and uses
    /// the new sessions if they reach more nodes. `None` when every node
    /// was reachable, else whether it gained any.
    pub async fn redial(&self, reopen: &Reopen) -> Option<bool> {
        let old = self.vault();
        let lost = Self::lost(&old);
        if lost == 0 {
            return None;
        }
        // The same vault (its master key), never another.
        let same = |new: &Vault| new.master().manifest_id("") == old.master().manifest_id("");
        match reopen().await {
            Ok(new) if same(&new) && Self::lost(&new) < lost => {
                tracing::info!(
                    "reconnected: {} of {} nodes now reachable",
                    new.node_count() - Self::lost(&new),
                    new.node_count()
                );
                *self.vault.write().unwrap_or_else(|e| e.into_inner()) = new;
                Some(true)
            }
            Ok(new) => {
                new.close();
                Some(false)
            }
            Err(why) => {
                tracing::warn!("could not log in again: {why}");
                Some(false)
            }
        }
    }

    /// Runs `f` on a listing snapshot no older than `max_age` (read again
    /// from the nodes when it is older). A listing without a quorum of
    /// nodes is refused, as `vault-client list` refuses it.
    pub async fn with_listing<R>(
        &self,
        max_age: Duration,
        f: impl FnOnce(&Snapshot) -> R,
    ) -> Result<R, Error> {
        let stale = |s: &Snapshot| s.taken.is_none_or(|t| t.elapsed() > max_age);
        if stale(&self.snap()) {
            let _scan = self.scanning.lock().await;
            // Another request may have read one meanwhile.
            if stale(&self.snap()) {
                self.snap().pending = Some(Vec::new());
                let started = Instant::now();
                let vault = self.vault();
                let cat = catalog::scan_light(&vault, "").await;
                let answered = ops::catalog_answered(&vault, &cat);
                if let Err(e) = ops::check_quorum(&vault, answered, &cat.problems, false) {
                    self.snap().pending = None;
                    return Err(e.into());
                }
                let mut objects: BTreeMap<String, Object> = cat
                    .live()
                    .map(|m| (m.name.clone(), Object::of(m)))
                    .collect();
                let mut snap = self.snap();
                for (name, now) in snap.pending.take().unwrap_or_default() {
                    match now {
                        Some(o) => objects.insert(name, o),
                        None => objects.remove(&name),
                    };
                }
                snap.objects = objects;
                snap.taken = Some(started);
            }
        }
        Ok(f(&self.snap()))
    }

    fn snap(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records in the snapshot what this gateway just wrote.
    async fn note(&self, name: &str, now: Option<&Manifest>) {
        let mut snap = self.snap();
        let now = now.map(Object::of);
        if let Some(pending) = &mut snap.pending {
            pending.push((name.to_string(), now.clone()));
        }
        match now {
            Some(o) => snap.objects.insert(name.to_string(), o),
            None => snap.objects.remove(name),
        };
    }

    /// The current version of `name`, asked of the nodes (a quorum). A
    /// folder marker is not a file: `NotFound`.
    pub async fn head(&self, name: &str) -> Result<Manifest, Error> {
        // `find` never returns a folder marker.
        Ok(ops::get::find(&self.vault(), name).await?)
    }

    /// The bytes `range` of version `m`, as a stream that ends with an
    /// error if the vault cannot deliver them all (so an HTTP response is
    /// cut short, never completed with missing bytes).
    pub fn read(
        self: &Arc<Self>,
        m: Manifest,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(READ_AHEAD);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let vault = self.vault();
        tokio::spawn(async move {
            let r = ops::get::read_range(&vault, &m, range, &tx).await;
            let _ = done_tx.send(r.map_err(|e| e.to_string()));
        });
        futures::stream::unfold((rx, Some(done_rx)), |(mut rx, done)| async move {
            if let Some(piece) = rx.recv().await {
                return Some((Ok(piece), (rx, done)));
            }
            // The reader finished: all sent, or an error to end with.
            let done = done?;
            match done.await {
                Ok(Ok(())) => None,
                Ok(Err(why)) => {
                    tracing::warn!("GET cut short: {why}");
                    Some((Err(std::io::Error::other(why)), (rx, None)))
                }
                Err(_) => Some((
                    Err(std::io::Error::other("the read task failed")),
                    (rx, None),
                )),
            }
        })
    }

    /// Spools `body` (a new spool file, removed when the returned guard
    /// drops): its MD5 and size; `inspect` sees every piece as it comes
    /// (the checksums a request announced).
    pub async fn spool_upload<S, E>(
        &self,
        body: S,
        inspect: &mut impl FnMut(&[u8]),
    ) -> Result<(SpoolFile, Received), Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let spooled = self.spool.file()?;
        let received = spool_body(&spooled.path, body, inspect).await?;
        Ok((spooled, received))
    }

    /// Stores the spooled file `path` (whose MD5 and size are `received`)
    /// as `name`.
    pub async fn store(
        &self,
        name: &str,
        path: &std::path::Path,
        received: &Received,
        extra: Extra,
    ) -> Result<Manifest, Error> {
        let vault = self.vault();
        let (report, m) = ops::put::put_spooled(
            &vault,
            ops::put::Spooled {
                path: path.to_path_buf(),
                name: name.to_string(),
                md5: received.md5,
                extra: extra.clone(),
                mtime_ns: Some(now_ns()),
                degraded: self.degraded,
            },
            ops::no_progress(),
        )
        .await?;
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        self.note(name, Some(&m)).await;
        Ok(m)
    }

    /// Copies version `m` to `to` (decrypted through the spool and stored
    /// again: a new name has its own keys), with `extra`.
    pub async fn copy(&self, m: &Manifest, to: &str, extra: Extra) -> Result<Manifest, Error> {
        let spooled = self.spool.file()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(READ_AHEAD);
        let vault = self.vault();
        let source = m.clone();
        let reader = tokio::spawn(async move {
            ops::get::read_range(&vault, &source, 0..source.size, &tx).await
        });
        let body = futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|o| o.map(Ok::<Bytes, std::io::Error>))
        });
        let received = spool_body(&spooled.path, Box::pin(body), &mut |_| {}).await?;
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(Error::Body(format!("the read task failed: {e}"))),
        }
        if received.size != m.size || received.md5[..] != m.md5[..] {
            return Err(Error::BadDigest(
                "the copy read back other bytes than the source's".into(),
            ));
        }
        self.store(to, &spooled.path, &received, extra).await
    }

    /// Deletes `name`. `Ok(false)` when there was nothing to delete.
    pub async fn delete(&self, name: &str) -> Result<bool, Error> {
        match ops::delete::delete_file(&self.vault(), name).await {
            Ok(report) => {
                for w in &report.warnings {
                    tracing::warn!("{w}");
                }
                self.note(name, None).await;
                Ok(true)
            }
            Err(OpError::NotFound(_)) => {
                self.note(name, None).await;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the folder marker `name`, if that is what the name holds now
    /// (asked of the nodes, not the listing: a file stored under the name
    /// since is never deleted here). `Ok(false)` when it held none.
    pub async fn delete_marker(&self, name: &str) -> Result<bool, Error> {
        let vault = self.vault();
        let id = vault.master().manifest_id(name);
        let versions = ops::fetch_versions(&vault, &id, None).await;
        ops::check_quorum(&vault, versions.answered, &versions.problems, false)?;
        match versions.live() {
            Some(m) if m.is_folder() => self.delete(name).await,
            _ => Ok(false),
        }
    }

    /// Makes the empty folder `name` (an S3 bucket): a folder marker.
    pub async fn make_folder(&self, name: &str) -> Result<Manifest, Error> {
        let spooled = self.spool.file()?;
        crate::spool::create_private(&spooled.path)?;
        let received = Received {
            md5: Md5::digest(b"").into(),
            size: 0,
        };
        let extra = Extra {
            folder: true,
            ..Extra::default()
        };
        self.store(name, &spooled.path, &received, extra).await
    }

    /// Every node, up or down.
    pub async fn status(&self) -> Vec<ops::status::NodeReport> {
        ops::status::status(&self.vault()).await
    }
}

/// Writes `body` to `path` (a new spool file), with its MD5 and size;
/// `inspect` sees every piece (request checksums).
pub async fn spool_body<S, E>(
    path: &std::path::Path,
    mut body: S,
    inspect: &mut impl FnMut(&[u8]),
) -> Result<Received, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    let mut file = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .await?,
    );
    let mut md5 = Md5::new();
    let mut size = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| Error::Body(e.to_string()))?;
        md5.update(&piece);
        inspect(&piece);
        size += piece.len() as u64;
        file.write_all(&piece).await?;
    }
    file.flush().await?;
    Ok(Received {
        md5: md5.finalize().into(),
        size,
    })
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
