//! The seed's own walkthroughs, step by step, with the states and dates the seed gives.

mod support;

use statemachine::audit::AuditWhat;
use statemachine::command::Command;
use statemachine::key::{Activation, KeyState};
use statemachine::{DataUnitState, KeyGroupId, Reply};
use support::*;

/// Setup: two KMAs, policy 10 days / 54 weeks, one StorageTek drive.
/// Action: the nine steps of seed Example 1, then an append after the encryption period.
/// Expect: one key for the first write and the append within the period; a new key (rekey)
/// on the append after it; every key of the data unit on the read mount. (SPEC O4, O6, A2)
#[test]
fn o4_a2_example_1_first_write_append_read_and_rekey_on_append() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    let t0 = cluster.now_ms;

    // Steps 1-3: a new volume is mounted; the agent creates its data unit and a key.
    let unit = cluster.create_data_unit("drive1", "VOL001");
    assert_eq!(cluster.last_events(), vec![AuditWhat::DataUnitCreated { data_unit: unit }]);
    assert_eq!(cluster.unit_state(&unit), DataUnitState::NoKey);
    let (key1, reused) = cluster.write_key("drive1", unit, true);
    assert!(!reused);
    assert_eq!(
        cluster.last_events(),
        vec![
            AuditWhat::KeyStateChanged {
                key_id: key1,
                from: KeyState::Ready,
                to: KeyState::ProtectAndProcess,
                effective_at_ms: t0
            },
            AuditWhat::KeyAssigned { key_id: key1, data_unit: unit, group: KeyGroupId(0) },
            AuditWhat::DataUnitStateChanged {
                data_unit: unit,
                from: DataUnitState::NoKey,
                to: DataUnitState::Normal
            },
        ]
    );
    let key = cluster.state.key(&key1).expect("assigned key");
    assert_eq!(
        key.activation,
        Some(Activation {
            activated_at_ms: t0,
            encryption_ends_at_ms: t0 + 10 * DAY_MS,
            deactivates_at_ms: t0 + 54 * WEEK_MS
        })
    );
    assert_eq!(key.created_at_ms, t0);

    // Steps 5-7: mounted again three days later; the key is still protect-and-process, reused.
    cluster.advance(3 * DAY_MS);
    assert_eq!(cluster.mount("drive1", &unit), vec![key1]);
    assert_eq!(cluster.write_key("drive1", unit, false), (key1, true));

    // Appending after the encryption period: the data unit needs a rekey, the agent gets key 2.
    cluster.advance(8 * DAY_MS);
    assert_eq!(cluster.key_state(&key1), KeyState::ProcessOnly);
    assert_eq!(cluster.unit_state(&unit), DataUnitState::NeedsRekey);
    let (key2, reused) = cluster.write_key("drive1", unit, false);
    assert!(!reused && key2 != key1);
    assert_eq!(cluster.unit_state(&unit), DataUnitState::Normal);

    // Steps 8-9: a read mount gets every key of the data unit; the drive picks the one it needs.
    cluster.advance(30 * DAY_MS);
    assert_eq!(cluster.mount("drive1", &unit), vec![key1, key2]);
    let fetched = cluster.state.key_for_agent("drive1", &key1, cluster.now_ms).expect("read key 1");
    assert_eq!(fetched.state, KeyState::ProcessOnly);
}

/// Setup: policy 10 days / 54 weeks (seed Example 2); a server fills one tape every 10 days.
/// Action: one write a day for 20 days.
/// Expect: tape 1 written with one key for days 0-9, tape 2 with another from day 10; key 1
/// deactivates 54 weeks after its first use. (SPEC O1, O4)
#[test]
fn o1_example_2_ten_day_encryption_period_one_key_per_tape() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    let t0 = cluster.now_ms;
    let tape1 = cluster.create_data_unit("drive1", "T00001");
    let (key1, _) = cluster.write_key("drive1", tape1, true);
    for _day in 1..10 {
        cluster.advance(DAY_MS);
        assert_eq!(cluster.write_key("drive1", tape1, false), (key1, true));
    }
    cluster.advance(DAY_MS);
    let tape2 = cluster.create_data_unit("drive1", "T00002");
    let (key2, reused) = cluster.write_key("drive1", tape2, true);
    assert!(!reused && key2 != key1);
    for _day in 11..20 {
        cluster.advance(DAY_MS);
        assert_eq!(cluster.write_key("drive1", tape2, false), (key2, true));
    }
    let deactivation = t0 + 54 * WEEK_MS;
    assert_eq!(cluster.state.key_state(&key1, deactivation - 1), Some(KeyState::ProcessOnly));
    assert_eq!(cluster.state.key_state(&key1, deactivation), Some(KeyState::Deactivated));
    // A year of retention plus the 10-day fill: the key outlives the data by a few days only.
    assert!(deactivation - (t0 + 10 * DAY_MS) >= YEAR_MS);
}

