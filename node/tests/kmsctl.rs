//! `kmsctl` against a real cluster (issue #6): three `kma` processes on loopback, the `kmsctl`
//! binary run as an operator would run it (a saved profile, passphrases on standard input, no
//! terminal), every operation of the management API, its exit codes, golden tables, impact
//! previews (SPEC O8, O9), paging over a state larger than one page's scan (SPEC U2) and the
//! audit log (SPEC S5).
//!
//! `kmsctl` is admin-api's binary: `cargo test --workspace` builds it alongside `kma`.

mod support;

#[path = "more/backups.rs"]
mod backups;
#[path = "more/imports.rs"]
mod imports;
#[path = "more/transfer.rs"]
mod transfer;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::{agents, done_if, wait_until, Cluster};

/// Where `cargo test` put `kmsctl`: beside `kma`.
fn kmsctl_binary() -> PathBuf {
    let binary = Path::new(support::KMA).with_file_name("kmsctl");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p admin-api` (cargo test \
         --workspace builds it)",
        binary.display()
    );
    binary
}

/// One operator's `kmsctl`: its own KMSCTL_HOME, no terminal.
struct Ctl {
    home: tempfile::TempDir,
}

impl Ctl {
    fn new() -> Ctl {
        Ctl { home: tempfile::tempdir().expect("kmsctl home") }
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(kmsctl_binary())
            .args(args)
            .env("KMSCTL_HOME", self.home.path())
            .env_remove("KMSCTL_PROFILE")
            .env_remove("KMSCTL_PASSPHRASE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kmsctl runs");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            // kmsctl may refuse its arguments and exit before it reads its input.
            if let Err(error) = input.write_all(text.as_bytes()).await {
                assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {error}");
            }
        }
        drop(input);
        let waited = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output());
        waited.await.expect("kmsctl finished within 60 s").expect("kmsctl output")
    }

    /// Runs and expects exit code 0; returns stdout.
    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.run(args, stdin).await;
        assert!(
            output.status.success(),
            "kmsctl {args:?} failed ({:?}): {}{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all, None).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("kmsctl {args:?}: {e}: {text}"))
    }

    /// Runs and expects exit code `code`; returns stderr.
    async fn fails(&self, args: &[&str], stdin: Option<&str>, code: i32) -> String {
        let output = self.run(args, stdin).await;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(code), "kmsctl {args:?}: {stderr}");
        stderr
    }

    async fn login(&self, cluster: &Cluster, profile: &str, user: &str, passphrase: &str) {
        let ca = cluster.nodes[0].data_dir.join("tls").join(node::pki::CA_FILE);
        let ca = ca.to_str().expect("utf-8 path");
        let mut args = vec!["--profile", profile, "login", "--ca", ca, "--user", user];
        for node in &cluster.nodes {
            args.extend(["--address", node.address.as_str()]);
        }
        args.push("--passphrase-stdin");
        self.ok(&args, Some(&format!("{passphrase}\n"))).await;
    }
}

const OFFICER: &str = "officer-passphrase-1";

fn count(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

fn names(value: &Value, field: &str) -> Vec<String> {
    let rows = value.as_array().cloned().unwrap_or_default();
    rows.iter().filter_map(|row| row[field].as_str().map(str::to_string)).collect()
}

/// Sites, KMAs, settings, users, the quorum, policies, groups and agents: each operation
/// through `kmsctl`, read back through `kmsctl --json` from the other KMAs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u1_every_cluster_security_and_catalog_operation_through_kmsctl() {
    let cluster = Cluster::start(3, support::no_change).await;
    let ctl = Ctl::new();
    ctl.login(&cluster, "default", "admin", OFFICER).await;

    let status = ctl.json(&["status"]).await;
    assert_eq!(count(&status["kmas"]), 3, "{status}");
    assert!(status["leader"].is_string(), "{status}");
    let reachable = status["kmas"].as_array().expect("kmas").iter().all(|k| k["reachable"] == true);
    assert!(reachable, "{status}");

    // Sites and KMA entries (Security Officer).
    ctl.ok(&["site", "create", "north"], None).await;
    assert!(names(&ctl.json(&["site", "list"]).await, "name").contains(&"north".into()));
    ctl.ok(
        &["kma", "create", "kma9", "--site", "north", "--passphrase-stdin"],
        Some("kma-nine-passphrase\n"),
    )
    .await;
    let kmas = ctl.json(&["kma", "list"]).await;
    assert_eq!(count(&kmas), 4, "{kmas}");
    ctl.ok(&["kma", "delete", "kma9"], None).await;
    ctl.ok(&["site", "delete", "north"], None).await;
    assert!(!names(&ctl.json(&["site", "list"]).await, "name").contains(&"north".into()));

    // Settings.
    ctl.ok(&["settings", "security", "--passphrase-len-min", "10"], None).await;
    ctl.ok(&["settings", "key-pool", "--low-water", "10", "--high-water", "20"], None).await;
    let settings = ctl.json(&["settings", "show"]).await;
    assert_eq!(settings["security"]["passphrase_len_min"], 10, "{settings}");
    assert_eq!(settings["key_pool"]["high_water"], 20, "{settings}");
    // Too short for the new minimum: refused by the cluster, exit 3, nothing created.
    ctl.fails(
        &["user", "create", "bob", "--role", "operator", "--passphrase-stdin"],
        Some("short\nshort\n"),
        3,
    )
    .await;

    users_and_quorum(&cluster, &ctl).await;
}

/// Users, roles and passphrases, and a quorum operation started and cancelled.
async fn users_and_quorum(cluster: &Cluster, ctl: &Ctl) {
    // Users and roles.
    ctl.ok(
        &["user", "create", "carol", "--role", "auditor", "--passphrase-stdin"],
        Some("carol-passphrase\n"),
    )
    .await;
    ctl.ok(&["user", "roles", "carol", "--role", "auditor", "--role", "operator"], None).await;
    ctl.ok(&["user", "disable", "carol"], None).await;
    let users = ctl.json(&["user", "list"]).await;
    let carol = users.as_array().expect("users").iter().find(|u| u["id"] == "carol").cloned();
    let carol = carol.expect("carol listed");
    assert_eq!(carol["enabled"], false, "{carol}");
    assert_eq!(carol["roles"].as_array().map(Vec::len), Some(2), "{carol}");
    ctl.ok(&["user", "enable", "carol"], None).await;
    ctl.ok(&["user", "passphrase", "carol", "--passphrase-stdin"], Some("carol-passphrase-2\n"))
        .await;
    // The new passphrase logs in; the old one no longer does.
    let carol_ctl = Ctl::new();
    carol_ctl.login(cluster, "default", "carol", "carol-passphrase-2").await;
    assert!(carol_ctl.json(&["user", "list"]).await.is_array());
    // An Auditor/Operator may not create sites: refused, exit 3.
    carol_ctl.fails(&["site", "create", "south"], None, 3).await;
    ctl.ok(&["user", "delete", "carol"], None).await;

    // The quorum: start an operation, see it pending, cancel it.
    let quorum = ctl.json(&["quorum", "show"]).await;
    assert_eq!(quorum["threshold"], 2, "{quorum}");
    assert_eq!(count(&quorum["members"]), 3, "{quorum}");
    ctl.ok(&["quorum", "start", "unlock-kma", "kma2"], None).await;
    let pending = ctl.json(&["quorum", "show"]).await["pending"].clone();
    assert_eq!(count(&pending), 1, "{pending}");
    let id = pending[0]["id"].as_u64().expect("operation id").to_string();
    ctl.ok(&["quorum", "cancel", &id], None).await;
    assert_eq!(count(&ctl.json(&["quorum", "show"]).await["pending"]), 0);
    change_the_quorum(ctl).await;

    catalog_and_agents(ctl).await;
    backups_and_openapi(ctl).await;
}

/// A new quorum (q1, q2, q4; two of three): started with the new members' IDs, then each new
/// member enters their own passphrase in their own kmsctl call (the last one starts the
/// operation), approved by two members of the current one (SPEC S4; issue #16 point 9).
async fn change_the_quorum(ctl: &Ctl) {
    let new_members = ["--member", "q1", "--member", "q2", "--member", "q4"];
    let mut args = vec!["--json", "quorum", "change", "--threshold", "2"];
    args.extend(new_members);
    let started: Value = serde_json::from_str(&ctl.ok(&args, None).await).expect("progress");
    assert_eq!(started["waiting_for"], serde_json::json!(["q1", "q2", "q4"]), "{started}");
    let change = started["change"].as_u64().expect("change id").to_string();
    let mut progress = Value::Null;
    for (member, passphrase) in
        [("q1", "member-one-again"), ("q2", "member-two-again"), ("q4", "member-four-new")]
    {
        let args = ["--json", "quorum", "member-passphrase", "--change", &change, "--member"];
        let mut args = args.to_vec();
        args.extend([member, "--passphrase-stdin"]);
        let text = ctl.ok(&args, Some(&format!("{passphrase}\n"))).await;
        progress = serde_json::from_str(&text).expect("progress");
    }
    let id = progress["operation"].as_u64().expect("operation id").to_string();
    let index = progress["index"].as_u64().expect("index").to_string();
    let approve = |member: &'static str| {
        ["quorum", "approve", "--member", member, "--min-index", "", "--passphrase-stdin", ""]
    };
    for (member, passphrase) in [("q1", "member-one-passphrase"), ("q2", "member-two-passphrase")] {
        let mut args = approve(member);
        args[5] = &index;
        args[7] = &id;
        ctl.ok(&args, Some(&format!("{passphrase}\n"))).await;
    }
    let quorum = ctl.json(&["quorum", "show"]).await;
    let members: Vec<&str> =
        quorum["members"].as_array().expect("members").iter().filter_map(Value::as_str).collect();
    assert_eq!(members, ["q1", "q2", "q4"], "{quorum}");
    assert_eq!(count(&quorum["pending"]), 0, "{quorum}");
}

/// Key policies, key groups and agents, each operation through kmsctl.
async fn catalog_and_agents(ctl: &Ctl) {
    // Policies and groups need the Compliance Officer; agents the Operator.
    let roles =
        ["--role", "security-officer", "--role", "compliance-officer", "--role", "operator"];
    let mut args = vec!["user", "roles", "admin"];
    args.extend(roles);
    ctl.ok(&args, None).await;
    ctl.ok(
        &["policy", "create", "tapes", "--encryption-period", "30d", "--cryptoperiod", "1y"],
        None,
    )
    .await;
    ctl.ok(&["policy", "flags", "tapes", "--allow-export", "true"], None).await;
    let policies = ctl.json(&["policy", "list"]).await;
    assert_eq!(policies[0]["allow_export"], true, "{policies}");
    assert_eq!(policies[0]["encryption_period_ms"], 30 * 86_400_000u64, "{policies}");
    ctl.ok(&["group", "create", "tapes", "--policy", "tapes"], None).await;
    ctl.ok(&["group", "create", "spare", "--policy", "tapes"], None).await;
    ctl.ok(&["group", "delete", "spare"], None).await;
    assert_eq!(names(&ctl.json(&["group", "list"]).await, "name"), vec!["tapes".to_string()]);

    ctl.ok(
        &["agent", "create", "drive1", "--site", "east", "--passphrase-stdin"],
        Some("drive-one-passphrase\n"),
    )
    .await;
    ctl.ok(&["agent", "add-group", "drive1", "tapes"], None).await;
    ctl.ok(&["agent", "default-group", "drive1", "tapes"], None).await;
    ctl.ok(&["agent", "site", "drive1", "west"], None).await;
    ctl.ok(&["agent", "disable", "drive1"], None).await;
    let drive = ctl.json(&["agent", "show", "drive1"]).await;
    assert_eq!(drive["site"], "west", "{drive}");
    assert_eq!(drive["enabled"], false, "{drive}");
    assert_eq!(drive["default_key_group"], "tapes", "{drive}");
    ctl.ok(&["agent", "enable", "drive1"], None).await;
    ctl.ok(
        &["agent", "passphrase", "drive1", "--passphrase-stdin"],
        Some("drive-one-passphrase-2\n"),
    )
    .await;
    let listed = ctl.json(&["agent", "list", "--site", "west"]).await;
    assert_eq!(names(&listed, "id"), vec!["drive1".to_string()], "{listed}");
    assert_eq!(count(&ctl.json(&["agent", "list", "--site", "east"]).await), 0);
    ctl.ok(&["agent", "remove-group", "drive1", "tapes"], None).await;
    ctl.ok(&["agent", "delete", "drive1"], None).await;
    ctl.ok(&["group", "delete", "tapes"], None).await;
    ctl.ok(&["policy", "delete", "tapes"], None).await;
}

/// Backups (none yet) and the served OpenAPI document.
async fn backups_and_openapi(ctl: &Ctl) {
    // Backups: none taken yet; an unknown backup is refused.
    assert_eq!(count(&ctl.json(&["backup", "list"]).await), 0);
    ctl.fails(&["backup", "mark-destroyed", "7"], None, 3).await;

    // The served OpenAPI document is the checked-in one.
    let served = ctl.ok(&["openapi"], None).await;
    let checked_in = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../admin-api/openapi.json"),
    )
    .expect("admin-api/openapi.json");
    let served: Value = serde_json::from_str(&served).expect("served document is JSON");
    let checked_in: Value = serde_json::from_str(&checked_in).expect("checked-in JSON");
    assert_eq!(
        served, checked_in,
        "the served OpenAPI document differs from admin-api/openapi.json"
    );
}

/// Replaces what differs from run to run (times, IDs, indexes) so tables compare with golden
/// files.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split(' ')
            .map(|word| {
                let digits = word.chars().filter(char::is_ascii_digit).count();
                let is_date = word.len() == 10 && word.as_bytes().get(4) == Some(&b'-');
                let is_time = word.len() == 8 && word.as_bytes().get(2) == Some(&b':');
                if is_date {
                    "YYYY-MM-DD".into()
                } else if is_time {
                    "HH:MM:SS".into()
                } else if word.len() >= 16 && word.chars().all(|c| c.is_ascii_hexdigit()) {
                    "<hex>".into()
                } else if digits > 0 && word.chars().all(|c| c.is_ascii_digit()) && word.len() > 3 {
                    "<n>".into()
                } else {
                    word.into()
                }
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("golden dir");
        std::fs::write(&path, actual).expect("golden written");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}--- actual\n{actual}",
        path.display()
    );
}

/// Keys and data units: tables and JSON against golden files, an impact preview that must be
/// confirmed before a destroy or a key group change, and lists paged over more pool keys than
/// one page may examine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o9_destroy_and_group_change_need_a_confirmed_preview_and_lists_page_on_the_server() {
    let cluster = Cluster::start(3, support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    let ctl = Ctl::new();
    ctl.login(&cluster, "default", "admin", OFFICER).await;
    ctl.ok(&["group", "create", "vault", "--policy", "tapes"], None).await;

    let (kma1, kma2) = (&cluster.nodes[0].service, &cluster.nodes[1].service);
    let drive = agents::pinned_drive(&cluster, kma1, kma2).await;
    let (unit_a, value_a) = agents::write_key(&drive, "VOL001").await;
    let (unit_b, _) = agents::write_key(&drive, "VOL002").await;
    let (unit_a, unit_b) = (unit_a.to_string(), unit_b.to_string());

    // Golden tables (times, IDs and counts normalised) and the JSON of one data unit.
    let units = ctl.ok(&["data-unit", "list", "--tag", "VOL001"], None).await;
    golden("kmsctl_data_unit_list.txt", &normalise(&units));
    golden("kmsctl_group_list.txt", &normalise(&ctl.ok(&["group", "list"], None).await));
    golden("kmsctl_policy_list.txt", &normalise(&ctl.ok(&["policy", "list"], None).await));
    let shown = ctl.json(&["data-unit", "show", &unit_a]).await;
    assert_eq!(shown["external_tag"], "VOL001", "{shown}");
    assert_eq!(shown["state"], "normal", "{shown}");
    let key_a = shown["keys"][0]["key_id"].as_str().expect("key id").to_string();
    let keys_of_a = ctl.json(&["key", "list", "--data-unit", &unit_a]).await;
    assert_eq!(names(&keys_of_a, "id"), vec![key_a.clone()], "{keys_of_a}");
    let key = ctl.json(&["key", "show", &key_a]).await;
    assert_eq!(key["state"], "protect-and-process", "{key}");
    assert_eq!(key["group"], "tapes", "{key}");
    // Key material never appears in what kmsctl prints.
    let value_hex = hex::encode(value_a);
    assert!(!format!("{key}{shown}{units}").contains(&value_hex));

    // Change group: without a confirmation kmsctl prints the preview and exits 5; nothing moved.
    let preview =
        ctl.fails(&["data-unit", "change-group", &unit_b, "--group", "vault"], None, 5).await;
    let stdout_preview =
        ctl.run(&["--json", "data-unit", "change-group", &unit_b, "--group", "vault"], None).await;
    let preview_json: Value = serde_json::from_slice(&stdout_preview.stdout).unwrap_or(Value::Null);
    let digest = preview_json["digest"].as_str().map(str::to_string).unwrap_or_else(|| {
        panic!("the --json preview names its digest: {preview_json} / {preview}")
    });
    assert_eq!(count(&preview_json["data_units_losing_access"]), 1, "{preview_json}");
    let unmoved = ctl.json(&["key", "list", "--data-unit", &unit_b]).await;
    assert_eq!(unmoved[0]["group"], "tapes", "{unmoved}");
    // A wrong digest is refused; the right one carries it out.
    ctl.fails(
        &[
            "data-unit",
            "change-group",
            &unit_b,
            "--group",
            "vault",
            "--confirm",
            "0123456789abcdef",
        ],
        None,
        5,
    )
    .await;
    ctl.ok(&["data-unit", "change-group", &unit_b, "--group", "vault", "--confirm", &digest], None)
        .await;
    let moved = ctl.json(&["key", "list", "--data-unit", &unit_b]).await;
    assert_eq!(moved[0]["group"], "vault", "{moved}");

    destroy_after_confirmed_preview(&ctl, &key_a, &unit_a).await;
}

/// A destroy of a compromised key: previewed, refused unconfirmed, carried out confirmed.
async fn destroy_after_confirmed_preview(ctl: &Ctl, key_a: &str, unit_a: &str) {
    // Destroy needs a compromised (or deactivated) key: compromise A's, preview, confirm.
    ctl.ok(&["key", "compromise", key_a], None).await;
    ctl.fails(&["data-unit", "destroy-keys", unit_a, "--option", "compromised-only"], None, 5)
        .await;
    let still = ctl.json(&["key", "show", key_a]).await;
    assert_eq!(still["state"], "compromised", "{still}");
    let output = ctl
        .run(&["--json", "data-unit", "destroy-keys", unit_a, "--option", "compromised-only"], None)
        .await;
    let preview: Value = serde_json::from_slice(&output.stdout).expect("preview JSON");
    assert_eq!(preview["keys"][0], key_a, "{preview}");
    let digest = preview["digest"].as_str().expect("digest").to_string();
    ctl.ok(
        &[
            "data-unit",
            "destroy-keys",
            unit_a,
            "--option",
            "compromised-only",
            "--confirm",
            &digest,
        ],
        None,
    )
    .await;
    let destroyed = ctl.json(&["key", "show", key_a]).await;
    assert!(destroyed["state"].as_str().is_some_and(|s| s.contains("destroyed")), "{destroyed}");
    assert_eq!(ctl.json(&["data-unit", "show", unit_a]).await["state"], "shredded");

    paging_over_more_than_one_scan(ctl).await;
}

/// Lists over 25,000 pool keys, more than one page may examine.
async fn paging_over_more_than_one_scan(ctl: &Ctl) {
    // Paging over a state larger than one page's scan: 25,000 pool keys.
    ctl.ok(&["settings", "key-pool", "--low-water", "24000", "--high-water", "25000"], None).await;
    wait_until(Duration::from_secs(120), "25,000 ready pool keys", async || {
        let settings = ctl.json(&["settings", "show"]).await;
        done_if(settings["key_pool_ready"].as_u64().unwrap_or(0) >= 25_000, settings)
    })
    .await;
    let ready = ctl.json(&["key", "list", "--state", "ready", "--all"]).await;
    let ids = names(&ready, "id");
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert!(
        ids.len() >= 25_000 && unique.len() == ids.len(),
        "{} ready, {} unique",
        ids.len(),
        unique.len()
    );
    // A filter that matches almost nothing: pages bounded by their scan, the cursor followed to
    // the end, exactly the one compromised-and-destroyed key found.
    let rare =
        ctl.json(&["key", "list", "--state", "incompletely-destroyed-compromised", "--all"]).await;
    let rare_or_complete = count(&rare)
        + count(
            &ctl.json(&["key", "list", "--state", "completely-destroyed-compromised", "--all"])
                .await,
        );
    assert_eq!(rare_or_complete, 1);
    let first_page = ctl.json(&["key", "list", "--limit", "100"]).await;
    assert_eq!(count(&first_page), 100);
}

/// The audit log: an Auditor lists, filters, exports and verifies it; a stored event edited on
/// one KMA's disk is detected there; no key material is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_the_audit_log_is_filtered_exported_and_verified_and_an_edit_is_detected() {
    // Small snapshots: the edited row must be one a snapshot covers, since a restart replays
    // (and so rewrites, identically) every entry after the latest snapshot.
    let mut cluster = Cluster::start(3, support::small_snapshots).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    let ctl = Ctl::new();
    ctl.login(&cluster, "default", "admin", OFFICER).await;
    ctl.ok(
        &["user", "create", "audrey", "--role", "auditor", "--passphrase-stdin"],
        Some("audrey-passphrase\n"),
    )
    .await;
    // A failed login is audited too.
    let intruder = Ctl::new();
    let ca = ca_path(&cluster);
    let wrong =
        ["login", "--ca", &ca, "--address", &address, "--user", "audrey", "--passphrase-stdin"];
    let refused = intruder.run(&wrong, Some("wrong-passphrase\n")).await;
    assert!(!refused.status.success(), "a wrong passphrase does not log in");
    let auditor = Ctl::new();
    auditor.login(&cluster, "default", "audrey", "audrey-passphrase").await;
    let kma1 = &cluster.nodes[0].service;
    let drive = agents::pinned_drive(&cluster, kma1, kma1).await;
    let (_, value) = agents::write_key(&drive, "VOL100").await;

    // The Security Officer alone may not read the audit log; the Auditor may.
    ctl.fails(&["audit", "list"], None, 3).await;
    let logins = auditor.json(&["audit", "list", "--kind", "login", "--all"]).await;
    assert!(count(&logins) >= 2, "{logins}");
    let failures =
        auditor.json(&["audit", "list", "--kind", "authentication-failure", "--all"]).await;
    assert!(
        failures.as_array().expect("rows").iter().any(|r| r["actor"] == "audrey"),
        "{failures}"
    );
    let by_admin = auditor.json(&["audit", "list", "--actor", "user:admin", "--all"]).await;
    assert!(count(&by_admin) >= 6, "{by_admin}");
    assert!(by_admin.as_array().expect("rows").iter().all(|r| r["actor"] == "user:admin"));

    // Export: JSON lines, one record per line, chain positions in order, no key material.
    let export = auditor.ok(&["audit", "export"], None).await;
    let records: Vec<Value> = export
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    assert!(records.len() > 20, "{} records", records.len());
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "gaps in {seqs:?}");
    assert!(!export.contains(&hex::encode(value)), "key material in the audit export");

    // Verify: the chain recomputed by kmsctl from every record matches the replicated head,
    // on every KMA.
    auditor.ok(&["audit", "verify"], None).await;
    auditor.ok(&["audit", "verify", "--addresses-all"], None).await;

    edited_row_is_detected(&mut cluster, &auditor).await;
}

/// The tamper half of the audit test: an edit on one KMA's disk is found there and by the
/// comparison of every KMA's head.
async fn edited_row_is_detected(cluster: &mut Cluster, auditor: &Ctl) {
    let address = cluster.nodes[0].address.clone();
    // Enough entries for kma3 to snapshot past the early ones.
    for n in 0..150 {
        let name = format!("filler-{n}");
        let create = statemachine::Command::CreateSite { name: name.clone() };
        agents::ok(&cluster.admin, &address, create, None).await;
        agents::ok(&cluster.admin, &address, statemachine::Command::DeleteSite { name }, None)
            .await;
    }
    // Edit one stored event on kma3's disk: kmsctl talking to kma3 detects it.
    cluster.stop(2).await;
    let edited_seq = edit_one_audit_row(&cluster.nodes[2].data_dir);
    cluster.restart(2).await;
    cluster.wait_ready(2).await;
    let only_kma3 = Ctl::new();
    let ca = ca_path(cluster);
    only_kma3
        .ok(
            &[
                "login",
                "--ca",
                &ca,
                "--address",
                &cluster.nodes[2].address,
                "--user",
                "audrey",
                "--passphrase-stdin",
            ],
            Some("audrey-passphrase\n"),
        )
        .await;
    let broken = only_kma3.fails(&["audit", "verify"], None, 6).await;
    assert!(broken.contains(&edited_seq.to_string()), "names the broken position: {broken}");
    // The other KMAs still verify, and comparing them shows kma3 apart.
    auditor.fails(&["audit", "verify", "--addresses-all"], None, 6).await;
}

/// Changes the time of one stored audit event of a user's command on a stopped KMA's disk, with
/// plain RocksDB (the row keeps its link), and returns its chain position.
fn edit_one_audit_row(data_dir: &Path) -> u64 {
    let path = data_dir.join("raft").join("rocksdb");
    let families = ["log", "log_meta", "sm_meta", "audit"];
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), path, families).expect("raw open");
    let cf = db.cf_handle("audit").expect("audit column family");
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, value) = item.expect("raw read");
        assert_eq!(value[0], raft_storage::data_dir::FORMAT_VERSION);
        let mut row: statemachine::ChainedAuditEvent =
            postcard::from_bytes(&value[1..]).expect("an audit row decodes");
        let by_user = matches!(
            &row.event.what,
            statemachine::AuditWhat::Command { actor: statemachine::Actor::User(_), .. }
        );
        if by_user && row.seq > 3 {
            row.event.at_ms += 1;
            let mut edited = vec![raft_storage::data_dir::FORMAT_VERSION];
            edited.extend(postcard::to_allocvec(&row).expect("encodes"));
            db.put_cf(cf, &key, edited).expect("raw put");
            return row.seq;
        }
    }
    panic!("no stored audit row of a user's command to edit");
}

fn ca_path(cluster: &Cluster) -> String {
    let path = cluster.nodes[0].data_dir.join("tls").join(node::pki::CA_FILE);
    path.to_str().expect("utf-8 path").to_string()
}

/// Exit codes scripts rely on: not logged in (7), unknown object (3), usage (2), and no KMA
/// reachable (4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u1_exit_codes_scripts_rely_on() {
    let mut cluster = Cluster::start(1, support::no_change).await;
    let ctl = Ctl::new();
    ctl.fails(&["site", "list"], None, 7).await;
    ctl.login(&cluster, "default", "admin", OFFICER).await;
    let shown = ctl.ok(&["profile", "show"], None).await;
    assert!(shown.contains("admin"), "{shown}");
    golden("kmsctl_site_list.txt", &normalise(&ctl.ok(&["site", "list"], None).await));
    golden("kmsctl_site_list.json", &normalise(&ctl.ok(&["--json", "site", "list"], None).await));
    ctl.fails(&["key", "show", &"ab".repeat(30)], None, 3).await;
    let not_hex = ctl.run(&["key", "show", "not-hex"], None).await;
    assert!(matches!(not_hex.status.code(), Some(2 | 3)), "bad input is refused as such");
    ctl.fails(&["site", "frobnicate"], None, 2).await;
    let completion = ctl.ok(&["completion", "bash"], None).await;
    assert!(completion.contains("kmsctl"), "a bash completion script");
    cluster.stop(0).await;
    ctl.fails(&["site", "list"], None, 4).await;
    ctl.ok(&["logout"], None).await;
    ctl.fails(&["site", "list"], None, 7).await;
}

/// The parts of a PEM private key an attacker would look for on a disk: a line of its base64
/// body (which holds the secret scalar), the DER whole, and the 32-byte secret scalar raw and
/// in hex (PKCS#8 of a P-256 key holds it after `02 01 01 04 20`).
fn ca_key_needles(key_pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let body: String = key_pem.lines().filter(|line| !line.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(&body).expect("PEM body");
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("scalar");
    let scalar = der[at + 5..at + 37].to_vec();
    let second_line = key_pem.lines().nth(2).expect("a second body line").as_bytes().to_vec();
    vec![second_line, der, hex::encode(&scalar).into_bytes(), scalar]
}

/// Setup: two KMAs that may not unlock themselves (autonomous unlock off, the quickstart's and
/// the quorum's choice), an Auditor. Action: every file of both KMAs is searched for the CA key
/// `kma init` wrote, once kma1 has wrapped it into the state and kma2 signs with it; both KMAs
/// are stopped and started again (a cold restart); the officer tries to log in; quorum member q1
/// gives a wrong passphrase to kma1, then q1 and q2 each run `kmsctl quorum approve --member M
/// --unlock HOST:PORT` at kma1, and q2 and q3 at kma2. Expect: no file holds the CA key in any
/// form (the search finds it in a planted file, so it can fail); after the restart the login is
/// refused because the KMA is locked and signs nothing; the wrong passphrase is refused and
/// counts nothing; q1 leaves kma1 one member short, q2 unlocks it; kma2 likewise; then logins
/// work and the audit log names the members who unlocked each KMA. (SPEC S3, S4, C6; issue #16
/// points 1 and 5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_s4_no_disk_holds_the_ca_key_and_members_alone_unlock_a_cold_cluster() {
    let mut cluster = Cluster::start_unlocking(2, support::no_change, false).await;
    let address = cluster.nodes[0].address.clone();
    let auditor = statemachine::Command::CreateUser {
        id: "audrey".into(),
        roles: statemachine::RoleSet::of(statemachine::Role::Auditor),
        passphrase_verifier: Vec::new(),
    };
    agents::ok(&cluster.admin, &address, auditor, Some("audrey-passphrase")).await;
    let ca_pem = std::fs::read_to_string(ca_path(&cluster)).expect("CA");
    let key_file = cluster.nodes[0].data_dir.join("tls/ca-key.pem");
    wait_until(Duration::from_secs(60), "kma1 to erase its CA key file", async || {
        done_if(!key_file.exists(), "still there")
    })
    .await;
    let kma2 = cluster.nodes[1].address.clone();
    wait_until(Duration::from_secs(60), "kma2 to sign a login", async || {
        let login = node::client::KmaClient::login(&kma2, &ca_pem, "audrey", "audrey-passphrase");
        login.await.map(|_| ()).map_err(|e| format!("{e:#}"))
    })
    .await;
    for index in 0..2 {
        cluster.stop(index).await;
    }
    no_file_holds_the_ca_key(&cluster);

    for index in 0..2 {
        cluster.restart(index).await;
    }
    let refused = wait_until(Duration::from_secs(60), "a login refused as locked", async || {
        let login =
            node::client::KmaClient::login(&address, &ca_pem, "audrey", "audrey-passphrase");
        match login.await {
            Ok(_) => Err("a locked KMA signed a certificate".to_string()),
            Err(error) if format!("{error:#}").contains("locked") => Ok(format!("{error:#}")),
            Err(error) => Err(format!("{error:#}")),
        }
    })
    .await;
    assert!(refused.contains("kmsctl quorum approve --member M --unlock"), "{refused}");

    members_unlock(&cluster, &[(&address, ["q1", "q2"]), (&kma2, ["q2", "q3"])]).await;
    for at in [&address, &kma2] {
        wait_until(Duration::from_secs(60), "logins again", async || {
            let login = node::client::KmaClient::login(at, &ca_pem, "audrey", "audrey-passphrase");
            login.await.map(|_| ()).map_err(|e| format!("{e:#}"))
        })
        .await;
    }
    let auditor = Ctl::new();
    auditor.login(&cluster, "default", "audrey", "audrey-passphrase").await;
    let events = wait_until(Duration::from_secs(60), "both unlocks in the audit log", async || {
        let export = auditor.ok(&["audit", "export"], None).await;
        let unlocks = export.lines().filter(|line| line.contains("UnlockedByMembers")).count();
        done_if(unlocks == 2, export)
    })
    .await;
    let line = events.lines().find(|line| line.contains("UnlockedByMembers")).expect("a line");
    assert!(line.contains("q1") && line.contains("q2"), "{line}");
}

