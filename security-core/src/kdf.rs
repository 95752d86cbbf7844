//! argon2id, the only way a passphrase becomes a key here (quorum shares and login verifiers).
//!
//! Parameters travel inside blobs and login challenges, so they are checked against the bounds
//! below before any work: a damaged blob or a hostile server must not make a KMA or a client
//! allocate gigabytes or spin for hours, nor talk a client down to a trivially cheap hash.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::SecurityError;

/// Least memory accepted, in KiB: the floor a hostile server can talk a client down to.
pub const MEMORY_KIB_MIN: u32 = 1024;
/// Most memory accepted, in KiB (1 GiB).
pub const MEMORY_KIB_MAX: u32 = 1024 * 1024;
/// Most passes over memory accepted (with the memory bound, a damaged blob or a hostile server
/// costs at most seconds of work before the AEAD refuses).
pub const ITERATIONS_MAX: u32 = 16;
/// Most lanes accepted.
pub const PARALLELISM_MAX: u32 = 16;
/// Length of every salt, in bytes.
pub const SALT_LEN: usize = 16;

/// argon2id cost parameters, stored next to every salt they were used with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        KdfParams { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

impl KdfParams {
    /// The cheapest accepted parameters, for tests only: 1 MiB, 1 iteration, 1 lane.
    pub const fn fast_for_tests() -> Self {
        KdfParams { memory_kib: MEMORY_KIB_MIN, iterations: 1, parallelism: 1 }
    }

    /// Checks the parameters against this module's bounds (and argon2's 8 KiB per lane).
    pub fn check(&self) -> Result<(), SecurityError> {
        let in_range = (MEMORY_KIB_MIN..=MEMORY_KIB_MAX).contains(&self.memory_kib)
            && (1..=ITERATIONS_MAX).contains(&self.iterations)
            && (1..=PARALLELISM_MAX).contains(&self.parallelism)
            && self.memory_kib >= 8 * self.parallelism;
        if in_range {
            Ok(())
        } else {
            Err(self.out_of_range())
        }
    }

    fn out_of_range(&self) -> SecurityError {
        SecurityError::KdfParamsOutOfRange {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
            parallelism: self.parallelism,
        }
    }

    /// argon2id(passphrase, salt) with these parameters: a 32-byte key.
    pub(crate) fn derive(
        &self,
        passphrase: &[u8],
        salt: &[u8; SALT_LEN],
    ) -> Result<Zeroizing<[u8; 32]>, SecurityError> {
        self.check()?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|_| self.out_of_range())?;
        let mut key = Zeroizing::new([0u8; 32]);
        // After `check`, argon2 can only refuse a passphrase longer than 4 GiB.
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, key.as_mut())
            .map_err(|_| SecurityError::WrongPassphrase)?;
        Ok(key)
    }
}
