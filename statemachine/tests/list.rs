//! Paged lists for the admin API (SPEC U2, issue 6 point 3): following the cursors of any filter
//! yields exactly what a naive filter over every record yields, in ID order; a page never
//! examines more than `LIST_SCAN_MAX` records nor returns more than `LIST_PAGE_MAX` rows; the
//! destroy preview by key ID refuses what it cannot name (SPEC O9).

mod support;

use std::fmt::Debug;

use proptest::prelude::*;
use statemachine::command::{Legacy1xKey, NewKey};
use statemachine::key::KeyCheckValue;
use statemachine::limits::{LIST_PAGE_MAX, LIST_SCAN_MAX};
use statemachine::list::{page_size, AgentFilter, DataUnitFilter, KeyFilter};
use statemachine::{
    Actor, Command, DataUnitId, DataUnitState, KeyGroupId, KeyId, KeyState, Reject, State,
};
use support::*;

const UNIT_STATES: [DataUnitState; 4] = [
    DataUnitState::NoKey,
    DataUnitState::Normal,
    DataUnitState::NeedsRekey,
    DataUnitState::Shredded,
];
const AGENTS: [&str; 3] = ["drive1", "drive2", "drive3"];
const GROUPS: [&str; 2] = ["std", "other"];
const SITES: [&str; 2] = ["east", "west"];
const TAGS: [&str; 3] = ["T0", "T1", "T2"];
/// A group ID no group has.
const NO_GROUP: KeyGroupId = KeyGroupId(u32::MAX);
/// More pages than any walk in these tests needs: a walk that takes more never ends.
const PAGES_MAX: usize = 100_000;

// ---- Walking the cursors --------------------------------------------------------------------

/// Follows the cursors of a list from its start, checking each page: at most `limit` rows, in
/// increasing ID order, all after the cursor; a cursor that moves forward and is not before the
/// last row. Returns every row, and the cursors in order.
fn walk<C: Ord + Clone + Debug>(
    limit: usize,
    mut page: impl FnMut(Option<C>) -> (Vec<C>, Option<C>),
) -> (Vec<C>, Vec<C>) {
    let (mut rows, mut cursors) = (Vec::new(), Vec::new());
    let mut cursor: Option<C> = None;
    for _ in 0..PAGES_MAX {
        let (page_rows, next) = page(cursor.clone());
        assert!(page_rows.len() <= limit, "{} rows, limit {limit}", page_rows.len());
        assert!(page_rows.windows(2).all(|pair| pair[0] < pair[1]), "rows in ID order");
        if let (Some(cursor), Some(first)) = (&cursor, page_rows.first()) {
            assert!(first > cursor, "rows come after the cursor");
        }
        if let (Some(next), Some(last)) = (&next, page_rows.last()) {
            assert!(next >= last, "the cursor is not before the last row");
        }
        if let (Some(next), Some(cursor)) = (&next, &cursor) {
            assert!(next > cursor, "the cursor moves forward");
        }
        rows.extend(page_rows);
        match next {
            Some(next) => {
                cursors.push(next.clone());
                cursor = Some(next);
            }
            None => return (rows, cursors),
        }
    }
    panic!("the list did not end within {PAGES_MAX} pages");
}

fn walk_keys(state: &State, filter: &KeyFilter, limit: usize, now_ms: u64) -> Vec<KeyId> {
    walk(limit, |cursor| {
        let page = state.keys_page(filter, cursor, limit, now_ms);
        (page.rows.iter().map(|key| key.id).collect(), page.resume_after)
    })
    .0
}

fn walk_units(
    state: &State,
    filter: &DataUnitFilter,
    limit: usize,
    now_ms: u64,
) -> Vec<DataUnitId> {
    walk(limit, |cursor| {
        let page = state.data_units_page(filter, cursor, limit, now_ms);
        (page.rows.iter().map(|unit| unit.id).collect(), page.resume_after)
    })
    .0
}

fn walk_agents(state: &State, filter: &AgentFilter, limit: usize) -> Vec<String> {
    walk(limit, |cursor: Option<String>| {
        let page = state.agents_page(filter, cursor.as_deref(), limit);
        let rows = page.rows.iter().map(|agent| agent.id.clone()).collect();
        (rows, page.resume_after.map(String::from))
    })
    .0
}

// ---- The naive filters: every record, one by one --------------------------------------------

