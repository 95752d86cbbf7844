//! One list of error codes for the three APIs of a KMA: the agent API (drives), the management
//! API (`kmsctl`, scripts) and the security API (logins, joins, quorum approvals).
//!
//! Drives already installed match on the agent API's codes, so those keep their snake_case
//! spelling on the wire ([`ErrorCode::agent_code`]). The management and security APIs, whose
//! only client ships with the cluster, use one kebab-case spelling ([`ErrorCode::as_str`], also
//! the serde form). A code names the rule that refused the request, never the API it came from:
//! a wrong passphrase is `authentication-failed` at a user's login and `authentication_failed`
//! at a drive's enrollment.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// The `code` of every refusal. Frozen: drives, scripts and `kmsctl` match on it, and
/// `tests/error_code_golden.rs` fails when a spelling or a status changes. Add codes, never
/// rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Malformed JSON, path or query, a missing field, or input a rule of the shell refuses.
    BadRequest,
    /// The request body is larger than `wire::REQUEST_BODY_LEN_MAX`: split it.
    BodyTooLarge,
    /// The route exists, not with this HTTP method.
    MethodNotAllowed,
    /// No such route, or no such object (user, KMA, quorum operation, key...).
    NotFound,
    /// The management or security API needs a user certificate: log in first.
    Unauthenticated,
    /// The caller is known but lacks the role, or is disabled, or is not a user.
    Forbidden,
    /// The state machine refused the command; the body carries its frozen numeric code.
    Rejected,
    /// An impact preview must be confirmed with its digest before the change runs.
    ConfirmationNeeded,
    /// No leader, no majority, this KMA lags behind `min_index`, or it is busy: retry, here
    /// later or on another KMA.
    Unavailable,
    /// This KMA holds no master key (it is locked): use another KMA; the quorum unlocks it.
    KmaLocked,
    /// The KMA could not complete the request (certificate signing, an unwrap, a storage
    /// read): tell the operator.
    Internal,
    /// Unknown principal or wrong passphrase (the two are not told apart), or a proof that
    /// answers no pending challenge. Audited.
    AuthenticationFailed,
    /// Too many failed logins or enrollments for this principal or address: wait.
    Throttled,
    /// An agent route without the agent's client certificate: enroll, then present it.
    CertificateRequired,
    /// The certificate is from this cluster but names a user or a KMA, not an agent.
    NotAnAgent,
    /// Not the agent's current certificate (it re-enrolled since): enroll again.
    CertificateRevoked,
    /// A login proof for a challenge this KMA does not hold (expired, or sent to another KMA):
    /// start the login again.
    UnknownChallenge,
    /// A login proof made for another purpose (a user login replayed as a KMA join).
    WrongPurpose,
    /// A joining KMA whose JoinKma quorum operation is not approved yet: approve, then retry.
    AwaitingQuorum,
    /// A KMA join that failed on the admitting KMA: retry the join.
    JoinFailed,
    /// The quorum approved an unlock but the shares did not rebuild the master key.
    UnlockFailed,
    /// A new passphrase shorter than the cluster's minimum length.
    PassphraseTooShort,
    /// A proposed quorum that cannot be split (members, threshold).
    BadQuorum,
    /// The cluster is not initialised yet: run the quickstart first.
    NotInitialised,
}

