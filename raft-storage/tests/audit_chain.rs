//! The audit log on RocksDB is hash-chained (SPEC S5): rows written through the real storage
//! verify from their anchor to the state's head; a row edited or deleted behind the KMA's back
//! is reported with its chain position; replays and snapshot installs keep the chain whole.

mod support;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{RaftSnapshotBuilder, StorageHelper};
use statemachine::{
    verify_chain, Actor, AuditChain, AuditWhat, ChainBreak, ChainCheck, ChainedAuditEvent,
};
use support::{append, apply, open, raw_db, raw_rows, receive, workload};
use tempfile::TempDir;

const AUDIT: &str = "audit";

/// A stored audit row's value: the format version byte, then the postcard chained event.
fn decode_row(value: &[u8]) -> ChainedAuditEvent {
    assert_eq!(value[0], raft_storage::data_dir::FORMAT_VERSION);
    postcard::from_bytes(&value[1..]).expect("an audit row decodes")
}

fn encode_row(event: &ChainedAuditEvent) -> Vec<u8> {
    let mut value = vec![raft_storage::data_dir::FORMAT_VERSION];
    value.extend(postcard::to_allocvec(event).expect("an audit row encodes"));
    value
}

/// Verifies every stored event of the data dir from its anchor. (Reopened without a replay,
/// the state is that of the last snapshot: callers take the head before they close.)
fn verify_stored(dir: &TempDir) -> Result<ChainCheck, ChainBreak> {
    let stores = open(dir);
    let handle = stores.sm.state();
    let events = handle.audit_events(0, usize::MAX).expect("audit events");
    let anchor = handle.audit_anchor().expect("audit anchor");
    verify_chain(anchor, events.iter())
}

/// Setup: 120 commands applied through the real storage, in three `apply` calls. Action: verify
/// the stored rows; then, with plain RocksDB, change the principal of one stored user creation
/// (the row's link kept), put the row back, and delete another row.
/// Expect: the untouched log verifies from the empty chain to the state's head; the edit is a
/// `LinkMismatch` at its seq; the deletion a `Gap` starting at the deleted seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_an_edited_and_a_deleted_audit_row_are_reported_with_their_seq() {
    let dir = TempDir::new().expect("temp dir");
    let head = {
        let mut stores = open(&dir);
        for part in workload(120).chunks(50) {
            apply(&mut stores.sm, part).await;
        }
        assert_eq!(stores.sm.state().audit_anchor().expect("anchor"), AuditChain::GENESIS);
        stores.sm.state().audit_head().await
    };
    let check = verify_stored(&dir).expect("the untouched log verifies");
    assert_eq!(check.head, head, "the stored log ends at the state's head");
    assert!(check.events > 150, "every event was checked: {}", check.events);

    let rows = raw_rows(&raw_db(&dir), AUDIT);
    let by_user = |value: &[u8]| {
        let event = decode_row(value);
        matches!(&event.what, AuditWhat::Command { actor: Actor::User(_), .. })
    };
    let (edited_key, original) =
        rows.iter().find(|(_, value)| by_user(value)).cloned().expect("a user's command");
    let mut event = decode_row(&original);
    let edited_seq = event.seq;
    if let AuditWhat::Command { actor, .. } = &mut event.event.what {
        *actor = Actor::User("nobody".into());
    }
    put_row(&dir, &edited_key, Some(&encode_row(&event)));
    assert_eq!(verify_stored(&dir), Err(ChainBreak::LinkMismatch { seq: edited_seq }));

    put_row(&dir, &edited_key, Some(&original));
    let (deleted_key, deleted) = rows[rows.len() / 2].clone();
    let deleted_seq = decode_row(&deleted).seq;
    put_row(&dir, &deleted_key, None);
    let gap = verify_stored(&dir);
    assert_eq!(gap, Err(ChainBreak::Gap { seq: deleted_seq, found: deleted_seq + 1 }));
}

/// Writes (or, with `None`, deletes) one audit row with plain RocksDB.
fn put_row(dir: &TempDir, key: &[u8], value: Option<&[u8]>) {
    let db = raw_db(dir);
    let cf = db.cf_handle(AUDIT).expect("audit cf");
    match value {
        Some(value) => db.put_cf(cf, key, value).expect("raw put"),
        None => db.delete_cf(cf, key).expect("raw delete"),
    }
}

