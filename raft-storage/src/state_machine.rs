//! The KMA state machine under openraft: [`statemachine::State`] in memory, its audit events and
//! applied position in RocksDB, its snapshots in files.
//!
//! After a restart the state is the latest snapshot; openraft then re-applies the committed tail
//! of the log (see `RocksLogStore::save_committed`). Re-applying is deterministic, so the audit
//! events it writes again are the same bytes under the same keys.
//!
//! Snapshot trade-off: a snapshot is streamed from the live state under a read lock, never from a
//! clone, so a 10-million-key state is not held twice in memory. While it streams (seconds at
//! that size) `apply` waits, so the node snapshots rarely (openraft
//! `SnapshotPolicy::LogsSinceLast` in the tens of thousands of entries). `apply` waits on
//! `apply_io`, which the builder holds until it has streamed the state, and not in the queue of
//! the state's lock: the lock is fair, so a writer queued there would hold up every local read
//! (a drive mounting a tape) until the snapshot ends, where now reads go on unhindered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StoredMembership,
};
use rocksdb::WriteBatch;
use statemachine::State;
use tokio::sync::{watch, Mutex, RwLock};

use crate::audit_log::{AuditBatch, AuditExtent};
use crate::data_dir::{encode, RocksDataDir, CF_SM_META};
use crate::error::StorageError;
use crate::snapshot_file::{self, SnapshotFile, SnapshotRecord};
use crate::state_handle::StateHandle;
use crate::types::{EntryResponse, KmaRaft};
use crate::write_stages::Stage;

type RaftResult<T> = Result<T, openraft::StorageError<u64>>;
type Entry = openraft::Entry<KmaRaft>;

/// Key in [`CF_SM_META`] of the last applied log id whose audit events are durable.
const KEY_LAST_APPLIED: &str = "last_applied";

/// The state and the openraft position it reflects, always changed together.
#[derive(Debug, Default)]
pub(crate) struct AppliedState {
    pub state: State,
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
}

/// What the state machine, its snapshot builder and its readers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub applied: Arc<RwLock<AppliedState>>,
    /// Held by `apply` until its audit batch is durable, so that a snapshot never covers
    /// entries whose audit events could be lost; and by the snapshot builder until it has
    /// streamed the state, so that `apply` waits here rather than in the state lock's queue.
    apply_io: Arc<Mutex<()>>,
    /// Serializes reading and replacing the current snapshot record and its file.
    snapshot: Mutex<()>,
    /// Makes temporary snapshot file names unique.
    file_seq: AtomicU64,
}

impl Shared {
    fn next_tag(&self, kind: &str) -> String {
        format!("{kind}-{}", self.file_seq.fetch_add(1, Ordering::Relaxed))
    }
}

pub struct RocksStateMachine {
    data_dir: Arc<RocksDataDir>,
    pub(crate) shared: Arc<Shared>,
    applied_index: watch::Sender<u64>,
    /// Files handed to openraft by `begin_receiving_snapshot`, removed after an install.
    receiving: Vec<std::path::PathBuf>,
    /// The anchors and end of the local audit log, to know when rows start a new run.
    pub(crate) audit: AuditExtent,
}

impl RocksStateMachine {
    /// Loads the latest snapshot of `data_dir`, if any, checking its digest, and removes
    /// leftovers of interrupted snapshot builds and transfers.
    ///
    /// Blocking (it decodes the whole snapshot): call it before serving or on `spawn_blocking`.
    pub fn open(data_dir: Arc<RocksDataDir>) -> Result<Self, StorageError> {
        let record = snapshot_file::read_record(&data_dir)?;
        let dir = data_dir.snapshot_dir();
        snapshot_file::remove_stale(&dir, record.as_ref().map(|r| r.file.file_name.as_str()))?;
        let applied = match record {
            None => AppliedState::default(),
            Some(record) => AppliedState {
                state: snapshot_file::load(&dir, &record.file)?,
                last_applied: record.meta.last_log_id,
                membership: record.meta.last_membership,
            },
        };
        let (applied_index, _) = watch::channel(applied.last_applied.map_or(0, |id| id.index));
        let audit = AuditExtent::read(&data_dir)?;
        let shared = Arc::new(Shared {
            applied: Arc::new(RwLock::new(applied)),
            apply_io: Arc::new(Mutex::new(())),
            snapshot: Mutex::new(()),
            file_seq: AtomicU64::new(0),
        });
        Ok(RocksStateMachine { data_dir, shared, applied_index, receiving: Vec::new(), audit })
    }

    /// A handle for local reads and for waiting until an index is applied; valid after this
    /// state machine moved into openraft.
    pub fn state(&self) -> StateHandle {
        let (applied, apply_io) = (self.shared.applied.clone(), self.shared.apply_io.clone());
        StateHandle::new(self.data_dir.clone(), applied, apply_io, self.applied_index.subscribe())
    }

