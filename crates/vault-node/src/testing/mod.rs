//! Test kit (feature `testing`): real nodes in-process (four, or one), a
//! raw protocol client, and a hostile proxy that puts a lying node in front
//! of any of them.
//!
//! The threat model says a node may flip bits, truncate, swap parts between
//! files or users, replay old data, forge key records, lie about a user's
//! login scheme, stall, flood a listing, send oversized or malformed frames
//! and send terminal escape sequences. Each of those is one small [`Lie`]
//! away; the common ones are ready-made in [`lie`].
//!
//! Use it from another crate's integration tests with
//!
//! ```toml
//! [dev-dependencies]
//! vault-node = { workspace = true, features = ["testing"] }
//! ```
//!
//! # Layout
//!
//! - [`cluster`]: [`TestCluster`], four nodes `DFS1`..`DFS4` on 127.0.0.1
//!   port 0 in one temp dir, certificates made at start; stop, restart,
//!   `dfc.conf` for the client.
//! - [`node`]: [`TestNode`], one node `DFS1` the same way, for tests of a
//!   single node's limits, logins and shutdown.
//! - [`raw`]: [`RawClient`], one QUIC stream per request and nothing else;
//!   frame helpers for hand-made bytes.
//! - [`proxy`]: the hostile proxy behind [`TestCluster::make_hostile`];
//!   [`Observed`], the record of what reached it.
//! - [`lie`]: the [`Lie`] trait, [`Verdict`], [`Reply`], and the ready-made
//!   lies.
//! - here: [`timed`], [`eventually`], users-file lines ([`md5_user`],
//!   [`plain_user`], [`upgraded_user`], the sample accounts of
//!   [`users_text`]), [`cheap_kdf`] and [`tiny_throttle`].
//!
//! # Node numbers
//!
//! Every `i` in this kit is 0-based: node `0` is `DFS1`, node `3` is
//! `DFS4`, as in `dfc.conf` order. An index above 3 panics. A [`TestNode`]
//! is `DFS1`.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use vault_node::testing::{self, lie::FlipBlob, TestCluster};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let mut cluster = TestCluster::start(&testing::plain_user("Alice", "Crimson33")).await?;
//! // DFS2 flips a byte in every part it serves.
//! let flip = Arc::new(FlipBlob::new("p-"));
//! let seen = cluster.make_hostile(1, flip.clone()).await?;
//! let conf = cluster.write_dfc("Alice", Some("Password: Crimson33"))?;
//! // ... run the client with `-c conf`, then:
//! assert!(seen.logins().iter().all(|(_, p)| matches!(p, wire::Proof::LegacyMd5(_))));
//! # let _ = (conf, flip.hits()); Ok(()) }
//! ```
//!
//! # Bounds
//!
//! Nothing here uses fixed ports or sleeps to synchronise; everything
//! listens on loopback. Every read from the network is bounded, and the
//! proxy never panics on malformed input: it logs (`tracing`) and closes
//! the stream.

use std::future::Future;
use std::time::Duration;

use md5::{Digest, Md5};
use wire::KdfParams;

use crate::throttle::ThrottleConfig;

pub mod cluster;
pub mod lie;
pub mod node;
mod observed;
pub mod proxy;
pub mod raw;

pub use cluster::{TestCluster, NODE_NAMES};
pub use lie::{Honest, Lie, Reply, Verdict};
pub use node::TestNode;
pub use observed::Observed;
pub use raw::RawClient;

/// Upper bound for one test; see [`timed`].
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body under [`TEST_TIMEOUT`], panicking if it takes longer.
pub async fn timed<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// Polls `cond` every 20 ms until it holds, for up to 10 s; whether it
/// did. For what a node does after a client went away (a temp file
/// removed, a slot freed), which no answer announces.
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// MD5 of `password`: the legacy login proof and the classic digest.
pub fn md5_digest(password: &str) -> [u8; wire::MD5_LEN] {
    Md5::digest(password.as_bytes()).into()
}

