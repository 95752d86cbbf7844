//! Importing a KMS 1.2 key export file (SPEC M1).

mod support;

use statemachine::audit::AuditWhat;
use statemachine::command::{Command, Legacy1xKey};
use statemachine::key::{Activation, KeyCheckValue, KeyOrigin, KeyState};
use statemachine::migration::{parse_1x_key_file, LineProblem, Parse1xError};
use statemachine::{KeyId, Reject, Reply};
use support::*;

const ID_A: &str = "0001aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_B: &str = "0002bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const VALUE_1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const VALUE_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn bad_line(text: &str) -> (usize, LineProblem) {
    match parse_1x_key_file(text) {
        Err(Parse1xError::BadLine { line, problem }) => (line, problem.0),
        Err(other) => panic!("expected a bad line, got {other:?}"),
        Ok(_) => panic!("expected a bad line, the file parsed"),
    }
}

/// Each malformed line is reported with its number and what is wrong. (SPEC M1)
#[test]
fn m1_malformed_lines_and_wrong_lengths_are_named() {
    let good = format!("{ID_A}, {VALUE_1}, first");
    assert_eq!(bad_line(&format!("{good}\n{ID_B}\n")), (2, LineProblem::MissingValue));
    assert_eq!(
        bad_line(&format!("{}, {VALUE_1}", &ID_A[2..])),
        (1, LineProblem::IdLength { found: 62 })
    );
    assert_eq!(
        bad_line(&format!("{ID_A}, {}", &VALUE_1[1..])),
        (1, LineProblem::ValueLength { found: 63 })
    );
    let not_hex = format!("{}zz, {VALUE_1}", &ID_A[..62]);
    assert_eq!(bad_line(&not_hex), (1, LineProblem::IdNotHex));
    assert_eq!(bad_line(&format!("{ID_A}, {}xy", &VALUE_1[..62])), (1, LineProblem::ValueNotHex));
    assert_eq!(parse_1x_key_file("\n \n").err(), Some(Parse1xError::NoKeys));
    let message = parse_1x_key_file(&format!("{good}\n{ID_B}")).err().expect("bad").to_string();
    assert_eq!(
        message,
        "line 2: expected '<key id>, <key value>[, <description>]'; nothing was imported, fix the \
         file and run the import again"
    );
}

/// The first 4 hex digits of each ID are stripped; blank lines are skipped; a description may
/// contain commas. (SPEC M1)
#[test]
fn m1_ids_are_stripped_to_30_bytes() {
    let text = format!("{ID_A}, {VALUE_1}, payroll, 2008\n\n{ID_B},{VALUE_2}\n");
    let keys = parse_1x_key_file(&text).expect("valid file");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].id, KeyId([0xaa; 30]));
    assert_eq!(keys[1].id, KeyId([0xbb; 30]));
    assert_eq!(keys[0].description, "payroll, 2008");
    assert_eq!(*keys[1].value, [0x22; 32]);
}

/// What the node proposes for a parsed file: values wrapped (here by the test stand-in) and
/// a check value standing for each value.
fn legacy_keys(text: &str) -> Vec<Legacy1xKey> {
    parse_1x_key_file(text)
        .expect("valid file")
        .into_iter()
        .map(|key| {
            let mut check = [0u8; 16];
            check.copy_from_slice(&key.value[..16]);
            Legacy1xKey {
                id: key.id,
                material: fake_wrap(*key.value),
                check_value: KeyCheckValue(check),
                description: key.description,
            }
        })
        .collect()
}

fn import(cluster: &mut TestCluster, text: &str) -> Result<Reply, Reject> {
    cluster.apply(co(), Command::Import1xKeys { group: "legacy".into(), keys: legacy_keys(text) })
}

