//! `drive-sim`: a fleet of simulated tape drives that use the cluster the way real drives do
//! (SPEC A2–A4) and check on every read that the data decrypts to exactly what was written.
//!
//! Each drive owns `tapes_per_drive` tapes, files under `tape_dir` named by VOLSER (`T00017`,
//! see [`tape`] for the layout). It mounts one at random (creating the tape's data unit on its
//! first mount, tagged with the VOLSER, and remembering it in the tape's header), performs a
//! few operations on it and dismounts it:
//! - write from BOT on a blank tape, and recycle (rewrite from BOT) a used one: StorageTek
//!   drives first disassociate the keys that no longer encrypt, LTO4 drives do not;
//! - append: StorageTek drives ask for the write key once per mount, LTO4 drives on every
//!   write after a reposition, that is on every append;
//! - read the whole tape: StorageTek drives decrypt with the keys prefetched on mount (and
//!   those they wrote with since); LTO4 drives fetch a key by ID on demand, when a record names
//!   another key than the previous one.
//!
//! Every record is AES-256-GCM under the key the drive was handed, over a block derived from
//! (seed, VOLSER, generation, record number). A record that does not decrypt to that block, or
//! whose key the cluster no longer hands out, is a verification failure. An error of the client
//! library (after its own failover) abandons the mount; the drive retries the same operation on
//! the same tape a little later.
//!
//! [`run_fleet`] runs the random mix for a number of operations or a duration
//! ([`run_fleet_recorded`] also records every key answer in a [`KeyHistory`]);
//! [`verify_fleet`] reads every tape once, as a final check after a run, or alone on another
//! cluster that imported the tapes' keys from this one (SPEC T4); [`legacy`] reads "1.x
//! tapes" made from a KMS 1.x key export file by key ID (SPEC M1, A5).

mod drive;
mod history;
pub mod legacy;
mod report;
pub mod tape;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::client::AgentClient;
use drive::{Drive, Plan};
pub use history::{KeyAnswer, KeyEvent, KeyHistory};
pub use report::{FleetReport, Histogram, KindReport, OpKind};

/// Tapes are named `T` and five digits.
pub const TAPES_MAX: usize = 99_999;
pub const BLOCK_LEN_MAX: usize = 1 << 20;

/// How a drive asks for keys (SPEC A4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveMode {
    /// Prefetch the data unit's keys on mount; disassociate on a write from BOT.
    StorageTek,
    /// Fetch keys by ID while reading; a write key on every write after a reposition.
    Lto4,
}

impl fmt::Display for DriveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            DriveMode::StorageTek => "StorageTek",
            DriveMode::Lto4 => "LTO4",
        })
    }
}

#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub drives: usize,
    pub mode: DriveMode,
    pub tapes_per_drive: usize,
    /// Clear bytes per record.
    pub block_len: usize,
    /// Stop after this many data operations (write from BOT, append, read, recycle) ...
    pub ops: Option<u64>,
    /// ... or after this long, whichever comes first. At least one of the two is needed.
    pub duration: Option<Duration>,
    pub tape_dir: PathBuf,
    /// Drives' choices and the data written derive from it: a run can be repeated.
    pub seed: u64,
}

impl FleetConfig {
    /// The VOLSER of tape `tape` of drive `drive`: `T` and the tape's number in the fleet.
    pub fn volser(&self, drive: usize, tape: usize) -> String {
        format!("T{:05}", drive * self.tapes_per_drive + tape)
    }

    pub fn tape_path(&self, drive: usize, tape: usize) -> PathBuf {
        tape::path_for(&self.tape_dir, &self.volser(drive, tape))
    }

    fn check(&self, clients: usize, budget_needed: bool) -> Result<(), FleetError> {
        let problem = if clients == 0 {
            "no agent client was given"
        } else if self.drives == 0 || self.tapes_per_drive == 0 {
            "a fleet needs at least one drive and one tape per drive"
        } else if self.drives.saturating_mul(self.tapes_per_drive) > TAPES_MAX {
            "more than 99999 tapes"
        } else if self.block_len == 0 || self.block_len > BLOCK_LEN_MAX {
            "the block length must be between 1 byte and 1 MiB"
        } else if budget_needed && self.ops.is_none() && self.duration.is_none() {
            "give a number of operations or a duration"
        } else {
            return Ok(());
        };
        Err(FleetError::Config(problem.into()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("drive-sim configuration: {0}; help: see `drive-sim --help`")]
    Config(String),
    #[error(
        "tape file {}: {source}; help: check that the tape directory is writable",
        path.display()
    )]
    Tape { path: PathBuf, source: std::io::Error },
    #[error("drive {drive} stopped: {detail}")]
    Drive { drive: usize, detail: String },
}

/// What all drives of a run share: the configuration, the budget and the progress bar.
struct Shared {
    config: FleetConfig,
    /// Data operations still to start, when the run is bounded by a count.
    tickets: Option<AtomicU64>,
    deadline: Option<Instant>,
    started: Instant,
    /// Set when a drive hit a fatal error: the others stop at their next operation.
    stop: AtomicBool,
    progress: Option<ProgressBar>,
    /// Where the drives record their key answers, when the caller keeps a history.
    history: Option<KeyHistory>,
    ops: AtomicU64,
    errors: AtomicU64,
    failures: AtomicU64,
}

