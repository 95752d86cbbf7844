//! Backups, restore and disaster recovery (issue 17; SPEC B1–B7, O4, A5): backup records of log
//! format 3, the core security backup of the current quorum, restore drills, and the local
//! ceremonies of a restore and of the recovery from a lost majority. Each rule and each
//! refusal, and that a refusal changes nothing.

mod support;

use statemachine::backup::{BackupDrill, BackupKind, RestoreSummary};
use statemachine::codec::{decode_snapshot, encode_snapshot};
use statemachine::command::RestoreCluster;
use statemachine::format::LOG_FORMAT_3;
use statemachine::quorum::QuorumOperation;
use statemachine::reject::TextProblem;
use statemachine::{Actor, AuditWhat, Command, CommandKind, KeyState, Reject, Reply};
use support::*;

fn database_backup(kma: &str, covers_index: u64) -> Command {
    Command::RecordBackup {
        kind: BackupKind::Database,
        kma: kma.into(),
        file_name: format!("db-{covers_index}.kms"),
        covers_index,
        taken_by: "bo".into(),
        size_bytes: 65_536,
        file_sha256: [0xf0; 32],
        state_sha256: [0x50; 32],
        backup_uuid: [covers_index as u8; 16],
    }
}

fn core_security_backup(covers_index: u64) -> Command {
    Command::RecordBackup {
        kind: BackupKind::CoreSecurity,
        kma: "kma1".into(),
        file_name: format!("core-{covers_index}.xml"),
        covers_index,
        // The backup schedule's.
        taken_by: String::new(),
        size_bytes: 1_024,
        file_sha256: [0xc5; 32],
        state_sha256: [0; 32],
        backup_uuid: [0xcc; 16],
    }
}

fn drill(backup_id: u64, kma: &str, detail: &str) -> Command {
    Command::RecordBackupDrill { backup_id, kma: kma.into(), passed: true, detail: detail.into() }
}

fn recorded(reply: Reply) -> u64 {
    let Reply::BackupRecorded { id } = reply else { panic!("a backup record, got {reply:?}") };
    id
}

/// The prepared cluster at log format 3.
fn prepared_at_format_3() -> (TestCluster, Fixture) {
    let (mut cluster, fixture) = prepared();
    cluster.open_format(LOG_FORMAT_3);
    (cluster, fixture)
}

/// Asserts the last entry was refused with `expected` and changed nothing but what a refusal
/// changes (the apply stamp, the audit chain, the request IDs).
#[track_caller]
fn refused(cluster: &mut TestCluster, origin: u64, command: Command, expected: Reject) {
    let result = cluster.apply_from(origin, Actor::System, command);
    assert_eq!(result, Err(expected));
    let before = cluster.before_last.take().expect("applied");
    assert!(without_what_a_refusal_changes(&cluster.state, &before) == before, "changed nothing");
}

/// Setup: the prepared cluster at log format 3. Action: kma1 records a database backup with
/// its file's facts, through its own node; the same record by a Backup Operator and through
/// kma2's node. Expect: the record holds who asked, the size, both digests and the UUID, no
/// drill; the user is refused as the wrong issuer, kma2's node as not kma1's. (SPEC B2;
/// issue 17 point 1)
#[test]
fn b2_a_kma_records_its_backup_with_the_files_facts_through_its_own_node() {
    let (mut cluster, _) = prepared_at_format_3();
    let record = database_backup("kma1", cluster.index);
    let by_user = cluster.apply(bo(), record.clone());
    assert_eq!(by_user, Err(Reject::WrongIssuer { kind: CommandKind::RecordBackup }));
    let node_of_kma2 = Reject::NotFromThatKma { kma: "kma1".into(), node_id: 1, origin_node_id: 2 };
    refused(&mut cluster, 2, record.clone(), node_of_kma2);
    let id = recorded(cluster.ok(Actor::System, record));
    let backup = &cluster.state.meta().backups[&id];
    assert_eq!(
        (backup.kind, backup.kma.as_str(), backup.taken_by.as_str(), backup.size_bytes),
        (BackupKind::Database, "kma1", "bo", 65_536)
    );
    assert_eq!((backup.file_sha256, backup.state_sha256), ([0xf0; 32], [0x50; 32]));
    assert_eq!((backup.backup_uuid, &backup.drill), ([cluster.index as u8 - 3; 16], &None));
}