fn naive_keys(state: &State, filter: &KeyFilter, now_ms: u64) -> Vec<KeyId> {
    let in_unit = |unit: DataUnitId, key: KeyId| {
        state.data_unit(&unit).is_some_and(|unit| unit.association(&key).is_some())
    };
    state
        .keys()
        .values()
        .filter(|key| filter.group.is_none_or(|group| key.group == Some(group)))
        .filter(|key| filter.data_unit.is_none_or(|unit| in_unit(unit, key.id)))
        .filter(|key| filter.state.is_none_or(|s| state.key_state(&key.id, now_ms) == Some(s)))
        .map(|key| key.id)
        .collect()
}

fn naive_units(state: &State, filter: &DataUnitFilter, now_ms: u64) -> Vec<DataUnitId> {
    state
        .data_units()
        .values()
        .filter(|unit| filter.external_tag.as_ref().is_none_or(|tag| unit.external_tag == *tag))
        .filter(|unit| {
            filter.state.is_none_or(|s| state.data_unit_state(&unit.id, now_ms) == Some(s))
        })
        .map(|unit| unit.id)
        .collect()
}

fn naive_agents(state: &State, filter: &AgentFilter) -> Vec<String> {
    state
        .meta()
        .agents
        .values()
        .filter(|agent| filter.site.as_ref().is_none_or(|site| agent.site == *site))
        .filter(|agent| filter.enabled.is_none_or(|enabled| agent.enabled == enabled))
        .filter(|agent| filter.group.is_none_or(|group| agent.key_groups.contains(&group)))
        .map(|agent| agent.id.clone())
        .collect()
}

// ---- Every filter against its naive twin ----------------------------------------------------

fn group_choices(state: &State) -> Vec<Option<KeyGroupId>> {
    let named = GROUPS.iter().filter_map(|name| state.group_by_name(name)).map(|group| group.id);
    [None, Some(NO_GROUP)].into_iter().chain(named.map(Some)).collect()
}

/// Every key filter: each state or none, each group, none or an unknown one, each data unit,
/// none or an unknown one, in every combination.
fn check_every_key_filter(state: &State, limit: usize, now_ms: u64) {
    let unknown_unit = DataUnitId { cluster_id: CLUSTER, serial: u64::MAX };
    let units: Vec<Option<DataUnitId>> = [None, Some(unknown_unit)]
        .into_iter()
        .chain(state.data_units().keys().copied().map(Some))
        .collect();
    let states: Vec<Option<KeyState>> =
        [None].into_iter().chain(KeyState::ALL.into_iter().map(Some)).collect();
    for group in group_choices(state) {
        for data_unit in &units {
            for key_state in &states {
                let filter = KeyFilter { state: *key_state, group, data_unit: *data_unit };
                let paged = walk_keys(state, &filter, limit, now_ms);
                assert_eq!(paged, naive_keys(state, &filter, now_ms), "{filter:?}, limit {limit}");
            }
        }
    }
}

fn check_every_unit_filter(state: &State, limit: usize, now_ms: u64) {
    let tags = [None, Some("absent")].into_iter().chain(TAGS.into_iter().map(Some));
    for tag in tags {
        let states = [None].into_iter().chain(UNIT_STATES.into_iter().map(Some));
        for unit_state in states {
            let filter = DataUnitFilter { external_tag: tag.map(String::from), state: unit_state };
            let paged = walk_units(state, &filter, limit, now_ms);
            assert_eq!(paged, naive_units(state, &filter, now_ms), "{filter:?}, limit {limit}");
        }
    }
}

fn check_every_agent_filter(state: &State, limit: usize) {
    let sites = [None, Some("nowhere")].into_iter().chain(SITES.into_iter().map(Some));
    for site in sites {
        for enabled in [None, Some(true), Some(false)] {
            for group in group_choices(state) {
                let filter = AgentFilter { site: site.map(String::from), enabled, group };
                let paged = walk_agents(state, &filter, limit);
                assert_eq!(paged, naive_agents(state, &filter), "{filter:?}, limit {limit}");
            }
        }
    }
}

// ---- Random states, built through `apply` ---------------------------------------------------

