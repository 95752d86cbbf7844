//! Reads: pure functions of the state and a `now`. The agent gateway serves these from the local
//! node; nothing here changes the state. Besides the agent's reads and the impact previews, the
//! answers the shells would otherwise work out themselves: who may approve a quorum operation,
//! and how many keys a pool refill wants.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::cluster::{CaRotation, Kma, RetiringCa, WrappedCaKey};
use crate::command::{Actor, DestroySelection};
use crate::data_unit::DataUnitState;
use crate::format::{LOG_FORMAT_2, LOG_FORMAT_3};
use crate::ids::{DataUnitId, KeyId, NodeId};
use crate::key::{KeyOrigin, KeyState, WrappedKey};
use crate::limits::{KMAS_MAX, POOL_KEYS_PER_COMMAND_MAX};
use crate::permission::{Access, Read};
use crate::quorum::{PendingQuorumOperation, QuorumMember, QUORUM_MEMBERS_MAX};
use crate::reject::Reject;
use crate::state::State;

/// A key as a drive receives it: still wrapped; the gateway unwraps it inside the drive's TLS
/// session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentKey {
    pub key_id: KeyId,
    pub state: KeyState,
    pub material: WrappedKey,
    /// Whether the key is associated with a data unit; if not, the gateway proposes
    /// `AssociateKeyForRead` before handing it out (SPEC A5).
    pub associated: bool,
}

/// What a destroy or a key group change would touch (SPEC O8, O9). The command carries
/// `digest` back as its confirmation; `apply` recomputes it and refuses on any difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpactPreview {
    pub keys: Vec<KeyId>,
    /// Every data unit that uses one of the keys: these lose access on a destroy.
    pub data_units: Vec<DataUnitId>,
    /// Those of `data_units` outside the selection: the ripple effect of shared keys.
    pub shared_with_unselected: Vec<DataUnitId>,
    pub digest: u64,
}

impl State {
    /// The keys an agent receives when it mounts a data unit (SPEC A2): those in use by the data
    /// unit, not destroyed, in a group the agent can access.
    pub fn keys_for_data_unit(
        &self,
        agent_id: &str,
        data_unit: &DataUnitId,
        now_ms: u64,
    ) -> Result<Vec<AgentKey>, Reject> {
        self.check_access(&Actor::Agent(agent_id.into()), Access::Read(Read::AgentKeys))?;
        let agent = self.agent(agent_id)?;
        let unit = self
            .data_units
            .get(data_unit)
            .ok_or(Reject::UnknownDataUnit { data_unit: *data_unit })?;
        let keys = unit
            .keys_in_use()
            .filter_map(|id| self.keys.get(id))
            .filter(|key| key.group.is_some_and(|group| agent.can_access(group)))
            .filter_map(|key| {
                let material = key.material.clone()?;
                let state = self.key_state_at(key, now_ms);
                (!state.is_destroyed()).then_some(AgentKey {
                    key_id: key.id,
                    state,
                    material,
                    associated: true,
                })
            })
            .collect();
        Ok(keys)
    }

    /// One key by ID (SPEC A2, A4): never a destroyed key, only from a group the agent can
    /// access. A pool key comes back unassociated for the gateway to claim first (SPEC A5).
    pub fn key_for_agent(
        &self,
        agent_id: &str,
        key_id: &KeyId,
        now_ms: u64,
    ) -> Result<AgentKey, Reject> {
        self.check_access(&Actor::Agent(agent_id.into()), Access::Read(Read::AgentKeys))?;
        let agent = self.agent(agent_id)?;
        let key = self.keys.get(key_id).ok_or(Reject::UnknownKey { key_id: *key_id })?;
        let state = self.key_state_at(key, now_ms);
        let material = match (&key.material, state.is_destroyed()) {
            (Some(material), false) => material.clone(),
            _ => return Err(Reject::KeyUnusable { key_id: *key_id, state }),
        };
        if key.group.is_some_and(|group| !agent.can_access(group)) {
            return Err(Reject::AgentCannotAccessKey { key_id: *key_id });
        }
        let associated = key.group.is_some() && !key.data_units.is_empty();
        Ok(AgentKey { key_id: *key_id, state, material, associated })
    }

