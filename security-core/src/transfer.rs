//! Partner key transfer (SPEC T1–T4): the cluster's transfer key pair and the transfer file.
//!
//! Key pair: an X25519 key to receive and an Ed25519 key to sign, both derived from 64 random
//! bytes ([`TransferSecret`]) that a KMA makes once and wraps under the master key (its own
//! subkey label; the AAD binds the cluster ID and the public keys). Operators compare the
//! [`TransferPublicKeys::fingerprint`] of both clusters out of band before a quorum records a
//! partner.
//!
//! File, format 1 (`KMSXFER1`), every length big-endian:
//!
//! ```text
//! magic "KMSXFER1" | u32 header length | header | u32 ciphertext length | ciphertext | signature (64)
//! ```
//!
//! The header (postcard, [`FileHeader`]) names the file ID, the sender's cluster, when it was
//! made, the sender's and the receiver's fingerprints, and the HPKE encapsulated key. The
//! ciphertext is the [`Payload`] (keys with their values, data units with their tags) sealed
//! with HPKE (RFC 9180, base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) to
//! the receiver's X25519 key, with the magic and the header as associated data. The Ed25519
//! signature covers every byte before it, so a file altered, truncated, re-ordered or signed
//! by another cluster is refused before anything is decrypted. The golden file
//! `tests/golden/transfer-v1.bin` pins the format.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand_core::TryRngCore;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use statemachine::command::{TransferredDataUnit, TransferredKey};
use statemachine::key::{Activation, WrappedKey};
use statemachine::{ClusterId, DataUnitId, KeyId};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{self, NONCE_LEN};
use crate::key_wrap::{check_value, unwrap_key, wrap_key, KeyMaterial};
use crate::master_key::MasterKey;

/// The file's first bytes: its kind and format version.
pub const FILE_MAGIC: &[u8; 8] = b"KMSXFER1";
/// Public keys as bytes: X25519 then Ed25519.
pub const PUBLIC_KEYS_LEN: usize = 64;
/// The text form of the public keys starts with this.
const PUBLIC_KEYS_TEXT_PREFIX: &str = "kmst1:";
/// Keys in one file, and data units: one file fits one log entry of the receiver.
pub const FILE_KEYS_MAX: usize = 5_000;
pub const FILE_DATA_UNITS_MAX: usize = 5_000;
/// The longest file read: its most keys and data units with room to spare.
pub const FILE_LEN_MAX: usize = 4 * 1024 * 1024;
const HEADER_LEN_MAX: usize = 1024;
const SIGNATURE_LEN: usize = 64;
const HPKE_INFO: &[u8] = b"kms partner transfer v1";
const SIGNATURE_CONTEXT: &[u8] = b"kms transfer file signature v1\0";
const FINGERPRINT_LABEL: &[u8] = b"kms transfer public keys v1\0";
const WRAP_LABEL: &[u8] = b"kma wrap transfer key pair v1";
const WRAP_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    #[error(
        "the public keys are not this product's transfer keys ({0}): copy them whole from \
         `kmsctl transfer key show` on the partner's cluster"
    )]
    BadPublicKeys(&'static str),
    #[error(
        "this is not a transfer file, or it was cut short or padded ({0}): ask the partner to \
         send the file again, whole; nothing was imported"
    )]
    Malformed(&'static str),
    #[error(
        "the file is for the cluster whose transfer fingerprint is {found}, not this one \
         ({own}): nothing was imported; the partner exported it for another cluster"
    )]
    NotForUs { found: String, own: String },
    #[error(
        "the file was signed by the cluster whose transfer fingerprint is {found}, not by \
         partner '{partner}' ({expected}): nothing was imported; import it from the partner \
         that sent it, or compare fingerprints with the sender"
    )]
    OtherSender { partner: String, found: String, expected: String },
    #[error(
        "the file's signature does not verify with partner '{partner}''s key: it was altered \
         after it was signed, or re-ordered; nothing was imported: ask the partner to send it \
         again"
    )]
    BadSignature { partner: String },
    #[error(
        "the file's contents do not decrypt with this cluster's transfer key: nothing was \
         imported; ask the partner to export it again"
    )]
    Undecryptable,
    #[error("the file holds {what} that is not consistent ({detail}): nothing was imported")]
    BadPayload { what: &'static str, detail: String },
    #[error(
        "the transfer key pair does not open under this cluster's master key: it is damaged; \
         restore the cluster's state from a backup"
    )]
    KeyPairUnwrapFailed,
    #[error(
        "key {key_id} does not open under this cluster's master key: the state is damaged; \
         restore it from a backup"
    )]
    KeyUnwrapFailed { key_id: KeyId },
}

