//! The quorum (key split credentials) and quorum operations (SPEC S3, S4).
//!
//! A member's passphrase is checked outside the state machine, by unwrapping that member's share;
//! the command that records an approval is proposed only after that check succeeded.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub const QUORUM_MEMBERS_MAX: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumMember {
    pub id: String,
    /// This member's Shamir share of the master key, wrapped under a key derived by argon2id
    /// from the member's passphrase (opaque here).
    pub wrapped_share: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    pub members: Vec<QuorumMember>,
    pub threshold: u8,
}

impl Quorum {
    pub fn is_member(&self, id: &str) -> bool {
        self.members.iter().any(|member| member.id == id)
    }
}

/// What a quorum operation does once approved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumOperation {
    JoinKma {
        kma: String,
    },
    UnlockKma {
        kma: String,
    },
    EnableAutonomousUnlock {
        kma: String,
    },
    ChangeQuorum {
        quorum: Quorum,
    },
    CreateTransferPartner {
        name: String,
        public_key: Vec<u8>,
    },
    RestoreFromBackup {
        backup_id: u64,
    },
    /// Rotate the cluster CA (SPEC S4; issue 16 point 1; log format 3): once approved, a KMA
    /// makes the new CA, every KMA reissues its certificate under it, and the old CA is refused
    /// (see [`crate::cluster::CaRotation`]). No fields: the new CA is made after the approval,
    /// by an unlocked KMA, since only a KMA can wrap its key under the master key.
    RotateCa,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingQuorumOperation {
    pub id: u64,
    pub operation: QuorumOperation,
    pub started_by: String,
    pub started_at_ms: u64,
    pub expires_at_ms: u64,
    pub approvals: BTreeSet<String>,
}
