//! The key hierarchy (see `docs/architecture.md`, "Key hierarchy").
//!
//! ```text
//! password --Argon2id--> root --kdf("vault kek v1")---> KEK (wraps the master key)
//!                             \-kdf("vault login v1")-> Ed25519 login seed
//! master key --kdf("vault file v1", file_id)--> per-file key
//!            --kdf("vault manifest v1")-------> manifest key
//!            --kdf("vault name v1", name)-----> manifest id
//!            --kdf("vault part v1", file_id, k)-> part id
//! ```
//! `kdf(label, ...)` is keyed BLAKE2b-256 over the label and the
//! length-prefixed inputs. Every secret lives in a zeroising buffer.

use argon2::{Algorithm, Argon2, Params, Version};
use blake2::digest::{consts::U32, Mac};
use blake2::Blake2bMac;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use md5::{Digest, Md5};
use ring::signature::{Ed25519KeyPair, KeyPair};
use thiserror::Error;
use wire::{BlobId, KdfParams};
use zeroize::Zeroizing;

use super::stream::StreamKey;
use super::CryptoError;

/// Argon2id memory cost for new records: 64 MiB.
pub const DEFAULT_M_KIB: u32 = 64 * 1024;
/// Argon2id passes for new records.
pub const DEFAULT_T: u32 = 3;
/// Argon2id lanes for new records.
pub const DEFAULT_P: u32 = 1;
/// Salt length for new records.
pub const SALT_LEN: usize = 16;

/// Smallest memory cost a client accepts from a node (64 MiB). A hostile
/// node must not be able to downgrade the KDF: the login signature it
/// receives would otherwise make offline guessing cheap.
pub const MIN_M_KIB: u32 = 64 * 1024;
/// Smallest time cost a client accepts from a node.
pub const MIN_T: u32 = 3;
/// Largest memory cost a client accepts from a record (256 MiB).
pub const MAX_M_KIB: u32 = 256 * 1024;
/// Largest time cost a client accepts from a record.
pub const MAX_T: u32 = 8;
/// Largest parallelism a client accepts from a record.
pub const MAX_P: u32 = 4;

const KEY_LEN: usize = 32;
const XNONCE_LEN: usize = 24;
/// Length of a wrapped master key: nonce, key, tag.
pub const WRAPPED_LEN: usize = XNONCE_LEN + KEY_LEN + 16;
/// Length of a file id.
pub const FILE_ID_LEN: usize = 16;

