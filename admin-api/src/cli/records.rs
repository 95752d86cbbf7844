//! `kmsctl backup` (SPEC B2, B4, B5).

use clap::{ArgGroup, Subcommand};
use reqwest::Method;

use super::args::duration_ms;
use super::context::Ctx;
use super::exit::CliError;
use super::render;
use crate::api::{Backup, BackupSchedule};

#[derive(Clone, Debug, Subcommand)]
pub enum BackupCommand {
    /// List the backups the cluster knows of.
    List,
    /// Record that a backup's files were destroyed (keys destroyed since become completely
    /// destroyed once no backup holds them).
    MarkDestroyed { id: u64 },
    /// Set or turn off scheduled database backups.
    #[command(group(ArgGroup::new("when").required(true)))]
    Schedule {
        /// Take a backup this often, e.g. 1d.
        #[arg(long, group = "when", value_parser = duration_ms, value_name = "DURATION")]
        interval: Option<u64>,
        /// Turn scheduled backups off.
        #[arg(long, group = "when")]
        off: bool,
        /// The KMA that takes them [default: the cluster picks one].
        #[arg(long, conflicts_with = "off")]
        kma: Option<String>,
    },
}

pub async fn backup(ctx: &Ctx, command: BackupCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        BackupCommand::List => {
            let rows: Vec<Backup> = client.get("/v1/backups").await?;
            ctx.show(&rows, |rows| render::backups(rows))
        }
        BackupCommand::MarkDestroyed { id } => {
            let path = format!("/v1/backups/{id}/destroyed");
            let done = client.write::<()>(Method::POST, &path, None).await?;
            ctx.done(&format!("Backup {id} marked destroyed"), &done)
        }
        BackupCommand::Schedule { interval, off, kma } => {
            let body = BackupSchedule { interval_ms: if off { None } else { interval }, kma };
            let done = client.write(Method::PUT, "/v1/backups/schedule", Some(&body)).await?;
            let what = match body.interval_ms {
                None => "Scheduled backups turned off".to_string(),
                Some(ms) => format!(
                    "Backups scheduled every {}",
                    statemachine::duration::format_duration_ms(ms)
                ),
            };
            ctx.done(&what, &done)
        }
    }
}
