//! Passphrase logins on the management listener (SPEC S2): users get a short-lived certificate,
//! joining KMAs their KMA certificate. The exchange is `security_core::challenge`: the
//! passphrase never crosses the wire and a captured exchange cannot be replayed, because each
//! challenge is single-use and forgotten after a minute.
//!
//! Failed attempts are counted per principal and per source address on this KMA; past the
//! cluster's `login_failures_max` within `login_throttle_ms` further attempts are refused
//! before any passphrase is checked. A failure for a principal that exists is proposed as an
//! audit record at once (the throttle bounds how many); failures for unknown principals are
//! only counted per source here and summed up into one record per source and minute
//! (`duties::run_login_failure_summary`), so a flood of made-up names cannot grow the
//! replicated log without bound (issue #16 points 5 and 9).
//!
//! Open challenges are bounded per source address ([`OPEN_PER_SOURCE_MAX`]) and per principal
//! ([`OPEN_PER_PRINCIPAL_MAX`]) as well as in all, so that one flood cannot fill the table and
//! lock everyone else out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agent_gateway::throttle::{Failures, Limits};
use security_core::challenge::{
    ChannelBinding, ClientHello, ClientProof, ServerChallenge, ServerFinal, ServerLogin,
};
use statemachine::cluster::SecuritySettings;

const CHALLENGE_TTL: Duration = Duration::from_secs(60);
const PENDING_MAX: usize = 10_000;
/// Open challenges one source address may hold: a person logs in once or twice at a time.
pub const OPEN_PER_SOURCE_MAX: usize = 32;
/// Open challenges for one principal, from all sources.
pub const OPEN_PER_PRINCIPAL_MAX: usize = 16;
/// Sources whose failures for unknown principals are counted one by one; past it they are
/// counted together, under the unspecified address.
const UNKNOWN_SOURCES_MAX: usize = 4_096;

/// Why a login step failed, as the client is told.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize, Clone)]
pub enum LoginError {
    #[error("too many failed attempts for {what}: wait {retry_after_s} s before trying again")]
    Throttled { what: String, retry_after_s: u64 },
    #[error("unknown principal or wrong passphrase (failed attempts are counted and audited)")]
    Refused,
    #[error("unknown or expired challenge: start the login again")]
    UnknownChallenge,
    #[error("{0}")]
    Other(String),
}

struct Pending {
    login: ServerLogin,
    principal: String,
    /// The principal exists: a decoy challenge was not needed.
    known: bool,
    purpose: String,
    source: IpAddr,
    created: Instant,
}

pub struct Logins {
    pending: Mutex<HashMap<[u8; 24], Pending>>,
    /// The gateway's bounded failure table, shared in shape with agent enrollment.
    failures: Mutex<Failures>,
    /// Failed proofs for unknown principals per source, since the last summary.
    unknown_failures: Mutex<HashMap<IpAddr, u64>>,
    /// Behind decoy challenges; replaced once the CA key is in memory
    /// ([`Logins::set_decoy_secret`]), so that every unlocked KMA answers alike.
    decoy_secret: std::sync::RwLock<[u8; 32]>,
}

/// The secret behind decoy login challenges, derived from the CA key, which every unlocked KMA
/// holds, so that all KMAs answer an unknown principal with the same salt.
pub fn decoy_secret(ca_key_pem: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::new()
        .chain_update(b"kms decoy login salt v1")
        .chain_update(ca_key_pem.as_bytes())
        .finalize()
        .into()
}

