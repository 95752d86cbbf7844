//! Probes and metrics on the management listener (SPEC U3, C8): `GET /healthz`, `GET /readyz`
//! and `GET /metrics`. They need no client certificate: probes and Prometheus have none, and
//! nothing here is secret (counts, indexes, names, never a key, passphrase or certificate).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use openraft::ServerState;
use raft_storage::KmaRaft;
use statemachine::{KeyId, KeyState};

use crate::kma::{wall_clock_ms, Kma};
use crate::metrics::{Exposition, Kind};

/// Key counts by state are a scan of every key: recounted at most this often.
pub const KEY_COUNT_INTERVAL: Duration = Duration::from_secs(10);
/// Keys counted under one hold of the state's read lock: `apply` waits while it is held.
const KEY_COUNT_CHUNK: usize = 50_000;
/// `/readyz` fails when this KMA has this many committed entries or more still to apply.
pub const APPLY_LAG_ENTRIES_MAX: u64 = 1_000;
/// `/readyz` fails on a leader that a majority has not acknowledged for this long.
pub const LEADER_QUORUM_ACK_MS_MAX: u64 = 5_000;
/// How long a scrape or probe waits for the Raft core's committed index.
const RAFT_CORE_WAIT: Duration = Duration::from_secs(1);

pub fn routes() -> Router<Arc<Kma>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

