//! What `/metrics` reports besides request metrics (SPEC U3, C8): keys by state, the pool, the
//! Raft log and replication, the lock, and the links to other KMAs, in one `prometheus-client`
//! registry. Gauges that need the state's lock are set at each scrape (under one mutex, so two
//! scrapes never interleave); counters kept elsewhere (entries sent ahead, communication-error
//! records) are read by collectors as they are encoded.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use openraft::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use statemachine::KeyState;

use crate::listen::metrics::RequestMetrics;
use crate::transport::network::PeerLinks;
use crate::transport::parallel_append::{EntriesAhead, Outcome};
use raft_storage::{Stage, WriteStages};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabel {
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    node_id: String,
    kma: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    node_id: String,
    link: &'static str,
}

/// The gauges set at each scrape.
#[derive(Default)]
struct Gauges {
    keys: Family<StateLabel, Gauge>,
    key_counts_age_seconds: Gauge<f64, AtomicU64>,
    key_pool: Family<LevelLabel, Gauge>,
    raft_term: Gauge,
    raft_last_log_index: Gauge,
    raft_committed_index: Gauge,
    raft_apply_lag_entries: Gauge,
    raft_applied_index: Gauge,
    raft_is_leader: Gauge,
    raft_leader_known: Gauge,
    replication_lag: Family<PeerLabels, Gauge>,
    locked: Gauge,
    peer_rpc_failing: Family<NodeLabel, Gauge>,
    core_security_backup_due: Gauge,
    backup_last_at_seconds: Gauge,
    backup_drill_failed: Gauge,
}

/// What one scrape read of this KMA, gathered before anything is set.
pub struct Reading {
    pub keys_by_state: [u64; KeyState::ALL.len()],
    pub keys_counted_at: Instant,
    pub pool: (usize, usize),
    pub raft: openraft::RaftMetrics<u64, openraft::BasicNode>,
    pub committed: Option<u64>,
    pub applied: u64,
    pub locked: bool,
    /// node ID → KMA name, from the state.
    pub names: BTreeMap<u64, String>,
    pub node_id: u64,
    /// What the state says of backups (SPEC B1, B5).
    pub backups: BackupReading,
}

/// The backup gauges' values, read from the state.
#[derive(Clone, Copy, Debug, Default)]
pub struct BackupReading {
    /// The quorum changed since the latest core security backup (or none was taken).
    pub core_security_due: bool,
    /// Time of the latest database backup not marked destroyed, in ms since the epoch.
    pub last_database_at_ms: Option<u64>,
    /// The latest drill of the latest drilled backup failed.
    pub last_drill_failed: bool,
}

impl BackupReading {
    pub fn of(state: &statemachine::State) -> BackupReading {
        use statemachine::backup::BackupKind;
        let live = state.meta().backups.values().filter(|b| !b.destroyed);
        let database: Vec<_> = live.filter(|b| b.kind == BackupKind::Database).collect();
        let last_drilled = database.iter().rev().find_map(|b| b.drill.as_ref());
        BackupReading {
            core_security_due: state.cluster_id().is_some()
                && state.core_security_backup_due().is_some(),
            last_database_at_ms: database.iter().map(|b| b.taken_at_ms).max(),
            last_drill_failed: last_drilled.is_some_and(|drill| !drill.passed),
        }
    }
}

