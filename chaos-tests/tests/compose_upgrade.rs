//! A rolling upgrade under load, and a half-done one rolled back (SPEC C7, issue 20 point 4): the
//! three KMAs of the compose cluster start on the `kma` of an older commit and move to the
//! current one, one container at a time, while drives write and read tapes and an administrator
//! writes users.
//!
//! Not in CI's test command: it needs a second build, the `kma` of the older commit (a cold
//! build of about 20 minutes, in its own target dir). Run it with
//! `bash scripts/upgrade-test.sh [COMMIT]` (default 160ce5d, the commit at which issue 20
//! started): it builds the current binaries and the old one (`scripts/build-kma-at.sh`), then
//! runs `KMS_OLD_KMA=<old kma> cargo test --release --workspace --test compose_upgrade --
//! --ignored --nocapture`. Needs Docker Engine and docker-compose, like the other compose tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_gateway::drive_sim::{
    run_fleet, verify_fleet, DriveMode, FleetConfig, FleetError, FleetReport,
};
use agent_gateway::{AgentClient, AgentCredentials};
use chaos_tests::agents;
use chaos_tests::cluster::{DockerCluster, Layout, SERVICES};
use chaos_tests::workload::{Acked, Writer};
use indicatif::ProgressBar;
use node::wire::NodeStatus;
use tokio::process::Command;
use tokio::task::JoinHandle;

/// The path of the older `kma` (`scripts/build-kma-at.sh` prints it).
const OLD_KMA_VAR: &str = "KMS_OLD_KMA";
/// The current image under a name of this test's own: `kms-kma:latest` is rebuilt by every
/// compose test, this one stays what this test started with.
const NEW_IMAGE: &str = "kms-kma:upgrade-new";
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// A container created again: the old one stopped (20 s grace at most), the new one started,
/// its log replayed, the entries it missed received.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// For the writer and the drives to show progress after a step.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// For the last KMA's version report to raise the cluster's format (reports are checked each
/// second).
const FORMAT_TIMEOUT: Duration = Duration::from_secs(60);
/// For the pool to hold keys after the catalogue.
const POOL_TIMEOUT: Duration = Duration::from_secs(120);
/// Building an image (the base image too when it is missing: debootstrap).
const IMAGE_TIMEOUT: Duration = Duration::from_secs(900);
const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_PAUSE: Duration = Duration::from_millis(250);
const DRIVES: usize = 4;
const TAPES_PER_DRIVE: usize = 3;
/// The fleet runs in segments of this length until it is told to stop: `run_fleet` takes a
/// budget and has no stop, and an upgrade takes as long as its steps take.
const FLEET_SEGMENT: Duration = Duration::from_secs(10);
/// An hour of segments at most, whatever happens.
const FLEET_SEGMENTS_MAX: u64 = 360;
/// A segment's operation budget: never reached (the segment's duration ends it), but with one
/// the progress bar counts operations, which the per-step summary reads.
const FLEET_SEGMENT_OPS: u64 = 1_000_000;
/// Acknowledged writes and drive operations wanted after each step, before the next.
const WRITES_AFTER_STEP: usize = 20;
const FLEET_OPS_AFTER_STEP: u64 = 20;

