//! Partner key transfer in the state machine (SPEC T1–T4; issue 18 points 1–3): the rules a KMA
//! applies around the files it writes and reads. The files themselves are security-core's; the
//! whole path through running clusters is in node's tests.

mod support;

use statemachine::audit::{AuditWhat, PartnerChange};
use statemachine::command::{
    TransferDirection, TransferExport, TransferImport, TransferredDataUnit, TransferredKey,
};
use statemachine::key::{Activation, KeyCheckValue};
use statemachine::quorum::QuorumOperation;
use statemachine::{Actor, ClusterId, Command, DataUnitId, KeyId, Reject, Reply};
use support::*;

/// A cluster at today's log format with a transfer key pair, drive1 writing tape VOL001 in
/// group `std` (export and import allowed), and partner `west` assigned `std` both ways.
fn with_partner() -> (TestCluster, DataUnitId, KeyId) {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.open_format(statemachine::format::LOG_FORMAT_MAX);
    let pair =
        Command::SetTransferKeyPair { public_key: vec![6; 64], wrapped_private_key: vec![7; 48] };
    cluster.ok(Actor::System, pair);
    create_partner(&mut cluster, "west", 8);
    for direction in [TransferDirection::Export, TransferDirection::Import] {
        let assign = Command::AssignKeyGroupToPartner {
            partner: "west".into(),
            group: "std".into(),
            direction,
        };
        cluster.ok(co(), assign);
    }
    let unit = cluster.create_data_unit("drive1", "VOL001");
    let (key, _) = cluster.write_key("drive1", unit, true);
    (cluster, unit, key)
}

/// The quorum operation that records (or re-keys) a partner, approved by two members.
fn create_partner(cluster: &mut TestCluster, name: &str, byte: u8) -> Vec<AuditWhat> {
    let operation =
        QuorumOperation::CreateTransferPartner { name: name.into(), public_key: vec![byte; 64] };
    let Reply::QuorumOperationStarted { id, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q2".into() });
    cluster.last_events()
}

/// Setup: partner `west` with groups assigned. Action: the quorum records new keys for it;
/// keys of the wrong length; a Security Officer disables, then enables it; a second key pair.
/// Expect: the re-key keeps its groups and is audited; a short key is refused; the partner's
/// state is audited each time; the first key pair stays. (SPEC T1, T2, S4)
#[test]
fn t2_a_partner_is_rekeyed_by_the_quorum_and_disabled_by_a_security_officer() {
    let (mut cluster, _, _) = with_partner();
    let events = create_partner(&mut cluster, "west", 9);
    assert!(
        events.contains(&AuditWhat::TransferPartnerChanged {
            name: "west".into(),
            change: PartnerChange::Rekeyed
        }),
        "{events:?}"
    );
    let west = cluster.state.meta().partners.get("west").cloned().expect("west");
    assert_eq!(west.public_key, vec![9; 64]);
    assert_eq!(west.export_groups.len(), 1, "the groups stay");
    let short =
        QuorumOperation::CreateTransferPartner { name: "east".into(), public_key: vec![1; 32] };
    let refused =
        cluster.apply(so(), Command::StartQuorumOperation { operation: short, ttl_ms: None });
    assert!(matches!(refused, Err(Reject::InvalidSetting { .. })), "{refused:?}");

    let disable = Command::SetTransferPartnerEnabled { name: "west".into(), enabled: false };
    assert!(matches!(
        cluster.apply(co(), disable.clone()),
        Err(Reject::AccessNeedsRole { .. } | Reject::MissingRole { .. })
    ));
    cluster.ok(so(), disable);
    assert!(cluster.state.partner_disabled("west"));
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::TransferPartnerChanged {
            name: "west".into(),
            change: PartnerChange::Enabled { enabled: false }
        }]
    );
    cluster.ok(so(), Command::SetTransferPartnerEnabled { name: "west".into(), enabled: true });
    assert!(!cluster.state.partner_disabled("west"));

    let again =
        Command::SetTransferKeyPair { public_key: vec![5; 64], wrapped_private_key: vec![7; 48] };
    assert_eq!(cluster.apply(Actor::System, again), Err(Reject::TransferKeyPairExists));
    let same =
        Command::SetTransferKeyPair { public_key: vec![6; 64], wrapped_private_key: vec![7; 48] };
    assert_eq!(cluster.apply(Actor::System, same), Ok(Reply::Done));
}

fn export(unit: DataUnitId, keys: Vec<KeyId>) -> Command {
    Command::RecordTransferExport(TransferExport {
        partner: "west".into(),
        requested_by: "op".into(),
        file_id: [1; 16],
        data_units: vec![unit],
        keys,
    })
}

