//! Quorum split of the master key (SPEC S3, S4): split, unwrap, combine.

use security_core::{
    combine_shares, split_master_key, unwrap_share, KdfParams, MasterKey, SecurityError, Share,
};
use statemachine::ClusterId;

const CLUSTER: ClusterId = ClusterId(0x0123_4567_89ab_cdef);
/// (member ID, passphrase).
type Member<'a> = (&'a str, &'a str);

const MEMBERS: [Member; 10] = [
    ("alice", "correct horse battery staple"),
    ("bob", "bob's passphrase"),
    ("carol", "carol's passphrase"),
    ("dave", "dave's passphrase"),
    ("erin", "erin's passphrase"),
    ("frank", "frank's passphrase"),
    ("grace", "grace's passphrase"),
    ("heidi", "heidi's passphrase"),
    ("ivan", "ivan's passphrase"),
    ("judy", "judy's passphrase"),
];

fn split(master: &MasterKey, members: usize, threshold: u8) -> Vec<(String, Vec<u8>)> {
    split_master_key(master, CLUSTER, &MEMBERS[..members], threshold, KdfParams::fast_for_tests())
        .expect("split")
}

fn unwrap_all(wrapped: &[(String, Vec<u8>)]) -> Vec<Share> {
    wrapped
        .iter()
        .zip(MEMBERS)
        .map(|((member, blob), (_, passphrase))| {
            unwrap_share(blob, CLUSTER, member, passphrase).expect("unwrap share")
        })
        .collect()
}

/// Every subset of `0..n` with `k` elements, as index lists.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    (0u32..1 << n)
        .filter(|mask| mask.count_ones() as usize == k)
        .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
        .collect()
}

/// Setup: a master key split `threshold`-of-`members`. Action: combine every subset of exactly
/// `threshold` shares, and all shares. Expectation: each gives the master key back.
fn round_trip(members: usize, threshold: u8) {
    let master = MasterKey::generate();
    let wrapped = split(&master, members, threshold);
    assert_eq!(wrapped.len(), members);
    let names: Vec<&str> = wrapped.iter().map(|(member, _)| member.as_str()).collect();
    let expected: Vec<&str> = MEMBERS[..members].iter().map(|(member, _)| *member).collect();
    assert_eq!(names, expected);
    let shares = unwrap_all(&wrapped);
    assert!(shares.iter().all(|share| share.threshold() == threshold));
    for subset in subsets(members, usize::from(threshold)) {
        let chosen: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
        assert_eq!(combine_shares(&chosen).expect("combine"), master, "subset {subset:?}");
    }
    assert_eq!(combine_shares(&shares).expect("combine all"), master);
}

/// Setup, action, expectation: see `round_trip`, for a quorum of one.
#[test]
fn s3_split_and_combine_round_trip_1_of_1() {
    round_trip(1, 1);
}

/// See `round_trip`: 2 of 3.
#[test]
fn s3_split_and_combine_round_trip_2_of_3() {
    round_trip(3, 2);
}

/// See `round_trip`: 3 of 5.
#[test]
fn s3_split_and_combine_round_trip_3_of_5() {
    round_trip(5, 3);
}

/// See `round_trip`: 10 of 10, the largest quorum.
#[test]
fn s3_split_and_combine_round_trip_10_of_10() {
    round_trip(10, 10);
}

/// Setup: splits 2-of-3, 3-of-5, 10-of-10. Action: combine threshold - 1 shares. Expectation:
/// `NotEnoughShares` naming how many were given and needed.
#[test]
fn s3_threshold_minus_one_shares_do_not_combine() {
    for (members, threshold) in [(3, 2u8), (5, 3), (10, 10)] {
        let shares = unwrap_all(&split(&MasterKey::generate(), members, threshold));
        let given = usize::from(threshold) - 1;
        assert_eq!(
            combine_shares(&shares[..given]).unwrap_err(),
            SecurityError::NotEnoughShares { given, needed: threshold }
        );
    }
    assert_eq!(
        combine_shares(&[]).unwrap_err(),
        SecurityError::NotEnoughShares { given: 0, needed: 1 }
    );
}

