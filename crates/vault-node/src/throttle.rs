//! Slowing down password guessing, in memory, without letting strangers
//! lock a user out.
//!
//! Failed logins are counted at three levels:
//!
//! - per (source, user name): the main brake. A source is an IPv4 address
//!   or an IPv6 /64 (one subscriber's prefix), so rotating through the
//!   addresses of one prefix buys nothing. After
//!   [`ThrottleConfig::free_failures`] failures on one name, that source
//!   must wait `base_delay * 2^(failures - free_failures)` (at most
//!   `max_ip_delay`) since its own last attempt on that name;
//! - per source, across names ([`SOURCE_ALLOWANCE`] times the free
//!   allowance, then the same doubling, at most `max_ip_delay`): a source
//!   spraying guesses over many names is slowed too;
//! - per user name (`max_user_delay` cap): a name under attack from many
//!   sources slows every source that has *itself* failed on that name,
//!   counted from that source's own last attempt. A source with no failure
//!   on the name is never held back by it, and other sources' attempts
//!   cannot extend its wait, so strangers can slow a user who mistyped by
//!   at most `max_user_delay`, never lock the right password out.
//!
//! An attempt is counted *before* the proof is checked: [`Throttle::begin`]
//! checks the counters and records the attempt in one step under the lock,
//! so any number of concurrent guesses get at most the free allowance of
//! real answers. A throttled attempt (`Err(wait)`) counts nothing and
//! moves no clock. The [`Attempt`] it returns is then settled:
//!
//! - [`Attempt::succeeded`]: the source's failures on that user are
//!   forgiven (its pair counter cleared and taken off its source counter)
//!   and the name's counter is cleared;
//! - [`Attempt::stale`]: the proof was the user's *previous* credential (a
//!   client that has not caught up with a rotation), which is not a guess:
//!   the attempt is taken back, as Active Directory does for recent
//!   passwords;
//! - [`Attempt::failed`], or dropping it unsettled: it stays counted (fail
//!   closed).
//!
//! Counters idle for `idle_reset` start over. The tables hold at most
//! `max_tracked` sources and names (and [`MAX_USERS_PER_SOURCE`] names per
//! source). When they are full, idle entries and entries still within
//! their free allowance make room; if none can, an untracked source shares
//! one overflow bucket with every other untracked source: one attempt per
//! `base_delay` among them all. A full table slows newcomers down; it
//! never refuses them outright.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Throttling thresholds.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Failures one source may have on one name without delay (and, times
    /// [`SOURCE_ALLOWANCE`], across names); also the name-wide allowance.
    pub free_failures: u32,
    /// Wait after the first failure over the free ones; doubles each time.
    /// Also the spacing of attempts from untracked sources when the tables
    /// are full.
    pub base_delay: Duration,
    /// Cap of the wait imposed on one source (per name and across names).
    pub max_ip_delay: Duration,
    /// Cap of the name-wide wait, which only applies to sources that
    /// failed on that name themselves.
    pub max_user_delay: Duration,
    /// A counter idle this long is forgotten.
    pub idle_reset: Duration,
    /// Most sources, and most names, tracked.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_ip_delay: Duration::from_secs(300),
            max_user_delay: Duration::from_secs(10),
            idle_reset: Duration::from_secs(15 * 60),
            max_tracked: 100_000,
        }
    }
}

/// A source's free allowance across all names, in multiples of
/// [`ThrottleConfig::free_failures`] (a few users behind one NAT may each
/// mistype without slowing the others).
pub const SOURCE_ALLOWANCE: u32 = 4;

/// Most distinct user names tracked per source; a source failing on more
/// names is held back by its across-names counter.
pub const MAX_USERS_PER_SOURCE: usize = 64;

/// How long a sweep of a full table that freed nothing blocks the next.
const SWEEP_BACKOFF: Duration = Duration::from_secs(1);

/// The unit attempts are counted by: an IPv4 address, or an IPv6 /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    last: Instant,
}

