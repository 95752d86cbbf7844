//! `kma`: run a Key Management Appliance, create or join a cluster, or start a local one.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use node::client::KmaClient;
use node::config::Listening;
use node::kma::Kma;
use node::setup::Listeners;
use statemachine::role::RoleSet;
use statemachine::Command;

#[derive(Parser)]
#[command(name = "kma", version, about = "Key Management Appliance: one node of a KMS cluster")]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(clap::Args)]
struct Where {
    /// Data directory of this KMA.
    #[arg(long)]
    data_dir: PathBuf,
    /// This KMA's name in the cluster.
    #[arg(long)]
    name: String,
    /// The site this KMA serves.
    #[arg(long)]
    site: String,
    /// Management listener (admin API, Raft between KMAs). Port 0: a free port the OS
    /// chooses now, kept in kma.toml.
    #[arg(long, default_value = "127.0.0.1:7001")]
    management: SocketAddr,
    /// How other KMAs reach the management listener, host:port (default: --management; port
    /// 0: the management port chosen).
    #[arg(long)]
    advertise: Option<String>,
    /// Service listener (agents). Port 0: a free port the OS chooses now, kept in kma.toml.
    #[arg(long, default_value = "127.0.0.1:7101")]
    service: SocketAddr,
    /// KMIP listener for tape libraries (docs/kmip.md), e.g. 0.0.0.0:5696. Unset: no KMIP.
    /// Port 0: a free port the OS chooses now, kept in kma.toml.
    #[arg(long)]
    kmip: Option<SocketAddr>,
}

impl Where {
    fn listeners(&self) -> Listeners {
        Listeners {
            management_listen: self.management,
            management_advertise: self
                .advertise
                .clone()
                .unwrap_or_else(|| self.management.to_string()),
            service_listen: self.service,
            kmip_listen: self.kmip,
        }
    }
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Data directory of a KMA of the cluster (its CA certificate is trusted).
    #[arg(long)]
    data_dir: PathBuf,
    /// The quickstart secrets file: the Security Officer logs in with its passphrase, and it
    /// holds the quorum members' passphrases.
    #[arg(long)]
    secrets_file: PathBuf,
    /// Management address of a KMA of the cluster.
    #[arg(long)]
    peer: String,
}

