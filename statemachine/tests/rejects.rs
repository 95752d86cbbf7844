//! Every `Reject` variant has a scenario that triggers it (STYLE 18), and this table is also the
//! golden list of the frozen codes and of each variant's class: changing a number fails here,
//! and so does a variant without a scenario (the list of codes is read from `src/reject.rs`).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use statemachine::cluster::KeyPoolLimits;
use statemachine::command::{DestroySelection, TransferDirection};
use statemachine::key::KeyCheckValue;
use statemachine::kmip::{KmipAttribute, KmipValue};
use statemachine::quorum::QuorumOperation;
use statemachine::{
    Access, Actor, AuditWhat, Command, DataUnitId, Formats, KeyId, KmaVersion, Outcome, Read,
    Reject, RejectClass, Reply, RequestId, RoleSet, SoftwareVersion,
};
use support::*;

type Scenario = fn(&mut TestCluster, &Fixture) -> Result<Reply, Reject>;

use RejectClass::{Conflict, Forbidden, Invalid, Limit, NotFound, Unavailable};

fn s(text: &str) -> String {
    text.to_string()
}

fn with_request(cluster: &mut TestCluster, seq: u64, command: Command) -> Result<Reply, Reject> {
    let mut envelope = cluster.envelope(so(), command);
    envelope.request_id = Some(RequestId { client: 1, seq });
    cluster.apply_envelope(&envelope).result
}

/// An access check instead of an entry: the state before it is the state it is refused on.
fn access(cluster: &mut TestCluster, actor: Actor, access: Access) -> Result<Reply, Reject> {
    cluster.before_last = Some(cluster.state.clone());
    cluster.last = None;
    cluster.state.check_access(&actor, access).map(|()| Reply::Done)
}

fn full_report(kma: &str) -> Command {
    let software = SoftwareVersion { major: 0, minor: 2, patch: 0 };
    let version = KmaVersion { software, formats: Formats { log: 2, snapshot: 3 } };
    Command::ReportKmaVersion { kma: kma.into(), version }
}

