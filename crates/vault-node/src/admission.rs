//! Who gets one of the node's connection slots.
//!
//! Every connection whose source address was validated (a QUIC Retry
//! round trip, done by the server before it asks here) takes one slot from
//! the moment it is admitted until its task ends. Two caps apply: one for
//! the node, one per source. A source is an IP address; IPv6 addresses
//! count by their /64 prefix (one customer's network), IPv4-mapped IPv6
//! addresses as the IPv4 address they carry.
//!
//! A connection that would go over a cap does not simply bounce: the
//! oldest connection that has not logged in yet is evicted to make room.
//! For the source cap, that is one of the same source's connections; for
//! the node cap, one of the source that holds the most connections that
//! have not logged in. A newcomer is refused only when every candidate has
//! logged in. So idle, never-logged-in connections cannot keep real users
//! out, however many one client opens; they only compete with each other.
//!
//! Eviction is a signal ([`Slot::evicted`]): the connection's task closes
//! the connection with a reason and ends. The slot is free as soon as the
//! eviction is decided.
//!
//! Logged-in connections are never evicted, so one account could hold
//! every slot by logging in over and over. [`UserCaps`] prevents that: a
//! user may hold at most [`UserLimits::connections`] logged-in connections
//! on the node (default: an eighth of the node's cap, at least 8); a login
//! over it is refused with `Busy` and the connection stays logged out (the
//! connections already logged in are kept: the client closes one it no
//! longer needs). A user may also have at most [`UserLimits::requests`]
//! requests running at once over all their connections (default: four
//! connections' worth of streams); a request over it is answered `Busy`
//! without being run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::auth::LoginState;

/// Where connections come from, for the per-source cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Source {
    /// One IPv4 address.
    V4([u8; 4]),
    /// One IPv6 /64 prefix.
    V6([u8; 8]),
}

impl Source {
    /// The source of a peer at `ip`.
    pub(crate) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Source::V6(prefix)
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(o) => write!(f, "{}", IpAddr::from(*o)),
            Source::V6(p) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(p);
                write!(f, "{}/64", Ipv6Addr::from(full))
            }
        }
    }
}

/// Whether a connection has logged in; read at eviction time.
pub(crate) trait LoggedIn: Send + Sync {
    /// `true` once the connection logged in.
    fn logged_in(&self) -> bool;
}

impl LoggedIn for Mutex<LoginState> {
    fn logged_in(&self) -> bool {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .user()
            .is_some()
    }
}

/// The two caps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections in all.
    pub total: usize,
    /// Connections from one source.
    pub per_source: usize,
}

/// Why a connection got no slot: every candidate for eviction logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The source holds its cap of logged-in connections.
    SourceFull,
    /// The node holds its cap of logged-in connections.
    NodeFull,
}

/// The node's table of admitted connections.
pub(crate) struct Admission {
    limits: Limits,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Sequence number of the next admission: lower is older.
    next: u64,
    conns: BTreeMap<u64, Entry>,
    per_source: HashMap<Source, usize>,
}

struct Entry {
    source: Source,
    login: Arc<dyn LoggedIn>,
    signal: Arc<Signal>,
}

#[derive(Default)]
struct Signal {
    evicted: AtomicBool,
    notify: Notify,
}

/// One admitted connection's slot; dropping it frees the slot.
pub(crate) struct Slot {
    admission: Arc<Admission>,
    seq: u64,
    signal: Arc<Signal>,
}

