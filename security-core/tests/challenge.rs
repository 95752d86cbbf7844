//! Passphrase challenge/response (SPEC A1, S2).

use security_core::{
    create_verifier, verifier_kdf, ClientLogin, ClientProof, KdfParams, SecurityError,
    ServerChallenge, ServerFinal, ServerLogin,
};

const PASSPHRASE: &str = "drive-0042 enrollment passphrase";
const DECOY_SECRET: [u8; 32] = [0x5a; 32];

fn verifier() -> Vec<u8> {
    create_verifier(PASSPHRASE, KdfParams::fast_for_tests()).expect("verifier")
}

/// Runs a login up to the client's proof: returns the server's pending state and the proof.
fn prove(
    verifier: Option<&[u8]>,
    passphrase: &str,
) -> (ServerLogin, ServerChallenge, security_core::ClientAwaitingServer, ClientProof) {
    let (client, hello) = ClientLogin::start("agent-7", "enroll");
    let (server, challenge) =
        ServerLogin::challenge(verifier, &hello, &DECOY_SECRET).expect("challenge");
    let (awaiting, proof) = client.respond(passphrase, &challenge).expect("respond");
    (server, challenge, awaiting, proof)
}

/// Setup: a verifier for the agent's passphrase. Action: the four messages. Expectation: the
/// server accepts the proof and the client accepts the server's signature.
#[test]
fn a1_login_happy_path() {
    let verifier = verifier();
    let (client, hello) = ClientLogin::start("agent-7", "enroll");
    assert_eq!(hello.principal, "agent-7");
    assert_eq!(hello.purpose, "enroll");
    let (server, challenge) =
        ServerLogin::challenge(Some(&verifier), &hello, &DECOY_SECRET).unwrap();
    assert_eq!(server.principal(), "agent-7");
    assert_eq!(server.purpose(), "enroll");
    assert_eq!(challenge.kdf, KdfParams::fast_for_tests());
    let (awaiting, proof) = client.respond(PASSPHRASE, &challenge).unwrap();
    assert_eq!(proof.server_nonce, challenge.server_nonce);
    let server_final = server.verify(&proof).unwrap();
    awaiting.verify_server(&server_final).unwrap();
}

/// Setup: a verifier. Action: the client answers with another passphrase. Expectation: the
/// server refuses with `WrongPassphrase`.
#[test]
fn a1_wrong_passphrase_is_refused() {
    let verifier = verifier();
    let (server, _, _, proof) = prove(Some(&verifier), "drive-0042 enrollment passphrasE");
    assert_eq!(server.verify(&proof).unwrap_err(), SecurityError::WrongPassphrase);
}

/// Setup: no verifier for the principal. Action: two hellos for it, one for another unknown
/// principal. Expectation: challenges of the same shape as a real one with default parameters;
/// the same salt for the same principal, another for another; fresh server nonces; any answer
/// is `WrongPassphrase`.
#[test]
fn a1_unknown_principal_gets_an_indistinguishable_challenge() {
    let real = create_verifier(PASSPHRASE, KdfParams::default()).unwrap();
    let (_, hello) = ClientLogin::start("agent-7", "enroll");
    let (_, real_challenge) = ServerLogin::challenge(Some(&real), &hello, &DECOY_SECRET).unwrap();
    let (_, ghost_hello) = ClientLogin::start("ghost", "enroll");
    let (_, first) = ServerLogin::challenge(None, &ghost_hello, &DECOY_SECRET).unwrap();
    let (_, second) = ServerLogin::challenge(None, &ghost_hello, &DECOY_SECRET).unwrap();
    let (_, other_hello) = ClientLogin::start("phantom", "enroll");
    let (_, other) = ServerLogin::challenge(None, &other_hello, &DECOY_SECRET).unwrap();
    let encoded = |c: &ServerChallenge| postcard::to_stdvec(c).unwrap();
    assert_eq!(encoded(&first).len(), encoded(&real_challenge).len());
    assert_eq!(first.kdf, real_challenge.kdf);
    assert_eq!(first.salt, second.salt);
    assert_ne!(first.salt, other.salt);
    assert_ne!(first.server_nonce, second.server_nonce);
    let (_, with_other_secret) = ServerLogin::challenge(None, &ghost_hello, &[1; 32]).unwrap();
    assert_ne!(first.salt, with_other_secret.salt);

    let (server, _, _, proof) = prove(None, PASSPHRASE);
    assert_eq!(server.verify(&proof).unwrap_err(), SecurityError::WrongPassphrase);
}

