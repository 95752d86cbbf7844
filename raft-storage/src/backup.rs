//! What a database backup carries (SPEC B2) and how a restore turns it into a data dir (B3).
//!
//! This module knows nothing of encryption: the node wraps the stream written here in the
//! backup key's sealer and hands the opened stream back for a restore. The stream is framed
//! (a u32 big-endian length, then that many bytes), in four sections:
//!
//! 1. one frame: the [`BackupManifest`] (postcard), which says which log index the backup covers;
//! 2. the state's snapshot encoding (`statemachine::codec`), frame by frame, then an empty frame;
//! 3. this KMA's audit rows up to that index, each as its RocksDB key (12 bytes) and value,
//!    then an empty frame;
//! 4. one frame: the [`BackupTrailer`], with the SHA-256 of the state's encoding and the row
//!    count, so that a stream cut at a frame boundary or spliced from two backups is refused.
//!
//! The state is streamed from the live state under its read lock while applies wait on
//! `apply_io`, exactly as a snapshot build does (see `state_machine`): local reads go on, and
//! the index the backup states is the one its state holds. The audit rows are read after the
//! locks are let go: the rows up to that index are durable by then, and never change.

use std::io::{Read, Write};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use statemachine::codec::SnapshotReader;
use statemachine::{AuditChain, ChainedAuditEvent, State};

use crate::audit_log::{self, AuditBatch, AuditExtent};
use crate::data_dir::{encode, RocksDataDir, CF_AUDIT, CF_LOG_META, CF_SM_META};
use crate::error::StorageError;
use crate::snapshot_file::{self, SnapshotRecord, SNAPSHOT_CHUNK_LEN};
use crate::state_handle::StateHandle;

/// The version of the framing and of the manifest; a restore refuses any other.
pub const BACKUP_STREAM_FORMAT: u16 = 1;

/// Largest frame a restore accepts: a snapshot chunk or an audit row is far smaller.
const FRAME_LEN_MAX: usize = 16 << 20;

/// Audit rows written per RocksDB batch during a restore.
const RESTORE_ROWS_PER_BATCH: usize = 10_000;

/// Length of an audit row's key: log index and sequence within the entry, big endian.
const AUDIT_KEY_LEN: usize = 12;

/// The first frame of a backup stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u16,
    /// The last log index whose effects the backup holds.
    pub covers_index: u64,
    /// The audit chain after that index (what the state holds).
    pub chain: AuditChain,
    /// Where each run of the audit rows that follow starts (see `audit_log`).
    pub anchors: Vec<AuditChain>,
}

/// The last frame of a backup stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTrailer {
    pub state_sha256: [u8; 32],
    pub state_bytes: u64,
    pub audit_rows: u64,
    /// SHA-256 of every frame before the trailer, length prefixes included: a changed audit
    /// row is refused as surely as a changed state (the sealed file outside catches both
    /// first; this holds for a stream read without it, as a drill's or a test's).
    pub frames_sha256: [u8; 32],
}

/// What a backup stream held, as written or as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    pub covers_index: u64,
    /// SHA-256 of the state's snapshot encoding: equal for equal states, so a restore drill
    /// can compare the state it decoded with the cluster's at the same index.
    pub state_sha256: [u8; 32],
    pub state_bytes: u64,
    pub audit_rows: u64,
}

fn backup_error(detail: impl Into<String>) -> StorageError {
    StorageError::BackupStream { detail: detail.into() }
}

/// Writes frames, hashing every byte before the trailer (see [`BackupTrailer`]).
struct FrameWriter<W: Write> {
    out: W,
    hasher: Sha256,
}

impl<W: Write> FrameWriter<W> {
    fn new(out: W) -> Self {
        FrameWriter { out, hasher: Sha256::new() }
    }

    fn frame(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&len| len as usize <= FRAME_LEN_MAX)
            .ok_or_else(|| backup_error(format!("a frame of {} bytes is too long", bytes.len())))?;
        self.hasher.update(len.to_be_bytes());
        self.hasher.update(bytes);
        self.out.write_all(&len.to_be_bytes()).map_err(write_error)?;
        self.out.write_all(bytes).map_err(write_error)
    }

    fn end_section(&mut self) -> Result<(), StorageError> {
        self.frame(&[])
    }
}

fn write_error(error: std::io::Error) -> StorageError {
    StorageError::BackupWrite { source: error }
}

struct FrameReader<R: Read> {
    input: R,
    buffer: Vec<u8>,
    hasher: Sha256,
}