fn plain(status: StatusCode, text: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// The process serves requests: nothing else is checked.
async fn healthz() -> Response {
    plain(StatusCode::OK, "ok\n".into())
}

async fn readyz(State(kma): State<Arc<Kma>>) -> Response {
    let problems = readiness_problems(&kma).await;
    if problems.is_empty() {
        return plain(StatusCode::OK, "ready\n".into());
    }
    let mut text = problems.join("\n");
    text.push('\n');
    plain(StatusCode::SERVICE_UNAVAILABLE, text)
}

/// Why this KMA should not be sent traffic, one line per failing check (empty: ready). Ready
/// means: a voter of the cluster, a leader known (and, on the leader, a majority that answered
/// lately), unlocked, and applying within [`APPLY_LAG_ENTRIES_MAX`] of what is committed.
pub async fn readiness_problems(kma: &Kma) -> Vec<String> {
    let metrics = kma.raft.metrics().borrow().clone();
    let me = kma.node_id();
    let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
    let mut problems = Vec::new();
    if !voters.contains(&me) {
        problems.push(format!(
            "not a member: node {me} is not a voter of the cluster (joining, a learner, or deleted)"
        ));
    }
    match metrics.current_leader {
        None => problems.push(format!(
            "no leader known: this KMA cannot reach a majority of the cluster (term {})",
            metrics.current_term
        )),
        Some(leader) if leader == me && voters.len() > 1 => {
            let ack_ms = metrics.millis_since_quorum_ack;
            match ack_ms {
                None => problems.push("leader without a majority: none acknowledged it yet".into()),
                Some(ms) if ms > LEADER_QUORUM_ACK_MS_MAX => problems.push(format!(
                    "leader without a majority: last acknowledged by a majority {ms} ms ago"
                )),
                Some(_) => {}
            }
        }
        Some(_) => {}
    }
    problems.extend(lock_problem(kma).await);
    let applied = kma.state.applied_index();
    match committed_index(&kma.raft).await {
        None => problems.push("raft core did not answer within 1 s: apply lag unknown".into()),
        Some(committed) if committed.saturating_sub(applied) >= APPLY_LAG_ENTRIES_MAX => problems
            .push(format!(
                "applying behind: committed {committed}, applied {applied} (lag of \
                 {APPLY_LAG_ENTRIES_MAX} entries or more)"
            )),
        Some(_) => {}
    }
    problems
}

/// Why this KMA is locked (SPEC C6), as `Kma::is_locked` decides it.
async fn lock_problem(kma: &Kma) -> Option<String> {
    let locked_by_state = {
        let state = kma.state.read().await;
        state.meta().kmas.get(&kma.config.name).is_none_or(|entry| entry.locked)
    };
    if locked_by_state {
        Some(
            "locked: the cluster's record of this KMA says locked (a new member starts locked; \
              help: the quorum unlocks it)"
                .into(),
        )
    } else if !kma.vault.is_unlocked() {
        Some("locked: no master key in memory (help: the quorum unlocks this KMA)".into())
    } else {
        None
    }
}

/// The committed log index as the Raft core knows it (0 before the first), or `None` if the
/// core does not answer within [`RAFT_CORE_WAIT`].
pub(crate) async fn committed_index(raft: &openraft::Raft<KmaRaft>) -> Option<u64> {
    let asked = raft.with_raft_state(|st| st.committed.map_or(0, |log_id| log_id.index));
    tokio::time::timeout(RAFT_CORE_WAIT, asked).await.ok()?.ok()
}

/// Keys by state at one moment, and when they were counted.
#[derive(Clone, Debug)]
struct KeyCounts {
    by_state: [u64; KeyState::ALL.len()],
    counted_at: Instant,
}

/// The latest key counts, by node ID: the scan runs at most every [`KEY_COUNT_INTERVAL`], and
/// concurrent scrapes wait for one scan rather than each starting their own.
static KEY_COUNTS: tokio::sync::Mutex<BTreeMap<u64, KeyCounts>> =
    tokio::sync::Mutex::const_new(BTreeMap::new());

async fn key_counts(kma: &Kma) -> KeyCounts {
    let mut cached = KEY_COUNTS.lock().await;
    if let Some(counts) = cached.get(&kma.node_id()) {
        if counts.counted_at.elapsed() < KEY_COUNT_INTERVAL {
            return counts.clone();
        }
    }
    let counts = count_keys(kma).await;
    cached.insert(kma.node_id(), counts.clone());
    counts
}

/// Counts the keys by their state now, [`KEY_COUNT_CHUNK`] keys per hold of the read lock. The
/// counts are not of one instant when commands apply meanwhile; a gauge needs no more.
async fn count_keys(kma: &Kma) -> KeyCounts {
    let now_ms = wall_clock_ms();
    let mut by_state = [0; KeyState::ALL.len()];
    let mut after: Option<KeyId> = None;
    loop {
        let state = kma.state.read().await;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut seen = 0;
        for (key_id, key) in state.keys().range((start, Bound::Unbounded)).take(KEY_COUNT_CHUNK) {
            let key_state = state.key_state_at(key, now_ms);
            // Every state is listed in KeyState::ALL, so the position is always found.
            if let Some(n) = KeyState::ALL.iter().position(|s| *s == key_state) {
                by_state[n] += 1;
            }
            after = Some(*key_id);
            seen += 1;
        }
        drop(state);
        if seen < KEY_COUNT_CHUNK {
            break;
        }
        tokio::task::yield_now().await;
    }
    KeyCounts { by_state, counted_at: Instant::now() }
}

async fn metrics(State(kma): State<Arc<Kma>>) -> Response {
    let mut out = Exposition::new();
    crate::metrics::requests().encode(&mut out);
    key_metrics(&kma, &mut out).await;
    raft_metrics(&kma, &mut out).await;
    security_metrics(&kma, &mut out).await;
    let headers = [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)];
    (StatusCode::OK, headers, out.finish()).into_response()
}

async fn key_metrics(kma: &Kma, out: &mut Exposition) {
    let counts = key_counts(kma).await;
    let help = "Keys by state (recounted at most every 10 s; see kms_key_counts_age_seconds).";
    out.family("kms_keys", Kind::Gauge, help);
    for (key_state, count) in KeyState::ALL.iter().zip(counts.by_state) {
        out.sample_u64("kms_keys", &[("state", key_state.name())], count);
    }
    let help = "Seconds since the key counts of kms_keys were taken.";
    out.family("kms_key_counts_age_seconds", Kind::Gauge, help);
    out.sample_f64("kms_key_counts_age_seconds", &[], counts.counted_at.elapsed().as_secs_f64());
    let (ready, generated) = kma.state.read().await.pool_size();
    let help = "Unassigned keys of the pool: ready to hand out, or generated and not yet ready.";
    out.family("kms_key_pool_keys", Kind::Gauge, help);
    out.sample_u64("kms_key_pool_keys", &[("level", "ready")], ready as u64);
    out.sample_u64("kms_key_pool_keys", &[("level", "generated")], generated as u64);
}

