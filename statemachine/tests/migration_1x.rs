//! Importing a KMS 1.2 key export file (SPEC M1).

mod support;

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
