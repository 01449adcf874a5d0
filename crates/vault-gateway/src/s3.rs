//! The S3 API over the vault, for `s3s`: buckets are the vault's top-level
//! folders, objects its files. Anything not listed in the README answers
//! `NotImplemented` (the trait's default), never a wrong success.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result, S3};
use vault_client::manifest::{Extra, Manifest, MAX_USER_META_LEN};
use vault_client::ops::OpError;
use vault_client::path::{check_name, NameError, MAX_NAME_LEN};

use crate::backend::{Backend, Error, Object, Received, FRESH_FOR, PAGES_FOR};

/// How long an unfinished multipart upload is kept (its spooled parts are
/// removed then, and at every start).
pub const UPLOAD_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Smallest part of a multipart upload but the last (S3's rule).
const MIN_PART: u64 = 5 << 20;
/// Most parts of one upload (S3's rule).
const MAX_PARTS: i32 = 10_000;

/// The S3 service (cheap to clone: shared state).
#[derive(Clone)]
pub struct VaultS3 {
    backend: Arc<Backend>,
    uploads: Arc<Mutex<HashMap<String, Upload>>>,
    /// Uploads completed lately: upload id -> (bucket, key, ETag, when), so
    /// that a retried Complete gets the same answer (as S3 gives it).
    completed: Arc<Mutex<HashMap<String, Completed>>>,
}

/// A completed upload's bucket, key, ETag and time.
type Completed = (String, String, String, Instant);

/// How long a completed upload's answer is kept for retries.
const COMPLETED_KEPT: Duration = Duration::from_secs(600);

/// A multipart upload under way.
struct Upload {
    bucket: String,
    key: String,
    name: String,
    extra: Extra,
    initiated: SystemTime,
    /// Created, or last given a part: what expiry counts from.
    active: Instant,
    dir: PathBuf,
    parts: BTreeMap<i32, PartInfo>,
}

#[derive(Clone)]
struct PartInfo {
    size: u64,
    md5: [u8; 16],
    path: PathBuf,
    at: SystemTime,
}

impl VaultS3 {
    /// The S3 API over `backend`.
    pub fn new(backend: Arc<Backend>) -> VaultS3 {
        VaultS3 {
            backend,
            uploads: Arc::new(Mutex::new(HashMap::new())),
            completed: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Forgets multipart uploads older than [`UPLOAD_EXPIRY`], removing
    /// their spooled parts; how many went.
    pub fn expire_uploads(&self) -> usize {
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let old: Vec<String> = uploads
            .iter()
            .filter(|(_, u)| u.active.elapsed() > UPLOAD_EXPIRY)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            uploads.remove(id);
            self.backend.spool.remove_upload(id);
        }
        old.len()
    }

    async fn bucket_exists(&self, bucket: &str) -> S3Result<bool> {
        // Any snapshot that knows the bucket will do; a bucket not seen is
        // looked for in a fresh one.
        if self
            .backend
            .with_listing(Duration::MAX, |s| s.is_folder(bucket))
            .await
            .map_err(s3_err)?
        {
            return Ok(true);
        }
        self.backend
            .with_listing(FRESH_FOR, |s| s.is_folder(bucket))
            .await
            .map_err(s3_err)
    }

    async fn need_bucket(&self, bucket: &str) -> S3Result<()> {
        check_bucket(bucket)?;
        if self.bucket_exists(bucket).await? {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    /// One page of `bucket`'s listing (both list versions): from a
    /// snapshot at most [`FRESH_FOR`] old, or [`PAGES_FOR`] for the later
    /// pages of a listing (`continuing`).
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
        continuing: bool,
    ) -> S3Result<Page> {
        check_bucket(bucket)?;
        let age = if continuing { PAGES_FOR } else { FRESH_FOR };
        let (exists, p) = self
            .backend
            .with_listing(age, |s| {
                (
                    s.is_folder(bucket),
                    page(s, bucket, prefix, delimiter, after, max),
                )
            })
            .await
            .map_err(s3_err)?;
        if !exists {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(p)
    }

    /// The current version of `name` (in `bucket`): NoSuchKey, or
    /// NoSuchBucket when the bucket is not there either.
    async fn current(&self, bucket: &str, name: &str) -> S3Result<Manifest> {
        match self.backend.head(name).await {
            Ok(m) => Ok(m),
            Err(Error::Op(OpError::NotFound(_))) => {
                self.need_bucket(bucket).await?;
                Err(s3_error!(NoSuchKey))
            }
            Err(e) => Err(s3_err(e)),
        }
    }

    /// The vault user, as S3's owner of everything.
    fn owner(&self) -> Owner {
        let user = self.backend.vault().user().to_string();
        Owner {
            display_name: Some(user.clone()),
            id: Some(user),
        }
    }

    fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<()> {
        let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        match uploads.get(id) {
            Some(u) if u.bucket == bucket && u.key == key => Ok(()),
            _ => Err(s3_error!(NoSuchUpload)),
        }
    }
}

/// A bucket name: one component of a vault name.
fn check_bucket(bucket: &str) -> S3Result<()> {
    if bucket.contains('/') || check_name(bucket).is_err() || bucket.len() > 255 {
        return Err(s3_error!(InvalidBucketName));
    }
    Ok(())
}

/// The vault name of `key` in `bucket`.
fn vault_name(bucket: &str, key: &str) -> S3Result<String> {
    check_bucket(bucket)?;
    let name = format!("{bucket}/{key}");
    if name.len() > MAX_NAME_LEN {
        return Err(s3_error!(KeyTooLongError));
    }
    match check_name(&name) {
        Ok(_) => Ok(name),
        Err(NameError::TooLong(..)) => Err(s3_error!(KeyTooLongError)),
        Err(e) => Err(s3_error!(
            InvalidArgument,
            "this object key cannot be a vault file name: {e}"
        )),
    }
}

/// The S3 error for a gateway failure. Vault messages name nodes and
/// causes, never secrets.
fn s3_err(e: Error) -> S3Error {
    match e {
        Error::Op(OpError::NotFound(_)) => s3_error!(NoSuchKey),
        Error::Op(OpError::BadName(m)) => s3_error!(InvalidArgument, "{m}"),
        Error::Op(OpError::Conflict(m)) => s3_error!(OperationAborted, "{m}"),
        Error::Op(OpError::Refused(m)) => s3_error!(InvalidRequest, "{m}"),
        Error::Op(e @ (OpError::NoQuorum(_) | OpError::Unavailable(_) | OpError::Node { .. })) => {
            s3_error!(ServiceUnavailable, "{e}")
        }
        Error::Op(e) => {
            tracing::warn!("internal error: {e}");
            s3_error!(InternalError, "{e}")
        }
        Error::Spool(e) => {
            tracing::warn!("spool: {e}");
            s3_error!(InternalError, "the gateway's spool failed: {e}")
        }
        Error::BadDigest(m) => s3_error!(BadDigest, "{m}"),
        Error::Body(m) => s3_error!(IncompleteBody, "{m}"),
    }
}

fn timestamp_ns(ns: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_nanos(ns))
}

fn last_modified(m: &Manifest) -> Timestamp {
    timestamp_ns(m.mtime_ns.unwrap_or(0))
}

/// What PutObject, CopyObject (with REPLACE) and CreateMultipartUpload
/// set beside the bytes; refuses what the vault does not keep (ACLs other
/// than private, grants, object lock, customer keys): `NotImplemented`,
/// never a success that drops the request's intent.
macro_rules! extra_of {
    ($input:expr) => {{
        let i = &$input;
        if i.acl
            .as_ref()
            .is_some_and(|a| a.as_str() != ObjectCannedACL::PRIVATE)
            || i.grant_full_control.is_some()
            || i.grant_read.is_some()
            || i.grant_read_acp.is_some()
            || i.grant_write_acp.is_some()
        {
            Err(s3_error!(
                NotImplemented,
                "ACLs and grants are not supported: objects are private to the vault user"
            ))
        } else if i.object_lock_mode.is_some() || i.object_lock_legal_hold_status.is_some() {
            Err(s3_error!(NotImplemented, "object lock is not supported"))
        } else if i.sse_customer_algorithm.is_some() {
            Err(s3_error!(
                NotImplemented,
                "customer-provided keys are not supported: the vault encrypts every object"
            ))
        } else {
            let mut headers = Vec::new();
            for (name, v) in [
                ("cache-control", &i.cache_control),
                ("content-disposition", &i.content_disposition),
                ("content-encoding", &content_encoding(&i.content_encoding)),
                ("content-language", &i.content_language),
            ] {
                if let Some(v) = v {
                    headers.push((name.to_string(), v.clone()));
                }
            }
            if let Some(t) = &i.expires {
                let mut buf = Vec::new();
                if t.format(TimestampFormat::HttpDate, &mut buf).is_ok() {
                    headers.push((
                        "expires".to_string(),
                        String::from_utf8_lossy(&buf).into_owned(),
                    ));
                }
            }
            extra_from(i.content_type.clone(), i.metadata.clone(), headers)
        }
    }};
}

/// `Content-Encoding` without the `aws-chunked` transfer coding (how the
/// body travelled, not what it is).
fn content_encoding(v: &Option<String>) -> Option<String> {
    let kept: Vec<&str> = v
        .as_deref()?
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// The bytes a `Range` header asks of an object of `size` bytes, and the
/// `Content-Range` to answer with (none without a Range).
fn range_of(
    range: &Option<s3s::dto::Range>,
    size: u64,
) -> S3Result<(std::ops::Range<u64>, Option<String>)> {
    let Some(r) = range else {
        return Ok((0..size, None));
    };
    let r = r.check(size).map_err(|_| s3_error!(InvalidRange))?;
    if r.is_empty() {
        return Err(s3_error!(InvalidRange));
    }
    let content_range = format!("bytes {}-{}/{}", r.start, r.end - 1, size);
    Ok((r, Some(content_range)))
}

/// A standard header kept with the object.
fn header(m: &Manifest, name: &str) -> Option<String> {
    m.extra
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn expires_of(m: &Manifest) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, &header(m, "expires")?).ok()
}

/// The metadata a request sets, checked against S3's limits.
fn extra_from(
    content_type: Option<String>,
    meta: Option<Metadata>,
    headers: Vec<(String, String)>,
) -> S3Result<Extra> {
    let mut user: Vec<(String, String)> = meta
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    user.sort();
    if user.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_USER_META_LEN {
        return Err(s3_error!(MetadataTooLarge));
    }
    if headers
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        > MAX_USER_META_LEN
    {
        return Err(s3_error!(InvalidArgument, "headers too long"));
    }
    let content_type = content_type.filter(|t| !t.is_empty());
    if content_type.as_ref().is_some_and(|t| t.len() > 256) {
        return Err(s3_error!(InvalidArgument, "Content-Type too long"));
    }
    Ok(Extra {
        content_type,
        user,
        headers,
        etag: None,
        folder: false,
    })
}

fn metadata_of(m: &Manifest) -> Option<Metadata> {
    (!m.extra.user.is_empty()).then(|| m.extra.user.iter().cloned().collect())
}

fn etag_of(m: &Manifest) -> ETag {
    ETag::Strong(m.etag())
}

fn strip_quotes(s: &str) -> &str {
    s.trim().trim_matches('"')
}

/// Checks the checksums a request announced (headers, or trailers of an
/// `aws-chunked` body) against what arrived.
struct Checks {
    hasher: s3s::checksum::ChecksumHasher,
    expected: Checksum,
    content_md5: Option<String>,
}

/// Which checksums to compute, and the values announced.
struct Announced {
    algorithm: Option<ChecksumAlgorithm>,
    crc32: Option<String>,
    crc32c: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    crc64nvme: Option<String>,
    content_md5: Option<String>,
}

impl Checks {
    fn new(a: Announced) -> S3Result<Checks> {
        let mut hasher = s3s::checksum::ChecksumHasher::default();
        let algo = a.algorithm.as_ref().map(|x| x.as_str().to_string());
        let want = |v: &Option<String>, name: &str| v.is_some() || algo.as_deref() == Some(name);
        if want(&a.crc32, ChecksumAlgorithm::CRC32) {
            hasher.crc32 = Some(Default::default());
        }
        if want(&a.crc32c, ChecksumAlgorithm::CRC32C) {
            hasher.crc32c = Some(Default::default());
        }
        if want(&a.sha1, ChecksumAlgorithm::SHA1) {
            hasher.sha1 = Some(Default::default());
        }
        if want(&a.sha256, ChecksumAlgorithm::SHA256) {
            hasher.sha256 = Some(Default::default());
        }
        if want(&a.crc64nvme, ChecksumAlgorithm::CRC64NVME) {
            hasher.crc64nvme = Some(Default::default());
        }
        if let Some(algo) = &algo {
            if ![
                ChecksumAlgorithm::CRC32,
                ChecksumAlgorithm::CRC32C,
                ChecksumAlgorithm::SHA1,
                ChecksumAlgorithm::SHA256,
                ChecksumAlgorithm::CRC64NVME,
            ]
            .contains(&algo.as_str())
            {
                return Err(s3_error!(NotImplemented, "unsupported checksum algorithm"));
            }
        }
        Ok(Checks {
            hasher,
            expected: Checksum {
                checksum_crc32: a.crc32,
                checksum_crc32c: a.crc32c,
                checksum_sha1: a.sha1,
                checksum_sha256: a.sha256,
                checksum_crc64nvme: a.crc64nvme,
                checksum_type: None,
            },
            content_md5: a.content_md5,
        })
    }

    /// After the body: the trailers it ended with, then every comparison.
    fn verify(
        self,
        received: &Received,
        trailers: Option<s3s::TrailingHeaders>,
    ) -> S3Result<Checksum> {
        let mut expected = self.expected;
        if let Some(t) = trailers.and_then(|t| t.take()) {
            let get = |h: &str| -> S3Result<Option<String>> {
                t.get(h)
                    .map(|v| {
                        v.to_str()
                            .map(str::to_string)
                            .map_err(|_| s3_error!(InvalidArgument, "bad trailer {h}"))
                    })
                    .transpose()
            };
            for (slot, h) in [
                (&mut expected.checksum_crc32, "x-amz-checksum-crc32"),
                (&mut expected.checksum_crc32c, "x-amz-checksum-crc32c"),
                (&mut expected.checksum_sha1, "x-amz-checksum-sha1"),
                (&mut expected.checksum_sha256, "x-amz-checksum-sha256"),
                (&mut expected.checksum_crc64nvme, "x-amz-checksum-crc64nvme"),
            ] {
                if let Some(v) = get(h)? {
                    *slot = Some(v);
                }
            }
        }
        if let Some(md5) = &self.content_md5 {
            let given = base64_simd::STANDARD
                .decode_to_vec(md5)
                .map_err(|_| s3_error!(InvalidDigest))?;
            if given != received.md5 {
                return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
            }
        }
        let got = self.hasher.finalize();
        for (g, e, name) in [
            (&got.checksum_crc32, &expected.checksum_crc32, "CRC32"),
            (&got.checksum_crc32c, &expected.checksum_crc32c, "CRC32C"),
            (&got.checksum_sha1, &expected.checksum_sha1, "SHA1"),
            (&got.checksum_sha256, &expected.checksum_sha256, "SHA256"),
            (
                &got.checksum_crc64nvme,
                &expected.checksum_crc64nvme,
                "CRC64NVME",
            ),
        ] {
            if e.is_some() && g != e {
                return Err(s3_error!(
                    BadDigest,
                    "the {name} checksum does not match the body"
                ));
            }
        }
        Ok(got)
    }
}

/// 304 Not Modified, with the ETag as S3 sends it.
fn not_modified(etag: &ETag) -> S3Error {
    let mut e = S3Error::new(s3s::S3ErrorCode::NotModified);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("\"{}\"", etag.value())) {
        let mut h = hyper::header::HeaderMap::new();
        h.insert(hyper::header::ETAG, v);
        e.set_headers(h);
    }
    e
}

/// Percent-encodes `s` for `encoding-type=url` listings (all but
/// unreserved characters and `/`).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One listing page, as both list versions build it.
struct Page {
    objects: Vec<Object>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or common prefix of the page.
    last: Option<String>,
}

/// Lists `bucket` (keys relative to it) like S3: keys starting with
/// `prefix`, after `after`, rolled up at `delimiter`, at most `max` entries.
fn page(
    snap: &crate::backend::Snapshot,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> Page {
    let base = format!("{bucket}/");
    let full_prefix = format!("{base}{prefix}");
    let full_after = after.map(|a| format!("{base}{a}"));
    let mut objects = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut truncated = false;
    let mut last = None;
    // S3 answers max-keys=0 with an empty page that is not truncated.
    let max_or_none = if max == 0 {
        return Page {
            objects,
            prefixes,
            truncated,
            last,
        };
    } else {
        max
    };
    for o in snap.starting(&full_prefix, full_after.as_deref()) {
        if o.folder {
            continue;
        }
        let key = &o.name[base.len()..];
        let rolled = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|i| key[..prefix.len() + i + d.len()].to_string())
        });
        match rolled {
            Some(cp) => {
                if seen.contains(&cp) {
                    continue;
                }
                if after.is_some_and(|a| cp.as_str() <= a) {
                    continue;
                }
                if objects.len() + prefixes.len() >= max_or_none {
                    truncated = true;
                    break;
                }
                seen.insert(cp.clone());
                last = Some(cp.clone());
                prefixes.push(cp);
            }
            None => {
                if objects.len() + prefixes.len() >= max_or_none {
                    truncated = true;
                    break;
                }
                last = Some(key.to_string());
                let mut o = o.clone();
                o.name = key.to_string();
                objects.push(o);
            }
        }
    }
    Page {
        objects,
        prefixes,
        truncated,
        last,
    }
}

