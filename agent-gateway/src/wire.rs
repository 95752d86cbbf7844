//! The JSON bodies of the agent protocol, shared by the gateway and the client so that the two
//! cannot drift apart. `docs/agent-protocol.md` describes the same shapes for integrators.
//!
//! Binary values travel as lowercase hex: a drive's operator can read them in `curl` output and
//! compare them with the admin tools, and hex of a 32-byte key costs nothing next to TLS.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use statemachine::{DataUnitId, KeyId, RequestId};
use zeroize::Zeroizing;

use crate::backend::KmaEndpoint;
use ::wire::ErrorCode;

/// Every route of the protocol starts with this prefix.
pub const PREFIX: &str = "/agent/v1";
/// The purpose bound into an enrollment challenge, so a proof made for another kind of login
/// (a user's, a KMA's) cannot be replayed here.
pub const ENROLL_PURPOSE: &str = "agent-enroll";
/// Common names of agent certificates are `agent:<ID>`.
pub const AGENT_CN_PREFIX: &str = "agent:";

/// The `code` of an error body, in the agent API's spelling of [`ErrorCode`] (the vocabulary
/// of every KMA API). Frozen: integrators match on them; `wire`'s golden test pins them.
pub mod codes {
    use ::wire::ErrorCode;

    /// The KMA holds no master key: ask another KMA (retryable).
    pub const KMA_LOCKED: &str = ErrorCode::KmaLocked.agent_code();
    /// No leader, no majority, or this KMA lags behind `min_index` (retryable).
    pub const UNAVAILABLE: &str = ErrorCode::Unavailable.agent_code();
    /// The state machine refused the command; `reject` holds its frozen numeric code.
    pub const REJECTED: &str = ErrorCode::Rejected.agent_code();
    /// No client certificate was presented on a route that needs one.
    pub const CERTIFICATE_REQUIRED: &str = ErrorCode::CertificateRequired.agent_code();
    /// The certificate is from this cluster but does not name an agent.
    pub const NOT_AN_AGENT: &str = ErrorCode::NotAnAgent.agent_code();
    /// The certificate is not the agent's current one (it re-enrolled since).
    pub const CERTIFICATE_REVOKED: &str = ErrorCode::CertificateRevoked.agent_code();
    /// Malformed JSON, path or query, or no such route.
    pub const BAD_REQUEST: &str = ErrorCode::BadRequest.agent_code();
    /// The request body is larger than `wire::REQUEST_BODY_LEN_MAX`.
    pub const BODY_TOO_LARGE: &str = ErrorCode::BodyTooLarge.agent_code();
    /// The route exists, not with this HTTP method.
    pub const METHOD_NOT_ALLOWED: &str = ErrorCode::MethodNotAllowed.agent_code();
    /// Wrong passphrase, unknown agent, or a proof that does not answer a pending challenge.
    pub const AUTHENTICATION_FAILED: &str = ErrorCode::AuthenticationFailed.agent_code();
    /// Too many failed enrollments for this agent ID or source address.
    pub const THROTTLED: &str = ErrorCode::Throttled.agent_code();
    /// The KMA could not complete the request (certificate signing, unwrap).
    pub const INTERNAL: &str = ErrorCode::Internal.agent_code();
}

/// Names the client and its sequence number; a retry reuses it (SPEC A6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRequestId {
    /// 16 hex digits, chosen at random by each client process.
    #[serde(with = "hex_u64")]
    pub client: u64,
    pub seq: u64,
}

impl From<WireRequestId> for RequestId {
    fn from(id: WireRequestId) -> Self {
        RequestId { client: id.client, seq: id.seq }
    }
}

impl From<RequestId> for WireRequestId {
    fn from(id: RequestId) -> Self {
        WireRequestId { client: id.client, seq: id.seq }
    }
}

/// The body of every refusal of the agent API, the framework's own included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One of [`codes`]: the agent spelling of an [`ErrorCode`]. A string, so that a client
    /// of this version still reads the refusals of a newer KMA.
    pub code: String,
    pub message: String,
    /// The same request (same request ID) may succeed later or on another KMA.
    pub retryable: bool,
    /// Frozen numeric code of the state machine's `Reject`, with `code` = `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<u16>,
    /// What to do next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// For `throttled`: when the next attempt will be accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    /// The code as the vocabulary of every KMA API knows it; `None` for a code this version of
    /// the library does not know (a newer KMA's).
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse_agent_code(&self.code)
    }
}

/// A key value in clear hex. Zeroized on drop; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretHex(pub Zeroizing<String>);

impl std::fmt::Debug for SecretHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHex(..)")
    }
}

impl Serialize for SecretHex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretHex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| SecretHex(Zeroizing::new(text)))
    }
}

