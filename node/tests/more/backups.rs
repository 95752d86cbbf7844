//! Backups and restore through running KMAs (issue #17): `kmsctl backup core-security` and
//! `kmsctl backup database` against a live cluster, the cluster destroyed, bad files and bad
//! passphrases refused with nothing written, then `kma restore` onto a factory-fresh KMA
//! that serves the drive's keys again (SPEC B1, B2, B3, A5, C4).

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_gateway::AgentClient;
use node::client::KmaClient;
use statemachine::{Command, Role, RoleSet};

use super::support::{agents, wait_until, Cluster, Node, KMA};
use super::Ctl;

const BACKUP_OPERATOR: &str = "bob-backup-passphrase";
const AUDITOR: &str = "audrey-auditor-passphrase";

/// `kma restore` as an operator runs it, the members' passphrases on standard input.
async fn kma_restore(dir: &Path, files: &[&Path; 3], passphrases: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(KMA)
        .args(["restore", "--name", "kma-r", "--site", "east"])
        .args(["--management", "127.0.0.1:0", "--service", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .arg("--data")
        .arg(files[0])
        .arg("--key")
        .arg(files[1])
        .arg("--core-security")
        .arg(files[2])
        .arg("--passphrases-stdin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kma restore runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Err(error) = input.write_all(passphrases.as_bytes()).await {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {error}");
    }
    drop(input);
    let waited = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output());
    waited.await.expect("kma restore finished in time").expect("output")
}

/// Expects `kma restore` refused, with `reason` in its message and no data dir left behind.
async fn refused(dir: &Path, files: &[&Path; 3], passphrases: &str, reason: &str) {
    let output = kma_restore(dir, files, passphrases).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "restore should be refused ({reason}): {stderr}");
    assert!(stderr.contains(reason), "refusal without '{reason}': {stderr}");
    assert!(!dir.exists(), "a refused restore left {} behind", dir.display());
}

fn copy_with(from: &Path, to: &Path, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(from).expect("backup file");
    change(&mut bytes);
    std::fs::write(to, bytes).expect("changed copy");
    to.to_path_buf()
}

const MEMBERS: &str = "q1 member-one-passphrase\nq3 member-three-passphrase\n";

