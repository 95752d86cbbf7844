//! `POST /v1/imports/1x` and its progress on an in-memory KMA (SPEC M1, issue 18 point 4): the
//! route's rules (who may send a file, what a bad file gets, who sees the progress) without
//! processes. The same import through running KMAs and kmsctl is in node's tests
//! (`kmsctl::imports`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use admin_api::api::{ErrorCode, Import1xProgress, Import1xStarted};
use axum::body::Body;
use statemachine::{Actor, Command, KeyId, Role, RoleSet};
use support::*;

/// A node at log format 3 with the Compliance Officer `co` and group `legacy` (import allowed).
fn node_with_legacy_group() -> Arc<MemoryNode> {
    let node = MemoryNode::new();
    let so = || Actor::User("so".into());
    node.ok(Actor::System, Command::ReportSoftwareVersion { kma: "kma1".into(), version: 3 });
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
    node
}

/// `count` lines of a 1.x file, key `n` with value byte `n % 251`.
fn file(count: usize) -> String {
    (0..count)
        .map(|n| format!("abcd{:060x}, {}, tape {n}\n", n, hex::encode([(n % 251) as u8; 32])))
        .collect()
}

fn upload(user: Option<&str>, group: &str, text: String) -> axum::http::Request<Body> {
    request("POST", &format!("/v1/imports/1x?group={group}"), user, Body::from(text))
}

async fn progress_until_done(
    router: &axum::Router,
    user: &str,
    import_id: &str,
) -> Import1xProgress {
    for _ in 0..500 {
        let asked =
            request("GET", &format!("/v1/imports/1x/{import_id}"), Some(user), Body::empty());
        let (status, _, body) = send(router, asked).await;
        assert_eq!(status, 200, "{body}");
        let progress: Import1xProgress = serde_json::from_str(&body).expect("progress");
        if progress.status != "staging" {
            return progress;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("import {import_id} did not finish")
}

/// Setup: an in-memory KMA at log format 3. Action: a 4,500-key file (three batches) sent by
/// the Compliance Officer; its progress asked by them and by another user. Expect: the keys
/// staged in three batches then committed at once, wrapped by the node (never in clear in a
/// command), Process-only; the progress visible to its own user only. (SPEC M1, S1)
#[tokio::test]
async fn m1_a_file_is_staged_in_batches_then_committed_and_followed_by_its_user() {
    let node = node_with_legacy_group();
    let router = router(&node);
    let (status, _, body) = send(&router, upload(Some("co"), "legacy", file(4_500))).await;
    assert_eq!(status, 200, "{body}");
    let started: Import1xStarted = serde_json::from_str(&body).expect("started");
    assert_eq!((started.keys, started.batches), (4_500, 3));
    let done = progress_until_done(&router, "co", &started.import_id).await;
    assert_eq!(done.status, "committed", "{done:?}");
    assert_eq!((done.imported, done.duplicates, done.keys_staged), (4_500, 0, 4_500));
    let key = KeyId([0; 30]);
    assert!(node.state.read().await.key(&key).is_some(), "key 0 imported");
    let stages = node
        .commands
        .lock()
        .expect("commands")
        .iter()
        .filter(|c| matches!(c, Command::StageImport1x { .. }))
        .count();
    assert_eq!(stages, 3);
    // The values went in wrapped: no staged key carries its clear value.
    for command in node.commands.lock().expect("commands").iter() {
        let Command::StageImport1x { keys, .. } = command else { continue };
        for key in keys {
            let n = u64::from_be_bytes(key.id.0[22..].try_into().expect("8 bytes"));
            assert_ne!(key.material.ciphertext, [(n % 251) as u8; 32], "key {n} in clear");
        }
    }

    let asked =
        request("GET", &format!("/v1/imports/1x/{}", started.import_id), Some("op"), Body::empty());
    assert_eq!(refusal(send(&router, asked).await).code, ErrorCode::NotFound);
}

/// Setup: as above. Action: files a newcomer gets wrong, a user without the role, a group that
/// does not allow import, no user at all. Expect: each refused with the line or field and what
/// is wrong, before anything is staged. (SPEC M1, S1; issue 18 "Bad input")
#[tokio::test]
async fn m1_bad_files_and_callers_are_refused_before_anything_is_staged() {
    let node = node_with_legacy_group();
    let router = router(&node);
    let applied = node.state.read().await.last_applied_index();
    let mut malformed = file(3);
    malformed.push_str("abcd, 00\n");
    let cases = [
        (
            upload(Some("co"), "legacy", malformed),
            ErrorCode::BadRequest,
            "line 4: the key ID has 4 characters",
        ),
        (
            upload(Some("co"), "legacy", String::new()),
            ErrorCode::BadRequest,
            "the file holds no keys",
        ),
        (upload(Some("co"), "nowhere", file(1)), ErrorCode::NotFound, "nowhere"),
        (upload(Some("op"), "legacy", file(1)), ErrorCode::Forbidden, "Compliance Officer"),
        (upload(None, "legacy", file(1)), ErrorCode::Unauthenticated, "kmsctl login"),
    ];
    for (asked, code, words) in cases {
        let error = refusal(send(&router, asked).await);
        assert_eq!(error.code, code, "{error:?}");
        assert!(
            error.message.contains(words) || error.help.as_deref().unwrap_or("").contains(words),
            "{words}: {error:?}"
        );
    }
    let invalid = upload(Some("co"), "legacy", String::from_utf8_lossy(&[0xff, 0xfe]).into_owned());
    assert_eq!(refusal(send(&router, invalid).await).code, ErrorCode::BadRequest);
    assert_eq!(node.state.read().await.last_applied_index(), applied, "nothing proposed");
}

/// Setup: a key imported. Action: a 2,500-line file whose line 2,400 (in its second batch)
/// holds that key's ID with another value. Expect: the import fails naming line 2,400, the
/// first batch it staged is abandoned, and no key of the file is visible. (SPEC M1)
#[tokio::test]
async fn m1_a_conflict_in_a_later_batch_names_its_line_and_leaves_nothing() {
    let node = node_with_legacy_group();
    let router = router(&node);
    let (_, _, body) = send(&router, upload(Some("co"), "legacy", file(1))).await;
    let started: Import1xStarted = serde_json::from_str(&body).expect("started");
    assert_eq!(progress_until_done(&router, "co", &started.import_id).await.status, "committed");
    let keys_before = node.state.read().await.keys().len();

    let mut text: String = (1_000..3_399)
        .map(|n| format!("abcd{:060x}, {}\n", n, hex::encode([(n % 251) as u8; 32])))
        .collect();
    text.push_str(&format!("abcd{:060x}, {}\n", 0, hex::encode([0x77; 32])));
    text.push_str(&format!("abcd{:060x}, {}\n", 5_000, hex::encode([0x78; 32])));
    let (_, _, body) = send(&router, upload(Some("co"), "legacy", text)).await;
    let started: Import1xStarted = serde_json::from_str(&body).expect("started");
    let failed = progress_until_done(&router, "co", &started.import_id).await;
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert_eq!(failed.line, Some(2_400), "{failed:?}");
    let error = failed.error.expect("why");
    assert!(error.message.starts_with("line 2400: key ID"), "{error:?}");
    let state = node.state.read().await;
    assert_eq!(state.keys().len(), keys_before, "nothing of the file is visible");
    assert!(state.staged_imports_1x().is_empty(), "the staged batch was abandoned");
}
