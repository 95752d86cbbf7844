//! State records → API shapes. Pure functions of the state and a `now`: what a list shows is what
//! the state machine would derive (key states come from `State::key_state_at`).

use serde_json::json;
use statemachine::backup::BackupKind;
use statemachine::cluster::KmaStatus;
use statemachine::key::KeyOrigin;
use statemachine::quorum::{PendingQuorumOperation, QuorumOperation};
use statemachine::{KeyGroupId, Reply, RoleSet, State};

use crate::api;

pub fn roles(roles: RoleSet) -> Vec<String> {
    roles.iter().map(|role| api::role_name(role).to_string()).collect()
}

pub fn group_name(state: &State, id: KeyGroupId) -> String {
    state.meta().groups.get(&id).map_or_else(|| format!("#{}", id.0), |group| group.name.clone())
}

pub fn kma_status(status: KmaStatus) -> &'static str {
    match status {
        KmaStatus::Created => "created",
        KmaStatus::JoinApproved => "join-approved",
        KmaStatus::Member => "member",
    }
}

pub fn site(site: &statemachine::cluster::Site) -> api::Site {
    api::Site { name: site.name.clone(), created_at_ms: site.created_at_ms }
}

pub fn kma(kma: &statemachine::cluster::Kma) -> api::Kma {
    api::Kma {
        name: kma.name.clone(),
        node_id: kma.node_id,
        site: kma.site.clone(),
        status: kma_status(kma.status).into(),
        locked: kma.locked,
        autonomous_unlock: kma.autonomous_unlock,
        software_version: kma.software_version,
        created_at_ms: kma.created_at_ms,
    }
}

pub fn user(user: &statemachine::cluster::User) -> api::User {
    api::User {
        id: user.id.clone(),
        roles: roles(user.roles),
        enabled: user.enabled,
        created_at_ms: user.created_at_ms,
    }
}

pub fn quorum_operation(operation: &QuorumOperation) -> String {
    match operation {
        QuorumOperation::JoinKma { kma } => format!("join-kma {kma}"),
        QuorumOperation::UnlockKma { kma } => format!("unlock-kma {kma}"),
        QuorumOperation::EnableAutonomousUnlock { kma } => {
            format!("enable-autonomous-unlock {kma}")
        }
        QuorumOperation::ChangeQuorum { quorum } => format!(
            "change-quorum {} of {}",
            quorum.threshold,
            quorum.members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(",")
        ),
        QuorumOperation::CreateTransferPartner { name, .. } => {
            format!("create-transfer-partner {name}")
        }
        QuorumOperation::RestoreFromBackup { backup_id } => {
            format!("restore-from-backup {backup_id}")
        }
        QuorumOperation::RotateCa => "rotate-ca".into(),
    }
}

pub fn pending(state: &State, pending: &PendingQuorumOperation) -> api::QuorumOperationView {
    api::QuorumOperationView {
        id: pending.id,
        operation: quorum_operation(&pending.operation),
        started_by: pending.started_by.clone(),
        started_at_ms: pending.started_at_ms,
        expires_at_ms: pending.expires_at_ms,
        approvals: pending.approvals.iter().cloned().collect(),
        threshold: state.meta().quorum.threshold,
    }
}

pub fn policy(policy: &statemachine::policy::KeyPolicy) -> api::KeyPolicy {
    api::KeyPolicy {
        name: policy.name.clone(),
        encryption_period_ms: policy.encryption_period_ms,
        cryptoperiod_ms: policy.cryptoperiod_ms,
        allow_export: policy.allow_export,
        allow_import: policy.allow_import,
    }
}

pub fn group(state: &State, group: &statemachine::policy::KeyGroup) -> api::KeyGroup {
    let policy = state
        .meta()
        .policies
        .get(&group.policy)
        .map_or_else(|| format!("#{}", group.policy.0), |policy| policy.name.clone());
    api::KeyGroup {
        name: group.name.clone(),
        policy,
        keys: state.keys_in_group(group.id),
        created_at_ms: group.created_at_ms,
    }
}

pub fn agent(state: &State, agent: &statemachine::agent::Agent) -> api::Agent {
    api::Agent {
        id: agent.id.clone(),
        site: agent.site.clone(),
        enrolled: agent.certificate_fingerprint.is_some(),
        enabled: agent.enabled,
        key_groups: agent.key_groups.iter().map(|id| group_name(state, *id)).collect(),
        default_key_group: agent.default_key_group.map(|id| group_name(state, id)),
        created_at_ms: agent.created_at_ms,
        kmip_revoke_and_destroy: state.meta().kmip_revokers.contains(&agent.id),
    }
}

fn origin(origin: KeyOrigin) -> &'static str {
    match origin {
        KeyOrigin::Pool => "pool",
        KeyOrigin::Imported1x => "imported-1x",
        KeyOrigin::Transferred => "transferred",
        KeyOrigin::RegisteredKmip => "registered-kmip",
    }
}