    /// Applies `entries` in memory, then writes their audit events and the new last applied log
    /// id in one synced batch.
    pub(crate) async fn apply_entries<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<EntryResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let _io = self.shared.apply_io.lock().await;
        let mut applied = self.shared.applied.write().await;
        // No await from here on: a RocksDB write batch cannot cross threads.
        let mut audit = AuditBatch::new(&self.data_dir)?;
        let chain_before = applied.state.audit_chain();
        let mut responses = Vec::new();
        for entry in entries {
            responses.push(apply_entry(&mut applied, entry, &mut audit)?);
        }
        let last_applied = applied.last_applied;
        let chain_after = applied.state.audit_chain();
        // Readers may go on while the batch syncs; `apply_io` keeps snapshots out until then.
        drop(applied);
        let Some(last_applied) = last_applied.filter(|_| !responses.is_empty()) else {
            return Ok(responses);
        };
        let mut batch = audit.into_batch();
        if chain_after != chain_before {
            self.audit.continue_from(&self.data_dir, chain_before, &mut batch)?;
            self.audit.extend_to(chain_after.events);
        }
        let value = encode("last applied log id", &last_applied)?;
        batch.put_cf(self.data_dir.cf(CF_SM_META)?, KEY_LAST_APPLIED, value);
        // Not synced: after a crash the state comes from the last snapshot and openraft applies
        // the log again from there, writing the same audit events under the same keys; the
        // synced write that records a snapshot makes everything it covers durable first.
        self.data_dir.write_unsynced(
            batch,
            CF_SM_META,
            format!("{KEY_LAST_APPLIED} {last_applied}"),
        )?;
        self.applied_index.send_replace(last_applied.index);
        Ok(responses)
    }

    /// Rebuilds the state from a received snapshot, makes it the current snapshot, then swaps it
    /// in: nothing changes unless the whole snapshot decoded.
    async fn install(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        data: tokio::fs::File,
    ) -> Result<(), StorageError> {
        let source = data.into_std().await;
        let dir = self.data_dir.snapshot_dir();
        let tag = self.shared.next_tag("install");
        let snapshot_id = meta.snapshot_id.clone();
        let last_index = meta.last_log_id.map(|id| id.index);
        let (state, file) = tokio::task::spawn_blocking(move || {
            let (state, writer) = snapshot_file::copy_received(source, &snapshot_id, &dir, &tag)?;
            Ok::<_, StorageError>((state, writer.finish(last_index)?))
        })
        .await
        .map_err(StorageError::task("snapshot install"))??;
        if state.last_applied_index() > last_index.unwrap_or(0) {
            snapshot_file::remove_quietly(&self.data_dir.snapshot_dir().join(&file.file_name));
            let detail =
                format!("state applied up to {}, beyond {meta}", state.last_applied_index());
            let snapshot = meta.snapshot_id.clone();
            return Err(StorageError::ReceivedSnapshotCorrupt { snapshot, detail });
        }
        let record = SnapshotRecord { meta: meta.clone(), file };
        commit_snapshot(&self.data_dir, &self.shared, record, true).await?;
        // Rows from here on follow the installed chain; if that leaves a hole after the local
        // rows, they start a new run, whose anchor must outlive a crash like the snapshot.
        let mut batch = WriteBatch::default();
        if self.audit.continue_from(&self.data_dir, state.audit_chain(), &mut batch)? {
            self.data_dir.write_synced(batch, CF_SM_META, "audit anchors")?;
        }
        {
            let _io = self.shared.apply_io.lock().await;
            let mut applied = self.shared.applied.write().await;
            *applied = AppliedState {
                state,
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
        }
        self.applied_index.send_replace(last_index.unwrap_or(0));
        for path in self.receiving.drain(..) {
            snapshot_file::remove_quietly(&path);
        }
        Ok(())
    }
}

/// Applies one entry: each envelope of its batch in order, at the entry's index. The audit
/// events of the whole batch are numbered in one sequence under that index.
fn apply_entry(
    applied: &mut AppliedState,
    entry: Entry,
    audit: &mut AuditBatch<'_>,
) -> Result<EntryResponse, StorageError> {
    let index = entry.log_id.index;
    applied.last_applied = Some(entry.log_id);
    let mut results = Vec::new();
    match entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(batch) => {
            let mut events = Vec::new();
            results.reserve(batch.envelopes.len());
            for envelope in &batch.envelopes {
                let (result, mut chained) = applied.state.apply(index, envelope).into_chained();
                events.append(&mut chained);
                results.push(result);
            }
            audit.push(index, &events)?;
        }
        EntryPayload::Membership(membership) => {
            applied.membership = StoredMembership::new(Some(entry.log_id), membership);
        }
    }
    Ok(EntryResponse { index, results })
}