/// Setup: images `kms-kma:old-<sha>` (the binary in `KMS_OLD_KMA`) and `kms-kma:upgrade-new`
/// (this build); the compose cluster with every KMA on the old image and its management and
/// service ports fixed on 127.0.0.1, so that drives and the writer keep their addresses when a
/// container is created again; a catalogue, an enrolled drive, a fleet of four StorageTek
/// drives that know all three KMAs, and a writer of users through kma1, running until the end.
/// Action: a follower moved to the new image, then back to the old one (a half-done upgrade
/// rolled back); then the followers one at a time and the leader last moved to the new image.
/// Each move creates the container again with its volumes, waits until the KMA knows a leader
/// and has applied the leader's last index, then until the writer and the drives progress.
/// Expect: while any KMA runs the old binary, every KMA reports the old binary's log format as
/// the cluster's (`cluster_log_format`): the version gate of #7 then refuses commands of a newer
/// format (node/tests/version_gate.rs shows the refusal), and the old binary reads everything
/// written: the rolled-back KMA runs and catches up; once the last KMA runs the new binary, the
/// cluster's format is the new binary's; at the end no verification failure, no drive given up,
/// every tape read back, every acknowledged write on every KMA and equal digests. When both
/// binaries write the same log format (160ce5d and the tree of issue 20 both write format 3),
/// the gate has nothing to hold back: the test then asserts that the cluster's format stays
/// equal to the format both report through every step, and says so in its output. (SPEC C7)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the old binary: scripts/upgrade-test.sh"]
async fn c7_rolling_upgrade_under_load_and_a_rollback() {
    let started = Instant::now();
    let images = build_images(&old_binary()).await;
    let ports = free_ports(2 * SERVICES.len());
    let (management, service) = ports.split_at(SERVICES.len());
    let layout = layout(&images, management, service);
    let cluster = DockerCluster::start_with(layout).await.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("compose project {} formed in {:?}", cluster.compose.project(), started.elapsed());
    let old_format = formats_at_start(&cluster, &images).await;
    let leader = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    agents::catalogue(&cluster, leader).await;
    let credentials = agents::enroll(&cluster, leader).await;
    let addresses: Vec<String> = service.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    wait_for_pool(&addresses, &credentials).await;

    let tapes = tempfile::tempdir().expect("a tape dir");
    let config = fleet_config(tapes.path());
    let clients: Vec<_> = (0..DRIVES).map(|_| agents::client(&addresses, &credentials)).collect();
    let fleet = Fleet::spawn(clients.clone(), config.clone());
    let acked = Acked::default();
    let writer_address = format!("127.0.0.1:{}", management[0]);
    let writer = Writer::spawn(cluster.admin.clone(), writer_address, "upgrade", acked.clone());

    let mut upgrade = Upgrade::new(&cluster, &fleet, &acked, &images, old_format);
    upgrade.half_done_and_rolled_back().await;
    upgrade.rolling().await;
    let Upgrade { steps, problems, new_format, .. } = upgrade;

    let written = writer.stop().await.unwrap_or_else(|e| panic!("{e:#}"));
    let segments = fleet.stop().await;
    let end = check_end(&cluster, clients, config, &acked).await;
    print_summary(&images, old_format, new_format, &steps, &segments, &end);
    eprintln!("writer: {written:?}; {:?} in all", started.elapsed());

    assert!(problems.is_empty(), "the version gate misbehaved:\n{}", problems.join("\n"));
    assert!(written.rejected.is_empty(), "refused writes: {:?}", written.rejected);
    end.assert_clean(&segments);
}

