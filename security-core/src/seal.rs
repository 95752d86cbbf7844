//! The master key sealed to one KMA, for autonomous unlock after a reboot (SPEC C6).
//!
//! The sealing key is HKDF-SHA256 over the KMA's own secret (the PEM bytes of its private TLS
//! key), bound to a label and the cluster ID; the master key is encrypted under it with
//! AES-256-GCM, the AAD binding the blob header and the cluster ID.
//!
//! This is a deliberate trade-off, chosen per cluster by a Security Officer: a KMA with
//! autonomous unlock serves keys after a reboot without any quorum member, and in exchange
//! **whoever can read the KMA's data directory (TLS key and sealed blob together) can unlock the
//! master key**. The seal protects against a copy of the sealed blob alone, a backup that lacks
//! the TLS key, and a blob moved to another cluster; it does not protect against a stolen disk.
//! Without autonomous unlock, no sealed blob should be written at all.

use serde::{Deserialize, Serialize};
use statemachine::ClusterId;

use crate::blob::{self, Kind};
use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::error::SecurityError;
use crate::master_key::{MasterKey, MASTER_KEY_LEN};

/// Format version of sealed master keys.
const SEAL_VERSION: u8 = 1;
/// HKDF info prefix of the sealing key (the cluster ID follows).
const SEAL_KEY_LABEL: &[u8] = b"kma seal master key v1";

/// The body after the blob header.
#[derive(Serialize, Deserialize)]
struct SealedV1 {
    nonce: [u8; NONCE_LEN],
    /// Master key || GCM tag.
    sealed: Vec<u8>,
}

fn sealing_key(cluster_id: ClusterId, node_secret: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
    crypto::hkdf_sha256(node_secret, &[SEAL_KEY_LABEL, &cluster_id.0.to_be_bytes()])
}

fn aad(cluster_id: ClusterId) -> [u8; blob::HEADER_LEN + 8] {
    let mut aad = [0u8; blob::HEADER_LEN + 8];
    aad[..blob::HEADER_LEN].copy_from_slice(&blob::header(Kind::SealedMasterKey, SEAL_VERSION));
    aad[blob::HEADER_LEN..].copy_from_slice(&cluster_id.0.to_be_bytes());
    aad
}

/// Seals `master` to the KMA whose secret is `node_secret` (its private TLS key, PEM bytes).
pub fn seal_master_key(master: &MasterKey, cluster_id: ClusterId, node_secret: &[u8]) -> Vec<u8> {
    let key = sealing_key(cluster_id, node_secret);
    let (nonce, sealed) = crypto::aead_seal(&key, &aad(cluster_id), master.as_bytes());
    blob::encode(Kind::SealedMasterKey, SEAL_VERSION, &SealedV1 { nonce, sealed })
}

/// Opens a blob made by [`seal_master_key`] with the same cluster ID and node secret.
pub fn unseal_master_key(
    sealed: &[u8],
    cluster_id: ClusterId,
    node_secret: &[u8],
) -> Result<MasterKey, SecurityError> {
    let body: SealedV1 = blob::decode(sealed, Kind::SealedMasterKey, SEAL_VERSION)?;
    if body.sealed.len() != MASTER_KEY_LEN + TAG_LEN {
        return Err(SecurityError::MalformedBlob { what: Kind::SealedMasterKey.what() });
    }
    let key = sealing_key(cluster_id, node_secret);
    let clear = crypto::aead_open(&key, &body.nonce, &aad(cluster_id), &body.sealed)
        .ok_or(SecurityError::UnsealFailed)?;
    let bytes: &[u8; MASTER_KEY_LEN] =
        clear.as_slice().try_into().map_err(|_| SecurityError::UnsealFailed)?;
    Ok(MasterKey::from_bytes(bytes))
}