/// A cluster's transfer public keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferPublicKeys {
    pub x25519: [u8; 32],
    pub ed25519: [u8; 32],
}

impl TransferPublicKeys {
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEYS_LEN] {
        let mut bytes = [0u8; PUBLIC_KEYS_LEN];
        bytes[..32].copy_from_slice(&self.x25519);
        bytes[32..].copy_from_slice(&self.ed25519);
        bytes
    }

    /// From [`TransferPublicKeys::to_bytes`]; the Ed25519 key must be a valid point.
    pub fn from_bytes(bytes: &[u8]) -> Result<TransferPublicKeys, TransferError> {
        let bytes: &[u8; PUBLIC_KEYS_LEN] =
            bytes.try_into().map_err(|_| TransferError::BadPublicKeys("not 64 bytes"))?;
        let mut keys = TransferPublicKeys { x25519: [0; 32], ed25519: [0; 32] };
        keys.x25519.copy_from_slice(&bytes[..32]);
        keys.ed25519.copy_from_slice(&bytes[32..]);
        VerifyingKey::from_bytes(&keys.ed25519)
            .map_err(|_| TransferError::BadPublicKeys("the signing key is not a valid point"))?;
        <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&keys.x25519)
            .map_err(|_| TransferError::BadPublicKeys("the receiving key is not valid"))?;
        Ok(keys)
    }

    /// `kmst1:` and the 64 bytes in hex: what an operator copies to the partner.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_KEYS_TEXT_PREFIX}{}", hex::encode(self.to_bytes()))
    }

    pub fn from_text(text: &str) -> Result<TransferPublicKeys, TransferError> {
        let hex_text = text
            .trim()
            .strip_prefix(PUBLIC_KEYS_TEXT_PREFIX)
            .ok_or(TransferError::BadPublicKeys("they do not start with kmst1:"))?;
        let bytes = hex::decode(hex_text)
            .map_err(|_| TransferError::BadPublicKeys("not hexadecimal after kmst1:"))?;
        TransferPublicKeys::from_bytes(&bytes)
    }

    /// SHA-256 of a label and the public keys: what operators compare out of band.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut input = FINGERPRINT_LABEL.to_vec();
        input.extend_from_slice(&self.to_bytes());
        crypto::sha256(&input)
    }

    /// The fingerprint in groups of four hex digits, as people read it aloud.
    pub fn fingerprint_text(&self) -> String {
        fingerprint_text(&self.fingerprint())
    }
}

/// A fingerprint in groups of four hex digits.
pub fn fingerprint_text(fingerprint: &[u8; 32]) -> String {
    let hex = hex::encode(fingerprint);
    let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|at| &hex[at..at + 4]).collect();
    groups.join(":")
}

/// The private half: 32 bytes that derive the X25519 key, 32 that are the Ed25519 key.
pub struct TransferSecret(Zeroizing<[u8; 64]>);

impl core::fmt::Debug for TransferSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TransferSecret(..)")
    }
}

impl TransferSecret {
    pub fn generate() -> TransferSecret {
        TransferSecret(Zeroizing::new(crypto::random()))
    }

    /// From known bytes: tests and the golden file only.
    pub fn from_seed(seed: [u8; 64]) -> TransferSecret {
        TransferSecret(Zeroizing::new(seed))
    }

    fn receiving(
        &self,
    ) -> (<X25519HkdfSha256 as Kem>::PrivateKey, <X25519HkdfSha256 as Kem>::PublicKey) {
        X25519HkdfSha256::derive_keypair(&self.0[..32])
    }

