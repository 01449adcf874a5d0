//! The key hierarchy (see `docs/architecture.md`, "Key hierarchy").
//!
//! ```text
//! password --Argon2id(salt, m, t, p)--> root
//! root --kdf("vault kek v2")----------------------> KEK (wraps the master key)
//! root --BLAKE2b-MAC("vault login v1")-------------> Ed25519 login seed (wire::kdf, shared with nodes)
//! master --kdf("vault manifest key v2")------------> manifest key
//! master --kdf("vault manifest id v2", name)-------> manifest id  "m2-<hex>"
//! master --kdf("vault part id v2", file_id, k)-----> part id      "p2-<hex>"
//! master --kdf("vault part key v2", file_id, k)----> part key (one per file version and part)
//! ```
//!
//! `kdf(label, ...)` is keyed BLAKE2b-256 over the label and the
//! length-prefixed inputs. Every part of every file version has its own key,
//! and `file_id` is 16 random bytes drawn for each PUT, so no (key, nonce)
//! pair of the STREAM construction ever encrypts two different chunks: not
//! across parts, versions, files or users. (The two copies of a part are the
//! same ciphertext bytes stored twice, not two encryptions.)
//!
//! The key record binds every field it carries into the wrap's associated
//! data, and [`PasswordKeys::open_record`] also checks that the record's
//! login key is the one the password derives: a node can neither edit a
//! record nor pass off a record with its own login key. Every secret lives
//! in a zeroising buffer.

use blake2::digest::{consts::U32, Mac};
use blake2::Blake2bMac;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use md5::{Digest, Md5};
use ring::signature::{Ed25519KeyPair, KeyPair};
use thiserror::Error;
use wire::{BlobId, KdfParams, UserRecord, STORAGE_FORMAT};
use zeroize::Zeroizing;

use super::format::{
    HEADER_LEN, MANIFEST_ID_PREFIX, PART_HEADER, PART_ID_PREFIX, SHARD_HEADER, SHARD_ID_PREFIX,
};
use super::stream::StreamKey;
use super::CryptoError;
use crate::erasure::ShardKey;

/// Costs and salt length of new records: the shared defaults.
pub use wire::kdf::{DEFAULT_M_KIB, DEFAULT_P, DEFAULT_T, SALT_LEN};

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
    /// The record is in another storage format (1: Vault 0.1).
    #[error("key record in storage format {0}, which this version does not read")]
    OldFormat(u16),
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

/// Keys derived from the password under one set of Argon2id parameters:
/// the key-encryption key and the login key, from one Argon2id run.
pub struct PasswordKeys {
    kdf: KdfParams,
    kek: Zeroizing<[u8; KEY_LEN]>,
    login: Ed25519KeyPair,
}

impl std::fmt::Debug for PasswordKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordKeys(<redacted>)")
    }
}

impl PasswordKeys {
    /// Runs Argon2id on the password ([`wire::kdf`], the formula nodes
    /// share), after checking the costs.
    pub fn derive(password: &[u8], params: &KdfParams) -> Result<Self, KeyError> {
        check_cost(params)?;
        let root =
            wire::kdf::derive_root(password, params).map_err(|_| KeyError::UnacceptableCost {
                m_kib: params.m_kib,
                t: params.t,
                p: params.p,
            })?;
        let kek = kdf(&root, b"vault kek v2", &[]);
        let login = wire::kdf::login_key_pair(&wire::kdf::login_seed(&root));
        Ok(PasswordKeys {
            kdf: params.clone(),
            kek,
            login,
        })
    }