/// The old `kma`, from `KMS_OLD_KMA`; without it the test fails and says how to run it.
fn old_binary() -> PathBuf {
    let Some(path) = std::env::var_os(OLD_KMA_VAR) else {
        panic!(
            "error: {OLD_KMA_VAR} is not set: this test runs the cluster on the kma of an older \
             commit first\nhelp: bash scripts/upgrade-test.sh [COMMIT]   (builds that kma and \
             the current one, then runs this test)"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "error: {OLD_KMA_VAR}={} is not a file\nhelp: bash scripts/build-kma-at.sh COMMIT \
         builds one and prints its path",
        path.display()
    );
    path
}

/// The two images, by name and Docker image ID.
struct Images {
    old: String,
    new: String,
    old_id: String,
    new_id: String,
}

/// `kms-kma:old-<short sha>` for a binary named `kma-<sha>` (as `scripts/build-kma-at.sh`
/// names them), else `kms-kma:old-local`.
fn old_image_name(binary: &Path) -> String {
    let name = binary.file_name().and_then(|name| name.to_str()).unwrap_or_default();
    let sha = name.strip_prefix("kma-").filter(|sha| {
        sha.len() >= 7 && sha.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    });
    format!("kms-kma:old-{}", sha.map_or("local", |sha| &sha[..7]))
}

/// Builds the current image (tagged [`NEW_IMAGE`]) and the old one, from the old binary with
/// the current entry point (`scripts/docker-image.sh` with `KMS_KMA_BINARY`).
async fn build_images(old_binary: &Path) -> Images {
    chaos_tests::image::require_docker().await.unwrap_or_else(|e| panic!("{e:#}"));
    chaos_tests::image::build_kma_image().await.unwrap_or_else(|e| panic!("{e:#}"));
    docker(&["tag", chaos_tests::image::KMA_IMAGE, NEW_IMAGE]).await;
    let old = old_image_name(old_binary);
    let root = chaos_tests::image::repo_root();
    let mut command = Command::new("bash");
    command.arg(root.join("scripts/docker-image.sh")).current_dir(&root);
    command.env("KMS_IMAGE", &old).env("KMS_KMA_BINARY", old_binary);
    let built = chaos_tests::run(&mut command, IMAGE_TIMEOUT).await;
    built.unwrap_or_else(|e| panic!("cannot build {old} from {}: {e:#}", old_binary.display()));
    let old_id = docker(&["image", "inspect", "-f", "{{.Id}}", &old]).await;
    let new_id = docker(&["image", "inspect", "-f", "{{.Id}}", NEW_IMAGE]).await;
    Images { old, new: NEW_IMAGE.into(), old_id, new_id }
}

/// `docker ARGS`, its output trimmed; the test fails when it fails.
async fn docker(args: &[&str]) -> String {
    let output = chaos_tests::run(Command::new("docker").args(args), DOCKER_TIMEOUT).await;
    output.unwrap_or_else(|e| panic!("{e:#}")).trim().to_string()
}

/// `count` distinct ports free on 127.0.0.1 now: all bound at once, then released for Docker.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1"))
        .collect();
    listeners.iter().map(|listener| listener.local_addr().expect("its address").port()).collect()
}

/// Every KMA on the old image, and its management and service ports published on the ports
/// given (Docker would pick new ones each time a container is created).
fn layout(images: &Images, management: &[u16], service: &[u16]) -> Layout {
    let mut env = Vec::new();
    for n in 1..=SERVICES.len() {
        env.push((format!("KMS_KMA{n}_IMAGE"), images.old.clone()));
        env.push((format!("KMS_KMA{n}_PUBLISH"), format!("127.0.0.1:{}", management[n - 1])));
        env.push((format!("KMS_KMA{n}_SERVICE_PUBLISH"), format!("127.0.0.1:{}", service[n - 1])));
    }
    let images_yml = chaos_tests::image::repo_root().join("chaos-tests/compose/images.yml");
    Layout { prefix: Some("kmsupgrade"), overrides: vec![images_yml], env }
}

/// The log format the old binary writes: every KMA reports it, and it is the cluster's.
async fn formats_at_start(cluster: &DockerCluster, images: &Images) -> u16 {
    let statuses = statuses(cluster).await;
    for (service, image, _) in &statuses {
        assert_eq!(*image, images.old, "{service} starts on the old image");
    }
    let old_format = statuses[0].2.log_format;
    for (service, _, status) in &statuses {
        assert_eq!(status.log_format, old_format, "{service}: every KMA runs the old binary");
        assert_eq!(status.cluster_log_format, old_format, "{service}: the cluster's format");
    }
    eprintln!("all on the old binary:\n{}", versions(&statuses));
    old_format
}

/// Each KMA's image (of its container now) and status.
async fn statuses(cluster: &DockerCluster) -> Vec<(&'static str, String, NodeStatus)> {
    let mut all = Vec::new();
    for service in SERVICES {
        let status = cluster.status(service).await.unwrap_or_else(|e| panic!("{service}: {e:#}"));
        all.push((service, container_image(cluster, service).await, status));
    }
    all
}

async fn container_image(cluster: &DockerCluster, service: &str) -> String {
    let id = cluster.compose.container_id(service).await.unwrap_or_else(|e| panic!("{e:#}"));
    docker(&["inspect", "-f", "{{.Config.Image}}", &id]).await
}