/// Setup: the prepared cluster, below log format 3. Action: ask the state which backup record
/// to propose for a record of format 3, apply that; the record of format 3 itself. Expect: the
/// format-1 record, applied from its Backup Operator as before, with the fields of format 3
/// empty; the record of format 3 not available yet (retryable). At format 3 the state picks the
/// record of format 3. (SPEC C7, B2)
#[test]
fn b2_below_format_3_the_format_1_record_is_proposed_and_applies_as_before() {
    let (mut cluster, _) = prepared();
    let record = database_backup("kma1", cluster.index);
    let proposed = cluster.state.backup_record_to_propose(record.clone());
    assert!(matches!(proposed, Command::RecordBackupBeforeFormat3 { .. }), "{proposed:?}");
    let id = recorded(cluster.ok(bo(), proposed));
    let backup = &cluster.state.meta().backups[&id];
    assert_eq!((backup.taken_by.as_str(), backup.size_bytes, backup.backup_uuid), ("", 0, [0; 16]));
    // Asked by its issuer of format 1: the format gate, not the role, refuses it.
    let unavailable = cluster.apply(bo(), record.clone());
    assert!(matches!(unavailable, Err(Reject::FormatNotYetAvailable { .. })), "{unavailable:?}");
    cluster.open_format(LOG_FORMAT_3);
    assert_eq!(cluster.state.backup_record_to_propose(record.clone()), record);
}

/// Setup: a single KMA at log format 3 with Generated pool keys. Action: kma1 records a
/// database backup covering them. Expect: they become Ready (a backup protects them on a single
/// KMA), audited; a core security backup protects none. (SPEC O4, O5)
#[test]
fn b2_o4_a_database_backup_protects_generated_pool_keys_on_a_single_kma() {
    let mut cluster = TestCluster::single();
    cluster.open_format(LOG_FORMAT_3);
    cluster.fill_pool(3);
    assert_eq!(cluster.state.pool_size(), (0, 3));
    cluster.ok(Actor::System, core_security_backup(0));
    assert_eq!(cluster.state.pool_size(), (0, 3), "a core security backup holds no key");
    cluster.ok(Actor::System, database_backup("kma1", cluster.index));
    assert_eq!(cluster.last_events(), [AuditWhat::PoolKeysProtected { count: 3 }]);
    assert_eq!(cluster.state.pool_size(), (3, 0));
}

/// Setup: the prepared cluster at log format 3: no core security backup yet. Action: record
/// one of the quorum version; change the quorum; record one of the old version, then one of
/// the new; mark it destroyed. Expect: a backup is due (version 0) until the first; the quorum
/// change makes the entry's index the version and audits that a backup is due; the old
/// version is refused as outdated; the new one ends the reminder; destroyed, it holds nothing
/// and the reminder is back. A core security backup with a state digest is refused. (SPEC B1;
/// issue 17 point 2)
#[test]
fn b1_a_core_security_backup_holds_the_current_quorum() {
    let (mut cluster, _) = prepared_at_format_3();
    assert_eq!(cluster.state.core_security_backup_due(), Some(0));
    let mut with_state = core_security_backup(0);
    if let Command::RecordBackup { state_sha256, .. } = &mut with_state {
        *state_sha256 = [1; 32];
    }
    let invalid = Reject::InvalidSetting {
        field: "state_sha256".into(),
        reason: "all zero for a core security backup: it holds no state".into(),
    };
    refused(&mut cluster, 1, with_state, invalid);
    cluster.ok(Actor::System, core_security_backup(0));
    assert_eq!(cluster.state.core_security_backup_due(), None);

    let operation = QuorumOperation::ChangeQuorum { quorum: quorum(4, 2) };
    let start = Command::StartQuorumOperation { operation, ttl_ms: None };
    let Reply::QuorumOperationStarted { id, .. } = cluster.ok(so(), start) else { panic!() };
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q2".into() });
    let version = cluster.index;
    let members = ["q1", "q2", "q3", "q4"].map(String::from).to_vec();
    assert_eq!(
        cluster.last_events(),
        [
            AuditWhat::QuorumApproval { id, member: "q2".into(), approvals: 2, threshold: 2 },
            AuditWhat::QuorumChanged { members, threshold: 2 },
            AuditWhat::CoreSecurityBackupDue { quorum_changed_index: version },
            AuditWhat::QuorumOperationCompleted { id },
        ]
    );
    assert_eq!(cluster.state.quorum_changed_index(), version);
    assert_eq!(cluster.state.core_security_backup_due(), Some(version));
    let outdated =
        Reject::CoreSecurityBackupOutdated { covers_index: 0, quorum_changed_index: version };
    refused(&mut cluster, 1, core_security_backup(0), outdated);
    let id = recorded(cluster.ok(Actor::System, core_security_backup(version)));
    assert_eq!(cluster.state.core_security_backup_due(), None);
    cluster.ok(bo(), Command::MarkBackupDestroyed { id });
    assert_eq!(cluster.state.core_security_backup_due(), Some(version));
}

