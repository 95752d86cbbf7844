//! Passphrase login by challenge/response, in the shape of SCRAM (RFC 5802, RFC 7677) with
//! argon2id in place of PBKDF2 (SPEC A1, S2).
//!
//! ```text
//! client                                              server (holds the verifier)
//!   ClientHello { principal, purpose, client_nonce } ->
//!                                <- ServerChallenge { salt, kdf, server_nonce }
//!   ClientProof { server_nonce, proof }              ->
//!                                <- ServerFinal { server_signature }
//! ```
//!
//! - SaltedPassword = argon2id(passphrase, salt); ClientKey = HMAC(SaltedPassword, "Client Key");
//!   StoredKey = SHA-256(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
//! - AuthMessage = label || principal || purpose || client nonce || server nonce || salt || kdf
//!   parameters (strings length-prefixed, so no two transcripts encode alike).
//! - proof = ClientKey XOR HMAC(StoredKey, AuthMessage); server_signature =
//!   HMAC(ServerKey, AuthMessage).
//! - With a [`ChannelBinding`] (a KMA's join), AuthMessage ends with it: SCRAM's channel
//!   binding (RFC 5802 §6) with a TLS exporter value (RFC 8446 §7.5, as RFC 9266 does), so a
//!   proof made on one TLS session does not verify on another, and a relay that terminates
//!   the client's TLS and opens its own to the server gets nothing.
//!
//! What this gives: the passphrase never crosses the wire; the server stores only StoredKey and
//! ServerKey (the verifier), from which no proof can be made without an argon2id guessing
//! attack; a captured proof is bound to one server nonce, and a [`ServerLogin`] is consumed by
//! its one verification, so a replay finds nothing to match; and the server proves with
//! [`ServerFinal`] that it holds the verifier. Unknown principals get a decoy challenge whose
//! salt is stable per principal, so an observer cannot tell unknown from known principals.
//!
//! Decoys use [`KdfParams::default`]: create real verifiers with the defaults too, or the
//! parameters tell decoys apart. A client refuses parameters outside [`crate::kdf`]'s bounds, so
//! a server impostor can lower the cost of guessing at most to `KdfParams::fast_for_tests`;
//! mutual TLS with the cluster CA is what keeps impostors out in the first place.

use core::fmt;

use serde::{Deserialize, Serialize};
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::blob::{self, Kind};
use crate::crypto;
use crate::error::SecurityError;
use crate::kdf::{KdfParams, SALT_LEN};
use crate::quorum_shares::PASSPHRASE_LEN_MAX;

/// Length of each side's nonce, in bytes.
pub const NONCE_LEN: usize = 24;
/// Longest principal (user, agent or KMA ID), in bytes.
pub const PRINCIPAL_LEN_MAX: usize = 256;
/// Longest purpose (what the login is for, e.g. `enroll`), in bytes.
pub const PURPOSE_LEN_MAX: usize = 64;
/// Upper bound of a verifier blob's length.
pub const VERIFIER_LEN_MAX: usize = 1024;

/// Format version of verifiers.
const VERIFIER_VERSION: u8 = 1;
/// First field of every AuthMessage.
const AUTH_LABEL: &[u8] = b"kma login scram-argon2id v1";
/// HMAC message prefix of a decoy salt (the principal follows).
const DECOY_SALT_LABEL: &[u8] = b"kma login decoy salt v1";

/// What the server stores per principal: no passphrase equivalent.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct VerifierV1 {
    #[zeroize(skip)]
    kdf: KdfParams,
    salt: [u8; SALT_LEN],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

/// First message, client to server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub principal: String,
    pub purpose: String,
    pub client_nonce: [u8; NONCE_LEN],
}

/// Second message, server to client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerChallenge {
    pub salt: [u8; SALT_LEN],
    pub kdf: KdfParams,
    pub server_nonce: [u8; NONCE_LEN],
}

/// Third message, client to server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientProof {
    pub server_nonce: [u8; NONCE_LEN],
    pub proof: [u8; 32],
}

/// Last message, server to client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFinal {
    pub server_signature: [u8; 32],
}

