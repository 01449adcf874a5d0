//! The password-to-login-key formula nodes and clients share, defined once.
//!
//! ```text
//! root       = Argon2id v0x13 (password, salt, m_kib, t, p) -> 32 bytes   (RFC 9106)
//! login seed = BLAKE2b-256 keyed with root, message "vault login v1"       (RFC 7693)
//! login key  = Ed25519 key pair from the seed; nodes store the public key  (RFC 8032)
//! ```
//!
//! The client derives its key-encryption key from the same `root`; the
//! node only ever runs this for `vault-node user add`, and at login checks
//! signatures against the stored public key. Pure computation: no I/O, no
//! randomness (callers draw salts).

use argon2::{Algorithm, Argon2, Params, Version};
use blake2::digest::{consts::U32, Mac};
use blake2::Blake2bMac;
use ring::signature::{Ed25519KeyPair, KeyPair};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::KdfParams;

/// Domain-separation message of the login seed. It stays at `v1` across
/// storage formats: `argon2id` lines written by `vault-node user add` keep
/// working.
pub const LOGIN_SEED_CONTEXT: &[u8] = b"vault login v1";

/// Default Argon2id memory cost in KiB (64 MiB).
pub const DEFAULT_M_KIB: u32 = 64 * 1024;
/// Default Argon2id time cost (passes).
pub const DEFAULT_T: u32 = 3;
/// Default Argon2id parallelism (lanes).
pub const DEFAULT_P: u32 = 1;
/// Length of a freshly drawn salt.
pub const SALT_LEN: usize = 16;

/// Failure of the key derivation.
#[derive(Debug, Error)]
pub enum KdfError {
    /// The Argon2id costs or salt are outside what Argon2id accepts.
    #[error("invalid argon2id parameters: {0}")]
    Params(String),
}

/// `root = Argon2id(password, salt, m_kib, t, p)`, 32 bytes.
pub fn derive_root(password: &[u8], kdf: &KdfParams) -> Result<Zeroizing<[u8; 32]>, KdfError> {
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| KdfError::Params(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut root = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(password, &kdf.salt, root.as_mut())
        .map_err(|e| KdfError::Params(e.to_string()))?;
    Ok(root)
}

/// `login seed = BLAKE2b-256(key = root, "vault login v1")`, no length prefix.
pub fn login_seed(root: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    // A 32-byte key is always within BLAKE2b's 64-byte key limit.
    let mut mac = <Blake2bMac<U32> as Mac>::new_from_slice(root)
        .unwrap_or_else(|_| unreachable!("32-byte blake2b key"));
    mac.update(LOGIN_SEED_CONTEXT);
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&mac.finalize().into_bytes());
    seed
}

/// The Ed25519 key pair for a login seed.
pub fn login_key_pair(seed: &[u8; 32]) -> Ed25519KeyPair {
    // Any 32 bytes are a valid Ed25519 seed.
    Ed25519KeyPair::from_seed_unchecked(seed).unwrap_or_else(|_| unreachable!("ed25519 seed"))
}

/// The Ed25519 public key (what nodes store) for a login seed.
pub fn login_public_key(seed: &[u8; 32]) -> [u8; 32] {
    let pair = login_key_pair(seed);
    let mut out = [0u8; 32];
    out.copy_from_slice(pair.public_key().as_ref());
    out
}

/// Password to public login key in one call.
pub fn public_key_for_password(password: &[u8], kdf: &KdfParams) -> Result<[u8; 32], KdfError> {
    let root = derive_root(password, kdf)?;
    Ok(login_public_key(&login_seed(&root)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap(salt: u8) -> KdfParams {
        KdfParams {
            salt: vec![salt; 16],
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    #[test]
    fn deterministic_and_salted() {
        let a = derive_root(b"pw", &cheap(1)).unwrap();
        let b = derive_root(b"pw", &cheap(1)).unwrap();
        let c = derive_root(b"pw", &cheap(2)).unwrap();
        assert_eq!(*a, *b);
        assert_ne!(*a, *c);
        assert_ne!(*login_seed(&a), *a);
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        let seed = login_seed(&derive_root(b"pw", &cheap(3)).unwrap());
        let pk = login_public_key(&seed);
        let sig = login_key_pair(&seed).sign(b"msg");
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk);
        assert!(key.verify(b"msg", sig.as_ref()).is_ok());
    }

    #[test]
    fn rejects_bad_params() {
        let mut p = cheap(1);
        p.t = 0;
        assert!(matches!(derive_root(b"pw", &p), Err(KdfError::Params(_))));
    }
}
