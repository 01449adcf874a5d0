//! Login: which scheme a user logs in with, challenges, and proof checks.
//!
//! `Hello{user}` answers a fresh 32-byte challenge and the user's scheme:
//!
//! 1. the user is not in the users file: a decoy `Upgraded` scheme whose
//!    salt is a keyed hash of the name under the cluster secret (every node
//!    of the cluster announces the same one, as for a real account), so unknown
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
//!
//! A proof made with the user's *previous* credential (the login key a
//! rotation replaced, or the legacy `dfs.conf` entry of an upgraded
//! account) fails like any other, but [`verify`] reports it as
//! [`Verdict::Stale`] so the throttle does not count a client that has not
//! caught up with a rotation as a password guesser.

use std::net::SocketAddr;
use std::sync::Arc;

use blake2::digest::{consts::U16, Mac};
use blake2::Blake2bMac;
use ring::signature::{UnparsedPublicKey, ED25519};
use subtle::ConstantTimeEq;
use wire::{AuthScheme, KdfParams, Proof, CHALLENGE_LEN};

use crate::admission::{UserCaps, UserConn, UserLimits, UserRequest};
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

/// What a user's proof is checked against: the current credential, and
/// the previous ones a client that missed a rotation may still use.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The credential that logs in.
    pub current: Verifier,
    /// Credentials that once logged in and no longer do.
    pub previous: Vec<Verifier>,
}

/// The outcome of checking a login proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The proof is right: log in with this method.
    Valid(LoginMethod),
    /// The proof matches a previous credential only: refused, not a guess.
    Stale,
    /// The proof is wrong.
    Invalid,
}

/// The scheme announced for `user` (lower case) and what its proof is
/// checked against.
pub async fn resolve(
    users: &UserDb,
    records: &RecordStore,
    decoy_key: &[u8; 32],
    user: &str,
) -> Result<(AuthScheme, Credentials), RecordError> {
    let Some(entry) = users.get(user) else {
        return Ok((
            AuthScheme::Upgraded(decoy_params(decoy_key, user)),
            Credentials {
                current: Verifier::Unknown,
                previous: Vec::new(),
            },
        ));
    };
    // The users-file entry: current until a record takes over.
    let (file_scheme, file_verifier) = match &entry.credential {
        Credential::Argon2id { kdf, login_key } => (
            AuthScheme::Upgraded(kdf.clone()),
            Verifier::Ed25519(*login_key),
        ),
        legacy => match legacy.md5_digest() {
            Some(d) => (AuthScheme::Legacy, Verifier::Md5(d)),
            None => (AuthScheme::Legacy, Verifier::Unknown),
        },
    };
    if let Some(stored) = records.get_stored(user).await? {
        if let Some(key) = stored
            .record
            .login_key
            .as_deref()
            .and_then(|k| k.try_into().ok())
        {
            let mut previous = vec![file_verifier];
            previous.extend(stored.previous_login_key.map(Verifier::Ed25519));
            return Ok((
                AuthScheme::Upgraded(stored.record.kdf),
                Credentials {
                    current: Verifier::Ed25519(key),
                    previous,
                },
            ));
        }
    }
    Ok((
        file_scheme,
        Credentials {
            current: file_verifier,
            previous: Vec::new(),
        },
    ))
}

/// A fresh login challenge.
pub fn new_challenge() -> std::io::Result<[u8; CHALLENGE_LEN]> {
    let mut c = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut c).map_err(|e| std::io::Error::other(format!("random generator: {e}")))?;
    Ok(c)
}

/// Checks `proof` against the current credential, then the previous ones.
pub fn verify(
    creds: &Credentials,
    proof: &Proof,
    node: &str,
    user: &str,
    challenge: &[u8],
) -> Verdict {
    if let Some(method) = check(&creds.current, proof, node, user, challenge) {
        return Verdict::Valid(method);
    }
    let stale = creds
        .previous
        .iter()
        .any(|v| check(v, proof, node, user, challenge).is_some());
    if stale {
        Verdict::Stale
    } else {
        Verdict::Invalid
    }
}

/// Checks `proof` against one verifier; `Some(method)` if it is right.
fn check(
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
    /// Logged in: every request acts as `user`, while the user's
    /// credential epoch is still `epoch`. `place` holds the connection's
    /// place in the user's connection cap until it logs out or closes.
    LoggedIn {
        place: UserConn,
        method: LoginMethod,
        epoch: u64,
    },
}

/// Login state of one connection.
#[derive(Debug)]
pub struct LoginState {
    peer: SocketAddr,
    phase: Phase,
    caps: Arc<UserCaps>,
}

/// Why a connection could not log in although its proof was right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserFull {
    /// The user's cap of logged-in connections.
    pub cap: usize,
}

impl LoginState {
    /// A connection from `peer` that has not logged in, with no per-user
    /// caps.
    pub fn new(peer: SocketAddr) -> Self {
        Self::with_caps(peer, UserCaps::new(UserLimits::UNLIMITED))
    }