/// Setup: a group whose policy allows import (cryptoperiod 2 years).
/// Action: import two keys, then the same file again.
/// Expect: Process-only keys with created = activation = encryption end = now, deactivation a
/// cryptoperiod later; the second import counts both as duplicates. (SPEC M1)
#[test]
fn m1_import_is_process_only_and_duplicates_are_counted() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.policy_and_group("legacy", DAY_MS, 2 * YEAR_MS);
    let now = cluster.now_ms;
    let text = format!("{ID_A}, {VALUE_1}\n{ID_B}, {VALUE_2}\n");
    assert_eq!(
        import(&mut cluster, &text),
        Ok(Reply::Imported { keys: 2, duplicates: 0, data_units: 0 })
    );
    let key = cluster.state.key(&KeyId([0xaa; 30])).expect("imported");
    assert_eq!(key.origin, KeyOrigin::Imported1x);
    assert_eq!(key.created_at_ms, now);
    let activation = Activation {
        activated_at_ms: now,
        encryption_ends_at_ms: now,
        deactivates_at_ms: now + 2 * YEAR_MS,
    };
    assert_eq!(key.activation, Some(activation));
    assert_eq!(cluster.key_state(&KeyId([0xaa; 30])), KeyState::ProcessOnly);
    cluster.advance(DAY_MS);
    assert_eq!(
        import(&mut cluster, &text),
        Ok(Reply::Imported { keys: 0, duplicates: 2, data_units: 0 })
    );
}

/// Setup: one key already imported. Action: import a file whose last line has the same ID
/// with another value. Expect: the import aborts and nothing of the file is imported.
/// (SPEC M1: all or nothing)
#[test]
fn m1_mismatching_value_aborts_with_state_unchanged() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.policy_and_group("legacy", DAY_MS, 2 * YEAR_MS);
    import(&mut cluster, &format!("{ID_A}, {VALUE_1}")).expect("first import");
    let keys_before = cluster.state.keys().clone();
    let text = format!("{ID_B}, {VALUE_2}\n{ID_A}, {VALUE_2}\n");
    let refused = import(&mut cluster, &text);
    assert_eq!(refused, Err(Reject::ImportValueMismatch { key_id: KeyId([0xaa; 30]) }));
    assert_eq!(cluster.state.keys(), &keys_before);
    // The same ID twice in one file with two values is just as corrupt.
    let twice = format!("{ID_B}, {VALUE_1}\n{ID_B}, {VALUE_2}\n");
    assert_eq!(
        import(&mut cluster, &twice),
        Err(Reject::ImportValueMismatch { key_id: KeyId([0xbb; 30]) })
    );
    assert_eq!(cluster.state.keys(), &keys_before);
}

/// The destination group's policy must allow import. (SPEC M1, O1)
#[test]
fn m1_destination_policy_must_allow_import() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.ok(
        co(),
        Command::CreateKeyPolicy {
            name: "closed".into(),
            encryption_period_ms: DAY_MS,
            cryptoperiod_ms: YEAR_MS,
            allow_export: false,
            allow_import: false,
        },
    );
    cluster.ok(co(), Command::CreateKeyGroup { name: "legacy".into(), policy: "closed".into() });
    let refused = import(&mut cluster, &format!("{ID_A}, {VALUE_1}"));
    assert_eq!(refused, Err(Reject::PolicyForbidsImport { group: "legacy".into() }));
    cluster.ok(
        co(),
        Command::SetKeyPolicyFlags {
            name: "closed".into(),
            allow_export: false,
            allow_import: true,
        },
    );
    assert!(import(&mut cluster, &format!("{ID_A}, {VALUE_1}")).is_ok());
}

/// Setup: a 1.x key imported into a group drive1 may read. Action: drive1 reads it by key ID
/// for tape A (a new data unit tagged A), for tape A again, then for tape B (tagged B), and
/// through tape A's data unit by ID. Expect: A and B each get a data unit associated with the
/// key, A's read again makes no second one, the key's destroy preview lists both tapes, and
/// moving tape A's keys to another group names B as the ripple effect. (SPEC A5, O8, O9; seed
/// ch. 9)
#[test]
fn a5_every_tape_that_reads_a_1x_key_is_associated_and_previewed() {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.policy_and_group("legacy", DAY_MS, 2 * YEAR_MS);
    import(&mut cluster, &format!("{ID_A}, {VALUE_1}")).expect("imported");
    let grant = Command::AssignKeyGroupToAgent { agent: "drive1".into(), group: "legacy".into() };
    cluster.ok(co(), grant);
    let key_id = KeyId([0xaa; 30]);
    let read = |cluster: &mut TestCluster, data_unit, tag: &str| {
        let now = cluster.now_ms;
        let found = cluster.state.key_for_agent_read("drive1", &key_id, (data_unit, tag), now);
        if found.expect("readable").associated {
            return None;
        }
        let command = Command::AssociateKeyForRead { key_id, data_unit, external_tag: tag.into() };
        match cluster.ok(agent("drive1"), command) {
            Reply::KeyAssociated { data_unit, .. } => Some(data_unit),
            other => panic!("{other:?}"),
        }
    };
    let tape_a = read(&mut cluster, None, "TAPE-A").expect("tape A associated");
    assert_eq!(read(&mut cluster, None, "TAPE-A"), None, "tape A is known by its tag");
    assert_eq!(read(&mut cluster, Some(tape_a), ""), None, "and by its data unit");
    let tape_b = read(&mut cluster, None, "TAPE-B").expect("tape B associated too");
    assert_ne!(tape_a, tape_b);
    let key = cluster.state.key(&key_id).expect("key");
    assert_eq!(key.data_units.to_vec(), vec![tape_a, tape_b]);
    // Asked again with no data unit for tape A (a drive racing itself): the same one.
    let again =
        Command::AssociateKeyForRead { key_id, data_unit: None, external_tag: "TAPE-A".into() };
    let reply = cluster.ok(agent("drive1"), again);
    assert_eq!(reply, Reply::KeyAssociated { data_unit: tape_a, key_id });

    let preview = cluster.state.key_destroy_preview(&[key_id]).expect("preview");
    assert_eq!(preview.data_units, vec![tape_a, tape_b]);
    let now = cluster.now_ms;
    let group = cluster.state.group_change_preview(&[tape_a], "legacy", now).expect("preview");
    assert_eq!(group.shared_with_unselected, vec![tape_b], "the ripple effect");
}

