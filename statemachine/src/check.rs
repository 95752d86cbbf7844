//! Pure checks shared by the handlers: they read, never write.

use alloc::string::String;

use crate::limits::{NAME_LEN_MAX, VERIFIER_LEN_MAX};
use crate::reject::{Reject, TextProblem};

/// A name of a site, KMA, user, agent, policy, group, partner or quorum member.
pub(crate) fn check_name(field: &str, value: &str) -> Result<(), Reject> {
    check_text(field, value, NAME_LEN_MAX, false)
}

/// Free text of at most `len_max` bytes without control characters.
pub(crate) fn check_text(
    field: &str,
    value: &str,
    len_max: usize,
    empty_allowed: bool,
) -> Result<(), Reject> {
    let problem = if value.is_empty() && !empty_allowed {
        Some(TextProblem::Empty)
    } else if value.len() > len_max {
        Some(TextProblem::TooLong { len_max: len_max as u32 })
    } else if value.chars().any(char::is_control) {
        Some(TextProblem::ControlCharacter)
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Reject::InvalidText { field: String::from(field), problem }),
        None => Ok(()),
    }
}

/// An opaque blob (verifier, public key, wrapped share) of 1 to `len_max` bytes.
pub(crate) fn check_blob(field: &str, value: &[u8], len_max: usize) -> Result<(), Reject> {
    if value.is_empty() {
        return Err(Reject::InvalidText {
            field: String::from(field),
            problem: TextProblem::Empty,
        });
    }
    if value.len() > len_max {
        let problem = TextProblem::TooLong { len_max: len_max as u32 };
        return Err(Reject::InvalidText { field: String::from(field), problem });
    }
    Ok(())
}

pub(crate) fn check_verifier(value: &[u8]) -> Result<(), Reject> {
    check_blob("passphrase verifier", value, VERIFIER_LEN_MAX)
}

/// Rejects a collection that would grow past its bound.
pub(crate) fn check_count(what: &str, count: usize, max: usize) -> Result<(), Reject> {
    if count > max {
        return Err(Reject::TooMany {
            what: String::from(what),
            count: count as u64,
            max: max as u64,
        });
    }
    Ok(())
}
