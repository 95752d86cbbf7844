//! `kmsctl`, the operator's command-line tool (SPEC U1, U2, O7–O9, S5): one subcommand per
//! management API operation, grouped by noun (`kmsctl key list`, `kmsctl user create`).
//!
//! - A user logs in once (`kmsctl login`) and the profile keeps the cluster's addresses, its CA
//!   and the user's certificate (8 hours) with its key ([`profile`]).
//! - Tables for people, `--json` for scripts: the API's JSON as is; lists as one JSON array of
//!   every row of every page followed; `audit export` as JSON lines.
//! - Destroys and key-group changes print their impact preview and carry out only what was
//!   confirmed: at the prompt, or with `--confirm DIGEST` ([`impact`]).
//! - `kmsctl quorum approve --member M --unlock HOST:PORT` needs no session: after a cold
//!   restart every KMA is locked and none can grant one, so a quorum member gives their share
//!   straight to the locked KMA with their passphrase (the CA from `--ca` or the profile).
//! - Everything is drivable without a terminal: `--passphrase-stdin`, `--confirm`, `--json`,
//!   `KMSCTL_HOME`, `KMSCTL_PROFILE`, `KMSCTL_PASSPHRASE` (login only).
//!
//! Exit codes ([`exit`]), also in `kmsctl --help`:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | any other error |
//! | 2 | usage (clap's code; also input kmsctl checks itself) |
//! | 3 | refused by the cluster: rejected, forbidden, not found, bad request |
//! | 4 | unavailable: no leader, no KMA reachable, throttled (retryable) |
//! | 5 | confirmation needed: an impact preview was not confirmed |
//! | 6 | audit chain broken, or KMAs disagree on its head |
//! | 7 | not logged in, or the credentials expired |

pub mod args;
pub mod audit;
pub mod audit_verify;
pub mod catalog;
pub mod cluster;
pub mod context;
pub mod exit;
pub mod impact;
pub mod import;
pub mod keys;
pub mod profile;
pub mod prompt;
pub mod records;
pub mod render;
pub mod security;
pub mod session;
pub mod transfer;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::client::{AdminClient, ClientError};
use context::Ctx;
use exit::CliError;

#[derive(Debug, Parser)]
#[command(
    name = "kmsctl",
    version,
    about = "Manage a KMA cluster: sites, KMAs, users, the quorum, key policies and groups, \
             agents, data units, keys, backups and the audit log",
    after_help = exit::EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Debug, Args)]
