//! KMS 1.x imports this KMA runs for its users (SPEC M1, issue 18 point 4).
//!
//! The route has read and checked the whole file ([`statemachine::migration`]) before an
//! import starts; here the KMA wraps its keys batch by batch (the node's master key never
//! leaves it: [`AdminNode::wrap_keys`]), stages each batch in the log, then commits the import
//! with one small command (see `statemachine::import_1x`). The user follows its progress with
//! `GET /v1/imports/1x/{import_id}`.
//!
//! A batch refused because a key ID is held (or was seen earlier in the file) with another
//! value ends the import: the KMA abandons what it staged and names the file's line. A batch
//! whose outcome is unknown (a leader change) is sent again under the same batch number; the
//! state machine answers a repeat without staging it twice.
//!
//! Bounds: [`RUNNING_MAX`] imports at once per KMA (the state machine allows as many staged in
//! the cluster), [`UPLOADS_MAX`] files being read, [`FINISHED_KEPT`] finished ones remembered
//! for an hour. The clear values live
//! in [`Zeroizing`] buffers until the import ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use statemachine::command::Legacy1xKey;
use statemachine::key::KeyCheckValue;
use statemachine::limits::{IMPORTS_1X_STAGED_MAX, IMPORT_1X_BATCH_KEYS_MAX};
use statemachine::migration::Parsed1xKey;
use statemachine::{Command, KeyId, Reject, Reply};
use wire::{ErrorBody, ErrorCode};

use crate::api::{Import1xProgress, Import1xStarted};
use crate::backend::AdminNode;

/// Imports one KMA runs at once.
pub const RUNNING_MAX: usize = IMPORTS_1X_STAGED_MAX;
/// Finished imports remembered for their users.
pub const FINISHED_KEPT: usize = 32;
/// How long a finished import's outcome stays readable.
pub const FINISHED_TTL: Duration = Duration::from_secs(3600);
/// How long a batch is retried while the cluster has no leader.
const RETRY_FOR: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
enum Status {
    Staging,
    Committed { imported: u64, duplicates: u64, index: u64 },
    Failed { error: ErrorBody, line: Option<u64> },
}

struct Job {
    user: String,
    group: String,
    keys_total: u64,
    keys_staged: u64,
    status: Status,
    finished_at: Option<Instant>,
}

/// Files read into memory at once: each may be tens of megabytes before it is parsed.
pub const UPLOADS_MAX: usize = 2;

/// The imports of one KMA, by import ID.
pub struct Imports {
    jobs: Mutex<BTreeMap<u64, Job>>,
    uploads: tokio::sync::Semaphore,
}

impl Default for Imports {
    fn default() -> Imports {
        Imports { jobs: Mutex::default(), uploads: tokio::sync::Semaphore::new(UPLOADS_MAX) }
    }
}

impl Imports {
    /// A place to read a file into, or a refusal when [`UPLOADS_MAX`] are being read or
    /// [`RUNNING_MAX`] imports run: refused before the body is read, so a flood of uploads
    /// costs no memory.
    pub fn upload_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ErrorBody> {
        let running = self.jobs().values().filter(|job| job.finished_at.is_none()).count();
        let busy = || {
            ErrorBody::new(
                ErrorCode::Throttled,
                "this KMA is reading or importing as many KMS 1.x files as it takes at once: \
                 try again when one is done",
            )
            .with_retryable(true)
        };
        if running >= RUNNING_MAX {
            return Err(busy());
        }
        self.uploads.try_acquire().map_err(|_| busy())
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Job>> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.retain(|_, job| job.finished_at.is_none_or(|at| at.elapsed() < FINISHED_TTL));
        let finished = jobs.values().filter(|job| job.finished_at.is_some()).count();
        if finished > FINISHED_KEPT {
            let mut oldest: Vec<(Instant, u64)> =
                jobs.iter().filter_map(|(id, job)| job.finished_at.map(|at| (at, *id))).collect();
            oldest.sort();
            for (_, id) in oldest.into_iter().take(finished - FINISHED_KEPT) {
                jobs.remove(&id);
            }
        }
        jobs
    }