fn unpoison<T>(result: Result<T, std::sync::PoisonError<T>>) -> T {
    result.unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn keys(principal: &str, source: IpAddr) -> [String; 2] {
    [format!("principal:{principal}"), format!("source:{source}")]
}

fn limits(settings: &SecuritySettings) -> Limits {
    Limits {
        failures_max: settings.login_failures_max,
        window: Duration::from_millis(settings.login_throttle_ms),
    }
}

impl Logins {
    /// Takes the counts of failed proofs for unknown principals per source since the last call.
    pub fn take_unknown_failures(&self) -> Vec<(IpAddr, u64)> {
        unpoison(self.unknown_failures.lock()).drain().collect()
    }
}

/// A principal that passed the challenge.
pub struct Verified {
    pub principal: String,
    pub purpose: String,
    pub server_final: ServerFinal,
}

impl Logins {
    pub fn new(decoy_secret: [u8; 32]) -> Logins {
        Logins {
            pending: Mutex::new(HashMap::new()),
            failures: Mutex::new(Failures::default()),
            unknown_failures: Mutex::new(HashMap::new()),
            decoy_secret: std::sync::RwLock::new(decoy_secret),
        }
    }

    pub fn decoy_secret(&self) -> [u8; 32] {
        *unpoison(self.decoy_secret.read())
    }

    pub fn set_decoy_secret(&self, secret: [u8; 32]) {
        *unpoison(self.decoy_secret.write()) = secret;
    }

    /// Refuses when the principal or the source address has failed too often lately.
    pub fn check_throttle(
        &self,
        principal: &str,
        source: IpAddr,
        settings: &SecuritySettings,
    ) -> Result<(), LoginError> {
        let failures = unpoison(self.failures.lock());
        for key in keys(principal, source) {
            if let Some(wait) = failures.throttled_for(&key, limits(settings), Instant::now()) {
                let retry_after_s = wait.as_secs().max(1);
                return Err(LoginError::Throttled { what: key, retry_after_s });
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, principal: &str, source: IpAddr, settings: &SecuritySettings) {
        let mut failures = unpoison(self.failures.lock());
        for key in keys(principal, source) {
            failures.record(&key, limits(settings), Instant::now());
        }
    }

    /// Step one: a challenge for `hello`, real when `verifier` is known, a decoy otherwise.
    pub fn challenge(
        &self,
        hello: &ClientHello,
        verifier: Option<&[u8]>,
        source: IpAddr,
    ) -> Result<ServerChallenge, LoginError> {
        let (login, challenge) = ServerLogin::challenge(verifier, hello, &self.decoy_secret())
            .map_err(|e| LoginError::Other(e.to_string()))?;
        let mut pending = unpoison(self.pending.lock());
        pending.retain(|_, p| p.created.elapsed() < CHALLENGE_TTL);
        if pending.len() >= PENDING_MAX {
            return Err(LoginError::Other("this KMA is busy with logins: retry shortly".into()));
        }
        let from_source = pending.values().filter(|p| p.source == source).count();
        let for_principal = pending.values().filter(|p| p.principal == hello.principal).count();
        if from_source >= OPEN_PER_SOURCE_MAX || for_principal >= OPEN_PER_PRINCIPAL_MAX {
            return Err(LoginError::Other(format!(
                "too many unfinished logins from {source} or for '{}': finish one, or retry in \
                 a minute",
                hello.principal
            )));
        }
        let entry = Pending {
            login,
            principal: hello.principal.clone(),
            known: verifier.is_some(),
            purpose: hello.purpose.clone(),
            source,
            created: Instant::now(),
        };
        pending.insert(challenge.server_nonce, entry);
        Ok(challenge)
    }

    /// Step two: checks the proof against the challenge it answers (used up either way). A
    /// wrong proof is counted; it names the principal, for the audit record, when the principal
    /// exists, and is counted for the per-source summary when it does not.
    /// `binding` is the channel binding the proof must carry (joins), `None` for logins.
    pub fn verify(
        &self,
        proof: &ClientProof,
        binding: Option<&ChannelBinding>,
        source: IpAddr,
        settings: &SecuritySettings,
    ) -> Result<Verified, (LoginError, Option<String>)> {
        let entry = unpoison(self.pending.lock()).remove(&proof.server_nonce);
        let Some(entry) = entry.filter(|p| p.created.elapsed() < CHALLENGE_TTL) else {
            return Err((LoginError::UnknownChallenge, None));
        };
        if entry.source != source {
            return Err((LoginError::UnknownChallenge, None));
        }
        match entry.login.verify_bound(proof, binding) {
            Ok(server_final) => {
                Ok(Verified { principal: entry.principal, purpose: entry.purpose, server_final })
            }
            Err(_) => {
                self.record_failure(&entry.principal, source, settings);
                if entry.known {
                    return Err((LoginError::Refused, Some(entry.principal)));
                }
                self.count_unknown_failure(source);
                Err((LoginError::Refused, None))
            }
        }
    }

    /// Counts a failed proof for a principal that does not exist, for the per-source summary
    /// (`duties::run_login_failure_summary`) instead of an audit record each.
    pub fn count_unknown_failure(&self, source: IpAddr) {
        let mut unknown = unpoison(self.unknown_failures.lock());
        let room = unknown.contains_key(&source) || unknown.len() < UNKNOWN_SOURCES_MAX;
        let bucket = match room {
            true => source,
            false => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        *unknown.entry(bucket).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use security_core::challenge::ClientLogin;

    use super::{Logins, OPEN_PER_PRINCIPAL_MAX, OPEN_PER_SOURCE_MAX};

    fn source(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// Setup: a KMA's logins. Action: one source opens challenges for made-up names until
    /// refused; then other sources open challenges for one name until refused; then a third
    /// party opens one for another user. Expect: the first source stops at its bound, the name
    /// at its own, and the other user still gets a challenge: a flood of hellos fills neither
    /// the table nor another user's way in. (SPEC S2; issue #16 point 5)
    #[test]
    fn s2_open_challenges_are_bounded_per_source_and_per_principal() {
        let logins = Logins::new([7; 32]);
        let hello = |principal: &str| ClientLogin::start(principal, "user").1;
        for n in 0..OPEN_PER_SOURCE_MAX {
            assert!(logins.challenge(&hello(&format!("nobody-{n}")), None, source(2)).is_ok());
        }
        let refused = logins.challenge(&hello("one-more"), None, source(2));
        assert!(refused.is_err(), "the source's bound holds");
        for n in 0..OPEN_PER_PRINCIPAL_MAX {
            let from = source(10 + u8::try_from(n).expect("small"));
            assert!(logins.challenge(&hello("admin"), None, from).is_ok());
        }
        let refused = logins.challenge(&hello("admin"), None, source(99));
        assert!(refused.is_err(), "the principal's bound holds");
        assert!(logins.challenge(&hello("alice"), None, source(100)).is_ok(), "others get in");
    }
}