impl Counter {
    fn fresh(now: Instant) -> Self {
        Counter {
            failures: 0,
            last: now,
        }
    }

    /// Counts one attempt at `now`, starting over if it was idle.
    fn bump(&mut self, now: Instant, idle: Duration) {
        if now.saturating_duration_since(self.last) >= idle {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last = self.last.max(now);
    }

    /// Takes one attempt back.
    fn unbump(&mut self) {
        self.failures = self.failures.saturating_sub(1);
    }

    /// The failures still remembered at `now`.
    fn live(&self, now: Instant, idle: Duration) -> u32 {
        if now.saturating_duration_since(self.last) >= idle {
            0
        } else {
            self.failures
        }
    }
}

#[derive(Debug)]
struct SourceEntry {
    /// Failures of this source on every name.
    counter: Counter,
    /// Failures of this source per name.
    per_user: HashMap<String, Counter>,
}

#[derive(Debug, Default)]
struct State {
    sources: HashMap<IpAddr, SourceEntry>,
    users: HashMap<String, Counter>,
    /// When the next attempt from an untracked source may go ahead.
    overflow_ready: Option<Instant>,
    /// No sweep of a full table before these (one per table).
    source_sweep_after: Option<Instant>,
    user_sweep_after: Option<Instant>,
}

/// The login-attempt counters of a node.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    state: Mutex<State>,
}

/// A login attempt counted by [`Throttle::begin`]; settle it with its
/// outcome. Dropped unsettled, it stays counted as a failure.
#[must_use = "settle the attempt with its outcome"]
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    /// The source, if it is tracked (`None`: the overflow bucket).
    source: Option<IpAddr>,
    user: String,
    /// Whether the (source, user) counter counted it.
    pair_counted: bool,
    /// Whether the name's counter counted it.
    name_counted: bool,
}