#[derive(Subcommand)]
enum Action {
    /// Create a new cluster: its ID, its CA, the first Security Officer, the quorum and a new
    /// master key split among it, and this first KMA.
    Init {
        #[command(flatten)]
        at: Where,
        /// A TOML file with the quickstart's secrets (see docs/security.md); without it, the
        /// values are asked for on the terminal.
        #[arg(long)]
        secrets_file: Option<PathBuf>,
    },
    /// Join a running cluster as the KMA a Security Officer created, once the quorum approves.
    Join {
        #[command(flatten)]
        at: Where,
        /// Management address of any KMA of the cluster.
        #[arg(long)]
        peer: String,
        /// File holding this KMA's one-time passphrase (else $KMS_JOIN_PASSPHRASE, else asked).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// SHA-256 of the cluster CA certificate (hex), as `kma init` printed it.
        #[arg(long)]
        ca_fingerprint: Option<String>,
        /// Seconds to wait for the quorum's approval.
        #[arg(long, default_value_t = 600)]
        wait_s: u64,
    },
    /// Scripted setups where one operator holds every secret (containers, tests): create a KMA
    /// entry with a one-time passphrase and have the quorum from the secrets file approve its join.
    Admit {
        #[command(flatten)]
        admin: AdminArgs,
        /// The new KMA's name and site.
        #[arg(long)]
        name: String,
        #[arg(long)]
        site: String,
        /// File with the new KMA's one-time passphrase (for its `kma join --passphrase-file`).
        #[arg(long)]
        passphrase_file: PathBuf,
    },
    /// Scripted setups: have the quorum from the secrets file unlock a member KMA (and, with
    /// --autonomous, let it unlock itself after reboots).
    Unlock {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        autonomous: bool,
    },
    /// Serve: the KMA in this data directory. Once listening, it writes the addresses it
    /// bound to <data dir>/listening.toml.
    Run {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Start a whole cluster on this machine: N KMAs on loopback, data under --dir.
    Local {
        #[arg(long, default_value = ".kms-local")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Management ports base+1.., service ports base+101.., KMIP ports base+201..; 0: free
        /// ports the OS chooses.
        /// A KMA created earlier keeps the ports in its kma.toml.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
    },
    /// Return this appliance to factory defaults (SPEC C5): remove its data directory, after
    /// `kmsctl kma delete` took it out of the cluster. The KMA must be stopped.
    Reset {
        #[arg(long)]
        data_dir: PathBuf,
        /// Overwrite every file (twice, synced) before removing it.
        #[arg(long)]
        scrub: bool,
        /// Confirm: the wrapped keys, certificates and audit log on this machine are removed.
        #[arg(long)]
        yes: bool,
    },
    /// Restore a lost cluster from a database backup onto this factory-fresh KMA (SPEC B3):
    /// a local ceremony where quorum members type their passphrases here. It becomes a new
    /// cluster of one with the backup's keys, data units, agents, users and audit chain; the
    /// other KMAs then join it as usual. See docs/operations.md.
    Restore {
        #[command(flatten)]
        at: Where,
        /// The database backup file (`*.kmsdb`).
        #[arg(long)]
        data: PathBuf,
        /// Its backup key file (`*.kmsdb.key`).
        #[arg(long)]
        key: PathBuf,
        /// The core security backup of the cluster's quorum.
        #[arg(long)]
        core_security: PathBuf,
        /// An audit export (`kmsctl audit export`) kept since the backup was taken: the
        /// restore then names the keys destroyed after the backup that it brings back
        /// (SPEC B4). It must continue the backup's audit chain.
        #[arg(long, value_name = "FILE")]
        audit_export: Option<PathBuf>,
        /// Read the members' passphrases from standard input, one `MEMBER-ID PASSPHRASE` a
        /// line (scripts); without it each member types theirs at this console.
        #[arg(long)]
        passphrases_stdin: bool,
    },
    /// Recover from a lost majority (SPEC B7) on this stopped surviving KMA: a local ceremony
    /// where quorum members type their passphrases here. It becomes a one-KMA cluster with its
    /// state intact, the lost KMAs removed and the key pool quarantined. Fence the lost KMAs
    /// first (docs/operations.md).
    RecoverFromLostMajority {
        #[arg(long)]
        data_dir: PathBuf,
        /// Confirm: the other KMAs are gone for good and fenced off.
        #[arg(long)]
        yes: bool,
        /// Read the members' passphrases from standard input, one `MEMBER-ID PASSPHRASE` a
        /// line (scripts); without it each member types theirs at this console.
        #[arg(long)]
        passphrases_stdin: bool,
    },
    /// A scheduled backup's restore drill (run by the KMA itself, SPEC B5): restores a backup
    /// into a scratch directory with the backup key read from standard input (hex), and prints
    /// the digest of the state it decoded as JSON.
    #[command(hide = true)]
    RestoreDrill {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        scratch: PathBuf,
    },
    /// Show a KMA's status, read with the certificate of the KMA in the data directory given.
    Status {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        peer: String,
    },
    /// Create N users through a development cluster made by `kma local` (refused on any
    /// other): a quick write test.
    Write {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        peer: String,
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
}

fn main() -> anyhow::Result<()> {
    // Colour codes only for a terminal, and never under NO_COLOR (an explicit choice here
    // overrides the subscriber's own NO_COLOR check): in a log file they cost time on every
    // line (one per key handed out) and get in the way of whoever reads or parses it.
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
    // Before anything reads a passphrase or a key: no core dump may carry them away.
    node::vault::protect_process_memory().context("cannot keep secrets out of core dumps")?;
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Reset { data_dir, scrub, yes } => reset(&data_dir, scrub, yes),
        Action::Init { at, secrets_file } => init(&at, secrets_file.as_deref()),
        Action::RecoverFromLostMajority { data_dir, yes, passphrases_stdin } => {
            recover(&data_dir, yes, passphrases_stdin).await
        }
        Action::RestoreDrill { data, scratch } => {
            let report = node::backup::schedule::restore_drill(&data, &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            println!("{}", serde_json::to_string(&report?)?);
            Ok(())
        }
        Action::Restore { at, data, key, core_security, audit_export, passphrases_stdin } => {
            let files = node::setup::restore::RestoreFiles {
                data: &data,
                key: &key,
                core_security: &core_security,
            };
            restore(&at, &files, audit_export.as_deref(), passphrases_stdin)
        }
        Action::Join { at, peer, passphrase_file, ca_fingerprint, wait_s } => {
            let passphrase = node::setup::prompt::join_passphrase(passphrase_file.as_deref())?;
            let credentials = node::setup::JoinCredentials {
                peer: &peer,
                passphrase: &passphrase,
                ca_fingerprint: ca_fingerprint.as_deref(),
                wait: Duration::from_secs(wait_s),
            };
            let node_id =
                node::setup::join(&at.data_dir, &at.name, &at.site, &at.listeners(), &credentials)
                    .await?;
            println!(
                "joined as node {node_id}; serving (later starts: kma run --data-dir {})",
                at.data_dir.display()
            );
            print_listeners(&at.data_dir)?;
            run(&at.data_dir).await
        }
        Action::Run { data_dir } => run(&data_dir).await,
        Action::Admit { admin, name, site, passphrase_file } => {
            admit(&admin, &name, &site, &passphrase_file).await
        }
        Action::Unlock { admin, name, autonomous } => {
            let secrets = node::setup::read_secrets(&admin.secrets_file)?;
            let client = KmaClient::officer(&admin.data_dir, &admin.peer, &secrets).await?;
            node::setup::local::unlock_when_member(
                &client,
                &admin.peer,
                &secrets,
                &name,
                autonomous,
            )
            .await?;
            println!("KMA '{name}' unlocked");
            Ok(())
        }
        Action::Local { dir, nodes, base_port } => local(&dir, nodes, base_port).await,
        Action::Status { data_dir, peer } => {
            let status = KmaClient::node(&data_dir)?.status(&peer).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        Action::Write { data_dir, peer, count } => write(&data_dir, &peer, count).await,
    }
}

fn init(at: &Where, secrets_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let secrets = match secrets_file {
        Some(path) => node::setup::read_secrets(path)?,
        None => node::setup::prompt::init_secrets()?,
    };
    let cluster_id =
        node::setup::init(&at.data_dir, &at.name, &at.site, &at.listeners(), &secrets)?;
    let ca = node::pki::read(&at.data_dir.join("tls").join(node::pki::CA_FILE))?;
    println!(
        "created cluster {cluster_id:016x} with KMA '{}' in {}",
        at.name,
        at.data_dir.display()
    );
    println!(
        "CA fingerprint (for kma join --ca-fingerprint): {}",
        hex::encode(node::pki::fingerprint(&ca)?)
    );
    print_listeners(&at.data_dir)?;
    println!("next: kma run --data-dir {}", at.data_dir.display());
    Ok(())
}

fn restore(
    at: &Where,
    files: &node::setup::restore::RestoreFiles<'_>,
    audit_export: Option<&std::path::Path>,
    passphrases_stdin: bool,
) -> anyhow::Result<()> {
    use node::setup::restore::{combine, restore, AuditExport, CheckedBackup};
    let backup = CheckedBackup::open(files)?;
    let export = audit_export.map(AuditExport::read).transpose()?;
    println!(
        "backup {} of cluster {:016x}, taken on KMA '{}', covers log index {} (files check out)",
        hex::encode(backup.uuid),
        backup.cluster_id.0,
        backup.data.header.taken_on_kma,
        backup.key.covers_index,
    );
    let shares = node::setup::prompt::quorum_shares(
        &backup.members(),
        backup.threshold(),
        passphrases_stdin,
        |member, passphrase| backup.open_share(member, passphrase),
    )?;
    let master = combine(&shares)?;
    drop(shares);
    let report = restore(
        &at.data_dir,
        &at.name,
        &at.site,
        &at.listeners(),
        &backup,
        export.as_ref(),
        &master,
    )?;
    println!(
        "restored into {}: cluster {} at log index {} (the backup's {} and the restore), KMA \
         '{}' as node {} of cluster epoch {}",
        at.data_dir.display(),
        report.cluster_id,
        report.restore_index,
        report.covers_index,
        at.name,
        report.node_id,
        report.epoch
    );
    println!(
        "brought back: {} keys, {} data units, {} agents, {} users, {} key groups, {} audit \
         events; {} pool keys quarantined (handed out only by ID, SPEC A5); KMAs removed: {}",
        report.keys,
        report.data_units,
        report.agents,
        report.users,
        report.key_groups,
        report.audit_events,
        report.pool_keys_quarantined,
        if report.kmas_removed.is_empty() { "none".into() } else { report.kmas_removed.join(", ") }
    );
    print_destroyed_since(&report);
    println!(
        "agents keep their certificates (same CA); agents enrolled after the backup must \
         enroll again. Report: {}",
        at.data_dir.join(node::setup::restore::REPORT_FILE).display()
    );
    print_listeners(&at.data_dir)?;
    println!("next: kma run --data-dir {}", at.data_dir.display());
    Ok(())
}

/// What the restore says of keys destroyed after its backup (SPEC B4).
fn print_destroyed_since(report: &node::setup::restore::RestoreReport) {
    if !report.destroyed_since_known {
        println!(
            "keys destroyed after the backup come back with it; which ones, an audit export \
             kept since tells (--audit-export)"
        );
    } else if report.keys_destroyed_since_backup.is_empty() {
        println!("no key destroyed after the backup (per the audit export) came back");
    } else {
        println!(
            "brought back {} keys destroyed after the backup (SPEC B4; destroy them again if \
             they must stay destroyed): {}",
            report.keys_destroyed_since_backup.len(),
            report.keys_destroyed_since_backup.join(", ")
        );
    }
}

async fn recover(
    data_dir: &std::path::Path,
    yes: bool,
    passphrases_stdin: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        yes,
        "kma recover-from-lost-majority makes this KMA a cluster of one and removes every other \
         KMA: fence the lost KMAs first (docs/operations.md), then run it again with --yes"
    );
    let report = node::setup::recover::recover_from_lost_majority(data_dir, |state| {
        let cluster = state.cluster_id().ok_or_else(|| anyhow::anyhow!("no cluster"))?;
        let quorum = &state.meta().quorum;
        let members: Vec<String> = quorum.members.iter().map(|m| m.id.clone()).collect();
        let shares = node::setup::prompt::quorum_shares(
            &members,
            quorum.threshold,
            passphrases_stdin,
            |member, passphrase| {
                let Some(found) = quorum.members.iter().find(|m| m.id == member) else {
                    anyhow::bail!(
                        "'{member}' is not a member of this quorum (members: {})",
                        members.join(", ")
                    );
                };
                security_core::unwrap_share(&found.wrapped_share, cluster, member, passphrase)
                    .map_err(|_| anyhow::anyhow!("wrong passphrase for quorum member '{member}'"))
            },
        )?;
        node::setup::restore::combine(&shares)
    })
    .await?;
    println!(
        "recovered: KMA '{}' (node {}) is now a cluster of one at log index {} (kept every \
         entry it knew committed, up to {}; dropped {} it never learnt committed); the other \
         KMAs are removed and the key pool quarantined; cluster epoch {} starts, and this KMA \
         presents a new certificate of it (drives and KMAs that saw it refuse the lost KMAs)",
        report.kma,
        report.node_id,
        report.recovery_index,
        report.committed_index,
        report.uncommitted_dropped,
        report.epoch
    );
    println!("next: kma run --data-dir {}, then join new KMAs to it", data_dir.display());
    Ok(())
}

/// Where a new KMA listens: port 0 became the port the OS chose, this KMA's from now on.
fn print_listeners(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let config = node::config::NodeConfig::load(data_dir)?;
    println!(
        "listeners (kept in kma.toml): management {} (advertised as {}), service {}",
        config.management_listen, config.management_advertise, config.service_listen
    );
    Ok(())
}

fn reset(data_dir: &std::path::Path, scrub: bool, yes: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        yes,
        "kma reset removes everything this KMA holds in {}; run it again with --yes (and \
         --scrub to overwrite the files first)",
        data_dir.display()
    );
    let report = node::setup::reset::reset(data_dir, scrub)?;
    println!(
        "reset: removed {} files from {} ({} bytes overwritten first)",
        report.files,
        data_dir.display(),
        report.bytes_scrubbed
    );
    Ok(())
}

async fn admit(
    admin: &AdminArgs,
    name: &str,
    site: &str,
    passphrase_file: &std::path::Path,
) -> anyhow::Result<()> {
    let secrets = node::setup::read_secrets(&admin.secrets_file)?;
    let client = KmaClient::officer(&admin.data_dir, &admin.peer, &secrets).await?;
    let passphrase = node::setup::prompt::join_passphrase(Some(passphrase_file))?;
    node::setup::quorum_flow::admit_kma(&client, &admin.peer, &secrets, (name, site), &passphrase)
        .await?;
    println!("KMA '{name}' admitted: run kma join on it with its passphrase");
    Ok(())
}

async fn run(data_dir: &std::path::Path) -> anyhow::Result<()> {
    // A report left by a run killed with -9 is not this run's.
    Listening::remove(data_dir)?;
    let kma = Kma::start(data_dir)
        .await
        .with_context(|| format!("cannot start the KMA in {}", data_dir.display()))?;
    if data_dir.join(node::setup::QUICKSTART_FILE).exists() {
        kma.initialize_if_new().await?;
    }
    kma.spawn_duties();
    let config = &kma.local.config;
    check_file_limit(config.connections_max);
    let listener = bind(config.management_listen, "management").await?;
    let service_listener = bind(config.service_listen, "service").await?;
    let kmip_listener = match config.kmip_listen {
        Some(address) => Some(bind(address, "KMIP").await?),
        None => None,
    };
    let listening = Listening {
        management: listener.local_addr()?,
        service: service_listener.local_addr()?,
        kmip: kmip_listener.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?,
    };
    listening.save(data_dir)?;
    tracing::info!(
        node_id = kma.node_id(),
        management = %listening.management,
        service = %listening.service,
        kmip = ?listening.kmip,
        reported_in = %data_dir.join(node::config::LISTENING_FILE).display(),
        "KMA serving"
    );
    let mut departed = false;
    tokio::select! {
        served = kma.serve(listener, service_listener, kmip_listener) => served?,
        () = stop_requested() => tracing::info!("stopping"),
        () = kma.stop.notified() => departed = true,
    }
    if let Err(error) = Listening::remove(data_dir) {
        tracing::warn!(%error, "the listeners' report stays behind");
    }
    kma.local.raft.shutdown().await.map_err(|e| anyhow::anyhow!("raft shutdown: {e}"))?;
    if departed {
        let why = node::departure::Departed::load(data_dir).map_or_else(
            || "this KMA was deleted from its cluster and stopped".to_string(),
            |record| record.refusal(data_dir),
        );
        anyhow::bail!(why);
    }
    Ok(())
}

/// Raises the open-file limit to its hard limit, and warns when even that leaves too little room
/// for both listeners at their bounds (`connections_max` each) besides RocksDB's files and the
/// Raft links: the bounds exist so that a flood never runs the process out of descriptors.
fn check_file_limit(connections_max: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%error, "the open-file limit could not be raised to its hard limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let needed = 2 * connections_max as u64 + 1_024;
    if current < needed {
        tracing::warn!(
            open_files_max = current,
            needed,
            "the open-file limit is below what both listeners may hold: lower connections_max \
             in kma.toml or raise the limit (ulimit -n, LimitNOFILE=)"
        );
    }
}

/// Binds one of the KMA's listeners at the address in its `kma.toml`.
async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen on {address} ({what}): is another KMA or program using it? \
             (`ss -ltnp 'sport = :{}'` shows which)",
            address.port()
        )
    })
}

