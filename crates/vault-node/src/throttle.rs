//! Slowing down password guessing, in memory.
//!
//! Login attempts are counted per source and per user name. A source is an
//! IPv4 address or an IPv6 /64 (one subscriber's prefix), so rotating
//! through the addresses of one prefix buys nothing.
//!
//! An attempt is counted *before* the proof is checked: [`Throttle::begin`]
//! checks the counters and records the attempt in one step under the lock,
//! so any number of concurrent guesses get at most the free allowance of
//! real answers. The [`Attempt`] it returns is then settled:
//!
//! - [`Attempt::succeeded`]: the user's counter is cleared and the source is
//!   forgiven its failures on that user;
//! - [`Attempt::stale`]: the proof was the user's *previous* credential (a
//!   client that has not caught up with a rotation), which is not a guess:
//!   the attempt is taken back, as Active Directory does for recent
//!   passwords;
//! - [`Attempt::failed`], or dropping it unsettled: it stays counted (fail
//!   closed).
//!
//! The first [`ThrottleConfig::free_failures`] attempts cost nothing; after
//! that an attempt must wait `base_delay * 2^(failures - free_failures)`
//! since the last one, capped per source at `max_ip_delay` (a guesser is
//! slowed to a crawl) and per user at `max_user_delay` (a stranger can slow
//! a real user down but not lock them out). Counters idle for `idle_reset`
//! start over. When the tables are full, idle entries and entries still
//! within their free allowance make room; if none can, new sources and
//! names are refused (fail closed) rather than left untracked.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Throttling thresholds.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Failures allowed without delay.
    pub free_failures: u32,
    /// Wait after the first failure over the free ones; doubles each time.
    pub base_delay: Duration,
    /// Cap of the wait imposed on one source.
    pub max_ip_delay: Duration,
    /// Cap of the wait imposed on one user name.
    pub max_user_delay: Duration,
    /// A counter idle this long is forgotten.
    pub idle_reset: Duration,
    /// Most sources or names tracked.
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

#[derive(Debug)]
struct IpEntry {
    counter: Counter,
    /// Failures this source had per user, so a success forgives only those.
    per_user: HashMap<String, u32>,
}

/// Most distinct user names remembered per source.
const MAX_USERS_PER_IP: usize = 64;

#[derive(Debug, Default)]
struct State {
    ips: HashMap<IpAddr, IpEntry>,
    users: HashMap<String, Counter>,
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
    source: IpAddr,
    user: String,
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

    fn wait(&self, c: &Counter, cap: Duration, now: Instant) -> Option<Duration> {
        let cfg = &self.config;
        if c.failures < cfg.free_failures || now.duration_since(c.last) >= cfg.idle_reset {
            return None;
        }
        let exp = (c.failures - cfg.free_failures).min(30);
        let delay = cfg.base_delay.saturating_mul(1u32 << exp).min(cap);
        let ready = c.last + delay;
        (ready > now).then(|| ready - now)
    }

    /// Checks the counters of `ip`'s source and of `user` and, if the
    /// attempt may go ahead, counts it, all in one step. `Err(wait)` if it
    /// must wait (nothing is counted then).
    pub fn begin(&self, ip: IpAddr, user: &str, now: Instant) -> Result<Attempt<'_>, Duration> {
        let source = source_key(ip);
        let cfg = &self.config;
        let mut state = self.lock();
        let ip_wait = state
            .ips
            .get(&source)
            .and_then(|e| self.wait(&e.counter, cfg.max_ip_delay, now));
        let user_wait = state
            .users
            .get(user)
            .and_then(|c| self.wait(c, cfg.max_user_delay, now));
        if let Some(w) = ip_wait.max(user_wait) {
            return Err(w);
        }
        // Fail closed: an attempt that cannot be tracked does not go ahead.
        let max = cfg.max_tracked;
        let fits = |s: &State| {
            (s.ips.contains_key(&source) || s.ips.len() < max)
                && (s.users.contains_key(user) || s.users.len() < max)
        };
        if !fits(&state) {
            self.make_room(&mut state, now);
            if !fits(&state) {
                return Err(cfg.base_delay.max(Duration::from_millis(1)));
            }
        }
        let idle = cfg.idle_reset;
        let bump = |c: &mut Counter| {
            if now.duration_since(c.last) >= idle {
                c.failures = 0;
            }
            c.failures = c.failures.saturating_add(1);
            c.last = now;
        };
        let fresh = Counter {
            failures: 0,
            last: now,
        };
        let entry = state.ips.entry(source).or_insert_with(|| IpEntry {
            counter: fresh,
            per_user: HashMap::new(),
        });
        if now.duration_since(entry.counter.last) >= idle {
            entry.per_user.clear();
        }
        bump(&mut entry.counter);
        if entry.per_user.len() < MAX_USERS_PER_IP || entry.per_user.contains_key(user) {
            *entry.per_user.entry(user.to_string()).or_default() += 1;
        }
        bump(state.users.entry(user.to_string()).or_insert(fresh));
        Ok(Attempt {
            throttle: self,
            source,
            user: user.to_string(),
        })
    }

    /// Frees table space: idle entries first, then entries still within
    /// their free allowance (they impose no wait, so forgetting them costs
    /// at most that allowance).
    fn make_room(&self, state: &mut State, now: Instant) {
        let cfg = &self.config;
        let keep = |c: &Counter| {
            now.duration_since(c.last) < cfg.idle_reset && c.failures >= cfg.free_failures
        };
        if state.ips.len() >= cfg.max_tracked {
            state.ips.retain(|_, e| keep(&e.counter));
        }
        if state.users.len() >= cfg.max_tracked {
            state.users.retain(|_, c| keep(c));
        }
    }
}