/// Setup: 400 commands committed; 250 applied, a snapshot, the rest applied; the stored rows
/// and anchors read raw. Action: drop the stores, delete every row the snapshot does not cover
/// (as a crash loses writes not yet synced), reopen and let openraft's startup replay the
/// committed tail. Expect: the replay writes the same rows, byte for byte, under the same keys;
/// the anchors are unchanged; the log verifies to the state's head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_reapplying_after_a_restart_writes_identical_audit_rows() {
    let dir = TempDir::new().expect("temp dir");
    let entries = workload(400);
    let last = entries.last().expect("entries").log_id;
    let snapshot_index = {
        let mut stores = open(&dir);
        append(&mut stores.log, &entries).await;
        stores.log.save_committed(Some(last)).await.expect("save committed");
        apply(&mut stores.sm, &entries[..250]).await;
        let snapshot =
            stores.sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
        apply(&mut stores.sm, &entries[250..]).await;
        snapshot.meta.last_log_id.expect("snapshot log id").index
    };
    let (rows_before, meta_before) = {
        let db = raw_db(&dir);
        (raw_rows(&db, AUDIT), raw_rows(&db, "sm_meta"))
    };
    let anchors_before: Vec<_> =
        meta_before.iter().filter(|(key, _)| key.as_slice() == b"audit_anchors").collect();
    assert_eq!(anchors_before.len(), 1, "the anchors are recorded");
    let lost: Vec<_> = rows_before
        .iter()
        .filter(|(key, _)| u64::from_be_bytes(key[..8].try_into().expect("index")) > snapshot_index)
        .collect();
    assert!(lost.len() > 100, "the tail has rows to lose: {}", lost.len());
    for (key, _) in &lost {
        put_row(&dir, key, None);
    }

    let head = {
        let mut stores = open(&dir);
        let initial = StorageHelper::new(&mut stores.log, &mut stores.sm)
            .get_initial_state()
            .await
            .expect("openraft startup");
        assert_eq!(initial.committed, Some(last));
        let handle = stores.sm.state();
        assert_eq!(handle.audit_anchors().expect("anchors"), vec![AuditChain::GENESIS]);
        handle.audit_head().await
    };
    let db = raw_db(&dir);
    assert_eq!(raw_rows(&db, AUDIT), rows_before, "the replay wrote the same rows");
    let anchors_after = raw_rows(&db, "sm_meta");
    let anchors_after: Vec<_> =
        anchors_after.iter().filter(|(key, _)| key.as_slice() == b"audit_anchors").collect();
    assert_eq!(anchors_after, anchors_before);
    drop(db);
    assert_eq!(verify_stored(&dir).expect("verifies").head, head);
}

/// Setup: a leader store with 300 commands applied and a snapshot; a fresh follower and a
/// lagging one that applied the first 50 entries itself. Action: install the snapshot into
/// both, then apply 100 more entries everywhere. Expect: the fresh follower's log starts at the
/// snapshot's chain position and verifies from it to the head; its rows equal the leader's for
/// the same entries. The lagging follower keeps its first rows: its log has two runs, a gap
/// between them that ends exactly at its second anchor, and each run verifies from its anchor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_a_snapshot_install_anchors_the_local_audit_log() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("temp dir")).collect();
    let entries = workload(400);
    let (installed, more) = entries.split_at(302);
    let mut leader = open(&dirs[0]);
    apply(&mut leader.sm, installed).await;
    leader.sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let at_snapshot = leader.sm.state().audit_head().await;
    let (mut fresh, mut lagging) = (open(&dirs[1]), open(&dirs[2]));
    apply(&mut lagging.sm, &installed[..50]).await;
    let lagging_end = lagging.sm.state().audit_head().await;
    for follower in [&mut fresh, &mut lagging] {
        let current = leader.sm.get_current_snapshot().await.expect("read").expect("a snapshot");
        let received = receive(&mut follower.sm, *current.snapshot, None).await;
        follower.sm.install_snapshot(&current.meta, received).await.expect("install");
        assert_eq!(follower.sm.state().audit_head().await, at_snapshot);
    }
    for stores in [&mut leader, &mut fresh, &mut lagging] {
        apply(&mut stores.sm, more).await;
    }

    let handle = fresh.sm.state();
    assert_eq!(handle.audit_anchor().expect("anchor"), at_snapshot);
    let events = handle.audit_events(0, usize::MAX).expect("events");
    let check = verify_chain(at_snapshot, events.iter()).expect("verifies from its anchor");
    assert_eq!(check.head, handle.audit_head().await);
    let leader_events = leader.sm.state().audit_events(more[0].log_id.index, usize::MAX);
    assert_eq!(leader_events.expect("leader events"), events);

    let handle = lagging.sm.state();
    let anchors = handle.audit_anchors().expect("anchors");
    assert_eq!(anchors, vec![AuditChain::GENESIS, at_snapshot]);
    let events = handle.audit_events(0, usize::MAX).expect("events");
    let gap = verify_chain(anchors[0], events.iter()).expect_err("a hole after the first run");
    let first_missing = lagging_end.events + 1;
    assert_eq!(gap, ChainBreak::Gap { seq: first_missing, found: at_snapshot.events + 1 });
    let (first_run, second_run): (Vec<_>, Vec<_>) =
        events.iter().partition(|event| event.seq <= lagging_end.events);
    let first = verify_chain(anchors[0], first_run.into_iter()).expect("first run");
    assert_eq!(first.head, lagging_end);
    let second = verify_chain(anchors[1], second_run.into_iter()).expect("second run");
    assert_eq!(second.head, handle.audit_head().await);
}