/// What a proof binds besides the exchange itself: a digest of the TLS session's exporter value
/// and of the request the proof authenticates. Both sides compute it on their own; it never
/// crosses the wire.
pub type ChannelBinding = [u8; 32];

/// The three keys of SCRAM, from SaltedPassword.
struct ScramKeys {
    client_key: Zeroizing<[u8; 32]>,
    stored_key: Zeroizing<[u8; 32]>,
    server_key: Zeroizing<[u8; 32]>,
}

impl ScramKeys {
    fn derive(
        passphrase: &str,
        salt: &[u8; SALT_LEN],
        kdf: KdfParams,
    ) -> Result<Self, SecurityError> {
        let salted = kdf.derive(passphrase.as_bytes(), salt)?;
        let client_key = Zeroizing::new(crypto::hmac_sha256(salted.as_ref(), &[b"Client Key"]));
        let stored_key = Zeroizing::new(crypto::sha256(client_key.as_ref()));
        let server_key = Zeroizing::new(crypto::hmac_sha256(salted.as_ref(), &[b"Server Key"]));
        Ok(ScramKeys { client_key, stored_key, server_key })
    }
}

/// The fields every AuthMessage binds.
struct Transcript<'a> {
    principal: &'a str,
    purpose: &'a str,
    client_nonce: &'a [u8; NONCE_LEN],
    server_nonce: &'a [u8; NONCE_LEN],
    salt: &'a [u8; SALT_LEN],
    kdf: KdfParams,
    channel_binding: Option<&'a ChannelBinding>,
}

impl Transcript<'_> {
    fn auth_message(&self) -> Vec<u8> {
        let mut message = AUTH_LABEL.to_vec();
        for text in [self.principal, self.purpose] {
            // Lengths are bounded by PRINCIPAL_LEN_MAX and PURPOSE_LEN_MAX on the server; on
            // the client a longer string saturates, and the server refuses it anyway.
            let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
            message.extend_from_slice(&len.to_be_bytes());
            message.extend_from_slice(text.as_bytes());
        }
        message.extend_from_slice(self.client_nonce);
        message.extend_from_slice(self.server_nonce);
        message.extend_from_slice(self.salt);
        for value in [self.kdf.memory_kib, self.kdf.iterations, self.kdf.parallelism] {
            message.extend_from_slice(&value.to_be_bytes());
        }
        // Every field before is self-delimiting, so a bound transcript (33 bytes longer) never
        // encodes like an unbound one.
        if let Some(binding) = self.channel_binding {
            message.push(1);
            message.extend_from_slice(binding);
        }
        message
    }
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    for ((out, a), b) in out.iter_mut().zip(a).zip(b) {
        *out = a ^ b;
    }
    out
}

/// A verifier for `passphrase`: version, kdf parameters, a random salt, StoredKey and ServerKey.
/// At most [`VERIFIER_LEN_MAX`] bytes; holds nothing from which the passphrase can be read back.
pub fn create_verifier(passphrase: &str, kdf: KdfParams) -> Result<Vec<u8>, SecurityError> {
    if passphrase.is_empty() || passphrase.len() > PASSPHRASE_LEN_MAX {
        return Err(SecurityError::PassphraseLength {
            who: "a new login verifier".to_owned(),
            len: passphrase.len(),
            max: PASSPHRASE_LEN_MAX,
        });
    }
    let salt = crypto::random::<SALT_LEN>();
    let keys = ScramKeys::derive(passphrase, &salt, kdf)?;
    let verifier =
        VerifierV1 { kdf, salt, stored_key: *keys.stored_key, server_key: *keys.server_key };
    let blob = blob::encode(Kind::Verifier, VERIFIER_VERSION, &verifier);
    assert!(blob.len() <= VERIFIER_LEN_MAX, "a verifier fits its bound");
    Ok(blob)
}

fn decode_verifier(verifier: &[u8]) -> Result<VerifierV1, SecurityError> {
    let decoded: VerifierV1 = blob::decode(verifier, Kind::Verifier, VERIFIER_VERSION)?;
    decoded
        .kdf
        .check()
        .map_err(|_| SecurityError::MalformedBlob { what: Kind::Verifier.what() })?;
    Ok(decoded)
}

