//! Slowing down password guessing, in memory.
//!
//! Failed logins are counted per source address and per user name. The
//! first [`ThrottleConfig::free_failures`] cost nothing; after that every
//! attempt must wait `base_delay * 2^(failures - free_failures)` since the
//! last failure, capped per address at `max_ip_delay` (minutes: a guesser
//! is slowed to a crawl) and per user at `max_user_delay` (seconds: a
//! stranger can slow a real user down but not lock them out). A successful
//! login clears the user's counter and forgives that address the failures
//! it had on that user. Counters idle for `idle_reset` start over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Throttling thresholds.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Failures allowed without delay.
    pub free_failures: u32,
    /// Wait after the first failure over the free ones; doubles each time.
    pub base_delay: Duration,
    /// Cap of the wait imposed on one source address.
    pub max_ip_delay: Duration,
    /// Cap of the wait imposed on one user name.
    pub max_user_delay: Duration,
    /// A counter idle this long is forgotten.
    pub idle_reset: Duration,
    /// Most addresses or names tracked; beyond it, idle entries are pruned
    /// and new ones are not tracked until there is room.
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

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    last: Instant,
}

#[derive(Debug)]
struct IpEntry {
    counter: Counter,
    /// Failures this address had per user, so a success forgives only those.
    per_user: HashMap<String, u32>,
}

/// Most distinct user names remembered per address.
const MAX_USERS_PER_IP: usize = 64;

#[derive(Debug, Default)]
struct State {
    ips: HashMap<IpAddr, IpEntry>,
    users: HashMap<String, Counter>,
}

/// The failed-login counters of a node.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    state: Mutex<State>,
}

impl Throttle {
    /// Empty counters with these thresholds.
    pub fn new(config: ThrottleConfig) -> Self {
        Throttle {
            config,
            state: Mutex::new(State::default()),
        }
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

    /// `Err(wait)` if a login attempt from `ip` for `user` must wait.
    pub fn check(&self, ip: IpAddr, user: &str, now: Instant) -> Result<(), Duration> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ip_wait = state
            .ips
            .get(&ip)
            .and_then(|e| self.wait(&e.counter, self.config.max_ip_delay, now));
        let user_wait = state
            .users
            .get(user)
            .and_then(|c| self.wait(c, self.config.max_user_delay, now));
        match ip_wait.max(user_wait) {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn failure(&self, ip: IpAddr, user: &str, now: Instant) {
        let idle = self.config.idle_reset;
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
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.make_room(&mut state, now);
        let max = self.config.max_tracked;
        if state.ips.len() < max || state.ips.contains_key(&ip) {
            let entry = state.ips.entry(ip).or_insert_with(|| IpEntry {
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
        }
        if state.users.len() < max || state.users.contains_key(user) {
            bump(state.users.entry(user.to_string()).or_insert(fresh));
        }
    }

    /// A successful login: clears the user's counter and the failures this
    /// address had on that user.
    pub fn success(&self, ip: IpAddr, user: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.users.remove(user);
        if let Some(entry) = state.ips.get_mut(&ip) {
            if let Some(n) = entry.per_user.remove(user) {
                entry.counter.failures = entry.counter.failures.saturating_sub(n);
            }
            if entry.counter.failures == 0 {
                state.ips.remove(&ip);
            }
        }
    }

    fn make_room(&self, state: &mut State, now: Instant) {
        let max = self.config.max_tracked;
        let idle = self.config.idle_reset;
        if state.ips.len() >= max {
            state
                .ips
                .retain(|_, e| now.duration_since(e.counter.last) < idle);
        }
        if state.users.len() >= max {
            state.users.retain(|_, c| now.duration_since(c.last) < idle);
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

    #[test]
    fn free_then_exponential_then_capped() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        t.failure(A, "alice", t0);
        t.failure(A, "alice", t0);
        assert_eq!(t.check(A, "alice", t0), Err(Duration::from_secs(1)));
        assert!(t.check(A, "alice", t0 + Duration::from_secs(1)).is_ok());
        t.failure(A, "alice", t0);
        // 3 failures: ip waits 2 s, user 2 s (cap).
        assert_eq!(t.check(A, "bob", t0), Err(Duration::from_secs(2)));
        for _ in 0..5 {
            t.failure(A, "alice", t0);
        }
        assert_eq!(t.check(A, "carol", t0), Err(Duration::from_secs(8)));
        // Another address is slowed only by the per-user cap.
        assert_eq!(t.check(B, "alice", t0), Err(Duration::from_secs(2)));
        assert!(t.check(B, "bob", t0).is_ok());
        // Idle counters are forgotten.
        assert!(t.check(A, "alice", t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn success_forgives_only_that_user() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        t.failure(A, "alice", t0);
        t.failure(A, "mallory", t0);
        t.success(A, "mallory");
        t.failure(A, "alice", t0);
        // Alice's failures are still counted against the address.
        assert!(t.check(A, "zed", t0).is_err());
        t.success(A, "alice");
        assert!(t.check(A, "zed", t0).is_ok());
        assert!(t.check(B, "alice", t0).is_ok());
    }

    #[test]
    fn tracking_is_bounded() {
        let t = Throttle::new(cfg());
        let t0 = Instant::now();
        for i in 0..100 {
            t.failure(A, &format!("u{i}"), t0);
        }
        let s = t.state.lock().unwrap();
        assert!(s.users.len() <= 4);
        assert!(s.ips[&A].per_user.len() <= MAX_USERS_PER_IP);
    }
}