/// The registry of one KMA and its scrape-time gauges.
pub struct Scrape {
    registry: Registry,
    gauges: Gauges,
    peer_links: PeerLinks,
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Scrape {
    pub fn new(
        requests: &RequestMetrics,
        peer_links: PeerLinks,
        (ahead, stages): (EntriesAhead, WriteStages),
        connections: ListenerConnections,
    ) -> Scrape {
        let mut registry = Registry::default();
        requests.register(&mut registry);
        let gauges = Gauges::default();
        register_gauges(&mut registry, &gauges);
        registry.register_collector(Box::new(AheadCollector(ahead)));
        registry.register_collector(Box::new(StagesCollector(stages)));
        registry.register_collector(Box::new(RecordsCollector(peer_links.clone())));
        registry.register_collector(Box::new(ConnectionsCollector(connections)));
        Scrape { registry, gauges, peer_links }
    }

    /// Sets the gauges from `reading` and encodes the whole registry.
    pub fn encode(&self, reading: &Reading) -> String {
        let g = &self.gauges;
        for (key_state, count) in KeyState::ALL.iter().zip(reading.keys_by_state) {
            g.keys.get_or_create(&StateLabel { state: key_state.name() }).set(int(count));
        }
        g.key_counts_age_seconds.set(reading.keys_counted_at.elapsed().as_secs_f64());
        let (ready, generated) = reading.pool;
        g.key_pool.get_or_create(&LevelLabel { level: "ready" }).set(int(ready as u64));
        g.key_pool.get_or_create(&LevelLabel { level: "generated" }).set(int(generated as u64));
        self.set_raft(reading);
        g.locked.set(i64::from(reading.locked));
        g.core_security_backup_due.set(i64::from(reading.backups.core_security_due));
        let last = reading.backups.last_database_at_ms.map_or(0, |ms| ms / 1000);
        g.backup_last_at_seconds.set(int(last));
        g.backup_drill_failed.set(i64::from(reading.backups.last_drill_failed));
        g.peer_rpc_failing.clear();
        for (node_id, link) in self.peer_links.snapshot() {
            let labels = NodeLabel { node_id: node_id.to_string() };
            g.peer_rpc_failing.get_or_create(&labels).set(i64::from(link.failing));
        }
        crate::listen::metrics::encode(&self.registry)
    }

    fn set_raft(&self, reading: &Reading) {
        let (g, raft) = (&self.gauges, &reading.raft);
        let last_log_index = raft.last_log_index.unwrap_or(0);
        g.raft_term.set(int(raft.current_term));
        g.raft_last_log_index.set(int(last_log_index));
        if let Some(committed) = reading.committed {
            g.raft_committed_index.set(int(committed));
            g.raft_apply_lag_entries.set(int(committed.saturating_sub(reading.applied)));
        }
        g.raft_applied_index.set(int(reading.applied));
        g.raft_is_leader.set(i64::from(raft.state == ServerState::Leader));
        g.raft_leader_known.set(i64::from(raft.current_leader.is_some()));
        g.replication_lag.clear();
        let Some(replication) = raft.replication.as_ref() else { return };
        for (node_id, matched) in replication.iter().filter(|(id, _)| **id != reading.node_id) {
            let matched = matched.as_ref().map_or(0, |log_id| log_id.index);
            let kma = reading.names.get(node_id).cloned().unwrap_or_default();
            let labels = PeerLabels { node_id: node_id.to_string(), kma };
            g.replication_lag
                .get_or_create(&labels)
                .set(int(last_log_index.saturating_sub(matched)));
        }
    }
}

fn register_gauges(registry: &mut Registry, g: &Gauges) {
    let help = "Keys by state (recounted at most every 10 s; see kms_key_counts_age_seconds)";
    registry.register("kms_keys", help, g.keys.clone());
    let help = "Seconds since the key counts of kms_keys were taken";
    registry.register("kms_key_counts_age_seconds", help, g.key_counts_age_seconds.clone());
    let help = "Unassigned keys of the pool: ready to hand out, or generated and not yet ready";
    registry.register("kms_key_pool_keys", help, g.key_pool.clone());
    registry.register("kms_raft_term", "Current Raft term of this KMA", g.raft_term.clone());
    let help = "Last index in this KMA's log";
    registry.register("kms_raft_last_log_index", help, g.raft_last_log_index.clone());
    let help = "Last log index this KMA knows to be committed";
    registry.register("kms_raft_committed_index", help, g.raft_committed_index.clone());
    let help = "Committed entries this KMA has not applied yet";
    registry.register("kms_raft_apply_lag_entries", help, g.raft_apply_lag_entries.clone());
    let help = "Last log index applied to this KMA's state";
    registry.register("kms_raft_applied_index", help, g.raft_applied_index.clone());
    let help = "1 on the leader, 0 elsewhere";
    registry.register("kms_raft_is_leader", help, g.raft_is_leader.clone());
    let help = "1 when a leader is known to this KMA, 0 otherwise";
    registry.register("kms_raft_leader_known", help, g.raft_leader_known.clone());
    let help = "On the leader: log entries a follower lacks (last log index - matched index)";
    registry.register("kms_raft_replication_lag_entries", help, g.replication_lag.clone());
    let help = "1 while this KMA is locked (serves no key material)";
    registry.register("kms_locked", help, g.locked.clone());
    let help = "1 while this KMA's Raft RPCs to the peer fail in transport, 0 while they work";
    registry.register("kms_peer_rpc_failing", help, g.peer_rpc_failing.clone());
    let help = "1 while the quorum changed since the latest core security backup: take one";
    registry.register("kms_core_security_backup_due", help, g.core_security_backup_due.clone());
    let help = "Unix time of the latest database backup not marked destroyed (0: none)";
    registry.register("kms_backup_last_timestamp_seconds", help, g.backup_last_at_seconds.clone());
    let help = "1 when the restore drill of the latest drilled database backup failed";
    registry.register("kms_backup_drill_failed", help, g.backup_drill_failed.clone());
}

/// `kms_raft_entries_ahead_total`, from the counters of `transport::parallel_append`.
#[derive(Debug)]
struct AheadCollector(EntriesAhead);

impl Collector for AheadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Log entries this KMA sent to a voter while its own disk sync ran (parallel \
                    append), per voter sent to, by outcome";
        let mut family =
            encoder.encode_descriptor("kms_raft_entries_ahead", help, None, MetricType::Counter)?;
        for outcome in Outcome::ALL {
            let labels = OutcomeLabel { outcome: outcome.name() };
            let counter = ConstCounter::new(self.0.entries(outcome));
            counter.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// `kms_write_stage_seconds_total` and `kms_write_stage_total`, from the timers of
/// `raft_storage::write_stages`: the mean of a stage over a run is the difference of the first
/// divided by that of the second.
#[derive(Debug)]
struct StagesCollector(WriteStages);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

impl Collector for StagesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Seconds this KMA's writes spent in each stage of the write path, summed";
        let name = "kms_write_stage_seconds";
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for stage in Stage::ALL {
            let counter = ConstCounter::new(self.0.totals(stage).seconds);
            counter.encode(family.encode_family(&StageLabel { stage: stage.name() })?)?;
        }
        let help = "Times each stage of the write path ran on this KMA";
        let mut family =
            encoder.encode_descriptor("kms_write_stage", help, None, MetricType::Counter)?;
        for stage in Stage::ALL {
            let counter = ConstCounter::new(self.0.totals(stage).count);
            counter.encode(family.encode_family(&StageLabel { stage: stage.name() })?)?;
        }
        Ok(())
    }
}

