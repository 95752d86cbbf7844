//! One simulated drive: mounts its tapes, asks the cluster for keys as a StorageTek or an LTO4
//! drive would, writes and reads records and counts what it saw.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::{Aes256Gcm, KeyInit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statemachine::{DataUnitId, KeyId};

use super::history::KeyAnswer;
use super::report::{DriveStats, OpKind};
use super::tape::{self, TapeHeader};
use super::{DriveMode, FleetError, Shared};
use crate::client::{AgentClient, AgentKey, ClientError};

/// A tape holds at most this many records; a full tape is recycled or read, not appended to.
const RECORDS_PER_TAPE_MAX: u64 = 64;
/// A write (from BOT or append) puts 1 to this many records.
const RECORDS_PER_WRITE_MAX: u64 = 8;
/// Data operations per mount: 1 to this many.
const OPS_PER_MOUNT_MAX: u32 = 4;
/// A drive that failed this many operations in a row gives up (the report shows the errors).
const ERRORS_IN_A_ROW_MAX: u32 = 50;
/// Pause before retrying after a client error; the client already failed over on its own.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug)]
pub(super) enum Plan {
    /// Random mounts and operations until the budget is spent.
    Random,
    /// Every existing tape once, read whole.
    ReadEach,
}

/// Why an operation did not complete.
enum Failure {
    /// The client library gave up: the operation is retried later.
    Client { kind: OpKind, error: ClientError },
    /// The simulator itself cannot go on (a tape file cannot be written).
    Fatal(FleetError),
}

impl From<FleetError> for Failure {
    fn from(error: FleetError) -> Self {
        Failure::Fatal(error)
    }
}

/// A mounted tape.
struct Mount {
    path: PathBuf,
    header: TapeHeader,
    records: u64,
    data_unit: DataUnitId,
    /// Keys the drive holds for this tape: StorageTek prefetches them on mount; both modes add
    /// the keys they write with.
    ciphers: HashMap<KeyId, Aes256Gcm>,
    /// StorageTek: the write key of this mount, reused by every later write in it.
    write_key: Option<KeyId>,
}

pub(super) struct Drive {
    index: usize,
    client: AgentClient,
    shared: Arc<Shared>,
    rng: StdRng,
    stats: DriveStats,
    /// A tape whose operation failed, and that operation: done first at the next mount.
    retry: Option<(usize, Option<OpKind>)>,
    errors_in_a_row: u32,
}

fn cipher(key: &AgentKey) -> Aes256Gcm {
    Aes256Gcm::new(key.value.as_ref().into())
}

fn tape_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> FleetError + '_ {
    move |source| FleetError::Tape { path: path.to_owned(), source }
}

impl Drive {
    pub(super) fn new(index: usize, client: AgentClient, shared: Arc<Shared>) -> Self {
        let seed = shared.config.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Drive {
            index,
            client,
            shared,
            rng: StdRng::seed_from_u64(seed),
            stats: DriveStats::default(),
            retry: None,
            errors_in_a_row: 0,
        }
    }

