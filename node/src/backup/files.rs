//! The three files of a backup (SPEC B1, B2) and how each is checked before a restore uses it.
//!
//! - The **core security backup** is TOML an operator can read: the cluster, the quorum
//!   version it holds, the threshold, the member IDs, and each member's share wrapped under
//!   that member's passphrase. No clear secret.
//! - The **database backup** (`*.kmsdb`) is binary: a readable first line, a format version,
//!   a header (cluster, backup UUID, when, which KMA, the CA certificate), the sealed stream
//!   (`security_core::backup_file`, the header as its AAD) of what `raft_storage::backup`
//!   writes, and the SHA-256 of everything before it.
//! - The **backup key file** is TOML: the backup key wrapped under the master key, bound to
//!   the cluster and the backup UUID, and the data file's size and SHA-256.
//!
//! Both TOML files end with a comment line holding the SHA-256 of every byte before it, so
//! a changed byte is found before anyone types a passphrase; they stay valid TOML.

use std::fmt::Write as _;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use statemachine::ClusterId;

/// The first bytes of a database backup file.
pub const DATA_FILE_MAGIC: &[u8; 20] = b"KMA database backup\n";
/// Format of the database backup file, of the key file and of the core security file.
pub const BACKUP_FILES_FORMAT: u16 = 1;
/// A header holds a CA certificate and a few names: far below this.
const DATA_HEADER_LEN_MAX: usize = 64 << 10;
/// The TOML files are small; a larger one is not ours.
const TOML_FILE_LEN_MAX: u64 = 1 << 20;
const CHECKSUM_PREFIX: &str = "# sha256: ";

#[derive(Debug, thiserror::Error)]
pub enum BackupFileError {
    #[error("cannot read {what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("{path} is not a {what}: {detail}")]
    NotOurs { what: &'static str, path: String, detail: String },
    #[error(
        "{path} has format {found}; this KMA reads format {BACKUP_FILES_FORMAT}: use the KMA \
         version that wrote it, or a newer one"
    )]
    Format { path: String, found: u16 },
    #[error("{path} is damaged: {detail}; use another copy of it (nothing was changed)")]
    Damaged { path: String, detail: String },
}

/// SHA-256 lines: the file body, then `# sha256: <hex>` as its last line.
fn with_checksum(body: String) -> String {
    let digest = hex::encode(Sha256::digest(body.as_bytes()));
    format!("{body}{CHECKSUM_PREFIX}{digest}\n")
}

fn checked_body<'a>(
    what: &'static str,
    path: &str,
    text: &'a str,
) -> Result<&'a str, BackupFileError> {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let (body, last) = match trimmed.rfind('\n') {
        Some(at) => (&text[..at + 1], &trimmed[at + 1..]),
        None => ("", trimmed),
    };
    let Some(expected) = last.strip_prefix(CHECKSUM_PREFIX) else {
        let detail = "its last line is not its checksum".to_string();
        return Err(BackupFileError::NotOurs { what, path: path.into(), detail });
    };
    let actual = hex::encode(Sha256::digest(body.as_bytes()));
    if !actual.eq_ignore_ascii_case(expected.trim()) {
        let detail = "its checksum does not match its contents (a changed or missing byte)".into();
        return Err(BackupFileError::Damaged { path: path.into(), detail });
    }
    Ok(body)
}