    /// As [`State::key_for_agent`], for a read by key ID of the tape `data_unit`, or of a tape
    /// not known here yet tagged `external_tag` (SPEC A5). A key from outside this cluster
    /// (KMS 1.x, a transfer partner) may encrypt many tapes: `associated` then says whether it
    /// is associated with this one, and the gateway associates it if not, so the impact
    /// previews list every tape that reads it (SPEC O8, O9; seed ch. 9). A key of this
    /// cluster's pool is read through its own data unit: any association counts.
    pub fn key_for_agent_read(
        &self,
        agent_id: &str,
        key_id: &KeyId,
        (data_unit, external_tag): (Option<DataUnitId>, &str),
        now_ms: u64,
    ) -> Result<AgentKey, Reject> {
        let mut found = self.key_for_agent(agent_id, key_id, now_ms)?;
        let Some(key) = self.keys.get(key_id) else { return Ok(found) };
        if found.associated && key.origin != KeyOrigin::Pool {
            found.associated = match data_unit {
                Some(id) => key.data_units.contains(&id),
                // Without a tag one tape cannot be told from another: the first one stands.
                None => {
                    external_tag.is_empty()
                        || self.data_unit_of_key_tagged(key_id, external_tag).is_some()
                }
            };
        }
        Ok(found)
    }

    /// The data unit of key `key_id` whose external tag is `external_tag` (not empty), if any.
    pub fn data_unit_of_key_tagged(
        &self,
        key_id: &KeyId,
        external_tag: &str,
    ) -> Option<DataUnitId> {
        if external_tag.is_empty() {
            return None;
        }
        let key = self.keys.get(key_id)?;
        key.data_units.iter().copied().find(|id| {
            self.data_units.get(id).is_some_and(|unit| unit.external_tag == external_tag)
        })
    }

    /// The state of a data unit by ID.
    pub fn data_unit_state(&self, id: &DataUnitId, now_ms: u64) -> Option<DataUnitState> {
        self.data_units.get(id).map(|unit| self.data_unit_state_at(unit, now_ms))
    }

    /// The state of a key by ID.
    pub fn key_state(&self, id: &KeyId, now_ms: u64) -> Option<KeyState> {
        self.keys.get(id).map(|key| self.key_state_at(key, now_ms))
    }

    /// Data units whose external tag is exactly `tag` (tags are not unique).
    pub fn data_units_by_tag(&self, tag: &str) -> Vec<DataUnitId> {
        let start = (
            alloc::string::String::from(tag),
            DataUnitId { cluster_id: crate::ids::ClusterId(0), serial: 0 },
        );
        self.index.tags.range(start..).take_while(|(t, _)| t == tag).map(|(_, id)| *id).collect()
    }

    /// What destroying the selected data units' keys would do (SPEC O7, O9).
    pub fn destroy_preview(
        &self,
        data_units: &[DataUnitId],
        selection: DestroySelection,
        now_ms: u64,
    ) -> Result<ImpactPreview, Reject> {
        self.check_data_unit_selection(data_units)?;
        let wanted = |state: KeyState| match selection {
            DestroySelection::DeactivatedOnly => state == KeyState::Deactivated,
            DestroySelection::CompromisedOnly => state == KeyState::Compromised,
            DestroySelection::DeactivatedAndCompromised => {
                state == KeyState::Deactivated || state == KeyState::Compromised
            }
        };
        let keys: BTreeSet<KeyId> = data_units
            .iter()
            .filter_map(|id| self.data_units.get(id))
            .flat_map(|unit| unit.keys.iter().map(|a| a.key_id))
            .filter(|id| {
                self.keys.get(id).is_some_and(|key| wanted(self.key_state_at(key, now_ms)))
            })
            .collect();
        Ok(self.impact_of(data_units, keys))
    }

