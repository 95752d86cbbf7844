//! Messages on the management listener: status and digests as JSON for people and scripts,
//! joins and security refusals. What crosses a link between KMAs is `transport::wire`'s.

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The purpose a login challenge is bound to: a user's login, or a joining KMA's proof.
pub const PURPOSE_USER: &str = "user-login";
pub const PURPOSE_JOIN: &str = "kma-join";

/// The TLS exporter label of a join proof's channel binding (RFC 8446 §7.5).
const JOIN_EXPORTER_LABEL: &[u8] = b"EXPORTER-kma-join-v1";
/// First field of every join binding digest.
const JOIN_BINDING_LABEL: &[u8] = b"kma join channel binding v1";

/// One TLS session's exporter value for join proofs (issue #16 point 5), as each side derives
/// it from its own end of the session. A relay that terminates the joiner's TLS and opens its
/// own session to the KMA sees two different values, so the proof it forwards fails. Not
/// `Debug`: it is keying material of the session.
#[derive(Clone, Copy)]
pub struct JoinExporter(Option<[u8; 32]>);

impl JoinExporter {
    /// The server's end; `None` only if the session cannot export (before a handshake ends).
    pub fn of_server(tls: &rustls::ServerConnection) -> JoinExporter {
        JoinExporter(tls.export_keying_material([0u8; 32], JOIN_EXPORTER_LABEL, None).ok())
    }

    /// The client's end.
    pub fn of_client(tls: &rustls::ClientConnection) -> JoinExporter {
        JoinExporter(tls.export_keying_material([0u8; 32], JOIN_EXPORTER_LABEL, None).ok())
    }

    /// The binding of a join proof: this session, the CSR the proof asks to certify and the
    /// address the joiner advertises, so that neither can be swapped under a valid proof.
    pub fn binding(&self, csr_pem: &str, advertise: &str) -> Option<security_core::ChannelBinding> {
        let exporter = self.0?;
        let mut digest = sha2::Sha256::new();
        digest.update(JOIN_BINDING_LABEL);
        digest.update(exporter);
        for field in [csr_pem, advertise] {
            digest.update((field.len() as u64).to_be_bytes());
            digest.update(field.as_bytes());
        }
        Some(digest.finalize().into())
    }
}

pub use crate::transport::wire::{
    MembershipRequest, ProposeError, ProposeRequest, ProposeResponse, POSTCARD,
};

/// What `GET /v1/status` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub name: String,
    pub site: String,
    pub cluster_id: Option<String>,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: u64,
    /// Last log index covered by this KMA's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Last log index deleted from this KMA's log (behind a snapshot).
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Holds no master key or is locked by an administrator: serves no key material.
    pub locked: bool,
    /// host:port of the service listener (agents), as other hosts reach it.
    pub service_address: String,
    /// Pool keys ready to be handed out, and generated ones not yet protected (SPEC O4, O5).
    #[serde(default)]
    pub key_pool_ready: usize,
    #[serde(default)]
    pub key_pool_generated: usize,
    /// This KMA's software version and the newest log format it reads (SPEC C7).
    #[serde(default)]
    pub software_version: String,
    #[serde(default)]
    pub log_format: u16,
    /// The log format every KMA of the cluster reads: commands that need a newer one are
    /// refused until the last KMA is upgraded (the version gate).
    #[serde(default)]
    pub cluster_log_format: u16,
    /// This KMA can sign logins, joins and enrollments: it is unlocked and holds the cluster
    /// CA's key (opened from the state, or the file `kma init` wrote, until it is wrapped).
    #[serde(default)]
    pub ca_key_held: bool,
    /// Why a sealed master key found at start was not used (the KMA then starts locked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_key_problem: Option<String>,
    /// SHA-256 (hex) of the CA certificates this KMA trusts now: one, or two while a CA
    /// rotation runs (issue #16 point 1).
    #[serde(default)]
    pub trusted_ca_sha256: Vec<String>,
    /// Where a CA rotation stands, as the applied state says: `approved`, `begun (waiting for
    /// …)`, `retiring the old CA (waiting for …)`; none when no rotation runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_rotation: Option<String>,
    /// The quorum version (index of its last change) that no core security backup holds yet:
    /// take one with `kmsctl backup core-security` (SPEC B1). None once one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core_security_backup_due: Option<u64>,
}

/// What `GET /v1/digest` answers: a SHA-256 of the applied state's snapshot encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    pub applied_index: u64,
    pub sha256: String,
}

/// A new KMA asks for its certificate with a join token (`POST /v1/join`, no client cert).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_secret: [u8; 32],
    pub name: String,
    pub site: String,
    pub management_advertise: String,
    pub csr_pem: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: u64,
    pub cert_pem: String,
    pub ca_pem: String,
}

/// A successful join: the KMA's node ID and certificate, and the CA certificate. The CA key
/// reaches the joiner wrapped, through the state it replicates (issue #16 point 1).
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinGranted {
    pub server_final: security_core::challenge::ServerFinal,
    pub node_id: u64,
    pub cert_pem: String,
    pub ca_pem: String,
    /// Empty from log format 3: the CA key is in the state, wrapped under the master key.
    #[serde(default)]
    pub ca_key_pem: String,
}

impl std::fmt::Debug for JoinGranted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinGranted").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// A refusal of the security endpoints: the one JSON error shape of every management route.
pub use admin_api::api::ErrorBody as SecurityRefusal;

pub use admin_api::api::{ApproveRequest, ChangeQuorumRequest, LoginGranted, ProofRequest};
