//! Exit codes of `kmsctl` (see `admin_api::cli::exit`): each refusal of the API and each
//! local failure maps to the code scripts rely on.

use admin_api::api::{ErrorBody, ErrorCode};
use admin_api::cli::exit::{self, client_exit_code, CliError};
use admin_api::cli::security::approval_outcome;
use admin_api::client::ClientError;

fn api(status: u16, code: ErrorCode, retryable: bool) -> ClientError {
    let error = ErrorBody::new(code, format!("{code} says no")).with_retryable(retryable);
    ClientError::Api { status, address: "kma1:8443".into(), error }
}

/// Setup: one refusal per code of the contract. Expectation: the documented exit code.
#[test]
fn u1_api_error_codes_map_to_exit_codes() {
    let cases = [
        (400, ErrorCode::BadRequest, false, exit::REFUSED),
        (403, ErrorCode::Forbidden, false, exit::REFUSED),
        (404, ErrorCode::NotFound, false, exit::REFUSED),
        (409, ErrorCode::Rejected, false, exit::REFUSED),
        (503, ErrorCode::Unavailable, true, exit::UNAVAILABLE),
        (409, ErrorCode::ConfirmationNeeded, false, exit::CONFIRMATION_NEEDED),
        (401, ErrorCode::Unauthenticated, false, exit::NOT_LOGGED_IN),
        (413, ErrorCode::BodyTooLarge, false, exit::REFUSED),
        (405, ErrorCode::MethodNotAllowed, false, exit::REFUSED),
    ];
    for (status, code, retryable, expected) in cases {
        assert_eq!(client_exit_code(&api(status, code, retryable)), expected, "{code}");
    }
}

/// Setup: refusals of the login and quorum endpoints, which speak the same codes as the
/// management API (issue 15). Expectation: mapped by code, retryable ones to unavailable.
#[test]
fn s2_security_endpoint_refusals_map_by_code() {
    let cases = [
        (401, ErrorCode::AuthenticationFailed, false, exit::NOT_LOGGED_IN),
        (401, ErrorCode::UnknownChallenge, false, exit::NOT_LOGGED_IN),
        (429, ErrorCode::Throttled, true, exit::UNAVAILABLE),
        (401, ErrorCode::Unauthenticated, false, exit::NOT_LOGGED_IN),
        (503, ErrorCode::Unavailable, true, exit::UNAVAILABLE),
        (409, ErrorCode::UnlockFailed, false, exit::REFUSED),
        (409, ErrorCode::AwaitingQuorum, true, exit::UNAVAILABLE),
        (400, ErrorCode::PassphraseTooShort, false, exit::REFUSED),
        (400, ErrorCode::BadQuorum, false, exit::REFUSED),
        (503, ErrorCode::KmaLocked, true, exit::UNAVAILABLE),
        (500, ErrorCode::Internal, false, exit::OTHER),
        (500, ErrorCode::Internal, true, exit::UNAVAILABLE),
    ];
    for (status, code, retryable, expected) in cases {
        assert_eq!(client_exit_code(&api(status, code, retryable)), expected, "{code}");
    }
}

/// Expectation: every code of the API's vocabulary has an exit code in the documented set, and
/// those a person must act on (log in, confirm) keep theirs even when marked retryable.
#[test]
fn t90_issue_15_every_error_code_has_an_exit_code() {
    let documented = [
        exit::OTHER,
        exit::REFUSED,
        exit::UNAVAILABLE,
        exit::CONFIRMATION_NEEDED,
        exit::NOT_LOGGED_IN,
    ];
    for code in ErrorCode::ALL {
        let exit_code = exit::refusal_exit_code(code);
        assert!(documented.contains(&exit_code), "{code}: {exit_code}");
        let retryable = client_exit_code(&api(code.http_status(), code, true));
        if matches!(exit_code, exit::NOT_LOGGED_IN | exit::CONFIRMATION_NEEDED) {
            assert_eq!(retryable, exit_code, "{code}");
        } else {
            assert_eq!(retryable, exit::UNAVAILABLE, "{code}");
        }
    }
}

