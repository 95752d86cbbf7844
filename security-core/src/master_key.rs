//! The cluster master key: 32 random bytes that protect every data key (SPEC S3).
//!
//! It exists in clear only in a KMA's memory while the KMA is unlocked. At rest it lives split
//! among the quorum ([`crate::quorum_shares`]) and, with autonomous unlock, sealed to a KMA
//! ([`crate::seal`]). Each use derives its own subkey with HKDF, so that the key that wraps data
//! keys is never the key of any other operation.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto;

/// Length of the master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The HMAC message whose MAC under the master key is its check value.
const CHECK_VALUE_LABEL: &[u8] = b"kma master key check value v1";

/// The cluster master key. Zeroized on drop; `Debug` prints `MasterKey(..)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl MasterKey {
    /// A new random master key from the operating system's generator.
    pub fn generate() -> MasterKey {
        MasterKey(crypto::random())
    }

    /// HMAC-SHA256 of a fixed label under the key, first 16 bytes: shows whether two KMAs hold
    /// the same master key without revealing it.
    pub fn check_value(&self) -> [u8; 16] {
        let mac = crypto::hmac_sha256(&self.0, &[CHECK_VALUE_LABEL]);
        let mut value = [0u8; 16];
        value.copy_from_slice(&mac[..16]);
        value
    }

    pub(crate) fn from_bytes(bytes: &[u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey(*bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// The subkey for one use of the master key (HKDF-SHA256, `label` as info).
    pub(crate) fn subkey(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        crypto::hkdf_sha256(&self.0, &[label])
    }
}

impl PartialEq for MasterKey {
    /// Constant-time comparison.
    fn eq(&self, other: &MasterKey) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for MasterKey {}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}