/// A users-file entry in the classic digest form:
/// `Username: NAME` / `Password: <md5 hex>`, each line ending in `\n`.
pub fn md5_user(name: &str, password: &str) -> String {
    format!(
        "Username: {name}\nPassword: {}\n",
        hex::encode(md5_digest(password))
    )
}

/// A users-file entry in the classic plain form: `NAME PASSWORD\n`.
pub fn plain_user(name: &str, password: &str) -> String {
    format!("{name} {password}\n")
}

/// An upgraded users-file line (`NAME argon2id m=..,t=..,p=.. SALT KEY\n`,
/// what `vault-node user add` writes) with the real default costs
/// ([`crate::kdf::new_params`]: 64 MiB, t = 3) and a fresh random salt.
///
/// Runs Argon2id once (a fraction of a second). Each call picks a new salt:
/// build the line once and give the same text to every node that should
/// know the account.
pub fn upgraded_user(name: &str, password: &str) -> anyhow::Result<String> {
    upgraded_user_with(name, password, &crate::kdf::new_params()?)
}

/// [`upgraded_user`] with the given salt and costs.
pub fn upgraded_user_with(name: &str, password: &str, kdf: &KdfParams) -> anyhow::Result<String> {
    let key = crate::kdf::public_key_for_password(password.as_bytes(), kdf)?;
    Ok(format!(
        "{}\n",
        crate::users::upgraded_line(name, kdf, &key)
    ))
}

/// Argon2id parameters that cost next to nothing (256 KiB, t = 1, p = 1)
/// with a 16-byte salt of `salt` bytes: for test accounts (a node does not
/// check costs; the client refuses these).
pub fn cheap_kdf(salt: u8) -> KdfParams {
    KdfParams {
        salt: vec![salt; 16],
        m_kib: 256,
        t: 1,
        p: 1,
    }
}

/// The sample accounts, written as hand-kept `dfs.conf` files are (a
/// comment, CRLF line ends, a blank line):
///
/// - `Alice`, password `Crimson33`: classic MD5 digest entry;
/// - `Bob`, password `Velvet77`: classic plain entry;
/// - `Carol`, password `Magellan101`: upgraded entry with [`cheap_kdf`]`(7)`.
///
/// # Panics
///
/// If Argon2id fails for [`cheap_kdf`] (it does not).
pub fn users_text() -> String {
    let carol = upgraded_user_with("Carol", "Magellan101", &cheap_kdf(7))
        .unwrap_or_else(|e| panic!("cheap Argon2id failed: {e:#}"));
    format!(
        "# test users\r\nUsername: Alice\r\nPassword: {}\r\n\r\nBob Velvet77\r\n{}\r\n",
        hex::encode(md5_digest("Crimson33")),
        carol.trim_end()
    )
}

/// A throttle that bites fast: two free failures, then 300 ms waits (at
/// most 300 ms per source and per name).
pub fn tiny_throttle() -> ThrottleConfig {
    ThrottleConfig {
        free_failures: 2,
        base_delay: Duration::from_millis(300),
        max_ip_delay: Duration::from_millis(300),
        max_user_delay: Duration::from_millis(300),
        idle_reset: Duration::from_secs(60),
        max_tracked: 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::{SchemeName, UserDb};

    #[test]
    fn user_lines_parse_as_their_scheme() {
        let kdf = KdfParams {
            salt: vec![3; 16],
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let text = format!(
            "{}{}{}",
            md5_user("Alice", "Crimson33"),
            plain_user("Bob", "Velvet77"),
            upgraded_user_with("Carol", "Lapis-4", &kdf).unwrap()
        );
        let db = UserDb::parse(&text, "test").unwrap();
        let scheme = |u: &str| db.get(u).unwrap().credential.scheme();
        assert_eq!(scheme("alice"), SchemeName::Md5);
        assert_eq!(scheme("bob"), SchemeName::Plain);
        assert_eq!(scheme("carol"), SchemeName::Argon2id);
        let alice = db.get("alice").unwrap().credential.md5_digest().unwrap();
        assert_eq!(alice, md5_digest("Crimson33"));
    }
}