impl Attempt<'_> {
    /// The proof was right: clears the user's counter and the failures this
    /// source had on that user (this attempt included).
    pub fn succeeded(self) {
        let mut state = self.throttle.lock();
        state.users.remove(&self.user);
        if let Some(entry) = state.ips.get_mut(&self.source) {
            if let Some(n) = entry.per_user.remove(&self.user) {
                entry.counter.failures = entry.counter.failures.saturating_sub(n);
            }
            if entry.counter.failures == 0 {
                state.ips.remove(&self.source);
            }
        }
    }

    /// The proof was wrong: the attempt stays counted.
    pub fn failed(self) {}

    /// The proof was the user's previous credential, or the node failed
    /// before checking it: the attempt is taken back.
    pub fn stale(self) {
        let mut state = self.throttle.lock();
        if let Some(c) = state.users.get_mut(&self.user) {
            c.failures = c.failures.saturating_sub(1);
        }
        if let Some(entry) = state.ips.get_mut(&self.source) {
            entry.counter.failures = entry.counter.failures.saturating_sub(1);
            if let Some(n) = entry.per_user.get_mut(&self.user) {
                *n = n.saturating_sub(1);
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

    fn fail(t: &Throttle, ip: IpAddr, user: &str, now: Instant) {
        t.begin(ip, user, now).expect("not throttled").failed();
    }

    #[test]
    fn free_then_exponential_then_capped() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        fail(&t, A, "alice", t0);
        fail(&t, A, "alice", t0);
        assert_eq!(t.begin(A, "alice", t0).unwrap_err(), Duration::from_secs(1));
        fail(&t, A, "alice", t0 + Duration::from_secs(1));
        let t1 = t0 + Duration::from_secs(1);
        // 3 failures: the source waits 2 s, the user 2 s (its cap).
        assert_eq!(t.begin(A, "bob", t1).unwrap_err(), Duration::from_secs(2));
        // Another source is slowed only by the per-user cap.
        assert_eq!(t.begin(B, "alice", t1).unwrap_err(), Duration::from_secs(2));
        assert!(t.begin(B, "bob", t1).is_ok());
        // Idle counters are forgotten.
        assert!(t.begin(A, "carol", t1 + Duration::from_secs(61)).is_ok());
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
        fail(&t, A, "alice", t0);
        t.begin(A, "mallory", t0).unwrap().succeeded();
        fail(&t, A, "alice", t0);
        // Alice's failures are still counted against the source.
        assert!(t.begin(A, "zed", t0).is_err());
        t.begin(B, "alice", t0 + Duration::from_secs(2))
            .unwrap()
            .succeeded();
        // Success from another source clears the user, not source A.
        assert!(t.begin(A, "zed", t0).is_err());
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
        fail(&t, b, "u2", t0);
        assert!(t.begin(a, "u3", t0).is_err(), "same /64");
        assert!(t.begin(other, "u4", t0).is_ok(), "another /64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), A);
    }

    #[test]
    fn full_tables_fail_closed() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        // Four sources, each over its free allowance: nothing can be evicted.
        for i in 0..4u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i));
            let user = format!("user{i}");
            fail(&t, ip, &user, t0);
            fail(&t, ip, &user, t0 + Duration::from_secs(10));
        }
        let newcomer = IpAddr::V4(std::net::Ipv4Addr::new(10, 2, 0, 1));
        assert!(t
            .begin(newcomer, "bob", t0 + Duration::from_secs(20))
            .is_err());
        // Once they are idle there is room again.
        assert!(t
            .begin(newcomer, "bob", t0 + Duration::from_secs(100))
            .is_ok());
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
        assert!(s.ips.len() <= 4 && s.users.len() <= 4);
    }
}
