//! One chaos run (issue 20): the compose cluster with the nemesis layout, drive-sim fleets at
//! every site and an admin workload recording their histories, the nemesis's faults one after
//! the other, then the read-back, the evidence gathered and the checker's verdicts.
//!
//! The short mode (a test in CI, fixed seeds) and the long mode (`chaos --duration 2h`, random
//! seeds, results written to docs/) both call [`run`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_gateway::drive_sim::{
    run_fleet_recorded, verify_fleet, DriveMode, FleetConfig, FleetError, FleetReport, KeyAnswer,
    KeyHistory,
};
use agent_gateway::{AgentClient, AgentCredentials, ClientOptions};
use node::client::KmaClient;
use statemachine::audit::AuditEvent;
use statemachine::cluster::KeyPoolLimits;
use statemachine::{Command, KeyGroupId, Role, RoleSet};

use crate::admin::{self, AdminHistory, AdminSetup};
use crate::cluster::{DockerCluster, Layout, SERVICES};
use crate::history::{self, Committed, Evidence, Verdict};
use crate::nemesis::{self, Fault, FaultKind, Nemesis};

/// Each KMA's site, in the order of [`SERVICES`]: one KMA per site.
pub const SITES: [&str; 3] = ["east", "west", "north"];
const DAY_MS: u64 = 86_400_000;
/// After a heal: how long the cluster may take to have a leader and every KMA caught up.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(180);
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
const POLL_PAUSE: Duration = Duration::from_millis(250);
const HARNESS_USER: &str = "chaos";
/// The admin workload's drive, and its key group.
const KEYS_AGENT: &str = "chaos-keys";
/// A test cluster's officer; the passphrase policy wants it long.
const HARNESS_PASSPHRASE: &str = "chaos-harness-officer-passphrase";
/// Lines of each KMA's log shown when a run cannot finish.
const DIAGNOSIS_LOG_LINES: usize = 40;

/// What a run does.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    /// Faults to inject, one after the other ...
    pub faults: usize,
    /// ... or until this much time has passed (the long mode), whichever ends first.
    pub duration: Option<Duration>,
    /// Each fault is held between this and twice this.
    pub hold_min: Duration,
    /// Calm time before the first fault and after each recovery.
    pub calm: Duration,
    pub drives_per_site: usize,
    pub tapes_per_drive: usize,
}

impl RunConfig {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut command = format!(
            "cargo build --release --workspace --bins && target/release/chaos --seed {} \
             --faults {} --hold-s {} --calm-s {} --drives-per-site {} --tapes-per-drive {}",
            self.seed,
            self.faults,
            self.hold_min.as_secs(),
            self.calm.as_secs(),
            self.drives_per_site,
            self.tapes_per_drive
        );
        if let Some(duration) = self.duration {
            command.push_str(&format!(" --duration {}s", duration.as_secs()));
        }
        command
    }
}

/// One fault as it went: when (seconds from the run's start), how the cluster did meanwhile.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub fault: Fault,
    pub injected_at_s: f64,
    pub healed_at_s: f64,
    /// From the heal until a leader was confirmed and every KMA had caught up.
    pub recovered_after_s: Option<f64>,
    /// Write keys answered per second while the fault held.
    pub assignments_per_s: f64,
    /// 99th percentile of the mount reads (key sets) answered while the fault held, in ms.
    pub read_p99_ms: Option<f64>,
    pub error: Option<String>,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub config: RunConfig,
    pub duration_s: f64,
    pub faults: Vec<FaultRecord>,
    /// Drive operations by kind (write keys, key sets, failed write keys) and admin operations.
    pub operations: BTreeMap<String, u64>,
    pub calm_assignments_per_s: f64,
    pub calm_read_p99_ms: Option<f64>,
    pub verdicts: Vec<Verdict>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|verdict| verdict.passed)
    }

    /// Text for a person: the faults, the verdicts and, on failure, the replay command.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "chaos run, seed {}: {} faults in {:.0} s\n",
            self.config.seed,
            self.faults.len(),
            self.duration_s
        );
        for record in &self.faults {
            let recovered = record
                .recovered_after_s
                .map_or_else(|| "not recovered".to_string(), |s| format!("recovered in {s:.1} s"));
            let p99 = record
                .read_p99_ms
                .map_or_else(|| "no reads".to_string(), |ms| format!("{ms:.0} ms"));
            text.push_str(&format!(
                "  {:>6.1}s {}: {:.1} assignments/s, read p99 {p99}, {recovered}{}\n",
                record.injected_at_s,
                record.fault,
                record.assignments_per_s,
                record.error.as_ref().map(|e| format!(" (error: {e})")).unwrap_or_default()
            ));
        }
        for (kind, count) in &self.operations {
            text.push_str(&format!("  operations {kind}: {count}\n"));
        }
        for verdict in &self.verdicts {
            text.push_str(&format!("  {verdict}\n"));
        }
        if !self.passed() {
            text.push_str(&format!("FAILED; replay with: {}\n", self.config.replay_command()));
        }
        text
    }
}