/// Setup: the prepared cluster below log format 3. Action: a quorum change. Expect: the rule of
/// format 3 does not apply: no reminder, the quorum version stays 0 (older logs replay alike).
/// (SPEC C7, B1)
#[test]
fn b1_below_format_3_a_quorum_change_keeps_the_quorum_version() {
    let (mut cluster, _) = prepared();
    let operation = QuorumOperation::ChangeQuorum { quorum: quorum(3, 1) };
    let start = Command::StartQuorumOperation { operation, ttl_ms: None };
    let Reply::QuorumOperationStarted { id, .. } = cluster.ok(so(), start) else { panic!() };
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q2".into() });
    assert_eq!(cluster.state.meta().quorum.threshold, 1, "the quorum changed");
    assert_eq!(cluster.state.quorum_changed_index(), 0);
    assert!(!cluster
        .last_events()
        .iter()
        .any(|event| matches!(event, AuditWhat::CoreSecurityBackupDue { .. })));
}

/// Setup: the prepared cluster at log format 3 and its database backup. Action: kma1 records a
/// restore drill; then drills refused: through kma2's node, of an unknown backup, of a core
/// security backup, with too long a detail, of a destroyed backup. Expect: the drill is kept on
/// the backup and audited; each refusal names its rule and changes nothing. (SPEC B6; issue
/// 17 point 3)
#[test]
fn b6_a_kma_records_a_restore_drill_of_a_database_backup() {
    let (mut cluster, fixture) = prepared_at_format_3();
    cluster.ok(Actor::System, drill(fixture.backup, "kma1", "42 keys read back"));
    assert_eq!(
        cluster.last_events(),
        [AuditWhat::BackupDrillRecorded { backup_id: fixture.backup, passed: true }]
    );
    let expected = BackupDrill {
        at_ms: cluster.now_ms,
        kma: "kma1".into(),
        passed: true,
        detail: "42 keys read back".into(),
    };
    assert_eq!(cluster.state.meta().backups[&fixture.backup].drill, Some(expected));

    let other_node = Reject::NotFromThatKma { kma: "kma1".into(), node_id: 1, origin_node_id: 2 };
    refused(&mut cluster, 2, drill(fixture.backup, "kma1", ""), other_node);
    refused(&mut cluster, 1, drill(999, "kma1", ""), Reject::UnknownBackup { id: 999 });
    let core = recorded(cluster.ok(Actor::System, core_security_backup(0)));
    refused(
        &mut cluster,
        1,
        drill(core, "kma1", ""),
        Reject::BackupNotADatabaseBackup { id: core },
    );
    let too_long = Reject::InvalidText {
        field: "detail".into(),
        problem: TextProblem::TooLong { len_max: 256 },
    };
    refused(&mut cluster, 1, drill(fixture.backup, "kma1", &"x".repeat(257)), too_long);
    cluster.ok(bo(), Command::MarkBackupDestroyed { id: fixture.backup });
    let destroyed = Reject::BackupAlreadyDestroyed { id: fixture.backup };
    refused(&mut cluster, 1, drill(fixture.backup, "kma1", ""), destroyed);
}

/// Setup: the prepared cluster at log format 3. Action: a Backup Operator starts the quorum
/// operation of restore; below format 3, the same. Expect: refused at format 3, with the
/// ceremony to run instead in the message; applied below (old logs replay alike). (SPEC B3,
/// S4, C7; issue 17 point 6)
#[test]
fn b3_restore_is_no_longer_a_quorum_operation_from_format_3() {
    let (mut cluster, fixture) = prepared();
    let operation = QuorumOperation::RestoreFromBackup { backup_id: fixture.backup };
    let start = Command::StartQuorumOperation { operation, ttl_ms: None };
    assert!(cluster.fork().apply(bo(), start.clone()).is_ok(), "below format 3 as before");
    cluster.open_format(LOG_FORMAT_3);
    let refused = cluster.apply(bo(), start).expect_err("a local ceremony");
    assert_eq!(refused, Reject::RestoreIsALocalCeremony);
    assert!(refused
        .to_string()
        .contains("kma restore --data FILE --key FILE --core-security FILE"));
}

