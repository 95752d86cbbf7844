//! `kmsctl transfer` and `kmsctl partner` (SPEC T1–T4; issue 18 points 1–3): this cluster's
//! transfer key, partners recorded through the quorum, and transfer files written and read
//! by the KMA the profile talks to.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;

use super::args::IdArgs;
use super::context::Ctx;
use super::exit::CliError;
use crate::api::{
    Done, NewPartner, Partner, PartnerGroup, TransferExportRequest, TransferImportParams,
    TransferKey,
};
use crate::client::segment;

#[derive(Debug, Subcommand)]
pub enum TransferCommand {
    /// This cluster's transfer key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Write a transfer file of data units' keys for a partner (Operator).
    Export(ExportArgs),
    /// Import a partner's transfer file into a key group (Operator).
    Import(ImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// The public keys to give partners, and the fingerprint to compare with them by phone.
    Show,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The partner the file is for.
    #[arg(long)]
    pub partner: String,
    /// Data units by ID (hex); `--from-file` reads more, one per line.
    #[command(flatten)]
    pub data_units: OptionalIds,
    /// Data units by external tag (a tape's label); as many as needed.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Where to write the file (never overwritten).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Data unit IDs, optional here: tags may select instead.
#[derive(Clone, Debug, Args)]
pub struct OptionalIds {
    #[arg(long = "data-unit", value_name = "ID")]
    pub ids: Vec<String>,
    /// Read more data unit IDs from this file, one per line (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The partner that sent the file.
    #[arg(long)]
    pub partner: String,
    /// The key group its keys go into: assigned to the partner for import.
    #[arg(long)]
    pub group: String,
    /// The transfer file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Direction {
    Export,
    Import,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Export => "export",
            Direction::Import => "import",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PartnerCommand {
    /// Record a partner, or new keys for one: starts the quorum operation (Security Officer).
    Create {
        name: String,
        /// The partner's public keys (`kmst1:...`, from its `kmsctl transfer key show`).
        #[arg(long, value_name = "KEYS")]
        public_keys: String,
    },
    /// The partners, their fingerprints and key groups.
    List,
    /// Assign a key group to a partner for export or import (Compliance Officer).
    AssignGroup {
        name: String,
        #[arg(long)]
        group: String,
        #[arg(long, value_enum)]
        direction: Direction,
    },
    /// Take a key group back from a partner (Compliance Officer).
    UnassignGroup {
        name: String,
        #[arg(long)]
        group: String,
        #[arg(long, value_enum)]
        direction: Direction,
    },
    /// No file goes to the partner or comes from it until it is enabled (Security Officer).
    Disable { name: String },
    /// Enable a disabled partner again (Security Officer).
    Enable { name: String },
    /// Forget a partner (Security Officer).
    Delete { name: String },
}

pub async fn transfer(ctx: &Ctx, command: TransferCommand) -> Result<(), CliError> {
    match command {
        TransferCommand::Key(KeyCommand::Show) => {
            let key: TransferKey = ctx.client.get("/v1/transfer/key").await?;
            ctx.show(&key, |key| {
                format!(
                    "Public keys: {}\nFingerprint: {}\nGive the public keys to the partner; \
                     compare the fingerprint with theirs by another channel.\n",
                    key.public_keys, key.fingerprint
                )
            })
        }
        TransferCommand::Export(args) => export(ctx, &args).await,
        TransferCommand::Import(args) => import(ctx, &args).await,
    }
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

async fn export(ctx: &Ctx, args: &ExportArgs) -> Result<(), CliError> {
    if args.out.exists() {
        return Err(CliError::usage(format!(
            "{} exists: a transfer file never overwrites a file; choose another --out",
            args.out.display()
        )));
    }
    let mut data_units = args.data_units.ids.clone();
    if let Some(path) = &args.data_units.from_file {
        let more = IdArgs { ids: Vec::new(), from_file: Some(path.clone()) };
        data_units.extend(more.collect()?);
    }
    let request = TransferExportRequest {
        partner: args.partner.clone(),
        data_units,
        tags: args.tags.clone(),
    };
    if request.data_units.is_empty() && request.tags.is_empty() {
        return Err(CliError::usage(
            "select data units: --data-unit ID, --tag TAG or --from-file FILE",
        ));
    }
    let json = serde_json::to_value(&request).map_err(|e| CliError::usage(e.to_string()))?;
    let (headers, file) =
        ctx.client.post_raw("/v1/transfer/export", &(), ("", Vec::new()), Some(&json)).await?;
    super::records::write_atomically(&args.out, &file)?;
    let index: u64 = header(&headers, "x-kms-index").parse().unwrap_or(0);
    ctx.client.observe_index(index);
    let summary = serde_json::json!({
        "file_id": header(&headers, "x-kms-file-id"),
        "keys": header(&headers, "x-kms-keys").parse::<u64>().unwrap_or(0),
        "data_units": header(&headers, "x-kms-data-units").parse::<u64>().unwrap_or(0),
        "file": args.out.display().to_string(),
        "index": index,
    });
    ctx.show(&summary, |s| {
        format!(
            "Exported {} keys of {} data units for partner {} to {} (file {}); log index {}\n",
            s["keys"],
            s["data_units"],
            args.partner,
            args.out.display(),
            s["file_id"].as_str().unwrap_or(""),
            s["index"]
        )
    })
}

async fn import(ctx: &Ctx, args: &ImportArgs) -> Result<(), CliError> {
    let limit = security_core::transfer::FILE_LEN_MAX as u64;
    let size = std::fs::metadata(&args.file).map_err(|e| CliError::file(&args.file, e))?.len();
    if size > limit {
        return Err(CliError::usage(format!(
            "{} is {size} bytes; a transfer file is at most {limit}: it is not a transfer file",
            args.file.display()
        )));
    }
    let file = std::fs::read(&args.file).map_err(|e| CliError::file(&args.file, e))?;
    let params = TransferImportParams { partner: args.partner.clone(), group: args.group.clone() };
    let (_, bytes) = ctx
        .client
        .post_raw("/v1/transfer/import", &params, ("application/octet-stream", file), None)
        .await?;
    let done: Done = serde_json::from_slice(&bytes).map_err(|e| CliError::Other {
        message: format!("the import's answer is not understood: {e}"),
        help: None,
    })?;
    ctx.client.observe_index(done.index);
    let detail = done.detail.clone();
    ctx.show(&done, |_| {
        format!(
            "Imported {} keys and {} new data units from partner {} into group {} ({} already \
             held); file {}, log index {}\n",
            detail["keys"],
            detail["data_units"],
            args.partner,
            args.group,
            detail["duplicates"],
            detail["file_id"].as_str().unwrap_or(""),
            done.index
        )
    })
}

pub async fn partner(ctx: &Ctx, command: PartnerCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        PartnerCommand::Create { name, public_keys } => {
            let body = NewPartner { name: name.clone(), public_keys, ttl_ms: None };
            let done = client.write(Method::POST, "/v1/partners", Some(&body)).await?;
            let fingerprint = done.detail["fingerprint"].as_str().unwrap_or("").to_string();
            ctx.show(&done, |done| {
                format!(
                    "Quorum operation {} started to record partner {name}.\nFingerprint of the \
                     keys given: {fingerprint}\nCompare it with the partner's `kmsctl transfer key \
                     show` by another channel before the members approve.\n",
                    done.detail["quorum_operation"]
                )
            })
        }
        PartnerCommand::List => {
            let partners: Vec<Partner> = client.get("/v1/partners").await?;
            ctx.show(&partners, |rows| {
                let mut text =
                    String::from("NAME  ENABLED  EXPORT GROUPS  IMPORT GROUPS  FINGERPRINT\n");
                for p in rows {
                    text.push_str(&format!(
                        "{}  {}  {}  {}  {}\n",
                        p.name,
                        if p.enabled { "yes" } else { "no" },
                        p.export_groups.join(","),
                        p.import_groups.join(","),
                        p.fingerprint
                    ));
                }
                text
            })
        }
        PartnerCommand::AssignGroup { name, group, direction } => {
            let body = PartnerGroup { group, direction: direction.name().into() };
            let path = format!("/v1/partners/{}/groups", segment(&name));
            let done = client.write(Method::POST, &path, Some(&body)).await?;
            ctx.done("Key group assigned", &done)
        }
        PartnerCommand::UnassignGroup { name, group, direction } => {
            let path = format!(
                "/v1/partners/{}/groups/{}/{}",
                segment(&name),
                direction.name(),
                segment(&group)
            );
            let done = client.write::<()>(Method::DELETE, &path, None).await?;
            ctx.done("Key group taken back", &done)
        }
        PartnerCommand::Disable { name } => enabled(ctx, &name, false).await,
        PartnerCommand::Enable { name } => enabled(ctx, &name, true).await,
        PartnerCommand::Delete { name } => {
            let path = format!("/v1/partners/{}", segment(&name));
            let done = client.write::<()>(Method::DELETE, &path, None).await?;
            ctx.done("Partner deleted", &done)
        }
    }
}

async fn enabled(ctx: &Ctx, name: &str, enabled: bool) -> Result<(), CliError> {
    let path = format!("/v1/partners/{}/enabled", segment(name));
    let body = crate::api::Enabled { enabled };
    let done = ctx.client.write(Method::PUT, &path, Some(&body)).await?;
    ctx.done(if enabled { "Partner enabled" } else { "Partner disabled" }, &done)
}