/// The cluster at today's log format, with a group that allows import: where the KMA stages
/// 1.x imports in batches (issue 18 point 4).
fn staging_cluster() -> TestCluster {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.open_format(statemachine::format::LOG_FORMAT_MAX);
    cluster.policy_and_group("legacy", DAY_MS, 2 * YEAR_MS);
    cluster
}

fn stage(cluster: &mut TestCluster, import_id: u64, text: &str) -> Result<Reply, Reject> {
    let batch = cluster.state.staged_imports_1x().get(&import_id).map_or(0, |s| s.batches);
    let command = Command::StageImport1x {
        import_id,
        batch,
        group: "legacy".into(),
        requested_by: "co".into(),
        kma: "kma1".into(),
        keys: legacy_keys(text),
    };
    cluster.apply(statemachine::Actor::System, command)
}

fn commit(cluster: &mut TestCluster, import_id: u64, keys_received: u64) -> Result<Reply, Reject> {
    let command = Command::CommitImport1x { import_id, keys_received };
    cluster.apply(statemachine::Actor::System, command)
}

/// Setup: a cluster at log format 3. Action: a file staged in two batches (the second
/// repeating a key of the first), the state snapshotted and read back, then committed.
/// Expect: while staged, no key is visible and the snapshot carries the staged keys; the commit
/// makes both keys Process-only at once, counts the repeat as a duplicate, names the user in
/// the audit log and leaves nothing staged. (SPEC M1, issue 18 point 4)
#[test]
fn m1_a_staged_import_is_invisible_until_one_commit_makes_it_whole() {
    let mut cluster = staging_cluster();
    let keys_before = cluster.state.keys().len();
    let staged = stage(&mut cluster, 7, &format!("{ID_A}, {VALUE_1}"));
    assert_eq!(staged, Ok(Reply::Staged1x { keys_received: 1, duplicates: 0 }));
    let staged = stage(&mut cluster, 7, &format!("{ID_B}, {VALUE_2}\n{ID_A}, {VALUE_1}"));
    assert_eq!(staged, Ok(Reply::Staged1x { keys_received: 3, duplicates: 1 }));
    // The second batch again (its answer was lost): answered, not staged twice.
    let again = Command::StageImport1x {
        import_id: 7,
        batch: 1,
        group: "legacy".into(),
        requested_by: "co".into(),
        kma: "kma1".into(),
        keys: legacy_keys(&format!("{ID_B}, {VALUE_2}\n{ID_A}, {VALUE_1}")),
    };
    let again = cluster.apply(statemachine::Actor::System, again);
    assert_eq!(again, Ok(Reply::Staged1x { keys_received: 3, duplicates: 1 }));
    assert_eq!(cluster.state.keys().len(), keys_before, "nothing visible while staged");
    assert!(cluster.state.key(&KeyId([0xaa; 30])).is_none());
    assert_eq!(cluster.state.staged_keys_1x(7).count(), 2);

    let read_back = statemachine::codec::decode_snapshot(&cluster.snapshot()).expect("snapshot");
    assert_eq!(read_back, cluster.state, "a snapshot carries the staged import");

    assert_eq!(
        commit(&mut cluster, 7, 2),
        Err(Reject::ImportIncomplete { import_id: 7, staged: 3, expected: 2 })
    );
    let committed = commit(&mut cluster, 7, 3);
    assert_eq!(committed, Ok(Reply::Imported { keys: 2, duplicates: 1, data_units: 0 }));
    assert_eq!(cluster.key_state(&KeyId([0xaa; 30])), KeyState::ProcessOnly);
    assert_eq!(cluster.key_state(&KeyId([0xbb; 30])), KeyState::ProcessOnly);
    assert!(cluster.state.staged_imports_1x().is_empty());
    assert_eq!(cluster.state.staged_keys_1x(7).count(), 0);
    let imported = cluster.last_events().into_iter().any(|event| {
        matches!(event, AuditWhat::Keys1xImported { requested_by, count: 2, duplicates: 1, .. }
            if requested_by == "co")
    });
    assert!(imported, "the audit log names who imported: {:?}", cluster.last_events());
    assert_eq!(commit(&mut cluster, 7, 3), Err(Reject::UnknownImport { import_id: 7 }));
}

