//! The nemesis: faults a data centre produces, injected into the compose cluster one at a time,
//! each healed before the next, chosen by a seed so that a failing run can be replayed
//! (issue 20 point 1).
//!
//! Every fault is recorded as active *before* it is injected, and only forgotten once healed:
//! [`Nemesis::heal_all`] heals whatever is still recorded, so a check that fails or a run that
//! is interrupted leaves nothing behind (the compose project's own teardown removes the
//! containers, and with them their network namespaces' rules; the host-side state, the
//! proxies and the tmpfs, is undone here).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use crate::cluster::{DockerCluster, SERVICES};
use crate::compose::Compose;

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Packets the latency proxies send on carry this mark; the REDIRECT rules skip them.
const PROXY_MARK: &str = "19277";
const PROXY_PORT: &str = "17001";
const PROXY_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The KMA whose data dir is the small tmpfs (`chaos-tests/compose/nemesis.yml`).
pub const SMALL_DISK_KMA: &str = "kma3";
/// Size of that tmpfs: room for a short run's log and state many times over.
const SMALL_DISK_MIB: u64 = 512;
/// What the ballast leaves free on it: less than one RocksDB write batch and its WAL record.
const SMALL_DISK_LEFT_KIB: u64 = 64;

/// The kinds of fault, in the order results are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` of the KMA's container; healed by starting it again.
    Kill,
    /// SIGSTOP to the KMA process (a hung machine); healed by SIGCONT.
    Stop,
    /// The KMA's container off the cluster network; healed by connecting it again.
    Partition,
    /// Packets from one KMA to another dropped at the receiver, the other way still flowing.
    OneWay,
    /// A whole site cut off from the others (its drives still reach it).
    SiteCut,
    /// Delay on every connection to and from the KMA, through a userspace proxy.
    Latency,
    /// A share of the packets to and from the KMA dropped.
    Loss,
    /// The KMA's wall clock moved (faketime), its monotonic clock left alone.
    ClockSkew,
    /// The KMA's disk filled; healed by freeing it and restarting the KMA.
    DiskFull,
    /// The KMA deleted from the cluster (it takes itself out); healed by a fresh KMA of the same
    /// name and site joining on a wiped data dir: admitted with a one-time passphrase and the
    /// quorum's approval, joined, unlocked by the quorum (`kma admit`, `kma join`,
    /// `kma unlock`, as an operator would).
    Membership,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::SiteCut,
        FaultKind::Latency,
        FaultKind::Loss,
        FaultKind::ClockSkew,
        FaultKind::DiskFull,
        FaultKind::Membership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::SiteCut => "site-cut",
            FaultKind::Latency => "latency",
            FaultKind::Loss => "loss",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Membership => "membership",
        }
    }
}

/// One fault: its kind, the KMA it hits, and for some kinds a peer and an amount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub target: &'static str,
    /// One-way: the KMA whose packets `target` no longer receives.
    pub peer: Option<&'static str>,
    /// Latency: delay in ms (jitter a quarter of it); loss: percent; clock skew: seconds
    /// (signed); otherwise 0.
    pub amount: i64,
    /// How long the fault stays before it is healed.
    pub hold: Duration,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), self.target)?;
        if let Some(peer) = self.peer {
            write!(f, " (from {peer})")?;
        }
        match self.kind {
            FaultKind::Latency => write!(f, " {} ms", self.amount)?,
            FaultKind::Loss => write!(f, " {}%", self.amount)?,
            FaultKind::ClockSkew => write!(f, " {:+} s", self.amount)?,
            _ => {}
        }
        write!(f, " for {:.0?}", self.hold)
    }
}