fn listed(o: &Object, url: bool) -> s3s::dto::Object {
    s3s::dto::Object {
        key: Some(if url {
            url_encode(&o.name)
        } else {
            o.name.clone()
        }),
        size: Some(o.size as i64),
        last_modified: Some(timestamp_ns(o.mtime_ns)),
        e_tag: Some(ETag::Strong(o.etag.clone())),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

fn max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn is_url(e: &Option<EncodingType>) -> S3Result<bool> {
    match e {
        None => Ok(false),
        Some(e) if e.as_str() == EncodingType::URL => Ok(true),
        Some(_) => Err(s3_error!(InvalidArgument, "encoding-type must be url")),
    }
}

fn check_conditions(
    m: &Manifest,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: &Option<Timestamp>,
    if_unmodified_since: &Option<Timestamp>,
) -> S3Result<()> {
    let etag = etag_of(m);
    let modified = last_modified(m);
    let t = |ts: &Timestamp| -> Option<SystemTime> {
        let mut buf = Vec::new();
        ts.format(TimestampFormat::EpochSeconds, &mut buf).ok()?;
        let secs: f64 = std::str::from_utf8(&buf).ok()?.parse().ok()?;
        Some(UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
    };
    let mod_secs = t(&modified).map(|x| {
        // HTTP dates have whole seconds.
        let s = x.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        UNIX_EPOCH + Duration::from_secs(s)
    });
    if let Some(c) = if_match {
        let ok = match c {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => e.strong_cmp(&etag),
        };
        if !ok {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let (Some(since), Some(m)) = (if_unmodified_since.as_ref().and_then(t), mod_secs) {
        if m > since {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    if let Some(c) = if_none_match {
        let hit = match c {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => e.weak_cmp(&etag),
        };
        if hit {
            return Err(not_modified(&etag));
        }
    } else if let (Some(since), Some(m)) = (if_modified_since.as_ref().and_then(t), mod_secs) {
        if m <= since {
            return Err(not_modified(&etag));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl S3 for VaultS3 {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .backend
            .with_listing(FRESH_FOR, |s| s.buckets())
            .await
            .map_err(s3_err)?;
        let buckets = buckets
            .into_iter()
            .map(|(name, t)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp_ns(t)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(self.owner()),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        check_bucket(&bucket)?;
        // New buckets follow S3's naming rules (CopyObject cannot name a
        // source in any other); existing folders of other names are
        // buckets all the same.
        if !s3s::path::check_bucket_name(&bucket) {
            return Err(s3_error!(InvalidBucketName));
        }
        if self
            .backend
            .with_listing(FRESH_FOR, |s| s.is_folder(&bucket))
            .await
            .map_err(s3_err)?
        {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        // A top-level file of that name is not a folder.
        match self.backend.head(&bucket).await {
            Ok(_) => {
                return Err(s3_error!(
                    BucketAlreadyExists,
                    "a file named {bucket} is at the top of the vault"
                ))
            }
            Err(Error::Op(OpError::NotFound(_))) => {}
            Err(e) => return Err(s3_err(e)),
        }
        self.backend.make_folder(&bucket).await.map_err(s3_err)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        check_bucket(&bucket)?;
        let (exists, empty, marker) = self
            .backend
            .with_listing(FRESH_FOR, |s| {
                let prefix = format!("{bucket}/");
                let empty = s.starting(&prefix, None).next().is_none();
                (
                    s.is_folder(&bucket),
                    empty,
                    s.objects.get(&bucket).is_some_and(|o| o.folder),
                )
            })
            .await
            .map_err(s3_err)?;
        if !exists {
            return Err(s3_error!(NoSuchBucket));
        }
        if !empty {
            return Err(s3_error!(BucketNotEmpty));
        }
        if marker {
            self.backend.delete_marker(&bucket).await.map_err(s3_err)?;
        }
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let mut input = req.input;
        // An empty delimiter is no delimiter (and is not echoed).
        input.delimiter = input.delimiter.filter(|d| !d.is_empty());
        let owner = input.fetch_owner.unwrap_or(false).then(|| self.owner());
        let url = is_url(&input.encoding_type)?;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => Some(decode_token(t)?),
            (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        };
        let p = self
            .list_page(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after.as_deref(),
                max,
                input.continuation_token.is_some(),
            )
            .await?;
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let count = (p.objects.len() + p.prefixes.len()) as i32;
        let contents = p
            .objects
            .iter()
            .map(|o| s3s::dto::Object {
                owner: owner.clone(),
                ..listed(o, url)
            })
            .collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max as i32),
            key_count: Some(count),
            is_truncated: Some(p.truncated),
            contents: Some(contents),
            common_prefixes: Some(
                p.prefixes
                    .into_iter()
                    .map(|c| CommonPrefix {
                        prefix: Some(enc(c)),
                    })
                    .collect(),
            ),
            continuation_token: input.continuation_token,
            next_continuation_token: p
                .truncated
                .then(|| p.last.as_deref().map(encode_token))
                .flatten(),
            start_after: input.start_after.map(enc),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let mut input = req.input;
        input.delimiter = input.delimiter.filter(|d| !d.is_empty());
        let url = is_url(&input.encoding_type)?;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let p = self
            .list_page(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.marker.as_deref(),
                max,
                input.marker.is_some(),
            )
            .await?;
        let enc = |s: String| if url { url_encode(&s) } else { s };
        // NextMarker only with a delimiter (S3: otherwise the last key is
        // the marker).
        let next_marker = (p.truncated && input.delimiter.is_some())
            .then(|| p.last.clone().map(enc))
            .flatten();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            // v1 encodes only keys, markers, delimiter and common prefixes.
            prefix: Some(prefix),
            marker: Some(input.marker.map(enc).unwrap_or_default()),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max as i32),
            is_truncated: Some(p.truncated),
            contents: Some(p.objects.iter().map(|o| listed(o, url)).collect()),
            common_prefixes: Some(
                p.prefixes
                    .into_iter()
                    .map(|c| CommonPrefix {
                        prefix: Some(enc(c)),
                    })
                    .collect(),
            ),
            next_marker,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let name = vault_name(&input.bucket, &input.key)?;
        let m = self.current(&input.bucket, &name).await?;
        check_conditions(
            &m,
            &input.if_match,
            &input.if_none_match,
            &input.if_modified_since,
            &input.if_unmodified_since,
        )?;
        let (range, content_range) = range_of(&input.range, m.size)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some((range.end - range.start) as i64),
            content_range,
            content_type: m.extra.content_type.clone(),
            cache_control: header(&m, "cache-control"),
            content_disposition: header(&m, "content-disposition"),
            content_encoding: header(&m, "content-encoding"),
            content_language: header(&m, "content-language"),
            expires: expires_of(&m),
            e_tag: Some(etag_of(&m)),
            last_modified: Some(last_modified(&m)),
            metadata: metadata_of(&m),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let name = vault_name(&input.bucket, &input.key)?;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GET by part number"));
        }
        let m = self.current(&input.bucket, &name).await?;
        check_conditions(
            &m,
            &input.if_match,
            &input.if_none_match,
            &input.if_modified_since,
            &input.if_unmodified_since,
        )?;
        let (range, content_range) = range_of(&input.range, m.size)?;
        let len = range.end - range.start;
        let body = self.backend.read(m.clone(), range);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some(len as i64),
            content_range,
            content_type: input
                .response_content_type
                .clone()
                .or_else(|| m.extra.content_type.clone()),
            content_disposition: input
                .response_content_disposition
                .clone()
                .or_else(|| header(&m, "content-disposition")),
            content_encoding: input
                .response_content_encoding
                .clone()
                .or_else(|| header(&m, "content-encoding")),
            content_language: input
                .response_content_language
                .clone()
                .or_else(|| header(&m, "content-language")),
            cache_control: input
                .response_cache_control
                .clone()
                .or_else(|| header(&m, "cache-control")),
            expires: input.response_expires.clone().or_else(|| expires_of(&m)),
            e_tag: Some(etag_of(&m)),
            last_modified: Some(last_modified(&m)),
            metadata: metadata_of(&m),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let name = vault_name(&input.bucket, &input.key)?;
        self.need_bucket(&input.bucket).await?;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            return Err(s3_error!(NotImplemented, "conditional PUT"));
        }
        let extra = extra_of!(input)?;
        if input.tagging.is_some() {
            return Err(s3_error!(NotImplemented, "tagging is not supported"));
        }
        if input.server_side_encryption.is_some() || input.ssekms_key_id.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "server-side encryption settings are not supported: the vault encrypts every object on this machine"
            ));
        }
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let mut checks = Checks::new(Announced {
            algorithm: input.checksum_algorithm,
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            crc64nvme: input.checksum_crc64nvme,
            content_md5: input.content_md5,
        })?;
        let (spooled, received) = self
            .backend
            .spool_upload(body, &mut |b| checks.hasher.update(b))
            .await
            .map_err(s3_err)?;
        let sums = checks.verify(&received, req.trailing_headers)?;
        let m = self
            .backend
            .store(&name, &spooled.path, &received, extra)
            .await
            .map_err(s3_err)?;
        drop(spooled);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag_of(&m)),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket {
                bucket,
                key,
                version_id: None,
            } => (bucket.to_string(), key.to_string()),
            CopySource::Bucket { .. } => {
                return Err(s3_error!(NotImplemented, "versions are not supported"))
            }
            _ => return Err(s3_error!(NotImplemented)),
        };
        let from = vault_name(&src_bucket, &src_key)?;
        let to = vault_name(&input.bucket, &input.key)?;
        self.need_bucket(&input.bucket).await?;
        let m = self.current(&src_bucket, &from).await?;
        check_conditions(
            &m,
            &input.copy_source_if_match,
            &input.copy_source_if_none_match,
            &input.copy_source_if_modified_since,
            &input.copy_source_if_unmodified_since,
        )
        .map_err(|e| {
            if *e.code() == s3s::S3ErrorCode::NotModified {
                s3_error!(PreconditionFailed)
            } else {
                e
            }
        })?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let requested = extra_of!(input)?;
        let mut extra = if replace {
            requested
        } else {
            if from == to {
                return Err(s3_error!(
                    InvalidRequest,
                    "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata."
                ));
            }
            let mut e = m.extra.clone();
            e.folder = false;
            e
        };
        // The copy keeps the source's ETag (a multipart one too), as S3 does.
        extra.etag = m.extra.etag.clone();
        let copied = self.backend.copy(&m, &to, extra).await.map_err(s3_err)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag_of(&copied)),
                last_modified: Some(last_modified(&copied)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let name = vault_name(&input.bucket, &input.key)?;
        if input.version_id.is_some() {
            return Err(s3_error!(NotImplemented, "versions are not supported"));
        }
        if !self.backend.delete(&name).await.map_err(s3_err)? {
            self.need_bucket(&input.bucket).await?;
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket).await?;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            let result = match vault_name(&input.bucket, &o.key) {
                Err(e) => Err(e),
                Ok(_) if o.version_id.is_some() => {
                    Err(s3_error!(NotImplemented, "versions are not supported"))
                }
                Ok(name) => self.backend.delete(&name).await.map_err(s3_err),
            };
            match result {
                Ok(_) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => errors.push(s3s::dto::Error {
                    key: Some(o.key),
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    version_id: o.version_id,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let name = vault_name(&input.bucket, &input.key)?;
        self.need_bucket(&input.bucket).await?;
        let extra = extra_of!(input)?;
        let expired = self.expire_uploads();
        if expired > 0 {
            tracing::info!("{expired} abandoned multipart uploads expired");
        }
        let id = crate::spool::random_hex(16).map_err(|e| s3_err(e.into()))?;
        let dir = self
            .backend
            .spool
            .upload_dir(&id)
            .map_err(|e| s3_err(e.into()))?;
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                Upload {
                    bucket: input.bucket.clone(),
                    key: input.key.clone(),
                    name,
                    extra,
                    initiated: SystemTime::now(),
                    active: Instant::now(),
                    dir,
                    parts: BTreeMap::new(),
                },
            );
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=MAX_PARTS).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            ));
        }
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let dir = {
            let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            uploads
                .get(&input.upload_id)
                .map(|u| u.dir.clone())
                .ok_or_else(|| s3_error!(NoSuchUpload))?
        };
        let body = input.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let mut checks = Checks::new(Announced {
            algorithm: input.checksum_algorithm,
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            crc64nvme: input.checksum_crc64nvme,
            content_md5: input.content_md5,
        })?;
        // Each upload of a part is a file of its own: a Complete reading the
        // part it checked is never reading a newer upload of that number.
        let path = dir.join(format!(
            "part-{:05}-{}",
            input.part_number,
            crate::spool::random_hex(8).map_err(|e| s3_err(e.into()))?
        ));
        // Removed on every way out (errors, a client gone, shutdown) until
        // the part is registered.
        let guard = crate::spool::SpoolFile::at(path.clone());
        let received = crate::backend::spool_body(&path, body, &mut |b| checks.hasher.update(b))
            .await
            .map_err(s3_err)?;
        let sums = checks.verify(&received, req.trailing_headers)?;
        let mut uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let Some(upload) = uploads.get_mut(&input.upload_id) else {
            // Aborted meanwhile.
            return Err(s3_error!(NoSuchUpload));
        };
        guard.disarm();
        upload.active = Instant::now();
        let replaced = upload.parts.insert(
            input.part_number,
            PartInfo {
                size: received.size,
                md5: received.md5,
                path,
                at: SystemTime::now(),
            },
        );
        drop(uploads);
        if let Some(old) = replaced {
            let _ = std::fs::remove_file(&old.path);
        }
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(hex::encode(received.md5))),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = input.part_number_marker.unwrap_or(0);
        let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let u = uploads
            .get(&input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        let all: Vec<(&i32, &PartInfo)> = u
            .parts
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .collect();
        let truncated = all.len() > max;
        let parts: Vec<Part> = all
            .iter()
            .take(max)
            .map(|(n, p)| Part {
                part_number: Some(**n),
                size: Some(p.size as i64),
                e_tag: Some(ETag::Strong(hex::encode(p.md5))),
                last_modified: Some(Timestamp::from(p.at)),
                ..Default::default()
            })
            .collect();
        let next = parts.last().and_then(|p| p.part_number);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: truncated.then_some(next).flatten(),
            parts: Some(parts),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        self.need_bucket(&input.bucket).await?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(String, String, SystemTime)> = uploads
            .iter()
            .filter(|(_, u)| u.bucket == input.bucket && u.key.starts_with(&prefix))
            .map(|(id, u)| (u.key.clone(), id.clone(), u.initiated))
            .filter(
                |(key, id, _)| match (&input.key_marker, &input.upload_id_marker) {
                    (Some(k), Some(i)) => (key, id) > (k, i),
                    (Some(k), None) => key > k,
                    _ => true,
                },
            )
            .collect();
        all.sort();
        let truncated = all.len() > max;
        all.truncate(max);
        let last = all.last().cloned();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: truncated
                .then(|| last.as_ref().map(|l| l.0.clone()))
                .flatten(),
            next_upload_id_marker: truncated
                .then(|| last.as_ref().map(|l| l.1.clone()))
                .flatten(),
            uploads: Some(
                all.into_iter()
                    .map(|(key, id, at)| MultipartUpload {
                        key: Some(key),
                        upload_id: Some(id),
                        initiated: Some(Timestamp::from(at)),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&input.upload_id);
        self.backend.spool.remove_upload(&input.upload_id);
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        if let Err(e) = self.upload(&input.upload_id, &input.bucket, &input.key) {
            let done = self.completed.lock().unwrap_or_else(|e| e.into_inner());
            return match done.get(&input.upload_id) {
                Some((b, k, etag, _)) if *b == input.bucket && *k == input.key => {
                    Ok(S3Response::new(CompleteMultipartUploadOutput {
                        bucket: Some(input.bucket),
                        key: Some(input.key),
                        e_tag: Some(ETag::Strong(etag.clone())),
                        ..Default::default()
                    }))
                }
                _ => Err(e),
            };
        }
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "You must specify at least one part"
            ));
        }
        // The parts named, checked against what was uploaded, while the
        // upload stays registered (a retry can complete it).
        let (name, extra, parts) = {
            let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
            let u = uploads
                .get(&input.upload_id)
                .ok_or_else(|| s3_error!(NoSuchUpload))?;
            let mut parts = Vec::new();
            let mut previous = 0;
            for (i, c) in listed.iter().enumerate() {
                let n = c.part_number.ok_or_else(|| s3_error!(InvalidPart))?;
                if n <= previous {
                    return Err(s3_error!(InvalidPartOrder));
                }
                previous = n;
                let p = u.parts.get(&n).ok_or_else(|| s3_error!(InvalidPart))?;
                if let Some(e) = &c.e_tag {
                    if strip_quotes(e.value()) != hex::encode(p.md5) {
                        return Err(s3_error!(InvalidPart, "part {n}: ETag does not match"));
                    }
                }
                if i + 1 < listed.len() && p.size < MIN_PART {
                    return Err(s3_error!(EntityTooSmall));
                }
                // Opened under the lock: a part file is never written in
                // place (a new upload of the number is a new file), so this
                // handle reads the very bytes whose ETag was checked.
                let f = std::fs::File::open(&p.path).map_err(|e| s3_err(e.into()))?;
                parts.push((f, p.clone()));
            }
            (u.name.clone(), u.extra.clone(), parts)
        };
        // One file of the parts in order, with its MD5 (the placement needs
        // it), built on a blocking thread.
        let whole = self.backend.spool.file().map_err(|e| s3_err(e.into()))?;
        let whole_path = whole.path.clone();
        let joined = tokio::task::spawn_blocking(move || join_parts(parts, &whole_path))
            .await
            .map_err(|e| s3_error!(InternalError, "{e}"))?
            .map_err(|e| s3_err(e.into()))?;
        let (received, etag) = joined;
        let mut extra = extra;
        extra.etag = Some(etag);
        let m = self
            .backend
            .store(&name, &whole.path, &received, extra)
            .await
            .map_err(s3_err)?;
        drop(whole);
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&input.upload_id);
        self.backend.spool.remove_upload(&input.upload_id);
        {
            let mut done = self.completed.lock().unwrap_or_else(|e| e.into_inner());
            done.retain(|_, (_, _, _, at)| at.elapsed() < COMPLETED_KEPT);
            done.insert(
                input.upload_id.clone(),
                (
                    input.bucket.clone(),
                    input.key.clone(),
                    m.etag(),
                    Instant::now(),
                ),
            );
        }
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag_of(&m)),
            ..Default::default()
        }))
    }
}

