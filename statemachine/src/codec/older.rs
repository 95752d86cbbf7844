//! The snapshot shapes of older formats, frozen: each reads the bytes its format wrote and
//! becomes today's records. A shape here never changes; a new format adds its own.
//!
//! - Format 1 (before issue 6): `Meta` without the audit chain head.
//! - Format 2 (issue 6 to issue 15): `Meta` ends with the audit chain head; a KMA record has no
//!   version report (`Kma::version`).
//! - Format 3 (issue 15 to issue 16): a KMA record ends with its version report; it has no
//!   certificate (`Kma::certificate_sha256`), a user record has no sessions
//!   (`User::sessions`), and `Meta` ends with the audit chain head, without the cluster CA's
//!   wrapped key (`Meta::ca_key`), the failed-proof windows (`Meta::login_failures`), the CA
//!   rotation under way (`Meta::ca_rotation`), the rotated CA's certificate
//!   (`Meta::ca_certificate_der`) and the CA being retired (`Meta::retiring_ca`).
//! - Format 4 (issue 16, then issue 17 before its release): today's shapes. Issue 17 appended
//!   to the backup record (`Backup::taken_by` and after) and to `Meta`
//!   (`Meta::quorum_changed_index`, `Meta::cluster_epoch`) while format 4 was unreleased, and
//!   issue 18 the staged 1.x imports (`Meta::imports_1x`, with a record per staged key), the
//!   disabled partners and the transfer files imported (`Meta::disabled_partners`,
//!   `Meta::transfer_files`).
//!
//! A backup record of formats 1 to 3 ends at `Backup::destroyed` ([`BackupV1`]).
//!
//! Keys, data units and the trailer have kept one shape in every format so far, and so has
//! every type inside `Meta` but the KMA, user and backup records. Postcard writes a struct as its
//! fields one after the other, so a shape that only appends fields nests the older one.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::Deserialize;

use crate::agent::Agent;
use crate::audit::AuditChain;
use crate::backup::{Backup, BackupKind};
use crate::cluster::{
    BackupSchedule, ClusterInfo, KeyPoolLimits, Kma, KmaStatus, SecuritySettings, Site, User,
};
use crate::command::Actor;
use crate::format::KmaVersion;
use crate::ids::{KeyGroupId, KeyPolicyId, NodeId};
use crate::partner::{TransferKeyPair, TransferPartner};
use crate::policy::{KeyGroup, KeyPolicy};
use crate::quorum::{PendingQuorumOperation, Quorum};
use crate::role::RoleSet;
use crate::state::{ClientSession, Meta};

/// A KMA record of snapshot formats 1 and 2.
#[derive(Deserialize)]
pub(super) struct KmaV1 {
    name: String,
    node_id: NodeId,
    site: String,
    status: KmaStatus,
    passphrase_verifier: Vec<u8>,
    locked: bool,
    autonomous_unlock: bool,
    software_version: u32,
    created_at_ms: u64,
}

/// A KMA record of snapshot format 3: that of formats 1 and 2, then its full version report.
#[derive(Deserialize)]
pub(super) struct KmaV3 {
    v1: KmaV1,
    version: Option<KmaVersion>,
}

/// A user record of snapshot formats 1 to 3.
#[derive(Deserialize)]
pub(super) struct UserV1 {
    id: String,
    roles: RoleSet,
    enabled: bool,
    passphrase_verifier: Vec<u8>,
    created_at_ms: u64,
}

impl From<UserV1> for User {
    fn from(user: UserV1) -> User {
        User {
            id: user.id,
            roles: user.roles,
            enabled: user.enabled,
            passphrase_verifier: user.passphrase_verifier,
            created_at_ms: user.created_at_ms,
            // No session could be recorded before log format 3, nor kept before format 4.
            sessions: Vec::new(),
        }
    }
}

impl From<KmaV3> for Kma {
    fn from(kma: KmaV3) -> Kma {
        Kma { version: kma.version, ..Kma::from(kma.v1) }
    }
}

impl From<KmaV1> for Kma {
    fn from(kma: KmaV1) -> Kma {
        kma.into_kma()
    }
}

impl KmaV1 {
    fn into_kma(self) -> Kma {
        Kma {
            name: self.name,
            node_id: self.node_id,
            site: self.site,
            status: self.status,
            passphrase_verifier: self.passphrase_verifier,
            locked: self.locked,
            autonomous_unlock: self.autonomous_unlock,
            software_version: self.software_version,
            created_at_ms: self.created_at_ms,
            // No KMA could report in full before format 3.
            version: None,
            // No snapshot before format 4 holds a certificate.
            certificate_sha256: None,
        }
    }
}

/// A backup record of snapshot formats 1 to 3.
#[derive(Deserialize)]
pub(super) struct BackupV1 {
    id: u64,
    kind: BackupKind,
    kma: String,
    file_name: String,
    covers_index: u64,
    taken_at_ms: u64,
    destroyed: bool,
}