/// Setup: tape VOL001 with its key in `std`, assigned to `west` for export. Action: an export
/// of it; one that names other keys than the state selects; one after the policy stopped
/// allowing export; one to the partner disabled; one of a tape with no key.
/// Expect: the first recorded with who, which keys and to whom; the others refused, each
/// refusal in the audit log with its outcome. (SPEC T3, S5)
#[test]
fn t3_an_export_takes_the_seeds_keys_and_is_refused_when_their_policy_forbids_it() {
    let (mut cluster, unit, key) = with_partner();
    let now = cluster.now_ms;
    assert_eq!(cluster.state.export_to_partner("west", &[unit], now), Ok((vec![key], vec![unit])));
    let reply = cluster.ok(Actor::System, export(unit, vec![key]));
    assert_eq!(reply, Reply::Exported { keys: vec![key], data_units: vec![unit] });
    let recorded = AuditWhat::KeysExportedTo {
        partner: "west".into(),
        requested_by: "op".into(),
        file_id: [1; 16],
        keys: vec![key],
        data_units: 1,
    };
    assert!(cluster.last_events().contains(&recorded), "{:?}", cluster.last_events());
    let other = KeyId([0x31; 30]);
    let changed = cluster.apply(Actor::System, export(unit, vec![other]));
    assert_eq!(changed, Err(Reject::ExportSelectionChanged { partner: "west".into() }));

    let forbid =
        Command::SetKeyPolicyFlags { name: "std".into(), allow_export: false, allow_import: true };
    cluster.ok(co(), forbid);
    let refused = cluster.apply(Actor::System, export(unit, vec![key]));
    assert_eq!(refused, Err(Reject::PolicyForbidsExport { group: "std".into() }));
    let audited = cluster.last.as_ref().expect("applied").events.first().map(|e| e.what.clone());
    let code = Reject::PolicyForbidsExport { group: "std".into() }.code();
    let refusal_audited = matches!(audited, Some(AuditWhat::Command { outcome: statemachine::Outcome::Rejected { code: c }, .. }) if c == code);
    assert!(refusal_audited, "the refused export is in the audit log: {audited:?}");
    let allow =
        Command::SetKeyPolicyFlags { name: "std".into(), allow_export: true, allow_import: true };
    cluster.ok(co(), allow);

    cluster.ok(so(), Command::SetTransferPartnerEnabled { name: "west".into(), enabled: false });
    let disabled = cluster.apply(Actor::System, export(unit, vec![key]));
    assert_eq!(disabled, Err(Reject::PartnerDisabled { name: "west".into() }));
    cluster.ok(so(), Command::SetTransferPartnerEnabled { name: "west".into(), enabled: true });
    let empty = cluster.create_data_unit("drive1", "VOL009");
    assert_eq!(
        cluster.state.export_to_partner("west", &[empty], now),
        Err(Reject::NothingSelected)
    );
}

fn transferred(value: u8) -> TransferredDataUnit {
    let now = START_MS;
    TransferredDataUnit {
        id: DataUnitId { cluster_id: ClusterId(99), serial: 1 },
        external_tag: "WEST-001".into(),
        keys: vec![TransferredKey {
            id: KeyId([0x99; 30]),
            material: fake_wrap([value; 32]),
            check_value: KeyCheckValue([value; 16]),
            created_at_ms: now,
            activation: Activation {
                activated_at_ms: now,
                encryption_ends_at_ms: now + DAY_MS,
                deactivates_at_ms: now + YEAR_MS,
            },
            compromised_at_ms: None,
        }],
    }
}

fn import(file_id: u8, value: u8) -> Command {
    Command::ImportTransferFile(TransferImport {
        partner: "west".into(),
        group: "std".into(),
        requested_by: "op".into(),
        file_id: [file_id; 16],
        data_units: vec![transferred(value)],
    })
}

/// Setup: partner `west` with `std` assigned for import. Action: a file imported; the same file
/// again; another file with the same key and value; one with the key's value changed; one from
/// the partner disabled. Expect: the keys and data unit imported with the sender's IDs and the
/// import audited; the replay refused; the same value counted as a duplicate; another value
/// refusing the whole file; the disabled partner refused. (SPEC T4)
#[test]
fn t4_a_file_is_imported_once_with_its_ids_and_refused_whole_on_a_conflict() {
    let (mut cluster, _, _) = with_partner();
    let reply = cluster.ok(Actor::System, import(1, 0x44));
    assert_eq!(reply, Reply::Imported { keys: 1, duplicates: 0, data_units: 1 });
    let unit = cluster.state.data_units().get(&DataUnitId { cluster_id: ClusterId(99), serial: 1 });
    assert_eq!(unit.map(|u| u.external_tag.as_str()), Some("WEST-001"), "the sender's IDs stay");
    assert!(cluster.last_events().iter().any(
        |e| matches!(e, AuditWhat::KeysImportedFrom { partner, count: 1, .. } if partner == "west")
    ));
    let replay = cluster.apply(Actor::System, import(1, 0x44));
    assert!(matches!(replay, Err(Reject::TransferFileReplayed { .. })), "{replay:?}");
    assert_eq!(
        cluster.ok(Actor::System, import(2, 0x44)),
        Reply::Imported { keys: 0, duplicates: 1, data_units: 0 }
    );
    let before = cluster.state.keys().clone();
    let conflict = cluster.apply(Actor::System, import(3, 0x45));
    assert_eq!(conflict, Err(Reject::ImportValueMismatch { key_id: KeyId([0x99; 30]) }));
    assert_eq!(cluster.state.keys(), &before);
    cluster.ok(so(), Command::SetTransferPartnerEnabled { name: "west".into(), enabled: false });
    assert_eq!(
        cluster.apply(Actor::System, import(4, 0x44)),
        Err(Reject::PartnerDisabled { name: "west".into() })
    );
    let by_user = cluster.apply(op(), import(5, 0x44));
    assert!(matches!(by_user, Err(Reject::WrongIssuer { .. })), "{by_user:?}");
}
