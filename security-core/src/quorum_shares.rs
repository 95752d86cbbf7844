//! The master key split M-of-N among quorum members (SPEC S3, S4, B1).
//!
//! The 64 bytes shared with Shamir's scheme (`shamirsecretsharing`, whose shares carry their
//! own integrity check) are the master key, its 16-byte check value and 16 zero bytes; the
//! check value is verified again after combining. Each member's 113-byte share is then wrapped
//! with AES-256-GCM under argon2id(passphrase, random 16-byte salt); the AAD binds the blob
//! header, the cluster ID, the member ID, the threshold and the argon2id parameters, so a share
//! opens only for its own member of its own cluster, with its own passphrase.
//!
//! Wrapped share blob: version byte, kind byte `S`, then postcard of (threshold, argon2id
//! parameters, salt, nonce, sealed share); about 170 bytes, at most [`WRAPPED_SHARE_LEN_MAX`].

use core::fmt;

use serde::{Deserialize, Serialize};
use shamirsecretsharing::{DATA_SIZE, SHARE_SIZE};
use statemachine::ClusterId;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::blob::{self, Kind};
use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::error::SecurityError;
use crate::kdf::{KdfParams, SALT_LEN};
use crate::master_key::{MasterKey, MASTER_KEY_LEN};

/// Most members a quorum has (SPEC S4).
pub const QUORUM_MEMBERS_MAX: usize = 10;
/// Longest member ID, in bytes.
pub const MEMBER_ID_LEN_MAX: usize = 64;
/// Longest passphrase, in bytes (for shares and verifiers alike).
pub const PASSPHRASE_LEN_MAX: usize = 1024;
/// Upper bound of a wrapped share blob's length.
pub const WRAPPED_SHARE_LEN_MAX: usize = 512;

/// Format version of wrapped shares.
const SHARE_VERSION: u8 = 1;

/// The body after the blob header.
#[derive(Serialize, Deserialize)]
struct WrappedShareV1 {
    threshold: u8,
    kdf: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    /// Shamir share || GCM tag.
    sealed: Vec<u8>,
}

/// One member's unwrapped share. Zeroized on drop; `Debug` prints `Share(..)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    bytes: [u8; SHARE_SIZE],
    #[zeroize(skip)]
    member: String,
    #[zeroize(skip)]
    threshold: u8,
    #[zeroize(skip)]
    cluster_id: ClusterId,
}

impl Share {
    /// The member whose passphrase opened this share.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// How many shares the quorum needs to rebuild the master key.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// The Shamir x coordinate, distinct for every member of one split.
    fn index(&self) -> u8 {
        self.bytes[0]
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Share(..)")
    }
}

/// AAD of a wrapped share: header || cluster ID || threshold || argon2id parameters || member ID.
fn aad(cluster_id: ClusterId, member: &str, threshold: u8, kdf: &KdfParams) -> Vec<u8> {
    let mut aad = blob::header(Kind::WrappedShare, SHARE_VERSION).to_vec();
    aad.extend_from_slice(&cluster_id.0.to_be_bytes());
    aad.push(threshold);
    for value in [kdf.memory_kib, kdf.iterations, kdf.parallelism] {
        aad.extend_from_slice(&value.to_be_bytes());
    }
    // Last, so its length needs no prefix.
    aad.extend_from_slice(member.as_bytes());
    aad
}

fn check_split(
    members: &[(&str, &str)],
    threshold: u8,
    kdf: &KdfParams,
) -> Result<(), SecurityError> {
    kdf.check()?;
    let count = members.len();
    if !(1..=QUORUM_MEMBERS_MAX).contains(&count) {
        return Err(SecurityError::QuorumSizeOutOfRange { count, max: QUORUM_MEMBERS_MAX });
    }
    if threshold == 0 || usize::from(threshold) > count {
        return Err(SecurityError::ThresholdOutOfRange { threshold, members: count });
    }
    for (position, (member, passphrase)) in members.iter().enumerate() {
        if member.is_empty() || member.len() > MEMBER_ID_LEN_MAX {
            return Err(SecurityError::MemberIdLength {
                len: member.len(),
                max: MEMBER_ID_LEN_MAX,
            });
        }
        if members[..position].iter().any(|(earlier, _)| earlier == member) {
            return Err(SecurityError::DuplicateMember { member: (*member).to_owned() });
        }
        if passphrase.is_empty() || passphrase.len() > PASSPHRASE_LEN_MAX {
            return Err(SecurityError::PassphraseLength {
                who: format!("quorum member {member}"),
                len: passphrase.len(),
                max: PASSPHRASE_LEN_MAX,
            });
        }
    }
    Ok(())
}

