//! Logging in to the nodes: the one guarded way in, used by opening a vault
//! and by `rotate` alike.
//!
//! 1. Every node is dialled and asked `Hello` at once; each announces a
//!    scheme: `Legacy` (MD5 proof) or `Upgraded(Argon2id parameters)`.
//! 2. Nodes announcing `Upgraded` get an Ed25519 signature of their own
//!    challenge, made with the key the password derives under the announced
//!    parameters. A signature is bound to that node and that challenge and
//!    reveals nothing a node could replay or use to open the vault.
//! 3. Their key records are read and verified with the password
//!    ([`crate::records`]); a verified record with a login key is proof
//!    that the account is upgraded.
//! 4. Nodes announcing `Legacy` get an MD5 of the password, which is
//!    password-equivalent, only when nothing says the account is upgraded:
//!    not when this client's state file says so, not when a verified record
//!    from this run says so, and only when a majority of the *configured*
//!    nodes (3 of 4: `n/2 + 1` of the dfc.conf servers, at least two), not
//!    merely of those that answered, announce `Legacy`. So no pair of
//!    nodes, even with the other two unreachable, can phish the MD5 of an
//!    upgraded account. The price: a legacy account needs three of four
//!    nodes that announce `Legacy` to log in.
//!
//! Once the state file knows the account's Argon2id parameters and salt, a
//! node announcing others is skipped (no Argon2 run for them, nothing
//! signed under them), unless a pending rotation's record carries them or
//! a majority of the configured nodes announce exactly them (the password
//! was changed on another machine). So a node cannot have users sign under
//! a salt it chose to precompute one dictionary for all of them.
//!
//! A node answering `Throttled` is waited for (the time it asks, at most
//! [`MAX_THROTTLE_WAIT`] and the request time limit in all per node, at
//! most [`MAX_THROTTLE_RETRIES`] times) and asked again, while the other
//! nodes' logins go on.
//!
//! During a password change the old password's MD5 also goes to the nodes
//! the rotation recorded as still holding the legacy credential (they hold
//! that MD5 in `dfs.conf` already); the new password's MD5 is never sent.

use std::sync::Arc;
use std::time::Duration;

use quinn::Endpoint;
use subtle::ConstantTimeEq;
use tokio::task::JoinSet;
use wire::{AuthScheme, ErrorCode, KdfParams, Proof, Request, Response, UserRecord};
use zeroize::Zeroizing;

use crate::config::ClientConfig;
use crate::crypto::keys::{self, KeyError, MasterKey, PasswordKeys};
use crate::net::{self, unexpected, Limits, NetError, Session};
use crate::state::{AccountState, KdfState};

/// Most distinct Argon2id parameter sets derived per password in one run:
/// a hostile node must not make the client run Argon2 without end. Two
/// honest ones (before and after a rotation) are all a login needs; a
/// first-use race between clients of a legacy account (each first record
/// has its own salt) may show one per node besides this client's own.
const MAX_KDF_SETS: usize = 6;

/// Most time spent waiting out one node's throttle in one login (also
/// never more than the request time limit).
pub const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(15);

/// Most logins retried on one node after `Throttled` answers.
pub const MAX_THROTTLE_RETRIES: u32 = 4;

/// Slack added to a node's announced wait, so the retry is not early.
const THROTTLE_SLACK: Duration = Duration::from_millis(20);

/// How many of `n` configured nodes are a majority (`n/2 + 1`).
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Which of the user's passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The password given (the old one during a rotation).
    Current,
    /// The new password of a rotation.
    New,
}

/// Why keys could not be had for a parameter set.
#[derive(Debug)]
pub enum RingError {
    /// Costs outside the accepted window, or another key failure.
    Key(KeyError),
    /// Too many distinct parameter sets asked for already.
    TooMany,
    /// No such password in this ring.
    NoPassword,
}

/// Keys derived from the user's password(s), each Argon2id parameter set
/// once (a run costs 64 MiB and a fraction of a second).
pub struct KeyRing {
    current: Zeroizing<String>,
    new: Option<Zeroizing<String>>,
    derived: Vec<(Which, KdfParams, Arc<PasswordKeys>)>,
}

impl KeyRing {
    /// Whether the current password is the new one of a rotation.
    fn current_is_new(&self) -> bool {
        self.new
            .as_ref()
            .is_some_and(|n| bool::from(n.as_bytes().ct_eq(self.current.as_bytes())))
    }

