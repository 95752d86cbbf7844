//! One docker-compose project of the top-level `docker-compose.yml`, under a project name unique
//! to this test run, so that runs never share containers, networks or volumes. Dropping it takes
//! the project down with its volumes (after printing the KMAs' logs if the test is failing).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::process::Command;

/// Bounds for one docker or docker-compose call.
const UP_TIMEOUT: Duration = Duration::from_secs(180);
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const DOWN_TIMEOUT: Duration = Duration::from_secs(120);
/// What `docker stop` gives a KMA to shut down cleanly before it sends SIGKILL.
const STOP_GRACE_SECONDS: u32 = 20;
const FAILURE_LOG_LINES: u32 = 150;

/// The compose network the KMAs share (`networks: kms` in the compose file).
const NETWORK: &str = "kms";

pub struct Compose {
    project: String,
    /// The top-level compose file, then any override files (a later file wins).
    files: Vec<PathBuf>,
    /// The compose file's variables; a test may change one between calls (e.g. a KMA's image
    /// during a rolling upgrade).
    env: Mutex<Vec<(String, String)>>,
    /// Service name to container ID: an ID survives stop and start, so it is asked for once.
    ids: Mutex<BTreeMap<String, String>>,
}

impl Compose {
    /// A project named `<prefix><pid><time>`; `env` fills the compose file's variables.
    pub fn new(prefix: &str, env: Vec<(String, String)>) -> Compose {
        Compose::with_overrides(prefix, env, Vec::new())
    }

    /// As [`Compose::new`], with override files after the top-level compose file.
    pub fn with_overrides(
        prefix: &str,
        env: Vec<(String, String)>,
        overrides: Vec<PathBuf>,
    ) -> Compose {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let project = format!("{prefix}{}x{nanos:x}", std::process::id());
        let mut files = vec![crate::image::repo_root().join("docker-compose.yml")];
        files.extend(overrides);
        Compose { project, files, env: Mutex::new(env), ids: Mutex::default() }
    }

