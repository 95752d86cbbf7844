//! KMIP clients in the state machine (SPEC U5, issue 19): one lifecycle for KMIP keys and
//! drives' keys, the state mapping, Locate, attribute changes and the per-agent right to revoke
//! and destroy. The KMIP protocol itself is the `kmip` crate's and the listener's.

mod support;

use statemachine::audit::{AgentChange, KmipReadCount};
use statemachine::key::KeyState;
use statemachine::kmip::{KmipAttribute, KmipFilter, KmipState, KmipValue, KMIP_LOCATE_SCAN_MAX};
use statemachine::{Actor, AuditWhat, Command, DataUnitId, KeyId, Reject, Reply};
use support::*;

const ASI_DATA: &str = "123456789ABCDEF123456789123456789ABCDEF123456789ABCDEF1234000000";

/// A cluster at today's log format with drive1 in `std` (export and import allowed) and
/// library1, a KMIP client, in `std` as well; `other` is a group neither can reach.
fn cluster() -> TestCluster {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    cluster.open_format(statemachine::format::LOG_FORMAT_MAX);
    cluster.policy_and_group("other", DAY_MS, WEEK_MS);
    cluster.enrolled_agent("library1", &["std"]);
    cluster.enrolled_agent("stranger", &["other"]);
    cluster
}

fn create(
    cluster: &mut TestCluster,
    agent_id: &str,
    attributes: Vec<KmipAttribute>,
) -> (KeyId, DataUnitId) {
    match cluster.ok(agent(agent_id), Command::CreateKmipKey { usage_mask: 12, attributes }) {
        Reply::KmipKey { key_id, data_unit } => (key_id, data_unit),
        other => panic!("expected a KMIP key, got {other:?}"),
    }
}

fn kmip_state(cluster: &TestCluster, key_id: &KeyId) -> KmipState {
    let key = cluster.state.key(key_id).expect("key");
    cluster.state.kmip_state_at(key, cluster.now_ms)
}

fn locate(
    cluster: &TestCluster,
    agent_id: &str,
    filter: &KmipFilter,
) -> Result<Vec<KeyId>, Reject> {
    cluster.state.kmip_locate(agent_id, filter, (0, 100), KMIP_LOCATE_SCAN_MAX, cluster.now_ms)
}

fn by_asi() -> KmipFilter {
    KmipFilter {
        application_info: vec![("LIBRARY-LTO".into(), ASI_DATA.into())],
        ..KmipFilter::default()
    }
}

/// Setup: library1 in `std`. Action: a KMIP Create with the Tape Library profile's attributes
/// (TL-M-2). Expect: a pool key in library1's default group, Protect-and-process for O4 from
/// now (its first use) and Pre-Active for KMIP; a new data unit tagged with the barcode (the
/// Alternative Name); the object's attributes kept; the events of a drive's first write, then
/// the KMIP object's. (SPEC U5, O4, O5, O6)
#[test]
fn u5_a_kmip_create_draws_a_pool_key_into_a_data_unit_tagged_with_the_barcode() {
    let mut cluster = cluster();
    let (key_id, unit) = create(&mut cluster, "library1", kmip_sample_attributes());
    let key = cluster.state.key(&key_id).expect("key");
    assert_eq!(key.group, cluster.state.group_by_name("std").map(|g| g.id));
    assert_eq!(cluster.key_state(&key_id), KeyState::ProtectAndProcess);
    assert_eq!(kmip_state(&cluster, &key_id), KmipState::PreActive);
    assert_eq!(cluster.state.data_unit(&unit).expect("unit").external_tag, "XXA012A1");
    let object = cluster.state.kmip_object(&key_id).expect("a KMIP object");
    assert_eq!((object.owner.as_str(), object.usage_mask, object.revision), ("library1", 12, 1));
    assert_eq!(object.attributes, kmip_sample_attributes());
    let events = cluster.last_events();
    assert!(matches!(events[0], AuditWhat::DataUnitCreated { data_unit } if data_unit == unit));
    assert!(events.contains(&AuditWhat::KeyAssigned {
        key_id,
        data_unit: unit,
        group: key.group.expect("group"),
    }));
    assert_eq!(events.last(), Some(&AuditWhat::KmipObjectChanged { key_id, revision: 1 }));
}