    /// A ring for `current` and, during a rotation, `new`.
    pub fn new(current: &Zeroizing<String>, new: Option<&Zeroizing<String>>) -> Self {
        KeyRing {
            current: current.clone(),
            new: new.cloned(),
            derived: Vec::new(),
        }
    }

    /// The password `which`.
    pub fn password(&self, which: Which) -> Option<&Zeroizing<String>> {
        match which {
            Which::Current => Some(&self.current),
            Which::New => self.new.as_ref(),
        }
    }

    /// The keys of password `which` under `kdf`, derived once.
    pub async fn get(
        &mut self,
        which: Which,
        kdf: &KdfParams,
    ) -> Result<Arc<PasswordKeys>, RingError> {
        if let Some((_, _, k)) = self
            .derived
            .iter()
            .find(|(w, p, _)| *w == which && p == kdf)
        {
            return Ok(k.clone());
        }
        if self.derived.iter().filter(|(w, _, _)| *w == which).count() >= MAX_KDF_SETS {
            return Err(RingError::TooMany);
        }
        keys::check_cost(kdf).map_err(RingError::Key)?;
        let password = self.password(which).ok_or(RingError::NoPassword)?.clone();
        let params = kdf.clone();
        let derived =
            tokio::task::spawn_blocking(move || PasswordKeys::derive(password.as_bytes(), &params))
                .await
                .map_err(|_| RingError::Key(KeyError::Decryption))?
                .map_err(RingError::Key)?;
        let derived = Arc::new(derived);
        self.derived.push((which, kdf.clone(), derived.clone()));
        Ok(derived)
    }

    /// Opens `record` with whichever password does: the master key and
    /// which password opened it. Format-1 records give `OldFormat`.
    pub async fn open_record(
        &mut self,
        record: &UserRecord,
        user: &str,
    ) -> Result<(MasterKey, Which), KeyError> {
        if record.format != wire::STORAGE_FORMAT {
            return Err(KeyError::OldFormat(record.format));
        }
        let mut last = KeyError::Decryption;
        for which in [Which::Current, Which::New] {
            if self.password(which).is_none() {
                continue;
            }
            match self.get(which, &record.kdf).await {
                Ok(k) => match k.open_record(record, user) {
                    Ok(master) => return Ok((master, which)),
                    Err(e) => last = e,
                },
                Err(RingError::Key(e)) => last = e,
                Err(_) => {}
            }
        }
        Err(last)
    }
}

/// How a node was logged in to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// MD5 of the (current) password.
    Md5,
    /// Signature with the key of this password.
    Signature(Which),
}

/// What happened when logging in to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeLogin {
    /// Logged in.
    Ready(Method),
    /// Could not be reached, or broke the protocol.
    Down(String),
    /// Refused the password.
    Refused,
    /// Refusing logins for now (seconds to wait).
    Throttled(u64),
    /// The client chose not to send this node a proof (the reason says why).
    Withheld(String),
}

impl NodeLogin {
    /// Why the node is not usable, for messages; `None` when it is.
    pub fn reason(&self) -> Option<String> {
        match self {
            NodeLogin::Ready(_) => None,
            NodeLogin::Down(e) => Some(format!("unreachable ({e})")),
            NodeLogin::Refused => Some("refused the password".into()),
            NodeLogin::Throttled(s) => Some(format!("throttling logins (retry in {s} s)")),
            NodeLogin::Withheld(why) => Some(why.clone()),
        }
    }
}

/// A rotation in progress, as the login needs to know it.
#[derive(Debug, Clone, Default)]
pub struct RotationInfo {
    /// The new key record of a pending rotation: nodes announcing its
    /// parameters have switched and take the new password's signature.
    pub pending: Option<UserRecord>,
    /// Nodes that held the legacy credential when the rotation began.
    pub legacy_nodes: Vec<String>,
}

/// Everything the login learned, node by node (dfc.conf order).
pub struct LoginReport {
    /// Node names.
    pub names: Vec<String>,
    /// Sessions of the nodes logged in to.
    pub sessions: Vec<Option<Session>>,
    /// What happened with each node.
    pub outcomes: Vec<NodeLogin>,
    /// The scheme each node announced.
    pub schemes: Vec<Option<AuthScheme>>,
    /// The key record each logged-in node holds (`Some(Ok(None))`: none).
    pub records: Vec<Option<Result<Option<UserRecord>, NetError>>>,
}