/// Setup: two KMAs, a drive that wrote two tapes, a Backup Operator. Action: the core security
/// and two database backups through kmsctl; a third tape written after the backup; every
/// KMA stopped and every data dir deleted; restores refused for a wrong key file, a flipped
/// byte, a truncated file, a wrong and a non-member's passphrase, too few passphrases; then
/// `kma restore` onto an empty dir and `kma run`. Expect: the backups are listed with their
/// index, size and taker; each refusal names its reason and writes nothing; the restored KMA
/// is a one-KMA cluster serving the two tapes' keys to the same enrolled drive (no
/// re-enrollment), the third tape's key recovered by ID from the quarantined pool (A5), the
/// audit chain carried on with the restore in it, the old KMAs gone, and no login of before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b1_b2_b3_b4_a_destroyed_cluster_comes_back_from_its_backup_files() {
    let mut cluster = Cluster::start(2, super::support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    let bob = Command::CreateUser {
        id: "bob".into(),
        roles: RoleSet::of(Role::BackupOperator),
        passphrase_verifier: Vec::new(),
    };
    agents::ok(&cluster.admin, &address, bob, Some(BACKUP_OPERATOR)).await;
    let audrey = Command::CreateUser {
        id: "audrey".into(),
        roles: RoleSet::of(Role::Auditor),
        passphrase_verifier: Vec::new(),
    };
    agents::ok(&cluster.admin, &address, audrey, Some(AUDITOR)).await;
    let service = cluster.nodes[0].service.clone();
    let pinned = || agent_gateway::ClientOptions { discovery: false, ..Default::default() };
    let ca = agents::ca_pem(&cluster);
    let credentials =
        agent_gateway::client::enroll(&service, &ca, "drive1", "drive-one-passphrase")
            .await
            .expect("enrollment");
    let drive =
        AgentClient::from_credentials(&[service.clone()], &credentials, pinned()).expect("drive");
    let (tape1, key1) = agents::write_key(&drive, "TAPE01").await;
    let (tape2, key2) = agents::write_key(&drive, "TAPE02").await;

    let operator = Ctl::new();
    operator.login(&cluster, "default", "bob", BACKUP_OPERATOR).await;
    let files = cluster.root.path().join("offsite");
    std::fs::create_dir_all(&files).expect("offsite dir");
    let core = files.join("core-security.toml");
    let data = files.join("first.kmsdb");
    let other = files.join("second.kmsdb");
    operator.ok(&["backup", "core-security", "--out", core.to_str().expect("path")], None).await;
    operator.ok(&["backup", "database", "--out", data.to_str().expect("path")], None).await;
    operator.ok(&["backup", "database", "--out", other.to_str().expect("path")], None).await;
    let core_text = std::fs::read_to_string(&core).expect("core security file");
    assert!(core_text.contains("members = [\"q1\", \"q2\", \"q3\"]"), "{core_text}");
    assert!(core_text.contains("threshold = 2"), "{core_text}");
    // A second `--out` onto an existing file is refused: backups never overwrite.
    let again = operator
        .fails(&["backup", "database", "--out", data.to_str().expect("path")], None, 2)
        .await;
    assert!(again.contains("exists"), "{again}");
    let listed = operator.json(&["backup", "list"]).await;
    let rows = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 3, "{listed}");
    for row in &rows {
        assert_eq!(row["taken_by"], "bob", "{row}");
        assert!(row["size_bytes"].as_u64().unwrap_or(0) > 0, "{row}");
        let database = row["kind"] == "database";
        assert!(!database || row["covers_index"].as_u64().unwrap_or(0) > 0, "{row}");
    }
    // Written after the backups: the restored cluster has its pool key, not its data unit.
    let (_tape3, key3_write) = {
        let unit = drive.create_data_unit("TAPE03").await.expect("data unit").data_unit;
        let written = agents::write_key_for(&drive, unit, true).await;
        (unit, (written.key.key_id, *written.key.value))
    };

    // The whole cluster is lost: every KMA stopped, every data dir deleted.
    let credentials_dir = cluster.nodes[0].data_dir.join("tls");
    let ca_pem = std::fs::read_to_string(credentials_dir.join("ca.pem")).expect("CA");
    for index in 0..cluster.nodes.len() {
        cluster.kill9(index).await;
        std::fs::remove_dir_all(&cluster.nodes[index].data_dir).expect("data dir deleted");
    }

    let fresh = cluster.root.path().join("kma-r");
    let key = PathBuf::from(format!("{}.key", data.display()));
    let other_key = PathBuf::from(format!("{}.key", other.display()));
    let good = [data.as_path(), key.as_path(), core.as_path()];
    refused(&fresh, &[&data, &other_key, &core], MEMBERS, "key file of another backup").await;
    let flipped = copy_with(&data, &files.join("flipped.kmsdb"), |b| {
        let middle = b.len() / 2;
        b[middle] ^= 0x01;
    });
    refused(&fresh, &[&flipped, &key, &core], MEMBERS, "damaged").await;
    let truncated = copy_with(&data, &files.join("truncated.kmsdb"), |b| b.truncate(b.len() - 100));
    refused(&fresh, &[&truncated, &key, &core], MEMBERS, "damaged").await;
    let edited = copy_with(&core, &files.join("edited.toml"), |b| {
        let text = String::from_utf8_lossy(b).replace("threshold = 2", "threshold = 1");
        *b = text.into_bytes();
    });
    refused(&fresh, &[&data, &key, &edited], MEMBERS, "checksum").await;
    refused(&fresh, &good, "q1 member-one-passphrase\nq3 not-the-passphrase\n", "wrong passphrase")
        .await;
    refused(&fresh, &good, "q1 member-one-passphrase\nmallory some-passphrase\n", "not a member")
        .await;
    refused(&fresh, &good, "q1 member-one-passphrase\n", "1 of the 2 passphrases").await;

    let output = kma_restore(&fresh, &good, MEMBERS).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "restore failed: {stdout}{stderr}");
    assert!(stdout.contains("KMAs removed: kma1, kma2"), "{stdout}");
    assert!(stdout.contains("agents keep their certificates"), "{stdout}");
    let report = std::fs::read_to_string(fresh.join("restore-report.toml")).expect("report");
    assert!(report.contains("agents_reenroll = false"), "{report}");

    cluster.nodes = vec![Node::created(fresh.clone())];
    cluster.reader = KmaClient::node(&fresh).expect("the restored KMA's own client");
    cluster.restart(0).await;
    cluster.wait_ready(0).await;
    let restored = cluster.nodes[0].service.clone();
    let same_drive = AgentClient::from_credentials(&[restored.clone()], &credentials, pinned())
        .expect("the same drive, pointed at the restored KMA");
    for (tape, key) in [(tape1, key1), (tape2, key2)] {
        let keys = wait_until(Duration::from_secs(60), "the restored KMA to serve", async || {
            same_drive.keys(tape).await.map_err(|e| e.to_string())
        })
        .await;
        assert!(keys.keys.iter().any(|k| *k.value == key), "tape {tape}: its key came back");
    }
    let (key3_id, key3_value) = key3_write;
    let recovered = same_drive.key(key3_id, None, "TAPE03").await.expect("recovery by ID");
    assert_eq!(*recovered.key.value, key3_value, "the pool key handed out after the backup");

    // Logins of before the backup ended with it; the officer logs in again.
    let officer =
        node::client::KmaClient::login(&cluster.nodes[0].address, &ca_pem, "admin", super::OFFICER)
            .await
            .expect("the officer logs in to the restored cluster");
    let status = officer.status(&cluster.nodes[0].address).await.expect("status");
    assert_eq!(status.voters.len(), 1, "{status:?}");
    assert_eq!(status.role, "leader", "{status:?}");
    let auditor = Ctl::new();
    auditor.login(&cluster, "default", "audrey", AUDITOR).await;
    auditor.ok(&["audit", "verify"], None).await;
    let export = auditor.ok(&["audit", "export"], None).await;
    let restore = export.lines().find(|l| l.contains("ClusterRestored")).expect("the restore");
    assert!(restore.contains("first.kmsdb"), "{restore}");
    assert!(export.contains("BackupRecorded") || export.contains("RecordBackup"), "{export}");
}