pub fn key(state: &State, key: &statemachine::key::Key, now_ms: u64) -> api::Key {
    api::Key {
        id: key.id.to_string(),
        state: state.key_state_at(key, now_ms).name().into(),
        group: key.group.map(|id| group_name(state, id)),
        origin: origin(key.origin).into(),
        created_at_ms: key.created_at_ms,
        activated_at_ms: key.activation.map(|a| a.activated_at_ms),
        encryption_ends_at_ms: key.activation.map(|a| a.encryption_ends_at_ms),
        deactivates_at_ms: key.activation.map(|a| a.deactivates_at_ms),
        compromised_at_ms: key.compromised_at_ms.map(|at| at.get()),
        destroyed_at_ms: key.destroyed_at_ms.map(|at| at.get()),
        data_units: key.data_units.iter().map(ToString::to_string).collect(),
    }
}

pub fn data_unit(
    state: &State,
    unit: &statemachine::data_unit::DataUnit,
    now_ms: u64,
) -> api::DataUnit {
    let keys = unit
        .keys
        .iter()
        .map(|association| api::DataUnitKey {
            key_id: association.key_id.to_string(),
            in_use: association.in_use,
            state: state
                .key_state(&association.key_id, now_ms)
                .map_or("unknown", |state| state.name())
                .into(),
        })
        .collect();
    api::DataUnit {
        id: unit.id.to_string(),
        external_tag: unit.external_tag.clone(),
        state: state.data_unit_state_at(unit, now_ms).name().into(),
        created_at_ms: unit.created_at_ms,
        keys,
    }
}

pub fn backup(backup: &statemachine::backup::Backup) -> api::Backup {
    api::Backup {
        id: backup.id,
        kind: match backup.kind {
            BackupKind::Database => "database",
            BackupKind::CoreSecurity => "core-security",
        }
        .into(),
        kma: backup.kma.clone(),
        file_name: backup.file_name.clone(),
        covers_index: backup.covers_index,
        taken_at_ms: backup.taken_at_ms,
        destroyed: backup.destroyed,
        taken_by: backup.taken_by.clone(),
        size_bytes: backup.size_bytes,
        file_sha256: if backup.file_sha256 == [0; 32] {
            String::new()
        } else {
            hex::encode(backup.file_sha256)
        },
        drill: match &backup.drill {
            Some(drill) if drill.passed => "passed".into(),
            Some(_) => "failed".into(),
            None => String::new(),
        },
        drill_detail: backup.drill.as_ref().map(|d| d.detail.clone()).unwrap_or_default(),
    }
}

pub fn preview(preview: &statemachine::query::ImpactPreview) -> api::ImpactPreview {
    api::ImpactPreview {
        keys: preview.keys.iter().map(ToString::to_string).collect(),
        data_units_losing_access: preview.data_units.iter().map(ToString::to_string).collect(),
        shared_with_unselected: preview
            .shared_with_unselected
            .iter()
            .map(ToString::to_string)
            .collect(),
        digest: format!("{:016x}", preview.digest),
    }
}

/// What a command's reply says, as JSON for `Done.detail`.
pub fn reply(reply: &Reply) -> serde_json::Value {
    match reply {
        Reply::Done => json!({}),
        Reply::KmaCreated { node_id } => json!({ "node_id": node_id }),
        Reply::KeyPolicyCreated { id } => json!({ "policy_id": id.0 }),
        Reply::KeyGroupCreated { id } => json!({ "group_id": id.0 }),
        Reply::QuorumOperationStarted { id, expires_at_ms } => {
            json!({ "quorum_operation": id, "expires_at_ms": expires_at_ms })
        }
        Reply::QuorumApproval { id, approvals, threshold, completed } => json!({
            "quorum_operation": id, "approvals": approvals, "threshold": threshold,
            "completed": completed,
        }),
        Reply::PoolKeysAdded { count, ready } => json!({ "count": count, "ready": ready }),
        Reply::Pulse { transitions, more_due } => {
            json!({ "transitions": transitions, "more_due": more_due })
        }
        Reply::DataUnitCreated { data_unit } => json!({ "data_unit": data_unit.to_string() }),
        Reply::WriteKey { data_unit, key_id, reused } => json!({
            "data_unit": data_unit.to_string(), "key_id": key_id.to_string(), "reused": reused,
        }),
        Reply::KeysDisassociated { count } | Reply::KeysChanged { count } => {
            json!({ "count": count })
        }
        Reply::KeyAssociated { data_unit, key_id } | Reply::KmipKey { data_unit, key_id } => {
            json!({ "data_unit": data_unit.to_string(), "key_id": key_id.to_string() })
        }
        Reply::Exported { keys, data_units } => {
            json!({ "keys": keys.len(), "data_units": data_units.len() })
        }
        Reply::Imported { keys, duplicates, data_units } => {
            json!({ "keys": keys, "duplicates": duplicates, "data_units": data_units })
        }
        Reply::BackupRecorded { id } => json!({ "backup": id }),
        Reply::ClusterRestored(summary) => json!({
            "keys": summary.keys, "data_units": summary.data_units,
            "pool_keys_quarantined": summary.pool_keys_quarantined,
            "kmas_removed": summary.kmas_removed,
        }),
        Reply::RecoveredFromLostMajority { kmas_removed, pool_keys_quarantined, cluster_epoch } => {
            json!({
                "kmas_removed": kmas_removed, "pool_keys_quarantined": pool_keys_quarantined,
                "cluster_epoch": cluster_epoch,
            })
        }
        Reply::Staged1x { keys_received, duplicates } => {
            json!({ "keys_received": keys_received, "duplicates": duplicates })
        }
    }
}
