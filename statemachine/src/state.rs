//! The replicated state of a cluster and the derived views of it.
//!
//! `meta` holds the small records, `keys` and `data_units` the large ones; `index` is derived
//! from the three, never serialized, and rebuilt after a snapshot is loaded.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::audit::AuditChain;
use crate::backup::{Backup, BackupKind};
use crate::cluster::{
    BackupSchedule, CaRotation, ClusterInfo, FailureWindow, KeyPoolLimits, Kma, KmaStatus,
    RetiringCa, SecuritySettings, Site, User, WrappedCaKey,
};
use crate::command::{Actor, Legacy1xKey};
use crate::data_unit::{DataUnit, DataUnitState};
use crate::ids::{ClusterId, DataUnitId, KeyGroupId, KeyId, KeyPolicyId};
use crate::import_1x::StagedImport1x;
use crate::key::{key_state_at, Key, KeyState};
use crate::kmip::KmipObject;
use crate::partner::{TransferFileRecord, TransferKeyPair, TransferPartner};
use crate::policy::{KeyGroup, KeyPolicy};
use crate::quorum::{PendingQuorumOperation, Quorum};
use crate::reject::Reject;
use crate::reply::Reply;

/// Outcome of one request, kept so a retry gets the same answer (SPEC A6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedOutcome {
    pub seq: u64,
    pub body_digest: u64,
    pub result: Result<Reply, Reject>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSession {
    pub last_used_ms: u64,
    pub outcomes: VecDeque<RecordedOutcome>,
}

/// Every record but keys and data units: small enough to snapshot in one piece.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub cluster: Option<ClusterInfo>,
    pub last_applied_index: u64,
    pub time_ms_last: u64,
    pub next_node_id: u64,
    pub next_data_unit_serial: u64,
    pub next_policy_id: u32,
    pub next_group_id: u32,
    pub next_quorum_operation_id: u64,
    pub next_backup_id: u64,
    pub security: SecuritySettings,
    pub pool_limits: KeyPoolLimits,
    pub backup_schedule: Option<BackupSchedule>,
    pub sites: BTreeMap<String, Site>,
    pub kmas: BTreeMap<String, Kma>,
    pub users: BTreeMap<String, User>,
    pub quorum: Quorum,
    pub quorum_operations: BTreeMap<u64, PendingQuorumOperation>,
    pub policies: BTreeMap<KeyPolicyId, KeyPolicy>,
    pub groups: BTreeMap<KeyGroupId, KeyGroup>,
    pub agents: BTreeMap<String, Agent>,
    pub partners: BTreeMap<String, TransferPartner>,
    pub transfer_key_pair: Option<TransferKeyPair>,
    pub backups: BTreeMap<u64, Backup>,
    pub sessions: BTreeMap<Actor, BTreeMap<u64, ClientSession>>,
    /// Every audit event applied so far, as a hash chain: the same on every KMA, carried by
    /// snapshots, so a KMA that joined from one continues the chain (SPEC S5).
    pub audit_chain: AuditChain,
    /// The cluster CA's private key, wrapped under the master key (log format 3, snapshot
    /// format 4; issue 16 point 1): recorded once, by a KMA (`Command::RecordCaKey`); `None`
    /// until then, and in snapshots of older formats.
    pub ca_key: Option<WrappedCaKey>,
    /// Failed proofs per principal that exists, in its current throttle window (log format 3,
    /// snapshot format 4; issue 16 point 5): keyed by a user ID, or by `agent:<agent ID>`
    /// ([`crate::agent::AGENT_PRINCIPAL_PREFIX`]) for an agent's enrollment, so that it holds
    /// at most one window per user and agent ([`crate::limits::LOGIN_FAILURE_WINDOWS_MAX`]).
    /// Read with [`State::login_throttled`]; empty in snapshots of older formats.
    pub login_failures: BTreeMap<String, FailureWindow>,
    /// The CA rotation the quorum approved, until a KMA completes it (log format 3, snapshot
    /// format 4; issue 16 point 1): read with [`State::ca_rotation`]. `None` otherwise, and in
    /// snapshots of older formats.
    pub ca_rotation: Option<CaRotation>,
    /// The DER of the cluster CA's certificate once a CA rotation replaced the first CA (log
    /// format 3, snapshot format 4): a KMA that was away while the CA changed learns the CA it
    /// must trust from the state. Its SHA-256 is that of `ca_key`. `None` before any rotation
    /// completed: the first CA's certificate is the one `kma init` wrote on every KMA's disk.
    pub ca_certificate_der: Option<Vec<u8>>,
    /// The CA a completed rotation replaced, trusted still until every KMA that applies the log
    /// adopted the new one (log format 3, snapshot format 4; issue 16 point 1): read with
    /// [`State::retiring_ca`]. `None` once it is retired, before any rotation completed, and in
    /// snapshots of older formats.
    pub retiring_ca: Option<RetiringCa>,
    /// The quorum version (log format 3, snapshot format 4; issue 17): the index of the entry
    /// whose quorum change took effect last, under the rules of log format 3. 0 for the quorum
    /// of the quickstart or one changed below format 3 (a cluster initializes below format 3:
    /// its first KMA has not reported yet), and in snapshots of older formats. A core security
    /// backup records the quorum version it holds; see [`State::core_security_backup_due`].
    pub quorum_changed_index: u64,
    /// How many times a restore or a recovery from a lost majority started the cluster anew
    /// from a copy of its state (log format 3, snapshot format 4; issue 17): a KMA of an older
    /// epoch holds a history that went another way. 0 before any, and in older snapshots.
    pub cluster_epoch: u32,
    /// KMS 1.x imports being staged, by import ID (log format 3, snapshot format 4; issue 18
    /// point 4): their keys are in [`State`]'s `staged_1x`, invisible until the commit. Empty in
    /// snapshots of older formats.
    pub imports_1x: BTreeMap<u64, StagedImport1x>,
    /// Transfer partners a Security Officer disabled (log format 3, snapshot format 4; issue
    /// 18): no file goes to them or comes from them. Empty in older snapshots.
    pub disabled_partners: BTreeSet<String>,
    /// The IDs of the partner files imported, never imported again (log format 3, snapshot
    /// format 4; issue 18 point 3). Empty in older snapshots.
    pub transfer_files: BTreeMap<[u8; 16], TransferFileRecord>,
    /// Agents a Security Officer granted the right to revoke and destroy over KMIP (log format
    /// 3, snapshot format 4; issue 19). Empty in older snapshots.
    pub kmip_revokers: BTreeSet<String>,
}

