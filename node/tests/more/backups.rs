//! Backups and restore through running KMAs (issue #17): `kmsctl backup core-security` and
//! `kmsctl backup database` against a live cluster, the cluster destroyed, bad files and bad
//! passphrases refused with nothing written, then `kma restore` onto a factory-fresh KMA
//! that serves the drive's keys again (SPEC B1, B2, B3, A5, C4).

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_gateway::AgentClient;
use node::client::KmaClient;
use statemachine::{Command, Role, RoleSet};

use super::support::{agents, done_if, wait_until, Cluster, Node, KMA};
use super::Ctl;

const BACKUP_OPERATOR: &str = "bob-backup-passphrase";
const AUDITOR: &str = "audrey-auditor-passphrase";

/// `kma restore` as an operator runs it, the members' passphrases on standard input.
async fn kma_restore(dir: &Path, files: &[&Path; 3], passphrases: &str) -> std::process::Output {
    kma_restore_with(dir, files, passphrases, None).await
}

/// As [`kma_restore`], with an audit export kept since the backup (SPEC B4).
async fn kma_restore_with(
    dir: &Path,
    files: &[&Path; 3],
    passphrases: &str,
    audit_export: Option<&Path>,
) -> std::process::Output {
    let mut command = tokio::process::Command::new(KMA);
    command
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
        .arg("--passphrases-stdin");
    if let Some(export) = audit_export {
        command.arg("--audit-export").arg(export);
    }
    output_with_stdin(command, passphrases, "kma restore").await
}

/// Runs `command` with `input` on its standard input and waits (at most two minutes).
async fn output_with_stdin(
    mut command: tokio::process::Command,
    input: &str,
    what: &str,
) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} runs: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    // It may refuse its arguments and exit before it reads its input.
    if let Err(error) = stdin.write_all(input.as_bytes()).await {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {error}");
    }
    drop(stdin);
    let waited = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output());
    waited.await.unwrap_or_else(|_| panic!("{what} finished in time")).expect("output")
}

/// Expects `kma restore` refused, with `reason` in its message and no data dir left behind.
async fn refused(dir: &Path, files: &[&Path; 3], passphrases: &str, reason: &str) {
    let output = kma_restore(dir, files, passphrases).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "restore should be refused ({reason}): {stderr}");
    assert!(stderr.contains(reason), "refusal without '{reason}': {stderr}");
    assert!(!dir.exists(), "a refused restore left {} behind", dir.display());
}

/// Bob's core security backup and two database backups, through kmsctl, into `offsite/`;
/// then a backup onto an existing file, refused; and the list. Returns the directory and the
/// three files.
async fn three_backups(cluster: &Cluster) -> (PathBuf, [PathBuf; 3]) {
    let operator = Ctl::new();
    operator.login(cluster, "default", "bob", BACKUP_OPERATOR).await;
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
    listed_by(&operator, 3, "bob").await;
    (files, [core, data, other])
}