/// Setup: a KMIP 1.0 library, which has no Alternative Name. Action: Create with `x-Barcode`.
/// Expect: the data unit is tagged with it, so `data-unit list --tag` finds the tape. (U2, U5)
#[test]
fn u5_x_barcode_tags_the_data_unit_for_kmip_1_0_and_1_1_libraries() {
    let mut cluster = cluster();
    let barcode = KmipAttribute::new("x-Barcode", KmipValue::Text("XXA012A9".into()));
    let (_, unit) = create(&mut cluster, "library1", vec![barcode]);
    assert_eq!(cluster.state.data_unit(&unit).expect("unit").external_tag, "XXA012A9");
}

/// Setup: a KMIP key Pre-Active. Action: Activate, then Activate again. Expect: Active in KMIP
/// (O4 unchanged: it was Protect-and-process already); the second is refused with the state.
#[test]
fn u5_activate_turns_pre_active_into_active_once() {
    let mut cluster = cluster();
    let (key_id, _) = create(&mut cluster, "library1", vec![]);
    cluster.advance(SECOND_MS);
    cluster.ok(agent("library1"), Command::ActivateKmipKey { key_id });
    assert_eq!(kmip_state(&cluster, &key_id), KmipState::Active);
    let object = cluster.state.kmip_object(&key_id).expect("object");
    assert_eq!((object.activated_at_ms, object.revision), (Some(cluster.now_ms), 2));
    assert_eq!(cluster.last_events(), [AuditWhat::KmipObjectChanged { key_id, revision: 2 }]);
    let again = cluster.apply(agent("library1"), Command::ActivateKmipKey { key_id });
    assert_eq!(again, Err(Reject::KmipWrongState { key_id, state: KeyState::ProtectAndProcess }));
}

/// Setup: KMIP keys made by library1 and one made by stranger (group `other`). Action: Locate
/// by Application Specific Information, by name, by a custom attribute, by state. Expect: each
/// finds library1's key for library1 and for drive1 (same group), never stranger's key, and
/// nothing for stranger, whose group holds none of them (KMIP facts §6 item 8: Locate filters
/// by access). (SPEC U5, A3, S1)
#[test]
fn u5_locate_finds_by_asi_name_custom_attribute_and_state_within_the_callers_groups() {
    let mut cluster = cluster();
    let (key_id, _) = create(&mut cluster, "library1", kmip_sample_attributes());
    let (stranger_key, _) = create(&mut cluster, "stranger", kmip_sample_attributes());
    let by_name =
        KmipFilter { names: vec!["AAAAAAA1A1AA12345678901234567".into()], ..KmipFilter::default() };
    let by_custom = KmipFilter {
        custom: vec![KmipAttribute::new("x-VendorAttribute2", KmipValue::Integer(7))],
        ..KmipFilter::default()
    };
    let by_state = KmipFilter { state: Some(KmipState::PreActive), ..KmipFilter::default() };
    for filter in [by_asi(), by_name, by_custom, by_state] {
        assert_eq!(locate(&cluster, "library1", &filter), Ok(vec![key_id]), "{filter:?}");
        assert_eq!(locate(&cluster, "drive1", &filter), Ok(vec![key_id]), "{filter:?}");
        assert_eq!(locate(&cluster, "stranger", &filter), Ok(vec![stranger_key]), "{filter:?}");
    }
    let active = KmipFilter { state: Some(KmipState::Active), ..KmipFilter::default() };
    assert_eq!(locate(&cluster, "library1", &active), Ok(vec![]));
    let wrong = KmipFilter { names: vec!["nobody".into()], ..by_asi() };
    assert_eq!(locate(&cluster, "library1", &wrong), Ok(vec![]));
    let unknown = locate(&cluster, "ghost", &by_asi());
    assert_eq!(unknown, Err(Reject::UnknownAgent { agent: "ghost".into() }));
}

