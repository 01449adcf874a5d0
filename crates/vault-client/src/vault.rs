//! Opening a vault: dial the four nodes in parallel, log in to each, fetch
//! the key records and unwrap the master key.
//!
//! The first time a user opens the vault no node has a record: the client
//! makes a random master key, wraps it under the password and stores the
//! record on every reachable node. A node that lacks the newest record (it
//! was down when the record was made or changed) is brought up to date as
//! soon as the client logs in to it.

use std::collections::HashMap;

use quinn::Endpoint;
use thiserror::Error;
use tokio::task::JoinSet;
use wire::{AuthScheme, ErrorCode, KdfParams, Proof, Request, Response, UserRecord};
use zeroize::Zeroizing;

use crate::config::ClientConfig;
use crate::crypto::keys::{self, KeyError, MasterKey, PasswordKeys};
use crate::net::{self, NetError, Session};

/// The message every authentication failure prints (the classic client's).
pub const AUTH_FAILED_MESSAGE: &str = "Invalid Username/Password. Please try again.";

/// Why a vault could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// Unknown user or wrong password.
    #[error("Invalid Username/Password. Please try again.")]
    AuthFailed,
    /// Nodes are refusing logins for a while after failed attempts.
    #[error("too many failed logins; {node} asks to retry in {secs} s")]
    Throttled {
        /// The node that refused.
        node: String,
        /// Seconds to wait.
        secs: u64,
    },
    /// No node could be reached.
    #[error("no node reachable: {0}")]
    NoNodes(String),
    /// A key record could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Talking to the nodes failed.
    #[error("{node}: {source}")]
    Net {
        /// The node.
        node: String,
        /// What went wrong.
        source: NetError,
    },
}

/// What happened when logging in to one node.
#[derive(Debug)]
pub enum NodeState {
    /// Logged in.
    Ready,
    /// Could not be reached (or broke the protocol).
    Down(String),
    /// Refused the password.
    Refused,
    /// Refusing logins for now.
    Throttled(u64),
}

/// Password-derived keys, memoised per Argon2 parameter set (each run costs
/// 64 MiB and a fraction of a second).
#[derive(Default)]
pub struct KeyCache {
    keys: HashMap<Vec<u8>, std::sync::Arc<PasswordKeys>>,
}

fn kdf_cache_key(k: &KdfParams) -> Vec<u8> {
    let mut v = k.salt.clone();
    for x in [k.m_kib, k.t, k.p] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

impl KeyCache {
    /// Derives (once) the keys for `password` under `params`.
    pub async fn get(
        &mut self,
        password: &Zeroizing<String>,
        params: &KdfParams,
    ) -> Result<std::sync::Arc<PasswordKeys>, KeyError> {
        let key = kdf_cache_key(params);
        if let Some(k) = self.keys.get(&key) {
            return Ok(k.clone());
        }
        // A hostile node could hand out many different salts; two honest
        // ones (before and after a rotation) is all a login ever needs.
        if self.keys.len() >= 3 {
            return Err(KeyError::Decryption);
        }
        keys::check_cost(params)?;
        let pw = password.clone();
        let p = params.clone();
        let derived = tokio::task::spawn_blocking(move || PasswordKeys::derive(pw.as_bytes(), &p))
            .await
            .map_err(|_| KeyError::Decryption)??;
        let derived = std::sync::Arc::new(derived);
        self.keys.insert(key, derived.clone());
        Ok(derived)
    }
}

/// Dials every node of the config at once.
pub async fn dial_all(endpoint: &Endpoint, cfg: &ClientConfig) -> Vec<Result<Session, NetError>> {
    let mut set = JoinSet::new();
    for (i, server) in cfg.servers.iter().enumerate() {
        let endpoint = endpoint.clone();
        let server = server.clone();
        set.spawn(async move { (i, net::dial(&endpoint, i, &server).await) });
    }
    let mut out: Vec<Option<Result<Session, NetError>>> =
        (0..cfg.servers.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(NetError::Connection("dial task failed".into()))))
        .collect()
}