/// A restore with an edited audit export is refused and leaves nothing; with the export kept,
/// it succeeds and names the key destroyed after the backup, which it brings back (SPEC B4).
async fn restore_naming_the_destroyed_key(
    fresh: &Path,
    good: &[&Path; 3],
    (export, edited_export): (&Path, &Path),
    destroyed: &str,
) {
    let output = kma_restore_with(fresh, good, MEMBERS, Some(edited_export)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not continue this backup's audit chain"), "{stderr}");
    assert!(!fresh.exists(), "a refused restore leaves nothing");

    let output = kma_restore_with(fresh, good, MEMBERS, Some(export)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "restore failed: {stdout}{stderr}");
    assert!(stdout.contains("destroyed after the backup (SPEC B4"), "{stdout}");
    assert!(stdout.contains(destroyed), "the restore names the key it brought back: {stdout}");
    assert!(stdout.contains("KMAs removed: kma1, kma2"), "{stdout}");
    assert!(stdout.contains("agents keep their certificates"), "{stdout}");
    let report = std::fs::read_to_string(fresh.join("restore-report.toml")).expect("report");
    assert!(report.contains("agents_reenroll = false"), "{report}");
}

/// Stops KMA 0, gives its kma.toml a backup directory and a ship command that copies both
/// files into `shipped/`, and returns both directories. The caller restarts it.
async fn with_backup_dir_and_ship_command(cluster: &mut Cluster) -> (PathBuf, PathBuf) {
    let scheduled = cluster.root.path().join("scheduled");
    let shipped = cluster.root.path().join("shipped");
    std::fs::create_dir_all(&shipped).expect("ship target");
    let ship = cluster.root.path().join("ship.sh");
    std::fs::write(&ship, format!("#!/bin/sh\ncp \"$1\" \"$2\" {}/\n", shipped.display()))
        .expect("ship script");
    std::fs::set_permissions(&ship, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("executable");
    cluster.stop(0).await;
    let data_dir = cluster.nodes[0].data_dir.clone();
    let mut config = node::config::NodeConfig::load(&data_dir).expect("config");
    config.backup_dir = Some(scheduled.clone());
    config.backup_ship_command = Some(ship);
    config.save(&data_dir).expect("config saved");
    (scheduled, shipped)
}

/// No file under `files` holds one of `keys`, raw or as hex; a planted copy is found, so the
/// search can fail. (STYLE: secrets never leave wrapped, backups included)
fn no_key_value_in(files: &Path, keys: &[[u8; 32]]) {
    for key in keys {
        for needle in [key.to_vec(), hex::encode(key).into_bytes()] {
            let found = super::support::files_containing(files, &needle);
            assert!(found.is_empty(), "a key value in backup files: {found:?}");
        }
    }
    let planted = files.join("planted");
    std::fs::write(&planted, keys[0]).expect("planted copy");
    assert_eq!(super::support::files_containing(files, &keys[0]).len(), 1, "found when there");
    std::fs::remove_file(&planted).expect("planted copy removed");
}

/// Users `bob` (Backup Operator) and `audrey` (Auditor), with their passphrases.
async fn backup_operator_and_auditor(cluster: &Cluster, address: &str) {
    for (id, role, passphrase) in
        [("bob", Role::BackupOperator, BACKUP_OPERATOR), ("audrey", Role::Auditor, AUDITOR)]
    {
        let user = Command::CreateUser {
            id: id.into(),
            roles: RoleSet::of(role),
            passphrase_verifier: Vec::new(),
        };
        agents::ok(&cluster.admin, address, user, Some(passphrase)).await;
    }
}

/// `kmsctl backup list` shows `count` backups, each taken by `by`, with a size, and database
/// backups with the index they cover.
async fn listed_by(operator: &Ctl, count: usize, by: &str) {
    let listed = operator.json(&["backup", "list"]).await;
    let rows = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), count, "{listed}");
    for row in &rows {
        assert_eq!(row["taken_by"], by, "{row}");
        assert!(row["size_bytes"].as_u64().unwrap_or(0) > 0, "{row}");
        let database = row["kind"] == "database";
        assert!(!database || row["covers_index"].as_u64().unwrap_or(0) > 0, "{row}");
    }
}

/// The officer compromises the key (it is in use) and destroys it, confirming the preview.
async fn compromise_and_destroy(cluster: &Cluster, key: &str) {
    let officer = Ctl::new();
    officer.login(cluster, "default", "admin", super::OFFICER).await;
    officer.ok(&["key", "compromise", key], None).await;
    let preview = officer.run(&["--json", "key", "destroy", key], None).await;
    let preview: serde_json::Value = serde_json::from_slice(&preview.stdout).expect("preview");
    let digest = preview["digest"].as_str().expect("the preview's digest").to_string();
    officer.ok(&["key", "destroy", key, "--confirm", &digest], None).await;
}

/// An Auditor's export, kept off-site (it names what happened after the backup), and a copy
/// with one link changed.
async fn kept_audit_export(cluster: &Cluster, files: &Path) -> (PathBuf, PathBuf) {
    let auditor = Ctl::new();
    auditor.login(cluster, "default", "audrey", AUDITOR).await;
    let export = files.join("audit.jsonl");
    std::fs::write(&export, auditor.ok(&["audit", "export"], None).await).expect("export kept");
    let mut edited = std::fs::read_to_string(&export).expect("export");
    let at = edited.rfind("\"link\":\"").expect("a link") + 8;
    edited.replace_range(at..at + 2, if &edited[at..at + 2] == "00" { "11" } else { "00" });
    let edited_export = files.join("edited-audit.jsonl");
    std::fs::write(&edited_export, edited).expect("edited export");
    (export, edited_export)
}

