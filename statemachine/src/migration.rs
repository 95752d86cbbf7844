//! Reading a KMS 1.2 key export file (SPEC M1): `<key id>, <key value>[, <description>]`, one key
//! per line, 64 hex digits each. The whole file is checked before anything is imported; the first
//! bad line stops it with its line number.
//!
//! Values are clear key material: they live in [`Zeroizing`] buffers and are wrapped by the node
//! before any command is proposed.

use alloc::string::String;
use alloc::vec::Vec;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::ids::{decode_hex, KeyId, KEY_ID_LEN};
use crate::limits::{DESCRIPTION_LEN_MAX, IMPORT_1X_FILE_KEYS_MAX};

/// 1.2 key IDs are 32 bytes; the first two (4 hex digits) are dropped to make a 30-byte ID.
const LEGACY_ID_HEX_LEN: usize = 64;
const STRIPPED_HEX_LEN: usize = 4;
const VALUE_HEX_LEN: usize = 64;

/// One line of the file, the ID already stripped to its 2.0 form.
pub struct Parsed1xKey {
    /// Its line in the file, from 1: what a refusal of this key names.
    pub line: usize,
    pub id: KeyId,
    pub value: Zeroizing<[u8; 32]>,
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineProblem {
    MissingValue,
    IdLength { found: usize },
    IdNotHex,
    ValueLength { found: usize },
    ValueNotHex,
    DescriptionTooLong,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Parse1xError {
    #[error("line {line}: {problem}; nothing was imported, fix the file and run the import again")]
    BadLine { line: usize, problem: LineProblemText },
    #[error("the file holds {count} keys; at most {max} can be imported at once: split it")]
    TooManyKeys { count: usize, max: usize },
    #[error("the file holds no keys")]
    NoKeys,
}

/// A [`LineProblem`] with a message that says what the line should look like.
#[derive(Debug, PartialEq, Eq)]
pub struct LineProblemText(pub LineProblem);

impl core::fmt::Display for LineProblemText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            LineProblem::MissingValue => {
                f.write_str("expected '<key id>, <key value>[, <description>]'")
            }
            LineProblem::IdLength { found } => {
                write!(f, "the key ID has {found} characters, not 64 hex digits")
            }
            LineProblem::IdNotHex => f.write_str("the key ID is not hexadecimal"),
            LineProblem::ValueLength { found } => {
                write!(f, "the key value has {found} characters, not 64 hex digits")
            }
            LineProblem::ValueNotHex => f.write_str("the key value is not hexadecimal"),
            LineProblem::DescriptionTooLong => {
                write!(f, "the description is longer than {DESCRIPTION_LEN_MAX} bytes")
            }
        }
    }
}

/// Parses a whole export file; blank lines are skipped.
pub fn parse_1x_key_file(text: &str) -> Result<Vec<Parsed1xKey>, Parse1xError> {
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let key = parse_line(number + 1, line).map_err(|problem| Parse1xError::BadLine {
            line: number + 1,
            problem: LineProblemText(problem),
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(Parse1xError::NoKeys);
    }
    if keys.len() > IMPORT_1X_FILE_KEYS_MAX {
        return Err(Parse1xError::TooManyKeys { count: keys.len(), max: IMPORT_1X_FILE_KEYS_MAX });
    }
    Ok(keys)
}

fn parse_line(number: usize, line: &str) -> Result<Parsed1xKey, LineProblem> {
    let mut fields = line.splitn(3, ',');
    let id_hex = fields.next().unwrap_or_default().trim();
    let value_hex = fields.next().ok_or(LineProblem::MissingValue)?.trim();
    let description = fields.next().unwrap_or_default().trim();

    if id_hex.len() != LEGACY_ID_HEX_LEN {
        return Err(LineProblem::IdLength { found: id_hex.chars().count() });
    }
    let mut id = [0u8; KEY_ID_LEN];
    let stripped = id_hex.get(STRIPPED_HEX_LEN..).ok_or(LineProblem::IdNotHex)?;
    if !id_hex.is_ascii()
        || decode_hex(stripped, &mut id).is_none()
        || decode_hex(&id_hex[..4], &mut [0u8; 2]).is_none()
    {
        return Err(LineProblem::IdNotHex);
    }
    if value_hex.len() != VALUE_HEX_LEN {
        return Err(LineProblem::ValueLength { found: value_hex.chars().count() });
    }
    let mut value = Zeroizing::new([0u8; 32]);
    if decode_hex(value_hex, value.as_mut()).is_none() {
        return Err(LineProblem::ValueNotHex);
    }
    if description.len() > DESCRIPTION_LEN_MAX || description.chars().any(char::is_control) {
        return Err(LineProblem::DescriptionTooLong);
    }
    Ok(Parsed1xKey { line: number, id: KeyId(id), value, description: description.into() })
}