    /// Starts importing `keys` (a whole file, checked) into `group` for `user`; answers at
    /// once, the work goes on in the background.
    pub fn start(
        self: &Arc<Self>,
        node: Arc<dyn AdminNode>,
        user: String,
        group: String,
        keys: Vec<Parsed1xKey>,
    ) -> Result<Import1xStarted, ErrorBody> {
        let import_id = {
            let mut jobs = self.jobs();
            let running = jobs.values().filter(|job| job.finished_at.is_none()).count();
            if running >= RUNNING_MAX {
                let message = format!(
                    "{running} KMS 1.x imports are running on this KMA, the most it runs at once: \
                     wait for one to finish (kmsctl import-1x shows its progress)"
                );
                return Err(ErrorBody::new(ErrorCode::Throttled, message).with_retryable(true));
            }
            let mut import_id = rand::random::<u64>();
            while import_id == 0 || jobs.contains_key(&import_id) {
                import_id = rand::random::<u64>();
            }
            let job = Job {
                user: user.clone(),
                group: group.clone(),
                keys_total: keys.len() as u64,
                keys_staged: 0,
                status: Status::Staging,
                finished_at: None,
            };
            jobs.insert(import_id, job);
            import_id
        };
        let started = Import1xStarted {
            import_id: format!("{import_id:016x}"),
            keys: keys.len() as u64,
            batches: keys.len().div_ceil(IMPORT_1X_BATCH_KEYS_MAX) as u64,
        };
        let imports = self.clone();
        let run = Run { node, imports, import_id, user, group, keys, check_values: Vec::new() };
        tokio::spawn(run.run());
        Ok(started)
    }

    /// The progress of `import_id`, for the user who started it only: to anyone else it does
    /// not exist.
    pub fn progress(&self, user: &str, import_id: u64) -> Option<Import1xProgress> {
        let jobs = self.jobs();
        let job = jobs.get(&import_id).filter(|job| job.user == user)?;
        let mut progress = Import1xProgress {
            import_id: format!("{import_id:016x}"),
            group: job.group.clone(),
            keys_total: job.keys_total,
            keys_staged: job.keys_staged,
            status: "staging".into(),
            imported: 0,
            duplicates: 0,
            index: 0,
            error: None,
            line: None,
        };
        match &job.status {
            Status::Staging => {}
            Status::Committed { imported, duplicates, index } => {
                progress.status = "committed".into();
                (progress.imported, progress.duplicates, progress.index) =
                    (*imported, *duplicates, *index);
            }
            Status::Failed { error, line } => {
                progress.status = "failed".into();
                progress.error = Some(error.clone());
                progress.line = *line;
            }
        }
        Some(progress)
    }

    fn update(&self, import_id: u64, change: impl FnOnce(&mut Job)) {
        if let Some(job) = self.jobs().get_mut(&import_id) {
            change(job);
        }
    }
}

/// One import under way.
struct Run {
    node: Arc<dyn AdminNode>,
    imports: Arc<Imports>,
    import_id: u64,
    user: String,
    group: String,
    keys: Vec<Parsed1xKey>,
    /// The check value of every line wrapped so far, in file order: what names the line of a
    /// conflicting value.
    check_values: Vec<KeyCheckValue>,
}

impl Run {
    async fn run(mut self) {
        let status = match self.stage_and_commit().await {
            Ok(status) => status,
            Err((error, line)) => {
                self.abandon(&error.message).await;
                Status::Failed { error, line }
            }
        };
        match &status {
            Status::Committed { imported, duplicates, .. } => tracing::info!(
                import_id = %format!("{:016x}", self.import_id), user = %self.user,
                group = %self.group, imported, duplicates, "KMS 1.x import committed"
            ),
            Status::Failed { error, .. } => tracing::warn!(
                import_id = %format!("{:016x}", self.import_id), user = %self.user,
                error = %error.message, "KMS 1.x import failed; nothing of it was imported"
            ),
            Status::Staging => {}
        }
        self.imports.update(self.import_id, |job| {
            job.status = status;
            job.finished_at = Some(Instant::now());
        });
    }