/// The whole cluster is lost: every KMA killed, every data dir deleted.
async fn destroy_every_kma(cluster: &mut Cluster) {
    for index in 0..cluster.nodes.len() {
        cluster.kill9(index).await;
        std::fs::remove_dir_all(&cluster.nodes[index].data_dir).expect("data dir deleted");
    }
}

/// Restores refused, each with its reason, writing nothing: another backup's key file, a
/// flipped byte, a truncated file, an edited core security file, a wrong passphrase, a
/// non-member, too few passphrases.
async fn refused_restores(
    fresh: &Path,
    (data, key, core): (&Path, &Path, &Path),
    other_key: &Path,
) {
    let files = data.parent().expect("offsite dir");
    let good = [data, key, core];
    refused(fresh, &[data, other_key, core], MEMBERS, "key file of another backup").await;
    let flipped = copy_with(data, &files.join("flipped.kmsdb"), |b| {
        let middle = b.len() / 2;
        b[middle] ^= 0x01;
    });
    refused(fresh, &[&flipped, key, core], MEMBERS, "damaged").await;
    let truncated = copy_with(data, &files.join("truncated.kmsdb"), |b| b.truncate(b.len() - 100));
    refused(fresh, &[&truncated, key, core], MEMBERS, "damaged").await;
    let edited = copy_with(core, &files.join("edited.toml"), |b| {
        let text = String::from_utf8_lossy(b).replace("threshold = 2", "threshold = 1");
        *b = text.into_bytes();
    });
    refused(fresh, &[data, key, &edited], MEMBERS, "checksum").await;
    refused(fresh, &good, "q1 member-one-passphrase\nq3 not-the-passphrase\n", "wrong passphrase")
        .await;
    refused(fresh, &good, "q1 member-one-passphrase\nmallory some-passphrase\n", "not a member")
        .await;
    refused(fresh, &good, "q1 member-one-passphrase\n", "1 of the 2 passphrases").await;
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
    backup_operator_and_auditor(&cluster, &address).await;
    let service = cluster.nodes[0].service.clone();
    let pinned = || agent_gateway::ClientOptions { discovery: false, ..Default::default() };
    let credentials = agents::enroll_drive1(&cluster, &service).await;
    let drive =
        AgentClient::from_credentials(std::slice::from_ref(&service), &credentials, pinned())
            .expect("drive");
    let (tape1, key1) = agents::write_key(&drive, "TAPE01").await;
    let (tape2, key2) = agents::write_key(&drive, "TAPE02").await;

    let (files, [core, data, other]) = three_backups(&cluster).await;
    no_key_value_in(&files, &[key1, key2]);
    // Destroyed after the backups (compromised first: it is still in use): the backup still
    // holds it, so a restore brings it back, and says so (SPEC B4).
    let destroyed = drive.keys(tape1).await.expect("tape 1's keys").keys[0].key_id.to_string();
    compromise_and_destroy(&cluster, &destroyed).await;
    // Written after the backups: the restored cluster has its pool key, not its data unit.
    let (_tape3, key3_write) = {
        let unit = drive.create_data_unit("TAPE03").await.expect("data unit").data_unit;
        let written = agents::write_key_for(&drive, unit, true).await;
        (unit, (written.key.key_id, *written.key.value))
    };

    // An Auditor's export, kept off-site since: it names what happened after the backup.
    let (export, edited_export) = kept_audit_export(&cluster, &files).await;

    // The whole cluster is lost: every KMA stopped, every data dir deleted.
    let ca_pem = agents::ca_pem(&cluster);
    destroy_every_kma(&mut cluster).await;

    let fresh = cluster.root.path().join("kma-r");
    let key = PathBuf::from(format!("{}.key", data.display()));
    let other_key = PathBuf::from(format!("{}.key", other.display()));
    let good = [data.as_path(), key.as_path(), core.as_path()];
    refused_restores(&fresh, (&data, &key, &core), &other_key).await;
    restore_naming_the_destroyed_key(&fresh, &good, (&export, &edited_export), &destroyed).await;

    cluster.nodes = vec![Node::created(fresh.clone())];
    cluster.reader = KmaClient::node(&fresh).expect("the restored KMA's own client");
    cluster.restart(0).await;
    cluster.wait_ready(0).await;
    let restored = cluster.nodes[0].service.clone();
    let same_drive =
        AgentClient::from_credentials(std::slice::from_ref(&restored), &credentials, pinned())
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
    // Other KMAs join the restored one as usual (SPEC C4).
    cluster.admin = officer;
    cluster.add_node(2, super::support::no_change).await;
    cluster.wait_voters(2).await;
    let auditor = Ctl::new();
    auditor.login(&cluster, "default", "audrey", AUDITOR).await;
    auditor.ok(&["audit", "verify"], None).await;
    let export = auditor.ok(&["audit", "export"], None).await;
    let restore = export.lines().find(|l| l.contains("ClusterRestored")).expect("the restore");
    assert!(restore.contains("first.kmsdb"), "{restore}");
    assert!(restore.contains(&destroyed), "the audit log names the key brought back: {restore}");
    assert!(export.contains("BackupRecorded") || export.contains("RecordBackup"), "{export}");
}

