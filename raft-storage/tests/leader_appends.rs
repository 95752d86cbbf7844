//! The leader's new entries handed to the node before they are synced (`leader_appends`), so
//! that followers write them in parallel with the leader. What is handed over must be exactly
//! the leader's log: its own entries, with the log ID really before them; when in doubt,
//! nothing. (SPEC C1, C7, "Known pitfalls")

mod support;

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use raft_storage::KmaRaft;
use support::{append, open, Entry, Stores};

const ME: u64 = 1;

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, ME), index),
        payload: EntryPayload::Blank,
    }
}

type Appends = tokio::sync::mpsc::Receiver<std::sync::Arc<raft_storage::LeaderAppend<KmaRaft>>>;

/// A started store (openraft read its log) subscribed with a queue of `depth`, whose saved vote
/// is `vote`.
async fn started(dir: &tempfile::TempDir, depth: usize, vote: Vote<u64>) -> (Stores, Appends) {
    let mut stores = open(dir);
    let appends = stores.log.leader_appends(ME, depth).expect("the first subscriber");
    stores.log.get_log_state().await.expect("log state");
    stores.log.save_vote(&vote).await.expect("vote");
    (stores, appends)
}

fn ids(entries: &[Entry]) -> Vec<LogId<u64>> {
    entries.iter().map(|entry| entry.log_id).collect()
}

/// Setup: a store whose KMA subscribed, started (openraft read the empty log) and leads term 2
/// (its saved vote is committed for itself). Action: append two entries of term 2, then one
/// more. Expect: each append is handed over by the time `append` returns, with the leader's
/// vote and the log ID before it (none before the first entry); a second subscriber is refused.
#[tokio::test]
async fn c7_the_leaders_own_entries_are_handed_over_with_the_log_id_before_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut stores = open(&dir);
    let mut appends = stores.log.leader_appends(ME, 8).expect("the first subscriber");
    assert!(stores.log.leader_appends(ME, 8).is_none(), "one subscriber per store");
    stores.log.get_log_state().await.expect("log state");
    stores.log.save_vote(&Vote::new_committed(2, ME)).await.expect("vote");

    append(&mut stores.log, &[entry(2, 0), entry(2, 1)]).await;
    let first = appends.try_recv().expect("handed over");
    assert_eq!(first.vote, Vote::new_committed(2, ME));
    assert_eq!(first.prev_log_id, None);
    assert_eq!(ids(&first.entries), ids(&[entry(2, 0), entry(2, 1)]));

    append(&mut stores.log, &[entry(2, 2)]).await;
    let second = appends.try_recv().expect("handed over");
    assert_eq!(second.prev_log_id, Some(entry(2, 1).log_id));
    assert_eq!(ids(&second.entries), ids(&[entry(2, 2)]));
    assert!(appends.try_recv().is_err(), "one hand-over per append");
}

/// Setup: a subscribed store that has entries 0..=1 of term 1. Action: append as a follower of
/// another KMA (vote committed for node 2), as a candidate (vote not committed), entries of an
/// older term than the vote, after a truncation, and after a purge past the last entry.
/// Expect: none of these is handed over; the append after a truncation or purge is not either
/// (the entry before it is unknown), and the next one is, with the right log ID.
#[tokio::test]
async fn c7_followers_candidates_and_unknown_predecessors_hand_nothing_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut stores, mut appends) = started(&dir, 8, Vote::new_committed(1, 2)).await;
    append(&mut stores.log, &[entry(1, 0), entry(1, 1)]).await;
    assert!(appends.try_recv().is_err(), "another KMA leads term 1");

    stores.log.save_vote(&Vote::new(2, ME)).await.expect("vote");
    append(&mut stores.log, &[entry(1, 2)]).await;
    assert!(appends.try_recv().is_err(), "a candidate leads nothing");

    stores.log.save_vote(&Vote::new_committed(3, ME)).await.expect("vote");
    append(&mut stores.log, &[entry(1, 3)]).await;
    assert!(appends.try_recv().is_err(), "an entry of term 1 is not the term-3 leader's own");

    stores.log.truncate(entry(1, 3).log_id).await.expect("truncate");
    relearns_the_last_entry(&mut stores, &mut appends, 3, 3).await;

    stores.log.purge(entry(3, 6).log_id).await.expect("purge, as a snapshot install past the log");
    relearns_the_last_entry(&mut stores, &mut appends, 3, 7).await;
}

/// After the last entry became unknown: an append of `term` at `index` is not handed over (the
/// entry before it is unknown), the next one is, with that append as the log ID before it.
async fn relearns_the_last_entry(
    stores: &mut Stores,
    appends: &mut Appends,
    term: u64,
    index: u64,
) {
    append(&mut stores.log, &[entry(term, index)]).await;
    assert!(appends.try_recv().is_err(), "the entry before index {index} is unknown");
    append(&mut stores.log, &[entry(term, index + 1)]).await;
    let next = appends.try_recv().expect("handed over again");
    assert_eq!(next.prev_log_id, Some(entry(term, index).log_id));
}

/// Setup: a KMA that led term 3 (its vote committed for itself) and sent entries ahead. Action:
/// reopen its data dir as a restart does, append as openraft might before reading the log,
/// then after a new term is won. Expect: the vote reads back uncommitted, still for this KMA
/// (it may not lead term 3 again, whose log IDs followers may hold for entries this log lost,
/// nor vote for another in it), so nothing is handed over until a committed vote of term 4 is
/// saved; then appends are handed over with the log ID before them.
#[tokio::test]
async fn c7_a_kma_that_led_must_win_a_new_term_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut stores, mut appends) = started(&dir, 8, Vote::new_committed(3, ME)).await;
    append(&mut stores.log, &[entry(3, 0)]).await;
    assert!(appends.try_recv().is_ok(), "handed over while leading term 3");
    drop(appends);
    drop(stores);

    let mut stores = open(&dir);
    let mut appends = stores.log.leader_appends(ME, 8).expect("subscriber");
    let vote = stores.log.read_vote().await.expect("vote");
    assert_eq!(vote, Some(Vote::new(3, ME)), "stepped down: the same candidate, not committed");
    append(&mut stores.log, &[entry(3, 1)]).await;
    assert!(appends.try_recv().is_err(), "no leader of any term before an election");
    let state = stores.log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(entry(3, 1).log_id));
    stores.log.save_vote(&Vote::new_committed(4, ME)).await.expect("vote of term 4");
    append(&mut stores.log, &[entry(4, 2)]).await;
    let next = appends.try_recv().expect("handed over in the new term");
    assert_eq!(next.prev_log_id, Some(entry(3, 1).log_id));
    assert_eq!(next.vote, Vote::new_committed(4, ME));
}

/// Setup: a subscribed leader whose queue holds one append and nobody reads it. Action: three
/// more appends. Expect: every append returns (a full queue never holds up the log), the queue
/// holds only the first, and the entries are all in the log.
#[tokio::test]
async fn c7_a_full_queue_drops_hand_overs_and_never_blocks_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut stores, mut appends) = started(&dir, 1, Vote::new_committed(1, ME)).await;
    for index in 0..4 {
        append(&mut stores.log, &[entry(1, index)]).await;
    }
    let held = appends.try_recv().expect("the first append");
    assert_eq!(ids(&held.entries), ids(&[entry(1, 0)]));
    assert!(appends.try_recv().is_err(), "the others were dropped");
    let state = stores.log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(entry(1, 3).log_id));
}
