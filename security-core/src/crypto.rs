//! The few primitive calls every module shares: OS randomness, HMAC-SHA256, HKDF-SHA256 and
//! AES-256-GCM, all from RustCrypto crates. Nothing here is a primitive of our own.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// AES-GCM nonce length: 96 bits, drawn at random for every encryption.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;

/// `N` bytes from the operating system's generator.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length (longer ones are hashed), so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A 32-byte key from HKDF-SHA256 (no salt) over `ikm`, bound to `info`.
pub(crate) fn hkdf_sha256(ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expansion cannot fail.
    Hkdf::<Sha256>::new(None, ikm)
        .expand_multi_info(info, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

/// AES-256-GCM encryption under a fresh random nonce; returns the nonce and ciphertext || tag.
pub(crate) fn aead_seal(
    key: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
) -> ([u8; NONCE_LEN], Vec<u8>) {
    let nonce = random::<NONCE_LEN>();
    let cipher = Aes256Gcm::new(key.into());
    // AES-GCM only fails for plaintexts beyond 64 GiB; ours are at most a few hundred bytes.
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("AES-GCM encrypts any plaintext shorter than 64 GiB");
    (nonce, sealed)
}

/// AES-256-GCM decryption of ciphertext || tag; `None` when the tag does not verify.
pub(crate) fn aead_open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = Aes256Gcm::new(key.into());
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad }).ok().map(Zeroizing::new)
}
