//! The evidence a chaos run gathers and the checker that judges it (issue 20 point 2).
//!
//! Evidence comes from three sides that never trust each other:
//! - the drives: every write key and key set they were answered, with times
//!   ([`agent_gateway::drive_sim::KeyHistory`]), and the fleet's final read-back of every tape;
//! - the KMAs: one `kms::handout` log line per key value that left a KMA, with the index of the
//!   state it was read from ([`parse_handouts`]);
//! - the committed log, read back at the end through the audit log of a KMA whose state digest
//!   equals the others' ([`Committed`]): which key was assigned to which data unit at which
//!   index, which group each key was in and which groups each agent could read, from when on.
//!
//! [`check`] turns them into [`Verdict`]s, one per property; a run passes when all pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use agent_gateway::drive_sim::{KeyAnswer, KeyEvent};
use statemachine::audit::{AgentChange, AuditEvent, AuditWhat};
use statemachine::{DataUnitId, KeyGroupId, KeyId};

use crate::linearizable;

/// Examples named in a failed verdict: enough to start from, not a flood.
const EXAMPLES_MAX: usize = 5;

/// One `kms::handout` line of a KMA's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handout {
    pub kma: String,
    pub route: String,
    pub agent: String,
    pub key: KeyId,
    pub data_unit: Option<DataUnitId>,
    /// The log index of the state the value was read from (a write key: the assigning entry).
    pub index: u64,
    /// `client:seq` of the agent's request, for write keys.
    pub request: Option<String>,
}

/// The hand-out lines in `log` (a KMA's whole output), tagged with `kma`. Lines that are not
/// hand-outs are skipped; a hand-out line that does not parse is returned as an error, since a
/// checker that skipped it would prove less than it claims.
pub fn parse_handouts(kma: &str, log: &str) -> Result<Vec<Handout>, String> {
    let mut handouts = Vec::new();
    for line in log.lines().filter(|line| line.contains("kms::handout")) {
        let field = |name: &str| {
            let prefix = format!("{name}=");
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(prefix.as_str()))
                .map(|value| value.trim_matches('"'))
        };
        let parsed = (|| {
            let key = KeyId::from_hex(field("key")?)?;
            let data_unit = match field("data_unit")? {
                "-" => None,
                hex => Some(DataUnitId::from_hex(hex)?),
            };
            let request = field("request").filter(|r| *r != "-").map(str::to_string);
            Some(Handout {
                kma: kma.to_string(),
                route: field("route")?.to_string(),
                agent: field("agent")?.to_string(),
                key,
                data_unit,
                index: field("index")?.parse().ok()?,
                request,
            })
        })();
        match parsed {
            Some(handout) => handouts.push(handout),
            None => return Err(format!("{kma}: a hand-out line that does not parse: {line}")),
        }
    }
    Ok(handouts)
}

/// What the cluster committed, from its audit log: every applied entry leaves its events there,
/// in log order, and the KMAs' equal digests say that one KMA's log is everyone's.
#[derive(Clone, Debug, Default)]
pub struct Committed {
    /// (key, data unit) to the first index at which the key served the data unit.
    associated: BTreeMap<(KeyId, DataUnitId), u64>,
    /// A key's group from an index on, in index order.
    key_groups: BTreeMap<KeyId, Vec<(u64, KeyGroupId)>>,
    /// An agent's group names assigned (`true`) or unassigned from an index on.
    agent_groups: BTreeMap<String, Vec<(u64, String, bool)>>,
    /// Group ID to name, as the caller resolved them (see [`Committed::group_ids`]).
    group_names: BTreeMap<KeyGroupId, String>,
    pub last_index: u64,
    pub events: usize,
}