    fn signing(&self) -> SigningKey {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&self.0[32..]);
        let key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        key
    }

    pub fn public_keys(&self) -> TransferPublicKeys {
        let mut x25519 = [0u8; 32];
        x25519.copy_from_slice(&self.receiving().1.to_bytes());
        TransferPublicKeys { x25519, ed25519: self.signing().verifying_key().to_bytes() }
    }
}

#[derive(Serialize, Deserialize)]
struct WrappedSecretV1 {
    nonce: [u8; NONCE_LEN],
    sealed: Vec<u8>,
}

fn wrap_aad(cluster_id: ClusterId, public: &TransferPublicKeys) -> Vec<u8> {
    let mut aad = vec![WRAP_VERSION];
    aad.extend_from_slice(WRAP_LABEL);
    aad.extend_from_slice(&cluster_id.0.to_be_bytes());
    aad.extend_from_slice(&public.to_bytes());
    aad
}

/// A new key pair for `cluster_id`: its public keys, and the secret wrapped under the master
/// key (what `Command::SetTransferKeyPair` records).
pub fn new_key_pair(master: &MasterKey, cluster_id: ClusterId) -> (TransferPublicKeys, Vec<u8>) {
    let secret = TransferSecret::generate();
    let public = secret.public_keys();
    let (nonce, sealed) = crypto::aead_seal(
        &master.subkey(WRAP_LABEL),
        &wrap_aad(cluster_id, &public),
        &secret.0[..],
    );
    let wrapped = postcard::to_allocvec(&WrappedSecretV1 { nonce, sealed })
        .unwrap_or_else(|_| unreachable!("postcard encodes plain data into a Vec"));
    let mut blob = vec![WRAP_VERSION];
    blob.extend_from_slice(&wrapped);
    (public, blob)
}

/// Opens a secret made by [`new_key_pair`] for the same cluster and public keys.
pub fn unwrap_secret(
    master: &MasterKey,
    cluster_id: ClusterId,
    public: &TransferPublicKeys,
    wrapped: &[u8],
) -> Result<TransferSecret, TransferError> {
    let (&version, body) = wrapped.split_first().ok_or(TransferError::KeyPairUnwrapFailed)?;
    if version != WRAP_VERSION {
        return Err(TransferError::KeyPairUnwrapFailed);
    }
    let body: WrappedSecretV1 =
        postcard::from_bytes(body).map_err(|_| TransferError::KeyPairUnwrapFailed)?;
    let key = master.subkey(WRAP_LABEL);
    let clear = crypto::aead_open(&key, &body.nonce, &wrap_aad(cluster_id, public), &body.sealed)
        .ok_or(TransferError::KeyPairUnwrapFailed)?;
    let seed: [u8; 64] =
        clear.as_slice().try_into().map_err(|_| TransferError::KeyPairUnwrapFailed)?;
    let secret = TransferSecret::from_seed(seed);
    if secret.public_keys() != *public {
        return Err(TransferError::KeyPairUnwrapFailed);
    }
    Ok(secret)
}

/// What the file says of itself, in clear (but signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    pub file_id: [u8; 16],
    pub sender_cluster: ClusterId,
    pub created_at_ms: u64,
    pub sender_fingerprint: [u8; 32],
    pub receiver_fingerprint: [u8; 32],
    pub encapped_key: [u8; 32],
}

/// One key in the file, with its clear value (zeroized on drop).
#[derive(Clone, Serialize, Deserialize)]
pub struct PayloadKey {
    pub id: KeyId,
    pub value: [u8; 32],
    pub created_at_ms: u64,
    pub activation: Activation,
    pub compromised_at_ms: Option<u64>,
}

impl Drop for PayloadKey {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl core::fmt::Debug for PayloadKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PayloadKey").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadDataUnit {
    pub id: DataUnitId,
    pub external_tag: String,
    pub keys: Vec<KeyId>,
}

/// The encrypted part: every key once, and the data units that use them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Payload {
    pub keys: Vec<PayloadKey>,
    pub data_units: Vec<PayloadDataUnit>,
}

