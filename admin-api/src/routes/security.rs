//! Users, roles and the quorum's pending operations (SPEC S1–S4). Approvals, logins and a new
//! quorum need the KMA's own cryptography and stay on the node's security endpoints.

use axum::extract::State;
use statemachine::quorum::QuorumOperation;
use statemachine::Read;
use statemachine::{Command, RoleSet};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path, Query};
use super::{read_at, read_point, run, AdminState, Answer, Refusal};
use crate::api::{
    parse_role, Done, Enabled, ErrorBody, NewQuorumOperation, NewUser, Passphrase, QuorumView,
    ReadParams, Roles, User,
};
use crate::backend::Caller;
use crate::view;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(delete_user))
        .routes(routes!(set_roles))
        .routes(routes!(set_enabled))
        .routes(routes!(set_passphrase))
        .routes(routes!(quorum))
        .routes(routes!(start_quorum_operation))
        .routes(routes!(cancel_quorum_operation))
}

fn role_set(names: &[String]) -> Result<RoleSet, Refusal> {
    names
        .iter()
        .map(|name| {
            parse_role(name).ok_or_else(|| {
                Refusal::bad_request(format!(
                    "unknown role '{name}'; roles are security-officer, compliance-officer, \
                     operator, backup-operator, auditor"
                ))
            })
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/users", tag = "security", params(ReadParams),
    responses((status = 200, body = Vec<User>), (status = "default", body = ErrorBody)))]
async fn list_users(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<Vec<User>> {
    read_at(&admin, &caller, read_point(&params)?, Read::Users, |state, _| {
        Ok(state.meta().users.values().map(view::user).collect())
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/v1/users", tag = "security", request_body = NewUser,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn create_user(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(user): Json<NewUser>,
) -> Answer<Done> {
    let roles = role_set(&user.roles)?;
    let command = Command::CreateUser { id: user.id, roles, passphrase_verifier: Vec::new() };
    run(&admin, &caller, command, Some(user.passphrase)).await
}

#[utoipa::path(delete, path = "/v1/users/{id}", tag = "security",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn delete_user(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::DeleteUser { id }, None).await
}

#[utoipa::path(put, path = "/v1/users/{id}/roles", tag = "security", request_body = Roles,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_roles(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(roles): Json<Roles>,
) -> Answer<Done> {
    let roles = role_set(&roles.roles)?;
    run(&admin, &caller, Command::SetUserRoles { id, roles }, None).await
}

#[utoipa::path(put, path = "/v1/users/{id}/enabled", tag = "security", request_body = Enabled,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_enabled(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(enabled): Json<Enabled>,
) -> Answer<Done> {
    run(&admin, &caller, Command::SetUserEnabled { id, enabled: enabled.enabled }, None).await
}

#[utoipa::path(put, path = "/v1/users/{id}/passphrase", tag = "security",
    request_body = Passphrase,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_passphrase(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(passphrase): Json<Passphrase>,
) -> Answer<Done> {
    let command = Command::SetUserPassphrase { id, passphrase_verifier: Vec::new() };
    run(&admin, &caller, command, Some(passphrase.passphrase)).await
}

/// The quorum's members and threshold, and the operations waiting for approvals.
#[utoipa::path(get, path = "/v1/quorum", tag = "security", params(ReadParams),
    responses((status = 200, body = QuorumView), (status = "default", body = ErrorBody)))]
async fn quorum(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<QuorumView> {
    read_at(&admin, &caller, read_point(&params)?, Read::PendingOperations, |state, _| {
        let meta = state.meta();
        Ok(QuorumView {
            members: meta.quorum.members.iter().map(|member| member.id.clone()).collect(),
            threshold: meta.quorum.threshold,
            pending: meta.quorum_operations.values().map(|op| view::pending(state, op)).collect(),
        })
    })
    .await
    .map(Json)
}

/// Starts a quorum operation (a new quorum goes through `POST /v1/quorum/change`).
#[utoipa::path(post, path = "/v1/quorum/start", tag = "security",
    request_body = NewQuorumOperation,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn start_quorum_operation(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(request): Json<NewQuorumOperation>,
) -> Answer<Done> {
    let kma = request.target.clone();
    let operation = match request.operation.as_str() {
        "join-kma" => QuorumOperation::JoinKma { kma },
        "unlock-kma" => QuorumOperation::UnlockKma { kma },
        "enable-autonomous-unlock" => QuorumOperation::EnableAutonomousUnlock { kma },
        "restore-from-backup" => {
            let backup_id = request.target.parse().map_err(|_| {
                Refusal::bad_request(format!("'{}' is not a backup ID", request.target))
            })?;
            QuorumOperation::RestoreFromBackup { backup_id }
        }
        "rotate-ca" if request.target.is_empty() => QuorumOperation::RotateCa,
        "rotate-ca" => {
            return Err(Refusal::bad_request(
                "rotate-ca takes no target: the whole cluster moves to a new CA",
            ))
        }
        other => {
            return Err(Refusal::bad_request(format!(
                "unknown quorum operation '{other}'; operations are join-kma, unlock-kma, \
                 enable-autonomous-unlock, restore-from-backup, rotate-ca (a new quorum: kmsctl \
                 quorum change)"
            )))
        }
    };
    let command = Command::StartQuorumOperation { operation, ttl_ms: request.ttl_ms };
    run(&admin, &caller, command, None).await
}

#[utoipa::path(delete, path = "/v1/quorum/operations/{id}", tag = "security",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn cancel_quorum_operation(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Answer<Done> {
    run(&admin, &caller, Command::CancelQuorumOperation { id }, None).await
}
