//! Golden tests of what `kmsctl` prints: the table and the `--json` text of fixed sample data of
//! each list type, against `tests/golden/<name>.txt`. `UPDATE_GOLDEN=1 cargo test --release -p
//! admin-api --test cli_render` rewrites the files; review the diff before committing it.

use std::path::PathBuf;

use admin_api::api::{
    Agent, AuditRecord, Backup, ClusterStatus, DataUnit, DataUnitKey, ImpactPreview, Key, KeyGroup,
    KeyPolicy, KeyPoolLimits, Kma, KmaHealth, PreviewOrDone, QuorumOperationView, QuorumView,
    SecuritySettings, Settings, Site, User,
};
use admin_api::cli::audit_verify::{self, BreakKind, Broken, KmaHead, VerifyReport};
use admin_api::cli::render;

/// 2024-03-01 12:00:00 UTC.
const T0: u64 = 1_709_294_400_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(format!("{name}.txt"))
}

/// Compares `table` and `json` with the golden file `name`, or rewrites it with UPDATE_GOLDEN=1.
fn check(name: &str, table: &str, json: &str) {
    let actual = format!("--- table ---\n{table}--- json ---\n{json}");
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("golden dir made");
        std::fs::write(&path, &actual).expect("golden file written");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; run with UPDATE_GOLDEN=1 to write it", path.display())
    });
    assert_eq!(actual, expected, "{name}: output differs from {}", path.display());
}

fn sites() -> Vec<Site> {
    vec![
        Site { name: "paris".into(), created_at_ms: T0 },
        Site { name: "frankfurt-dc2".into(), created_at_ms: T0 + DAY_MS + 61_000 },
    ]
}

fn kmas() -> Vec<Kma> {
    let kma = |name: &str, node_id, site: &str, status: &str, locked| Kma {
        name: name.into(),
        node_id,
        site: site.into(),
        status: status.into(),
        locked,
        autonomous_unlock: !locked,
        software_version: 3,
        created_at_ms: T0 + node_id * HOUR_MS,
    };
    vec![
        kma("kma1", 1, "paris", "member", false),
        kma("kma2", 2, "paris", "member", true),
        kma("kma-frankfurt", 3, "frankfurt-dc2", "pending", true),
    ]
}

fn status() -> ClusterStatus {
    let health = |name: &str, node_id, role: &str, reachable, lag| KmaHealth {
        name: name.into(),
        node_id,
        site: "paris".into(),
        status: "member".into(),
        role: role.into(),
        reachable,
        locked: !reachable,
        autonomous_unlock: true,
        software_version: 3,
        replication_lag: lag,
        last_applied_index: reachable.then_some(1_042 - lag.unwrap_or(0)),
        management_address: Some(format!("10.0.0.{node_id}:8443")),
    };
    ClusterStatus {
        cluster_id: Some("c0ffee01".into()),
        answered_by: "kma1".into(),
        leader: Some("kma1".into()),
        term: 7,
        commit_index: 1_042,
        kmas: vec![
            health("kma1", 1, "leader", true, Some(0)),
            health("kma2", 2, "follower", true, Some(12)),
            health("kma3", 3, "unknown", false, None),
        ],
    }
}

fn users() -> Vec<User> {
    vec![
        User {
            id: "alice".into(),
            roles: vec!["security-officer".into(), "auditor".into()],
            enabled: true,
            created_at_ms: T0,
        },
        User {
            id: "bob".into(),
            roles: vec!["operator".into()],
            enabled: false,
            created_at_ms: T0 + 5,
        },
        User { id: "carol".into(), roles: vec![], enabled: true, created_at_ms: T0 + DAY_MS },
    ]
}

fn agents() -> Vec<Agent> {
    vec![
        Agent {
            id: "drive-001".into(),
            site: "paris".into(),
            enrolled: true,
            enabled: true,
            key_groups: vec!["backups".into(), "archive".into()],
            default_key_group: Some("backups".into()),
            created_at_ms: T0,
            kmip_revoke_and_destroy: false,
        },
        Agent {
            id: "lto4-frankfurt-17".into(),
            site: "frankfurt-dc2".into(),
            enrolled: false,
            enabled: false,
            key_groups: vec![],
            default_key_group: None,
            created_at_ms: T0 + 30 * DAY_MS,
            kmip_revoke_and_destroy: true,
        },
    ]
}

