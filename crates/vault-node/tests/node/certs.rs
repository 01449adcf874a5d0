//! `certs::write_dir` and `certs::generate`: files, permissions, where the
//! CA key lives, CA re-use (renewal), `force`, validity and the cluster
//! secret.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use vault_node::certs::{self, CertOptions};
use vault_node::testing::{timed, users_text, RawClient, TestNode};
use wire::Response;

const DAY: u64 = 86_400;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn opts() -> CertOptions {
    CertOptions::default()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Verifies `cert_pem` as node `name`'s certificate against `ca_pem` at
/// `at`, with rustls' own verifier (what the client uses).
fn verify_at(
    ca_pem: &str,
    cert_pem: &str,
    name: &str,
    at: SystemTime,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
    let end: CertificateDer<'static> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let server = ServerName::try_from(name.to_string()).unwrap();
    let at = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    verifier
        .verify_server_cert(&end, &[], &server, &[], at)
        .map(|_| ())
}

fn is_expired(r: Result<(), rustls::Error>) -> bool {
    use rustls::CertificateError::{Expired, ExpiredContext};
    matches!(
        r,
        Err(rustls::Error::InvalidCertificate(
            Expired | ExpiredContext { .. }
        ))
    )
}

fn after(days: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(days * DAY)
}

#[test]
fn writes_pem_files_and_keeps_the_ca_key_out_of_the_certs_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs");
    let w = certs::write_dir(
        &d,
        &names(&["DFS1", "DFS2"]),
        &certs::default_sans(),
        &opts(),
    )
    .unwrap();
    for f in [
        "ca.pem",
        "DFS1.pem",
        "DFS1.key",
        "DFS2.pem",
        "DFS2.key",
        "cluster.secret",
    ] {
        assert!(d.join(f).is_file(), "{f}");
    }
    assert!(
        !d.join("ca.key").exists(),
        "the CA key is in the certs folder"
    );
    let ca_key = dir.path().join("ca-private/ca.key");
    assert_eq!(
        fs::canonicalize(&w.ca_key).unwrap(),
        fs::canonicalize(&ca_key).unwrap()
    );
    assert!(fs::read_to_string(&ca_key).unwrap().contains("PRIVATE KEY"));
    assert!(w.new_ca && w.new_cluster_secret && w.moved_ca_key_from.is_none());
    assert_eq!(fs::read(d.join("cluster.secret")).unwrap().len(), 32);
    #[cfg(unix)]
    {
        assert_eq!(mode(&ca_key), 0o600);
        assert_eq!(mode(ca_key.parent().unwrap()), 0o700);
        assert_eq!(mode(&d.join("DFS1.key")), 0o600);
        assert_eq!(mode(&d.join("DFS2.key")), 0o600);
        assert_eq!(mode(&d.join("cluster.secret")), 0o600);
    }
}

#[test]
fn an_old_layout_ca_key_is_moved_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs");
    certs::write_dir(&d, &names(&["DFS1"]), &certs::default_sans(), &opts()).unwrap();
    // What earlier versions left: the CA key beside ca.pem, nothing outside.
    let private = dir.path().join("ca-private");
    let key = fs::read(private.join("ca.key")).unwrap();
    fs::write(d.join("ca.key"), &key).unwrap();
    fs::remove_dir_all(&private).unwrap();
    let ca_pem = fs::read_to_string(d.join("ca.pem")).unwrap();
    let w = certs::write_dir(&d, &names(&["DFS1"]), &certs::default_sans(), &opts()).unwrap();
    assert_eq!(w.moved_ca_key_from, Some(d.join("ca.key")));
    assert!(!w.new_ca, "the moved key was not re-used");
    assert!(!d.join("ca.key").exists());
    assert_eq!(fs::read(private.join("ca.key")).unwrap(), key);
    #[cfg(unix)]
    {
        assert_eq!(mode(&private.join("ca.key")), 0o600);
        assert_eq!(mode(&private), 0o700);
    }
    // The CA was re-used: the new certificate chains to the old ca.pem.
    assert_eq!(fs::read_to_string(d.join("ca.pem")).unwrap(), ca_pem);
    let cert = fs::read_to_string(d.join("DFS1.pem")).unwrap();
    verify_at(&ca_pem, &cert, "DFS1", SystemTime::now()).unwrap();
    // A different key left in the folder is an error, not a silent choice.
    fs::write(d.join("ca.key"), b"-----BEGIN PRIVATE KEY-----\nother\n").unwrap();
    let err = certs::write_dir(&d, &names(&["DFS1"]), &[], &opts()).unwrap_err();
    assert!(format!("{err:#}").contains("different CA keys"), "{err:#}");
}

