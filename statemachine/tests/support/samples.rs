//! One valid command of every kind, shared by the role matrix and the golden encodings.

use statemachine::cluster::{BackupSchedule, KeyPoolLimits, SecuritySettings};
use statemachine::command::{
    DestroySelection, InitCluster, TransferDirection, TransferredDataUnit, TransferredKey,
};
use statemachine::key::{Activation, KeyCheckValue};
use statemachine::kmip::{KmipAttribute, KmipValue};
use statemachine::quorum::QuorumOperation;
use statemachine::{Actor, Command, KeyId, Role, RoleSet};

use super::*;

/// One valid command of every kind against the [`prepared`] cluster.
#[allow(clippy::too_many_lines)]
pub fn samples(cluster: &mut TestCluster, f: &Fixture) -> Vec<Command> {
    let now = cluster.now_ms;
    let units = vec![f.spoiled_unit];
    let destroy_digest = cluster
        .state
        .destroy_preview(&units, DestroySelection::CompromisedOnly, now)
        .expect("preview")
        .digest;
    let change_digest =
        cluster.state.group_change_preview(&[f.unit], "second", now).expect("preview").digest;
    let key_destroy_digest =
        cluster.state.key_destroy_preview(&[f.compromised]).expect("preview").digest;
    let transferred = TransferredDataUnit {
        id: statemachine::DataUnitId { cluster_id: statemachine::ClusterId(99), serial: 1 },
        external_tag: "P1-001".into(),
        keys: vec![TransferredKey {
            id: statemachine::KeyId([0x99; 30]),
            material: fake_wrap([0x99; 32]),
            check_value: KeyCheckValue([0x99; 16]),
            created_at_ms: now - DAY_MS,
            activation: Activation {
                activated_at_ms: now - DAY_MS,
                encryption_ends_at_ms: now,
                deactivates_at_ms: now + YEAR_MS,
            },
            compromised_at_ms: None,
        }],
    };
    let legacy = statemachine::command::Legacy1xKey {
        id: statemachine::KeyId([0x77; 30]),
        material: fake_wrap([0x77; 32]),
        check_value: KeyCheckValue([0x77; 16]),
        description: String::new(),
    };
    let s = |text: &str| text.to_string();
    vec![
        Command::InitCluster(InitCluster {
            cluster_id: CLUSTER,
            kma_name: s("x"),
            site: s("x"),
            security_officer: s("x"),
            security_officer_verifier: vec![1],
            quorum: quorum(1, 1),
            autonomous_unlock: false,
        }),
        Command::CreateSite { name: s("west") },
        Command::DeleteSite { name: s("empty-site") },
        Command::CreateKma { name: s("kma4"), site: s("east"), passphrase_verifier: vec![1; 8] },
        Command::KmaJoined { name: s("kma5") },
        Command::DeleteKma { name: s("kma3") },
        Command::LockKma { name: s("kma2") },
        Command::DisableAutonomousUnlock { name: s("kma2") },
        Command::ReportSoftwareVersion { kma: s("kma1"), version: 1 },
        Command::RecordCommunicationError {
            from_kma: s("kma1"),
            to_kma: s("kma2"),
            detail: s("timeout"),
        },
        Command::SetSecuritySettings(SecuritySettings::default()),
        Command::SetKeyPoolLimits(KeyPoolLimits::default()),
        Command::CreateUser {
            id: s("new"),
            roles: RoleSet::of(Role::Auditor),
            passphrase_verifier: vec![1; 8],
        },
        Command::SetUserRoles { id: s("au2"), roles: RoleSet::ALL },
        Command::SetUserEnabled { id: s("au2"), enabled: false },
        Command::SetUserPassphrase { id: s("au2"), passphrase_verifier: vec![9; 8] },
        Command::DeleteUser { id: s("au2") },
        Command::RecordAuthenticationFailure { principal: s("mallory"), source: s("10.0.0.9") },
        Command::StartQuorumOperation {
            operation: QuorumOperation::JoinKma { kma: s("kma3") },
            ttl_ms: None,
        },
        Command::StartQuorumOperation {
            operation: QuorumOperation::UnlockKma { kma: s("kma2") },
            ttl_ms: None,
        },
        Command::StartQuorumOperation {
            operation: QuorumOperation::EnableAutonomousUnlock { kma: s("kma2") },
            ttl_ms: None,
        },
        Command::StartQuorumOperation {
            operation: QuorumOperation::ChangeQuorum { quorum: quorum(5, 3) },
            ttl_ms: None,
        },
        Command::StartQuorumOperation {
            operation: QuorumOperation::CreateTransferPartner {
                name: s("p2"),
                public_key: vec![1; 64],
            },
            ttl_ms: None,
        },
        Command::StartQuorumOperation {
            operation: QuorumOperation::RestoreFromBackup { backup_id: f.backup },
            ttl_ms: Some(DAY_MS),
        },
        Command::ApproveQuorumOperation { id: f.pending, member: s("q1") },
        Command::CancelQuorumOperation { id: f.pending },
        Command::CreateKeyPolicy {
            name: s("new"),
            encryption_period_ms: DAY_MS,
            cryptoperiod_ms: YEAR_MS,
            allow_export: false,
            allow_import: false,
        },
        Command::SetKeyPolicyFlags { name: s("std"), allow_export: false, allow_import: true },
        Command::DeleteKeyPolicy { name: s("lonely") },
        Command::CreateKeyGroup { name: s("new"), policy: s("std") },
        Command::DeleteKeyGroup { name: s("empty-group") },
        Command::CreateAgent { id: s("drive9"), site: s("east"), passphrase_verifier: vec![1; 8] },
        Command::SetAgentPassphrase { id: s("drive8"), passphrase_verifier: vec![1; 8] },
        Command::SetAgentEnabled { id: s("drive1"), enabled: true },
        Command::SetAgentSite { id: s("drive1"), site: s("east") },
        Command::DeleteAgent { id: s("drive8") },
        Command::RecordAgentEnrollment { id: s("drive8"), certificate_fingerprint: [1; 32] },
        Command::AssignKeyGroupToAgent { agent: s("drive8"), group: s("std") },
        Command::UnassignKeyGroupFromAgent { agent: s("drive1"), group: s("second") },
        Command::SetAgentDefaultKeyGroup { agent: s("drive1"), group: s("second") },
        Command::GeneratePoolKeys { keys: vec![cluster.new_key()] },
        Command::QuarantineKeyPool,
        Command::Pulse,
        Command::CreateDataUnit { external_tag: s("VOL999") },
        Command::AssignWriteKey { data_unit: f.empty_unit, from_bot: true },
        Command::DisassociateKeysOnBot { data_unit: f.unit },
        Command::AssociateKeyForRead {
            key_id: f.legacy,
            data_unit: Some(f.empty_unit),
            external_tag: String::new(),
        },
        Command::CompromiseKeys { keys: vec![f.key] },
        Command::DestroyKeys { keys: vec![f.compromised] },
        Command::DestroyDataUnitKeys {
            data_units: units,
            selection: DestroySelection::CompromisedOnly,
            preview_digest: destroy_digest,
        },
        Command::ChangeDataUnitKeyGroup {
            data_units: vec![f.unit],
            group: s("second"),
            preview_digest: change_digest,
        },
        // The pair the prepared cluster holds: from log format 3 a KMA records it once.
        Command::SetTransferKeyPair { public_key: vec![6; 32], wrapped_private_key: vec![7; 48] },
        Command::DeleteTransferPartner { name: s("p1") },
        Command::AssignKeyGroupToPartner {
            partner: s("p1"),
            group: s("std"),
            direction: TransferDirection::Export,
        },
        Command::UnassignKeyGroupFromPartner {
            partner: s("p1"),
            group: s("std"),
            direction: TransferDirection::Import,
        },
        Command::RecordKeyExport { partner: s("p1"), data_units: vec![f.unit] },
        Command::ImportTransferredKeys {
            partner: s("p1"),
            group: s("std"),
            data_units: vec![transferred.clone()],
        },
        Command::Import1xKeys { group: s("std"), keys: vec![legacy] },
        Command::MarkBackupDestroyed { id: f.backup },
        Command::SetBackupSchedule {
            schedule: Some(BackupSchedule { interval_ms: DAY_MS, kma: s("kma1") }),
        },
        Command::RecordLogin { principal: s("co"), source: s("10.0.0.7") },
        // Log format 3: the destroy by key ID with its preview (the kind DestroyKeys).
        Command::DestroyKeysPreviewed {
            keys: vec![f.compromised],
            preview_digest: key_destroy_digest,
        },
        // Log format 3: certificates bound to the state (issue 16 point 2). The login with its
        // session certificate is of the kind RecordLogin; kma5's join is approved; kma1 is
        // node 1, through which the samples come.
        Command::RecordUserSession {
            principal: s("co"),
            source: s("10.0.0.7"),
            certificate_sha256: [0xd1; 32],
            expires_at_ms: now + DAY_MS,
        },
        Command::GrantKmaJoin { name: s("kma5"), certificate_sha256: [0xc5; 32] },
        Command::RecordKmaCertificate { name: s("kma1"), certificate_sha256: [0xc1; 32] },
        // Log format 3: the cluster CA's key, wrapped under the master key (issue 16 point 1).
        Command::RecordCaKey { ca_certificate_sha256: [0xca; 32], wrapped_key: vec![0x77; 96] },
        // Log format 3: quorum members unlocked a KMA with their passphrases (issue 16 point 5).
        Command::RecordMemberUnlock { kma: s("kma1"), members: vec![s("q1")] },
        // Log format 3: a CA rotation (issue 16 point 1), each step applied on a cluster brought
        // to it by `stage_for`.
        Command::StartQuorumOperation { operation: QuorumOperation::RotateCa, ttl_ms: None },
        begin_ca_rotation(0xcc),
        Command::RecordReissuedKmaCertificate { name: s("kma1"), certificate_sha256: [0xe1; 32] },
        Command::CompleteCaRotation,
        // Log format 3: a KMA adopted the new CA of a completed rotation (issue 16 point 1).
        Command::RecordCaAdopted { name: s("kma1") },
        // Log format 3 (issue 17): a core security backup of the current quorum, recorded by
        // kma1 (node 1, through which the samples come); a restore drill of the fixture's
        // database backup; and the local ceremonies, applied through node 1 as the restoring
        // KMA and the survivor.
        Command::RecordBackup {
            kind: statemachine::backup::BackupKind::CoreSecurity,
            kma: s("kma1"),
            file_name: s("core.xml"),
            covers_index: cluster.state.quorum_changed_index(),
            taken_by: s("bo"),
            size_bytes: 2_048,
            file_sha256: [0xf5; 32],
            state_sha256: [0; 32],
            backup_uuid: [0xb5; 16],
        },
        Command::RecordBackupDrill {
            backup_id: f.backup,
            kma: s("kma1"),
            passed: true,
            detail: s("restored into a scratch state"),
        },
        Command::RestoreCluster(restore_of_kma9()),
        Command::RecoverFromLostMajority {
            kma_name: s("kma1"),
            node_id: 1,
            certificate_sha256: [0xc5; 32],
        },
        Command::SetTransferPartnerEnabled { name: s("p1"), enabled: false },
        Command::RecordTransferExport(statemachine::command::TransferExport {
            partner: s("p1"),
            requested_by: s("op"),
            file_id: [1; 16],
            data_units: vec![f.unit],
            keys: vec![f.key],
        }),
        Command::ImportTransferFile(statemachine::command::TransferImport {
            partner: s("p1"),
            group: s("std"),
            requested_by: s("op"),
            file_id: [2; 16],
            data_units: vec![transferred.clone()],
        }),
        // Issue 19: KMIP clients. The commands on an existing KMIP key act on the one
        // `stage_for` registers (`kmip_sample_key`), with the right to revoke and destroy.
        Command::CreateKmipKey { usage_mask: 12, attributes: kmip_sample_attributes() },
        Command::RegisterKmipKey {
            key: cluster.new_key(),
            usage_mask: 12,
            attributes: kmip_sample_attributes(),
        },
        Command::ActivateKmipKey { key_id: kmip_sample_key().id },
        Command::SetKmipAttributes {
            key_id: kmip_sample_key().id,
            revision: 1,
            attributes: vec![KmipAttribute::new("x-Barcode", KmipValue::Text(s("XXA012A2")))],
        },
        Command::RevokeKmipKey { key_id: kmip_sample_key().id, compromised: false },
        Command::DestroyKmipKey { key_id: kmip_sample_key().id },
        Command::SetAgentKmipRights { agent: s("drive1"), revoke_and_destroy: true },
        Command::RecordKmipReads {
            reads: vec![statemachine::audit::KmipReadCount {
                agent: s("drive1"),
                operation: 0x0A,
                count: 3,
                refused: 1,
                keys: vec![f.key],
                keys_not_named: 0,
                from_ms: now,
                to_ms: now + SECOND_MS,
            }],
        },
    ]
}