/// Who sends a file, to whom, and when.
pub struct FileAddress<'a> {
    pub file_id: [u8; 16],
    pub sender_cluster: ClusterId,
    pub created_at_ms: u64,
    pub sender: &'a TransferSecret,
    pub receiver: &'a TransferPublicKeys,
}

fn header_aad(header: &FileHeader) -> Vec<u8> {
    let mut core = header.clone();
    core.encapped_key = [0; 32];
    let mut aad = FILE_MAGIC.to_vec();
    aad.extend_from_slice(&postcard::to_allocvec(&core).unwrap_or_default());
    aad
}

/// Seals and signs `payload` (see the module's format). `rng` makes the HPKE ephemeral key.
pub fn seal_file<R: RngCore + CryptoRng>(
    address: &FileAddress<'_>,
    payload: &Payload,
    rng: &mut R,
) -> Result<Vec<u8>, TransferError> {
    check_payload(payload)?;
    let mut header = FileHeader {
        file_id: address.file_id,
        sender_cluster: address.sender_cluster,
        created_at_ms: address.created_at_ms,
        sender_fingerprint: address.sender.public_keys().fingerprint(),
        receiver_fingerprint: address.receiver.fingerprint(),
        encapped_key: [0; 32],
    };
    let receiver = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&address.receiver.x25519)
        .map_err(|_| TransferError::BadPublicKeys("the receiving key is not valid"))?;
    let clear = Zeroizing::new(
        postcard::to_allocvec(payload).map_err(|_| TransferError::Malformed("payload"))?,
    );
    let (encapped, ciphertext) =
        hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256, _>(
            &OpModeS::Base,
            &receiver,
            HPKE_INFO,
            &clear,
            &header_aad(&header),
            rng,
        )
        .map_err(|_| TransferError::BadPublicKeys("the receiving key is not valid"))?;
    header.encapped_key.copy_from_slice(&encapped.to_bytes());
    let header_bytes =
        postcard::to_allocvec(&header).map_err(|_| TransferError::Malformed("header"))?;
    let mut file = FILE_MAGIC.to_vec();
    file.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    file.extend_from_slice(&header_bytes);
    file.extend_from_slice(&(ciphertext.len() as u32).to_be_bytes());
    file.extend_from_slice(&ciphertext);
    let signature = address.sender.signing().sign(&signed_message(&file));
    file.extend_from_slice(&signature.to_bytes());
    Ok(file)
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut message = SIGNATURE_CONTEXT.to_vec();
    message.extend_from_slice(body);
    message
}

/// The parts of a file, lengths checked, nothing verified yet.
struct Parts<'a> {
    header: FileHeader,
    ciphertext: &'a [u8],
    signed: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

fn split(file: &[u8]) -> Result<Parts<'_>, TransferError> {
    if file.len() > FILE_LEN_MAX {
        return Err(TransferError::Malformed("larger than a transfer file can be"));
    }
    let rest = file
        .strip_prefix(FILE_MAGIC)
        .ok_or(TransferError::Malformed("no KMSXFER1 at its start"))?;
    let (header_bytes, rest) = length_prefixed(rest, HEADER_LEN_MAX, "header")?;
    let (ciphertext, rest) = length_prefixed(rest, FILE_LEN_MAX, "contents")?;
    let signature: [u8; SIGNATURE_LEN] =
        rest.try_into().map_err(|_| TransferError::Malformed("the signature's length"))?;
    let header: FileHeader = match postcard::take_from_bytes(header_bytes) {
        Ok((header, [])) => header,
        _ => return Err(TransferError::Malformed("header")),
    };
    let signed = &file[..file.len() - SIGNATURE_LEN];
    Ok(Parts { header, ciphertext, signed, signature })
}

fn length_prefixed<'a>(
    bytes: &'a [u8],
    max: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), TransferError> {
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or(TransferError::Malformed(what))?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > max || len > rest.len() {
        return Err(TransferError::Malformed(what));
    }
    Ok(rest.split_at(len))
}