impl Committed {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a AuditEvent>) -> Committed {
        let mut committed = Committed::default();
        for event in events {
            committed.events += 1;
            committed.last_index = committed.last_index.max(event.index);
            match &event.what {
                AuditWhat::KeyAssigned { key_id, data_unit, group } => {
                    committed.associated.entry((*key_id, *data_unit)).or_insert(event.index);
                    committed.key_groups.entry(*key_id).or_default().push((event.index, *group));
                }
                AuditWhat::KeyAssociated { key_id, data_unit } => {
                    committed.associated.entry((*key_id, *data_unit)).or_insert(event.index);
                }
                AuditWhat::KeyGroupChanged { key_id, to, .. } => {
                    committed.key_groups.entry(*key_id).or_default().push((event.index, *to));
                }
                AuditWhat::AgentChanged { agent, change } => {
                    let entry = match change {
                        AgentChange::KeyGroupAssigned { group } => Some((group, true)),
                        AgentChange::KeyGroupUnassigned { group } => Some((group, false)),
                        _ => None,
                    };
                    if let Some((group, assigned)) = entry {
                        let history = committed.agent_groups.entry(agent.clone()).or_default();
                        history.push((event.index, group.clone(), assigned));
                    }
                }
                _ => {}
            }
        }
        committed
    }

    /// The group IDs keys were ever in, with one key of each: the caller asks the cluster for
    /// that key's group name (keys that never changed group) and gives the names back through
    /// [`Committed::name_groups`].
    pub fn group_ids(&self) -> BTreeMap<KeyGroupId, KeyId> {
        let mut sample = BTreeMap::new();
        for (key, history) in &self.key_groups {
            if let [(_, group)] = history.as_slice() {
                sample.entry(*group).or_insert(*key);
            }
        }
        sample
    }

    pub fn name_groups(&mut self, names: BTreeMap<KeyGroupId, String>) {
        self.group_names = names;
    }

    /// The index at which `key` first served `data_unit`, if it ever did.
    pub fn associated_at(&self, key: &KeyId, data_unit: &DataUnitId) -> Option<u64> {
        self.associated.get(&(*key, *data_unit)).copied()
    }

    fn first_association(&self, key: &KeyId) -> Option<u64> {
        self.associated.iter().filter(|((k, _), _)| k == key).map(|(_, index)| *index).min()
    }

    /// The name of `key`'s group once the entries up to `index` applied.
    fn key_group_at(&self, key: &KeyId, index: u64) -> Option<&str> {
        let history = self.key_groups.get(key)?;
        let group = history.iter().take_while(|(from, _)| *from <= index).last()?.1;
        self.group_names.get(&group).map(String::as_str)
    }

    fn agent_groups_at(&self, agent: &str, index: u64) -> BTreeSet<&str> {
        let mut groups = BTreeSet::new();
        for (from, group, assigned) in self.agent_groups.get(agent).into_iter().flatten() {
            if *from > index {
                break;
            }
            if *assigned {
                groups.insert(group.as_str());
            } else {
                groups.remove(group.as_str());
            }
        }
        groups
    }
}

/// Everything a run gathered, for [`check`].
#[derive(Clone, Debug)]
pub struct Evidence {
    /// (agent, event) for every key answer a drive saw.
    pub drive_events: Vec<(String, KeyEvent)>,
    pub handouts: Vec<Handout>,
    pub committed: Committed,
    /// The fleets' read-back of every tape: records that did not decrypt to what was written.
    pub verification_failures: u64,
    pub records_verified: u64,
    /// `Err(what differed)` when the KMAs' state digests were not equal at one index.
    pub digests: Result<u64, String>,
    /// The admin operations on registers, and the registers' values before the run.
    pub admin_history: Vec<linearizable::Operation>,
    pub admin_initial: BTreeMap<String, Option<String>>,
}

impl Default for Evidence {
    /// Nothing gathered yet: the digests not compared, which fails until a run compares them.
    fn default() -> Evidence {
        Evidence {
            drive_events: Vec::new(),
            handouts: Vec::new(),
            committed: Committed::default(),
            verification_failures: 0,
            records_verified: 0,
            digests: Err("the state digests were not compared".into()),
            admin_history: Vec::new(),
            admin_initial: BTreeMap::new(),
        }
    }
}

/// One property of a run, judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Stable name, used in the results file.
    pub property: &'static str,
    pub passed: bool,
    /// What was checked (counts) and, on failure, the first examples.
    pub detail: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.passed { "ok  " } else { "FAIL" };
        write!(f, "{mark} {}: {}", self.property, self.detail)
    }
}

