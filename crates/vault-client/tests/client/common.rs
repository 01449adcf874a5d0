//! Helpers shared by the client's integration tests: four in-process nodes
//! from `vault_node::testing`, the library opened with short limits.

use std::path::PathBuf;
use std::time::Duration;

use vault_client::config::ClientConfig;
use vault_client::net::{client_endpoint, Limits};
use vault_client::ops::{self, ProgressRef};
use vault_client::vault::{OpenError, OpenOptions, Vault};
use vault_node::testing::{self, Observed, TestCluster};
use wire::Proof;
use zeroize::Zeroizing;

/// Alice's password in every test.
pub const ALICE: &str = "Crimson33";

/// Short limits: a lying node costs seconds, not the defaults' minutes.
pub fn limits() -> Limits {
    Limits {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(5),
        login: Duration::from_secs(3),
        stall: Duration::from_millis(1500),
        listing: Duration::from_secs(10),
        listing_entries: 5_000,
    }
}

pub fn progress() -> ProgressRef {
    ops::no_progress()
}

pub fn md5_hex(s: &str) -> String {
    vault_client::config::md5_hex(s.as_bytes())
}

pub fn config(c: &TestCluster, user: &str) -> ClientConfig {
    ClientConfig::parse(&c.dfc_text(user, None), &c.dir().join("dfc.conf")).unwrap()
}

pub async fn open_at(
    c: &TestCluster,
    user: &str,
    password: &str,
    state: Option<PathBuf>,
) -> Result<Vault, OpenError> {
    open_options(
        c,
        user,
        password,
        OpenOptions {
            state,
            limits: limits(),
        },
    )
    .await
}

pub async fn open_with_limits(
    c: &TestCluster,
    user: &str,
    password: &str,
    limits: Limits,
) -> Result<Vault, OpenError> {
    open_options(
        c,
        user,
        password,
        OpenOptions {
            state: None,
            limits,
        },
    )
    .await
}

async fn open_options(
    c: &TestCluster,
    user: &str,
    password: &str,
    options: OpenOptions,
) -> Result<Vault, OpenError> {
    let endpoint = client_endpoint(c.ca_pem().as_bytes()).unwrap();
    let pw = Zeroizing::new(password.to_string());
    Vault::open_with(&endpoint, &config(c, user), &pw, &options).await
}

pub async fn open(c: &TestCluster, user: &str, password: &str) -> Result<Vault, OpenError> {
    open_at(c, user, password, None).await
}

pub async fn rotate(
    c: &TestCluster,
    user: &str,
    old: &str,
    new: &str,
) -> Result<ops::rotate::RotateReport, ops::OpError> {
    let endpoint = client_endpoint(c.ca_pem().as_bytes()).unwrap();
    let options = OpenOptions {
        state: None,
        limits: limits(),
    };
    let (old, new) = (Zeroizing::new(old.into()), Zeroizing::new(new.into()));
    ops::rotate::rotate(&endpoint, &config(c, user), &old, &new, &options).await
}

pub fn write(c: &TestCluster, name: &str, data: &[u8]) -> PathBuf {
    let p = c.dir().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Deterministic, non-repeating bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

pub async fn put(v: &Vault, c: &TestCluster, name: &str, bytes: &[u8]) {
    let p = write(c, name, bytes);
    ops::put::put_file(v, &p, progress()).await.unwrap();
}

/// GETs `name` and checks the bytes; returns the nodes failed over from.
pub async fn get_ok(v: &Vault, c: &TestCluster, name: &str, want: &[u8]) -> Vec<String> {
    let out = c.dir().join(format!("out-{name}"));
    let _ = std::fs::remove_file(&out);
    let report = ops::get::get_file(v, name, &out, false, progress())
        .await
        .unwrap();
    assert!(std::fs::read(&out).unwrap() == want, "{name}: wrong bytes");
    report.failovers
}

pub fn no_md5_reached(seen: &Observed) {
    for (user, proof) in seen.logins() {
        assert!(
            !matches!(proof, Proof::LegacyMd5(_)),
            "an MD5 proof for {user} reached the hostile node"
        );
    }
}

pub fn record_file(c: &TestCluster, node: usize, user: &str) -> PathBuf {
    c.root(node)
        .join(".vault/records")
        .join(format!("{user}.cbor"))
}

/// A rotated (upgraded) account: Alice, legacy at first, rotated to `pw`.
pub async fn upgraded_alice(pw: &str) -> TestCluster {
    let c = TestCluster::start(&testing::md5_user("Alice", ALICE))
        .await
        .unwrap();
    open(&c, "alice", ALICE).await.unwrap().close();
    rotate(&c, "alice", ALICE, pw).await.unwrap();
    c
}