/// The header of a file, unverified: for showing what a file claims before importing it.
pub fn peek_header(file: &[u8]) -> Result<FileHeader, TransferError> {
    Ok(split(file)?.header)
}

/// Verifies `file` against partner `partner_name`'s keys, then decrypts it with `receiver`.
pub fn open_file(
    file: &[u8],
    receiver: &TransferSecret,
    (partner_name, partner): (&str, &TransferPublicKeys),
) -> Result<(FileHeader, Payload), TransferError> {
    let parts = split(file)?;
    let own = receiver.public_keys().fingerprint();
    if parts.header.receiver_fingerprint != own {
        return Err(TransferError::NotForUs {
            found: fingerprint_text(&parts.header.receiver_fingerprint),
            own: fingerprint_text(&own),
        });
    }
    if parts.header.sender_fingerprint != partner.fingerprint() {
        return Err(TransferError::OtherSender {
            partner: partner_name.into(),
            found: fingerprint_text(&parts.header.sender_fingerprint),
            expected: partner.fingerprint_text(),
        });
    }
    let bad_signature = || TransferError::BadSignature { partner: partner_name.into() };
    let verifying = VerifyingKey::from_bytes(&partner.ed25519).map_err(|_| bad_signature())?;
    verifying
        .verify(&signed_message(parts.signed), &Signature::from_bytes(&parts.signature))
        .map_err(|_| bad_signature())?;
    let encapped = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&parts.header.encapped_key)
        .map_err(|_| TransferError::Undecryptable)?;
    let clear = Zeroizing::new(
        hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &receiver.receiving().0,
            &encapped,
            HPKE_INFO,
            parts.ciphertext,
            &header_aad(&parts.header),
        )
        .map_err(|_| TransferError::Undecryptable)?,
    );
    let payload: Payload = postcard::from_bytes(&clear)
        .map_err(|e| TransferError::BadPayload { what: "contents", detail: e.to_string() })?;
    check_payload(&payload)?;
    Ok((parts.header, payload))
}

/// Each key once, each data unit once and naming only keys of the file, within the bounds.
fn check_payload(payload: &Payload) -> Result<(), TransferError> {
    let bad = |what, detail: String| Err(TransferError::BadPayload { what, detail });
    if payload.keys.len() > FILE_KEYS_MAX || payload.data_units.len() > FILE_DATA_UNITS_MAX {
        return bad("too many keys or data units", format!("at most {FILE_KEYS_MAX} of each"));
    }
    if payload.data_units.is_empty() {
        return bad("no data unit", "an export selects at least one".into());
    }
    let mut keys = std::collections::BTreeSet::new();
    for key in &payload.keys {
        if !keys.insert(key.id) {
            return bad("a key twice", key.id.to_string());
        }
    }
    let mut units = std::collections::BTreeSet::new();
    for unit in &payload.data_units {
        if !units.insert(unit.id) {
            return bad("a data unit twice", unit.id.to_string());
        }
        if let Some(missing) = unit.keys.iter().find(|id| !keys.contains(id)) {
            return bad("a data unit naming a key the file lacks", missing.to_string());
        }
    }
    Ok(())
}

/// A key to export: as the state holds it.
#[derive(Clone, Debug)]
pub struct ExportKey {
    pub id: KeyId,
    pub material: WrappedKey,
    pub created_at_ms: u64,
    pub activation: Activation,
    pub compromised_at_ms: Option<u64>,
}

/// This cluster's side of a transfer: its master key, ID and transfer key pair as recorded.
pub struct OwnCluster<'a> {
    pub master: &'a MasterKey,
    pub cluster_id: ClusterId,
    pub public: &'a [u8],
    pub wrapped_secret: &'a [u8],
}

impl OwnCluster<'_> {
    fn secret(&self) -> Result<TransferSecret, TransferError> {
        let public = TransferPublicKeys::from_bytes(self.public)
            .map_err(|_| TransferError::KeyPairUnwrapFailed)?;
        unwrap_secret(self.master, self.cluster_id, &public, self.wrapped_secret)
    }
}

