//! Identifiers of managed objects.
//!
//! Key and data unit IDs embed the ID of the cluster that created them (SPEC O5, T4), so keys
//! imported from a partner or restored from a backup never collide with our own.

use core::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one cluster for its whole life; chosen at random by the quickstart.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Length of a key ID in bytes. KMS 1.2 IDs are 32 bytes of which the first 2 are dropped on
/// import (SPEC M1), which is why native IDs have this length as well.
pub const KEY_ID_LEN: usize = 30;

/// A key's public identifier. Native keys: the creating cluster's ID (8 bytes, big endian)
/// followed by 22 random bytes chosen by the proposing node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// Builds a native key ID from the cluster ID and 22 random bytes.
    pub fn native(cluster_id: ClusterId, random: [u8; 22]) -> Self {
        let mut bytes = [0u8; KEY_ID_LEN];
        bytes[..8].copy_from_slice(&cluster_id.0.to_be_bytes());
        bytes[8..].copy_from_slice(&random);
        KeyId(bytes)
    }

    /// The cluster that created a native key (meaningless for keys imported from KMS 1.x).
    pub fn cluster_id(&self) -> ClusterId {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        ClusterId(u64::from_be_bytes(head))
    }

    /// Parses the 60-hex-digit form printed by [`fmt::Display`].
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; KEY_ID_LEN];
        decode_hex(text, &mut bytes)?;
        Some(KeyId(bytes))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// SHA-256 of a certificate's DER, as an audit event or a refusal names it: written as 64 hex
/// digits (as `openssl x509 -fingerprint -sha256` prints it, without the colons), since the
/// admin API shows an event's `Debug` text and 32 decimal numbers compare badly by eye. No
/// secret: it names a certificate, it proves nothing. Postcard encodes a newtype as what it
/// wraps, so this is encoded exactly as a `[u8; 32]`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A 16-byte ID shown in hex: a partner transfer file's ID (issue 18).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint16(pub [u8; 16]);

impl fmt::Display for Fingerprint16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Fingerprint16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({self})")
    }
}

/// A data unit (tape volume) ID: creating cluster plus a serial assigned by `apply`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DataUnitId {
    pub cluster_id: ClusterId,
    pub serial: u64,
}

impl DataUnitId {
    /// The smallest ID: where a range over IDs starts.
    pub const MIN: DataUnitId = DataUnitId { cluster_id: ClusterId(0), serial: 0 };

    /// Parses the 32-hex-digit form printed by [`fmt::Display`].
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        decode_hex(text, &mut bytes)?;
        let mut cluster = [0u8; 8];
        let mut serial = [0u8; 8];
        cluster.copy_from_slice(&bytes[..8]);
        serial.copy_from_slice(&bytes[8..]);
        Some(DataUnitId {
            cluster_id: ClusterId(u64::from_be_bytes(cluster)),
            serial: u64::from_be_bytes(serial),
        })
    }
}

impl fmt::Display for DataUnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.cluster_id.0, self.serial)
    }
}

impl fmt::Debug for DataUnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataUnitId({self})")
    }
}

/// Internal number of a key group; keys carry it instead of the group's name to stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyGroupId(pub u32);

/// Internal number of a key policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyPolicyId(pub u32);

/// Raft node ID of a KMA, assigned by `apply` when a Security Officer creates the KMA entry.
pub type NodeId = u64;

/// Names the client that sent a request and its sequence number, so that a retry of the same
/// request is recognised (SPEC A6). `client` is chosen at random by each client process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
}

/// Lower-case hex in one write: IDs are printed on hot paths (every key handed out is logged
/// with its ID, every agent answer names it), where a formatter call per byte showed up.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 64];
    for chunk in bytes.chunks(text.len() / 2) {
        let used = &mut text[..chunk.len() * 2];
        for (pair, byte) in used.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        // Every byte written above is an ASCII hex digit, so this never fails.
        f.write_str(core::str::from_utf8(used).map_err(|_| fmt::Error)?)?;
    }
    Ok(())
}

/// Decodes exactly `out.len()` bytes of hex; `None` on any other length or a non-hex digit.
pub(crate) fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *slot = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(())
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::string::{String, ToString};

    use super::*;

    #[test]
    fn ids_print_as_lower_case_hex_and_parse_back() {
        let mut bytes = [0u8; KEY_ID_LEN];
        for (n, byte) in bytes.iter_mut().enumerate() {
            *byte = (n as u8).wrapping_mul(37) ^ 0xa5;
        }
        let key = KeyId(bytes);
        let text = key.to_string();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(text, expected);
        assert_eq!(KeyId::from_hex(&text), Some(key));
        assert_eq!(Fingerprint([0xff; 32]).to_string(), "f".repeat(64));
        assert_eq!(Fingerprint16([0x0a; 16]).to_string(), "0a".repeat(16));
    }
}