/// The prepared cluster at log format 3 with two user sessions, a CA rotation approved, a
/// backup schedule on kma2: what a backup holds of a cluster in the middle of its work.
fn busy_cluster() -> (TestCluster, Fixture) {
    let (mut cluster, fixture) = prepared_at_format_3();
    for (user, byte) in [("op", 0xd1), ("co", 0xd2)] {
        let session = Command::RecordUserSession {
            principal: user.into(),
            source: "10.0.0.7".into(),
            certificate_sha256: [byte; 32],
            expires_at_ms: cluster.now_ms + DAY_MS,
        };
        cluster.ok(Actor::System, session);
    }
    cluster.record_ca_key();
    cluster.approve_ca_rotation();
    let schedule =
        statemachine::cluster::BackupSchedule { interval_ms: DAY_MS, kma: "kma2".into() };
    cluster.ok(bo(), Command::SetBackupSchedule { schedule: Some(schedule) });
    (cluster, fixture)
}

/// Setup: a busy cluster, as decoded from a backup. Action: the `kma restore` ceremony applies
/// `RestoreCluster` for kma9 through its node. Expect: the lost KMAs are gone (named in the
/// audit event), kma9 the one member, unlocked, without autonomous unlock, with its
/// certificate and format, at a new site; quorum operations, CA rotation and the schedule on
/// kma2 dropped, the current CA kept; user sessions ended; every unassigned pool key
/// recovery-only; the backup recorded as a database backup; epoch 1. The reply counts what was
/// restored. (SPEC B3, A5; issue 17 point 4)
#[test]
fn b3_a_restore_makes_the_restoring_kma_the_one_member() {
    let (mut cluster, _) = busy_cluster();
    let before = cluster.state.restore_summary();
    let (ready, generated) = cluster.state.pool_size();
    assert!(ready + generated > 0, "a pool to quarantine");
    let reply = cluster.ok(Actor::System, Command::RestoreCluster(restore_of_kma9()));
    let quarantined = (ready + generated) as u64;
    let expected = RestoreSummary { pool_keys_quarantined: quarantined, kmas_removed: 4, ..before };
    assert_eq!(reply, Reply::ClusterRestored(expected));
    assert_eq!(
        cluster.last_events(),
        [AuditWhat::ClusterRestored {
            backup_uuid: [0xb0; 16],
            file_name: "b0.kms".into(),
            covers_index: 3,
            kmas_removed: ["kma1", "kma2", "kma3", "kma5"].map(String::from).to_vec(),
            pool_keys_quarantined: quarantined,
            sessions_ended: 2,
            epoch: 1,
            keys_destroyed_since_backup: Vec::new(),
        }]
    );
    let state = &cluster.state;
    let meta = state.meta();
    let kmas: Vec<&str> = meta.kmas.keys().map(String::as_str).collect();
    assert_eq!(kmas, ["kma9"]);
    let kma9 = &meta.kmas["kma9"];
    assert_eq!(
        (kma9.node_id, kma9.site.as_str(), kma9.locked, kma9.autonomous_unlock),
        (1, "west", false, false)
    );
    assert_eq!((kma9.certificate_sha256, kma9.software_version), (Some([0xc9; 32]), 3));
    assert!(meta.quorum_operations.is_empty() && state.ca_rotation().is_none());
    assert!(state.wrapped_ca_key().is_some(), "the current CA stays");
    assert_eq!(meta.backup_schedule, None, "it named kma2");
    assert!(meta.users.values().all(|user| user.sessions.is_empty()));
    assert_eq!(state.pool_size(), (0, 0));
    let restored = meta.backups.values().find(|b| b.backup_uuid == [0xb0; 16]).expect("recorded");
    assert_eq!((restored.kind, restored.kma.as_str()), (BackupKind::Database, "kma1"));
    assert_eq!((restored.covers_index, restored.state_sha256), (3, [0x5a; 32]));
    assert_eq!(state.cluster_epoch(), 1);
    assert!(decode_snapshot(&encode_snapshot(state)).expect("decodes") == *state, "snapshot");
}

