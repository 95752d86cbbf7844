//! Handlers for the agent protocol (SPEC A2–A6): the commands a drive causes.

use core::num::NonZeroU64;

use alloc::vec::Vec;
use smallvec::SmallVec;

use crate::agent::Agent;
use crate::apply::Cx;
use crate::audit::AuditWhat;
use crate::check::{check_count, check_text};
use crate::command::Actor;
use crate::data_unit::{DataUnit, DataUnitState, KeyAssociation};
use crate::format::LOG_FORMAT_3;
use crate::ids::{DataUnitId, KeyGroupId, KeyId};
use crate::key::{Activation, KeyOrigin, KeyState};
use crate::limits::{
    DATA_UNITS_MAX, DATA_UNITS_PER_KEY_MAX, EXTERNAL_TAG_LEN_MAX, KEYS_PER_DATA_UNIT_MAX,
};
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::{index_key, unindex_key, State};

/// What a write request will do, decided before anything changes.
enum WritePlan {
    Reuse(KeyId),
    /// Draw a new key into `group`; first take `retire` out of use (write from BOT by an
    /// agent that cannot access the current write key, SPEC A3).
    NewKey {
        group: KeyGroupId,
        retire: Option<KeyId>,
    },
}

impl State {
    fn acting_agent(&self, actor: &Actor) -> Result<&Agent, Reject> {
        match actor {
            Actor::Agent(id) => self.agent(id),
            _ => Err(Reject::WrongIssuer { kind: crate::permission::CommandKind::AssignWriteKey }),
        }
    }

    pub(crate) fn create_data_unit(
        &mut self,
        cx: &mut Cx<'_>,
        external_tag: &str,
    ) -> Result<Reply, Reject> {
        check_text("external tag", external_tag, EXTERNAL_TAG_LEN_MAX, true)?;
        let id = self.new_data_unit_id()?;
        self.insert_data_unit(cx, id, external_tag);
        Ok(Reply::DataUnitCreated { data_unit: id })
    }

    pub(crate) fn new_data_unit_id(&self) -> Result<DataUnitId, Reject> {
        let cluster_id = self.cluster_id().ok_or(Reject::ClusterNotInitialized)?;
        let serial = self.meta.next_data_unit_serial;
        check_count("data units", serial as usize + 1, DATA_UNITS_MAX as usize)?;
        Ok(DataUnitId { cluster_id, serial })
    }

    pub(crate) fn insert_data_unit(&mut self, cx: &mut Cx<'_>, id: DataUnitId, external_tag: &str) {
        if id.cluster_id == self.cluster_id().unwrap_or_default() {
            self.meta.next_data_unit_serial = self.meta.next_data_unit_serial.max(id.serial + 1);
        }
        let unit = DataUnit {
            id,
            external_tag: external_tag.into(),
            created_at_ms: cx.now_ms,
            keys: SmallVec::new(),
        };
        self.index.tags.insert((unit.external_tag.clone(), id));
        self.data_units.insert(id, unit);
        cx.event(AuditWhat::DataUnitCreated { data_unit: id });
    }

    /// Create or reuse the write key of a data unit (SPEC A2, A3, A4).
    pub(crate) fn assign_write_key(
        &mut self,
        cx: &mut Cx<'_>,
        data_unit: DataUnitId,
        from_bot: bool,
    ) -> Result<Reply, Reject> {
        match self.plan_write(cx, data_unit, from_bot)? {
            WritePlan::Reuse(key_id) => Ok(Reply::WriteKey { data_unit, key_id, reused: true }),
            WritePlan::NewKey { group, retire } => {
                let before = self.unit_state_or_no_key(data_unit, cx.now_ms);
                if let Some(retired) = retire {
                    self.set_in_use(data_unit, &[retired], false);
                }
                let key_id = self.draw_pool_key(cx, data_unit, group);
                self.emit_unit_change(cx, data_unit, before);
                Ok(Reply::WriteKey { data_unit, key_id, reused: false })
            }
        }
    }

    fn plan_write(
        &self,
        cx: &Cx<'_>,
        data_unit: DataUnitId,
        from_bot: bool,
    ) -> Result<WritePlan, Reject> {
        let agent = self.acting_agent(cx.actor)?;
        let unit = self.data_units.get(&data_unit).ok_or(Reject::UnknownDataUnit { data_unit })?;
        let now_ms = cx.now_ms;
        let current = unit.keys_in_use().copied().find(|id| {
            self.keys
                .get(id)
                .is_some_and(|key| self.key_state_at(key, now_ms) == KeyState::ProtectAndProcess)
        });
        let mut retire = None;
        if let Some(key_id) = current {
            let group = self.keys.get(&key_id).and_then(|key| key.group);
            if group.is_some_and(|group| agent.can_access(group)) {
                return Ok(WritePlan::Reuse(key_id));
            }
            if !from_bot {
                return Err(Reject::AgentCannotAccessWriteKey { data_unit, key_id });
            }
            // The one case where an agent takes a key of a group it cannot access out of use,
            // in every log format: SPEC A3 lets its write from BOT start a new write key, and a
            // data unit has one write key, so the old one stops being it. Drives of that group
            // still read it by ID (`key_for_agent`), as the blocks written with it name it.
            retire = Some(key_id);
        } else if !from_bot && self.data_unit_state_at(unit, now_ms) == DataUnitState::Shredded {
            return Err(Reject::DataUnitShredded { data_unit });
        }
        let group = agent
            .default_key_group
            .ok_or_else(|| Reject::AgentHasNoDefaultGroup { agent: agent.id.clone() })?;
        check_count("keys of a data unit", unit.keys.len() + 1, KEYS_PER_DATA_UNIT_MAX)?;
        if self.index.ready_pool.is_empty() {
            return Err(Reject::KeyPoolEmpty);
        }
        Ok(WritePlan::NewKey { group, retire })
    }

