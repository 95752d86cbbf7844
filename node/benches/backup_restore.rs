//! Database backup and restore at one million keys (issue #17, point 6; SPEC B6). Prints one
//! table (state size, backup time, backup file size, restore time, peak memory of each phase)
//! and the latency of local reads with and without a backup running, with the verdicts.
//!
//! Run: `cargo bench -p node --bench backup_restore` (`KEYS=100000` for a shorter run; the
//! default is 1,000,000 keys and as many data units).
//!
//! The state (KEYS pool keys, KEYS data units, a write key assigned to each) is built in memory
//! through `State::apply`, as the statemachine's `apply` bench builds its own, then made into a
//! real RocksDB data dir by restoring a plain backup stream of it, and opened as a KMA opens its
//! data dir (`raft_storage::open_stores`). On that:
//! - **backup** is what `kmsctl backup database` makes a KMA do (`node::backup`): the data
//!   file's header, the state streamed by `StateHandle::export_backup` through the backup key's
//!   sealer into a `.part` file whose SHA-256 is computed on the way, the checksum, fsync,
//!   rename and fsync of the directory;
//! - **restore** is what `kma restore` does with that file, in a process of its own (this
//!   executable again): one pass to check its SHA-256
//!   (`CheckedDataFile::open`), then the sealed stream opened under the backup key into a new
//!   data dir (`restore_data_dir`), with the restore's own `RestoreCluster` command (and the
//!   state's SHA-256 it carries). Left out: wrapping and unwrapping the backup key (one AEAD
//!   call each) and issuing the restored KMA's certificate;
//! - **reads**: one task on the tokio runtime does what a drive's `GET keys of a data unit`
//!   does on the KMA (`StateHandle::read`, then `State::keys_for_data_unit` for a random data
//!   unit), one read after another, first for a few seconds with nothing else running, then
//!   while the backup runs (the export works on a blocking thread, as in a KMA). Each read's
//!   latency goes into a histogram with 1.6% resolution.
//!
//! Peak memory is VmHWM from /proc/self/status; the bench resets it at the start of each phase
//! (by writing 5 to /proc/self/clear_refs), so each row's peak is that phase's own.
//!
//! Targets (SPEC B6): a restore of 1,000,000 keys in under 60 s; read p99 during a backup at
//! most twice the idle p99. Any failed phase or read ends the bench with a non-zero status.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use node::backup::files::{CheckedDataFile, DataFileHeader, HashingWriter};
use node::backup::{part_path, sync_parent};
use raft_storage::backup::{restore_data_dir, BackupSummary, Restored};
use raft_storage::StateHandle;
use rand::{Rng, SeedableRng};
use security_core::backup_file::{BackupKey, BackupOpener, BackupSealer};
use statemachine::DataUnitId;

#[path = "support/phases.rs"]
mod phases;
#[path = "support/scale_state.rs"]
mod scale_state;
use phases::{async_phase, phase, Phase, MIB};
use scale_state::{
    build_state, keys_from_env, make_data_dir, restore_cluster, ADDRESS, CLUSTER, READER, START_MS,
};

const KEYS_DEFAULT: u64 = 1_000_000;
/// How long the reads are measured with nothing else running.
const IDLE_READS: Duration = Duration::from_secs(3);
/// SPEC B6: a restore of 1,000,000 keys takes under a minute.
const RESTORE_SECS_MAX: f64 = 60.0;
const RESTORE_TARGET_KEYS: u64 = 1_000_000;
/// SPEC B6: a backup at most doubles the p99 of local reads.
const READ_P99_RATIO_MAX: f64 = 2.0;

/// Read latencies in 64 buckets per power of two: a value is known within 1/64 (1.6%).
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

const SUB_BITS: u32 = 6;
const SUBS: u64 = 1 << SUB_BITS;

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: vec![0; (64 * SUBS) as usize], total: 0, max_ns: 0 }
    }

    fn bucket(ns: u64) -> usize {
        if ns < SUBS {
            return ns as usize;
        }
        let shift = 63 - ns.leading_zeros() - SUB_BITS;
        (((u64::from(shift) + 1) << SUB_BITS) + ((ns >> shift) & (SUBS - 1))) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn upper_ns(i: usize) -> u64 {
        let i = i as u64;
        if i < SUBS {
            return i;
        }
        let shift = (i >> SUB_BITS) - 1;
        ((SUBS + (i & (SUBS - 1)) + 1) << shift) - 1
    }

    fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The `q` quantile (0 < q <= 1), rounded up to its bucket's upper end.
    fn quantile_us(&self, q: f64) -> f64 {
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::upper_ns(i).min(self.max_ns) as f64 / 1000.0;
            }
        }
        self.max_ns as f64 / 1000.0
    }
}