/// Setup: a captured, successful exchange. Action: replay its proof against a new
/// `ServerLogin`, as is and with the new server nonce pasted in. Expectation: refused
/// (`ChallengeMismatch`, then `WrongPassphrase`).
#[test]
fn a1_replayed_proof_is_refused() {
    let verifier = verifier();
    let (server, _, _, captured) = prove(Some(&verifier), PASSPHRASE);
    server.verify(&captured).unwrap();

    let (_, hello) = ClientLogin::start("agent-7", "enroll");
    let (fresh, challenge) =
        ServerLogin::challenge(Some(&verifier), &hello, &DECOY_SECRET).unwrap();
    assert_eq!(fresh.verify(&captured).unwrap_err(), SecurityError::ChallengeMismatch);

    let (fresh, challenge_2) =
        ServerLogin::challenge(Some(&verifier), &hello, &DECOY_SECRET).unwrap();
    assert_ne!(challenge.server_nonce, challenge_2.server_nonce);
    let pasted = ClientProof { server_nonce: challenge_2.server_nonce, ..captured };
    assert_eq!(fresh.verify(&pasted).unwrap_err(), SecurityError::WrongPassphrase);
}

/// Setup: a hello for purpose `enroll`. Action: the server is shown `admin` instead.
/// Expectation: the client's proof does not verify (the purpose is bound).
#[test]
fn a1_proof_for_another_purpose_is_refused() {
    let verifier = verifier();
    let (client, mut hello) = ClientLogin::start("agent-7", "enroll");
    hello.purpose = "admin".to_owned();
    let (server, challenge) =
        ServerLogin::challenge(Some(&verifier), &hello, &DECOY_SECRET).unwrap();
    let (_, proof) = client.respond(PASSPHRASE, &challenge).unwrap();
    assert_eq!(server.verify(&proof).unwrap_err(), SecurityError::WrongPassphrase);
}

/// Setup: a successful login. Action: flip each bit of the server signature in turn.
/// Expectation: the client refuses every one with `ServerNotAuthentic`.
#[test]
fn a1_tampered_server_final_is_refused() {
    let verifier = verifier();
    let (server, _, _, proof) = prove(Some(&verifier), PASSPHRASE);
    let server_final = server.verify(&proof).unwrap();
    for bit in 0..256 {
        let (server, _, awaiting, proof) = prove(Some(&verifier), PASSPHRASE);
        let mut tampered = server.verify(&proof).unwrap();
        tampered.server_signature[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            awaiting.verify_server(&tampered).unwrap_err(),
            SecurityError::ServerNotAuthentic
        );
    }
    let (_, _, awaiting, _) = prove(Some(&verifier), PASSPHRASE);
    assert_eq!(
        awaiting.verify_server(&server_final).unwrap_err(),
        SecurityError::ServerNotAuthentic,
        "a final message of another session"
    );
}

/// Setup: an impostor server holding a verifier for another passphrase. Action: the client
/// logs in. Expectation: the impostor cannot accept the proof, so has no `ServerFinal` to send;
/// a zero signature or one from a genuine session is refused by the client.
#[test]
fn a1_server_with_another_verifier_is_not_authentic() {
    let impostor_verifier =
        create_verifier("not the passphrase", KdfParams::fast_for_tests()).unwrap();
    let (impostor, _, awaiting, proof) = prove(Some(&impostor_verifier), PASSPHRASE);
    assert_eq!(impostor.verify(&proof).unwrap_err(), SecurityError::WrongPassphrase);
    let zero = ServerFinal { server_signature: [0; 32] };
    assert_eq!(awaiting.verify_server(&zero).unwrap_err(), SecurityError::ServerNotAuthentic);

    let genuine = verifier();
    let (server, _, _, proof) = prove(Some(&genuine), PASSPHRASE);
    let genuine_final = server.verify(&proof).unwrap();
    let (_, _, awaiting, _) = prove(Some(&impostor_verifier), PASSPHRASE);
    assert_eq!(
        awaiting.verify_server(&genuine_final).unwrap_err(),
        SecurityError::ServerNotAuthentic
    );
}