impl From<BackupV1> for Backup {
    fn from(backup: BackupV1) -> Backup {
        Backup {
            id: backup.id,
            kind: backup.kind,
            kma: backup.kma,
            file_name: backup.file_name,
            covers_index: backup.covers_index,
            taken_at_ms: backup.taken_at_ms,
            destroyed: backup.destroyed,
            // Recorded from log format 3 on, kept from snapshot format 4.
            taken_by: String::new(),
            size_bytes: 0,
            file_sha256: [0; 32],
            state_sha256: [0; 32],
            backup_uuid: [0; 16],
            drill: None,
        }
    }
}

/// `Meta` of snapshot format 1, its KMA records of shape `K` so that format 3 can reuse it.
#[derive(Deserialize)]
pub(super) struct MetaV1<K = KmaV1> {
    cluster: Option<ClusterInfo>,
    last_applied_index: u64,
    time_ms_last: u64,
    next_node_id: u64,
    next_data_unit_serial: u64,
    next_policy_id: u32,
    next_group_id: u32,
    next_quorum_operation_id: u64,
    next_backup_id: u64,
    security: SecuritySettings,
    pool_limits: KeyPoolLimits,
    backup_schedule: Option<BackupSchedule>,
    sites: BTreeMap<String, Site>,
    kmas: BTreeMap<String, K>,
    users: BTreeMap<String, UserV1>,
    quorum: Quorum,
    quorum_operations: BTreeMap<u64, PendingQuorumOperation>,
    policies: BTreeMap<KeyPolicyId, KeyPolicy>,
    groups: BTreeMap<KeyGroupId, KeyGroup>,
    agents: BTreeMap<String, Agent>,
    partners: BTreeMap<String, TransferPartner>,
    transfer_key_pair: Option<TransferKeyPair>,
    backups: BTreeMap<u64, BackupV1>,
    sessions: BTreeMap<Actor, BTreeMap<u64, ClientSession>>,
}

/// `Meta` of snapshot format 2: that of format 1, then the audit chain head. Postcard writes a
/// struct as its fields one after the other, so the nested struct reads the same bytes. With
/// KMA records of format 3 ([`KmaV3`]), it is `Meta` of snapshot format 3.
#[derive(Deserialize)]
pub(super) struct MetaV2<K = KmaV1> {
    v1: MetaV1<K>,
    audit_chain: AuditChain,
}

/// `Meta` of snapshot format 3.
pub(super) type MetaV3 = MetaV2<KmaV3>;

impl MetaV1 {
    /// A format-1 snapshot predates the audit chain: the chain starts again from it
    /// (`AuditChain::GENESIS`), and an audit log continued from that state is anchored there.
    pub(super) fn into_meta(self) -> Meta {
        self.into_meta_with(AuditChain::GENESIS)
    }
}

impl<K: Into<Kma>> MetaV1<K> {
    fn into_meta_with(self, audit_chain: AuditChain) -> Meta {
        let kmas = self.kmas.into_iter().map(|(name, kma)| (name, kma.into())).collect();
        let users = self.users.into_iter().map(|(id, user)| (id, user.into())).collect();
        let backups = self.backups.into_iter().map(|(id, backup)| (id, backup.into())).collect();
        Meta {
            cluster: self.cluster,
            last_applied_index: self.last_applied_index,
            time_ms_last: self.time_ms_last,
            next_node_id: self.next_node_id,
            next_data_unit_serial: self.next_data_unit_serial,
            next_policy_id: self.next_policy_id,
            next_group_id: self.next_group_id,
            next_quorum_operation_id: self.next_quorum_operation_id,
            next_backup_id: self.next_backup_id,
            security: self.security,
            pool_limits: self.pool_limits,
            backup_schedule: self.backup_schedule,
            sites: self.sites,
            kmas,
            users,
            quorum: self.quorum,
            quorum_operations: self.quorum_operations,
            policies: self.policies,
            groups: self.groups,
            agents: self.agents,
            partners: self.partners,
            transfer_key_pair: self.transfer_key_pair,
            backups,
            sessions: self.sessions,
            audit_chain,
            // No CA key could be recorded before log format 3, nor kept before format 4.
            ca_key: None,
            // Failed proofs were counted from log format 3 only, and kept from format 4.
            login_failures: BTreeMap::new(),
            // No CA rotation could be approved before log format 3, nor kept before format 4.
            ca_rotation: None,
            ca_certificate_der: None,
            retiring_ca: None,
            // Quorum versions and epochs were counted from log format 3 only, and kept from
            // format 4; a state that reaches format 3 counts them from 0, as a replay does.
            quorum_changed_index: 0,
            cluster_epoch: 0,
            // No 1.x import was staged before log format 3, nor kept before format 4.
            imports_1x: BTreeMap::new(),
            // Partners were disabled and files imported with their IDs from log format 3 only.
            disabled_partners: Default::default(),
            transfer_files: BTreeMap::new(),
            // KMIP rights were granted from log format 3 only (issue 19).
            kmip_revokers: Default::default(),
        }
    }
}

impl<K: Into<Kma>> MetaV2<K> {
    pub(super) fn into_meta(self) -> Meta {
        self.v1.into_meta_with(self.audit_chain)
    }
}
