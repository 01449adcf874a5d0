//! An open vault: sessions to the nodes that let the user in, and the
//! master key from the newest key record the password opens.
//!
//! [`Vault::open`] goes through the one guarded login ([`crate::login`]),
//! then [`crate::records`]: the newest trusted record is used (a first one
//! is made when no node has any), nodes that missed a change catch up, and
//! what was learned goes to the state file ([`crate::state`]) so no node
//! can later make this client go backwards.

use std::path::PathBuf;
use std::sync::Arc;

use quinn::Endpoint;
use thiserror::Error;
use wire::UserRecord;
use zeroize::Zeroizing;

use crate::config::ClientConfig;
use crate::crypto::keys::{KeyError, MasterKey};
use crate::layout::Redundancy;
use crate::login::{self, KeyRing, LoginReport, NodeLogin};
use crate::net::{Limits, Session};
use crate::records::{self, Found};
use crate::state::{StateError, StateStore};

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
    /// No node could be used.
    #[error("no node usable: {0}")]
    NoNodes(String),
    /// A key could not be derived or opened.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// A password change is in progress and must be finished first.
    #[error("a password change started by this client is not finished; run the rotation again with the same old and new password to finish it (state in {})", .state.display())]
    RotationPending {
        /// The state file.
        state: PathBuf,
    },
    /// The nodes' newest key record is older than one this client saw.
    #[error("the nodes' newest key record (generation {found}) is older than generation {seen} this client has seen: a node is replaying an old record, or the nodes were restored from a backup; if that is expected, remove {} and try again", .state.display())]
    Rollback {
        /// Generation this client saw before.
        seen: u64,
        /// Newest generation the nodes hold.
        found: u64,
        /// The state file.
        state: PathBuf,
    },
    /// The account's key record is in storage format 1 (Vault 0.1).
    #[error("the key record on {} is in storage format 1 (written by Vault 0.1), which this version does not read; see \"Upgrading from Vault 0.1\" in the README", .nodes.join(", "))]
    OldFormat {
        /// Nodes holding it.
        nodes: Vec<String>,
    },
    /// Records exist but none opens with this password.
    #[error("the key records on {0} do not open with this password (tampered with, or made with another password)")]
    BadRecords(String),
    /// A first record needs three nodes that all report having none.
    #[error("no node holds a key record for this account yet, and starting a new vault needs at least three nodes that all say so ({ready} usable)")]
    CreateNeedsQuorum {
        /// Nodes logged in.
        ready: usize,
    },
    /// Clients that created the vault at the same moment did not converge
    /// on one key record in time.
    #[error("other clients are creating this vault at the same moment and the nodes did not agree on one key record in time; try again")]
    Raced,
}

/// Options for [`Vault::open_with`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The state file (default: `<dfc.conf>.state`).
    pub state: Option<PathBuf>,
    /// Time limits for talking to nodes.
    pub limits: Limits,
}

impl OpenOptions {
    /// The state store these options select for `cfg`.
    pub fn state_store(&self, cfg: &ClientConfig) -> StateStore {
        match &self.state {
            Some(p) => StateStore::at(p.clone()),
            None => StateStore::beside(&cfg.path),
        }
    }
}

/// One node as the vault sees it.
struct NodeSlot {
    name: String,
    session: Option<Session>,
    login: NodeLogin,
}