/// Setup: policy 1 year / 2 years (seed Example 3).
/// Action: writes to one tape on scattered days over two years.
/// Expect: key 1 for the first year, key 2 after; key 1 readable and deactivated two years
/// after its activation. (SPEC O1, O4, O6)
#[test]
fn o1_example_3_one_year_encryption_two_year_cryptoperiod() {
    let mut cluster = standard(YEAR_MS, 2 * YEAR_MS);
    let t0 = cluster.now_ms;
    let tape = cluster.create_data_unit("drive1", "MVS001");
    let (key1, _) = cluster.write_key("drive1", tape, true);
    for offset_days in [1, 45, 200, 364] {
        cluster.now_ms = t0 + offset_days * DAY_MS;
        assert_eq!(cluster.write_key("drive1", tape, false), (key1, true));
    }
    cluster.now_ms = t0 + YEAR_MS + DAY_MS;
    let (key2, reused) = cluster.write_key("drive1", tape, false);
    assert!(!reused && key2 != key1);
    cluster.now_ms = t0 + 2 * YEAR_MS;
    assert_eq!(cluster.key_state(&key1), KeyState::Deactivated);
    // Key 2 started a day into the second year, so it encrypts until a day after this.
    assert_eq!(cluster.key_state(&key2), KeyState::ProtectAndProcess);
    assert_eq!(
        cluster.state.key_state(&key2, t0 + 2 * YEAR_MS + DAY_MS),
        Some(KeyState::ProcessOnly)
    );
    assert_eq!(cluster.mount("drive1", &tape), vec![key1, key2]);
}

/// Setup: policy 10 days / 30 days; one tape.
/// Action: the seed's eight-step data unit sequence, then a write from BOT.
/// Expect: No key → Normal → Needs rekey → Normal → Needs rekey → (deactivations) →
/// Shredded → Normal, with the pulse recording each change that time brings. (SPEC O6)
#[test]
fn o6_eight_step_data_unit_sequence_to_shredded_and_back() {
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    let t0 = cluster.now_ms;
    let unit = cluster.create_data_unit("drive1", "VOL008");
    assert_eq!(cluster.unit_state(&unit), DataUnitState::NoKey);
    let (key1, _) = cluster.write_key("drive1", unit, true);
    assert_eq!(cluster.unit_state(&unit), DataUnitState::Normal);

    cluster.now_ms = t0 + 10 * DAY_MS;
    assert_eq!(
        cluster.pulse(),
        vec![
            AuditWhat::KeyStateChanged {
                key_id: key1,
                from: KeyState::ProtectAndProcess,
                to: KeyState::ProcessOnly,
                effective_at_ms: t0 + 10 * DAY_MS
            },
            AuditWhat::DataUnitStateChanged {
                data_unit: unit,
                from: DataUnitState::Normal,
                to: DataUnitState::NeedsRekey
            },
        ]
    );

    cluster.now_ms = t0 + 12 * DAY_MS;
    let (key2, _) = cluster.write_key("drive1", unit, false);
    assert_eq!(cluster.unit_state(&unit), DataUnitState::Normal);
    cluster.now_ms = t0 + 22 * DAY_MS;
    cluster.pulse();
    assert_eq!(cluster.unit_state(&unit), DataUnitState::NeedsRekey);

    cluster.now_ms = t0 + 30 * DAY_MS;
    assert!(cluster.pulse().contains(&AuditWhat::KeyStateChanged {
        key_id: key1,
        from: KeyState::ProcessOnly,
        to: KeyState::Deactivated,
        effective_at_ms: t0 + 30 * DAY_MS
    }));
    cluster.now_ms = t0 + 42 * DAY_MS;
    cluster.pulse();
    assert_eq!(cluster.key_state(&key2), KeyState::Deactivated);
    assert_eq!(cluster.state.next_transition_ms(), None, "nothing left for time to change");

    cluster.ok(op(), Command::DestroyKeys { keys: vec![key1, key2] });
    assert_eq!(cluster.unit_state(&unit), DataUnitState::Shredded);
    assert!(cluster.mount("drive1", &unit).is_empty());

    let append = cluster
        .apply(agent("drive1"), Command::AssignWriteKey { data_unit: unit, from_bot: false });
    assert_eq!(append, Err(statemachine::Reject::DataUnitShredded { data_unit: unit }));
    let (key3, _) = cluster.write_key("drive1", unit, true);
    assert_eq!(cluster.unit_state(&unit), DataUnitState::Normal);
    assert_eq!(cluster.mount("drive1", &unit), vec![key3]);
}