impl Throttle {
    /// Empty counters with these thresholds.
    pub fn new(config: ThrottleConfig) -> Self {
        Throttle {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay `failures` earn over a free allowance of `free`, capped.
    fn delay(&self, failures: u32, free: u32, cap: Duration) -> Option<Duration> {
        if failures < free {
            return None;
        }
        let exp = (failures - free).min(30);
        Some(self.config.base_delay.saturating_mul(1u32 << exp).min(cap))
    }

    /// What is left at `now` of a wait of `delay` counted from `since`.
    fn left(delay: Option<Duration>, since: Instant, now: Instant) -> Option<Duration> {
        let ready = since + delay?;
        (ready > now).then(|| ready - now)
    }

    /// How long `source` must wait before trying `user` again, if at all.
    fn wait(&self, state: &State, source: IpAddr, user: &str, now: Instant) -> Option<Duration> {
        let cfg = &self.config;
        let idle = cfg.idle_reset;
        let entry = state.sources.get(&source)?;
        let free_all = cfg.free_failures.saturating_mul(SOURCE_ALLOWANCE);
        let across = self.delay(entry.counter.live(now, idle), free_all, cfg.max_ip_delay);
        let mut wait = Self::left(across, entry.counter.last, now);
        let Some(pair) = entry.per_user.get(user) else {
            return wait;
        };
        let failed = pair.live(now, idle);
        if failed == 0 {
            return wait;
        }
        let own = self.delay(failed, cfg.free_failures, cfg.max_ip_delay);
        wait = wait.max(Self::left(own, pair.last, now));
        // The name-wide brake: only for a source that failed on the name
        // itself, and counted from its own last attempt, so nobody else
        // can extend it.
        let name = state
            .users
            .get(user)
            .map(|c| c.live(now, idle))
            .and_then(|n| self.delay(n, cfg.free_failures, cfg.max_user_delay));
        wait.max(Self::left(name, pair.last, now))
    }

    /// Checks the counters of `ip`'s source and of `user` and, if the
    /// attempt may go ahead, counts it, all in one step. `Err(wait)` if it
    /// must wait (nothing is counted then).
    pub fn begin(&self, ip: IpAddr, user: &str, now: Instant) -> Result<Attempt<'_>, Duration> {
        let source = source_key(ip);
        let cfg = &self.config;
        let idle = cfg.idle_reset;
        let mut state = self.lock();
        if let Some(w) = self.wait(&state, source, user, now) {
            return Err(w);
        }
        let tracked = state.sources.contains_key(&source)
            || state.sources.len() < cfg.max_tracked
            || self.sweep_sources(&mut state, now);
        let mut attempt = Attempt {
            throttle: self,
            source: tracked.then_some(source),
            user: user.to_string(),
            pair_counted: false,
            name_counted: false,
        };
        if tracked {
            let entry = state.sources.entry(source).or_insert_with(|| SourceEntry {
                counter: Counter::fresh(now),
                per_user: HashMap::new(),
            });
            if entry.counter.live(now, idle) == 0 {
                entry.per_user.clear();
            }
            entry.counter.bump(now, idle);
            if !entry.per_user.contains_key(user) && entry.per_user.len() >= MAX_USERS_PER_SOURCE {
                entry.per_user.retain(|_, c| c.live(now, idle) > 0);
            }
            if entry.per_user.contains_key(user) || entry.per_user.len() < MAX_USERS_PER_SOURCE {
                let pair = entry
                    .per_user
                    .entry(user.to_string())
                    .or_insert(Counter::fresh(now));
                pair.bump(now, idle);
                attempt.pair_counted = true;
            }
        } else {
            // Degrade to slowing down: every untracked source shares one
            // bucket, one attempt per `base_delay`.
            if let Some(w) = state
                .overflow_ready
                .and_then(|r| Self::left(Some(Duration::ZERO), r, now))
            {
                return Err(w.max(Duration::from_millis(1)));
            }
            state.overflow_ready = Some(now + cfg.base_delay.max(Duration::from_millis(1)));
        }
        let name_fits = state.users.contains_key(user)
            || state.users.len() < cfg.max_tracked
            || self.sweep_users(&mut state, now);
        if name_fits {
            state
                .users
                .entry(user.to_string())
                .or_insert(Counter::fresh(now))
                .bump(now, idle);
            attempt.name_counted = true;
        }
        Ok(attempt)
    }

    /// Whether a counter can be forgotten: idle, or within the free
    /// allowance (it imposes no wait, so forgetting it costs at most that
    /// allowance).
    fn expendable(&self, c: &Counter, now: Instant) -> bool {
        c.live(now, self.config.idle_reset) < self.config.free_failures
    }

    /// Frees room in the full source table; whether there is room now.
    fn sweep_sources(&self, state: &mut State, now: Instant) -> bool {
        if state.source_sweep_after.is_some_and(|t| now < t) {
            return false;
        }
        state
            .sources
            .retain(|_, e| !self.expendable(&e.counter, now));
        let room = state.sources.len() < self.config.max_tracked;
        state.source_sweep_after = (!room).then(|| now + SWEEP_BACKOFF);
        room
    }

    /// Frees room in the full name table; whether there is room now.
    fn sweep_users(&self, state: &mut State, now: Instant) -> bool {
        if state.user_sweep_after.is_some_and(|t| now < t) {
            return false;
        }
        state.users.retain(|_, c| !self.expendable(c, now));
        let room = state.users.len() < self.config.max_tracked;
        state.user_sweep_after = (!room).then(|| now + SWEEP_BACKOFF);
        room
    }
}

impl Attempt<'_> {
    /// The proof was right: clears the name's counter and the failures this
    /// source had on that name (this attempt included).
    pub fn succeeded(self) {
        let mut state = self.throttle.lock();
        state.users.remove(&self.user);
        let Some(source) = self.source else { return };
        let Some(entry) = state.sources.get_mut(&source) else {
            return;
        };
        let mut forgiven = u32::from(!self.pair_counted);
        if let Some(pair) = entry.per_user.remove(&self.user) {
            forgiven = forgiven.saturating_add(pair.failures);
        }
        entry.counter.failures = entry.counter.failures.saturating_sub(forgiven);
        if entry.counter.failures == 0 && entry.per_user.is_empty() {
            state.sources.remove(&source);
        }
    }