/// A site's drives: their agent, their credentials and the addresses they know.
struct Site {
    name: &'static str,
    agent: String,
    credentials: AgentCredentials,
    addresses: Vec<String>,
}

/// Runs the whole thing. `interrupted` (Ctrl-C) ends the faults early; everything injected is
/// healed and the evidence is still judged. The compose project goes down when this returns.
pub async fn run(config: RunConfig, interrupted: Arc<AtomicBool>) -> anyhow::Result<RunReport> {
    remove_leftovers().await;
    let dir = nemesis::run_dir()?;
    let dir_path = dir.clone();
    nemesis::prepare_dir(&dir_path)?;
    let outcome = run_in(&config, &dir_path, interrupted).await;
    let released = nemesis::release_dir(&dir_path);
    let report = outcome?;
    released?;
    Ok(report)
}

async fn run_in(
    config: &RunConfig,
    dir: &Path,
    interrupted: Arc<AtomicBool>,
) -> anyhow::Result<RunReport> {
    let mut cluster = start_cluster(dir).await?;
    cluster.admin = match harness_officer(&cluster).await {
        Ok(session) => session,
        Err(error) => return Err(error.context(diagnosis(&cluster).await)),
    };
    match run_on(&cluster, config, dir, interrupted).await {
        Ok(report) => Ok(report),
        Err(error) => Err(error.context(diagnosis(&cluster).await)),
    }
}

/// The harness's own officer, `chaos`: Security Officer, Compliance Officer, Operator and
/// Auditor, logged in with a session of its own. The quickstart officer `admin` logs in again at
/// every membership change (`kma admit`, `kma unlock`), and a user keeps only its newest
/// sessions (`USER_SESSIONS_MAX`): on `admin`'s, the harness would be logged out.
async fn harness_officer(cluster: &DockerCluster) -> anyhow::Result<KmaClient> {
    let leader = cluster.leader(SETUP_TIMEOUT).await?;
    let address = cluster.address(leader).await?;
    let roles = RoleSet::of(Role::SecurityOfficer)
        .with(Role::ComplianceOfficer)
        .with(Role::Operator)
        .with(Role::Auditor);
    let create =
        Command::CreateUser { id: HARNESS_USER.into(), roles, passphrase_verifier: Vec::new() };
    propose_ok(&cluster.admin, &address, create, Some(HARNESS_PASSPHRASE)).await?;
    let ca = std::fs::read_to_string(cluster.export_dir().join("tls/ca.pem"))?;
    KmaClient::login(&address, &ca, HARNESS_USER, HARNESS_PASSPHRASE).await
}