/// Setup: a restored cluster whose backup held pool keys. Action: a drive asks for a write key,
/// then for a quarantined key by its ID. Expect: no key of the lost cluster's pool is drawn
/// (the pool is empty, retryable); the key asked for by ID is recovered, Process-only, for a
/// new data unit. (SPEC A5, B3)
#[test]
fn b3_a5_pool_keys_of_a_restored_cluster_are_recovered_by_id_only() {
    let (mut cluster, _) = busy_cluster();
    let pool_key =
        cluster.state.keys().values().find(|k| k.group.is_none()).expect("a pool key").id;
    cluster.ok(Actor::System, Command::RestoreCluster(restore_of_kma9()));
    let unit = cluster.create_data_unit("drive1", "NEW001");
    let write = Command::AssignWriteKey { data_unit: unit, from_bot: true };
    assert_eq!(cluster.apply(agent("drive1"), write), Err(Reject::KeyPoolEmpty));
    let read = Command::AssociateKeyForRead {
        key_id: pool_key,
        data_unit: None,
        external_tag: "OLD001".into(),
    };
    assert!(matches!(cluster.ok(agent("drive1"), read), Reply::KeyAssociated { .. }));
    assert_eq!(cluster.key_state(&pool_key), KeyState::ProcessOnly);
}

/// Setup: a busy cluster. Action: restores refused: through another node than the restoring
/// KMA's, node ID 0, software that does not read format 3, a backup covering the future, a bad
/// KMA name; on a state without a cluster. Then a restore of a backup the state already
/// records. Expect: each refusal names its rule and changes nothing; the known backup is not
/// recorded twice. (SPEC B3; issue 17 point 4)
#[test]
fn b3_a_restore_checks_everything_before_it_changes_anything() {
    let (mut cluster, _) = busy_cluster();
    let restore = |change: fn(&mut RestoreCluster)| {
        let mut restore = restore_of_kma9();
        change(&mut restore);
        Command::RestoreCluster(restore)
    };
    let not_kma9 = Reject::NotFromThatKma { kma: "kma9".into(), node_id: 1, origin_node_id: 2 };
    refused(&mut cluster, 2, restore(|_| {}), not_kma9);
    let node_0 = Reject::InvalidSetting {
        field: "node_id".into(),
        reason: "a node ID from 1 to 2^64 - 2".into(),
    };
    refused(&mut cluster, 0, restore(|r| r.node_id = 0), node_0);
    let old_software = Reject::InvalidSetting {
        field: "software_version".into(),
        reason: "at least 3: the restoring KMA applies this command of log format 3".into(),
    };
    refused(&mut cluster, 1, restore(|r| r.software_version = 2), old_software);
    let index = cluster.index + 1;
    let future = Reject::BackupCoversFuture { covers_index: u64::MAX, index };
    refused(&mut cluster, 1, restore(|r| r.covers_index = u64::MAX), future);
    let empty = Reject::InvalidText { field: "KMA name".into(), problem: TextProblem::Empty };
    refused(&mut cluster, 1, restore(|r| r.kma_name.clear()), empty);

    let mut blank = TestCluster::blank();
    let none = blank.apply(Actor::System, restore(|_| {}));
    assert_eq!(none, Err(Reject::ClusterNotInitialized));

    let known = cluster.state.meta().backups.len();
    let uuid = [0x77; 16];
    let mut record = database_backup("kma1", cluster.index);
    if let Command::RecordBackup { backup_uuid, .. } = &mut record {
        *backup_uuid = uuid;
    }
    cluster.ok(Actor::System, record);
    let mut again = restore_of_kma9();
    again.backup_uuid = uuid;
    cluster.ok(Actor::System, Command::RestoreCluster(again));
    assert_eq!(cluster.state.meta().backups.len(), known + 1, "recorded once");
}

/// Setup: a busy cluster with keys. Action: a restore naming a key the lost cluster destroyed
/// after the backup; one naming a key the backup does not hold; one naming more keys than a
/// command carries. Expect: the first is restored and its audit event names the key, which
/// comes back with its material (SPEC B4: a backup taken before a destroy still holds the
/// key); the others are refused and change nothing. (SPEC B4; issue 17 point 4)
#[test]
fn b4_a_restore_names_the_keys_destroyed_since_its_backup_that_it_brings_back() {
    let (mut cluster, _) = busy_cluster();
    let key = *cluster.state.keys().keys().next().expect("a key");
    let unknown = statemachine::KeyId([0xee; statemachine::ids::KEY_ID_LEN]);
    let mut naming_unknown = restore_of_kma9();
    naming_unknown.keys_destroyed_since_backup = vec![key, unknown];
    refused(
        &mut cluster,
        1,
        Command::RestoreCluster(naming_unknown),
        Reject::UnknownKey { key_id: unknown },
    );
    let mut too_many = restore_of_kma9();
    too_many.keys_destroyed_since_backup =
        vec![key; statemachine::limits::KEYS_PER_COMMAND_MAX + 1];
    let refusal = cluster.apply(Actor::System, Command::RestoreCluster(too_many));
    assert!(matches!(refusal, Err(Reject::TooMany { .. })), "{refusal:?}");
    assert_eq!(cluster.state.member_count(), 2, "a refused restore changes nothing");

    let mut restore = restore_of_kma9();
    restore.keys_destroyed_since_backup = vec![key];
    cluster.ok(Actor::System, Command::RestoreCluster(restore));
    let events = cluster.last_events();
    let named = events.iter().find_map(|what| match what {
        AuditWhat::ClusterRestored { keys_destroyed_since_backup, .. } => {
            Some(keys_destroyed_since_backup.clone())
        }
        _ => None,
    });
    assert_eq!(named, Some(vec![key]));
    assert!(cluster.state.keys()[&key].material.is_some(), "the key came back whole");
}

