//! The cluster's own PKI: one CA (rcgen, ECDSA P-256) and one certificate
//! per node whose SANs hold the node's name (`DFS1`, what clients put in
//! the TLS server name) plus the addresses clients dial.
//!
//! Files written by [`write_dir`]: `ca.pem`, `ca.key`, `<NAME>.pem`,
//! `<NAME>.key`; private keys mode 0600.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::fsutil::write_atomic;

/// Common name of the cluster CA. An existing CA key is re-used with this
/// subject, so node certificates issued later chain to the old `ca.pem`.
pub const CA_COMMON_NAME: &str = "Vault cluster CA";

/// SANs added to every node certificate unless told otherwise.
pub fn default_sans() -> Vec<String> {
    vec!["127.0.0.1".into(), "::1".into(), "localhost".into()]
}

/// A CA and node certificates, PEM-encoded.
pub struct ClusterCerts {
    /// CA certificate.
    pub ca_cert_pem: String,
    /// CA private key (PKCS#8).
    pub ca_key_pem: String,
    /// One per node.
    pub nodes: Vec<NodeCert>,
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

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
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

/// Generates a fresh CA and a certificate per node, in memory. Each node's
/// SANs are its name plus `sans` (IP addresses as IP SANs, others as DNS).
pub fn generate(nodes: &[&str], sans: &[String]) -> anyhow::Result<ClusterCerts> {
    let (ca, ca_key) = new_ca()?;
    let nodes = nodes
        .iter()
        .map(|n| issue(&ca, &ca_key, n, sans))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ClusterCerts {
        ca_cert_pem: ca.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        nodes,
    })
}

/// Writes `ca.pem`, `ca.key` and `<NAME>.pem`/`<NAME>.key` per node into
/// `dir` (created if missing). An existing CA (`ca.pem` + `ca.key`) is kept
/// and its key issues the node certificates, unless `force` replaces it.
pub fn write_dir(dir: &Path, nodes: &[String], sans: &[String], force: bool) -> anyhow::Result<()> {
    for n in nodes {
        check_node_name(n)?;
    }
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let ca_pem_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let (ca, ca_key) = match (ca_pem_path.exists(), ca_key_path.exists(), force) {
        (true, true, false) => {
            let pem = fs::read_to_string(&ca_key_path)
                .with_context(|| format!("failed to read {}", ca_key_path.display()))?;
            let key = KeyPair::from_pem(&pem)
                .with_context(|| format!("failed to parse {}", ca_key_path.display()))?;
            let cert = ca_params()
                .self_signed(&key)
                .context("failed to rebuild the CA from its key")?;
            tracing::info!(dir = %dir.display(), "re-using the existing CA");
            (cert, key)
        }
        (false, false, _) | (_, _, true) => {
            let (cert, key) = new_ca()?;
            write_file(&ca_key_path, &key.serialize_pem(), true)?;
            write_file(&ca_pem_path, &cert.pem(), false)?;
            (cert, key)
        }
        (true, false, false) => bail!(
            "{} exists without {}; refusing to replace the CA without --force",
            ca_pem_path.display(),
            ca_key_path.display()
        ),
        (false, true, false) => bail!(
            "{} exists without {}; refusing to replace the CA without --force",
            ca_key_path.display(),
            ca_pem_path.display()
        ),
    };
    for name in nodes {
        let node = issue(&ca, &ca_key, name, sans)?;
        write_file(&dir.join(format!("{name}.key")), &node.key_pem, true)?;
        write_file(&dir.join(format!("{name}.pem")), &node.cert_pem, false)?;
    }
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
    }

    #[test]
    fn rejects_bad_names() {
        assert!(generate(&["../x"], &[]).is_err());
        assert!(generate(&["a b"], &[]).is_err());
    }
}
