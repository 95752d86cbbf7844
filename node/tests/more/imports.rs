//! KMS 1.x imports through running KMAs (issue 18 points 4 and 5): `kmsctl import-1x` against
//! a live cluster, bad files refused with their line and nothing imported, drives reading
//! "1.x tapes" by key ID, and the ripple effect of a key two tapes share (SPEC M1, A5, O8).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agent_gateway::AgentClient;
use serde_json::Value;
use statemachine::{Command, KeyId, Role, RoleSet};

use super::support::{agents, files_containing, Cluster};
use super::Ctl;

const CO_PASSPHRASE: &str = "carol-compliance-passphrase";
const OP_PASSPHRASE: &str = "oscar-operator-passphrase";

/// One line of a 1.x export: key ID `n` (32 bytes: a 2-byte prefix the import strips, then
/// 30), value `n` spread over 32 bytes.
fn line(n: u64, value_seed: u64) -> (String, KeyId, [u8; 32]) {
    let mut id = [0u8; 32];
    id[0..2].copy_from_slice(&[0x12, 0x34]);
    id[2] = 0x1a;
    id[24..32].copy_from_slice(&n.to_be_bytes());
    let mut value = [0u8; 32];
    for (at, chunk) in value.chunks_mut(8).enumerate() {
        let word = value_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(at as u64 + 1);
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    let mut key_id = [0u8; 30];
    key_id.copy_from_slice(&id[2..]);
    let text = format!("{}, {}, legacy tape key {n}", hex::encode(id), hex::encode(value));
    (text, KeyId(key_id), value)
}

/// A file of keys `from..to`, each with its own value; the keys' IDs and values.
fn file_of(
    dir: &Path,
    name: &str,
    range: std::ops::Range<u64>,
) -> (PathBuf, Vec<(KeyId, [u8; 32])>) {
    let mut text = String::with_capacity(range.clone().count() * 160);
    let mut keys = Vec::new();
    for n in range {
        let (row, id, value) = line(n, n);
        let _ = writeln!(text, "{row}");
        keys.push((id, value));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("1.x file written");
    (path, keys)
}

async fn users(cluster: &Cluster, address: &str) {
    for (id, role, passphrase) in [
        ("carol", Role::ComplianceOfficer, CO_PASSPHRASE),
        ("oscar", Role::Operator, OP_PASSPHRASE),
    ] {
        let user = Command::CreateUser {
            id: id.into(),
            roles: RoleSet::of(role),
            passphrase_verifier: Vec::new(),
        };
        agents::ok(&cluster.admin, address, user, Some(passphrase)).await;
    }
    let policy = Command::CreateKeyPolicy {
        name: "legacy".into(),
        encryption_period_ms: agents::DAY_MS,
        cryptoperiod_ms: 3 * 365 * agents::DAY_MS,
        allow_export: false,
        allow_import: true,
    };
    agents::ok(&cluster.admin, address, policy, None).await;
    let group = Command::CreateKeyGroup { name: "legacy".into(), policy: "legacy".into() };
    agents::ok(&cluster.admin, address, group, None).await;
    let assign = Command::AssignKeyGroupToAgent { agent: "drive1".into(), group: "legacy".into() };
    agents::ok(&cluster.admin, address, assign, None).await;
}

/// `kmas` KMAs with the drive catalogue, group `legacy`, and Compliance Officer carol logged
/// in with kmsctl.
async fn cluster_and_compliance_officer(kmas: usize) -> (Cluster, Ctl) {
    let cluster = Cluster::start(kmas, super::support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    users(&cluster, &address).await;
    let carol = Ctl::new();
    carol.login(&cluster, "default", "carol", CO_PASSPHRASE).await;
    (cluster, carol)
}

/// Keys in group `legacy`, as `kmsctl group list` counts them.
async fn legacy_keys(ctl: &Ctl) -> u64 {
    let groups = ctl.json(&["group", "list"]).await;
    let rows = groups.as_array().cloned().unwrap_or_default();
    let legacy = rows.iter().find(|row| row["name"] == "legacy").cloned().unwrap_or(Value::Null);
    legacy["keys"].as_u64().unwrap_or_else(|| panic!("group legacy listed: {groups}"))
}

/// `kmsctl import-1x` refuses `file` with exit 3 and a message naming `expected`; the group's
/// key count stays `keys`.
async fn refused(ctl: &Ctl, file: &Path, expected: &str, keys: u64) {
    let path = file.to_str().expect("utf-8 path");
    let stderr = ctl.fails(&["import-1x", "--group", "legacy", path], None, 3).await;
    assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
    assert_eq!(legacy_keys(ctl).await, keys, "nothing imported by {}", file.display());
}

/// Setup: two KMAs, a group whose policy allows import, a Compliance Officer and an Operator.
/// Action: `kmsctl import-1x` of a 100,000-key 1.x file through kmsctl; then bad files: a
/// malformed line, a key ID of the wrong length, an empty file, a value that conflicts with a
/// key imported, the same file again; the Operator tries too. A drive reads "1.x tapes" by key
/// ID on the other KMA.
/// Expect: every key imported at once (Process-only), each bad file refused with its line and
/// reason and nothing imported, the Operator refused; drive-sim reads every 1.x tape it made;
/// no clear value in any KMA's files or logs. (SPEC M1, A5, S1; issue 18 points 4 and 6)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_a_100000_key_1x_file_imports_whole_and_drives_read_its_tapes() {
    let (cluster, carol) = cluster_and_compliance_officer(2).await;
    let files = tempfile::tempdir().expect("files");
    let (big, keys) = file_of(files.path(), "legacy.txt", 0..100_000);

    let started = std::time::Instant::now();
    let path = big.to_str().expect("utf-8 path");
    let text = carol.ok(&["--json", "import-1x", "--group", "legacy", path], None).await;
    let outcome: Value = serde_json::from_str(&text).expect("progress");
    eprintln!("100,000 keys imported in {:?}", started.elapsed());
    assert_eq!(outcome["status"], "committed", "{outcome}");
    assert_eq!(outcome["imported"], 100_000, "{outcome}");
    assert_eq!(outcome["duplicates"], 0, "{outcome}");
    assert_eq!(legacy_keys(&carol).await, 100_000);
    let shown = carol.json(&["key", "show", &keys[99_999].0.to_string()]).await;
    assert_eq!(shown["state"], "process-only", "{shown}");

    bad_files(&carol, files.path(), &keys).await;
    let oscar = Ctl::new();
    oscar.login(&cluster, "default", "oscar", OP_PASSPHRASE).await;
    let stderr = oscar.fails(&["import-1x", "--group", "legacy", path], None, 3).await;
    assert!(stderr.contains("Compliance Officer"), "{stderr}");

    // drive-sim on the other KMA reads "1.x tapes" by key ID (SPEC A5; issue 18 point 6).
    let output = drive_sim_legacy(&cluster, &big, files.path()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1.x tapes read: 50 (200 records), failures: 0"), "{stdout}");

    // No clear value of the file anywhere a KMA writes (SPEC S3; STYLE "Secrets").
    let (_, _, value) = line(4_242, 4_242);
    for needle in [value.to_vec(), hex::encode(value).into_bytes()] {
        let found = files_containing(cluster.root.path(), &needle);
        assert!(found.is_empty(), "a clear 1.x value in {found:?}");
    }
}

/// `drive-sim --legacy-keys`: enrolls drive1 through kma2, makes 50 1.x tapes from `file`
/// and reads each back by key ID.
async fn drive_sim_legacy(cluster: &Cluster, file: &Path, dir: &Path) -> std::process::Output {
    let binary = PathBuf::from(super::support::KMA).with_file_name("drive-sim");
    let passphrase = dir.join("drive1.passphrase");
    std::fs::write(&passphrase, "drive-one-passphrase\n").expect("passphrase file");
    let ca = cluster.nodes[0].data_dir.join("tls").join(node::pki::CA_FILE);
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["--kma", &cluster.nodes[1].service, "--agent", "drive1", "--legacy-tapes", "50"])
        .arg("--ca")
        .arg(&ca)
        .arg("--passphrase-file")
        .arg(&passphrase)
        .arg("--legacy-keys")
        .arg(file)
        .arg("--tape-dir")
        .arg(dir.join("legacy-tapes"));
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), command.output());
    output.await.expect("drive-sim finished").expect("drive-sim ran")
}