/// Setup: a tape with a process-only key 1 and a protect-and-process key 2.
/// Action: a StorageTek drive writes from BOT (disassociate, then write).
/// Expect: key 1 no longer in use or sent, still listed; key 2 reused. (SPEC O6 "Recycling")
#[test]
fn o6_recycling_write_from_bot_disassociates_keys_not_protect_and_process() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    let unit = cluster.create_data_unit("drive1", "VOL100");
    let (key1, _) = cluster.write_key("drive1", unit, true);
    cluster.advance(11 * DAY_MS);
    let (key2, _) = cluster.write_key("drive1", unit, false);
    cluster.advance(DAY_MS);

    let reply = cluster.ok(agent("drive1"), Command::DisassociateKeysOnBot { data_unit: unit });
    assert_eq!(reply, Reply::KeysDisassociated { count: 1 });
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::KeysDisassociated { data_unit: unit, count: 1 }]
    );
    assert_eq!(cluster.write_key("drive1", unit, true), (key2, true));
    assert_eq!(cluster.mount("drive1", &unit), vec![key2]);
    let stored = cluster.state.data_unit(&unit).expect("unit");
    assert_eq!(stored.keys.len(), 2, "a disassociated key stays listed");
    assert!(!stored.association(&key1).expect("listed").in_use);
    assert!(stored.association(&key2).expect("listed").in_use);
}

/// Setup: a KMS 1.x key imported and read through two tapes, so both use it.
/// Action: write from BOT on tape A.
/// Expect: only tape A stops using the key; tape B still gets it. (SPEC O6, O8)
#[test]
fn o6_recycling_shared_key_only_mounted_unit_is_affected() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    let legacy = import_one_legacy_key(&mut cluster);
    let tape_a = cluster.create_data_unit("drive1", "OLD001");
    let tape_b = cluster.create_data_unit("drive1", "OLD002");
    for tape in [tape_a, tape_b] {
        let command = Command::AssociateKeyForRead {
            key_id: legacy,
            data_unit: Some(tape),
            external_tag: String::new(),
        };
        cluster.ok(agent("drive1"), command);
    }
    cluster.ok(agent("drive1"), Command::DisassociateKeysOnBot { data_unit: tape_a });
    assert!(cluster.mount("drive1", &tape_a).is_empty());
    assert_eq!(cluster.mount("drive1", &tape_b), vec![legacy]);
}

pub fn import_one_legacy_key(cluster: &mut TestCluster) -> statemachine::KeyId {
    let id = statemachine::KeyId([0x42; 30]);
    let key = statemachine::command::Legacy1xKey {
        id,
        material: fake_wrap([0x11; 32]),
        check_value: statemachine::key::KeyCheckValue([0x11; 16]),
        description: "payroll".into(),
    };
    cluster.ok(co(), Command::Import1xKeys { group: "std".into(), keys: vec![key] });
    id
}

