//! Paged admin lists over a large state (issue 6 point 3, SPEC U2): builds a cluster with
//! ten million keys through `State::apply`, then walks 200 pages of each list from its start
//! and from its middle, and prints per page the median and p99 latency, the rows returned and
//! the records examined (counted after the timed call, from the cursors: the records between
//! one cursor and the next in the source the filter walks).
//!
//! The state: four key groups (two with a 30-day encryption period and a 120-day cryptoperiod,
//! two with 1 and 10 years), eight drives, one data unit per assigned key and 1% of data units
//! without a key, written over 400 days with the leader's pulses; at the end about 5% of the
//! keys wait Ready in the pool, 0.05% are compromised and 0.05% compromised and destroyed, and
//! time has made the short groups' older keys Process-only or Deactivated.
//!
//! Run: `cargo bench -p statemachine --bench paging` (`PAGING_KEYS=200000` for a quick run).

use std::ops::Bound;
use std::time::{Duration, Instant};

use statemachine::cluster::KeyPoolLimits;
use statemachine::command::{InitCluster, NewKey};
use statemachine::key::{KeyCheckValue, WrappedKey};
use statemachine::limits::{KEYS_PER_COMMAND_MAX, POOL_KEYS_PER_COMMAND_MAX};
use statemachine::list::{page_size, DataUnitFilter, KeyFilter};
use statemachine::quorum::{Quorum, QuorumMember, QuorumOperation};
use statemachine::{
    Actor, ClusterId, Command, DataUnitId, DataUnitState, Envelope, KeyGroupId, KeyId, KeyState,
    Reply, RoleSet, State,
};

const CLUSTER: ClusterId = ClusterId(0xbe9c);
const START_MS: u64 = 1_767_225_600_000;
const DAY_MS: u64 = 86_400_000;
const YEAR_MS: u64 = 365 * DAY_MS;
const SPAN_MS: u64 = 400 * DAY_MS;
const GROUPS: [&str; 4] = ["g0", "g1", "g2", "g3"];
const DRIVES: usize = 8;
/// One key in this many stays in the pool.
const POOL_SHARE: u64 = 20;
/// One assigned key in this many is compromised; every other one of those is then destroyed.
const COMPROMISE_EVERY: u64 = 1_000;
/// One data unit in this many gets no key.
const NO_KEY_EVERY: u64 = 100;
const PAGES: usize = 200;

struct Builder {
    state: State,
    index: u64,
    now_ms: u64,
    commands: u64,
}

impl Builder {
    fn apply(&mut self, actor: Actor, command: Command) -> Reply {
        self.index += 1;
        self.commands += 1;
        let envelope =
            Envelope { time_ms: self.now_ms, origin_node_id: 1, actor, request_id: None, command };
        match self.state.apply(self.index, &envelope).result {
            Ok(reply) => reply,
            Err(reject) => panic!("bench setup was rejected: {reject}"),
        }
    }

    /// Two KMAs (so pool keys are Ready at once), an all-roles user, the pool limits raised.
    fn cluster() -> Builder {
        let mut builder = Builder { state: State::new(), index: 0, now_ms: START_MS, commands: 0 };
        let quorum = Quorum {
            members: vec![QuorumMember { id: "q1".into(), wrapped_share: vec![1; 48] }],
            threshold: 1,
        };
        let init = InitCluster {
            cluster_id: CLUSTER,
            kma_name: "kma1".into(),
            site: "east".into(),
            security_officer: "so".into(),
            security_officer_verifier: vec![1; 32],
            quorum,
            autonomous_unlock: false,
        };
        builder.apply(Actor::System, Command::InitCluster(init));
        let roles = RoleSet::ALL;
        let user =
            Command::CreateUser { id: "admin".into(), roles, passphrase_verifier: vec![1; 32] };
        builder.apply(Actor::User("so".into()), user);
        let kma2 = Command::CreateKma {
            name: "kma2".into(),
            site: "east".into(),
            passphrase_verifier: vec![1; 8],
        };
        builder.apply(admin(), kma2);
        let join = QuorumOperation::JoinKma { kma: "kma2".into() };
        builder.apply(admin(), Command::StartQuorumOperation { operation: join, ttl_ms: None });
        builder.apply(admin(), Command::ApproveQuorumOperation { id: 0, member: "q1".into() });
        builder.apply(Actor::System, Command::KmaJoined { name: "kma2".into() });
        let limits = KeyPoolLimits { low_water: 1, high_water: 2_000_000 };
        builder.apply(admin(), Command::SetKeyPoolLimits(limits));
        builder.catalog();
        builder
    }

