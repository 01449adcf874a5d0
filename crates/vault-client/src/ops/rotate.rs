//! ROTATE: change the password. The master key is re-wrapped under the new
//! password; no file is re-encrypted or re-uploaded.
//!
//! The rotation logs in through the same guarded path as every command
//! ([`crate::login`]) and needs all four nodes. Before any node changes,
//! the new key record is written to the state file as a *pending rotation*
//! (with the nodes that still hold the legacy credential), so that:
//!
//! - each node switches atomically (one compare-and-swap of its record,
//!   holding the new login key and the re-wrapped master key);
//! - running `rotate` again with the same two passwords finishes an
//!   interrupted rotation at once: switched nodes take the new password's
//!   signature, the others the old credential, so no attempt fails and no
//!   throttle is touched; the new password's MD5 is never sent anywhere;
//! - until it is finished, the local MD5 check of dfc.conf accepts the new
//!   password too, and every other command says a rotation is pending;
//! - dfc.conf is rewritten last, then the pending rotation is cleared.
//!
//! Running `rotate` again after a rotation that *finished* (the nodes
//! refuse the old password) is recognised, not reported as a wrong
//! password ([`RotateReport::already`]): when every node refused the old
//! password, all four announced the upgraded login and no rotation is
//! pending, the new password is tried once per node, by signature only
//! (never an MD5 of it, whatever the nodes announce then), and the change
//! counts as done only when a majority of the configured nodes (3 of 4)
//! take it and serve the newest record that password opens
//! ([`records::newest`]). Anything less keeps `Invalid Username/Password`.
//! When the state file already knows the nodes' login key, a new password
//! that does not derive it is refused without asking any node.

use quinn::Endpoint;
use subtle::ConstantTimeEq;
use tokio::task::JoinSet;
use wire::{AuthScheme, ErrorCode, Request, UserRecord};
use zeroize::Zeroizing;

use super::OpError;
use crate::config::{self, ClientConfig, PasswordSetting};
use crate::crypto::keys::{self, MasterKey};
use crate::login::{self, KeyRing, LoginReport, Method, NodeLogin, RingError, RotationInfo, Which};
use crate::records::{self, Found};
use crate::state::{KdfState, PendingRotation};
use crate::vault::{no_session_error, OpenError, OpenOptions};

/// What ROTATE did.
#[derive(Debug, Clone)]
pub struct RotateReport {
    /// Nodes that now hold the new credential.
    pub nodes: Vec<String>,
    /// Whether dfc.conf's `Password:` line was rewritten.
    pub config_updated: bool,
    /// Whether this run finished a rotation an earlier run started.
    pub resumed: bool,
    /// Whether an earlier run had finished this rotation already: the
    /// nodes refused the old password and a majority of them take the new
    /// one. Nothing changed on any node (`nodes` is empty); dfc.conf was
    /// rewritten to the new password if it held another one
    /// (`config_updated`).
    pub already: bool,
}

