//! Handlers for what KMIP clients cause (SPEC U5, issue 19); the model is in `kmip.rs`.
//!
//! A KMIP client is an agent: it sees the keys of its key groups, and new keys go to its
//! default group. Beyond what a drive may do it may set attributes and activate; it may revoke
//! and destroy only once a Security Officer granted it that right (`Meta::kmip_revokers`),
//! since agents otherwise may neither compromise nor destroy keys (S1, O7).

use core::num::NonZeroU64;

use alloc::vec::Vec;

use crate::apply::Cx;
use crate::audit::{AgentChange, AuditWhat, KmipReadCount};
use crate::check::{check_count, check_text};
use crate::command::{Actor, NewKey};
use crate::data_unit::DataUnitState;
use crate::ids::{KeyGroupId, KeyId};
use crate::key::{Activation, KeyOrigin, KeyState};
use crate::kmip::{
    check_kmip_attributes, KmipAttribute, KmipObject, KMIP_READ_COUNTS_MAX, KMIP_READ_KEYS_MAX,
};
use crate::limits::EXTERNAL_TAG_LEN_MAX;
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::{index_kmip, unindex_kmip, State};

impl State {
    /// The agent behind a KMIP command, and its default group for new keys.
    fn kmip_client(&self, actor: &Actor) -> Result<(alloc::string::String, KeyGroupId), Reject> {
        let Actor::Agent(id) = actor else {
            return Err(Reject::WrongIssuer {
                kind: crate::permission::CommandKind::CreateKmipKey,
            });
        };
        let agent = self.agent(id)?;
        let group = agent
            .default_key_group
            .ok_or_else(|| Reject::AgentHasNoDefaultGroup { agent: agent.id.clone() })?;
        Ok((agent.id.clone(), group))
    }

    /// A key the acting agent may reach: it exists and its group is one of the agent's.
    fn kmip_reachable(&self, actor: &Actor, key_id: &KeyId) -> Result<(), Reject> {
        let Actor::Agent(id) = actor else {
            return Err(Reject::WrongIssuer {
                kind: crate::permission::CommandKind::CreateKmipKey,
            });
        };
        let agent = self.agent(id)?;
        let key = self.keys.get(key_id).ok_or(Reject::UnknownKey { key_id: *key_id })?;
        match key.group {
            Some(group) if agent.can_access(group) => Ok(()),
            _ => Err(Reject::AgentCannotAccessKey { key_id: *key_id }),
        }
    }

    fn new_kmip_object(
        &self,
        cx: &Cx<'_>,
        owner: alloc::string::String,
        usage_mask: u32,
        attributes: &[KmipAttribute],
    ) -> Result<KmipObject, Reject> {
        check_kmip_attributes(attributes)?;
        let object = KmipObject {
            owner,
            usage_mask,
            activated_at_ms: None,
            last_change_ms: cx.now_ms,
            revision: 1,
            attributes: attributes.to_vec(),
        };
        check_text("external tag", object.barcode().unwrap_or(""), EXTERNAL_TAG_LEN_MAX, true)?;
        Ok(object)
    }

    /// A KMIP Create: a pool key in the client's default group, Protect-and-process from now
    /// (its first use), bound to a new data unit tagged with the barcode.
    pub(crate) fn create_kmip_key(
        &mut self,
        cx: &mut Cx<'_>,
        usage_mask: u32,
        attributes: &[KmipAttribute],
    ) -> Result<Reply, Reject> {
        let (owner, group) = self.kmip_client(cx.actor)?;
        let object = self.new_kmip_object(cx, owner, usage_mask, attributes)?;
        let data_unit = self.new_data_unit_id()?;
        if self.index.ready_pool.is_empty() {
            return Err(Reject::KeyPoolEmpty);
        }
        self.insert_data_unit(cx, data_unit, object.barcode().unwrap_or(""));
        let key_id = self.draw_pool_key(cx, data_unit, group);
        self.emit_data_unit_changes(cx, &[(data_unit, DataUnitState::NoKey)], cx.now_ms);
        self.insert_kmip_object(cx, key_id, object);
        Ok(Reply::KmipKey { key_id, data_unit })
    }