/// Setup: three tapes of library1 under one ASI. Action: Locate pages of 2 from offsets 0
/// and 2. Expect: the keys in ID order, split across the pages, none twice. (SPEC U2)
#[test]
fn u2_locate_pages_through_matches_in_key_order() {
    let mut cluster = cluster();
    let mut keys: Vec<KeyId> =
        (0..3).map(|_| create(&mut cluster, "library1", kmip_sample_attributes()).0).collect();
    keys.sort();
    let page = |offset| {
        cluster.state.kmip_locate(
            "library1",
            &by_asi(),
            (offset, 2),
            KMIP_LOCATE_SCAN_MAX,
            cluster.now_ms,
        )
    };
    assert_eq!(page(0), Ok(keys[..2].to_vec()));
    assert_eq!(page(2), Ok(keys[2..].to_vec()));
}

/// Setup: a KMIP key at revision 1. Action: library1 replaces its attributes from revision 1
/// (a new ASI), then tries again from revision 1; drive1 with a bad attribute; stranger.
/// Expect: the first applies (revision 2, the index follows: the old ASI finds nothing, the new
/// one finds the key); the stale one, the unsettable one and the stranger are refused and
/// change nothing. (SPEC U5, A3)
#[test]
fn u5_attribute_changes_are_checked_against_their_revision_and_reindexed() {
    let mut cluster = cluster();
    let (key_id, _) = create(&mut cluster, "library1", kmip_sample_attributes());
    let moved = KmipAttribute::new(
        "Application Specific Information",
        KmipValue::ApplicationInfo { namespace: "LIBRARY-LTO".into(), data: "00FF".into() },
    );
    let change = |revision, attributes: Vec<KmipAttribute>| Command::SetKmipAttributes {
        key_id,
        revision,
        attributes,
    };
    cluster.ok(agent("library1"), change(1, vec![moved.clone()]));
    assert_eq!(locate(&cluster, "library1", &by_asi()), Ok(vec![]));
    let new_asi = KmipFilter {
        application_info: vec![("LIBRARY-LTO".into(), "00FF".into())],
        ..KmipFilter::default()
    };
    assert_eq!(locate(&cluster, "library1", &new_asi), Ok(vec![key_id]));
    let before = cluster.state.kmip_object(&key_id).cloned();
    let stale = cluster.apply(agent("library1"), change(1, vec![]));
    assert_eq!(stale, Err(Reject::KmipRevisionStale { key_id, revision: 1, current: 2 }));
    let state = KmipAttribute::new("State", KmipValue::Integer(2));
    let unsettable = cluster.apply(agent("drive1"), change(2, vec![state]));
    assert_eq!(unsettable, Err(Reject::KmipAttributeNotSettable { name: "State".into() }));
    let boolean = KmipAttribute::new("x-Flag", KmipValue::Name { value: "1".into(), name_type: 1 });
    let bad_shape = cluster.apply(agent("drive1"), change(2, vec![boolean]));
    assert_eq!(bad_shape, Err(Reject::KmipAttributeNotSettable { name: "x-Flag".into() }));
    let stranger = cluster.apply(agent("stranger"), change(2, vec![]));
    assert_eq!(stranger, Err(Reject::AgentCannotAccessKey { key_id }));
    assert_eq!(cluster.state.kmip_object(&key_id).cloned(), before);
}