impl Shared {
    fn new(
        config: FleetConfig,
        progress: Option<ProgressBar>,
        history: Option<KeyHistory>,
    ) -> Self {
        let started = Instant::now();
        if let Some(bar) = &progress {
            match (config.ops, config.duration) {
                (Some(ops), _) => bar.set_length(ops),
                (None, Some(duration)) => bar.set_length(duration.as_secs().max(1)),
                (None, None) => {}
            }
        }
        Shared {
            tickets: config.ops.map(AtomicU64::new),
            deadline: config.duration.map(|duration| started + duration),
            config,
            started,
            stop: AtomicBool::new(false),
            progress,
            history,
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && !self.history.as_ref().is_some_and(KeyHistory::stopped)
            && self.deadline.is_none_or(|deadline| Instant::now() < deadline)
            && self.tickets.as_ref().is_none_or(|left| left.load(Ordering::Relaxed) > 0)
    }

    /// Reserves one data operation of the budget; `false` when the run is over.
    fn take_ticket(&self) -> bool {
        if self.stop.load(Ordering::Relaxed)
            || self.history.as_ref().is_some_and(KeyHistory::stopped)
            || self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            return false;
        }
        match &self.tickets {
            None => true,
            Some(left) => {
                left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
            }
        }
    }

    /// Gives back the ticket of an operation that failed: it is retried later.
    fn return_ticket(&self) {
        if let Some(left) = &self.tickets {
            left.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn op_done(&self, failures: u64) {
        let ops = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        let failures = self.failures.fetch_add(failures, Ordering::Relaxed) + failures;
        self.show(ops, failures);
    }

    fn op_failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.show(self.ops.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed));
    }

    fn show(&self, ops: u64, failures: u64) {
        let Some(bar) = &self.progress else { return };
        if self.config.ops.is_some() {
            bar.set_position(ops);
        } else {
            bar.set_position(self.started.elapsed().as_secs());
        }
        let errors = self.errors.load(Ordering::Relaxed);
        bar.set_message(format!("{ops} ops, {errors} errors, {failures} verification failures"));
    }
}

/// Runs `config.drives` drives until `config.ops` data operations are done or
/// `config.duration` has passed. Drive `i` uses `clients[i % clients.len()]`: give one client
/// per enrolled agent, or clones of one.
pub async fn run_fleet(
    clients: Vec<AgentClient>,
    config: FleetConfig,
    progress: Option<ProgressBar>,
) -> Result<FleetReport, FleetError> {
    config.check(clients.len(), true)?;
    fleet(clients, config, progress, None, Plan::Random).await
}

/// As [`run_fleet`], recording every write key and key set the drives are answered, and every
/// write key they asked for in vain, in `history`.
pub async fn run_fleet_recorded(
    clients: Vec<AgentClient>,
    config: FleetConfig,
    progress: Option<ProgressBar>,
    history: KeyHistory,
) -> Result<FleetReport, FleetError> {
    config.check(clients.len(), true)?;
    fleet(clients, config, progress, Some(history), Plan::Random).await
}

/// Mounts every tape of every drive that exists on disk once and reads it whole; the budget
/// (`ops`, `duration`) of `config` is ignored. Drives and tapes are those of `config`.
pub async fn verify_fleet(
    clients: Vec<AgentClient>,
    config: FleetConfig,
    progress: Option<ProgressBar>,
) -> Result<FleetReport, FleetError> {
    config.check(clients.len(), false)?;
    // No budget: the count only sizes the progress bar, one step per tape read.
    let tapes = (config.drives * config.tapes_per_drive) as u64;
    let config = FleetConfig { ops: Some(tapes), duration: None, ..config };
    fleet(clients, config, progress, None, Plan::ReadEach).await
}

async fn fleet(
    clients: Vec<AgentClient>,
    config: FleetConfig,
    progress: Option<ProgressBar>,
    history: Option<KeyHistory>,
    plan: Plan,
) -> Result<FleetReport, FleetError> {
    tokio::fs::create_dir_all(&config.tape_dir)
        .await
        .map_err(|source| FleetError::Tape { path: config.tape_dir.clone(), source })?;
    let (mode, drives) = (config.mode, config.drives);
    let shared = Arc::new(Shared::new(config, progress, history));
    let tasks: Vec<_> = (0..drives)
        .map(|index| {
            let client = clients[index % clients.len()].clone();
            let drive = Drive::new(index, client, shared.clone());
            tokio::spawn(drive.run(plan))
        })
        .collect();
    let mut stats = report::DriveStats::default();
    let mut fatal = None;
    for (index, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(drive)) => stats.add(&drive),
            Ok(Err(error)) => {
                fatal.get_or_insert(error);
            }
            Err(join) => {
                shared.stop.store(true, Ordering::Relaxed);
                fatal.get_or_insert(FleetError::Drive { drive: index, detail: join.to_string() });
            }
        }
    }
    if let Some(bar) = &shared.progress {
        bar.finish();
    }
    match fatal {
        Some(error) => Err(error),
        None => Ok(FleetReport::new(mode, drives, &stats, shared.started.elapsed())),
    }
}
