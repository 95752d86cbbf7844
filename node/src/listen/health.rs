//! Probes and metrics on the management listener (SPEC U3, C8): `GET /healthz`, `GET /readyz`
//! and `GET /metrics`. They need no client certificate: probes and Prometheus have none, and
//! nothing here is secret (counts, indexes, names, never a key, passphrase or certificate).

use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use raft_storage::KmaRaft;
use statemachine::{KeyId, KeyState};

use crate::listen::metrics::RequestMetrics;
use crate::listen::scrape::{ListenerConnections, Reading, Scrape};
use crate::transport::network::PeerLinks;
use crate::transport::parallel_append::EntriesAhead;
use crate::transport::wall_clock_ms;
use crate::view::Local;
use raft_storage::WriteStages;

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

/// What the probes and `/metrics` read.
pub struct Health {
    pub local: Local,
    /// The registry `/metrics` encodes, with both listeners' request metrics in it.
    scrape: tokio::sync::Mutex<Scrape>,
    /// The latest key counts: the scan runs at most every [`KEY_COUNT_INTERVAL`], and
    /// concurrent scrapes wait for one scan rather than each starting their own.
    key_counts: tokio::sync::Mutex<Option<KeyCounts>>,
}

impl Health {
    pub fn new(
        local: Local,
        peer_links: PeerLinks,
        entries_ahead: EntriesAhead,
        write_stages: WriteStages,
        requests: RequestMetrics,
        connections: ListenerConnections,
    ) -> Health {
        let key_counts = tokio::sync::Mutex::new(None);
        let scrape = Scrape::new(&requests, peer_links, (entries_ahead, write_stages), connections);
        let scrape = tokio::sync::Mutex::new(scrape);
        Health { local, scrape, key_counts }
    }
}

pub fn routes() -> Router<Arc<Health>> {
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

async fn readyz(State(api): State<Arc<Health>>) -> Response {
    let problems = readiness_problems(&api).await;
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
pub async fn readiness_problems(api: &Health) -> Vec<String> {
    let metrics = api.local.raft.metrics().borrow().clone();
    let me = api.local.node_id();
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
    problems.extend(lock_problem(api).await);
    let applied = api.local.state.applied_index();
    match committed_index(&api.local.raft).await {
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
async fn lock_problem(api: &Health) -> Option<String> {
    let locked_by_state = {
        let state = api.local.state.read().await;
        state.meta().kmas.get(&api.local.config.name).is_none_or(|entry| entry.locked)
    };
    if locked_by_state {
        Some(
            "locked: the cluster's record of this KMA says locked (a new member starts locked; \
              help: the quorum unlocks it)"
                .into(),
        )
    } else if !api.local.vault.is_unlocked() {
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

async fn key_counts(api: &Health) -> KeyCounts {
    let mut cached = api.key_counts.lock().await;
    if let Some(counts) = cached.as_ref() {
        if counts.counted_at.elapsed() < KEY_COUNT_INTERVAL {
            return counts.clone();
        }
    }
    let counts = count_keys(api).await;
    *cached = Some(counts.clone());
    counts
}

/// Counts the keys by their state now, [`KEY_COUNT_CHUNK`] keys per hold of the read lock. The
/// counts are not of one instant when commands apply meanwhile; a gauge needs no more.
async fn count_keys(api: &Health) -> KeyCounts {
    let now_ms = wall_clock_ms();
    let mut by_state = [0; KeyState::ALL.len()];
    let mut after: Option<KeyId> = None;
    loop {
        let state = api.local.state.read().await;
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

async fn metrics(State(api): State<Arc<Health>>) -> Response {
    let counts = key_counts(&api).await;
    let (pool, names, backups) = {
        let state = api.local.state.read().await;
        let names = state.meta().kmas.values().map(|kma| (kma.node_id, kma.name.clone()));
        let backups = crate::listen::scrape::BackupReading::of(&state);
        (state.pool_size(), names.collect(), backups)
    };
    let raft = api.local.raft.metrics().borrow().clone();
    let committed = committed_index(&api.local.raft).await;
    let reading = Reading {
        keys_by_state: counts.by_state,
        keys_counted_at: counts.counted_at,
        pool,
        raft,
        committed,
        applied: api.local.state.applied_index(),
        locked: api.local.is_locked().await,
        names,
        node_id: api.local.node_id(),
        backups,
    };
    let text = api.scrape.lock().await.encode(&reading);
    let headers = [(header::CONTENT_TYPE, crate::listen::metrics::CONTENT_TYPE)];
    (StatusCode::OK, headers, text).into_response()
}