/// Setup: an active KMIP key of library1, which has no right yet. Action: Revoke and Destroy;
/// a Security Officer grants the right; Destroy (Active); Revoke (not a compromise); Destroy.
/// Expect: without the right both are refused; with it Destroy of an Active key is refused
/// by O7, Revoke deactivates it now (KMIP Deactivated), and Destroy then succeeds (KMIP
/// Destroyed). The grant is audited as a change of the agent. (SPEC S1, O7, U5)
#[test]
fn o7_revoke_and_destroy_need_the_granted_right_and_destroy_still_needs_deactivated() {
    let mut cluster = cluster();
    let (key_id, _) = create(&mut cluster, "library1", vec![]);
    cluster.ok(agent("library1"), Command::ActivateKmipKey { key_id });
    let revoke = Command::RevokeKmipKey { key_id, compromised: false };
    let destroy = Command::DestroyKmipKey { key_id };
    let refused = Err(Reject::KmipRightNotGranted { agent: "library1".into() });
    assert_eq!(cluster.apply(agent("library1"), revoke.clone()), refused);
    assert_eq!(cluster.apply(agent("library1"), destroy.clone()), refused);

    let grant = Command::SetAgentKmipRights { agent: "library1".into(), revoke_and_destroy: true };
    cluster.ok(so(), grant);
    let change = AgentChange::KmipRights { revoke_and_destroy: true };
    assert_eq!(
        cluster.last_events(),
        [AuditWhat::AgentChanged { agent: "library1".into(), change }]
    );
    let active = cluster.apply(agent("library1"), destroy.clone());
    let state = KeyState::ProtectAndProcess;
    assert_eq!(active, Err(Reject::DestroyNeedsDeactivatedOrCompromised { key_id, state }));

    cluster.advance(SECOND_MS);
    cluster.ok(agent("library1"), revoke);
    assert_eq!(cluster.key_state(&key_id), KeyState::Deactivated);
    assert_eq!(kmip_state(&cluster, &key_id), KmipState::Deactivated);
    let activation = cluster.state.key(&key_id).and_then(|k| k.activation).expect("dates");
    assert_eq!(activation.deactivates_at_ms, cluster.now_ms);
    cluster.ok(agent("library1"), destroy);
    assert_eq!(kmip_state(&cluster, &key_id), KmipState::Destroyed);
    assert!(cluster.state.key(&key_id).expect("metadata kept").material.is_none());
}

/// Setup: a KMIP key; library1 granted the right. Action: Revoke with Key Compromise, then
/// Destroy; stranger revokes a key outside its groups; the right is withdrawn; library1 is
/// deleted. Expect: Compromised, then Destroyed Compromised; the stranger is refused for
/// access even with the right; a withdrawn right refuses again; a deleted agent's right
/// goes with it. (SPEC O4, O7, S1)
#[test]
fn o4_revoke_for_compromise_then_destroy_gives_destroyed_compromised() {
    let mut cluster = cluster();
    let (key_id, _) = create(&mut cluster, "library1", vec![]);
    for client in ["library1", "stranger"] {
        let grant = Command::SetAgentKmipRights { agent: client.into(), revoke_and_destroy: true };
        cluster.ok(so(), grant);
    }
    let compromise = Command::RevokeKmipKey { key_id, compromised: true };
    let stranger = cluster.apply(agent("stranger"), compromise.clone());
    assert_eq!(stranger, Err(Reject::AgentCannotAccessKey { key_id }));
    cluster.ok(agent("library1"), compromise);
    assert_eq!(kmip_state(&cluster, &key_id), KmipState::Compromised);
    cluster.ok(agent("library1"), Command::DestroyKmipKey { key_id });
    assert_eq!(kmip_state(&cluster, &key_id), KmipState::DestroyedCompromised);

    let withdraw =
        Command::SetAgentKmipRights { agent: "stranger".into(), revoke_and_destroy: false };
    cluster.ok(so(), withdraw);
    assert!(!cluster.state.meta().kmip_revokers.contains("stranger"));
    cluster.ok(op(), Command::DeleteAgent { id: "library1".into() });
    assert!(cluster.state.meta().kmip_revokers.is_empty());
}