/// Setup: a key imported before, and a second file staged. Action: a later batch names that
/// key with another value; the KMA abandons the import. Also: the same file imported again.
/// Expect: the batch is refused naming the key, the abandon drops every staged key, nothing of
/// the second file is visible; a file whose every key is held is refused at its commit.
/// (SPEC M1: all or nothing, duplicates, conflicts)
#[test]
fn m1_a_conflicting_batch_is_refused_and_the_abandoned_import_leaves_nothing() {
    let mut cluster = staging_cluster();
    stage(&mut cluster, 1, &format!("{ID_A}, {VALUE_1}")).expect("staged");
    commit(&mut cluster, 1, 1).expect("imported");
    let keys_before = cluster.state.keys().clone();
    stage(&mut cluster, 2, &format!("{ID_B}, {VALUE_2}")).expect("staged");
    let conflict = stage(&mut cluster, 2, &format!("{ID_A}, {VALUE_2}"));
    assert_eq!(conflict, Err(Reject::ImportValueMismatch { key_id: KeyId([0xaa; 30]) }));
    let abandon = Command::AbandonImport1x { import_id: 2, reason: "line 2 conflicts".into() };
    cluster.ok(statemachine::Actor::System, abandon);
    assert!(cluster.state.staged_imports_1x().is_empty());
    assert_eq!(cluster.state.staged_keys_1x(2).count(), 0);
    assert_eq!(cluster.state.keys(), &keys_before, "nothing of the file is visible");

    // The first file again: every key held already.
    stage(&mut cluster, 3, &format!("{ID_A}, {VALUE_1}")).expect("staged");
    assert_eq!(commit(&mut cluster, 3, 1), Err(Reject::ImportAllDuplicates { keys: 1 }));
}

/// Setup: a staged import whose KMA went quiet. Action: pulses before and after an hour
/// without a batch. Expect: the first keeps it, the second drops it with an audit event, and
/// its keys never became visible. A user may not stage: only a KMA wraps keys. (SPEC M1, S1)
#[test]
fn m1_an_idle_staged_import_expires_and_users_cannot_stage() {
    let mut cluster = staging_cluster();
    stage(&mut cluster, 9, &format!("{ID_A}, {VALUE_1}")).expect("staged");
    cluster.advance(statemachine::limits::IMPORT_1X_IDLE_MS - 1);
    cluster.pulse();
    assert_eq!(cluster.state.staged_imports_1x().len(), 1);
    cluster.advance(1);
    let events = cluster.pulse();
    let expired = events.iter().any(|event| {
        matches!(event, AuditWhat::Import1xAbandoned { import_id: 9, expired: true, .. })
    });
    assert!(expired, "{events:?}");
    assert!(cluster.state.staged_imports_1x().is_empty());
    assert!(cluster.state.key(&KeyId([0xaa; 30])).is_none());

    let by_user = Command::StageImport1x {
        import_id: 10,
        batch: 0,
        group: "legacy".into(),
        requested_by: "co".into(),
        kma: "kma1".into(),
        keys: legacy_keys(&format!("{ID_A}, {VALUE_1}")),
    };
    let refused = cluster.apply(co(), by_user);
    assert!(matches!(refused, Err(Reject::WrongIssuer { .. })), "{refused:?}");
}
