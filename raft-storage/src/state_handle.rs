//! What the node keeps of the state machine once openraft owns it: local reads of the state,
//! the last applied index (read-your-writes) and the audit log.

use std::sync::Arc;

use statemachine::{AuditChain, ChainedAuditEvent, State};
use tokio::sync::{watch, Mutex, RwLock, RwLockReadGuard};

use crate::audit_log;
use crate::data_dir::RocksDataDir;
use crate::error::StorageError;
use crate::state_machine::AppliedState;

/// A cheap, cloneable handle on the applied state of this KMA.
#[derive(Clone, Debug)]
pub struct StateHandle {
    data_dir: Arc<RocksDataDir>,
    applied: Arc<RwLock<AppliedState>>,
    /// The state machine's `apply_io`: a backup holds it while it streams the state.
    apply_io: Arc<Mutex<()>>,
    applied_index: watch::Receiver<u64>,
}

impl StateHandle {
    pub(crate) fn new(
        data_dir: Arc<RocksDataDir>,
        applied: Arc<RwLock<AppliedState>>,
        apply_io: Arc<Mutex<()>>,
        applied_index: watch::Receiver<u64>,
    ) -> Self {
        StateHandle { data_dir, applied, apply_io, applied_index }
    }

    pub(crate) fn data_dir(&self) -> &Arc<RocksDataDir> {
        &self.data_dir
    }

    pub(crate) fn applied(&self) -> &Arc<RwLock<AppliedState>> {
        &self.applied
    }

    pub(crate) fn apply_io(&self) -> &Arc<Mutex<()>> {
        &self.apply_io
    }

    /// The state as applied so far. Hold the guard briefly: `apply` waits while it is held.
    pub async fn read(&self) -> RwLockReadGuard<'_, State> {
        RwLockReadGuard::map(self.applied.read().await, |applied| &applied.state)
    }

    /// Index of the last applied log entry (0 before the first).
    pub fn applied_index(&self) -> u64 {
        *self.applied_index.borrow()
    }

    /// Waits until the entry at `index` is applied here and its audit events are durable, and
    /// returns the applied index then. The caller bounds the wait (`tokio::time::timeout`).
    pub async fn wait_applied(&self, index: u64) -> Result<u64, StorageError> {
        let mut applied_index = self.applied_index.clone();
        let reached = applied_index.wait_for(|&applied| applied >= index).await;
        reached.map(|applied| *applied).map_err(|_| StorageError::Closed)
    }

    /// A receiver of the applied index, for callers that select over several events.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_index.clone()
    }

    /// Up to `limit` audit events of this KMA from log index `from_index` on, in log order,
    /// each with its place in the audit chain. Blocking (a RocksDB scan): call it from
    /// `spawn_blocking` for large pages.
    ///
    /// A KMA that caught up by installing a snapshot has no events for the entries the
    /// snapshot covered; another KMA of the cluster has them.
    pub fn audit_events(
        &self,
        from_index: u64,
        limit: usize,
    ) -> Result<Vec<ChainedAuditEvent>, StorageError> {
        audit_log::read_events(&self.data_dir, from_index, limit)
    }

    /// The chain position the local audit log starts from: what `statemachine::verify_chain`
    /// takes as its anchor for the first stored event. The empty chain when this KMA has
    /// stored nothing yet. Blocking (one RocksDB read).
    pub fn audit_anchor(&self) -> Result<AuditChain, StorageError> {
        let anchors = audit_log::read_anchors(&self.data_dir)?;
        Ok(anchors.first().copied().unwrap_or(AuditChain::GENESIS))
    }

    /// Every chain position a run of local events starts from, in order: the first is
    /// [`StateHandle::audit_anchor`]; each other one follows a snapshot install that skipped
    /// events, so a gap that ends at one of them is explained, not a deletion. Blocking.
    pub fn audit_anchors(&self) -> Result<Vec<AuditChain>, StorageError> {
        audit_log::read_anchors(&self.data_dir)
    }

    /// The audit chain after every event applied here, from the replicated state: a complete
    /// local log verifies to this head.
    pub async fn audit_head(&self) -> AuditChain {
        self.read().await.audit_chain()
    }
}
