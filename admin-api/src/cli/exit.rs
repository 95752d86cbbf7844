//! Exit codes scripts can rely on, and the one error type of `kmsctl`'s commands.

use std::path::PathBuf;

use thiserror::Error;

use crate::api::ErrorCode;
use crate::client::ClientError;

pub const OK: u8 = 0;
/// Anything not listed below (an I/O error, an undecodable answer, a certificate problem).
pub const OTHER: u8 = 1;
/// Usage: clap's own code for bad arguments, also used for input kmsctl checks itself.
pub const USAGE: u8 = 2;
/// The cluster refused: rejected, forbidden, not found, bad request.
pub const REFUSED: u8 = 3;
/// No KMA could serve the request now (no leader, unreachable, throttled): retryable.
pub const UNAVAILABLE: u8 = 4;
/// An impact preview was printed and not confirmed (or no longer matches the confirmation).
pub const CONFIRMATION_NEEDED: u8 = 5;
/// `audit verify` found the chain broken, or KMAs disagreeing on its head.
pub const AUDIT_BROKEN: u8 = 6;
/// No profile, logged out, credentials expired or refused.
pub const NOT_LOGGED_IN: u8 = 7;

/// The exit codes as `kmsctl --help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  any other error
  2  usage (bad arguments or input)
  3  refused by the cluster (rejected, forbidden, not found, bad request)
  4  unavailable (no leader, no KMA reachable, throttled): retry later
  5  confirmation needed (an impact preview was not confirmed)
  6  audit chain broken (or KMAs disagree on its head)
  7  not logged in, or credentials expired: kmsctl login

Environment:
  KMSCTL_HOME        where profiles are kept (default $HOME/.config/kmsctl)
  KMSCTL_PROFILE     the profile to use (default `default`)
  KMSCTL_PASSPHRASE  the login passphrase, for `kmsctl login` without a terminal";

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{message}")]
    NotLoggedIn { message: String, help: String },
    #[error("{message}")]
    ConfirmationNeeded { message: String, help: String },
    #[error("{message}")]
    AuditBroken { message: String },
    #[error("{message}")]
    Usage { message: String, help: Option<String> },
    #[error("{}: {detail}", .path.display())]
    File { path: PathBuf, detail: String },
    #[error("{message}")]
    Other { message: String, help: Option<String> },
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::Usage { message: message.into(), help: None }
    }

    pub fn file(path: impl Into<PathBuf>, error: impl std::fmt::Display) -> CliError {
        CliError::File { path: path.into(), detail: error.to_string() }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(error) => client_exit_code(error),
            CliError::NotLoggedIn { .. } => NOT_LOGGED_IN,
            CliError::ConfirmationNeeded { .. } => CONFIRMATION_NEEDED,
            CliError::AuditBroken { .. } => AUDIT_BROKEN,
            CliError::Usage { .. } => USAGE,
            CliError::File { .. } | CliError::Other { .. } => OTHER,
        }
    }

    /// The next step, printed as `help:` after the error.
    pub fn help(&self) -> Option<String> {
        match self {
            CliError::NotLoggedIn { help, .. } | CliError::ConfirmationNeeded { help, .. } => {
                Some(help.clone())
            }
            CliError::Usage { help, .. } | CliError::Other { help, .. } => help.clone(),
            CliError::Client(error) => client_help(error),
            CliError::AuditBroken { .. } | CliError::File { .. } => None,
        }
    }
}

/// The exit code of a client error. A refusal maps by its code, one arm per code of the API's
/// vocabulary (a new code does not compile until it has one); a retryable refusal that is not
/// about logging in or confirming is `UNAVAILABLE`.
pub fn client_exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::Api { error, .. } => {
            let by_code = refusal_exit_code(error.code);
            if error.retryable && matches!(by_code, REFUSED | OTHER) {
                UNAVAILABLE
            } else {
                by_code
            }
        }
        ClientError::Unreachable { .. } | ClientError::OutcomeUnknown { .. } => UNAVAILABLE,
        ClientError::Decode { .. }
        | ClientError::Config { .. }
        | ClientError::Login { .. }
        | ClientError::ServerNotProven { .. } => OTHER,
    }
}

/// The exit code of a refusal with `code`, before its retryable flag is considered.
pub fn refusal_exit_code(code: ErrorCode) -> u8 {
    use ErrorCode as C;
    match code {
        C::Unauthenticated
        | C::AuthenticationFailed
        | C::UnknownChallenge
        | C::CertificateRequired
        | C::CertificateRevoked => NOT_LOGGED_IN,
        C::ConfirmationNeeded => CONFIRMATION_NEEDED,
        C::Unavailable | C::KmaLocked | C::Throttled | C::AwaitingQuorum | C::JoinFailed => {
            UNAVAILABLE
        }
        C::BadRequest
        | C::BodyTooLarge
        | C::MethodNotAllowed
        | C::NotFound
        | C::Forbidden
        | C::NotAnAgent
        | C::Rejected
        | C::WrongPurpose
        | C::UnlockFailed
        | C::PassphraseTooShort
        | C::BadQuorum
        | C::NotInitialised => REFUSED,
        C::Internal => OTHER,
    }
}

fn client_help(error: &ClientError) -> Option<String> {
    match error {
        ClientError::Api { error, .. } if error.help.is_some() => error.help.clone(),
        ClientError::Api { error, address, .. } if error.retryable => {
            Some(format!("{address} says this may succeed if sent again later"))
        }
        // rustls names it so: the KMAs present certificates of a CA the profile does not hold.
        ClientError::Unreachable { attempts }
            if attempts.iter().any(|a| a.contains("UnknownIssuer")) =>
        {
            Some(
                "the KMAs present certificates of a CA this profile does not trust: after a CA \
                 rotation, log in again with the new CA certificate (tls/ca.pem of a KMA, its \
                 fingerprint checked against `kma status`): kmsctl login --ca NEW-CA.pem ..."
                    .into(),
            )
        }
        ClientError::Unreachable { .. } => Some(
            "check that the KMAs of the profile are running and reachable (kmsctl profile show)"
                .into(),
        ),
        ClientError::OutcomeUnknown { .. } => Some(
            "read the state (e.g. the list) to see whether it was applied before retrying".into(),
        ),
        ClientError::ServerNotProven { .. } => Some(
            "check --address and --ca: they must name the cluster that holds your account".into(),
        ),
        _ => None,
    }
}
