//! Failed logins per client address: after [`FAILURES_ALLOWED`] failures within
//! [`WINDOW`], that address is refused at once until the window is over, so passwords cannot
//! be guessed at the speed of the network.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FAILURES_ALLOWED: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Addresses remembered at most (the oldest windows are forgotten first past this), so that a
/// flood of addresses cannot grow the map without bound.
const ADDRESSES_KEPT: usize = 100_000;

#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(wait)` when `addr` may not try again before `wait` has passed.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let failures = self.lock();
        let (count, since) = failures.get(&addr)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*count >= FAILURES_ALLOWED).then_some(left)
    }

    pub fn failed(&self, addr: IpAddr) {
        let mut failures = self.lock();
        if failures.len() >= ADDRESSES_KEPT {
            failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        let entry = failures.entry(addr).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// A successful login clears the address's failures.
    pub fn succeeded(&self, addr: IpAddr) {
        self.lock().remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_repeated_failures() {
        let limiter = LoginLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FAILURES_ALLOWED - 1 {
            limiter.failed(a);
        }
        assert!(limiter.blocked(a).is_none());
        limiter.failed(a);
        assert!(limiter.blocked(a).is_some_and(|w| w <= WINDOW));
        assert!(limiter.blocked(b).is_none());
        limiter.succeeded(a);
        assert!(limiter.blocked(a).is_none());
    }
}
