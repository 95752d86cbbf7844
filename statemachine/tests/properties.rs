//! Property tests: random command sequences with random time steps, checking after every step
//! that the state diagrams are never left and the safety rules hold (issue 2, point 6).

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use statemachine::audit::AuditWhat;
use statemachine::codec::{decode_snapshot, encode_snapshot};
use statemachine::command::{DestroySelection, Legacy1xKey};
use statemachine::key::{KeyCheckValue, KeyState};
use statemachine::{Actor, Command, DataUnitId, DataUnitState, Envelope, KeyId, Reply, State};
use support::*;

/// One step of a random history; indices pick among what exists at that moment.
#[derive(Clone, Debug)]
enum Step {
    Advance { ms: u64 },
    CreateDataUnit { agent: usize },
    Write { agent: usize, unit: usize, from_bot: bool },
    Disassociate { agent: usize, unit: usize },
    ReadById { agent: usize, key: usize, unit: usize },
    Compromise { key: usize },
    Destroy { key: usize },
    DestroyUnits { unit: usize, selection: u8 },
    ChangeGroup { unit: usize, group: usize },
    FillPool { count: usize },
    Backup,
    MarkBackupDestroyed { backup: usize },
    Import1x { seed: u8, clash: bool },
    Pulse,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..20 * DAY_MS).prop_map(|ms| Step::Advance { ms }),
        3 => (0..2usize).prop_map(|agent| Step::CreateDataUnit { agent }),
        6 => (0..2usize, 0..8usize, any::<bool>())
            .prop_map(|(agent, unit, from_bot)| Step::Write { agent, unit, from_bot }),
        1 => (0..2usize, 0..8usize)
            .prop_map(|(agent, unit)| Step::Disassociate { agent, unit }),
        2 => (0..2usize, 0..40usize, 0..8usize)
            .prop_map(|(agent, key, unit)| Step::ReadById { agent, key, unit }),
        1 => (0..40usize).prop_map(|key| Step::Compromise { key }),
        2 => (0..40usize).prop_map(|key| Step::Destroy { key }),
        1 => (0..8usize, 0..3u8)
            .prop_map(|(unit, selection)| Step::DestroyUnits { unit, selection }),
        1 => (0..8usize, 0..2usize)
            .prop_map(|(unit, group)| Step::ChangeGroup { unit, group }),
        1 => (1..6usize).prop_map(|count| Step::FillPool { count }),
        1 => Just(Step::Backup),
        1 => (0..4usize).prop_map(|backup| Step::MarkBackupDestroyed { backup }),
        1 => (any::<u8>(), any::<bool>())
            .prop_map(|(seed, clash)| Step::Import1x { seed, clash }),
        2 => Just(Step::Pulse),
    ]
}

const AGENTS: [&str; 2] = ["drive1", "drive2"];
const GROUPS: [&str; 2] = ["std", "other"];

fn pick<T: Copy>(items: &[T], at: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[at % items.len()])
}

