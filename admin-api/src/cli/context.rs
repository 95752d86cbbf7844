//! What every command that talks to the cluster gets: the client, the output mode, the profile;
//! and the output helpers (stdout for results, stderr for progress and hints).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::exit::CliError;
use super::profile::Profile;
use super::render;
use crate::api::{Done, Page};
use crate::client::AdminClient;

/// Rows asked for per page: the most a page returns (SPEC U2).
pub const PAGE_ROWS: usize = statemachine::limits::LIST_PAGE_MAX;

pub struct Ctx {
    pub client: AdminClient,
    /// `--json`: print the API's JSON, no progress bars.
    pub json: bool,
    pub profile: Profile,
}

/// Writes to stdout; a closed pipe (`kmsctl key list | head`) ends the output quietly.
pub fn out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Other { message: format!("writing to stdout: {e}"), help: None }),
    }
}

/// A hint or note on stderr (never data).
pub fn note(text: &str) {
    let mut stderr = std::io::stderr().lock();
    // A closed stderr leaves nobody to tell.
    let _ = stderr.write_all(text.as_bytes()).and_then(|()| stderr.write_all(b"\n"));
}

impl Ctx {
    /// A value as JSON or as its table.
    pub fn show<T: Serialize + ?Sized>(
        &self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> Result<(), CliError> {
        if self.json {
            out(&render::json(value))
        } else {
            out(&table(value))
        }
    }

    /// A command's outcome.
    pub fn done(&self, what: &str, done: &Done) -> Result<(), CliError> {
        self.show(done, |done| render::done(what, done))
    }

    /// A progress bar on stderr, hidden when stderr is not a terminal or with `--json`.
    pub fn progress(&self, total: Option<u64>, what: &str) -> ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let (bar, template) = match total {
            Some(total) => (ProgressBar::new(total), "{msg} [{bar:40}] {pos}/{len} ({eta})"),
            None => (ProgressBar::new_spinner(), "{spinner} {msg}: {pos}"),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        bar
    }

    /// Follows the pages of a list from `start` until `limit` rows are in or no page follows;
    /// returns the rows and, when it stopped at the limit, the cursor to go on from.
    pub async fn collect<T, Q>(
        &self,
        path: &str,
        walk: Walk,
        what: &str,
        query: impl Fn(Option<String>, usize) -> Result<Q, CliError>,
    ) -> Result<(Vec<T>, Option<String>), CliError>
    where
        T: DeserializeOwned,
        Q: Serialize,
    {
        let bar = self.progress(None, what);
        let mut rows = Vec::new();
        let mut after = walk.after;
        loop {
            let remaining = walk.limit.map_or(PAGE_ROWS, |limit| limit.saturating_sub(rows.len()));
            if remaining == 0 {
                bar.finish_and_clear();
                return Ok((rows, after));
            }
            let page: Page<T> = self
                .client
                .get_with(path, &query(after.clone(), remaining.min(PAGE_ROWS))?)
                .await?;
            bar.inc(page.rows.len() as u64);
            rows.extend(page.rows);
            match page.next {
                None => break,
                Some(next) if Some(&next) == after.as_ref() => return Err(stuck(path, &next)),
                Some(next) => after = Some(next),
            }
        }
        bar.finish_and_clear();
        Ok((rows, None))
    }
}

/// A cursor that does not move would repeat the same page forever: the server is wrong.
pub fn stuck(path: &str, cursor: &str) -> CliError {
    CliError::Other {
        message: format!("{path} answered the cursor {cursor} with itself: paging cannot go on"),
        help: None,
    }
}

/// Where a list starts and how many rows it takes (`None`: all).
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub after: Option<String>,
    pub limit: Option<usize>,
}