/// Concatenates `parts` into `out` (a new spool file): the whole file's
/// MD5 and size, and the multipart ETag (MD5 of the parts' MD5s, `-N`).
fn join_parts(
    parts: Vec<(std::fs::File, PartInfo)>,
    out: &std::path::Path,
) -> std::io::Result<(Received, String)> {
    use std::io::{Read, Write};
    let mut file = std::io::BufWriter::with_capacity(1 << 20, crate::spool::create_private(out)?);
    let mut whole = Md5::new();
    let mut of_parts = Md5::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let count = parts.len();
    for (mut f, p) in parts {
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            whole.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            len += n as u64;
        }
        if len != p.size {
            return Err(std::io::Error::other(
                "a spooled part changed size while the upload was being completed",
            ));
        }
        size += len;
        of_parts.update(p.md5);
    }
    file.flush()?;
    let etag = format!("{}-{}", hex::encode(of_parts.finalize()), count);
    Ok((
        Received {
            md5: whole.finalize().into(),
            size,
        },
        etag,
    ))
}

/// Continuation tokens: the last key of the page, hex-encoded (opaque to
/// clients, and safe in any URL).
fn encode_token(last: &str) -> String {
    hex::encode(last)
}

fn decode_token(t: &str) -> S3Result<String> {
    hex::decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_and_bad_keys_are_refused() {
        assert_eq!(
            vault_name("photos", "2024/a.jpg").unwrap(),
            "photos/2024/a.jpg"
        );
        for bad in ["a/../b", "a//b", "./x", "a\u{1}b", "x/", "/x", ".."] {
            assert!(vault_name("photos", bad).is_err(), "{bad:?}");
        }
        let long = "k".repeat(5000);
        assert_eq!(
            *vault_name("photos", &long).unwrap_err().code(),
            s3s::S3ErrorCode::KeyTooLongError
        );
        assert!(check_bucket("a/b").is_err());
        assert!(check_bucket("..").is_err());
    }

    #[test]
    fn tokens_round_trip() {
        for k in ["", "a", "dir/ä b&c"] {
            assert_eq!(decode_token(&encode_token(k)).unwrap(), k);
        }
        assert!(decode_token("zz").is_err());
    }

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(url_encode("a b/c+d"), "a%20b/c%2Bd");
    }
}