    /// A connection from `peer` that has not logged in, counted in the
    /// node's per-user caps `caps`.
    pub(crate) fn with_caps(peer: SocketAddr, caps: Arc<UserCaps>) -> Self {
        LoginState {
            peer,
            phase: Phase::Fresh,
            caps,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The logged-in user (lower case) and how they proved it.
    pub fn user(&self) -> Option<(&str, LoginMethod)> {
        match &self.phase {
            Phase::LoggedIn { place, method, .. } => Some((place.user(), *method)),
            _ => None,
        }
    }

    /// A place for one more running request of the logged-in user:
    /// `Ok(None)` before login (nothing to count), `Err(cap)` if the user
    /// already has `cap` requests running.
    pub(crate) fn request(&self) -> Result<Option<UserRequest>, usize> {
        match &self.phase {
            Phase::LoggedIn { place, .. } => {
                place.request().map(Some).ok_or(self.caps.limits().requests)
            }
            _ => Ok(None),
        }
    }

    /// The credential epoch the connection logged in under.
    pub fn epoch(&self) -> Option<u64> {
        match &self.phase {
            Phase::LoggedIn { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }

    /// The connection changed the credential itself: it stays logged in
    /// under the new epoch.
    pub fn set_epoch(&mut self, new: u64) {
        if let Phase::LoggedIn { epoch, .. } = &mut self.phase {
            *epoch = new;
        }
    }

    /// Ends the login (the user's credential changed elsewhere).
    pub fn log_out(&mut self) {
        self.phase = Phase::Fresh;
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

    /// Marks the connection logged in under credential epoch `epoch`, if
    /// `user` holds fewer logged-in connections than the per-user cap;
    /// otherwise the connection stays logged out.
    pub fn logged_in(
        &mut self,
        user: String,
        method: LoginMethod,
        epoch: u64,
    ) -> Result<(), UserFull> {
        let place = self.caps.connect(&user).ok_or(UserFull {
            cap: self.caps.limits().connections,
        })?;
        self.phase = Phase::LoggedIn {
            place,
            method,
            epoch,
        };
        Ok(())
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

    fn only(v: Verifier) -> Credentials {
        Credentials {
            current: v,
            previous: Vec::new(),
        }
    }

    #[test]
    fn md5_and_mismatched_proofs() {
        let v = only(Verifier::Md5([1; 16]));
        assert_eq!(
            verify(&v, &Proof::LegacyMd5(vec![1; 16]), "n", "u", &[0; 32]),
            Verdict::Valid(LoginMethod::Legacy)
        );
        assert_eq!(
            verify(&v, &Proof::LegacyMd5(vec![2; 16]), "n", "u", &[0; 32]),
            Verdict::Invalid
        );
        assert_eq!(
            verify(&v, &Proof::Signature(vec![0; 64]), "n", "u", &[0; 32]),
            Verdict::Invalid
        );
        assert_eq!(
            verify(
                &only(Verifier::Unknown),
                &Proof::LegacyMd5(vec![1; 16]),
                "n",
                "u",
                &[0; 32]
            ),
            Verdict::Invalid
        );
    }

    #[test]
    fn previous_credentials_are_stale_not_valid() {
        let seed = [9u8; 32];
        let old = [5u8; 32];
        let creds = Credentials {
            current: Verifier::Ed25519(crate::kdf::login_public_key(&seed)),
            previous: vec![
                Verifier::Md5([1; 16]),
                Verifier::Ed25519(crate::kdf::login_public_key(&old)),
            ],
        };
        let sign = |s: &[u8; 32]| {
            let sig = crate::kdf::login_key_pair(s).sign(&wire::login_message("N", "u", &[7; 32]));
            Proof::Signature(sig.as_ref().to_vec())
        };
        let check = |p: &Proof| verify(&creds, p, "N", "u", &[7; 32]);
        assert_eq!(check(&sign(&seed)), Verdict::Valid(LoginMethod::Signature));
        assert_eq!(check(&sign(&old)), Verdict::Stale);
        assert_eq!(check(&Proof::LegacyMd5(vec![1; 16])), Verdict::Stale);
        assert_eq!(check(&Proof::LegacyMd5(vec![2; 16])), Verdict::Invalid);
        assert_eq!(check(&sign(&[6; 32])), Verdict::Invalid);
    }

    #[test]
    fn signature_binds_node_user_and_challenge() {
        let seed = [9u8; 32];
        let pair = crate::kdf::login_key_pair(&seed);
        let v = only(Verifier::Ed25519(crate::kdf::login_public_key(&seed)));
        let sig = pair.sign(&wire::login_message("DFS1", "alice", &[7; 32]));
        let proof = Proof::Signature(sig.as_ref().to_vec());
        assert_eq!(
            verify(&v, &proof, "DFS1", "alice", &[7; 32]),
            Verdict::Valid(LoginMethod::Signature)
        );
        assert_eq!(
            verify(&v, &proof, "DFS2", "alice", &[7; 32]),
            Verdict::Invalid
        );
        assert_eq!(
            verify(&v, &proof, "DFS1", "bob", &[7; 32]),
            Verdict::Invalid
        );
        assert_eq!(
            verify(&v, &proof, "DFS1", "alice", &[8; 32]),
            Verdict::Invalid
        );
    }

    #[test]
    fn one_login_per_hello() {
        let mut s = LoginState::new("127.0.0.1:1".parse().unwrap());
        s.challenged("alice".into(), [1; 32]);
        assert_eq!(s.take_challenge("bob"), None);
        assert_eq!(s.take_challenge("alice"), None);
        s.challenged("alice".into(), [1; 32]);
        assert_eq!(s.take_challenge("alice"), Some([1; 32]));
        assert_eq!(s.take_challenge("alice"), None);
    }
}
