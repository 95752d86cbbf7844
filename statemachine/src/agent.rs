//! Agents: the drives that ask for keys (SPEC O3, A1).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::KeyGroupId;

/// How an agent is named where it is one principal among users: the agent gateway records an
/// agent's failed enrollment proofs as `agent:<agent ID>` (`agent_gateway::wire::AGENT_CN_PREFIX`,
/// the same prefix as in its certificate's common name), and the replicated state counts them
/// under that name ([`crate::State::login_throttled`]). A persisted convention: it must not
/// change.
pub const AGENT_PRINCIPAL_PREFIX: &str = "agent:";

/// The principal name of agent `agent_id`: `agent:<agent_id>` ([`AGENT_PRINCIPAL_PREFIX`]).
pub fn agent_principal(agent_id: &str) -> String {
    let mut principal = String::with_capacity(AGENT_PRINCIPAL_PREFIX.len() + agent_id.len());
    principal.push_str(AGENT_PRINCIPAL_PREFIX);
    principal.push_str(agent_id);
    principal
}

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