/// Makes `record` the current snapshot unless a newer one is already current (a build that
/// finished after an install), then removes the file it replaced. Returns the snapshot to hand
/// to openraft.
async fn commit_snapshot(
    data_dir: &RocksDataDir,
    shared: &Shared,
    record: SnapshotRecord,
    always: bool,
) -> Result<Snapshot<KmaRaft>, StorageError> {
    let _snapshot = shared.snapshot.lock().await;
    let dir = data_dir.snapshot_dir();
    let path = dir.join(&record.file.file_name);
    let current = snapshot_file::read_record(data_dir)?;
    let stale = current.as_ref().is_some_and(|c| c.meta.last_log_id >= record.meta.last_log_id);
    let file = tokio::fs::File::open(&path).await.map_err(StorageError::io("open", &path))?;
    if stale && !always {
        // Still a valid snapshot for whoever asked; the open handle outlives the removal.
        if current.as_ref().is_some_and(|c| c.file.file_name != record.file.file_name) {
            snapshot_file::remove_quietly(&path);
        }
        return Ok(Snapshot { meta: record.meta, snapshot: Box::new(file) });
    }
    snapshot_file::write_record(data_dir, &record)?;
    if let Some(current) = current.filter(|c| c.file.file_name != record.file.file_name) {
        snapshot_file::remove_quietly(&dir.join(&current.file.file_name));
    }
    Ok(Snapshot { meta: record.meta, snapshot: Box::new(file) })
}

fn snapshot_id(last_log_id: Option<LogId<u64>>, file: &SnapshotFile) -> String {
    match last_log_id {
        Some(log_id) => format!("{log_id}-{}", file.digest_hex()),
        None => format!("none-{}", file.digest_hex()),
    }
}

/// Builds snapshots of the live state; see the module documentation for the locking trade-off.
pub struct RocksSnapshotBuilder {
    data_dir: Arc<RocksDataDir>,
    shared: Arc<Shared>,
}

impl RocksSnapshotBuilder {
    async fn build(&mut self) -> Result<Snapshot<KmaRaft>, StorageError> {
        let io = self.shared.apply_io.clone().lock_owned().await;
        let applied = self.shared.applied.clone().read_owned().await;
        let last_log_id = applied.last_applied;
        let membership = applied.membership.clone();
        let dir = self.data_dir.snapshot_dir();
        let tag = self.shared.next_tag("build");
        let file = tokio::task::spawn_blocking(move || {
            let writer = snapshot_file::write_state(&dir, &tag, &applied.state);
            // Syncing the file needs no lock: let apply go on.
            drop(applied);
            drop(io);
            writer?.finish(last_log_id.map(|id| id.index))
        })
        .await
        .map_err(StorageError::task("snapshot build"))??;
        let snapshot_id = snapshot_id(last_log_id, &file);
        let meta = SnapshotMeta { last_log_id, last_membership: membership, snapshot_id };
        commit_snapshot(&self.data_dir, &self.shared, SnapshotRecord { meta, file }, false).await
    }
}

impl RaftSnapshotBuilder<KmaRaft> for RocksSnapshotBuilder {
    async fn build_snapshot(&mut self) -> RaftResult<Snapshot<KmaRaft>> {
        self.build().await.map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl RaftStateMachine<KmaRaft> for RocksStateMachine {
    type SnapshotBuilder = RocksSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> RaftResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let applied = self.shared.applied.read().await;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> RaftResult<Vec<EntryResponse>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let applied = self
            .apply_entries(entries)
            .await
            .map_err(|e| e.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write));
        if applied.is_ok() {
            self.data_dir.write_stages().record(Stage::Apply, started.elapsed());
        }
        applied
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        RocksSnapshotBuilder { data_dir: self.data_dir.clone(), shared: self.shared.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> RaftResult<Box<tokio::fs::File>> {
        let path =
            self.data_dir.snapshot_dir().join(format!("{}.tmp", self.shared.next_tag("receive")));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(StorageError::io("create", &path))
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        self.receiving.push(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> RaftResult<()> {
        let signature = Some(meta.signature());
        self.install(meta, *snapshot)
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(signature), ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> RaftResult<Option<Snapshot<KmaRaft>>> {
        current_snapshot(&self.data_dir, &self.shared)
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }
}

async fn current_snapshot(
    data_dir: &RocksDataDir,
    shared: &Shared,
) -> Result<Option<Snapshot<KmaRaft>>, StorageError> {
    let _snapshot = shared.snapshot.lock().await;
    let Some(record) = snapshot_file::read_record(data_dir)? else { return Ok(None) };
    let path = data_dir.snapshot_dir().join(&record.file.file_name);
    let file = tokio::fs::File::open(&path).await.map_err(StorageError::io("open", &path))?;
    Ok(Some(Snapshot { meta: record.meta, snapshot: Box::new(file) }))
}
