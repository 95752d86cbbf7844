//! Restart, snapshot transfer and audit persistence with real statemachine commands.

mod support;

use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{RaftSnapshotBuilder, StorageHelper};
use raft_storage::StorageError;
use statemachine::{Applied, State};
use support::{append, apply, open, receive, state_bytes, workload, Entry};
use tempfile::TempDir;

/// What applying `entries` to a plain `State` gives, envelope by envelope (normal entries only).
fn expected_outcomes(entries: &[Entry]) -> Vec<Applied> {
    let mut state = State::new();
    entries
        .iter()
        .filter_map(|entry| match &entry.payload {
            openraft::EntryPayload::Normal(batch) => Some(
                batch
                    .envelopes
                    .iter()
                    .map(|envelope| state.apply(entry.log_id.index, envelope))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Setup: 400 commands in the log, committed; 250 applied, a snapshot, the rest applied.
/// Action: drop the stores, reopen the data dir, let openraft's startup replay the committed tail.
/// Expectation: the snapshot is the starting point, and after the replay the state, applied
/// position and audit log equal those before the restart, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_restart_replays_the_committed_tail_onto_the_snapshot() {
    let dir = TempDir::new().expect("temp dir");
    let entries = workload(400);
    let last = entries.last().expect("entries").log_id;
    let (bytes_before, applied_before, audit_before, snapshot_last) = {
        let mut stores = open(&dir);
        append(&mut stores.log, &entries).await;
        stores.log.save_committed(Some(last)).await.expect("save committed");
        apply(&mut stores.sm, &entries[..250]).await;
        let snapshot =
            stores.sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
        let responses = apply(&mut stores.sm, &entries[250..]).await;
        let results = responses.iter().flat_map(|r| r.results.iter());
        assert!(results.clone().all(Result::is_ok), "workload commands succeed");
        let envelopes: usize = entries[250..]
            .iter()
            .map(|entry| match &entry.payload {
                openraft::EntryPayload::Normal(batch) => batch.envelopes.len(),
                _ => 0,
            })
            .sum();
        assert!(envelopes > entries[250..].len(), "the workload has batches of several");
        assert_eq!(results.count(), envelopes, "one result per envelope");
        let audit = stores.sm.state().audit_events(0, usize::MAX).expect("audit");
        let applied = stores.sm.applied_state().await.expect("applied state");
        (state_bytes(&stores.sm).await, applied, audit, snapshot.meta.last_log_id)
    };
    assert_eq!(snapshot_last, Some(entries[249].log_id));

    let mut stores = open(&dir);
    let (applied, _) = stores.sm.applied_state().await.expect("applied state");
    assert_eq!(applied, snapshot_last, "a reopened state machine starts from its snapshot");
    let initial = StorageHelper::new(&mut stores.log, &mut stores.sm)
        .get_initial_state()
        .await
        .expect("openraft startup");
    assert_eq!(initial.committed, Some(last));
    assert_eq!(stores.sm.applied_state().await.expect("applied state"), applied_before);
    assert_eq!(state_bytes(&stores.sm).await, bytes_before);
    assert_eq!(stores.sm.state().audit_events(0, usize::MAX).expect("audit"), audit_before);
    assert_eq!(stores.sm.state().applied_index(), last.index);
}

/// Setup: a fresh store. Action: apply the workload in three `apply` calls.
/// Expectation: the audit column family holds exactly the events `State::apply` returned, with
/// their places in the audit chain, in log order, and a page read from an index starts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_audit_events_are_persisted_in_log_order() {
    let dir = TempDir::new().expect("temp dir");
    let mut stores = open(&dir);
    let entries = workload(120);
    for part in entries.chunks(50) {
        apply(&mut stores.sm, part).await;
    }
    let expected: Vec<_> =
        expected_outcomes(&entries).into_iter().flat_map(|a| a.into_chained().1).collect();
    let handle = stores.sm.state();
    assert_eq!(handle.audit_events(0, usize::MAX).expect("audit"), expected);
    let page = handle.audit_events(100, 5).expect("audit page");
    assert_eq!(page.len(), 5);
    assert_eq!(page[0].index, 100);
    assert_eq!(
        page[..],
        expected.iter().skip_while(|e| e.index < 100).take(5).cloned().collect::<Vec<_>>()[..]
    );
}

/// Setup: a leader store with 300 commands applied and a snapshot built.
/// Action: install that snapshot into a fresh store, then reopen the fresh store.
/// Expectation: same state bytes, applied position and snapshot meta, before and after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_snapshot_installed_into_a_fresh_store_is_identical() {
    let (dir_leader, dir_follower) =
        (TempDir::new().expect("temp dir"), TempDir::new().expect("temp dir"));
    let mut leader = open(&dir_leader);
    apply(&mut leader.sm, &workload(300)).await;
    leader.sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let current = leader.sm.get_current_snapshot().await.expect("read").expect("a snapshot");
    let leader_bytes = state_bytes(&leader.sm).await;

    let mut follower = open(&dir_follower);
    let received = receive(&mut follower.sm, *current.snapshot, None).await;
    follower.sm.install_snapshot(&current.meta, received).await.expect("install");
    assert_eq!(state_bytes(&follower.sm).await, leader_bytes);
    assert_eq!(
        follower.sm.applied_state().await.expect("applied"),
        leader.sm.applied_state().await.expect("applied")
    );
    let installed = follower.sm.get_current_snapshot().await.expect("read").expect("a snapshot");
    assert_eq!(installed.meta, current.meta);
    assert_eq!(
        follower.sm.state().applied_index(),
        current.meta.last_log_id.expect("log id").index
    );
    drop(follower);

    let mut reopened = open(&dir_follower);
    assert_eq!(state_bytes(&reopened.sm).await, leader_bytes);
    let reopened_meta =
        reopened.sm.get_current_snapshot().await.expect("read").expect("a snapshot").meta;
    assert_eq!(reopened_meta, current.meta);
    let files = std::fs::read_dir(dir_follower.path().join("snapshots")).expect("list").count();
    assert_eq!(files, 1, "only the current snapshot file is left");
}

/// Setup: a leader snapshot. Action: install only its first half into a fresh store.
/// Expectation: an error that says the received snapshot is corrupt and what to do; the store
/// keeps its empty state and has no current snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_truncated_received_snapshot_is_refused_and_state_kept() {
    let (dir_leader, dir_follower) =
        (TempDir::new().expect("temp dir"), TempDir::new().expect("temp dir"));
    let mut leader = open(&dir_leader);
    apply(&mut leader.sm, &workload(200)).await;
    let built = leader.sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let len = built.snapshot.metadata().await.expect("metadata").len() as usize;

    let mut follower = open(&dir_follower);
    let empty = state_bytes(&follower.sm).await;
    let received = receive(&mut follower.sm, *built.snapshot, Some(len / 2)).await;
    let error = follower.sm.install_snapshot(&built.meta, received).await.expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("received from the leader is corrupt"), "{message}");
    assert!(
        message.contains("restart this KMA so that it fetches the snapshot again"),
        "{message}"
    );
    assert_eq!(state_bytes(&follower.sm).await, empty);
    assert_eq!(follower.sm.applied_state().await.expect("applied").0, None);
    assert!(follower.sm.get_current_snapshot().await.expect("read").is_none());
}