/// Setup: the same master key split 2-of-3 twice. Action: combine alice's share of the first
/// split with bob's share of the second. Expectation: `SharesDoNotMatch`.
#[test]
fn s3_shares_of_two_splits_do_not_combine() {
    let master = MasterKey::generate();
    let first = unwrap_all(&split(&master, 3, 2));
    let second = unwrap_all(&split(&master, 3, 2));
    let mixed = [first[0].clone(), second[1].clone()];
    assert_eq!(combine_shares(&mixed).unwrap_err(), SecurityError::SharesDoNotMatch);
    let other_threshold = unwrap_all(&split(&master, 3, 3));
    let mixed = [first[0].clone(), first[1].clone(), other_threshold[2].clone()];
    assert_eq!(combine_shares(&mixed).unwrap_err(), SecurityError::SharesDoNotMatch);
}

/// Setup: a 2-of-3 split. Action: combine alice's share twice. Expectation: `DuplicateShare`.
#[test]
fn s3_same_share_twice_is_refused() {
    let shares = unwrap_all(&split(&MasterKey::generate(), 3, 2));
    let twice = [shares[0].clone(), shares[0].clone()];
    assert_eq!(
        combine_shares(&twice).unwrap_err(),
        SecurityError::DuplicateShare { member: "alice".to_owned() }
    );
}

/// Setup: a 2-of-3 split. Action: unwrap alice's share with bob's passphrase, and with her own
/// passphrase off by one character. Expectation: `WrongPassphrase` both times.
#[test]
fn s3_wrong_passphrase_is_refused() {
    let wrapped = split(&MasterKey::generate(), 3, 2);
    let alice = &wrapped[0].1;
    for passphrase in ["bob's passphrase", "correct horse battery stapl", ""] {
        assert_eq!(
            unwrap_share(alice, CLUSTER, "alice", passphrase).unwrap_err(),
            SecurityError::WrongPassphrase
        );
    }
}

/// Setup: a 2-of-3 split where bob happens to use alice's passphrase. Action: present alice's
/// share as bob's, with the right passphrase. Expectation: `WrongPassphrase` (the member ID is
/// bound in the AAD).
#[test]
fn s3_share_of_another_member_is_refused() {
    let members = [("alice", "shared words"), ("bob", "shared words")];
    let wrapped =
        split_master_key(&MasterKey::generate(), CLUSTER, &members, 1, KdfParams::fast_for_tests())
            .unwrap();
    assert!(unwrap_share(&wrapped[0].1, CLUSTER, "alice", "shared words").is_ok());
    assert_eq!(
        unwrap_share(&wrapped[0].1, CLUSTER, "bob", "shared words").unwrap_err(),
        SecurityError::WrongPassphrase
    );
}

/// Setup: a 2-of-3 split for `CLUSTER`. Action: unwrap alice's share for another cluster ID.
/// Expectation: `WrongPassphrase`.
#[test]
fn s3_share_of_another_cluster_is_refused() {
    let wrapped = split(&MasterKey::generate(), 3, 2);
    let other = ClusterId(CLUSTER.0 + 1);
    assert_eq!(
        unwrap_share(&wrapped[0].1, other, "alice", MEMBERS[0].1).unwrap_err(),
        SecurityError::WrongPassphrase
    );
}

/// Setup: invalid quorums. Action: split. Expectation: the error naming each rule.
#[test]
fn s4_quorum_size_threshold_and_ids_are_checked() {
    let master = MasterKey::generate();
    let fast = KdfParams::fast_for_tests();
    let eleven: Vec<(&str, &str)> =
        MEMBERS.iter().copied().chain([("mallory", "eleventh")]).collect();
    let cases: Vec<(&[Member], u8, SecurityError)> = vec![
        (&[], 1, SecurityError::QuorumSizeOutOfRange { count: 0, max: 10 }),
        (&eleven, 2, SecurityError::QuorumSizeOutOfRange { count: 11, max: 10 }),
        (&MEMBERS[..3], 0, SecurityError::ThresholdOutOfRange { threshold: 0, members: 3 }),
        (&MEMBERS[..3], 4, SecurityError::ThresholdOutOfRange { threshold: 4, members: 3 }),
        (
            &[("alice", "a"), ("alice", "b")],
            1,
            SecurityError::DuplicateMember { member: "alice".to_owned() },
        ),
        (&[("", "a")], 1, SecurityError::MemberIdLength { len: 0, max: 64 }),
        (
            &[("alice", "")],
            1,
            SecurityError::PassphraseLength {
                who: "quorum member alice".to_owned(),
                len: 0,
                max: 1024,
            },
        ),
    ];
    for (members, threshold, expected) in cases {
        assert_eq!(
            split_master_key(&master, CLUSTER, members, threshold, fast).unwrap_err(),
            expected
        );
    }
    let long_id = "x".repeat(65);
    assert_eq!(
        split_master_key(&master, CLUSTER, &[(&long_id, "p")], 1, fast).unwrap_err(),
        SecurityError::MemberIdLength { len: 65, max: 64 }
    );
    let weak = KdfParams { memory_kib: 8, iterations: 1, parallelism: 1 };
    assert_eq!(
        split_master_key(&master, CLUSTER, &MEMBERS[..1], 1, weak).unwrap_err(),
        SecurityError::KdfParamsOutOfRange { memory_kib: 8, iterations: 1, parallelism: 1 }
    );
}