fn verdict(property: &'static str, checked: String, failures: Vec<String>) -> Verdict {
    let passed = failures.is_empty();
    let detail = if passed {
        checked
    } else {
        let shown: Vec<&String> = failures.iter().take(EXAMPLES_MAX).collect();
        format!("{checked}; {} violations, first: {}", failures.len(), join(&shown))
    };
    Verdict { property, passed, detail }
}

fn join(items: &[&String]) -> String {
    items.iter().map(|item| item.as_str()).collect::<Vec<_>>().join("; ")
}

/// Judges a run: one verdict per property of issue 20 point 2, in a fixed order.
pub fn check(evidence: &Evidence) -> Vec<Verdict> {
    vec![
        handouts_logged(evidence),
        acknowledged_assignments_kept(evidence),
        no_early_handout(evidence),
        one_key_per_write(evidence),
        keys_within_groups(evidence),
        tapes_readable(evidence),
        digests_equal(evidence),
        admin_linearizable(evidence),
    ]
}

/// The KMAs' hand-out lines are whole evidence: every write key a drive was answered has the
/// line of the KMA that answered it (same agent, request and key). A KMA whose log was lost
/// would leave its hand-outs unchecked; this says so instead.
fn handouts_logged(evidence: &Evidence) -> Verdict {
    let logged: BTreeSet<(&str, &str, KeyId)> = evidence
        .handouts
        .iter()
        .filter_map(|h| Some((h.agent.as_str(), h.request.as_deref()?, h.key)))
        .collect();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (agent, event) in &evidence.drive_events {
        let KeyAnswer::WriteKey { key_id, request_id, .. } = &event.answer else { continue };
        checked += 1;
        let request = format!("{:016x}:{}", request_id.client, request_id.seq);
        if !logged.contains(&(agent.as_str(), request.as_str(), *key_id)) {
            failures.push(format!(
                "{agent}'s write key {key_id} (request {request}) was logged by no KMA"
            ));
        }
    }
    verdict("handouts_logged", format!("{checked} write keys found in the KMAs' logs"), failures)
}

/// Every write key a drive was answered is, in the committed log, associated with that data
/// unit: an acknowledged assignment was never lost, whatever failed over in between.
fn acknowledged_assignments_kept(evidence: &Evidence) -> Verdict {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (agent, event) in &evidence.drive_events {
        let KeyAnswer::WriteKey { key_id, index, .. } = &event.answer else { continue };
        checked += 1;
        if evidence.committed.associated_at(key_id, &event.data_unit).is_none() {
            failures.push(format!(
                "{agent} was given key {key_id} for data unit {} (index {index}), which the \
                 committed log never assigned to it",
                event.data_unit
            ));
        }
    }
    verdict("acknowledged_assignments_kept", format!("{checked} acknowledged write keys"), failures)
}

/// No key left a KMA before its assignment committed: every hand-out names an index at or after
/// the committed association of that key with that data unit (or, for a key asked by ID without
/// a data unit, after its first association). A KMA that served a key from an entry a new leader
/// later overwrote would name an index the committed log does not back.
fn no_early_handout(evidence: &Evidence) -> Verdict {
    let committed = &evidence.committed;
    let mut failures = Vec::new();
    for handout in &evidence.handouts {
        let associated = match &handout.data_unit {
            Some(data_unit) => committed.associated_at(&handout.key, data_unit),
            None => committed.first_association(&handout.key),
        };
        let unit = handout.data_unit.map_or_else(|| "-".to_string(), |unit| unit.to_string());
        match associated {
            Some(at) if at <= handout.index => {}
            Some(at) => failures.push(format!(
                "{} handed key {} ({}) to {} at index {}, before its assignment committed at {at}",
                handout.kma, handout.key, unit, handout.agent, handout.index
            )),
            None => failures.push(format!(
                "{} handed key {} ({}) to {} at index {}; the committed log never assigned it",
                handout.kma, handout.key, unit, handout.agent, handout.index
            )),
        }
    }
    let checked = format!("{} hand-outs logged by the KMAs", evidence.handouts.len());
    verdict("no_early_handout", checked, failures)
}