/// The faults of a run, from its seed: `count` faults, every kind once in a seeded order before
/// any repeats (a short run covers them all), then kinds drawn at random. Holds between
/// `hold_min` and twice that. Each fault is drawn whole before the next, so a schedule is a
/// prefix of any longer one of the same seed: a run that reached N faults is replayed with
/// `--faults N`.
pub fn schedule(seed: u64, count: usize, hold_min: Duration) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut first = FaultKind::ALL.to_vec();
    first.shuffle(&mut rng);
    (0..count)
        .map(|n| {
            let kind = match first.get(n) {
                Some(kind) => *kind,
                None => FaultKind::ALL[rng.gen_range(0..FaultKind::ALL.len())],
            };
            draw(&mut rng, kind, hold_min)
        })
        .collect()
}

/// The target, peer, amount and hold of one fault of `kind`.
fn draw(rng: &mut StdRng, kind: FaultKind, hold_min: Duration) -> Fault {
    let target = match kind {
        FaultKind::DiskFull => SMALL_DISK_KMA,
        // kma1 holds the quickstart secrets that admit and unlock a KMA.
        FaultKind::Membership => SERVICES[rng.gen_range(1..SERVICES.len())],
        _ => SERVICES[rng.gen_range(0..SERVICES.len())],
    };
    let peer = (kind == FaultKind::OneWay).then(|| {
        let others: Vec<&'static str> = SERVICES.into_iter().filter(|s| *s != target).collect();
        others[rng.gen_range(0..others.len())]
    });
    let amount = match kind {
        FaultKind::Latency => rng.gen_range(50..=400),
        FaultKind::Loss => rng.gen_range(10..=40),
        FaultKind::ClockSkew => {
            let seconds = rng.gen_range(30..=600);
            if rng.gen_bool(0.5) {
                seconds
            } else {
                -seconds
            }
        }
        _ => 0,
    };
    let hold_ms = hold_min.as_millis() as u64;
    let hold = Duration::from_millis(rng.gen_range(hold_ms..=hold_ms * 2));
    Fault { kind, target, peer, amount, hold }
}

/// Injects and heals faults in one compose project, and remembers what is still active.
pub struct Nemesis<'a> {
    cluster: &'a DockerCluster,
    compose: &'a Compose,
    /// Host dir of the run (`KMS_CHAOS_DIR`): faketime files, the small disk.
    dir: PathBuf,
    proxy: PathBuf,
    active: Mutex<Vec<Fault>>,
    proxies: tokio::sync::Mutex<Vec<Child>>,
    /// The logs of the containers a membership change removed, kept for the checker.
    removed_logs: Mutex<Vec<(String, String)>>,
}