/// Changes the password of `cfg`'s user from `old` to `new` on all nodes.
pub async fn rotate(
    endpoint: &Endpoint,
    cfg: &ClientConfig,
    old: &Zeroizing<String>,
    new: &Zeroizing<String>,
    options: &OpenOptions,
) -> Result<RotateReport, OpError> {
    let user = cfg.username.to_ascii_lowercase();
    // Also keeps a resumed rotation given the new password as the old one
    // from sending the new password's MD5 to nodes not yet switched.
    if bool::from(old.as_bytes().ct_eq(new.as_bytes())) {
        return Err(OpError::Refused(
            "the new password is the current one; give the password the nodes accept now as the old one (nothing was changed)".into(),
        ));
    }
    if let Some(PasswordSetting::Plain(_)) = cfg.password {
        if let Some(problem) = config::plain_password_problem(new) {
            return Err(OpError::Refused(format!(
                "the new password cannot be written to {} as plain text: {problem}; nothing was changed",
                cfg.path.display()
            )));
        }
    }
    let store = options.state_store(cfg);
    let state = store.load(&user).map_err(OpenError::from)?;
    let mut ring = KeyRing::new(old, Some(new));

    // A pending rotation is finished only with the new password it began.
    let mut pending = match &state.pending_rotation {
        Some(p) => {
            let record = p.record().ok_or_else(|| {
                OpError::Refused(format!(
                    "the pending rotation in {} is damaged; remove that file to start over",
                    store.path().display()
                ))
            })?;
            // The record is pushed to every node: it must open, with the
            // new password (so its wrapped key, generation and login key
            // are the ones that password sealed), not merely carry the
            // right login key.
            let matches = matches!(ring.open_record(&record, &user).await, Ok((_, Which::New)));
            Some((p.clone(), record, matches))
        }
        None => None,
    };
    let info = match &pending {
        Some((p, record, true)) => RotationInfo {
            pending: Some(record.clone()),
            legacy_nodes: p.legacy_nodes.clone(),
        },
        _ => RotationInfo::default(),
    };
    let attempt = login::Attempt {
        endpoint,
        cfg,
        user: &user,
        limits: options.limits,
        state: &state,
        state_path: store.path(),
        rotation: Some(&info),
    };
    let report = login::log_in(&attempt, &mut ring).await;
    let result = finish(cfg, &user, &store, &mut ring, &state, &mut pending, &report).await;
    report.close();
    match result {
        Err(OpError::Open(OpenError::AuthFailed))
            if state.pending_rotation.is_none() && all_upgraded_refused(&report) =>
        {
            let mut ring = KeyRing::new(new, None);
            already_rotated(
                endpoint, cfg, &user, options, &store, &state, &mut ring, &report,
            )
            .await
        }
        other => other,
    }
}

/// Whether every configured node announced the upgraded login and refused
/// the old password: the only case in which the new one may be tried.
fn all_upgraded_refused(report: &LoginReport) -> bool {
    !report.names.is_empty()
        && report.outcomes.iter().all(|o| *o == NodeLogin::Refused)
        && report
            .schemes
            .iter()
            .all(|s| matches!(s, Some(AuthScheme::Upgraded(_))))
}

/// The old password was refused everywhere: finds out whether the new one
/// (the ring's current password) is the account's already. Succeeds only
/// when a majority of the configured nodes take its signature and hold the
/// newest record it opens; otherwise the answer stays `AuthFailed`.
#[allow(clippy::too_many_arguments)]
async fn already_rotated(
    endpoint: &Endpoint,
    cfg: &ClientConfig,
    user: &str,
    options: &OpenOptions,
    store: &crate::state::StateStore,
    state: &crate::state::AccountState,
    ring: &mut KeyRing,
    refused: &LoginReport,
) -> Result<RotateReport, OpError> {
    let refused_err = || OpError::Open(OpenError::AuthFailed);
    // The state file knows the login key of the parameters every node
    // announces: a new password that does not derive it is wrong, and no
    // node is asked (no second failed login per node).
    if let (Some(known), Some(key)) = (&state.kdf, &state.login_key) {
        let mut announced = refused.schemes.iter().map(|s| match s {
            Some(AuthScheme::Upgraded(k)) => Some(k),
            _ => None,
        });
        let first = announced.next().flatten();
        if let Some(kdf) = first.filter(|k| KdfState::of(k) == *known) {
            if announced.all(|k| k == Some(kdf)) {
                let keys = ring.get(Which::Current, kdf).await.map_err(|e| match e {
                    RingError::Key(e) => OpError::Key(e),
                    _ => refused_err(),
                })?;
                if hex::encode(keys.login_public_key()) != *key {
                    return Err(refused_err());
                }
            }
        }
    }
    // Never an MD5 of the new password: marked upgraded, the login withholds
    // it from every node announcing the legacy login now.
    let guarded = crate::state::AccountState {
        upgraded: true,
        pending_rotation: None,
        ..state.clone()
    };
    let attempt = login::Attempt {
        endpoint,
        cfg,
        user,
        limits: options.limits,
        state: &guarded,
        state_path: store.path(),
        rotation: None,
    };
    let report = login::log_in(&attempt, ring).await;
    let result = confirm_new(cfg, user, store, state, ring, &report).await;
    report.close();
    result
}

