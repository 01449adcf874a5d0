//! ROTATE: change the password. The master key is re-wrapped under the new
//! password; no file is re-encrypted or re-uploaded.
//!
//! Rotation refuses to start unless all four nodes are reachable, so no node
//! is left accepting the old password. Each node switches atomically (one
//! record write holds the new login key and the re-wrapped master key).
//! If the run is interrupted, some nodes accept the old password and some
//! the new one; running `rotate` again with the same two passwords logs in
//! to each node with whichever it accepts and finishes the job. `dfc.conf`
//! is rewritten last.

use quinn::Endpoint;
use tokio::task::JoinSet;
use wire::{ErrorCode, Request, UserRecord};
use zeroize::Zeroizing;

use super::OpError;
use crate::config::{self, ClientConfig, PasswordSetting};
use crate::crypto::keys::{self, MasterKey, PasswordKeys};
use crate::net::{dial, Session};
use crate::vault::{dial_all, login, read_records, unlock, KeyCache, OpenError};

/// What ROTATE did.
#[derive(Debug, Clone)]
pub struct RotateReport {
    /// Nodes that now hold the new credential.
    pub nodes: Vec<String>,
    /// Whether dfc.conf's `Password:` line was rewritten.
    pub config_updated: bool,
}

/// Changes the password of `cfg`'s user from `old` to `new` on all nodes.
pub async fn rotate(
    endpoint: &Endpoint,
    cfg: &ClientConfig,
    old: &Zeroizing<String>,
    new: &Zeroizing<String>,
) -> Result<RotateReport, OpError> {
    let user = cfg.username.to_ascii_lowercase();
    if let Some(PasswordSetting::Plain(_)) = cfg.password {
        if let Some(problem) = config::plain_password_problem(new) {
            return Err(OpError::Refused(format!(
                "the new password cannot be written to {} as plain text: {problem}; nothing was changed",
                cfg.path.display()
            )));
        }
    }
    let mut down = Vec::new();
    let mut dialled = Vec::new();
    for (i, d) in dial_all(endpoint, cfg).await.into_iter().enumerate() {
        match d {
            Ok(s) => dialled.push(s),
            Err(e) => down.push(format!("{} unreachable ({e})", cfg.servers[i].name)),
        }
    }
    if !down.is_empty() {
        return Err(OpError::Unavailable(format!(
            "rotate needs all four nodes: {}; nothing was changed",
            down.join("; ")
        )));
    }

    // Log in to each node with the old password, or (after an interrupted
    // rotation) the new one.
    let mut old_cache = KeyCache::default();
    let mut new_cache = KeyCache::default();
    let mut sessions: Vec<Option<Session>> = Vec::new();
    for s in dialled {
        let node = s.name.clone();
        let fail = |e: crate::net::NetError| {
            if e.is_code(ErrorCode::AuthFailed) {
                OpError::Open(OpenError::AuthFailed)
            } else {
                OpError::Node {
                    node: node.clone(),
                    source: e,
                }
            }
        };
        match login(&s, &user, old, &mut old_cache).await {
            Ok(_) => sessions.push(Some(s)),
            Err(e) if e.is_code(ErrorCode::AuthFailed) => {
                s.close();
                let again = dial(endpoint, s.node, &cfg.servers[s.node])
                    .await
                    .map_err(&fail)?;
                login(&again, &user, new, &mut new_cache)
                    .await
                    .map_err(&fail)?;
                sessions.push(Some(again));
            }
            Err(e) => return Err(fail(e)),
        }
    }

    let stored = read_records(&sessions).await;
    let mut generations = Vec::new();
    for (s, r) in sessions.iter().flatten().zip(stored.iter().flatten()) {
        match r {
            Ok(r) => generations.push(r.as_ref().map_or(0, |r| r.generation)),
            Err(e) => {
                return Err(OpError::Unavailable(format!(
                    "{}: cannot read the key record ({e}); nothing was changed",
                    s.name
                )))
            }
        }
    }

    // The master key, from whichever record one of the passwords opens.
    let master = match unlock(&user, &stored, old, &mut old_cache).await {
        Ok(Some((m, _))) => m,
        // No node has any record: the vault was never used, so a new master
        // key protects nothing yet. If any node reported a record, reading
        // failed somewhere: never replace a real master key.
        Ok(None) if generations.iter().all(|g| *g == 0) => MasterKey::generate()?,
        Ok(None) => {
            return Err(OpError::Unavailable(
                "could not read the key records; nothing was changed".into(),
            ))
        }
        Err(_) => match unlock(&user, &stored, new, &mut new_cache).await? {
            Some((m, _)) => m,
            None => return Err(OpError::Open(OpenError::AuthFailed)),
        },
    };

    let kdf = keys::new_kdf_params()?;
    let pw = new.clone();
    let k = kdf.clone();
    let new_keys = tokio::task::spawn_blocking(move || PasswordKeys::derive(pw.as_bytes(), &k))
        .await
        .map_err(|e| OpError::Unavailable(format!("key derivation failed: {e}")))??;
    let record = UserRecord {
        format: wire::STORAGE_FORMAT,
        generation: generations
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| OpError::Refused("key record generation exhausted".into()))?,
        wrapped_key: new_keys.wrap(&master, &user, &kdf)?,
        login_key: Some(new_keys.login_public_key()),
        kdf,
    };

    let mut set = JoinSet::new();
    for (s, gen) in sessions.iter().flatten().zip(generations) {
        let (s, record) = (s.clone(), record.clone());
        set.spawn(async move {
            let r = s
                .call(&Request::PutRecord {
                    expect_generation: gen,
                    record,
                })
                .await;
            (s.name.clone(), r)
        });
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((node, Ok(_))) => done.push(node),
            Ok((node, Err(e))) => failed.push(format!("{node}: {e}")),
            Err(e) => failed.push(e.to_string()),
        }
    }
    for s in sessions.iter().flatten() {
        s.close();
    }
    if !failed.is_empty() {
        return Err(OpError::Unavailable(format!(
            "rotation interrupted ({}); run rotate again with the same passwords to finish",
            failed.join("; ")
        )));
    }
    done.sort();

    let config_updated = cfg.password.is_some();
    if config_updated {
        config::rewrite_password(&cfg.path, new).map_err(|e| {
            OpError::Unavailable(format!(
                "password changed on every node, but {} could not be updated: {e}",
                cfg.path.display()
            ))
        })?;
    }
    Ok(RotateReport {
        nodes: done,
        config_updated,
    })
}