/// `kma recover-from-lost-majority` as an operator runs it on a stopped survivor.
async fn kma_recover(dir: &Path, passphrases: &str) -> std::process::Output {
    let mut command = tokio::process::Command::new(KMA);
    command.arg("recover-from-lost-majority").arg("--data-dir").arg(dir);
    command.args(["--yes", "--passphrases-stdin"]);
    output_with_stdin(command, passphrases, "kma recover-from-lost-majority").await
}

/// Setup: three KMAs, a drive that wrote three tapes. Action: two KMAs killed and their data
/// dirs deleted (gone for good); the survivor stopped; a recovery with a wrong passphrase,
/// then with two members' passphrases; the survivor started; two fresh KMAs joined to it.
/// Expect: the refused recovery changes nothing; the survivor leads a cluster of one, then of
/// three; the lost KMAs are gone from the state; every tape's key reads the same from the new
/// KMAs, and drives get new write keys again. Then one lost KMA comes back unfenced (its data
/// dir was kept aside) while the recovered cluster is out of its reach: a drive that saw the
/// new epoch refuses it in the handshake, a drive that never did is served by it. (SPEC B7)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b7_a_survivor_of_a_lost_majority_becomes_a_cluster_of_one() {
    let mut cluster = Cluster::start(3, super::support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    let ca = agents::ca_pem(&cluster);
    let service = cluster.nodes[0].service.clone();
    let credentials = agents::enroll_drive1(&cluster, &service).await;
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
    }
    // kma1's disk comes back later, unfenced; kma2's is lost for good.
    let unfenced = cluster.nodes[0].data_dir.with_extension("unfenced");
    std::fs::rename(&cluster.nodes[0].data_dir, &unfenced).expect("kept aside");
    std::fs::remove_dir_all(&cluster.nodes[1].data_dir).expect("lost for good");
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
    assert!(stdout.contains("cluster of one") && stdout.contains("epoch 1"), "{stdout}");

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
    assert_eq!(drive.cluster_epoch_seen(), 1, "the KMAs of the recovered cluster are of epoch 1");
    cluster.stop(0).await;
    cluster.nodes.push(Node::created(unfenced));
    let lost = cluster.nodes.len() - 1;
    cluster.restart(lost).await;
    lost_kma_refused_by_epoch(&cluster.nodes[lost].service, &credentials, tapes[0].0).await;
}

/// A lost KMA that came back serves a drive that never saw the recovered cluster, and is
/// refused in the handshake by a drive that did (it kept the epoch it saw, SPEC B7).
async fn lost_kma_refused_by_epoch(
    service: &str,
    credentials: &agent_gateway::AgentCredentials,
    tape: statemachine::DataUnitId,
) {
    let pinned = |cluster_epoch_seen| agent_gateway::ClientOptions {
        discovery: false,
        cluster_epoch_seen,
        ..Default::default()
    };
    let addresses = [service.to_string()];
    let unaware = AgentClient::from_credentials(&addresses, credentials, pinned(0)).expect("drive");
    let served = wait_until(Duration::from_secs(60), "the lost KMA to serve", async || {
        unaware.keys(tape).await.map_err(|e| e.to_string())
    })
    .await;
    assert!(!served.keys.is_empty(), "the lost KMA hands out keys: the danger the epoch guards");
    let aware = AgentClient::from_credentials(&addresses, credentials, pinned(1)).expect("drive");
    let refused = aware.keys(tape).await.expect_err("a KMA of epoch 0 is refused").to_string();
    assert!(refused.contains("cluster epoch 0, older than epoch 1"), "{refused}");
}