/// What the reader measured in one phase.
struct Reads {
    histogram: Histogram,
    secs: f64,
}

/// Phases of the reader: it records into `phases[phase]` and stops at `READS_STOP`.
const READS_IDLE: usize = 0;
const READS_DURING_BACKUP: usize = 1;
const READS_STOP: usize = 2;

/// A drive's local read in a loop: the state's read lock, then the keys of a random data unit.
async fn read_loop(
    handle: StateHandle,
    units: Arc<Vec<DataUnitId>>,
    phase: Arc<AtomicUsize>,
    now_ms: u64,
) -> anyhow::Result<Vec<Reads>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut reads: Vec<Reads> =
        (0..READS_STOP).map(|_| Reads { histogram: Histogram::new(), secs: 0.0 }).collect();
    let mut current = phase.load(Ordering::Acquire);
    let mut phase_started = Instant::now();
    while current < READS_STOP {
        let data_unit = &units[rng.gen_range(0..units.len())];
        let started = Instant::now();
        let found = {
            let state = handle.read().await;
            state.keys_for_data_unit(READER, data_unit, now_ms).map(|keys| keys.len())
        };
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match found {
            Ok(1) => reads[current].histogram.record(ns),
            Ok(n) => bail!("data unit {data_unit:?} has {n} keys for {READER}, not 1"),
            Err(reject) => bail!("reading the keys of {data_unit:?}: {reject}"),
        }
        tokio::task::yield_now().await;
        let next = phase.load(Ordering::Acquire);
        if next != current {
            reads[current].secs = phase_started.elapsed().as_secs_f64();
            phase_started = Instant::now();
            current = next;
        }
    }
    Ok(reads)
}

/// A database backup as a KMA takes it (`node::backup::take_database_backup`); returns what
/// the stream held and the file's size.
async fn backup(
    handle: &StateHandle,
    path: &Path,
    key: &BackupKey,
    prefix: &[u8],
) -> anyhow::Result<(BackupSummary, u64)> {
    let part = part_path(path);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .with_context(|| format!("create {}", part.display()))?;
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    out.write_all(prefix).context("write the header")?;
    let sealer = BackupSealer::new(out, key, prefix).context("start the sealer")?;
    let (sealer, summary) = handle.export_backup(sealer).await.context("export the state")?;
    let mut out = sealer.finish().context("seal the last chunk")?;
    let checksum = out.digest();
    out.write_all(&checksum).context("write the checksum")?;
    out.flush().context("flush the backup file")?;
    let bytes = out.bytes;
    let file = out.inner.into_inner().map_err(|e| e.into_error()).context("flush the file")?;
    file.sync_all().context("fsync the backup file")?;
    std::fs::rename(&part, path).context("rename the backup file")?;
    sync_parent(path).context("fsync the backup directory")?;
    Ok((summary, bytes))
}

/// A restore as `kma restore` does it: check the file's SHA-256, then open and restore.
fn restore(path: &Path, key: &BackupKey, dir: &Path) -> anyhow::Result<Restored> {
    let checked = CheckedDataFile::open(path).context("check the backup file")?;
    let sealed = checked.sealed().context("open the sealed stream")?;
    let opened =
        BackupOpener::new(sealed, key, &checked.prefix).context("open the sealed stream")?;
    let uuid = checked.header.backup_uuid;
    let restored = restore_data_dir(dir, opened, ADDRESS, |state, index| {
        restore_cluster(state, index, "kma-b", uuid)
    })
    .context("restore the backup")?;
    Ok(restored)
}

/// Set for the restore's own process: the backup file and the data dir to make.
const RESTORE_FILE_ENV: &str = "BACKUP_RESTORE_BENCH_FILE";
const RESTORE_DIR_ENV: &str = "BACKUP_RESTORE_BENCH_DIR";
/// The line the restore's process prints for the bench.
const RESTORED_LINE: &str = "restored";

