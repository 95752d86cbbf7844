//! Golden tests of the error vocabulary (issue 15, point 3): drives, scripts and kmsctl match on
//! these spellings and statuses, so a change to any of them must fail here first.

use wire::{ApplyResponse, ErrorBody, ErrorCode};

/// (code, management and security spelling, agent spelling, HTTP status). Append rows; never
/// edit one.
const GOLDEN: [(ErrorCode, &str, &str, u16); 24] = [
    (ErrorCode::BadRequest, "bad-request", "bad_request", 400),
    (ErrorCode::BodyTooLarge, "body-too-large", "body_too_large", 413),
    (ErrorCode::MethodNotAllowed, "method-not-allowed", "method_not_allowed", 405),
    (ErrorCode::NotFound, "not-found", "not_found", 404),
    (ErrorCode::Unauthenticated, "unauthenticated", "unauthenticated", 401),
    (ErrorCode::Forbidden, "forbidden", "forbidden", 403),
    (ErrorCode::Rejected, "rejected", "rejected", 409),
    (ErrorCode::ConfirmationNeeded, "confirmation-needed", "confirmation_needed", 409),
    (ErrorCode::Unavailable, "unavailable", "unavailable", 503),
    (ErrorCode::KmaLocked, "kma-locked", "kma_locked", 503),
    (ErrorCode::Internal, "internal", "internal", 500),
    (ErrorCode::AuthenticationFailed, "authentication-failed", "authentication_failed", 401),
    (ErrorCode::Throttled, "throttled", "throttled", 429),
    (ErrorCode::CertificateRequired, "certificate-required", "certificate_required", 401),
    (ErrorCode::NotAnAgent, "not-an-agent", "not_an_agent", 403),
    (ErrorCode::CertificateRevoked, "certificate-revoked", "certificate_revoked", 403),
    (ErrorCode::UnknownChallenge, "unknown-challenge", "unknown_challenge", 401),
    (ErrorCode::WrongPurpose, "wrong-purpose", "wrong_purpose", 400),
    (ErrorCode::AwaitingQuorum, "awaiting-quorum", "awaiting_quorum", 409),
    (ErrorCode::JoinFailed, "join-failed", "join_failed", 503),
    (ErrorCode::UnlockFailed, "unlock-failed", "unlock_failed", 409),
    (ErrorCode::PassphraseTooShort, "passphrase-too-short", "passphrase_too_short", 400),
    (ErrorCode::BadQuorum, "bad-quorum", "bad_quorum", 400),
    (ErrorCode::NotInitialised, "not-initialised", "not_initialised", 409),
];

/// The agent API's codes as docs/agent-protocol.md listed them before the enum existed: the
/// drives already installed match on exactly these strings.
const AGENT_CODES_INSTALLED: [&str; 10] = [
    "kma_locked",
    "unavailable",
    "rejected",
    "certificate_required",
    "not_an_agent",
    "certificate_revoked",
    "bad_request",
    "authentication_failed",
    "throttled",
    "internal",
];

/// Expectation: every code has its pinned spellings and status, the serde form is the
/// management spelling, both spellings parse back, and `ALL` lists each code once.
#[test]
fn t90_issue_15_every_error_code_keeps_its_spelling_and_status() {
    assert_eq!(ErrorCode::ALL.len(), GOLDEN.len(), "a code without a golden row");
    for (n, (code, management, agent, status)) in GOLDEN.into_iter().enumerate() {
        assert_eq!(ErrorCode::ALL[n], code, "ALL is in declaration order");
        assert_eq!(code.as_str(), management);
        assert_eq!(code.to_string(), management);
        assert_eq!(code.agent_code(), agent);
        assert_eq!(code.http_status(), status, "{management}");
        let json = serde_json::to_string(&code).expect("encode");
        assert_eq!(json, format!("\"{management}\""));
        assert_eq!(serde_json::from_str::<ErrorCode>(&json).expect("decode"), code);
        assert_eq!(ErrorCode::parse(management), Some(code));
        assert_eq!(ErrorCode::parse_agent_code(agent), Some(code));
    }
    let mut sorted = ErrorCode::ALL.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ErrorCode::ALL.len(), "a code listed twice");
}

/// Expectation: the agent API's installed codes all still exist with their spelling.
#[test]
fn a2_installed_agent_codes_are_still_spelled_the_same() {
    for text in AGENT_CODES_INSTALLED {
        let code = ErrorCode::parse_agent_code(text);
        assert!(code.is_some_and(|code| code.agent_code() == text), "{text}");
    }
}

/// Expectation: a code that is not one of ours does not decode (a client then falls back to
/// the HTTP status, see `ErrorCode::of_http_status`), and statuses map to the codes the
/// framework's own rejections and proxies stand for.
#[test]
fn u1_unknown_codes_fall_back_to_the_http_status() {
    assert!(serde_json::from_str::<ErrorCode>("\"bad_request\"").is_err());
    assert!(ErrorCode::parse("http-error").is_none());
    let by_status = [
        (400, ErrorCode::BadRequest),
        (401, ErrorCode::Unauthenticated),
        (403, ErrorCode::Forbidden),
        (404, ErrorCode::NotFound),
        (405, ErrorCode::MethodNotAllowed),
        (409, ErrorCode::Rejected),
        (413, ErrorCode::BodyTooLarge),
        (415, ErrorCode::BadRequest),
        (422, ErrorCode::BadRequest),
        (429, ErrorCode::Throttled),
        (500, ErrorCode::Internal),
        (502, ErrorCode::Unavailable),
        (503, ErrorCode::Unavailable),
        (504, ErrorCode::Unavailable),
    ];
    for (status, code) in by_status {
        assert_eq!(ErrorCode::of_http_status(status), code, "{status}");
    }
}

/// Expectation: the error body looks as docs/admin-api.md shows it: `reject_code` always
/// present (null when none), `help` only when given; a rejection carries the frozen number.
#[test]
fn u1_error_body_has_the_documented_shape() {
    let body = ErrorBody::new(ErrorCode::BadRequest, "body: missing field `name`");
    let json = serde_json::to_string(&body).expect("encode");
    assert_eq!(
        json,
        r#"{"code":"bad-request","message":"body: missing field `name`","retryable":false,"reject_code":null}"#
    );
    let body = ErrorBody::new(ErrorCode::Unavailable, "no leader").with_help("retry");
    let json = serde_json::to_string(&body).expect("encode");
    assert_eq!(
        json,
        r#"{"code":"unavailable","message":"no leader","retryable":true,"reject_code":null,"help":"retry"}"#
    );
    let reject = statemachine::Reject::KeyPoolEmpty;
    let body = ErrorBody::rejected(ErrorCode::Unavailable, &reject);
    assert_eq!((body.reject_code, body.retryable, body.http_status()), (Some(44), true, 503));
    let old = r#"{"code":"not-found","message":"no","retryable":false}"#;
    let decoded: ErrorBody = serde_json::from_str(old).expect("fields added later are optional");
    assert_eq!(
        (decoded.code, decoded.reject_code, decoded.help),
        (ErrorCode::NotFound, None, None)
    );
}

/// Expectation: moving `ApplyResponse` out of raft-storage did not change its JSON (the node
/// answers quorum approvals with it).
#[test]
fn u1_apply_response_encoding_is_unchanged() {
    let response = ApplyResponse { index: 7, result: Err(statemachine::Reject::KeyPoolEmpty) };
    let json = serde_json::to_string(&response).expect("encode");
    assert_eq!(json, r#"{"index":7,"result":{"Err":"KeyPoolEmpty"}}"#);
}