impl<R: Read> FrameReader<R> {
    /// The next frame; empty at the end of a section.
    fn next(&mut self) -> Result<&[u8], StorageError> {
        let mut len_bytes = [0u8; 4];
        self.input.read_exact(&mut len_bytes).map_err(read_error)?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > FRAME_LEN_MAX {
            return Err(backup_error(format!("a frame claims {len} bytes")));
        }
        self.buffer.resize(len, 0);
        self.input.read_exact(&mut self.buffer).map_err(read_error)?;
        self.hasher.update(len_bytes);
        self.hasher.update(&self.buffer);
        Ok(&self.buffer)
    }

    fn decoded<T: serde::de::DeserializeOwned>(&mut self, what: &str) -> Result<T, StorageError> {
        let frame = self.next()?;
        postcard::from_bytes(frame).map_err(|e| backup_error(format!("the {what}: {e}")))
    }
}

fn read_error(error: std::io::Error) -> StorageError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        return backup_error("it ends early: the file is truncated");
    }
    StorageError::BackupRead { source: error }
}

impl StateHandle {
    /// Streams the applied state and this KMA's audit log up to it into `out` (see the module
    /// documentation), and returns `out` with what was written. Applies wait while the state
    /// streams; reads do not.
    pub async fn export_backup<W: Write + Send + 'static>(
        &self,
        out: W,
    ) -> Result<(W, BackupSummary), StorageError> {
        let io = self.apply_io().clone().lock_owned().await;
        let applied = self.applied().clone().read_owned().await;
        let data_dir = self.data_dir().clone();
        tokio::task::spawn_blocking(move || {
            let covers_index = applied.last_applied.map_or(0, |id| id.index);
            let chain = applied.state.audit_chain();
            let anchors: Vec<AuditChain> = audit_log::read_anchors(&data_dir)?
                .into_iter()
                .filter(|anchor| anchor.events <= chain.events)
                .collect();
            let manifest =
                BackupManifest { format: BACKUP_STREAM_FORMAT, covers_index, chain, anchors };
            let mut frames = FrameWriter::new(out);
            let (state_sha256, state_bytes) =
                write_manifest_and_state(&mut frames, &manifest, &applied.state)?;
            // The rows up to `covers_index` are durable: let applies go on.
            drop(applied);
            drop(io);
            let audit_rows = write_audit_rows(&data_dir, covers_index, &mut frames)?;
            let summary = BackupSummary { covers_index, state_sha256, state_bytes, audit_rows };
            Ok((finish_stream(frames, &summary)?, summary))
        })
        .await
        .map_err(StorageError::task("backup"))?
    }
}

fn write_manifest_and_state<W: Write>(
    frames: &mut FrameWriter<W>,
    manifest: &BackupManifest,
    state: &State,
) -> Result<([u8; 32], u64), StorageError> {
    frames.frame(&encode_plain("backup manifest", manifest)?)?;
    let mut hasher = Sha256::new();
    let mut state_bytes = 0u64;
    for chunk in statemachine::codec::snapshot_chunks(state, SNAPSHOT_CHUNK_LEN) {
        hasher.update(&chunk);
        state_bytes += chunk.len() as u64;
        frames.frame(&chunk)?;
    }
    frames.end_section()?;
    Ok((hasher.finalize().into(), state_bytes))
}

/// Ends the audit section and writes the trailer.
fn finish_stream<W: Write>(
    mut frames: FrameWriter<W>,
    summary: &BackupSummary,
) -> Result<W, StorageError> {
    frames.end_section()?;
    let trailer = BackupTrailer {
        state_sha256: summary.state_sha256,
        state_bytes: summary.state_bytes,
        audit_rows: summary.audit_rows,
        frames_sha256: frames.hasher.clone().finalize().into(),
    };
    frames.frame(&encode_plain("backup trailer", &trailer)?)?;
    frames.out.flush().map_err(write_error)?;
    Ok(frames.out)
}

/// A backup stream of `state` alone, with no audit rows: for benchmarks and tools that hold
/// a state outside any data dir. Blocking.
pub fn write_state_stream<W: Write>(
    state: &State,
    out: W,
) -> Result<(W, BackupSummary), StorageError> {
    let chain = state.audit_chain();
    let covers_index = state.last_applied_index();
    let manifest =
        BackupManifest { format: BACKUP_STREAM_FORMAT, covers_index, chain, anchors: vec![chain] };
    let mut frames = FrameWriter::new(out);
    let (state_sha256, state_bytes) = write_manifest_and_state(&mut frames, &manifest, state)?;
    let summary = BackupSummary { covers_index, state_sha256, state_bytes, audit_rows: 0 };
    Ok((finish_stream(frames, &summary)?, summary))
}

