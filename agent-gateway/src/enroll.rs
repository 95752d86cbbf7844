//! Enrollment (SPEC A1): the agent proves its passphrase by challenge/response (the passphrase
//! never crosses the wire), sends a certificate request for a key pair it made itself, and
//! gets a long-lived certificate whose fingerprint the state records. Failures are throttled
//! per agent ID and per source address, and each one is audited.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::wire::ErrorCode;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use security_core::challenge::{ClientHello, ClientProof, ServerLogin};
use sha2::{Digest, Sha256};
use statemachine::limits::NAME_LEN_MAX;
use statemachine::Command;

use crate::backend::Backend;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::server::{json_response, Gateway, Peer};
use crate::throttle::{Limits, Pending};
use crate::wire::{
    EnrollChallenge, EnrollHello, EnrollProof, EnrollResult, AGENT_CN_PREFIX, ENROLL_PURPOSE,
};

type Gw<B> = State<Arc<Gateway<B>>>;

/// A panic while a table was held leaves it consistent (every update is one call), so the
/// table is used on rather than failing every later enrollment.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn agent_key(agent_id: &str) -> String {
    format!("{AGENT_CN_PREFIX}{agent_id}")
}

fn source_key(source: &str) -> String {
    format!("ip:{source}")
}

fn check_agent_id(agent_id: &str) -> Result<(), ApiError> {
    if agent_id.is_empty() || agent_id.len() > NAME_LEN_MAX {
        return Err(ApiError::bad_request(format!(
            "agent_id must be 1 to {NAME_LEN_MAX} bytes, as the Operator created it"
        )));
    }
    Ok(())
}

/// Refuses the attempt while the agent ID or the source address is throttled.
fn check_throttle<B>(
    gateway: &Gateway<B>,
    agent_id: &str,
    source: &str,
    limits: Limits,
) -> Result<(), ApiError> {
    let failures = lock(&gateway.failures);
    let now = Instant::now();
    let wait = [agent_key(agent_id), source_key(source)]
        .iter()
        .filter_map(|who| failures.throttled_for(who, limits, now))
        .max();
    let Some(wait) = wait else {
        return Ok(());
    };
    let mut error = ApiError::new(
        ErrorCode::Throttled,
        format!("too many failed enrollments for agent '{agent_id}' or from {source}"),
    )
    .help("wait, then try again with the right passphrase; a Security Officer sets the limits");
    error.body.retry_after_ms = Some(wait.as_millis().try_into().unwrap_or(u64::MAX));
    Err(error)
}

/// Counts a failed attempt, audits it, and builds the refusal.
async fn fail<B: Backend>(
    gateway: &Gateway<B>,
    agent_id: &str,
    source: &str,
    limits: Limits,
    message: &str,
) -> ApiError {
    {
        let mut failures = lock(&gateway.failures);
        let now = Instant::now();
        failures.record(&agent_key(agent_id), limits, now);
        failures.record(&source_key(source), limits, now);
    }
    let command = Command::RecordAuthenticationFailure {
        principal: agent_key(agent_id),
        source: source.to_owned(),
    };
    match gateway.backend.propose(None, None, command).await {
        Ok(applied) => {
            if let Err(reject) = applied.result {
                tracing::warn!(agent_id, source, %reject, "enrollment failure not audited");
            }
        }
        Err(error) => tracing::warn!(agent_id, source, %error, "enrollment failure not audited"),
    }
    tracing::info!(agent_id, source, message, "enrollment refused");
    ApiError::new(ErrorCode::AuthenticationFailed, message)
        .help("check the agent ID and passphrase with the Operator; failed attempts are counted")
}

/// The throttling limits and the agent's verifier (`None`: unknown agent, decoy challenge);
/// refused when the agent's failed proofs, counted in the replicated state from every KMA
/// (issue #16 point 5), reached the limit: N KMAs allow no more guesses than one.
async fn lookup<B: Backend>(
    gateway: &Gateway<B>,
    agent_id: &str,
) -> Result<(Limits, Option<Vec<u8>>), ApiError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
    let (limits, verifier, throttled_ms) = gateway
        .backend
        .read(0, |state| {
            let security = state.meta().security;
            let limits = Limits {
                failures_max: security.login_failures_max,
                window: Duration::from_millis(security.login_throttle_ms),
            };
            let verifier = state.meta().agents.get(agent_id).map(|a| a.passphrase_verifier.clone());
            (limits, verifier, state.login_throttled(&agent_key(agent_id), now_ms))
        })
        .await?;
    if let Some(wait_ms) = throttled_ms {
        let mut error = ApiError::new(
            ErrorCode::Throttled,
            format!("too many failed enrollments for agent '{agent_id}' across the cluster"),
        )
        .help("wait, then try again with the right passphrase; a Security Officer sets the limits");
        error.body.retry_after_ms = Some(wait_ms);
        return Err(error);
    }
    Ok((limits, verifier))
}

