//! Data units (tape volumes) and their key associations (SPEC O6).

use core::fmt;

use alloc::string::String;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::ids::{DataUnitId, KeyId};

/// One key of a data unit. A disassociated key stays in the list with `in_use` false: it is no
/// longer sent to drives for this data unit, but its history is kept (seed: "Recycling").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAssociation {
    pub key_id: KeyId,
    pub in_use: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUnit {
    pub id: DataUnitId,
    /// The VOLSER, informational only: nothing looks data units up by it but people.
    pub external_tag: String,
    pub created_at_ms: u64,
    /// In association order, so the newest key is last. Almost every data unit has one key:
    /// it is stored inline, which at 10 million keys saves a heap allocation each.
    pub keys: SmallVec<[KeyAssociation; 1]>,
}

impl DataUnit {
    pub fn association(&self, key_id: &KeyId) -> Option<&KeyAssociation> {
        self.keys.iter().find(|association| association.key_id == *key_id)
    }

    pub fn keys_in_use(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().filter(|association| association.in_use).map(|a| &a.key_id)
    }
}

/// The data unit states of SPEC O6. Persisted in audit events: the discriminants never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DataUnitState {
    NoKey,
    Normal,
    NeedsRekey,
    Shredded,
}

impl DataUnitState {
    pub fn name(self) -> &'static str {
        match self {
            DataUnitState::NoKey => "no-key",
            DataUnitState::Normal => "normal",
            DataUnitState::NeedsRekey => "needs-rekey",
            DataUnitState::Shredded => "shredded",
        }
    }
}

impl fmt::Display for DataUnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
