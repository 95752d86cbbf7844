//! Arguments several commands share, and the parsers of values people type (durations,
//! instants, roles, states).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::Args;
use statemachine::duration::parse_duration_ms;
use statemachine::{DataUnitState, Role};

use super::context::Walk;
use super::exit::CliError;
use crate::api::role_name;

/// Rows a list shows unless told otherwise.
pub const LIST_ROWS_DEFAULT: usize = 1_000;
/// Longest ID list file read (`--from-file`), in bytes: far above any command's bound.
pub const ID_FILE_LEN_MAX: u64 = 64 * 1024 * 1024;

/// How much of a paged list to show.
#[derive(Clone, Debug, Args)]
pub struct PageArgs {
    /// Show at most this many rows, following pages until then.
    #[arg(long, value_name = "ROWS", default_value_t = LIST_ROWS_DEFAULT, conflicts_with = "all")]
    pub limit: usize,
    /// Follow every page to the end (a progress bar on stderr).
    #[arg(long)]
    pub all: bool,
    /// Start after this cursor (the one a previous list printed to go on from).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
}

impl PageArgs {
    pub fn walk(&self) -> Walk {
        Walk { after: self.after.clone(), limit: (!self.all).then_some(self.limit) }
    }
}

/// Where a passphrase comes from.
#[derive(Clone, Copy, Debug, Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of standard input instead of the terminal.
    #[arg(long)]
    pub passphrase_stdin: bool,
}

/// IDs on the command line and/or in a file.
#[derive(Clone, Debug, Args)]
pub struct IdArgs {
    /// IDs (hex), as many as needed.
    #[arg(value_name = "ID", required_unless_present = "from_file")]
    pub ids: Vec<String>,
    /// Read more IDs from this file, one per line (`-`: standard input; `#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
}

impl IdArgs {
    /// The IDs in the order given, each once.
    pub fn collect(&self) -> Result<Vec<String>, CliError> {
        let mut ids = self.ids.clone();
        if let Some(path) = &self.from_file {
            let text = read_id_file(path)?;
            for line in text.lines() {
                let id = line.split('#').next().unwrap_or("").trim();
                if !id.is_empty() {
                    ids.push(id.to_string());
                }
            }
        }
        let mut seen = BTreeSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        if ids.is_empty() {
            return Err(CliError::usage("no IDs given"));
        }
        Ok(ids)
    }
}

fn read_id_file(path: &PathBuf) -> Result<String, CliError> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(ID_FILE_LEN_MAX).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(ID_FILE_LEN_MAX).read_to_string(&mut text))
    };
    read.map_err(|e| CliError::file(path, e))?;
    Ok(text)
}

/// A duration as people write it (`30d`, `1y`, `12h`) in milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    parse_duration_ms(text).map_err(|e| e.to_string())
}

pub fn roles() -> PossibleValuesParser {
    PossibleValuesParser::new(Role::ALL.map(role_name))
}

pub fn key_states() -> PossibleValuesParser {
    PossibleValuesParser::new(crate::api::key_state_names())
}

pub fn data_unit_states() -> PossibleValuesParser {
    let states = [
        DataUnitState::NoKey,
        DataUnitState::Normal,
        DataUnitState::NeedsRekey,
        DataUnitState::Shredded,
    ];
    PossibleValuesParser::new(states.map(DataUnitState::name))
}

pub fn quorum_operations() -> PossibleValuesParser {
    PossibleValuesParser::new([
        "join-kma",
        "unlock-kma",
        "enable-autonomous-unlock",
        "restore-from-backup",
        "rotate-ca",
    ])
}

/// An instant: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` (or with `T`, optionally `Z`), all UTC;
/// or a duration (`12h`, `7d`) meaning that long before `now_ms`.
pub fn parse_instant_ms(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ago_ms) = parse_duration_ms(text) {
        return Ok(now_ms.saturating_sub(ago_ms));
    }
    let wrong = || {
        format!(
            "'{text}' is not an instant: write YYYY-MM-DD, YYYY-MM-DD HH:MM:SS (UTC) or a \
             duration ago such as 12h or 7d"
        )
    };
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let numbers = |part: &str, sep: char| -> Option<Vec<u32>> {
        part.split(sep).map(|n| n.parse::<u32>().ok()).collect()
    };
    let date = numbers(date, '-').ok_or_else(wrong)?;
    let [year, month, day] = date[..] else { return Err(wrong()) };
    let time = match time {
        Some(time) => numbers(time, ':').ok_or_else(wrong)?,
        None => vec![0, 0, 0],
    };
    let (hour, minute, second) = match time[..] {
        [h, m] => (h, m, 0),
        [h, m, s] => (h, m, s),
        _ => return Err(wrong()),
    };
    if year < 1970 {
        return Err(wrong());
    }
    utc_ms([year, month, day], [hour, minute, second]).ok_or_else(wrong)
}

/// Milliseconds since the Unix epoch of a UTC date and time; `None` when no such instant
/// exists (a 13th month, February 30th, 25 o'clock) or it is before 1970.
fn utc_ms([year, month, day]: [u32; 3], [hour, minute, second]: [u32; 3]) -> Option<u64> {
    let month = ::time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let year = i32::try_from(year).ok()?;
    let date = ::time::Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()?;
    let (hour, minute, second) =
        (u8::try_from(hour).ok()?, u8::try_from(minute).ok()?, u8::try_from(second).ok()?);
    let time = ::time::Time::from_hms(hour, minute, second).ok()?;
    let seconds = ::time::PrimitiveDateTime::new(date, time).assume_utc().unix_timestamp();
    u64::try_from(seconds).ok()?.checked_mul(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setup: instants in each accepted form. Expectation: the same milliseconds as the table
    /// printer would show, durations counted back from now.
    #[test]
    fn u2_instants_parse_in_utc() {
        assert_eq!(parse_instant_ms("1970-01-01", 5), Ok(0));
        assert_eq!(parse_instant_ms("2000-02-29 00:00:01", 0), Ok(951_782_401_000));
        assert_eq!(parse_instant_ms("2000-02-29T00:00:01Z", 0), Ok(951_782_401_000));
        assert_eq!(parse_instant_ms("2000-02-29 00:01", 0), Ok(951_782_460_000));
        assert_eq!(parse_instant_ms("1h", 7_200_000), Ok(3_600_000));
        assert!(parse_instant_ms("2000-13-01", 0).is_err());
        assert!(parse_instant_ms("2001-02-29", 0).is_err(), "no such day");
        assert!(parse_instant_ms("1969-12-31", 0).is_err());
        assert!(parse_instant_ms("yesterday", 0).is_err());
        assert!(parse_instant_ms("2000-01-01 25:00", 0).is_err());
    }
}