/// Setup: an LTO4 drive (seed appendix): it never prefetches and never disassociates.
/// Action: mount, read a key on demand, write after each reposition, write from BOT.
/// Expect: the current key while protect-and-process, a new one after; every key stays in use.
/// (SPEC A4)
#[test]
fn a4_lto4_write_after_reposition_and_no_disassociation() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    let unit = cluster.create_data_unit("drive1", "LTO001");
    let (key1, _) = cluster.write_key("drive1", unit, true);
    // A read after a remount: the key is fetched by ID when the data needs it.
    cluster.advance(DAY_MS);
    let on_demand =
        cluster.state.key_for_agent("drive1", &key1, cluster.now_ms).expect("on demand");
    assert!(on_demand.associated);
    // Each backup job repositions and asks for a write key: the same one while P&P.
    assert_eq!(cluster.write_key("drive1", unit, false), (key1, true));
    cluster.advance(10 * DAY_MS);
    let (key2, reused) = cluster.write_key("drive1", unit, false);
    assert!(!reused);
    // Write from BOT without a disassociate request: both keys remain in use.
    cluster.advance(11 * DAY_MS);
    let (key3, _) = cluster.write_key("drive1", unit, true);
    assert_eq!(cluster.mount("drive1", &unit), vec![key1, key2, key3]);
}

/// Setup: tape written by drive1 (group `std`); drive2 can access only group `other`.
/// Action: drive2 mounts it, appends, then writes from BOT.
/// Expect: no keys sent; the append is refused; the write from BOT gets a new key in
/// drive2's default group and the old key is taken out of use. (SPEC A3)
#[test]
fn a3_agent_uses_only_accessible_groups_except_write_from_bot() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.policy_and_group("other", 10 * DAY_MS, 54 * WEEK_MS);
    cluster.enrolled_agent("drive2", &["other"]);
    let unit = cluster.create_data_unit("drive1", "VOL200");
    let (key1, _) = cluster.write_key("drive1", unit, true);

    assert!(cluster.mount("drive2", &unit).is_empty());
    let fetched = cluster.state.key_for_agent("drive2", &key1, cluster.now_ms);
    assert_eq!(fetched, Err(statemachine::Reject::AgentCannotAccessKey { key_id: key1 }));
    let append = cluster
        .apply(agent("drive2"), Command::AssignWriteKey { data_unit: unit, from_bot: false });
    assert_eq!(
        append,
        Err(statemachine::Reject::AgentCannotAccessWriteKey { data_unit: unit, key_id: key1 })
    );

    let (key2, reused) = cluster.write_key("drive2", unit, true);
    assert!(!reused);
    let group = cluster.state.key(&key2).and_then(|key| key.group);
    assert_eq!(group, cluster.state.group_by_name("other").map(|g| g.id));
    assert_eq!(cluster.mount("drive2", &unit), vec![key2]);
    assert!(
        !cluster.state.data_unit(&unit).expect("unit").association(&key1).expect("listed").in_use
    );
}

/// Setup: a single KMA whose pool was backed up; later (after a restore) the pool is
/// quarantined. A drive asks for a key ID that is in the pool but assigned to no data unit.
/// Action: `AssociateKeyForRead` without a data unit (seed Example 4).
/// Expect: a new data unit, the key associated with it, Process-only, and sent to the drive;
/// quarantined keys are never drawn as new write keys. (SPEC A5)
#[test]
fn a5_example_4_unassigned_pool_key_recovered_by_id() {
    let mut cluster = TestCluster::single();
    cluster.policy_and_group("std", 10 * DAY_MS, 54 * WEEK_MS);
    cluster.enrolled_agent("drive1", &["std"]);
    let pool = cluster.fill_pool(3);
    let covers_index = cluster.index;
    let backup = Command::RecordBackupBeforeFormat3 {
        kind: statemachine::backup::BackupKind::Database,
        kma: "kma1".into(),
        file_name: "kms-2026-01-01.bak".into(),
        covers_index,
    };
    cluster.ok(bo(), backup);
    cluster.ok(statemachine::Actor::System, Command::QuarantineKeyPool);
    let write = cluster.create_data_unit("drive1", "NEW001");
    let refused = cluster
        .apply(agent("drive1"), Command::AssignWriteKey { data_unit: write, from_bot: true });
    assert_eq!(
        refused,
        Err(statemachine::Reject::KeyPoolEmpty),
        "quarantined keys are not handed out"
    );

    let lost = pool[1];
    let reply = cluster.ok(
        agent("drive1"),
        Command::AssociateKeyForRead {
            key_id: lost,
            data_unit: None,
            external_tag: "LOST01".into(),
        },
    );
    let Reply::KeyAssociated { data_unit, key_id } = reply else {
        panic!("expected an association")
    };
    assert_eq!(key_id, lost);
    assert_eq!(cluster.key_state(&lost), KeyState::ProcessOnly);
    assert_eq!(cluster.mount("drive1", &data_unit), vec![lost]);
    assert_eq!(cluster.state.data_units_by_tag("LOST01"), vec![data_unit]);
    assert_eq!(cluster.unit_state(&data_unit), DataUnitState::NeedsRekey);
}