fn encode_plain<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(value).map_err(|e| StorageError::Encode { what, detail: e.to_string() })
}

fn write_audit_rows<W: Write>(
    data_dir: &RocksDataDir,
    covers_index: u64,
    frames: &mut FrameWriter<W>,
) -> Result<u64, StorageError> {
    let cf = data_dir.cf(CF_AUDIT)?;
    let mut rows = 0u64;
    let mut frame = Vec::new();
    for item in data_dir.db().iterator_cf(cf, IteratorMode::Start) {
        let (key, value) =
            item.map_err(|e| data_dir.rocks_error("read", CF_AUDIT, "backup scan", e))?;
        let index = key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
        if index.is_none_or(|index| index > covers_index) {
            break;
        }
        frame.clear();
        frame.extend_from_slice(&key);
        frame.extend_from_slice(&value);
        frames.frame(&frame)?;
        rows += 1;
    }
    Ok(rows)
}

/// Reads a backup stream to its end, checking every frame, and returns the state it holds
/// and what it held; `row` sees each audit row (key, value) as it is read. Used by a restore
/// and by a restore drill (which only counts rows).
pub fn read_backup<R: Read>(
    input: R,
    mut row: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<(State, BackupManifest, BackupSummary), StorageError> {
    let mut frames = FrameReader {
        input,
        buffer: Vec::with_capacity(SNAPSHOT_CHUNK_LEN),
        hasher: Sha256::new(),
    };
    let manifest: BackupManifest = frames.decoded("backup manifest")?;
    if manifest.format != BACKUP_STREAM_FORMAT {
        return Err(backup_error(format!(
            "its contents have format {}; this KMA reads format {BACKUP_STREAM_FORMAT}: \
             restore with the KMA version that took the backup or a newer one",
            manifest.format
        )));
    }
    let mut reader = SnapshotReader::new();
    let mut hasher = Sha256::new();
    let mut state_bytes = 0u64;
    loop {
        let chunk = frames.next()?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        state_bytes += chunk.len() as u64;
        reader.push(chunk).map_err(|e| backup_error(format!("its state: {e}")))?;
    }
    let state = reader.finish().map_err(|e| backup_error(format!("its state: {e}")))?;
    if state.last_applied_index() != manifest.covers_index {
        return Err(backup_error(format!(
            "its state is at index {}, its manifest says {}",
            state.last_applied_index(),
            manifest.covers_index
        )));
    }
    let mut audit_rows = 0u64;
    loop {
        let frame = frames.next()?;
        if frame.is_empty() {
            break;
        }
        if frame.len() <= AUDIT_KEY_LEN {
            return Err(backup_error("an audit row is shorter than its key"));
        }
        let (key, value) = frame.split_at(AUDIT_KEY_LEN);
        row(key, value)?;
        audit_rows += 1;
    }
    let frames_sha256: [u8; 32] = frames.hasher.clone().finalize().into();
    let trailer: BackupTrailer = frames.decoded("backup trailer")?;
    let state_sha256: [u8; 32] = hasher.finalize().into();
    if trailer.state_sha256 != state_sha256
        || trailer.state_bytes != state_bytes
        || trailer.audit_rows != audit_rows
        || trailer.frames_sha256 != frames_sha256
    {
        return Err(backup_error("its trailer does not match what it holds"));
    }
    let mut rest = [0u8; 1];
    if frames.input.read(&mut rest).map_err(read_error)? != 0 {
        return Err(backup_error("bytes follow its trailer"));
    }
    let summary = BackupSummary {
        covers_index: manifest.covers_index,
        state_sha256,
        state_bytes,
        audit_rows,
    };
    Ok((state, manifest, summary))
}

/// SHA-256 of `state`'s snapshot encoding, as [`BackupSummary::state_sha256`] computes it.
pub fn state_sha256(state: &State) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for chunk in statemachine::codec::snapshot_chunks(state, SNAPSHOT_CHUNK_LEN) {
        hasher.update(&chunk);
    }
    hasher.finalize().into()
}

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub backup: BackupSummary,
    /// The index of the restore's own entry: the snapshot the new data dir starts from.
    pub restore_index: u64,
}

