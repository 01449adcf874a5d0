//! The Vault client: encrypts files on the user's machine, splits them in
//! four parts and places every part on two of four untrusted nodes (the
//! classic layout), or codes them into Reed-Solomon shards over any number
//! of nodes ([`erasure`]).
//!
//! # Layout
//!
//! - [`config`]: `dfc.conf` in all its legacy forms, and the `Password:`
//!   rewrite used by `rotate`.
//! - [`placement`]: part ranges and the MD5 placement table of the brief.
//! - [`layout`]: where every copy of a file version belongs, the one place
//!   PUT, GET, check and repair ask.
//! - [`path`]: vault names as relative paths, prefixes, and walking a local
//!   tree without following links.
//! - [`crypto`]: the STREAM AEAD for parts ([`crypto::stream`]) and the key
//!   hierarchy ([`crypto::keys`]).
//! - [`erasure`]: Reed-Solomon coding of encrypted chunks into shards, each
//!   shard chunk authenticated on its own (`Redundancy rs K+M`).
//! - [`manifest`]: the sealed per-file manifest nodes store under an opaque id.
//! - [`net`]: QUIC sessions to the four nodes (dial, bounded requests,
//!   node text sanitised before it can reach a terminal).
//! - [`state`]: what this client learned about an account (`dfc.conf.state`),
//!   so no node can make it go backwards.
//! - [`login`]: the one guarded way in: hello, then a signature or (only
//!   when safe) an MD5 proof per node.
//! - [`records`]: key records: which to trust, the first one, catching up.
//! - [`vault`]: an opened vault: sessions plus the unwrapped master key.
//! - [`catalog`]: every file of the vault or of a prefix, manifests read
//!   many per round trip; which part copies the nodes hold.
//! - [`ops`]: PUT, GET (a file or a tree), LIST, DELETE, ROTATE, and
//!   STATUS, CHECK and REPAIR; every operation takes a
//!   `&Vault`, reports progress through [`ops::Progress`] and returns partial
//!   successes as `Ok` with warnings.
//! - `fsutil` (private): the crate's one atomic file replacement.
//!
//! The command line (package `vault-cli`, binary `vault-client`) and the
//! gateway (`vault-gateway`) are users of this library like any other; `examples/store_file.rs` shows
//! the few lines an embedder needs.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod config;
pub mod crypto;
pub mod erasure;
mod fsutil;
pub mod layout;
pub mod login;
pub mod manifest;
pub mod net;
pub mod ops;
pub mod path;
pub mod placement;
pub mod records;
pub mod state;
pub mod vault;