/// Turns a step into a command against the current state (or `None` when it only moves time).
#[allow(clippy::too_many_lines)] // One arm per step: a table reads best whole.
fn command_for(cluster: &mut TestCluster, step: &Step) -> Option<(Actor, Command)> {
    let units: Vec<DataUnitId> = cluster.state.data_units().keys().copied().collect();
    let keys: Vec<KeyId> = cluster.state.keys().keys().copied().collect();
    let now = cluster.now_ms;
    let command = match step.clone() {
        Step::Advance { ms } => {
            cluster.advance(ms);
            return None;
        }
        Step::CreateDataUnit { agent: a } => (
            agent(AGENTS[a]),
            Command::CreateDataUnit { external_tag: format!("V{}", units.len()) },
        ),
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
                external_tag: String::new(),
            },
        ),
        Step::Compromise { key } => {
            (co(), Command::CompromiseKeys { keys: vec![pick(&keys, key)?] })
        }
        Step::Destroy { key } => (op(), Command::DestroyKeys { keys: vec![pick(&keys, key)?] }),
        Step::DestroyUnits { unit, selection } => {
            let selection = [
                DestroySelection::DeactivatedOnly,
                DestroySelection::CompromisedOnly,
                DestroySelection::DeactivatedAndCompromised,
            ][selection as usize];
            let data_units = vec![pick(&units, unit)?];
            let preview_digest =
                cluster.state.destroy_preview(&data_units, selection, now).ok()?.digest;
            (op(), Command::DestroyDataUnitKeys { data_units, selection, preview_digest })
        }
        Step::ChangeGroup { unit, group } => {
            let data_units = vec![pick(&units, unit)?];
            let preview_digest =
                cluster.state.group_change_preview(&data_units, GROUPS[group], now).ok()?.digest;
            (
                co(),
                Command::ChangeDataUnitKeyGroup {
                    data_units,
                    group: GROUPS[group].into(),
                    preview_digest,
                },
            )
        }
        Step::FillPool { count } => (
            Actor::System,
            Command::GeneratePoolKeys { keys: (0..count).map(|_| cluster.new_key()).collect() },
        ),
        Step::Backup => {
            let covers_index = cluster.index;
            (
                bo(),
                Command::RecordBackupBeforeFormat3 {
                    kind: statemachine::backup::BackupKind::Database,
                    kma: "kma1".into(),
                    file_name: "b".into(),
                    covers_index,
                },
            )
        }
        Step::MarkBackupDestroyed { backup } => {
            (bo(), Command::MarkBackupDestroyed { id: backup as u64 })
        }
        Step::Import1x { seed, clash } => {
            let check = if clash {
                KeyCheckValue([seed.wrapping_add(1); 16])
            } else {
                KeyCheckValue([seed; 16])
            };
            let key = Legacy1xKey {
                id: KeyId([seed; 30]),
                material: fake_wrap([seed; 32]),
                check_value: check,
                description: String::new(),
            };
            (co(), Command::Import1xKeys { group: "std".into(), keys: vec![key] })
        }
        Step::Pulse => (Actor::System, Command::Pulse),
    };
    Some(command)
}

fn key_edge_allowed(from: KeyState, to: KeyState) -> bool {
    use KeyState::*;
    let destroyed_pair = |a: KeyState, b: KeyState| {
        matches!(
            (a, b),
            (IncompletelyDestroyed, CompletelyDestroyed)
                | (IncompletelyDestroyedCompromised, CompletelyDestroyedCompromised)
                | (IncompletelyDestroyed, IncompletelyDestroyedCompromised)
                | (CompletelyDestroyed, CompletelyDestroyedCompromised)
        )
    };
    match (from, to) {
        (Generated, Ready) | (Ready | Generated, ProtectAndProcess | ProcessOnly) => true,
        (ProtectAndProcess, ProcessOnly | Deactivated) | (ProcessOnly, Deactivated) => true,
        (a, Compromised) if !a.is_destroyed() => true,
        (Deactivated | Compromised, IncompletelyDestroyed | CompletelyDestroyed) => true,
        (Compromised, IncompletelyDestroyedCompromised | CompletelyDestroyedCompromised) => true,
        (a, b) => destroyed_pair(a, b),
    }
}

fn key_states(state: &State, now_ms: u64) -> BTreeMap<KeyId, KeyState> {
    state.keys().keys().map(|id| (*id, state.key_state(id, now_ms).expect("exists"))).collect()
}

fn unit_states(state: &State, now_ms: u64) -> BTreeMap<DataUnitId, DataUnitState> {
    state
        .data_units()
        .keys()
        .map(|id| (*id, state.data_unit_state(id, now_ms).expect("exists")))
        .collect()
}