/// One step of a random history; indices pick among what exists at that moment.
#[derive(Clone, Debug)]
enum Step {
    Advance { ms: u64 },
    FillPool { count: usize },
    Backup,
    MarkBackupDestroyed { backup: u64 },
    CreateDataUnit { agent: usize, tag: usize },
    Write { agent: usize, unit: usize, from_bot: bool },
    Disassociate { agent: usize, unit: usize },
    ReadById { agent: usize, key: usize, unit: usize },
    Compromise { key: usize },
    Destroy { key: usize },
    ChangeGroup { unit: usize, group: usize },
    Import1x { seed: u8 },
    Quarantine,
    AddAgent { site: usize, group: Option<usize> },
    SetEnabled { agent: usize, enabled: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..12 * DAY_MS).prop_map(|ms| Step::Advance { ms }),
        2 => (1..12usize).prop_map(|count| Step::FillPool { count }),
        2 => Just(Step::Backup),
        1 => (0..4u64).prop_map(|backup| Step::MarkBackupDestroyed { backup }),
        3 => (0..3usize, 0..3usize).prop_map(|(agent, tag)| Step::CreateDataUnit { agent, tag }),
        6 => (0..3usize, 0..12usize, any::<bool>())
            .prop_map(|(agent, unit, from_bot)| Step::Write { agent, unit, from_bot }),
        1 => (0..3usize, 0..12usize).prop_map(|(agent, unit)| Step::Disassociate { agent, unit }),
        3 => (0..3usize, 0..60usize, 0..12usize)
            .prop_map(|(agent, key, unit)| Step::ReadById { agent, key, unit }),
        2 => (0..60usize).prop_map(|key| Step::Compromise { key }),
        2 => (0..60usize).prop_map(|key| Step::Destroy { key }),
        1 => (0..12usize, 0..2usize).prop_map(|(unit, group)| Step::ChangeGroup { unit, group }),
        2 => (0..4u8).prop_map(|seed| Step::Import1x { seed }),
        1 => Just(Step::Quarantine),
        1 => (0..2usize, proptest::option::of(0..2usize))
            .prop_map(|(site, group)| Step::AddAgent { site, group }),
        1 => (0..3usize, any::<bool>()).prop_map(|(agent, enabled)| Step::SetEnabled { agent, enabled }),
    ]
}

fn pick<T: Copy>(items: &[T], at: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[at % items.len()])
}

/// Two groups, a second site, three enrolled drives with different access (drive2 at `west`),
/// and a few pool keys. One KMA keeps pool keys Generated until a backup; two make them Ready.
fn base(two_kmas: bool) -> TestCluster {
    let mut cluster = if two_kmas { TestCluster::multi() } else { TestCluster::single() };
    cluster.policy_and_group("std", 5 * DAY_MS, 25 * DAY_MS);
    cluster.policy_and_group("other", 2 * DAY_MS, 40 * DAY_MS);
    cluster.ok(so(), Command::CreateSite { name: "west".into() });
    cluster.enrolled_agent("drive1", &["std"]);
    cluster.enrolled_agent("drive2", &["other", "std"]);
    cluster.enrolled_agent("drive3", &["other"]);
    cluster.ok(op(), Command::SetAgentSite { id: "drive2".into(), site: "west".into() });
    cluster.fill_pool(8);
    cluster
}

/// Turns a step into a command against the current state (or `None` when it only moves time
/// or picks from nothing). Rejected commands are part of the history too.
fn command_for(cluster: &mut TestCluster, step: &Step) -> Option<(Actor, Command)> {
    let units: Vec<DataUnitId> = cluster.state.data_units().keys().copied().collect();
    let keys: Vec<KeyId> = cluster.state.keys().keys().copied().collect();
    let command = match step.clone() {
        Step::Advance { ms } => {
            cluster.advance(ms);
            return None;
        }
        Step::FillPool { count } => {
            let keys: Vec<NewKey> = (0..count).map(|_| cluster.new_key()).collect();
            (Actor::System, Command::GeneratePoolKeys { keys })
        }
        Step::Backup => (bo(), backup_command(cluster.index)),
        Step::MarkBackupDestroyed { backup } => (bo(), Command::MarkBackupDestroyed { id: backup }),
        Step::CreateDataUnit { agent: a, tag } => {
            (agent(AGENTS[a]), Command::CreateDataUnit { external_tag: TAGS[tag].into() })
        }
        Step::Write { agent: a, unit, from_bot } => {
            (agent(AGENTS[a]), Command::AssignWriteKey { data_unit: pick(&units, unit)?, from_bot })
        }
        Step::Disassociate { agent: a, unit } => {
            (agent(AGENTS[a]), Command::DisassociateKeysOnBot { data_unit: pick(&units, unit)? })
        }
        Step::ReadById { agent: a, key, unit } => (
            agent(AGENTS[a]),
            Command::AssociateKeyForRead {
                key_id: pick(&keys, key)?,
                data_unit: pick(&units, unit),
                external_tag: TAGS[unit % TAGS.len()].into(),
            },
        ),
        Step::Compromise { key } => {
            (co(), Command::CompromiseKeys { keys: vec![pick(&keys, key)?] })
        }
        Step::Destroy { key } => (op(), Command::DestroyKeys { keys: vec![pick(&keys, key)?] }),
        Step::ChangeGroup { unit, group } => change_group(cluster, pick(&units, unit)?, group)?,
        Step::Import1x { seed } => (co(), import_command(seed)),
        Step::Quarantine => (Actor::System, Command::QuarantineKeyPool),
        Step::AddAgent { site, group } => return add_agent(cluster, site, group),
        Step::SetEnabled { agent, enabled } => {
            (op(), Command::SetAgentEnabled { id: AGENTS[agent].into(), enabled })
        }
    };
    Some(command)
}