/// Lookups derived from the records; see [`State::rebuild_index`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Index {
    /// Unassigned, protected pool keys: the ones a new write key is drawn from.
    pub ready_pool: BTreeSet<KeyId>,
    /// Unassigned pool keys not yet protected (single KMA without a backup).
    pub generated_pool: BTreeSet<KeyId>,
    /// (instant, key) of the next change time brings to each active key (STYLE "Pulse").
    pub transitions: BTreeSet<(u64, KeyId)>,
    /// (destroy log index, key) of destroyed keys, for backup bookkeeping (SPEC B4).
    pub destroyed: BTreeSet<(u64, KeyId)>,
    /// (covers_index, id) of database backups not marked destroyed.
    pub live_database_backups: BTreeSet<(u64, u64)>,
    pub tags: BTreeSet<(String, DataUnitId)>,
    pub policy_names: BTreeMap<String, KeyPolicyId>,
    pub group_names: BTreeMap<String, KeyGroupId>,
    pub keys_per_group: BTreeMap<KeyGroupId, u64>,
    /// (Name, key) of every KMIP object's names: Locate by name (issue 19).
    pub kmip_names: BTreeSet<(String, KeyId)>,
    /// (namespace, data, key) of every KMIP object's Application Specific Information: a
    /// library's Locate of a tape's key (issue 19).
    pub kmip_application_info: BTreeSet<(String, String, KeyId)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub(crate) meta: Meta,
    /// Boxed: a B-tree node keeps room for eleven values, and with keys this large the empty
    /// slots of half-full nodes would cost more than the boxes' pointers.
    pub(crate) keys: BTreeMap<KeyId, Box<Key>>,
    pub(crate) data_units: BTreeMap<DataUnitId, DataUnit>,
    /// Keys of the KMS 1.x imports being staged (`Meta::imports_1x`), by (import ID, key ID):
    /// no read of the keys sees them until their import commits.
    pub(crate) staged_1x: BTreeMap<(u64, KeyId), Legacy1xKey>,
    /// The KMIP side of the keys KMIP clients made (issue 19), by key ID.
    pub(crate) kmip: BTreeMap<KeyId, KmipObject>,
    pub(crate) index: Index,
}

