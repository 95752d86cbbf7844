//! In-memory state of enrollment: pending challenges and failed attempts per agent ID and per
//! source address (SPEC S2). Kept per KMA and lost on restart: the audit log, not this, is the
//! record; this only slows a guesser down. Time comes in as an argument so tests need no sleep.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use security_core::challenge::ServerLogin;

/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Challenges waiting for a proof, all agents together: past it the oldest expired ones go,
/// and if none has expired new enrollments wait (a flood must not grow memory without bound).
pub const PENDING_CHALLENGES_MAX: usize = 10_000;
/// Agent IDs and source addresses with recent failures that are remembered.
pub const FAILURE_SOURCES_MAX: usize = 100_000;

/// A challenge sent, waiting for its single proof.
pub struct Pending {
    pub agent_id: String,
    pub login: ServerLogin,
    pub issued_at: Instant,
}

#[derive(Default)]
pub struct PendingChallenges {
    by_nonce: HashMap<[u8; 24], Pending>,
}

impl PendingChallenges {
    /// Keeps `pending` under `nonce`; false when the table is full of live challenges.
    pub fn insert(&mut self, nonce: [u8; 24], pending: Pending, now: Instant) -> bool {
        if self.by_nonce.len() >= PENDING_CHALLENGES_MAX {
            self.by_nonce.retain(|_, p| now.saturating_duration_since(p.issued_at) < CHALLENGE_TTL);
        }
        if self.by_nonce.len() >= PENDING_CHALLENGES_MAX {
            return false;
        }
        self.by_nonce.insert(nonce, pending);
        assert!(self.by_nonce.len() <= PENDING_CHALLENGES_MAX);
        true
    }

    /// Removes and returns the challenge of `nonce` if it is still live: a proof is checked
    /// once, so a captured proof cannot be replayed even within the time to live.
    pub fn take(&mut self, nonce: &[u8; 24], now: Instant) -> Option<Pending> {
        let pending = self.by_nonce.remove(nonce)?;
        (now.saturating_duration_since(pending.issued_at) < CHALLENGE_TTL).then_some(pending)
    }
}

/// The limits in force, read from the replicated security settings on every attempt.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub failures_max: u32,
    pub window: Duration,
}

/// Recent failures per principal (`agent:<ID>`) and per source (`ip:<address>`).
#[derive(Default)]
pub struct Failures {
    recent: HashMap<String, VecDeque<Instant>>,
}

impl Failures {
    /// How long `who` must still wait, if it has had `failures_max` failures within the window.
    pub fn throttled_for(&self, who: &str, limits: Limits, now: Instant) -> Option<Duration> {
        let failures = self.recent.get(who)?;
        let max = limits.failures_max as usize;
        if max == 0 || failures.len() < max {
            return None;
        }
        // The oldest of the last `max` failures decides when the window frees a slot.
        let oldest = failures[failures.len() - max];
        let free_at = oldest + limits.window;
        (free_at > now).then(|| free_at - now)
    }

    pub fn record(&mut self, who: &str, limits: Limits, now: Instant) {
        if !self.recent.contains_key(who) && self.recent.len() >= FAILURE_SOURCES_MAX {
            self.forget_expired(limits, now);
            if self.recent.len() >= FAILURE_SOURCES_MAX {
                self.forget_stalest();
            }
        }
        let failures = self.recent.entry(who.to_owned()).or_default();
        failures.push_back(now);
        while failures.len() > (limits.failures_max as usize).max(1) {
            failures.pop_front();
        }
        assert!(self.recent.len() <= FAILURE_SOURCES_MAX);
    }

    /// A successful enrollment clears the agent's count (never a source's: one address may
    /// guess for many agents).
    pub fn clear(&mut self, who: &str) {
        self.recent.remove(who);
    }

    fn forget_expired(&mut self, limits: Limits, now: Instant) {
        self.recent.retain(|_, failures| {
            failures.back().is_some_and(|last| now.saturating_duration_since(*last) < limits.window)
        });
    }

    fn forget_stalest(&mut self) {
        let stalest = self
            .recent
            .iter()
            .min_by_key(|(_, failures)| failures.back().copied())
            .map(|(who, _)| who.clone());
        if let Some(who) = stalest {
            self.recent.remove(&who);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use security_core::challenge::ClientHello;

    const LIMITS: Limits = Limits { failures_max: 3, window: Duration::from_secs(60) };

    /// Setup: three failures within the window. Expectation: throttled until the first one
    /// leaves the window, free again after, and a success clears the count.
    #[test]
    fn s2_failures_throttle_until_the_window_passes() {
        let start = Instant::now();
        let mut failures = Failures::default();
        for second in 0..2 {
            failures.record("agent:d1", LIMITS, start + Duration::from_secs(second));
            assert_eq!(failures.throttled_for("agent:d1", LIMITS, start), None);
        }
        failures.record("agent:d1", LIMITS, start + Duration::from_secs(2));
        let now = start + Duration::from_secs(3);
        assert_eq!(failures.throttled_for("agent:d1", LIMITS, now), Some(Duration::from_secs(57)));
        assert_eq!(failures.throttled_for("ip:10.0.0.1", LIMITS, now), None);
        let later = start + Duration::from_secs(60);
        assert_eq!(failures.throttled_for("agent:d1", LIMITS, later), None);
        failures.clear("agent:d1");
        failures.record("agent:d1", LIMITS, later);
        assert_eq!(failures.throttled_for("agent:d1", LIMITS, later), None);
    }

    /// Setup: a table of failure sources at its bound. Action: one more source fails.
    /// Expectation: the stalest source is forgotten; the table stays at its bound.
    #[test]
    fn s2_failure_table_stays_bounded() {
        let start = Instant::now();
        let mut failures = Failures::default();
        for n in 0..FAILURE_SOURCES_MAX {
            failures.record(&format!("ip:{n}"), LIMITS, start + Duration::from_millis(n as u64));
        }
        failures.record("ip:new", LIMITS, start + Duration::from_secs(1));
        assert_eq!(failures.recent.len(), FAILURE_SOURCES_MAX);
        assert!(!failures.recent.contains_key("ip:0"));
        assert!(failures.recent.contains_key("ip:new"));
    }

    fn pending(issued_at: Instant) -> Pending {
        let hello = ClientHello {
            principal: "d1".into(),
            purpose: crate::wire::ENROLL_PURPOSE.into(),
            client_nonce: [1; 24],
        };
        let (login, _) = ServerLogin::challenge(None, &hello, &[0; 32]).expect("challenge");
        Pending { agent_id: "d1".into(), login, issued_at }
    }

    /// Expectation: a challenge answers one proof within its 60 s, then is gone; one taken at
    /// 60 s has expired and is gone too.
    #[test]
    fn a1_challenges_are_single_use_and_expire() {
        let start = Instant::now();
        let mut challenges = PendingChallenges::default();
        assert!(challenges.insert([1; 24], pending(start), start));
        assert!(challenges.insert([2; 24], pending(start), start));
        let almost = start + Duration::from_secs(59);
        assert!(challenges.take(&[1; 24], almost).is_some_and(|p| p.agent_id == "d1"));
        assert!(challenges.take(&[1; 24], almost).is_none());
        assert!(challenges.take(&[2; 24], start + CHALLENGE_TTL).is_none());
        assert!(challenges.by_nonce.is_empty());
    }
}