/// Runs the restore in a process of its own, as `kma restore` is, so that its peak memory is
/// its own and not hidden by the heap this process freed earlier. The backup key goes to it
/// on its standard input (hex), as to a restore drill.
fn restore_in_own_process(
    path: &Path,
    key: &BackupKey,
    dir: &Path,
) -> anyhow::Result<(Phase, ([u8; 32], u64))> {
    let exe = std::env::current_exe().context("find this bench's executable")?;
    let mut child = std::process::Command::new(exe)
        .env(RESTORE_FILE_ENV, path)
        .env(RESTORE_DIR_ENV, dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("start the restore's process")?;
    let mut stdin = child.stdin.take().context("the restore's standard input")?;
    stdin.write_all(hex::encode(*key.to_bytes()).as_bytes()).context("send the backup key")?;
    drop(stdin);
    let output = child.wait_with_output().context("wait for the restore's process")?;
    if !output.status.success() {
        bail!("the restore's process failed ({}): its error is above", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix(RESTORED_LINE)).context("no result")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [secs, rss, hwm_before, hwm_after, reset, sha256, index] = fields[..] else {
        bail!("the restore's process printed {line:?}");
    };
    let phase = Phase {
        name: "restore, own process (SHA-256 pass, open, data dir)",
        secs: secs.parse()?,
        hwm_before_kb: hwm_before.parse()?,
        rss_before_kb: rss.parse()?,
        hwm_after_kb: hwm_after.parse()?,
        peak_reset: reset.parse()?,
        file_bytes: None,
    };
    let sha256: [u8; 32] = hex::decode(sha256)?.try_into().map_err(|_| anyhow!("a SHA-256"))?;
    Ok((phase, (sha256, index.parse()?)))
}

/// The restore's process: restores `file` into `dir` and prints one line for the bench.
fn restore_child(file: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut hex_key = String::new();
    std::io::stdin().read_line(&mut hex_key).context("read the backup key")?;
    let bytes: [u8; 32] = hex::decode(hex_key.trim())?
        .try_into()
        .map_err(|_| anyhow!("the backup key is not 32 bytes"))?;
    let key = BackupKey::from_bytes(&bytes);
    let (restored, p) = phase("restore", || restore(file, &key, dir))?;
    println!(
        "{RESTORED_LINE} {} {} {} {} {} {} {}",
        p.secs,
        p.rss_before_kb,
        p.hwm_before_kb,
        p.hwm_after_kb,
        p.peak_reset,
        hex::encode(restored.backup.state_sha256),
        restored.backup.covers_index
    );
    Ok(())
}

/// The data file's header, as a KMA writes it (the CA certificate is a stand-in of about the
/// size of a real one).
fn header_prefix() -> Vec<u8> {
    DataFileHeader {
        cluster_id: CLUSTER.0,
        backup_uuid: rand::random(),
        taken_at_ms: START_MS,
        taken_on_kma: "kma1".into(),
        ca_certificate_pem: format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            "A".repeat(600)
        ),
    }
    .prefix()
}

/// What the run measured, for the report.
struct Report {
    keys: usize,
    data_units: usize,
    state_bytes: u64,
    phases: Vec<Phase>,
    reads: Vec<Reads>,
}

fn main() -> anyhow::Result<()> {
    if let (Ok(file), Ok(dir)) = (std::env::var(RESTORE_FILE_ENV), std::env::var(RESTORE_DIR_ENV)) {
        return restore_child(Path::new(&file), Path::new(&dir));
    }
    let keys = keys_from_env(KEYS_DEFAULT, 2_000_000)?;
    let work = tempfile::Builder::new().prefix("backup-restore-bench").tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut phases = Vec::new();

    let ((state, units, now_ms), built) =
        phase("build the state in memory (apply)", || build_state(keys))?;
    phases.push(built);
    let (key_count, unit_count) = (state.keys().len(), state.data_units().len());
    let dir_a = work.path().join("kma-a");
    let stream_path = work.path().join("plain.stream");
    let (_, made) = phase("make a data dir of it (untimed setup)", || {
        make_data_dir(state, &stream_path, &dir_a)
    })?;
    phases.push(made);
    let ((_data_dir, _log_store, state_machine), opened) =
        phase("open the data dir (load its snapshot)", || Ok(raft_storage::open_stores(&dir_a)?))?;
    phases.push(opened);
    let handle = state_machine.state();

    let key = BackupKey::generate();
    let path = work.path().join("bench.kmsdb");
    let (measured, reads) =
        runtime.block_on(backup_under_reads(&handle, units, now_ms, &path, &key))?;
    phases.push(measured.1);
    let summary = measured.0;

    let dir_b = work.path().join("kma-b");
    let (restored_phase, restored) = restore_in_own_process(&path, &key, &dir_b)?;
    phases.push(restored_phase);
    if restored != (summary.state_sha256, summary.covers_index) {
        bail!("the restored state is not the one backed up (SHA-256 and index {restored:?})");
    }
    let report = Report {
        keys: key_count,
        data_units: unit_count,
        state_bytes: summary.state_bytes,
        phases,
        reads,
    };
    print_report(&report, keys);
    Ok(())
}

/// Reads while idle, then the backup with reads beside it.
async fn backup_under_reads(
    handle: &StateHandle,
    units: Vec<DataUnitId>,
    now_ms: u64,
    path: &Path,
    key: &BackupKey,
) -> anyhow::Result<((BackupSummary, Phase), Vec<Reads>)> {
    let prefix = header_prefix();
    let read_phase = Arc::new(AtomicUsize::new(READS_IDLE));
    let reader =
        tokio::spawn(read_loop(handle.clone(), Arc::new(units), read_phase.clone(), now_ms));
    tokio::time::sleep(IDLE_READS).await;
    read_phase.store(READS_DURING_BACKUP, Ordering::Release);
    let measured =
        async_phase("backup (export, seal, fsync)", backup(handle, path, key, &prefix)).await;
    read_phase.store(READS_STOP, Ordering::Release);
    let reads = reader.await.context("the reader task panicked")??;
    let ((summary, bytes), mut phase) = measured?;
    phase.file_bytes = Some(bytes);
    Ok(((summary, phase), reads))
}

fn print_report(report: &Report, keys: u64) {
    println!(
        "backup/restore bench: {} keys, {} data units (each with a write key), state encoding \
         {:.1} MiB, 2 tokio workers",
        report.keys,
        report.data_units,
        report.state_bytes as f64 / MIB
    );
    println!(
        "| phase | time s | file MiB | RSS at start MiB | VmHWM at start MiB | \
         peak RSS in phase MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for p in &report.phases {
        let file = p.file_bytes.map_or(String::new(), |b| format!("{:.1}", b as f64 / MIB));
        let peak = if p.peak_reset { "" } else { " (not reset: since start)" };
        println!(
            "| {} | {:.2} | {file} | {:.0} | {:.0} | {:.0}{peak} |",
            p.name,
            p.secs,
            p.rss_before_kb as f64 / 1024.0,
            p.hwm_before_kb as f64 / 1024.0,
            p.hwm_after_kb as f64 / 1024.0
        );
    }
    println!();
    println!(
        "| local reads (one task, keys of a random data unit) | reads | reads/s | p50 µs | \
         p99 µs | max µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, reads) in ["idle", "during the backup"].iter().zip(&report.reads) {
        let h = &reads.histogram;
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.0} |",
            h.total,
            h.total as f64 / reads.secs.max(f64::MIN_POSITIVE),
            h.quantile_us(0.5),
            h.quantile_us(0.99),
            h.max_ns as f64 / 1000.0
        );
    }
    print_targets(report, keys);
}

fn print_targets(report: &Report, keys: u64) {
    let restore_secs = report.phases.last().map_or(f64::NAN, |p| p.secs);
    let verdict = |met: bool| if met { "met" } else { "NOT MET" };
    if keys >= RESTORE_TARGET_KEYS {
        println!(
            "target: restore of {RESTORE_TARGET_KEYS} keys under {RESTORE_SECS_MAX} s: \
             {restore_secs:.1} s, {}",
            verdict(restore_secs < RESTORE_SECS_MAX)
        );
    } else {
        println!(
            "target: restore of {RESTORE_TARGET_KEYS} keys under {RESTORE_SECS_MAX} s: not judged, \
             this run has {keys} keys ({restore_secs:.1} s)"
        );
    }
    let idle_p99 = report.reads[READS_IDLE].histogram.quantile_us(0.99);
    let backup_p99 = report.reads[READS_DURING_BACKUP].histogram.quantile_us(0.99);
    let ratio = backup_p99 / idle_p99;
    println!(
        "target: read p99 during backup at most {READ_P99_RATIO_MAX}x idle: {backup_p99:.2} / \
         {idle_p99:.2} µs = {ratio:.2}x, {}",
        verdict(ratio <= READ_P99_RATIO_MAX)
    );
}
