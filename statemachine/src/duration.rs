//! Durations as people write them (`30s`, `10d`, `54w`, `2y`), converted to milliseconds at the
//! edge (SPEC "Durations"). A year is 365 days, a month is not offered: it has no fixed length.

use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("empty duration: write a number and a unit, e.g. 30s, 10d, 54w, 2y")]
    Empty,
    #[error("'{0}' is not a whole number followed by a unit (s, m, h, d, w, y), e.g. 10d")]
    Malformed(alloc::string::String),
    #[error("'{0}' is longer than this system can count (about 584 million years)")]
    Overflow(alloc::string::String),
}

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const WEEK_MS: u64 = 7 * DAY_MS;
const YEAR_MS: u64 = 365 * DAY_MS;

/// Parses `<whole number><unit>`; units: `s`, `m` (minutes), `h`, `d`, `w`, `y`.
pub fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.into());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(malformed)?;
    let (number, unit) = text.split_at(split);
    let count: u64 = number.parse().map_err(|_| malformed())?;
    let unit_ms = match unit.trim() {
        "s" => SECOND_MS,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => WEEK_MS,
        "y" => YEAR_MS,
        _ => return Err(malformed()),
    };
    count.checked_mul(unit_ms).ok_or_else(|| DurationError::Overflow(text.into()))
}

/// The largest whole unit that divides `ms` exactly: `604800000` → `1w`.
pub fn format_duration_ms(ms: u64) -> alloc::string::String {
    let units = [(YEAR_MS, 'y'), (WEEK_MS, 'w'), (DAY_MS, 'd'), (HOUR_MS, 'h'), (MINUTE_MS, 'm')];
    for (unit_ms, unit) in units {
        if ms >= unit_ms && ms % unit_ms == 0 {
            return alloc::format!("{}{unit}", ms / unit_ms);
        }
    }
    if ms % SECOND_MS == 0 {
        alloc::format!("{}s", ms / SECOND_MS)
    } else {
        alloc::format!("{ms}ms")
    }
}