/// What a tape library gives a new key (the Tape Library profile's TL-M-2): a name, the
/// barcode, the key-associated data as Application Specific Information, vendor attributes.
pub fn kmip_sample_attributes() -> Vec<KmipAttribute> {
    let name = |value: &str| KmipValue::Name { value: value.into(), name_type: 1 };
    vec![
        KmipAttribute::new("Name", name("AAAAAAA1A1AA12345678901234567")),
        KmipAttribute::new("Alternative Name", name("XXA012A1")),
        KmipAttribute::new(
            "Application Specific Information",
            KmipValue::ApplicationInfo {
                namespace: "LIBRARY-LTO".into(),
                data: "123456789ABCDEF123456789123456789ABCDEF123456789ABCDEF1234000000".into(),
            },
        ),
        KmipAttribute::new("x-VendorAttribute2", KmipValue::Integer(7)),
        KmipAttribute::new("x-VendorAttribute3", KmipValue::DateTime(1_400_000_000)),
    ]
}

/// The key a KMIP client registers in `stage_for`, with a known ID.
pub fn kmip_sample_key() -> statemachine::command::NewKey {
    statemachine::command::NewKey {
        id: KeyId::native(CLUSTER, [0x19; 22]),
        material: fake_wrap([0x19; 32]),
        check_value: KeyCheckValue([0x19; 16]),
    }
}

