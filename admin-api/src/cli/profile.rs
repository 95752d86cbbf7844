//! Saved profiles: where a cluster is and who is logged in to it, so that a user logs in once
//! per certificate lifetime (8 hours for users).
//!
//! ```text
//! $KMSCTL_HOME (default $HOME/.config/kmsctl)/
//!   profiles/<name>/          0700
//!     profile.toml            addresses, user, login and expiry instants, login index
//!     ca.pem                  the cluster CA the user trusted at login
//!     cert.pem                the user's certificate (removed by logout)
//!     key.pem                 its private key, 0600 (removed by logout)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::exit::CliError;
use super::render::format_utc_ms;

pub const PROFILE_FILE: &str = "profile.toml";
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// Longest profile name: it is a directory name.
pub const PROFILE_NAME_LEN_MAX: usize = 64;

/// What `profile.toml` holds (no secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileFile {
    pub addresses: Vec<String>,
    pub user: String,
    /// When the saved certificate was granted, ms since the Unix epoch.
    pub logged_in_at_ms: Option<u64>,
    /// When it stops being valid.
    pub expires_at_ms: Option<u64>,
    /// The KMA that granted it.
    pub granted_by: Option<String>,
    /// The log index of the entry that recorded the login: every request of the session
    /// carries it, so that a KMA that has not applied the login yet waits for it. 0 in profiles
    /// saved before it was kept, and from KMAs that do not record logins.
    #[serde(default)]
    pub login_index: u64,
}

/// A profile as loaded: its settings and where its files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub dir: PathBuf,
    pub file: ProfileFile,
}

/// Everything a login saves.
pub struct SavedLogin<'a> {
    pub file: ProfileFile,
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// Where a profile's session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    LoggedIn,
    /// The certificate expired at `at_ms`.
    Expired {
        at_ms: u64,
    },
    /// No certificate (never logged in, or logged out).
    LoggedOut,
}

impl Session {
    pub fn name(self) -> &'static str {
        match self {
            Session::LoggedIn => "logged-in",
            Session::Expired { .. } => "expired",
            Session::LoggedOut => "logged-out",
        }
    }
}

/// What a command needs to talk to the cluster.
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// `explicit` (from `--home` or `KMSCTL_HOME`), else `$HOME/.config/kmsctl`.
pub fn home(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(home) = explicit {
        return Ok(home.to_path_buf());
    }
    match std::env::var_os("HOME") {
        Some(user_home) if !user_home.is_empty() => {
            Ok(PathBuf::from(user_home).join(".config").join("kmsctl"))
        }
        _ => Err(CliError::Usage {
            message: "neither KMSCTL_HOME nor HOME is set: no place for profiles".into(),
            help: Some("set KMSCTL_HOME to a directory, or pass --home DIR".into()),
        }),
    }
}

/// Profile names become directory names: letters, digits, `-`, `_`, `.`, not leading `.`.
pub fn check_name(name: &str) -> Result<(), CliError> {
    let fits = !name.is_empty()
        && name.len() <= PROFILE_NAME_LEN_MAX
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fits {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "profile name '{name}': use 1 to {PROFILE_NAME_LEN_MAX} letters, digits, '-', '_' \
             or '.', not starting with '.'"
        )))
    }
}

pub fn profile_dir(home: &Path, name: &str) -> PathBuf {
    home.join("profiles").join(name)
}

/// Writes a profile after a login, the key file readable by its owner only.
pub fn save(home: &Path, name: &str, login: &SavedLogin<'_>) -> Result<PathBuf, CliError> {
    check_name(name)?;
    let dir = profile_dir(home, name);
    create_private_dir(&dir)?;
    let toml =
        toml::to_string(&login.file).map_err(|e| CliError::file(dir.join(PROFILE_FILE), e))?;
    write_file(&dir.join(CA_FILE), login.ca_pem.as_bytes(), false)?;
    write_file(&dir.join(CERT_FILE), login.cert_pem.as_bytes(), false)?;
    write_file(&dir.join(KEY_FILE), login.key_pem.as_bytes(), true)?;
    write_file(&dir.join(PROFILE_FILE), toml.as_bytes(), false)?;
    Ok(dir)
}

