//! drive-sim against fake KMAs serving the real gateway through real TLS (SPEC A2–A4): fleets
//! in both drive modes read back every record they wrote, a damaged tape is caught, and a
//! drive retries what the cluster refused.

mod support;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent_gateway::client::enroll;
use agent_gateway::drive_sim::tape::{self, HEADER_LEN};
use agent_gateway::drive_sim::{
    run_fleet, verify_fleet, DriveMode, FleetConfig, FleetReport, OpKind,
};
use agent_gateway::AgentClient;
use support::*;

/// A fresh directory for one test's tapes.
fn tape_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drive-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Two fake KMAs sharing one state, drive1 enrolled; the client knows only the first and
/// learns the second through discovery.
async fn two_kmas() -> (Arc<Cluster>, [Arc<FakeKma>; 2], AgentClient) {
    let cluster = Cluster::new();
    let first = FakeKma::new(&cluster);
    let second = FakeKma::new(&cluster);
    let first_address = start(&first).await;
    let second_address = start(&second).await;
    list(&cluster, "kma1", "east", &first_address, true);
    list(&cluster, "kma2", "east", &second_address, true);
    let credentials =
        enroll(&first_address, &cluster.ca.pem, AGENT, PASSPHRASE).await.expect("enroll");
    let client = client(&[&first_address], &credentials);
    (cluster, [first, second], client)
}

fn config(name: &str, mode: DriveMode, drives: usize, tapes_per_drive: usize) -> FleetConfig {
    FleetConfig {
        drives,
        mode,
        tapes_per_drive,
        block_len: 512,
        ops: Some(60),
        duration: Some(Duration::from_secs(60)),
        tape_dir: tape_dir(name),
        seed: 17,
    }
}

/// Records on disk under `config`, counted from the tape files.
fn records_on_disk(config: &FleetConfig) -> u64 {
    let mut records = 0;
    for drive in 0..config.drives {
        for tape in 0..config.tapes_per_drive {
            let Ok(bytes) = std::fs::read(config.tape_path(drive, tape)) else { continue };
            let body = bytes.len() - HEADER_LEN;
            assert_eq!(body % tape::record_len(config.block_len), 0, "whole records only");
            records += (body / tape::record_len(config.block_len)) as u64;
        }
    }
    records
}

fn assert_clean(report: &FleetReport) {
    assert_eq!(report.verification_failures, 0, "{report}");
    assert_eq!(report.errors, 0, "{report}");
}

/// Runs 60 operations on 3 drives of 2 tapes each (6 tapes, within the fake pool of 12 keys,
/// since a tape keeps its protect-and-process key), then reads every tape once more.
async fn fleet_reads_back_what_it_wrote(name: &str, mode: DriveMode) {
    let (_cluster, _kmas, client) = two_kmas().await;
    let config = config(name, mode, 3, 2);

    let report = run_fleet(vec![client.clone()], config.clone(), None).await.expect("fleet");

    println!("{report}");
    assert_clean(&report);
    assert_eq!(report.ops, 60, "{report}");
    assert!(report.by_kind[&OpKind::WriteFromBot].ops > 0, "{report}");
    assert!(report.by_kind[&OpKind::Read].ops > 0, "{report}");
    assert!(report.records_verified > 0, "{report}");
    assert!(report.requests > 0 && report.p50_ms > 0.0, "{report}");
    assert!(report.p50_ms <= report.p99_ms && report.p99_ms <= report.p999_ms, "{report}");
    let table = report.to_string();
    assert!(table.contains("write from BOT") && table.contains("verification failures 0"));
    let verified = verify_fleet(vec![client], config.clone(), None).await.expect("verify");
    assert_clean(&verified);
    assert_eq!(verified.records_verified, records_on_disk(&config), "{verified}");
    let _ = std::fs::remove_dir_all(&config.tape_dir);
}

/// Setup: two KMAs, StorageTek drives (keys prefetched on mount, disassociation on write from
/// BOT). Action: a random mix of 60 operations, then a read of every tape. Expectation: reads
/// happened, every record decrypted to what was written, no errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_storagetek_fleet_reads_back_every_record() {
    fleet_reads_back_what_it_wrote("stk", DriveMode::StorageTek).await;
}

/// Setup: two KMAs, LTO4 drives (a key fetched by ID while reading, a write key on every
/// append). Action and expectation as for StorageTek drives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_lto4_fleet_reads_back_every_record() {
    fleet_reads_back_what_it_wrote("lto4", DriveMode::Lto4).await;
}