fn backup_command(covers_index: u64) -> Command {
    Command::RecordBackupBeforeFormat3 {
        kind: statemachine::backup::BackupKind::Database,
        kma: "kma1".into(),
        file_name: "b.kms".into(),
        covers_index,
    }
}

fn import_command(seed: u8) -> Command {
    let key = Legacy1xKey {
        id: KeyId([seed; 30]),
        material: fake_wrap([seed; 32]),
        check_value: KeyCheckValue([seed; 16]),
        description: String::new(),
    };
    Command::Import1xKeys { group: "std".into(), keys: vec![key] }
}

fn change_group(cluster: &TestCluster, unit: DataUnitId, group: usize) -> Option<(Actor, Command)> {
    let data_units = vec![unit];
    let preview = cluster.state.group_change_preview(&data_units, GROUPS[group], cluster.now_ms);
    let preview_digest = preview.ok()?.digest;
    let group = GROUPS[group].into();
    Some((co(), Command::ChangeDataUnitKeyGroup { data_units, group, preview_digest }))
}

/// Creates an agent (not enrolled) at a site, optionally with a group; the last command is
/// returned for the caller to apply.
fn add_agent(
    cluster: &mut TestCluster,
    site: usize,
    group: Option<usize>,
) -> Option<(Actor, Command)> {
    let id = format!("a{:03}", cluster.state.meta().agents.len());
    let create = Command::CreateAgent {
        id: id.clone(),
        site: SITES[site].into(),
        passphrase_verifier: vec![4; 32],
    };
    let Some(group) = group else { return Some((op(), create)) };
    cluster.ok(op(), create);
    let group = GROUPS[group].into();
    Some((co(), Command::AssignKeyGroupToAgent { agent: id, group }))
}

fn run(two_kmas: bool, steps: &[Step]) -> TestCluster {
    let mut cluster = base(two_kmas);
    for step in steps {
        if let Some((actor, command)) = command_for(&mut cluster, step) {
            // Rejections are fine: the lists must match whatever state the history left.
            let _ = cluster.apply(actor, command);
        }
    }
    cluster
}

proptest! {
    // 64 cases by default; PROPTEST_CASES=2000 for a long hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// Setup: one or two KMAs, two groups, drives at two sites, then up to 120 random steps
    /// (pool fills, backups, tapes written and read, keys compromised, destroyed, moved,
    /// imported, quarantined, agents added and disabled, time passing). Action: follow the
    /// cursors of every key, data unit and agent filter with a random page size, now and later.
    /// Expect: exactly the records a naive filter over all records yields, in ID order, each
    /// once, every page within its bounds. (SPEC U2)
    #[test]
    fn u2_following_cursors_yields_exactly_the_naive_filter(
        two_kmas in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..120),
        limit in prop_oneof![1..6usize, Just(LIST_PAGE_MAX)],
        later_ms in 0..60 * DAY_MS,
    ) {
        let cluster = run(two_kmas, &steps);
        for now_ms in [cluster.now_ms, cluster.now_ms + later_ms] {
            check_every_key_filter(&cluster.state, limit, now_ms);
            check_every_unit_filter(&cluster.state, limit, now_ms);
        }
        check_every_agent_filter(&cluster.state, limit);
    }
}

// ---- Fixed scenarios ------------------------------------------------------------------------