impl LoginReport {
    /// Sessions of the nodes logged in to.
    pub fn ready(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter().flatten()
    }

    /// Closes every session.
    pub fn close(&self) {
        for s in self.ready() {
            s.close();
        }
    }
}

/// A node between `Hello` and `Login`.
struct Pending {
    session: Session,
    challenge: Vec<u8>,
}

/// What a login needs to know.
pub struct Attempt<'a> {
    /// The client endpoint (trusting the cluster CA).
    pub endpoint: &'a Endpoint,
    /// The nodes.
    pub cfg: &'a ClientConfig,
    /// The lower-case user name.
    pub user: &'a str,
    /// Time limits.
    pub limits: Limits,
    /// What this client learned before.
    pub state: &'a AccountState,
    /// Where that is kept (for messages).
    pub state_path: &'a std::path::Path,
    /// Set by `rotate` only.
    pub rotation: Option<&'a RotationInfo>,
}

/// Logs in to every node as the attempt's user under the downgrade guard,
/// and reads each logged-in node's key record.
pub async fn log_in(attempt: &Attempt<'_>, ring: &mut KeyRing) -> LoginReport {
    let Attempt {
        endpoint,
        cfg,
        user,
        limits,
        state,
        state_path,
        rotation,
    } = *attempt;
    let n = cfg.servers.len();
    let mut report = LoginReport {
        names: cfg.servers.iter().map(|s| s.name.clone()).collect(),
        sessions: (0..n).map(|_| None).collect(),
        outcomes: vec![NodeLogin::Down("not tried".into()); n],
        schemes: vec![None; n],
        records: (0..n).map(|_| None).collect(),
    };
    let mut pending: Vec<Option<Pending>> = (0..n).map(|_| None).collect();

    // 1. Dial and hello, every node at once.
    let mut set = JoinSet::new();
    for (i, server) in cfg.servers.iter().enumerate() {
        let (endpoint, server, user) = (endpoint.clone(), server.clone(), user.to_string());
        set.spawn(async move {
            let attempt = async {
                let session = net::dial(&endpoint, i, &server, limits).await?;
                match hello(&session, &user).await {
                    Ok((challenge, scheme)) => Ok((session, challenge, scheme)),
                    Err(e) => {
                        session.close();
                        Err(e)
                    }
                }
            };
            attempt.await.map(|x| (i, x)).map_err(|e| (i, e))
        });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok((i, (session, challenge, scheme)))) => {
                report.schemes[i] = Some(scheme);
                pending[i] = Some(Pending { session, challenge });
            }
            Ok(Err((i, e))) => report.outcomes[i] = NodeLogin::Down(e.to_string()),
            Err(e) => tracing::warn!("dial task failed: {e}"),
        }
    }

    // 2. Signatures for the nodes announcing the upgraded login, under the
    //    parameters this client knows (or that are explained).
    let mut proofs: Vec<(usize, Pending, Prover, Method)> = Vec::new();
    for (i, slot) in pending.iter_mut().enumerate() {
        let Some(AuthScheme::Upgraded(kdf)) = report.schemes[i].clone() else {
            continue;
        };
        let Some(p) = slot.take() else { continue };
        let rotating_to = rotation
            .and_then(|r| r.pending.as_ref())
            .is_some_and(|new| new.kdf == kdf);
        let which = if rotating_to {
            Which::New
        } else {
            Which::Current
        };
        if let Err(e) = keys::check_cost(&kdf) {
            p.session.close();
            report.outcomes[i] = NodeLogin::Withheld(format!(
                "announces unusable key-derivation parameters ({e})"
            ));
            continue;
        }
        if !rotating_to && !kdf_explained(state, &report.schemes, &kdf) {
            p.session.close();
            report.outcomes[i] = NodeLogin::Withheld(format!(
                "announces key parameters that differ from the ones this client knows for {user}; skipped (if the password was changed on another machine and most nodes agree, this resolves itself; otherwise remove {} to trust the nodes again)",
                state_path.display()
            ));
            continue;
        }
        match ring.get(which, &kdf).await {
            Ok(keys) => {
                proofs.push((i, p, Prover::Sign(keys), Method::Signature(which)));
            }
            Err(e) => {
                p.session.close();
                report.outcomes[i] = NodeLogin::Withheld(match e {
                    RingError::Key(e) => {
                        format!("announces unusable key-derivation parameters ({e})")
                    }
                    _ => {
                        "announces more sets of key-derivation parameters than a login needs".into()
                    }
                });
            }
        }
    }
    prove_all(&mut report, proofs, user, limits).await;
    fetch_records(&mut report, |m| matches!(m, Method::Signature(_))).await;

    // 3. Evidence that the account is upgraded, from records that open.
    let mut evidence = false;
    for i in 0..n {
        if let Some(Ok(Some(record))) = &report.records[i] {
            if record.login_key.is_some() && ring.open_record(record, user).await.is_ok() {
                evidence = true;
            }
        }
    }

    // 4. MD5 for the nodes announcing the legacy login, when it is safe.
    let legacy = report
        .schemes
        .iter()
        .flatten()
        .filter(|s| **s == AuthScheme::Legacy)
        .count();
    // A majority of the configured nodes, not of those that answered: two
    // nodes claiming `Legacy` while the others are unreachable get nothing.
    let needed = majority(n).max(2);
    let mut proofs = Vec::new();
    for (i, slot) in pending.iter_mut().enumerate() {
        if report.schemes[i] != Some(AuthScheme::Legacy) {
            continue;
        }
        let Some(p) = slot.take() else { continue };
        // A node that had the legacy login when a pending rotation began
        // still takes the old password's MD5; never the new one's.
        let exempt = rotation
            .is_some_and(|r| r.pending.is_some() && r.legacy_nodes.contains(&report.names[i]))
            && !ring.current_is_new();
        // What such a node most likely is: one that lost its key records.
        let replaced = "a node replaced, or restored, without its key records does this: copy <root>/.vault/records/ from a healthy node to its root and restart it";
        let refusal = if exempt {
            None
        } else if state.upgraded {
            Some(format!(
                "announces the legacy login for an account this client knows is upgraded; not sending it an MD5 of the password ({replaced}; if the account really went back to the legacy login, remove {})",
                state_path.display()
            ))
        } else if evidence {
            Some(format!("announces the legacy login while other nodes hold an upgraded key record; not sending it an MD5 of the password ({replaced})"))
        } else if legacy < needed {
            Some(format!(
                "announces the legacy login, but only {legacy} of the {n} configured nodes do; an MD5 of the password goes out only when a majority of the configured nodes ({needed} of {n}) announce the legacy login, so fewer nodes cannot obtain it"
            ))
        } else {
            None
        };
        match refusal {
            Some(why) => {
                p.session.close();
                report.outcomes[i] = NodeLogin::Withheld(why);
            }
            None => {
                let md5 = Zeroizing::new(keys::md5_of(ring.current.as_bytes()).to_vec());
                proofs.push((i, p, Prover::Md5(md5), Method::Md5));
            }
        }
    }
    prove_all(&mut report, proofs, user, limits).await;
    fetch_records(&mut report, |m| m == Method::Md5).await;
    report
}

