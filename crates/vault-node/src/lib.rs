//! The Vault storage node: keeps per-user ciphertext blobs and key records,
//! served over QUIC to clients that log in.
//!
//! A node never sees plaintext: blobs arrive encrypted and named by opaque
//! ids, and key records hold only a wrapped master key and a public login key.
//!
//! # Layout
//!
//! - [`server`]: [`server::NodeConfig`] and [`server::Server`]: the quinn
//!   endpoint, connection and stream caps, and the shutdown sequence.
//! - `admission` (private): connection slots, per-source caps and eviction
//!   of connections that have not logged in.
//! - `connection` (private): one client connection from admission to close:
//!   refused with a reason, or handshake, login deadline, eviction, and one
//!   `handler` task per request stream.
//! - `handler` (private): one request stream: the frame in, `cmd`, the reply
//!   out. With `bulk` (upload bytes in, blob bytes out), the only code that
//!   reads and writes QUIC streams.
//! - `cmd` (private): one file per request handler.
//! - [`auth`]: login challenges, legacy MD5 and Ed25519 proof checks, and the
//!   scheme a user logs in with.
//! - [`throttle`]: in-memory slowing of failed logins per address and user.
//! - [`store`]: per-user blob folders: atomic writes, streamed reads, and an
//!   in-memory index per user for listings, usage and the quota.
//! - [`records`]: per-user key records with compare-and-swap on generation.
//! - [`users`]: the `--users` file (`dfs.conf`) in every legacy form plus
//!   the upgraded `argon2id` form, and the `vault-node user` edits.
//! - [`kdf`]: Argon2id root key and login key derivation (shared formulas
//!   with the client).
//! - [`certs`]: rcgen cluster CA and node certificates (finite validity,
//!   the CA key kept out of the certificates folder).
//! - [`secret`]: the node and cluster secrets (decoy salts).
//! - [`dev_cluster`]: four in-process nodes with demo users for trying Vault.
//! - `testing` (feature `testing`): the test kit: in-process clusters, a
//!   raw client and hostile proxies.
//!
//! # On-disk layout
//!
//! ```text
//! <root>/<user>/<blob-id>            ciphertext blobs (user = lower-case name)
//! <root>/<user>/.tmp/<random>.tmp    uploads in progress; removed on failure and at start
//! <root>/.vault/records/<user>.cbor  the user's key record
//! <root>/.vault/node.secret          32 random bytes (0600): decoy salts for unknown
//!                                    users when the node has no cluster secret
//! ```
//!
//! Certificates (see [`certs`]): `<certs>/ca.pem`, `<certs>/<NAME>.pem`,
//! `<certs>/<NAME>.key`, `<certs>/cluster.secret`; the CA key lives
//! outside, in `ca-private/ca.key` next to the certificates folder.
#![forbid(unsafe_code)]

mod admission;
pub mod auth;
mod bulk;
pub mod certs;
mod cmd;
mod connection;
pub mod dev_cluster;
mod fsutil;
mod handler;
pub mod kdf;
pub mod records;
pub mod secret;
pub mod server;
mod state;
pub mod store;
pub mod throttle;
pub mod users;

#[cfg(feature = "testing")]
pub mod testing;

pub use server::{NodeConfig, Server};
pub use throttle::ThrottleConfig;
pub use users::UserDb;

/// Software version reported in `Status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