impl Admission {
    /// An empty table; both caps are at least 1, and the source cap at
    /// most the node cap.
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        let total = limits.total.max(1);
        let limits = Limits {
            total,
            per_source: limits.per_source.clamp(1, total),
        };
        Arc::new(Admission {
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `source` whose login state is `login`,
    /// evicting a connection that has not logged in if a cap requires it.
    pub(crate) fn admit(
        self: &Arc<Self>,
        source: Source,
        login: Arc<dyn LoggedIn>,
    ) -> Result<Slot, Refusal> {
        let mut t = self.table();
        if t.per_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
            let victim = t.oldest_not_logged_in(|s| s == source);
            let Some(victim) = victim else {
                return Err(Refusal::SourceFull);
            };
            t.evict(victim, "source cap");
        }
        if t.conns.len() >= self.limits.total {
            let busiest = t.busiest_source();
            let victim = busiest.and_then(|b| t.oldest_not_logged_in(|s| s == b));
            let Some(victim) = victim else {
                return Err(Refusal::NodeFull);
            };
            t.evict(victim, "node cap");
        }
        let seq = t.next;
        t.next += 1;
        let signal = Arc::new(Signal::default());
        t.conns.insert(
            seq,
            Entry {
                source,
                login,
                signal: signal.clone(),
            },
        );
        *t.per_source.entry(source).or_insert(0) += 1;
        Ok(Slot {
            admission: self.clone(),
            seq,
            signal,
        })
    }

    /// Connections holding a slot.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().conns.len()
    }
}

impl Table {
    /// The oldest connection of a source matching `pick` that has not
    /// logged in.
    fn oldest_not_logged_in(&self, pick: impl Fn(Source) -> bool) -> Option<u64> {
        self.conns
            .iter()
            .find(|(_, e)| pick(e.source) && !e.login.logged_in())
            .map(|(seq, _)| *seq)
    }