async fn local(dir: &std::path::Path, nodes: usize, base_port: u16) -> anyhow::Result<()> {
    let binary = std::env::current_exe()?;
    let children = node::setup::local::start(&binary, dir, nodes, base_port).await?;
    let first = dir.join("kma1");
    println!("local cluster of {nodes} KMAs is up; data and logs under {}", dir.display());
    let kmas = node::setup::local::layout(dir, nodes, base_port)?;
    for entry in &kmas {
        let kmip = entry.kmip.as_deref().map(|kmip| format!("  KMIP {kmip}")).unwrap_or_default();
        println!(
            "  {}  management https://{}  service https://{}{kmip}  data {}",
            entry.name,
            entry.management,
            entry.service,
            entry.data_dir.display()
        );
    }
    let secrets = dir.join(node::setup::local::SECRETS_FILE);
    println!("quickstart secrets (development only): {}", secrets.display());
    let kma = binary.display();
    // Status from the first KMA, writes through the second (a follower forwards them).
    let status_at = &kmas[0].management;
    let write_at = &kmas[kmas.len().min(2) - 1].management;
    let kmsctl = binary.with_file_name("kmsctl");
    let ca = first.join("tls").join(node::pki::CA_FILE);
    println!(
        "log in (the officer's passphrase is in the secrets file):\n  {} login --address \
         {status_at} --address {write_at} --ca {} --user admin",
        kmsctl.display(),
        ca.display()
    );
    println!("  then e.g. {} status; {} user list", kmsctl.display(), kmsctl.display());
    println!("try: {kma} status --data-dir {} --peer {status_at}", first.display());
    println!("     {kma} write --data-dir {} --peer {write_at} --count 100", first.display());
    println!("Ctrl-C stops the cluster; running this command again restarts it with its data.");
    stop_requested().await;
    drop(children);
    Ok(())
}

