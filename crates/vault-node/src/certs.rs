//! The cluster's own PKI: one CA (rcgen, ECDSA P-256) and one certificate
//! per node whose SANs hold the node's name (`DFS1`, what clients put in
//! the TLS server name) plus the addresses clients dial.
//!
//! Files written by [`write_dir`]:
//!
//! ```text
//! <dir>/ca.pem                  the CA certificate (valid 10 years); clients trust it
//! <dir>/<NAME>.pem, <NAME>.key  node certificate (valid --days, default 730) and key (0600)
//! <dir>/cluster.secret          32 random bytes (0600), kept once created: decoy salts
//! <parent of dir>/ca-private/ca.key   the CA private key (0600, folder 0700), or --ca-key
//! ```
//!
//! The CA key never goes into `<dir>`, the folder `serve --certs` reads and
//! that is copied to every node: a node that can read the CA key can mint
//! certificates for every other node name. A `ca.key` left in `<dir>` by
//! earlier versions is moved out. Renewal is running `certs` again: the CA
//! is re-used and fresh node certificates are issued.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::fsutil::write_atomic;
use crate::secret::{ClusterSecret, CLUSTER_SECRET_FILE};

/// Default validity of node certificates, in days.
pub const DEFAULT_NODE_DAYS: u32 = 730;
/// Validity of the CA certificate, in days (ten years).
pub const CA_DAYS: u32 = 3652;
/// Certificates start this long before they are issued, so a peer whose
/// clock is a little behind does not reject a fresh certificate.
const BACKDATE: Duration = Duration::hours(1);
/// Name of the folder, next to the certificates folder, that holds the CA
/// key by default.
pub const CA_PRIVATE_DIR: &str = "ca-private";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";

/// Common name of the cluster CA. An existing CA key is re-used with this
/// subject, so node certificates issued later chain to the old `ca.pem`.
pub const CA_COMMON_NAME: &str = "Vault cluster CA";

/// SANs added to every node certificate unless told otherwise.
pub fn default_sans() -> Vec<String> {
    vec!["127.0.0.1".into(), "::1".into(), "localhost".into()]
}

/// A CA and node certificates, PEM-encoded, and a cluster secret.
pub struct ClusterCerts {
    /// CA certificate.
    pub ca_cert_pem: String,
    /// CA private key (PKCS#8).
    pub ca_key_pem: String,
    /// One per node.
    pub nodes: Vec<NodeCert>,
    /// The cluster's secret for decoy salts.
    pub cluster_secret: ClusterSecret,
}

/// One node's certificate and key, PEM-encoded.
pub struct NodeCert {
    /// Node name (`DFS1`).
    pub name: String,
    /// Certificate signed by the cluster CA.
    pub cert_pem: String,
    /// Private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCerts")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `now - BACKDATE` to `now + days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    validity(&mut params, CA_DAYS);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "Vault");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Checks a node name can be a DNS SAN and a file name.
fn check_node_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        bail!("invalid node name {name:?}: use letters, digits, '-' and '_'");
    }
    Ok(())
}