/// Starts a login: the node's challenge and the scheme it announces.
pub async fn hello(session: &Session, user: &str) -> Result<(Vec<u8>, AuthScheme), NetError> {
    let resp = session
        .call(&Request::Hello {
            user: user.to_string(),
        })
        .await?;
    match resp {
        Response::Challenge { challenge, scheme } => Ok((challenge, scheme)),
        other => Err(NetError::Protocol(format!(
            "expected Challenge, got {other:?}"
        ))),
    }
}

/// Finishes a login started by [`hello`].
pub async fn prove(
    session: &Session,
    user: &str,
    challenge: &[u8],
    scheme: &AuthScheme,
    password: &Zeroizing<String>,
    cache: &mut KeyCache,
) -> Result<(), NetError> {
    let proof = match scheme {
        AuthScheme::Legacy => Proof::LegacyMd5(keys::md5_of(password.as_bytes()).to_vec()),
        AuthScheme::Upgraded(params) => {
            let k = cache.get(password, params).await.map_err(|e| match e {
                KeyError::UnacceptableCost { .. } => NetError::Protocol(e.to_string()),
                _ => NetError::Node {
                    code: ErrorCode::AuthFailed,
                    message: "invalid username or password".into(),
                },
            })?;
            Proof::Signature(k.sign_login(&session.name, user, challenge))
        }
    };
    match session
        .call(&Request::Login {
            user: user.to_string(),
            proof,
        })
        .await?
    {
        Response::LoggedIn => Ok(()),
        other => Err(NetError::Protocol(format!(
            "expected LoggedIn, got {other:?}"
        ))),
    }
}

/// Logs in to one node with `password`, whatever scheme it announces.
/// Returns that scheme.
pub async fn login(
    session: &Session,
    user: &str,
    password: &Zeroizing<String>,
    cache: &mut KeyCache,
) -> Result<AuthScheme, NetError> {
    let (challenge, scheme) = hello(session, user).await?;
    prove(session, user, &challenge, &scheme, password, cache).await?;
    Ok(scheme)
}

fn state_of(e: NetError) -> NodeState {
    match e {
        NetError::Node {
            code: ErrorCode::AuthFailed,
            ..
        } => NodeState::Refused,
        NetError::Node {
            code: ErrorCode::Throttled(ms),
            ..
        } => NodeState::Throttled(ms.div_ceil(1000)),
        other => NodeState::Down(other.to_string()),
    }
}

/// An open vault: sessions to the nodes that let us in, and the master key.
pub struct Vault {
    /// Lower-case user name.
    pub user: String,
    /// Node names, dfc.conf order.
    pub names: Vec<String>,
    /// One entry per node; `None` where the node is unusable.
    pub sessions: Vec<Option<Session>>,
    /// What happened with each node.
    pub states: Vec<NodeState>,
    /// The unwrapped master key.
    pub master: MasterKey,
    /// The newest key record.
    pub record: UserRecord,
}