    /// A KMIP Register: the client's own key value (wrapped by the KMA before proposing), into
    /// its default group if that group's policy allows import; Protect-and-process from now.
    pub(crate) fn register_kmip_key(
        &mut self,
        cx: &mut Cx<'_>,
        key: &NewKey,
        usage_mask: u32,
        attributes: &[KmipAttribute],
    ) -> Result<Reply, Reject> {
        let (owner, group) = self.kmip_client(cx.actor)?;
        let object = self.new_kmip_object(cx, owner, usage_mask, attributes)?;
        if !self.group_policy(group).allow_import {
            return Err(Reject::PolicyForbidsImport { group: self.group_name(group) });
        }
        if self.keys.contains_key(&key.id) {
            return Err(Reject::KeyExists { key_id: key.id });
        }
        let data_unit = self.new_data_unit_id()?;
        let policy = self.group_policy(group);
        let activation = Activation {
            activated_at_ms: cx.now_ms,
            encryption_ends_at_ms: cx.now_ms.saturating_add(policy.encryption_period_ms),
            deactivates_at_ms: cx.now_ms.saturating_add(policy.cryptoperiod_ms),
        };
        self.insert_data_unit(cx, data_unit, object.barcode().unwrap_or(""));
        let incoming = crate::apply_transfer::Incoming {
            id: key.id,
            material: &key.material,
            check_value: key.check_value,
            origin: KeyOrigin::RegisteredKmip,
            created_at_ms: cx.now_ms,
            activation,
            compromised_at_ms: None,
        };
        self.insert_imported(cx, &incoming, group);
        self.add_association(&key.id, data_unit);
        cx.event(AuditWhat::KeyAssigned { key_id: key.id, data_unit, group });
        self.emit_data_unit_changes(cx, &[(data_unit, DataUnitState::NoKey)], cx.now_ms);
        self.insert_kmip_object(cx, key.id, object);
        Ok(Reply::KmipKey { key_id: key.id, data_unit })
    }

    fn insert_kmip_object(&mut self, cx: &mut Cx<'_>, key_id: KeyId, object: KmipObject) {
        index_kmip(&mut self.index, &key_id, &object);
        cx.event(AuditWhat::KmipObjectChanged { key_id, revision: object.revision });
        self.kmip.insert(key_id, object);
    }

    fn kmip_object_of(&self, key_id: &KeyId) -> Result<&KmipObject, Reject> {
        self.kmip.get(key_id).ok_or(Reject::NotKmipObject { key_id: *key_id })
    }

    /// KMIP Activate: the key, active for O4 since its Create, is Active for KMIP too.
    pub(crate) fn activate_kmip_key(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
    ) -> Result<Reply, Reject> {
        self.kmip_reachable(cx.actor, key_id)?;
        let object = self.kmip_object_of(key_id)?;
        let state = self.key_state_at(&self.keys[key_id], cx.now_ms);
        let pre_active = matches!(state, KeyState::ProtectAndProcess | KeyState::ProcessOnly)
            && object.activated_at_ms.is_none();
        if !pre_active {
            return Err(Reject::KmipWrongState { key_id: *key_id, state });
        }
        let now_ms = cx.now_ms;
        self.change_kmip_object(cx, key_id, |object| object.activated_at_ms = Some(now_ms));
        Ok(Reply::Done)
    }

    /// Add, Modify or Delete Attribute, as the whole new set of settable attributes computed
    /// from `revision`: refused if another change came first.
    pub(crate) fn set_kmip_attributes(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
        revision: u64,
        attributes: &[KmipAttribute],
    ) -> Result<Reply, Reject> {
        self.kmip_reachable(cx.actor, key_id)?;
        let current = self.kmip_object_of(key_id)?.revision;
        if current != revision {
            return Err(Reject::KmipRevisionStale { key_id: *key_id, revision, current });
        }
        let state = self.key_state_at(&self.keys[key_id], cx.now_ms);
        if state.is_destroyed() {
            return Err(Reject::KmipWrongState { key_id: *key_id, state });
        }
        check_kmip_attributes(attributes)?;
        self.change_kmip_object(cx, key_id, |object| object.attributes = attributes.to_vec());
        Ok(Reply::Done)
    }