/// What an operator would look at first when a run cannot finish: the containers' states and
/// the end of each KMA's log, hand-out lines left out.
async fn diagnosis(cluster: &DockerCluster) -> String {
    let mut text = String::from("the cluster when the run gave up:\n");
    let filter = format!("label=com.docker.compose.project={}", cluster.compose.project());
    let mut ps = tokio::process::Command::new("docker");
    ps.args(["ps", "-a", "--filter", &filter, "--format", "{{.Names}} {{.Status}}"]);
    text.push_str(&crate::run(&mut ps, Duration::from_secs(30)).await.unwrap_or_default());
    for service in SERVICES {
        let log = cluster.compose.full_log(service).await.unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|line| !line.contains("kms::handout")).collect();
        text.push_str(&format!("---- {service}, last lines of its log ----\n"));
        for line in &lines[lines.len().saturating_sub(DIAGNOSIS_LOG_LINES)..] {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

async fn run_on(
    cluster: &DockerCluster,
    config: &RunConfig,
    dir: &Path,
    interrupted: Arc<AtomicBool>,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let sites = set_up(cluster).await?;
    let tapes = tempfile::Builder::new().prefix("kms-nemesis-tapes-").tempdir()?;
    let workload = Workload::start(cluster, &sites, config, tapes.path(), started).await?;

    let nemesis = Nemesis::new(cluster, dir, &proxy_binary()?);
    let faults = run_faults(config, cluster, &nemesis, started, &interrupted).await;
    // Whatever happened above, nothing stays injected.
    let unhealed = nemesis.heal_all().await;
    let mut finished = workload.finish().await?;
    finished.removed_logs = nemesis.removed_logs();
    let duration_s = started.elapsed().as_secs_f64();
    let mut faults = faults?;
    anyhow::ensure!(unhealed.is_empty(), "faults the nemesis could not heal: {unhealed:?}");
    wait_recovered(cluster, RECOVERY_TIMEOUT).await?;

    let evidence = gather(cluster, &sites, config, tapes.path(), &finished).await?;
    let mut verdicts = history::check(&evidence);
    verdicts.push(fleets_kept_going(&finished.fleet_reports));
    verdicts.push(recovered_after_every_heal(&faults));
    let operations = operations(&evidence, &finished.fleet_reports, &finished.admin_history);
    let calm = calm_window(&faults, duration_s);
    let (calm_assignments_per_s, calm_read_p99_ms) = window_stats(&evidence, calm.0, calm.1);
    for record in &mut faults {
        let (rate, p99) = window_stats(&evidence, record.injected_at_s, record.healed_at_s);
        record.assignments_per_s = rate;
        record.read_p99_ms = p99;
    }
    Ok(RunReport {
        config: config.clone(),
        duration_s,
        faults,
        operations,
        calm_assignments_per_s,
        calm_read_p99_ms,
        verdicts,
    })
}

/// The compose cluster with the nemesis layout, on host ports fixed for the run: Docker would
/// pick new ones at each restart of a container, and the drives and the admin workload keep
/// the addresses they were given.
async fn start_cluster(dir: &Path) -> anyhow::Result<DockerCluster> {
    let overrides = vec![crate::image::repo_root().join("chaos-tests/compose/nemesis.yml")];
    let mut env = vec![("KMS_CHAOS_DIR".to_string(), dir.display().to_string())];
    for n in 1..=SERVICES.len() {
        for port in ["PUBLISH", "SERVICE_PUBLISH", "KMIP_PUBLISH"] {
            env.push((format!("KMS_KMA{n}_{port}"), format!("127.0.0.1:{}", free_port()?)));
        }
    }
    DockerCluster::start_with(Layout { prefix: Some(PROJECT_PREFIX), overrides, env }).await
}

type FleetTask = tokio::task::JoinHandle<Result<FleetReport, FleetError>>;

/// The fleets of every site and the admin workload, running.
struct Workload {
    /// One history per site's fleet: drives are numbered within their fleet.
    histories: Vec<KeyHistory>,
    fleets: Vec<(String, FleetTask)>,
    admin_stop: Arc<AtomicBool>,
    admin: tokio::task::JoinHandle<AdminHistory>,
}

/// What the workload recorded once stopped.
struct Finished {
    histories: Vec<KeyHistory>,
    /// Logs of the KMA containers the nemesis removed (membership changes).
    removed_logs: Vec<(String, String)>,
    fleet_reports: Vec<(String, Result<FleetReport, FleetError>)>,
    admin_history: AdminHistory,
}

impl Workload {
    async fn start(
        cluster: &DockerCluster,
        sites: &[Site],
        config: &RunConfig,
        tapes: &Path,
        started: Instant,
    ) -> anyhow::Result<Workload> {
        let histories: Vec<KeyHistory> = sites.iter().map(|_| KeyHistory::new(started)).collect();
        let mut fleets = Vec::new();
        for (n, site) in sites.iter().enumerate() {
            let fleet_config = fleet_config(config, n, tapes);
            let clients: Vec<AgentClient> =
                (0..config.drives_per_site).map(|_| client(site)).collect::<Result<_, _>>()?;
            let recorder = histories[n].clone();
            let task = tokio::spawn(run_fleet_recorded(clients, fleet_config, None, recorder));
            fleets.push((site.agent.clone(), task));
        }
        let admin_stop = Arc::new(AtomicBool::new(false));
        let keys_site = keys_agent(cluster, &sites[0]).await?;
        let setup = AdminSetup {
            addresses: addresses(cluster).await?,
            keys_agent: client(&keys_site)?,
            quorum_member: quorum_member(cluster)?,
        };
        let admin = tokio::spawn(admin::run(
            cluster.admin.clone(),
            setup,
            config.seed,
            started,
            admin_stop.clone(),
        ));
        Ok(Workload { histories, fleets, admin_stop, admin })
    }

    async fn finish(self) -> anyhow::Result<Finished> {
        for history in &self.histories {
            history.stop();
        }
        self.admin_stop.store(true, Ordering::SeqCst);
        let mut fleet_reports = Vec::new();
        for (agent, task) in self.fleets {
            let report = task.await.map_err(|e| anyhow::anyhow!("{agent}'s fleet task: {e}"))?;
            fleet_reports.push((agent, report));
        }
        let admin_history = self.admin.await.map_err(|e| anyhow::anyhow!("admin task: {e}"))?;
        Ok(Finished {
            histories: self.histories,
            removed_logs: Vec::new(),
            fleet_reports,
            admin_history,
        })
    }
}

/// The evidence, once the faults are healed and the cluster has recovered: every tape read
/// back, the digests compared, the committed log read back, the KMAs' hand-out lines, and the
/// histories the workload recorded.
async fn gather(
    cluster: &DockerCluster,
    sites: &[Site],
    config: &RunConfig,
    tapes: &Path,
    finished: &Finished,
) -> anyhow::Result<Evidence> {
    let mut evidence = Evidence::default();
    for (n, site) in sites.iter().enumerate() {
        let clients: Vec<AgentClient> =
            (0..config.drives_per_site).map(|_| client(site)).collect::<Result<_, _>>()?;
        let verified = verify_fleet(clients, fleet_config(config, n, tapes), None).await?;
        evidence.verification_failures += verified.verification_failures;
        evidence.records_verified += verified.records_verified;
    }
    evidence.digests = cluster
        .check_converged(&crate::workload::Acked::default())
        .await
        .map(|digest| digest.applied_index)
        .map_err(|error| format!("{error:#}"));
    let address = whole_audit_log(cluster).await?;
    let events = audit_events(&cluster.admin, &address).await?;
    let mut committed = Committed::from_events(&events);
    committed.name_groups(group_names(&cluster.admin, &address, &committed).await?);
    evidence.committed = committed;
    check_logs_kept(cluster).await?;
    for service in SERVICES {
        let log = cluster.compose.full_log(service).await?;
        let handouts = history::parse_handouts(service, whole_log(service, &log)?);
        evidence.handouts.extend(handouts.map_err(anyhow::Error::msg)?);
    }
    for (service, log) in &finished.removed_logs {
        let handouts = history::parse_handouts(service, whole_log(service, log)?);
        evidence.handouts.extend(handouts.map_err(anyhow::Error::msg)?);
    }
    for (site, history) in sites.iter().zip(&finished.histories) {
        let events = history.events().into_iter().map(|event| (site.agent.clone(), event));
        evidence.drive_events.extend(events);
    }
    // Every register starts absent (`admin::AdminHistory`).
    let admin = &finished.admin_history.operations;
    evidence.admin_initial = admin.iter().map(|operation| (operation.key.clone(), None)).collect();
    evidence.admin_history = admin.clone();
    Ok(evidence)
}

/// The KMAs' logs are whole evidence only if Docker kept all of them: the nemesis override gives
/// every KMA container json-file logs of [`LOG_FILES`] files of 1 GB (the daemon here keeps 30
/// MB, which a long run outgrows within minutes, and every hand-out in the lost part would look
/// missing). Checked on the containers, and on each log's size: below four files' worth,
/// nothing was dropped.
async fn check_logs_kept(cluster: &DockerCluster) -> anyhow::Result<()> {
    for service in SERVICES {
        let id = cluster.compose.container_id(service).await?;
        let mut inspect = tokio::process::Command::new("docker");
        inspect.args(["inspect", "-f", "{{json .HostConfig.LogConfig}}", &id]);
        let config = crate::run(&mut inspect, Duration::from_secs(30)).await?;
        let kept = config.contains("\"json-file\"")
            && config.contains("\"max-size\":\"1g\"")
            && config.contains(&format!("\"max-file\":\"{LOG_FILES}\""));
        anyhow::ensure!(
            kept,
            "{service} logs with {}: not the nemesis override's (chaos-tests/compose/nemesis.yml), \
             so its log may have lost its start and the hand-out evidence would be incomplete",
            config.trim()
        );
    }
    Ok(())
}

fn whole_log<'l>(service: &str, log: &'l str) -> anyhow::Result<&'l str> {
    let bound = (LOG_FILES - 1) << 30;
    anyhow::ensure!(
        log.len() < bound,
        "the log of {service} holds {} bytes: Docker may have dropped its oldest file, and the \
         hand-out evidence would be incomplete; run shorter runs (--run-length)",
        log.len()
    );
    Ok(log)
}

