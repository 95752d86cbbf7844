//! `drive-sim`: runs a fleet of simulated tape drives against the KMAs of a cluster and prints
//! ops/s, latency percentiles and verification failures. Exits 1 on an error, 2 when any
//! record read back did not decrypt to what was written, 3 when a drive gave up because every
//! KMA kept failing it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use agent_gateway::client::enroll;
use agent_gateway::drive_sim::{run_fleet, verify_fleet, DriveMode, FleetConfig, FleetReport};
use agent_gateway::{AgentClient, ClientOptions};
use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Prefetch keys on mount, disassociate on write from BOT.
    Stk,
    /// Fetch keys per read, a write key on every write after a reposition.
    Lto4,
}

/// A fleet of simulated tape drives: mount, write from BOT, append, read, recycle and
/// dismount tapes (files under --tape-dir), checking every record read back.
#[derive(Debug, Parser)]
#[command(name = "drive-sim", version)]
struct Cli {
    /// Service listener of a KMA (host:port); repeat for more. The others are discovered.
    #[arg(long = "kma", required = true, value_name = "HOST:PORT")]
    kmas: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// Enroll this agent first (with --passphrase-file); with --cert and --key, the new
    /// certificate and private key are saved there for later runs.
    #[arg(long, value_name = "ID", requires = "passphrase_file")]
    agent: Option<String>,
    /// The one-time enrollment passphrase of --agent.
    #[arg(long, value_name = "FILE", requires = "agent")]
    passphrase_file: Option<PathBuf>,
    /// The certificate of an enrolled agent (PEM).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of that agent (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    drives: usize,
    #[arg(long, value_enum, default_value_t = Mode::Stk)]
    mode: Mode,
    #[arg(long, default_value_t = 4)]
    tapes_per_drive: usize,
    /// Clear bytes per record.
    #[arg(long, default_value_t = 4096)]
    block_len: usize,
    /// Stop after this many data operations (write from BOT, append, read, recycle).
    #[arg(long)]
    ops: Option<u64>,
    /// Stop after this long: 500ms, 30s, 5m, 2h (a bare number is seconds).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    #[arg(long, default_value = "tapes")]
    tape_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// After the run, mount every tape once more and read it whole.
    #[arg(long)]
    verify: bool,
    /// Write nothing: mount every tape found under --tape-dir once and read it whole (tapes
    /// another cluster wrote, whose keys this cluster imported from it).
    #[arg(long, conflicts_with_all = ["ops", "duration", "verify"])]
    read_only: bool,
    /// Make "1.x tapes" from this KMS 1.x key export file (records sealed under its keys) and
    /// read each back through the KMAs by key ID; see --legacy-tapes.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ops", "duration", "verify", "read_only"])]
    legacy_keys: Option<PathBuf>,
    /// How many 1.x tapes, spread over the file's keys.
    #[arg(long, default_value_t = 100, requires = "legacy_keys")]
    legacy_tapes: usize,
    /// Print no progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 30s"))?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit `{unit}`: use ms, s, m or h")),
    };
    Ok(Duration::from_millis(number.saturating_mul(ms_per_unit)))
}

fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Readable by its owner only: the key is the agent's identity.
fn save_private_key(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(pem.as_bytes())
}

async fn connect(cli: &Cli) -> anyhow::Result<AgentClient> {
    let ca_pem = read(&cli.ca, "the cluster CA")?;
    let options = ClientOptions::default();
    if let (Some(agent), Some(passphrase_file)) = (&cli.agent, &cli.passphrase_file) {
        let passphrase = read(passphrase_file, "the passphrase file")?;
        let passphrase = passphrase.trim_end_matches(['\r', '\n']);
        let credentials = enroll(&cli.kmas[0], &ca_pem, agent, passphrase)
            .await
            .with_context(|| format!("enrolling agent {agent} with {}", cli.kmas[0]))?;
        if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
            std::fs::write(cert, &credentials.certificate_pem)
                .with_context(|| format!("saving the certificate to {}", cert.display()))?;
            save_private_key(key, &credentials.private_key_pem)
                .with_context(|| format!("saving the private key to {}", key.display()))?;
        }
        return Ok(AgentClient::from_credentials(&cli.kmas, &credentials, options)?);
    }
    let (Some(cert), Some(key)) = (&cli.cert, &cli.key) else {
        bail!("give --agent with --passphrase-file to enroll, or --cert and --key of an agent");
    };
    let cert_pem = read(cert, "the agent certificate")?;
    let key_pem = zeroize::Zeroizing::new(read(key, "the agent private key")?);
    Ok(AgentClient::with_options(&cli.kmas, &ca_pem, &cert_pem, &key_pem, options)?)
}