fn read_text(what: &'static str, path: &std::path::Path) -> Result<String, BackupFileError> {
    let shown = path.display().to_string();
    let io = |source| BackupFileError::Io { what, path: shown.clone(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(TOML_FILE_LEN_MAX).read_to_string(&mut text).map_err(|e| {
        BackupFileError::NotOurs { what, path: shown.clone(), detail: e.to_string() }
    })?;
    Ok(text)
}

fn parse_body<T: serde::de::DeserializeOwned>(
    what: &'static str,
    path: &std::path::Path,
    text: &str,
    format_of: impl Fn(&T) -> u16,
) -> Result<T, BackupFileError> {
    let shown = path.display().to_string();
    let body = checked_body(what, &shown, text)?;
    let parsed: T = toml::from_str(body).map_err(|e| BackupFileError::NotOurs {
        what,
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let found = format_of(&parsed);
    if found != BACKUP_FILES_FORMAT {
        return Err(BackupFileError::Format { path: shown, found });
    }
    Ok(parsed)
}

fn hex_array<const N: usize>(
    what: &'static str,
    path: &str,
    text: &str,
) -> Result<[u8; N], BackupFileError> {
    let bytes = hex::decode(text).ok().and_then(|b| <[u8; N]>::try_from(b).ok());
    bytes.ok_or_else(|| BackupFileError::NotOurs {
        what,
        path: path.into(),
        detail: format!("'{text}' is not {N} bytes of hex"),
    })
}

fn cluster_hex(cluster_id: ClusterId) -> String {
    format!("{:016x}", cluster_id.0)
}

fn parse_cluster(what: &'static str, path: &str, text: &str) -> Result<ClusterId, BackupFileError> {
    u64::from_str_radix(text, 16).map(ClusterId).map_err(|_| BackupFileError::NotOurs {
        what,
        path: path.into(),
        detail: format!("'{text}' is not a cluster ID"),
    })
}

// ---- Core security backup (B1) ----

/// The quorum as a core security backup holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreSecurityBackup {
    pub cluster_id: ClusterId,
    /// The index of the quorum change this file holds (`State::core_security_backup_due`).
    pub quorum_version: u64,
    pub threshold: u8,
    /// (member ID, wrapped share), in the quorum's order.
    pub shares: Vec<(String, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoreSecurityToml {
    format: u16,
    cluster_id: String,
    quorum_version: u64,
    threshold: u8,
    members: Vec<String>,
    wrapped_shares: std::collections::BTreeMap<String, String>,
}

const CORE_SECURITY: &str = "core security backup";

impl CoreSecurityBackup {
    /// The file's text: deterministic, so that the KMA can check what a client saved.
    pub fn render(&self) -> String {
        let members: Vec<&str> = self.shares.iter().map(|(id, _)| id.as_str()).collect();
        let mut body = String::new();
        let _ = writeln!(
            body,
            "# KMA core security backup (SPEC B1). With the passphrases of {} of the",
            self.threshold
        );
        let _ = writeln!(
            body,
            "# members below, it opens the master key of cluster {}: restore a",
            cluster_hex(self.cluster_id)
        );
        let _ = writeln!(
            body,
            "# database backup with `kma restore`. Keep it apart from the database backups;"
        );
        let _ = writeln!(
            body,
            "# destroy every copy once the quorum changes and a newer one is taken."
        );
        let _ = writeln!(body, "format = {BACKUP_FILES_FORMAT}");
        let _ = writeln!(body, "cluster_id = \"{}\"", cluster_hex(self.cluster_id));
        let _ = writeln!(body, "quorum_version = {}", self.quorum_version);
        let _ = writeln!(body, "threshold = {}", self.threshold);
        let quoted: Vec<String> = members.iter().map(|m| toml_string(m)).collect();
        let _ = writeln!(body, "members = [{}]", quoted.join(", "));
        let _ = writeln!(body, "\n[wrapped_shares]");
        for (member, share) in &self.shares {
            let _ = writeln!(body, "{} = \"{}\"", toml_string(member), hex::encode(share));
        }
        with_checksum(body)
    }

    pub fn read(path: &std::path::Path) -> Result<Self, BackupFileError> {
        let text = read_text(CORE_SECURITY, path)?;
        let parsed: CoreSecurityToml =
            parse_body(CORE_SECURITY, path, &text, |t: &CoreSecurityToml| t.format)?;
        let shown = path.display().to_string();
        let cluster_id = parse_cluster(CORE_SECURITY, &shown, &parsed.cluster_id)?;
        let mut shares = Vec::new();
        for member in &parsed.members {
            let Some(share) = parsed.wrapped_shares.get(member) else {
                let detail = format!("member '{member}' has no wrapped share");
                return Err(BackupFileError::NotOurs { what: CORE_SECURITY, path: shown, detail });
            };
            let share = hex::decode(share).map_err(|e| BackupFileError::NotOurs {
                what: CORE_SECURITY,
                path: shown.clone(),
                detail: format!("the share of '{member}': {e}"),
            })?;
            shares.push((member.clone(), share));
        }
        if parsed.threshold == 0 || usize::from(parsed.threshold) > shares.len() {
            let detail = format!("threshold {} of {} members", parsed.threshold, shares.len());
            return Err(BackupFileError::NotOurs { what: CORE_SECURITY, path: shown, detail });
        }
        Ok(CoreSecurityBackup {
            cluster_id,
            quorum_version: parsed.quorum_version,
            threshold: parsed.threshold,
            shares,
        })
    }
}

/// A member ID as a TOML string (value or quoted key), quoted and escaped by the `toml` crate.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

// ---- Backup key file (B2) ----

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupKeyFile {
    pub format: u16,
    pub cluster_id: String,
    pub backup_uuid: String,
    pub data_file_sha256: String,
    pub data_file_bytes: u64,
    pub covers_index: u64,
    pub taken_at_ms: u64,
    pub taken_on_kma: String,
    pub wrapped_backup_key: String,
}

const KEY_FILE: &str = "backup key file";

impl BackupKeyFile {
    pub fn render(&self) -> Result<String, toml::ser::Error> {
        let mut body = String::from(
            "# KMA database backup key file (SPEC B2): the backup key, wrapped under the master\n\
             # key. A restore needs it, its data file, the core security backup and a quorum.\n",
        );
        body.push_str(&toml::to_string(self)?);
        Ok(with_checksum(body))
    }

    pub fn read(path: &std::path::Path) -> Result<Self, BackupFileError> {
        let text = read_text(KEY_FILE, path)?;
        parse_body(KEY_FILE, path, &text, |k: &BackupKeyFile| k.format)
    }

    pub fn cluster(&self, path: &str) -> Result<ClusterId, BackupFileError> {
        parse_cluster(KEY_FILE, path, &self.cluster_id)
    }

    pub fn uuid(&self, path: &str) -> Result<[u8; 16], BackupFileError> {
        hex_array(KEY_FILE, path, &self.backup_uuid)
    }

    pub fn data_sha256(&self, path: &str) -> Result<[u8; 32], BackupFileError> {
        hex_array(KEY_FILE, path, &self.data_file_sha256)
    }

    pub fn wrapped_key(&self, path: &str) -> Result<Vec<u8>, BackupFileError> {
        hex::decode(&self.wrapped_backup_key).map_err(|e| BackupFileError::NotOurs {
            what: KEY_FILE,
            path: path.into(),
            detail: format!("wrapped_backup_key: {e}"),
        })
    }
}

// ---- Database backup file (B2) ----

/// The readable part of a database backup file; bound into the sealed stream's AAD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFileHeader {
    pub cluster_id: u64,
    pub backup_uuid: [u8; 16],
    pub taken_at_ms: u64,
    pub taken_on_kma: String,
    /// The cluster CA certificate (PEM) the backup's KMA trusted: the state holds the CA's key
    /// and, only after a rotation, its certificate.
    pub ca_certificate_pem: String,
}

const DATA_FILE: &str = "database backup file";

impl DataFileHeader {
    /// The bytes a data file starts with, which are also the sealed stream's AAD.
    pub fn prefix(&self) -> Vec<u8> {
        let mut out = DATA_FILE_MAGIC.to_vec();
        out.extend_from_slice(&BACKUP_FILES_FORMAT.to_be_bytes());
        // Plain integers, arrays and strings: postcard cannot fail on them.
        let header = postcard::to_stdvec(self).unwrap_or_default();
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out
    }
}

/// A writer that hashes and counts what passes through (the data file's checksum).
pub struct HashingWriter<W: Write> {
    pub inner: W,
    hasher: Sha256,
    pub bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), bytes: 0 }
    }

    pub fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A data file opened and checked end to end (length, SHA-256, header), ready to decrypt.
pub struct CheckedDataFile {
    pub header: DataFileHeader,
    pub prefix: Vec<u8>,
    pub sha256: [u8; 32],
    pub bytes: u64,
    /// Where the sealed stream starts and how long it is.
    sealed_at: u64,
    sealed_len: u64,
    path: std::path::PathBuf,
}

impl CheckedDataFile {
    /// Reads the whole file once: its checksum must hold before any key is asked for.
    pub fn open(path: &std::path::Path) -> Result<Self, BackupFileError> {
        let shown = path.display().to_string();
        let io = |source| BackupFileError::Io { what: DATA_FILE, path: shown.clone(), source };
        let not_ours = |detail: String| BackupFileError::NotOurs {
            what: DATA_FILE,
            path: shown.clone(),
            detail,
        };
        let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
        let mut magic = [0u8; 20];
        file.read_exact(&mut magic).map_err(|_| not_ours("it is too short".into()))?;
        if &magic != DATA_FILE_MAGIC {
            return Err(not_ours("it does not start as one".into()));
        }
        let mut format = [0u8; 2];
        file.read_exact(&mut format).map_err(|_| not_ours("it is too short".into()))?;
        let format = u16::from_be_bytes(format);
        if format != BACKUP_FILES_FORMAT {
            return Err(BackupFileError::Format { path: shown, found: format });
        }
        let mut len = [0u8; 4];
        file.read_exact(&mut len).map_err(|_| not_ours("it is too short".into()))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > DATA_HEADER_LEN_MAX {
            return Err(not_ours(format!("its header claims {len} bytes")));
        }
        let mut header_bytes = vec![0u8; len];
        file.read_exact(&mut header_bytes).map_err(|_| not_ours("it is too short".into()))?;
        let header: DataFileHeader = postcard::from_bytes(&header_bytes)
            .map_err(|e| not_ours(format!("its header: {e}")))?;
        let prefix = header.prefix();
        if prefix.len() != 26 + len {
            return Err(not_ours("its header has trailing bytes".into()));
        }
        let total = std::fs::metadata(path).map_err(io)?.len();
        let sealed_at = prefix.len() as u64;
        if total < sealed_at + 32 {
            return Err(BackupFileError::Damaged { path: shown, detail: "it is truncated".into() });
        }
        let sealed_len = total - sealed_at - 32;
        // The checksum covers the header and the sealed stream; the key file records the
        // SHA-256 of the whole file, checksum included. One pass computes both.
        let mut inner = Sha256::new();
        inner.update(&prefix);
        let mut whole = inner.clone();
        let mut rest = (&mut file).take(sealed_len);
        let copied = std::io::copy(&mut rest, &mut HashSink(&mut inner, &mut whole)).map_err(io)?;
        let mut recorded = [0u8; 32];
        file.read_exact(&mut recorded).map_err(io)?;
        whole.update(recorded);
        let computed: [u8; 32] = inner.finalize().into();
        if copied != sealed_len || computed != recorded {
            return Err(BackupFileError::Damaged {
                path: shown,
                detail:
                    "its SHA-256 does not match its contents (a changed, missing or extra byte)"
                        .into(),
            });
        }
        Ok(CheckedDataFile {
            header,
            prefix,
            sha256: whole.finalize().into(),
            bytes: total,
            sealed_at,
            sealed_len,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The sealed stream, to hand to the backup key's opener.
    pub fn sealed(&self) -> std::io::Result<impl Read> {
        use std::io::Seek;
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(std::io::SeekFrom::Start(self.sealed_at))?;
        Ok(std::io::BufReader::with_capacity(1 << 20, file).take(self.sealed_len))
    }
}

struct HashSink<'a>(&'a mut Sha256, &'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> CoreSecurityBackup {
        CoreSecurityBackup {
            cluster_id: ClusterId(0xab),
            quorum_version: 42,
            threshold: 2,
            shares: vec![("q1".into(), vec![1; 40]), ("q\"2".into(), vec![2; 40])],
        }
    }

    fn written(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("file");
        path
    }

    /// Setup: a quorum of two members, one with a quote in its ID. Action: render the core
    /// security backup, read it back; then read copies with a changed threshold, another
    /// format, and no checksum line. Expect: the same quorum back, member IDs readable in the
    /// text; the changed copy is damaged, the other format is named, the last is not ours.
    /// (SPEC B1; issue 17 "Bad input and faults")
    #[test]
    fn b1_the_core_security_file_reads_back_and_refuses_changes_and_other_formats() {
        let dir = tempfile::tempdir().expect("dir");
        let text = core().render();
        // The toml crate quotes a member ID with a `"` as a literal string.
        assert!(text.contains(r#"members = ["q1", 'q"2']"#), "{text}");
        let path = written(&dir, "core.toml", &text);
        assert_eq!(CoreSecurityBackup::read(&path).expect("reads back"), core());

        let changed =
            written(&dir, "changed.toml", &text.replace("threshold = 2", "threshold = 1"));
        let error = CoreSecurityBackup::read(&changed).expect_err("changed").to_string();
        assert!(error.contains("damaged") && error.contains("checksum"), "{error}");

        let body = text.rsplit_once(CHECKSUM_PREFIX).expect("checksum line").0;
        let newer = with_checksum(body.replace("format = 1", "format = 2"));
        let error = CoreSecurityBackup::read(&written(&dir, "newer.toml", &newer))
            .expect_err("newer")
            .to_string();
        assert!(error.contains("format 2") && error.contains("reads format 1"), "{error}");

        let error = CoreSecurityBackup::read(&written(&dir, "bare.toml", body))
            .expect_err("no checksum")
            .to_string();
        assert!(error.contains("not a core security backup"), "{error}");
    }

    /// Setup: a key file. Action: render, read back, then a truncated copy. Expect: the same
    /// fields; the truncated copy is refused. (SPEC B2)
    #[test]
    fn b2_the_key_file_reads_back_and_a_truncated_one_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let key = BackupKeyFile {
            format: BACKUP_FILES_FORMAT,
            cluster_id: "00000000000000ab".into(),
            backup_uuid: "11".repeat(16),
            data_file_sha256: "22".repeat(32),
            data_file_bytes: 7,
            covers_index: 9,
            taken_at_ms: 1,
            taken_on_kma: "kma1".into(),
            wrapped_backup_key: "33".repeat(60),
        };
        let text = key.render().expect("renders");
        let path = written(&dir, "k.key", &text);
        let read = BackupKeyFile::read(&path).expect("reads back");
        assert_eq!(read, key);
        assert_eq!(read.uuid("k").expect("uuid"), [0x11; 16]);
        assert!(BackupKeyFile::read(&written(&dir, "cut.key", &text[..text.len() / 2])).is_err());
    }

    /// Setup: a data file made of a header, a body and its checksum. Action: open it, then
    /// copies with a flipped byte, cut short, another first line, another format. Expect: the
    /// whole one opens with its header; each other one is refused with its reason. (SPEC B2)
    #[test]
    fn b2_a_data_file_is_checked_whole_before_it_is_opened() {
        let dir = tempfile::tempdir().expect("dir");
        let header = DataFileHeader {
            cluster_id: 0xab,
            backup_uuid: [7; 16],
            taken_at_ms: 5,
            taken_on_kma: "kma1".into(),
            ca_certificate_pem: "PEM".into(),
        };
        let mut bytes = header.prefix();
        bytes.extend_from_slice(&[9u8; 1000]);
        let checksum: [u8; 32] = Sha256::digest(&bytes).into();
        bytes.extend_from_slice(&checksum);
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("file");
            path
        };
        let opened = CheckedDataFile::open(&write("whole.kmsdb", &bytes)).expect("opens");
        assert_eq!(opened.header, header);
        assert_eq!(opened.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        let mut flipped = bytes.clone();
        flipped[500] ^= 1;
        let cut = &bytes[..bytes.len() - 1];
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        let mut newer = bytes.clone();
        newer[21] = 2;
        for (name, bad, reason) in [
            ("flipped", flipped.as_slice(), "damaged"),
            ("cut", cut, "damaged"),
            ("foreign", foreign.as_slice(), "does not start as one"),
            ("newer", newer.as_slice(), "format 2"),
        ] {
            let error = CheckedDataFile::open(&write(name, bad)).err().expect(name).to_string();
            assert!(error.contains(reason), "{name}: {error}");
        }
    }
}