impl Vault {
    /// Dials, logs in and unwraps the master key. Fails with
    /// [`OpenError::AuthFailed`] when no node accepts the password.
    pub async fn open(
        endpoint: &Endpoint,
        cfg: &ClientConfig,
        password: &Zeroizing<String>,
    ) -> Result<Vault, OpenError> {
        let user = cfg.username.to_ascii_lowercase();
        let mut cache = KeyCache::default();
        let dialled = dial_all(endpoint, cfg).await;
        let mut sessions = Vec::new();
        let mut states = Vec::new();
        // Every node announces its scheme before any proof is sent: if one
        // node knows the account as upgraded, a node claiming it is legacy
        // is lying (or stale) and must not receive an MD5 of the password,
        // which it could crack offline.
        let mut hellos = Vec::new();
        for d in dialled {
            hellos.push(match d {
                Ok(s) => match hello(&s, &user).await {
                    Ok(h) => Ok((s, h)),
                    Err(e) => {
                        s.close();
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            });
        }
        let upgraded_kdf = hellos.iter().find_map(|h| match h {
            Ok((_, (_, AuthScheme::Upgraded(k)))) => Some(k.clone()),
            _ => None,
        });
        for h in hellos {
            let (s, (challenge, scheme)) = match h {
                Ok(x) => x,
                Err(e) => {
                    sessions.push(None);
                    states.push(NodeState::Down(e.to_string()));
                    continue;
                }
            };
            if scheme == AuthScheme::Legacy && upgraded_kdf.is_some() {
                s.close();
                sessions.push(None);
                states.push(NodeState::Down(
                    "offers legacy login for an account other nodes have upgraded; not sending it the password's MD5".into(),
                ));
                continue;
            }
            match prove(&s, &user, &challenge, &scheme, password, &mut cache).await {
                Ok(()) => {
                    sessions.push(Some(s));
                    states.push(NodeState::Ready);
                }
                Err(e) => {
                    s.close();
                    sessions.push(None);
                    states.push(state_of(e));
                }
            }
        }
        let names: Vec<String> = cfg.servers.iter().map(|s| s.name.clone()).collect();
        if sessions.iter().all(Option::is_none) {
            return Err(no_session_error(&names, &states));
        }
        let stored = read_records(&sessions).await;
        let (master, record, created) = match unlock(&user, &stored, password, &mut cache).await? {
            Some((master, record)) => (master, record, false),
            None => {
                let (master, record) =
                    create_record(&user, &sessions, upgraded_kdf, password, &mut cache).await?;
                (master, record, true)
            }
        };
        let vault = Vault {
            user,
            names,
            sessions,
            states,
            master,
            record,
        };
        if !created {
            vault.sync_records(&stored).await;
        }
        Ok(vault)
    }

    /// Names of the nodes that are not usable, with the reason.
    pub fn unavailable(&self) -> Vec<(String, String)> {
        self.states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let why = match s {
                    NodeState::Ready => return None,
                    NodeState::Down(e) => format!("unreachable ({e})"),
                    NodeState::Refused => "refused the password".to_string(),
                    NodeState::Throttled(s) => format!("throttling logins (retry in {s} s)"),
                };
                Some((self.names[i].clone(), why))
            })
            .collect()
    }

    /// The session of node `i`, if usable.
    pub fn session(&self, i: usize) -> Option<&Session> {
        self.sessions.get(i).and_then(Option::as_ref)
    }

    /// All usable sessions.
    pub fn ready(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter().flatten()
    }

    /// Gives nodes whose record is older than ours (or missing) the newest.
    async fn sync_records(&self, stored: &[Option<Result<Option<UserRecord>, NetError>>]) {
        for (s, current) in self.sessions.iter().zip(stored) {
            let (Some(s), Some(Ok(current))) = (s, current) else {
                continue;
            };
            let gen = current.as_ref().map_or(0, |r| r.generation);
            if gen < self.record.generation {
                let put = Request::PutRecord {
                    expect_generation: gen,
                    record: self.record.clone(),
                };
                if let Err(e) = s.call(&put).await {
                    tracing::warn!(node = %s.name, "could not update key record: {e}");
                }
            }
        }
    }

    /// Closes every session.
    pub fn close(&self) {
        for s in self.ready() {
            s.close();
        }
    }
}

fn no_session_error(names: &[String], states: &[NodeState]) -> OpenError {
    if states.iter().any(|s| matches!(s, NodeState::Refused)) {
        return OpenError::AuthFailed;
    }
    if let Some((i, secs)) = states.iter().enumerate().find_map(|(i, s)| match s {
        NodeState::Throttled(secs) => Some((i, *secs)),
        _ => None,
    }) {
        return OpenError::Throttled {
            node: names[i].clone(),
            secs,
        };
    }
    let why: Vec<String> = states
        .iter()
        .zip(names)
        .map(|(s, n)| match s {
            NodeState::Down(e) => format!("{n}: {e}"),
            _ => n.clone(),
        })
        .collect();
    OpenError::NoNodes(why.join("; "))
}