/// One write, one key: every answer to one write-key request (the same request ID, retried on
/// any KMA) names the same key, on the KMAs' side and on the drives' (SPEC A6).
fn one_key_per_write(evidence: &Evidence) -> Verdict {
    let mut keys: BTreeMap<(String, String), BTreeSet<KeyId>> = BTreeMap::new();
    let mut units: BTreeMap<(String, String), BTreeSet<DataUnitId>> = BTreeMap::new();
    for handout in evidence.handouts.iter().filter(|handout| handout.route == "write-key") {
        let Some(request) = &handout.request else { continue };
        let write = (handout.agent.clone(), request.clone());
        keys.entry(write.clone()).or_default().insert(handout.key);
        if let Some(unit) = handout.data_unit {
            units.entry(write).or_default().insert(unit);
        }
    }
    for (agent, event) in &evidence.drive_events {
        let KeyAnswer::WriteKey { key_id, request_id, .. } = &event.answer else { continue };
        let request = format!("{:016x}:{}", request_id.client, request_id.seq);
        keys.entry((agent.clone(), request)).or_default().insert(*key_id);
    }
    let mut failures = Vec::new();
    for ((agent, request), given) in &keys {
        if given.len() > 1 {
            let given: Vec<String> = given.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{agent}'s write request {request} got {} keys: {}",
                given.len(),
                given.join(", ")
            ));
        }
    }
    for ((agent, request), named) in &units {
        if named.len() > 1 {
            failures.push(format!(
                "{agent}'s write request {request} named {} data units",
                named.len()
            ));
        }
    }
    verdict("one_key_per_write", format!("{} write requests", keys.len()), failures)
}

/// No key went to an agent outside its groups: at the index a KMA read it at, the key's group
/// (committed) was one the agent could read (committed).
fn keys_within_groups(evidence: &Evidence) -> Verdict {
    let committed = &evidence.committed;
    let mut failures = Vec::new();
    for handout in &evidence.handouts {
        let group = committed.key_group_at(&handout.key, handout.index);
        let allowed = committed.agent_groups_at(&handout.agent, handout.index);
        match group {
            Some(group) if allowed.contains(group) => {}
            Some(group) => failures.push(format!(
                "{} handed key {} of group {group} to {} at index {}, whose groups were {:?}",
                handout.kma, handout.key, handout.agent, handout.index, allowed
            )),
            None => failures.push(format!(
                "{} handed key {} to {} at index {}, when the key was in no known group",
                handout.kma, handout.key, handout.agent, handout.index
            )),
        }
    }
    let checked = format!("{} hand-outs against the agents' groups", evidence.handouts.len());
    verdict("keys_within_groups", checked, failures)
}

fn tapes_readable(evidence: &Evidence) -> Verdict {
    let checked = format!("{} records read back", evidence.records_verified);
    let failures = if evidence.verification_failures > 0 {
        vec![format!(
            "{} records did not decrypt to what was written",
            evidence.verification_failures
        )]
    } else if evidence.records_verified == 0 {
        vec!["no record was read back: the check proved nothing".to_string()]
    } else {
        Vec::new()
    };
    verdict("tapes_readable", checked, failures)
}

fn digests_equal(evidence: &Evidence) -> Verdict {
    match &evidence.digests {
        Ok(index) => verdict("digests_equal", format!("equal at index {index}"), Vec::new()),
        Err(detail) => verdict("digests_equal", "state digests".into(), vec![detail.clone()]),
    }
}

