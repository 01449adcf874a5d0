//! Client-side cryptography: nothing here leaves the user's machine
//! unencrypted.
//!
//! - [`stream`]: ChaCha20-Poly1305 in the STREAM construction, for parts.
//! - [`format`](mod@format): the headers and lengths of stored objects (format 2).
//! - [`keys`]: Argon2id, the key-encryption key, the master key and every key
//!   and id derived from it.

pub mod format;
pub mod keys;
pub mod stream;

pub use stream::CryptoError;
