//! Destroy protections (SPEC O7), impact previews (O8, O9), backups and destroyed keys (B4),
//! and key protection on a single KMA (O4).

mod support;

use statemachine::audit::AuditWhat;
use statemachine::backup::BackupKind;
use statemachine::command::{Command, DestroySelection};
use statemachine::key::KeyState;
use statemachine::{Actor, CommandKind, DataUnitId, KeyId, Reject, RoleSet};
use support::*;

/// A tape with one key written at the cluster's current time.
fn written_tape(cluster: &mut TestCluster, tag: &str) -> (DataUnitId, KeyId) {
    let unit = cluster.create_data_unit("drive1", tag);
    let (key, _) = cluster.write_key("drive1", unit, true);
    (unit, key)
}

fn backup(cluster: &mut TestCluster) -> u64 {
    let covers_index = cluster.index;
    let command = Command::RecordBackupBeforeFormat3 {
        kind: BackupKind::Database,
        kma: "kma1".into(),
        file_name: format!("backup-{covers_index}.kms"),
        covers_index,
    };
    match cluster.ok(bo(), command) {
        statemachine::Reply::BackupRecorded { id } => id,
        other => panic!("expected a backup record, got {other:?}"),
    }
}

/// Setup: a protect-and-process key and a process-only key.
/// Action: an Operator destroys each. Expect: both refused, naming the state. (SPEC O7)
#[test]
fn o7_active_key_cannot_be_destroyed() {
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    let (_, fresh) = written_tape(&mut cluster, "A");
    cluster.advance(11 * DAY_MS);
    let (_, recent) = written_tape(&mut cluster, "B");
    for (key_id, state) in [(fresh, KeyState::ProcessOnly), (recent, KeyState::ProtectAndProcess)] {
        let refused = cluster.apply(op(), Command::DestroyKeys { keys: vec![key_id] });
        assert_eq!(refused, Err(Reject::DestroyNeedsDeactivatedOrCompromised { key_id, state }));
    }
}

/// A Compliance Officer cannot destroy; an Operator cannot compromise. (SPEC O7, S1)
#[test]
fn o7_compliance_officer_cannot_destroy_operator_cannot_compromise() {
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    let (_, key) = written_tape(&mut cluster, "A");
    let destroy = cluster.apply(co(), Command::DestroyKeys { keys: vec![key] });
    assert_eq!(
        destroy,
        Err(Reject::MissingRole {
            kind: CommandKind::DestroyKeys,
            required: RoleSet::of(statemachine::Role::Operator),
            held: RoleSet::of(statemachine::Role::ComplianceOfficer),
        })
    );
    let compromise = cluster.apply(op(), Command::CompromiseKeys { keys: vec![key] });
    assert!(matches!(
        compromise,
        Err(Reject::MissingRole { kind: CommandKind::CompromiseKeys, .. })
    ));
}

/// No user's command deactivates a key: its cryptoperiod's end does, at the exact instant (a
/// KMIP client's Revoke, with a right a Security Officer grants, is the one other way: see
/// `tests/kmip.rs`). (SPEC O7)
#[test]
fn o7_nobody_can_deactivate_only_time_does() {
    assert!(CommandKind::ALL.iter().all(|kind| !format!("{kind:?}").contains("Deactivat")));
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    let t0 = cluster.now_ms;
    let (_, key) = written_tape(&mut cluster, "A");
    assert_eq!(cluster.state.key_state(&key, t0 + 30 * DAY_MS - 1), Some(KeyState::ProcessOnly));
    assert_eq!(cluster.state.key_state(&key, t0 + 30 * DAY_MS), Some(KeyState::Deactivated));
}

/// Destroying an active key takes two people: a Compliance Officer compromises it, then an
/// Operator destroys it; the material is erased and the key is never sent again. (SPEC O7)
#[test]
fn o7_compromised_active_key_destroyed_and_never_returned() {
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    let (unit, key) = written_tape(&mut cluster, "A");
    cluster.ok(co(), Command::CompromiseKeys { keys: vec![key] });
    assert_eq!(cluster.key_state(&key), KeyState::Compromised);
    assert_eq!(cluster.mount("drive1", &unit), vec![key], "a compromised key still decrypts");
    cluster.ok(op(), Command::DestroyKeys { keys: vec![key] });
    assert_eq!(cluster.key_state(&key), KeyState::CompletelyDestroyedCompromised);
    assert!(cluster.state.key(&key).expect("metadata kept").material.is_none());
    assert!(cluster.mount("drive1", &unit).is_empty());
    let state = KeyState::CompletelyDestroyedCompromised;
    let by_id = cluster.state.key_for_agent("drive1", &key, cluster.now_ms);
    assert_eq!(by_id, Err(Reject::KeyUnusable { key_id: key, state }));
    let associate = Command::AssociateKeyForRead {
        key_id: key,
        data_unit: Some(unit),
        external_tag: String::new(),
    };
    assert_eq!(
        cluster.apply(agent("drive1"), associate),
        Err(Reject::KeyUnusable { key_id: key, state })
    );
}

