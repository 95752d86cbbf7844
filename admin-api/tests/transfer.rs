//! The partner transfer routes on an in-memory KMA (SPEC T1–T4; issue 18 points 1–3): who may
//! call them and what a bad request or file gets, without processes. A file that travels from
//! one cluster to another is in node's tests (`kmsctl::transfer`).

mod support;

use std::sync::Arc;

use admin_api::api::{ErrorCode, Partner, TransferKey};
use axum::body::Body;
use security_core::transfer::new_key_pair;
use statemachine::quorum::QuorumOperation;
use statemachine::{Actor, Command, Role, RoleSet};
use support::*;

/// A node at log format 3 with its transfer key pair, an Operator `op` and a Compliance
/// Officer `co`, and partner `west` (recorded through the quorum of one member).
fn node_with_partner() -> (Arc<MemoryNode>, String) {
    let node = MemoryNode::new();
    node.ok(Actor::System, Command::ReportSoftwareVersion { kma: "kma1".into(), version: 3 });
    let (public, wrapped) = new_key_pair(&node.master, CLUSTER);
    let pair = Command::SetTransferKeyPair {
        public_key: public.to_bytes().to_vec(),
        wrapped_private_key: wrapped,
    };
    node.ok(Actor::System, pair);
    let so = || Actor::User("so".into());
    let roles = RoleSet::of(Role::ComplianceOfficer);
    node.ok(so(), Command::CreateUser { id: "co".into(), roles, passphrase_verifier: vec![2; 32] });
    let (partner, _) =
        new_key_pair(&security_core::MasterKey::generate(), statemachine::ClusterId(77));
    let operation = QuorumOperation::CreateTransferPartner {
        name: "west".into(),
        public_key: partner.to_bytes().to_vec(),
    };
    node.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None });
    let id = node
        .state
        .try_read()
        .expect("state")
        .meta()
        .quorum_operations
        .keys()
        .copied()
        .next()
        .expect("operation");
    node.ok(so(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    (node, partner.fingerprint_text())
}

/// Setup: a node with its transfer key pair and partner `west`. Action: read the key and the
/// partners as an Auditor; create a partner with keys that are not keys. Expect: the key and
/// the partner's fingerprint shown to any user; the bad keys refused before any quorum
/// operation starts. (SPEC T1, T2)
#[tokio::test]
async fn t1_t2_the_transfer_key_and_partners_are_shown_and_bad_keys_refused() {
    let (node, fingerprint) = node_with_partner();
    let router = router(&node);
    let (status, _, body) =
        send(&router, request("GET", "/v1/transfer/key", Some("au"), Body::empty())).await;
    assert_eq!(status, 200, "{body}");
    let key: TransferKey = serde_json::from_str(&body).expect("key");
    assert!(key.public_keys.starts_with("kmst1:"), "{key:?}");
    assert_eq!(key.fingerprint.len(), 79);
    let (status, _, body) =
        send(&router, request("GET", "/v1/partners", Some("au"), Body::empty())).await;
    assert_eq!(status, 200, "{body}");
    let partners: Vec<Partner> = serde_json::from_str(&body).expect("partners");
    assert_eq!(
        (partners[0].name.as_str(), partners[0].fingerprint.as_str(), partners[0].enabled),
        ("west", fingerprint.as_str(), true)
    );

    let pending = node.state.read().await.meta().quorum_operations.len();
    let bad = r#"{"name":"east","public_keys":"kmst1:00"}"#;
    let error =
        refusal(send(&router, request("POST", "/v1/partners", Some("so"), Body::from(bad))).await);
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(error.message.contains("not 64 bytes"), "{error:?}");
    assert_eq!(node.state.read().await.meta().quorum_operations.len(), pending);
}

/// Setup: as above. Action: an export and an import by users without the Operator role, by
/// nobody, of nothing, for an unknown partner; a file that is not a transfer file; a file for
/// a disabled partner. Expect: each refused with what is wrong, nothing proposed.
/// (SPEC T3, T4, S1; issue 18 "Bad input")
#[tokio::test]
async fn t3_t4_exports_and_imports_are_refused_for_the_wrong_caller_or_file() {
    let (node, _) = node_with_partner();
    let router = router(&node);
    let applied = node.state.read().await.last_applied_index();
    let export = |user: Option<&str>, body: &str| {
        request("POST", "/v1/transfer/export", user, Body::from(body.to_string()))
    };
    let import = |user: Option<&str>, query: &str, body: Vec<u8>| {
        request("POST", &format!("/v1/transfer/import?{query}"), user, Body::from(body))
    };
    let west = r#"{"partner":"west","tags":["T1"]}"#;
    let cases = [
        (export(Some("co"), west), ErrorCode::Forbidden),
        (export(None, west), ErrorCode::Unauthenticated),
        (export(Some("op"), r#"{"partner":"west"}"#), ErrorCode::BadRequest),
        (export(Some("op"), r#"{"partner":"west","data_units":["xyz"]}"#), ErrorCode::BadRequest),
        (
            export(
                Some("op"),
                r#"{"partner":"east","data_units":["000000000000000100000000000000ff"]}"#,
            ),
            ErrorCode::NotFound,
        ),
        (import(Some("co"), "partner=west&group=g", b"KMSXFER1".to_vec()), ErrorCode::Forbidden),
        (import(Some("op"), "partner=east&group=g", b"KMSXFER1".to_vec()), ErrorCode::NotFound),
        (
            import(Some("op"), "partner=west&group=g", b"not a transfer file".to_vec()),
            ErrorCode::BadRequest,
        ),
    ];
    for (asked, code) in cases {
        let error = refusal(send(&router, asked).await);
        assert_eq!(error.code, code, "{error:?}");
    }
    node.ok(
        Actor::User("so".into()),
        Command::SetTransferPartnerEnabled { name: "west".into(), enabled: false },
    );
    let applied_after = node.state.read().await.last_applied_index();
    let error = refusal(
        send(&router, import(Some("op"), "partner=west&group=g", b"KMSXFER1".to_vec())).await,
    );
    assert!(error.message.contains("disabled"), "{error:?}");
    assert_eq!(applied_after, applied + 1, "nothing proposed but the disable");
    assert_eq!(node.state.read().await.last_applied_index(), applied_after);
}