/// Setup: one KMA with a drive's catalogue, so its pool keys wait in Generated (SPEC O4, O5);
/// its kma.toml names a backup directory and a ship command. Action: `kmsctl backup schedule
/// --interval 1m`. Expect: before any backup the status says a core security backup is due
/// and no pool key is Ready; the KMA takes a backup into the directory by itself, restores it
/// in a separate process, and records both: `kmsctl backup list` shows a scheduled backup
/// whose drill passed; the ship command got both files; the pool keys the backup holds are
/// Ready; the metrics say when the latest backup was taken and that no drill failed.
/// (SPEC B5, O5, B1)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b5_o5_a_scheduled_backup_is_drilled_and_readies_a_single_kmas_pool() {
    let mut cluster = Cluster::start(1, super::support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    wait_until(Duration::from_secs(30), "pool keys generated", async || {
        let status = cluster.status(0).await?;
        done_if(status.key_pool_generated > 0, format!("{status:?}"))
    })
    .await;
    let status = cluster.status(0).await.expect("status");
    assert_eq!(status.key_pool_ready, 0, "a single KMA's pool waits for a backup: {status:?}");
    assert_eq!(status.core_security_backup_due, Some(0), "{status:?}");

    let (scheduled, shipped) = with_backup_dir_and_ship_command(&mut cluster).await;
    cluster.restart(0).await;
    cluster.wait_ready(0).await;

    let bob = Command::CreateUser {
        id: "bob".into(),
        roles: RoleSet::of(Role::BackupOperator),
        passphrase_verifier: Vec::new(),
    };
    let officer = cluster.officer().await;
    agents::ok(&officer, &address, bob, Some(BACKUP_OPERATOR)).await;
    let operator = Ctl::new();
    operator.login(&cluster, "default", "bob", BACKUP_OPERATOR).await;
    operator.ok(&["backup", "schedule", "--interval", "1m"], None).await;
    let listed = wait_until(Duration::from_secs(90), "a drilled scheduled backup", async || {
        let listed = operator.json(&["backup", "list"]).await;
        let drilled = listed.as_array().into_iter().flatten().any(|row| {
            row["kind"] == "database" && row["taken_by"] == "" && row["drill"] == "passed"
        });
        done_if(drilled, listed)
    })
    .await;
    let row = listed.as_array().and_then(|rows| rows.first()).cloned().unwrap_or_default();
    let detail = row["drill_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("separate process") && detail.contains("matches"), "{row}");
    let file = row["file_name"].as_str().expect("file name");
    assert!(scheduled.join(file).is_file(), "{file} in the backup directory");
    assert!(scheduled.join(format!("{file}.key")).is_file(), "its key file beside it");
    // The ship command runs once the drill passed, beside the drill's record.
    wait_until(Duration::from_secs(30), "both files shipped", async || {
        let both = shipped.join(file).is_file() && shipped.join(format!("{file}.key")).is_file();
        done_if(both, ())
    })
    .await;
    let leftovers: Vec<_> = std::fs::read_dir(&scheduled)
        .expect("backup dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "no .part file stays behind: {leftovers:?}");
    let status = cluster.status(0).await.expect("status");
    assert!(status.key_pool_ready > 0, "the backup protects the pool keys it holds: {status:?}");

    let core = cluster.root.path().join("core.toml");
    operator.ok(&["backup", "core-security", "--out", core.to_str().expect("path")], None).await;
    let status = cluster.status(0).await.expect("status");
    assert_eq!(status.core_security_backup_due, None, "{status:?}");
    let ca = node::pki::read(&cluster.nodes[0].data_dir.join("tls/ca.pem")).expect("CA");
    let tls = node::transport::tls::anonymous_client_config(&ca).expect("TLS config");
    let http = node::kma::https_client(tls).expect("HTTPS client");
    let metrics = http.get(format!("https://{address}/metrics")).send().await.expect("metrics");
    let text = metrics.text().await.expect("metrics text");
    assert!(text.contains("kms_core_security_backup_due 0"), "{text}");
    assert!(text.contains("kms_backup_drill_failed 0"), "{text}");
    assert!(!text.contains("kms_backup_last_timestamp_seconds 0\n"), "{text}");
}

/// Setup: three KMAs and a fleet of four StorageTek drives that wrote, appended, read and
/// recycled tapes until its budget ran out. Action: a Backup Operator takes the core security
/// and a database backup with kmsctl; every KMA is killed and its data dir deleted; `kma
/// restore` with two members' passphrases onto an empty dir; `kma run`. Expect: `drive-sim
/// --verify`'s read-back, with the drives' own certificates, reads every record of every
/// tape written before the backup, through the restored KMA, with no verification failure.
/// (SPEC B2, B3, issue #17 point 9)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b3_every_tape_written_before_the_backup_reads_back_after_a_restore() {
    use agent_gateway::drive_sim::{run_fleet, verify_fleet, DriveMode, FleetConfig};
    let mut cluster = Cluster::start(3, super::support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (agents::DAY_MS, 2 * agents::DAY_MS)).await;
    let bob = Command::CreateUser {
        id: "bob".into(),
        roles: RoleSet::of(Role::BackupOperator),
        passphrase_verifier: Vec::new(),
    };
    agents::ok(&cluster.admin, &address, bob, Some(BACKUP_OPERATOR)).await;
    let credentials = agents::enroll_drive1(&cluster, &cluster.nodes[1].service).await;
    let drives = |addresses: &[String]| -> Vec<AgentClient> {
        (0..4)
            .map(|_| {
                let options = agent_gateway::ClientOptions::default();
                AgentClient::from_credentials(addresses, &credentials, options).expect("drive")
            })
            .collect()
    };
    let tapes = tempfile::tempdir().expect("tape dir");
    let config = FleetConfig {
        drives: 4,
        mode: DriveMode::StorageTek,
        tapes_per_drive: 2,
        block_len: 512,
        ops: Some(600),
        duration: None,
        tape_dir: tapes.path().to_path_buf(),
        seed: 17,
    };
    let written =
        run_fleet(drives(&cluster.services()), config.clone(), None).await.expect("the fleet ran");
    assert_eq!(written.verification_failures, 0, "{written}");
    assert!(written.records_written > 0, "{written}");

    let operator = Ctl::new();
    operator.login(&cluster, "default", "bob", BACKUP_OPERATOR).await;
    let files = cluster.root.path().join("offsite");
    std::fs::create_dir_all(&files).expect("offsite dir");
    let (core, data) = (files.join("core.toml"), files.join("fleet.kmsdb"));
    operator.ok(&["backup", "core-security", "--out", core.to_str().expect("path")], None).await;
    operator.ok(&["backup", "database", "--out", data.to_str().expect("path")], None).await;
    destroy_every_kma(&mut cluster).await;

    let fresh = cluster.root.path().join("kma-r");
    let key = PathBuf::from(format!("{}.key", data.display()));
    let output = kma_restore(&fresh, &[&data, &key, &core], MEMBERS).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "restore failed: {stderr}");
    cluster.nodes = vec![Node::created(fresh.clone())];
    cluster.reader = KmaClient::node(&fresh).expect("the restored KMA's own client");
    cluster.restart(0).await;
    cluster.wait_ready(0).await;
    let verified =
        verify_fleet(drives(&cluster.services()), config, None).await.expect("the read-back ran");
    println!("{verified}");
    assert_eq!(verified.verification_failures, 0, "{verified}");
    assert_eq!(verified.drives_given_up, 0, "{verified}");
    assert!(verified.records_verified > 0, "{verified}");
}