/// Setup: client failures that are not refusals. Expectation: unavailable for unreachable and
/// unknown outcomes, "other" for the rest.
#[test]
fn u1_client_failures_map_to_exit_codes() {
    let unreachable =
        ClientError::Unreachable { attempts: vec!["kma1:8443: connection refused".into()] };
    assert_eq!(client_exit_code(&unreachable), exit::UNAVAILABLE);
    assert_eq!(unreachable.to_string(), "no KMA answered: kma1:8443: connection refused");
    let unknown =
        ClientError::OutcomeUnknown { address: "kma1:8443".into(), path: "/v1/sites".into() };
    assert_eq!(client_exit_code(&unknown), exit::UNAVAILABLE);
    let decode =
        ClientError::Decode { address: "a".into(), path: "/v1/keys".into(), detail: "x".into() };
    assert_eq!(client_exit_code(&decode), exit::OTHER);
    let impostor = ClientError::ServerNotProven { address: "a".into() };
    assert_eq!(client_exit_code(&impostor), exit::OTHER);
    assert!(CliError::from(impostor).help().unwrap().contains("--ca"));
    let other_ca = ClientError::Unreachable {
        attempts: vec!["kma1:8443: invalid peer certificate: UnknownIssuer".into()],
    };
    assert_eq!(client_exit_code(&other_ca), exit::UNAVAILABLE);
    let help = CliError::from(other_ca).help().unwrap();
    assert!(help.contains("CA rotation") && help.contains("--ca"), "{help}");
    assert!(CliError::from(unreachable).help().unwrap().contains("running and reachable"));
}

/// Setup: each local error kind. Expectation: its exit code, and the help line where one is.
#[test]
fn u1_local_errors_map_to_exit_codes() {
    let not_logged_in = CliError::NotLoggedIn { message: "m".into(), help: "log in".into() };
    assert_eq!(not_logged_in.exit_code(), exit::NOT_LOGGED_IN);
    assert_eq!(not_logged_in.help().as_deref(), Some("log in"));
    let confirm = CliError::ConfirmationNeeded { message: "m".into(), help: "h".into() };
    assert_eq!(confirm.exit_code(), exit::CONFIRMATION_NEEDED);
    assert_eq!(CliError::AuditBroken { message: "m".into() }.exit_code(), exit::AUDIT_BROKEN);
    assert_eq!(CliError::usage("m").exit_code(), exit::USAGE);
    assert_eq!(CliError::file("/x", "gone").exit_code(), exit::OTHER);
    assert_eq!(CliError::file("/x", "gone").to_string(), "/x: gone");
}

/// Setup: the answers the approval endpoint gives (a Done, or the node's proposal result).
/// Expectation: a Done, a refusal (3) or unavailable (4).
#[test]
fn s4_approval_answers_become_done_or_refusals() {
    let done =
        approval_outcome(serde_json::json!({"index": 9, "detail": {"completed": false}})).unwrap();
    assert_eq!(done.index, 9);
    let proposed = serde_json::json!({"Ok": {"index": 12, "result": {"Ok": {"QuorumApproval": {
        "id": 7, "approvals": 2, "threshold": 2, "completed": true}}}}});
    let done = approval_outcome(proposed).unwrap();
    assert_eq!(done.index, 12);
    // Rendered like every other command's Done.detail (admin_api::view::reply).
    assert_eq!(done.detail["completed"], true);
    assert_eq!(done.detail["quorum_operation"], 7);
    let rejected = serde_json::json!({"Ok": {"index": 13, "result": {"Err": {"NotAMember": {}}}}});
    assert_eq!(approval_outcome(rejected).unwrap_err().exit_code(), exit::REFUSED);
    let no_leader = serde_json::json!({"Err": "NoLeader"});
    assert_eq!(approval_outcome(no_leader).unwrap_err().exit_code(), exit::UNAVAILABLE);
}
