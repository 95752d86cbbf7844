//! Failed proofs counted in the replicated state (issue 16 point 5; a rule of log format 3).
//!
//! Each KMA throttles passphrase proofs on its own too, per principal and per source address,
//! but a client that spreads its guesses over N KMAs would get N times the limit from those
//! counts alone. So every failed proof of a principal that exists, which the KMA proposes as
//! `Command::RecordAuthenticationFailure` for the audit log anyway, is also counted here, in one
//! window per principal that every KMA shares: a KMA asks [`State::login_throttled`] before any
//! passphrase work, and the cluster as a whole allows `login_failures_max` failures per
//! `login_throttle_ms` and principal.
//!
//! Counted are the principals that exist: a user ID (logins), and `agent:<agent ID>`
//! ([`AGENT_PRINCIPAL_PREFIX`], as the agent gateway names an agent's failed enrollments) for
//! an agent. The summary records of failures for unknown principals ("N failed logins for
//! unknown principals in the last minute"), quorum members' failed approvals ("quorum member
//! q1") and names that match nothing are audited only: counting them would let made-up names
//! grow the state, and a window goes with its principal, so the map stays bounded by the users
//! and agents that exist ([`LOGIN_FAILURE_WINDOWS_MAX`]).
//!
//! Windows are removed whatever the cluster's format (a login, a new passphrase, a deletion):
//! below format 3 there is none to remove, and a window must never outlive its principal.

use crate::agent::AGENT_PRINCIPAL_PREFIX;
use crate::cluster::FailureWindow;
use crate::format::LOG_FORMAT_3;
use crate::limits::LOGIN_FAILURE_WINDOWS_MAX;
use crate::state::State;

impl State {
    /// How long principal `principal` is still throttled at `now_ms`, in milliseconds: `Some`
    /// while the failures of its current window reached `login_failures_max` and the window
    /// (`login_throttle_ms` from its first failure) has not ended; `None` otherwise, and always
    /// below log format 3, where failures are not counted.
    ///
    /// For the node: each KMA asks it, with its own clock, before any passphrase work (the
    /// challenge and the proof of a user login, of an agent's enrollment as
    /// `agent:<agent ID>`), in addition to its own counts per source address, and refuses a
    /// throttled principal with the wait as its retry hint. The answer reads the applied state:
    /// failures another KMA proposed count once they are applied here. A clock behind the
    /// leader's (`since_ms` is the leader's stamp) never makes the wait longer than one window.
    pub fn login_throttled(&self, principal: &str, now_ms: u64) -> Option<u64> {
        if !self.format_rules_apply(LOG_FORMAT_3) {
            return None;
        }
        let window = self.meta.login_failures.get(principal)?;
        let security = self.meta.security;
        if window.count < security.login_failures_max {
            return None;
        }
        let ends_at_ms = window.since_ms.saturating_add(security.login_throttle_ms);
        let remaining_ms = ends_at_ms.saturating_sub(now_ms).min(security.login_throttle_ms);
        (remaining_ms > 0).then_some(remaining_ms)
    }

    /// Whether failed proofs of `principal` are counted: an existing user's ID, or
    /// `agent:<agent ID>` of an existing agent.
    pub(crate) fn login_failures_counted(&self, principal: &str) -> bool {
        self.meta.users.contains_key(principal)
            || principal
                .strip_prefix(AGENT_PRINCIPAL_PREFIX)
                .is_some_and(|agent_id| self.meta.agents.contains_key(agent_id))
    }

    /// Counts one failed proof of `principal` at the entry's time `now_ms` (log format 3): a
    /// new window when there is none or the last one ended, else one more in it.
    pub(crate) fn count_login_failure(&mut self, principal: &str, now_ms: u64) {
        assert!(self.format_rules_apply(LOG_FORMAT_3), "a rule of log format 3");
        assert!(self.login_failures_counted(principal), "only principals that exist count");
        let throttle_ms = self.meta.security.login_throttle_ms;
        let window = self
            .meta
            .login_failures
            .entry(principal.into())
            .or_insert(FailureWindow { since_ms: now_ms, count: 0 });
        if now_ms.saturating_sub(window.since_ms) >= throttle_ms {
            *window = FailureWindow { since_ms: now_ms, count: 0 };
        }
        window.count = window.count.saturating_add(1);
        assert!(window.since_ms <= now_ms, "a window starts at an applied entry's time");
        let principals = self.meta.users.len() + self.meta.agents.len();
        assert!(self.meta.login_failures.len() <= principals, "one window per principal");
        assert!(principals <= LOGIN_FAILURE_WINDOWS_MAX, "users and agents keep their bounds");
    }

    /// Forgets the failed proofs of `principal`: it proved its passphrase, or was given a new
    /// one.
    pub(crate) fn clear_login_failures(&mut self, principal: &str) {
        self.meta.login_failures.remove(principal);
    }

    /// Forgets the window of `principal` once nothing it names exists any more (its user or
    /// agent was deleted). A user ID may itself read `agent:<ID>`: the window then stays while
    /// the other principal of that name exists.
    pub(crate) fn drop_login_failures_of_deleted(&mut self, principal: &str) {
        if !self.login_failures_counted(principal) {
            self.meta.login_failures.remove(principal);
        }
    }
}
