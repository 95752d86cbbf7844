//! Handlers for the key pool, the pulse, and what administrators do to keys (SPEC O4–O9).

use core::num::NonZeroU64;

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use smallvec::SmallVec;

use crate::apply::Cx;
use crate::audit::AuditWhat;
use crate::check::check_count;
use crate::command::{DestroySelection, NewKey};
use crate::data_unit::DataUnitState;
use crate::ids::{DataUnitId, KeyGroupId, KeyId, KEY_ID_LEN};
use crate::key::{activation_state_at, Key, KeyOrigin, KeyState};
use crate::limits::{
    DATA_UNITS_PER_COMMAND_MAX, KEYS_PER_COMMAND_MAX, POOL_KEYS_PER_COMMAND_MAX,
    PULSE_TRANSITIONS_MAX,
};
use crate::query::ImpactPreview;
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::{index_key, unindex_key, State};

impl State {
    pub(crate) fn generate_pool_keys(
        &mut self,
        cx: &mut Cx<'_>,
        keys: &[NewKey],
    ) -> Result<Reply, Reject> {
        let cluster_id = self.cluster_id().ok_or(Reject::ClusterNotInitialized)?;
        if keys.is_empty() {
            return Err(Reject::NothingSelected);
        }
        check_count("pool keys in one command", keys.len(), POOL_KEYS_PER_COMMAND_MAX)?;
        let (ready, generated) = self.pool_size();
        let size = (ready + generated) as u64;
        let high_water = u64::from(self.meta.pool_limits.high_water);
        if size + keys.len() as u64 > high_water {
            return Err(Reject::KeyPoolFull { size, adding: keys.len() as u64, high_water });
        }
        let mut seen = BTreeSet::new();
        for new_key in keys {
            if new_key.id.cluster_id() != cluster_id {
                return Err(Reject::KeyFromOtherCluster { key_id: new_key.id });
            }
            if self.keys.contains_key(&new_key.id) || !seen.insert(new_key.id) {
                return Err(Reject::KeyExists { key_id: new_key.id });
            }
        }

        // Committed on a multi-KMA cluster means replicated to a majority: already protected.
        let protected = self.member_count() >= 2;
        for new_key in keys {
            let key = Key {
                id: new_key.id,
                origin: KeyOrigin::Pool,
                group: None,
                material: Some(new_key.material.clone()),
                check_value: new_key.check_value,
                protected,
                recovery_only: false,
                created_at_ms: cx.now_ms,
                created_index: cx.index,
                activation: None,
                next_audit_at_ms: None,
                compromised_at_ms: None,
                destroyed_at_ms: None,
                destroyed_index: None,
                data_units: SmallVec::new(),
            };
            index_key(&mut self.index, &key);
            self.keys.insert(key.id, Box::new(key));
        }
        let count = keys.len() as u32;
        cx.event(AuditWhat::PoolKeysAdded { count, ready: protected });
        Ok(Reply::PoolKeysAdded { count, ready: protected })
    }

    /// Generated → Ready for every pool key created at or before `covers_index`.
    pub(crate) fn protect_generated_keys(&mut self, cx: &mut Cx<'_>, covers_index: u64) {
        let ids: Vec<KeyId> = self
            .index
            .generated_pool
            .iter()
            .filter(|id| self.keys.get(id).is_some_and(|key| key.created_index <= covers_index))
            .copied()
            .collect();
        for id in &ids {
            self.index.generated_pool.remove(id);
            self.index.ready_pool.insert(*id);
            if let Some(key) = self.keys.get_mut(id) {
                key.protected = true;
            }
        }
        if !ids.is_empty() {
            cx.event(AuditWhat::PoolKeysProtected { count: ids.len() as u32 });
        }
    }

    /// After a restore from backup the pool may hold keys the lost cluster had already handed
    /// out; they are kept for recovery lookups (SPEC A5) and never drawn as new write keys.
    pub(crate) fn quarantine_key_pool(&mut self, cx: &mut Cx<'_>) -> Result<Reply, Reject> {
        let count = self.quarantine_unassigned_pool_keys() as u32;
        cx.event(AuditWhat::PoolKeysQuarantined { count });
        Ok(Reply::KeysChanged { count })
    }