    /// Sets one of the compose file's variables for the calls from now on.
    pub fn set_env(&self, name: &str, value: &str) {
        let mut env = self.env.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        env.retain(|(existing, _)| existing != name);
        env.push((name.to_string(), value.to_string()));
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    fn compose_std(&self) -> std::process::Command {
        let mut command = std::process::Command::new("docker-compose");
        command.arg("--no-ansi").args(["-p", &self.project]);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command.arg("--project-directory").arg(crate::image::repo_root());
        let env = self.env.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        command.envs(env.iter().map(|(name, value)| (name, value)));
        command.stdin(Stdio::null());
        command
    }

    fn compose(&self) -> Command {
        Command::from(self.compose_std())
    }

    /// `docker-compose up -d`: creates the network, volumes and containers and starts them.
    pub async fn up(&self) -> anyhow::Result<()> {
        crate::run(self.compose().args(["up", "-d", "--no-build"]), UP_TIMEOUT).await?;
        Ok(())
    }

    /// `docker-compose up -d --no-deps SERVICE`: creates `service`'s container again when its
    /// configuration changed (an image, a variable), keeping its volumes; starts it.
    pub async fn up_service(&self, service: &str) -> anyhow::Result<()> {
        let mut command = self.compose();
        command.args(["up", "-d", "--no-build", "--no-deps", service]);
        crate::run(&mut command, UP_TIMEOUT).await?;
        // A new container has a new ID.
        self.ids.lock().map_err(poisoned)?.remove(service);
        Ok(())
    }

    /// `docker-compose rm -sfv SERVICE`: its container goes (stopped first), anonymous volumes
    /// with it; named volumes stay (see [`Compose::remove_volume`]).
    pub async fn remove_service(&self, service: &str) -> anyhow::Result<()> {
        crate::run(self.compose().args(["rm", "-s", "-f", "-v", service]), UP_TIMEOUT).await?;
        self.ids.lock().map_err(poisoned)?.remove(service);
        Ok(())
    }

    /// Removes the project's named volume `volume` (e.g. `kma2-data`); its containers must be
    /// gone.
    pub async fn remove_volume(&self, volume: &str) -> anyhow::Result<()> {
        let name = format!("{}_{volume}", self.project);
        crate::run(Command::new("docker").args(["volume", "rm", &name]), CALL_TIMEOUT).await?;
        Ok(())
    }

    /// The container ID of `service` (running or stopped).
    pub async fn container_id(&self, service: &str) -> anyhow::Result<String> {
        if let Some(id) = self.ids.lock().map_err(poisoned)?.get(service) {
            return Ok(id.clone());
        }
        let out = crate::run(self.compose().args(["ps", "-q", service]), CALL_TIMEOUT).await?;
        let id = out.trim().to_string();
        anyhow::ensure!(!id.is_empty(), "no container for service {service} in {}", self.project);
        self.ids.lock().map_err(poisoned)?.insert(service.into(), id.clone());
        Ok(id)
    }

    /// Where `container_port` of `service` is published on the host, `127.0.0.1:PORT`; an error
    /// while the container is not running. Docker picks the port again at each start, so ask
    /// again after a restart.
    pub async fn port(&self, service: &str, container_port: u16) -> anyhow::Result<String> {
        let id = self.container_id(service).await?;
        let port = format!("{container_port}/tcp");
        let out =
            crate::run(Command::new("docker").args(["port", &id, &port]), CALL_TIMEOUT).await?;
        let address = out.lines().next().unwrap_or_default().trim();
        anyhow::ensure!(address.contains(':'), "{service} {port} is not published: '{address}'");
        Ok(address.replace("0.0.0.0:", "127.0.0.1:"))
    }

    async fn docker(&self, args: &[&str], service: &str) -> anyhow::Result<()> {
        let id = self.container_id(service).await?;
        crate::run(Command::new("docker").args(args).arg(&id), CALL_TIMEOUT).await?;
        Ok(())
    }

    /// `docker kill -s SIGNAL`: `KILL` is a power cut for the process (no clean shutdown).
    pub async fn kill(&self, service: &str, signal: &str) -> anyhow::Result<()> {
        self.docker(&["kill", "-s", signal], service).await
    }

    /// `docker stop`: SIGTERM, then SIGKILL after the grace period.
    pub async fn stop(&self, service: &str) -> anyhow::Result<()> {
        self.docker(&["stop", "-t", &STOP_GRACE_SECONDS.to_string()], service).await
    }

    pub async fn start(&self, service: &str) -> anyhow::Result<()> {
        self.docker(&["start"], service).await
    }

    /// `docker pause`: the processes freeze (a hung machine); `unpause` thaws them.
    pub async fn pause(&self, service: &str) -> anyhow::Result<()> {
        self.docker(&["pause"], service).await
    }

    pub async fn unpause(&self, service: &str) -> anyhow::Result<()> {
        self.docker(&["unpause"], service).await
    }

    /// Cuts `service` off the cluster network (the KMAs no longer reach it, nor it them).
    pub async fn disconnect(&self, service: &str) -> anyhow::Result<()> {
        let network = format!("{}_{NETWORK}", self.project);
        self.docker(&["network", "disconnect", &network], service).await
    }

    /// Puts `service` back on the cluster network under its service name.
    pub async fn connect(&self, service: &str) -> anyhow::Result<()> {
        let network = format!("{}_{NETWORK}", self.project);
        self.docker(&["network", "connect", "--alias", service, &network], service).await
    }

    /// The PID of `service`'s main process on the host (for `nsenter` into its namespaces).
    pub async fn pid(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container_id(service).await?;
        let mut inspect = Command::new("docker");
        inspect.args(["inspect", "-f", "{{.State.Pid}}", &id]);
        let out = crate::run(&mut inspect, CALL_TIMEOUT).await?;
        let pid = out.trim().to_string();
        anyhow::ensure!(pid != "0" && !pid.is_empty(), "{service} is not running");
        Ok(pid)
    }

    /// The address of `service` on the cluster network.
    pub async fn ip(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container_id(service).await?;
        let network = format!("{}_{NETWORK}", self.project);
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let mut inspect = Command::new("docker");
        inspect.args(["inspect", "-f", &format, &id]);
        let out = crate::run(&mut inspect, CALL_TIMEOUT).await?;
        let ip = out.trim().to_string();
        anyhow::ensure!(
            ip.contains('.'),
            "{service} has no address on the cluster network: '{ip}'"
        );
        Ok(ip)
    }

    /// Drops, inside `service`'s network namespace, every packet from and to `peers`: its
    /// connections to them and theirs to it stop, while the host (published ports, through the
    /// bridge's gateway) still reaches it. `heal` takes the rules out again.
    pub async fn cut_off(&self, service: &str, peers: &[&str]) -> anyhow::Result<()> {
        self.filter(service, peers, "-A").await
    }

    pub async fn heal(&self, service: &str, peers: &[&str]) -> anyhow::Result<()> {
        self.filter(service, peers, "-D").await
    }

    async fn filter(&self, service: &str, peers: &[&str], action: &str) -> anyhow::Result<()> {
        let pid = self.pid(service).await?;
        for peer in peers {
            let ip = self.ip(peer).await?;
            for (chain, direction) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                let mut command = Command::new("nsenter");
                command.args(["-t", &pid, "-n", "iptables", action, chain, direction, &ip]);
                command.args(["-j", "DROP"]);
                crate::run(&mut command, CALL_TIMEOUT).await?;
            }
        }
        Ok(())
    }