/// Makes `dir` (which must not hold a database yet) the data dir of a new one-voter cluster
/// whose state is the backup's, changed by `restore` at the next index: `restore` applies the
/// restore's command and returns the audit events it caused and the node ID of the one voter,
/// reached at `address`. When any step fails the caller removes `dir`.
///
/// Blocking.
pub fn restore_data_dir<R: Read>(
    dir: &Path,
    backup: R,
    address: &str,
    restore: impl FnOnce(&mut State, u64) -> Result<(Vec<ChainedAuditEvent>, u64), String>,
) -> Result<Restored, StorageError> {
    let db_dir = dir.join("rocksdb");
    if db_dir.exists() {
        return Err(backup_error(format!(
            "{} already holds a database: a restore needs a factory-fresh KMA (an empty data dir)",
            dir.display()
        )));
    }
    let data_dir = RocksDataDir::open(dir)?;
    let cf = data_dir.cf(CF_AUDIT)?;
    let mut batch = WriteBatch::default();
    let mut pending = 0usize;
    let (mut state, manifest, summary) = read_backup(backup, |key, value| {
        // Each row must decode: a restore writes nothing it could not read back.
        data_dir.decode::<ChainedAuditEvent>("audit event", CF_AUDIT, "backup row", value)?;
        batch.put_cf(cf, key, value);
        pending += 1;
        if pending == RESTORE_ROWS_PER_BATCH {
            data_dir.write_unsynced(std::mem::take(&mut batch), CF_AUDIT, "restored rows")?;
            pending = 0;
        }
        Ok(())
    })?;
    data_dir.write_unsynced(batch, CF_AUDIT, "restored rows")?;
    if manifest.chain != state.audit_chain() {
        return Err(backup_error("its manifest's audit chain is not its state's"));
    }
    let mut anchors = WriteBatch::default();
    anchors.put_cf(
        data_dir.cf(CF_SM_META)?,
        audit_log::KEY_AUDIT_ANCHORS,
        encode("audit anchors", &manifest.anchors)?,
    );
    data_dir.write_unsynced(anchors, CF_SM_META, "restored anchors")?;

    let chain_before = state.audit_chain();
    let (events, node_id) = restore(&mut state, summary.covers_index + 1).map_err(backup_error)?;
    // The snapshot is at the index the state now holds: the restore's own entry, or the
    // backup's index when the step applied nothing (a restore drill).
    let restore_index = state.last_applied_index();
    if restore_index != summary.covers_index && restore_index != summary.covers_index + 1 {
        return Err(backup_error(format!(
            "the restore step left the state at index {restore_index}, not {} or the next",
            summary.covers_index
        )));
    }
    let mut extent = AuditExtent::read(&data_dir)?;
    let mut audit = AuditBatch::new(&data_dir)?;
    audit.push(restore_index, &events)?;
    let mut batch = audit.into_batch();
    extent.continue_from(&data_dir, chain_before, &mut batch)?;
    data_dir.write_unsynced(batch, CF_AUDIT, "restore events")?;

    let log_id = LogId::new(CommittedLeaderId::new(0, node_id), restore_index);
    let nodes = std::collections::BTreeMap::from([(node_id, BasicNode { addr: address.into() })]);
    let voters = std::collections::BTreeSet::from([node_id]);
    let membership = StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes));
    let snapshot_dir = data_dir.snapshot_dir();
    let file = snapshot_file::write_state(&snapshot_dir, "restore", &state)?
        .finish(Some(restore_index))?;
    let snapshot_id = format!("{log_id}-{}", file.digest_hex());
    let meta = SnapshotMeta { last_log_id: Some(log_id), last_membership: membership, snapshot_id };
    // The log starts after the snapshot, as after a purge; the synced write of the snapshot
    // record that follows makes every write above durable too (one WAL, in order).
    let mut purged = WriteBatch::default();
    purged.put_cf(
        data_dir.cf(CF_LOG_META)?,
        crate::log_store::KEY_LAST_PURGED,
        encode("last purged log id", &log_id)?,
    );
    data_dir.write_unsynced(purged, CF_LOG_META, "restored last purged")?;
    snapshot_file::write_record(&data_dir, &SnapshotRecord { meta, file })?;
    Ok(Restored { backup: summary, restore_index })
}

/// What a recovery from a lost majority did to a data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The last index this KMA knew committed: everything up to it is kept.
    pub committed_index: u64,
    /// Entries after it that this KMA held but never learnt committed: dropped, as the lost
    /// majority may or may not have committed them.
    pub uncommitted_dropped: u64,
    /// The index of the recovery's own entry, where the new log starts.
    pub recovery_index: u64,
}

