//! The management API's handlers and its OpenAPI document. Each handler authenticates the
//! caller (a user certificate), turns the request into a state machine `Command` or a read of
//! the local state, and renders the answer; the state machine decides everything else (roles,
//! rules), and its refusals come back with their frozen codes.
//!
//! Files: `cluster` (status, sites, KMAs, settings), `security` (users, quorum), `catalog`
//! (policies, groups, agents), `keys` (keys, data units, impact previews), `records` (backups,
//! the audit log).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use statemachine::{Command, Reject, Role, State};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use zeroize::Zeroizing;

use crate::api::{ApiError, Done};
use crate::backend::{Admin, Caller};

mod catalog;
mod cluster;
mod keys;
mod records;
mod security;

/// The state every handler gets.
pub type AdminState = Arc<Admin>;

/// A refusal on its way out: the HTTP status and the JSON body.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub ApiError);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl Refusal {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        let retryable = status == StatusCode::SERVICE_UNAVAILABLE;
        let error =
            ApiError { code: code.into(), message: message.into(), retryable, reject_code: None };
        Refusal(status, error)
    }

    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// How an `ApiError` from the node travels (its code decides the status).
    pub fn from_api(error: ApiError) -> Refusal {
        let status = match error.code.as_str() {
            "bad-request" => StatusCode::BAD_REQUEST,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "forbidden" => StatusCode::FORBIDDEN,
            "not-found" => StatusCode::NOT_FOUND,
            "rejected" | "confirmation-needed" => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refusal(status, error)
    }

    /// A state machine refusal: unknown objects are 404, role problems 403, the rest 409.
    pub fn rejected(reject: &Reject) -> Refusal {
        let message = reject.to_string();
        let (status, code) =
            if matches!(reject, Reject::MissingRole { .. } | Reject::WrongIssuer { .. }) {
                (StatusCode::FORBIDDEN, "forbidden")
            } else if format!("{reject:?}").starts_with("Unknown") {
                (StatusCode::NOT_FOUND, "not-found")
            } else if reject.is_retryable() {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            } else {
                (StatusCode::CONFLICT, "rejected")
            };
        let mut refusal = Refusal::new(status, code, message);
        refusal.1.reject_code = Some(reject.code());
        refusal.1.retryable = reject.is_retryable();
        refusal
    }
}

pub type Answer<T> = Result<Json<T>, Refusal>;

/// The user behind the request, or 401.
pub fn user_of(caller: &Caller) -> Result<String, Refusal> {
    caller.0.clone().ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the management API needs a user certificate: log in with `kmsctl login`",
        )
    })
}

/// Checks in the state that the user exists, is enabled and (when given) holds `role`.
pub fn check_user(state: &State, user: &str, role: Option<Role>) -> Result<(), Refusal> {
    let forbidden = |message: String| Refusal::new(StatusCode::FORBIDDEN, "forbidden", message);
    match state.meta().users.get(user) {
        None => Err(forbidden(format!("user '{user}' does not exist (any more)"))),
        Some(record) if !record.enabled => Err(forbidden(format!(
            "user '{user}' is disabled; help: a Security Officer enables the user again"
        ))),
        Some(record) => match role {
            Some(role) if !record.roles.contains(role) => Err(forbidden(format!(
                "needs the {} role, which user '{user}' does not hold; help: ask a Security Officer",
                role.name()
            ))),
            _ => Ok(()),
        },
    }
}

/// A read of the local state by an enabled user, once this KMA has applied `min_index`.
pub async fn read<R>(
    admin: &Admin,
    caller: &Caller,
    min_index: Option<u64>,
    role: Option<Role>,
    read: impl FnOnce(&State, u64) -> Result<R, Refusal>,
) -> Result<R, Refusal> {
    read_at(admin, caller, (min_index, false), role, read).await
}

/// [`read`], optionally linearizable: `(min_index, linearizable)`.
pub async fn read_at<R>(
    admin: &Admin,
    caller: &Caller,
    (min_index, linearizable): (Option<u64>, bool),
    role: Option<Role>,
    read: impl FnOnce(&State, u64) -> Result<R, Refusal>,
) -> Result<R, Refusal> {
    let user = user_of(caller)?;
    let barrier = admin.node.barrier(min_index.unwrap_or(0), linearizable);
    barrier.await.map_err(Refusal::from_api)?;
    let now_ms = admin.node.now_ms();
    let state = admin.state.read().await;
    check_user(&state, &user, role)?;
    read(&state, now_ms)
}

/// Proposes a command for the caller and renders the outcome.
pub async fn run(
    admin: &Admin,
    caller: &Caller,
    command: Command,
    passphrase: Option<String>,
) -> Answer<Done> {
    let user = user_of(caller)?;
    let passphrase = passphrase.map(Zeroizing::new);
    let applied = admin.node.propose(user, command, passphrase).await.map_err(Refusal::from_api)?;
    match applied.result {
        Ok(reply) => Ok(Json(Done { index: applied.index, detail: crate::view::reply(&reply) })),
        Err(reject) => Err(Refusal::rejected(&reject)),
    }
}

/// Shorthand for the extractors every handler takes.
pub type CallerExt = Extension<Caller>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "KMS management API",
        description = "Every operation of a KMA cluster: JSON over HTTPS with mutual TLS on each \
                       KMA's management listener. Authenticate with a user certificate from \
                       POST /v1/login/hello and /v1/login/proof (see kmsctl login). Every read \
                       takes min_index (read-your-writes); every change answers with the log \
                       index it was committed at.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "cluster", description = "Cluster health, sites, KMAs and settings (SPEC C1–C8)"),
        (name = "security", description = "Users, roles and the quorum (SPEC S1–S4)"),
        (name = "catalog", description = "Key policies, key groups and agents (SPEC O1–O3)"),
        (name = "keys", description = "Keys and data units, with impact previews (SPEC O4–O9)"),
        (name = "records", description = "Backups and the hash-chained audit log (SPEC B4, S5)"),
    )
)]
struct ApiDoc;

/// The management API's routes (state attached) and the OpenAPI document describing them.
pub fn router(admin: Arc<Admin>) -> (axum::Router, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(cluster::routes())
        .merge(security::routes())
        .merge(catalog::routes())
        .merge(keys::routes())
        .merge(records::routes());
    let (router, document) = api.with_state(admin).split_for_parts();
    let served = document.clone();
    let router = router.route(
        "/v1/openapi.json",
        axum::routing::get(move || {
            let served = served.clone();
            async move { Json(served) }
        }),
    );
    (router, document)
}

/// The OpenAPI document as checked in (`admin-api/openapi.json`): pretty JSON with a newline.
pub fn openapi_json(document: &utoipa::openapi::OpenApi) -> String {
    let mut text = document.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// The OpenAPI document alone, without a KMA (for the check-in test and `kmsctl openapi`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let api = OpenApiRouter::<AdminState>::with_openapi(ApiDoc::openapi())
        .merge(cluster::routes())
        .merge(security::routes())
        .merge(catalog::routes())
        .merge(keys::routes())
        .merge(records::routes());
    api.into_openapi()
}