fn progress_bar(config: &FleetConfig, label: &str) -> ProgressBar {
    let unit = if config.ops.is_some() { "ops" } else { "s" };
    let template =
        format!("{label} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} {{msg}}");
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn run(cli: Cli) -> anyhow::Result<(FleetReport, Option<FleetReport>)> {
    if cli.ops.is_none() && cli.duration.is_none() && !cli.read_only {
        bail!("give --ops N or --duration 30s (or --read-only, or --legacy-keys FILE)");
    }
    let client = connect(&cli).await?;
    let config = FleetConfig {
        drives: cli.drives,
        mode: match cli.mode {
            Mode::Stk => DriveMode::StorageTek,
            Mode::Lto4 => DriveMode::Lto4,
        },
        tapes_per_drive: cli.tapes_per_drive,
        block_len: cli.block_len,
        ops: cli.ops,
        duration: cli.duration,
        tape_dir: cli.tape_dir.clone(),
        seed: cli.seed,
    };
    let clients = vec![client];
    if cli.read_only {
        let read_config = FleetConfig { ops: Some(0), ..config.clone() };
        let bar = (!cli.quiet).then(|| progress_bar(&read_config, "read"));
        let report = verify_fleet(clients, config, bar).await?;
        return Ok((report, None));
    }
    let bar = (!cli.quiet).then(|| progress_bar(&config, "run"));
    let report = run_fleet(clients.clone(), config.clone(), bar).await?;
    if !cli.verify {
        return Ok((report, None));
    }
    let bar = (!cli.quiet)
        .then(|| progress_bar(&FleetConfig { ops: Some(0), ..config.clone() }, "verify"));
    let verified = verify_fleet(clients, config, bar).await?;
    Ok((report, Some(verified)))
}

/// `--legacy-keys`: 1.x tapes made and read back by key ID; exit 2 on a record that did not
/// decrypt or a key the cluster refused.
async fn legacy(cli: &Cli, file: &Path) -> ExitCode {
    let outcome = async {
        let client = connect(cli).await?;
        let report = agent_gateway::drive_sim::legacy::read_legacy_tapes(
            &client,
            file,
            cli.legacy_tapes,
            &cli.tape_dir,
            cli.block_len,
        )
        .await?;
        anyhow::Ok(report)
    };
    match outcome.await {
        Ok(report) => {
            println!(
                "1.x tapes read: {} ({} records), failures: {}",
                report.tapes, report.records, report.failures
            );
            for refused in &report.refused {
                eprintln!("refused: {refused}");
            }
            if report.failures > 0 || report.tapes == 0 {
                eprintln!(
                    "error: {} records of 1.x tapes did not read back
help: import the                      file first (kmsctl import-1x), and give the drive access to its key group",
                    report.failures
                );
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "error: {error:#}
help: check --legacy-keys, --kma, --ca and the agent"
            );
            ExitCode::from(1)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(file) = cli.legacy_keys.clone() {
        return legacy(&cli, &file).await;
    }
    match run(cli).await {
        Ok((report, verified)) => {
            println!("{report}");
            let mut failures = report.verification_failures;
            let mut given_up = report.drives_given_up;
            if let Some(verified) = verified {
                println!("\nverification pass:\n{verified}");
                failures += verified.verification_failures;
                given_up += verified.drives_given_up;
            }
            if failures > 0 {
                eprintln!(
                    "error: {failures} records did not decrypt to what was written\n\
                     help: the tape files under the tape directory and the KMAs' audit logs \
                     show which keys and data units were involved"
                );
                return ExitCode::from(2);
            }
            if given_up > 0 {
                eprintln!(
                    "error: {given_up} drives gave up: every KMA failed them too often in a \
                     row\nhelp: check that a majority of KMAs is up and unlocked (`kma status`)"
                );
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "error: {error:#}\nhelp: check the --kma addresses, the --ca file and the \
                 agent's credentials; `drive-sim --help` lists the options"
            );
            ExitCode::from(1)
        }
    }
}