    /// What moving the selected data units' keys to `group` would do (SPEC O8).
    pub fn group_change_preview(
        &self,
        data_units: &[DataUnitId],
        group: &str,
        now_ms: u64,
    ) -> Result<ImpactPreview, Reject> {
        self.group_id(group)?;
        self.check_data_unit_selection(data_units)?;
        let keys: BTreeSet<KeyId> = data_units
            .iter()
            .filter_map(|id| self.data_units.get(id))
            .flat_map(|unit| unit.keys.iter().map(|a| a.key_id))
            .filter(|id| {
                self.keys.get(id).is_some_and(|key| !self.key_state_at(key, now_ms).is_destroyed())
            })
            .collect();
        Ok(self.impact_of(data_units, keys))
    }
}

impl State {
    /// The KMA that holds `node_id`, if any.
    pub fn kma_by_node_id(&self, node_id: NodeId) -> Option<&Kma> {
        self.meta.kmas.values().find(|kma| kma.node_id == node_id)
    }

    /// Whether `node_id` is that of a deleted KMA: the cluster assigned it (node IDs run from 1
    /// below `next_node_id`, which only grows, so none is ever given twice) and no KMA holds it
    /// any more. The deny list every KMA enforces on its links (issue 16 points 2 and 3),
    /// without a state field of its own. False for an ID never assigned: a KMA that the state
    /// does not know yet is refused for that, not as deleted.
    pub fn kma_deleted(&self, node_id: NodeId) -> bool {
        let assigned = (1..self.meta.next_node_id).contains(&node_id);
        assigned && self.kma_by_node_id(node_id).is_none()
    }

    /// Whether certificates are bound to the state (log format 3, issue 16 point 2): from then
    /// on a user's session is recorded at login (`RecordUserSession`), and listeners accept a
    /// user certificate only through [`State::user_session_certified`]. Below format 3 no
    /// session can be recorded, so a listener that asked it then would refuse every user: it
    /// goes on accepting the certificate's name alone until this turns true.
    pub fn certificates_recorded(&self) -> bool {
        self.format_rules_apply(LOG_FORMAT_3)
    }

    /// Whether a listener accepts the certificate of fingerprint `certificate_sha256` (SHA-256
    /// of its DER) for user `user`: the user exists, is enabled, and recorded that certificate
    /// at a login. So a certificate minted for the user's name with a copied CA key is refused,
    /// and disabling or deleting the user, or a new passphrase, which empty the list, revoke
    /// every session everywhere. The certificate's validity period is TLS's to check (the
    /// recorded expiry is the certificate's own); expired sessions leave the state at the
    /// user's next login. A client passes the log index of its login: a KMA that has not
    /// applied it yet waits for it, or refuses, rather than answer from an older state.
    pub fn user_session_certified(&self, user: &str, certificate_sha256: &[u8; 32]) -> bool {
        let Some(user) = self.meta.users.get(user) else { return false };
        user.enabled
            && user.sessions.iter().any(|session| session.certificate_sha256 == *certificate_sha256)
    }

    /// Whether a link or listener accepts the certificate of fingerprint `certificate_sha256`
    /// from KMA node `node_id`. False for a node ID no entry holds: a deleted KMA
    /// ([`State::kma_deleted`], the deny list) or one never assigned; false for an entry only
    /// created, whose join no quorum approved, since no certificate is handed out before. An
    /// entry that records a certificate accepts that one only: a certificate minted for its
    /// name with a copied CA key is refused. An entry that records none yet (the first KMA and
    /// KMAs that joined before log format 3, until they report theirs, see
    /// [`State::kma_certificate_to_report`]) is accepted by name, as before: refusing it would
    /// cut the cluster apart during the upgrade. So is an entry approved to join whose grant is
    /// not recorded yet: a joiner approved before format 3 may hold a certificate from then.
    /// That window closes with the grant, which a KMA of this software proposes before it
    /// hands a joiner its certificate. During a CA rotation the certificate the KMA reissued
    /// itself under the new CA is accepted too ([`State::accepted_kma_certificates`]).
    pub fn kma_certificate_accepted(&self, node_id: NodeId, certificate_sha256: &[u8; 32]) -> bool {
        let Some(kma) = self.kma_by_node_id(node_id) else { return false };
        if !kma.applies_the_log() {
            return false;
        }
        kma.certificate_sha256.is_none_or(|recorded| recorded == *certificate_sha256)
            || self.reissued_certificate(&kma.name) == Some(*certificate_sha256)
    }