/// Reads a profile; a missing one is "not logged in".
pub fn load(home: &Path, name: &str) -> Result<Profile, CliError> {
    check_name(name)?;
    let dir = profile_dir(home, name);
    let path = dir.join(PROFILE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::NotLoggedIn {
                message: format!("no profile '{name}' in {}", home.display()),
                help: format!(
                    "log in first: kmsctl login --profile {name} --address HOST:PORT --ca CA.pem \
                     --user ID"
                ),
            })
        }
        Err(e) => return Err(CliError::file(path, e)),
    };
    let file: ProfileFile = toml::from_str(&text).map_err(|e| CliError::file(&path, e))?;
    Ok(Profile { name: name.to_string(), dir, file })
}

impl Profile {
    /// The command that renews this profile's certificate.
    pub fn login_help(&self) -> String {
        format!("log in again: kmsctl login --profile {} --user {}", self.name, self.file.user)
    }

    /// Whether the profile holds credentials, and whether they are still valid at `now_ms`.
    pub fn session(&self, now_ms: u64) -> Session {
        if !self.dir.join(CERT_FILE).exists() || !self.dir.join(KEY_FILE).exists() {
            return Session::LoggedOut;
        }
        match self.file.expires_at_ms {
            Some(at_ms) if at_ms <= now_ms => Session::Expired { at_ms },
            _ => Session::LoggedIn,
        }
    }

    /// The saved CA, certificate and key, if the certificate is still valid at `now_ms`.
    pub fn credentials(&self, now_ms: u64) -> Result<Credentials, CliError> {
        let user = &self.file.user;
        match self.session(now_ms) {
            Session::LoggedIn => {}
            Session::LoggedOut => {
                return Err(CliError::NotLoggedIn {
                    message: format!("profile '{}' ({user}) is logged out", self.name),
                    help: self.login_help(),
                })
            }
            Session::Expired { at_ms } => {
                return Err(CliError::NotLoggedIn {
                    message: format!(
                        "the certificate of profile '{}' ({user}) expired at {} UTC",
                        self.name,
                        format_utc_ms(at_ms)
                    ),
                    help: self.login_help(),
                })
            }
        }
        Ok(Credentials {
            ca_pem: read(&self.dir.join(CA_FILE))?,
            cert_pem: read(&self.dir.join(CERT_FILE))?,
            key_pem: Zeroizing::new(read(&self.dir.join(KEY_FILE))?),
        })
    }

    pub fn ca_pem(&self) -> Result<String, CliError> {
        read(&self.dir.join(CA_FILE))
    }
}

/// Removes the certificate and key; with `forget`, the whole profile.
pub fn logout(home: &Path, name: &str, forget: bool) -> Result<(), CliError> {
    let profile = load(home, name)?;
    if forget {
        return fs::remove_dir_all(&profile.dir).map_err(|e| CliError::file(&profile.dir, e));
    }
    for file in [KEY_FILE, CERT_FILE] {
        let path = profile.dir.join(file);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CliError::file(path, e)),
        }
    }
    let mut file = profile.file;
    file.expires_at_ms = None;
    file.login_index = 0;
    let toml =
        toml::to_string(&file).map_err(|e| CliError::file(profile.dir.join(PROFILE_FILE), e))?;
    write_file(&profile.dir.join(PROFILE_FILE), toml.as_bytes(), false)
}

/// Names of the saved profiles, sorted.
pub fn list(home: &Path) -> Result<Vec<String>, CliError> {
    let dir = home.join("profiles");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CliError::file(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::file(&dir, e))?;
        if entry.path().join(PROFILE_FILE).exists() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn read(path: &Path) -> Result<String, CliError> {
    fs::read_to_string(path).map_err(|e| CliError::file(path, e))
}

fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    fs::create_dir_all(dir).map_err(|e| CliError::file(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| CliError::file(dir, e))?;
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a profile is never half written; a
/// private file is 0600 from its creation (and stays so over an existing file).
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), CliError> {
    let temporary = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&temporary).map_err(|e| CliError::file(&temporary, e))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        // A leftover temporary file keeps its old mode through `open`: narrow it explicitly.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| CliError::file(&temporary, e))?;
    }
    file.write_all(bytes).map_err(|e| CliError::file(&temporary, e))?;
    file.sync_all().map_err(|e| CliError::file(&temporary, e))?;
    fs::rename(&temporary, path).map_err(|e| CliError::file(path, e))
}