/// Starts a login: the node's challenge and the scheme it announces.
async fn hello(session: &Session, user: &str) -> Result<(Vec<u8>, AuthScheme), NetError> {
    let resp = session
        .call_login(&Request::Hello {
            user: user.to_string(),
        })
        .await?;
    match resp {
        Response::Challenge { challenge, scheme } => Ok((challenge, scheme)),
        other => Err(unexpected("Challenge", &other)),
    }
}

/// Whether a node announcing `kdf` may be sent a signature under it: the
/// state file knows no parameters for the account, or these are them, or a
/// majority of the configured nodes announce exactly these (the password
/// was changed elsewhere; no pair of nodes can make that so).
fn kdf_explained(state: &AccountState, schemes: &[Option<AuthScheme>], kdf: &KdfParams) -> bool {
    let Some(known) = &state.kdf else {
        return true;
    };
    if *known == KdfState::of(kdf) {
        return true;
    }
    let agreeing = schemes
        .iter()
        .filter(|s| matches!(s, Some(AuthScheme::Upgraded(k)) if k == kdf))
        .count();
    agreeing >= majority(schemes.len())
}

/// How to prove the password to one node (again, after a throttle).
enum Prover {
    /// The MD5 of the current password.
    Md5(Zeroizing<Vec<u8>>),
    /// Signatures with these keys.
    Sign(Arc<PasswordKeys>),
}

