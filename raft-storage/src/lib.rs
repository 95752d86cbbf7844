//! openraft 0.9 storage for the KMA cluster on RocksDB: the Raft log, the state machine that
//! applies it to [`statemachine::State`], its snapshots and its audit log.
//!
//! This crate owns the data dir of one KMA and the durability of everything in it: a write
//! openraft relies on returns only after the RocksDB WAL is synced, and a damaged or newer data
//! dir is refused with an error that tells the operator what to do, never rewritten silently.
//! It must never reach the network, decide anything about time (the leader's stamp inside each
//! envelope is the only clock), or handle clear key material (keys arrive wrapped, inside the
//! envelopes and the state, and are stored as opaque bytes).
//!
//! Module map:
//! - [`types`]: the openraft type config [`KmaRaft`], [`EntryResponse`], and [`ApplyResponse`]
//!   re-exported from the `wire` crate (where clients take it from).
//! - [`data_dir`]: [`RocksDataDir`], the RocksDB database with its column families, the versioned
//!   value encoding and the one synced write path.
//! - [`log_store`]: [`RocksLogStore`], openraft's `RaftLogStorage` and `RaftLogReader`.
//! - [`leader_appends`]: [`LeaderAppend`], the leader's new entries handed to the node before
//!   they are synced, so that followers can write them in parallel.
//! - [`state_machine`]: [`RocksStateMachine`] and [`RocksSnapshotBuilder`], openraft's
//!   `RaftStateMachine` and `RaftSnapshotBuilder`.
//! - [`state_handle`]: [`StateHandle`], local reads and read-your-writes waits for the node.
//! - `snapshot_file`: streaming snapshot files in and out. `audit_log`: the audit column family
//!   (chained events) and its anchors.
//! - [`backup`]: the stream a database backup carries (state and audit rows up to an index),
//!   read back, and a restored backup made into a new one-voter data dir.
//! - [`error`]: [`StorageError`], whose messages say what the operator should do.
//! - [`write_stages`]: [`WriteStages`], the time a write spends in each stage on this KMA,
//!   summed for `/metrics` (the log append and the apply are timed here, the rest by the node).

pub mod backup;
pub mod data_dir;
pub mod error;
pub mod leader_appends;
pub mod log_store;
pub mod state_handle;
pub mod state_machine;
pub mod types;
pub mod write_stages;

mod audit_log;
mod snapshot_file;

use std::path::Path;

pub use data_dir::RocksDataDir;
pub use error::StorageError;
pub use leader_appends::LeaderAppend;
pub use log_store::RocksLogStore;
pub use snapshot_file::SNAPSHOT_CHUNK_LEN;
pub use state_handle::StateHandle;
pub use state_machine::{RocksSnapshotBuilder, RocksStateMachine};
pub use types::{ApplyResponse, EntryResponse, KmaRaft};
pub use write_stages::{Stage, StageTotals, WriteStages};

/// Opens the data dir at `dir` and the two stores openraft needs, sharing one database.
/// Blocking (it loads the latest snapshot): call it before serving or on `spawn_blocking`.
pub fn open_stores(
    dir: impl AsRef<Path>,
) -> Result<(std::sync::Arc<RocksDataDir>, RocksLogStore, RocksStateMachine), StorageError> {
    let data_dir = RocksDataDir::open(dir)?;
    let log_store = RocksLogStore::new(data_dir.clone());
    log_store.step_down_at_start()?;
    let state_machine = RocksStateMachine::open(data_dir.clone())?;
    Ok((data_dir, log_store, state_machine))
}