/// Setup: library1, whose default group's policy allows import, and one that does not.
/// Action: Register a key value; Register into a group whose policy forbids import; Register
/// the same key ID again. Expect: the key is in the group, Protect-and-process, bound to a
/// tagged data unit, of origin RegisteredKmip; the forbidden one and the duplicate are
/// refused. (SPEC O1, U5)
#[test]
fn o1_register_honours_the_import_flag_of_the_group_policy() {
    let mut cluster = cluster();
    let key = kmip_sample_key();
    let register = Command::RegisterKmipKey {
        key: key.clone(),
        usage_mask: 12,
        attributes: kmip_sample_attributes(),
    };
    let Reply::KmipKey { key_id, data_unit } = cluster.ok(agent("library1"), register.clone())
    else {
        panic!("a KMIP key")
    };
    assert_eq!(key_id, key.id);
    let stored = cluster.state.key(&key_id).expect("key");
    assert_eq!(stored.origin, statemachine::key::KeyOrigin::RegisteredKmip);
    assert_eq!(stored.data_units.as_slice(), [data_unit]);
    assert_eq!(cluster.key_state(&key_id), KeyState::ProtectAndProcess);
    assert_eq!(cluster.state.data_unit(&data_unit).expect("unit").external_tag, "XXA012A1");
    assert_eq!(cluster.apply(agent("library1"), register), Err(Reject::KeyExists { key_id }));

    cluster.ok(
        co(),
        Command::CreateKeyPolicy {
            name: "closed".into(),
            encryption_period_ms: DAY_MS,
            cryptoperiod_ms: WEEK_MS,
            allow_export: false,
            allow_import: false,
        },
    );
    cluster.ok(co(), Command::CreateKeyGroup { name: "sealed".into(), policy: "closed".into() });
    cluster.enrolled_agent("library2", &["sealed"]);
    let other =
        Command::RegisterKmipKey { key: cluster.new_key(), usage_mask: 12, attributes: vec![] };
    let refused = cluster.apply(agent("library2"), other);
    assert_eq!(refused, Err(Reject::PolicyForbidsImport { group: "sealed".into() }));
}

/// Setup: a tape written by drive1 over the agent protocol. Action: read its KMIP state; try
/// to Activate it over KMIP. Expect: a drive's key is Active for KMIP (a drive used it), and
/// has no KMIP object to activate. (SPEC U5: one lifecycle behind both protocols)
#[test]
fn u5_a_drives_key_is_active_for_kmip_and_no_kmip_object() {
    let mut cluster = cluster();
    let unit = cluster.create_data_unit("drive1", "VOL001");
    let (key_id, _) = cluster.write_key("drive1", unit, true);
    assert_eq!(kmip_state(&cluster, &key_id), KmipState::Active);
    let activate = cluster.apply(agent("library1"), Command::ActivateKmipKey { key_id });
    assert_eq!(activate, Err(Reject::NotKmipObject { key_id }));
}

/// Setup: KMIP objects in the state. Action: a snapshot, decoded. Expect: the same state,
/// index included (Locate answers the same). (SPEC C7, "Serialization")
#[test]
fn c7_kmip_objects_survive_a_snapshot() {
    let mut cluster = cluster();
    let (key_id, _) = create(&mut cluster, "library1", kmip_sample_attributes());
    cluster.ok(
        so(),
        Command::SetAgentKmipRights { agent: "library1".into(), revoke_and_destroy: true },
    );
    let decoded = statemachine::codec::decode_snapshot(&cluster.snapshot()).expect("decodes");
    assert!(decoded == cluster.state);
    let found =
        decoded.kmip_locate("library1", &by_asi(), (0, 10), KMIP_LOCATE_SCAN_MAX, cluster.now_ms);
    assert_eq!(found, Ok(vec![key_id]));
}

/// Setup: a KMA's count of KMIP reads. Action: record it; record one over the bound.
/// Expect: one audit event per count, as given; too many counts are refused. (SPEC S5)
#[test]
fn s5_kmip_reads_are_recorded_in_the_audit_log() {
    let mut cluster = cluster();
    let read = KmipReadCount {
        agent: "library1".into(),
        operation: 0x0A,
        count: 12,
        refused: 2,
        keys: vec![],
        keys_not_named: 0,
        from_ms: cluster.now_ms,
        to_ms: cluster.now_ms + SECOND_MS,
    };
    cluster.ok(Actor::System, Command::RecordKmipReads { reads: vec![read.clone()] });
    assert_eq!(cluster.last_events(), [AuditWhat::KmipReads(read.clone())]);
    let flood = Command::RecordKmipReads { reads: vec![read; 1_001] };
    assert!(matches!(cluster.apply(Actor::System, flood), Err(Reject::TooMany { .. })));
}