/// The json-file log files of each KMA container (`chaos-tests/compose/nemesis.yml`).
const LOG_FILES: usize = 5;

/// A port free on 127.0.0.1 now (the OS picks it; it may be taken again before use, which the
/// compose `up` would report).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Compose projects of the nemesis are named from this; a run removes what an interrupted one
/// left behind.
pub const PROJECT_PREFIX: &str = "kmsnemesis";

/// Takes down every compose project a previous run of the nemesis left (containers, network,
/// volumes), and unmounts its small disks: the next run starts clean.
pub async fn remove_leftovers() {
    let mut list = tokio::process::Command::new("docker");
    list.args(["ps", "-a", "--format", "{{.Label \"com.docker.compose.project\"}}"]);
    let projects = crate::run(&mut list, Duration::from_secs(30)).await.unwrap_or_default();
    // A project is `<prefix><pid>x<nanos>` (`Compose::new`): one whose process still runs is
    // another run's, going on beside this one, and is left alone.
    let stale: BTreeSet<&str> = projects
        .lines()
        .filter(|project| {
            let Some(rest) = project.strip_prefix(PROJECT_PREFIX) else { return false };
            let pid = rest.split('x').next().unwrap_or_default();
            let numeric = !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit());
            numeric && !Path::new("/proc").join(pid).exists()
        })
        .collect();
    for project in stale {
        eprintln!("chaos: removing compose project {project}, left by an interrupted run");
        let filter = format!("label=com.docker.compose.project={project}");
        let mut ids = tokio::process::Command::new("docker");
        ids.args(["ps", "-aq", "--filter", &filter]);
        let ids = crate::run(&mut ids, Duration::from_secs(30)).await.unwrap_or_default();
        for id in ids.split_whitespace() {
            let mut remove = tokio::process::Command::new("docker");
            remove.args(["rm", "-f", "-v", id]);
            let _ = crate::run(&mut remove, Duration::from_secs(60)).await;
        }
        for kind in ["network", "volume"] {
            let mut names = tokio::process::Command::new("docker");
            names.args([kind, "ls", "-q", "--filter", &filter]);
            let names = crate::run(&mut names, Duration::from_secs(30)).await.unwrap_or_default();
            for name in names.split_whitespace() {
                let mut remove = tokio::process::Command::new("docker");
                remove.args([kind, "rm", name]);
                let _ = crate::run(&mut remove, Duration::from_secs(60)).await;
            }
        }
    }
    for dir in nemesis::orphaned_dirs() {
        eprintln!("chaos: releasing {}, left by an interrupted run", dir.display());
        let _ = nemesis::release_dir(&dir);
    }
}