fn admin_linearizable(evidence: &Evidence) -> Verdict {
    let found = linearizable::check(&evidence.admin_history, &evidence.admin_initial);
    let checked =
        format!("{} admin operations on {} registers", found.operations, found.registers_checked);
    let mut failures: Vec<String> =
        found.violations.iter().map(|v| format!("{}: {}", v.key, v.detail)).collect();
    failures.extend(found.undecided.iter().map(|key| format!("{key}: undecided (search budget)")));
    verdict("admin_linearizable", checked, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use statemachine::{ClusterId, RequestId};

    const CLUSTER: ClusterId = ClusterId(7);
    const GROUP: KeyGroupId = KeyGroupId(1);

    fn key(n: u8) -> KeyId {
        KeyId::native(CLUSTER, [n; 22])
    }

    fn unit(serial: u64) -> DataUnitId {
        DataUnitId { cluster_id: CLUSTER, serial }
    }

    fn event(index: u64, what: AuditWhat) -> AuditEvent {
        AuditEvent { index, at_ms: index * 10, what }
    }

    fn request(seq: u64) -> RequestId {
        RequestId { client: 0xc0ffee, seq }
    }

    fn request_text(seq: u64) -> String {
        format!("{:016x}:{seq}", 0xc0ffee)
    }

    fn write_key(data_unit: DataUnitId, key_id: KeyId, index: u64, seq: u64) -> (String, KeyEvent) {
        let answer =
            KeyAnswer::WriteKey { key_id, index, request_id: request(seq), from_bot: true };
        let event = KeyEvent {
            drive: 0,
            invoked_ns: seq * 100,
            returned_ns: seq * 100 + 50,
            data_unit,
            answer,
        };
        ("drive-east".to_string(), event)
    }

    fn handout(key: KeyId, data_unit: DataUnitId, index: u64, seq: Option<u64>) -> Handout {
        Handout {
            kma: "kma1".into(),
            route: if seq.is_some() { "write-key" } else { "keys" }.into(),
            agent: "drive-east".into(),
            key,
            data_unit: Some(data_unit),
            index,
            request: seq.map(request_text),
        }
    }

    /// A run in which everything went right: agent drive-east reads group `east` from index 3;
    /// key 1 was assigned to data unit 1 at index 10 and key 2 to data unit 2 at index 12; the
    /// drive was answered both, the KMAs logged both at or after those indices.
    fn sound() -> Evidence {
        let assign = AgentChange::KeyGroupAssigned { group: "east".into() };
        let events = vec![
            event(3, AuditWhat::AgentChanged { agent: "drive-east".into(), change: assign }),
            event(10, AuditWhat::KeyAssigned { key_id: key(1), data_unit: unit(1), group: GROUP }),
            event(12, AuditWhat::KeyAssigned { key_id: key(2), data_unit: unit(2), group: GROUP }),
        ];
        let mut committed = Committed::from_events(&events);
        committed.name_groups(BTreeMap::from([(GROUP, "east".to_string())]));
        Evidence {
            drive_events: vec![
                write_key(unit(1), key(1), 10, 1),
                write_key(unit(2), key(2), 12, 2),
            ],
            handouts: vec![
                handout(key(1), unit(1), 10, Some(1)),
                handout(key(2), unit(2), 12, Some(2)),
                handout(key(1), unit(1), 15, None),
            ],
            committed,
            verification_failures: 0,
            records_verified: 40,
            digests: Ok(15),
            admin_history: Vec::new(),
            admin_initial: BTreeMap::new(),
        }
    }

    fn failed(evidence: &Evidence) -> Vec<&'static str> {
        check(evidence).into_iter().filter(|v| !v.passed).map(|v| v.property).collect()
    }

    /// Setup: the sound run. Expect: every property passes (so each planted failure below is
    /// caught by its own property, not by a checker that fails everything).
    #[test]
    fn a_sound_history_passes_every_check() {
        let verdicts = check(&sound());
        assert!(verdicts.iter().all(|v| v.passed), "{verdicts:#?}");
        assert_eq!(verdicts.len(), 8);
    }

    /// Planted: the drive was answered key 3 for data unit 3 at index 14, and the committed log
    /// has no such assignment (the leader acknowledged, then lost it). Expect: caught.
    #[test]
    fn a_lost_acknowledgement_fails() {
        let mut evidence = sound();
        evidence.drive_events.push(write_key(unit(3), key(3), 14, 3));
        evidence.handouts.push(handout(key(3), unit(3), 14, Some(3)));
        let failed = failed(&evidence);
        assert!(failed.contains(&"acknowledged_assignments_kept"), "{failed:?}");
    }

    /// Planted: the log of the KMA that answered write request 2 is lost. Expect: the
    /// checker says its evidence is incomplete.
    #[test]
    fn a_lost_kma_log_fails() {
        let mut evidence = sound();
        evidence.handouts.retain(|handout| handout.request.as_deref() != Some(&request_text(2)));
        assert_eq!(failed(&evidence), vec!["handouts_logged"]);
    }

    /// Planted: a retry of write request 1 on another KMA was handed key 2, not key 1 (the
    /// same write given two keys). Expect: caught.
    #[test]
    fn a_double_assignment_fails() {
        let mut evidence = sound();
        let mut retry = handout(key(2), unit(1), 16, Some(1));
        retry.kma = "kma2".into();
        evidence.handouts.push(retry);
        let failed = failed(&evidence);
        assert!(failed.contains(&"one_key_per_write"), "{failed:?}");
    }

    /// Planted: kma3 handed key 2 out at index 11, before its assignment committed at 12 (it
    /// served an entry it had not seen committed). Expect: caught.
    #[test]
    fn an_early_hand_out_fails() {
        let mut evidence = sound();
        let mut early = handout(key(2), unit(2), 11, None);
        early.kma = "kma3".into();
        evidence.handouts.push(early);
        // Before its assignment the key was in no group either: the groups check fails too.
        let failed = failed(&evidence);
        assert_eq!(failed, vec!["no_early_handout", "keys_within_groups"]);
    }

    /// Planted: key 1 handed to drive-west, which never had group `east`. Expect: caught.
    #[test]
    fn a_key_outside_the_agents_groups_fails() {
        let mut evidence = sound();
        let mut stranger = handout(key(1), unit(1), 15, None);
        stranger.agent = "drive-west".into();
        evidence.handouts.push(stranger);
        assert_eq!(failed(&evidence), vec!["keys_within_groups"]);
    }

    /// Planted: a failed read-back, and, separately, no read-back at all. Expect: both caught.
    #[test]
    fn an_unreadable_tape_or_no_read_back_fails() {
        let mut evidence = sound();
        evidence.verification_failures = 1;
        assert_eq!(failed(&evidence), vec!["tapes_readable"]);
        let mut evidence = sound();
        evidence.records_verified = 0;
        assert_eq!(failed(&evidence), vec!["tapes_readable"]);
    }

    /// Planted: different digests; a stale admin read after a completed write. Expect: caught.
    #[test]
    fn divergence_and_a_stale_admin_read_fail() {
        let mut evidence = sound();
        evidence.digests = Err("kma2 differs at index 15".into());
        assert_eq!(failed(&evidence), vec!["digests_equal"]);
        let mut evidence = sound();
        let op = |process, at: u64, call, outcome| linearizable::Operation {
            process,
            invoked_at: at,
            returned_at: Some(at + 1),
            key: "user:u1".into(),
            call,
            outcome,
        };
        evidence.admin_history = vec![
            op(1, 10, linearizable::Call::Write(Some("exists".into())), linearizable::Outcome::Ok),
            op(2, 20, linearizable::Call::Read, linearizable::Outcome::ReadOk(None)),
        ];
        assert_eq!(failed(&evidence), vec!["admin_linearizable"]);
    }

    /// A KMA's log line as `tracing`'s default format writes it parses into the hand-out it
    /// names; a damaged hand-out line is an error, not a silent skip.
    #[test]
    fn handout_lines_parse_and_damaged_ones_are_refused() {
        let line = format!(
            "2026-12-07T10:00:00.000Z  INFO kms::handout: key handed out route=\"write-key\" \
             agent=drive-east key={} data_unit={} index=42 request={}",
            key(1),
            unit(1),
            request_text(9)
        );
        let log = format!("noise line\n{line}\nmore noise");
        let parsed = parse_handouts("kma2", &log).expect("parses");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].key, key(1));
        assert_eq!(parsed[0].data_unit, Some(unit(1)));
        assert_eq!(parsed[0].index, 42);
        assert_eq!(parsed[0].request.as_deref(), Some(request_text(9).as_str()));
        assert_eq!(parsed[0].agent, "drive-east");
        let damaged = line.replace("index=42", "index=forty-two");
        assert!(parse_handouts("kma2", &damaged).is_err());
    }
}
