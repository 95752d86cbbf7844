//! The master key sealed to a KMA for autonomous unlock (SPEC C6).

use security_core::{seal_master_key, unseal_master_key, MasterKey, SecurityError};
use statemachine::ClusterId;

const CLUSTER: ClusterId = ClusterId(42);
const NODE_SECRET: &[u8] = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI...\n";

/// Setup: a master key. Action: seal it to a node secret, unseal with the same secret.
/// Expectation: the same master key; the blob starts with version 1 and does not hold the key.
#[test]
fn c6_seal_unseal_round_trip() {
    let master = MasterKey::generate();
    let sealed = seal_master_key(&master, CLUSTER, NODE_SECRET);
    assert_eq!(sealed[..2], [1, b'M']);
    assert_eq!(unseal_master_key(&sealed, CLUSTER, NODE_SECRET).unwrap(), master);
    assert_ne!(seal_master_key(&master, CLUSTER, NODE_SECRET), sealed, "fresh nonce");
}

/// Setup: a master key sealed to one node secret. Action: unseal with another (one byte
/// changed, and empty). Expectation: `UnsealFailed`.
#[test]
fn c6_wrong_node_secret_is_refused() {
    let sealed = seal_master_key(&MasterKey::generate(), CLUSTER, NODE_SECRET);
    let mut other = NODE_SECRET.to_vec();
    other[40] ^= 1;
    for secret in [&other[..], b""] {
        assert_eq!(
            unseal_master_key(&sealed, CLUSTER, secret).unwrap_err(),
            SecurityError::UnsealFailed
        );
    }
}

/// Setup: a master key sealed for cluster 42. Action: unseal for cluster 43 with the same
/// secret. Expectation: `UnsealFailed`.
#[test]
fn c6_sealed_for_another_cluster_is_refused() {
    let sealed = seal_master_key(&MasterKey::generate(), CLUSTER, NODE_SECRET);
    assert_eq!(
        unseal_master_key(&sealed, ClusterId(43), NODE_SECRET).unwrap_err(),
        SecurityError::UnsealFailed
    );
}

/// Setup: a sealed master key. Action: flip each bit in turn and unseal. Expectation: an error
/// every time, never a key or a panic.
#[test]
fn c6_every_bit_flip_of_a_sealed_master_key_is_refused() {
    let sealed = seal_master_key(&MasterKey::generate(), CLUSTER, NODE_SECRET);
    for bit in 0..sealed.len() * 8 {
        let mut flipped = sealed.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(unseal_master_key(&flipped, CLUSTER, NODE_SECRET).is_err(), "bit {bit}");
    }
}
