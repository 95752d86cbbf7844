//! Clock faults between KMAs (issue #16 point 7): a leader whose clock runs ahead of the voters'
//! must not get its time into the log, since `apply` never lets time go backwards and a stamp a
//! year ahead would end every cryptoperiod at once (SPEC O4).
//!
//! openraft's messages carry no clock, but the entries a leader appends do: each envelope holds
//! the leader's stamp. A voter compares the newest stamp of each AppendEntries with its own
//! clock before openraft sees the call, and refuses a call whose stamp runs ahead by more than
//! the bound (`kma.toml` `clock_ahead_max_ms`, 60 s by default): such an entry never commits.
//! The refusal starts with [`REFUSED_CLOCK`]; a leader refused so by enough voters that nothing
//! it stamps can commit steps down (`duties::run_clock_step_down`), and the voters report the
//! refusal for the audit log (`duties::run_clock_audit`), naming the KMA and by how much its
//! clock runs ahead; its operator fixes the clock (NTP).
//!
//! Heartbeats and votes carry no stamp and pass: a voter whose own clock runs behind refuses
//! only the entries, lags, and shows in the audit log too, but does not disrupt the others. A
//! leader clock behind the voters' is harmless: `apply` raises its stamps to the last applied
//! time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::raft::AppendEntriesRequest;
use openraft::EntryPayload;
use raft_storage::KmaRaft;

use crate::transport::wall_clock_ms;

/// How long a KMA whose stamps ran ahead is listed after the last such stamp seen.
pub const SUSPECT_FOR: Duration = Duration::from_secs(300);

/// The start of the refusal of entries stamped too far ahead.
pub const REFUSED_CLOCK: &str = "clock ahead:";

/// One KMA whose stamps ran ahead of this KMA's clock.
#[derive(Clone, Debug)]
pub struct Suspect {
    /// By how much its newest refused stamp was ahead, in milliseconds.
    pub ahead_ms: u64,
    /// When it was last caught.
    pub caught: Instant,
    /// Refused calls so far; the audit duty reports each new run of them.
    pub catches: u64,
}

/// What this KMA's link server knows of other KMAs' clocks: shared by the link server (which
/// refuses) and the audit duty (which reports).
#[derive(Clone)]
pub struct ClockGuard {
    ahead_max_ms: u64,
    suspects: Arc<Mutex<BTreeMap<u64, Suspect>>>,
}

impl ClockGuard {
    pub fn new(ahead_max_ms: u64) -> ClockGuard {
        ClockGuard { ahead_max_ms, suspects: Arc::default() }
    }

    pub fn ahead_max_ms(&self) -> u64 {
        self.ahead_max_ms
    }

    /// Why an AppendEntries of `caller` is refused, if it is: its newest stamp runs ahead of
    /// this KMA's clock `now_ms` by more than the bound.
    pub fn refusal(
        &self,
        caller: u64,
        append: &AppendEntriesRequest<KmaRaft>,
        now_ms: u64,
    ) -> Option<String> {
        let ahead_ms = newest_stamp_ms(append)?.saturating_sub(now_ms);
        if ahead_ms <= self.ahead_max_ms {
            return None;
        }
        let mut suspects = self.suspects.lock().unwrap_or_else(PoisonError::into_inner);
        let suspect = suspects.entry(caller).or_insert(Suspect {
            ahead_ms,
            caught: Instant::now(),
            catches: 0,
        });
        suspect.ahead_ms = ahead_ms;
        suspect.caught = Instant::now();
        suspect.catches += 1;
        Some(format!(
            "{REFUSED_CLOCK} KMA {caller} stamps commands {} s ahead of this KMA's clock (at \
             most {} s allowed): its entries are refused; fix that KMA's clock (NTP)",
            ahead_ms / 1_000,
            self.ahead_max_ms / 1_000,
        ))
    }

    /// As [`ClockGuard::refusal`], at this KMA's wall clock now.
    pub fn refusal_now(
        &self,
        caller: u64,
        append: &AppendEntriesRequest<KmaRaft>,
    ) -> Option<String> {
        self.refusal(caller, append, wall_clock_ms())
    }

    /// The KMAs suspect now, by node ID.
    pub fn suspects(&self) -> BTreeMap<u64, Suspect> {
        let mut suspects = self.suspects.lock().unwrap_or_else(PoisonError::into_inner);
        suspects.retain(|_, suspect| suspect.caught.elapsed() < SUSPECT_FOR);
        suspects.clone()
    }
}

/// The newest leader stamp among an AppendEntries' entries (none for a heartbeat, a blank or
/// a membership entry).
fn newest_stamp_ms(request: &AppendEntriesRequest<KmaRaft>) -> Option<u64> {
    request
        .entries
        .iter()
        .filter_map(|entry| match &entry.payload {
            EntryPayload::Normal(batch) => batch.envelopes.iter().map(|e| e.time_ms).max(),
            _ => None,
        })
        .max()
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, LogId, Vote};
    use statemachine::{Actor, Batch, Command, Envelope};

    use super::*;

    fn append(stamps: &[u64]) -> AppendEntriesRequest<KmaRaft> {
        let entries = stamps
            .iter()
            .enumerate()
            .map(|(index, time_ms)| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index as u64 + 1),
                payload: EntryPayload::Normal(Batch::one(Envelope {
                    time_ms: *time_ms,
                    origin_node_id: 1,
                    actor: Actor::System,
                    request_id: None,
                    command: Command::Pulse,
                })),
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        }
    }

    /// Setup: a guard allowing 60 s. Action: entries stamped 10 s ahead, then one stamped a
    /// year ahead, then a heartbeat of the same KMA and entries of another. Expect: the first
    /// pass; the second is refused with how far ahead; the heartbeat (no stamp) passes, so a
    /// voter whose own clock is behind does not make the others elect; the other KMA is not
    /// affected; the KMA caught is listed for the audit. (SPEC O4; issue #16 point 7)
    #[test]
    fn o4_entries_stamped_beyond_the_bound_are_refused_and_their_leader_listed() {
        let guard = ClockGuard::new(60_000);
        let now = 1_000_000_000;
        assert!(guard.refusal(1, &append(&[now, now + 10_000]), now).is_none());
        let year_ms = 365 * 24 * 3_600 * 1_000;
        let why = guard.refusal(1, &append(&[now + year_ms]), now).expect("refused");
        assert!(why.starts_with(REFUSED_CLOCK) && why.contains("31536000 s ahead"), "{why}");
        assert!(guard.refusal(1, &append(&[]), now).is_none(), "heartbeats pass");
        assert!(guard.refusal(2, &append(&[now]), now).is_none());
        let suspects = guard.suspects();
        assert_eq!(suspects.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(suspects[&1].catches, 1);
    }
}
