//! The Vault client: encrypts files on the user's machine, splits them in
//! four parts and places every part on two of four untrusted nodes.
//!
//! # Layout
//!
//! - [`config`]: `dfc.conf` in all its legacy forms, and the `Password:`
//!   rewrite used by `rotate`.
//! - [`placement`]: part ranges and the MD5 placement table of the brief.
//! - [`crypto`]: the STREAM AEAD for parts ([`crypto::stream`]) and the key
//!   hierarchy ([`crypto::keys`]).
//! - [`manifest`]: the sealed per-file manifest nodes store under an opaque id.
//! - [`net`]: QUIC sessions to the four nodes (parallel dial, login, requests).
//! - [`vault`]: an opened vault: sessions plus the unwrapped master key.
//! - [`ops`]: PUT, GET, LIST, DELETE and ROTATE.
//! - [`cli`]: the command line and the classic interactive prompt.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod crypto;
pub mod manifest;
pub mod net;
pub mod ops;
pub mod placement;
pub mod vault;