fn issue(
    ca: &Certificate,
    ca_key: &KeyPair,
    name: &str,
    sans: &[String],
    days: u32,
) -> anyhow::Result<NodeCert> {
    check_node_name(name)?;
    let mut names = vec![name.to_string()];
    names.extend(sans.iter().filter(|s| s.as_str() != name).cloned());
    let mut params = CertificateParams::new(names)
        .with_context(|| format!("invalid subject alternative name for node {name}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate().context("failed to generate node key")?;
    let cert = params
        .signed_by(&key, ca, ca_key)
        .with_context(|| format!("failed to sign the certificate of {name}"))?;
    Ok(NodeCert {
        name: name.to_string(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn new_ca() -> anyhow::Result<(Certificate, KeyPair)> {
    let key = KeyPair::generate().context("failed to generate the CA key")?;
    let cert = ca_params()
        .self_signed(&key)
        .context("failed to self-sign the CA")?;
    Ok((cert, key))
}

/// Generates a fresh CA, a certificate per node (valid
/// [`DEFAULT_NODE_DAYS`]) and a cluster secret, in memory. Each node's SANs
/// are its name plus `sans` (IP addresses as IP SANs, others as DNS).
pub fn generate(nodes: &[&str], sans: &[String]) -> anyhow::Result<ClusterCerts> {
    let (ca, ca_key) = new_ca()?;
    let nodes = nodes
        .iter()
        .map(|n| issue(&ca, &ca_key, n, sans, DEFAULT_NODE_DAYS))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ClusterCerts {
        ca_cert_pem: ca.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        nodes,
        cluster_secret: ClusterSecret::random().context("failed to make the cluster secret")?,
    })
}

/// How [`write_dir`] issues certificates.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Validity of the node certificates, in days from now.
    pub days: u32,
    /// Where the CA private key lives; `None`: [`default_ca_key_path`].
    pub ca_key: Option<PathBuf>,
    /// Replace an existing CA (invalidates every certificate it issued).
    pub force: bool,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            days: DEFAULT_NODE_DAYS,
            ca_key: None,
            force: false,
        }
    }
}

/// What [`write_dir`] did, for the notices the caller prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Where the CA private key is.
    pub ca_key: PathBuf,
    /// Whether a new CA was made (else the existing one was re-used).
    pub new_ca: bool,
    /// An old-layout `ca.key` that was moved out of the certificates folder.
    pub moved_ca_key_from: Option<PathBuf>,
    /// Whether `cluster.secret` was created (else the existing one was kept).
    pub new_cluster_secret: bool,
}

/// `<parent of dir>/ca-private/ca.key`.
pub fn default_ca_key_path(dir: &Path) -> PathBuf {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let parent = abs.parent().map_or_else(|| abs.clone(), Path::to_path_buf);
    parent.join(CA_PRIVATE_DIR).join(CA_KEY_FILE)
}

/// Writes `ca.pem`, `<NAME>.pem`/`<NAME>.key` per node and (if missing)
/// `cluster.secret` into `dir` (created if missing), and the CA key to
/// `options.ca_key`. An existing CA (`ca.pem` + its key) is kept and issues
/// the node certificates, unless `options.force` replaces it: that is how
/// certificates are renewed. A `ca.key` inside `dir` (the old layout) is
/// moved to the CA key's place first.
pub fn write_dir(
    dir: &Path,
    nodes: &[String],
    sans: &[String],
    options: &CertOptions,
) -> anyhow::Result<Written> {
    for n in nodes {
        check_node_name(n)?;
    }
    if options.days == 0 {
        bail!("certificates must be valid for at least one day");
    }
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let ca_pem_path = dir.join("ca.pem");
    let ca_key_path = options
        .ca_key
        .clone()
        .unwrap_or_else(|| default_ca_key_path(dir));
    refuse_key_inside(dir, &ca_key_path)?;
    let moved_ca_key_from = move_old_ca_key(dir, &ca_key_path)?;
    let (ca, ca_key, new_ca) = match (ca_pem_path.exists(), ca_key_path.exists(), options.force) {
        (true, true, false) => {
            let pem = fs::read_to_string(&ca_key_path)
                .with_context(|| format!("failed to read {}", ca_key_path.display()))?;
            let key = KeyPair::from_pem(&pem)
                .with_context(|| format!("failed to parse {}", ca_key_path.display()))?;
            let cert = ca_params()
                .self_signed(&key)
                .context("failed to rebuild the CA from its key")?;
            tracing::info!(dir = %dir.display(), "re-using the existing CA");
            (cert, key, false)
        }
        (false, false, _) | (_, _, true) => {
            let (cert, key) = new_ca()?;
            create_private_dir(&ca_key_path)?;
            write_file(&ca_key_path, &key.serialize_pem(), true)?;
            write_file(&ca_pem_path, &cert.pem(), false)?;
            (cert, key, true)
        }
        (true, false, false) => bail!(
            "{} exists without its key {}; give --ca-key PATH, or --force to make a new CA",
            ca_pem_path.display(),
            ca_key_path.display()
        ),
        (false, true, false) => bail!(
            "{} exists without {}; refusing to replace the CA without --force",
            ca_key_path.display(),
            ca_pem_path.display()
        ),
    };
    let ca_pem = fs::read_to_string(&ca_pem_path)
        .with_context(|| format!("failed to read {}", ca_pem_path.display()))?;
    for name in nodes {
        let node = issue(&ca, &ca_key, name, sans, options.days)?;
        check_issued(&ca_pem, &node).with_context(|| {
            format!(
                "the CA key {} does not match {}",
                ca_key_path.display(),
                ca_pem_path.display()
            )
        })?;
        write_file(&dir.join(format!("{name}.key")), &node.key_pem, true)?;
        write_file(&dir.join(format!("{name}.pem")), &node.cert_pem, false)?;
    }
    let secret_path = dir.join(CLUSTER_SECRET_FILE);
    let (_, new_cluster_secret) = ClusterSecret::load_or_create(&secret_path)
        .with_context(|| format!("failed to load or create {}", secret_path.display()))?;
    Ok(Written {
        ca_key: ca_key_path,
        new_ca,
        moved_ca_key_from,
        new_cluster_secret,
    })
}

/// Refuses a CA key path inside the certificates folder.
fn refuse_key_inside(dir: &Path, ca_key: &Path) -> anyhow::Result<()> {
    let dir = resolve(dir)?;
    if resolve(ca_key)?.starts_with(&dir) {
        bail!(
            "the CA key {} must not be inside the certificates folder {}: every node reads that folder",
            ca_key.display(),
            dir.display()
        );
    }
    Ok(())
}

/// `path` made absolute with symbolic links resolved as far as it exists.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(path)
        .with_context(|| format!("failed to resolve {}", path.display()))?;
    let mut rest = Vec::new();
    let mut existing = abs.as_path();
    loop {
        if let Ok(real) = fs::canonicalize(existing) {
            return Ok(rest.iter().rev().fold(real, |p, c| p.join(c)));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Ok(abs),
        }
    }
}