    pub(super) async fn run(mut self, plan: Plan) -> Result<DriveStats, FleetError> {
        let result = match plan {
            Plan::Random => self.run_random().await,
            Plan::ReadEach => self.run_read_each().await,
        };
        if result.is_err() {
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        result.map(|()| self.stats)
    }

    async fn run_random(&mut self) -> Result<(), FleetError> {
        let tapes = self.shared.config.tapes_per_drive;
        while self.shared.running() {
            if self.errors_in_a_row >= ERRORS_IN_A_ROW_MAX {
                tracing::warn!(drive = self.index, "too many errors in a row; the drive stops");
                self.stats.drives_given_up = 1;
                break;
            }
            let (tape, first) = match self.retry.take() {
                Some(retry) => retry,
                None => (self.rng.gen_range(0..tapes), None),
            };
            let result = self.session(tape, first).await;
            self.settle(tape, result).await?;
        }
        Ok(())
    }

    async fn run_read_each(&mut self) -> Result<(), FleetError> {
        for tape in 0..self.shared.config.tapes_per_drive {
            let path = self.shared.config.tape_path(self.index, tape);
            if !tokio::fs::try_exists(&path).await.map_err(tape_error(&path))? {
                continue;
            }
            loop {
                if self.shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if self.errors_in_a_row >= ERRORS_IN_A_ROW_MAX {
                    self.stats.drives_given_up = 1;
                    return Ok(());
                }
                let result = self.read_session(tape).await;
                if self.settle(tape, result).await? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Counts the outcome of a session; `Ok(true)` when it completed.
    async fn settle(
        &mut self,
        tape: usize,
        result: Result<(), Failure>,
    ) -> Result<bool, FleetError> {
        match result {
            Ok(()) => {
                self.errors_in_a_row = 0;
                Ok(true)
            }
            Err(Failure::Client { kind, error }) => {
                tracing::debug!(drive = self.index, %kind, %error, "operation failed; retrying");
                *self.stats.errors.entry(kind).or_default() += 1;
                self.shared.op_failed();
                self.errors_in_a_row += 1;
                self.retry = Some((tape, Some(kind).filter(|kind| kind.is_data())));
                tokio::time::sleep(RETRY_PAUSE).await;
                Ok(false)
            }
            Err(Failure::Fatal(error)) => Err(error),
        }
    }

    /// Mount, a few data operations, dismount.
    async fn session(&mut self, tape: usize, first: Option<OpKind>) -> Result<(), Failure> {
        let mut mount = self.mount(tape).await?;
        let count = self.rng.gen_range(1..=OPS_PER_MOUNT_MAX);
        for n in 0..count {
            let planned = first.filter(|kind| n == 0 && Self::fits(*kind, &mount));
            let kind = planned.unwrap_or_else(|| self.choose(&mount));
            if !self.shared.take_ticket() {
                break;
            }
            if let Err(failure) = self.perform(&mut mount, kind).await {
                self.shared.return_ticket();
                return Err(failure);
            }
        }
        self.dismount(mount);
        Ok(())
    }

    async fn read_session(&mut self, tape: usize) -> Result<(), Failure> {
        let mut mount = self.mount(tape).await?;
        if mount.records > 0 {
            self.perform(&mut mount, OpKind::Read).await?;
        }
        self.dismount(mount);
        Ok(())
    }

    fn fits(kind: OpKind, mount: &Mount) -> bool {
        match kind {
            OpKind::WriteFromBot => mount.records == 0,
            OpKind::Append => mount.records > 0 && mount.records < RECORDS_PER_TAPE_MAX,
            OpKind::Read | OpKind::Recycle => mount.records > 0,
            OpKind::Mount | OpKind::Dismount => false,
        }
    }

    /// A blank tape is written from BOT; a used one is appended to (while it has room), read
    /// or recycled.
    fn choose(&mut self, mount: &Mount) -> OpKind {
        if mount.records == 0 {
            return OpKind::WriteFromBot;
        }
        let roll = self.rng.gen_range(0..100);
        let room = mount.records < RECORDS_PER_TAPE_MAX;
        match roll {
            0..35 if room => OpKind::Append,
            0..80 => OpKind::Read,
            _ => OpKind::Recycle,
        }
    }

    async fn perform(&mut self, mount: &mut Mount, kind: OpKind) -> Result<(), Failure> {
        let failures_before = self.stats.verification_failures;
        match kind {
            OpKind::WriteFromBot | OpKind::Recycle => self.write(mount, kind, true).await?,
            OpKind::Append => self.write(mount, kind, false).await?,
            OpKind::Read => self.read(mount).await?,
            OpKind::Mount | OpKind::Dismount => {}
        }
        *self.stats.ops.entry(kind).or_default() += 1;
        self.shared.op_done(self.stats.verification_failures - failures_before);
        Ok(())
    }

    /// Sends one agent request and records its latency under the operation `kind`.
    async fn timed<T>(
        &mut self,
        kind: OpKind,
        request: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, Failure> {
        let started = Instant::now();
        let result = request.await;
        if result.is_ok() {
            self.stats.latency.entry(kind).or_default().record(started.elapsed());
        }
        result.map_err(|error| Failure::Client { kind, error })
    }

    /// Loads the tape, creates its data unit on the first mount, and (StorageTek) prefetches
    /// its keys.
    async fn mount(&mut self, tape: usize) -> Result<Mount, Failure> {
        let config = &self.shared.config;
        let volser = config.volser(self.index, tape);
        let path = config.tape_path(self.index, tape);
        let blank = TapeHeader::blank(&volser, config.seed, config.block_len);
        let image = tape::load(&path).await.map_err(tape_error(&path))?;
        let (mut header, records) = match image {
            None => (blank, 0),
            Some(image) => match image.header {
                Some(header) => (header, image.records),
                None => {
                    tracing::warn!(drive = self.index, %volser, "unreadable tape label");
                    self.stats.verification_failures += 1;
                    (blank, 0)
                }
            },
        };
        let client = self.client.clone();
        let data_unit = match header.data_unit {
            Some(data_unit) => data_unit,
            None => {
                let created = self.timed(OpKind::Mount, client.create_data_unit(&volser)).await?;
                header.data_unit = Some(created.data_unit);
                tape::write(&path, &header, records, &[]).await.map_err(tape_error(&path))?;
                created.data_unit
            }
        };
        let mut ciphers = HashMap::new();
        if self.shared.config.mode == DriveMode::StorageTek {
            let invoked = Instant::now();
            let set = self.timed(OpKind::Mount, client.keys(data_unit)).await?;
            if let Some(history) = &self.shared.history {
                let key_ids = set.keys.iter().map(|key| key.key_id).collect();
                let answer = KeyAnswer::Keys { key_ids, index: set.index };
                history.record(self.index, invoked, data_unit, answer);
            }
            ciphers.extend(set.keys.iter().map(|key| (key.key_id, cipher(key))));
        }
        *self.stats.ops.entry(OpKind::Mount).or_default() += 1;
        Ok(Mount { path, header, records, data_unit, ciphers, write_key: None })
    }

    fn dismount(&mut self, mount: Mount) {
        drop(mount);
        *self.stats.ops.entry(OpKind::Dismount).or_default() += 1;
    }

    /// The key to write with, as the drive's mode asks for it.
    async fn write_key(
        &mut self,
        mount: &mut Mount,
        kind: OpKind,
        from_bot: bool,
    ) -> Result<KeyId, Failure> {
        let storagetek = self.shared.config.mode == DriveMode::StorageTek;
        if storagetek && !from_bot {
            if let Some(key_id) = mount.write_key {
                return Ok(key_id);
            }
        }
        let client = self.client.clone();
        if storagetek && from_bot {
            self.timed(kind, client.disassociate_on_bot(mount.data_unit)).await?;
        }
        let invoked = Instant::now();
        let answer = self.timed(kind, client.write_key(mount.data_unit, from_bot)).await;
        if let Some(history) = &self.shared.history {
            let recorded = match &answer {
                Ok(written) => KeyAnswer::WriteKey {
                    key_id: written.key.key_id,
                    index: written.index,
                    request_id: written.request_id,
                    from_bot,
                },
                Err(Failure::Client { error, .. }) => {
                    KeyAnswer::WriteKeyFailed { from_bot, error: error.to_string() }
                }
                Err(Failure::Fatal(_)) => {
                    KeyAnswer::WriteKeyFailed { from_bot, error: "the simulator stopped".into() }
                }
            };
            history.record(self.index, invoked, mount.data_unit, recorded);
        }
        let answer = answer?;
        let key_id = answer.key.key_id;
        mount.ciphers.insert(key_id, cipher(&answer.key));
        mount.write_key = Some(key_id);
        Ok(key_id)
    }

    /// Writes 1 to [`RECORDS_PER_WRITE_MAX`] records, from BOT (a new generation) or after the
    /// last record.
    async fn write(
        &mut self,
        mount: &mut Mount,
        kind: OpKind,
        from_bot: bool,
    ) -> Result<(), Failure> {
        if from_bot {
            self.erase(mount).await?;
        }
        let key_id = self.write_key(mount, kind, from_bot).await?;
        let from = mount.records;
        let room = RECORDS_PER_TAPE_MAX.saturating_sub(from).max(1);
        let count = self.rng.gen_range(1..=RECORDS_PER_WRITE_MAX).min(room);
        let drive = self.index;
        let sealing = |error: aes_gcm::Error| FleetError::Drive {
            drive,
            detail: format!("AES-GCM refused to encrypt a block ({error})"),
        };
        let cipher = mount.ciphers.get(&key_id).ok_or_else(|| FleetError::Drive {
            drive,
            detail: "the write key went missing".into(),
        })?;
        let header = &mount.header;
        let records = (from..from + count)
            .map(|record_no| header.seal(cipher, &key_id, record_no))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sealing)?;
        tape::write(&mount.path, header, from, &records).await.map_err(tape_error(&mount.path))?;
        mount.records = from + count;
        self.stats.records_written += count;
        Ok(())
    }

    /// A write from BOT ends the old data before any key request: if the disassociation is
    /// applied and the write key request then fails, the tape holds no record under a key the
    /// cluster no longer sends for it (the drive retries the write on a blank tape).
    async fn erase(&mut self, mount: &mut Mount) -> Result<(), Failure> {
        let config = &self.shared.config;
        mount.header.generation += 1;
        mount.header.seed = config.seed;
        mount.header.block_len = config.block_len;
        mount.records = 0;
        tape::write(&mount.path, &mount.header, 0, &[]).await.map_err(tape_error(&mount.path))?;
        Ok(())
    }

    /// Reads the tape back from disk and checks every record.
    async fn read(&mut self, mount: &mut Mount) -> Result<(), Failure> {
        let image = tape::load(&mount.path).await.map_err(tape_error(&mount.path))?;
        let Some((header, image)) = image.and_then(|image| Some((image.header.clone()?, image)))
        else {
            tracing::warn!(drive = self.index, volser = %mount.header.volser, "tape unreadable");
            self.stats.verification_failures += 1;
            return Ok(());
        };
        // LTO4: the key of the previous record, kept while the records name the same key.
        let mut current: Option<(KeyId, Aes256Gcm)> = None;
        for (position, record) in header.records(&image.bytes).enumerate() {
            let cipher = match self.shared.config.mode {
                DriveMode::StorageTek => mount.ciphers.get(&record.key_id),
                DriveMode::Lto4 => {
                    if current.as_ref().is_none_or(|(key_id, _)| *key_id != record.key_id) {
                        current = self.fetch(mount, &header, record.key_id).await?;
                    }
                    current.as_ref().map(|(_, cipher)| cipher)
                }
            };
            match cipher {
                Some(cipher) if header.verify(cipher, &record, position as u64) => {
                    self.stats.records_verified += 1;
                }
                _ => {
                    let volser = &header.volser;
                    tracing::warn!(drive = self.index, %volser, position, "record does not verify");
                    self.stats.verification_failures += 1;
                }
            }
        }
        if image.torn_tail {
            self.stats.verification_failures += 1;
        }
        mount.header = header;
        mount.records = image.records;
        Ok(())
    }

    /// LTO4: asks for the key a record names. `None` when the cluster does not know that key
    /// for this tape (404): the record cannot be read, which the caller counts as a failure.
    async fn fetch(
        &mut self,
        mount: &Mount,
        header: &TapeHeader,
        key_id: KeyId,
    ) -> Result<Option<(KeyId, Aes256Gcm)>, Failure> {
        let client = self.client.clone();
        let request = client.key(key_id, Some(mount.data_unit), &header.volser);
        match self.timed(OpKind::Read, request).await {
            Ok(found) if found.key.key_id == key_id => Ok(Some((key_id, cipher(&found.key)))),
            Ok(_) => Ok(None),
            Err(Failure::Client { error: ClientError::Refused { status: 404, .. }, .. }) => {
                Ok(None)
            }
            Err(failure) => Err(failure),
        }
    }
}