/// Setup: verifiers for a passphrase. Action: search them for the passphrase's bytes.
/// Expectation: absent; version first; at most 1024 bytes; two verifiers differ (fresh salt).
#[test]
fn a1_verifier_does_not_contain_the_passphrase() {
    let first = verifier();
    let second = verifier();
    assert_ne!(first, second);
    assert!(first.len() <= 1024);
    assert_eq!(first[..2], [1, b'V']);
    for window in [PASSPHRASE.as_bytes(), &PASSPHRASE.as_bytes()[..8]] {
        assert!(!first.windows(window.len()).any(|w| w == window));
    }
}

/// Setup: verifiers made with two parameter sets. Action: `verifier_kdf`. Expectation: the
/// parameters each was made with.
#[test]
fn a1_verifier_kdf_reads_the_parameters() {
    assert_eq!(verifier_kdf(&verifier()).unwrap(), KdfParams::fast_for_tests());
    let default = create_verifier(PASSPHRASE, KdfParams::default()).unwrap();
    assert_eq!(verifier_kdf(&default).unwrap(), KdfParams::default());
    assert_eq!(
        KdfParams::default(),
        KdfParams { memory_kib: 19456, iterations: 2, parallelism: 1 }
    );
}

/// Setup: bad inputs at each side. Action: create a verifier with an empty passphrase; a hello
/// with a 257-byte principal and a 65-byte purpose; a challenge asking the client for 4 GiB.
/// Expectation: the error naming each rule, no work done.
#[test]
fn a1_out_of_bound_inputs_are_refused() {
    assert_eq!(
        create_verifier("", KdfParams::fast_for_tests()).unwrap_err(),
        SecurityError::PassphraseLength {
            who: "a new login verifier".to_owned(),
            len: 0,
            max: 1024
        }
    );
    let verifier = verifier();
    let (_, long_principal) = ClientLogin::start(&"p".repeat(257), "enroll");
    assert_eq!(
        ServerLogin::challenge(Some(&verifier), &long_principal, &DECOY_SECRET).unwrap_err(),
        SecurityError::FieldTooLong { field: "principal", len: 257, max: 256 }
    );
    let (_, long_purpose) = ClientLogin::start("agent-7", &"p".repeat(65));
    assert_eq!(
        ServerLogin::challenge(None, &long_purpose, &DECOY_SECRET).unwrap_err(),
        SecurityError::FieldTooLong { field: "purpose", len: 65, max: 64 }
    );
    let (client, hello) = ClientLogin::start("agent-7", "enroll");
    let (_, mut challenge) =
        ServerLogin::challenge(Some(&verifier), &hello, &DECOY_SECRET).unwrap();
    challenge.kdf.memory_kib = u32::MAX;
    assert_eq!(
        client.respond(PASSPHRASE, &challenge).unwrap_err(),
        SecurityError::KdfParamsOutOfRange { memory_kib: u32::MAX, iterations: 1, parallelism: 1 }
    );
}

/// Runs a join-style login with the client's and the server's channel bindings given.
fn bound_login(client_binding: Option<[u8; 32]>, server_binding: Option<[u8; 32]>) -> bool {
    let verifier = verifier();
    let (client, hello) = ClientLogin::start("kma-3", "join");
    let (server, challenge) =
        ServerLogin::challenge(Some(&verifier), &hello, &DECOY_SECRET).expect("challenge");
    let (awaiting, proof) =
        client.respond_bound(PASSPHRASE, &challenge, client_binding.as_ref()).expect("proof");
    match server.verify_bound(&proof, server_binding.as_ref()) {
        Ok(server_final) => awaiting.verify_server(&server_final).is_ok(),
        Err(error) => {
            assert_eq!(error, SecurityError::WrongPassphrase);
            false
        }
    }
}

/// Setup: a verifier; the client and the server each compute a channel binding (issue #16
/// point 5: a join proof is bound to its TLS session and its CSR). Action: logins with the same
/// binding, a different one, and one side without. Expectation: only the same binding on both
/// sides verifies; a relay whose TLS session (hence binding) differs gets `WrongPassphrase`,
/// and so does a proof stripped of its binding.
#[test]
fn s2_a_proof_bound_to_one_channel_verifies_on_that_channel_only() {
    let session = [7u8; 32];
    assert!(bound_login(Some(session), Some(session)));
    assert!(!bound_login(Some(session), Some([8u8; 32])), "another TLS session");
    assert!(!bound_login(None, Some(session)), "an unbound proof where a bound one is required");
    assert!(!bound_login(Some(session), None), "a bound proof is no unbound proof");
    assert!(bound_login(None, None), "user logins stay unbound");
}