/// Setup: two KMAs, a pool of 10 Ready keys quarantined by a restore (recovery-only), 5 fresh
/// pool keys, one of the quarantined keys compromised. Action: list Ready keys. Expect: all 14
/// Ready keys, the recovery-only ones too, although only the fresh ones can become write keys;
/// the Compromised filter finds the compromised pool key. (SPEC U2, A5)
#[test]
fn t90_issue_6_ready_list_includes_recovery_only_pool_keys() {
    let mut cluster = TestCluster::multi();
    let quarantined = cluster.fill_pool(10);
    cluster.ok(Actor::System, Command::QuarantineKeyPool);
    let fresh = cluster.fill_pool(5);
    cluster.ok(co(), Command::CompromiseKeys { keys: vec![quarantined[3]] });
    let now_ms = cluster.now_ms;
    let ready = KeyFilter { state: Some(KeyState::Ready), ..KeyFilter::default() };
    let mut expected: Vec<KeyId> = quarantined.iter().chain(&fresh).copied().collect();
    expected.retain(|id| *id != quarantined[3]);
    expected.sort();
    for limit in [1, 3, 100] {
        assert_eq!(walk_keys(&cluster.state, &ready, limit, now_ms), expected);
    }
    assert_eq!(cluster.state.pool_size(), (5, 0), "only the fresh keys are drawable");
    let compromised = KeyFilter { state: Some(KeyState::Compromised), ..KeyFilter::default() };
    assert_eq!(walk_keys(&cluster.state, &compromised, 2, now_ms), vec![quarantined[3]]);
}

/// Applies without the per-command invariant check (it rebuilds the whole index, so checking
/// after each of tens of thousands of commands would be quadratic); the caller checks once.
fn apply_fast(cluster: &mut TestCluster, actor: Actor, command: Command) {
    cluster.index += 1;
    let envelope = cluster.envelope(actor, command);
    let applied = cluster.state.apply(cluster.index, &envelope);
    assert!(applied.result.is_ok(), "setup command rejected: {:?}", applied.result);
}

/// Two KMAs and `count` Ready pool keys, in commands of 1,024.
fn big_pool(count: usize) -> (TestCluster, Vec<KeyId>) {
    let mut cluster = TestCluster::multi();
    let limits = statemachine::cluster::KeyPoolLimits { low_water: 1, high_water: 100_000 };
    cluster.ok(so(), Command::SetKeyPoolLimits(limits));
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let batch: Vec<NewKey> =
            (0..(count - ids.len()).min(1_024)).map(|_| cluster.new_key()).collect();
        ids.extend(batch.iter().map(|key| key.id));
        apply_fast(&mut cluster, Actor::System, Command::GeneratePoolKeys { keys: batch });
    }
    ids.sort();
    cluster.state.check_invariants();
    (cluster, ids)
}

/// Walks a filter that matches nothing and checks the pages: all empty, each cursor exactly
/// LIST_SCAN_MAX records after the previous one, the last page without a cursor.
fn assert_empty_pages_every_scan_max<C: Ord + Clone + Debug>(
    all: &[C],
    page: impl FnMut(Option<C>) -> (Vec<C>, Option<C>),
) {
    let (rows, cursors) = walk(LIST_PAGE_MAX, page);
    assert!(rows.is_empty(), "the filter matches nothing");
    let expected: Vec<C> =
        all.iter().skip(LIST_SCAN_MAX - 1).step_by(LIST_SCAN_MAX).cloned().collect();
    let expected = &expected[..expected.len() - usize::from(all.len() % LIST_SCAN_MAX == 0)];
    assert_eq!(cursors, expected, "one cursor per LIST_SCAN_MAX records examined");
}