    /// Makes every unassigned pool key recovery-only (SPEC A5); how many. The pool holds at
    /// most [`crate::limits::KEY_POOL_HIGH_WATER_MAX`] keys plus one refill.
    pub(crate) fn quarantine_unassigned_pool_keys(&mut self) -> u64 {
        let ids: Vec<KeyId> =
            self.index.ready_pool.iter().chain(&self.index.generated_pool).copied().collect();
        for id in &ids {
            if let Some(key) = self.keys.get_mut(id) {
                unindex_key(&mut self.index, key);
                key.recovery_only = true;
                index_key(&mut self.index, key);
            }
        }
        ids.len() as u64
    }

    /// Records every transition time has brought up to now (bounded), and expires quorum
    /// operations. Costs what it records: the index is ordered by due time.
    pub(crate) fn pulse(&mut self, cx: &mut Cx<'_>) -> Result<Reply, Reject> {
        let now_ms = cx.now_ms;
        let due: Vec<(u64, KeyId)> = self
            .index
            .transitions
            .range(..=(now_ms, KeyId([u8::MAX; KEY_ID_LEN])))
            .take(PULSE_TRANSITIONS_MAX)
            .copied()
            .collect();
        for (at_ms, key_id) in &due {
            self.record_transition(cx, *at_ms, key_id);
        }
        let more_due = self.index.transitions.first().is_some_and(|(at_ms, _)| *at_ms <= now_ms);
        self.expire_quorum_operations(cx);
        self.expire_imports_1x(cx);
        Ok(Reply::Pulse { transitions: due.len() as u32, more_due })
    }

    fn record_transition(&mut self, cx: &mut Cx<'_>, at_ms: u64, key_id: &KeyId) {
        let before_ms = at_ms.saturating_sub(1);
        let data_units = self.data_unit_states(key_id, before_ms);
        let Some(key) = self.keys.get_mut(key_id) else {
            unreachable!("the transition index only holds existing keys");
        };
        let activation = key.activation.expect("only active keys have transitions");
        self.index.transitions.remove(&(at_ms, *key_id));
        let next = key.transition_after(at_ms).and_then(NonZeroU64::new);
        key.next_audit_at_ms = next;
        if let Some(next) = next {
            self.index.transitions.insert((next.get(), *key_id));
        }
        let from = activation_state_at(&activation, before_ms);
        let to = activation_state_at(&activation, at_ms);
        cx.event(AuditWhat::KeyStateChanged { key_id: *key_id, from, to, effective_at_ms: at_ms });
        self.emit_data_unit_changes(cx, &data_units, at_ms);
    }

    /// (data unit, state at `at_ms`) for every data unit of a key.
    pub(crate) fn data_unit_states(
        &self,
        key_id: &KeyId,
        at_ms: u64,
    ) -> Vec<(DataUnitId, DataUnitState)> {
        let Some(key) = self.keys.get(key_id) else {
            return Vec::new();
        };
        key.data_units
            .iter()
            .filter_map(|id| self.data_units.get(id))
            .map(|unit| (unit.id, self.data_unit_state_at(unit, at_ms)))
            .collect()
    }

    /// Emits a `DataUnitStateChanged` for each data unit whose state at `at_ms` differs from
    /// the one recorded before the change.
    pub(crate) fn emit_data_unit_changes(
        &self,
        cx: &mut Cx<'_>,
        before: &[(DataUnitId, DataUnitState)],
        at_ms: u64,
    ) {
        for (id, from) in before {
            let Some(unit) = self.data_units.get(id) else {
                continue;
            };
            let to = self.data_unit_state_at(unit, at_ms);
            if to != *from {
                cx.event(AuditWhat::DataUnitStateChanged { data_unit: *id, from: *from, to });
            }
        }
    }

