//! Login: which scheme a user logs in with, challenges, and proof checks.
//!
//! `Hello{user}` answers a fresh 32-byte challenge and the user's scheme:
//!
//! 1. the user is not in the users file: a decoy `Upgraded` scheme whose
//!    salt is a keyed hash of the name under the node secret, so unknown
//!    names look like real upgraded accounts and stay stable across calls;
//! 2. the user's key record has a login key: `Upgraded(record.kdf)`;
//! 3. the users-file entry is `argon2id`: `Upgraded(entry kdf)`;
//! 4. otherwise (plain or MD5 entry): `Legacy`.
//!
//! `Login{user, proof}` is checked against the same resolution, made again
//! at login time so a rotation on another connection takes effect at once:
//! the Ed25519 signature of [`wire::login_message`] against the login key,
//! or the MD5 digest compared in constant time. Once a record has a login
//! key, the MD5 proof is refused for that user. Every failure is the same
//! `AuthFailed`.

use std::net::SocketAddr;

use blake2::digest::{consts::U16, Mac};
use blake2::Blake2bMac;
use ring::signature::{UnparsedPublicKey, ED25519};
use subtle::ConstantTimeEq;
use wire::{AuthScheme, KdfParams, Proof, CHALLENGE_LEN};

use crate::records::{RecordError, RecordStore};
use crate::users::{Credential, UserDb};

/// How a connection proved its user's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    /// MD5 of the password (legacy accounts).
    Legacy,
    /// Ed25519 signature with the Argon2id-derived key (upgraded accounts).
    Signature,
}

/// What a proof is checked against.
#[derive(Clone)]
pub enum Verifier {
    /// Unknown user: every proof fails.
    Unknown,
    /// Legacy account: the MD5 digest of the password.
    Md5([u8; wire::MD5_LEN]),
    /// Upgraded account: the Ed25519 public login key.
    Ed25519([u8; wire::LOGIN_KEY_LEN]),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verifier::Unknown => "Unknown",
            Verifier::Md5(_) => "Md5(<redacted>)",
            Verifier::Ed25519(_) => "Ed25519(..)",
        })
    }
}

/// The decoy Argon2id parameters announced for an unknown user; `key` is
/// the cluster secret (the node secret on a node without one), so every
/// node of a cluster announces the same salt for a name.
pub fn decoy_params(key: &[u8; 32], user: &str) -> KdfParams {
    let mut mac = <Blake2bMac<U16> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("32-byte blake2b key"));
    mac.update(b"decoy");
    mac.update(user.as_bytes());
    KdfParams {
        salt: mac.finalize().into_bytes().to_vec(),
        m_kib: crate::kdf::DEFAULT_M_KIB,
        t: crate::kdf::DEFAULT_T,
        p: crate::kdf::DEFAULT_P,
    }
}

/// The scheme announced for `user` (lower case) and what its proof is
/// checked against.
pub async fn resolve(
    users: &UserDb,
    records: &RecordStore,
    node_secret: &[u8; 32],
    user: &str,
) -> Result<(AuthScheme, Verifier), RecordError> {
    let Some(entry) = users.get(user) else {
        return Ok((
            AuthScheme::Upgraded(decoy_params(node_secret, user)),
            Verifier::Unknown,
        ));
    };
    if let Some(record) = records.get(user).await? {
        if let Some(key) = record.login_key.as_deref().and_then(|k| k.try_into().ok()) {
            return Ok((AuthScheme::Upgraded(record.kdf), Verifier::Ed25519(key)));
        }
    }
    Ok(match &entry.credential {
        Credential::Argon2id { kdf, login_key } => (
            AuthScheme::Upgraded(kdf.clone()),
            Verifier::Ed25519(*login_key),
        ),
        legacy => match legacy.md5_digest() {
            Some(d) => (AuthScheme::Legacy, Verifier::Md5(d)),
            None => (AuthScheme::Legacy, Verifier::Unknown),
        },
    })
}

/// A fresh login challenge.
pub fn new_challenge() -> std::io::Result<[u8; CHALLENGE_LEN]> {
    let mut c = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut c).map_err(|e| std::io::Error::other(format!("random generator: {e}")))?;
    Ok(c)
}

/// Checks `proof`; `Some(method)` if it is right.
pub fn verify(
    verifier: &Verifier,
    proof: &Proof,
    node: &str,
    user: &str,
    challenge: &[u8],
) -> Option<LoginMethod> {
    match (verifier, proof) {
        (Verifier::Md5(digest), Proof::LegacyMd5(p)) => {
            bool::from(digest.as_slice().ct_eq(p.as_slice())).then_some(LoginMethod::Legacy)
        }
        (Verifier::Ed25519(key), Proof::Signature(sig)) => UnparsedPublicKey::new(&ED25519, key)
            .verify(&wire::login_message(node, user, challenge), sig)
            .ok()
            .map(|()| LoginMethod::Signature),
        (Verifier::Unknown, Proof::Signature(sig)) => {
            // Same work as for a real account, so timing does not tell
            // unknown names apart; the result is discarded.
            let decoy = [0x42u8; wire::LOGIN_KEY_LEN];
            let msg = wire::login_message(node, user, challenge);
            let _ = UnparsedPublicKey::new(&ED25519, decoy).verify(&msg, sig);
            None
        }
        _ => None,
    }
}