/// Setup: 120 commands applied through the real storage. Action: a backup stream of the data
/// dir (`export_backup`), restored into a new data dir by `restore_data_dir` with a step that
/// applies nothing, then reopened. Expect: the same state bytes at the same index, and the
/// restored audit log verifies from its anchor to the backup's head. (SPEC B2, B3, S5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_b3_a_backup_stream_restores_the_state_and_its_audit_chain() {
    let dir = TempDir::new().expect("temp dir");
    let mut stores = open(&dir);
    apply(&mut stores.sm, &workload(120)).await;
    let (stream, summary) = stores.sm.state().export_backup(Vec::new()).await.expect("backup");
    assert!(summary.audit_rows > 150, "{summary:?}");
    let head = stores.sm.state().audit_head().await;
    let bytes = support::state_bytes(&stores.sm).await;

    let restored = TempDir::new().expect("temp dir");
    let target = restored.path().join("raft");
    let done = raft_storage::backup::restore_data_dir(&target, stream.as_slice(), "x:1", |_, _| {
        Ok((Vec::new(), 1))
    })
    .expect("restore");
    assert_eq!(done.restore_index, summary.covers_index, "a step that applied nothing");
    let (_, _, sm) = raft_storage::open_stores(&target).expect("the restored data dir opens");
    assert_eq!(support::state_bytes(&sm).await, bytes, "the same state");
    let handle = sm.state();
    let events = handle.audit_events(0, usize::MAX).expect("audit events");
    let check = verify_chain(handle.audit_anchor().expect("anchor"), events.iter());
    assert_eq!(check.expect("the restored audit log verifies").head, head);
}

/// A writer that fails once `room` bytes were written: a disk that fills up.
struct FullDisk {
    room: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left"));
        }
        self.room -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Setup: a data dir with applied commands. Action: a backup into a disk that fills up; then
/// more commands; then a backup with room. Expect: the first backup fails with the write error
/// and nothing else does: the KMA applies on, and the next backup covers the new index; a
/// stream cut short or with a byte flipped is refused by a restore, which leaves no database.
/// (SPEC B2, B3; issue 17 "Bad input and faults")
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_a_full_disk_fails_the_backup_and_nothing_else() {
    let dir = TempDir::new().expect("temp dir");
    let mut stores = open(&dir);
    let work = workload(120);
    apply(&mut stores.sm, &work[..60]).await;
    let failed = stores.sm.state().export_backup(FullDisk { room: 4096 }).await;
    let error = failed.err().expect("the backup fails").to_string();
    assert!(error.contains("cannot write the backup") && error.contains("free space"), "{error}");
    apply(&mut stores.sm, &work[60..]).await;
    let (stream, summary) = stores.sm.state().export_backup(Vec::new()).await.expect("backup");
    assert_eq!(summary.covers_index, stores.sm.state().applied_index());

    for (name, damaged) in [
        ("cut", stream[..stream.len() - 10].to_vec()),
        ("flipped", {
            let mut bytes = stream.clone();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            bytes
        }),
    ] {
        let target = TempDir::new().expect("temp dir");
        let raft = target.path().join("raft");
        let refused =
            raft_storage::backup::restore_data_dir(&raft, damaged.as_slice(), "x:1", |_, _| {
                Ok((Vec::new(), 1))
            });
        assert!(refused.is_err(), "a {name} stream is refused");
    }
}
