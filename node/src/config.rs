//! The KMA's configuration file (`<data dir>/kma.toml`) and the layout of its data dir.
//!
//! Every field is required and unknown fields are refused, so a typo never silently falls back
//! to a default: the error names the field and the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const CONFIG_FILE: &str = "kma.toml";

/// What `kma run` writes into its data dir once both listeners are bound: the addresses it got
/// (see [`Listening`]). Scripts and test harnesses read it instead of guessing ports.
pub const LISTENING_FILE: &str = "listening.toml";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft node ID, unique in the cluster; given by the cluster when the KMA joins.
    pub node_id: u64,
    /// The KMA's name in the cluster.
    pub name: String,
    /// The site this KMA serves (SPEC C2).
    pub site: String,
    /// Where the management listener (admin API and KMA-to-KMA Raft traffic) binds.
    pub management_listen: SocketAddr,
    /// How other KMAs reach the management listener: `host:port`; the host is in the KMA's
    /// certificate.
    pub management_advertise: String,
    /// Where the service listener (agents) binds.
    pub service_listen: SocketAddr,
    /// Where the KMIP listener (tape libraries and other KMIP clients, docs/kmip.md) binds;
    /// IANA's port for KMIP is 5696. Unset: this KMA serves no KMIP (issue 19).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmip_listen: Option<SocketAddr>,
    /// Election timeout range and heartbeat of Raft, in milliseconds.
    #[serde(default = "default_election_timeout_ms_min")]
    pub election_timeout_ms_min: u64,
    #[serde(default = "default_election_timeout_ms_max")]
    pub election_timeout_ms_max: u64,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A snapshot is built after this many log entries since the last one.
    #[serde(default = "default_snapshot_logs_since_last")]
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind a snapshot, so a KMA that was away briefly catches up from the
    /// log instead of needing the whole snapshot.
    #[serde(default = "default_snapshot_logs_kept")]
    pub snapshot_logs_kept: u64,
    /// Log entries behind a snapshot are deleted once at least this many can go at once.
    #[serde(default = "default_purge_batch_entries")]
    pub purge_batch_entries: u64,
    /// The leader sends each new entry to the followers while its own disk sync runs
    /// (`parallel_append`). Off, each entry waits for that sync first, as in openraft 0.9.
    #[serde(default = "default_parallel_append")]
    pub parallel_append: bool,
    /// A leader whose command stamps run ahead of this KMA's clock by more than this is refused
    /// (its entries never commit) and voted out (issue #16 point 7; docs/security.md).
    #[serde(default = "default_clock_ahead_max_ms")]
    pub clock_ahead_max_ms: u64,
    /// A KMA cut off from the majority serves key material for this long, then none until it
    /// reaches the majority again: the longest time a drive revoked meanwhile can still get
    /// keys from it (docs/security.md). A day by default, so that a site keeps reading tapes
    /// through a WAN outage of hours.
    #[serde(default = "default_serve_cut_off_ms")]
    pub serve_cut_off_ms: u64,
    /// Most connections each listener holds at once; beyond it new ones are closed at once, so
    /// that a flood cannot use up the process's file descriptors (issue #16 point 6).
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
    /// Of those, connections without a client certificate (enrollment, logins, joins, health
    /// probes): when full, the oldest idle one makes room for a new one.
    #[serde(default = "default_anonymous_connections_max")]
    pub anonymous_connections_max: usize,
    /// Where this KMA writes scheduled database backups (SPEC B5). Put it on other storage
    /// than the data dir: a backup on the disk it backs up is lost with it. Unset: this KMA
    /// takes no scheduled backups (and says so when the schedule names it).
    #[serde(default)]
    pub backup_dir: Option<PathBuf>,
    /// Scheduled backups kept in `backup_dir`; older ones are removed once a newer one passed
    /// its restore drill.
    #[serde(default = "default_backups_kept")]
    pub backups_kept: u32,
    /// A program run after each scheduled backup passed its drill, with the data file and the
    /// key file as its two arguments: to ship them elsewhere (another site, a vault).
    #[serde(default)]
    pub backup_ship_command: Option<PathBuf>,
}

fn default_backups_kept() -> u32 {
    7
}

fn default_connections_max() -> usize {
    agent_gateway::ConnectionLimits::default().connections_max
}

fn default_anonymous_connections_max() -> usize {
    agent_gateway::ConnectionLimits::default().anonymous_max
}

fn default_serve_cut_off_ms() -> u64 {
    86_400_000
}

fn default_clock_ahead_max_ms() -> u64 {
    60_000
}

fn default_parallel_append() -> bool {
    true
}

fn default_purge_batch_entries() -> u64 {
    1_024
}

fn default_snapshot_logs_since_last() -> u64 {
    50_000
}
fn default_snapshot_logs_kept() -> u64 {
    20_000
}