/// Where a connection is in the login exchange.
#[derive(Debug, Default)]
enum Phase {
    /// Nothing yet.
    #[default]
    Fresh,
    /// `Hello` answered; waiting for `Login`.
    Challenged {
        user: String,
        challenge: [u8; CHALLENGE_LEN],
    },
    /// Logged in: every request acts as `user`.
    LoggedIn { user: String, method: LoginMethod },
}

/// Login state of one connection.
#[derive(Debug)]
pub struct Session {
    peer: SocketAddr,
    phase: Phase,
}

impl Session {
    /// A connection from `peer` that has not logged in.
    pub fn new(peer: SocketAddr) -> Self {
        Session {
            peer,
            phase: Phase::Fresh,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The logged-in user (lower case) and how they proved it.
    pub fn user(&self) -> Option<(&str, LoginMethod)> {
        match &self.phase {
            Phase::LoggedIn { user, method } => Some((user, *method)),
            _ => None,
        }
    }

    /// Records a `Hello`: the challenge the next `Login` must answer.
    pub fn challenged(&mut self, user: String, challenge: [u8; CHALLENGE_LEN]) {
        self.phase = Phase::Challenged { user, challenge };
    }

    /// Takes the pending challenge for `user`: one `Login` per `Hello`.
    pub fn take_challenge(&mut self, user: &str) -> Option<[u8; CHALLENGE_LEN]> {
        match std::mem::take(&mut self.phase) {
            Phase::Challenged { user: u, challenge } if u == user => Some(challenge),
            other @ Phase::LoggedIn { .. } => {
                self.phase = other;
                None
            }
            _ => None,
        }
    }

    /// Marks the connection logged in.
    pub fn logged_in(&mut self, user: String, method: LoginMethod) {
        self.phase = Phase::LoggedIn { user, method };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_is_stable_and_per_name() {
        let s = [3u8; 32];
        assert_eq!(decoy_params(&s, "x"), decoy_params(&s, "x"));
        assert_ne!(decoy_params(&s, "x").salt, decoy_params(&s, "y").salt);
        assert_ne!(decoy_params(&s, "x").salt, decoy_params(&[4; 32], "x").salt);
        assert_eq!(decoy_params(&s, "x").salt.len(), 16);
    }

    #[test]
    fn md5_and_mismatched_proofs() {
        let v = Verifier::Md5([1; 16]);
        assert_eq!(
            verify(&v, &Proof::LegacyMd5(vec![1; 16]), "n", "u", &[0; 32]),
            Some(LoginMethod::Legacy)
        );
        assert_eq!(
            verify(&v, &Proof::LegacyMd5(vec![2; 16]), "n", "u", &[0; 32]),
            None
        );
        assert_eq!(
            verify(&v, &Proof::Signature(vec![0; 64]), "n", "u", &[0; 32]),
            None
        );
        assert_eq!(
            verify(
                &Verifier::Unknown,
                &Proof::LegacyMd5(vec![1; 16]),
                "n",
                "u",
                &[0; 32]
            ),
            None
        );
    }

    #[test]
    fn signature_binds_node_user_and_challenge() {
        let seed = [9u8; 32];
        let pair = crate::kdf::login_key_pair(&seed);
        let v = Verifier::Ed25519(crate::kdf::login_public_key(&seed));
        let sig = pair.sign(&wire::login_message("DFS1", "alice", &[7; 32]));
        let proof = Proof::Signature(sig.as_ref().to_vec());
        assert_eq!(
            verify(&v, &proof, "DFS1", "alice", &[7; 32]),
            Some(LoginMethod::Signature)
        );
        assert_eq!(verify(&v, &proof, "DFS2", "alice", &[7; 32]), None);
        assert_eq!(verify(&v, &proof, "DFS1", "bob", &[7; 32]), None);
        assert_eq!(verify(&v, &proof, "DFS1", "alice", &[8; 32]), None);
    }

    #[test]
    fn one_login_per_hello() {
        let mut s = Session::new("127.0.0.1:1".parse().unwrap());
        s.challenged("alice".into(), [1; 32]);
        assert_eq!(s.take_challenge("bob"), None);
        assert_eq!(s.take_challenge("alice"), None);
        s.challenged("alice".into(), [1; 32]);
        assert_eq!(s.take_challenge("alice"), Some([1; 32]));
        assert_eq!(s.take_challenge("alice"), None);
    }
}