/// The argon2id parameters a verifier was made with (to tell when it is due for new ones).
pub fn verifier_kdf(verifier: &[u8]) -> Result<KdfParams, SecurityError> {
    Ok(decode_verifier(verifier)?.kdf)
}

/// The client between its hello and the server's challenge.
#[derive(Debug)]
pub struct ClientLogin {
    principal: String,
    purpose: String,
    client_nonce: [u8; NONCE_LEN],
}

impl ClientLogin {
    /// Starts a login of `principal` for `purpose` with a fresh client nonce.
    pub fn start(principal: &str, purpose: &str) -> (ClientLogin, ClientHello) {
        let client_nonce = crypto::random::<NONCE_LEN>();
        let hello = ClientHello {
            principal: principal.to_owned(),
            purpose: purpose.to_owned(),
            client_nonce,
        };
        let login = ClientLogin {
            principal: principal.to_owned(),
            purpose: purpose.to_owned(),
            client_nonce,
        };
        (login, hello)
    }

    /// Answers the server's challenge with a proof of the passphrase. Refuses argon2id
    /// parameters outside the bounds of [`crate::kdf`].
    pub fn respond(
        self,
        passphrase: &str,
        challenge: &ServerChallenge,
    ) -> Result<(ClientAwaitingServer, ClientProof), SecurityError> {
        self.respond_bound(passphrase, challenge, None)
    }

    /// [`ClientLogin::respond`], with the proof (and the server's answer) bound to `binding`:
    /// the server must compute the same value from its side of the TLS session.
    pub fn respond_bound(
        self,
        passphrase: &str,
        challenge: &ServerChallenge,
        binding: Option<&ChannelBinding>,
    ) -> Result<(ClientAwaitingServer, ClientProof), SecurityError> {
        challenge.kdf.check()?;
        let keys = ScramKeys::derive(passphrase, &challenge.salt, challenge.kdf)?;
        let auth_message = Transcript {
            principal: &self.principal,
            purpose: &self.purpose,
            client_nonce: &self.client_nonce,
            server_nonce: &challenge.server_nonce,
            salt: &challenge.salt,
            kdf: challenge.kdf,
            channel_binding: binding,
        }
        .auth_message();
        let client_signature =
            Zeroizing::new(crypto::hmac_sha256(keys.stored_key.as_ref(), &[&auth_message]));
        let proof = xor(&keys.client_key, &client_signature);
        let server_signature = crypto::hmac_sha256(keys.server_key.as_ref(), &[&auth_message]);
        let awaiting = ClientAwaitingServer { server_signature };
        Ok((awaiting, ClientProof { server_nonce: challenge.server_nonce, proof: *proof }))
    }
}

/// The client after its proof, holding the signature a genuine server will send back.
/// Zeroized on drop; `Debug` prints `ClientAwaitingServer(..)`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ClientAwaitingServer {
    server_signature: [u8; 32],
}

impl ClientAwaitingServer {
    /// Checks that the server holds this principal's verifier.
    pub fn verify_server(self, server_final: &ServerFinal) -> Result<(), SecurityError> {
        if bool::from(self.server_signature.ct_eq(&server_final.server_signature)) {
            Ok(())
        } else {
            Err(SecurityError::ServerNotAuthentic)
        }
    }
}

impl fmt::Debug for ClientAwaitingServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientAwaitingServer(..)")
    }
}

/// The server between its challenge and the client's proof. Used once: [`ServerLogin::verify`]
/// consumes it. Its keys are zeroized on drop; `Debug` shows no key.
pub struct ServerLogin {
    principal: String,
    purpose: String,
    client_nonce: [u8; NONCE_LEN],
    server_nonce: [u8; NONCE_LEN],
    salt: [u8; SALT_LEN],
    kdf: KdfParams,
    stored_key: Zeroizing<[u8; 32]>,
    server_key: Zeroizing<[u8; 32]>,
    /// Unknown principal: every proof fails.
    decoy: bool,
}