const KEY_A: &str = "c0ffee01000000000000000000000001";
const KEY_B: &str = "c0ffee01000000000000000000000002";
const UNIT_1: &str = "c0ffee0100000000000000000000a001";
const UNIT_2: &str = "c0ffee0100000000000000000000a002";
const UNIT_3: &str = "c0ffee0100000000000000000000a003";

fn keys() -> Vec<Key> {
    vec![
        Key {
            id: KEY_A.into(),
            state: "protect-and-process".into(),
            group: Some("backups".into()),
            origin: "pool".into(),
            created_at_ms: T0,
            activated_at_ms: Some(T0 + HOUR_MS),
            encryption_ends_at_ms: Some(T0 + HOUR_MS + 30 * DAY_MS),
            deactivates_at_ms: Some(T0 + HOUR_MS + 365 * DAY_MS),
            compromised_at_ms: None,
            destroyed_at_ms: None,
            data_units: vec![UNIT_1.into()],
        },
        Key {
            id: KEY_B.into(),
            state: "deactivated".into(),
            group: None,
            origin: "imported-1x".into(),
            created_at_ms: T0 - 400 * DAY_MS,
            activated_at_ms: Some(T0 - 400 * DAY_MS),
            encryption_ends_at_ms: Some(T0 - 400 * DAY_MS),
            deactivates_at_ms: Some(T0 - DAY_MS),
            compromised_at_ms: None,
            destroyed_at_ms: None,
            data_units: vec![UNIT_2.into(), UNIT_3.into()],
        },
    ]
}

fn data_units() -> Vec<DataUnit> {
    let key = |key_id: &str, in_use, state: &str| DataUnitKey {
        key_id: key_id.into(),
        in_use,
        state: state.into(),
    };
    vec![
        DataUnit {
            id: UNIT_1.into(),
            external_tag: "VOL001".into(),
            state: "normal".into(),
            created_at_ms: T0,
            keys: vec![key(KEY_A, true, "protect-and-process")],
        },
        DataUnit {
            id: UNIT_2.into(),
            external_tag: String::new(),
            state: "needs-rekey".into(),
            created_at_ms: T0 + 2 * DAY_MS,
            keys: vec![key(KEY_B, true, "deactivated"), key(KEY_A, false, "protect-and-process")],
        },
    ]
}

fn audit() -> Vec<AuditRecord> {
    vec![
        AuditRecord {
            seq: 41,
            index: 1_040,
            at_ms: T0,
            kind: "login".into(),
            actor: Some("user:alice".into()),
            kma: Some("kma1".into()),
            outcome: None,
            detail: "Login { principal: \"alice\", source: \"10.0.0.9\" }".into(),
            link: "ab".repeat(32),
            encoded: "00".into(),
        },
        AuditRecord {
            seq: 42,
            index: 1_041,
            at_ms: T0 + 1_500,
            kind: "command".into(),
            actor: Some("user:bob".into()),
            kma: Some("kma2".into()),
            outcome: Some("rejected:17".into()),
            detail: "Command { kind: DestroyKeys, .. }".into(),
            link: "cd".repeat(32),
            encoded: "01".into(),
        },
        AuditRecord {
            seq: 43,
            index: 1_042,
            at_ms: T0 + 2_000,
            kind: "key-state-changed".into(),
            actor: None,
            kma: None,
            outcome: None,
            detail: "KeyStateChanged { from: ProtectAndProcess, to: ProcessOnly }".into(),
            link: "ef".repeat(32),
            encoded: "02".into(),
        },
    ]
}

fn preview() -> ImpactPreview {
    ImpactPreview {
        keys: vec![KEY_B.into()],
        data_units_losing_access: vec![UNIT_2.into(), UNIT_3.into()],
        shared_with_unselected: vec![UNIT_3.into()],
        digest: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
    }
}

