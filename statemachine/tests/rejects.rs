//! Every `Reject` variant has a scenario that triggers it (STYLE 18), and this table is also the
//! golden list of the frozen codes: changing a number fails here.

mod support;

use std::collections::BTreeSet;

use statemachine::cluster::KeyPoolLimits;
use statemachine::command::{DestroySelection, TransferDirection};
use statemachine::key::KeyCheckValue;
use statemachine::quorum::QuorumOperation;
use statemachine::{
    Actor, Command, DataUnitId, Envelope, KeyId, Reject, Reply, RequestId, RoleSet, State,
};
use support::*;

type Scenario = fn(&mut TestCluster, &Fixture) -> Result<Reply, Reject>;

fn s(text: &str) -> String {
    text.to_string()
}

fn with_request(cluster: &mut TestCluster, seq: u64, command: Command) -> Result<Reply, Reject> {
    let mut envelope = cluster.envelope(so(), command);
    envelope.request_id = Some(RequestId { client: 1, seq });
    cluster.apply_envelope(&envelope).result
}

#[allow(clippy::too_many_lines)]
fn scenarios() -> Vec<(u16, &'static str, Scenario)> {
    vec![
        (1, "ClusterNotInitialized", |_, _| {
            let envelope = Envelope {
                time_ms: START_MS,
                origin_node_id: 1,
                actor: so(),
                request_id: None,
                command: Command::CreateSite { name: s("x") },
            };
            State::new().apply(1, &envelope).result
        }),
        (2, "ClusterAlreadyInitialized", |c, _| {
            let init = statemachine::command::InitCluster {
                cluster_id: CLUSTER,
                kma_name: s("k"),
                site: s("s"),
                security_officer: s("so"),
                security_officer_verifier: vec![1],
                quorum: quorum(1, 1),
                autonomous_unlock: false,
            };
            c.apply(Actor::System, Command::InitCluster(init))
        }),
        (3, "UnknownUser", |c, _| {
            c.apply(Actor::User(s("ghost")), Command::CreateSite { name: s("x") })
        }),
        (4, "UserDisabled", |c, _| {
            c.ok(so(), Command::SetUserEnabled { id: s("au2"), enabled: false });
            c.apply(Actor::User(s("au2")), Command::CreateSite { name: s("x") })
        }),
        (5, "UnknownAgent", |c, _| {
            c.apply(agent("ghost"), Command::CreateDataUnit { external_tag: s("") })
        }),
        (6, "AgentDisabled", |c, _| {
            c.ok(op(), Command::SetAgentEnabled { id: s("drive1"), enabled: false });
            c.apply(agent("drive1"), Command::CreateDataUnit { external_tag: s("") })
        }),
        (7, "AgentNotEnrolled", |c, _| {
            c.apply(agent("drive8"), Command::CreateDataUnit { external_tag: s("") })
        }),
        (8, "MissingRole", |c, _| c.apply(auditor(), Command::CreateSite { name: s("x") })),
        (9, "WrongIssuer", |c, _| c.apply(so(), Command::CreateDataUnit { external_tag: s("") })),
        (10, "RequestTooOld", |c, _| {
            for seq in 1..=33 {
                with_request(c, seq, Command::CreateSite { name: format!("site{seq}") })
                    .expect("new site");
            }
            with_request(c, 1, Command::CreateSite { name: s("site1") })
        }),
        (11, "ExistsWithDifferentBody", |c, _| {
            with_request(c, 1, Command::CreateSite { name: s("a") }).expect("new site");
            with_request(c, 1, Command::CreateSite { name: s("b") })
        }),
        (12, "InvalidText", |c, _| c.apply(so(), Command::CreateSite { name: s("") })),
        (13, "TooMany", |c, _| {
            let keys = (0..1025).map(|_| c.new_key()).collect();
            c.apply(Actor::System, Command::GeneratePoolKeys { keys })
        }),
        (14, "InvalidSetting", |c, _| {
            c.apply(so(), Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 9, high_water: 9 }))
        }),
        (15, "SiteExists", |c, _| c.apply(so(), Command::CreateSite { name: s("east") })),
        (16, "UnknownSite", |c, _| {
            c.apply(
                op(),
                Command::CreateAgent {
                    id: s("d"),
                    site: s("nowhere"),
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (17, "SiteInUse", |c, _| c.apply(so(), Command::DeleteSite { name: s("east") })),
        (18, "KmaExists", |c, _| {
            c.apply(
                so(),
                Command::CreateKma {
                    name: s("kma2"),
                    site: s("east"),
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (19, "UnknownKma", |c, _| c.apply(so(), Command::LockKma { name: s("nope") })),
        (20, "KmaWrongStatus", |c, _| {
            c.apply(Actor::System, Command::KmaJoined { name: s("kma3") })
        }),
        (21, "LastKma", |_, _| {
            let mut single = TestCluster::single();
            single.apply(so(), Command::DeleteKma { name: s("kma1") })
        }),
        (22, "UserExists", |c, _| {
            c.apply(
                so(),
                Command::CreateUser {
                    id: s("co"),
                    roles: RoleSet::ALL,
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (23, "NoRoles", |c, _| {
            c.apply(
                so(),
                Command::CreateUser {
                    id: s("x"),
                    roles: RoleSet::EMPTY,
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (24, "LastSecurityOfficer", |c, _| c.apply(so(), Command::DeleteUser { id: s("so") })),
        (25, "InvalidQuorum", |c, _| {
            c.apply(
                so(),
                Command::StartQuorumOperation {
                    operation: QuorumOperation::ChangeQuorum { quorum: quorum(2, 3) },
                    ttl_ms: None,
                },
            )
        }),
        (26, "UnknownQuorumOperation", |c, _| {
            c.apply(so(), Command::ApproveQuorumOperation { id: 999, member: s("q1") })
        }),
        (27, "QuorumOperationExpired", |c, _| {
            let operation = QuorumOperation::UnlockKma { kma: s("kma2") };
            let Ok(Reply::QuorumOperationStarted { id, .. }) =
                c.apply(so(), Command::StartQuorumOperation { operation, ttl_ms: Some(1_000) })
            else {
                panic!("started")
            };
            c.advance(2_000);
            c.apply(so(), Command::ApproveQuorumOperation { id, member: s("q1") })
        }),
        (28, "NotAQuorumMember", |c, f| {
            c.apply(so(), Command::ApproveQuorumOperation { id: f.pending, member: s("q9") })
        }),
        (29, "AlreadyApproved", |c, f| {
            c.ok(so(), Command::ApproveQuorumOperation { id: f.pending, member: s("q1") });
            c.apply(so(), Command::ApproveQuorumOperation { id: f.pending, member: s("q1") })
        }),
        (30, "PolicyExists", |c, _| {
            c.apply(
                co(),
                Command::CreateKeyPolicy {
                    name: s("std"),
                    encryption_period_ms: 1,
                    cryptoperiod_ms: 1,
                    allow_export: false,
                    allow_import: false,
                },
            )
        }),
        (31, "UnknownPolicy", |c, _| {
            c.apply(co(), Command::CreateKeyGroup { name: s("g"), policy: s("nope") })
        }),
        (32, "PolicyPeriodsInvalid", |c, _| {
            c.apply(
                co(),
                Command::CreateKeyPolicy {
                    name: s("p"),
                    encryption_period_ms: 2 * DAY_MS,
                    cryptoperiod_ms: DAY_MS,
                    allow_export: false,
                    allow_import: false,
                },
            )
        }),
        (33, "PolicyInUse", |c, _| c.apply(co(), Command::DeleteKeyPolicy { name: s("std") })),
        (34, "GroupExists", |c, _| {
            c.apply(co(), Command::CreateKeyGroup { name: s("std"), policy: s("std") })
        }),
        (35, "UnknownGroup", |c, _| {
            c.apply(co(), Command::AssignKeyGroupToAgent { agent: s("drive1"), group: s("nope") })
        }),
        (36, "GroupInUse", |c, _| c.apply(co(), Command::DeleteKeyGroup { name: s("std") })),
        (37, "AgentExists", |c, _| {
            c.apply(
                op(),
                Command::CreateAgent {
                    id: s("drive1"),
                    site: s("east"),
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (38, "GroupNotAssignedToAgent", |c, _| {
            c.apply(
                co(),
                Command::SetAgentDefaultKeyGroup { agent: s("drive1"), group: s("empty-group") },
            )
        }),
        (39, "AgentHasNoDefaultGroup", |c, f| {
            c.ok(
                Actor::System,
                Command::RecordAgentEnrollment {
                    id: s("drive8"),
                    certificate_fingerprint: [1; 32],
                },
            );
            c.apply(
                agent("drive8"),
                Command::AssignWriteKey { data_unit: f.empty_unit, from_bot: true },
            )
        }),
        (40, "GroupIsAgentDefault", |c, _| {
            c.apply(
                co(),
                Command::UnassignKeyGroupFromAgent { agent: s("drive1"), group: s("std") },
            )
        }),
        (41, "KeyExists", |c, f| {
            let mut key = c.new_key();
            key.id = f.key;
            c.apply(Actor::System, Command::GeneratePoolKeys { keys: vec![key] })
        }),
        (42, "KeyFromOtherCluster", |c, _| {
            let mut key = c.new_key();
            key.id = KeyId([0x55; 30]);
            c.apply(Actor::System, Command::GeneratePoolKeys { keys: vec![key] })
        }),
        (43, "KeyPoolFull", |c, _| {
            c.ok(so(), Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 1, high_water: 60 }));
            let keys = (0..20).map(|_| c.new_key()).collect();
            c.apply(Actor::System, Command::GeneratePoolKeys { keys })
        }),
        (44, "KeyPoolEmpty", |c, f| {
            c.ok(Actor::System, Command::QuarantineKeyPool);
            c.apply(
                agent("drive1"),
                Command::AssignWriteKey { data_unit: f.empty_unit, from_bot: true },
            )
        }),
        (45, "UnknownDataUnit", |c, _| {
            c.apply(
                agent("drive1"),
                Command::AssignWriteKey {
                    data_unit: DataUnitId { cluster_id: CLUSTER, serial: 999 },
                    from_bot: true,
                },
            )
        }),
        (46, "AgentCannotAccessWriteKey", |c, f| {
            c.enrolled_agent("drive2", &["second"]);
            c.apply(agent("drive2"), Command::AssignWriteKey { data_unit: f.unit, from_bot: false })
        }),
        (47, "DataUnitShredded", |c, f| {
            c.ok(op(), Command::DestroyKeys { keys: vec![f.compromised] });
            c.apply(
                agent("drive1"),
                Command::AssignWriteKey { data_unit: f.spoiled_unit, from_bot: false },
            )
        }),
        (48, "UnknownKey", |c, _| {
            c.apply(op(), Command::DestroyKeys { keys: vec![KeyId([1; 30])] })
        }),
        (49, "KeyUnusable", |c, f| {
            c.ok(op(), Command::DestroyKeys { keys: vec![f.compromised] });
            c.apply(
                agent("drive1"),
                Command::AssociateKeyForRead {
                    key_id: f.compromised,
                    data_unit: Some(f.empty_unit),
                    external_tag: s(""),
                },
            )
        }),
        (50, "AgentCannotAccessKey", |c, f| {
            c.enrolled_agent("drive2", &["second"]);
            c.apply(
                agent("drive2"),
                Command::AssociateKeyForRead {
                    key_id: f.legacy,
                    data_unit: Some(f.empty_unit),
                    external_tag: s(""),
                },
            )
        }),
        (51, "DestroyNeedsDeactivatedOrCompromised", |c, f| {
            c.apply(op(), Command::DestroyKeys { keys: vec![f.key] })
        }),
        (52, "NothingSelected", |c, _| c.apply(op(), Command::DestroyKeys { keys: vec![] })),
        (53, "ImpactPreviewChanged", |c, f| {
            c.apply(
                op(),
                Command::DestroyDataUnitKeys {
                    data_units: vec![f.spoiled_unit],
                    selection: DestroySelection::CompromisedOnly,
                    preview_digest: 0,
                },
            )
        }),
        (54, "PartnerExists", |c, _| {
            c.apply(
                so(),
                Command::StartQuorumOperation {
                    operation: QuorumOperation::CreateTransferPartner {
                        name: s("p1"),
                        public_key: vec![1],
                    },
                    ttl_ms: None,
                },
            )
        }),
        (55, "UnknownPartner", |c, _| {
            c.apply(so(), Command::DeleteTransferPartner { name: s("nope") })
        }),
        (56, "PolicyForbidsExport", |c, _| {
            c.apply(
                co(),
                Command::AssignKeyGroupToPartner {
                    partner: s("p1"),
                    group: s("empty-group"),
                    direction: TransferDirection::Export,
                },
            )
        }),
        (57, "PolicyForbidsImport", |c, _| {
            c.apply(
                co(),
                Command::AssignKeyGroupToPartner {
                    partner: s("p1"),
                    group: s("empty-group"),
                    direction: TransferDirection::Import,
                },
            )
        }),
        (58, "GroupNotAssignedToPartner", |c, _| {
            c.apply(
                co(),
                Command::UnassignKeyGroupFromPartner {
                    partner: s("p1"),
                    group: s("std"),
                    direction: TransferDirection::Export,
                },
            )
        }),
        (59, "ImportValueMismatch", |c, f| {
            let key = statemachine::command::Legacy1xKey {
                id: f.legacy,
                material: fake_wrap([0; 32]),
                check_value: KeyCheckValue([0; 16]),
                description: s(""),
            };
            c.apply(co(), Command::Import1xKeys { group: s("std"), keys: vec![key] })
        }),
        (60, "UnknownBackup", |c, _| c.apply(bo(), Command::MarkBackupDestroyed { id: 999 })),
        (61, "BackupAlreadyDestroyed", |c, f| {
            c.ok(bo(), Command::MarkBackupDestroyed { id: f.backup });
            c.apply(bo(), Command::MarkBackupDestroyed { id: f.backup })
        }),
        (62, "BackupCoversFuture", |c, _| {
            c.apply(
                bo(),
                Command::RecordBackup {
                    kind: statemachine::backup::BackupKind::Database,
                    kma: s("kma1"),
                    file_name: s("f"),
                    covers_index: u64::MAX,
                },
            )
        }),
        (63, "NoTransferKeyPair", |_, f| {
            let mut fresh = standard(DAY_MS, DAY_MS);
            fresh.apply(
                op(),
                Command::RecordKeyExport { partner: s("p1"), data_units: vec![f.unit] },
            )
        }),
        (64, "AgentAlreadyEnrolled", |c, _| {
            c.apply(
                Actor::System,
                Command::RecordAgentEnrollment {
                    id: s("drive1"),
                    certificate_fingerprint: [3; 32],
                },
            )
        }),
    ]
}

/// Setup: the prepared cluster, fresh for each scenario. Action: the scenario. Expect: the
/// named rejection with its frozen code, and every code from 1 to the last covered once.
#[test]
fn every_reject_variant_has_a_triggering_scenario_and_a_frozen_code() {
    let (prepared, fixture) = prepared();
    let mut codes = BTreeSet::new();
    for (code, name, scenario) in scenarios() {
        let mut cluster = prepared.fork();
        let result = scenario(&mut cluster, &fixture);
        let Err(reject) = result else { panic!("{name}: expected a rejection, got {result:?}") };
        assert_eq!(reject.code(), code, "{name}: {reject:?}");
        assert!(format!("{reject:?}").starts_with(name), "{name}: got {reject:?}");
        assert!(!reject.to_string().is_empty());
        assert!(codes.insert(code), "{name}: code {code} listed twice");
    }
    let expected: BTreeSet<u16> = (1..=64).collect();
    assert_eq!(codes, expected, "every code has a scenario");
}

/// Only an empty pool is retryable: the client should try again, later or elsewhere.
#[test]
fn only_an_empty_pool_is_retryable() {
    assert!(Reject::KeyPoolEmpty.is_retryable());
    assert!(!Reject::NothingSelected.is_retryable());
    assert!(!Reject::ClusterNotInitialized.is_retryable());
}
