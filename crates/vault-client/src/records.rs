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
//!
//! The first record: clients that create one vault at the same moment (or
//! find a first record on only some nodes) converge on one ([`settle`]).
//! Each writes its record to every node that has none (`expect_generation:
//! 0`), then all read the nodes again and pick the same winner among the
//! generation-1 records: the one most nodes hold, ties broken by the larger
//! [`wire::record_hash`], skipping records the password does not open.
//! Copies of other generation-1 records are replaced by the winner, each
//! only if the node still holds the record read (`expect_record`). A client
//! uses a master key only once its record is on a majority of the
//! configured nodes, so nothing is ever encrypted under a key that loses.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tokio::task::JoinSet;
use wire::{AuthScheme, Request, Response, UserRecord};

use crate::crypto::keys::{self, KeyError, MasterKey};
use crate::login::{majority, KeyRing, LoginReport, Method, NodeLogin, RingError, Which};
use crate::net::{unexpected, NetError, Session};
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
/// logged-in node, converging with clients that create the vault at the
/// same moment ([`settle`]: the record returned may be another client's,
/// and is on a majority of the configured nodes). Only when at least three nodes are logged in and every
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
    let own = Trusted {
        record,
        master,
        which: Which::Current,
    };
    settle(report, ring, user, own).await
}

/// Most rounds of reading the nodes' records while racing clients converge.
const MAX_SETTLE_ROUNDS: u32 = 40;

/// Pause between two rounds (the n-th waits n times this, at most 10 times).
const SETTLE_PAUSE: Duration = Duration::from_millis(20);

/// Whether `record`, the newest trusted one, may still be in a first-use
/// race: it is a first record and some logged-in node holds no record or
/// another first record. Then [`settle`] decides before it is used.
pub fn racing(report: &LoginReport, record: &UserRecord) -> bool {
    record.generation == 1
        && report.records.iter().enumerate().any(|(i, r)| {
            report.sessions[i].is_some()
                && match r {
                    Some(Ok(None)) => true,
                    Some(Ok(Some(other))) => other.generation == 1 && other != record,
                    _ => false,
                }
        })
}

