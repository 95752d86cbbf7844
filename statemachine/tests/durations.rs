//! Durations typed by people (SPEC "Durations"): any unit from seconds to years.

use statemachine::duration::{format_duration_ms, parse_duration_ms, DurationError};

const DAY_MS: u64 = 86_400_000;

/// Every unit converts to milliseconds; the largest exact unit is used to print one back.
#[test]
fn durations_accept_seconds_to_years() {
    assert_eq!(parse_duration_ms("30s"), Ok(30_000));
    assert_eq!(parse_duration_ms("15m"), Ok(900_000));
    assert_eq!(parse_duration_ms("12h"), Ok(12 * 3_600_000));
    assert_eq!(parse_duration_ms("10d"), Ok(10 * DAY_MS));
    assert_eq!(parse_duration_ms(" 54w "), Ok(54 * 7 * DAY_MS));
    assert_eq!(parse_duration_ms("2y"), Ok(2 * 365 * DAY_MS));
    assert_eq!(format_duration_ms(54 * 7 * DAY_MS), "54w");
    assert_eq!(format_duration_ms(2 * 365 * DAY_MS), "2y");
    assert_eq!(format_duration_ms(1_500), "1500ms");
}

/// Bad input says what a good one looks like.
#[test]
fn malformed_durations_say_how_to_write_one() {
    assert_eq!(parse_duration_ms(""), Err(DurationError::Empty));
    assert_eq!(parse_duration_ms("10"), Err(DurationError::Malformed("10".into())));
    assert_eq!(parse_duration_ms("d"), Err(DurationError::Malformed("d".into())));
    assert_eq!(parse_duration_ms("3 months"), Err(DurationError::Malformed("3 months".into())));
    let message = parse_duration_ms("1.5d").expect_err("not whole").to_string();
    assert_eq!(
        message,
        "'1.5d' is not a whole number followed by a unit (s, m, h, d, w, y), e.g. 10d"
    );
    assert!(matches!(parse_duration_ms("99999999999999999y"), Err(DurationError::Overflow(_))));
}
