//! The storage contract of SPEC "Known pitfalls": openraft hears that an append is flushed only
//! after the RocksDB WAL is synced.
//!
//! The log store runs here under a type config whose async runtime wraps each oneshot sender:
//! when `LogFlushed` reports completion (it sends on such a oneshot), the wrapper reads RocksDB's
//! WAL-sync ticker. Calling the callback before the write, or writing without `set_sync(true)`,
//! leaves the ticker where it was before the append, and the test fails.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::AsyncOneshotSendExt;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{
    AsyncRuntime, BasicNode, CommittedLeaderId, EntryPayload, LogId, OptionalSend, RaftLogReader,
    TokioRuntime, Vote,
};
use raft_storage::{ApplyResponse, RocksDataDir, RocksLogStore};
use tempfile::TempDir;

type Tokio = TokioRuntime;

/// The data dir whose WAL-sync ticker the flush callbacks read, and what they read.
static PROBE: Mutex<Option<Arc<RocksDataDir>>> = Mutex::new(None);
static SYNCS_AT_FLUSH: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// The tests of this file share the probe: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Default, PartialEq, Eq)]
struct ProbeRuntime;

struct ProbeSender<T: OptionalSend>(<Tokio as AsyncRuntime>::OneshotSender<T>);

impl<T: OptionalSend> fmt::Debug for ProbeSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProbeSender")
    }
}

impl<T: OptionalSend> AsyncOneshotSendExt<T> for ProbeSender<T> {
    fn send(self, value: T) -> Result<(), T> {
        if let Some(data_dir) = PROBE.lock().expect("probe lock").as_ref() {
            SYNCS_AT_FLUSH.lock().expect("probe lock").push(data_dir.wal_syncs_total());
        }
        self.0.send(value)
    }
}

impl AsyncRuntime for ProbeRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = ProbeSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    fn oneshot<T: OptionalSend>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        let (sender, receiver) = Tokio::oneshot();
        (ProbeSender(sender), receiver)
    }
}

openraft::declare_raft_types!(
    ProbeRaft:
        D = statemachine::Envelope,
        R = ApplyResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<ProbeRaft>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = ProbeRuntime,
);

fn blank(index: u64) -> openraft::Entry<ProbeRaft> {
    let log_id = LogId::new(CommittedLeaderId::new(1, 1), index);
    openraft::Entry { log_id, payload: EntryPayload::Blank }
}

/// Setup: a log store whose flush callbacks read the WAL-sync ticker. Action: three appends.
/// Expectation: at each callback the ticker is past its value before that append, and the
/// entries read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_append_reports_flushed_only_after_the_wal_sync() {
    let _serial = SERIAL.lock().await;
    SYNCS_AT_FLUSH.lock().expect("probe lock").clear();
    let dir = TempDir::new().expect("temp dir");
    let data_dir = RocksDataDir::open(dir.path()).expect("open");
    let mut store = RocksLogStore::<ProbeRaft>::new(data_dir.clone());
    *PROBE.lock().expect("probe lock") = Some(data_dir.clone());
    for (round, indexes) in [(0usize, 1..=3u64), (1, 4..=4), (2, 5..=9)] {
        let before = data_dir.wal_syncs_total();
        store.blocking_append(indexes.clone().map(blank)).await.expect("append");
        let seen = SYNCS_AT_FLUSH.lock().expect("probe lock").clone();
        assert_eq!(seen.len(), round + 1, "one flush callback per append");
        assert!(seen[round] > before, "append {indexes:?} flushed before its WAL sync");
    }
    let entries = store.try_get_log_entries(1..10).await.expect("read back");
    assert_eq!(
        entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (1..10).collect::<Vec<_>>()
    );
}

/// Setup: a fresh log store. Action: each of the other writes openraft relies on.
/// Expectation: the vote, a truncation and a purge each sync the WAL before they return. The
/// committed index is optional for openraft (a lost one is learnt again from the leader): it is
/// written without a sync of its own and is durable with the next synced write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_vote_truncate_and_purge_sync_the_wal() {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new().expect("temp dir");
    let data_dir = RocksDataDir::open(dir.path()).expect("open");
    let mut store = RocksLogStore::<ProbeRaft>::new(data_dir.clone());
    store.blocking_append((1..=20).map(blank)).await.expect("append");
    let synced = |before: u64, what: &str| {
        assert!(data_dir.wal_syncs_total() > before, "{what} returned before a WAL sync");
        data_dir.wal_syncs_total()
    };
    let before = data_dir.wal_syncs_total();
    store.save_vote(&Vote::new(2, 1)).await.expect("save vote");
    let before = synced(before, "save_vote");
    store.save_committed(Some(blank(10).log_id)).await.expect("save committed");
    assert_eq!(store.read_committed().await.expect("committed"), Some(blank(10).log_id));
    store.truncate(blank(15).log_id).await.expect("truncate");
    let before = synced(before, "truncate");
    store.purge(blank(5).log_id).await.expect("purge");
    synced(before, "purge");
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(blank(5).log_id));
    assert_eq!(state.last_log_id, Some(blank(14).log_id));
    assert_eq!(store.read_vote().await.expect("vote"), Some(Vote::new(2, 1)));
}