/// Setup: two KMAs, 45,000 Ready pool keys. Action: list keys Deactivated, in group `std`, of
/// Generated state, of an unknown data unit, and then Compromised after two are compromised.
/// Expect: the scans answer empty pages whose cursors advance LIST_SCAN_MAX records each and
/// end; the pool index and the data unit answer one empty page; the Compromised walk finds
/// both keys, one of them on a later page. (SPEC U2)
#[test]
fn u2_key_filter_matching_nothing_pages_empty_with_cursors_and_ends() {
    let (mut cluster, ids) = big_pool(45_000);
    cluster.policy_and_group("std", DAY_MS, DAY_MS);
    let (state, now_ms) = (&cluster.state, cluster.now_ms);
    let std = state.group_by_name("std").map(|group| group.id);
    for filter in [
        KeyFilter { state: Some(KeyState::Deactivated), ..KeyFilter::default() },
        KeyFilter { group: std, ..KeyFilter::default() },
    ] {
        assert_empty_pages_every_scan_max(&ids, |cursor| {
            let page = state.keys_page(&filter, cursor, 10, now_ms);
            (page.rows.iter().map(|key| key.id).collect(), page.resume_after)
        });
    }
    let unknown_unit = DataUnitId { cluster_id: CLUSTER, serial: 7 };
    for filter in [
        KeyFilter { state: Some(KeyState::Generated), ..KeyFilter::default() },
        KeyFilter { data_unit: Some(unknown_unit), ..KeyFilter::default() },
    ] {
        let page = state.keys_page(&filter, None, 10, now_ms);
        assert!(page.rows.is_empty() && page.resume_after.is_none(), "{filter:?}");
    }
    let ready = KeyFilter { state: Some(KeyState::Ready), ..KeyFilter::default() };
    assert_eq!(walk_keys(state, &ready, LIST_PAGE_MAX, now_ms), ids, "the whole pool, paged");
    let (early, late) = (ids[5], ids[44_000]);
    cluster.ok(co(), Command::CompromiseKeys { keys: vec![late, early] });
    let compromised = KeyFilter { state: Some(KeyState::Compromised), ..KeyFilter::default() };
    let (state, now_ms) = (&cluster.state, cluster.now_ms);
    let first = state.keys_page(&compromised, None, 10, now_ms);
    assert_eq!(first.rows.iter().map(|key| key.id).collect::<Vec<_>>(), vec![early]);
    assert_eq!(first.resume_after, Some(ids[LIST_SCAN_MAX - 1]), "the budget ends the page");
    assert_eq!(walk_keys(state, &compromised, 10, now_ms), vec![early, late]);
}

/// Setup: 20,500 data units tagged `T` (no key) and 20,500 agents at `east`. Action: list
/// data units Shredded, tagged `T` and Normal, tagged `absent`; agents at `west` and disabled
/// ones. Expect: empty pages whose cursors advance LIST_SCAN_MAX records each, then the end;
/// the unknown tag answers one empty page from the tag index. (SPEC U2)
#[test]
fn u2_unit_and_agent_filters_matching_nothing_page_empty_with_cursors_and_end() {
    let mut cluster = TestCluster::multi();
    cluster.policy_and_group("std", DAY_MS, DAY_MS);
    cluster.enrolled_agent("drive1", &["std"]);
    for _ in 0..20_500 {
        apply_fast(
            &mut cluster,
            agent("drive1"),
            Command::CreateDataUnit { external_tag: "T".into() },
        );
    }
    for n in 0..20_499 {
        let create = Command::CreateAgent {
            id: format!("z{n:05}"),
            site: "east".into(),
            passphrase_verifier: vec![4; 32],
        };
        apply_fast(&mut cluster, op(), create);
    }
    cluster.state.check_invariants();
    let (state, now_ms) = (&cluster.state, cluster.now_ms);
    let units: Vec<DataUnitId> = state.data_units().keys().copied().collect();
    for filter in [
        DataUnitFilter { state: Some(DataUnitState::Shredded), ..DataUnitFilter::default() },
        DataUnitFilter { external_tag: Some("T".into()), state: Some(DataUnitState::Normal) },
    ] {
        assert_empty_pages_every_scan_max(&units, |cursor| {
            let page = state.data_units_page(&filter, cursor, 10, now_ms);
            (page.rows.iter().map(|unit| unit.id).collect(), page.resume_after)
        });
    }
    let absent = DataUnitFilter { external_tag: Some("absent".into()), state: None };
    let page = state.data_units_page(&absent, None, 10, now_ms);
    assert!(page.rows.is_empty() && page.resume_after.is_none());
    let agents: Vec<String> = state.meta().agents.keys().cloned().collect();
    assert_eq!(agents.len(), 20_500);
    for filter in [
        AgentFilter { site: Some("west".into()), ..AgentFilter::default() },
        AgentFilter { enabled: Some(false), ..AgentFilter::default() },
    ] {
        assert_empty_pages_every_scan_max(&agents, |cursor: Option<String>| {
            let page = state.agents_page(&filter, cursor.as_deref(), 10);
            let rows = page.rows.iter().map(|agent| agent.id.clone()).collect();
            (rows, page.resume_after.map(String::from))
        });
    }
}