fn open_error(dir: &TempDir) -> StorageError {
    match raft_storage::open_stores(dir.path()) {
        Ok(_) => panic!("a damaged data dir was opened"),
        Err(error) => error,
    }
}

/// Setup: a data dir with a snapshot. Action: cut the snapshot file in half, reopen.
/// Expectation: opening fails with an error naming the file and telling to restore the KMA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_truncated_snapshot_file_is_a_clear_error_on_open() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut stores = open(&dir);
        apply(&mut stores.sm, &workload(200)).await;
        stores.sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    }
    let file =
        std::fs::read_dir(dir.path().join("snapshots")).expect("list").next().expect("a file");
    let path = file.expect("entry").path();
    let len = std::fs::metadata(&path).expect("metadata").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");

    let error = open_error(&dir);
    assert!(matches!(error, StorageError::SnapshotCorrupt { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("restore this KMA from the cluster"), "{message}");
}

/// Setup: a data dir with a few entries; then garbage written over RocksDB's CURRENT file.
/// Expectation: opening fails with an error naming the dir and telling to restore the KMA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_garbage_over_current_is_a_clear_error_on_open() {
    let dir = TempDir::new().expect("temp dir");
    fill(&dir).await;
    std::fs::write(dir.path().join("rocksdb/CURRENT"), b"\x00garbage\xff").expect("overwrite");
    let error = open_error(&dir);
    assert!(matches!(error, StorageError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("restore this KMA from the cluster"), "{error}");
}

/// Setup: a data dir with a few entries; then garbage written over its MANIFEST.
/// Expectation: opening fails with an error telling to restore the KMA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_garbage_over_manifest_is_a_clear_error_on_open() {
    let dir = TempDir::new().expect("temp dir");
    fill(&dir).await;
    let current = std::fs::read_to_string(dir.path().join("rocksdb/CURRENT")).expect("CURRENT");
    let manifest = dir.path().join("rocksdb").join(current.trim());
    let len = std::fs::metadata(&manifest).expect("manifest").len() as usize;
    std::fs::write(&manifest, vec![0xa5; len]).expect("overwrite");
    let error = open_error(&dir);
    assert!(matches!(error, StorageError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("restore this KMA from the cluster"), "{error}");
}

/// Setup: a data dir whose CURRENT file was deleted. Expectation: refused, never recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_database_without_current_is_not_recreated() {
    let dir = TempDir::new().expect("temp dir");
    fill(&dir).await;
    std::fs::remove_file(dir.path().join("rocksdb/CURRENT")).expect("remove");
    let error = open_error(&dir);
    assert!(matches!(error, StorageError::NotADatabase { .. }), "{error:?}");
    assert!(!dir.path().join("rocksdb/CURRENT").exists(), "no new database over the old files");
}