/// Each bad file refused with its line and reason; the group keeps `keys` keys.
async fn bad_files(carol: &Ctl, dir: &Path, keys: &[(KeyId, [u8; 32])]) {
    let held = keys.len() as u64;
    let (good, _, _) = line(200_000, 1);
    let malformed = dir.join("malformed.txt");
    std::fs::write(&malformed, format!("{good}\nnot a key line\n")).expect("file");
    refused(carol, &malformed, "line 2: expected '<key id>, <key value>", held).await;

    let (short, _, _) = line(200_001, 2);
    let wrong_length = dir.join("short-id.txt");
    std::fs::write(&wrong_length, format!("{good}\n{}\n", &short[2..])).expect("file");
    refused(carol, &wrong_length, "line 2: the key ID has 62 characters", held).await;

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").expect("file");
    refused(carol, &empty, "the file holds no keys", held).await;

    // Key 17 of the big file with another value, after 3,000 good lines (a later batch).
    let (conflicting, _) = file_of(dir, "conflict.txt", 300_000..303_000);
    let mut text = std::fs::read_to_string(&conflicting).expect("file");
    let (other_value, _, _) = line(17, 99);
    let _ = writeln!(text, "{other_value}");
    std::fs::write(&conflicting, text).expect("file");
    refused(carol, &conflicting, "line 3001: key ID", held).await;

    let (again, _) = file_of(dir, "again.txt", 0..10);
    refused(carol, &again, "imported before", held).await;
}