/// Setup: none. Action: ask for page sizes none, 0, 1, 250, LIST_PAGE_MAX + 1 and far more.
/// Expect: 100 by default, otherwise clamped into 1..=LIST_PAGE_MAX. (SPEC U2)
#[test]
fn u2_page_size_clamps_into_one_to_page_max() {
    assert_eq!(page_size(None), 100);
    assert_eq!(page_size(Some(0)), 1);
    assert_eq!(page_size(Some(1)), 1);
    assert_eq!(page_size(Some(250)), 250);
    assert_eq!(page_size(Some(LIST_PAGE_MAX)), LIST_PAGE_MAX);
    assert_eq!(page_size(Some(LIST_PAGE_MAX + 1)), LIST_PAGE_MAX);
    assert_eq!(page_size(Some(usize::MAX)), LIST_PAGE_MAX);
}

/// Setup: two KMAs, 2,500 Ready pool keys. Action: ask the list functions themselves for pages
/// of 0 and of 10 × LIST_PAGE_MAX rows. Expect: the bound holds whatever the caller passes:
/// one row for 0, LIST_PAGE_MAX rows for more, and the walk still yields every key. (SPEC U2)
#[test]
fn u2_list_functions_hold_the_page_bound_for_any_limit() {
    let (cluster, ids) = big_pool(2_500);
    let (state, now_ms) = (&cluster.state, cluster.now_ms);
    for filter in
        [KeyFilter::default(), KeyFilter { state: Some(KeyState::Ready), ..KeyFilter::default() }]
    {
        let page = state.keys_page(&filter, None, 0, now_ms);
        assert_eq!(page.rows.len(), 1, "{filter:?}");
        assert_eq!(page.resume_after, Some(ids[0]));
        let page = state.keys_page(&filter, None, 10 * LIST_PAGE_MAX, now_ms);
        assert_eq!(page.rows.len(), LIST_PAGE_MAX, "{filter:?}");
        assert_eq!(page.resume_after, Some(ids[LIST_PAGE_MAX - 1]));
        assert_eq!(walk_keys(state, &filter, LIST_PAGE_MAX, now_ms), ids);
    }
}

/// Setup: a 1.x key read through tapes A and B, a pool key written to tape C. Action: preview
/// destroying nothing, an unknown key among known ones, the 1.x key, both keys. Expect:
/// NothingSelected; UnknownKey naming the unknown one; the data units that lose access, all of
/// them named as shared (no data unit was selected), and a digest that depends on the
/// selection. (SPEC O9)
#[test]
fn o9_key_destroy_preview_refuses_unknown_and_empty_and_names_shared_data_units() {
    let mut cluster = standard(10 * DAY_MS, 30 * DAY_MS);
    let legacy = KeyId([0x42; 30]);
    cluster.ok(co(), import_command(0x42));
    let tape_a = cluster.create_data_unit("drive1", "A");
    let tape_b = cluster.create_data_unit("drive1", "B");
    for tape in [tape_a, tape_b] {
        let read = Command::AssociateKeyForRead {
            key_id: legacy,
            data_unit: Some(tape),
            external_tag: String::new(),
        };
        cluster.ok(agent("drive1"), read);
    }
    let tape_c = cluster.create_data_unit("drive1", "C");
    let (written, _) = cluster.write_key("drive1", tape_c, true);
    let state = &cluster.state;
    assert_eq!(state.key_destroy_preview(&[]), Err(Reject::NothingSelected));
    let unknown = KeyId([0x99; 30]);
    assert_eq!(
        state.key_destroy_preview(&[legacy, unknown, written]),
        Err(Reject::UnknownKey { key_id: unknown })
    );
    let one = state.key_destroy_preview(&[legacy]).expect("preview");
    assert_eq!(one.keys, vec![legacy]);
    assert_eq!(one.data_units, vec![tape_a, tape_b]);
    assert_eq!(one.shared_with_unselected, vec![tape_a, tape_b]);
    let both = state.key_destroy_preview(&[written, legacy, written]).expect("preview");
    let mut keys = vec![legacy, written];
    keys.sort();
    assert_eq!(both.keys, keys, "each key once, in ID order");
    assert_eq!(both.data_units, vec![tape_a, tape_b, tape_c]);
    assert_eq!(both.shared_with_unselected, vec![tape_a, tape_b, tape_c]);
    assert_ne!(one.digest, both.digest);
}