async fn fill(dir: &TempDir) {
    let mut stores = open(dir);
    let entries = workload(20);
    append(&mut stores.log, &entries).await;
    apply(&mut stores.sm, &entries).await;
}

/// Writes `value` under `key` of column family `cf` with plain RocksDB, as damage would.
fn poke(dir: &TempDir, cf: &str, key: &[u8], value: &[u8]) {
    let names = ["log", "log_meta", "sm_meta", "audit"];
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path().join("rocksdb"), names)
        .expect("raw open");
    db.put_cf(db.cf_handle(cf).expect("cf"), key, value).expect("raw put");
}

/// Setup: a data dir whose format marker says version 4. Expectation: refused on open, naming
/// the versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_data_dir_of_a_newer_version_is_refused() {
    let dir = TempDir::new().expect("temp dir");
    fill(&dir).await;
    poke(&dir, "log_meta", b"format", &[4]);
    let error = open_error(&dir);
    assert!(
        matches!(error, StorageError::FormatVersion { found: 4, supported: 3, .. }),
        "{error:?}"
    );
}

/// Setup: a data dir whose format marker says version 2 (audit rows without the chain).
/// Expectation: refused on open with the way out (rejoin), never read as a log with no chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_data_dir_of_the_unchained_audit_format_is_refused() {
    let dir = TempDir::new().expect("temp dir");
    fill(&dir).await;
    poke(&dir, "log_meta", b"format", &[2]);
    let error = open_error(&dir);
    assert!(
        matches!(error, StorageError::FormatVersion { found: 2, supported: 3, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("has format version 2; this software reads version 3"), "{message}");
    assert!(message.contains("delete the data dir and rejoin"), "{message}");
}

/// Setup: a data dir whose format marker says version 1 (one envelope per log entry, before
/// batching). Expectation: refused on open with the way out (rejoin), never misread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_data_dir_of_the_single_envelope_format_is_refused() {
    let dir = TempDir::new().expect("temp dir");
    fill(&dir).await;
    poke(&dir, "log_meta", b"format", &[1]);
    let error = open_error(&dir);
    assert!(
        matches!(error, StorageError::FormatVersion { found: 1, supported: 3, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("rejoin"), "{error}");
}

/// Setup: a log entry overwritten with garbage. Action: read the log.
/// Expectation: an error naming the column family and the index, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_corrupt_log_entry_names_column_family_and_key() {
    let dir = TempDir::new().expect("temp dir");
    fill(&dir).await;
    let version = raft_storage::data_dir::FORMAT_VERSION;
    poke(&dir, "log", &5u64.to_be_bytes(), &[version, 0xff, 0xff, 0xff]);
    let mut stores = open(&dir);
    let error = openraft::RaftLogReader::try_get_log_entries(&mut stores.log, 1..10)
        .await
        .expect_err("corrupt");
    let message = error.to_string();
    assert!(message.contains("column family `log` at key index 5"), "{message}");
    assert!(message.contains("restore this KMA from the cluster"), "{message}");
}

/// Setup: a waiter for index 5 on a fresh store. Action: apply entries 0..=3, then 4..=5.
/// Expectation: the waiter returns only after the second apply, with the applied index; once the
/// state machine is gone, waiting for a later index fails with `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_wait_applied_returns_once_the_index_is_applied() {
    let dir = TempDir::new().expect("temp dir");
    let mut stores = open(&dir);
    let handle = stores.sm.state();
    let waiting = handle.clone();
    let waiter = tokio::spawn(async move { waiting.wait_applied(5).await });
    let entries = workload(10);
    apply(&mut stores.sm, &entries[..4]).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished(), "the waiter returned before index 5 was applied");
    apply(&mut stores.sm, &entries[4..6]).await;
    let applied = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("in time");
    assert_eq!(applied.expect("join").expect("applied"), 5);
    drop(stores);
    assert!(matches!(handle.wait_applied(100).await, Err(StorageError::Closed)));
}

