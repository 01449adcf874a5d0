//! The Vault storage node: keeps per-user ciphertext blobs and key records,
//! served over QUIC to clients that log in.
//!
//! A node never sees plaintext: blobs arrive encrypted and named by opaque
//! ids, and key records hold only a wrapped master key and a public login key.
//!
//! # Layout
//!
//! One line per module. A request travels down the first group.
//!
//! - [`server`]: [`NodeConfig`], [`Server`]: endpoint, accept loop, shutdown.
//! - `admission`: connection slots, per-source caps, eviction of idle ones.
//! - `connection`: one connection: refused, or handshake, deadline, streams.
//! - `handler`: one request stream: frame in, `cmd::dispatch`, reply out.
//! - `cmd`: the request handlers, one file each; typed requests, no streams.
//! - `bulk`: upload bytes in, blob bytes out (with `handler`: all stream I/O).
//! - `state`: `Shared`, what every handler sees; preparing the root folder.
//!
//! What the handlers use:
//!
//! - [`auth`]: schemes, challenges, proof checks, [`auth::LoginState`].
//! - [`throttle`]: slowing of failed logins per source and per user name.
//! - [`store`]: per-user blob folders: deletes, listings, stats, the quota.
//! - `store::db`: each user's redb index (small blobs inline) and its
//!   group-commit writer.
//! - `store::index`: quota charges and reservations of uploads in flight.
//! - `store::upload`: one upload or a batch: small ones in memory, large
//!   ones through temp files.
//! - `store::read`: blobs opened for sending: one, several, a data page.
//! - `store::maintenance`: `fsck` and `compact` (the 0.2 root conversion
//!   is in `store::db`).
//! - `store::offline`: a root's blobs for tests and tools.
//! - [`records`]: per-user key records, compare-and-swap on generation.
//! - [`users`]: the users file (`dfs.conf`), every form; `vault-node user`.
//! - [`kdf`]: Argon2id root and login keys (the client's formulas).
//! - [`secret`]: the node and cluster secrets (keys of the decoy salts).
//! - `fsutil`: temp-file guard and the crate's one atomic write.
//!
//! Around the node:
//!
//! - [`certs`]: cluster CA and node certificates (`vault-node certs`).
//! - [`dev_cluster`]: four in-process nodes with demo users.
//! - [`invocation`]: `serve`'s folder, port and listen address, in the
//!   modern and the classic `dfs.py /DFS1 10001` forms.
//! - `testing` (feature `testing`): the test kit: nodes, raw client, lies.
//! - `main.rs`: the `vault-node` binary: parses arguments, calls the library.
//!
//! # Tests
//!
//! `cargo test -p vault-node` runs the unit tests and `tests/node/`, one
//! test binary with a module per area, all on the `testing` kit (the crate
//! is its own dev-dependency with that feature, so no flag is needed).
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
pub mod invocation;
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