/// Failures while deriving or opening keys.
#[derive(Debug, Error)]
pub enum KeyError {
    /// A record asked for Argon2 costs outside what this client accepts.
    #[error("key record asks for unacceptable argon2 costs (m={m_kib} KiB, t={t}, p={p})")]
    UnacceptableCost {
        /// Memory cost in KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// Wrong password, or a record that was tampered with.
    #[error("decryption failed")]
    Decryption,
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

impl From<CryptoError> for KeyError {
    fn from(_: CryptoError) -> Self {
        KeyError::Decryption
    }
}

/// Fills a buffer from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(b)
}

/// Fresh Argon2id parameters with a random salt and the default costs.
pub fn new_kdf_params() -> Result<KdfParams, KeyError> {
    Ok(KdfParams {
        salt: random_bytes::<SALT_LEN>()?.to_vec(),
        m_kib: DEFAULT_M_KIB,
        t: DEFAULT_T,
        p: DEFAULT_P,
    })
}

/// Refuses costs outside the accepted window, before any work is done.
pub fn check_cost(kdf: &KdfParams) -> Result<(), KeyError> {
    let ok = (MIN_M_KIB..=MAX_M_KIB).contains(&kdf.m_kib)
        && (MIN_T..=MAX_T).contains(&kdf.t)
        && (1..=MAX_P).contains(&kdf.p)
        && kdf.m_kib >= 8 * kdf.p
        && (wire::MIN_SALT_LEN..=wire::MAX_SALT_LEN).contains(&kdf.salt.len());
    if ok {
        Ok(())
    } else {
        Err(KeyError::UnacceptableCost {
            m_kib: kdf.m_kib,
            t: kdf.t,
            p: kdf.p,
        })
    }
}

/// Keyed BLAKE2b-256 over a label and length-prefixed inputs.
fn kdf(key: &[u8; KEY_LEN], label: &[u8], inputs: &[&[u8]]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut mac = <Blake2bMac<U32> as Mac>::new_from_slice(key).expect("32-byte key is valid");
    mac.update(label);
    for input in inputs {
        mac.update(&(input.len() as u64).to_be_bytes());
        mac.update(input);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// MD5 of the password: the legacy login proof and the `dfc.conf` digest.
pub fn md5_of(password: &[u8]) -> [u8; 16] {
    Md5::digest(password).into()
}

/// Keys derived from the password: the key-encryption key and the login
/// key. Both come from one Argon2id run.
pub struct PasswordKeys {
    kek: Zeroizing<[u8; KEY_LEN]>,
    login: Ed25519KeyPair,
}

impl std::fmt::Debug for PasswordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordKeys(<redacted>)")
    }
}

impl PasswordKeys {
    /// Runs Argon2id on the password, after checking the costs.
    pub fn derive(password: &[u8], params: &KdfParams) -> Result<Self, KeyError> {
        check_cost(params)?;
        let cost = |_| KeyError::UnacceptableCost {
            m_kib: params.m_kib,
            t: params.t,
            p: params.p,
        };
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(params.m_kib, params.t, params.p, Some(KEY_LEN)).map_err(cost)?,
        );
        let mut root = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(password, &params.salt, root.as_mut())
            .map_err(cost)?;
        let kek = kdf(&root, b"vault kek v1", &[]);
        let seed = login_seed(&root);
        let login =
            Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).map_err(|_| KeyError::Decryption)?;
        Ok(PasswordKeys { kek, login })
    }

    /// The Ed25519 public key nodes check upgraded logins against.
    pub fn login_public_key(&self) -> Vec<u8> {
        self.login.public_key().as_ref().to_vec()
    }

    /// Signs a node's challenge (see [`wire::login_message`]).
    pub fn sign_login(&self, node: &str, user: &str, challenge: &[u8]) -> Vec<u8> {
        let msg = wire::login_message(node, user, challenge);
        self.login.sign(&msg).as_ref().to_vec()
    }

    /// Seals the master key under the key-encryption key.
    pub fn wrap(
        &self,
        master: &MasterKey,
        user: &str,
        params: &KdfParams,
    ) -> Result<Vec<u8>, KeyError> {
        seal(&self.kek, &record_ad(user, params), master.0.as_ref())
    }

    /// Opens a wrapped master key; any mismatch is "decryption failed".
    pub fn unwrap(
        &self,
        wrapped: &[u8],
        user: &str,
        params: &KdfParams,
    ) -> Result<MasterKey, KeyError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(KeyError::Decryption);
        }
        let plain = open(&self.kek, &record_ad(user, params), wrapped)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&plain);
        Ok(MasterKey(key))
    }
}

/// XChaCha20-Poly1305 with a random nonce: `nonce (24) || ciphertext`.
/// Used for the small sealed objects (key records, manifests).
pub fn seal(key: &[u8; KEY_LEN], aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, KeyError> {
    let nonce = random_bytes::<XNONCE_LEN>()?;
    let ct = XChaCha20Poly1305::new(key.into())
        .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| KeyError::Decryption)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens what [`seal`] made; every failure is the same opaque error.
pub fn open(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < XNONCE_LEN + 16 {
        return Err(CryptoError);
    }
    let (nonce, ct) = sealed.split_at(XNONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError)
}

/// The login seed: keyed BLAKE2b-256 of the label under the Argon2 output
/// (the node's `vault-node user add` computes the same).
fn login_seed(root: &[u8; KEY_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    kdf_plain(root, b"vault login v1")
}

/// `BLAKE2b-MAC(key, label)`, with no length prefixes: the form shared with
/// the node for the login seed.
fn kdf_plain(key: &[u8; KEY_LEN], label: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut mac = <Blake2bMac<U32> as Mac>::new_from_slice(key).expect("32-byte key is valid");
    mac.update(label);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn record_ad(user: &str, p: &KdfParams) -> Vec<u8> {
    let mut ad = b"vault keyrecord v1".to_vec();
    push_lp(&mut ad, user.to_ascii_lowercase().as_bytes());
    push_lp(&mut ad, &p.salt);
    for v in [p.m_kib, p.t, p.p] {
        ad.extend_from_slice(&v.to_be_bytes());
    }
    ad
}

fn push_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The vault master key: 32 random bytes, never stored unwrapped.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(MasterKey(Zeroizing::new(random_bytes::<KEY_LEN>()?)))
    }

    /// The opaque id of the manifest for file `name`.
    pub fn manifest_id(&self, name: &str) -> BlobId {
        let h = kdf(&self.0, b"vault name v1", &[name.as_bytes()]);
        BlobId::new(format!("m-{}", hex::encode(h.as_ref()))).expect("hex id is valid")
    }

    /// The opaque id of part `k` (0-based) of the file version `file_id`.
    pub fn part_id(&self, file_id: &[u8], k: usize) -> BlobId {
        let h = kdf(&self.0, b"vault part v1", &[file_id, &[k as u8]]);
        BlobId::new(format!("p-{}", hex::encode(h.as_ref()))).expect("hex id is valid")
    }

    /// The key every part of file version `file_id` is encrypted with.
    pub fn file_key(&self, file_id: &[u8]) -> StreamKey {
        StreamKey::new(*kdf(&self.0, b"vault file v1", &[file_id]))
    }

    /// The key manifests are sealed with.
    pub fn manifest_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        kdf(&self.0, b"vault manifest v1", &[])
    }
}

