//! "1.x tapes" (SPEC M1, A5; issue 18 point 6): tapes a KMS 1.x cluster wrote, made here from
//! its key export file (each record sealed under the key the file holds for its ID, as the old
//! system's drives did), then read back through the KMAs the way a drive reads an old tape: it
//! finds a key ID on the tape and asks for that key by ID, tagging the tape's new data unit
//! with its VOLSER. Every record must decrypt to what was written.
//!
//! The clear values come from the export file and never reach a KMA: the KMAs answer with the
//! keys they imported, and a record that does not decrypt under the answer is a failure.

use std::path::{Path, PathBuf};

use aes_gcm::{Aes256Gcm, KeyInit};
use statemachine::migration::parse_1x_key_file;

use super::tape::{self, TapeHeader};
use crate::client::AgentClient;

/// Records on each legacy tape.
const RECORDS_PER_TAPE: u64 = 4;

#[derive(Debug, Default)]
pub struct LegacyReport {
    pub tapes: u64,
    pub records: u64,
    /// Records that did not decrypt under the key the cluster handed out.
    pub failures: u64,
    /// Keys the cluster refused or did not know.
    pub refused: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Parse(#[from] statemachine::migration::Parse1xError),
    #[error("sealing a record failed")]
    Seal,
}

/// Makes `count` 1.x tapes from the keys of `export_file` (spread over the file), writes them
/// under `tape_dir` as `L00000.tape`..., then reads each back through `client`.
pub async fn read_legacy_tapes(
    client: &AgentClient,
    export_file: &Path,
    count: usize,
    tape_dir: &Path,
    block_len: usize,
) -> Result<LegacyReport, LegacyError> {
    let file_error = |path: &Path| {
        let path = path.to_owned();
        move |source| LegacyError::File { path, source }
    };
    let text = zeroize::Zeroizing::new(
        tokio::fs::read_to_string(export_file).await.map_err(file_error(export_file))?,
    );
    let keys = parse_1x_key_file(&text)?;
    drop(text);
    tokio::fs::create_dir_all(tape_dir).await.map_err(file_error(tape_dir))?;
    let step = (keys.len() / count.max(1)).max(1);
    let mut report = LegacyReport::default();
    for (n, key) in keys.iter().step_by(step).take(count).enumerate() {
        let volser = format!("L{n:05}");
        let header = TapeHeader::blank(&volser, n as u64, block_len);
        let written = Aes256Gcm::new(key.value.as_ref().into());
        let records: Vec<Vec<u8>> = (0..RECORDS_PER_TAPE)
            .map(|record_no| header.seal(&written, &key.id, record_no))
            .collect::<Result<_, _>>()
            .map_err(|_| LegacyError::Seal)?;
        let path = tape::path_for(tape_dir, &volser);
        tape::write(&path, &header, 0, &records).await.map_err(file_error(&path))?;

        // The drive's side: the tape, a key ID on it, the key asked for by ID.
        let image = tape::load(&path).await.map_err(file_error(&path))?;
        let Some(image) = image else { continue };
        let Some(header) = image.header.clone() else { continue };
        report.tapes += 1;
        let mut cipher = None;
        for (position, record) in header.records(&image.bytes).enumerate() {
            report.records += 1;
            if cipher.is_none() {
                match client.key(record.key_id, None, &volser).await {
                    Ok(found) => cipher = Some(Aes256Gcm::new(found.key.value.as_ref().into())),
                    Err(error) => {
                        report.refused.push(format!("{}: {error}", record.key_id));
                        report.failures += RECORDS_PER_TAPE - position as u64;
                        break;
                    }
                }
            }
            let Some(cipher) = &cipher else { break };
            if !header.verify(cipher, &record, position as u64) {
                report.failures += 1;
            }
        }
    }
    Ok(report)
}
