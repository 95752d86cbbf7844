//! What the drives asked for their keys and what they got, with times: the agents' side of the
//! history a chaos run checks (issue 20 point 2). A drive records the write keys and the key
//! sets it was answered, and the requests that failed (the client gave up: the outcome is
//! unknown, the cluster may or may not have acted).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use statemachine::{DataUnitId, KeyId, RequestId};

/// One answer (or failure) a drive saw, with its times in nanoseconds since the history's epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    pub drive: usize,
    pub invoked_ns: u64,
    pub returned_ns: u64,
    pub data_unit: DataUnitId,
    pub answer: KeyAnswer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAnswer {
    /// The write key, assigned or reused by the entry at `index`.
    WriteKey { key_id: KeyId, index: u64, request_id: RequestId, from_bot: bool },
    /// The data unit's keys on mount, read at `index`.
    Keys { key_ids: Vec<KeyId>, index: u64 },
    /// A write key was asked for and the client gave up: it may or may not have been assigned.
    WriteKeyFailed { from_bot: bool, error: String },
}

/// The events of one run, shared by its drives; clones share it. It also ends the run: a run
/// recorded here stops at [`KeyHistory::stop`], whatever its budget, for a caller that cannot
/// know the run's length in advance (a chaos run ends when its faults do).
#[derive(Clone, Debug)]
pub struct KeyHistory {
    epoch: Instant,
    events: Arc<Mutex<Vec<KeyEvent>>>,
    stop: Arc<AtomicBool>,
}

impl KeyHistory {
    /// An empty history whose times count from `epoch` (give the one the rest of the run's
    /// history uses, so that times compare).
    pub fn new(epoch: Instant) -> KeyHistory {
        KeyHistory { epoch, events: Arc::default(), stop: Arc::default() }
    }

    /// Ends the runs that record here: each drive stops before its next operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<KeyEvent>> {
        // A drive never panics while it holds the lock: the list is whole even if poisoned.
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Nanoseconds from the epoch to `instant` (0 before it).
    pub fn since_epoch_ns(&self, instant: Instant) -> u64 {
        let elapsed = instant.saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn record(
        &self,
        drive: usize,
        invoked: Instant,
        data_unit: DataUnitId,
        answer: KeyAnswer,
    ) {
        let event = KeyEvent {
            drive,
            invoked_ns: self.since_epoch_ns(invoked),
            returned_ns: self.since_epoch_ns(Instant::now()),
            data_unit,
            answer,
        };
        self.lock().push(event);
    }

    /// A copy of the events so far, in the order they were recorded.
    pub fn events(&self) -> Vec<KeyEvent> {
        self.lock().clone()
    }
}