    fn change_kmip_object(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
        change: impl FnOnce(&mut KmipObject),
    ) {
        let Some(mut object) = self.kmip.remove(key_id) else {
            unreachable!("callers checked that the key is a KMIP object");
        };
        unindex_kmip(&mut self.index, key_id, &object);
        change(&mut object);
        object.revision += 1;
        object.last_change_ms = cx.now_ms;
        self.insert_kmip_object(cx, *key_id, object);
    }

    fn check_kmip_right(&self, actor: &Actor) -> Result<(), Reject> {
        match actor {
            Actor::Agent(id) if self.meta.kmip_revokers.contains(id) => Ok(()),
            Actor::Agent(id) => Err(Reject::KmipRightNotGranted { agent: id.clone() }),
            _ => Err(Reject::WrongIssuer { kind: crate::permission::CommandKind::RevokeKmipKey }),
        }
    }

    /// KMIP Revoke, with the right: Key Compromise marks the key compromised; any other
    /// reason deactivates an active key now (its encryption and cryptoperiod end here).
    pub(crate) fn revoke_kmip_key(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
        compromised: bool,
    ) -> Result<Reply, Reject> {
        self.check_kmip_right(cx.actor)?;
        self.kmip_reachable(cx.actor, key_id)?;
        if compromised {
            return self.compromise_keys(cx, &[*key_id]);
        }
        let state = self.key_state_at(&self.keys[key_id], cx.now_ms);
        if !matches!(state, KeyState::ProtectAndProcess | KeyState::ProcessOnly) {
            return Err(Reject::KmipWrongState { key_id: *key_id, state });
        }
        let now_ms = cx.now_ms;
        self.change_key(cx, key_id, |key| {
            if let Some(activation) = key.activation.as_mut() {
                let ends_ms = now_ms.max(activation.activated_at_ms);
                activation.encryption_ends_at_ms = activation.encryption_ends_at_ms.min(ends_ms);
                activation.deactivates_at_ms = activation.deactivates_at_ms.min(ends_ms);
            }
            key.next_audit_at_ms = key.transition_after(now_ms).and_then(NonZeroU64::new);
        });
        Ok(Reply::KeysChanged { count: 1 })
    }

    /// KMIP Destroy, with the right, under O7: only a deactivated or compromised key.
    pub(crate) fn destroy_kmip_key(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
    ) -> Result<Reply, Reject> {
        self.check_kmip_right(cx.actor)?;
        self.kmip_reachable(cx.actor, key_id)?;
        self.destroy_keys(cx, &[*key_id])
    }

    /// A Security Officer grants or withdraws an agent's right to revoke and destroy over KMIP.
    pub(crate) fn set_agent_kmip_rights(
        &mut self,
        cx: &mut Cx<'_>,
        agent: &str,
        revoke_and_destroy: bool,
    ) -> Result<Reply, Reject> {
        self.agent(agent)?;
        if revoke_and_destroy {
            self.meta.kmip_revokers.insert(agent.into());
        } else {
            self.meta.kmip_revokers.remove(agent);
        }
        let change = AgentChange::KmipRights { revoke_and_destroy };
        cx.event(AuditWhat::AgentChanged { agent: agent.into(), change });
        Ok(Reply::Done)
    }

    /// The KMIP reads a KMA answered from its local state (Get, Locate, Get Attributes …),
    /// counted per agent and operation, so that every KMIP operation is in the audit log
    /// without a log entry per read.
    pub(crate) fn record_kmip_reads(
        &mut self,
        cx: &mut Cx<'_>,
        reads: &[KmipReadCount],
    ) -> Result<Reply, Reject> {
        check_count("KMIP read counts", reads.len(), KMIP_READ_COUNTS_MAX)?;
        for read in reads {
            check_count("keys of a KMIP read count", read.keys.len(), KMIP_READ_KEYS_MAX)?;
        }
        let events: Vec<AuditWhat> =
            reads.iter().map(|read| AuditWhat::KmipReads(read.clone())).collect();
        for event in events {
            cx.event(event);
        }
        Ok(Reply::Done)
    }
}