    /// Changes one key through `mutate`, keeping the index right and auditing the state changes
    /// of the key and of its data units.
    pub(crate) fn change_key(
        &mut self,
        cx: &mut Cx<'_>,
        key_id: &KeyId,
        mutate: impl FnOnce(&mut Key),
    ) {
        let now_ms = cx.now_ms;
        let data_units = self.data_unit_states(key_id, now_ms);
        let Some(key) = self.keys.get(key_id) else {
            return;
        };
        let from = self.key_state_at(key, now_ms);
        let Some(key) = self.keys.get_mut(key_id) else {
            return;
        };
        unindex_key(&mut self.index, key);
        mutate(key);
        index_key(&mut self.index, key);
        let Some(key) = self.keys.get(key_id) else {
            return;
        };
        let to = self.key_state_at(key, now_ms);
        if to != from {
            cx.event(AuditWhat::KeyStateChanged {
                key_id: *key_id,
                from,
                to,
                effective_at_ms: now_ms,
            });
        }
        self.emit_data_unit_changes(cx, &data_units, now_ms);
    }

    /// The distinct keys named by an administrator, each existing.
    fn selected_keys(&self, keys: &[KeyId]) -> Result<BTreeSet<KeyId>, Reject> {
        if keys.is_empty() {
            return Err(Reject::NothingSelected);
        }
        check_count("keys in one command", keys.len(), KEYS_PER_COMMAND_MAX)?;
        keys.iter()
            .map(|id| self.keys.get(id).map(|key| key.id).ok_or(Reject::UnknownKey { key_id: *id }))
            .collect()
    }

    /// Compliance Officer only; allowed from any state (SPEC O4, O7).
    pub(crate) fn compromise_keys(
        &mut self,
        cx: &mut Cx<'_>,
        keys: &[KeyId],
    ) -> Result<Reply, Reject> {
        let selected = self.selected_keys(keys)?;
        let now_ms = cx.now_ms;
        let mut count = 0;
        for key_id in &selected {
            let already = self.keys.get(key_id).is_some_and(|key| key.compromised_at_ms.is_some());
            if already {
                continue;
            }
            count += 1;
            self.change_key(cx, key_id, |key| {
                key.compromised_at_ms = NonZeroU64::new(now_ms.max(1));
                key.next_audit_at_ms = None;
            });
        }
        Ok(Reply::KeysChanged { count })
    }

    /// Only deactivated or compromised keys, by an Operator (SPEC O7).
    pub(crate) fn destroy_keys(
        &mut self,
        cx: &mut Cx<'_>,
        keys: &[KeyId],
    ) -> Result<Reply, Reject> {
        let selected = self.selected_keys(keys)?;
        for key_id in &selected {
            self.check_destroyable(key_id, cx.now_ms)?;
        }
        for key_id in &selected {
            self.destroy_key(cx, key_id);
        }
        Ok(Reply::KeysChanged { count: selected.len() as u32 })
    }

    /// A destroy by key ID confirmed against its preview (log format 3): the keys are checked
    /// as `DestroyKeys` checks them (none missing, within the bound), then the preview is
    /// recomputed: a data unit that took one of the keys since the Operator saw it refuses the
    /// destroy (`ImpactPreviewChanged`), before the state of each key is checked.
    pub(crate) fn destroy_keys_previewed(
        &mut self,
        cx: &mut Cx<'_>,
        keys: &[KeyId],
        preview_digest: u64,
    ) -> Result<Reply, Reject> {
        self.selected_keys(keys)?;
        let preview = self.key_destroy_preview(keys)?;
        if preview.digest != preview_digest {
            return Err(Reject::ImpactPreviewChanged {
                expected: preview_digest,
                actual: preview.digest,
            });
        }
        self.destroy_keys(cx, keys)
    }

    fn check_destroyable(&self, key_id: &KeyId, now_ms: u64) -> Result<(), Reject> {
        let key = self.keys.get(key_id).ok_or(Reject::UnknownKey { key_id: *key_id })?;
        let state = self.key_state_at(key, now_ms);
        if state == KeyState::Deactivated || state == KeyState::Compromised {
            Ok(())
        } else {
            Err(Reject::DestroyNeedsDeactivatedOrCompromised { key_id: *key_id, state })
        }
    }