/// An open vault. A cheap handle: clones share the sessions and keys, so
/// operations can run concurrently on one vault.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    user: String,
    nodes: Vec<NodeSlot>,
    master: MasterKey,
    record: UserRecord,
    /// How new files are stored (dfc.conf's `Redundancy`).
    redundancy: Redundancy,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("user", &self.inner.user)
            .field("generation", &self.inner.record.generation)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Dials, logs in and unwraps the master key, with default options.
    /// Fails with [`OpenError::AuthFailed`] when no node accepts the
    /// password.
    pub async fn open(
        endpoint: &Endpoint,
        cfg: &ClientConfig,
        password: &Zeroizing<String>,
    ) -> Result<Vault, OpenError> {
        Self::open_with(endpoint, cfg, password, &OpenOptions::default()).await
    }

    /// [`Vault::open`] with options.
    pub async fn open_with(
        endpoint: &Endpoint,
        cfg: &ClientConfig,
        password: &Zeroizing<String>,
        options: &OpenOptions,
    ) -> Result<Vault, OpenError> {
        let user = cfg.username.to_ascii_lowercase();
        let store = options.state_store(cfg);
        let mut state = store.load(&user)?;
        if state.pending_rotation.is_some() {
            return Err(OpenError::RotationPending {
                state: store.path().to_path_buf(),
            });
        }
        let mut ring = KeyRing::new(password, None);
        let attempt = login::Attempt {
            endpoint,
            cfg,
            user: &user,
            limits: options.limits,
            state: &state,
            state_path: store.path(),
            rotation: None,
        };
        let report = login::log_in(&attempt, &mut ring).await;
        if report.ready().next().is_none() {
            return Err(no_session_error(&report));
        }
        let found = records::newest(&report, &mut ring, &user, &state, store.path()).await;
        let trusted = match found {
            // A first record on only some nodes may still lose a race
            // between clients creating the vault: settle it before use.
            Ok(Found::Trusted(t)) if records::racing(&report, &t.record) => {
                match records::settle(&report, &mut ring, &user, t).await {
                    Ok(t) => t,
                    Err(e) => {
                        report.close();
                        return Err(e);
                    }
                }
            }
            Ok(Found::Trusted(t)) => {
                records::spread(&report, &t.record).await;
                t
            }
            Ok(Found::Nothing) => match records::create(&report, &mut ring, &user).await {
                Ok(t) => t,
                Err(e) => {
                    report.close();
                    return Err(e);
                }
            },
            Err(e) => {
                report.close();
                return Err(e);
            }
        };
        state.learn(&trusted.record);
        store.save_learned(&user, &state)?;
        Ok(Vault::from_login(
            user,
            report,
            trusted.master,
            trusted.record,
            cfg.redundancy,
        ))
    }

    pub(crate) fn from_login(
        user: String,
        report: LoginReport,
        master: MasterKey,
        record: UserRecord,
        redundancy: Redundancy,
    ) -> Vault {
        let nodes = report
            .names
            .into_iter()
            .zip(report.sessions)
            .zip(report.outcomes)
            .map(|((name, session), login)| NodeSlot {
                name,
                session,
                login,
            })
            .collect();
        Vault {
            inner: Arc::new(Inner {
                user,
                nodes,
                master,
                record,
                redundancy,
            }),
        }
    }

    /// How new files are stored: dfc.conf's `Redundancy` (or its default
    /// for the number of servers).
    pub fn redundancy(&self) -> Redundancy {
        self.inner.redundancy
    }

    /// The node called `name` in dfc.conf (case-insensitively): where a
    /// manifest says a shard is. `None` for a node no longer configured.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.inner
            .nodes
            .iter()
            .position(|n| n.name.eq_ignore_ascii_case(name))
    }

    /// The lower-case user name.
    pub fn user(&self) -> &str {
        &self.inner.user
    }

    /// The master key (derives ids and keys; never leaves the client).
    pub fn master(&self) -> &MasterKey {
        &self.inner.master
    }

    /// The newest key record.
    pub fn record(&self) -> &UserRecord {
        &self.inner.record
    }

    /// Node names, in dfc.conf order.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.inner.nodes.iter().map(|n| n.name.as_str())
    }

    /// Name of node `i` (0-based).
    pub fn node_name(&self, i: usize) -> &str {
        &self.inner.nodes[i].name
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.inner.nodes.len()
    }

    /// How the login went with node `i`.
    pub fn node_login(&self, i: usize) -> &NodeLogin {
        &self.inner.nodes[i].login
    }

    /// Names of the nodes that are not usable, with the reason.
    pub fn unavailable(&self) -> Vec<(String, String)> {
        self.inner
            .nodes
            .iter()
            .filter_map(|n| n.login.reason().map(|why| (n.name.clone(), why)))
            .collect()
    }

    /// Why node `i` cannot be used, in words: what its login said (it may
    /// have refused the password, or been skipped on purpose), not merely
    /// "unreachable"; or "connection lost" for a node that died since.
    pub fn why_unusable(&self, i: usize) -> String {
        match self.inner.nodes.get(i) {
            Some(n) => n.login.reason().unwrap_or_else(|| "connection lost".into()),
            None => "no such node".into(),
        }
    }

    /// The session of node `i`, if usable.
    pub fn session(&self, i: usize) -> Option<&Session> {
        self.inner.nodes.get(i).and_then(|n| n.session.as_ref())
    }

    /// All usable sessions.
    pub fn ready(&self) -> impl Iterator<Item = &Session> {
        self.inner.nodes.iter().filter_map(|n| n.session.as_ref())
    }

    /// Closes every session.
    pub fn close(&self) {
        for s in self.ready() {
            s.close();
        }
    }
}

/// The error when no node could be logged in to.
pub(crate) fn no_session_error(report: &LoginReport) -> OpenError {
    if report.outcomes.contains(&NodeLogin::Refused) {
        return OpenError::AuthFailed;
    }
    if let Some((i, secs)) = report
        .outcomes
        .iter()
        .enumerate()
        .find_map(|(i, o)| match o {
            NodeLogin::Throttled(s) => Some((i, *s)),
            _ => None,
        })
    {
        return OpenError::Throttled {
            node: report.names[i].clone(),
            secs,
        };
    }
    let why: Vec<String> = report
        .outcomes
        .iter()
        .zip(&report.names)
        .map(|(o, n)| format!("{n} {}", o.reason().unwrap_or_default()))
        .collect();
    OpenError::NoNodes(why.join("; "))
}