/// The key-at-rest search of the test above, on stopped KMAs: every file under the cluster's
/// root, for every form of the CA key; then a planted copy is found, so the search can fail.
fn no_file_holds_the_ca_key(cluster: &Cluster) {
    let root = cluster.root.path();
    for needle in ca_key_needles(&cluster.ca_key_at_init) {
        let found = support::files_containing(root, &needle);
        assert!(found.is_empty(), "the CA key found in {found:?}");
    }
    let planted = root.join("planted.pem");
    std::fs::write(&planted, &cluster.ca_key_at_init).expect("plant");
    let needles = ca_key_needles(&cluster.ca_key_at_init);
    assert_eq!(support::files_containing(root, &needles[0]), vec![planted.display().to_string()]);
    std::fs::remove_file(&planted).expect("unplant");
}

/// Quorum members unlock each locked KMA with `kmsctl quorum approve --member M --unlock`, each
/// in their own call; a wrong passphrase first is refused. Each approval shows the progress.
async fn members_unlock(cluster: &Cluster, unlocks: &[(&String, [&str; 2])]) {
    let member = Ctl::new();
    let ca = ca_path(cluster);
    let approve = |id: &str, at: &str| -> Vec<String> {
        ["--json", "quorum", "approve", "--member", id, "--unlock", at, "--ca", &ca]
            .iter()
            .map(|s| s.to_string())
            .chain(["--passphrase-stdin".to_string()])
            .collect()
    };
    let args = approve("q1", unlocks[0].0);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wrong = member.run(&args, Some("not-the-passphrase\n")).await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && stderr.contains("wrong passphrase"), "{stderr}");
    for (at, members) in unlocks {
        for (n, id) in members.iter().enumerate() {
            let passphrase = match *id {
                "q1" => "member-one-passphrase",
                "q2" => "member-two-passphrase",
                _ => "member-three-passphrase",
            };
            let args = approve(id, at);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let text = member.ok(&args, Some(&format!("{passphrase}\n"))).await;
            let progress: Value = serde_json::from_str(&text).expect("progress");
            assert_eq!(progress["unlocked"], n == 1, "{progress}");
            assert_eq!(count(&progress["members_given"]), n + 1, "{progress}");
        }
    }
}