/// Setup: a store with about 600,000 pool keys, so that streaming its snapshot takes a while.
/// Action: start building a snapshot; while it streams, start applying one more entry, then
/// read the state as an agent request does.
/// Expectation: the read is served at once from the state before that entry, not after the
/// snapshot: the waiting `apply` does not sit in the state lock's queue, where it would hold up
/// every local read (SPEC A3, reads from the local KMA; issue #5's read p99). The entry is
/// applied once the snapshot has streamed, and the snapshot does not cover it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_local_reads_go_on_while_a_snapshot_streams() {
    let dir = TempDir::new().expect("temp dir");
    let mut stores = open(&dir);
    let mut entries = workload(2);
    entries.extend(support::pool_filling(entries.len() as u64, 600));
    for chunk in entries.chunks(50) {
        for response in apply(&mut stores.sm, chunk).await {
            assert!(response.results.iter().all(Result::is_ok), "{response:?}");
        }
    }
    let before = entries.last().expect("entries").log_id.index;
    let next = support::pool_filling(before + 1, 1);
    let handle = stores.sm.state();

    let mut builder = stores.sm.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut sm = stores.sm;
    let apply_next = tokio::spawn(async move {
        let responses = apply(&mut sm, &next[..1]).await;
        (sm, responses)
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let read_index = handle.read().await.last_applied_index();
    let build_done = build.is_finished();

    let snapshot = build.await.expect("build task").expect("build");
    let (_sm, responses) = apply_next.await.expect("apply task");
    assert!(!build_done, "the snapshot took under 20 ms to stream: make the state larger");
    assert_eq!(read_index, before, "the read waited for the snapshot and the entry after it");
    assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(before));
    assert_eq!(responses.len(), 1);
    assert_eq!(handle.applied_index(), before + 1);
}