/// Setup: a busy cluster (kma1 and kma2 members, kma5 approved to join, kma3 created). Action:
/// the recovery from a lost majority on kma1, through its node. Expect: the other KMAs leave
/// (named in the audit event), pending quorum operations and the CA rotation end, unassigned
/// pool keys become recovery-only, the schedule on kma2 is dropped, user sessions stay, epoch
/// 1, and kma1's new certificate (of that epoch) is the one recorded. (SPEC B7; issue 17
/// point 5)
#[test]
fn b7_the_survivor_of_a_lost_majority_becomes_the_one_kma() {
    let (mut cluster, _) = busy_cluster();
    let (ready, generated) = cluster.state.pool_size();
    let quarantined = (ready + generated) as u64;
    let old_certificate = [0xc1; 32];
    let recover = Command::RecoverFromLostMajority {
        kma_name: "kma1".into(),
        node_id: 1,
        certificate_sha256: [0xe1; 32],
    };
    let reply = cluster.ok(Actor::System, recover);
    let expected = Reply::RecoveredFromLostMajority {
        kmas_removed: 3,
        pool_keys_quarantined: quarantined,
        cluster_epoch: 1,
    };
    assert_eq!(reply, expected);
    assert_eq!(
        cluster.last_events(),
        [AuditWhat::RecoveredFromLostMajority {
            kma: "kma1".into(),
            kmas_removed: ["kma2", "kma3", "kma5"].map(String::from).to_vec(),
            pool_keys_quarantined: quarantined,
            epoch: 1,
        }]
    );
    let state = &cluster.state;
    assert_eq!(state.meta().kmas.keys().collect::<Vec<_>>(), ["kma1"]);
    assert!(state.meta().quorum_operations.is_empty() && state.ca_rotation().is_none());
    assert_eq!((state.pool_size(), &state.meta().backup_schedule), ((0, 0), &None));
    assert!(state.user_session_certified("op", &[0xd1; 32]), "sessions stay");
    assert_eq!(state.cluster_epoch(), 1);
    assert!(state.kma_certificate_accepted(1, &[0xe1; 32]), "the certificate of epoch 1");
    assert!(!state.kma_certificate_accepted(1, &old_certificate), "not another one");
}

/// Setup: a busy cluster. Action: recoveries refused: of an unknown KMA, naming kma1 with
/// another node ID, through another node than kma1's, on kma5 which never joined. Expect: each
/// names its rule and changes nothing. (SPEC B7)
#[test]
fn b7_a_recovery_names_the_survivor_as_the_state_knows_it() {
    let (mut cluster, _) = busy_cluster();
    let recover = |kma: &str, node_id| Command::RecoverFromLostMajority {
        kma_name: kma.into(),
        node_id,
        certificate_sha256: [0xe1; 32],
    };
    refused(&mut cluster, 1, recover("kma8", 1), Reject::UnknownKma { name: "kma8".into() });
    let another =
        Reject::SurvivingKmaIsAnotherNode { kma: "kma1".into(), node_id: 2, recorded_node_id: 1 };
    refused(&mut cluster, 2, recover("kma1", 2), another);
    let through_kma2 = Reject::NotFromThatKma { kma: "kma1".into(), node_id: 1, origin_node_id: 2 };
    refused(&mut cluster, 2, recover("kma1", 1), through_kma2);
    let kma5 = cluster.state.meta().kmas["kma5"].node_id;
    let not_member = Reject::KmaWrongStatus {
        name: "kma5".into(),
        status: "join approved (not caught up)".into(),
    };
    refused(&mut cluster, kma5, recover("kma5", kma5), not_member);
}