/// Setup: a drive sends a write-key request with a request ID; the reply is lost.
/// Action: the drive retries with the same ID, then reuses the ID for another command.
/// Expect: the retry returns the first answer and assigns nothing; the reuse is refused; a
/// retry after a retryable refusal (empty pool) runs again. (SPEC A6)
#[test]
fn a6_retried_request_never_assigns_a_second_key() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    let unit = cluster.create_data_unit("drive1", "VOL300");
    let mut envelope = cluster
        .envelope(agent("drive1"), Command::AssignWriteKey { data_unit: unit, from_bot: true });
    envelope.request_id = Some(statemachine::RequestId { client: 77, seq: 1 });
    let first = cluster.apply_envelope(&envelope).result;
    let pool_after_first = cluster.state.pool_size();
    let retry = cluster.apply_envelope(&envelope);
    assert_eq!(retry.result, first);
    assert_eq!(cluster.state.pool_size(), pool_after_first, "no second key drawn");
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::RequestReplayed { request_id: envelope.request_id.unwrap() }]
    );
    assert_eq!(cluster.state.data_unit(&unit).expect("unit").keys.len(), 1);

    let mut reuse =
        cluster.envelope(agent("drive1"), Command::DisassociateKeysOnBot { data_unit: unit });
    reuse.request_id = envelope.request_id;
    let refused = cluster.apply_envelope(&reuse).result;
    assert_eq!(refused, Err(statemachine::Reject::ExistsWithDifferentBody { client: 77, seq: 1 }));
}

/// Setup: an empty pool. Action: a write-key request fails, the pool refills, the same request
/// is retried. Expect: the retry succeeds: retryable refusals are not remembered. (SPEC A6)
#[test]
fn a6_retry_after_empty_pool_runs_again() {
    let mut cluster = TestCluster::multi();
    cluster.policy_and_group("std", 10 * DAY_MS, 54 * WEEK_MS);
    cluster.enrolled_agent("drive1", &["std"]);
    let unit = cluster.create_data_unit("drive1", "VOL301");
    let mut envelope = cluster
        .envelope(agent("drive1"), Command::AssignWriteKey { data_unit: unit, from_bot: true });
    envelope.request_id = Some(statemachine::RequestId { client: 5, seq: 9 });
    assert_eq!(cluster.apply_envelope(&envelope).result, Err(statemachine::Reject::KeyPoolEmpty));
    cluster.fill_pool(1);
    assert!(matches!(
        cluster.apply_envelope(&envelope).result,
        Ok(Reply::WriteKey { reused: false, .. })
    ));
}

/// Regression found by the property test: drive2 writes a tape with a key of a group drive1
/// cannot access; drive1 writes from BOT (the old key is retired, SPEC A3); drive2 then asks
/// for the old key by ID for that tape. Expect: the key is readable but stays out of use, so
/// the tape keeps one protect-and-process key in use.
#[test]
fn a3_a5_retired_write_key_asked_by_id_stays_out_of_use() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.policy_and_group("other", 10 * DAY_MS, 54 * WEEK_MS);
    cluster.enrolled_agent("drive2", &["other", "std"]);
    let unit = cluster.create_data_unit("drive1", "VOL400");
    let (old, _) = cluster.write_key("drive2", unit, false);
    let (new, _) = cluster.write_key("drive1", unit, true);
    let read = Command::AssociateKeyForRead {
        key_id: old,
        data_unit: Some(unit),
        external_tag: String::new(),
    };
    cluster.ok(agent("drive2"), read);
    assert_eq!(cluster.mount("drive2", &unit), vec![new]);
    assert_eq!(cluster.write_key("drive2", unit, false), (new, true));
}