    /// The whole log of `service`'s container (stdout and stderr, in order), for checks that
    /// read what the KMA logged. Held in memory: a chaos run's KMA logs a few MiB an hour.
    pub async fn full_log(&self, service: &str) -> anyhow::Result<String> {
        let id = self.container_id(service).await?;
        let mut command = Command::new("docker");
        command.args(["logs", &id]).stdin(Stdio::null()).kill_on_drop(true);
        let output = tokio::time::timeout(DOWN_TIMEOUT, command.output())
            .await
            .map_err(|_| anyhow::anyhow!("docker logs {service} did not finish"))??;
        anyhow::ensure!(output.status.success(), "docker logs {service} failed");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(text)
    }

    /// The last lines of every container's log.
    pub fn logs(&self) -> String {
        let tail = format!("--tail={FAILURE_LOG_LINES}");
        let mut command = self.compose_std();
        command.args(["logs", "--no-color", &tail]);
        match run_blocking(command, CALL_TIMEOUT) {
            Ok(text) => text,
            Err(error) => format!("(no logs: {error})"),
        }
    }

    /// `docker-compose down -v`: containers, network and volumes go.
    pub fn down(&self) -> anyhow::Result<()> {
        let mut command = self.compose_std();
        command.args(["down", "-v", "--remove-orphans", "-t", "5"]);
        run_blocking(command, DOWN_TIMEOUT).map(|_| ())
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- logs of compose project {} ----\n{}", self.project, self.logs());
        }
        if let Err(error) = self.down() {
            eprintln!("warning: could not take compose project {} down: {error:#}", self.project);
        }
    }
}

fn poisoned<T>(_: T) -> anyhow::Error {
    anyhow::anyhow!("a thread panicked while it held the container ID cache")
}

/// For `Drop`, where nothing can be awaited: polls the child until `timeout`, then kills it.
/// Output goes to temporary files, so a chatty child never blocks on a full pipe.
fn run_blocking(mut command: std::process::Command, timeout: Duration) -> anyhow::Result<String> {
    use std::io::{Read, Seek};
    let shown = format!("{command:?}");
    let mut out = tempfile::tempfile()?;
    let mut child = command
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {shown}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{shown} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut bytes = Vec::new();
    out.rewind()?;
    out.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    anyhow::ensure!(status.success(), "{shown} failed ({status}): {text}");
    Ok(text)
}
