//! Unlocking a locked KMA with the quorum members' passphrases alone (issue #16 point 5), as
//! Vault's unseal keys do: after a cold restart every KMA may be locked, and a locked KMA signs
//! no certificate, so no user can log in to approve anything. Quorum members are not users
//! (SPEC S4): their passphrases are what authenticates them here.
//!
//! `POST /v1/unlock/member` on the management listener takes one member's ID and passphrase
//! over TLS (the caller checks the KMA against the cluster CA; no client certificate is
//! needed). The locked KMA unwraps that member's share from its applied state on a blocking
//! thread and keeps it; once a threshold of members have given theirs, it combines them, and
//! the split's authentication and the master key's check value decide whether the key is
//! right. Each member runs their own `kmsctl quorum approve --member M --unlock HOST:PORT`:
//! nobody types another member's passphrase.
//!
//! What an attacker gets: an unlocked KMA refuses at once, before any work; wrong passphrases
//! are throttled per member and per source and audited like failed logins; at most
//! [`UNWRAPS_AT_ONCE`] argon2 derivations run at a time, so a flood costs a refusal each, not
//! the KMA's memory. The unlock itself is audited once the cluster can commit
//! (`Command::RecordMemberUnlock`).

// A handler helper returns the refusal response itself; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use admin_api::api::{ErrorCode, MemberUnlockProgress, MemberUnlockRequest};
use admin_api::routes::extract::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use statemachine::Command;
use tokio::sync::Semaphore;

use crate::listen::security_api::{
    audit_failure, login_refusal, refuse, unwrap_share_blocking, Remote, SecurityApi,
};

/// Argon2 derivations for member unlocks running at once; more callers are told to retry.
pub const UNWRAPS_AT_ONCE: usize = 2;

/// How long the KMA keeps trying to write the audit record of an unlock.
const AUDIT_RETRY_FOR: Duration = Duration::from_secs(600);

/// The state of the member-unlock route: the security API's handles and the bound on
/// concurrent derivations.
pub struct MemberUnlock {
    pub api: Arc<SecurityApi>,
    pub unwraps: Semaphore,
}

impl MemberUnlock {
    pub fn new(api: Arc<SecurityApi>) -> MemberUnlock {
        MemberUnlock { api, unwraps: Semaphore::new(UNWRAPS_AT_ONCE) }
    }
}

pub fn routes() -> Router<Arc<MemberUnlock>> {
    Router::new().route(admin_api::api::MEMBER_UNLOCK_PATH, post(give_share))
}

/// The request with its passphrase wiped when the handler is done with it.
struct Wiped(MemberUnlockRequest);

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0.passphrase);
    }
}

async fn give_share(
    State(unlock): State<Arc<MemberUnlock>>,
    Extension(remote): Extension<Remote>,
    Json(request): Json<MemberUnlockRequest>,
) -> Response {
    let request = Wiped(request);
    match give(&unlock, remote.0.ip(), &request.0).await {
        Ok(progress) => Json(progress).into_response(),
        Err(refused) => refused,
    }
}

/// What the locked KMA needs of its applied state to check one member's share.
struct MemberView {
    wrapped_share: Vec<u8>,
    known_member: bool,
    cluster_id: statemachine::ClusterId,
    threshold: usize,
    settings: statemachine::cluster::SecuritySettings,
}

async fn member_view(api: &SecurityApi, member: &str) -> Result<MemberView, Response> {
    let state = api.local.state.read().await;
    let meta = state.meta();
    let Some(cluster_id) = state.cluster_id() else {
        let message = "this KMA belongs to no cluster yet: nothing to unlock";
        return Err(refuse(ErrorCode::NotInitialised, message, false));
    };
    let name = &api.local.config.name;
    if meta.kmas.get(name).is_some_and(|kma| kma.locked) {
        let message = format!(
            "KMA '{name}' is locked in the cluster's state (by an administrator, or it never was \
             unlocked since it joined): members' passphrases alone do not override that; a \
             Security Officer starts an unlock operation at a KMA that is unlocked, and the \
             quorum approves it"
        );
        return Err(refuse(ErrorCode::KmaLocked, message, false));
    }
    let wrapped = meta.quorum.members.iter().find(|m| m.id == member);
    Ok(MemberView {
        // An unknown member is answered as a wrong passphrase, after the same work.
        wrapped_share: wrapped.map(|m| m.wrapped_share.clone()).unwrap_or_default(),
        known_member: wrapped.is_some(),
        cluster_id,
        threshold: usize::from(meta.quorum.threshold),
        settings: meta.security,
    })
}