    /// Whether KMA `name` should report its certificate now with `Command::RecordKmaCertificate`
    /// (through its own node): its entry applies the log and records none, and the cluster
    /// reads log format 3. A KMA asks after it applies entries (at start, then as the state
    /// changes) and proposes the report once this is true; it turns false once applied.
    pub fn kma_certificate_to_report(&self, name: &str) -> bool {
        let Some(kma) = self.meta.kmas.get(name) else { return false };
        kma.applies_the_log() && kma.certificate_sha256.is_none() && self.certificates_recorded()
    }

    /// The cluster CA's private key, wrapped under the master key, and the fingerprint of the
    /// CA certificate it belongs to (issue 16 point 1); `None` until a KMA recorded it with
    /// `Command::RecordCaKey`. A KMA unwraps it to sign a certificate, and keeps no clear copy
    /// at rest.
    pub fn wrapped_ca_key(&self) -> Option<&WrappedCaKey> {
        self.meta.ca_key.as_ref()
    }
}

/// Reads of a CA rotation (issue 16 point 1), for the node: which step to take, which
/// certificates its listeners accept meanwhile, which CAs its TLS trusts.
impl State {
    /// The CA rotation the quorum approved, until it completes; `None` otherwise.
    pub fn ca_rotation(&self) -> Option<&CaRotation> {
        self.meta.ca_rotation.as_ref()
    }

    /// The DER of the cluster CA's certificate once a rotation replaced the first CA, whose
    /// SHA-256 is that of [`State::wrapped_ca_key`]; `None` before: the first CA is the one
    /// `kma init` wrote on every KMA's disk. A KMA that was away while the CA changed learns
    /// from here which CA to trust.
    pub fn ca_certificate_der(&self) -> Option<&[u8]> {
        self.meta.ca_certificate_der.as_deref()
    }

    /// The certificate KMA `name` reissued itself under the new CA of the rotation under way,
    /// if it recorded one.
    pub fn reissued_certificate(&self, name: &str) -> Option<[u8; 32]> {
        self.meta.ca_rotation.as_ref()?.reissued.get(name).copied()
    }

    /// The fingerprints of the certificates a listener accepts from KMA `name`: the one its
    /// entry records, and during a CA rotation the one it reissued itself under the new CA, so
    /// that links keep working while KMAs switch, one by one. Empty for a KMA unknown or only
    /// created. A KMA that records no certificate yet (the first KMA and KMAs that joined
    /// before log format 3, until they report theirs) is accepted by name whatever this lists:
    /// a listener asks [`State::kma_certificate_accepted`], which knows it.
    pub fn accepted_kma_certificates(&self, name: &str) -> Vec<[u8; 32]> {
        let Some(kma) = self.meta.kmas.get(name).filter(|kma| kma.applies_the_log()) else {
            return Vec::new();
        };
        let mut accepted: Vec<[u8; 32]> = kma.certificate_sha256.into_iter().collect();
        if let Some(reissued) = self.reissued_certificate(name) {
            if !accepted.contains(&reissued) {
                accepted.push(reissued);
            }
        }
        debug_assert!(accepted.len() <= 2, "the recorded certificate and the reissued one");
        accepted
    }