#[test]
fn a_ca_key_path_inside_the_certs_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs");
    let o = CertOptions {
        ca_key: Some(d.join("sub/ca.key")),
        ..opts()
    };
    let err = certs::write_dir(&d, &names(&["DFS1"]), &[], &o).unwrap_err();
    assert!(format!("{err:#}").contains("must not be inside"), "{err:#}");
    // Anywhere else is fine.
    let o = CertOptions {
        ca_key: Some(dir.path().join("vaultca/key.pem")),
        ..opts()
    };
    certs::write_dir(&d, &names(&["DFS1"]), &[], &o).unwrap();
    assert!(dir.path().join("vaultca/key.pem").is_file());
}

#[test]
fn refuses_to_replace_a_ca_without_force_and_renews_node_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs");
    let ca_key_path = dir.path().join("ca-private/ca.key");
    certs::write_dir(&d, &names(&["DFS1"]), &[], &opts()).unwrap();
    let ca = fs::read(d.join("ca.pem")).unwrap();
    let ca_key = fs::read(&ca_key_path).unwrap();
    let secret = fs::read(d.join("cluster.secret")).unwrap();
    let dfs1 = fs::read(d.join("DFS1.pem")).unwrap();
    // Again without force (renewal): the CA and the secret are kept, nodes
    // are re-issued.
    let w = certs::write_dir(&d, &names(&["DFS1", "DFS3"]), &[], &opts()).unwrap();
    assert!(!w.new_ca && !w.new_cluster_secret);
    assert_eq!(fs::read(d.join("ca.pem")).unwrap(), ca);
    assert_eq!(fs::read(&ca_key_path).unwrap(), ca_key);
    assert_eq!(fs::read(d.join("cluster.secret")).unwrap(), secret);
    assert_ne!(fs::read(d.join("DFS1.pem")).unwrap(), dfs1);
    assert!(d.join("DFS3.pem").exists());
    // Half a CA is not silently replaced.
    fs::remove_file(&ca_key_path).unwrap();
    let err = certs::write_dir(&d, &names(&["DFS1"]), &[], &opts()).unwrap_err();
    assert!(format!("{err:#}").contains("--force"), "{err:#}");
    assert_eq!(fs::read(d.join("ca.pem")).unwrap(), ca);
    // With force, a new CA (the secret stays).
    let force = CertOptions {
        force: true,
        ..opts()
    };
    certs::write_dir(&d, &names(&["DFS1"]), &[], &force).unwrap();
    assert_ne!(fs::read(d.join("ca.pem")).unwrap(), ca);
    assert_eq!(fs::read(d.join("cluster.secret")).unwrap(), secret);
}