/// Setup: one KMA with a drive's catalogue and a Backup Operator. Action: rounds of `kmsctl
/// backup database`, the KMA killed (SIGKILL) the moment its `.part` file appears in its
/// staging directory (the backup half written) or, in alternate rounds, once the staged backup
/// is complete but perhaps not yet kept; the KMA restarted after each. Expect: each run either
/// succeeds (its files kept and the backup listed) or fails leaving no `.part` file and no
/// listed backup; the restarted KMA removed what it had staged; at least one kill landed
/// mid-write; a backup taken afterwards is listed. (SPEC B2; issue 17, "killed during a
/// backup")
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b2_a_kma_killed_during_a_backup_leaves_no_partial_file_listed() {
    let mut cluster = Cluster::start(1, super::support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    backup_operator_and_auditor(&cluster, &address).await;
    let operator = Ctl::new();
    operator.login(&cluster, "default", "bob", BACKUP_OPERATOR).await;
    let files = cluster.root.path().join("offsite");
    std::fs::create_dir_all(&files).expect("offsite dir");
    let staging = cluster.nodes[0].data_dir.join("backups");
    let (mut mid_write, mut listed) = (0, 0);
    for round in 0..8 {
        let out = files.join(format!("round{round}.kmsdb"));
        let wanted = if round % 2 == 0 { ".part" } else { ".kmsdb" };
        let (caught, succeeded) = kill_when_staged(&mut cluster, &operator, &out, wanted).await;
        mid_write += usize::from(caught);
        eprintln!("round {round}: killed on {wanted}: half written {caught}, kept {succeeded}");
        cluster.restart(0).await;
        cluster.wait_ready(0).await;
        let leftovers: Vec<_> = std::fs::read_dir(&staging)
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "round {round}: staged files left: {leftovers:?}");
        let part = PathBuf::from(format!("{}.part", out.display()));
        assert!(!part.exists(), "round {round}: kmsctl left {}", part.display());
        let rows = operator.json(&["backup", "list"]).await;
        let named =
            rows.as_array().into_iter().flatten().any(|row| {
                row["file_name"].as_str() == out.file_name().and_then(|name| name.to_str())
            });
        assert_eq!(named, succeeded, "round {round}: listed only if kmsctl kept it: {rows}");
        listed += usize::from(named);
        if mid_write >= 2 {
            break;
        }
    }
    assert!(mid_write >= 1, "no kill landed while a backup was being written");
    let after = files.join("after.kmsdb");
    operator.ok(&["backup", "database", "--out", after.to_str().expect("path")], None).await;
    listed_by(&operator, listed + 1, "bob").await;
}