    /// Whether KMA `name` should sign itself a certificate under the new CA now and record it
    /// with `Command::RecordReissuedKmaCertificate` (through its own node): a rotation is
    /// begun, the KMA applies the log, and has recorded none under this rotation. A KMA asks
    /// as it applies entries; it turns false once its record is applied.
    pub fn kma_to_reissue(&self, name: &str) -> bool {
        let Ok((rotation, _)) = self.begun_ca_rotation() else { return false };
        let applies = self.meta.kmas.get(name).is_some_and(|kma| kma.applies_the_log());
        applies && !rotation.reissued.contains_key(name)
    }

    /// The KMAs a CA rotation waits for, by name: those that apply the log (members and KMAs
    /// approved to join) and have not reissued their certificate under the new CA; at most
    /// [`crate::limits::KMAS_MAX`]. Empty when no rotation is approved. A KMA that is gone for
    /// good leaves the list when it is deleted.
    pub fn ca_rotation_waiting_for(&self) -> Vec<String> {
        let Some(rotation) = &self.meta.ca_rotation else { return Vec::new() };
        let waiting: Vec<String> = self
            .meta
            .kmas
            .values()
            .filter(|kma| kma.applies_the_log() && !rotation.reissued.contains_key(&kma.name))
            .map(|kma| kma.name.clone())
            .collect();
        debug_assert!(waiting.len() <= KMAS_MAX, "at most one name per KMA");
        waiting
    }

    /// Whether a KMA may propose `Command::CompleteCaRotation` now: a rotation is begun and
    /// every KMA that applies the log reissued its certificate.
    pub fn ca_rotation_complete_ready(&self) -> bool {
        self.begun_ca_rotation().is_ok() && self.ca_rotation_waiting_for().is_empty()
    }

    /// The old CA of the last completed rotation while it is still trusted, until every KMA
    /// that applies the log adopted the new one; `None` otherwise. While it is `Some`, a KMA's
    /// TLS trusts the old CA and the cluster CA: a KMA that has not applied the completion yet
    /// still presents its certificate of the old CA.
    pub fn retiring_ca(&self) -> Option<&RetiringCa> {
        self.meta.retiring_ca.as_ref()
    }

    /// Whether KMA `name` should record now, with `Command::RecordCaAdopted` (through its own
    /// node), that it presents its certificate of the new CA: an old CA is retiring, the KMA
    /// applies the log, and has not recorded it. A KMA asks as it applies entries, once it
    /// switched to its new certificate; it turns false once its record is applied.
    pub fn kma_to_adopt(&self, name: &str) -> bool {
        let Some(retiring) = &self.meta.retiring_ca else { return false };
        let applies = self.meta.kmas.get(name).is_some_and(|kma| kma.applies_the_log());
        applies && !retiring.adopted.contains(name)
    }

    /// The KMAs the retirement of the old CA waits for, by name: those that apply the log and
    /// have not adopted the new CA; at most [`crate::limits::KMAS_MAX`]. Empty when no old CA
    /// is retiring. A KMA that is gone for good leaves the list when it is deleted.
    pub fn ca_retirement_waiting_for(&self) -> Vec<String> {
        let Some(retiring) = &self.meta.retiring_ca else { return Vec::new() };
        let waiting: Vec<String> = self
            .meta
            .kmas
            .values()
            .filter(|kma| kma.applies_the_log() && !retiring.adopted.contains(&kma.name))
            .map(|kma| kma.name.clone())
            .collect();
        debug_assert!(waiting.len() <= KMAS_MAX, "at most one name per KMA");
        waiting
    }
}

/// Who may still approve a pending quorum operation, and how far it is (SPEC S4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumApprovers {
    pub id: u64,
    /// Members of the current quorum who have not approved it, in quorum order: each may
    /// approve once.
    pub eligible: Vec<String>,
    /// Approvals that count toward the threshold: from log format 2 on, only those of members
    /// still in the quorum (see [`crate::format`]).
    pub approvals: u32,
    pub threshold: u32,
    pub expires_at_ms: u64,
}