/// Recovery from a lost majority (SPEC B7), on a stopped KMA's own data dir: applies what this
/// KMA knew committed, then `recover` at the next index (the recovery's command: it returns
/// the events it caused and this KMA's node ID), and makes the result the snapshot of a
/// one-voter cluster reached at `address`. The old log goes (its committed part is in the
/// snapshot), and so do entries this KMA never learnt committed.
pub async fn recover_data_dir(
    dir: &Path,
    address: &str,
    recover: impl FnOnce(&State, u64) -> Result<(statemachine::Envelope, u64), String>,
) -> Result<Recovered, StorageError> {
    use crate::log_store::{RocksLogStore, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};
    use openraft::storage::RaftStateMachine;
    use openraft::Vote;
    let (data_dir, log_store, mut state_machine) = crate::open_stores(dir)?;
    // Stored as openraft hands it over: an optional log id.
    let committed: Option<LogId<u64>> = data_dir
        .get_decoded::<Option<LogId<u64>>>("committed log id", CF_LOG_META, KEY_COMMITTED)?
        .flatten();
    let vote: Option<Vote<u64>> = data_dir.get_decoded("vote", CF_LOG_META, KEY_VOTE)?;
    let (applied, _) = state_machine
        .applied_state()
        .await
        .map_err(|e| backup_error(format!("cannot read the applied state: {e}")))?;
    let applied_index = applied.map_or(0, |id| id.index);
    let committed_index = committed.map_or(0, |id| id.index).max(applied_index);
    let tail = log_store.read_entries(&((applied_index + 1)..=committed_index))?;
    if tail.last().map_or(applied_index, |e| e.log_id.index) != committed_index {
        return Err(backup_error(format!(
            "this KMA's log lacks entries up to its committed index {committed_index}: it \
             cannot be the survivor a recovery starts from; use another survivor or a backup"
        )));
    }
    let last_in_log = RocksLogStore::<crate::KmaRaft>::last_index(&log_store)?;
    state_machine.apply_entries(tail).await?;
    let recovery_index = committed_index + 1;
    // A term above every one this KMA saw, so the new log's IDs sort after the old ones.
    let term = vote.map_or(0, |v| v.leader_id.term).max(committed.map_or(0, |c| c.leader_id.term));
    let (envelope, node_id) = {
        let state = state_machine.shared.applied.read().await;
        recover(&state.state, recovery_index).map_err(backup_error)?
    };
    let log_id = LogId::new(CommittedLeaderId::new(term, node_id), recovery_index);
    let batch = statemachine::Batch { envelopes: vec![envelope] };
    let entry = openraft::Entry::<crate::KmaRaft> {
        log_id,
        payload: openraft::EntryPayload::Normal(batch),
    };
    let responses = state_machine.apply_entries([entry]).await?;
    if let Some(Err(reject)) = responses.first().and_then(|r| r.results.first()) {
        return Err(backup_error(format!("the recovery was refused: {reject}")));
    }
    let nodes = std::collections::BTreeMap::from([(node_id, BasicNode { addr: address.into() })]);
    let voters = std::collections::BTreeSet::from([node_id]);
    let membership = StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes));
    let file = {
        let applied = state_machine.shared.applied.read().await;
        snapshot_file::write_state(&data_dir.snapshot_dir(), "recover", &applied.state)?
            .finish(Some(recovery_index))?
    };
    let snapshot_id = format!("{log_id}-{}", file.digest_hex());
    let meta = SnapshotMeta { last_log_id: Some(log_id), last_membership: membership, snapshot_id };
    let mut batch = WriteBatch::default();
    let log_meta = data_dir.cf(CF_LOG_META)?;
    batch.put_cf(log_meta, KEY_LAST_PURGED, encode("last purged log id", &log_id)?);
    batch.put_cf(log_meta, KEY_COMMITTED, encode("committed log id", &Some(log_id))?);
    let log = data_dir.cf(crate::data_dir::CF_LOG)?;
    batch.delete_range_cf(log, 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
    batch.delete_cf(log, u64::MAX.to_be_bytes());
    data_dir.write_unsynced(batch, crate::data_dir::CF_LOG, "recovery: the old log")?;
    snapshot_file::write_record(&data_dir, &SnapshotRecord { meta, file })?;
    Ok(Recovered {
        committed_index,
        uncommitted_dropped: last_in_log.saturating_sub(committed_index),
        recovery_index,
    })
}
