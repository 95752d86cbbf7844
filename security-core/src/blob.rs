//! The envelope of every blob this crate persists: a format version byte, a kind byte, then a
//! postcard body (postcard's 1.0 wire format is frozen). The version comes first so that a
//! reader a decade from now knows how to read the rest; the kind keeps a verifier from being
//! read as a share.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::SecurityError;

/// The kinds of blob, each with its own byte and the name errors use for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    WrappedShare,
    SealedMasterKey,
    Verifier,
    WrappedCaKey,
    WrappedBackupKey,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::WrappedShare => b'S',
            Kind::SealedMasterKey => b'M',
            Kind::Verifier => b'V',
            Kind::WrappedCaKey => b'C',
            Kind::WrappedBackupKey => b'B',
        }
    }

    pub(crate) fn what(self) -> &'static str {
        match self {
            Kind::WrappedShare => "wrapped quorum share",
            Kind::SealedMasterKey => "sealed master key",
            Kind::Verifier => "passphrase verifier",
            Kind::WrappedCaKey => "wrapped CA key",
            Kind::WrappedBackupKey => "backup key file",
        }
    }
}

/// Length of the envelope header: version byte and kind byte.
pub(crate) const HEADER_LEN: usize = 2;

/// The header bytes of a blob of `kind` in format `version`; also bound into AEAD AADs.
pub(crate) fn header(kind: Kind, version: u8) -> [u8; HEADER_LEN] {
    [version, kind.byte()]
}

/// Encodes `body` behind the header.
pub(crate) fn encode<T: Serialize>(kind: Kind, version: u8, body: &T) -> Vec<u8> {
    let mut out = header(kind, version).to_vec();
    // Our bodies hold only integers, fixed arrays and byte vectors: postcard cannot fail on them
    // (it fails only for unsized sequences and maps, which we never serialize).
    let encoded = postcard::to_stdvec(body).expect("postcard encodes plain structs");
    out.extend_from_slice(&encoded);
    out
}

/// Decodes a blob of `kind` in format `version` (the only one this build writes): anything
/// else, truncated input or trailing bytes are errors, never a panic.
pub(crate) fn decode<T: DeserializeOwned>(
    blob: &[u8],
    kind: Kind,
    version: u8,
) -> Result<T, SecurityError> {
    let malformed = SecurityError::MalformedBlob { what: kind.what() };
    let Some((head, body)) = blob.split_first_chunk::<HEADER_LEN>() else {
        return Err(malformed);
    };
    let [found_version, found_kind] = *head;
    if found_kind != kind.byte() || found_version == 0 {
        return Err(malformed);
    }
    if found_version != version {
        return Err(SecurityError::UnsupportedVersion {
            what: kind.what(),
            version: found_version,
        });
    }
    match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => Ok(value),
        Ok(_) | Err(_) => Err(malformed),
    }
}