    /// Policies, groups and the drives writing into them (two per group).
    fn catalog(&mut self) {
        for (name, encryption_period_ms, cryptoperiod_ms) in
            [("short", 30 * DAY_MS, 120 * DAY_MS), ("long", YEAR_MS, 10 * YEAR_MS)]
        {
            let policy = Command::CreateKeyPolicy {
                name: name.into(),
                encryption_period_ms,
                cryptoperiod_ms,
                allow_export: false,
                allow_import: false,
            };
            self.apply(admin(), policy);
        }
        for (n, group) in GROUPS.iter().enumerate() {
            let policy = if n < 2 { "short" } else { "long" };
            let create = Command::CreateKeyGroup { name: (*group).into(), policy: policy.into() };
            self.apply(admin(), create);
        }
        for drive in 0..DRIVES {
            let id = format!("drive{drive}");
            let create = Command::CreateAgent {
                id: id.clone(),
                site: "east".into(),
                passphrase_verifier: vec![1; 32],
            };
            self.apply(admin(), create);
            let group = GROUPS[drive / 2].into();
            self.apply(admin(), Command::AssignKeyGroupToAgent { agent: id.clone(), group });
            let enroll = Command::RecordAgentEnrollment { id, certificate_fingerprint: [2; 32] };
            self.apply(Actor::System, enroll);
        }
    }

    /// Pulses like the leader: while a transition is due.
    fn pulse_if_due(&mut self) {
        while self.state.next_transition_ms().is_some_and(|at_ms| at_ms <= self.now_ms) {
            self.apply(Actor::System, Command::Pulse);
        }
    }
}

fn admin() -> Actor {
    Actor::User("admin".into())
}

fn drive(n: u64) -> Actor {
    Actor::Agent(format!("drive{}", n as usize % DRIVES))
}

fn pool_batch(first: u64, count: u64) -> Vec<NewKey> {
    (first..first + count)
        .map(|n| {
            // Spread IDs like random ones would be, so the B-trees fill as they will in use.
            let mixed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes();
            let mut random = [0u8; 22];
            random[..8].copy_from_slice(&mixed);
            random[14..].copy_from_slice(&n.to_be_bytes());
            NewKey {
                id: KeyId::native(CLUSTER, random),
                material: WrappedKey { nonce: [3; 12], ciphertext: [4; 32], tag: [5; 16] },
                check_value: KeyCheckValue([6; 16]),
            }
        })
        .collect()
}

/// What the build made that the measurements refer to.
struct Built {
    builder: Builder,
    /// A data unit with one key (for the keys-of-a-data-unit list).
    sample_unit: DataUnitId,
    assigned: u64,
    compromised: u64,
    destroyed: u64,
    units_without_key: u64,
}