#[test]
fn certificates_expire() {
    let c = certs::generate(&["DFS1"], &certs::default_sans()).unwrap();
    let (ca, node) = (&c.ca_cert_pem, &c.nodes[0].cert_pem);
    verify_at(ca, node, "DFS1", SystemTime::now()).unwrap();
    verify_at(ca, node, "DFS1", after(729)).unwrap();
    assert!(is_expired(verify_at(ca, node, "DFS1", after(3 * 365))));
    // --days sets the node certificates' lifetime.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs");
    let short = CertOptions { days: 30, ..opts() };
    certs::write_dir(&d, &names(&["DFS1"]), &certs::default_sans(), &short).unwrap();
    let ca = fs::read_to_string(d.join("ca.pem")).unwrap();
    let node = fs::read_to_string(d.join("DFS1.pem")).unwrap();
    verify_at(&ca, &node, "DFS1", after(29)).unwrap();
    assert!(is_expired(verify_at(&ca, &node, "DFS1", after(31))));
    // rustls does not check a trust anchor's dates, so read them: the CA
    // lasts ten years, the node certificates --days; both start an hour
    // back for clock skew.
    let now = unix_now();
    let (ca_from, ca_to) = validity(&ca);
    let (node_from, node_to) = validity(&node);
    for from in [ca_from, node_from] {
        assert!(
            from <= now && from + 2 * 3600 >= now,
            "starts {from}, now {now}"
        );
    }
    assert!(ca_to.abs_diff(now + 3652 * DAY) < 120, "CA ends {ca_to}");
    assert!(
        node_to.abs_diff(now + 30 * DAY) < 120,
        "node ends {node_to}"
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One DER element: tag, contents, and what follows it.
fn der(b: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (b[0], b[1] as usize);
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        (
            b[2..2 + n]
                .iter()
                .fold(0usize, |a, x| (a << 8) | *x as usize),
            2 + n,
        )
    };
    (tag, &b[start..start + len], &b[start + len..])
}

/// notBefore and notAfter of the first certificate in `pem`, as Unix
/// seconds (a minimal X.509 reader: tbsCertificate's fifth element).
fn validity(pem: &str) -> (u64, u64) {
    let cert = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert, _) = der(&cert);
    let (_, tbs, _) = der(cert);
    let mut rest = tbs;
    let (tag, _, r) = der(rest); // version [0], present in v3 certificates
    assert_eq!(tag, 0xa0);
    rest = r;
    for _ in 0..3 {
        rest = der(rest).2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = der(rest);
    let (t1, from, r) = der(validity);
    let (t2, to, _) = der(r);
    (time_of(t1, from), time_of(t2, to))
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to Unix seconds.
fn time_of(tag: u8, s: &[u8]) -> u64 {
    let s = std::str::from_utf8(s).unwrap();
    let (year, rest) = match tag {
        0x17 => (2000 + s[..2].parse::<i64>().unwrap(), &s[2..]),
        0x18 => (s[..4].parse::<i64>().unwrap(), &s[4..]),
        _ => panic!("not a time: tag {tag}"),
    };
    let n = |i: usize| rest[i..i + 2].parse::<i64>().unwrap();
    let (month, day, h, m, sec) = (n(0), n(2), n(4), n(6), n(8));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + h * 3600 + m * 60 + sec) as u64
}

#[tokio::test]
async fn node_certs_from_a_reused_ca_chain_to_the_original_ca_pem() {
    timed(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("certs");
        certs::write_dir(&d, &names(&["DFS1"]), &certs::default_sans(), &opts()).unwrap();
        let original_ca = fs::read_to_string(d.join("ca.pem")).unwrap();
        certs::write_dir(&d, &names(&["DFS2"]), &certs::default_sans(), &opts()).unwrap();
        let node = TestNode::start_with(&users_text(), |config| {
            config.name = "DFS2".into();
            config.cert_pem = fs::read_to_string(d.join("DFS2.pem")).unwrap();
            config.key_pem = fs::read_to_string(d.join("DFS2.key")).unwrap();
        })
        .await
        .unwrap();
        let c = RawClient::connect(node.addr(), &original_ca, "DFS2")
            .await
            .unwrap();
        assert_eq!(
            c.login_md5("alice", "Crimson33").await.unwrap(),
            Response::LoggedIn
        );
        assert!(
            matches!(c.call(&wire::Request::Status).await, Response::Status(s) if s.name == "DFS2")
        );
    })
    .await
}