pub(crate) async fn hello<B: Backend>(
    State(gateway): Gw<B>,
    peer: Peer,
    JsonBody(request): JsonBody<EnrollHello>,
) -> Response {
    let answer = async {
        check_agent_id(&request.agent_id)?;
        let (limits, verifier) = lookup(&gateway, &request.agent_id).await?;
        check_throttle(&gateway, &request.agent_id, &peer.source(), limits)?;
        let hello = ClientHello {
            principal: request.agent_id.clone(),
            purpose: ENROLL_PURPOSE.into(),
            client_nonce: request.client_nonce,
        };
        let decoy_secret = gateway.backend.decoy_secret();
        let (login, challenge) = ServerLogin::challenge(verifier.as_deref(), &hello, &decoy_secret)
            .map_err(|error| {
                ApiError::internal(format!("agent '{}': {error}", request.agent_id))
            })?;
        let now = Instant::now();
        let pending = Pending { agent_id: request.agent_id, login, issued_at: now };
        if !lock(&gateway.pending).insert(challenge.server_nonce, pending, now) {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "too many enrollments are waiting for their proof on this KMA",
            )
            .retryable()
            .help("try again in a minute or on another KMA"));
        }
        Ok(json_response(&EnrollChallenge {
            salt: challenge.salt,
            kdf: challenge.kdf,
            server_nonce: challenge.server_nonce,
        }))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn proof<B: Backend>(
    State(gateway): Gw<B>,
    peer: Peer,
    JsonBody(request): JsonBody<EnrollProof>,
) -> Response {
    let answer = async {
        let agent_id = request.agent_id.as_str();
        check_agent_id(agent_id)?;
        let source = peer.source();
        let (limits, _) = lookup(&gateway, agent_id).await?;
        check_throttle(&gateway, agent_id, &source, limits)?;
        let pending = lock(&gateway.pending).take(&request.server_nonce, Instant::now());
        let Some(pending) = pending.filter(|pending| pending.agent_id == agent_id) else {
            let stale = "this proof answers no pending challenge of this KMA (each is used once \
                         and expires after 60 s): start again with enroll/hello";
            return Err(fail(&gateway, agent_id, &source, limits, stale).await);
        };
        let proof = ClientProof { server_nonce: request.server_nonce, proof: request.proof };
        let Ok(server_final) = pending.login.verify(&proof) else {
            let wrong = "enrollment failed: unknown agent or wrong passphrase";
            return Err(fail(&gateway, agent_id, &source, limits, wrong).await);
        };
        lock(&gateway.failures).clear(&agent_key(agent_id));
        let (certificate_pem, ca_pem) = sign(&gateway, agent_id, &request.csr_pem)?;
        let certificate_fingerprint = fingerprint(&certificate_pem)?;
        let command =
            Command::RecordAgentEnrollment { id: agent_id.into(), certificate_fingerprint };
        let applied = gateway.backend.propose(None, None, command).await?;
        applied.result?;
        tracing::info!(agent_id, source, index = applied.index, "agent enrolled");
        Ok(json_response(&EnrollResult {
            server_signature: server_final.server_signature,
            certificate_pem,
            ca_pem,
            index: applied.index,
        }))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// A certificate that cannot be signed is almost always a malformed request from the drive.
fn sign<B: Backend>(
    gateway: &Gateway<B>,
    agent_id: &str,
    csr_pem: &str,
) -> Result<(String, String), ApiError> {
    gateway.backend.sign_agent_certificate(agent_id, csr_pem).map_err(|error| {
        if error.retryable {
            ApiError::from(error)
        } else {
            ApiError::bad_request(format!("certificate request: {}", error.message))
        }
    })
}

/// SHA-256 of the certificate's DER: what the listener compares on every request.
fn fingerprint(certificate_pem: &str) -> Result<[u8; 32], ApiError> {
    let der = rustls_pemfile::certs(&mut certificate_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::internal("the signed agent certificate is not a PEM certificate")
        })?;
    Ok(Sha256::digest(der.as_ref()).into())
}
