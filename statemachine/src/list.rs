//! Paged lists for the admin API (SPEC U2): the filter runs here, next to the records, and every
//! page is bounded twice: by the number of rows it returns and by the number of records it may
//! examine. A selective filter over ten million keys therefore answers with a short (even empty)
//! page and a cursor, instead of walking the whole map in one request; the client follows the
//! cursor. A page costs O(log n + LIST_SCAN_MAX) whatever the state's size.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Bound;

use crate::data_unit::DataUnitState;
use crate::ids::{DataUnitId, KeyGroupId, KeyId};
use crate::key::{Key, KeyState};
use crate::limits::{LIST_PAGE_MAX, LIST_SCAN_MAX};
use crate::query::ImpactPreview;
use crate::reject::Reject;
use crate::state::State;
use crate::{agent::Agent, data_unit::DataUnit};

/// One page of a list: the rows in ID order and, when the list goes on, the cursor to resume
/// after (the last record examined, which may be past the last row returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<C, T> {
    pub rows: Vec<T>,
    pub resume_after: Option<C>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyFilter {
    pub state: Option<KeyState>,
    pub group: Option<KeyGroupId>,
    /// Only the keys associated with this data unit (answered from the data unit's own list).
    pub data_unit: Option<DataUnitId>,
}

impl KeyFilter {
    fn admits(&self, state: &State, key: &Key, now_ms: u64) -> bool {
        self.group.is_none_or(|group| key.group == Some(group))
            && self.data_unit.is_none_or(|unit| key.data_units.contains(&unit))
            && self.state.is_none_or(|wanted| state.key_state_at(key, now_ms) == wanted)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataUnitFilter {
    /// Exact external tag (tags are not unique); answered from the tag index.
    pub external_tag: Option<String>,
    pub state: Option<DataUnitState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentFilter {
    pub site: Option<String>,
    pub enabled: Option<bool>,
    pub group: Option<KeyGroupId>,
}

/// Clamps a requested page size to `1..=LIST_PAGE_MAX`.
pub fn page_size(requested: Option<usize>) -> usize {
    requested.unwrap_or(100).clamp(1, LIST_PAGE_MAX)
}

/// Walks `candidates` (already positioned after the cursor), keeping those `admit` accepts,
/// until the page is full or the scan budget is spent. `limit` is held to `1..=LIST_PAGE_MAX`
/// here too, whatever the caller passed: with 0 a page would run on to the scan budget.
fn collect<'a, C: Copy, T: 'a>(
    candidates: impl Iterator<Item = (C, &'a T)>,
    limit: usize,
    mut admit: impl FnMut(&T) -> bool,
) -> Page<C, &'a T> {
    let limit = limit.clamp(1, LIST_PAGE_MAX);
    let mut rows = Vec::new();
    let mut last = None;
    let mut candidates = candidates.peekable();
    for (scanned, (cursor, record)) in candidates.by_ref().enumerate() {
        last = Some(cursor);
        if admit(record) {
            rows.push(record);
        }
        if rows.len() == limit || scanned + 1 == LIST_SCAN_MAX {
            break;
        }
    }
    let more = candidates.peek().is_some();
    Page { rows, resume_after: if more { last } else { None } }
}

fn after<K: Ord>(cursor: Option<K>) -> (Bound<K>, Bound<K>) {
    match cursor {
        Some(cursor) => (Bound::Excluded(cursor), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

impl State {
    /// What destroying `keys` by ID would do (SPEC O9): every data unit that uses them loses
    /// access. Unknown keys are refused, so a typo never previews as "nothing lost".
    pub fn key_destroy_preview(&self, keys: &[KeyId]) -> Result<ImpactPreview, Reject> {
        if keys.is_empty() {
            return Err(Reject::NothingSelected);
        }
        if let Some(missing) = keys.iter().find(|id| !self.keys.contains_key(id)) {
            return Err(Reject::UnknownKey { key_id: *missing });
        }
        Ok(self.impact_of(&[], keys.iter().copied().collect()))
    }

    /// How many keys a key group holds (from the index: no scan).
    pub fn keys_in_group(&self, group: KeyGroupId) -> u64 {
        self.index.keys_per_group.get(&group).copied().unwrap_or(0)
    }

    /// Whether every unassigned key is in a pool index (none recovery-only, compromised or
    /// destroyed). Assigned keys are active, never Ready or Generated, so the pool indexes then
    /// hold every key in those states. Costs O(groups), from counts the index keeps.
    fn pool_index_complete(&self) -> bool {
        let assigned: u64 = self.index.keys_per_group.values().sum();
        let keys = self.keys.len() as u64;
        assert!(assigned <= keys, "keys_per_group counts stored keys");
        let (ready, generated) = self.pool_size();
        let pooled = (ready + generated) as u64;
        assert!(pooled <= keys - assigned, "the pool indexes hold unassigned keys only");
        pooled == keys - assigned
    }

    /// Keys matching `filter`, in key ID order, after `cursor`.
    pub fn keys_page(
        &self,
        filter: &KeyFilter,
        cursor: Option<KeyId>,
        limit: usize,
        now_ms: u64,
    ) -> Page<KeyId, &Key> {
        let admit = |key: &Key| filter.admits(self, key, now_ms);
        if let Some(unit) = filter.data_unit {
            // A data unit has at most KEYS_PER_DATA_UNIT_MAX keys: list them directly.
            let mut ids: Vec<KeyId> = self
                .data_units
                .get(&unit)
                .map(|unit| unit.keys.iter().map(|a| a.key_id).collect())
                .unwrap_or_default();
            ids.sort_unstable();
            ids.retain(|id| cursor.is_none_or(|cursor| *id > cursor));
            let keys = ids.into_iter().filter_map(|id| self.key(&id).map(|key| (id, key)));
            return collect(keys, limit, admit);
        }
        // The pool states have their own index: no scan past keys in other states. It holds
        // every Ready or Generated key only while no unassigned key is outside it; a restore's
        // recovery-only keys are Ready or Generated too, and then only the scan finds them.
        let pool = match filter.state {
            Some(KeyState::Ready) => Some(&self.index.ready_pool),
            Some(KeyState::Generated) => Some(&self.index.generated_pool),
            _ => None,
        };
        if let Some(pool) = pool.filter(|_| self.pool_index_complete()) {
            let keys = pool.range(after(cursor)).filter_map(|id| self.key(id).map(|k| (*id, k)));
            return collect(keys, limit, admit);
        }
        let keys = self.keys.range(after(cursor)).map(|(id, key)| (*id, &**key));
        collect(keys, limit, admit)
    }

    /// Data units matching `filter`, in ID order, after `cursor`.
    pub fn data_units_page(
        &self,
        filter: &DataUnitFilter,
        cursor: Option<DataUnitId>,
        limit: usize,
        now_ms: u64,
    ) -> Page<DataUnitId, &DataUnit> {
        let admit = |unit: &DataUnit| {
            filter.state.is_none_or(|wanted| self.data_unit_state_at(unit, now_ms) == wanted)
        };
        if let Some(tag) = &filter.external_tag {
            let start = match cursor {
                Some(id) => Bound::Excluded((tag.clone(), id)),
                None => Bound::Included((tag.clone(), DataUnitId::MIN)),
            };
            let units = self
                .index
                .tags
                .range((start, Bound::Unbounded))
                .take_while(|(t, _)| t == tag)
                .filter_map(|(_, id)| self.data_units.get(id).map(|unit| (*id, unit)));
            return collect(units, limit, admit);
        }
        let units = self.data_units.range(after(cursor)).map(|(id, unit)| (*id, unit));
        collect(units, limit, admit)
    }

    /// Agents matching `filter`, in ID order, after `cursor`.
    pub fn agents_page<'a>(
        &'a self,
        filter: &AgentFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Page<&'a str, &'a Agent> {
        let admit = |agent: &Agent| {
            filter.site.as_ref().is_none_or(|site| agent.site == *site)
                && filter.enabled.is_none_or(|enabled| agent.enabled == enabled)
                && filter.group.is_none_or(|group| agent.key_groups.contains(&group))
        };
        let agents =
            self.meta.agents.range::<str, _>(after(cursor)).map(|(id, a)| (id.as_str(), a));
        collect(agents, limit, admit)
    }
}