fn check_step(
    before: &State,
    after: &State,
    before_ms: u64,
    now_ms: u64,
    result: &Result<Reply, statemachine::Reject>,
) {
    let (keys_before, keys_after) = (key_states(before, before_ms), key_states(after, now_ms));
    for (id, to) in &keys_after {
        if let Some(from) = keys_before.get(id) {
            assert!(from == to || key_edge_allowed(*from, *to), "key {id}: {from:?} -> {to:?}");
        }
    }
    let (units_before, units_after) = (unit_states(before, before_ms), unit_states(after, now_ms));
    for (id, to) in &units_after {
        if let Some(from) = units_before.get(id) {
            assert!(
                from == to || *to != DataUnitState::NoKey,
                "data unit {id}: {from:?} -> {to:?}"
            );
        }
    }
    if result.is_err() {
        assert_eq!(before.keys(), after.keys(), "a rejected command changes no key");
        assert_eq!(
            before.data_units(),
            after.data_units(),
            "a rejected command changes no data unit"
        );
        let unchanged = without_what_a_refusal_changes(after, before);
        assert!(unchanged == *before, "a rejected command changes nothing else either");
    }
    if let Ok(Reply::WriteKey { key_id, reused: false, .. }) = result {
        assert_eq!(
            keys_before.get(key_id),
            Some(&KeyState::Ready),
            "a pool key is handed out only when Ready"
        );
    }
    for unit in after.data_units().keys() {
        for agent in AGENTS {
            let keys = after.keys_for_data_unit(agent, unit, now_ms).expect("mount");
            assert!(
                keys.iter().all(|key| !key.state.is_destroyed()),
                "a destroyed key is never sent"
            );
        }
    }
}

fn run(steps: &[Step]) -> (State, Vec<(u64, Envelope)>) {
    let mut cluster = standard(5 * DAY_MS, 25 * DAY_MS);
    cluster.policy_and_group("other", 2 * DAY_MS, 40 * DAY_MS);
    cluster.enrolled_agent("drive2", &["other", "std"]);
    let mut log = Vec::new();
    for step in steps {
        let before_ms = cluster.now_ms;
        let Some((actor, command)) = command_for(&mut cluster, step) else { continue };
        let before = cluster.state.clone();
        let envelope = cluster.envelope(actor, command);
        let applied = cluster.apply_envelope(&envelope);
        log.push((cluster.index, envelope));
        check_step(&before, &cluster.state, before_ms, cluster.now_ms, &applied.result);
        for event in &applied.events {
            if let AuditWhat::KeyStateChanged { from, to, .. } = event.what {
                assert!(key_edge_allowed(from, to), "audited edge {from:?} -> {to:?}");
            }
        }
    }
    (cluster.state, log)
}

proptest! {
    // 96 cases by default; PROPTEST_CASES=5000 for a long hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    /// Setup: two KMAs, two groups, two drives with different access. Action: up to 80 random
    /// steps. Expect after each: allowed key and data unit transitions only; rejections change
    /// nothing; pool keys handed out only when Ready; destroyed keys never sent; the index and
    /// every internal invariant intact. Replaying the log on a fresh state gives the same bytes,
    /// and the snapshot round-trips. (SPEC O4, O6, O7, A2, A3, A5)
    #[test]
    fn o4_o6_random_histories_keep_every_rule(steps in proptest::collection::vec(step(), 1..80)) {
        let (state, log) = run(&steps);
        let mut fresh = standard(5 * DAY_MS, 25 * DAY_MS);
        fresh.policy_and_group("other", 2 * DAY_MS, 40 * DAY_MS);
        fresh.enrolled_agent("drive2", &["other", "std"]);
        let mut replica = fresh.state.clone();
        for (index, envelope) in &log {
            replica.apply(*index, envelope);
        }
        let bytes = encode_snapshot(&state);
        prop_assert_eq!(&encode_snapshot(&replica), &bytes, "same log, same bytes");
        let restored = decode_snapshot(&bytes).expect("snapshot decodes");
        prop_assert_eq!(&restored, &state);
        prop_assert_eq!(encode_snapshot(&restored), bytes);
    }
}

/// One step of a random history of logins and of what revokes them.
#[derive(Clone, Debug)]
enum SessionStep {
    Advance { ms: u64 },
    Login { user: usize, serial: u8, lifetime_ms: u64 },
    Disable { user: usize },
    Enable { user: usize },
    NewPassphrase { user: usize },
}

fn session_step() -> impl Strategy<Value = SessionStep> {
    let hour_ms = 3_600 * SECOND_MS;
    prop_oneof![
        2 => (0..12 * hour_ms).prop_map(|ms| SessionStep::Advance { ms }),
        8 => (0..3usize, any::<u8>(), 0..24 * hour_ms).prop_map(|(user, serial, lifetime_ms)| {
            SessionStep::Login { user, serial, lifetime_ms }
        }),
        1 => (0..3usize).prop_map(|user| SessionStep::Disable { user }),
        1 => (0..3usize).prop_map(|user| SessionStep::Enable { user }),
        1 => (0..3usize).prop_map(|user| SessionStep::NewPassphrase { user }),
    ]
}

