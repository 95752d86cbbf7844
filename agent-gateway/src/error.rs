//! How the gateway refuses a request: an HTTP status and an [`ErrorBody`] whose `retryable`
//! flag tells the agent whether to try the same request (same request ID) on another KMA.
//! Codes come from the one vocabulary of every KMA API, [`ErrorCode`], in the agent API's
//! spelling; the framework's own rejections (malformed JSON, query or path, an oversized body,
//! an unknown route) become the same body (`crate::extract`).

use ::wire::ErrorCode;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use statemachine::{Reject, RejectClass};

use crate::backend::BackendError;
use crate::wire::ErrorBody;

/// A refusal on its way to the agent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    /// A refusal with `code`, sent with the code's HTTP status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: status_of(code.http_status()),
            body: ErrorBody {
                code: code.agent_code().into(),
                message: message.into(),
                retryable: false,
                reject: None,
                help: None,
                retry_after_ms: None,
            },
        }
    }

    /// The agent API's two exceptions to the code's status: `rejected` takes the status of the
    /// reject's kind, and an unknown route is `bad_request` with 404.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn retryable(mut self) -> Self {
        self.body.retryable = true;
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.body.help = Some(help.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadRequest, message)
            .help("see docs/agent-protocol.md for the request shapes")
    }

    pub fn locked() -> Self {
        ApiError::new(ErrorCode::KmaLocked, "this KMA is locked and hands out no key material")
            .retryable()
            .help(
                "send the same request to another KMA (GET /agent/v1/discovery lists them); \
                 the quorum unlocks this one",
            )
    }

    /// A wrapped key that does not open here: this KMA's master key or stored copy is at fault,
    /// not the request, so another KMA may well answer.
    pub fn unwrap_failed(detail: &str) -> Self {
        tracing::error!(detail, "a wrapped key did not open under this KMA's master key");
        ApiError::new(ErrorCode::Internal, "this KMA could not open a stored key")
            .retryable()
            .help("try another KMA; tell a Security Officer to check this KMA's master key")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        if error.retryable {
            ApiError::new(ErrorCode::Unavailable, error.message)
                .retryable()
                .help("retry with the same request ID, here or on another KMA")
        } else {
            ApiError::internal(error.message)
        }
    }
}

impl From<Reject> for ApiError {
    fn from(reject: Reject) -> Self {
        let mut error = ApiError::new(ErrorCode::Rejected, reject.to_string())
            .with_status(reject_status(&reject));
        error.body.reject = Some(reject.code());
        if reject.is_retryable() {
            error = error.retryable().help("retry later with the same request ID");
        }
        error
    }
}

/// The HTTP status of a refusal by the state machine: the rule decides the code, the status
/// only tells generic HTTP tooling what kind of refusal it is.
fn reject_status(reject: &Reject) -> StatusCode {
    match reject.class() {
        RejectClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // An agent unknown to the state is the caller itself: refused, not missing.
        RejectClass::NotFound if matches!(reject, Reject::UnknownAgent { .. }) => {
            StatusCode::FORBIDDEN
        }
        RejectClass::NotFound => StatusCode::NOT_FOUND,
        RejectClass::Forbidden => StatusCode::FORBIDDEN,
        RejectClass::Invalid => StatusCode::BAD_REQUEST,
        RejectClass::Limit if matches!(reject, Reject::TooMany { .. }) => StatusCode::BAD_REQUEST,
        RejectClass::Limit | RejectClass::Conflict => StatusCode::CONFLICT,
    }
}

/// `status` is one of [`ErrorCode::http_status`]'s, all valid; 500 would only hide a typo there.
fn status_of(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}
