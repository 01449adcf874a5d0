//! `certs::write_dir`: files, permissions, CA re-use and `force`.

mod support;

use std::fs;

use support::*;
use vault_node::certs;
use wire::Response;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn writes_pem_files_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("certs");
    certs::write_dir(&d, &names(&["DFS1", "DFS2"]), &certs::default_sans(), false).unwrap();
    for f in [
        "ca.pem", "ca.key", "DFS1.pem", "DFS1.key", "DFS2.pem", "DFS2.key",
    ] {
        assert!(d.join(f).is_file(), "{f}");
    }
    assert!(fs::read_to_string(d.join("DFS1.key"))
        .unwrap()
        .contains("PRIVATE KEY"));
    #[cfg(unix)]
    {
        assert_eq!(mode(&d.join("ca.key")), 0o600);
        assert_eq!(mode(&d.join("DFS1.key")), 0o600);
        assert_eq!(mode(&d.join("DFS2.key")), 0o600);
    }
}

#[test]
fn refuses_to_replace_a_ca_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certs::write_dir(d, &names(&["DFS1"]), &[], false).unwrap();
    let ca = fs::read(d.join("ca.pem")).unwrap();
    let ca_key = fs::read(d.join("ca.key")).unwrap();
    // Again without force: the CA is kept, nodes are re-issued.
    certs::write_dir(d, &names(&["DFS1", "DFS3"]), &[], false).unwrap();
    assert_eq!(fs::read(d.join("ca.pem")).unwrap(), ca);
    assert_eq!(fs::read(d.join("ca.key")).unwrap(), ca_key);
    assert!(d.join("DFS3.pem").exists());
    // Half a CA is not silently replaced.
    fs::remove_file(d.join("ca.key")).unwrap();
    let err = certs::write_dir(d, &names(&["DFS1"]), &[], false).unwrap_err();
    assert!(format!("{err:#}").contains("--force"), "{err:#}");
    assert_eq!(fs::read(d.join("ca.pem")).unwrap(), ca);
    // With force, a new CA.
    certs::write_dir(d, &names(&["DFS1"]), &[], true).unwrap();
    assert_ne!(fs::read(d.join("ca.pem")).unwrap(), ca);
}

#[tokio::test]
async fn node_certs_from_a_reused_ca_chain_to_the_original_ca_pem() {
    timed(async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("certs");
        certs::write_dir(&d, &names(&["DFS1"]), &certs::default_sans(), false).unwrap();
        let original_ca = fs::read_to_string(d.join("ca.pem")).unwrap();
        certs::write_dir(&d, &names(&["DFS2"]), &certs::default_sans(), false).unwrap();
        let root = dir.path().join("DFS2");
        let cluster = Cluster::new();
        let mut config = cluster.config(1, &root);
        config.cert_pem = fs::read_to_string(d.join("DFS2.pem")).unwrap();
        config.key_pem = fs::read_to_string(d.join("DFS2.key")).unwrap();
        let node = TestNode::spawn(config, original_ca);
        let c = node.client().await;
        assert!(
            matches!(c.call(&wire::Request::Status).await, Response::Status(s) if s.name == "DFS2")
        );
    })
    .await
}
