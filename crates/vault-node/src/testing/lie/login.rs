//! Lies about accounts: the announced login scheme and the key record.

use std::sync::atomic::{AtomicUsize, Ordering};

use wire::{AuthScheme, KdfParams, Request, Response, UserRecord};

use super::{Lie, Reply};

/// Rewrites the `scheme` of the node's `Challenge` answers to `Hello`
/// (keeping the real challenge), for every user or only the one given to
/// [`ClaimScheme::only_for`]: a node claiming an upgraded account is
/// legacy (to obtain the password's MD5), or announcing other Argon2id
/// costs or salt. Error answers are left alone.
#[derive(Debug)]
pub struct ClaimScheme {
    scheme: AuthScheme,
    user: Option<String>,
    hits: AtomicUsize,
}

impl ClaimScheme {
    /// Announces every account as [`AuthScheme::Legacy`].
    pub fn legacy() -> Self {
        Self::new(AuthScheme::Legacy)
    }

    /// Announces every account as upgraded with these salt and costs. They
    /// are sent as given, even if the wire's own bounds (salt length)
    /// reject them.
    pub fn upgraded(kdf: KdfParams) -> Self {
        Self::new(AuthScheme::Upgraded(kdf))
    }

    /// Announces `scheme`.
    pub fn new(scheme: AuthScheme) -> Self {
        ClaimScheme {
            scheme,
            user: None,
            hits: AtomicUsize::new(0),
        }
    }

    /// Lies only in answers to `Hello` for `user` (case-insensitive).
    pub fn only_for(mut self, user: &str) -> Self {
        self.user = Some(user.to_ascii_lowercase());
        self
    }

    /// `Challenge` answers rewritten so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Lie for ClaimScheme {
    fn on_response(&self, req: &Request, resp: Response, bulk: Vec<u8>) -> Reply {
        let Request::Hello { user } = req else {
            return Reply::Send(resp, bulk);
        };
        if self
            .user
            .as_ref()
            .is_some_and(|only| *only != user.to_ascii_lowercase())
        {
            return Reply::Send(resp, bulk);
        }
        match resp {
            Response::Challenge { challenge, .. } => {
                self.hits.fetch_add(1, Ordering::SeqCst);
                let scheme = self.scheme.clone();
                Reply::Send(Response::Challenge { challenge, scheme }, bulk)
            }
            other => Reply::Send(other, bulk),
        }
    }
}

type Forge = Box<dyn Fn(Option<UserRecord>) -> Option<UserRecord> + Send + Sync>;

/// Rewrites the node's `Record` answers to `GetRecord` with a closure over
/// the real record (`None`: the node has none). The result is sent as
/// given, even if it breaks the wire's own bounds. Error answers are left
/// alone.
///
/// ```
/// # use vault_node::testing::lie::ForgeRecord;
/// // A record asking for 4 TiB of memory, to make the client burn it.
/// let greedy = ForgeRecord::new(|real| {
///     real.map(|mut r| {
///         r.kdf.m_kib = u32::MAX;
///         r
///     })
/// });
/// ```
pub struct ForgeRecord {
    forge: Forge,
    hits: AtomicUsize,
}

impl std::fmt::Debug for ForgeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeRecord").finish_non_exhaustive()
    }
}

impl ForgeRecord {
    /// Sends `forge(real)` instead of the real record.
    pub fn new(
        forge: impl Fn(Option<UserRecord>) -> Option<UserRecord> + Send + Sync + 'static,
    ) -> Self {
        ForgeRecord {
            forge: Box::new(forge),
            hits: AtomicUsize::new(0),
        }
    }

    /// `Record` answers passed through the closure so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Lie for ForgeRecord {
    fn on_response(&self, req: &Request, resp: Response, bulk: Vec<u8>) -> Reply {
        match (req, resp) {
            (Request::GetRecord, Response::Record(real)) => {
                self.hits.fetch_add(1, Ordering::SeqCst);
                Reply::Send(Response::Record((self.forge)(real)), bulk)
            }
            (_, resp) => Reply::Send(resp, bulk),
        }
    }
}
