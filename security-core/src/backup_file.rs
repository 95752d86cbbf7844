//! Database backups encrypted under a fresh backup key (SPEC B2, issue #17).
//!
//! Each backup gets its own random [`BackupKey`], so that no two backups share a key and the
//! master key never encrypts bulk data. The backup key travels next to the data file as a
//! *backup key file*: the key wrapped under a subkey of the master key of its own label
//! (AES-256-GCM, random 96-bit nonce), the AAD binding the blob header, the cluster ID and the
//! backup's UUID. So a key file opens only with this cluster's master key, and only for the
//! backup it was taken with; restoring needs the key file, the data file and the core security
//! backup (which holds the master key) of the same cluster.

use core::fmt;

use serde::{Deserialize, Serialize};
use statemachine::ClusterId;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::blob::{self, Kind};
use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::error::SecurityError;
use crate::master_key::MasterKey;

/// Length of a backup key in bytes (AES-256).
pub const BACKUP_KEY_LEN: usize = 32;

/// Format version of backup key files.
const WRAP_VERSION: u8 = 1;
/// Label of the master key's subkey that wraps backup keys (no other key is wrapped under it).
const WRAP_LABEL: &[u8] = b"kma wrap backup key v1";

/// A backup's own key. Zeroized on drop; `Debug` prints `BackupKey(..)`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct BackupKey([u8; BACKUP_KEY_LEN]);

impl BackupKey {
    /// A new random backup key from the operating system's generator: one per backup.
    pub fn generate() -> BackupKey {
        BackupKey(crypto::random())
    }
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

/// The body of a backup key file after the blob header.
#[derive(Serialize, Deserialize)]
struct WrappedBackupKeyV1 {
    nonce: [u8; NONCE_LEN],
    /// Backup key || GCM tag.
    sealed: Vec<u8>,
}

/// AAD of a backup key file: blob header || cluster ID (big-endian) || backup UUID.
fn wrap_aad(cluster_id: ClusterId, backup_uuid: &[u8; 16]) -> [u8; blob::HEADER_LEN + 8 + 16] {
    let mut aad = [0u8; blob::HEADER_LEN + 8 + 16];
    aad[..blob::HEADER_LEN].copy_from_slice(&blob::header(Kind::WrappedBackupKey, WRAP_VERSION));
    aad[blob::HEADER_LEN..blob::HEADER_LEN + 8].copy_from_slice(&cluster_id.0.to_be_bytes());
    aad[blob::HEADER_LEN + 8..].copy_from_slice(backup_uuid);
    aad
}

/// The backup key file of the backup `backup_uuid` of `cluster_id`: `key` wrapped under the
/// master key.
pub fn wrap_backup_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    backup_uuid: &[u8; 16],
    key: &BackupKey,
) -> Vec<u8> {
    let subkey = master.subkey(WRAP_LABEL);
    let (nonce, sealed) = crypto::aead_seal(&subkey, &wrap_aad(cluster_id, backup_uuid), &key.0);
    blob::encode(Kind::WrappedBackupKey, WRAP_VERSION, &WrappedBackupKeyV1 { nonce, sealed })
}

/// Opens a backup key file made by [`wrap_backup_key`] for the same backup and cluster under
/// the same master key.
pub fn unwrap_backup_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    backup_uuid: &[u8; 16],
    wrapped: &[u8],
) -> Result<BackupKey, SecurityError> {
    let body: WrappedBackupKeyV1 = blob::decode(wrapped, Kind::WrappedBackupKey, WRAP_VERSION)?;
    if body.sealed.len() != BACKUP_KEY_LEN + TAG_LEN {
        return Err(SecurityError::MalformedBlob { what: Kind::WrappedBackupKey.what() });
    }
    let subkey = master.subkey(WRAP_LABEL);
    let clear =
        crypto::aead_open(&subkey, &body.nonce, &wrap_aad(cluster_id, backup_uuid), &body.sealed)
            .ok_or(SecurityError::WrongBackupKey)?;
    let mut key = BackupKey([0; BACKUP_KEY_LEN]);
    // The sealed length was checked above, so the clear key is BACKUP_KEY_LEN bytes.
    key.0.copy_from_slice(clear.get(..BACKUP_KEY_LEN).ok_or(SecurityError::WrongBackupKey)?);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterId = ClusterId(0x00c0_ffee_0000_0017);
    const UUID: [u8; 16] = [0x17; 16];

    /// Setup: a master key and a backup key. Action: wrap, unwrap. Expectation: the same key
    /// bytes back, and the key file does not hold them.
    #[test]
    fn b2_backup_key_file_round_trip() {
        let master = MasterKey::generate();
        let key = BackupKey::generate();
        let wrapped = wrap_backup_key(&master, CLUSTER, &UUID, &key);
        assert!(!wrapped.windows(16).any(|w| key.0.windows(16).any(|k| k == w)));
        let opened = unwrap_backup_key(&master, CLUSTER, &UUID, &wrapped).expect("opened");
        assert_eq!(opened.0, key.0);
        assert_ne!(BackupKey::generate().0, key.0);
    }

    /// Setup: a backup key file. Action: change its sealed length. Expectation: a malformed
    /// backup key file, not a wrong key.
    #[test]
    fn b2_backup_key_file_of_wrong_length_is_malformed() {
        let master = MasterKey::generate();
        let nonce = [0; NONCE_LEN];
        let short = WrappedBackupKeyV1 { nonce, sealed: vec![0; BACKUP_KEY_LEN + TAG_LEN - 1] };
        let wrapped = blob::encode(Kind::WrappedBackupKey, WRAP_VERSION, &short);
        assert_eq!(
            unwrap_backup_key(&master, CLUSTER, &UUID, &wrapped).map(drop),
            Err(SecurityError::MalformedBlob { what: "backup key file" })
        );
    }
}