    /// Takes the first Ready pool key, activates it in `group` and makes it the data unit's
    /// write key. The caller checked that the pool is not empty.
    pub(crate) fn draw_pool_key(
        &mut self,
        cx: &mut Cx<'_>,
        data_unit: DataUnitId,
        group: KeyGroupId,
    ) -> KeyId {
        let key_id = *self.index.ready_pool.first().expect("plan_write checked the pool");
        let policy = self.group_policy(group);
        let now_ms = cx.now_ms;
        let activation = Activation {
            activated_at_ms: now_ms,
            encryption_ends_at_ms: now_ms.saturating_add(policy.encryption_period_ms),
            deactivates_at_ms: now_ms.saturating_add(policy.cryptoperiod_ms),
        };
        self.activate(cx, &key_id, group, activation, data_unit);
        cx.event(AuditWhat::KeyAssigned { key_id, data_unit, group });
        key_id
    }

    /// Gives a pool key its group, dates and first data unit.
    fn activate(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
        group: KeyGroupId,
        activation: Activation,
        data_unit: DataUnitId,
    ) {
        let now_ms = cx.now_ms;
        let Some(key) = self.keys.get_mut(key_id) else {
            unreachable!("activate is called with a key taken from the state");
        };
        let from = crate::key::key_state_at(key, now_ms, false);
        unindex_key(&mut self.index, key);
        key.group = Some(group);
        key.activation = Some(activation);
        key.recovery_only = false;
        key.next_audit_at_ms = key.transition_after(now_ms).and_then(NonZeroU64::new);
        key.data_units.push(data_unit);
        index_key(&mut self.index, key);
        let to = crate::key::key_state_at(key, now_ms, false);
        cx.event(AuditWhat::KeyStateChanged { key_id: *key_id, from, to, effective_at_ms: now_ms });
        if let Some(unit) = self.data_units.get_mut(&data_unit) {
            unit.keys.push(KeyAssociation { key_id: *key_id, in_use: true });
        }
    }

    fn unit_state_or_no_key(&self, data_unit: DataUnitId, now_ms: u64) -> DataUnitState {
        self.data_unit_state(&data_unit, now_ms).unwrap_or(DataUnitState::NoKey)
    }

    fn emit_unit_change(&self, cx: &mut Cx<'_>, data_unit: DataUnitId, before: DataUnitState) {
        self.emit_data_unit_changes(cx, &[(data_unit, before)], cx.now_ms);
    }

    fn set_in_use(&mut self, data_unit: DataUnitId, keys: &[KeyId], in_use: bool) {
        if let Some(unit) = self.data_units.get_mut(&data_unit) {
            for association in unit.keys.iter_mut().filter(|a| keys.contains(&a.key_id)) {
                association.in_use = in_use;
            }
        }
    }

    /// A write from BOT: every key of this data unit that is not protect-and-process stops
    /// being sent to drives for it (seed "Recycling"). Other data units sharing a key keep it.
    ///
    /// From log format 3 only the keys of groups the agent may access (SPEC A3): a drive of
    /// another group left the keys of this unit's own drives in use, so they still mount them
    /// (issue 16 point 9). Not a refusal: a write from BOT by such a drive is allowed (A3, it
    /// gets a new key in its default group), and a StorageTek-style drive disassociates before
    /// it asks for that key (A2), so refusing would stop the write A3 allows.
    pub(crate) fn disassociate_keys_on_bot(
        &mut self,
        cx: &mut Cx<'_>,
        data_unit: DataUnitId,
    ) -> Result<Reply, Reject> {
        let agent = self.acting_agent(cx.actor)?;
        let unit = self.data_units.get(&data_unit).ok_or(Reject::UnknownDataUnit { data_unit })?;
        let now_ms = cx.now_ms;
        let confined = self.format_rules_apply(LOG_FORMAT_3);
        let retired: Vec<KeyId> = unit
            .keys_in_use()
            .filter_map(|id| self.keys.get(id))
            .filter(|key| self.key_state_at(key, now_ms) != KeyState::ProtectAndProcess)
            .filter(|key| !confined || key.group.is_some_and(|group| agent.can_access(group)))
            .map(|key| key.id)
            .collect();
        let before = self.unit_state_or_no_key(data_unit, now_ms);
        self.set_in_use(data_unit, &retired, false);
        let count = retired.len() as u32;
        if count > 0 {
            cx.event(AuditWhat::KeysDisassociated { data_unit, count });
        }
        self.emit_unit_change(cx, data_unit, before);
        Ok(Reply::KeysDisassociated { count })
    }