fn check_field(field: &'static str, text: &str, max: usize) -> Result<(), SecurityError> {
    if text.len() > max {
        return Err(SecurityError::FieldTooLong { field, len: text.len(), max });
    }
    Ok(())
}

/// The salt a decoy challenge shows for `principal`: the same on every hello, unknown to anyone
/// without the server's decoy secret.
fn decoy_salt(decoy_secret: &[u8; 32], principal: &str) -> [u8; SALT_LEN] {
    let mac = crypto::hmac_sha256(decoy_secret, &[DECOY_SALT_LABEL, principal.as_bytes()]);
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&mac[..SALT_LEN]);
    salt
}

impl ServerLogin {
    /// Answers `hello` with a challenge. `verifier` is the principal's stored verifier, `None`
    /// for an unknown principal: then the challenge is a decoy (salt from `decoy_secret`, default
    /// parameters) and [`ServerLogin::verify`] always fails with `WrongPassphrase`.
    pub fn challenge(
        verifier: Option<&[u8]>,
        hello: &ClientHello,
        decoy_secret: &[u8; 32],
    ) -> Result<(ServerLogin, ServerChallenge), SecurityError> {
        check_field("principal", &hello.principal, PRINCIPAL_LEN_MAX)?;
        check_field("purpose", &hello.purpose, PURPOSE_LEN_MAX)?;
        let (kdf, salt, stored_key, server_key, decoy) = match verifier {
            Some(blob) => {
                let v = decode_verifier(blob)?;
                (v.kdf, v.salt, Zeroizing::new(v.stored_key), Zeroizing::new(v.server_key), false)
            }
            None => {
                let salt = decoy_salt(decoy_secret, &hello.principal);
                let stored = Zeroizing::new(crypto::random());
                (KdfParams::default(), salt, stored, Zeroizing::new(crypto::random()), true)
            }
        };
        let server_nonce = crypto::random::<NONCE_LEN>();
        let login = ServerLogin {
            principal: hello.principal.clone(),
            purpose: hello.purpose.clone(),
            client_nonce: hello.client_nonce,
            server_nonce,
            salt,
            kdf,
            stored_key,
            server_key,
            decoy,
        };
        Ok((login, ServerChallenge { salt, kdf, server_nonce }))
    }

    /// The principal logging in.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// What the login is for.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// Checks the client's proof; on success returns the server's own proof for the client.
    pub fn verify(self, proof: &ClientProof) -> Result<ServerFinal, SecurityError> {
        self.verify_bound(proof, None)
    }

    /// [`ServerLogin::verify`] for a proof bound to `binding` (see [`ChannelBinding`]): a proof
    /// made with another binding, or with none, fails as a wrong passphrase would.
    pub fn verify_bound(
        self,
        proof: &ClientProof,
        binding: Option<&ChannelBinding>,
    ) -> Result<ServerFinal, SecurityError> {
        if !bool::from(self.server_nonce.ct_eq(&proof.server_nonce)) {
            return Err(SecurityError::ChallengeMismatch);
        }
        let auth_message = Transcript {
            principal: &self.principal,
            purpose: &self.purpose,
            client_nonce: &self.client_nonce,
            server_nonce: &self.server_nonce,
            salt: &self.salt,
            kdf: self.kdf,
            channel_binding: binding,
        }
        .auth_message();
        let client_signature =
            Zeroizing::new(crypto::hmac_sha256(self.stored_key.as_ref(), &[&auth_message]));
        let client_key = xor(&proof.proof, &client_signature);
        let stored_key = Zeroizing::new(crypto::sha256(client_key.as_ref()));
        // The decoy runs the same computation, so timing does not tell it apart.
        let matches =
            stored_key.ct_eq(self.stored_key.as_ref()) & Choice::from(u8::from(!self.decoy));
        if !bool::from(matches) {
            return Err(SecurityError::WrongPassphrase);
        }
        let server_signature = crypto::hmac_sha256(self.server_key.as_ref(), &[&auth_message]);
        Ok(ServerFinal { server_signature })
    }
}

impl fmt::Debug for ServerLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLogin")
            .field("principal", &self.principal)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}