/// Setup: three tapes whose keys are deactivated, compromised and active.
/// Action: destroy by data unit with each option, each confirmed by its preview.
/// Expect: exactly the keys the option names; an unconfirmed or stale preview is refused.
/// (SPEC O7, O9)
#[test]
fn o7_destroy_by_data_unit_with_the_three_options() {
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    let (old_unit, old_key) = written_tape(&mut cluster, "OLD");
    let (bad_unit, bad_key) = written_tape(&mut cluster, "BAD");
    cluster.advance(31 * DAY_MS);
    let (new_unit, _) = written_tape(&mut cluster, "NEW");
    cluster.ok(co(), Command::CompromiseKeys { keys: vec![bad_key] });
    let units = vec![old_unit, bad_unit, new_unit];
    let cases = [
        (DestroySelection::DeactivatedOnly, vec![old_key]),
        (DestroySelection::CompromisedOnly, vec![bad_key]),
        (DestroySelection::DeactivatedAndCompromised, sorted(vec![old_key, bad_key])),
    ];
    for (selection, expected) in cases {
        let preview =
            cluster.state.destroy_preview(&units, selection, cluster.now_ms).expect("preview");
        assert_eq!(preview.keys, expected, "{selection:?}");
    }
    let preview = cluster
        .state
        .destroy_preview(&units, DestroySelection::CompromisedOnly, cluster.now_ms)
        .expect("preview");
    let stale = Command::DestroyDataUnitKeys {
        data_units: units.clone(),
        selection: DestroySelection::CompromisedOnly,
        preview_digest: preview.digest ^ 1,
    };
    assert!(matches!(cluster.apply(op(), stale), Err(Reject::ImpactPreviewChanged { .. })));
    let confirmed = Command::DestroyDataUnitKeys {
        data_units: units,
        selection: DestroySelection::CompromisedOnly,
        preview_digest: preview.digest,
    };
    cluster.ok(op(), confirmed);
    assert!(cluster.key_state(&bad_key).is_destroyed());
    assert_eq!(cluster.key_state(&old_key), KeyState::Deactivated);
}

fn sorted(mut keys: Vec<KeyId>) -> Vec<KeyId> {
    keys.sort();
    keys
}

/// Setup: a 1.x key read through tapes A and B. Action: preview destroying, and moving to
/// another group, the keys of tape A. Expect: tape B is named as sharing the key, and the
/// group change moves the key for both. (SPEC O8, O9)
#[test]
fn o8_o9_previews_name_data_units_sharing_a_key() {
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    cluster.policy_and_group("export", 10 * DAY_MS, 30 * DAY_MS);
    let legacy = KeyId([0x42; 30]);
    let key = statemachine::command::Legacy1xKey {
        id: legacy,
        material: fake_wrap([1; 32]),
        check_value: statemachine::key::KeyCheckValue([1; 16]),
        description: String::new(),
    };
    cluster.ok(co(), Command::Import1xKeys { group: "std".into(), keys: vec![key] });
    let tape_a = cluster.create_data_unit("drive1", "A");
    let tape_b = cluster.create_data_unit("drive1", "B");
    for tape in [tape_a, tape_b] {
        cluster.ok(
            agent("drive1"),
            Command::AssociateKeyForRead {
                key_id: legacy,
                data_unit: Some(tape),
                external_tag: String::new(),
            },
        );
    }
    cluster.advance(31 * DAY_MS);
    let destroy = cluster
        .state
        .destroy_preview(&[tape_a], DestroySelection::DeactivatedOnly, cluster.now_ms)
        .expect("preview");
    assert_eq!(destroy.keys, vec![legacy]);
    assert_eq!(destroy.shared_with_unselected, vec![tape_b]);
    let change =
        cluster.state.group_change_preview(&[tape_a], "export", cluster.now_ms).expect("preview");
    assert_eq!(change.data_units, sorted_units(vec![tape_a, tape_b]));
    assert_eq!(change.shared_with_unselected, vec![tape_b]);
    let command = Command::ChangeDataUnitKeyGroup {
        data_units: vec![tape_a],
        group: "export".into(),
        preview_digest: change.digest,
    };
    cluster.ok(co(), command);
    let export = cluster.state.group_by_name("export").map(|g| g.id);
    assert_eq!(cluster.state.key(&legacy).and_then(|k| k.group), export);
    assert!(cluster.mount("drive1", &tape_b).is_empty(), "drive1 cannot access `export`");
}