/// Builds the state: chunks of pool keys, each followed by the tapes written with them, time
/// moving evenly over `SPAN_MS`, pulses as they fall due, compromises and destroys in batches.
fn build(keys: u64) -> Built {
    let mut builder = Builder::cluster();
    let chunk = POOL_KEYS_PER_COMMAND_MAX as u64;
    let chunks = keys.div_ceil(chunk);
    let (mut made, mut units, mut assigned, mut destroyed, mut keyless) = (0, 0u64, 0u64, 0u64, 0);
    let (mut to_compromise, mut to_destroy) = (Vec::new(), Vec::new());
    let mut sample_unit = None;
    for c in 0..chunks {
        builder.now_ms = START_MS + SPAN_MS * c / chunks;
        builder.pulse_if_due();
        let count = (keys - made).min(chunk);
        builder.apply(Actor::System, Command::GeneratePoolKeys { keys: pool_batch(made, count) });
        made += count;
        let to_assign = (made - made / POOL_SHARE).saturating_sub(assigned);
        for _ in 0..to_assign {
            units += 1;
            if units % NO_KEY_EVERY == 0 {
                builder.apply(drive(units), Command::CreateDataUnit { external_tag: tag(units) });
                units += 1;
                keyless += 1;
            }
            let Reply::DataUnitCreated { data_unit } =
                builder.apply(drive(units), Command::CreateDataUnit { external_tag: tag(units) })
            else {
                panic!("expected a data unit")
            };
            let write = Command::AssignWriteKey { data_unit, from_bot: true };
            let Reply::WriteKey { key_id, .. } = builder.apply(drive(units), write) else {
                panic!("expected a write key")
            };
            assigned += 1;
            sample_unit.get_or_insert(data_unit);
            if assigned % COMPROMISE_EVERY == 0 {
                to_compromise.push(key_id);
                if assigned % (2 * COMPROMISE_EVERY) == 0 {
                    to_destroy.push(key_id);
                }
            }
        }
        let last = c + 1 == chunks;
        if to_compromise.len() >= KEYS_PER_COMMAND_MAX - chunk as usize || last {
            destroyed += to_destroy.len() as u64;
            compromise_and_destroy(&mut builder, &mut to_compromise, &mut to_destroy);
        }
    }
    let sample_unit = sample_unit.expect("at least one key was assigned");
    Built {
        builder,
        sample_unit,
        assigned,
        compromised: assigned / COMPROMISE_EVERY,
        destroyed,
        units_without_key: keyless,
    }
}

fn tag(unit: u64) -> String {
    format!("V{:05}", unit % 100_000)
}

fn compromise_and_destroy(
    builder: &mut Builder,
    compromise: &mut Vec<KeyId>,
    destroy: &mut Vec<KeyId>,
) {
    if !compromise.is_empty() {
        let co = admin();
        builder.apply(co, Command::CompromiseKeys { keys: std::mem::take(compromise) });
    }
    if !destroy.is_empty() {
        builder.apply(admin(), Command::DestroyKeys { keys: std::mem::take(destroy) });
    }
}

// ---- Measuring ------------------------------------------------------------------------------

/// One walk of up to `PAGES` pages.
struct Walk {
    latencies: Vec<Duration>,
    rows: Vec<usize>,
    examined: Vec<usize>,
}

