//! Secret types never print their bytes (SPEC: no clear key material in logs or errors).

use security_core::{
    split_master_key, unwrap_share, ClientLogin, KdfParams, KeyMaterial, MasterKey, ServerLogin,
};
use statemachine::ClusterId;

/// Setup: one of each secret type. Action: format with `{:?}` and `{:#?}`. Expectation: exactly
/// `Name(..)` (or, for the server's pending login, no key field).
#[test]
fn s3_debug_of_secrets_shows_no_bytes() {
    let master = MasterKey::generate();
    let material = KeyMaterial::from_bytes(&[0xab; 32]);
    let wrapped = split_master_key(
        &master,
        ClusterId(1),
        &[("alice", "passphrase")],
        1,
        KdfParams::fast_for_tests(),
    )
    .unwrap();
    let share = unwrap_share(&wrapped[0].1, ClusterId(1), "alice", "passphrase").unwrap();
    assert_eq!(format!("{master:?}"), "MasterKey(..)");
    assert_eq!(format!("{master:#?}"), "MasterKey(..)");
    assert_eq!(format!("{material:?}"), "KeyMaterial(..)");
    assert_eq!(format!("{share:?}"), "Share(..)");

    let (client, hello) = ClientLogin::start("alice", "unlock");
    let (server, challenge) = ServerLogin::challenge(None, &hello, &[0; 32]).unwrap();
    let (awaiting, _) = client.respond("passphrase", &challenge).unwrap();
    assert_eq!(format!("{awaiting:?}"), "ClientAwaitingServer(..)");
    assert_eq!(
        format!("{server:?}"),
        "ServerLogin { principal: \"alice\", purpose: \"unlock\", .. }"
    );
}

/// Setup: every error of a failed operation above. Action: display it. Expectation: it names
/// no secret (only constant text and the member ID).
#[test]
fn s3_error_messages_name_the_next_step() {
    let error = unwrap_share(b"garbage", ClusterId(1), "alice", "passphrase").unwrap_err();
    assert_eq!(
        error.to_string(),
        "the wrapped quorum share is damaged or is not a wrapped quorum share: use an intact \
         copy (from a backup or the member's own records) or create it again"
    );
    assert!(security_core::SecurityError::WrongPassphrase
        .to_string()
        .contains("failed attempts are counted"));
}