async fn give(
    unlock: &MemberUnlock,
    source: IpAddr,
    request: &MemberUnlockRequest,
) -> Result<MemberUnlockProgress, Response> {
    let api = &unlock.api;
    let progress =
        |members_given: Vec<String>, threshold: usize, unlocked: bool| MemberUnlockProgress {
            kma: api.local.config.name.clone(),
            node_id: api.local.node_id(),
            members_given,
            threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
            unlocked,
        };
    if api.local.vault.is_unlocked() {
        let message = format!(
            "KMA '{}' is unlocked already: it needs no member's passphrase",
            api.local.config.name
        );
        return Err(refuse(ErrorCode::Rejected, message, false));
    }
    let view = member_view(api, &request.member).await?;
    let principal = format!("quorum member {}", request.member);
    if let Err(error) = api.logins.check_throttle(&principal, source, &view.settings) {
        return Err(login_refusal(&error));
    }
    let Ok(_permit) = unlock.unwraps.try_acquire() else {
        let message = "this KMA is checking other members' passphrases: retry in a few seconds";
        return Err(refuse(ErrorCode::Unavailable, message, true));
    };
    let (wrapped, cluster_id) = (view.wrapped_share.clone(), view.cluster_id);
    let share = unwrap_share_blocking(wrapped, cluster_id, &request.member, &request.passphrase);
    let share = share.await;
    let Some(share) = share else {
        api.logins.record_failure(&principal, source, &view.settings);
        // A member that exists is audited at once; made-up names only go into the per-source
        // summary, so a flood of them cannot grow the replicated log without bound.
        match view.known_member {
            true => audit_failure(api, principal, source),
            false => api.logins.count_unknown_failure(source),
        }
        let message = format!(
            "wrong passphrase for quorum member '{}', or no such member (failed attempts are \
             counted and audited)",
            request.member
        );
        return Err(refuse(ErrorCode::UnlockFailed, message, false));
    };
    let members_given = api.local.vault.give_member_share(&request.member, share);
    match api.local.vault.unlock_with_member_shares(view.threshold) {
        Ok(false) => Ok(progress(members_given, view.threshold, false)),
        Ok(true) => {
            tracing::info!(members = ?members_given, "unlocked by quorum members' passphrases");
            audit_unlock(api, members_given.clone());
            Ok(progress(members_given, view.threshold, true))
        }
        Err(error) => {
            let message = format!(
                "{error}; the shares given so far were dropped: each member gives their \
                 passphrase again"
            );
            Err(refuse(ErrorCode::UnlockFailed, message, false))
        }
    }
}

/// Writes the unlock to the audit log once the cluster can commit: right away when a majority
/// runs, later when the unlocked KMA was the one missing. Gives up after [`AUDIT_RETRY_FOR`],
/// saying so in the KMA's log.
fn audit_unlock(api: &SecurityApi, members: Vec<String>) {
    let proposer = api.proposer.clone();
    let kma = api.local.config.name.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + AUDIT_RETRY_FOR;
        let command = Command::RecordMemberUnlock { kma, members };
        loop {
            match proposer.propose(proposer.system(command.clone())).await {
                Ok(applied) if applied.result.is_ok() => return,
                Ok(applied) => {
                    tracing::error!(result = ?applied.result, "the unlock's audit record was refused");
                    return;
                }
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    tracing::error!(%error, "the unlock could not be written to the audit log");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    });
}
