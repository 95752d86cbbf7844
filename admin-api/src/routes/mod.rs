//! The management API's handlers and its OpenAPI document. Each handler authenticates the
//! caller (a user certificate), turns the request into a state machine `Command` or a read of
//! the local state, and renders the answer; the state machine decides everything else (roles,
//! rules), and its refusals come back with their frozen codes.
//!
//! Files: `cluster` (status, sites, KMAs, settings), `security` (users, quorum), `catalog`
//! (policies, groups, agents), `keys` (keys, data units, impact previews), `imports` (KMS 1.x
//! files), `transfer` (partners and transfer files), `records` (backups, the audit log).

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use statemachine::{Access, Actor, Command, Read, Reject, RejectClass, State};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use wire::{ErrorBody, ErrorCode, REQUEST_BODY_LEN_MAX};
use zeroize::Zeroizing;

use crate::api::{Done, ReadParams};
use crate::backend::{Admin, Caller};

mod catalog;
mod cluster;
pub mod extract;
pub mod imports;
mod keys;
mod records;
mod security;
mod transfer;

pub use extract::Json;

/// The state every handler gets.
pub type AdminState = Arc<Admin>;

/// A refusal on its way out: the JSON error body, sent with its code's HTTP status.
#[derive(Debug)]
pub struct Refusal(pub ErrorBody);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // Every `ErrorCode::http_status` is a valid status; 500 would only hide a typo there.
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0)).into_response()
    }
}

/// An error from the node travels as it is: its code decides the status.
impl From<ErrorBody> for Refusal {
    fn from(error: ErrorBody) -> Refusal {
        Refusal(error)
    }
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal(ErrorBody::new(code, message))
    }

    pub fn with_help(self, help: impl Into<String>) -> Refusal {
        Refusal(self.0.with_help(help))
    }

    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(ErrorCode::NotFound, message)
    }

    /// A state machine refusal: unknown objects are `not-found`, role problems `forbidden`,
    /// retryable ones `unavailable`, the rest `rejected`; each with the reject's frozen number.
    pub fn rejected(reject: &Reject) -> Refusal {
        Refusal(ErrorBody::rejected(reject_code(reject), reject))
    }
}

/// The management API's code for a reject, from the state machine's class of it.
fn reject_code(reject: &Reject) -> ErrorCode {
    match reject.class() {
        RejectClass::NotFound => ErrorCode::NotFound,
        RejectClass::Forbidden => ErrorCode::Forbidden,
        RejectClass::Unavailable => ErrorCode::Unavailable,
        RejectClass::Invalid | RejectClass::Limit | RejectClass::Conflict => ErrorCode::Rejected,
    }
}

pub type Answer<T> = Result<Json<T>, Refusal>;

/// The user behind the request, or 401.
pub fn user_of(caller: &Caller) -> Result<String, Refusal> {
    caller.0.clone().ok_or_else(|| {
        Refusal::new(
            ErrorCode::Unauthenticated,
            "the management API needs a user certificate: log in with `kmsctl login`",
        )
    })
}

/// Checks in the state that the user exists, is enabled and may make `access` (the one
/// access table, `statemachine::permission`); refused as `forbidden` with the rule it broke.
pub fn check_user(state: &State, user: &str, access: Access) -> Result<(), Refusal> {
    let actor = Actor::User(user.to_string());
    state.check_access(&actor, access).map_err(|reject| {
        let help = match &reject {
            Reject::UserDisabled { .. } => "a Security Officer enables the user again",
            Reject::UnknownUser { .. } => "log in as an existing user (`kmsctl login`)",
            _ => "a Security Officer grants roles: `kmsctl user roles USER --role ROLE`",
        };
        Refusal(ErrorBody::rejected(ErrorCode::Forbidden, &reject).with_help(help))
    })
}

/// Where a read of [`ReadParams`] must stand, `(min_index, linearizable)`. Every such read
/// honours `consistency=linearizable` (the chaos suite found all but the user list serving it
/// from the local state unconfirmed); any other value is refused, since serving it would give a
/// possibly stale answer to a caller who asked for something else.
pub fn read_point(params: &ReadParams) -> Result<(Option<u64>, bool), Refusal> {
    match params.consistency.as_deref() {
        None => Ok((params.min_index, false)),
        Some(LINEARIZABLE) => Ok((params.min_index, true)),
        Some(other) => Err(Refusal::bad_request(format!(
            "consistency '{other}' is not known: leave it out for this KMA's applied state, or \
             ask for 'linearizable' (leadership confirmed by a majority first)"
        ))),
    }
}

const LINEARIZABLE: &str = "linearizable";

/// A read of the local state by an enabled user allowed to make it (`access`), once this KMA has applied `min_index`.
pub async fn read<R>(
    admin: &Admin,
    caller: &Caller,
    min_index: Option<u64>,
    access: Read,
    read: impl FnOnce(&State, u64) -> Result<R, Refusal>,
) -> Result<R, Refusal> {
    read_at(admin, caller, (min_index, false), access, read).await
}

/// [`read`], optionally linearizable: `(min_index, linearizable)`.
pub async fn read_at<R>(
    admin: &Admin,
    caller: &Caller,
    (min_index, linearizable): (Option<u64>, bool),
    access: Read,
    read: impl FnOnce(&State, u64) -> Result<R, Refusal>,
) -> Result<R, Refusal> {
    let user = user_of(caller)?;
    admin.node.barrier(min_index.unwrap_or(0), linearizable).await?;
    let now_ms = admin.node.now_ms();
    let state = admin.node.state().await;
    check_user(&state, &user, Access::Read(access))?;
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
    let applied = admin.node.propose(user, command, passphrase).await?;
    match applied.result {
        Ok(reply) => Ok(Json(Done { index: applied.index, detail: crate::view::reply(&reply) })),
        Err(reject) => Err(Refusal::rejected(&reject)),
    }
}

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
        (name = "transfer", description = "Partner key transfer: this cluster's transfer key, partners and transfer files (SPEC T1–T4)"),
    )
)]
struct ApiDoc;

/// The management API's routes (state attached) and the OpenAPI document describing them.
/// Every refusal, the framework's own included (no such route, a wrong method, a malformed or
/// oversized body), is the JSON [`ErrorBody`]. Routes merged into this router later (the node's
/// own) share its fallback; a node that adds routes calls `method_not_allowed_fallback` again
/// after merging, since axum sets it on the routes present when it is called.
pub fn router(admin: Arc<Admin>) -> (axum::Router, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(cluster::routes())
        .merge(security::routes())
        .merge(catalog::routes())
        .merge(keys::routes())
        .merge(imports::routes())
        .merge(transfer::routes())
        .merge(records::routes());
    let (router, document) = api.with_state(admin).split_for_parts();
    let served = document.clone();
    let router = router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let served = served.clone();
                async move { axum::Json(served) }
            }),
        )
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::wrong_method)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_LEN_MAX));
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
        .merge(imports::routes())
        .merge(transfer::routes())
        .merge(records::routes());
    api.into_openapi()
}
