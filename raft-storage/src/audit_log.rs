//! The audit log of this KMA (SPEC S5): the events `State::apply` returns, each with its place
//! in the audit chain, stored in [`CF_AUDIT`] under (log index, event sequence within the
//! entry), both big endian, so the column family reads in log order. Written in the same batch
//! that records the last applied log id.
//!
//! The chain runs over every event of the cluster, but a KMA stores only the events it applied
//! itself: one that joined, or fell behind, and caught up from a snapshot has no rows for what
//! the snapshot covered. So the log also records its anchors: the chain position before each
//! run of local rows (the first one where the log starts, another after each snapshot install
//! that left a hole). A run verifies from its anchor with `statemachine::verify_chain`.

use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch};
use statemachine::{AuditChain, ChainedAuditEvent};

use crate::data_dir::{encode, RocksDataDir, CF_AUDIT, CF_SM_META};
use crate::error::StorageError;

/// Key in [`CF_SM_META`] of the anchors, in chain order.
pub(crate) const KEY_AUDIT_ANCHORS: &str = "audit_anchors";

/// Key of one event: log index, then its position among the events of that entry.
fn audit_key(index: u64, seq: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&index.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The audit events of one `apply` call, gathered into the batch that will be written.
pub(crate) struct AuditBatch<'a> {
    cf: &'a ColumnFamily,
    batch: WriteBatch,
}

impl<'a> AuditBatch<'a> {
    pub fn new(data_dir: &'a RocksDataDir) -> Result<Self, StorageError> {
        Ok(AuditBatch { cf: data_dir.cf(CF_AUDIT)?, batch: WriteBatch::default() })
    }

    pub fn push(&mut self, index: u64, events: &[ChainedAuditEvent]) -> Result<(), StorageError> {
        for (seq, event) in events.iter().enumerate() {
            let seq = u32::try_from(seq).map_err(|_| StorageError::Encode {
                what: "audit event",
                detail: format!("more than {} events at index {index}", u32::MAX),
            })?;
            self.batch.put_cf(self.cf, audit_key(index, seq), encode("audit event", event)?);
        }
        Ok(())
    }

    pub fn into_batch(self) -> WriteBatch {
        self.batch
    }
}

/// Where the local audit log stands: its anchors and the chain position of its last row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AuditExtent {
    pub anchors: Vec<AuditChain>,
    /// The last chain position the local log covers (a row, or an anchor with no row after it).
    pub end: Option<u64>,
}

impl AuditExtent {
    /// Reads the anchors and the last row. Blocking.
    pub fn read(data_dir: &RocksDataDir) -> Result<Self, StorageError> {
        let anchors = read_anchors(data_dir)?;
        let last_row = last_event(data_dir)?.map(|event| event.seq);
        let end = anchors.last().map(|anchor| anchor.events).max(last_row);
        Ok(AuditExtent { anchors, end })
    }

    /// Rows from `from` on continue the local log, unless they start past its end: then `from`
    /// becomes an anchor, put into `batch`, and this returns true. Rows at or before the end
    /// are rewritten with the same bytes (a replay after a restart), which needs no anchor.
    pub fn continue_from(
        &mut self,
        data_dir: &RocksDataDir,
        from: AuditChain,
        batch: &mut WriteBatch,
    ) -> Result<bool, StorageError> {
        let hole = self.end.is_none_or(|end| from.events > end);
        if hole {
            self.anchors.push(from);
            let value = encode("audit anchors", &self.anchors)?;
            batch.put_cf(data_dir.cf(CF_SM_META)?, KEY_AUDIT_ANCHORS, value);
        }
        self.end = self.end.max(Some(from.events));
        assert!(!self.anchors.is_empty(), "a log with rows to come has an anchor");
        Ok(hole)
    }

    /// The local log now covers the chain up to `events`.
    pub fn extend_to(&mut self, events: u64) {
        assert!(self.end.is_some(), "rows are written only after their anchor");
        self.end = self.end.max(Some(events));
    }
}

pub(crate) fn read_anchors(data_dir: &RocksDataDir) -> Result<Vec<AuditChain>, StorageError> {
    let anchors = data_dir.get_decoded("audit anchors", CF_SM_META, KEY_AUDIT_ANCHORS)?;
    Ok(anchors.unwrap_or_default())
}

fn last_event(data_dir: &RocksDataDir) -> Result<Option<ChainedAuditEvent>, StorageError> {
    let cf = data_dir.cf(CF_AUDIT)?;
    let Some(item) = data_dir.db().iterator_cf(cf, IteratorMode::End).next() else {
        return Ok(None);
    };
    let (key, value) = item.map_err(|e| data_dir.rocks_error("read", CF_AUDIT, "last", e))?;
    data_dir.decode("audit event", CF_AUDIT, format!("{key:02x?}"), &value).map(Some)
}

/// Up to `limit` audit events from log index `from_index` on, in log order.
pub(crate) fn read_events(
    data_dir: &RocksDataDir,
    from_index: u64,
    limit: usize,
) -> Result<Vec<ChainedAuditEvent>, StorageError> {
    let start = audit_key(from_index, 0);
    let mode = IteratorMode::From(&start, Direction::Forward);
    let mut events = Vec::new();
    for item in data_dir.db().iterator_cf(data_dir.cf(CF_AUDIT)?, mode).take(limit) {
        let (key, value) = item.map_err(|e| {
            data_dir.rocks_error("read", CF_AUDIT, format!("index {from_index}.."), e)
        })?;
        let key_name = format!("{key:02x?}");
        events.push(data_dir.decode("audit event", CF_AUDIT, key_name, &value)?);
    }
    Ok(events)
}