impl Prover {
    fn proof(&self, node: &str, user: &str, challenge: &[u8]) -> Proof {
        match self {
            Prover::Md5(md5) => Proof::LegacyMd5(md5.to_vec()),
            Prover::Sign(keys) => Proof::Signature(keys.sign_login(node, user, challenge)),
        }
    }
}

/// Logs in to one node, waiting out `Throttled` answers within the
/// budget: each retry starts with a new `Hello` on the same connection,
/// which must announce the same scheme as before.
async fn prove_one(
    session: &Session,
    mut challenge: Vec<u8>,
    scheme: &AuthScheme,
    prover: &Prover,
    user: &str,
    budget: Duration,
) -> Result<Response, NetError> {
    let mut waited = Duration::ZERO;
    for retry in 0..=MAX_THROTTLE_RETRIES {
        let proof = prover.proof(&session.name, user, &challenge);
        let result = session
            .call_login(&Request::Login {
                user: user.to_string(),
                proof,
            })
            .await;
        let ms = match &result {
            Err(NetError::Node {
                code: ErrorCode::Throttled(ms),
                ..
            }) => *ms,
            _ => return result,
        };
        let wait = Duration::from_millis(ms).saturating_add(THROTTLE_SLACK);
        if retry == MAX_THROTTLE_RETRIES || waited.saturating_add(wait) > budget {
            return result;
        }
        tracing::info!(node = %session.name, wait_ms = ms, "login throttled; waiting");
        tokio::time::sleep(wait).await;
        waited += wait;
        let (fresh, announced) = hello(session, user).await?;
        // The same scheme (and parameters) the decision was made on.
        if announced != *scheme {
            return Err(NetError::Protocol(
                "changed its announced login scheme while throttling".into(),
            ));
        }
        challenge = fresh;
    }
    unreachable!("the loop returns on its last round")
}

/// Sends the proofs, all at once, and records the outcomes. A throttled
/// node is waited for and asked again (see [`prove_one`]) while the others
/// go on.
async fn prove_all(
    report: &mut LoginReport,
    proofs: Vec<(usize, Pending, Prover, Method)>,
    user: &str,
    limits: Limits,
) {
    let budget = MAX_THROTTLE_WAIT.min(limits.request);
    let mut set = JoinSet::new();
    for (i, p, prover, method) in proofs {
        let user = user.to_string();
        let Some(scheme) = report.schemes[i].clone() else {
            continue;
        };
        set.spawn(async move {
            let r = prove_one(&p.session, p.challenge, &scheme, &prover, &user, budget).await;
            (i, p.session, method, r)
        });
    }
    while let Some(joined) = set.join_next().await {
        let Ok((i, session, method, result)) = joined else {
            continue;
        };
        report.outcomes[i] = match result {
            Ok(Response::LoggedIn) => {
                report.sessions[i] = Some(session);
                NodeLogin::Ready(method)
            }
            other => {
                session.close();
                match other {
                    Ok(resp) => NodeLogin::Down(unexpected("LoggedIn", &resp).to_string()),
                    Err(NetError::Node {
                        code: ErrorCode::AuthFailed,
                        ..
                    }) => NodeLogin::Refused,
                    Err(NetError::Node {
                        code: ErrorCode::Throttled(ms),
                        ..
                    }) => NodeLogin::Throttled(ms.div_ceil(1000)),
                    Err(e) => NodeLogin::Down(e.to_string()),
                }
            }
        };
    }
}

/// Reads the key record of every node logged in with a method `which`
/// accepts, all at once.
async fn fetch_records(report: &mut LoginReport, which: impl Fn(Method) -> bool) {
    let mut set = JoinSet::new();
    for (i, s) in report.sessions.iter().enumerate() {
        let Some(s) = s else { continue };
        if !matches!(report.outcomes[i], NodeLogin::Ready(m) if which(m)) {
            continue;
        }
        let s = s.clone();
        set.spawn(async move {
            let r = match s.call_login(&Request::GetRecord).await {
                Ok(Response::Record(r)) => Ok(r),
                Ok(other) => Err(unexpected("Record", &other)),
                Err(e) => Err(e),
            };
            (i, r)
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            report.records[i] = Some(r);
        }
    }
}