    /// The proof was wrong: the attempt stays counted.
    pub fn failed(self) {}

    /// The proof was the user's previous credential, or the node failed
    /// before checking it: the attempt is taken back.
    pub fn stale(self) {
        let mut state = self.throttle.lock();
        if self.name_counted {
            if let Some(c) = state.users.get_mut(&self.user) {
                c.unbump();
            }
        }
        let Some(source) = self.source else { return };
        if let Some(entry) = state.sources.get_mut(&source) {
            entry.counter.unbump();
            if self.pair_counted {
                if let Some(pair) = entry.per_user.get_mut(&self.user) {
                    pair.unbump();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ThrottleConfig {
        ThrottleConfig {
            free_failures: 2,
            base_delay: Duration::from_secs(1),
            max_ip_delay: Duration::from_secs(8),
            max_user_delay: Duration::from_secs(2),
            idle_reset: Duration::from_secs(60),
            max_tracked: 4,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn ip(n: u16) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(10, 9, (n >> 8) as u8, n as u8))
    }

    fn fail(t: &Throttle, ip: IpAddr, user: &str, now: Instant) {
        t.begin(ip, user, now).expect("not throttled").failed();
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn free_then_exponential_then_capped_per_source_and_name() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        fail(&t, A, "alice", t0);
        fail(&t, A, "alice", t0);
        assert_eq!(t.begin(A, "alice", t0).unwrap_err(), secs(1));
        fail(&t, A, "alice", t0 + secs(1));
        let t1 = t0 + secs(1);
        assert_eq!(t.begin(A, "alice", t1).unwrap_err(), secs(2));
        fail(&t, A, "alice", t1 + secs(2));
        let t2 = t1 + secs(2);
        assert_eq!(t.begin(A, "alice", t2).unwrap_err(), secs(4));
        // The same source on another name, and another source on this
        // name, go ahead: neither failed there.
        assert!(t.begin(A, "bob", t2).is_ok());
        t.begin(B, "alice", t2).unwrap().succeeded();
        // Idle counters are forgotten.
        assert!(t.begin(A, "alice", t2 + secs(61)).is_ok());
    }

    #[test]
    fn strangers_cannot_lock_a_user_out() {
        let t = Throttle::new(ThrottleConfig {
            max_tracked: 1000,
            ..cfg()
        });
        let t0 = Instant::now();
        // Thirty sources fail on alice as fast as they are let through.
        for step in 0..100u64 {
            let now = t0 + Duration::from_millis(step * 100);
            for n in 0..30 {
                if let Ok(a) = t.begin(ip(n), "alice", now) {
                    a.failed();
                }
            }
            // A source that never failed on alice is never held back.
            let clean = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, (step % 200) as u8));
            t.begin(clean, "alice", now)
                .expect("a clean source was throttled")
                .stale();
        }
        let now = t0 + secs(10);
        t.begin(A, "alice", now).unwrap().succeeded();
    }

    #[test]
    fn the_name_wide_brake_only_slows_and_strangers_cannot_extend_it() {
        let t = Throttle::new(ThrottleConfig {
            max_tracked: 1000,
            ..cfg()
        });
        let t0 = Instant::now();
        for n in 0..10 {
            fail(&t, ip(n), "alice", t0);
        }
        // Alice mistyped once: the name-wide brake slows her, at most
        // max_user_delay from her own attempt.
        fail(&t, A, "alice", t0);
        let w = t.begin(A, "alice", t0).unwrap_err();
        assert!(w <= secs(2), "{w:?}");
        // Strangers keep failing meanwhile; her wait does not move.
        for n in 10..40 {
            fail(&t, ip(n), "alice", t0 + secs(1));
        }
        assert!(t.begin(A, "alice", t0 + secs(1)).is_err());
        t.begin(A, "alice", t0 + secs(2)).unwrap().succeeded();
    }

    #[test]
    fn a_source_spraying_names_is_slowed() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        // Free: 2 per name, 8 across names.
        for i in 0..8 {
            fail(&t, A, &format!("u{i}"), t0);
        }
        assert_eq!(t.begin(A, "fresh", t0).unwrap_err(), secs(1));
        assert!(t.begin(B, "fresh", t0).is_ok());
    }

    #[test]
    fn concurrent_attempts_are_counted_before_they_are_checked() {
        // Many attempts begun before any is settled: only the free allowance
        // goes ahead.
        let t = Throttle::new(ThrottleConfig {
            free_failures: 5,
            ..cfg()
        });
        let t0 = Instant::now();
        let attempts: Vec<_> = (0..20)
            .filter_map(|_| t.begin(A, "alice", t0).ok())
            .collect();
        assert_eq!(attempts.len(), 5);
        drop(attempts);
        // Dropped unsettled: still counted (fail closed).
        assert!(t.begin(A, "alice", t0).is_err());
    }

    #[test]
    fn success_forgives_only_that_user() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        for i in 0..3 {
            fail(&t, A, &format!("u{i}"), t0);
            fail(&t, A, &format!("u{i}"), t0);
        }
        fail(&t, A, "alice", t0);
        t.begin(A, "mallory", t0).unwrap().succeeded();
        fail(&t, A, "alice", t0);
        // Eight failures across names: the source waits.
        assert!(t.begin(A, "zed", t0).is_err());
        t.begin(B, "alice", t0).unwrap().succeeded();
        // Success from another source forgives nothing of source A.
        assert!(t.begin(A, "zed", t0).is_err());
        assert!(t.begin(A, "alice", t0).is_err());
    }