/// One line per KMA: the image it runs, the version it reports, the formats.
fn versions(statuses: &[(&str, String, NodeStatus)]) -> String {
    let lines: Vec<String> = statuses
        .iter()
        .map(|(service, image, status)| {
            format!(
                "  {service} {:<9} {image:<22} software {:<8} log format {} (cluster's {}) \
                 applied {}",
                status.role,
                status.software_version,
                status.log_format,
                status.cluster_log_format,
                status.applied_index
            )
        })
        .collect();
    lines.join("\n")
}

/// Waits until the pool hands out keys: one data unit created and keyed through any KMA, so
/// that the fleet's first mounts do not meet an empty pool.
async fn wait_for_pool(addresses: &[String], credentials: &AgentCredentials) {
    let client = agents::client(addresses, credentials);
    let deadline = Instant::now() + POOL_TIMEOUT;
    loop {
        let attempt = async {
            let created = client.create_data_unit("WARM01").await?;
            client.write_key(created.data_unit, true).await
        };
        match attempt.await {
            Ok(_) => return,
            Err(error) if Instant::now() >= deadline => {
                panic!("no key within {POOL_TIMEOUT:?}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn fleet_config(tape_dir: &Path) -> FleetConfig {
    FleetConfig {
        drives: DRIVES,
        mode: DriveMode::StorageTek,
        tapes_per_drive: TAPES_PER_DRIVE,
        block_len: 512,
        ops: Some(FLEET_SEGMENT_OPS),
        duration: Some(FLEET_SEGMENT),
        tape_dir: tape_dir.to_path_buf(),
        seed: 20,
    }
}

/// Operations counted so far: those of the segments that ended, and the current one's bar
/// (while it runs: `run_fleet` finishes it at the end, which sets it to its length).
struct Progress {
    done: u64,
    bar: ProgressBar,
    /// The highest count given out: between a segment's end and its report being counted, the
    /// last count stands.
    seen: u64,
}

/// The drive-sim fleet, run segment after segment on the same tapes until stopped. Each
/// segment is a `run_fleet` of [`FLEET_SEGMENT`] with its own seed (a tape keeps the seed it
/// was written with in its header); a drive that gives up is counted in its segment's report.
struct Fleet {
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    task: JoinHandle<Result<Vec<FleetReport>, FleetError>>,
}

impl Fleet {
    fn spawn(clients: Vec<AgentClient>, config: FleetConfig) -> Fleet {
        let stop = Arc::new(AtomicBool::new(false));
        let bar = ProgressBar::hidden();
        let progress = Arc::new(Mutex::new(Progress { done: 0, bar, seen: 0 }));
        let task = tokio::spawn(segments(clients, config, stop.clone(), progress.clone()));
        Fleet { stop, progress, task }
    }

    /// Data operations completed so far.
    fn ops(&self) -> u64 {
        let mut progress = lock(&self.progress);
        let running = if progress.bar.is_finished() { 0 } else { progress.bar.position() };
        progress.seen = progress.seen.max(progress.done + running);
        progress.seen
    }

    /// Ends the run after the current segment; its reports, one per segment.
    async fn stop(self) -> Result<Vec<FleetReport>, String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.task.await {
            Ok(Ok(reports)) => Ok(reports),
            Ok(Err(error)) => Err(format!("the fleet stopped: {error}")),
            Err(error) => Err(format!("the fleet task failed: {error}")),
        }
    }
}

fn lock(progress: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    // Nothing panics while holding it: the counts are whole even if poisoned.
    progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn segments(
    clients: Vec<AgentClient>,
    config: FleetConfig,
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
) -> Result<Vec<FleetReport>, FleetError> {
    let mut reports = Vec::new();
    for segment in 0..FLEET_SEGMENTS_MAX {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let bar = lock(&progress).bar.clone();
        let config = FleetConfig { seed: config.seed.wrapping_add(segment), ..config.clone() };
        let report = run_fleet(clients.clone(), config, Some(bar)).await?;
        {
            let mut progress = lock(&progress);
            progress.done += report.ops;
            progress.bar = ProgressBar::hidden();
        }
        reports.push(report);
    }
    Ok(reports)
}

/// One container created again on another image.
struct Step {
    what: String,
    service: &'static str,
    image: String,
    /// From `docker-compose up` to the KMA ready with the leader's last index applied.
    ready_after: Duration,
    /// Drive operations and acknowledged writes meanwhile.
    fleet_ops: u64,
    acked: usize,
}

/// The upgrade under way: the loads to watch, the steps taken, and the version gate's
/// misbehaviours (collected, asserted at the end, once the loads are stopped and checked).
struct Upgrade<'a> {
    cluster: &'a DockerCluster,
    fleet: &'a Fleet,
    acked: &'a Acked,
    images: &'a Images,
    old_format: u16,
    /// The log format the new binary writes, as the first upgraded KMA reports it.
    new_format: Option<u16>,
    steps: Vec<Step>,
    problems: Vec<String>,
}

impl<'a> Upgrade<'a> {
    fn new(
        cluster: &'a DockerCluster,
        fleet: &'a Fleet,
        acked: &'a Acked,
        images: &'a Images,
        old_format: u16,
    ) -> Upgrade<'a> {
        let (steps, problems) = (Vec::new(), Vec::new());
        Upgrade { cluster, fleet, acked, images, old_format, new_format: None, steps, problems }
    }

    /// A follower (kma3 unless it leads) moved to the new binary, then back to the old one,
    /// which reads everything written meanwhile: the cluster never left the old format.
    async fn half_done_and_rolled_back(&mut self) {
        let leader = self.leader().await;
        let follower = SERVICES.into_iter().rev().find(|service| *service != leader);
        let follower = follower.expect("a follower");
        let new = self.images.new.clone();
        let status = self.replace(follower, &new, "upgrade, to be rolled back").await;
        self.note_new_format(follower, &status);
        self.expect_cluster_format(self.old_format, "one KMA of three on the new binary").await;
        let old = self.images.old.clone();
        let status = self.replace(follower, &old, "rollback to the old binary").await;
        if status.log_format != self.old_format {
            self.problems.push(format!(
                "{follower} rolled back reports log format {}, not the old binary's {}",
                status.log_format, self.old_format
            ));
        }
        self.expect_cluster_format(self.old_format, "after the rollback").await;
    }

    /// Every KMA moved to the new binary: followers first, the leader last.
    async fn rolling(&mut self) {
        let mut left: Vec<&'static str> = SERVICES.to_vec();
        while !left.is_empty() {
            let leader = self.leader().await;
            let next = left.iter().rev().copied().find(|service| *service != leader);
            let next = next.unwrap_or(leader);
            left.retain(|service| *service != next);
            let what = format!("upgrade {} of {}", SERVICES.len() - left.len(), SERVICES.len());
            let new = self.images.new.clone();
            let status = self.replace(next, &new, &what).await;
            self.note_new_format(next, &status);
            if left.is_empty() {
                let new_format = self.new_format.unwrap_or(status.log_format);
                self.await_cluster_format(new_format).await;
            } else {
                let when = format!("{what}, {} still on the old binary", left.join(" and "));
                self.expect_cluster_format(self.old_format, &when).await;
            }
        }
    }

    async fn leader(&self) -> &'static str {
        self.cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Creates `service`'s container again on `image` (volumes kept) and waits until it has
    /// caught up and the loads progress again.
    async fn replace(&mut self, service: &'static str, image: &str, what: &str) -> NodeStatus {
        let (ops_before, acked_before) = (self.fleet.ops(), self.acked.count());
        let started = Instant::now();
        let number = service_number(service);
        self.cluster.compose.set_env(&format!("KMS_KMA{number}_IMAGE"), image);
        let up = self.cluster.compose.up_service(service).await;
        up.unwrap_or_else(|e| panic!("{what}: {service} on {image}: {e:#}"));
        let running = container_image(self.cluster, service).await;
        assert_eq!(running, image, "{what}: the image of {service}'s new container");
        let leader = self.leader().await;
        let leader_status = self.cluster.status(leader).await.unwrap_or_else(|e| panic!("{e:#}"));
        let last = leader_status.last_log_index.unwrap_or(0);
        let ready = self.cluster.wait_ready(service, last, READY_TIMEOUT).await;
        let status = ready.unwrap_or_else(|e| panic!("{what}: {service} on {image}: {e:#}"));
        let ready_after = started.elapsed();
        let fleet_ops = self.fleet.ops().saturating_sub(ops_before);
        let acked = self.acked.count().saturating_sub(acked_before);
        self.wait_for_progress(what).await;
        let (service, image, what) = (service, image.to_string(), what.to_string());
        eprintln!("{what}: {service} on {image} ready after {ready_after:?}");
        eprintln!("{}", versions(&statuses(self.cluster).await));
        self.steps.push(Step { what, service, image, ready_after, fleet_ops, acked });
        status
    }

    /// Waits for more acknowledged writes and drive operations: the cluster serves both.
    async fn wait_for_progress(&self, when: &str) {
        let acked_target = self.acked.count() + WRITES_AFTER_STEP;
        let ops_target = self.fleet.ops() + FLEET_OPS_AFTER_STEP;
        let deadline = Instant::now() + PROGRESS_TIMEOUT;
        while self.acked.count() < acked_target || self.fleet.ops() < ops_target {
            assert!(
                Instant::now() < deadline,
                "after {when}: {} of {acked_target} writes acknowledged, {} of {ops_target} \
                 drive operations done within {PROGRESS_TIMEOUT:?}",
                self.acked.count(),
                self.fleet.ops()
            );
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Records the log format the new binary reports, which must be the same on every KMA
    /// that runs it, and never older than the old binary's.
    fn note_new_format(&mut self, service: &str, status: &NodeStatus) {
        let format = status.log_format;
        match self.new_format {
            None if format < self.old_format => {
                let old = self.old_format;
                self.problems.push(format!("the new binary reads format {format}, before {old}"));
            }
            Some(known) if known != format => {
                let problem =
                    format!("{service} on the new binary reads format {format}, not {known}");
                self.problems.push(problem);
            }
            _ => {}
        }
        self.new_format.get_or_insert(format);
    }

    /// Every KMA reports `expected` as the cluster's log format now.
    async fn expect_cluster_format(&mut self, expected: u16, when: &str) {
        for (service, image, status) in statuses(self.cluster).await {
            if status.cluster_log_format != expected {
                self.problems.push(format!(
                    "{when}: {service} ({image}) has cluster log format {}, not {expected}",
                    status.cluster_log_format
                ));
            }
        }
    }

    /// Waits until every KMA reports `expected` as the cluster's format: the last KMA's
    /// version report raises it.
    async fn await_cluster_format(&mut self, expected: u16) {
        let deadline = Instant::now() + FORMAT_TIMEOUT;
        loop {
            let statuses = statuses(self.cluster).await;
            if statuses.iter().all(|(_, _, status)| status.cluster_log_format == expected) {
                return;
            }
            if Instant::now() >= deadline {
                self.problems.push(format!(
                    "every KMA runs the new binary, yet the cluster's log format is not {expected} \
                     after {FORMAT_TIMEOUT:?}:\n{}",
                    versions(&statuses)
                ));
                return;
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }
}

/// `kma3` is 3: the compose variables are numbered so.
fn service_number(service: &str) -> usize {
    let index = SERVICES.iter().position(|known| *known == service);
    index.map(|index| index + 1).unwrap_or_else(|| panic!("{service} is not a compose KMA"))
}

/// What the end of the run shows once the loads are stopped.
struct End {
    read_back: Result<FleetReport, String>,
    converged: Result<node::wire::StateDigest, String>,
    last_statuses: String,
}

/// Every KMA caught up with the leader, every tape read back, every acknowledged write on
/// every KMA and equal digests.
async fn check_end(
    cluster: &DockerCluster,
    clients: Vec<AgentClient>,
    config: FleetConfig,
    acked: &Acked,
) -> End {
    let leader = cluster.leader(ELECTION_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"));
    let status = cluster.status(leader).await.unwrap_or_else(|e| panic!("{e:#}"));
    for service in SERVICES {
        let last = status.last_log_index.unwrap_or(0);
        let ready = cluster.wait_ready(service, last, READY_TIMEOUT).await;
        ready.unwrap_or_else(|e| panic!("{service} at the end: {e:#}"));
    }
    let read_back = verify_fleet(clients, config, None).await.map_err(|e| e.to_string());
    let converged = cluster.check_converged(acked).await.map_err(|e| format!("{e:#}"));
    let last_statuses = versions(&statuses(cluster).await);
    End { read_back, converged, last_statuses }
}

/// Sums over the segments: operations, records written, errors, verification failures,
/// drives given up.
fn totals(segments: &[FleetReport]) -> (u64, u64, u64, u64, usize) {
    segments.iter().fold((0, 0, 0, 0, 0), |sum, report| {
        (
            sum.0 + report.ops,
            sum.1 + report.records_written,
            sum.2 + report.errors,
            sum.3 + report.verification_failures,
            sum.4 + report.drives_given_up,
        )
    })
}

impl End {
    fn assert_clean(&self, segments: &Result<Vec<FleetReport>, String>) {
        let segments = segments.as_ref().unwrap_or_else(|e| panic!("{e}"));
        let (ops, written, _, failures, given_up) = totals(segments);
        assert!(ops > 0 && written > 0, "the fleet did nothing: {ops} ops, {written} records");
        assert_eq!(failures, 0, "verification failures while the fleet ran");
        assert_eq!(given_up, 0, "drives gave up while the fleet ran");
        let read_back = self.read_back.as_ref().unwrap_or_else(|e| panic!("read-back: {e}"));
        assert_eq!(read_back.verification_failures, 0, "{read_back}");
        assert_eq!(read_back.drives_given_up, 0, "{read_back}");
        assert!(read_back.records_verified > 0, "{read_back}");
        self.converged.as_ref().unwrap_or_else(|e| panic!("{e}"));
    }
}

fn print_summary(
    images: &Images,
    old_format: u16,
    new_format: Option<u16>,
    steps: &[Step],
    segments: &Result<Vec<FleetReport>, String>,
    end: &End,
) {
    let new_format = new_format.unwrap_or(old_format);
    println!("== rolling upgrade (SPEC C7)");
    println!("old: {} ({}), log format {old_format}", images.old, short_id(&images.old_id));
    println!("new: {} ({}), log format {new_format}", images.new, short_id(&images.new_id));
    if images.old_id == images.new_id {
        println!("note: both images are the same: the old and new binaries are identical");
    }
    if new_format == old_format {
        println!(
            "note: both binaries write log format {old_format}: the version gate has nothing to \
             hold back; the cluster's format stayed {old_format} through every step"
        );
    }
    println!("(drive operations and acknowledged writes from `docker-compose up` to ready)");
    println!(
        "{:<30} {:<5} {:<24} {:>11} {:>10} {:>8}",
        "step", "KMA", "image", "ready after", "drive ops", "writes"
    );
    for step in steps {
        let ready = format!("{:.1} s", step.ready_after.as_secs_f64());
        println!(
            "{:<30} {:<5} {:<24} {ready:>11} {:>10} {:>8}",
            step.what, step.service, step.image, step.fleet_ops, step.acked
        );
    }
    println!("at the end:\n{}", end.last_statuses);
    match segments {
        Ok(segments) => {
            let (ops, written, errors, failures, given_up) = totals(segments);
            println!(
                "fleet: {} segments of {FLEET_SEGMENT:?}, {ops} ops, {written} records written, \
                 {errors} errors retried, {failures} verification failures, {given_up} drives \
                 given up",
                segments.len()
            );
        }
        Err(error) => println!("fleet: {error}"),
    }
    match &end.read_back {
        Ok(report) => println!("read-back of every tape: {report}"),
        Err(error) => println!("read-back: {error}"),
    }
    match &end.converged {
        Ok(digest) => println!(
            "every acknowledged write on every KMA; digests equal at index {}",
            digest.applied_index
        ),
        Err(error) => println!("convergence: {error}"),
    }
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}
