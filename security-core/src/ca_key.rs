//! The cluster CA's private key wrapped under the master key (issue #16 point 1), so that no
//! KMA keeps it in clear at rest: the wrapped key lives in the replicated state, and a KMA
//! unwraps it in memory only while it holds the master key. A locked KMA signs nothing.
//!
//! AES-256-GCM under a subkey of the master key of its own label; the AAD binds the blob
//! header, the cluster ID and the SHA-256 of the CA certificate, so a wrapped key is opened
//! only for the certificate it belongs to, in the cluster it belongs to.

use serde::{Deserialize, Serialize};
use statemachine::ClusterId;
use zeroize::Zeroizing;

use crate::blob::{self, Kind};
use crate::crypto::{self, NONCE_LEN};
use crate::error::SecurityError;
use crate::master_key::MasterKey;

/// Format version of wrapped CA keys.
const CA_KEY_VERSION: u8 = 1;
/// Label of the master key's subkey that wraps the CA key (no other key is wrapped under it).
const CA_KEY_LABEL: &[u8] = b"kma wrap ca key v1";
/// The longest CA key accepted (PEM): an ECDSA or Ed25519 key is a few hundred bytes.
pub const CA_KEY_PEM_LEN_MAX: usize = 2_048;

#[derive(Serialize, Deserialize)]
struct WrappedCaKeyV1 {
    nonce: [u8; NONCE_LEN],
    /// The key's PEM || GCM tag.
    sealed: Vec<u8>,
}

fn aad(cluster_id: ClusterId, ca_certificate_sha256: &[u8; 32]) -> Vec<u8> {
    let mut aad = blob::header(Kind::WrappedCaKey, CA_KEY_VERSION).to_vec();
    aad.extend_from_slice(&cluster_id.0.to_be_bytes());
    aad.extend_from_slice(ca_certificate_sha256);
    aad
}

/// Wraps the CA's private key (PEM) of the certificate whose DER hashes to
/// `ca_certificate_sha256` under the master key.
pub fn wrap_ca_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    ca_certificate_sha256: &[u8; 32],
    key_pem: &str,
) -> Result<Vec<u8>, SecurityError> {
    if key_pem.is_empty() || key_pem.len() > CA_KEY_PEM_LEN_MAX {
        return Err(SecurityError::MalformedBlob { what: Kind::WrappedCaKey.what() });
    }
    let key = master.subkey(CA_KEY_LABEL);
    let aad = aad(cluster_id, ca_certificate_sha256);
    let (nonce, sealed) = crypto::aead_seal(&key, &aad, key_pem.as_bytes());
    Ok(blob::encode(Kind::WrappedCaKey, CA_KEY_VERSION, &WrappedCaKeyV1 { nonce, sealed }))
}

/// Opens a blob made by [`wrap_ca_key`] for the same certificate and cluster under the same
/// master key: the CA key's PEM, zeroized on drop.
pub fn unwrap_ca_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    ca_certificate_sha256: &[u8; 32],
    wrapped: &[u8],
) -> Result<Zeroizing<String>, SecurityError> {
    let body: WrappedCaKeyV1 = blob::decode(wrapped, Kind::WrappedCaKey, CA_KEY_VERSION)?;
    let key = master.subkey(CA_KEY_LABEL);
    let aad = aad(cluster_id, ca_certificate_sha256);
    let clear = crypto::aead_open(&key, &body.nonce, &aad, &body.sealed)
        .ok_or(SecurityError::KeyUnwrapFailed)?;
    let text = std::str::from_utf8(&clear)
        .map_err(|_| SecurityError::MalformedBlob { what: Kind::WrappedCaKey.what() })?;
    Ok(Zeroizing::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n";

    /// S3: the CA key comes back only under the same master key, cluster and certificate, and
    /// the wrapped bytes do not hold it.
    #[test]
    fn s3_a_wrapped_ca_key_opens_only_for_its_master_key_cluster_and_certificate() {
        let master = MasterKey::generate();
        let wrapped = wrap_ca_key(&master, ClusterId(7), &[1; 32], PEM).expect("wrapped");
        assert!(!wrapped.windows(20).any(|w| PEM.as_bytes().windows(20).any(|p| p == w)));
        let opened = unwrap_ca_key(&master, ClusterId(7), &[1; 32], &wrapped).expect("opened");
        assert_eq!(opened.as_str(), PEM);
        let other = MasterKey::generate();
        assert!(unwrap_ca_key(&other, ClusterId(7), &[1; 32], &wrapped).is_err());
        assert!(unwrap_ca_key(&master, ClusterId(8), &[1; 32], &wrapped).is_err());
        assert!(unwrap_ca_key(&master, ClusterId(7), &[2; 32], &wrapped).is_err());
        assert!(unwrap_ca_key(&master, ClusterId(7), &[1; 32], &wrapped[..10]).is_err());
        assert!(wrap_ca_key(&master, ClusterId(7), &[1; 32], "").is_err());
    }
}
