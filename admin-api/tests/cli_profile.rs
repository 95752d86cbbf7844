//! Saved profiles of `kmsctl` (see `admin_api::cli::profile` for the layout), without a
//! cluster: save, load, expiry, logout, names.

use admin_api::cli::exit::{self, CliError};
use admin_api::cli::profile::{self, ProfileFile, SavedLogin, Session};

const NOW_MS: u64 = 1_709_294_400_000;
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n";

fn saved(expires_at_ms: u64) -> ProfileFile {
    ProfileFile {
        addresses: vec!["kma1:8443".into(), "kma2:8443".into()],
        user: "alice".into(),
        logged_in_at_ms: Some(NOW_MS),
        expires_at_ms: Some(expires_at_ms),
        granted_by: Some("kma1:8443".into()),
        login_index: 57,
    }
}

fn save(home: &std::path::Path, name: &str, expires_at_ms: u64) -> std::path::PathBuf {
    let login =
        SavedLogin { file: saved(expires_at_ms), ca_pem: "CA", cert_pem: "CERT", key_pem: KEY_PEM };
    profile::save(home, name, &login).expect("profile saved")
}

/// Setup: a login saved under a fresh home. Expectation: the layout of the module doc, the key
/// file 0600, the directory 0700, and the same profile loaded back with its credentials.
#[test]
fn s2_profile_saves_and_loads_with_a_private_key_file() {
    let home = tempfile::tempdir().unwrap();
    let dir = save(home.path(), "default", NOW_MS + 8 * 3_600_000);
    assert_eq!(dir, home.path().join("profiles").join("default"));
    for file in [profile::PROFILE_FILE, profile::CA_FILE, profile::CERT_FILE, profile::KEY_FILE] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(profile::KEY_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
    let loaded = profile::load(home.path(), "default").unwrap();
    assert_eq!(loaded.file, saved(NOW_MS + 8 * 3_600_000));
    assert_eq!(loaded.session(NOW_MS), Session::LoggedIn);
    let credentials = loaded.credentials(NOW_MS).unwrap();
    assert_eq!((credentials.ca_pem.as_str(), credentials.cert_pem.as_str()), ("CA", "CERT"));
    assert_eq!(credentials.key_pem.as_str(), KEY_PEM);
    let toml = std::fs::read_to_string(dir.join(profile::PROFILE_FILE)).unwrap();
    assert!(!toml.contains("PRIVATE KEY"), "profile.toml holds no secret");
}

/// Setup: a `profile.toml` as kmsctl wrote it before it kept the login index (issue 16 point
/// 2). Expectation: it loads, with login index 0 (none sent), and its session is still valid.
#[test]
fn s2_a_profile_saved_without_a_login_index_loads_with_none() {
    let home = tempfile::tempdir().unwrap();
    let dir = save(home.path(), "default", NOW_MS + 1_000);
    let older = "addresses = [\"kma1:8443\", \"kma2:8443\"]\nuser = \"alice\"\n\
                 logged_in_at_ms = 1709294400000\nexpires_at_ms = 1709294401000\n\
                 granted_by = \"kma1:8443\"\n";
    std::fs::write(dir.join(profile::PROFILE_FILE), older).unwrap();
    let loaded = profile::load(home.path(), "default").unwrap();
    assert_eq!(loaded.file, ProfileFile { login_index: 0, ..saved(NOW_MS + 1_000) });
    assert_eq!(loaded.session(NOW_MS), Session::LoggedIn);
    let toml = std::fs::read_to_string(dir.join(profile::PROFILE_FILE)).unwrap();
    assert!(!toml.contains("login_index"), "the test writes the older format");
    save(home.path(), "default", NOW_MS + 1_000);
    let toml = std::fs::read_to_string(dir.join(profile::PROFILE_FILE)).unwrap();
    assert!(toml.contains("login_index = 57\n"), "{toml}");
}

/// Setup: a key file left world-readable, then a new login over it. Expectation: 0600 again.
#[cfg(unix)]
#[test]
fn s2_a_new_login_narrows_an_existing_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let dir = save(home.path(), "default", NOW_MS + 1);
    let key = dir.join(profile::KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(dir.join("key.tmp"), "left over").unwrap();
    std::fs::set_permissions(dir.join("key.tmp"), std::fs::Permissions::from_mode(0o644)).unwrap();
    save(home.path(), "default", NOW_MS + 2);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
}

/// Setup: a certificate that expired a millisecond ago. Expectation: "not logged in" (exit 7)
/// saying when it expired, and the login command as the next step.
#[test]
fn s2_an_expired_certificate_asks_to_log_in_again() {
    let home = tempfile::tempdir().unwrap();
    save(home.path(), "prod", NOW_MS - 1);
    let loaded = profile::load(home.path(), "prod").unwrap();
    assert_eq!(loaded.session(NOW_MS), Session::Expired { at_ms: NOW_MS - 1 });
    let error = loaded.credentials(NOW_MS).err().unwrap();
    assert_eq!(error.exit_code(), exit::NOT_LOGGED_IN);
    assert_eq!(
        error.to_string(),
        "the certificate of profile 'prod' (alice) expired at 2024-03-01 11:59:59 UTC"
    );
    assert_eq!(error.help().unwrap(), "log in again: kmsctl login --profile prod --user alice");
}

/// Setup: no profile at all. Expectation: "not logged in" with the full login command.
#[test]
fn s2_a_missing_profile_is_not_logged_in() {
    let home = tempfile::tempdir().unwrap();
    let error = profile::load(home.path(), "default").unwrap_err();
    assert!(matches!(error, CliError::NotLoggedIn { .. }));
    assert_eq!(error.exit_code(), exit::NOT_LOGGED_IN);
    assert!(error
        .help()
        .unwrap()
        .starts_with("log in first: kmsctl login --profile default --address"));
}

/// Setup: a logged-in profile, then logout, then logout --forget. Expectation: logout removes
/// the certificate and key but keeps addresses and CA; forget removes the profile.
#[test]
fn s2_logout_removes_the_credentials_and_forget_the_profile() {
    let home = tempfile::tempdir().unwrap();
    let dir = save(home.path(), "default", NOW_MS + 1_000);
    profile::logout(home.path(), "default", false).unwrap();
    assert!(!dir.join(profile::KEY_FILE).exists());
    assert!(!dir.join(profile::CERT_FILE).exists());
    let loaded = profile::load(home.path(), "default").unwrap();
    assert_eq!(loaded.session(NOW_MS), Session::LoggedOut);
    assert_eq!(loaded.file.addresses, saved(0).addresses);
    assert_eq!(loaded.file.login_index, 0, "the login it named is over");
    assert_eq!(loaded.ca_pem().unwrap(), "CA");
    assert_eq!(loaded.credentials(NOW_MS).err().unwrap().exit_code(), exit::NOT_LOGGED_IN);
    profile::logout(home.path(), "default", true).unwrap();
    assert!(!dir.exists());
}

/// Setup: several profiles. Expectation: listed by name, sorted.
#[test]
fn u1_profiles_are_listed_by_name() {
    let home = tempfile::tempdir().unwrap();
    assert!(profile::list(home.path()).unwrap().is_empty());
    save(home.path(), "prod", NOW_MS);
    save(home.path(), "lab-2", NOW_MS);
    assert_eq!(profile::list(home.path()).unwrap(), vec!["lab-2".to_string(), "prod".to_string()]);
}

/// Setup: profile names that would leave the profiles directory. Expectation: usage errors.
#[test]
fn u1_profile_names_stay_inside_the_profiles_directory() {
    for bad in ["", "..", "../x", "a/b", ".hidden", "sp ace"] {
        let error = profile::check_name(bad).unwrap_err();
        assert_eq!(error.exit_code(), exit::USAGE, "{bad:?}");
    }
    for good in ["default", "prod-eu.2", "LAB_1"] {
        profile::check_name(good).unwrap();
    }
}

/// Setup: an explicit home. Expectation: it wins over $HOME.
#[test]
fn u1_kmsctl_home_wins_over_home() {
    let explicit = std::path::Path::new("/srv/kmsctl");
    assert_eq!(profile::home(Some(explicit)).unwrap(), explicit);
}