async fn write(data_dir: &std::path::Path, peer: &str, count: u32) -> anyhow::Result<()> {
    // A load tool that creates users by the hundred belongs on a development cluster only
    // (issue #16 point 9).
    if !node::setup::local::is_local_cluster(data_dir) {
        anyhow::bail!(
            "kma write loads a development cluster made by `kma local` (give one of its data \
             dirs, e.g. .kms-local/kma1); {} is not one. On a real cluster create users with \
             kmsctl user create",
            data_dir.display()
        );
    }
    let secrets_path = data_dir.join("..").join(node::setup::local::SECRETS_FILE);
    let secrets = node::setup::read_secrets(&secrets_path)?;
    let client = KmaClient::officer(data_dir, peer, &secrets).await?;
    let started = std::time::Instant::now();
    let prefix = format!("{:08x}", rand::random::<u32>());
    let mut last = 0;
    for n in 0..count {
        let command = Command::CreateUser {
            id: format!("user-{prefix}-{n}"),
            roles: RoleSet::of(statemachine::Role::Auditor),
            passphrase_verifier: Vec::new(),
        };
        let applied = client
            .propose_with_passphrase(peer, None, command, Some("write-test-passphrase"))
            .await??;
        if let Err(reject) = applied.result {
            anyhow::bail!("the cluster refused the write: {reject}");
        }
        last = applied.index;
    }
    let seconds = started.elapsed().as_secs_f64().max(Duration::from_millis(1).as_secs_f64());
    println!(
        "{count} users created through {peer}, last log index {last}, {:.0} writes/s",
        f64::from(count) / seconds
    );
    Ok(())
}

/// Ctrl-C or SIGTERM (what `docker stop` and service managers send).
async fn stop_requested() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the KMA");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