    /// A drive asks for a key by ID for a data unit it does not hold (SPEC A5): an unassigned
    /// pool key (known from before a restore) or an imported key is associated and returned.
    pub(crate) fn associate_key_for_read(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
        data_unit: Option<DataUnitId>,
        external_tag: &str,
    ) -> Result<Reply, Reject> {
        check_text("external tag", external_tag, EXTERNAL_TAG_LEN_MAX, true)?;
        // A tape read again by its tag is the data unit it made the first time, not another.
        let data_unit = data_unit.or_else(|| self.data_unit_of_key_tagged(key_id, external_tag));
        let group = self.check_associable(cx, key_id, data_unit)?;
        let unit_id = match data_unit {
            Some(id) => id,
            None => {
                let id = self.new_data_unit_id()?;
                self.insert_data_unit(cx, id, external_tag);
                id
            }
        };
        let already =
            self.data_units.get(&unit_id).and_then(|unit| unit.association(key_id)).copied();
        let before = self.unit_state_or_no_key(unit_id, cx.now_ms);
        match (already, group) {
            (Some(association), _) if association.in_use => {}
            // A key a write from BOT retired stays out of use while it could still encrypt:
            // in use again it would be a second write key for the data unit.
            (Some(_), _)
                if self.key_state(key_id, cx.now_ms) == Some(KeyState::ProtectAndProcess) => {}
            (Some(_), _) => self.set_in_use(unit_id, &[*key_id], true),
            (None, Some(group)) => self.activate_for_recovery(cx, key_id, group, unit_id),
            (None, None) => self.add_association(key_id, unit_id),
        }
        if already.is_none() {
            cx.event(AuditWhat::KeyAssociated { key_id: *key_id, data_unit: unit_id });
        }
        self.emit_unit_change(cx, unit_id, before);
        Ok(Reply::KeyAssociated { data_unit: unit_id, key_id: *key_id })
    }

    /// Checks a recovery lookup. Returns the group to put a pool key in, or `None` for a key
    /// that already has one.
    fn check_associable(
        &self,
        cx: &Cx<'_>,
        key_id: &KeyId,
        data_unit: Option<DataUnitId>,
    ) -> Result<Option<KeyGroupId>, Reject> {
        let agent = self.acting_agent(cx.actor)?;
        let key = self.keys.get(key_id).ok_or(Reject::UnknownKey { key_id: *key_id })?;
        let state = self.key_state_at(key, cx.now_ms);
        if state.is_destroyed() {
            return Err(Reject::KeyUnusable { key_id: *key_id, state });
        }
        if let Some(id) = data_unit {
            let unit = self.data_units.get(&id).ok_or(Reject::UnknownDataUnit { data_unit: id })?;
            if unit.association(key_id).is_none() {
                check_count("keys of a data unit", unit.keys.len() + 1, KEYS_PER_DATA_UNIT_MAX)?;
            }
        }
        check_count("data units of a key", key.data_units.len() + 1, DATA_UNITS_PER_KEY_MAX)?;
        match key.group {
            Some(group) if !agent.can_access(group) => {
                Err(Reject::AgentCannotAccessKey { key_id: *key_id })
            }
            Some(_)
                if key.origin == KeyOrigin::Pool
                    && data_unit.is_none_or(|id| !key.data_units.contains(&id)) =>
            {
                // A key this cluster assigned is read through its data unit; sharing it with
                // another one would hide the ripple effect of a later destroy.
                Err(Reject::KeyUnusable { key_id: *key_id, state })
            }
            Some(_) => Ok(None),
            None => agent
                .default_key_group
                .map(Some)
                .ok_or_else(|| Reject::AgentHasNoDefaultGroup { agent: agent.id.clone() }),
        }
    }

    /// A recovered pool key decrypts what the lost cluster wrote with it but never encrypts
    /// again: it starts Process-only, as a 1.x import does.
    fn activate_for_recovery(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
        group: KeyGroupId,
        unit: DataUnitId,
    ) {
        let now_ms = cx.now_ms;
        let cryptoperiod_ms = self.group_policy(group).cryptoperiod_ms;
        let activation = Activation {
            activated_at_ms: now_ms,
            encryption_ends_at_ms: now_ms,
            deactivates_at_ms: now_ms.saturating_add(cryptoperiod_ms),
        };
        self.activate(cx, key_id, group, activation, unit);
    }

    pub(crate) fn add_association(&mut self, key_id: &KeyId, data_unit: DataUnitId) {
        if let Some(key) = self.keys.get_mut(key_id) {
            key.data_units.push(data_unit);
        }
        if let Some(unit) = self.data_units.get_mut(&data_unit) {
            unit.keys.push(KeyAssociation { key_id: *key_id, in_use: true });
        }
    }
}
