//! The KMIP reads this KMA answered from its local state, counted per client and operation and
//! written to the audit log in one command every `FLUSH_INTERVAL` (`RecordKmipReads`), so that
//! every KMIP operation is audited without a Raft entry per Get.
//!
//! Bounded: at most `statemachine::kmip::KMIP_READ_COUNTS_MAX` (client, operation) pairs and
//! `KMIP_READ_KEYS_MAX` named keys per pair between flushes; past that, reads are counted but
//! not named, so a flood costs memory by the bound, not by the flood.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use statemachine::audit::KmipReadCount;
use statemachine::kmip::{KMIP_READ_COUNTS_MAX, KMIP_READ_KEYS_MAX};
use statemachine::{Command, KeyId};

use crate::backend::Backend;
use crate::routes::now_ms;

pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct ReadLog {
    counts: Mutex<BTreeMap<(String, u32), KmipReadCount>>,
}

impl ReadLog {
    pub fn count(&self, agent: &str, operation: u32, key_id: Option<KeyId>, answered: bool) {
        let now = now_ms();
        let Ok(mut counts) = self.counts.lock() else { return };
        let at = (agent.to_owned(), operation);
        if !counts.contains_key(&at) && counts.len() >= KMIP_READ_COUNTS_MAX {
            // Past the bound a new pair is not counted until the next flush: the table, and so
            // the command that records it, stays within what the state machine accepts.
            return;
        }
        let entry = counts.entry(at).or_insert_with(|| KmipReadCount {
            agent: agent.to_owned(),
            operation,
            count: 0,
            refused: 0,
            keys: Vec::new(),
            keys_not_named: 0,
            from_ms: now,
            to_ms: now,
        });
        entry.count += 1;
        entry.refused += u64::from(!answered);
        entry.to_ms = now;
        match key_id {
            Some(key_id) if entry.keys.contains(&key_id) => {}
            Some(key_id) if entry.keys.len() < KMIP_READ_KEYS_MAX => entry.keys.push(key_id),
            Some(_) => entry.keys_not_named += 1,
            None => {}
        }
    }

    /// Takes the counts since the last flush.
    pub fn take(&self) -> Vec<KmipReadCount> {
        match self.counts.lock() {
            Ok(mut counts) => std::mem::take(&mut *counts).into_values().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Writes the counts to the audit log every `FLUSH_INTERVAL`, until the task is dropped.
    /// Counts that could not be proposed (no majority) are logged and dropped rather than kept
    /// without bound.
    pub async fn flush_forever<B: Backend>(&self, backend: &B) {
        let mut interval = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            interval.tick().await;
            let reads = self.take();
            if reads.is_empty() {
                continue;
            }
            let total: u64 = reads.iter().map(|r| r.count).sum();
            match backend.propose(None, None, Command::RecordKmipReads { reads }).await {
                Ok(applied) if applied.result.is_ok() => {}
                Ok(applied) => tracing::warn!(?applied.result, total, "KMIP read counts refused"),
                Err(error) => tracing::warn!(%error, total, "KMIP read counts not recorded"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> KeyId {
        KeyId([n; 30])
    }

    /// Counts per client and operation, refusals apart, each key named once, past the named
    /// bound only counted; a take empties the log. (SPEC S5; issue 19)
    #[test]
    fn s5_reads_are_counted_per_client_and_operation_within_bounds() {
        let log = ReadLog::default();
        log.count("library1", 0x0A, Some(key(1)), true);
        log.count("library1", 0x0A, Some(key(1)), false);
        log.count("library1", 0x08, None, true);
        log.count("library2", 0x0A, Some(key(2)), true);
        let taken = log.take();
        let summary: Vec<_> = taken
            .iter()
            .map(|r| (r.agent.as_str(), r.operation, r.count, r.refused, r.keys.len()))
            .collect();
        assert_eq!(
            summary,
            [("library1", 0x08, 1, 0, 0), ("library1", 0x0A, 2, 1, 1), ("library2", 0x0A, 1, 0, 1)]
        );
        assert!(log.take().is_empty());

        for n in 0..=KMIP_READ_KEYS_MAX {
            let bytes = (n as u32).to_be_bytes();
            let mut id = [0u8; 30];
            id[..4].copy_from_slice(&bytes);
            log.count("library1", 0x0A, Some(KeyId(id)), true);
        }
        let taken = log.take();
        assert_eq!((taken[0].keys.len(), taken[0].keys_not_named), (KMIP_READ_KEYS_MAX, 1));

        for n in 0..=KMIP_READ_COUNTS_MAX {
            log.count(&format!("client{n}"), 0x0A, None, true);
        }
        assert_eq!(log.take().len(), KMIP_READ_COUNTS_MAX, "the table stays within its bound");
    }
}