/// The second half of [`already_rotated`]: counts the nodes that took the
/// new password and hold the newest record it opens, then brings dfc.conf
/// and the state file up to date.
async fn confirm_new(
    cfg: &ClientConfig,
    user: &str,
    store: &crate::state::StateStore,
    state: &crate::state::AccountState,
    ring: &mut KeyRing,
    report: &LoginReport,
) -> Result<RotateReport, OpError> {
    let refused_err = || OpError::Open(OpenError::AuthFailed);
    let Ok(Found::Trusted(trusted)) =
        records::newest(report, ring, user, state, store.path()).await
    else {
        return Err(refused_err());
    };
    if trusted.record.login_key.is_none() {
        return Err(refused_err());
    }
    let holding = (0..report.names.len())
        .filter(|&i| {
            report.outcomes[i] == NodeLogin::Ready(Method::Signature(Which::Current))
                && matches!(&report.records[i], Some(Ok(Some(r))) if *r == trusted.record)
        })
        .count();
    if holding < login::majority(report.names.len()) {
        return Err(refused_err());
    }
    let new = ring
        .password(Which::Current)
        .expect("a ring always has its current password");
    // dfc.conf still naming another password is rewritten, as a finished
    // rotation would have done.
    let config_updated = cfg.password.as_ref().is_some_and(|p| !p.matches(new));
    if config_updated {
        config::rewrite_password(&cfg.path, new).map_err(|e| {
            OpError::Unavailable(format!(
                "the password was already changed to the new one on the nodes (an earlier rotate finished), but {} could not be updated ({e}); put the new password there",
                cfg.path.display()
            ))
        })?;
    }
    store
        .update(user, |s| s.learn(&trusted.record))
        .map_err(OpenError::from)?;
    Ok(RotateReport {
        nodes: Vec::new(),
        config_updated,
        resumed: false,
        already: true,
    })
}