/// `kma recover-from-lost-majority` as an operator runs it on a stopped survivor.
async fn kma_recover(dir: &Path, passphrases: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(KMA)
        .arg("recover-from-lost-majority")
        .arg("--data-dir")
        .arg(dir)
        .args(["--yes", "--passphrases-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kma recover-from-lost-majority runs");
    let mut input = child.stdin.take().expect("stdin");
    if let Err(error) = input.write_all(passphrases.as_bytes()).await {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {error}");
    }
    drop(input);
    let waited = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output());
    waited.await.expect("recovery finished in time").expect("output")
}

/// Setup: three KMAs, a drive that wrote three tapes. Action: two KMAs killed and their data
/// dirs deleted (gone for good); the survivor stopped; a recovery with a wrong passphrase,
/// then with two members' passphrases; the survivor started; two fresh KMAs joined to it.
/// Expect: the refused recovery changes nothing; the survivor leads a cluster of one, then of
/// three; the lost KMAs are gone from the state; every tape's key reads the same from the new
/// KMAs, and drives get new write keys again. (SPEC B7)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b7_a_survivor_of_a_lost_majority_becomes_a_cluster_of_one() {
    let mut cluster = Cluster::start(3, super::support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    let ca = agents::ca_pem(&cluster);
    let service = cluster.nodes[0].service.clone();
    let credentials =
        agent_gateway::client::enroll(&service, &ca, "drive1", "drive-one-passphrase")
            .await
            .expect("enrollment");
    let options = agent_gateway::ClientOptions::default();
    let drive = AgentClient::from_credentials(&cluster.services(), &credentials, options.clone())
        .expect("drive");
    let mut tapes = Vec::new();
    for n in 1..=3 {
        tapes.push(agents::write_key(&drive, &format!("TAPE0{n}")).await);
    }
    cluster.assert_converged(&super::support::Acked::default()).await;

    for index in 0..2 {
        cluster.kill9(index).await;
        std::fs::remove_dir_all(&cluster.nodes[index].data_dir).expect("lost for good");
    }
    cluster.stop(2).await;
    let survivor = cluster.nodes[2].data_dir.clone();
    let refused = kma_recover(&survivor, "q1 member-one-passphrase\nq2 wrong-passphrase\n").await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("wrong passphrase"), "{stderr}");
    let output =
        kma_recover(&survivor, "q1 member-one-passphrase\nq2 member-two-passphrase\n").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "recovery failed: {stdout}{stderr}");
    assert!(stdout.contains("cluster of one"), "{stdout}");

    let survivor_node = cluster.nodes.remove(2);
    cluster.nodes = vec![survivor_node];
    cluster.reader = KmaClient::node(&survivor).expect("the survivor's own client");
    cluster.restart(0).await;
    cluster.wait_ready(0).await;
    let at = cluster.nodes[0].address.clone();
    cluster.admin = KmaClient::login(&at, &ca, "admin", super::OFFICER).await.expect("login");
    let status = cluster.status(0).await.expect("status");
    assert_eq!(status.voters.len(), 1, "{status:?}");
    let officer = Ctl::new();
    officer.login(&cluster, "default", "admin", super::OFFICER).await;
    let kmas = officer.json(&["kma", "list"]).await;
    let names: Vec<&str> =
        kmas.as_array().into_iter().flatten().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(names, vec!["kma3"], "the lost KMAs are removed: {kmas}");

    cluster.add_node(4, super::support::no_change).await;
    cluster.add_node(5, super::support::no_change).await;
    cluster.wait_voters(3).await;
    let drive = AgentClient::from_credentials(&cluster.services(), &credentials, options)
        .expect("the same drive, on the new cluster");
    for (tape, key) in &tapes {
        let keys =
            wait_until(Duration::from_secs(60), "the recovered cluster to serve", async || {
                drive.keys(*tape).await.map_err(|e| e.to_string())
            })
            .await;
        assert!(keys.keys.iter().any(|k| *k.value == *key), "tape {tape}: same key");
    }
    agents::write_key(&drive, "TAPE04").await;
}