/// Brings the prepared cluster, at log format 3, to the step of a CA rotation that `command`
/// of [`samples`] takes: a CA key to rotate for the start; an approved rotation for its
/// beginning; a begun one for a reissued certificate; every KMA reissued for the completion;
/// a completed one, its old CA retiring, for an adoption. Any other command needs nothing.
pub fn stage_for(cluster: &mut TestCluster, command: &Command) {
    if let Command::ActivateKmipKey { .. }
    | Command::SetKmipAttributes { .. }
    | Command::RevokeKmipKey { .. }
    | Command::DestroyKmipKey { .. } = command
    {
        let register = Command::RegisterKmipKey {
            key: kmip_sample_key(),
            usage_mask: 12,
            attributes: kmip_sample_attributes(),
        };
        cluster.ok(agent("drive1"), register);
        let grant =
            Command::SetAgentKmipRights { agent: "drive1".into(), revoke_and_destroy: true };
        cluster.ok(so(), grant);
        if let Command::DestroyKmipKey { key_id } = command {
            let revoke = Command::RevokeKmipKey { key_id: *key_id, compromised: false };
            cluster.ok(agent("drive1"), revoke);
        }
        return;
    }
    if let Command::RecordTransferExport(export) = command {
        // An export needs a group assigned to the partner for export.
        let assign = Command::AssignKeyGroupToPartner {
            partner: export.partner.clone(),
            group: "std".into(),
            direction: TransferDirection::Export,
        };
        cluster.ok(co(), assign);
        return;
    }
    let step = match command {
        Command::StartQuorumOperation { operation: QuorumOperation::RotateCa, .. } => 1,
        Command::BeginCaRotation { .. } => 2,
        Command::RecordReissuedKmaCertificate { .. } => 3,
        Command::CompleteCaRotation => 4,
        Command::RecordCaAdopted { .. } => 5,
        _ => return,
    };
    cluster.record_ca_key();
    if step >= 2 {
        cluster.approve_ca_rotation();
    }
    if step >= 3 {
        cluster.ok(Actor::System, begin_ca_rotation(0xcc));
    }
    if step >= 4 {
        cluster.reissue_every_kma();
    }
    if step >= 5 {
        cluster.ok(Actor::System, Command::CompleteCaRotation);
    }
}

/// A restore onto `kma9` at site `west`, through node 1 (the node the test cluster applies
/// through): the KMA restoring applies it as itself.
pub fn restore_of_kma9() -> statemachine::command::RestoreCluster {
    statemachine::command::RestoreCluster {
        backup_uuid: [0xb0; 16],
        file_name: "b0.kms".into(),
        covers_index: 3,
        taken_at_ms: START_MS,
        taken_on_kma: "kma1".into(),
        state_sha256: [0x5a; 32],
        kma_name: "kma9".into(),
        site: "west".into(),
        node_id: 1,
        certificate_sha256: [0xc9; 32],
        software_version: 3,
        keys_destroyed_since_backup: Vec::new(),
    }
}