#[allow(clippy::too_many_lines)]
fn scenarios() -> Vec<(u16, &'static str, RejectClass, Scenario)> {
    vec![
        (1, "ClusterNotInitialized", Conflict, |c, _| {
            *c = TestCluster::blank();
            c.apply(so(), Command::CreateSite { name: s("x") })
        }),
        (2, "ClusterAlreadyInitialized", Conflict, |c, _| {
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
        (3, "UnknownUser", NotFound, |c, _| {
            c.apply(Actor::User(s("ghost")), Command::CreateSite { name: s("x") })
        }),
        (4, "UserDisabled", Forbidden, |c, _| {
            c.ok(so(), Command::SetUserEnabled { id: s("au2"), enabled: false });
            c.apply(Actor::User(s("au2")), Command::CreateSite { name: s("x") })
        }),
        (5, "UnknownAgent", NotFound, |c, _| {
            c.apply(agent("ghost"), Command::CreateDataUnit { external_tag: s("") })
        }),
        (6, "AgentDisabled", Forbidden, |c, _| {
            c.ok(op(), Command::SetAgentEnabled { id: s("drive1"), enabled: false });
            c.apply(agent("drive1"), Command::CreateDataUnit { external_tag: s("") })
        }),
        (7, "AgentNotEnrolled", Forbidden, |c, _| {
            c.apply(agent("drive8"), Command::CreateDataUnit { external_tag: s("") })
        }),
        (8, "MissingRole", Forbidden, |c, _| {
            c.apply(auditor(), Command::CreateSite { name: s("x") })
        }),
        (9, "WrongIssuer", Forbidden, |c, _| {
            c.apply(so(), Command::CreateDataUnit { external_tag: s("") })
        }),
        (10, "RequestTooOld", Limit, |c, _| {
            for seq in 1..=33 {
                with_request(c, seq, Command::CreateSite { name: format!("site{seq}") })
                    .expect("new site");
            }
            with_request(c, 1, Command::CreateSite { name: s("site1") })
        }),
        (11, "ExistsWithDifferentBody", Conflict, |c, _| {
            with_request(c, 1, Command::CreateSite { name: s("a") }).expect("new site");
            with_request(c, 1, Command::CreateSite { name: s("b") })
        }),
        (12, "InvalidText", Invalid, |c, _| c.apply(so(), Command::CreateSite { name: s("") })),
        (13, "TooMany", Limit, |c, _| {
            let keys = (0..1025).map(|_| c.new_key()).collect();
            c.apply(Actor::System, Command::GeneratePoolKeys { keys })
        }),
        (14, "InvalidSetting", Invalid, |c, _| {
            c.apply(so(), Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 9, high_water: 9 }))
        }),
        (15, "SiteExists", Conflict, |c, _| c.apply(so(), Command::CreateSite { name: s("east") })),
        (16, "UnknownSite", NotFound, |c, _| {
            c.apply(
                op(),
                Command::CreateAgent {
                    id: s("d"),
                    site: s("nowhere"),
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (17, "SiteInUse", Conflict, |c, _| c.apply(so(), Command::DeleteSite { name: s("east") })),
        (18, "KmaExists", Conflict, |c, _| {
            c.apply(
                so(),
                Command::CreateKma {
                    name: s("kma2"),
                    site: s("east"),
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (19, "UnknownKma", NotFound, |c, _| c.apply(so(), Command::LockKma { name: s("nope") })),
        (20, "KmaWrongStatus", Conflict, |c, _| {
            c.apply(Actor::System, Command::KmaJoined { name: s("kma3") })
        }),
        (21, "LastKma", Conflict, |c, _| {
            *c = TestCluster::single();
            c.apply(so(), Command::DeleteKma { name: s("kma1") })
        }),
        (22, "UserExists", Conflict, |c, _| {
            c.apply(
                so(),
                Command::CreateUser {
                    id: s("co"),
                    roles: RoleSet::ALL,
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (23, "NoRoles", Invalid, |c, _| {
            c.apply(
                so(),
                Command::CreateUser {
                    id: s("x"),
                    roles: RoleSet::EMPTY,
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (24, "LastSecurityOfficer", Conflict, |c, _| {
            c.apply(so(), Command::DeleteUser { id: s("so") })
        }),
        (25, "InvalidQuorum", Invalid, |c, _| {
            c.apply(
                so(),
                Command::StartQuorumOperation {
                    operation: QuorumOperation::ChangeQuorum { quorum: quorum(2, 3) },
                    ttl_ms: None,
                },
            )
        }),
        (26, "UnknownQuorumOperation", NotFound, |c, _| {
            c.apply(so(), Command::ApproveQuorumOperation { id: 999, member: s("q1") })
        }),
        (27, "QuorumOperationExpired", Conflict, |c, _| {
            let operation = QuorumOperation::UnlockKma { kma: s("kma2") };
            let Ok(Reply::QuorumOperationStarted { id, .. }) =
                c.apply(so(), Command::StartQuorumOperation { operation, ttl_ms: Some(1_000) })
            else {
                panic!("started")
            };
            c.advance(2_000);
            c.apply(so(), Command::ApproveQuorumOperation { id, member: s("q1") })
        }),
        (28, "NotAQuorumMember", Forbidden, |c, f| {
            c.apply(so(), Command::ApproveQuorumOperation { id: f.pending, member: s("q9") })
        }),
        (29, "AlreadyApproved", Conflict, |c, f| {
            c.ok(so(), Command::ApproveQuorumOperation { id: f.pending, member: s("q1") });
            c.apply(so(), Command::ApproveQuorumOperation { id: f.pending, member: s("q1") })
        }),
        (30, "PolicyExists", Conflict, |c, _| {
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
        (31, "UnknownPolicy", NotFound, |c, _| {
            c.apply(co(), Command::CreateKeyGroup { name: s("g"), policy: s("nope") })
        }),
        (32, "PolicyPeriodsInvalid", Invalid, |c, _| {
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
        (33, "PolicyInUse", Conflict, |c, _| {
            c.apply(co(), Command::DeleteKeyPolicy { name: s("std") })
        }),
        (34, "GroupExists", Conflict, |c, _| {
            c.apply(co(), Command::CreateKeyGroup { name: s("std"), policy: s("std") })
        }),
        (35, "UnknownGroup", NotFound, |c, _| {
            c.apply(co(), Command::AssignKeyGroupToAgent { agent: s("drive1"), group: s("nope") })
        }),
        (36, "GroupInUse", Conflict, |c, _| {
            c.apply(co(), Command::DeleteKeyGroup { name: s("std") })
        }),
        (37, "AgentExists", Conflict, |c, _| {
            c.apply(
                op(),
                Command::CreateAgent {
                    id: s("drive1"),
                    site: s("east"),
                    passphrase_verifier: vec![1],
                },
            )
        }),
        (38, "GroupNotAssignedToAgent", Conflict, |c, _| {
            c.apply(
                co(),
                Command::SetAgentDefaultKeyGroup { agent: s("drive1"), group: s("empty-group") },
            )
        }),
        (39, "AgentHasNoDefaultGroup", Conflict, |c, f| {
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
        (40, "GroupIsAgentDefault", Conflict, |c, _| {
            c.apply(
                co(),
                Command::UnassignKeyGroupFromAgent { agent: s("drive1"), group: s("std") },
            )
        }),
        (41, "KeyExists", Conflict, |c, f| {
            let mut key = c.new_key();
            key.id = f.key;
            c.apply(Actor::System, Command::GeneratePoolKeys { keys: vec![key] })
        }),
        (42, "KeyFromOtherCluster", Invalid, |c, _| {
            let mut key = c.new_key();
            key.id = KeyId([0x55; 30]);
            c.apply(Actor::System, Command::GeneratePoolKeys { keys: vec![key] })
        }),
        (43, "KeyPoolFull", Limit, |c, _| {
            c.ok(so(), Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 1, high_water: 60 }));
            let keys = (0..20).map(|_| c.new_key()).collect();
            c.apply(Actor::System, Command::GeneratePoolKeys { keys })
        }),
        (44, "KeyPoolEmpty", Unavailable, |c, f| {
            c.ok(Actor::System, Command::QuarantineKeyPool);
            c.apply(
                agent("drive1"),
                Command::AssignWriteKey { data_unit: f.empty_unit, from_bot: true },
            )
        }),
        (45, "UnknownDataUnit", NotFound, |c, _| {
            c.apply(
                agent("drive1"),
                Command::AssignWriteKey {
                    data_unit: DataUnitId { cluster_id: CLUSTER, serial: 999 },
                    from_bot: true,
                },
            )
        }),
        (46, "AgentCannotAccessWriteKey", Forbidden, |c, f| {
            c.enrolled_agent("drive2", &["second"]);
            c.apply(agent("drive2"), Command::AssignWriteKey { data_unit: f.unit, from_bot: false })
        }),
        (47, "DataUnitShredded", Conflict, |c, f| {
            c.ok(op(), Command::DestroyKeys { keys: vec![f.compromised] });
            c.apply(
                agent("drive1"),
                Command::AssignWriteKey { data_unit: f.spoiled_unit, from_bot: false },
            )
        }),
        (48, "UnknownKey", NotFound, |c, _| {
            c.apply(op(), Command::DestroyKeys { keys: vec![KeyId([1; 30])] })
        }),
        (49, "KeyUnusable", Conflict, |c, f| {
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
        (50, "AgentCannotAccessKey", Forbidden, |c, f| {
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
        (51, "DestroyNeedsDeactivatedOrCompromised", Conflict, |c, f| {
            c.apply(op(), Command::DestroyKeys { keys: vec![f.key] })
        }),
        (52, "NothingSelected", Invalid, |c, _| {
            c.apply(op(), Command::DestroyKeys { keys: vec![] })
        }),
        (53, "ImpactPreviewChanged", Conflict, |c, f| {
            c.apply(
                op(),
                Command::DestroyDataUnitKeys {
                    data_units: vec![f.spoiled_unit],
                    selection: DestroySelection::CompromisedOnly,
                    preview_digest: 0,
                },
            )
        }),
        (54, "PartnerExists", Conflict, |c, _| {
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
        (55, "UnknownPartner", NotFound, |c, _| {
            c.apply(so(), Command::DeleteTransferPartner { name: s("nope") })
        }),
        (56, "PolicyForbidsExport", Conflict, |c, _| {
            c.apply(
                co(),
                Command::AssignKeyGroupToPartner {
                    partner: s("p1"),
                    group: s("empty-group"),
                    direction: TransferDirection::Export,
                },
            )
        }),
        (57, "PolicyForbidsImport", Conflict, |c, _| {
            c.apply(
                co(),
                Command::AssignKeyGroupToPartner {
                    partner: s("p1"),
                    group: s("empty-group"),
                    direction: TransferDirection::Import,
                },
            )
        }),
        (58, "GroupNotAssignedToPartner", Conflict, |c, _| {
            c.apply(
                co(),
                Command::UnassignKeyGroupFromPartner {
                    partner: s("p1"),
                    group: s("std"),
                    direction: TransferDirection::Export,
                },
            )
        }),
        (59, "ImportValueMismatch", Conflict, |c, f| {
            let key = statemachine::command::Legacy1xKey {
                id: f.legacy,
                material: fake_wrap([0; 32]),
                check_value: KeyCheckValue([0; 16]),
                description: s(""),
            };
            c.apply(co(), Command::Import1xKeys { group: s("std"), keys: vec![key] })
        }),
        (60, "UnknownBackup", NotFound, |c, _| {
            c.apply(bo(), Command::MarkBackupDestroyed { id: 999 })
        }),
        (61, "BackupAlreadyDestroyed", Conflict, |c, f| {
            c.ok(bo(), Command::MarkBackupDestroyed { id: f.backup });
            c.apply(bo(), Command::MarkBackupDestroyed { id: f.backup })
        }),
        (62, "BackupCoversFuture", Invalid, |c, _| {
            c.apply(
                bo(),
                Command::RecordBackupBeforeFormat3 {
                    kind: statemachine::backup::BackupKind::Database,
                    kma: s("kma1"),
                    file_name: s("f"),
                    covers_index: u64::MAX,
                },
            )
        }),
        (63, "NoTransferKeyPair", Conflict, |c, f| {
            *c = standard(DAY_MS, DAY_MS);
            c.apply(op(), Command::RecordKeyExport { partner: s("p1"), data_units: vec![f.unit] })
        }),
        (64, "AgentAlreadyEnrolled", Conflict, |c, _| {
            c.apply(
                Actor::System,
                Command::RecordAgentEnrollment {
                    id: s("drive1"),
                    certificate_fingerprint: [3; 32],
                },
            )
        }),
        (65, "AccessNeedsRole", Forbidden, |c, _| access(c, op(), Access::Read(Read::AuditLog))),
        (66, "AccessWrongActor", Forbidden, |c, _| access(c, so(), Access::Read(Read::AgentKeys))),
        (67, "FormatNotYetAvailable", Unavailable, |c, _| {
            c.apply_from(1, Actor::System, full_report("kma1"))
        }),
        (68, "VersionReportFromAnotherKma", Forbidden, |c, _| {
            c.report_log_format(&["kma1", "kma2", "kma5"], 2);
            c.apply_from(1, Actor::System, full_report("kma2"))
        }),
        (69, "JoinAlreadyGranted", Conflict, |c, _| {
            c.open_format(3);
            c.ok(Actor::System, grant_kma5([0xc5; 32]));
            c.apply(Actor::System, grant_kma5([0xc6; 32]))
        }),
        (70, "KmaCertificateFromAnotherKma", Forbidden, |c, _| {
            c.open_format(3);
            c.apply_from(1, Actor::System, kma_certificate("kma2", [0xc2; 32]))
        }),
        (71, "KmaCertificateAlreadyRecorded", Conflict, |c, _| {
            c.open_format(3);
            c.ok(Actor::System, kma_certificate("kma1", [0xc1; 32]));
            c.apply(Actor::System, kma_certificate("kma1", [0xc7; 32]))
        }),
        (72, "CaKeyAlreadyRecorded", Conflict, |c, _| {
            c.open_format(3);
            c.ok(Actor::System, ca_key([0xca; 32]));
            c.apply(Actor::System, ca_key([0xcb; 32]))
        }),
        (73, "NotFromThatKma", Forbidden, |c, _| {
            c.open_format(3);
            let unlock = Command::RecordMemberUnlock { kma: s("kma2"), members: vec![s("q1")] };
            c.apply_from(1, Actor::System, unlock)
        }),
        (74, "CaKeyNotRecorded", Conflict, |c, _| {
            c.open_format(3);
            c.apply(so(), start_rotate_ca())
        }),
        (75, "CaRotationUnderWay", Conflict, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.approve_ca_rotation();
            c.apply(so(), start_rotate_ca())
        }),
        (76, "CaRotationNotApproved", Conflict, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.apply(Actor::System, begin_ca_rotation(0xcc))
        }),
        (77, "CaCertificateFingerprintMismatch", Invalid, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.approve_ca_rotation();
            let begin = Command::BeginCaRotation {
                ca_certificate_der: ca_certificate_der(0xcc),
                ca_certificate_sha256: [0xcc; 32],
                wrapped_key: vec![0x33; 96],
            };
            c.apply(Actor::System, begin)
        }),
        (78, "NewCaIsCurrentCa", Invalid, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.approve_ca_rotation();
            c.apply(Actor::System, begin_ca_rotation(0xca))
        }),
        (79, "CaRotationAlreadyBegun", Conflict, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.approve_ca_rotation();
            c.ok(Actor::System, begin_ca_rotation(0xcc));
            c.apply(Actor::System, begin_ca_rotation(0xcd))
        }),
        (80, "CaRotationNotBegun", Conflict, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.approve_ca_rotation();
            c.apply(Actor::System, Command::CompleteCaRotation)
        }),
        (81, "CaRotationIncomplete", Conflict, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.approve_ca_rotation();
            c.ok(Actor::System, begin_ca_rotation(0xcc));
            c.apply(Actor::System, Command::CompleteCaRotation)
        }),
        (82, "CaNotRetiring", Conflict, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.apply_from(1, Actor::System, Command::RecordCaAdopted { name: s("kma1") })
        }),
        (83, "CaRetirementUnderWay", Conflict, |c, _| {
            c.open_format(3);
            c.record_ca_key();
            c.approve_ca_rotation();
            c.ok(Actor::System, begin_ca_rotation(0xcc));
            c.reissue_every_kma();
            c.ok(Actor::System, Command::CompleteCaRotation);
            c.apply(so(), start_rotate_ca())
        }),
        (84, "CoreSecurityBackupOutdated", Conflict, |c, _| {
            c.open_format(3);
            c.apply(Actor::System, core_security_backup(5))
        }),
        (85, "RestoreIsALocalCeremony", Invalid, |c, f| {
            c.open_format(3);
            let operation = QuorumOperation::RestoreFromBackup { backup_id: f.backup };
            c.apply(bo(), Command::StartQuorumOperation { operation, ttl_ms: None })
        }),
        (86, "BackupNotADatabaseBackup", Invalid, |c, _| {
            c.open_format(3);
            let Reply::BackupRecorded { id } = c.ok(Actor::System, core_security_backup(0)) else {
                panic!("recorded")
            };
            let drill = Command::RecordBackupDrill {
                backup_id: id,
                kma: s("kma1"),
                passed: true,
                detail: String::new(),
            };
            c.apply(Actor::System, drill)
        }),
        (87, "SurvivingKmaIsAnotherNode", Forbidden, |c, _| {
            let recover = Command::RecoverFromLostMajority {
                kma_name: s("kma1"),
                node_id: 2,
                certificate_sha256: [2; 32],
            };
            c.apply(Actor::System, recover)
        }),
        (88, "UnknownImport", NotFound, |c, _| {
            c.open_format(3);
            c.apply(Actor::System, Command::CommitImport1x { import_id: 5, keys_received: 1 })
        }),
        (89, "ImportIncomplete", Conflict, |c, _| {
            c.open_format(3);
            c.ok(Actor::System, stage_1x(KeyId([0x55; 30]), 0x55));
            c.apply(Actor::System, Command::CommitImport1x { import_id: 5, keys_received: 2 })
        }),
        (90, "ImportAllDuplicates", Conflict, |c, f| {
            c.open_format(3);
            // The prepared 1.x key again, with its value.
            c.ok(Actor::System, stage_1x(f.legacy, 0x11));
            c.apply(Actor::System, Command::CommitImport1x { import_id: 5, keys_received: 1 })
        }),
        (91, "TransferKeyPairExists", Conflict, |c, _| {
            c.open_format(3);
            let pair = Command::SetTransferKeyPair {
                public_key: vec![5; 64],
                wrapped_private_key: vec![7; 48],
            };
            c.apply(Actor::System, pair)
        }),
        (92, "PartnerDisabled", Conflict, |c, _| {
            c.open_format(3);
            c.ok(so(), Command::SetTransferPartnerEnabled { name: s("p1"), enabled: false });
            c.apply(Actor::System, transfer_file([3; 16]))
        }),
        (93, "TransferFileReplayed", Conflict, |c, _| {
            c.open_format(3);
            c.ok(Actor::System, transfer_file([3; 16]));
            c.apply(Actor::System, transfer_file([3; 16]))
        }),
        (94, "ExportSelectionChanged", Conflict, |c, f| {
            c.open_format(3);
            let assign = Command::AssignKeyGroupToPartner {
                partner: s("p1"),
                group: s("std"),
                direction: TransferDirection::Export,
            };
            c.ok(co(), assign);
            let export = statemachine::command::TransferExport {
                partner: s("p1"),
                requested_by: s("op"),
                file_id: [4; 16],
                data_units: vec![f.unit],
                keys: vec![KeyId([0x31; 30])],
            };
            c.apply(Actor::System, Command::RecordTransferExport(export))
        }),
        (95, "KmipAttributeNotSettable", Invalid, |c, _| {
            c.open_format(3);
            let colour = KmipAttribute::new("Colour", KmipValue::Text(s("red")));
            let create = Command::CreateKmipKey { usage_mask: 12, attributes: vec![colour] };
            c.apply(agent("drive1"), create)
        }),
        (96, "KmipLocateTooBroad", Limit, |c, _| {
            c.open_format(3);
            let create = Command::CreateKmipKey { usage_mask: 12, attributes: vec![] };
            c.ok(agent("drive1"), create);
            c.before_last = Some(c.state.clone());
            c.last = None;
            let filter = statemachine::kmip::KmipFilter::default();
            c.state.kmip_locate("drive1", &filter, (0, 10), 0, c.now_ms).map(|_| Reply::Done)
        }),
        (97, "NotKmipObject", NotFound, |c, f| {
            c.open_format(3);
            c.apply(agent("drive1"), Command::ActivateKmipKey { key_id: f.key })
        }),
        (98, "KmipWrongState", Conflict, |c, _| {
            c.open_format(3);
            let key_id = kmip_key(c);
            c.ok(agent("drive1"), Command::ActivateKmipKey { key_id });
            c.apply(agent("drive1"), Command::ActivateKmipKey { key_id })
        }),
        (99, "KmipRevisionStale", Conflict, |c, _| {
            c.open_format(3);
            let key_id = kmip_key(c);
            let change = Command::SetKmipAttributes { key_id, revision: 0, attributes: vec![] };
            c.apply(agent("drive1"), change)
        }),
        (100, "KmipRightNotGranted", Forbidden, |c, _| {
            c.open_format(3);
            let key_id = kmip_key(c);
            c.apply(agent("drive1"), Command::DestroyKmipKey { key_id })
        }),
    ]
}

/// A key drive1 made over KMIP.
fn kmip_key(cluster: &mut TestCluster) -> KeyId {
    let create = Command::CreateKmipKey { usage_mask: 12, attributes: vec![] };
    match cluster.ok(agent("drive1"), create) {
        Reply::KmipKey { key_id, .. } => key_id,
        other => panic!("expected a KMIP key, got {other:?}"),
    }
}

/// A batch of one 1.x key staged under import 5 into `std`, its value all `byte`.
fn stage_1x(id: KeyId, byte: u8) -> Command {
    let key = statemachine::command::Legacy1xKey {
        id,
        material: fake_wrap([byte; 32]),
        check_value: KeyCheckValue([byte; 16]),
        description: String::new(),
    };
    Command::StageImport1x {
        import_id: 5,
        batch: 0,
        group: s("std"),
        requested_by: s("co"),
        kma: s("kma1"),
        keys: vec![key],
    }
}

/// A file from partner `p1` with one data unit and its key, imported into `std`.
fn transfer_file(file_id: [u8; 16]) -> Command {
    let activation = statemachine::key::Activation {
        activated_at_ms: START_MS,
        encryption_ends_at_ms: START_MS + DAY_MS,
        deactivates_at_ms: START_MS + YEAR_MS,
    };
    let unit = statemachine::command::TransferredDataUnit {
        id: DataUnitId { cluster_id: statemachine::ClusterId(99), serial: 1 },
        external_tag: s("P1-001"),
        keys: vec![statemachine::command::TransferredKey {
            id: KeyId([0x99; 30]),
            material: fake_wrap([0x99; 32]),
            check_value: KeyCheckValue([0x99; 16]),
            created_at_ms: START_MS,
            activation,
            compromised_at_ms: None,
        }],
    };
    Command::ImportTransferFile(statemachine::command::TransferImport {
        partner: s("p1"),
        group: s("std"),
        requested_by: s("op"),
        file_id,
        data_units: vec![unit],
    })
}

/// A core security backup by kma1 (node 1), holding the quorum of `covers_index`.
fn core_security_backup(covers_index: u64) -> Command {
    Command::RecordBackup {
        kind: statemachine::backup::BackupKind::CoreSecurity,
        kma: s("kma1"),
        file_name: s("core.xml"),
        covers_index,
        taken_by: s("bo"),
        size_bytes: 1_024,
        file_sha256: [0xf1; 32],
        state_sha256: [0; 32],
        backup_uuid: [0xb1; 16],
    }
}

fn start_rotate_ca() -> Command {
    Command::StartQuorumOperation { operation: QuorumOperation::RotateCa, ttl_ms: None }
}

fn ca_key(ca_certificate_sha256: [u8; 32]) -> Command {
    Command::RecordCaKey { ca_certificate_sha256, wrapped_key: vec![0x77; 96] }
}

fn grant_kma5(certificate_sha256: [u8; 32]) -> Command {
    Command::GrantKmaJoin { name: s("kma5"), certificate_sha256 }
}

fn kma_certificate(name: &str, certificate_sha256: [u8; 32]) -> Command {
    Command::RecordKmaCertificate { name: name.into(), certificate_sha256 }
}

/// The frozen codes as `src/reject.rs` lists them in `Reject::code`, whose match the compiler
/// keeps exhaustive: a new variant is listed there, and so here, before it has a scenario.
fn codes_in_source() -> BTreeMap<u16, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/reject.rs");
    let source = std::fs::read_to_string(path).expect("src/reject.rs");
    let start = source.find("pub fn code(&self) -> u16").expect("Reject::code");
    let body = &source[start..];
    let body = &body[..body.find("\n    }\n").expect("end of Reject::code")];
    let mut codes = BTreeMap::new();
    for line in body.lines().map(str::trim).filter(|line| line.starts_with("R::")) {
        let name: String = line[3..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let code = line.rsplit("=> ").next().expect("an arm").trim_end_matches(',');
        let code: u16 = code.parse().unwrap_or_else(|_| panic!("a code in {line:?}"));
        assert!(codes.insert(code, name).is_none(), "code {code} given twice");
    }
    codes
}

/// Setup: the prepared cluster, fresh for each scenario. Action: the scenario. Expect: the
/// named rejection with its frozen code and class, and every code of `Reject::code` covered
/// once, by the variant of that name.
#[test]
fn every_reject_variant_has_a_triggering_scenario_and_a_frozen_code() {
    let (prepared, fixture) = prepared();
    let mut covered = BTreeMap::new();
    for (code, name, class, scenario) in scenarios() {
        let mut cluster = prepared.fork();
        let result = scenario(&mut cluster, &fixture);
        let Err(reject) = result else { panic!("{name}: expected a rejection, got {result:?}") };
        assert_eq!(reject.code(), code, "{name}: {reject:?}");
        assert_eq!(reject.class(), class, "{name}: {reject:?}");
        assert!(format!("{reject:?}").starts_with(name), "{name}: got {reject:?}");
        assert!(!reject.to_string().is_empty());
        assert!(covered.insert(code, name.to_string()).is_none(), "{name}: code {code} twice");
    }
    assert_eq!(covered, codes_in_source(), "every code of Reject::code has its scenario");
    let expected: BTreeSet<u16> = (1..=100).collect();
    assert_eq!(covered.keys().copied().collect::<BTreeSet<_>>(), expected, "codes run on");
}

/// Setup: one rejection of every code. Expect: exactly the retryable ones are of class
/// `Unavailable`: the same request may succeed later, so shells answer "try again".
/// (issue 15: shells classify by `class()`, never by the `Debug` text)
#[test]
fn t90_issue_15_every_reject_has_a_class_and_only_retryable_ones_are_unavailable() {
    let (prepared, fixture) = prepared();
    for (_, name, _, scenario) in scenarios() {
        let reject = scenario(&mut prepared.fork(), &fixture).expect_err(name);
        assert_eq!(reject.is_retryable(), reject.class() == Unavailable, "{name}");
    }
}

/// Setup: the prepared cluster, fresh for each scenario, and the state just before the call
/// that is refused (the last entry applied, or the access check). Action: every scenario, one
/// per reject code. Expect: the whole `State` after the refusal equals the state before, apart
/// from what a refusal is meant to change: the apply stamp (`Meta::last_applied_index`,
/// `Meta::time_ms_last`), the audit chain (`Meta::audit_chain`: the refusal is audited, with its
/// code) and the request-ID table (`Meta::sessions`: the outcome a retry gets back). An access
/// check changes nothing at all. (issue 15, point 6; STYLE 7)
#[test]
fn t90_issue_15_a_rejected_command_changes_nothing_but_stamp_chain_and_request_ids() {
    let (prepared, fixture) = prepared();
    let mut codes = BTreeSet::new();
    for (code, name, _, scenario) in scenarios() {
        let mut cluster = prepared.fork();
        let reject = scenario(&mut cluster, &fixture).expect_err(name);
        let before = cluster.before_last.take().expect("a refused call");
        let after = without_what_a_refusal_changes(&cluster.state, &before);
        assert!(after == before, "{name}: the refusal changed the state");
        match &cluster.last {
            Some(applied) => {
                assert_eq!(applied.result.as_ref().err(), Some(&reject), "{name}: by an entry");
                let AuditWhat::Command { outcome, .. } = &applied.events[0].what else {
                    panic!("{name}: an entry's first event records the command")
                };
                assert_eq!(*outcome, Outcome::Rejected { code }, "{name}: audited");
            }
            None => assert!(cluster.state == before, "{name}: an access check changes nothing"),
        }
        codes.insert(code);
    }
    let all: BTreeSet<u16> = codes_in_source().into_keys().collect();
    assert_eq!(codes, all, "every reject code is tried");
}

fn golden(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// Setup: the checked-in postcard encoding of the rejection of every scenario of codes 1 to 64,
/// pinned before issue 15 added variants (rejections are kept in snapshots with the outcome of
/// each request ID). Action: decode each. Expect: it decodes to the rejection its scenario
/// gives today and re-encodes to the same bytes. (SPEC "Serialization", A6)
#[test]
fn golden_rejects_v1_decode_unchanged() {
    let (prepared, fixture) = prepared();
    let mut rejects = std::collections::BTreeMap::new();
    for (code, name, _, scenario) in scenarios() {
        let result = scenario(&mut prepared.fork(), &fixture);
        rejects.insert(code, result.expect_err(name));
    }
    let path = golden("rejects-v1.bin");
    if std::env::var_os("BLESS").is_some() && !path.exists() {
        let mut bytes = Vec::new();
        for reject in rejects.values().filter(|reject| reject.code() <= 64) {
            let encoded = postcard::to_allocvec(reject).expect("a reject encodes");
            bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&encoded);
        }
        std::fs::write(&path, bytes).expect("write rejects");
    }
    let bytes = std::fs::read(&path).expect("tests/golden/rejects-v1.bin is checked in");
    let mut rest = bytes.as_slice();
    let mut code = 0;
    while !rest.is_empty() {
        code += 1;
        let len = u32::from_le_bytes(rest[..4].try_into().expect("length")) as usize;
        let encoded = &rest[4..4 + len];
        let reject: Reject = postcard::from_bytes(encoded).expect("a golden reject decodes");
        assert_eq!(reject.code(), code, "rejects are stored in code order");
        assert_eq!(&reject, &rejects[&code], "code {code} decodes to today's rejection");
        assert_eq!(postcard::to_allocvec(&reject).expect("encodes"), encoded);
        rest = &rest[4 + len..];
    }
    assert_eq!(code, 64, "the golden file holds codes 1 to 64");
}

/// Only an empty pool and a format not yet available are retryable: the client should try
/// again, later or elsewhere.
#[test]
fn only_an_empty_pool_and_a_closed_format_gate_are_retryable() {
    assert!(Reject::KeyPoolEmpty.is_retryable());
    let gate = Reject::FormatNotYetAvailable {
        kind: statemachine::CommandKind::ReportSoftwareVersion,
        format_needed: 2,
        cluster_format: 1,
    };
    assert!(gate.is_retryable());
    assert!(!Reject::NothingSelected.is_retryable());
    assert!(!Reject::ClusterNotInitialized.is_retryable());
}