    #[test]
    fn stale_credentials_are_not_guesses() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        for _ in 0..10 {
            t.begin(A, "alice", t0).unwrap().stale();
        }
        fail(&t, A, "alice", t0);
        fail(&t, A, "alice", t0);
        assert!(t.begin(A, "alice", t0).is_err());
    }

    #[test]
    fn ipv6_sources_are_counted_by_64_prefix() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        fail(&t, a, "u1", t0);
        fail(&t, b, "u1", t0);
        assert!(t.begin(a, "u1", t0).is_err(), "same /64");
        assert!(t.begin(other, "u1", t0).is_ok(), "another /64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), A);
    }

    #[test]
    fn a_full_table_slows_newcomers_instead_of_refusing_them() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        // Four sources, each over its free allowance: nothing can be evicted.
        for i in 0..4u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i));
            let user = format!("user{i}");
            fail(&t, ip, &user, t0);
            fail(&t, ip, &user, t0 + secs(10));
        }
        let newcomer = |n: u8| IpAddr::V4(std::net::Ipv4Addr::new(10, 2, 0, n));
        let t1 = t0 + secs(20);
        // The first newcomer goes ahead through the shared overflow bucket...
        t.begin(newcomer(1), "bob", t1).expect("refused").failed();
        // ...the next waits its turn, at most base_delay...
        let w = t.begin(newcomer(2), "bob", t1).unwrap_err();
        assert!(w <= secs(1) && w > Duration::ZERO, "{w:?}");
        // ...and then goes ahead too, with the right or a wrong password.
        t.begin(newcomer(2), "bob", t1 + w)
            .expect("refused")
            .succeeded();
        t.begin(newcomer(3), "carol", t1 + secs(2))
            .expect("refused")
            .failed();
        // Once the tracked sources are idle there is room again.
        let t2 = t0 + secs(100);
        assert!(t.begin(newcomer(4), "bob", t2).unwrap().source.is_some());
    }

    #[test]
    fn entries_within_the_allowance_make_room() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        for i in 0..10u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 3, 0, i));
            fail(&t, ip, &format!("u{i}"), t0);
        }
        let s = t.lock();
        assert!(s.sources.len() <= 4 && s.users.len() <= 4);
    }
}