    /// Erases the material and keeps the metadata; checked by `check_destroyable`.
    fn destroy_key(&mut self, cx: &mut Cx<'_>, key_id: &KeyId) {
        let (now_ms, index) = (cx.now_ms, cx.index);
        self.change_key(cx, key_id, |key| {
            if let Some(material) = key.material.as_mut() {
                material.erase();
            }
            key.material = None;
            key.destroyed_at_ms = NonZeroU64::new(now_ms.max(1));
            key.destroyed_index = NonZeroU64::new(index.max(1));
            key.next_audit_at_ms = None;
        });
    }

    pub(crate) fn destroy_data_unit_keys(
        &mut self,
        cx: &mut Cx<'_>,
        data_units: &[DataUnitId],
        selection: DestroySelection,
        preview_digest: u64,
    ) -> Result<Reply, Reject> {
        let preview = self.destroy_preview(data_units, selection, cx.now_ms)?;
        if preview.digest != preview_digest {
            return Err(Reject::ImpactPreviewChanged {
                expected: preview_digest,
                actual: preview.digest,
            });
        }
        for key_id in &preview.keys {
            self.destroy_key(cx, key_id);
        }
        Ok(Reply::KeysChanged { count: preview.keys.len() as u32 })
    }

    pub(crate) fn change_data_unit_key_group(
        &mut self,
        cx: &mut Cx<'_>,
        data_units: &[DataUnitId],
        group: &str,
        preview_digest: u64,
    ) -> Result<Reply, Reject> {
        let group_id = self.group_id(group)?;
        let preview = self.group_change_preview(data_units, group, cx.now_ms)?;
        if preview.digest != preview_digest {
            return Err(Reject::ImpactPreviewChanged {
                expected: preview_digest,
                actual: preview.digest,
            });
        }
        for key_id in &preview.keys {
            self.move_key_to_group(cx, key_id, group_id);
        }
        Ok(Reply::KeysChanged { count: preview.keys.len() as u32 })
    }

    fn move_key_to_group(&mut self, cx: &mut Cx<'_>, key_id: &KeyId, group: KeyGroupId) {
        let from = self.keys.get(key_id).and_then(|key| key.group);
        if from == Some(group) {
            return;
        }
        self.change_key(cx, key_id, |key| key.group = Some(group));
        cx.event(AuditWhat::KeyGroupChanged { key_id: *key_id, from, to: group });
    }

    /// Checks a selection of data units: not empty, within bounds, each existing.
    pub(crate) fn check_data_unit_selection(
        &self,
        data_units: &[DataUnitId],
    ) -> Result<(), Reject> {
        if data_units.is_empty() {
            return Err(Reject::NothingSelected);
        }
        check_count("data units in one command", data_units.len(), DATA_UNITS_PER_COMMAND_MAX)?;
        for id in data_units {
            if !self.data_units.contains_key(id) {
                return Err(Reject::UnknownDataUnit { data_unit: *id });
            }
        }
        Ok(())
    }

    /// Builds the preview of a change to `keys`: every data unit that uses them, and those
    /// among them outside the selection (SPEC O8, O9).
    pub(crate) fn impact_of(
        &self,
        selected: &[DataUnitId],
        keys: BTreeSet<KeyId>,
    ) -> ImpactPreview {
        let selected: BTreeSet<DataUnitId> = selected.iter().copied().collect();
        let affected: BTreeSet<DataUnitId> = keys
            .iter()
            .filter_map(|id| self.keys.get(id))
            .flat_map(|key| key.data_units.iter().copied())
            .collect();
        let keys: Vec<KeyId> = keys.into_iter().collect();
        let data_units: Vec<DataUnitId> = affected.iter().copied().collect();
        let shared_with_unselected: Vec<DataUnitId> =
            affected.difference(&selected).copied().collect();
        let digest = crate::digest::body_digest(&(&keys, &data_units));
        ImpactPreview { keys, data_units, shared_with_unselected, digest }
    }
}