/// The export file of `keys` and `data_units` for the partner whose public keys are
/// `partner` (SPEC T3): each key unwrapped here, sealed to the partner, signed by us.
pub fn export_file(
    own: &OwnCluster<'_>,
    (file_id, created_at_ms): ([u8; 16], u64),
    partner: &[u8],
    keys: &[ExportKey],
    data_units: Vec<PayloadDataUnit>,
) -> Result<Vec<u8>, TransferError> {
    let secret = own.secret()?;
    let receiver = TransferPublicKeys::from_bytes(partner)?;
    let mut payload = Payload { keys: Vec::with_capacity(keys.len()), data_units };
    for key in keys {
        let material = unwrap_key(own.master, own.cluster_id, &key.id, &key.material)
            .map_err(|_| TransferError::KeyUnwrapFailed { key_id: key.id })?;
        payload.keys.push(PayloadKey {
            id: key.id,
            value: *material.as_bytes(),
            created_at_ms: key.created_at_ms,
            activation: key.activation,
            compromised_at_ms: key.compromised_at_ms,
        });
    }
    let address = FileAddress {
        file_id,
        sender_cluster: own.cluster_id,
        created_at_ms,
        sender: &secret,
        receiver: &receiver,
    };
    seal_file(&address, &payload, &mut rand_core::OsRng.unwrap_err())
}

/// A file opened for import (SPEC T4): its header, and its data units with their keys wrapped
/// under our master key (the clear values dropped, zeroized, here).
pub struct OpenedFile {
    pub header: FileHeader,
    pub data_units: Vec<TransferredDataUnit>,
    pub keys: usize,
}

pub fn import_file(
    own: &OwnCluster<'_>,
    file: &[u8],
    (partner_name, partner): (&str, &[u8]),
) -> Result<OpenedFile, TransferError> {
    let secret = own.secret()?;
    let partner = TransferPublicKeys::from_bytes(partner)?;
    let (header, payload) = open_file(file, &secret, (partner_name, &partner))?;
    let mut wrapped = std::collections::BTreeMap::new();
    for key in &payload.keys {
        let material = KeyMaterial::from_bytes(&key.value);
        let transferred = TransferredKey {
            id: key.id,
            material: wrap_key(own.master, own.cluster_id, &key.id, &material),
            check_value: check_value(&material),
            created_at_ms: key.created_at_ms,
            activation: key.activation,
            compromised_at_ms: key.compromised_at_ms,
        };
        wrapped.insert(key.id, transferred);
    }
    let data_units = payload
        .data_units
        .iter()
        .map(|unit| TransferredDataUnit {
            id: unit.id,
            external_tag: unit.external_tag.clone(),
            keys: unit.keys.iter().filter_map(|id| wrapped.get(id).cloned()).collect(),
        })
        .collect();
    Ok(OpenedFile { header, data_units, keys: payload.keys.len() })
}

/// What a KMA does with its transfer key pair for a user (SPEC T3, T4): the management API
/// asks, the node runs it with its master key ([`perform`]).
#[derive(Debug)]
pub enum TransferWork {
    /// Write an export file for the partner whose public keys are `partner_public`.
    Export {
        file_id: [u8; 16],
        created_at_ms: u64,
        partner_public: Vec<u8>,
        keys: Vec<ExportKey>,
        data_units: Vec<PayloadDataUnit>,
    },
    /// Verify and open a file from partner `partner`.
    Import { file: Vec<u8>, partner: String, partner_public: Vec<u8> },
}

pub enum TransferDone {
    Exported(Vec<u8>),
    Imported(OpenedFile),
}

pub fn perform(own: &OwnCluster<'_>, work: TransferWork) -> Result<TransferDone, TransferError> {
    match work {
        TransferWork::Export { file_id, created_at_ms, partner_public, keys, data_units } => {
            export_file(own, (file_id, created_at_ms), &partner_public, &keys, data_units)
                .map(TransferDone::Exported)
        }
        TransferWork::Import { file, partner, partner_public } => {
            import_file(own, &file, (&partner, &partner_public)).map(TransferDone::Imported)
        }
    }
}