/// Setup: two sites. Expectation: the golden table and JSON.
#[test]
fn u1_site_list_renders_as_golden() {
    let rows = sites();
    check("sites", &render::sites(&rows), &render::json(&rows));
}

/// Setup: KMAs in each state. Expectation: the golden table and JSON.
#[test]
fn u1_kma_list_renders_as_golden() {
    let rows = kmas();
    check("kmas", &render::kmas(&rows), &render::json(&rows));
}

/// Setup: a leader, a lagging follower and an unreachable KMA. Expectation: the golden health
/// table (C8, U3) and JSON.
#[test]
fn u3_cluster_status_renders_as_golden() {
    let status = status();
    check("status", &render::status(&status), &render::json(&status));
}

/// Setup: users with several, one and no roles. Expectation: the golden table and JSON.
#[test]
fn u1_user_list_renders_as_golden() {
    let rows = users();
    check("users", &render::users(&rows), &render::json(&rows));
}

/// Setup: an enrolled agent with groups and a fresh one without. Expectation: golden output.
#[test]
fn u2_agent_list_renders_as_golden() {
    let rows = agents();
    check("agents", &render::agents(&rows), &render::json(&rows));
}

/// Setup: one agent. Expectation: the golden detail view and JSON.
#[test]
fn u2_agent_show_renders_as_golden() {
    let agent = agents().remove(0);
    check("agent_show", &render::agent(&agent), &render::json(&agent));
}

/// Setup: an active pool key and a deactivated 1.x key shared by two data units. Expectation:
/// the golden table and JSON.
#[test]
fn u2_key_list_renders_as_golden() {
    let rows = keys();
    check("keys", &render::keys(&rows), &render::json(&rows));
}

/// Setup: the shared 1.x key. Expectation: every date of its lifecycle in the detail view.
#[test]
fn o4_key_show_renders_as_golden() {
    let key = keys().remove(1);
    check("key_show", &render::key(&key), &render::json(&key));
}

/// Setup: a data unit with a tag and one without. Expectation: the golden table and JSON.
#[test]
fn u2_data_unit_list_renders_as_golden() {
    let rows = data_units();
    check("data_units", &render::data_units(&rows), &render::json(&rows));
}

/// Setup: a data unit with two keys, one no longer in use. Expectation: golden detail view.
#[test]
fn o6_data_unit_show_renders_as_golden() {
    let unit = data_units().remove(1);
    check("data_unit_show", &render::data_unit(&unit), &render::json(&unit));
}

/// Setup: a login, a rejected command and a key state change. Expectation: golden output.
#[test]
fn s5_audit_list_renders_as_golden() {
    let rows = audit();
    check("audit", &render::audit(&rows), &render::json(&rows));
}

/// Setup: audit records. Expectation: `audit export` prints one JSON object per line.
#[test]
fn s5_audit_export_is_json_lines() {
    let rows = audit();
    let lines: String = rows.iter().map(render::json_line).collect();
    assert_eq!(lines.lines().count(), rows.len());
    for (line, row) in lines.lines().zip(&rows) {
        let parsed: AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!(&parsed, row);
    }
    check("audit_export", "", &lines);
}

/// Setup: a destroy whose key is shared with a data unit outside the selection. Expectation:
/// the preview lists the keys and the data units losing access, and flags the ripple effect.
#[test]
fn o9_impact_preview_flags_the_ripple_effect() {
    let preview = preview();
    let table =
        render::impact_preview(&preview, "destroy the deactivated only keys of 1 data unit(s)");
    assert!(table.contains("WARNING: ripple effect"));
    assert!(table.contains(&format!("{UNIT_3}  [NOT SELECTED]")));
    check("impact_preview", &table, &render::json(&PreviewOrDone::Preview(preview)));
}

