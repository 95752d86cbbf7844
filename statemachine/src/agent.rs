//! Agents: the drives that ask for keys (SPEC O3, A1).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::KeyGroupId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub site: String,
    /// Verifier of the enrollment passphrase (opaque here); a new one revokes the certificate.
    pub passphrase_verifier: Vec<u8>,
    /// SHA-256 fingerprint of the certificate issued at enrollment; `None` until enrolled.
    pub certificate_fingerprint: Option<[u8; 32]>,
    pub enabled: bool,
    pub key_groups: BTreeSet<KeyGroupId>,
    /// Where new write keys go; always one of `key_groups`.
    pub default_key_group: Option<KeyGroupId>,
    pub created_at_ms: u64,
}

impl Agent {
    pub fn enrolled(&self) -> bool {
        self.certificate_fingerprint.is_some()
    }

    pub fn can_access(&self, group: KeyGroupId) -> bool {
        self.key_groups.contains(&group)
    }
}