/// Setup: one 1.x key imported; a drive. Action: two tapes read that key by ID (each a new
/// data unit tagged by its tape), the key is compromised, and the destroy of tape A's keys is
/// previewed through kmsctl. Expect: both tapes are associated with the key, and the preview
/// names tape B as the ripple effect. (SPEC A5, O8; seed ch. 9; issue 18 point 5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_two_tapes_that_read_one_1x_key_are_both_in_its_destroy_preview() {
    let (cluster, carol) = cluster_and_compliance_officer(1).await;
    let files = tempfile::tempdir().expect("files");
    let (file, keys) = file_of(files.path(), "one.txt", 7..8);
    let path = file.to_str().expect("utf-8 path");
    carol.ok(&["import-1x", "--group", "legacy", path], None).await;
    let (key_id, value) = keys[0];

    let drive: AgentClient =
        agents::pinned_drive(&cluster, &cluster.nodes[0].service, &cluster.nodes[0].service).await;
    let tape_a = drive.key(key_id, None, "TAPE-A").await.expect("tape A reads");
    let tape_b = drive.key(key_id, None, "TAPE-B").await.expect("tape B reads");
    assert_eq!((*tape_a.key.value, *tape_b.key.value), (value, value));
    let (a, b) = (tape_a.data_unit.expect("tape A's data unit"), tape_b.data_unit.expect("B's"));
    assert_ne!(a, b, "one data unit per tape");

    carol.ok(&["key", "compromise", &key_id.to_string()], None).await;
    let oscar = Ctl::new();
    oscar.login(&cluster, "default", "oscar", OP_PASSPHRASE).await;
    let a = a.to_string();
    let args = ["--json", "data-unit", "destroy-keys", &a, "--option", "compromised-only"];
    let output = oscar.run(&args, None).await;
    assert_eq!(output.status.code(), Some(5), "a preview, not confirmed");
    let preview: Value = serde_json::from_slice(&output.stdout).expect("preview JSON");
    let b = b.to_string();
    assert_eq!(preview["shared_with_unselected"], serde_json::json!([b]), "{preview}");
    assert_eq!(preview["data_units_losing_access"].as_array().map(Vec::len), Some(2), "{preview}");
}