/// Runs `kmsctl backup database --out OUT` and kills the KMA as soon as a file ending in
/// `wanted` shows in its staging directory (or when kmsctl ends first); whether that file was
/// seen and the kill left a half-written (`.part`) backup, and whether kmsctl succeeded.
async fn kill_when_staged(
    cluster: &mut Cluster,
    operator: &Ctl,
    out: &Path,
    wanted: &'static str,
) -> (bool, bool) {
    let staging = cluster.nodes[0].data_dir.join("backups");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let watch = tokio::task::spawn_blocking(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let seen = std::fs::read_dir(&staging)
                .into_iter()
                .flatten()
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().ends_with(wanted));
            if seen {
                return true;
            }
            std::thread::yield_now();
        }
        false
    });
    let args = ["backup", "database", "--out", out.to_str().expect("path")];
    let run = operator.run(&args, None);
    tokio::pin!(run);
    let (caught, output) = tokio::select! {
        seen = watch => {
            let caught = seen.expect("watcher");
            cluster.kill9(0).await;
            (caught, run.await)
        }
        output = &mut run => {
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            cluster.kill9(0).await;
            (false, output)
        }
    };
    // A `.part` file left by the killed KMA: it died in the middle of writing the backup.
    let staging = cluster.nodes[0].data_dir.join("backups");
    let half_written = std::fs::read_dir(&staging)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| entry.file_name().to_string_lossy().ends_with(".part"));
    (caught && half_written, output.status.success())
}

/// A quorum operation started with `kmsctl quorum start KIND TARGET`, approved by two members
/// with `kmsctl quorum approve`, as the runbooks type it.
async fn quorum_approves(officer: &Ctl, kind: &str, target: &str) {
    let started = officer.json(&["quorum", "start", kind, target]).await;
    let id = started["detail"]["quorum_operation"].as_u64().expect("operation id").to_string();
    let index = started["index"].as_u64().expect("index").to_string();
    for (member, passphrase) in [("q1", "member-one-passphrase"), ("q2", "member-two-passphrase")] {
        let args =
            ["quorum", "approve", "--member", member, "--min-index", &index, "--passphrase-stdin"];
        let mut args = args.to_vec();
        args.push(&id);
        officer.ok(&args, Some(&format!("{passphrase}\n"))).await;
    }
}