/// Users whose sessions the history changes; `so` stays enabled, so any of them can be disabled.
const SESSION_USERS: [&str; 3] = ["co", "op", "bo"];

/// A fingerprint names its user in its first byte, so that one user's never passes for another's.
fn fingerprint(user: usize, serial: u8) -> [u8; 32] {
    let mut sha256 = [serial; 32];
    sha256[0] = user as u8;
    sha256
}

/// Applies one step; returns the fingerprints it revokes, or the session it records when
/// applied.
fn apply_session_step(
    cluster: &mut TestCluster,
    step: &SessionStep,
) -> (Vec<usize>, Option<[u8; 32]>) {
    let (actor, command, revokes) = match *step {
        SessionStep::Advance { ms } => {
            cluster.advance(ms);
            return (vec![], None);
        }
        SessionStep::Login { user, serial, lifetime_ms } => {
            let command = Command::RecordUserSession {
                principal: SESSION_USERS[user].into(),
                source: "10.0.0.7".into(),
                certificate_sha256: fingerprint(user, serial),
                expires_at_ms: cluster.now_ms + lifetime_ms,
            };
            let applied = cluster.apply(Actor::System, command).is_ok();
            return (vec![], applied.then(|| fingerprint(user, serial)));
        }
        SessionStep::Disable { user } => {
            let id = SESSION_USERS[user].into();
            (so(), Command::SetUserEnabled { id, enabled: false }, vec![user])
        }
        SessionStep::Enable { user } => {
            let id = SESSION_USERS[user].into();
            (so(), Command::SetUserEnabled { id, enabled: true }, vec![])
        }
        SessionStep::NewPassphrase { user } => {
            let id = SESSION_USERS[user].into();
            (so(), Command::SetUserPassphrase { id, passphrase_verifier: vec![9; 32] }, vec![user])
        }
    };
    cluster.ok(actor, command);
    (revokes, None)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    /// Setup: the single-KMA cluster at log format 3 with users co, op and bo. Action: up to 120
    /// random logins (any certificate, any lifetime, even none), time steps, disables, enables
    /// and new passphrases. Expect after each: every invariant (at most 8 sessions a user, none
    /// while disabled, one of each certificate); a login applied is certified at once; a revoked
    /// certificate is never certified again; no certificate is certified for a user it was not
    /// recorded for; the snapshot round-trips. (SPEC S2; issue 16 point 2; STYLE 9)
    #[test]
    fn s2_random_logins_keep_sessions_bounded_and_revocations_final(
        steps in proptest::collection::vec(session_step(), 1..120)
    ) {
        let mut cluster = TestCluster::single();
        cluster.open_format(statemachine::format::LOG_FORMAT_3);
        let mut revoked: Vec<[u8; 32]> = Vec::new();
        let mut recorded: Vec<[u8; 32]> = Vec::new();
        for step in &steps {
            let (revokes, session) = apply_session_step(&mut cluster, step);
            let state = &cluster.state;
            for user in revokes {
                let name = SESSION_USERS[user];
                prop_assert!(state.meta().users[name].sessions.is_empty(), "{} revoked", name);
                revoked.extend(recorded.iter().filter(|sha| usize::from(sha[0]) == user));
            }
            if let Some(sha256) = session {
                let user = SESSION_USERS[usize::from(sha256[0])];
                prop_assert!(state.user_session_certified(user, &sha256), "certified at once");
                revoked.retain(|old| *old != sha256);
                recorded.push(sha256);
            }
            for (index, user) in SESSION_USERS.iter().enumerate() {
                for sha256 in &revoked {
                    prop_assert!(!state.user_session_certified(user, sha256), "revoked stays so");
                }
                for sha256 in recorded.iter().filter(|sha| usize::from(sha[0]) != index) {
                    prop_assert!(!state.user_session_certified(user, sha256), "another's");
                }
            }
        }
        let bytes = encode_snapshot(&cluster.state);
        prop_assert!(decode_snapshot(&bytes).expect("snapshot decodes") == cluster.state);
    }
}