/// Setup: one drive writes its one tape. Action: a byte of the last record is flipped on
/// disk, and the tape is read. Expectation: exactly that record is a verification failure, in
/// both modes; the others still verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_damaged_tape_counts_a_verification_failure() {
    for (name, mode) in [("tamper-stk", DriveMode::StorageTek), ("tamper-lto4", DriveMode::Lto4)] {
        let (_cluster, _kmas, client) = two_kmas().await;
        let config = FleetConfig { ops: Some(3), ..config(name, mode, 1, 1) };
        let report = run_fleet(vec![client.clone()], config.clone(), None).await.expect("fleet");
        assert_clean(&report);
        let records = records_on_disk(&config);
        assert!(records > 0, "the first operation on a blank tape writes it");

        let path = config.tape_path(0, 0);
        let mut bytes = std::fs::read(&path).expect("tape");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).expect("tamper");
        let verified = verify_fleet(vec![client], config.clone(), None).await.expect("verify");

        assert_eq!(verified.verification_failures, 1, "{mode}: {verified}");
        assert_eq!(verified.records_verified, records - 1, "{mode}: {verified}");
        assert_eq!(verified.errors, 0, "{mode}: {verified}");
        let _ = std::fs::remove_dir_all(&config.tape_dir);
    }
}

/// Setup: both KMAs have no majority (every write refused, retryable) for its first 600 ms.
/// Action: a StorageTek drive runs 10 operations. Expectation: the refused operations count
/// as errors, not verification failures, and are retried: all 10 complete once writes work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_drive_retries_what_the_cluster_refused() {
    let (_cluster, kmas, client) = two_kmas().await;
    // Both must refuse, or the client just fails over to the other.
    for kma in &kmas {
        kma.partitioned.store(true, Ordering::SeqCst);
    }
    let config = FleetConfig { ops: Some(10), ..config("retry", DriveMode::StorageTek, 1, 2) };
    let heal = {
        let kmas = kmas.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            for kma in &kmas {
                kma.partitioned.store(false, Ordering::SeqCst);
            }
        })
    };
    let report = run_fleet(vec![client], config.clone(), None).await.expect("fleet");
    heal.await.expect("heal");

    assert_eq!(report.verification_failures, 0, "{report}");
    assert!(report.errors > 0, "{report}");
    assert_eq!(report.ops, 10, "{report}");
    let _ = std::fs::remove_dir_all(&config.tape_dir);
}

/// Runs the `drive-sim` binary; returns its exit code and stdout.
async fn drive_sim(args: &[String]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_drive-sim"))
        .args(args)
        .output()
        .await
        .expect("drive-sim runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.code() != Some(1), "drive-sim failed: {stdout}\n{stderr}");
    (output.status.code(), stdout)
}

/// Setup: one fake KMA, agent drive1 not enrolled yet. Action: `drive-sim` enrolls it (saving
/// its certificate), runs 20 LTO4 operations and reads every tape back (`--verify`); a byte of
/// a tape is flipped, and a second run, with the saved certificate and no operation, reads the
/// tapes again. Expectation: the first run prints the table and exits 0; the second counts the
/// damaged record and exits 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_drive_sim_binary_enrolls_runs_and_fails_on_a_damaged_tape() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    list(&cluster, "kma1", "east", &address, true);
    let dir = tape_dir("binary");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(file("ca.pem"), &cluster.ca.pem).expect("CA file");
    std::fs::write(file("passphrase"), format!("{PASSPHRASE}\n")).expect("passphrase file");
    let common = |ops: &str| -> Vec<String> {
        let args = ["--kma", &address, "--ca", &file("ca.pem"), "--mode", "lto4", "--drives"];
        let more = ["2", "--tapes-per-drive", "2", "--block-len", "256", "--ops", ops];
        let tail = ["--tape-dir", &file("tapes"), "--verify", "--quiet"];
        args.iter().chain(&more).chain(&tail).map(|arg| (*arg).to_owned()).collect()
    };
    let credentials = ["--cert", &file("drive1.pem"), "--key", &file("drive1.key")];
    let credentials: Vec<String> = credentials.iter().map(|arg| (*arg).to_owned()).collect();

    let mut first = common("20");
    first.extend(["--agent", AGENT, "--passphrase-file", &file("passphrase")].map(String::from));
    first.extend(credentials.clone());
    let (code, stdout) = drive_sim(&first).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("20 ops") && stdout.contains("verification failures 0"), "{stdout}");

    println!("{stdout}");
    let written = (0..4).map(|n| tape::path_for(&dir.join("tapes"), &format!("T{n:05}")));
    let mut tapes = written.filter_map(|path| Some((std::fs::read(&path).ok()?, path)));
    let (mut bytes, path) =
        tapes.find(|(bytes, _)| bytes.len() > HEADER_LEN).expect("a tape with records");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&path, &bytes).expect("tamper");
    let mut second = common("0");
    second.extend(credentials);
    let (code, stdout) = drive_sim(&second).await;
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.contains("verification failures 1"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
