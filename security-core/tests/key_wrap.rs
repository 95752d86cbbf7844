//! Data keys wrapped under the master key (SPEC S3; key material at rest).

use security_core::{
    check_value, new_pool_key, new_pool_keys, unwrap_key, wrap_key, KeyMaterial, MasterKey,
    SecurityError,
};
use statemachine::{ClusterId, KeyId};

const CLUSTER: ClusterId = ClusterId(0x00c0_ffee_0000_0001);

fn key_id(byte: u8) -> KeyId {
    KeyId::native(CLUSTER, [byte; 22])
}

/// Setup: a master key and a data key. Action: wrap, then unwrap with the same key ID and
/// cluster. Expectation: the same bytes, and a fresh nonce on every wrap.
#[test]
fn s3_wrap_unwrap_round_trip() {
    let master = MasterKey::generate();
    let material = KeyMaterial::generate();
    let wrapped = wrap_key(&master, CLUSTER, &key_id(1), &material);
    assert_ne!(&wrapped.ciphertext, material.as_bytes());
    let unwrapped = unwrap_key(&master, CLUSTER, &key_id(1), &wrapped).unwrap();
    assert_eq!(unwrapped.as_bytes(), material.as_bytes());
    let again = wrap_key(&master, CLUSTER, &key_id(1), &material);
    assert_ne!(again.nonce, wrapped.nonce);
}

/// Setup: a key wrapped for key ID 1. Action: unwrap it as key ID 2. Expectation:
/// `KeyUnwrapFailed` (the key ID is bound in the AAD).
#[test]
fn s3_wrapped_key_for_another_key_id_is_refused() {
    let master = MasterKey::generate();
    let wrapped = wrap_key(&master, CLUSTER, &key_id(1), &KeyMaterial::generate());
    assert_eq!(
        unwrap_key(&master, CLUSTER, &key_id(2), &wrapped).unwrap_err(),
        SecurityError::KeyUnwrapFailed
    );
}

/// Setup: a key wrapped for `CLUSTER`. Action: unwrap it with the same key ID for another
/// cluster. Expectation: `KeyUnwrapFailed` (the cluster ID is bound in the AAD).
#[test]
fn s3_wrapped_key_for_another_cluster_is_refused() {
    let master = MasterKey::generate();
    let wrapped = wrap_key(&master, CLUSTER, &key_id(1), &KeyMaterial::generate());
    assert_eq!(
        unwrap_key(&master, ClusterId(CLUSTER.0 ^ 1), &key_id(1), &wrapped).unwrap_err(),
        SecurityError::KeyUnwrapFailed
    );
}

/// Setup: a key wrapped under one master key. Action: unwrap under another. Expectation:
/// `KeyUnwrapFailed`.
#[test]
fn s3_wrapped_key_under_another_master_key_is_refused() {
    let wrapped = wrap_key(&MasterKey::generate(), CLUSTER, &key_id(1), &KeyMaterial::generate());
    assert_eq!(
        unwrap_key(&MasterKey::generate(), CLUSTER, &key_id(1), &wrapped).unwrap_err(),
        SecurityError::KeyUnwrapFailed
    );
}

/// Setup: a wrapped key. Action: flip each bit of nonce, ciphertext and tag in turn.
/// Expectation: every flip gives `KeyUnwrapFailed`.
#[test]
fn s3_tampered_wrapped_key_is_refused() {
    let master = MasterKey::generate();
    let wrapped = wrap_key(&master, CLUSTER, &key_id(1), &KeyMaterial::generate());
    for bit in 0..(12 + 32 + 16) * 8 {
        let mut tampered = wrapped.clone();
        let (field, at): (&mut [u8], usize) = match bit / 8 {
            byte @ 0..12 => (&mut tampered.nonce, byte),
            byte @ 12..44 => (&mut tampered.ciphertext, byte - 12),
            byte => (&mut tampered.tag, byte - 44),
        };
        field[at] ^= 1 << (bit % 8);
        assert_eq!(
            unwrap_key(&master, CLUSTER, &key_id(1), &tampered).unwrap_err(),
            SecurityError::KeyUnwrapFailed,
            "bit {bit}"
        );
    }
}

/// Setup: two data keys. Action: compute check values. Expectation: equal for equal values
/// (also across KeyMaterial instances), different for different values.
#[test]
fn s3_check_value_tells_values_apart() {
    let a = KeyMaterial::from_bytes(&[7; 32]);
    let a_again = KeyMaterial::from_bytes(&[7; 32]);
    let b = KeyMaterial::from_bytes(&[8; 32]);
    assert_eq!(check_value(&a), check_value(&a_again));
    assert_ne!(check_value(&a), check_value(&b));
    assert_ne!(check_value(&a).0[..], a.as_bytes()[..16]);
}

/// Setup: a master key. Action: make 50 pool keys and one more. Expectation: native IDs of
/// this cluster, all distinct; each unwraps under its own ID and matches its check value.
#[test]
fn s3_new_pool_keys_unwrap_and_match_their_check_values() {
    let master = MasterKey::generate();
    let mut keys = new_pool_keys(&master, CLUSTER, 50);
    keys.push(new_pool_key(&master, CLUSTER));
    assert_eq!(keys.len(), 51);
    for key in &keys {
        assert_eq!(key.id.cluster_id(), CLUSTER);
        let material = unwrap_key(&master, CLUSTER, &key.id, &key.material).unwrap();
        assert_eq!(check_value(&material), key.check_value);
    }
    let mut ids: Vec<_> = keys.iter().map(|key| key.id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 51);
    assert!(new_pool_keys(&master, CLUSTER, 0).is_empty());
}

/// Setup: two master keys and a clone. Action: compare check values. Expectation: stable for a
/// key and its clone, different between keys; equality follows the bytes.
#[test]
fn s3_master_key_check_value_is_stable_and_distinct() {
    let master = MasterKey::generate();
    let clone = master.clone();
    let other = MasterKey::generate();
    assert_eq!(master.check_value(), clone.check_value());
    assert_ne!(master.check_value(), other.check_value());
    assert_eq!(master, clone);
    assert_ne!(master, other);
}