impl<'a> Nemesis<'a> {
    /// `dir` must have been prepared with [`prepare_dir`] before the project came up; `proxy`
    /// is the `chaos-proxy` binary.
    pub fn new(cluster: &'a DockerCluster, dir: &Path, proxy: &Path) -> Nemesis<'a> {
        Nemesis {
            cluster,
            compose: &cluster.compose,
            dir: dir.to_path_buf(),
            proxy: proxy.to_path_buf(),
            active: Mutex::default(),
            proxies: tokio::sync::Mutex::default(),
            removed_logs: Mutex::default(),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        // Nothing panics while holding it; the list stays whole.
        self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// (service, log) of every container a membership change removed, oldest first: what its
    /// KMA logged is evidence too.
    pub fn removed_logs(&self) -> Vec<(String, String)> {
        self.removed_logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn keep_log(&self, service: &str, log: String) {
        let mut removed =
            self.removed_logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        removed.push((service.to_string(), log));
    }

    /// The faults injected and not yet healed.
    pub fn still_active(&self) -> Vec<Fault> {
        self.active().clone()
    }

    pub async fn inject(&self, fault: &Fault) -> anyhow::Result<()> {
        self.active().push(fault.clone());
        let compose = self.compose;
        let target = fault.target;
        match fault.kind {
            FaultKind::Kill => compose.kill(target, "KILL").await,
            FaultKind::Stop => self.signal_kma(target, "STOP").await,
            FaultKind::Partition => compose.disconnect(target).await,
            FaultKind::OneWay => {
                let from = fault.peer.unwrap_or(SERVICES[0]);
                let ip = compose.ip(from).await?;
                self.add_rule(target, &Rule::new(None, "INPUT", &["-s", &ip, "-j", "DROP"])).await
            }
            FaultKind::SiteCut => compose.cut_off(target, &others(target)).await,
            FaultKind::Latency => self.latency(target, fault.amount).await,
            FaultKind::Loss => self.loss(target, fault.amount, true).await,
            FaultKind::ClockSkew => self.skew(target, fault.amount),
            FaultKind::DiskFull => self.fill_disk(),
            FaultKind::Membership => self.delete_kma(target).await,
        }
    }

    /// Heals `fault`; it stays recorded as active if healing fails, so that [`heal_all`]
    /// tries again.
    ///
    /// [`heal_all`]: Nemesis::heal_all
    pub async fn heal(&self, fault: &Fault) -> anyhow::Result<()> {
        let compose = self.compose;
        let target = fault.target;
        match fault.kind {
            FaultKind::Kill => start_unless_running(compose, target).await?,
            FaultKind::Stop => self.signal_kma(target, "CONT").await?,
            FaultKind::Partition => {
                // Connecting a container that is connected already fails: heal what is there.
                if compose.ip(target).await.is_err() {
                    compose.connect(target).await?;
                }
            }
            FaultKind::OneWay => {
                let from = fault.peer.unwrap_or(SERVICES[0]);
                let ip = compose.ip(from).await?;
                let rule = Rule::new(None, "INPUT", &["-s", &ip, "-j", "DROP"]);
                self.delete_rule(target, &rule).await?;
            }
            FaultKind::SiteCut => compose.heal(target, &others(target)).await?,
            FaultKind::Latency => self.heal_latency(target).await?,
            FaultKind::Loss => self.loss(target, fault.amount, false).await?,
            FaultKind::ClockSkew => self.skew(target, 0)?,
            FaultKind::DiskFull => {
                self.free_disk()?;
                // The heal of a full disk is a restart once space is free.
                compose.stop(target).await?;
                compose.start(target).await?;
            }
            FaultKind::Membership => self.replace_kma(target).await?,
        }
        self.active().retain(|active| active != fault);
        Ok(())
    }

    /// Heals every fault still active, newest first; returns the ones that could not be healed.
    pub async fn heal_all(&self) -> Vec<(Fault, String)> {
        let mut failed = Vec::new();
        let pending: Vec<Fault> = self.still_active().into_iter().rev().collect();
        for fault in pending {
            if let Err(error) = self.heal(&fault).await {
                failed.push((fault, format!("{error:#}")));
            }
        }
        self.stop_proxies().await;
        failed
    }

    /// The host PID of the `kma` process in `service` (not tini, PID 1 of the container).
    async fn kma_pid(&self, service: &str) -> anyhow::Result<String> {
        let id = self.compose.container_id(service).await?;
        let mut top = Command::new("docker");
        top.args(["top", &id, "-eo", "pid,args"]);
        let out = crate::run(&mut top, CALL_TIMEOUT).await?;
        out.lines()
            .skip(1)
            .find(|line| line.contains("kma run"))
            .and_then(|line| line.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no `kma run` process in {service}:\n{out}"))
    }

    async fn signal_kma(&self, service: &str, signal: &str) -> anyhow::Result<()> {
        let pid = self.kma_pid(service).await?;
        crate::run(Command::new("kill").args([&format!("-{signal}"), &pid]), CALL_TIMEOUT).await?;
        Ok(())
    }

    async fn iptables(&self, service: &str, rule: &[&str]) -> anyhow::Result<()> {
        let pid = self.compose.pid(service).await?;
        let mut command = Command::new("nsenter");
        command.args(["-t", &pid, "-n", "iptables"]).args(rule);
        crate::run(&mut command, CALL_TIMEOUT).await?;
        Ok(())
    }

    async fn add_rule(&self, service: &str, rule: &Rule) -> anyhow::Result<()> {
        self.iptables(service, &rule.args("-A")).await
    }

    /// Deletes every copy of a rule (`-D` until it fails): a heal that runs twice, or after a
    /// partial injection, still leaves none.
    async fn delete_rule(&self, service: &str, rule: &Rule) -> anyhow::Result<()> {
        for _ in 0..16 {
            if self.iptables(service, &rule.args("-D")).await.is_err() {
                return Ok(());
            }
        }
        anyhow::bail!("a rule of {service} is still there after 16 deletions: {rule:?}")
    }

    /// The rules of a latency fault on `target`: in each KMA's namespace, for each peer on the
    /// other side of the fault, its connections redirected to the proxy and the ones open
    /// before reset.
    async fn latency_rules(&self, target: &str) -> anyhow::Result<Vec<(&'static str, Rule)>> {
        let mut rules = Vec::new();
        for service in SERVICES {
            let destinations = if service == target { others(target) } else { vec![target] };
            for destination in destinations {
                let ip = self.compose.ip(destination).await?;
                let unmarked = ["-p", "tcp", "-d", &ip, "-m", "mark", "!", "--mark", PROXY_MARK];
                let redirect = [&unmarked[..], &["-j", "REDIRECT", "--to-ports", PROXY_PORT]];
                rules.push((service, Rule::new(Some("nat"), "OUTPUT", &redirect.concat())));
                let reset = [&unmarked[..], &["-j", "REJECT", "--reject-with", "tcp-reset"]];
                rules.push((service, Rule::new(None, "OUTPUT", &reset.concat())));
            }
        }
        Ok(rules)
    }

    /// Delay on every connection between `target` and the other KMAs, both ways: in each KMA's
    /// network namespace a proxy, and a REDIRECT of the connections it opens (to `target`, or
    /// from `target` to the others) to that proxy. Connections open before the rules would
    /// bypass them, so those are reset: each KMA opens new ones, through the proxy.
    async fn latency(&self, target: &str, delay_ms: i64) -> anyhow::Result<()> {
        for service in SERVICES {
            let pid = self.compose.pid(service).await?;
            self.start_proxy(&pid, delay_ms, delay_ms / 4).await?;
        }
        for (service, rule) in self.latency_rules(target).await? {
            self.add_rule(service, &rule).await?;
        }
        Ok(())
    }

    async fn heal_latency(&self, target: &str) -> anyhow::Result<()> {
        for (service, rule) in self.latency_rules(target).await? {
            self.delete_rule(service, &rule).await?;
        }
        // Ending the proxies closes the connections through them: the KMAs reconnect directly.
        self.stop_proxies().await;
        Ok(())
    }

    async fn start_proxy(&self, pid: &str, delay_ms: i64, jitter_ms: i64) -> anyhow::Result<()> {
        let mut command = Command::new("nsenter");
        command.args(["-t", pid, "-n"]).arg(&self.proxy);
        command.args(["--listen", &format!("127.0.0.1:{PROXY_PORT}")]);
        command.args(["--delay-ms", &delay_ms.to_string(), "--jitter-ms", &jitter_ms.to_string()]);
        command.args(["--mark", PROXY_MARK]);
        command.stdout(Stdio::piped()).stderr(Stdio::null()).stdin(Stdio::null());
        let mut child = command.kill_on_drop(true).spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("proxy stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(PROXY_READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("listening on") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        self.proxies.lock().await.push(child);
        anyhow::ensure!(
            matches!(ready, Ok(Ok(true))),
            "the latency proxy did not start in the namespace of PID {pid}: {ready:?}"
        );
        Ok(())
    }

    async fn stop_proxies(&self) {
        let mut proxies = self.proxies.lock().await;
        for mut child in proxies.drain(..) {
            if let Some(pid) = child.id() {
                // SIGTERM: the proxy closes its connections and exits.
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    /// `percent` of the packets between `target` and each other KMA dropped, both ways.
    async fn loss(&self, target: &str, percent: i64, add: bool) -> anyhow::Result<()> {
        let probability = format!("{:.2}", percent as f64 / 100.0);
        for peer in others(target) {
            let ip = self.compose.ip(peer).await?;
            for (chain, direction) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                let random = ["-m", "statistic", "--mode", "random", "--probability"];
                let spec = [&[direction, &ip][..], &random, &[&probability, "-j", "DROP"]];
                let rule = Rule::new(None, chain, &spec.concat());
                if add {
                    self.add_rule(target, &rule).await?;
                } else {
                    self.delete_rule(target, &rule).await?;
                }
            }
        }
        Ok(())
    }

    /// Moves `target`'s wall clock by `seconds` (0: back to true time); libfaketime in the KMA
    /// reads the file again within a second.
    fn skew(&self, target: &str, seconds: i64) -> anyhow::Result<()> {
        write_offset(&self.dir, target, seconds)
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join(format!("{SMALL_DISK_KMA}-data")).join("chaos-ballast")
    }

    /// Fills the small disk but for a few KiB.
    fn fill_disk(&self) -> anyhow::Result<()> {
        let mount = self.dir.join(format!("{SMALL_DISK_KMA}-data"));
        let free = free_bytes(&mount)?;
        let size = free.saturating_sub(SMALL_DISK_LEFT_KIB * 1024);
        let file = std::fs::File::create(self.ballast())?;
        // tmpfs allocates on write only: set_len would leave a hole that takes no space.
        let mut written = 0u64;
        let block = vec![0xa5u8; 1 << 20];
        let mut writer = std::io::BufWriter::new(file);
        while written < size {
            let n = block.len().min((size - written) as usize);
            if std::io::Write::write_all(&mut writer, &block[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
        let _ = std::io::Write::flush(&mut writer);
        drop(writer);
        // The fault must be real: a ballast that left room would prove nothing.
        let left = free_bytes(&mount)?;
        anyhow::ensure!(
            left <= 2 * SMALL_DISK_LEFT_KIB * 1024,
            "the small disk still has {left} bytes free after the ballast"
        );
        Ok(())
    }

    fn free_disk(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.ballast()) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(anyhow::anyhow!("cannot remove the ballast: {error}")),
        }
    }
}

/// How long a deleted KMA may take to notice and stop, and a fresh one to join.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(180);
/// Where kma1's entry point keeps its quickstart secrets (`docker/entrypoint.sh`).
const KMA1_SECRETS: &str = "/data/secrets.toml";

impl Nemesis<'_> {
    /// Deletes `target` from the cluster (a replicated, audited command through the leader),
    /// then waits until it has taken itself out and stopped.
    async fn delete_kma(&self, target: &str) -> anyhow::Result<()> {
        let leader = self.cluster.leader(MEMBERSHIP_TIMEOUT).await?;
        let address = self.cluster.address(leader).await?;
        let command = statemachine::Command::DeleteKma { name: target.into() };
        let applied = self.cluster.admin.propose(&address, None, command).await?;
        let applied = applied.map_err(|refused| anyhow::anyhow!("DeleteKma refused: {refused}"))?;
        applied.result.map_err(|reject| anyhow::anyhow!("DeleteKma rejected: {reject}"))?;
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_TIMEOUT;
        while self.kma_pid(target).await.is_ok() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{target} still runs {MEMBERSHIP_TIMEOUT:?} after its deletion"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The restart policy would start it again and again: it refuses, being deleted.
        self.compose.stop(target).await
    }

    /// A fresh KMA named `target` joins in the deleted one's place: its container made again
    /// on a wiped data dir, admitted (entry and quorum approval) and unlocked through kma1's
    /// quickstart secrets, as `docker/entrypoint.sh` does on a first start.
    async fn replace_kma(&self, target: &str) -> anyhow::Result<()> {
        let site = crate::run::SITES[SERVICES.iter().position(|s| *s == target).unwrap_or(0)];
        self.compose.stop(target).await?;
        let log = self.compose.full_log(target).await?;
        self.keep_log(target, log);
        self.compose.remove_service(target).await?;
        if target == SMALL_DISK_KMA {
            wipe(&self.dir.join(format!("{SMALL_DISK_KMA}-data")))?;
        } else {
            self.compose.remove_volume(&format!("{target}-data")).await?;
        }
        let markers = ["admitted", "joined", "unlocked", "passphrases", "sites"]
            .map(|marker| format!("/shared/{marker}/{target}"))
            .join(" ");
        self.exec_kma1(&format!("rm -f {markers}")).await?;
        self.compose.up_service(target).await?;
        let admit = format!(
            "set -e; umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'              > /shared/passphrases/{target};              kma admit --data-dir /data --secrets-file {KMA1_SECRETS} --peer 127.0.0.1:7001              --name {target} --site {site} --passphrase-file /shared/passphrases/{target};              touch /shared/admitted/{target}"
        );
        self.retry_kma1(&admit, "admit").await?;
        let joined = format!("test -e /shared/joined/{target}");
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_TIMEOUT;
        while self.exec_kma1(&joined).await.is_err() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the fresh {target} did not join within {MEMBERSHIP_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let unlock = format!(
            "kma unlock --data-dir /data --secrets-file {KMA1_SECRETS} --peer 127.0.0.1:7001              --name {target} --autonomous"
        );
        self.retry_kma1(&unlock, "unlock").await
    }

    async fn exec_kma1(&self, script: &str) -> anyhow::Result<String> {
        let id = self.compose.container_id(SERVICES[0]).await?;
        let mut command = Command::new("docker");
        command.args(["exec", &id, "bash", "-c", script]);
        crate::run(&mut command, MEMBERSHIP_TIMEOUT).await
    }

    /// Runs `script` in kma1 until it succeeds (a leader elected, the entry committed), at most
    /// a few times.
    async fn retry_kma1(&self, script: &str, what: &str) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..10 {
            match self.exec_kma1(script).await {
                Ok(_) => return Ok(()),
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Err(last
            .map_or_else(|| anyhow::anyhow!("{what} failed"), |e| e.context(format!("kma {what}"))))
    }
}

/// Removes everything in `dir`, keeping `dir` (a mount point).
fn wipe(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// One iptables rule, added with `-A` and deleted with `-D` from the same words.
#[derive(Debug)]
struct Rule {
    table: Option<&'static str>,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    fn new(table: Option<&'static str>, chain: &'static str, spec: &[&str]) -> Rule {
        Rule { table, chain, spec: spec.iter().map(|word| (*word).to_string()).collect() }
    }

    fn args<'a>(&'a self, action: &'a str) -> Vec<&'a str> {
        let mut args = Vec::new();
        if let Some(table) = self.table {
            args.extend(["-t", table]);
        }
        args.extend([action, self.chain]);
        args.extend(self.spec.iter().map(String::as_str));
        args
    }
}

fn others(target: &str) -> Vec<&'static str> {
    SERVICES.into_iter().filter(|service| *service != target).collect()
}

async fn start_unless_running(compose: &Compose, service: &str) -> anyhow::Result<()> {
    let id = compose.container_id(service).await?;
    let mut inspect = Command::new("docker");
    inspect.args(["inspect", "-f", "{{.State.Running}}", &id]);
    if crate::run(&mut inspect, CALL_TIMEOUT).await?.trim() == "true" {
        return Ok(());
    }
    compose.start(service).await
}

fn write_offset(dir: &Path, service: &str, seconds: i64) -> anyhow::Result<()> {
    let file = dir.join("faketime").join(service);
    // libfaketime's relative form: "+N" or "-N" seconds from true time.
    let spec = format!("{seconds:+}\n");
    let temporary = file.with_extension("new");
    std::fs::write(&temporary, spec)?;
    // A rename, so the KMA never reads a half-written offset.
    std::fs::rename(&temporary, &file)?;
    Ok(())
}

fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    let out =
        std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(path).output()?;
    anyhow::ensure!(out.status.success(), "df {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("df {}: no free size in {text:?}", path.display()))
}

/// Name of a run's host dir: `kms-chaos-<pid>-<nanos>` in the temporary dir, so that a later
/// run can tell one left by a process that is gone ([`orphaned_dirs`]) from a live run's.
pub const RUN_DIR_PREFIX: &str = "kms-chaos-";

/// A new, empty host dir for a run.
pub fn run_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{RUN_DIR_PREFIX}{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Run dirs whose process is gone (an interrupted run that could not clean up).
pub fn orphaned_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            let Some(rest) = name.strip_prefix(RUN_DIR_PREFIX) else { return false };
            let pid = rest.split('-').next().unwrap_or_default();
            let numeric = !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit());
            numeric && !Path::new("/proc").join(pid).exists()
        })
        .collect()
}

/// Makes the host side of a run in `dir`: the faketime files at true time, and the small disk,
/// a tmpfs mounted at `dir/kma3-data`. [`release_dir`] undoes it.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("faketime"))?;
    for service in SERVICES {
        write_offset(dir, service, 0)?;
    }
    let disk = dir.join(format!("{SMALL_DISK_KMA}-data"));
    std::fs::create_dir_all(&disk)?;
    let size = format!("size={SMALL_DISK_MIB}m,mode=0755");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &size, "kms-chaos"])
        .arg(&disk)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "cannot mount a tmpfs at {} (the chaos suite runs as root)",
        disk.display()
    );
    Ok(())
}

/// Unmounts the small disk and removes `dir`; safe to call on a dir left by an interrupted run.
pub fn release_dir(dir: &Path) -> anyhow::Result<()> {
    let disk = dir.join(format!("{SMALL_DISK_KMA}-data"));
    if is_mount_point(&disk) {
        let status = std::process::Command::new("umount").arg("-l").arg(&disk).status()?;
        anyhow::ensure!(status.success(), "cannot unmount {}", disk.display());
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(anyhow::anyhow!("cannot remove {}: {error}", dir.display())),
    }
}

fn is_mount_point(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let wanted = path.display().to_string();
    mounts.lines().any(|line| line.split_whitespace().nth(1) == Some(wanted.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same faults (a failing run is replayed by its seed); another
    /// seed gives another order; the first nine cover every kind.
    #[test]
    fn a_schedule_is_a_function_of_its_seed_and_covers_every_kind() {
        let hold = Duration::from_secs(5);
        assert_eq!(schedule(42, 20, hold), schedule(42, 20, hold));
        assert_ne!(schedule(42, 20, hold), schedule(43, 20, hold));
        // A run cut short by its duration is replayed by its seed and the faults it reached.
        assert_eq!(schedule(42, 35, hold), schedule(42, 100_000, hold)[..35]);
        let first: std::collections::BTreeSet<FaultKind> =
            schedule(7, FaultKind::ALL.len(), hold).iter().map(|f| f.kind).collect();
        assert_eq!(first.len(), FaultKind::ALL.len());
        for fault in schedule(9, 200, hold) {
            assert!(fault.hold >= hold && fault.hold <= hold * 2, "{fault}");
            assert_eq!(fault.peer.is_some(), fault.kind == FaultKind::OneWay, "{fault}");
            assert_ne!(fault.peer, Some(fault.target), "{fault}");
            if fault.kind == FaultKind::DiskFull {
                assert_eq!(fault.target, SMALL_DISK_KMA);
            }
        }
    }
}
