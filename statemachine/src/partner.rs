//! Key transfer partners (SPEC T1–T4).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::KeyGroupId;

/// This cluster's own transfer key pair (SPEC T1); the private half is wrapped under the master
/// key (opaque here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferKeyPair {
    pub public_key: Vec<u8>,
    pub wrapped_private_key: Vec<u8>,
    pub created_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferPartner {
    pub name: String,
    pub public_key: Vec<u8>,
    pub export_groups: BTreeSet<KeyGroupId>,
    pub import_groups: BTreeSet<KeyGroupId>,
    pub created_at_ms: u64,
}

/// A partner's transfer file this cluster imported (issue 18 point 3): its ID is never
/// imported again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferFileRecord {
    pub partner: String,
    pub requested_by: String,
    pub imported_at_ms: u64,
}