/// Setup: a preview whose keys no unselected data unit shares. Expectation: "none" is said.
#[test]
fn o8_impact_preview_without_ripple_says_so() {
    let preview = ImpactPreview {
        keys: vec![KEY_A.into()],
        data_units_losing_access: vec![UNIT_1.into()],
        shared_with_unselected: vec![],
        digest: "0123456789abcdef".into(),
    };
    let table =
        render::impact_preview(&preview, "move the keys of 1 data unit(s) to key group archive");
    check("impact_preview_no_ripple", &table, &render::json(&PreviewOrDone::Preview(preview)));
}

/// Setup: settings, quorum, policies, groups and backups. Expectation: golden output of each.
#[test]
fn u1_other_views_render_as_golden() {
    let settings = Settings {
        security: SecuritySettings {
            passphrase_len_min: 12,
            login_failures_max: 5,
            login_throttle_ms: 5 * 60_000,
            quorum_operation_ttl_ms: DAY_MS,
        },
        key_pool: KeyPoolLimits { low_water: 1_000, high_water: 5_000 },
        key_pool_ready: 4_321,
        key_pool_generated: 12,
    };
    check("settings", &render::settings(&settings), &render::json(&settings));
    let quorum = QuorumView {
        members: vec!["m1".into(), "m2".into(), "m3".into()],
        threshold: 2,
        pending: vec![QuorumOperationView {
            id: 7,
            operation: "unlock-kma kma2".into(),
            started_by: "alice".into(),
            started_at_ms: T0,
            expires_at_ms: T0 + DAY_MS,
            approvals: vec!["m1".into()],
            threshold: 2,
        }],
    };
    check("quorum", &render::quorum(&quorum), &render::json(&quorum));
    let policies = vec![KeyPolicy {
        name: "monthly".into(),
        encryption_period_ms: 30 * DAY_MS,
        cryptoperiod_ms: 365 * DAY_MS,
        allow_export: true,
        allow_import: false,
    }];
    check("policies", &render::policies(&policies), &render::json(&policies));
    let groups = vec![KeyGroup {
        name: "backups".into(),
        policy: "monthly".into(),
        keys: 1_234,
        created_at_ms: T0,
    }];
    check("groups", &render::groups(&groups), &render::json(&groups));
    let backups = vec![Backup {
        id: 3,
        kind: "database".into(),
        kma: "kma1".into(),
        file_name: "kma1-000003.backup".into(),
        covers_index: 1_000,
        taken_at_ms: T0,
        destroyed: false,
        taken_by: "bob".into(),
        size_bytes: 52_431,
        file_sha256: "ab".repeat(32),
        drill: "passed".into(),
        drill_detail: "restored in a separate process".into(),
    }];
    check("backups", &render::backups(&backups), &render::json(&backups));
}

/// Setup: a broken chain and a comparison of three KMAs. Expectation: golden verify report.
#[test]
fn s5_audit_verify_report_renders_as_golden() {
    let head = |name: &str, chain: &str, verdict: &str, link: Option<String>| KmaHead {
        name: name.into(),
        address: Some(format!("{name}:8443")),
        index: link.as_ref().map(|_| 1_042),
        head_seq: link.as_ref().map(|_| 43),
        head_link: link.clone(),
        chain: chain.into(),
        link_at_common: link,
        verdict: verdict.into(),
    };
    let report = VerifyReport {
        address: "kma1:8443".into(),
        ok: false,
        anchor_seq: 0,
        checked: 41,
        head_seq: 43,
        head_link: "ef".repeat(32),
        index: 1_042,
        matches_replicated_head: false,
        broken: Some(Broken {
            seq: 42,
            kind: BreakKind::Edited,
            detail: "audit event 42 does not match its link: it was changed after it was written"
                .into(),
        }),
        kmas: Some(vec![
            head("kma1", "ok (43 events)", "agrees", Some("ef".repeat(32))),
            head("kma2", "broken at seq 42: edited", "disagrees", Some("00".repeat(32))),
            head("kma3", "unreachable: no KMA answered", "not comparable", None),
        ]),
    };
    check("audit_verify", &audit_verify::render_report(&report), &render::json(&report));
}