pub struct Global {
    /// Print the API's JSON instead of tables (lists: one array of all rows).
    #[arg(long, global = true)]
    pub json: bool,
    /// The saved profile (cluster, CA, credentials) to use.
    #[arg(
        long,
        global = true,
        env = "KMSCTL_PROFILE",
        default_value = "default",
        value_name = "NAME"
    )]
    pub profile: String,
    /// Where profiles are kept [default: $HOME/.config/kmsctl].
    #[arg(long, global = true, env = "KMSCTL_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to a cluster with your passphrase and save the profile.
    Login(session::LoginArgs),
    /// Remove the profile's credentials.
    Logout(session::LogoutArgs),
    /// The saved profiles.
    #[command(subcommand)]
    Profile(session::ProfileCommand),
    /// Cluster health: each KMA's site, role, reachability, lock and replication lag.
    Status,
    /// Print the OpenAPI document the cluster serves.
    Openapi,
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Sites KMAs and agents belong to.
    #[command(subcommand)]
    Site(cluster::SiteCommand),
    /// The KMAs of the cluster.
    #[command(subcommand)]
    Kma(cluster::KmaCommand),
    /// Security settings and key pool limits.
    #[command(subcommand)]
    Settings(cluster::SettingsCommand),
    /// Users and their roles.
    #[command(subcommand)]
    User(security::UserCommand),
    /// The quorum and its pending operations.
    #[command(subcommand)]
    Quorum(security::QuorumCommand),
    /// Key policies.
    #[command(subcommand)]
    Policy(catalog::PolicyCommand),
    /// Key groups.
    #[command(subcommand)]
    Group(catalog::GroupCommand),
    /// Agents (tape drives).
    #[command(subcommand)]
    Agent(catalog::AgentCommand),
    /// Data units (tapes).
    #[command(subcommand)]
    DataUnit(keys::DataUnitCommand),
    /// Keys.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Import a KMS 1.x key export file into a key group (Compliance Officer).
    #[command(name = "import-1x")]
    Import1x(import::Import1xArgs),
    /// This cluster's transfer key, and transfer files for partners (SPEC T1-T4).
    #[command(subcommand)]
    Transfer(transfer::TransferCommand),
    /// Transfer partners: recorded through the quorum, their key groups, enabled or not.
    #[command(subcommand)]
    Partner(transfer::PartnerCommand),
    /// Backup records and the backup schedule.
    #[command(subcommand)]
    Backup(records::BackupCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let home = profile::home(cli.global.home.as_deref())?;
    let name = cli.global.profile.as_str();
    let json = cli.global.json;
    match &cli.command {
        Command::Login(args) => return session::login(&home, name, json, args).await,
        Command::Logout(args) => return session::logout(&home, name, args),
        Command::Profile(command) => return session::profile(&home, name, json, command),
        Command::Completion { shell } => return completion(*shell),
        // Straight to a locked KMA with the member's passphrase: no session (after a cold
        // restart nobody can have one).
        Command::Quorum(security::QuorumCommand::Approve(args)) if args.unlock.is_some() => {
            return security::approve_unlock(&home, name, json, args).await
        }
        _ => {}
    }
    let profile = profile::load(&home, name)?;
    let credentials = profile.credentials(session::now_ms())?;
    let client = AdminClient::new(
        profile.file.addresses.clone(),
        &credentials.ca_pem,
        &credentials.cert_pem,
        &credentials.key_pem,
    )?
    .with_login_index(profile.file.login_index);
    drop(credentials);
    let ctx = Ctx { client, json, profile };
    dispatch(&ctx, cli.command).await.map_err(|e| session_error(&ctx, e))
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<(), CliError> {
    match command {
        Command::Status => cluster::status(ctx).await,
        Command::Openapi => cluster::openapi(ctx).await,
        Command::Site(command) => cluster::site(ctx, command).await,
        Command::Kma(command) => cluster::kma(ctx, command).await,
        Command::Settings(command) => cluster::settings(ctx, command).await,
        Command::User(command) => security::user(ctx, command).await,
        Command::Quorum(command) => security::quorum(ctx, command).await,
        Command::Policy(command) => catalog::policy(ctx, command).await,
        Command::Group(command) => catalog::group(ctx, command).await,
        Command::Agent(command) => catalog::agent(ctx, command).await,
        Command::DataUnit(command) => keys::data_unit(ctx, command).await,
        Command::Key(command) => keys::key(ctx, command).await,
        Command::Import1x(args) => import::import_1x(ctx, &args).await,
        Command::Transfer(command) => transfer::transfer(ctx, command).await,
        Command::Partner(command) => transfer::partner(ctx, command).await,
        Command::Backup(command) => records::backup(ctx, command).await,
        Command::Audit(command) => audit::audit(ctx, command).await,
        Command::Login(_)
        | Command::Logout(_)
        | Command::Profile(_)
        | Command::Completion { .. } => Ok(()),
    }
}

/// A refusal for want of a valid session says how to log in again.
fn session_error(ctx: &Ctx, error: CliError) -> CliError {
    match error {
        CliError::Client(ClientError::Api { error, .. })
            if error.code == crate::api::ErrorCode::Unauthenticated =>
        {
            CliError::NotLoggedIn { message: error.message, help: ctx.profile.login_help() }
        }
        other => other,
    }
}

fn completion(shell: clap_complete::Shell) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kmsctl", &mut script);
    context::out(&String::from_utf8_lossy(&script))
}