    async fn stage_and_commit(&mut self) -> Result<Status, (ErrorBody, Option<u64>)> {
        let kma = self.node.kma_name();
        let batches = self.keys.len().div_ceil(IMPORT_1X_BATCH_KEYS_MAX);
        for batch in 0..batches {
            let from = batch * IMPORT_1X_BATCH_KEYS_MAX;
            let to = (from + IMPORT_1X_BATCH_KEYS_MAX).min(self.keys.len());
            let lines = &self.keys[from..to];
            let clear: Vec<(KeyId, &[u8; 32])> = lines.iter().map(|k| (k.id, &*k.value)).collect();
            let wrapped = self.node.wrap_keys(&clear).await.map_err(|error| (error, None))?;
            drop(clear);
            let keys: Vec<Legacy1xKey> = lines
                .iter()
                .zip(wrapped)
                .map(|(line, (material, check_value))| Legacy1xKey {
                    id: line.id,
                    material,
                    check_value,
                    description: line.description.clone(),
                })
                .collect();
            self.check_values.extend(keys.iter().map(|key| key.check_value));
            let command = Command::StageImport1x {
                import_id: self.import_id,
                batch: batch as u32,
                group: self.group.clone(),
                requested_by: self.user.clone(),
                kma: kma.clone(),
                keys,
            };
            match self.propose(command).await? {
                (Ok(Reply::Staged1x { keys_received, .. }), _) => {
                    self.imports.update(self.import_id, |job| job.keys_staged = keys_received);
                }
                (Ok(other), _) => return Err((unexpected(&other), None)),
                (Err(reject), _) => return Err(self.refused(&reject).await),
            }
        }
        let command = Command::CommitImport1x {
            import_id: self.import_id,
            keys_received: self.keys.len() as u64,
        };
        match self.propose(command).await? {
            (Ok(Reply::Imported { keys, duplicates, .. }), index) => Ok(Status::Committed {
                imported: keys.into(),
                duplicates: duplicates.into(),
                index,
            }),
            (Ok(other), _) => Err((unexpected(&other), None)),
            (Err(reject), _) => Err(self.refused(&reject).await),
        }
    }

    /// Proposes, retrying while the cluster cannot write (no leader, a leader change): the
    /// commands are idempotent (a batch number, a commit of a known import).
    async fn propose(
        &self,
        command: Command,
    ) -> Result<(Result<Reply, Reject>, u64), (ErrorBody, Option<u64>)> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.node.propose_system(command.clone()).await {
                Ok(applied) => return Ok((applied.result, applied.index)),
                Err(error) if error.retryable && started.elapsed() < RETRY_FOR => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err((error, None)),
            }
        }
    }

    /// A refusal as the user reads it: a conflicting value names its line.
    async fn refused(&self, reject: &Reject) -> (ErrorBody, Option<u64>) {
        let error = ErrorBody::rejected(ErrorCode::Rejected, reject);
        let Reject::ImportValueMismatch { key_id } = reject else { return (error, None) };
        let held = self.node.state().await.key(key_id).map(|key| key.check_value);
        let Some(line) = self.conflicting_line(key_id, held) else { return (error, None) };
        let message = format!(
            "line {line}: key ID {key_id} is {} with another value; nothing was imported: the \
             file may be corrupt, export it again from KMS 1.x",
            if held.is_some() { "held already" } else { "earlier in the file" }
        );
        let mut error = error;
        error.message = message;
        (error, Some(line as u64))
    }

    /// The first line of the file naming `key_id` with a value other than the one held, or
    /// than the file's first line for it.
    fn conflicting_line(&self, key_id: &KeyId, held: Option<KeyCheckValue>) -> Option<usize> {
        let mut known = held;
        for (line, check_value) in self.keys.iter().zip(&self.check_values) {
            if line.id != *key_id {
                continue;
            }
            match known {
                Some(value) if value != *check_value => return Some(line.line),
                Some(_) => {}
                None => known = Some(*check_value),
            }
        }
        None
    }

    /// Drops what was staged (nothing of it was visible); the pulse would, an hour later.
    async fn abandon(&self, reason: &str) {
        let reason: String = reason.chars().take(statemachine::limits::DETAIL_LEN_MAX).collect();
        let command = Command::AbandonImport1x { import_id: self.import_id, reason };
        match self.node.propose_system(command).await {
            Ok(applied) => match applied.result {
                Ok(_) | Err(Reject::UnknownImport { .. }) => {}
                Err(reject) => tracing::warn!(%reject, "abandoning a KMS 1.x import refused"),
            },
            Err(error) => tracing::warn!(
                error = %error.message,
                "abandoning a KMS 1.x import failed; it expires an hour after its last batch"
            ),
        }
    }
}

fn unexpected(reply: &Reply) -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, format!("the import was answered unexpectedly: {reply:?}"))
}
