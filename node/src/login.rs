//! Passphrase logins on the management listener (SPEC S2): users get a short-lived certificate,
//! joining KMAs their KMA certificate. The exchange is `security_core::challenge`: the
//! passphrase never crosses the wire and a captured exchange cannot be replayed, because each
//! challenge is single-use and forgotten after a minute.
//!
//! Failed attempts are counted per principal and per source address on this KMA; past the
//! cluster's `login_failures_max` within `login_throttle_ms` further attempts are refused
//! before any passphrase is checked. Every failure is also proposed as an audit record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agent_gateway::throttle::{Failures, Limits};
use security_core::challenge::{
    ClientHello, ClientProof, ServerChallenge, ServerFinal, ServerLogin,
};
use statemachine::cluster::SecuritySettings;

const CHALLENGE_TTL: Duration = Duration::from_secs(60);
const PENDING_MAX: usize = 10_000;

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
    purpose: String,
    source: IpAddr,
    created: Instant,
}

pub struct Logins {
    pending: Mutex<HashMap<[u8; 24], Pending>>,
    /// The gateway's bounded failure table, shared in shape with agent enrollment.
    failures: Mutex<Failures>,
    decoy_secret: [u8; 32],
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
            decoy_secret,
        }
    }

    pub fn decoy_secret(&self) -> [u8; 32] {
        self.decoy_secret
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
        let (login, challenge) = ServerLogin::challenge(verifier, hello, &self.decoy_secret)
            .map_err(|e| LoginError::Other(e.to_string()))?;
        let mut pending = unpoison(self.pending.lock());
        pending.retain(|_, p| p.created.elapsed() < CHALLENGE_TTL);
        if pending.len() >= PENDING_MAX {
            return Err(LoginError::Other("this KMA is busy with logins: retry shortly".into()));
        }
        let entry = Pending {
            login,
            principal: hello.principal.clone(),
            purpose: hello.purpose.clone(),
            source,
            created: Instant::now(),
        };
        pending.insert(challenge.server_nonce, entry);
        Ok(challenge)
    }

    /// Step two: checks the proof against the challenge it answers (used up either way). A
    /// wrong proof is counted and names the principal, for the audit record.
    pub fn verify(
        &self,
        proof: &ClientProof,
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
        match entry.login.verify(proof) {
            Ok(server_final) => {
                Ok(Verified { principal: entry.principal, purpose: entry.purpose, server_final })
            }
            Err(_) => {
                self.record_failure(&entry.principal, source, settings);
                Err((LoginError::Refused, Some(entry.principal)))
            }
        }
    }
}