/// Moves `<dir>/ca.key` (the old layout) to `ca_key`; the old path if it
/// did. A copy identical to the key already at `ca_key` is removed.
fn move_old_ca_key(dir: &Path, ca_key: &Path) -> anyhow::Result<Option<PathBuf>> {
    let old = dir.join(CA_KEY_FILE);
    if !old.exists() {
        return Ok(None);
    }
    let read = |p: &Path| fs::read(p).with_context(|| format!("failed to read {}", p.display()));
    if ca_key.exists() {
        if read(&old)? != read(ca_key)? {
            bail!(
                "{} and {} are different CA keys; keep the one that signed {}/ca.pem \
                 outside the certificates folder and delete the other",
                old.display(),
                ca_key.display(),
                dir.display()
            );
        }
    } else {
        create_private_dir(ca_key)?;
        write_atomic(ca_key, &read(&old)?, true)
            .with_context(|| format!("failed to write {}", ca_key.display()))?;
    }
    fs::remove_file(&old).with_context(|| format!("failed to remove {}", old.display()))?;
    crate::fsutil::sync_dir(dir).with_context(|| format!("failed to sync {}", dir.display()))?;
    tracing::warn!(from = %old.display(), to = %ca_key.display(), "moved the CA key out of the certificates folder");
    Ok(Some(old))
}

/// Creates the folder of `path` (mode 0700 where created).
fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(parent)
        .with_context(|| format!("failed to create {}", parent.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(parent)
            .with_context(|| format!("failed to read {}", parent.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(folder = %parent.display(), "the CA key's folder is readable by others");
        }
    }
    Ok(())
}

/// Checks a freshly issued certificate chains to `ca_pem`: catches a CA
/// key that is not the one behind `ca.pem`.
fn check_issued(ca_pem: &str, node: &NodeCert) -> anyhow::Result<()> {
    verify_node_cert(
        ca_pem,
        &node.cert_pem,
        &node.name,
        std::time::SystemTime::now(),
    )
}

/// Verifies `cert_pem` as the TLS certificate of node `name` against the
/// CA in `ca_pem` at time `at`, as a client does.
pub fn verify_node_cert(
    ca_pem: &str,
    cert_pem: &str,
    name: &str,
    at: std::time::SystemTime,
) -> anyhow::Result<()> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.context("failed to parse ca.pem")?)?;
    }
    let end: CertificateDer<'static> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .context("no certificate in the node certificate PEM")?
        .context("failed to parse the node certificate")?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .context("failed to build a certificate verifier")?;
    let server = ServerName::try_from(name.to_string()).context("invalid node name")?;
    let at = UnixTime::since_unix_epoch(
        at.duration_since(std::time::UNIX_EPOCH)
            .context("time before 1970")?,
    );
    verifier
        .verify_server_cert(&end, &[], &server, &[], at)
        .context("the node certificate does not verify against ca.pem")?;
    Ok(())
}

fn write_file(path: &Path, pem: &str, private: bool) -> anyhow::Result<()> {
    write_atomic(path, pem.as_bytes(), true)
        .with_context(|| format!("failed to write {}", path.display()))?;
    #[cfg(unix)]
    if !private {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("failed to set permissions on {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem() {
        let c = generate(&["DFS1", "DFS2"], &default_sans()).unwrap();
        assert!(c.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c.ca_key_pem.contains("PRIVATE KEY"));
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[1].name, "DFS2");
        assert!(!format!("{c:?}").contains("PRIVATE"));
        let now = std::time::SystemTime::now();
        verify_node_cert(&c.ca_cert_pem, &c.nodes[1].cert_pem, "DFS2", now).unwrap();
        assert!(verify_node_cert(&c.ca_cert_pem, &c.nodes[1].cert_pem, "DFS1", now).is_err());
    }

    #[test]
    fn rejects_bad_names() {
        assert!(generate(&["../x"], &[]).is_err());
        assert!(generate(&["a b"], &[]).is_err());
    }
}