/// One key as a drive receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireKey {
    #[serde(with = "key_id_hex")]
    pub key_id: KeyId,
    /// `protect-and-process`, `process-only`, `deactivated` or `compromised`.
    pub state: String,
    /// 64 hex digits: the AES-256 key.
    pub value: SecretHex,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollHello {
    pub agent_id: String,
    #[serde(with = "hex_array")]
    pub client_nonce: [u8; 24],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollChallenge {
    #[serde(with = "hex_array")]
    pub salt: [u8; 16],
    pub kdf: security_core::kdf::KdfParams,
    #[serde(with = "hex_array")]
    pub server_nonce: [u8; 24],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollProof {
    pub agent_id: String,
    #[serde(with = "hex_array")]
    pub server_nonce: [u8; 24],
    #[serde(with = "hex_array")]
    pub proof: [u8; 32],
    /// PKCS#10 request for the key pair the drive made; only its public key is used.
    pub csr_pem: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResult {
    /// Proves the KMA holds the agent's verifier; the client checks it before trusting the rest.
    #[serde(with = "hex_array")]
    pub server_signature: [u8; 32],
    pub certificate_pem: String,
    pub ca_pem: String,
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// 16 hex digits; `null` before the cluster is initialised.
    pub cluster_id: Option<String>,
    pub kmas: Vec<KmaEndpoint>,
    /// The caller's site, when it presented a valid agent certificate (SPEC C2).
    pub agent_site: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateDataUnitRequest {
    pub external_tag: String,
    pub request_id: WireRequestId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUnitCreated {
    #[serde(with = "data_unit_hex")]
    pub data_unit: DataUnitId,
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteKeyRequest {
    pub from_bot: bool,
    pub request_id: WireRequestId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteKeyResponse {
    #[serde(with = "data_unit_hex")]
    pub data_unit: DataUnitId,
    pub key: WireKey,
    /// The data unit's current protect-and-process key rather than a new one.
    pub reused: bool,
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUnitKeys {
    #[serde(with = "data_unit_hex")]
    pub data_unit: DataUnitId,
    pub keys: Vec<WireKey>,
    /// The index this KMA had applied when it answered.
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLookup {
    pub key: WireKey,
    /// The data unit the key was associated with by this request (SPEC A5), else the one
    /// named in the query, else `null`.
    #[serde(with = "option_data_unit_hex")]
    pub data_unit: Option<DataUnitId>,
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisassociateRequest {
    pub request_id: WireRequestId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disassociated {
    pub count: u32,
    pub index: u64,
}

/// `?min_index=N` of every agent route but the key by ID (which has [`KeyQuery`]).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ReadQuery {
    pub min_index: Option<u64>,
}

/// `?data_unit=&external_tag=&min_index=` of the key-by-ID route.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KeyQuery {
    pub data_unit: Option<String>,
    pub external_tag: Option<String>,
    pub min_index: Option<u64>,
}

fn invalid<E: serde::de::Error>(what: &str, text: &str) -> E {
    E::custom(format!("{what} must be lowercase hex, got {text:?}"))
}

pub mod hex_array {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&text, &mut out).map_err(|_| invalid("a byte string", &text))?;
        Ok(out)
    }
}

pub mod hex_u64 {
    use super::*;

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16).map_err(|_| invalid("a request client", &text))
    }
}

pub mod key_id_hex {
    use super::*;

    pub fn serialize<S: Serializer>(id: &KeyId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<KeyId, D::Error> {
        let text = String::deserialize(deserializer)?;
        KeyId::from_hex(&text).ok_or_else(|| invalid("a key ID (60 digits)", &text))
    }
}

pub mod data_unit_hex {
    use super::*;

    pub fn serialize<S: Serializer>(id: &DataUnitId, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DataUnitId, D::Error> {
        let text = String::deserialize(deserializer)?;
        DataUnitId::from_hex(&text).ok_or_else(|| invalid("a data unit ID (32 digits)", &text))
    }
}

pub mod option_data_unit_hex {
    use super::*;

    pub fn serialize<S: Serializer>(
        id: &Option<DataUnitId>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => serializer.collect_str(id),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DataUnitId>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        DataUnitId::from_hex(&text)
            .map(Some)
            .ok_or_else(|| invalid("a data unit ID (32 digits)", &text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expectation: bodies look exactly as docs/agent-protocol.md shows them (integrators and
    /// curl users rely on it): hex IDs, request IDs as {client, seq}, optional fields left out.
    #[test]
    fn a2_wire_bodies_match_the_documented_shapes() {
        let request = WriteKeyRequest {
            from_bot: true,
            request_id: WireRequestId { client: 0x9f3c_2a1b_0000_0001, seq: 2 },
        };
        let json = serde_json::to_string(&request).expect("encode");
        assert_eq!(json, r#"{"from_bot":true,"request_id":{"client":"9f3c2a1b00000001","seq":2}}"#);
        let data_unit = DataUnitId { cluster_id: statemachine::ClusterId(1), serial: 7 };
        let created = serde_json::to_string(&DataUnitCreated { data_unit, index: 43 });
        assert_eq!(
            created.expect("encode"),
            r#"{"data_unit":"00000000000000010000000000000007","index":43}"#
        );
        let error = ErrorBody {
            code: codes::KMA_LOCKED.into(),
            message: "locked".into(),
            retryable: true,
            reject: None,
            help: None,
            retry_after_ms: None,
        };
        let json = serde_json::to_string(&error).expect("encode");
        assert_eq!(json, r#"{"code":"kma_locked","message":"locked","retryable":true}"#);
        let parsed: WriteKeyRequest = serde_json::from_str(
            r#"{"from_bot":false,"request_id":{"client":"00000000000000AA","seq":1}}"#,
        )
        .expect("upper-case hex is accepted");
        assert_eq!(parsed.request_id.client, 0xaa);
        let bad = serde_json::from_str::<DataUnitCreated>(r#"{"data_unit":"xyz","index":1}"#);
        assert!(bad.is_err_and(|error| error.to_string().contains("32 digits")));
    }
}
