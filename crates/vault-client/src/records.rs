//! Key records: which one to trust, when to make the first one, and how
//! nodes that missed a change catch up.
//!
//! A record is trusted only if the password opens it
//! ([`crate::crypto::keys::PasswordKeys::open_record`]: every field is
//! authenticated and its login key is the password's own). Among trusted
//! records the highest generation wins, and it may not be older than what
//! this client saw before (the state file): a node replaying an old record
//! is refused, not believed. Only a trusted record is ever copied to another
//! node, and only over an older one, so a node can never get its own record
//! spread to the others.

use std::path::Path;

use tokio::task::JoinSet;
use wire::{AuthScheme, ErrorCode, Request, UserRecord};

use crate::crypto::keys::{self, KeyError, MasterKey};
use crate::login::{KeyRing, LoginReport, Method, NodeLogin, RingError, Which};
use crate::net::NetError;
use crate::state::AccountState;
use crate::vault::OpenError;

/// The newest trusted record and the master key it holds.
pub struct Trusted {
    /// The record.
    pub record: UserRecord,
    /// Its master key.
    pub master: MasterKey,
    /// The password that opened it.
    pub which: Which,
}

/// What the logged-in nodes hold.
pub enum Found {
    /// A trusted record.
    Trusted(Trusted),
    /// No logged-in node holds any record.
    Nothing,
}

/// Finds the newest record the password opens among the logged-in nodes.
pub async fn newest(
    report: &LoginReport,
    ring: &mut KeyRing,
    user: &str,
    state: &AccountState,
    state_path: &Path,
) -> Result<Found, OpenError> {
    let mut best: Option<(UserRecord, Which)> = None;
    let mut old_format = Vec::new();
    let mut untrusted = Vec::new();
    let mut any = false;
    for (i, stored) in report.records.iter().enumerate() {
        let Some(Ok(Some(record))) = stored else {
            continue;
        };
        any = true;
        match ring.open_record(record, user).await {
            Ok((_, which)) => {
                let better = best.as_ref().is_none_or(|(b, _)| {
                    (record.generation, &record.wrapped_key) > (b.generation, &b.wrapped_key)
                });
                if better {
                    best = Some((record.clone(), which));
                }
            }
            Err(KeyError::OldFormat(_)) => old_format.push(report.names[i].clone()),
            Err(_) => untrusted.push(report.names[i].clone()),
        }
    }
    for name in &untrusted {
        tracing::warn!(node = %name, "ignoring a key record that does not open with this password");
    }
    let Some((record, which)) = best else {
        if !any {
            if state.generation > 0 {
                return Err(OpenError::Rollback {
                    seen: state.generation,
                    found: 0,
                    state: state_path.to_path_buf(),
                });
            }
            return Ok(Found::Nothing);
        }
        if !old_format.is_empty() && untrusted.is_empty() {
            return Err(OpenError::OldFormat { nodes: old_format });
        }
        return Err(OpenError::BadRecords(untrusted.join(", ")));
    };
    if record.generation < state.generation {
        return Err(OpenError::Rollback {
            seen: state.generation,
            found: record.generation,
            state: state_path.to_path_buf(),
        });
    }
    let (master, _) = ring
        .open_record(&record, user)
        .await
        .map_err(OpenError::Key)?;
    Ok(Found::Trusted(Trusted {
        record,
        master,
        which,
    }))
}