    /// The Argon2id parameters these keys were derived under.
    pub fn kdf(&self) -> &KdfParams {
        &self.kdf
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

    /// A key record holding `master`, wrapped under these keys. With
    /// `upgraded`, the record carries the login key (nodes then accept only
    /// signature logins for the user).
    pub fn seal_record(
        &self,
        master: &MasterKey,
        user: &str,
        generation: u64,
        upgraded: bool,
    ) -> Result<UserRecord, KeyError> {
        self.seal_record_with_nonce(master, user, generation, upgraded, random_bytes()?)
    }

    /// [`Self::seal_record`] with a given nonce: for known-answer vectors
    /// only. Never reuse a nonce.
    #[doc(hidden)]
    pub fn seal_record_with_nonce(
        &self,
        master: &MasterKey,
        user: &str,
        generation: u64,
        upgraded: bool,
        nonce: [u8; XNONCE_LEN],
    ) -> Result<UserRecord, KeyError> {
        let mut record = UserRecord {
            format: STORAGE_FORMAT,
            generation,
            kdf: self.kdf.clone(),
            login_key: upgraded.then(|| self.login_public_key()),
            wrapped_key: Vec::new(),
        };
        record.wrapped_key = seal_with_nonce(
            &self.kek,
            &record_ad(user, &record),
            master.0.as_ref(),
            nonce,
        )?;
        Ok(record)
    }

    /// Opens a key record made for `user`: checks its format, unwraps the
    /// master key (which authenticates every field), and checks that its
    /// login key, if any, is the one this password derives. These keys must
    /// have been derived under the record's own parameters.
    pub fn open_record(&self, record: &UserRecord, user: &str) -> Result<MasterKey, KeyError> {
        if record.format != STORAGE_FORMAT {
            return Err(KeyError::OldFormat(record.format));
        }
        if record.kdf != self.kdf || record.wrapped_key.len() != WRAPPED_LEN {
            return Err(KeyError::Decryption);
        }
        let plain = open(&self.kek, &record_ad(user, record), &record.wrapped_key)?;
        if let Some(key) = &record.login_key {
            if *key != self.login_public_key() {
                return Err(KeyError::Decryption);
            }
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&plain);
        Ok(MasterKey(key))
    }
}

/// XChaCha20-Poly1305 with a random nonce: `nonce (24) || ciphertext`.
/// Used for the small sealed objects (key records, manifests).
pub fn seal(key: &[u8; KEY_LEN], aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, KeyError> {
    seal_with_nonce(key, aad, msg, random_bytes()?)
}

/// [`seal`] with a given nonce (known-answer vectors only).
pub(crate) fn seal_with_nonce(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    msg: &[u8],
    nonce: [u8; XNONCE_LEN],
) -> Result<Vec<u8>, KeyError> {
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

/// Associated data of a record's wrap: every field of the record.
fn record_ad(user: &str, r: &UserRecord) -> Vec<u8> {
    let mut ad = b"vault keyrecord v2".to_vec();
    push_lp(&mut ad, user.to_ascii_lowercase().as_bytes());
    ad.extend_from_slice(&r.format.to_be_bytes());
    ad.extend_from_slice(&r.generation.to_be_bytes());
    push_lp(&mut ad, &r.kdf.salt);
    for v in [r.kdf.m_kib, r.kdf.t, r.kdf.p] {
        ad.extend_from_slice(&v.to_be_bytes());
    }
    match &r.login_key {
        Some(k) => {
            ad.push(1);
            push_lp(&mut ad, k);
        }
        None => ad.push(0),
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

/// What sealing or opening one part of one file version needs.
pub struct PartKeys {
    /// The part's blob id.
    pub id: BlobId,
    /// The part's own stream key.
    pub key: StreamKey,
    /// Associated data of every chunk: binds header, user, file version,
    /// version number and part index.
    pub ad: Vec<u8>,
}

/// What sealing or opening an erasure-coded file version needs.
pub struct ShardedKeys {
    /// Blob id of each shard, by shard index.
    pub ids: Vec<BlobId>,
    /// The key of the file's one STREAM.
    pub stream: StreamKey,
    /// Associated data of every chunk of that STREAM: binds the shard
    /// header, user, file version and version number.
    pub ad: Vec<u8>,
    /// The key authenticating every shard chunk.
    pub shard_key: ShardKey,
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(MasterKey(Zeroizing::new(random_bytes::<KEY_LEN>()?)))
    }

    /// A master key from its bytes: for known-answer vectors only.
    #[doc(hidden)]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    /// The opaque id of the manifest for file `name`.
    pub fn manifest_id(&self, name: &str) -> BlobId {
        let h = kdf(&self.0, b"vault manifest id v2", &[name.as_bytes()]);
        BlobId::new(format!("{MANIFEST_ID_PREFIX}{}", hex::encode(h.as_ref())))
            .expect("hex id is valid")
    }

    /// The opaque id of part `k` (0-based) of the file version `file_id`.
    pub fn part_id(&self, file_id: &[u8], k: usize) -> BlobId {
        let h = kdf(&self.0, b"vault part id v2", &[file_id, &[k as u8]]);
        BlobId::new(format!("{PART_ID_PREFIX}{}", hex::encode(h.as_ref())))
            .expect("hex id is valid")
    }

    /// Id, key and associated data of part `k` of version `version`
    /// (file id `file_id`) of one of `user`'s files.
    pub fn part(&self, user: &str, file_id: &[u8], version: u64, k: usize) -> PartKeys {
        PartKeys {
            id: self.part_id(file_id, k),
            key: StreamKey::new(*kdf(&self.0, b"vault part key v2", &[file_id, &[k as u8]])),
            ad: part_ad(user, file_id, version, k),
        }
    }

    /// Ids and keys of erasure-coded data `data_id` (a random id made at
    /// PUT, kept in the manifest's `shards`) of one of `user`'s files: one
    /// STREAM over the whole file, its chunks coded into `shards`
    /// authenticated shards (see [`crate::erasure`]). The version number
    /// is not bound: `repair --rebalance` records moved shards in a newer
    /// manifest version of the same data; `data_id` alone is fresh per PUT.
    pub fn sharded(&self, user: &str, data_id: &[u8], shards: usize) -> ShardedKeys {
        let file_id = data_id;
        let mut ad = b"vault stream v3".to_vec();
        ad.extend_from_slice(&SHARD_HEADER);
        push_lp(&mut ad, user.to_ascii_lowercase().as_bytes());
        push_lp(&mut ad, file_id);
        ShardedKeys {
            ids: (0..shards)
                .map(|i| {
                    let h = kdf(&self.0, b"vault shard id v3", &[file_id, &[i as u8]]);
                    BlobId::new(format!("{SHARD_ID_PREFIX}{}", hex::encode(h.as_ref())))
                        .expect("hex id is valid")
                })
                .collect(),
            stream: StreamKey::new(*kdf(&self.0, b"vault stream key v3", &[file_id])),
            ad,
            shard_key: ShardKey::new(*kdf(&self.0, b"vault shard key v3", &[file_id])),
        }
    }

    /// The key manifests are sealed with.
    pub fn manifest_key(&self) -> Zeroizing<[u8; KEY_LEN]> {
        kdf(&self.0, b"vault manifest key v2", &[])
    }
}

/// Associated data of part `k` of a file version.
fn part_ad(user: &str, file_id: &[u8], version: u64, k: usize) -> Vec<u8> {
    let mut ad = b"vault part v2".to_vec();
    debug_assert_eq!(PART_HEADER.len(), HEADER_LEN);
    ad.extend_from_slice(&PART_HEADER);
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
    fn records_round_trip_and_bind_every_field() {
        let p = fast_params();
        let keys = PasswordKeys::derive(b"Crimson33", &p).unwrap();
        let master = MasterKey::generate().unwrap();
        for upgraded in [false, true] {
            let r = keys.seal_record(&master, "alice", 4, upgraded).unwrap();
            assert_eq!(r.wrapped_key.len(), WRAPPED_LEN);
            let back = keys.open_record(&r, "Alice").unwrap();
            assert_eq!(back.0.as_ref(), master.0.as_ref());
            // Any field changed: refused.
            let mut bad = Vec::new();
            let mut g = r.clone();
            g.generation = u64::MAX;
            bad.push(g);
            let mut k = r.clone();
            k.login_key = if upgraded { None } else { Some(vec![7; 32]) };
            bad.push(k);
            let mut w = r.clone();
            w.wrapped_key[30] ^= 1;
            bad.push(w);
            for b in bad {
                assert!(matches!(
                    keys.open_record(&b, "alice"),
                    Err(KeyError::Decryption)
                ));
            }
            assert!(keys.open_record(&r, "bob").is_err());
            let mut f = r.clone();
            f.format = 1;
            assert!(matches!(
                keys.open_record(&f, "alice"),
                Err(KeyError::OldFormat(1))
            ));
        }
        let wrong = PasswordKeys::derive(b"crimson33", &p).unwrap();
        let r = keys.seal_record(&master, "alice", 1, false).unwrap();
        let err = wrong.open_record(&r, "alice").unwrap_err();
        assert_eq!(err.to_string(), "decryption failed");
    }

    #[test]
    fn a_record_with_a_foreign_login_key_is_refused() {
        // Even wrapped correctly (by someone who knows the password, e.g. a
        // node that cracked a legacy MD5), a record whose login key is not
        // the password's is not the user's record.
        let p = fast_params();
        let keys = PasswordKeys::derive(b"pw", &p).unwrap();
        let master = MasterKey::generate().unwrap();
        let mut forged = UserRecord {
            format: STORAGE_FORMAT,
            generation: 9,
            kdf: p.clone(),
            login_key: Some(vec![0x66; 32]),
            wrapped_key: Vec::new(),
        };
        forged.wrapped_key =
            seal(&keys.kek, &record_ad("alice", &forged), master.0.as_ref()).unwrap();
        assert!(matches!(
            keys.open_record(&forged, "alice"),
            Err(KeyError::Decryption)
        ));
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
    fn every_part_has_its_own_key_and_id() {
        let m = MasterKey::generate().unwrap();
        let a = m.manifest_id("a.txt");
        assert_ne!(a, m.manifest_id("b.txt"));
        assert_eq!(a, m.manifest_id("a.txt"));
        assert!(a.as_str().starts_with("m2-"));
        let mut keys = Vec::new();
        for file in [[1u8; 16], [2; 16]] {
            for k in 0..4 {
                let p = m.part("alice", &file, 1, k);
                assert!(p.id.as_str().starts_with("p2-"));
                keys.push((p.id, p.key.fingerprint()));
            }
        }
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i].0, keys[j].0);
                assert_ne!(keys[i].1, keys[j].1, "parts {i} and {j} share a key");
            }
        }
        let other = MasterKey::generate().unwrap();
        assert_ne!(a, other.manifest_id("a.txt"));
        assert!(a.as_str().len() <= wire::id::MAX_BLOB_ID_LEN);
        // The associated data binds user, version and slot.
        let base = m.part("alice", &[1; 16], 1, 0).ad;
        assert_ne!(base, m.part("bob", &[1; 16], 1, 0).ad);
        assert_ne!(base, m.part("alice", &[1; 16], 2, 0).ad);
        assert_ne!(base, m.part("alice", &[1; 16], 1, 1).ad);
    }

    #[test]
    fn the_login_key_is_the_shared_formulas() {
        // The stored known answer of wire/tests/kdf.rs: the client's keys
        // and the nodes' `user add` lines agree by construction and by value.
        let p = KdfParams {
            salt: vec![7; 16],
            m_kib: DEFAULT_M_KIB,
            t: DEFAULT_T,
            p: DEFAULT_P,
        };
        let keys = PasswordKeys::derive(b"Crimson33", &p).unwrap();
        assert_eq!(
            hex::encode(keys.login_public_key()),
            "b14e888f03aa4abe37a50815c9822de2bfcc37da923facb3981fa6ea09bb79af"
        );
    }

    #[test]
    fn md5_matches_known_digest() {
        assert_eq!(hex::encode(md5_of(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