impl State {
    pub fn new() -> Self {
        State::default()
    }

    /// Assembles a state from its records (snapshot load) and derives the index.
    pub fn from_parts(
        meta: Meta,
        keys: BTreeMap<KeyId, Box<Key>>,
        data_units: BTreeMap<DataUnitId, DataUnit>,
    ) -> Self {
        State::from_records(meta, keys, data_units, BTreeMap::new(), BTreeMap::new())
    }

    /// This state with another cluster record: every other record, the staged 1.x keys
    /// included, as they are (tests compare states a refusal may only have stamped).
    pub fn with_meta(&self, meta: Meta) -> State {
        let (keys, units) = (self.keys.clone(), self.data_units.clone());
        State::from_records(meta, keys, units, self.staged_1x.clone(), self.kmip.clone())
    }

    /// [`State::from_parts`] with the keys of the 1.x imports being staged and the KMIP
    /// objects.
    pub(crate) fn from_records(
        meta: Meta,
        keys: BTreeMap<KeyId, Box<Key>>,
        data_units: BTreeMap<DataUnitId, DataUnit>,
        staged_1x: BTreeMap<(u64, KeyId), Legacy1xKey>,
        kmip: BTreeMap<KeyId, KmipObject>,
    ) -> Self {
        let mut state = State { meta, keys, data_units, staged_1x, kmip, index: Index::default() };
        state.rebuild_index();
        state
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn keys(&self) -> &BTreeMap<KeyId, Box<Key>> {
        &self.keys
    }

    pub fn data_units(&self) -> &BTreeMap<DataUnitId, DataUnit> {
        &self.data_units
    }

    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.meta.cluster.map(|info| info.cluster_id)
    }

    pub fn last_applied_index(&self) -> u64 {
        self.meta.last_applied_index
    }

    /// The audit chain after the last applied event: what a complete audit log ends at.
    pub fn audit_chain(&self) -> AuditChain {
        self.meta.audit_chain
    }

    pub fn key(&self, key_id: &KeyId) -> Option<&Key> {
        self.keys.get(key_id).map(|key| &**key)
    }

    pub fn data_unit(&self, id: &DataUnitId) -> Option<&DataUnit> {
        self.data_units.get(id)
    }

    pub fn group_by_name(&self, name: &str) -> Option<&KeyGroup> {
        let id = self.index.group_names.get(name)?;
        self.meta.groups.get(id)
    }

    pub fn policy_by_name(&self, name: &str) -> Option<&KeyPolicy> {
        let id = self.index.policy_names.get(name)?;
        self.meta.policies.get(id)
    }

    /// Unassigned keys: (Ready, Generated).
    pub fn pool_size(&self) -> (usize, usize) {
        (self.index.ready_pool.len(), self.index.generated_pool.len())
    }

    /// KMAs that vote: more than one means a committed key is already on two machines.
    pub fn member_count(&self) -> usize {
        self.meta.kmas.values().filter(|kma| kma.status == KmaStatus::Member).count()
    }

    /// Whether a backup not marked destroyed still holds the key's material (SPEC B4).
    pub fn held_by_live_backup(&self, key: &Key) -> bool {
        let Some(destroyed_index) = key.destroyed_index else {
            return self
                .index
                .live_database_backups
                .range((key.created_index, 0)..)
                .next()
                .is_some();
        };
        self.index
            .live_database_backups
            .range((key.created_index, 0)..(destroyed_index.get(), 0))
            .next()
            .is_some()
    }

    pub fn key_state_at(&self, key: &Key, now_ms: u64) -> KeyState {
        let held = key.destroyed_at_ms.is_some() && self.held_by_live_backup(key);
        key_state_at(key, now_ms, held)
    }

    /// A data unit's state (SPEC O6), derived from the states of its keys at `now_ms`.
    pub fn data_unit_state_at(&self, data_unit: &DataUnit, now_ms: u64) -> DataUnitState {
        if data_unit.keys.is_empty() {
            return DataUnitState::NoKey;
        }
        let mut all_destroyed = true;
        let mut writable = false;
        for association in &data_unit.keys {
            let Some(key) = self.keys.get(&association.key_id) else {
                continue;
            };
            let state = key_state_at(key, now_ms, false);
            all_destroyed &= state.is_destroyed();
            writable |= association.in_use && state == KeyState::ProtectAndProcess;
        }
        if all_destroyed {
            DataUnitState::Shredded
        } else if writable {
            DataUnitState::Normal
        } else {
            DataUnitState::NeedsRekey
        }
    }