/// The 64 bytes Shamir shares: master key || its check value || zero padding.
fn shared_data(master: &MasterKey) -> Zeroizing<[u8; DATA_SIZE]> {
    let mut data = Zeroizing::new([0u8; DATA_SIZE]);
    data[..MASTER_KEY_LEN].copy_from_slice(master.as_bytes());
    data[MASTER_KEY_LEN..MASTER_KEY_LEN + 16].copy_from_slice(&master.check_value());
    data
}

fn wrap_share(
    share: &[u8],
    cluster_id: ClusterId,
    member: &str,
    passphrase: &str,
    threshold: u8,
    kdf: KdfParams,
) -> Result<Vec<u8>, SecurityError> {
    let salt = crypto::random::<SALT_LEN>();
    let key = kdf.derive(passphrase.as_bytes(), &salt)?;
    let (nonce, sealed) = crypto::aead_seal(&key, &aad(cluster_id, member, threshold, &kdf), share);
    let body = WrappedShareV1 { threshold, kdf, salt, nonce, sealed };
    let wrapped = blob::encode(Kind::WrappedShare, SHARE_VERSION, &body);
    assert!(wrapped.len() <= WRAPPED_SHARE_LEN_MAX, "a wrapped share fits its bound");
    Ok(wrapped)
}

/// Splits `master` among `members` (member ID, passphrase), any `threshold` of whom can rebuild
/// it, and wraps each share under its member's passphrase. Returns (member ID, wrapped share) in
/// the order given. Members: 1 to [`QUORUM_MEMBERS_MAX`], unique non-empty IDs.
pub fn split_master_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    members: &[(&str, &str)],
    threshold: u8,
    kdf: KdfParams,
) -> Result<Vec<(String, Vec<u8>)>, SecurityError> {
    check_split(members, threshold, &kdf)?;
    let count = u8::try_from(members.len()).map_err(|_| SecurityError::QuorumSizeOutOfRange {
        count: members.len(),
        max: QUORUM_MEMBERS_MAX,
    })?;
    // `check_split` guarantees 1 <= threshold <= count <= 10, the only inputs sss refuses
    // besides a data length other than 64, which `shared_data` fixes.
    let mut shares =
        shamirsecretsharing::create_shares(shared_data(master).as_ref(), count, threshold)
            .expect("sss splits 64 bytes for 1 <= threshold <= count");
    assert_eq!(shares.len(), members.len(), "one share per member");
    let wrapped = members
        .iter()
        .zip(&shares)
        .map(|((member, passphrase), share)| {
            let blob = wrap_share(share, cluster_id, member, passphrase, threshold, kdf)?;
            Ok(((*member).to_owned(), blob))
        })
        .collect();
    shares.iter_mut().for_each(|share| share.zeroize());
    wrapped
}

/// Splits `master` among the members `member_ids`, any `threshold` of whom can rebuild it, and
/// returns the shares unwrapped, in the order given: for a quorum change in which each new
/// member wraps their own share ([`wrap_member_share`]) with a passphrase they enter in their
/// own session, so that nobody learns another member's (SPEC S4). The shares are zeroized on
/// drop; keep them no longer than the members take to enter their passphrases.
pub fn split_master_key_unwrapped(
    master: &MasterKey,
    cluster_id: ClusterId,
    member_ids: &[&str],
    threshold: u8,
) -> Result<Vec<Share>, SecurityError> {
    // Checked as a split with passphrases would be; the placeholder passphrase is never used.
    let checked: Vec<(&str, &str)> = member_ids.iter().map(|id| (*id, "-")).collect();
    check_split(&checked, threshold, &KdfParams::default())?;
    let count = u8::try_from(member_ids.len()).map_err(|_| {
        SecurityError::QuorumSizeOutOfRange { count: member_ids.len(), max: QUORUM_MEMBERS_MAX }
    })?;
    // `check_split` guarantees 1 <= threshold <= count <= 10 (see `split_master_key`).
    let mut raw =
        shamirsecretsharing::create_shares(shared_data(master).as_ref(), count, threshold)
            .expect("sss splits 64 bytes for 1 <= threshold <= count");
    let shares = member_ids
        .iter()
        .zip(&raw)
        .map(|(member, bytes)| {
            let mut share = Share {
                bytes: [0u8; SHARE_SIZE],
                member: (*member).to_owned(),
                threshold,
                cluster_id,
            };
            share.bytes.copy_from_slice(bytes);
            share
        })
        .collect();
    raw.iter_mut().for_each(|share| share.zeroize());
    Ok(shares)
}