impl State {
    /// Who may approve quorum operation `id` at `now_ms`, and the approvals that count so far.
    pub fn quorum_approvers(&self, id: u64, now_ms: u64) -> Result<QuorumApprovers, Reject> {
        let op = self.pending_quorum_operation(id, now_ms)?;
        let eligible: Vec<String> = self
            .meta
            .quorum
            .members
            .iter()
            .filter(|member| !op.approvals.contains(&member.id))
            .map(|member| member.id.clone())
            .collect();
        debug_assert!(eligible.len() <= QUORUM_MEMBERS_MAX, "a quorum has at most ten members");
        Ok(QuorumApprovers {
            id,
            eligible,
            approvals: self.approvals_counted(op),
            threshold: u32::from(self.meta.quorum.threshold),
            expires_at_ms: op.expires_at_ms,
        })
    }

    /// Whether `member` may approve operation `id` at `now_ms`: the same check `apply` makes
    /// before it records an approval. The member's record holds the wrapped share that the
    /// node opens with the member's passphrase. Refusals by precedence: the operation is
    /// unknown, or expired; the member is not in the quorum, or approved already.
    pub fn check_approval(
        &self,
        id: u64,
        member: &str,
        now_ms: u64,
    ) -> Result<&QuorumMember, Reject> {
        let op = self.pending_quorum_operation(id, now_ms)?;
        let record = self.meta.quorum.members.iter().find(|record| record.id == member);
        let record = record.ok_or_else(|| Reject::NotAQuorumMember { member: member.into() })?;
        if op.approvals.contains(member) {
            return Err(Reject::AlreadyApproved { id, member: member.into() });
        }
        Ok(record)
    }

    fn pending_quorum_operation(
        &self,
        id: u64,
        now_ms: u64,
    ) -> Result<&PendingQuorumOperation, Reject> {
        let op =
            self.meta.quorum_operations.get(&id).ok_or(Reject::UnknownQuorumOperation { id })?;
        if now_ms >= op.expires_at_ms {
            return Err(Reject::QuorumOperationExpired { id, expired_at_ms: op.expires_at_ms });
        }
        Ok(op)
    }

    /// The approvals of `op` that count. Log format 1 counted every approval recorded; format 2
    /// only those of members still in the quorum, so that a member removed by a quorum change
    /// no longer moves an operation toward its threshold. Chosen by the cluster's format, so
    /// that every KMA counts alike (see [`crate::format`], rule 2).
    pub(crate) fn approvals_counted(&self, op: &PendingQuorumOperation) -> u32 {
        let counted = if self.cluster_format_version() >= LOG_FORMAT_2 {
            op.approvals.iter().filter(|member| self.meta.quorum.is_member(member)).count()
        } else {
            op.approvals.len()
        };
        debug_assert!(counted <= op.approvals.len(), "only recorded approvals count");
        counted as u32
    }

    /// How many keys a pool refill proposes now, in one `GeneratePoolKeys` (SPEC O5): none
    /// while the pool holds at least its low water mark and no refill is under way; else up to
    /// the high water mark, at most [`POOL_KEYS_PER_COMMAND_MAX`] at a time. `refilling` is the
    /// leader's memory that its last refill stopped short of the high water mark, so that a
    /// drained pool refills in long runs rather than a little at every tick. A command of this
    /// size is never refused as `KeyPoolFull`. None before the cluster is initialised.
    pub fn pool_keys_wanted(&self, refilling: bool) -> usize {
        if self.meta.cluster.is_none() {
            return 0;
        }
        let (ready, generated) = self.pool_size();
        let size = ready + generated;
        let limits = self.meta.pool_limits;
        let (low_water, high_water) = (limits.low_water as usize, limits.high_water as usize);
        if size >= high_water || (!refilling && size >= low_water) {
            return 0;
        }
        (high_water - size).min(POOL_KEYS_PER_COMMAND_MAX)
    }
}