/// Setup: two KMAs; a drive that wrote a tape through kma1. Action: runbook 1, step 3, with
/// the binaries an operator types: `kmsctl kma create`, `kmsctl quorum start join-kma` and two
/// approvals, `kma join` on the new machine (which joins, then serves), stopped and started
/// again with `kma run`, then the quorum unlocks it. Expect: kma3 is a member and unlocked,
/// and the drive reads the tape's key through kma3 alone. (SPEC C4; docs/operations.md)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c4_runbook_1_a_replacement_kma_joins_through_the_binaries() {
    let mut cluster = Cluster::start(2, super::support::no_change).await;
    let address = cluster.nodes[0].address.clone();
    agents::catalogue(&cluster, &address, (30 * agents::DAY_MS, 365 * agents::DAY_MS)).await;
    let credentials = agents::enroll_drive1(&cluster, &cluster.nodes[0].service).await;
    let pinned = |at: &str| {
        let options = agent_gateway::ClientOptions { discovery: false, ..Default::default() };
        AgentClient::from_credentials(&[at.to_string()], &credentials, options).expect("drive")
    };
    let (tape, key) = agents::write_key(&pinned(&cluster.nodes[0].service), "TAPE01").await;

    let officer = Ctl::new();
    officer.login(&cluster, "default", "admin", super::OFFICER).await;
    officer
        .ok(&["kma", "create", "kma3", "--site", "east", "--passphrase-stdin"], Some("kma-three\n"))
        .await;
    quorum_approves(&officer, "join-kma", "kma3").await;
    let data_dir = cluster.root.path().join("kma3");
    kma_join(&data_dir, &address, "kma-three", &cluster.ca_fingerprint()).await;
    cluster.nodes.push(Node::created(data_dir));
    cluster.restart(2).await;
    // It is a member once it has caught up; only then may the quorum unlock it.
    wait_until(Duration::from_secs(60), "kma3 to be a member", async || {
        let kmas = officer.json(&["kma", "list"]).await;
        let kma3 = kmas.as_array().into_iter().flatten().find(|k| k["name"] == "kma3").cloned();
        done_if(kma3.is_some_and(|k| k["status"] == "member"), kmas.to_string())
    })
    .await;
    quorum_approves(&officer, "unlock-kma", "kma3").await;
    let replacement = pinned(&cluster.nodes[2].service);
    let keys = wait_until(Duration::from_secs(60), "kma3 to serve the tape's key", async || {
        replacement.keys(tape).await.map_err(|e| e.to_string())
    })
    .await;
    assert!(keys.keys.iter().any(|k| *k.value == key), "the tape's key, from kma3");
    let kmas = officer.json(&["kma", "list"]).await;
    let kma3 = kmas.as_array().into_iter().flatten().find(|k| k["name"] == "kma3").cloned();
    let kma3 = kma3.unwrap_or_default();
    assert_eq!((&kma3["status"], &kma3["locked"]), (&"member".into(), &false.into()), "{kmas}");
}

/// `kma join` as the runbook types it; it joins, then serves: stopped (SIGTERM) once it
/// reports its listeners, to be started again with `kma run`.
async fn kma_join(data_dir: &Path, peer: &str, passphrase: &str, fingerprint: &str) {
    let passphrase_file = data_dir.with_extension("passphrase");
    std::fs::write(&passphrase_file, format!("{passphrase}\n")).expect("passphrase file");
    let mut child = tokio::process::Command::new(KMA)
        .args(["join", "--name", "kma3", "--site", "east"])
        .args(["--management", "127.0.0.1:0", "--service", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--peer", peer, "--ca-fingerprint", fingerprint])
        .arg("--passphrase-file")
        .arg(&passphrase_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kma join runs");
    wait_until(Duration::from_secs(60), "kma join to join and listen", async || {
        if let Some(exit) = child.try_wait().expect("status") {
            panic!("kma join exited ({exit}) before it served");
        }
        done_if(data_dir.join("listening.toml").exists(), "not listening yet".to_string())
    })
    .await;
    let pid = child.id().expect("running").to_string();
    let _ = std::process::Command::new("kill").arg(pid).status();
    let stopped = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    assert!(stopped.is_ok_and(|status| status.is_ok()), "kma join stops on SIGTERM");
}
