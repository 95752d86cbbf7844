//! Every refusal of the management API is the JSON `ErrorBody` with its code's HTTP status, the
//! framework's own included (issue 15, point 3): tried as a new user would, bad JSON, a missing
//! field, an oversized body and a bad query string gave plain text from axum. The routes run on
//! an in-memory KMA (`support::MemoryNode`), without TLS (the TLS server is agent-gateway's
//! `serve_tls`, tested there with an oversized body).

mod support;

use std::sync::Arc;

use admin_api::api::{ErrorBody, ErrorCode};
use axum::body::Body;
use axum::http::StatusCode;
use statemachine::command::Legacy1xKey;
use statemachine::key::{KeyCheckValue, WrappedKey};
use statemachine::{Actor, Command, KeyId, Role, RoleSet};
use support::*;

async fn refused(
    node: &std::sync::Arc<MemoryNode>,
    request: axum::http::Request<Body>,
) -> ErrorBody {
    refusal(send(&router(node), request).await)
}

/// Setup: an in-memory KMA; the Operator `op` logged in. Action: the malformed requests a
/// newcomer sends with curl. Expectation: each answer is JSON with the documented code and its
/// status, a message naming what was wrong and the next step; nothing was proposed.
#[tokio::test]
async fn t90_issue_15_framework_rejections_have_the_json_error_body() {
    let node = MemoryNode::new();
    let applied = node.state.read().await.last_applied_index();
    let op = Some("op");
    let cases = [
        (request("POST", "/v1/sites", op, Body::from("{not json")), ErrorCode::BadRequest),
        (request("POST", "/v1/sites", op, Body::from("{}")), ErrorCode::BadRequest),
        (request("POST", "/v1/sites", op, Body::from(r#"{"name":7}"#)), ErrorCode::BadRequest),
        (request("GET", "/v1/keys?limit=many", op, Body::empty()), ErrorCode::BadRequest),
        (request("POST", "/v1/backups/first/destroyed", op, Body::empty()), ErrorCode::BadRequest),
        (request("GET", "/v1/nothing", op, Body::empty()), ErrorCode::NotFound),
        (request("PATCH", "/v1/sites", op, Body::empty()), ErrorCode::MethodNotAllowed),
    ];
    for (request, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let error = refused(&node, request).await;
        assert_eq!(error.code, code, "{what}: {}", error.message);
        assert!(!error.retryable, "{what}");
        assert!(error.help.is_some(), "{what}: no next step");
    }
    let missing = refused(&node, request("POST", "/v1/sites", op, Body::from("{}"))).await;
    assert!(missing.message.contains("missing field `name`"), "{}", missing.message);
    let query = refused(&node, request("GET", "/v1/keys?limit=many", op, Body::empty())).await;
    assert!(query.message.starts_with("query: "), "{}", query.message);
    let mut untyped = request("POST", "/v1/sites", op, Body::from(r#"{"name":"x"}"#));
    untyped.headers_mut().remove("content-type");
    let error = refused(&node, untyped).await;
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(error.help.is_some_and(|help| help.contains("Content-Type")));
    assert_eq!(node.state.read().await.last_applied_index(), applied, "nothing proposed");
}

/// Setup: an in-memory KMA. Action: a 6 MB compromise request (a huge key list), the size a
/// newcomer tried. Expectation: `body-too-large` (413) as JSON, saying how to split it.
#[tokio::test]
async fn t90_issue_15_oversized_body_is_a_json_413() {
    let node = MemoryNode::new();
    let keys: Vec<String> = (0..100_000u64).map(|n| format!("{n:060x}")).collect();
    let body = serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("encode");
    assert!(body.len() > 6_000_000);
    let request = request("POST", "/v1/keys/compromise", Some("op"), Body::from(body));
    let error = refused(&node, request).await;
    assert_eq!(error.code, ErrorCode::BodyTooLarge);
    assert_eq!(error.message, "the request body is larger than 2097152 bytes");
    assert!(error.help.is_some_and(|help| help.contains("10000 keys")));
}

/// Setup: an in-memory KMA. Action: requests the API itself refuses: no user certificate, a
/// user without the role, an unknown key, a rejected command. Expectation: each with its code
/// and status; the state machine's refusal carries its frozen number.
#[tokio::test]
async fn u1_api_refusals_have_their_codes() {
    let node = MemoryNode::new();
    let anonymous = refused(&node, request("GET", "/v1/users", None, Body::empty())).await;
    assert_eq!(anonymous.code, ErrorCode::Unauthenticated);
    let audit = refused(&node, request("GET", "/v1/audit", Some("op"), Body::empty())).await;
    assert_eq!(audit.code, ErrorCode::Forbidden);
    let unknown = format!("/v1/keys/{}", "ab".repeat(30));
    let key = refused(&node, request("GET", &unknown, Some("op"), Body::empty())).await;
    assert_eq!(key.code, ErrorCode::NotFound);
    let site = Body::from(r#"{"name":"east"}"#);
    let exists = refused(&node, request("POST", "/v1/sites", Some("so"), site)).await;
    assert_eq!((exists.code, exists.reject_code), (ErrorCode::Rejected, Some(15)));
    let missing_role = Body::from(r#"{"name":"west"}"#);
    let role = refused(&node, request("POST", "/v1/sites", Some("au"), missing_role)).await;
    assert_eq!((role.code, role.reject_code), (ErrorCode::Forbidden, Some(8)));
    assert_eq!(
        codes(&[anonymous, audit, key, exists, role]),
        [
            ErrorCode::Unauthenticated,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::Rejected,
            ErrorCode::Forbidden
        ]
    );
}

/// Setup: an in-memory KMA with a few applied commands. Action: an Auditor reads the audit log
/// and its head. Expectation: the events and anchors come through `AdminNode` (no storage
/// handle): every stored event, in chain order, and a head that matches the state's chain.
#[tokio::test]
async fn s5_audit_reads_go_through_the_admin_node() {
    let node = MemoryNode::new();
    let stored = node.events.lock().expect("events").len() as u64;
    let (status, _, body) =
        send(&router(&node), request("GET", "/v1/audit", Some("au"), Body::empty())).await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let seqs: Vec<u64> = page["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=stored).collect::<Vec<_>>());
    let head = request("GET", "/v1/audit/head", Some("au"), Body::empty());
    let (status, _, body) = send(&router(&node), head).await;
    assert_eq!(status, 200, "{body}");
    let head: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!((head["anchor_seq"].as_u64(), head["head_seq"].as_u64()), (Some(0), Some(stored)));
}

/// A compromised 1.x key in group `legacy`, on a cluster whose KMA reports log format `log`.
fn cluster_with_a_destroyable_key(log: u32) -> (Arc<MemoryNode>, KeyId) {
    let node = MemoryNode::new();
    let so = || Actor::User("so".into());
    node.ok(Actor::System, Command::ReportSoftwareVersion { kma: "kma1".into(), version: log });
    let roles = RoleSet::of(Role::ComplianceOfficer);
    node.ok(so(), Command::CreateUser { id: "co".into(), roles, passphrase_verifier: vec![2; 32] });
    let co = || Actor::User("co".into());
    let policy = Command::CreateKeyPolicy {
        name: "legacy".into(),
        encryption_period_ms: 86_400_000,
        cryptoperiod_ms: 86_400_000,
        allow_export: false,
        allow_import: true,
    };
    node.ok(co(), policy);
    node.ok(co(), Command::CreateKeyGroup { name: "legacy".into(), policy: "legacy".into() });
    let key_id = KeyId([0x42; 30]);
    let key = Legacy1xKey {
        id: key_id,
        material: WrappedKey { nonce: [7; 12], ciphertext: [0x11; 32], tag: [9; 16] },
        check_value: KeyCheckValue([0x11; 16]),
        description: String::new(),
    };
    // From log format 3 only a KMA records an import (it wraps the keys); a user before.
    let importer = if log >= 3 { Actor::System } else { co() };
    node.ok(importer, Command::Import1xKeys { group: "legacy".into(), keys: vec![key] });
    node.ok(co(), Command::CompromiseKeys { keys: vec![key_id] });
    (node, key_id)
}

/// Setup: an in-memory KMA with a compromised key, at log format 3, then at format 1. Action:
/// `POST /v1/keys/destroy` without `confirm`, then with the preview's digest. Expect: at format
/// 3 the route proposes the destroy that carries the confirmed digest, for `apply` to check
/// again; at format 1, which cannot apply it, the destroy without it. Both destroy the key.
/// (SPEC O7, O9, C7; issue 16 point 4)
#[tokio::test]
async fn o9_destroy_by_key_id_carries_its_confirmed_digest_from_format_3() {
    for (log, previewed) in [(3, true), (1, false)] {
        let (node, key_id) = cluster_with_a_destroyable_key(log);
        let router = router(&node);
        let body = format!(r#"{{"keys":["{key_id}"]}}"#);
        let (status, _, preview) =
            send(&router, request("POST", "/v1/keys/destroy", Some("op"), Body::from(body))).await;
        assert_eq!(status, StatusCode::OK, "{preview}");
        let preview: serde_json::Value = serde_json::from_str(&preview).expect("JSON");
        let digest = preview["digest"].as_str().expect("a preview digest").to_string();
        let body = format!(r#"{{"keys":["{key_id}"],"confirm":"{digest}"}}"#);
        let (status, _, done) =
            send(&router, request("POST", "/v1/keys/destroy", Some("op"), Body::from(body))).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        let last = node.commands.lock().expect("commands").last().cloned().expect("one");
        let preview_digest = u64::from_str_radix(&digest, 16).expect("hex digest");
        let expected = if previewed {
            Command::DestroyKeysPreviewed { keys: vec![key_id], preview_digest }
        } else {
            Command::DestroyKeys { keys: vec![key_id] }
        };
        assert_eq!(last, expected, "at log format {log}");
        let state = node.state.read().await;
        assert!(state.key_state(&key_id, NOW_MS).expect("kept").is_destroyed());
    }
}

/// A tape library's certificate request, PEM, asking for a name of its own.
fn library_csr() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "agent:someone-else");
    params.serialize_request(&key).expect("request").pem().expect("PEM")
}

/// Setup: an in-memory KMA at log format 3; agent library1 created by the Operator. Action:
/// the Auditor asks to enroll it; garbage as a request; the Operator enrolls it from its
/// request (which asks for another name); the Operator enrolls it again; the Operator, then a
/// Security Officer, grant it the right to revoke and destroy over KMIP. Expect: the Auditor
/// is refused (forbidden); the garbage is a bad request and records nothing; the enrollment
/// records the fingerprint of a certificate naming `agent:library1` whatever the request asked;
/// the second is refused as already enrolled, with the next step; only the Security Officer
/// may grant the right, and the state records it. (issue 19; SPEC S1, A1, U1)
#[tokio::test]
async fn u5_an_operator_enrolls_a_kmip_client_and_a_security_officer_grants_its_rights() {
    let node = MemoryNode::new();
    node.ok(Actor::System, Command::ReportSoftwareVersion { kma: "kma1".into(), version: 3 });
    let create = Command::CreateAgent {
        id: "library1".into(),
        site: "east".into(),
        passphrase_verifier: vec![3; 32],
    };
    node.ok(Actor::User("op".into()), create);
    let router = router(&node);
    let enroll = |user: &str, csr: &str| {
        let body = serde_json::json!({ "csr_pem": csr }).to_string();
        request("POST", "/v1/agents/library1/kmip-enrollment", Some(user), Body::from(body))
    };
    let forbidden = refusal(send(&router, enroll("au", &library_csr())).await);
    assert_eq!(forbidden.code, ErrorCode::Forbidden, "{}", forbidden.message);
    let garbage = refusal(send(&router, enroll("op", "not a request")).await);
    assert_eq!(garbage.code, ErrorCode::BadRequest, "{}", garbage.message);
    assert_eq!(node.state.read().await.meta().agents["library1"].certificate_fingerprint, None);

    let (status, _, body) = send(&router, enroll("op", &library_csr())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let enrolled: admin_api::api::KmipCertificate = serde_json::from_str(&body).expect("JSON");
    let der = rustls_pemfile::certs(&mut enrolled.certificate_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM");
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).expect("X.509");
    let name = parsed.subject().iter_common_name().next().expect("CN").as_str().expect("text");
    assert_eq!(name, "agent:library1");
    let recorded = node.state.read().await.meta().agents["library1"].certificate_fingerprint;
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(der.as_ref()).into();
    assert_eq!(recorded, Some(digest));
    assert_eq!(enrolled.fingerprint, hex::encode(digest));

    let again = refusal(send(&router, enroll("op", &library_csr())).await);
    assert_eq!(again.code, ErrorCode::Rejected, "{}", again.message);
    assert!(again.help.is_some_and(|help| help.contains("kmsctl agent passphrase")));

    let grant = |user: &str| {
        let body = Body::from(r#"{"revoke_and_destroy":true}"#);
        request("PUT", "/v1/agents/library1/kmip-rights", Some(user), body)
    };
    let operator = refusal(send(&router, grant("op")).await);
    assert_eq!(operator.code, ErrorCode::Forbidden, "{}", operator.message);
    let (status, _, body) = send(&router, grant("so")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(node.state.read().await.meta().kmip_revokers.contains("library1"));
}