/// Wraps one member's share (from [`split_master_key_unwrapped`]) under that member's
/// passphrase, as [`split_master_key`] wraps each: [`unwrap_share`] opens it.
pub fn wrap_member_share(
    share: &Share,
    passphrase: &str,
    kdf: KdfParams,
) -> Result<Vec<u8>, SecurityError> {
    kdf.check()?;
    if passphrase.is_empty() || passphrase.len() > PASSPHRASE_LEN_MAX {
        return Err(SecurityError::PassphraseLength {
            who: format!("quorum member {}", share.member),
            len: passphrase.len(),
            max: PASSPHRASE_LEN_MAX,
        });
    }
    wrap_share(&share.bytes, share.cluster_id, &share.member, passphrase, share.threshold, kdf)
}

/// Opens `member`'s wrapped share of `cluster_id` with `passphrase`. A wrong passphrase, a share
/// of another member or another cluster all give [`SecurityError::WrongPassphrase`].
pub fn unwrap_share(
    wrapped: &[u8],
    cluster_id: ClusterId,
    member: &str,
    passphrase: &str,
) -> Result<Share, SecurityError> {
    let malformed = || SecurityError::MalformedBlob { what: Kind::WrappedShare.what() };
    let body: WrappedShareV1 = blob::decode(wrapped, Kind::WrappedShare, SHARE_VERSION)?;
    let threshold_in_range = (1..=QUORUM_MEMBERS_MAX).contains(&usize::from(body.threshold));
    if !threshold_in_range || body.sealed.len() != SHARE_SIZE + TAG_LEN {
        return Err(malformed());
    }
    body.kdf.check().map_err(|_| malformed())?;
    let key = body.kdf.derive(passphrase.as_bytes(), &body.salt)?;
    let aad = aad(cluster_id, member, body.threshold, &body.kdf);
    let clear = crypto::aead_open(&key, &body.nonce, &aad, &body.sealed)
        .ok_or(SecurityError::WrongPassphrase)?;
    let mut share = Share {
        bytes: [0u8; SHARE_SIZE],
        member: member.to_owned(),
        threshold: body.threshold,
        cluster_id,
    };
    if clear.len() != SHARE_SIZE {
        return Err(malformed());
    }
    share.bytes.copy_from_slice(&clear);
    Ok(share)
}

fn check_combine(shares: &[Share]) -> Result<u8, SecurityError> {
    let Some(first) = shares.first() else {
        return Err(SecurityError::NotEnoughShares { given: 0, needed: 1 });
    };
    for (position, share) in shares.iter().enumerate() {
        if share.threshold != first.threshold || share.cluster_id != first.cluster_id {
            return Err(SecurityError::SharesDoNotMatch);
        }
        if shares[..position].iter().any(|earlier| earlier.index() == share.index()) {
            return Err(SecurityError::DuplicateShare { member: share.member.clone() });
        }
    }
    if shares.len() < usize::from(first.threshold) {
        return Err(SecurityError::NotEnoughShares {
            given: shares.len(),
            needed: first.threshold,
        });
    }
    if shares.len() > QUORUM_MEMBERS_MAX {
        return Err(SecurityError::SharesDoNotMatch);
    }
    Ok(first.threshold)
}

/// Rebuilds the master key from at least a threshold of shares of one split.
pub fn combine_shares(shares: &[Share]) -> Result<MasterKey, SecurityError> {
    check_combine(shares)?;
    let mut raw: Vec<Vec<u8>> = shares.iter().map(|share| share.bytes.to_vec()).collect();
    let combined = shamirsecretsharing::combine_shares(&raw);
    raw.iter_mut().for_each(|share| share.zeroize());
    let data = match combined {
        Ok(Some(data)) => Zeroizing::new(data),
        Ok(None) | Err(_) => return Err(SecurityError::SharesDoNotMatch),
    };
    if data.len() != DATA_SIZE {
        return Err(SecurityError::SharesDoNotMatch);
    }
    let mut key_bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    key_bytes.copy_from_slice(&data[..MASTER_KEY_LEN]);
    let master = MasterKey::from_bytes(&key_bytes);
    let check_ok = master.check_value().ct_eq(&data[MASTER_KEY_LEN..MASTER_KEY_LEN + 16]);
    let padding_ok = data[MASTER_KEY_LEN + 16..].iter().all(|&byte| byte == 0);
    if bool::from(check_ok) && padding_ok {
        Ok(master)
    } else {
        Err(SecurityError::SharesDoNotMatch)
    }
}