/// Reads every reachable node's record and unwraps the newest one the
/// password opens. `Ok(None)` when no node has a record yet.
/// Each node's stored key record, in node order: `None` where there is no
/// session, `Some(Err)` where reading it failed.
pub async fn read_records(
    sessions: &[Option<Session>],
) -> Vec<Option<Result<Option<UserRecord>, NetError>>> {
    let mut out = Vec::with_capacity(sessions.len());
    for s in sessions {
        let Some(s) = s else {
            out.push(None);
            continue;
        };
        out.push(Some(match s.call(&Request::GetRecord).await {
            Ok(Response::Record(r)) => Ok(r),
            Ok(other) => Err(NetError::Protocol(format!(
                "expected Record, got {other:?}"
            ))),
            Err(e) => Err(e),
        }));
    }
    out
}

/// Unwraps the newest record in `stored` (from [`read_records`]) that the
/// password opens. `Ok(None)` when no node has a record.
pub async fn unlock(
    user: &str,
    stored: &[Option<Result<Option<UserRecord>, NetError>>],
    password: &Zeroizing<String>,
    cache: &mut KeyCache,
) -> Result<Option<(MasterKey, UserRecord)>, OpenError> {
    let mut records: Vec<UserRecord> = stored
        .iter()
        .flatten()
        .filter_map(|r| r.as_ref().ok().cloned().flatten())
        .collect();
    if records.is_empty() {
        return Ok(None);
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.generation));
    records.dedup();
    let mut last_err = OpenError::AuthFailed;
    for r in records {
        let keys = match cache.get(password, &r.kdf).await {
            Ok(k) => k,
            Err(e) => {
                last_err = e.into();
                continue;
            }
        };
        match keys.unwrap(&r.wrapped_key, user, &r.kdf) {
            Ok(master) => return Ok(Some((master, r))),
            Err(_) => last_err = OpenError::AuthFailed,
        }
    }
    Err(last_err)
}

/// Makes the vault's master key and stores its record on every reachable
/// node. Upgraded accounts (made by `vault-node user add`) keep their salt,
/// so the record's key-encryption key and login key share one Argon2 run.
async fn create_record(
    user: &str,
    sessions: &[Option<Session>],
    upgraded_kdf: Option<KdfParams>,
    password: &Zeroizing<String>,
    cache: &mut KeyCache,
) -> Result<(MasterKey, UserRecord), OpenError> {
    let (kdf, upgraded) = match upgraded_kdf {
        Some(k) => (k, true),
        None => (keys::new_kdf_params()?, false),
    };
    let keys = cache.get(password, &kdf).await?;
    let master = MasterKey::generate()?;
    let record = UserRecord {
        format: wire::STORAGE_FORMAT,
        generation: 1,
        wrapped_key: keys.wrap(&master, user, &kdf)?,
        login_key: upgraded.then(|| keys.login_public_key()),
        kdf,
    };
    let mut stored = 0;
    for s in sessions.iter().flatten() {
        let put = Request::PutRecord {
            expect_generation: 0,
            record: record.clone(),
        };
        match s.call(&put).await {
            Ok(_) => stored += 1,
            Err(e) if e.is_code(ErrorCode::Conflict) => {
                // Another client made the record first: use theirs.
                return unlock(user, &read_records(sessions).await, password, cache)
                    .await?
                    .ok_or(OpenError::AuthFailed);
            }
            Err(e) => tracing::warn!(node = %s.name, "could not store key record: {e}"),
        }
    }
    if stored == 0 {
        return Err(OpenError::NoNodes("no node accepted the key record".into()));
    }
    Ok((master, record))
}
