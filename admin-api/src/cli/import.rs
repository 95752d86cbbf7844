//! `kmsctl import-1x` (SPEC M1, issue 18 point 4): a KMS 1.x key export file sent to the KMA
//! the profile talks to, which checks every line, then stages and commits the keys; a progress
//! bar follows the staging.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::context::Ctx;
use super::exit::CliError;
use crate::api::{Import1xParams, Import1xProgress, Import1xStarted};
use crate::client::ClientError;
use crate::routes::imports::IMPORT_1X_FILE_BYTES_MAX;

/// How often the progress is asked for.
const POLL_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Args)]
pub struct Import1xArgs {
    /// The destination key group: its policy must allow import.
    #[arg(long, value_name = "GROUP")]
    pub group: String,
    /// The KMS 1.x key export file (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    let limit = IMPORT_1X_FILE_BYTES_MAX as u64 + 1;
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| CliError::file(path, e))?;
    if bytes.len() > IMPORT_1X_FILE_BYTES_MAX {
        return Err(CliError::usage(format!(
            "{} is larger than {IMPORT_1X_FILE_BYTES_MAX} bytes, the most one import takes: \
             split it into files and import each",
            path.display()
        )));
    }
    Ok(bytes)
}

pub async fn import_1x(ctx: &Ctx, args: &Import1xArgs) -> Result<(), CliError> {
    let file = read_file(&args.file)?;
    let client = &ctx.client;
    let params = Import1xParams { group: args.group.clone() };
    let started: Import1xStarted = client.upload("/v1/imports/1x", &params, file).await?;
    // The import runs on the KMA that took the file: follow it there.
    let address = client.current_address().to_string();
    let kma = client.at(&address);
    let bar = ctx.progress(Some(started.keys), "staging keys");
    let path = format!("/v1/imports/1x/{}", started.import_id);
    let progress = loop {
        let progress: Import1xProgress = kma.get(&path).await?;
        bar.set_position(progress.keys_staged);
        if progress.status != "staging" {
            break progress;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    bar.finish_and_clear();
    if let Some(error) = progress.error.clone() {
        let status = error.http_status();
        return Err(CliError::Client(ClientError::Api { status, address, error }));
    }
    client.observe_index(progress.index);
    let message = format!(
        "Imported {} keys from {} into group {}, Process-only ({} already held or repeated in \
         the file); log index {}\n",
        progress.imported,
        args.file.display(),
        progress.group,
        progress.duplicates,
        progress.index
    );
    ctx.show(&progress, |_| message.clone())
}
