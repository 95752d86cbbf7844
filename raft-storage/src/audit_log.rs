//! The audit log of this KMA (SPEC S5): the events `State::apply` returns, stored in
//! [`CF_AUDIT`] under (log index, event sequence), both big endian, so the column family reads in
//! log order. Written in the same synced batch that records the last applied log id.

use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch};
use statemachine::AuditEvent;

use crate::data_dir::{encode, RocksDataDir, CF_AUDIT};
use crate::error::StorageError;

/// Key of one event: log index, then its position among the events of that entry.
fn audit_key(index: u64, seq: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&index.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The audit events of one `apply` call, gathered into the batch that will be synced.
pub(crate) struct AuditBatch<'a> {
    cf: &'a ColumnFamily,
    batch: WriteBatch,
}

impl<'a> AuditBatch<'a> {
    pub fn new(data_dir: &'a RocksDataDir) -> Result<Self, StorageError> {
        Ok(AuditBatch { cf: data_dir.cf(CF_AUDIT)?, batch: WriteBatch::default() })
    }

    pub fn push(&mut self, index: u64, events: &[AuditEvent]) -> Result<(), StorageError> {
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

/// Up to `limit` audit events from log index `from_index` on, in log order.
pub(crate) fn read_events(
    data_dir: &RocksDataDir,
    from_index: u64,
    limit: usize,
) -> Result<Vec<AuditEvent>, StorageError> {
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