    /// The earliest instant at which time alone changes something that must be audited: a key
    /// transition or a quorum operation expiring. The leader proposes `Pulse` once it has passed.
    pub fn next_transition_ms(&self) -> Option<u64> {
        let key_due = self.index.transitions.first().map(|(at_ms, _)| *at_ms);
        let expiry_due = self.meta.quorum_operations.values().map(|op| op.expires_at_ms).min();
        let import_idle =
            self.meta.imports_1x.values().map(|staged| {
                staged.last_batch_at_ms.saturating_add(crate::limits::IMPORT_1X_IDLE_MS)
            });
        [key_due, expiry_due].into_iter().flatten().chain(import_idle).min()
    }

    /// Derives every lookup of [`Index`] from the records.
    pub fn rebuild_index(&mut self) {
        let mut index = Index::default();
        for (id, policy) in &self.meta.policies {
            index.policy_names.insert(policy.name.clone(), *id);
        }
        for (id, group) in &self.meta.groups {
            index.group_names.insert(group.name.clone(), *id);
        }
        for backup in self.meta.backups.values() {
            if backup.kind == BackupKind::Database && !backup.destroyed {
                index.live_database_backups.insert((backup.covers_index, backup.id));
            }
        }
        for (id, key) in &self.keys {
            index_key(&mut index, key);
            debug_assert_eq!(*id, key.id);
        }
        for (id, data_unit) in &self.data_units {
            index.tags.insert((data_unit.external_tag.clone(), *id));
        }
        for (id, object) in &self.kmip {
            index_kmip(&mut index, id, object);
        }
        self.index = index;
    }
}

/// Adds one key to the lookups.
pub(crate) fn index_key(index: &mut Index, key: &Key) {
    let in_pool = key.group.is_none()
        && !key.recovery_only
        && key.compromised_at_ms.is_none()
        && key.destroyed_at_ms.is_none();
    if in_pool && key.protected {
        index.ready_pool.insert(key.id);
    } else if in_pool {
        index.generated_pool.insert(key.id);
    }
    if let Some(group) = key.group {
        *index.keys_per_group.entry(group).or_insert(0) += 1;
    }
    if let Some(destroyed_index) = key.destroyed_index {
        index.destroyed.insert((destroyed_index.get(), key.id));
    }
    if let Some(at_ms) = key.next_audit_at_ms {
        index.transitions.insert((at_ms.get(), key.id));
    }
}

/// Adds one KMIP object's names and Application Specific Information to the lookups.
pub(crate) fn index_kmip(index: &mut Index, key_id: &KeyId, object: &KmipObject) {
    for name in object.names() {
        index.kmip_names.insert((name.into(), *key_id));
    }
    for (namespace, data) in object.application_info() {
        index.kmip_application_info.insert((namespace.into(), data.into(), *key_id));
    }
}

/// Removes one KMIP object from the lookups, before it changes.
pub(crate) fn unindex_kmip(index: &mut Index, key_id: &KeyId, object: &KmipObject) {
    for name in object.names() {
        index.kmip_names.remove(&(name.into(), *key_id));
    }
    for (namespace, data) in object.application_info() {
        index.kmip_application_info.remove(&(namespace.into(), data.into(), *key_id));
    }
}

/// Removes one key from the lookups, before it changes; [`index_key`] adds it back after.
pub(crate) fn unindex_key(index: &mut Index, key: &Key) {
    index.ready_pool.remove(&key.id);
    index.generated_pool.remove(&key.id);
    if let Some(group) = key.group {
        if let Some(count) = index.keys_per_group.get_mut(&group) {
            *count -= 1;
            if *count == 0 {
                index.keys_per_group.remove(&group);
            }
        }
    }
    if let Some(destroyed_index) = key.destroyed_index {
        index.destroyed.remove(&(destroyed_index.get(), key.id));
    }
    if let Some(at_ms) = key.next_audit_at_ms {
        index.transitions.remove(&(at_ms.get(), key.id));
    }
}
