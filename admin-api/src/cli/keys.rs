//! `kmsctl data-unit` and `kmsctl key` (SPEC O4–O9, U2).

use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use statemachine::limits::{DATA_UNITS_PER_COMMAND_MAX, KEYS_PER_COMMAND_MAX};

use super::args::{data_unit_states, key_states, IdArgs, PageArgs};
use super::catalog::more_rows;
use super::context::Ctx;
use super::exit::CliError;
use super::impact::preview_then_confirm;
use super::render;
use crate::api::{
    ChangeKeyGroup, DataUnit, DataUnitQuery, DestroyDataUnitKeys, DestroyKeys, DestroyOption, Key,
    KeyIds, KeyQuery,
};
use crate::client::segment;

/// Which keys of the selected data units a destroy takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    DeactivatedOnly,
    CompromisedOnly,
    DeactivatedAndCompromised,
}

impl From<Which> for DestroyOption {
    fn from(which: Which) -> DestroyOption {
        match which {
            Which::DeactivatedOnly => DestroyOption::DeactivatedOnly,
            Which::CompromisedOnly => DestroyOption::CompromisedOnly,
            Which::DeactivatedAndCompromised => DestroyOption::DeactivatedAndCompromised,
        }
    }
}

#[derive(Clone, Debug, Subcommand)]
pub enum DataUnitCommand {
    /// List data units, optionally by external tag (VOLSER) or state.
    List {
        /// Exact external tag.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, value_parser = data_unit_states())]
        state: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one data unit and its keys.
    Show { id: String },
    /// Destroy keys of data units, after an impact preview.
    DestroyKeys {
        #[command(flatten)]
        data_units: IdArgs,
        /// Which of their keys.
        #[arg(long, value_enum)]
        option: Which,
        /// The preview's digest (8 or more leading characters): confirms without a prompt.
        #[arg(long, value_name = "DIGEST")]
        confirm: Option<String>,
    },
    /// Move the keys of data units to another key group, after an impact preview.
    ChangeGroup {
        #[command(flatten)]
        data_units: IdArgs,
        /// The key group to move them to.
        #[arg(long)]
        group: String,
        /// The preview's digest (8 or more leading characters): confirms without a prompt.
        #[arg(long, value_name = "DIGEST")]
        confirm: Option<String>,
    },
}

#[derive(Clone, Debug, Subcommand)]
pub enum KeyCommand {
    /// List keys, optionally by state, key group or data unit.
    List {
        #[arg(long, value_parser = key_states())]
        state: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// Only the keys of this data unit (ID in hex).
        #[arg(long, value_name = "ID")]
        data_unit: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one key (metadata only: key material never leaves the cluster).
    Show { id: String },
    /// Mark keys compromised (Compliance Officer); many IDs go in requests of bounded size.
    Compromise {
        #[command(flatten)]
        keys: IdArgs,
    },
    /// Destroy keys (deactivated or compromised only), after an impact preview.
    Destroy {
        #[command(flatten)]
        keys: IdArgs,
        /// The preview's digest (8 or more leading characters): confirms without a prompt.
        #[arg(long, value_name = "DIGEST")]
        confirm: Option<String>,
    },
}

/// The selection of one previewed operation must fit one command.
fn bounded(ids: Vec<String>, max: usize, what: &str) -> Result<Vec<String>, CliError> {
    if ids.len() > max {
        return Err(CliError::Usage {
            message: format!("{} {what} selected; one operation takes at most {max}", ids.len()),
            help: Some(format!("split the selection into parts of {max} or fewer")),
        });
    }
    Ok(ids)
}

pub async fn data_unit(ctx: &Ctx, command: DataUnitCommand) -> Result<(), CliError> {
    match command {
        DataUnitCommand::List { tag, state, page } => {
            let query = |after, limit| {
                Ok(DataUnitQuery {
                    tag: tag.clone(),
                    state: state.clone(),
                    after,
                    limit: Some(limit),
                    min_index: None,
                })
            };
            let (rows, next): (Vec<DataUnit>, _) =
                ctx.collect("/v1/data-units", page.walk(), "data units", query).await?;
            ctx.show(&rows, |rows| render::data_units(rows))?;
            more_rows(next.as_deref());
            Ok(())
        }
        DataUnitCommand::Show { id } => {
            let unit: DataUnit =
                ctx.client.get(&format!("/v1/data-units/{}", segment(&id))).await?;
            ctx.show(&unit, render::data_unit)
        }
        DataUnitCommand::DestroyKeys { data_units, option, confirm } => {
            let data_units =
                bounded(data_units.collect()?, DATA_UNITS_PER_COMMAND_MAX, "data units")?;
            let action = format!(
                "destroy the {} keys of {} data unit(s)",
                option
                    .to_possible_value()
                    .map(|v| v.get_name().replace('-', " "))
                    .unwrap_or_default(),
                data_units.len()
            );
            let body = |confirm| DestroyDataUnitKeys {
                data_units: data_units.clone(),
                option: option.into(),
                confirm,
            };
            preview_then_confirm(
                ctx,
                "/v1/data-units/destroy-keys",
                &action,
                confirm.as_deref(),
                body,
            )
            .await
        }
        DataUnitCommand::ChangeGroup { data_units, group, confirm } => {
            let data_units =
                bounded(data_units.collect()?, DATA_UNITS_PER_COMMAND_MAX, "data units")?;
            let action =
                format!("move the keys of {} data unit(s) to key group {group}", data_units.len());
            let body = |confirm| ChangeKeyGroup {
                data_units: data_units.clone(),
                group: group.clone(),
                confirm,
            };
            preview_then_confirm(
                ctx,
                "/v1/data-units/change-key-group",
                &action,
                confirm.as_deref(),
                body,
            )
            .await
        }
    }
}

pub async fn key(ctx: &Ctx, command: KeyCommand) -> Result<(), CliError> {
    match command {
        KeyCommand::List { state, group, data_unit, page } => {
            let query = |after, limit| {
                Ok(KeyQuery {
                    state: state.clone(),
                    group: group.clone(),
                    data_unit: data_unit.clone(),
                    after,
                    limit: Some(limit),
                    min_index: None,
                })
            };
            let (rows, next): (Vec<Key>, _) =
                ctx.collect("/v1/keys", page.walk(), "keys", query).await?;
            ctx.show(&rows, |rows| render::keys(rows))?;
            more_rows(next.as_deref());
            Ok(())
        }
        KeyCommand::Show { id } => {
            let key: Key = ctx.client.get(&format!("/v1/keys/{}", segment(&id))).await?;
            ctx.show(&key, render::key)
        }
        KeyCommand::Compromise { keys } => compromise(ctx, keys.collect()?).await,
        KeyCommand::Destroy { keys, confirm } => {
            let keys = bounded(keys.collect()?, KEYS_PER_COMMAND_MAX, "keys")?;
            let action = format!("destroy {} key(s)", keys.len());
            let body = |confirm| DestroyKeys { keys: keys.clone(), confirm };
            preview_then_confirm(ctx, "/v1/keys/destroy", &action, confirm.as_deref(), body).await
        }
    }
}

/// Compromises keys in requests of at most [`KEYS_PER_COMMAND_MAX`], a progress bar over all.
async fn compromise(ctx: &Ctx, keys: Vec<String>) -> Result<(), CliError> {
    let bar = ctx.progress(Some(keys.len() as u64), "compromising keys");
    let mut outcomes = Vec::new();
    for chunk in keys.chunks(KEYS_PER_COMMAND_MAX) {
        let body = KeyIds { keys: chunk.to_vec() };
        let done = ctx.client.write(Method::POST, "/v1/keys/compromise", Some(&body)).await;
        let done = match done {
            Ok(done) => done,
            Err(error) => {
                bar.abandon();
                if !outcomes.is_empty() {
                    let applied: usize = outcomes.iter().map(|(count, _)| count).sum();
                    super::context::note(&format!(
                        "note: the first {applied} of {} keys were compromised before this error",
                        keys.len()
                    ));
                }
                return Err(error.into());
            }
        };
        bar.inc(chunk.len() as u64);
        outcomes.push((chunk.len(), done));
    }
    bar.finish_and_clear();
    if let [(count, done)] = &outcomes[..] {
        return ctx.done(&format!("{count} key(s) compromised"), done);
    }
    if ctx.json {
        let dones: Vec<_> = outcomes.into_iter().map(|(_, done)| done).collect();
        return ctx.show(&dones, |_| String::new());
    }
    for (count, done) in &outcomes {
        ctx.done(&format!("{count} key(s) compromised"), done)?;
    }
    Ok(())
}
