//! Data keys (the keys drives encrypt tapes with) and their wrapping under the master key.
//!
//! A data key is stored only as a [`WrappedKey`]: AES-256-GCM under a subkey of the master key
//! (HKDF-SHA256 with its own label), a random 96-bit nonce per wrap, and an AAD that binds the
//! wrap format version, the cluster ID and the key ID. So a wrapped value copied onto another key
//! ID, or into another cluster, does not open. `WrappedKey` is a fixed struct of the state
//! machine with no room for a version byte: the version lives in the AAD, so a future format
//! will refuse to open a value of this one rather than misread it.
//!
//! Random nonces are safe here up to about 2^32 wraps under one master key (NIST SP 800-38D),
//! orders of magnitude beyond a key pool's life.

use core::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use statemachine::command::NewKey;
use statemachine::ids::KEY_ID_LEN;
use statemachine::key::{KeyCheckValue, WrappedKey};
use statemachine::{ClusterId, KeyId};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto;
use crate::error::SecurityError;
use crate::master_key::MasterKey;

/// Length of a data key in bytes (AES-256).
pub const KEY_MATERIAL_LEN: usize = 32;

/// Format version of wrapped keys, bound into the AAD.
const WRAP_VERSION: u8 = 1;
/// HKDF info of the master key's wrapping subkey.
const WRAP_SUBKEY_LABEL: &[u8] = b"kma data key wrap v1";
/// The HMAC message whose MAC under a data key is its check value.
const CHECK_VALUE_LABEL: &[u8] = b"kma data key check value v1";

/// A clear data key. Zeroized on drop; `Debug` prints `KeyMaterial(..)`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyMaterial([u8; KEY_MATERIAL_LEN]);

impl KeyMaterial {
    /// A new random data key from the operating system's generator.
    pub fn generate() -> KeyMaterial {
        KeyMaterial(crypto::random())
    }

    /// A data key from known bytes (a KMS 1.x import, SPEC M1). The caller zeroizes its copy.
    pub fn from_bytes(bytes: &[u8; KEY_MATERIAL_LEN]) -> KeyMaterial {
        KeyMaterial(*bytes)
    }

    /// The clear bytes, for the TLS session that hands them to a drive and nothing else.
    pub fn as_bytes(&self) -> &[u8; KEY_MATERIAL_LEN] {
        &self.0
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(..)")
    }
}

/// AAD of a wrapped key: version || cluster ID (big-endian) || key ID.
fn aad(cluster_id: ClusterId, key_id: &KeyId) -> [u8; 1 + 8 + KEY_ID_LEN] {
    let mut aad = [0u8; 1 + 8 + KEY_ID_LEN];
    aad[0] = WRAP_VERSION;
    aad[1..9].copy_from_slice(&cluster_id.0.to_be_bytes());
    aad[9..].copy_from_slice(&key_id.0);
    aad
}

fn wrapping_cipher(master: &MasterKey) -> Aes256Gcm {
    let subkey = master.subkey(WRAP_SUBKEY_LABEL);
    Aes256Gcm::new(subkey.as_ref().into())
}

fn wrap_with(
    cipher: &Aes256Gcm,
    cluster_id: ClusterId,
    key_id: &KeyId,
    material: &KeyMaterial,
) -> WrappedKey {
    let nonce = crypto::random::<{ crypto::NONCE_LEN }>();
    let mut ciphertext = material.0;
    // AES-GCM only fails for messages beyond 64 GiB; this one is 32 bytes.
    let tag = cipher
        .encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            &aad(cluster_id, key_id),
            &mut ciphertext,
        )
        .expect("AES-GCM encrypts 32 bytes");
    WrappedKey { nonce, ciphertext, tag: tag.into() }
}

/// Wraps `material` for `key_id` of `cluster_id` under the master key.
pub fn wrap_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    key_id: &KeyId,
    material: &KeyMaterial,
) -> WrappedKey {
    wrap_with(&wrapping_cipher(master), cluster_id, key_id, material)
}

/// Opens a value made by [`wrap_key`] for the same key ID and cluster under the same master key.
pub fn unwrap_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    key_id: &KeyId,
    wrapped: &WrappedKey,
) -> Result<KeyMaterial, SecurityError> {
    let mut material = KeyMaterial(wrapped.ciphertext);
    wrapping_cipher(master)
        .decrypt_in_place_detached(
            Nonce::from_slice(&wrapped.nonce),
            &aad(cluster_id, key_id),
            &mut material.0,
            Tag::from_slice(&wrapped.tag),
        )
        .map_err(|_| SecurityError::KeyUnwrapFailed)?;
    Ok(material)
}

/// HMAC-SHA256 of a fixed label under the data key, first 16 bytes: tells "same ID, same
/// value" from "same ID, other value" on import without revealing the value.
pub fn check_value(material: &KeyMaterial) -> KeyCheckValue {
    let mac = crypto::hmac_sha256(&material.0, &[CHECK_VALUE_LABEL]);
    let mut value = [0u8; 16];
    value.copy_from_slice(&mac[..16]);
    KeyCheckValue(value)
}

fn new_pool_key_with(cipher: &Aes256Gcm, cluster_id: ClusterId) -> NewKey {
    let id = KeyId::native(cluster_id, crypto::random());
    let material = KeyMaterial::generate();
    NewKey {
        material: wrap_with(cipher, cluster_id, &id, &material),
        check_value: check_value(&material),
        id,
    }
}

/// A new pool key ready to propose: a native key ID with 22 random bytes, fresh material wrapped
/// under the master key, and its check value. The clear material is dropped (and zeroized) here.
pub fn new_pool_key(master: &MasterKey, cluster_id: ClusterId) -> NewKey {
    new_pool_key_with(&wrapping_cipher(master), cluster_id)
}

/// `count` new pool keys (see [`new_pool_key`]); the caller bounds `count` by the pool limits.
pub fn new_pool_keys(master: &MasterKey, cluster_id: ClusterId, count: usize) -> Vec<NewKey> {
    let cipher = wrapping_cipher(master);
    (0..count).map(|_| new_pool_key_with(&cipher, cluster_id)).collect()
}