    /// The source holding the most connections that have not logged in
    /// (ties: the one with the oldest such connection).
    fn busiest_source(&self) -> Option<Source> {
        let mut counts: HashMap<Source, (usize, u64)> = HashMap::new();
        for (seq, e) in &self.conns {
            if !e.login.logged_in() {
                counts.entry(e.source).or_insert((0, *seq)).0 += 1;
            }
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
            .map(|(source, _)| source)
    }

    /// Removes `seq` from the table and tells its task to close it.
    fn evict(&mut self, seq: u64, why: &str) {
        if let Some(entry) = self.remove(seq) {
            tracing::info!(source = %entry.source, cap = why, "evicting a connection that has not logged in");
            entry.signal.evicted.store(true, Ordering::Release);
            entry.signal.notify.notify_one();
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.conns.remove(&seq)?;
        if let Some(n) = self.per_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

impl Slot {
    /// Completes once the connection was evicted.
    pub(crate) async fn evicted(&self) {
        loop {
            let notified = self.signal.notify.notified();
            if self.is_evicted() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the connection was evicted.
    pub(crate) fn is_evicted(&self) -> bool {
        self.signal.evicted.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.table().remove(self.seq);
    }
}

/// The per-user caps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserLimits {
    /// Logged-in connections per user.
    pub connections: usize,
    /// Requests running at once per user, over all their connections.
    pub requests: usize,
}

impl UserLimits {
    /// No per-user caps.
    pub(crate) const UNLIMITED: UserLimits = UserLimits {
        connections: usize::MAX,
        requests: usize::MAX,
    };
}

/// What each logged-in user holds on the node.
pub(crate) struct UserCaps {
    limits: UserLimits,
    table: Mutex<HashMap<String, Held>>,
}

#[derive(Debug, Default)]
struct Held {
    connections: usize,
    requests: usize,
}

impl fmt::Debug for UserCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCaps")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One logged-in connection's place in its user's cap; dropping it (the
/// connection closed or logged out) frees the place.
#[derive(Debug)]
pub(crate) struct UserConn {
    caps: Arc<UserCaps>,
    user: String,
}

/// One running request's place in its user's cap; dropped when the
/// request is done.
#[derive(Debug)]
pub(crate) struct UserRequest {
    caps: Arc<UserCaps>,
    user: String,
}

impl UserCaps {
    /// Empty counts under `limits` (each cap at least 1).
    pub(crate) fn new(limits: UserLimits) -> Arc<Self> {
        Arc::new(UserCaps {
            limits: UserLimits {
                connections: limits.connections.max(1),
                requests: limits.requests.max(1),
            },
            table: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caps.
    pub(crate) fn limits(&self) -> UserLimits {
        self.limits
    }

    /// A place for one more logged-in connection of `user`; `None` if the
    /// user already holds their cap.
    pub(crate) fn connect(self: &Arc<Self>, user: &str) -> Option<UserConn> {
        let mut t = self.table();
        let held = t.entry(user.to_string()).or_default();
        if held.connections >= self.limits.connections {
            return None;
        }
        held.connections += 1;
        Some(UserConn {
            caps: self.clone(),
            user: user.to_string(),
        })
    }

    /// Drops `user`'s entry once it holds nothing.
    fn release(&self, user: &str, what: impl FnOnce(&mut Held)) {
        let mut t = self.table();
        if let Some(held) = t.get_mut(user) {
            what(held);
            if held.connections == 0 && held.requests == 0 {
                t.remove(user);
            }
        }
    }
}

impl UserConn {
    /// The user.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// A place for one more running request of this user; `None` if the
    /// user already has their cap of requests running.
    pub(crate) fn request(&self) -> Option<UserRequest> {
        let mut t = self.caps.table();
        let held = t.entry(self.user.clone()).or_default();
        if held.requests >= self.caps.limits.requests {
            return None;
        }
        held.requests += 1;
        Some(UserRequest {
            caps: self.caps.clone(),
            user: self.user.clone(),
        })
    }
}

impl Drop for UserConn {
    fn drop(&mut self) {
        self.caps.release(&self.user, |h| {
            h.connections = h.connections.saturating_sub(1)
        });
    }
}

impl Drop for UserRequest {
    fn drop(&mut self) {
        self.caps
            .release(&self.user, |h| h.requests = h.requests.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flag(AtomicBool);

    impl LoggedIn for Flag {
        fn logged_in(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn flag(logged_in: bool) -> Arc<Flag> {
        Arc::new(Flag(AtomicBool::new(logged_in)))
    }

    fn src(last: u8) -> Source {
        Source::of(IpAddr::from([10, 0, 0, last]))
    }

    fn limits(total: usize, per_source: usize) -> Arc<Admission> {
        Admission::new(Limits { total, per_source })
    }

    #[test]
    fn sources_group_ipv6_by_64_and_unmap_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of("192.0.2.7".parse().unwrap()));
        assert_ne!(Source::of(mapped), Source::of("192.0.2.8".parse().unwrap()));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Source::of(mapped).to_string(), "192.0.2.7");
    }

    #[test]
    fn source_cap_evicts_the_oldest_of_that_source() {
        let adm = limits(10, 2);
        let a1 = adm.admit(src(1), flag(false)).unwrap();
        let b1 = adm.admit(src(2), flag(false)).unwrap();
        let a2 = adm.admit(src(1), flag(false)).unwrap();
        let a3 = adm.admit(src(1), flag(false)).unwrap();
        assert!(a1.is_evicted());
        assert!(!a2.is_evicted() && !a3.is_evicted() && !b1.is_evicted());
        assert_eq!(adm.len(), 3);
    }

    #[test]
    fn source_cap_spares_logged_in_connections_and_refuses_when_all_are() {
        let adm = limits(10, 2);
        let a1_login = flag(false);
        let a1 = adm.admit(src(1), a1_login.clone()).unwrap();
        let a2 = adm.admit(src(1), flag(false)).unwrap();
        a1_login.0.store(true, Ordering::Relaxed);
        let a3_login = flag(false);
        let a3 = adm.admit(src(1), a3_login.clone()).unwrap();
        assert!(!a1.is_evicted(), "a logged-in connection was evicted");
        assert!(a2.is_evicted());
        a3_login.0.store(true, Ordering::Relaxed);
        assert_eq!(
            adm.admit(src(1), flag(false)).err(),
            Some(Refusal::SourceFull)
        );
        // Other sources are unaffected.
        assert!(adm.admit(src(2), flag(false)).is_ok());
        drop((a1, a3));
    }

    #[test]
    fn node_cap_evicts_from_the_source_with_most_idle_connections() {
        let adm = limits(5, 3);
        let a: Vec<Slot> = (0..3)
            .map(|_| adm.admit(src(1), flag(false)).unwrap())
            .collect();
        let b1 = adm.admit(src(2), flag(false)).unwrap();
        let c1 = adm.admit(src(3), flag(false)).unwrap();
        // b1 is older than a[2], but source 1 holds more idle connections.
        let d1 = adm.admit(src(4), flag(false)).unwrap();
        assert!(a[0].is_evicted());
        assert!(!a[1].is_evicted() && !a[2].is_evicted());
        assert!(!b1.is_evicted() && !c1.is_evicted() && !d1.is_evicted());
        assert_eq!(adm.len(), 5);
    }

    #[test]
    fn node_cap_counts_only_connections_that_have_not_logged_in() {
        let adm = limits(4, 4);
        // Source 2: one idle connection; source 1: three logged-in ones.
        let b1 = adm.admit(src(2), flag(false)).unwrap();
        let a: Vec<Slot> = (0..3)
            .map(|_| adm.admit(src(1), flag(true)).unwrap())
            .collect();
        let c1 = adm.admit(src(3), flag(false)).unwrap();
        // Source 1 holds the most connections, but none is evictable.
        assert!(b1.is_evicted());
        assert!(a.iter().all(|s| !s.is_evicted()));
        assert!(!c1.is_evicted());
    }

    #[test]
    fn node_full_of_logged_in_connections_refuses() {
        let adm = limits(2, 2);
        let a = adm.admit(src(1), flag(true)).unwrap();
        let b = adm.admit(src(2), flag(true)).unwrap();
        assert_eq!(
            adm.admit(src(3), flag(false)).err(),
            Some(Refusal::NodeFull)
        );
        drop(a);
        assert!(adm.admit(src(3), flag(false)).is_ok());
        drop(b);
    }

    #[test]
    fn dropped_slots_free_their_place_and_evicted_ones_do_not_double_free() {
        let adm = limits(2, 1);
        let a1 = adm.admit(src(1), flag(false)).unwrap();
        let a2 = adm.admit(src(1), flag(false)).unwrap();
        assert!(a1.is_evicted());
        drop(a1); // already out of the table
        assert_eq!(adm.len(), 1);
        let b1 = adm.admit(src(2), flag(false)).unwrap();
        assert_eq!(adm.len(), 2);
        drop(a2);
        drop(b1);
        assert_eq!(adm.len(), 0);
        assert!(adm.table().per_source.is_empty());
    }

    #[test]
    fn users_are_capped_in_connections_and_requests() {
        let caps = UserCaps::new(UserLimits {
            connections: 2,
            requests: 3,
        });
        let b1 = caps.connect("bob").unwrap();
        let b2 = caps.connect("bob").unwrap();
        assert!(caps.connect("bob").is_none(), "a third bob connection");
        // Other users are unaffected.
        let a1 = caps.connect("alice").unwrap();
        let reqs: Vec<_> = (0..3)
            .map(|i| [&b1, &b2][i % 2].request().unwrap())
            .collect();
        assert!(b1.request().is_none() && b2.request().is_none());
        let a_req = a1.request().expect("alice's request");
        drop(reqs);
        assert!(b2.request().is_some());
        // A closed connection frees its place.
        drop(b1);
        let b3 = caps.connect("bob").unwrap();
        drop((b2, b3, a1, a_req));
        assert!(caps.table().is_empty(), "entries left behind");
    }

    #[tokio::test]
    async fn eviction_wakes_the_waiting_task() {
        let adm = limits(1, 1);
        let a = adm.admit(src(1), flag(false)).unwrap();
        let waiter = tokio::spawn(async move {
            a.evicted().await;
        });
        let _b = adm.admit(src(1), flag(false)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("eviction not signalled")
            .unwrap();
    }
}
