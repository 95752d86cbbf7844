//! `kmsctl login`, `logout` and `profile`: the commands that need no running session.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::PassphraseArgs;
use super::context::{note, out};
use super::exit::CliError;
use super::profile::{self, Profile, ProfileFile, SavedLogin};
use super::prompt::{self, Source};
use super::render::{self, fields, format_utc_ms};

#[derive(Clone, Debug, Args)]
pub struct LoginArgs {
    /// A KMA's management address; repeat it for more KMAs, tried in turn
    /// [default: the profile's].
    #[arg(long = "address", value_name = "HOST:PORT")]
    pub addresses: Vec<String>,
    /// The cluster's CA certificate, PEM [default: the profile's].
    #[arg(long, value_name = "CA.pem")]
    pub ca: Option<PathBuf>,
    /// The user ID [default: the profile's].
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
}

#[derive(Clone, Debug, Args)]
pub struct LogoutArgs {
    /// Remove the whole profile (addresses and CA too), not only the credentials.
    #[arg(long)]
    pub forget: bool,
}

#[derive(Clone, Debug, Subcommand)]
pub enum ProfileCommand {
    /// Show the profile: addresses, user, and until when its certificate is valid.
    Show,
    /// List the saved profiles.
    List,
}

pub fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// `HOST:PORT`, forgiving a pasted `https://` and trailing `/`.
pub fn check_address(address: &str) -> Result<String, CliError> {
    check_address_of("--address", address)
}

/// [`check_address`] of the value of `flag`, named in the error.
pub fn check_address_of(flag: &str, address: &str) -> Result<String, CliError> {
    let trimmed = address.trim().trim_start_matches("https://").trim_end_matches('/');
    let fits = trimmed
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if fits && !trimmed.contains('/') {
        Ok(trimmed.to_string())
    } else {
        Err(CliError::usage(format!(
            "{flag} {address}: write a KMA's management address as HOST:PORT"
        )))
    }
}

/// What a login uses: the flags, else what the profile saved.
struct LoginPlan {
    addresses: Vec<String>,
    ca_pem: String,
    user: String,
}

fn plan(args: &LoginArgs, saved: Option<&Profile>) -> Result<LoginPlan, CliError> {
    let mut addresses = Vec::new();
    for address in &args.addresses {
        addresses.push(check_address(address)?);
    }
    if addresses.is_empty() {
        addresses = saved.map(|p| p.file.addresses.clone()).unwrap_or_default();
    }
    let missing = |what: &str| CliError::Usage {
        message: format!("no {what} given and none saved in the profile"),
        help: Some("kmsctl login --address HOST:PORT --ca CA.pem --user ID".into()),
    };
    if addresses.is_empty() {
        return Err(missing("--address"));
    }
    let ca_pem = match (&args.ca, saved) {
        (Some(path), _) => std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?,
        (None, Some(profile)) => profile.ca_pem()?,
        (None, None) => return Err(missing("--ca")),
    };
    let user = match (&args.user, saved) {
        (Some(user), _) => user.clone(),
        (None, Some(profile)) => profile.file.user.clone(),
        (None, None) => return Err(missing("--user")),
    };
    Ok(LoginPlan { addresses, ca_pem, user })
}

#[derive(Serialize)]
struct LoggedIn<'a> {
    profile: &'a str,
    user: &'a str,
    granted_by: &'a str,
    expires_at_ms: u64,
}

pub async fn login(home: &Path, name: &str, json: bool, args: &LoginArgs) -> Result<(), CliError> {
    profile::check_name(name)?;
    let saved = match profile::load(home, name) {
        Ok(profile) => Some(profile),
        Err(CliError::NotLoggedIn { .. }) => None,
        Err(e) => return Err(e),
    };
    let plan = plan(args, saved.as_ref())?;
    let source = Source::from_flag(args.passphrase.passphrase_stdin);
    let prompt_text = format!("Passphrase for {}: ", plan.user);
    let passphrase =
        prompt::passphrase(source, &prompt_text, "passphrase", Some(prompt::PASSPHRASE_ENV))?;
    let granted =
        crate::client::login(&plan.addresses, &plan.ca_pem, &plan.user, &passphrase).await?;
    drop(passphrase);
    let logged_in_at_ms = now_ms();
    // TOML integers are i64: a (bogus) validity beyond that is kept at the largest one.
    let valid_for_ms = granted.valid_for_s.saturating_mul(1_000);
    let expires_at_ms = logged_in_at_ms.saturating_add(valid_for_ms).min(i64::MAX as u64);
    let file = ProfileFile {
        addresses: plan.addresses,
        user: plan.user.clone(),
        logged_in_at_ms: Some(logged_in_at_ms),
        expires_at_ms: Some(expires_at_ms),
        granted_by: Some(granted.address.clone()),
        login_index: granted.login_index,
    };
    let login = SavedLogin {
        file,
        ca_pem: &plan.ca_pem,
        cert_pem: &granted.cert_pem,
        key_pem: &granted.key_pem,
    };
    let dir = profile::save(home, name, &login)?;
    if json {
        let view = LoggedIn {
            profile: name,
            user: &plan.user,
            granted_by: &granted.address,
            expires_at_ms,
        };
        return out(&render::json(&view));
    }
    out(&format!(
        "Logged in as {} at {}; profile '{name}' ({}) is valid until {} UTC.\n",
        plan.user,
        granted.address,
        dir.display(),
        format_utc_ms(expires_at_ms)
    ))
}

pub fn logout(home: &Path, name: &str, args: &LogoutArgs) -> Result<(), CliError> {
    profile::logout(home, name, args.forget)?;
    if args.forget {
        note(&format!("profile '{name}' removed"));
    } else {
        note(&format!("profile '{name}' logged out (addresses and CA kept)"));
    }
    Ok(())
}

#[derive(Serialize)]
struct ProfileView<'a> {
    name: &'a str,
    dir: String,
    #[serde(flatten)]
    file: &'a ProfileFile,
    state: &'static str,
}

pub fn profile(
    home: &Path,
    name: &str,
    json: bool,
    command: &ProfileCommand,
) -> Result<(), CliError> {
    match command {
        ProfileCommand::List => {
            let names = profile::list(home)?;
            if json {
                return out(&render::json(&names));
            }
            out(&names.iter().map(|n| format!("{n}\n")).collect::<String>())
        }
        ProfileCommand::Show => {
            let profile = profile::load(home, name)?;
            let state = profile.session(now_ms()).name();
            let view = ProfileView {
                name,
                dir: profile.dir.display().to_string(),
                file: &profile.file,
                state,
            };
            if json {
                return out(&render::json(&view));
            }
            let when = |ms: Option<u64>| {
                ms.map_or_else(|| "-".to_string(), |ms| format_utc_ms(ms) + " UTC")
            };
            out(&fields(&[
                ("Profile", name.to_string()),
                ("Directory", view.dir.clone()),
                ("Addresses", profile.file.addresses.join(", ")),
                ("User", profile.file.user.clone()),
                ("State", state.to_string()),
                ("Logged in", when(profile.file.logged_in_at_ms)),
                ("Expires", when(profile.file.expires_at_ms)),
                ("Granted by", profile.file.granted_by.clone().unwrap_or_else(|| "-".into())),
                ("Login index", login_index(profile.file.login_index)),
            ]))
        }
    }
}

/// A login index as `profile show` prints it: `-` for none.
fn login_index(index: u64) -> String {
    if index == 0 {
        "-".into()
    } else {
        index.to_string()
    }
}
