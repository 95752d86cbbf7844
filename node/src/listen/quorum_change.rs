//! A change of the quorum, with each new member entering their own passphrase (SPEC S3, S4;
//! issue #16 point 9).
//!
//! A Security Officer starts the change (`POST /v1/quorum/change`, the new members' IDs and the
//! threshold): this KMA splits its master key among them at once and keeps the shares in
//! memory, zeroized on drop. Each new member then enters their passphrase in their own call
//! (`POST /v1/quorum/change/member`, through an officer's session): it wraps that member's
//! share and the clear share is dropped. Once every member has, the KMA proposes the
//! `ChangeQuorum` operation with the wrapped shares, in the name of the officer who started it,
//! and the current quorum approves it as any quorum operation. Nobody types, and no request
//! carries, another member's passphrase.
//!
//! Pending changes live on the KMA that started them, for [`CHANGE_TTL`], at most
//! [`CHANGES_MAX`] at once; a restart forgets them (the officer starts the change again).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use admin_api::api::{
    ChangeQuorumProgress, ChangeQuorumRequest, ErrorCode, QuorumMemberPassphrase,
};
use admin_api::routes::extract::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use security_core::{KdfParams, Share};
use statemachine::quorum::{Quorum, QuorumMember, QuorumOperation};
use statemachine::reply::Reply;
use statemachine::{Actor, Command};

use crate::listen::management::Peer;
use crate::listen::security_api::{refuse, rejected, security_officer, SecurityApi};
use crate::write::Proposal;

/// How long a started change waits for its members' passphrases.
pub const CHANGE_TTL: Duration = Duration::from_secs(3600);

/// Changes pending on one KMA at once: a quorum changes rarely; this bounds what an officer's
/// session can make the KMA hold.
pub const CHANGES_MAX: usize = 4;

/// One started change.
struct PendingChange {
    /// The officer who started it: the operation is proposed in their name.
    officer: String,
    threshold: u8,
    ttl_ms: Option<u64>,
    started: Instant,
    /// Each new member, in the order given: the clear share until the member wraps it.
    members: Vec<(String, MemberShare)>,
}

enum MemberShare {
    Waiting(Share),
    Wrapped(Vec<u8>),
}

impl PendingChange {
    fn waiting_for(&self) -> Vec<String> {
        let waiting = self.members.iter().filter(|(_, s)| matches!(s, MemberShare::Waiting(_)));
        waiting.map(|(id, _)| id.clone()).collect()
    }
}

/// The changes this KMA holds, by change ID.
#[derive(Clone, Default)]
pub struct PendingChanges(Arc<Mutex<BTreeMap<u64, PendingChange>>>);

impl PendingChanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, PendingChange>> {
        let mut changes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        changes.retain(|_, change| change.started.elapsed() < CHANGE_TTL);
        changes
    }
}

fn progress(change: u64, pending: &PendingChange) -> ChangeQuorumProgress {
    ChangeQuorumProgress {
        change,
        waiting_for: pending.waiting_for(),
        operation: None,
        index: None,
    }
}

/// `POST /v1/quorum/change`: a Security Officer starts a change; the master key is split now.
pub async fn start(
    State(api): State<Arc<SecurityApi>>,
    Extension(peer): Extension<Peer>,
    Json(request): Json<ChangeQuorumRequest>,
) -> Response {
    let officer = match security_officer(&api, &peer).await {
        Ok(officer) => officer,
        Err(refused) => return refused,
    };
    let Some(master) = api.local.vault.master_key() else {
        let message = "this KMA is locked: start the quorum change on an unlocked KMA";
        return refuse(ErrorCode::KmaLocked, message, true);
    };
    let Some(cluster_id) = api.local.state.read().await.cluster_id() else {
        return refuse(ErrorCode::NotInitialised, "the cluster is not initialised", false);
    };
    let ids: Vec<&str> = request.members.iter().map(String::as_str).collect();
    let shares = match security_core::split_master_key_unwrapped(
        &master,
        cluster_id,
        &ids,
        request.threshold,
    ) {
        Ok(shares) => shares,
        Err(error) => return refuse(ErrorCode::BadQuorum, error.to_string(), false),
    };
    let mut changes = api.quorum_changes.lock();
    if changes.len() >= CHANGES_MAX {
        let message = format!(
            "{CHANGES_MAX} quorum changes already wait for their members on this KMA: finish \
             one, or wait until it expires (an hour after it started)"
        );
        return refuse(ErrorCode::Throttled, message, true);
    }
    // 52 bits: the ID travels in JSON, whose numbers are exact only up to 2^53.
    let change = rand::random::<u64>() >> 12;
    let members = request
        .members
        .iter()
        .cloned()
        .zip(shares)
        .map(|(id, share)| (id, MemberShare::Waiting(share)))
        .collect();
    let pending = PendingChange {
        officer,
        threshold: request.threshold,
        ttl_ms: request.ttl_ms,
        started: Instant::now(),
        members,
    };
    let answer = progress(change, &pending);
    changes.insert(change, pending);
    tracing::info!(change, "quorum change started: waiting for the new members' passphrases");
    Json(answer).into_response()
}