fn proxy_binary() -> anyhow::Result<PathBuf> {
    // Beside this binary (the `chaos` command, `target/release/`), or one level up from a
    // test binary (`target/release/deps/`).
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("chaos-proxy"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("chaos-proxy"));
        }
    }
    candidates.into_iter().find(|path| path.exists()).ok_or_else(|| {
        anyhow::anyhow!(
            "no chaos-proxy binary beside {}\nhelp: cargo build --release --workspace --bins",
            exe.display()
        )
    })
}

fn fleet_config(config: &RunConfig, site: usize, tapes: &Path) -> FleetConfig {
    FleetConfig {
        drives: config.drives_per_site,
        // Both ways of asking for keys (SPEC A4): StorageTek at east and north, LTO4 at west.
        mode: if site == 1 { DriveMode::Lto4 } else { DriveMode::StorageTek },
        tapes_per_drive: config.tapes_per_drive,
        block_len: 256,
        ops: None,
        // Ended by `KeyHistory::stop` when the faults are over; this is only a backstop.
        duration: Some(Duration::from_secs(6 * 3600)),
        tape_dir: tapes.join(SITES[site]),
        seed: config.seed.wrapping_add(site as u64),
    }
}

fn client(site: &Site) -> anyhow::Result<AgentClient> {
    // The compose tests' quick failover, and the site: its own KMA first (SPEC C2).
    let options = ClientOptions { site: Some(site.name.to_string()), ..crate::agents::options() };
    Ok(AgentClient::from_credentials(&site.addresses, &site.credentials, options)?)
}

async fn addresses(cluster: &DockerCluster) -> anyhow::Result<Vec<String>> {
    let mut addresses = Vec::new();
    for service in SERVICES {
        addresses.push(cluster.address(service).await?);
    }
    Ok(addresses)
}

async fn propose_ok(
    admin: &KmaClient,
    address: &str,
    command: Command,
    passphrase: Option<&str>,
) -> anyhow::Result<()> {
    let kind = command.kind();
    let applied = admin
        .propose_with_passphrase(address, None, command, passphrase)
        .await?
        .map_err(|refused| anyhow::anyhow!("{kind:?} refused: {refused}"))?;
    applied.result.map_err(|reject| anyhow::anyhow!("{kind:?} rejected: {reject}"))?;
    Ok(())
}

