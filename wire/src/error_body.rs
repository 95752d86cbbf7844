//! The body of every refusal of the management and security APIs, the framework's own
//! rejections included (malformed JSON, a missing field, an oversized body, an unknown route):
//! a client never has to parse plain text.
//!
//! ```json
//! {"code":"bad-request","message":"body: missing field `name` at line 1 column 2",
//!  "retryable":false,"reject_code":null,"help":"see the OpenAPI document (GET /v1/openapi.json)"}
//! ```
//!
//! The agent API keeps its own body (`agent_gateway::wire::ErrorBody`: the agent spelling of
//! the same codes, `reject` instead of `reject_code`), frozen for the drives already installed.

use serde::{Deserialize, Serialize};
use statemachine::Reject;
use utoipa::ToSchema;

use crate::error_code::ErrorCode;

/// Every refusal: a stable code for scripts, a message for people naming the rule that
/// refused, whether the same request may simply be sent again, and the next step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// The same request may succeed later or on another KMA.
    pub retryable: bool,
    /// The state machine's frozen rejection code, when the cluster refused the command.
    #[serde(default)]
    pub reject_code: Option<u16>,
    /// What to do next, when the message does not already say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl ErrorBody {
    /// A refusal with `code`; retryable when the code is [`ErrorCode::Unavailable`] or
    /// [`ErrorCode::KmaLocked`] (another KMA, or this one later, may answer), else not.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        let retryable = matches!(code, ErrorCode::Unavailable | ErrorCode::KmaLocked);
        ErrorBody { code, message: message.into(), retryable, reject_code: None, help: None }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> ErrorBody {
        self.help = Some(help.into());
        self
    }

    pub fn with_retryable(mut self, retryable: bool) -> ErrorBody {
        self.retryable = retryable;
        self
    }

    /// The state machine's refusal under `code` (which the API picks from the reject's kind),
    /// with its frozen number; retryable exactly when the reject is.
    pub fn rejected(code: ErrorCode, reject: &Reject) -> ErrorBody {
        let mut body = ErrorBody::new(code, reject.to_string());
        body.reject_code = Some(reject.code());
        body.retryable = reject.is_retryable();
        body
    }

    /// The HTTP status the refusal travels with.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }
}