fn gauge(out: &mut Exposition, name: &str, help: &str, value: u64) {
    out.family(name, Kind::Gauge, help);
    out.sample_u64(name, &[], value);
}

async fn raft_metrics(kma: &Kma, out: &mut Exposition) {
    let metrics = kma.raft.metrics().borrow().clone();
    let last_log_index = metrics.last_log_index.unwrap_or(0);
    let applied = kma.state.applied_index();
    gauge(out, "kms_raft_term", "Current Raft term of this KMA.", metrics.current_term);
    gauge(out, "kms_raft_last_log_index", "Last index in this KMA's log.", last_log_index);
    if let Some(committed) = committed_index(&kma.raft).await {
        let help = "Last log index this KMA knows to be committed.";
        gauge(out, "kms_raft_committed_index", help, committed);
        let help = "Committed entries this KMA has not applied yet.";
        gauge(out, "kms_raft_apply_lag_entries", help, committed.saturating_sub(applied));
    }
    gauge(out, "kms_raft_applied_index", "Last log index applied to this KMA's state.", applied);
    let leader = u64::from(metrics.state == ServerState::Leader);
    gauge(out, "kms_raft_is_leader", "1 on the leader, 0 elsewhere.", leader);
    let help = "1 when a leader is known to this KMA, 0 otherwise.";
    gauge(out, "kms_raft_leader_known", help, u64::from(metrics.current_leader.is_some()));
    let name = "kms_raft_entries_ahead_total";
    let help = "Log entries this KMA sent to a voter while its own disk sync ran (parallel \
                append), per voter sent to, by outcome.";
    out.family(name, Kind::Counter, help);
    for outcome in crate::parallel_append::Outcome::ALL {
        out.sample_u64(name, &[("outcome", outcome.name())], outcome.entries());
    }
    let Some(replication) = metrics.replication.as_ref() else { return };
    let names: BTreeMap<u64, String> = {
        let state = kma.state.read().await;
        state.meta().kmas.values().map(|entry| (entry.node_id, entry.name.clone())).collect()
    };
    let help = "On the leader: log entries a follower lacks (last log index - matched index).";
    out.family("kms_raft_replication_lag_entries", Kind::Gauge, help);
    for (node_id, matched) in replication.iter() {
        if *node_id == kma.node_id() {
            continue;
        }
        let matched = matched.as_ref().map_or(0, |log_id| log_id.index);
        let id = node_id.to_string();
        let name = names.get(node_id).map_or("", String::as_str);
        let labels = [("node_id", id.as_str()), ("kma", name)];
        let lag = last_log_index.saturating_sub(matched);
        out.sample_u64("kms_raft_replication_lag_entries", &labels, lag);
    }
}

async fn security_metrics(kma: &Kma, out: &mut Exposition) {
    let locked = u64::from(kma.is_locked().await);
    gauge(out, "kms_locked", "1 while this KMA is locked (serves no key material).", locked);
    let links = crate::network::peer_links();
    let name = "kms_communication_errors_recorded_total";
    let help = "Communication errors between KMAs this KMA recorded in the audit log, by peer \
                and by what the record says of the link (failing, or working again).";
    out.family(name, Kind::Counter, help);
    for (node_id, link) in &links {
        let id = node_id.to_string();
        out.sample_u64(name, &[("node_id", &id), ("link", "failing")], link.recorded_failing);
        out.sample_u64(name, &[("node_id", &id), ("link", "working")], link.recorded_working);
    }
    let help = "1 while this KMA's Raft RPCs to the peer fail in transport, 0 while they work.";
    out.family("kms_peer_rpc_failing", Kind::Gauge, help);
    for (node_id, link) in &links {
        let id = node_id.to_string();
        out.sample_u64("kms_peer_rpc_failing", &[("node_id", &id)], u64::from(link.failing));
    }
}