/// Setup: a 10-of-10 split with default argon2id parameters for one member. Action: look at the
/// blob. Expectation: at most 512 bytes, version 1 first.
#[test]
fn s3_wrapped_share_is_small_and_versioned() {
    let wrapped = split(&MasterKey::generate(), 10, 10);
    for (_, blob) in &wrapped {
        assert!(blob.len() <= 512, "{} bytes", blob.len());
        assert_eq!(blob[..2], [1, b'S']);
    }
    let default =
        split_master_key(&MasterKey::generate(), CLUSTER, &MEMBERS[..1], 1, KdfParams::default())
            .unwrap();
    assert!(default[0].1.len() <= 512);
    assert!(unwrap_share(&default[0].1, CLUSTER, "alice", MEMBERS[0].1).is_ok());
}

/// Setup: alice's wrapped share. Action: flip each bit in turn and unwrap with the right
/// passphrase. Expectation: every flip is an error, none a panic or a share.
#[test]
fn s3_every_bit_flip_of_a_wrapped_share_is_refused() {
    let wrapped = split(&MasterKey::generate(), 3, 2);
    let blob = &wrapped[0].1;
    for bit in 0..blob.len() * 8 {
        let mut flipped = blob.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(unwrap_share(&flipped, CLUSTER, "alice", MEMBERS[0].1).is_err(), "bit {bit}");
    }
}

/// Setup: a master key split 2-of-3 without passphrases, as a quorum change does before the new
/// members enter theirs. Action: each member wraps their own share with their own passphrase;
/// the wrapped shares are opened again. Expect: each opens only with its member's passphrase,
/// any two give the master key back, and a split with a duplicate member or a threshold above
/// the count is refused as the wrapping split refuses it. (SPEC S3, S4; issue #16 point 9)
#[test]
fn s4_each_new_member_wraps_their_own_share() {
    let master = MasterKey::generate();
    let ids = ["alice", "bob", "carol"];
    let shares =
        security_core::split_master_key_unwrapped(&master, CLUSTER, &ids, 2).expect("split");
    let kdf = KdfParams::fast_for_tests();
    let wrapped: Vec<Vec<u8>> = shares
        .iter()
        .zip(MEMBERS)
        .map(|(share, (_, passphrase))| {
            security_core::wrap_member_share(share, passphrase, kdf).expect("wrap")
        })
        .collect();
    let opened: Vec<Share> = wrapped
        .iter()
        .zip(MEMBERS)
        .map(|(blob, (member, passphrase))| {
            unwrap_share(blob, CLUSTER, member, passphrase).expect("unwrap")
        })
        .collect();
    let wrong = unwrap_share(&wrapped[0], CLUSTER, "alice", "bob's passphrase");
    assert!(matches!(wrong, Err(SecurityError::WrongPassphrase)));
    let rebuilt = combine_shares(&opened[1..]).expect("two of three");
    assert_eq!(rebuilt.check_value(), master.check_value());
    let duplicate = security_core::split_master_key_unwrapped(&master, CLUSTER, &["a", "a"], 1);
    assert!(matches!(duplicate, Err(SecurityError::DuplicateMember { .. })));
    let too_high = security_core::split_master_key_unwrapped(&master, CLUSTER, &["a"], 2);
    assert!(matches!(too_high, Err(SecurityError::ThresholdOutOfRange { .. })));
}