/// Follows the cursors from `start` for up to `PAGES` pages: `page` is the timed call, returning
/// rows and the next cursor; `examined` counts, untimed, the records between two cursors.
fn walk<C: Clone>(
    start: Option<C>,
    mut page: impl FnMut(Option<C>) -> (usize, Option<C>),
    mut examined: impl FnMut(Option<&C>, Option<&C>) -> usize,
) -> Walk {
    let mut walk = Walk { latencies: Vec::new(), rows: Vec::new(), examined: Vec::new() };
    let mut cursor = start;
    for _ in 0..PAGES {
        let started = Instant::now();
        let (rows, next) = page(cursor.clone());
        walk.latencies.push(started.elapsed());
        walk.rows.push(rows);
        walk.examined.push(examined(cursor.as_ref(), next.as_ref()));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    walk
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn print_row(list: &str, filter: &str, start: &str, walk: &Walk) {
    let mut latencies = walk.latencies.clone();
    latencies.sort();
    let pages = walk.rows.len();
    let rows: usize = walk.rows.iter().sum();
    let examined: usize = walk.examined.iter().sum();
    let examined_max = walk.examined.iter().max().copied().unwrap_or(0);
    println!(
        "| {list} | {filter} | {start} | {pages} | {:.1} | {:.0} / {examined_max} | {:.1} | {:.1} |",
        rows as f64 / pages as f64,
        examined as f64 / pages as f64,
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
    );
}

/// Records of `source` (in ID order) after `from` and up to `to` (to the end when `None`).
fn between<C: Ord>(source: impl Iterator<Item = C>, from: Option<&C>, to: Option<&C>) -> usize {
    source
        .skip_while(|id| from.is_some_and(|from| id <= from))
        .take_while(|id| to.is_none_or(|to| id <= to))
        .count()
}

/// The range after `from` and up to `to` (to the end when `None`), for a B-tree.
fn bounds<C: Copy>(from: Option<&C>, to: Option<&C>) -> (Bound<C>, Bound<C>) {
    let lower = from.map_or(Bound::Unbounded, |from| Bound::Excluded(*from));
    let upper = to.map_or(Bound::Unbounded, |to| Bound::Included(*to));
    (lower, upper)
}

/// Whether a key is in the Ready pool index (what the Ready list walks).
fn in_ready_pool(state: &State, id: &KeyId) -> bool {
    state.key(id).is_some_and(|key| {
        key.group.is_none()
            && key.protected
            && !key.recovery_only
            && key.compromised_at_ms.is_none()
            && key.destroyed_at_ms.is_none()
    })
}

fn middle<C: Copy>(ids: impl ExactSizeIterator<Item = C>) -> Option<C> {
    let len = ids.len();
    let mut ids = ids;
    ids.nth(len / 2)
}

fn measure_keys(state: &State, now_ms: u64, groups: &[KeyGroupId], unit: DataUnitId) {
    let limit = page_size(None);
    let key = |state: Option<KeyState>| KeyFilter { state, ..KeyFilter::default() };
    let cases = [
        ("none", key(None)),
        ("state = compromised (rare)", key(Some(KeyState::Compromised))),
        ("state = deactivated (common)", key(Some(KeyState::Deactivated))),
        ("state = protect-and-process (common)", key(Some(KeyState::ProtectAndProcess))),
        ("state = ready (pool index)", key(Some(KeyState::Ready))),
        ("group = g1", KeyFilter { group: Some(groups[1]), ..KeyFilter::default() }),
        ("data unit = one tape", KeyFilter { data_unit: Some(unit), ..KeyFilter::default() }),
    ];
    let mid = middle(state.keys().keys().copied());
    for (name, filter) in cases {
        // A data unit's few keys have no middle worth a row.
        let starts: &[_] = if filter.data_unit.is_some() {
            &[("first", None)]
        } else {
            &[("first", None), ("middle", mid)]
        };
        for &(start, cursor) in starts {
            let walk = walk(
                cursor,
                |cursor| {
                    let page = state.keys_page(&filter, cursor, limit, now_ms);
                    (page.rows.len(), page.resume_after)
                },
                |from, to| examined_keys(state, &filter, from, to),
            );
            print_row("keys", name, start, &walk);
        }
    }
}

/// The records `keys_page` walks for `filter` between two cursors: the data unit's keys, the
/// Ready pool, or every key.
fn examined_keys(
    state: &State,
    filter: &KeyFilter,
    from: Option<&KeyId>,
    to: Option<&KeyId>,
) -> usize {
    if let Some(unit) = filter.data_unit {
        let mut ids: Vec<KeyId> = state
            .data_unit(&unit)
            .map(|u| u.keys.iter().map(|a| a.key_id).collect())
            .unwrap_or_default();
        ids.sort();
        return between(ids.into_iter(), from, to);
    }
    let range = state.keys().range(bounds(from, to)).map(|(id, _)| id);
    if filter.state == Some(KeyState::Ready) {
        return range.filter(|id| in_ready_pool(state, id)).count();
    }
    range.count()
}

fn measure_units(state: &State, now_ms: u64, tag: &str) {
    let limit = page_size(None);
    let unit = |state: Option<DataUnitState>| DataUnitFilter { state, external_tag: None };
    let by_tag = DataUnitFilter { external_tag: Some(tag.into()), state: None };
    let tagged = state.data_units_by_tag(tag);
    let tag_name = format!("external tag ({} data units)", tagged.len());
    let cases = [
        ("none", unit(None)),
        (tag_name.as_str(), by_tag),
        ("state = shredded (rare)", unit(Some(DataUnitState::Shredded))),
        ("state = no-key (rare)", unit(Some(DataUnitState::NoKey))),
        ("state = needs-rekey (common)", unit(Some(DataUnitState::NeedsRekey))),
        ("state = normal (common)", unit(Some(DataUnitState::Normal))),
    ];
    for (name, filter) in cases {
        let source: Vec<DataUnitId> = match &filter.external_tag {
            Some(_) => tagged.clone(),
            None => Vec::new(),
        };
        let mid = match &filter.external_tag {
            Some(_) => middle(tagged.iter().copied()),
            None => middle(state.data_units().keys().copied()),
        };
        for (start, cursor) in [("first", None), ("middle", mid)] {
            let walk = walk(
                cursor,
                |cursor| {
                    let page = state.data_units_page(&filter, cursor, limit, now_ms);
                    (page.rows.len(), page.resume_after)
                },
                |from, to| match &filter.external_tag {
                    Some(_) => between(source.iter().copied(), from, to),
                    None => state.data_units().range(bounds(from, to)).count(),
                },
            );
            print_row("data units", name, start, &walk);
        }
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let keys: u64 =
        std::env::var("PAGING_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let started = Instant::now();
    let built = build(keys);
    let build_secs = started.elapsed().as_secs_f64();
    let state = &built.builder.state;
    let now_ms = built.builder.now_ms;
    let groups: Vec<KeyGroupId> =
        GROUPS.iter().filter_map(|name| state.group_by_name(name)).map(|g| g.id).collect();
    let (ready, generated) = state.pool_size();
    let grouped: u64 = groups.iter().map(|group| state.keys_in_group(*group)).sum();
    println!("statemachine paging bench: {keys} keys, {} data units", state.data_units().len());
    println!(
        "built through State::apply in {build_secs:.1} s ({} commands, {:.0} commands/s); \
         VmRSS {:.2} GiB, VmHWM {:.2} GiB",
        built.builder.commands,
        built.builder.commands as f64 / build_secs,
        status_kib("VmRSS:") as f64 / 1_048_576.0,
        status_kib("VmHWM:") as f64 / 1_048_576.0,
    );
    println!(
        "keys: {} assigned ({} per group), {ready} Ready and {generated} Generated in the pool \
         (pool index complete: {}), {} compromised of which {} destroyed; {} data units \
         without a key",
        built.assigned,
        built.assigned / GROUPS.len() as u64,
        state.keys().len() as u64 - grouped == (ready + generated) as u64,
        built.compromised,
        built.destroyed,
        built.units_without_key,
    );
    print_state_counts(state, now_ms);
    println!(
        "{PAGES} pages of {} rows followed from the first and from the middle record",
        page_size(None)
    );
    println!(
        "| list | filter | start | pages | rows/page | examined/page (mean / max) | median µs | \
         p99 µs |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    measure_keys(state, now_ms, &groups, built.sample_unit);
    measure_units(state, now_ms, &tag(42));
    let mut builder = built.builder;
    measure_ready_without_pool_index(&mut builder);
}

/// One compromised pool key leaves an unassigned key outside the pool indexes: from then on the
/// Ready list scans every key (bounded per page) instead of walking the index. Measured last,
/// as it changes the state.
fn measure_ready_without_pool_index(builder: &mut Builder) {
    let ready = KeyFilter { state: Some(KeyState::Ready), ..KeyFilter::default() };
    let page = builder.state.keys_page(&ready, None, 1, builder.now_ms);
    let Some(pool_key) = page.rows.first().map(|key| key.id) else { return };
    builder.apply(admin(), Command::CompromiseKeys { keys: vec![pool_key] });
    let (state, now_ms) = (&builder.state, builder.now_ms);
    let mid = middle(state.keys().keys().copied());
    for (start, cursor) in [("first", None), ("middle", mid)] {
        let walk = walk(
            cursor,
            |cursor| {
                let page = state.keys_page(&ready, cursor, page_size(None), now_ms);
                (page.rows.len(), page.resume_after)
            },
            |from, to| state.keys().range(bounds(from, to)).count(),
        );
        print_row("keys", "state = ready, one pool key compromised (scan)", start, &walk);
    }
}

/// Key states at the end, from the full scan the lists avoid (for the table's context).
fn print_state_counts(state: &State, now_ms: u64) {
    let mut counts = std::collections::BTreeMap::new();
    for id in state.keys().keys() {
        if let Some(key_state) = state.key_state(id, now_ms) {
            *counts.entry(key_state).or_insert(0u64) += 1;
        }
    }
    let listed: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!("key states now: {}", listed.join(", "));
}