async fn finish(
    cfg: &ClientConfig,
    user: &str,
    store: &crate::state::StateStore,
    ring: &mut KeyRing,
    state: &crate::state::AccountState,
    pending: &mut Option<(PendingRotation, UserRecord, bool)>,
    report: &LoginReport,
) -> Result<RotateReport, OpError> {
    // A pending rotation to another new password may be dropped only if no
    // node has taken it yet.
    if let Some((_, record, false)) = pending {
        let switched: Vec<&str> = report
            .schemes
            .iter()
            .zip(&report.names)
            .filter(|(s, _)| matches!(s, Some(AuthScheme::Upgraded(k)) if *k == record.kdf))
            .map(|(_, n)| n.as_str())
            .collect();
        if !switched.is_empty() {
            return Err(OpError::Refused(format!(
                "a password change to another new password is half done ({} switched); run rotate again with the new password you gave then",
                switched.join(", ")
            )));
        }
        *pending = None;
    }
    let resumed = pending.is_some();
    let keep = if resumed {
        "the rotation stays pending; run rotate again to finish it"
    } else {
        "nothing was changed"
    };
    if report.ready().next().is_none() && !resumed {
        return Err(OpError::Open(no_session_error(report)));
    }
    let missing: Vec<String> = report
        .outcomes
        .iter()
        .zip(&report.names)
        .filter_map(|(o, n)| o.reason().map(|why| format!("{n} {why}")))
        .collect();
    if !missing.is_empty() {
        if report.outcomes.iter().all(|o| *o == NodeLogin::Refused) {
            return Err(OpError::Open(OpenError::AuthFailed));
        }
        return Err(OpError::Unavailable(format!(
            "rotate needs all four nodes: {}; {keep}",
            missing.join("; ")
        )));
    }
    let unreadable = records::unreadable(report);
    if !unreadable.is_empty() {
        let why: Vec<String> = unreadable
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        return Err(OpError::Unavailable(format!(
            "cannot read the key records ({}); {keep}",
            why.join("; ")
        )));
    }

    // The new record: the pending one, or a new one wrapping the master key
    // the newest trusted record holds.
    let target = match pending {
        Some((_, record, _)) => record.clone(),
        None => {
            let (master, generation) =
                match records::newest(report, ring, user, state, store.path()).await? {
                    Found::Trusted(t) => (t.master, t.record.generation),
                    // No node has any record: the vault was never used.
                    Found::Nothing => (MasterKey::generate()?, 0),
                };
            let kdf = keys::new_kdf_params()?;
            let keys = ring.get(Which::New, &kdf).await.map_err(|e| match e {
                RingError::Key(e) => OpError::Key(e),
                _ => OpError::Refused("cannot derive the new password's keys".into()),
            })?;
            let generation = generation
                .checked_add(1)
                .ok_or_else(|| OpError::Refused("key record generation exhausted".into()))?;
            let record = keys.seal_record(&master, user, generation, true)?;
            let legacy_nodes = report
                .outcomes
                .iter()
                .zip(&report.names)
                .filter(|(o, _)| **o == NodeLogin::Ready(Method::Md5))
                .map(|(_, n)| n.clone())
                .collect();
            let new_md5 = match cfg.password {
                Some(PasswordSetting::Md5(_)) => ring
                    .password(Which::New)
                    .map(|p| hex::encode(keys::md5_of(p.as_bytes()))),
                _ => None,
            };
            let p = PendingRotation {
                started: super::unix_now(),
                record: PendingRotation::encode_record(&record),
                legacy_nodes,
                new_md5,
            };
            // Written before any node changes: whatever happens next, a
            // re-run knows how to finish.
            store
                .update(user, |s| s.pending_rotation = Some(p))
                .map_err(OpenError::from)?;
            record
        }
    };

    // Each node switches with one compare-and-swap of its record.
    let generations = records::generations(report);
    let mut set = JoinSet::new();
    for (i, s) in report.sessions.iter().enumerate() {
        let Some(s) = s else { continue };
        if matches!(&report.records[i], Some(Ok(Some(r))) if *r == target) {
            continue;
        }
        let put = Request::PutRecord {
            expect_generation: generations[i].unwrap_or(0),
            record: target.clone(),
            expect_record: None,
        };
        let s = s.clone();
        set.spawn(async move { (s.name.clone(), s.call(&put).await) });
    }
    let mut failed = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(_))) => {}
            Ok((node, Err(e))) if e.is_code(ErrorCode::Conflict) => failed.push(format!(
                "{node}: its key record changed during the rotation (another client?)"
            )),
            Ok((node, Err(e))) => failed.push(format!("{node}: {e}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        return Err(OpError::Unavailable(format!(
            "rotation interrupted ({}); run rotate again with the same passwords to finish it",
            failed.join("; ")
        )));
    }

    let config_updated = cfg.password.is_some();
    if config_updated {
        let new = ring
            .password(Which::New)
            .expect("rotation ring has the new password");
        config::rewrite_password(&cfg.path, new).map_err(|e| {
            OpError::Unavailable(format!(
                "password changed on every node, but {} could not be updated ({e}); run rotate again to finish",
                cfg.path.display()
            ))
        })?;
    }
    store
        .update(user, |s| {
            s.learn(&target);
            s.pending_rotation = None;
        })
        .map_err(OpenError::from)?;
    let mut nodes = report.names.clone();
    nodes.sort();
    Ok(RotateReport {
        nodes,
        config_updated,
        resumed,
        already: false,
    })
}