fn default_election_timeout_ms_min() -> u64 {
    600
}
fn default_election_timeout_ms_max() -> u64 {
    1_200
}
fn default_heartbeat_ms() -> u64 {
    150
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}; is the data dir right? (`kma init` or `kma join` creates it)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid KMA configuration: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl NodeConfig {
    /// The bounds of each listener's connections: this file's counts, the gateway's times.
    pub fn connection_limits(&self) -> agent_gateway::ConnectionLimits {
        agent_gateway::ConnectionLimits {
            connections_max: self.connections_max,
            anonymous_max: self.anonymous_connections_max,
            ..agent_gateway::ConnectionLimits::default()
        }
    }

    pub fn load(data_dir: &Path) -> Result<NodeConfig, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            message: e.message().into(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid { path, message })?;
        Ok(config)
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = toml::to_string_pretty(self)
            .map_err(|e| ConfigError::Invalid { path: path.clone(), message: e.to_string() })?;
        std::fs::write(&path, text).map_err(|source| ConfigError::Write { path, source })
    }

    fn check(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id must be 1 or more".into());
        }
        if self.election_timeout_ms_min <= self.heartbeat_ms * 2
            || self.election_timeout_ms_max <= self.election_timeout_ms_min
        {
            return Err(
                "need heartbeat_ms * 2 < election_timeout_ms_min < election_timeout_ms_max".into(),
            );
        }
        if advertise_host(&self.management_advertise).is_none() {
            return Err(format!(
                "management_advertise '{}' must be host:port",
                self.management_advertise
            ));
        }
        // Port 0 is for `kma init` and `kma join`, which write the port the OS chose here: the
        // advertised address is in the Raft membership and must not change at every start.
        let zero = [
            ("management_listen", self.management_listen.port()),
            ("service_listen", self.service_listen.port()),
            ("kmip_listen", self.kmip_listen.map_or(1, |kmip| kmip.port())),
            ("management_advertise", advertise_port(&self.management_advertise).unwrap_or(0)),
        ];
        if let Some((field, _)) = zero.iter().find(|(_, port)| *port == 0) {
            return Err(format!(
                "{field} has port 0; only `kma init` and `kma join` take port 0 (they write the \
                 port the OS chose here): set the port this KMA was created with"
            ));
        }
        Ok(())
    }
}

impl NodeConfig {
    /// How agents reach the service listener: the advertised management host, the service port.
    pub fn service_advertise(&self) -> String {
        let host = advertise_host(&self.management_advertise).unwrap_or("127.0.0.1");
        format!("{host}:{}", self.service_listen.port())
    }
}

/// The host part of `host:port`.
pub fn advertise_host(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    (!host.is_empty()).then_some(host)
}

/// The port part of `host:port`.
pub fn advertise_port(address: &str) -> Option<u16> {
    advertise_host(address)?;
    address.rsplit_once(':')?.1.parse().ok()
}

/// The addresses a running KMA's listeners are bound to, as `kma run` reports them in
/// [`LISTENING_FILE`] (`management = "127.0.0.1:7001"`, `service = "127.0.0.1:7101"`). Written
/// after binding and removed on a clean stop; a KMA killed with -9 leaves it behind, so whoever
/// starts `kma run` removes it first (`setup::local::spawn_run` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listening {
    pub management: SocketAddr,
    pub service: SocketAddr,
    /// The KMIP listener, when `kmip_listen` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmip: Option<SocketAddr>,
}

impl Listening {
    /// Writes the file whole or not at all (a temporary file renamed over it), so a reader
    /// polling for it never sees half of it.
    pub fn save(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let path = data_dir.join(LISTENING_FILE);
        let partial = data_dir.join(format!("{LISTENING_FILE}.partial"));
        let text = toml::to_string(self)
            .map_err(|e| ConfigError::Invalid { path: path.clone(), message: e.to_string() })?;
        std::fs::write(&partial, text)
            .map_err(|source| ConfigError::Write { path: partial.clone(), source })?;
        std::fs::rename(&partial, &path).map_err(|source| ConfigError::Write { path, source })
    }

    /// What the KMA in `data_dir` reported, or `None` while it has not bound its listeners.
    pub fn load(data_dir: &Path) -> Result<Option<Listening>, ConfigError> {
        let path = data_dir.join(LISTENING_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| ConfigError::Invalid { path, message: e.message().into() })
    }

    /// Removes the report of an earlier run; none is fine.
    pub fn remove(data_dir: &Path) -> Result<(), ConfigError> {
        let path = data_dir.join(LISTENING_FILE);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(ConfigError::Write { path, source: error })
            }
            _ => Ok(()),
        }
    }
}

/// Paths inside a KMA's data dir.
#[derive(Clone, Debug)]
pub struct DataDirLayout {
    pub root: PathBuf,
}

impl DataDirLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDirLayout { root: root.into() }
    }
    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setup: an empty data dir. Action: load, save, load, remove, remove again. Expect: none
    /// before the save, the saved addresses after it, none after the remove, and removing what
    /// is not there is fine. (issue #15)
    #[test]
    fn t90_issue_15_the_listening_report_round_trips_and_goes() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(Listening::load(dir.path()).expect("load"), None);
        let listening = Listening {
            management: "127.0.0.1:41001".parse().expect("address"),
            service: "127.0.0.1:41002".parse().expect("address"),
            kmip: None,
        };
        listening.save(dir.path()).expect("save");
        assert_eq!(Listening::load(dir.path()).expect("load"), Some(listening));
        let text = std::fs::read_to_string(dir.path().join(LISTENING_FILE)).expect("file");
        assert!(text.contains("management = \"127.0.0.1:41001\""), "{text}");
        Listening::remove(dir.path()).expect("remove");
        assert_eq!(Listening::load(dir.path()).expect("load"), None);
        Listening::remove(dir.path()).expect("nothing to remove is fine");
    }
}