/// Gives every logged-in node whose record is older than `record` (or
/// missing, or not the user's) the trusted `record`. Best effort: a node
/// that refuses keeps what it has and is named in the log.
pub async fn spread(report: &LoginReport, record: &UserRecord) {
    let mut set = JoinSet::new();
    for (i, s) in report.sessions.iter().enumerate() {
        let (Some(s), Some(Ok(stored))) = (s, &report.records[i]) else {
            continue;
        };
        let have = stored.as_ref().map_or(0, |r| r.generation);
        if stored.as_ref() == Some(record) {
            continue;
        }
        if have >= record.generation {
            if stored.is_some() {
                tracing::warn!(node = %s.name, "holds a key record that is not the newest the password opens; left alone");
            }
            continue;
        }
        let (s, put) = (
            s.clone(),
            Request::PutRecord {
                expect_generation: have,
                record: record.clone(),
                expect_record: None,
            },
        );
        set.spawn(async move {
            if let Err(e) = s.call(&put).await {
                tracing::warn!(node = %s.name, "could not update the key record: {e}");
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Makes the vault's master key and first record, and stores it on every
/// logged-in node. Only when at least three nodes are logged in and every
/// one of them reported no record: a node hiding its record must not make
/// the client start a second vault. Accounts made by `vault-node user add`
/// keep the salt their nodes announce (the one most of them agree on), so
/// the record's login key is the one they already check.
pub async fn create(
    report: &LoginReport,
    ring: &mut KeyRing,
    user: &str,
) -> Result<Trusted, OpenError> {
    let ready: Vec<usize> = (0..report.names.len())
        .filter(|&i| report.sessions[i].is_some())
        .collect();
    let all_empty = ready
        .iter()
        .all(|&i| matches!(report.records[i], Some(Ok(None))));
    if ready.len() < 3 || !all_empty {
        return Err(OpenError::CreateNeedsQuorum { ready: ready.len() });
    }
    // The parameters of the signature logins, by how many nodes took them.
    let mut announced: Vec<(wire::KdfParams, usize)> = Vec::new();
    for &i in &ready {
        if let (NodeLogin::Ready(Method::Signature(_)), Some(AuthScheme::Upgraded(k))) =
            (&report.outcomes[i], &report.schemes[i])
        {
            match announced.iter_mut().find(|(p, _)| p == k) {
                Some((_, n)) => *n += 1,
                None => announced.push((k.clone(), 1)),
            }
        }
    }
    announced.sort_by_key(|a| std::cmp::Reverse(a.1));
    let (kdf, upgraded) = match announced.as_slice() {
        [] => (keys::new_kdf_params()?, false),
        [(k, _)] => (k.clone(), true),
        [(k, a), (_, b), ..] if a > b => (k.clone(), true),
        _ => {
            return Err(OpenError::NoNodes(
                "the nodes announce different key-derivation salts for this new account; refusing to choose".into(),
            ))
        }
    };
    let keys = ring.get(Which::Current, &kdf).await.map_err(|e| match e {
        RingError::Key(e) => OpenError::Key(e),
        _ => OpenError::Key(KeyError::Decryption),
    })?;
    let master = MasterKey::generate()?;
    let record = keys.seal_record(&master, user, 1, upgraded)?;
    let mut set = JoinSet::new();
    for s in report.ready() {
        let (s, put) = (
            s.clone(),
            Request::PutRecord {
                expect_generation: 0,
                record: record.clone(),
                expect_record: None,
            },
        );
        set.spawn(async move { (s.name.clone(), s.call(&put).await) });
    }
    let mut stored = 0;
    let mut conflict = false;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(_))) => stored += 1,
            Ok((_, Err(e))) if e.is_code(ErrorCode::Conflict) => conflict = true,
            Ok((node, Err(e))) => tracing::warn!(%node, "could not store the key record: {e}"),
            Err(e) => tracing::warn!("record task failed: {e}"),
        }
    }
    if conflict {
        // Another client made the first record at the same moment.
        return Err(OpenError::Raced);
    }
    if stored == 0 {
        return Err(OpenError::NoNodes("no node accepted the key record".into()));
    }
    Ok(Trusted {
        record,
        master,
        which: Which::Current,
    })
}

/// The generation each logged-in node reported (`None` where unknown).
pub fn generations(report: &LoginReport) -> Vec<Option<u64>> {
    report
        .records
        .iter()
        .map(|r| match r {
            Some(Ok(r)) => Some(r.as_ref().map_or(0, |r| r.generation)),
            _ => None,
        })
        .collect()
}

/// Why a logged-in node's record could not be read, if it could not.
pub fn unreadable(report: &LoginReport) -> Vec<(String, &NetError)> {
    report
        .records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Some(Err(e)) => Some((report.names[i].clone(), e)),
            _ => None,
        })
        .collect()
}