fn sorted_units(mut units: Vec<DataUnitId>) -> Vec<DataUnitId> {
    units.sort();
    units
}

/// Setup: a key created, two database backups holding it, the key destroyed.
/// Action: mark the backups destroyed one by one.
/// Expect: Incompletely destroyed until the last backup holding it is marked, then Completely
/// destroyed with an audit event; a backup taken after the destroy does not count. (SPEC B4)
#[test]
fn b4_destroyed_key_completely_destroyed_when_its_backups_are() {
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    let (_, key) = written_tape(&mut cluster, "A");
    let first = backup(&mut cluster);
    let second = backup(&mut cluster);
    cluster.advance(31 * DAY_MS);
    cluster.ok(op(), Command::DestroyKeys { keys: vec![key] });
    assert_eq!(cluster.key_state(&key), KeyState::IncompletelyDestroyed);
    let after_destroy = backup(&mut cluster);
    cluster.ok(bo(), Command::MarkBackupDestroyed { id: after_destroy });
    cluster.ok(bo(), Command::MarkBackupDestroyed { id: first });
    assert_eq!(cluster.key_state(&key), KeyState::IncompletelyDestroyed);
    assert!(cluster.last_events().is_empty());
    cluster.ok(bo(), Command::MarkBackupDestroyed { id: second });
    assert_eq!(cluster.key_state(&key), KeyState::CompletelyDestroyed);
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::KeyStateChanged {
            key_id: key,
            from: KeyState::IncompletelyDestroyed,
            to: KeyState::CompletelyDestroyed,
            effective_at_ms: cluster.now_ms
        }]
    );
    let again = cluster.apply(bo(), Command::MarkBackupDestroyed { id: second });
    assert_eq!(again, Err(Reject::BackupAlreadyDestroyed { id: second }));
}

/// Setup: a single KMA. Action: fill the pool, ask for a write key, back up, fill again,
/// join a second KMA. Expect: keys stay Generated (no write key) until a backup holds them;
/// keys made after the backup stay Generated until the second KMA joins. (SPEC O4)
#[test]
fn o4_single_kma_pool_keys_generated_until_a_backup_holds_them() {
    let mut cluster = TestCluster::single();
    cluster.policy_and_group("std", 10 * DAY_MS, 30 * DAY_MS);
    cluster.enrolled_agent("drive1", &["std"]);
    let early = cluster.fill_pool(4);
    assert!(early.iter().all(|id| cluster.key_state(id) == KeyState::Generated));
    let unit = cluster.create_data_unit("drive1", "A");
    let refused =
        cluster.apply(agent("drive1"), Command::AssignWriteKey { data_unit: unit, from_bot: true });
    assert_eq!(refused, Err(Reject::KeyPoolEmpty));
    backup(&mut cluster);
    assert_eq!(cluster.last_events(), vec![AuditWhat::PoolKeysProtected { count: 4 }]);
    assert!(early.iter().all(|id| cluster.key_state(id) == KeyState::Ready));
    let late = cluster.fill_pool(2);
    assert!(late.iter().all(|id| cluster.key_state(id) == KeyState::Generated));
    let (key, _) = cluster.write_key("drive1", unit, true);
    assert!(early.contains(&key), "only a protected key is handed out");
    cluster.join_kma("kma2", "east");
    assert!(late.iter().all(|id| cluster.key_state(id) == KeyState::Ready));
    cluster.fill_pool(1);
    assert_eq!(cluster.last_events(), vec![AuditWhat::PoolKeysAdded { count: 1, ready: true }]);
    let _ = Actor::System;
}