/// The catalogue: a policy, a group per site, an agent per site reading only its site's group,
/// each enrolled through its own KMA.
async fn set_up(cluster: &DockerCluster) -> anyhow::Result<Vec<Site>> {
    let leader = cluster.leader(SETUP_TIMEOUT).await?;
    let address = cluster.address(leader).await?;
    let admin = &cluster.admin;
    let limits = KeyPoolLimits { low_water: 60, high_water: 120 };
    propose_ok(admin, &address, Command::SetKeyPoolLimits(limits), None).await?;
    let policy = Command::CreateKeyPolicy {
        name: admin::GROUP_POLICY.into(),
        encryption_period_ms: DAY_MS,
        cryptoperiod_ms: 2 * DAY_MS,
        allow_export: false,
        allow_import: false,
    };
    propose_ok(admin, &address, policy, None).await?;
    let ca = std::fs::read_to_string(cluster.export_dir().join("tls/ca.pem"))?;
    let all = addresses_of_services(cluster).await?;
    let mut sites = Vec::new();
    for (n, name) in SITES.into_iter().enumerate() {
        let group = format!("tapes-{name}");
        let agent = format!("drive-{name}");
        let passphrase = format!("chaos-{name}-enrollment");
        let create_group =
            Command::CreateKeyGroup { name: group.clone(), policy: admin::GROUP_POLICY.into() };
        propose_ok(admin, &address, create_group, None).await?;
        let create_agent = Command::CreateAgent {
            id: agent.clone(),
            site: name.into(),
            passphrase_verifier: Vec::new(),
        };
        propose_ok(admin, &address, create_agent, Some(&passphrase)).await?;
        let assign = Command::AssignKeyGroupToAgent { agent: agent.clone(), group };
        propose_ok(admin, &address, assign, None).await?;
        // Its own KMA first: drives use their site's KMA while it answers (SPEC C2).
        let mut addresses = vec![all[n].clone()];
        addresses.extend(all.iter().enumerate().filter(|(i, _)| *i != n).map(|(_, a)| a.clone()));
        let credentials = enroll(&addresses[0], &ca, &agent, &passphrase).await?;
        sites.push(Site { name, agent, credentials, addresses });
    }
    Ok(sites)
}

/// The drive `chaos-keys` of the admin workload, at the first site, in a group of its own: the
/// keys it takes are the ones the workload compromises and destroys.
async fn keys_agent(cluster: &DockerCluster, first: &Site) -> anyhow::Result<Site> {
    let leader = cluster.leader(SETUP_TIMEOUT).await?;
    let address = cluster.address(leader).await?;
    let admin = &cluster.admin;
    let (agent, group, passphrase) = (KEYS_AGENT, KEYS_AGENT, "chaos-keys-enrollment");
    let create_group =
        Command::CreateKeyGroup { name: group.into(), policy: admin::GROUP_POLICY.into() };
    propose_ok(admin, &address, create_group, None).await?;
    let create_agent = Command::CreateAgent {
        id: agent.into(),
        site: first.name.into(),
        passphrase_verifier: Vec::new(),
    };
    propose_ok(admin, &address, create_agent, Some(passphrase)).await?;
    let assign = Command::AssignKeyGroupToAgent { agent: agent.into(), group: group.into() };
    propose_ok(admin, &address, assign, None).await?;
    let ca = std::fs::read_to_string(cluster.export_dir().join("tls/ca.pem"))?;
    let credentials = enroll(&first.addresses[0], &ca, agent, passphrase).await?;
    Ok(Site {
        name: first.name,
        agent: agent.into(),
        credentials,
        addresses: first.addresses.clone(),
    })
}

/// The admin workload's quorum member: the first of the compose cluster's quickstart secrets
/// (exported beside the CA; the cluster plays every member, `docker/entrypoint.sh`).
fn quorum_member(cluster: &DockerCluster) -> anyhow::Result<(String, String)> {
    let secrets = node::setup::read_secrets(&cluster.export_dir().join("secrets.toml"))?;
    let member = secrets.quorum.first().ok_or_else(|| anyhow::anyhow!("no quorum member"))?;
    Ok((member.id.clone(), member.passphrase.to_string()))
}

async fn addresses_of_services(cluster: &DockerCluster) -> anyhow::Result<Vec<String>> {
    let mut addresses = Vec::new();
    for service in SERVICES {
        addresses.push(cluster.compose.port(service, crate::agents::SERVICE_PORT).await?);
    }
    Ok(addresses)
}