impl ErrorCode {
    /// Every code, in declaration order (docs, golden test, OpenAPI).
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::BadRequest,
        ErrorCode::BodyTooLarge,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::Rejected,
        ErrorCode::ConfirmationNeeded,
        ErrorCode::Unavailable,
        ErrorCode::KmaLocked,
        ErrorCode::Internal,
        ErrorCode::AuthenticationFailed,
        ErrorCode::Throttled,
        ErrorCode::CertificateRequired,
        ErrorCode::NotAnAgent,
        ErrorCode::CertificateRevoked,
        ErrorCode::UnknownChallenge,
        ErrorCode::WrongPurpose,
        ErrorCode::AwaitingQuorum,
        ErrorCode::JoinFailed,
        ErrorCode::UnlockFailed,
        ErrorCode::PassphraseTooShort,
        ErrorCode::BadQuorum,
        ErrorCode::NotInitialised,
    ];

    /// The spelling of the management and security APIs (kebab-case; the serde form).
    pub const fn as_str(self) -> &'static str {
        self.spellings().0
    }

    /// The spelling of the agent API (snake_case), frozen for the drives already installed.
    pub const fn agent_code(self) -> &'static str {
        self.spellings().1
    }

    /// (management and security API, agent API): one table, so the two cannot drift apart.
    const fn spellings(self) -> (&'static str, &'static str) {
        use ErrorCode as C;
        match self {
            C::BadRequest => ("bad-request", "bad_request"),
            C::BodyTooLarge => ("body-too-large", "body_too_large"),
            C::MethodNotAllowed => ("method-not-allowed", "method_not_allowed"),
            C::NotFound => ("not-found", "not_found"),
            C::Unauthenticated => ("unauthenticated", "unauthenticated"),
            C::Forbidden => ("forbidden", "forbidden"),
            C::Rejected => ("rejected", "rejected"),
            C::ConfirmationNeeded => ("confirmation-needed", "confirmation_needed"),
            C::Unavailable => ("unavailable", "unavailable"),
            C::KmaLocked => ("kma-locked", "kma_locked"),
            C::Internal => ("internal", "internal"),
            C::AuthenticationFailed => ("authentication-failed", "authentication_failed"),
            C::Throttled => ("throttled", "throttled"),
            C::CertificateRequired => ("certificate-required", "certificate_required"),
            C::NotAnAgent => ("not-an-agent", "not_an_agent"),
            C::CertificateRevoked => ("certificate-revoked", "certificate_revoked"),
            C::UnknownChallenge => ("unknown-challenge", "unknown_challenge"),
            C::WrongPurpose => ("wrong-purpose", "wrong_purpose"),
            C::AwaitingQuorum => ("awaiting-quorum", "awaiting_quorum"),
            C::JoinFailed => ("join-failed", "join_failed"),
            C::UnlockFailed => ("unlock-failed", "unlock_failed"),
            C::PassphraseTooShort => ("passphrase-too-short", "passphrase_too_short"),
            C::BadQuorum => ("bad-quorum", "bad_quorum"),
            C::NotInitialised => ("not-initialised", "not_initialised"),
        }
    }

    /// The HTTP status a refusal with this code travels with. Two exceptions, both of the
    /// agent API and documented in docs/agent-protocol.md: its `rejected` takes the status of
    /// the reject's kind (404 unknown, 403 access, 400 bad text or count, 503 retryable), and
    /// its no-such-route answer is `bad_request` with 404.
    pub const fn http_status(self) -> u16 {
        use ErrorCode as C;
        match self {
            C::BadRequest | C::WrongPurpose | C::PassphraseTooShort | C::BadQuorum => 400,
            C::Unauthenticated
            | C::AuthenticationFailed
            | C::CertificateRequired
            | C::UnknownChallenge => 401,
            C::Forbidden | C::NotAnAgent | C::CertificateRevoked => 403,
            C::NotFound => 404,
            C::MethodNotAllowed => 405,
            C::Rejected
            | C::ConfirmationNeeded
            | C::AwaitingQuorum
            | C::UnlockFailed
            | C::NotInitialised => 409,
            C::BodyTooLarge => 413,
            C::Throttled => 429,
            C::Internal => 500,
            C::Unavailable | C::KmaLocked | C::JoinFailed => 503,
        }
    }

    /// The code of the management and security APIs spelled `text`.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// The code of the agent API spelled `text`.
    pub fn parse_agent_code(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.agent_code() == text)
    }

    /// The code of a refusal that carries no code of its own: a proxy's page, a framework's
    /// rejection (malformed JSON or query, an oversized body, an unknown route), an older KMA.
    pub const fn of_http_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Rejected,
            413 => ErrorCode::BodyTooLarge,
            429 => ErrorCode::Throttled,
            502..=504 => ErrorCode::Unavailable,
            400..=499 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

/// The OpenAPI schema, written from [`ErrorCode::ALL`] so that the document lists every code
/// with the status it is sent with, and cannot miss one.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let statuses: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|code| format!("`{}` {}", code.as_str(), code.http_status()))
            .collect();
        let description = format!(
            "The `code` of every refusal of the management and security APIs (the agent API \
             sends the same codes in snake_case). Frozen: add codes, never rename one. Each \
             with the HTTP status it is sent with: {}.",
            statuses.join(", ")
        );
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
