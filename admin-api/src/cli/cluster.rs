//! `kmsctl status`, `openapi`, `site`, `kma` and `settings` (SPEC C1–C8, S2).

use clap::{ArgGroup, Subcommand};
use reqwest::Method;

use super::args::{duration_ms, PassphraseArgs};
use super::context::{out, Ctx};
use super::exit::CliError;
use super::prompt::{self, Source};
use super::render;
use crate::api::{
    ClusterStatus, Done, KeyPoolLimits, Kma, NewKma, NewSite, SecuritySettings, Settings, Site,
};
use crate::client::segment;

#[derive(Clone, Debug, Subcommand)]
pub enum SiteCommand {
    /// List the sites.
    List,
    /// Create a site.
    Create { name: String },
    /// Delete a site that no KMA and no agent belongs to.
    Delete { name: String },
}

#[derive(Clone, Debug, Subcommand)]
pub enum KmaCommand {
    /// List the KMAs of the cluster.
    List,
    /// Create the entry of a new KMA; its passphrase is the one `kma join` will be given.
    Create {
        name: String,
        /// The site the KMA stands at.
        #[arg(long)]
        site: String,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Remove a KMA from the cluster.
    Delete { name: String },
    /// Lock a KMA: it forgets its master key until the quorum unlocks it.
    Lock { name: String },
    /// Start the quorum operation that unlocks a KMA.
    Unlock { name: String },
    /// Stop a KMA from unlocking itself after a restart.
    DisableAutonomousUnlock { name: String },
}

#[derive(Clone, Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show the security settings and the key pool.
    Show,
    /// Change security settings (the others stay as they are).
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    Security {
        /// Shortest passphrase accepted for users, agents and KMAs.
        #[arg(long, group = "change", value_name = "CHARS")]
        passphrase_len_min: Option<u32>,
        /// Failed logins before a principal is throttled.
        #[arg(long, group = "change", value_name = "COUNT")]
        login_failures_max: Option<u32>,
        /// How long a throttled principal waits, e.g. 5m.
        #[arg(long, group = "change", value_parser = duration_ms, value_name = "DURATION")]
        login_throttle: Option<u64>,
        /// How long a quorum operation waits for approvals, e.g. 1d.
        #[arg(long, group = "change", value_parser = duration_ms, value_name = "DURATION")]
        quorum_operation_ttl: Option<u64>,
    },
    /// Change the key pool's low and high water marks.
    #[command(group(ArgGroup::new("change").required(true).multiple(true)))]
    KeyPool {
        /// Refill the pool when fewer keys than this are ready.
        #[arg(long, group = "change", value_name = "KEYS")]
        low_water: Option<u32>,
        /// Refill up to this many ready keys.
        #[arg(long, group = "change", value_name = "KEYS")]
        high_water: Option<u32>,
    },
}

pub async fn status(ctx: &Ctx) -> Result<(), CliError> {
    let status: ClusterStatus = ctx.client.get("/v1/cluster/status").await?;
    ctx.show(&status, render::status)
}

pub async fn openapi(ctx: &Ctx) -> Result<(), CliError> {
    let document: serde_json::Value = ctx.client.get("/v1/openapi.json").await?;
    out(&render::json(&document))
}

pub async fn site(ctx: &Ctx, command: SiteCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        SiteCommand::List => {
            let rows: Vec<Site> = client.get("/v1/sites").await?;
            ctx.show(&rows, |rows| render::sites(rows))
        }
        SiteCommand::Create { name } => {
            let done = client
                .write(Method::POST, "/v1/sites", Some(&NewSite { name: name.clone() }))
                .await?;
            ctx.done(&format!("Site {name} created"), &done)
        }
        SiteCommand::Delete { name } => {
            let path = format!("/v1/sites/{}", segment(&name));
            let done = client.write::<()>(Method::DELETE, &path, None).await?;
            ctx.done(&format!("Site {name} deleted"), &done)
        }
    }
}