/// Enrollment through `address`, retried while the KMA applies the agent's creation.
async fn enroll(
    address: &str,
    ca: &str,
    agent: &str,
    passphrase: &str,
) -> anyhow::Result<AgentCredentials> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        match agent_gateway::client::enroll(address, ca, agent, passphrase).await {
            Ok(credentials) => return Ok(credentials),
            Err(error) if Instant::now() > deadline => {
                return Err(anyhow::anyhow!("enrollment of {agent} through {address}: {error}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

async fn run_faults(
    config: &RunConfig,
    cluster: &DockerCluster,
    nemesis: &Nemesis<'_>,
    started: Instant,
    interrupted: &AtomicBool,
) -> anyhow::Result<Vec<FaultRecord>> {
    let mut records = Vec::new();
    let schedule = nemesis::schedule(config.seed, config.faults, config.hold_min);
    tokio::time::sleep(config.calm).await;
    for (n, fault) in schedule.into_iter().enumerate() {
        let out_of_time = config.duration.is_some_and(|duration| started.elapsed() >= duration);
        if interrupted.load(Ordering::SeqCst) || out_of_time {
            break;
        }
        eprintln!("chaos: fault {} at {:.0} s: {fault}", n + 1, started.elapsed().as_secs_f64());
        let injected_at_s = started.elapsed().as_secs_f64();
        let mut error = nemesis.inject(&fault).await.err().map(|e| format!("inject: {e:#}"));
        let hold_end = Instant::now() + fault.hold;
        while Instant::now() < hold_end && !interrupted.load(Ordering::SeqCst) {
            tokio::time::sleep(POLL_PAUSE).await;
        }
        if let Err(heal) = nemesis.heal(&fault).await {
            error.get_or_insert(format!("heal: {heal:#}"));
        }
        let healed = Instant::now();
        let healed_at_s = started.elapsed().as_secs_f64();
        let recovered = wait_recovered(cluster, RECOVERY_TIMEOUT).await;
        let recovered_after_s = recovered.as_ref().ok().map(|()| healed.elapsed().as_secs_f64());
        if let Err(recovery) = &recovered {
            error.get_or_insert(format!("recovery: {recovery:#}"));
        }
        records.push(FaultRecord {
            fault,
            injected_at_s,
            healed_at_s,
            recovered_after_s,
            assignments_per_s: 0.0,
            read_p99_ms: None,
            error,
        });
        tokio::time::sleep(config.calm).await;
    }
    Ok(records)
}

/// A leader confirmed by a follower, and every KMA answering, knowing it and caught up with
/// its last log index.
async fn wait_recovered(cluster: &DockerCluster, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let leader = cluster.leader(timeout).await?;
    let last = cluster.status(leader).await?.last_log_index.unwrap_or(0);
    for service in SERVICES {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        cluster.wait_ready(service, last, left.max(POLL_PAUSE)).await?;
    }
    Ok(())
}

/// The management address of a KMA whose audit log starts at the cluster's first event: a KMA
/// that joined or caught up from a snapshot keeps events only from there on (its anchor), and
/// the checker needs every assignment since the start.
async fn whole_audit_log(cluster: &DockerCluster) -> anyhow::Result<String> {
    let mut anchors = Vec::new();
    for service in SERVICES {
        let address = cluster.address(service).await?;
        let head: admin_api::api::AuditHead =
            cluster.admin.read_json(&address, "/v1/audit/head").await?;
        // One anchor, at the start: no snapshot install skipped events since.
        if head.anchor_seq == 0 && head.anchors.len() <= 1 {
            return Ok(address);
        }
        anchors.push((service, head.anchor_seq));
    }
    anyhow::bail!(
        "no KMA holds the whole audit log (their logs start after events {anchors:?}): the \
         committed history cannot be read back whole"
    )
}

/// Every audit event of the KMA at `address`, page by page.
async fn audit_events(admin: &KmaClient, address: &str) -> anyhow::Result<Vec<AuditEvent>> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = admin.audit_page(address, after.as_deref(), 0).await?;
        for record in &page.rows {
            let bytes = hex::decode(&record.encoded)?;
            events.push(postcard::from_bytes::<AuditEvent>(&bytes).map_err(|e| {
                anyhow::anyhow!("audit record {} does not decode: {e}", record.seq)
            })?);
        }
        match page.next {
            Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
            _ => return Ok(events),
        }
    }
}

/// The committed log names groups by number; the cluster names each group of a sample key.
async fn group_names(
    admin: &KmaClient,
    address: &str,
    committed: &Committed,
) -> anyhow::Result<BTreeMap<KeyGroupId, String>> {
    let mut names = BTreeMap::new();
    for (group, key) in committed.group_ids() {
        let path = format!("/v1/keys/{key}");
        let found: admin_api::api::Key = admin.read_json(address, &path).await?;
        if let Some(name) = found.group {
            names.insert(group, name);
        }
    }
    Ok(names)
}

fn fleets_kept_going(reports: &[(String, Result<FleetReport, FleetError>)]) -> Verdict {
    let mut failures = Vec::new();
    let mut ops = 0;
    for (agent, report) in reports {
        match report {
            Ok(report) => {
                ops += report.ops;
                if report.drives_given_up > 0 {
                    failures.push(format!("{agent}: {} drives gave up", report.drives_given_up));
                }
                if report.verification_failures > 0 {
                    failures.push(format!(
                        "{agent}: {} verification failures during the run",
                        report.verification_failures
                    ));
                }
            }
            Err(error) => failures.push(format!("{agent}: the fleet stopped: {error}")),
        }
    }
    let passed = failures.is_empty();
    let detail = if passed {
        format!("{ops} drive operations, no drive gave up")
    } else {
        failures.join("; ")
    };
    Verdict { property: "fleets_kept_going", passed, detail }
}

fn recovered_after_every_heal(faults: &[FaultRecord]) -> Verdict {
    let failures: Vec<String> = faults
        .iter()
        .filter_map(|record| {
            record.error.as_ref().map(|error| format!("{}: {error}", record.fault))
        })
        .collect();
    let passed = failures.is_empty();
    let detail = if passed {
        let slowest = faults.iter().filter_map(|r| r.recovered_after_s).fold(0.0, f64::max);
        format!("{} faults healed, slowest recovery {slowest:.1} s", faults.len())
    } else {
        failures.join("; ")
    };
    Verdict { property: "recovered_after_every_heal", passed, detail }
}

fn operations(
    evidence: &Evidence,
    fleets: &[(String, Result<FleetReport, FleetError>)],
    admin: &AdminHistory,
) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (_, event) in &evidence.drive_events {
        let kind = match event.answer {
            KeyAnswer::WriteKey { .. } => "write keys answered",
            KeyAnswer::Keys { .. } => "key sets answered",
            KeyAnswer::WriteKeyFailed { .. } => "write keys failed",
        };
        *counts.entry(kind.to_string()).or_default() += 1;
    }
    let drive_ops: u64 = fleets.iter().filter_map(|(_, r)| r.as_ref().ok()).map(|r| r.ops).sum();
    counts.insert("drive data operations".into(), drive_ops);
    counts.insert("admin operations".into(), evidence.admin_history.len() as u64);
    counts.extend(admin.counts());
    counts.insert("hand-outs logged".into(), evidence.handouts.len() as u64);
    counts
}

/// The calm stretch before the first fault (or the whole run without faults).
fn calm_window(faults: &[FaultRecord], duration_s: f64) -> (f64, f64) {
    (0.0, faults.first().map_or(duration_s, |first| first.injected_at_s))
}

/// Write keys answered per second, and the p99 of key-set reads (ms), between two times.
fn window_stats(evidence: &Evidence, from_s: f64, to_s: f64) -> (f64, Option<f64>) {
    let (from_ns, to_ns) = ((from_s * 1e9) as u64, (to_s * 1e9) as u64);
    let mut assignments = 0u64;
    let mut reads = Vec::new();
    for (_, event) in &evidence.drive_events {
        if event.returned_ns < from_ns || event.returned_ns >= to_ns {
            continue;
        }
        match event.answer {
            KeyAnswer::WriteKey { .. } => assignments += 1,
            KeyAnswer::Keys { .. } => {
                reads.push((event.returned_ns - event.invoked_ns) as f64 / 1e6);
            }
            KeyAnswer::WriteKeyFailed { .. } => {}
        }
    }
    let seconds = (to_s - from_s).max(1e-3);
    reads.sort_by(f64::total_cmp);
    let p99 = (!reads.is_empty()).then(|| {
        let rank = ((reads.len() as f64) * 0.99).ceil() as usize;
        reads[rank.saturating_sub(1).min(reads.len() - 1)]
    });
    (assignments as f64 / seconds, p99)
}

/// Faults by kind, for the results.
pub fn faults_by_kind(report: &RunReport) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for kind in FaultKind::ALL {
        counts.insert(kind.name(), report.faults.iter().filter(|r| r.fault.kind == kind).count());
    }
    counts
}