/// Makes the vault's first record one record on a majority of the
/// configured nodes, starting from `seed` (this client's new record, or
/// the trusted first record it found): `seed` goes to every logged-in node
/// that reported none, then the winner among the generation-1 records (most
/// copies, then the larger [`wire::record_hash`], among those the password
/// opens) replaces the others' copies, until it is on a majority. Returns
/// the winner; [`OpenError::Raced`] if the nodes do not converge within
/// a bounded number of rounds (a few seconds).
pub async fn settle(
    report: &LoginReport,
    ring: &mut KeyRing,
    user: &str,
    seed: Trusted,
) -> Result<Trusted, OpenError> {
    let n = report.names.len();
    let need = majority(n);
    let empty: Vec<Session> = report
        .sessions
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(report.records[*i], Some(Ok(None))))
        .filter_map(|(_, s)| s.clone())
        .collect();
    let writes = empty
        .into_iter()
        .map(|s| (s, put_request(0, &seed.record, None)))
        .collect();
    put_all(writes).await;

    let mut untrusted: HashSet<[u8; wire::CONTENT_HASH_LEN]> = HashSet::new();
    for round in 0..MAX_SETTLE_ROUNDS {
        let (held, unread) = read_all(report).await;
        // Generation-1 records by how many nodes hold each, best first.
        let mut groups: Vec<([u8; wire::CONTENT_HASH_LEN], UserRecord, usize)> = Vec::new();
        for r in held.iter().flatten().flatten() {
            if r.generation != 1 {
                continue;
            }
            let h = wire::record_hash(r);
            match groups.iter_mut().find(|g| g.0 == h) {
                Some(g) => g.2 += 1,
                None => groups.push((h, r.clone(), 1)),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse((g.2, g.0)));
        let mut winner = None;
        for (rank, (h, record, count)) in groups.iter().enumerate() {
            if untrusted.contains(h) {
                continue;
            }
            if *record == seed.record {
                winner = Some((rank, record.clone(), *count, None));
                break;
            }
            match ring.open_record(record, user).await {
                Ok((master, which)) => {
                    winner = Some((rank, record.clone(), *count, Some((master, which))));
                    break;
                }
                Err(_) => {
                    untrusted.insert(*h);
                }
            }
        }
        let Some((rank, record, count, opened)) = winner else {
            if groups.is_empty() {
                // Nothing to judge: no first record could be read back
                // (never "does not open", which would blame the records).
                if !unread.is_empty() {
                    return Err(OpenError::NoNodes(format!(
                        "the key record could not be read back while creating the vault: {}",
                        unread.join("; ")
                    )));
                }
                // A newer record replaced the first one: start over.
                return Err(OpenError::Raced);
            }
            return Err(OpenError::BadRecords(
                "every node (no first key record there opens with this password)".into(),
            ));
        };
        // Move every node toward the winner: fill empty ones, and replace
        // the first records ranked below it (only if still the one read).
        // One ranked above it did not open here: it is left alone, never
        // overwritten on a guess (it is a forgery, or this client could
        // not try it; then the winner cannot gain a majority, and this
        // client gives up rather than harm a record others may use).
        let below: HashSet<_> = groups[rank + 1..].iter().map(|g| g.0).collect();
        let mut writes = Vec::new();
        for (i, h) in held.iter().enumerate() {
            let (Some(s), Some(h)) = (&report.sessions[i], h) else {
                continue;
            };
            match h {
                None => writes.push((s.clone(), put_request(0, &record, None))),
                Some(r) if r.generation == 1 => {
                    let h = wire::record_hash(r);
                    if below.contains(&h) {
                        writes.push((s.clone(), put_request(1, &record, Some(h.to_vec()))));
                    }
                }
                Some(_) => {}
            }
        }
        let done = count >= need;
        if !writes.is_empty() {
            put_all(writes).await;
        }
        if done {
            if record != seed.record {
                tracing::info!(
                    "another client created this vault at the same moment; using its key record"
                );
            }
            return Ok(match opened {
                None => seed,
                Some((master, which)) => Trusted {
                    record,
                    master,
                    which,
                },
            });
        }
        tokio::time::sleep(SETTLE_PAUSE * (round + 1).min(10)).await;
    }
    Err(OpenError::Raced)
}

fn put_request(expect: u64, record: &UserRecord, expect_record: Option<Vec<u8>>) -> Request {
    Request::PutRecord {
        expect_generation: expect,
        record: record.clone(),
        expect_record,
    }
}

/// Sends each write, all at once; failures (a `Conflict` when another
/// client got there first) are only logged: the next read shows the truth.
async fn put_all(writes: Vec<(Session, Request)>) {
    let mut set = JoinSet::new();
    for (s, put) in writes {
        set.spawn(async move {
            if let Err(e) = s.call(&put).await {
                tracing::debug!(node = %s.name, "key record not written: {e}");
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// The record each logged-in node holds now (`None`: not logged in or not
/// readable; `Some(None)`: no record), and why each unreadable logged-in
/// node could not be read (node name and reason).
async fn read_all(report: &LoginReport) -> (Vec<Option<Option<UserRecord>>>, Vec<String>) {
    let mut held = vec![None; report.names.len()];
    let mut unread = Vec::new();
    let mut set = JoinSet::new();
    for (i, s) in report.sessions.iter().enumerate() {
        let Some(s) = s.clone() else { continue };
        set.spawn(async move {
            let r = match s.call(&Request::GetRecord).await {
                Ok(Response::Record(r)) => Ok(r),
                Ok(other) => Err(unexpected("Record", &other).to_string()),
                Err(e) => Err(e.to_string()),
            };
            (i, r)
        });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(r))) => held[i] = Some(r),
            Ok((i, Err(e))) => {
                tracing::warn!(node = %report.names[i], "could not read the key record: {e}");
                unread.push(format!("{} ({e})", report.names[i]));
            }
            Err(e) => unread.push(format!("a read task failed ({e})")),
        }
    }
    unread.sort();
    (held, unread)
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