pub async fn kma(ctx: &Ctx, command: KmaCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    let (what, path, method) = match command {
        KmaCommand::List => {
            let rows: Vec<Kma> = client.get("/v1/kmas").await?;
            return ctx.show(&rows, |rows| render::kmas(rows));
        }
        KmaCommand::Create { name, site, passphrase } => {
            let source = Source::from_flag(passphrase.passphrase_stdin);
            let secret = prompt::new_passphrase(source, &format!("passphrase of KMA {name}"))?;
            let body = NewKma { name: name.clone(), site, passphrase: secret.to_string() };
            let done = client.write(Method::POST, "/v1/kmas", Some(&body)).await;
            prompt::wipe(body.passphrase);
            return ctx.done(&format!("KMA {name} created; join it with `kma join`"), &done?);
        }
        KmaCommand::Unlock { name } => {
            let path = format!("/v1/kmas/{}/unlock", segment(&name));
            let done = client.write::<()>(Method::POST, &path, None).await?;
            return unlock_started(ctx, &name, &done);
        }
        KmaCommand::Delete { name } => {
            (format!("KMA {name} deleted"), name_path(&name, ""), Method::DELETE)
        }
        KmaCommand::Lock { name } => {
            (format!("KMA {name} locked"), name_path(&name, "/lock"), Method::POST)
        }
        KmaCommand::DisableAutonomousUnlock { name } => (
            format!("KMA {name} no longer unlocks itself"),
            name_path(&name, "/disable-autonomous-unlock"),
            Method::POST,
        ),
    };
    let done = client.write::<()>(method, &path, None).await?;
    ctx.done(&what, &done)
}

fn name_path(name: &str, rest: &str) -> String {
    format!("/v1/kmas/{}{rest}", segment(name))
}

/// The quorum operation a command started, from its `Done.detail`.
pub fn quorum_operation_of(done: &Done) -> Option<u64> {
    ["quorum_operation", "operation", "id"]
        .iter()
        .find_map(|field| done.detail.get(field).and_then(serde_json::Value::as_u64))
}

/// Says which operation now waits for the quorum and how members approve it.
fn unlock_started(ctx: &Ctx, name: &str, done: &Done) -> Result<(), CliError> {
    ctx.done(&format!("Unlock of KMA {name} waits for the quorum"), done)?;
    if !ctx.json {
        if let Some(id) = quorum_operation_of(done) {
            super::context::note(&format!(
                "help: each quorum member approves with: kmsctl quorum approve {id} --member \
                 MEMBER --min-index {}",
                done.index
            ));
        }
    }
    Ok(())
}

pub async fn settings(ctx: &Ctx, command: SettingsCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    let current: Settings = client.get("/v1/settings").await?;
    match command {
        SettingsCommand::Show => ctx.show(&current, render::settings),
        SettingsCommand::Security {
            passphrase_len_min,
            login_failures_max,
            login_throttle,
            quorum_operation_ttl,
        } => {
            let now = current.security;
            let body = SecuritySettings {
                passphrase_len_min: passphrase_len_min.unwrap_or(now.passphrase_len_min),
                login_failures_max: login_failures_max.unwrap_or(now.login_failures_max),
                login_throttle_ms: login_throttle.unwrap_or(now.login_throttle_ms),
                quorum_operation_ttl_ms: quorum_operation_ttl
                    .unwrap_or(now.quorum_operation_ttl_ms),
            };
            let done = client.write(Method::PUT, "/v1/settings/security", Some(&body)).await?;
            ctx.done("Security settings changed", &done)
        }
        SettingsCommand::KeyPool { low_water, high_water } => {
            let now = current.key_pool;
            let body = KeyPoolLimits {
                low_water: low_water.unwrap_or(now.low_water),
                high_water: high_water.unwrap_or(now.high_water),
            };
            let done = client.write(Method::PUT, "/v1/settings/key-pool", Some(&body)).await?;
            ctx.done("Key pool limits changed", &done)
        }
    }
}