/// The connection counts of each listener (`agent_gateway::connections`), by listener name.
pub type ListenerConnections = [(&'static str, agent_gateway::ConnectionStats); 2];

/// `kms_connections_*`: what each listener holds and what its bounds turned away (issue #16
/// point 6), read from the accept loops' counters as they are encoded.
struct ConnectionsCollector(ListenerConnections);

impl std::fmt::Debug for ConnectionsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionsCollector")
    }
}

type StatOf = fn(&agent_gateway::ConnectionStats) -> u64;

impl Collector for ConnectionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges: [(&str, &str, StatOf); 3] = [
            ("kms_connections_open", "Connections the listener holds, in any phase", |s| s.open()),
            ("kms_connections_handshaking", "Connections still in their TLS handshake", |s| {
                s.handshaking()
            }),
            ("kms_connections_anonymous", "Connections without a client certificate", |s| {
                s.anonymous()
            }),
        ];
        let counters: [(&str, &str, StatOf); 2] = [
            (
                "kms_connections_refused",
                "Connections closed at once because the listener was at its bound",
                |s| s.refused_total(),
            ),
            (
                "kms_connections_evicted",
                "Idle anonymous connections or stalled handshakes closed to make room",
                |s| s.evicted_total(),
            ),
        ];
        for (name, help, stat) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (listener, stats) in &self.0 {
                let gauge = prometheus_client::metrics::gauge::ConstGauge::new(int(stat(stats)));
                gauge.encode(family.encode_family(&ListenerLabel { listener })?)?;
            }
        }
        for (name, help, stat) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (listener, stats) in &self.0 {
                let counter = ConstCounter::new(stat(stats));
                counter.encode(family.encode_family(&ListenerLabel { listener })?)?;
            }
        }
        Ok(())
    }
}

/// `kms_communication_errors_recorded_total`, from the peer links of `transport::network`.
#[derive(Debug)]
struct RecordsCollector(PeerLinks);

impl Collector for RecordsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Communication errors between KMAs this KMA recorded in the audit log, by \
                    peer and by what the record says of the link (failing, or working again)";
        let name = "kms_communication_errors_recorded";
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (node_id, link) in self.0.snapshot() {
            let node_id = node_id.to_string();
            for (state, count) in
                [("failing", link.recorded_failing), ("working", link.recorded_working)]
            {
                let labels = LinkLabels { node_id: node_id.clone(), link: state };
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