/// Associated data of part `k` of a file version: binds the user, the file
/// version's id, the version number and the slot.
pub fn part_ad(user: &str, file_id: &[u8], version: u64, k: usize) -> Vec<u8> {
    let mut ad = b"vault part v1".to_vec();
    push_lp(&mut ad, user.to_ascii_lowercase().as_bytes());
    push_lp(&mut ad, file_id);
    ad.extend_from_slice(&version.to_be_bytes());
    ad.push(k as u8);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_params() -> KdfParams {
        KdfParams {
            salt: vec![3; 16],
            m_kib: MIN_M_KIB,
            t: MIN_T,
            p: 1,
        }
    }

    #[test]
    fn wrap_unwrap_round_trip_and_wrong_password() {
        let p = fast_params();
        let keys = PasswordKeys::derive(b"Crimson33", &p).unwrap();
        let master = MasterKey::generate().unwrap();
        let wrapped = keys.wrap(&master, "alice", &p).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        let back = keys.unwrap(&wrapped, "Alice", &p).unwrap();
        assert_eq!(back.0.as_ref(), master.0.as_ref());

        let wrong = PasswordKeys::derive(b"crimson33", &p).unwrap();
        let err = wrong.unwrap(&wrapped, "alice", &p).unwrap_err();
        assert_eq!(err.to_string(), "decryption failed");
        // Bound to the user and to the parameters.
        assert!(keys.unwrap(&wrapped, "bob", &p).is_err());
        let mut p2 = p.clone();
        p2.t = 2;
        assert!(keys.unwrap(&wrapped, "alice", &p2).is_err());
        let mut flipped = wrapped.clone();
        flipped[30] ^= 1;
        assert!(keys.unwrap(&flipped, "alice", &p).is_err());
    }

    #[test]
    fn absurd_costs_are_refused_before_work() {
        let start = std::time::Instant::now();
        for (m, t, p) in [
            (u32::MAX, 3, 1),
            (1 << 24, 3, 1),
            (65536, 1000, 1),
            (65536, 3, 64),
        ] {
            let params = KdfParams {
                salt: vec![0; 16],
                m_kib: m,
                t,
                p,
            };
            assert!(matches!(
                PasswordKeys::derive(b"x", &params),
                Err(KeyError::UnacceptableCost { .. })
            ));
        }
        // Downgrades below the floor are refused as well.
        for (m, t) in [(8, 3), (MIN_M_KIB - 1, 3), (MIN_M_KIB, 1)] {
            let mut weak = fast_params();
            weak.m_kib = m;
            weak.t = t;
            assert!(PasswordKeys::derive(b"x", &weak).is_err(), "m={m} t={t}");
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn login_signature_verifies_with_public_key() {
        let p = fast_params();
        let keys = PasswordKeys::derive(b"pw", &p).unwrap();
        let sig = keys.sign_login("DFS1", "alice", &[7; 32]);
        let pk = keys.login_public_key();
        let verify = |node: &str| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &pk)
                .verify(&wire::login_message(node, "alice", &[7; 32]), &sig)
                .is_ok()
        };
        assert!(verify("DFS1"));
        assert!(!verify("DFS2"));
        // The same password and salt always give the same login key.
        let again = PasswordKeys::derive(b"pw", &p).unwrap();
        assert_eq!(again.login_public_key(), pk);
    }

    #[test]
    fn derived_ids_are_valid_and_distinct() {
        let m = MasterKey::generate().unwrap();
        let a = m.manifest_id("a.txt");
        assert_ne!(a, m.manifest_id("b.txt"));
        assert_eq!(a, m.manifest_id("a.txt"));
        assert_ne!(m.part_id(&[1; 16], 0), m.part_id(&[1; 16], 1));
        assert_ne!(m.part_id(&[1; 16], 0), m.part_id(&[2; 16], 0));
        let other = MasterKey::generate().unwrap();
        assert_ne!(a, other.manifest_id("a.txt"));
        assert!(a.as_str().len() <= wire::id::MAX_BLOB_ID_LEN);
    }

    #[test]
    fn md5_matches_known_digest() {
        assert_eq!(hex::encode(md5_of(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
