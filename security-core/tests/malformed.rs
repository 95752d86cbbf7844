//! Malformed blobs of every kind give errors, never panics (truncated, foreign, future, random).

use proptest::prelude::*;
use security_core::{
    create_verifier, seal_master_key, split_master_key, unseal_master_key, unwrap_key,
    unwrap_share, verifier_kdf, ClientLogin, KdfParams, MasterKey, SecurityError, ServerLogin,
};
use statemachine::key::WrappedKey;
use statemachine::{ClusterId, KeyId};

const CLUSTER: ClusterId = ClusterId(9);
const SECRET: &[u8] = b"node secret";

/// One valid blob of each kind: wrapped share, sealed master key, verifier.
fn valid_blobs() -> [Vec<u8>; 3] {
    let master = MasterKey::generate();
    let fast = KdfParams::fast_for_tests();
    let share = split_master_key(&master, CLUSTER, &[("alice", "pw")], 1, fast).expect("split");
    [
        share[0].1.clone(),
        seal_master_key(&master, CLUSTER, SECRET),
        create_verifier("pw", fast).expect("verifier"),
    ]
}

/// Feeds `bytes` to every parser of a persisted or received blob; each must return.
fn parse_everywhere(bytes: &[u8]) -> [Result<(), SecurityError>; 4] {
    let (_, hello) = ClientLogin::start("alice", "unlock");
    [
        unwrap_share(bytes, CLUSTER, "alice", "pw").map(drop),
        unseal_master_key(bytes, CLUSTER, SECRET).map(drop),
        verifier_kdf(bytes).map(drop),
        ServerLogin::challenge(Some(bytes), &hello, &[0; 32]).map(drop),
    ]
}

/// Setup: a valid blob of each kind. Action: parse every proper prefix of it with every parser.
/// Expectation: all errors (a prefix is never valid).
#[test]
fn s3_every_truncation_of_every_blob_is_refused() {
    for blob in valid_blobs() {
        for len in 0..blob.len() {
            for result in parse_everywhere(&blob[..len]) {
                assert!(result.is_err(), "prefix of {len} bytes accepted");
            }
        }
    }
}

/// Setup: a valid blob of each kind. Action: parse it with the other kinds' parsers, and with
/// a trailing byte. Expectation: `MalformedBlob` (the kind byte differs; no trailing bytes).
#[test]
fn s3_blob_of_another_kind_or_with_trailing_bytes_is_refused() {
    let [share, sealed, verifier] = valid_blobs();
    assert!(matches!(
        unwrap_share(&verifier, CLUSTER, "alice", "pw"),
        Err(SecurityError::MalformedBlob { .. })
    ));
    assert!(matches!(
        unseal_master_key(&share, CLUSTER, SECRET),
        Err(SecurityError::MalformedBlob { .. })
    ));
    assert!(matches!(verifier_kdf(&sealed), Err(SecurityError::MalformedBlob { .. })));
    for blob in [share, sealed, verifier] {
        let mut longer = blob.clone();
        longer.push(0);
        assert!(parse_everywhere(&longer).iter().all(Result::is_err));
    }
}

/// Setup: a valid blob of each kind. Action: set its version byte to 2. Expectation:
/// `UnsupportedVersion { version: 2 }` naming the kind.
#[test]
fn s3_future_version_is_reported_as_unsupported() {
    let [mut share, mut sealed, mut verifier] = valid_blobs();
    for blob in [&mut share, &mut sealed, &mut verifier] {
        blob[0] = 2;
    }
    assert_eq!(
        unwrap_share(&share, CLUSTER, "alice", "pw").unwrap_err(),
        SecurityError::UnsupportedVersion { what: "wrapped quorum share", version: 2 }
    );
    assert_eq!(
        unseal_master_key(&sealed, CLUSTER, SECRET).unwrap_err(),
        SecurityError::UnsupportedVersion { what: "sealed master key", version: 2 }
    );
    assert_eq!(
        verifier_kdf(&verifier).unwrap_err(),
        SecurityError::UnsupportedVersion { what: "passphrase verifier", version: 2 }
    );
}

proptest! {
    /// Setup: random bytes. Action: every parser. Expectation: an error, no panic.
    #[test]
    fn s3_random_bytes_are_refused_by_every_parser(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        for result in parse_everywhere(&bytes) {
            prop_assert!(result.is_err());
        }
    }

    /// Setup: random bytes behind a valid header of each kind, so the body decoder sees them.
    /// Action: every parser. Expectation: an error, no panic.
    #[test]
    fn s3_random_bodies_are_refused_by_every_parser(
        kind in prop::sample::select(vec![b'S', b'M', b'V']),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![1, kind];
        bytes.extend_from_slice(&body);
        for result in parse_everywhere(&bytes) {
            prop_assert!(result.is_err());
        }
    }

    /// Setup: a random wrapped key. Action: unwrap it. Expectation: `KeyUnwrapFailed`.
    #[test]
    fn s3_random_wrapped_keys_are_refused(
        nonce in any::<[u8; 12]>(),
        ciphertext in any::<[u8; 32]>(),
        tag in any::<[u8; 16]>(),
    ) {
        let master = MasterKey::generate();
        let id = KeyId::native(CLUSTER, [3; 22]);
        let wrapped = WrappedKey { nonce, ciphertext, tag };
        prop_assert_eq!(
            unwrap_key(&master, CLUSTER, &id, &wrapped).unwrap_err(),
            SecurityError::KeyUnwrapFailed
        );
    }
}