/// `POST /v1/quorum/change/member`: one new member's passphrase wraps their share; the last one
/// starts the quorum operation.
pub async fn member(
    State(api): State<Arc<SecurityApi>>,
    Extension(peer): Extension<Peer>,
    Json(mut request): Json<QuorumMemberPassphrase>,
) -> Response {
    let passphrase = zeroize::Zeroizing::new(std::mem::take(&mut request.passphrase));
    // An officer's session: the same check as the start, before any argon2id work.
    if let Err(refused) = security_officer(&api, &peer).await {
        return refused;
    }
    let len_min = api.local.state.read().await.meta().security.passphrase_len_min as usize;
    if passphrase.chars().count() < len_min {
        let message = format!(
            "the passphrase of '{}' is shorter than the cluster's minimum of {len_min} characters",
            request.member
        );
        return refuse(ErrorCode::PassphraseTooShort, message, false);
    }
    let share = {
        let changes = api.quorum_changes.lock();
        let Some(pending) = changes.get(&request.change) else {
            let message = format!(
                "no quorum change {} waits on this KMA (it expired, this KMA restarted, or it \
                 was started on another KMA): start it again with kmsctl quorum change",
                request.change
            );
            return refuse(ErrorCode::NotFound, message, false);
        };
        match pending.members.iter().find(|(id, _)| *id == request.member) {
            Some((_, MemberShare::Waiting(share))) => share.clone(),
            Some((_, MemberShare::Wrapped(_))) => {
                let message =
                    format!("'{}' already entered a passphrase for this change", request.member);
                return refuse(ErrorCode::BadRequest, message, false);
            }
            None => {
                let message = format!("'{}' is not a member of this quorum change", request.member);
                return refuse(ErrorCode::NotFound, message, false);
            }
        }
    };
    let wrapped = tokio::task::spawn_blocking(move || {
        security_core::wrap_member_share(&share, &passphrase, KdfParams::default())
    })
    .await;
    let wrapped = match wrapped {
        Ok(Ok(wrapped)) => wrapped,
        Ok(Err(error)) => return refuse(ErrorCode::BadQuorum, error.to_string(), false),
        Err(error) => return refuse(ErrorCode::Internal, error.to_string(), false),
    };
    let complete = {
        let mut changes = api.quorum_changes.lock();
        let Some(pending) = changes.get_mut(&request.change) else {
            return refuse(ErrorCode::NotFound, "the quorum change expired meanwhile", false);
        };
        if let Some((_, slot)) = pending.members.iter_mut().find(|(id, _)| *id == request.member) {
            *slot = MemberShare::Wrapped(wrapped);
        }
        if !pending.waiting_for().is_empty() {
            return Json(progress(request.change, pending)).into_response();
        }
        changes.remove(&request.change)
    };
    match complete {
        Some(pending) => propose_change(&api, request.change, pending).await,
        None => refuse(ErrorCode::NotFound, "the quorum change expired meanwhile", false),
    }
}

/// Every member wrapped their share: the `ChangeQuorum` operation, for the current quorum.
async fn propose_change(api: &SecurityApi, change: u64, pending: PendingChange) -> Response {
    let members = pending
        .members
        .into_iter()
        .filter_map(|(id, share)| match share {
            MemberShare::Wrapped(wrapped_share) => Some(QuorumMember { id, wrapped_share }),
            MemberShare::Waiting(_) => None,
        })
        .collect();
    let quorum = Quorum { members, threshold: pending.threshold };
    let operation = QuorumOperation::ChangeQuorum { quorum };
    let command = Command::StartQuorumOperation { operation, ttl_ms: pending.ttl_ms };
    let proposal = Proposal {
        actor: Actor::User(pending.officer),
        origin_node_id: api.local.node_id(),
        request_id: None,
        command,
    };
    match api.proposer.propose(proposal).await {
        Ok(applied) => match applied.result {
            Ok(Reply::QuorumOperationStarted { id, .. }) => Json(ChangeQuorumProgress {
                change,
                waiting_for: Vec::new(),
                operation: Some(id),
                index: Some(applied.index),
            })
            .into_response(),
            Ok(other) => {
                let message = format!("the quorum change was answered unexpectedly: {other:?}");
                refuse(ErrorCode::Internal, message, false)
            }
            Err(reject) => rejected(&reject),
        },
        Err(error) => {
            let message =
                format!("the quorum change could not be proposed ({error}): start it again");
            refuse(ErrorCode::Unavailable, message, true)
        }
    }
}
