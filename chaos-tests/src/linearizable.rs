//! A linearizability checker for histories of admin operations on registers: SPEC C1 (every
//! change made at any KMA reaches all KMAs) and "Consistency" (admin reads that must be current
//! are linearizable reads), seen from the clients.
//!
//! A chaos test records what its clients saw: who called what, when the call went out, when (and
//! whether) the answer came back. [`check`] asks whether one sequential order of those operations
//! exists that agrees with every answer and puts each operation after every operation that had
//! returned before it was invoked (Wing & Gong's search, with the memoization Knossos and
//! Porcupine add).
//!
//! Why the shape:
//! - Each register is checked on its own: linearizability is local (Herlihy & Wing), so a
//!   history is linearizable exactly when each register's sub-history is, and the search space
//!   shrinks from the product of the registers' spaces to their sum.
//! - The search remembers each (set of ordered operations, register value) it has left without
//!   success: two paths that reach the same state have the same future, and without this the
//!   search is factorial in the number of concurrent operations.
//! - An operation whose answer never came back may have taken effect at any time after its
//!   invocation, or never; it is ordered only where it helps and never blocks another operation.
//! - The search is exponential in the worst case: a register gets [`SEARCH_STEPS_MAX`] steps and
//!   is then reported undecided: no false verdict and no hung test.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Search steps (states visited) per register before the register is reported undecided. Two
/// million steps take about a second and at most a few hundred MB of memoized states in a release
/// build; a history that needs more has too many concurrent operations on one key.
pub const SEARCH_STEPS_MAX: u64 = 2_000_000;

/// Operations on one register that the search accepts. The memoized states carry a bitset of
/// this many bits; callers spread a workload over more keys rather than lengthen one.
pub const OPERATIONS_PER_REGISTER_MAX: usize = 512;

/// What a client asked of one register (a key of the workload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Set the register; `None` deletes it.
    Write(Option<String>),
    Read,
    /// Set the register to `new` if it holds `expected` (`None`: absent).
    CompareAndSet {
        expected: Option<String>,
        new: Option<String>,
    },
}

/// What the client learnt about its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A write or compare-and-set that took effect.
    Ok,
    /// A read and the value it saw (`None`: absent).
    ReadOk(Option<String>),
    /// Definitely did not take effect. A failed compare-and-set did observe the register, and it
    /// held something other than `expected`.
    Failed,
    /// No answer (timeout, connection lost): it may have taken effect at any time after its
    /// invocation, even after the client gave up, or never. Its `returned_at` is ignored.
    Unknown,
}

/// One call in a history, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client that made the call; it is only reported, the order comes from the times.
    pub process: u64,
    /// Any monotonic clock shared by all processes of the history (e.g. ns since the test began).
    pub invoked_at: u64,
    /// `None` when the outcome is unknown.
    pub returned_at: Option<u64>,
    /// The register's name.
    pub key: String,
    pub call: Call,
    pub outcome: Outcome,
}

/// An order could not be found for one register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// Where the longest consistent order stopped: the register's value there and the operations
    /// that could not come next.
    pub detail: String,
}

/// The answer for a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Distinct keys in the history, decided or not.
    pub registers_checked: usize,
    /// Operations in the history, including the ones that constrain nothing (a failed write).
    pub operations: usize,
    pub violations: Vec<Violation>,
    /// `"<key>: <reason>"` for each register the search could not decide.
    pub undecided: Vec<String>,
}

impl Verdict {
    /// True only when every register was decided and found linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }
}

/// Checks `history` against registers that start at `initial` (a key missing there starts absent).
pub fn check(history: &[Operation], initial: &BTreeMap<String, Option<String>>) -> Verdict {
    check_with_budget(history, initial, SEARCH_STEPS_MAX)
}

fn check_with_budget(
    history: &[Operation],
    initial: &BTreeMap<String, Option<String>>,
    search_steps_max: u64,
) -> Verdict {
    let mut registers: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        registers.entry(operation.key.as_str()).or_default().push(operation);
    }
    let mut verdict = Verdict {
        registers_checked: registers.len(),
        operations: history.len(),
        violations: Vec::new(),
        undecided: Vec::new(),
    };
    for (key, operations) in registers {
        let initial_value = initial.get(key).cloned().flatten();
        match check_register(&operations, &initial_value, search_steps_max) {
            RegisterVerdict::Linearizable => {}
            RegisterVerdict::Violation(detail) => {
                verdict.violations.push(Violation { key: key.to_string(), detail });
            }
            RegisterVerdict::Undecided(reason) => {
                verdict.undecided.push(format!("{key}: {reason}"))
            }
        }
    }
    assert!(verdict.violations.len() + verdict.undecided.len() <= verdict.registers_checked);
    verdict
}

enum RegisterVerdict {
    Linearizable,
    Violation(String),
    Undecided(String),
}

fn check_register(
    operations: &[&Operation],
    initial: &Option<String>,
    search_steps_max: u64,
) -> RegisterVerdict {
    if operations.len() > OPERATIONS_PER_REGISTER_MAX {
        return RegisterVerdict::Undecided(format!(
            "{} operations, more than the {OPERATIONS_PER_REGISTER_MAX} one search orders; \
             spread the workload over more keys",
            operations.len()
        ));
    }
    let register = match Register::prepare(operations, initial) {
        Ok(register) => register,
        Err(reason) => return RegisterVerdict::Undecided(format!("malformed history: {reason}")),
    };
    let mut search = Search::new(&register, search_steps_max);
    let required = register.ops.iter().filter(|op| op.required).count();
    match search.explore(register.initial, required) {
        Found::Linearization => RegisterVerdict::Linearizable,
        Found::DeadEnd => RegisterVerdict::Violation(search.dead_end_report()),
        Found::OutOfSteps => RegisterVerdict::Undecided(format!(
            "no verdict within {search_steps_max} search steps over {} operations; \
             fewer concurrent operations per key make the search shorter",
            register.ops.len()
        )),
    }
}

/// Index into [`Register::values`]: the search compares values by number.
type ValueId = usize;

/// What ordering an operation does to the register, or demands of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Set(ValueId),
    /// A read: the register must hold this value.
    Observe(ValueId),
    /// A failed compare-and-set: the register must hold anything but its expected value.
    ObserveOther(ValueId),
    Swap {
        expected: ValueId,
        new: ValueId,
    },
}

impl Effect {
    /// The register's value after this effect, or `None` when the effect disagrees with `value`.
    fn apply(self, value: ValueId) -> Option<ValueId> {
        match self {
            Effect::Set(new) => Some(new),
            Effect::Observe(seen) => (value == seen).then_some(value),
            Effect::ObserveOther(expected) => (value != expected).then_some(value),
            Effect::Swap { expected, new } => (value == expected).then_some(new),
        }
    }

    fn writes(self) -> bool {
        matches!(self, Effect::Set(_) | Effect::Swap { .. })
    }
}

/// An operation as the search sees it.
struct RegisterOp<'h> {
    source: &'h Operation,
    invoked_at: u64,
    /// `u64::MAX` when the outcome is unknown: such an operation never has to come first.
    returned_at: u64,
    effect: Effect,
    /// Its outcome is known, so every order must contain it.
    required: bool,
}

/// One register's sub-history, ready for the search.
struct Register<'h> {
    /// By invocation time, so that the operations that may come next are a prefix.
    ops: Vec<RegisterOp<'h>>,
    values: Vec<Option<String>>,
    initial: ValueId,
}

impl<'h> Register<'h> {
    fn prepare(operations: &[&'h Operation], initial: &Option<String>) -> Result<Self, String> {
        let mut values = Values::default();
        let initial = values.id(initial);
        let mut ops = Vec::with_capacity(operations.len());
        for &source in operations {
            if let Some(op) = register_op(source, &mut values)? {
                assert!(op.invoked_at <= op.returned_at);
                ops.push(op);
            }
        }
        ops.sort_by_key(|op| op.invoked_at);
        assert!(values.shown.len() <= 2 * ops.len() + 1);
        Ok(Register { ops, values: values.shown, initial })
    }
}

/// `Ok(None)` for an operation that constrains nothing: a failed write, a read without answer.
fn register_op<'h>(
    source: &'h Operation,
    values: &mut Values,
) -> Result<Option<RegisterOp<'h>>, String> {
    let returned_at = match (&source.outcome, source.returned_at) {
        (Outcome::Unknown, _) => u64::MAX,
        (_, None) => return Err(format!("{source}: a known outcome needs a return time")),
        (_, Some(at)) if at < source.invoked_at => {
            return Err(format!("{source}: returned before it was invoked"));
        }
        (_, Some(at)) => at,
    };
    let effect = match (&source.call, &source.outcome) {
        (Call::Write(_), Outcome::Failed) | (Call::Read, Outcome::Failed | Outcome::Unknown) => {
            return Ok(None);
        }
        (Call::Write(value), Outcome::Ok | Outcome::Unknown) => Effect::Set(values.id(value)),
        (Call::Read, Outcome::ReadOk(seen)) => Effect::Observe(values.id(seen)),
        (Call::CompareAndSet { expected, new }, Outcome::Ok | Outcome::Unknown) => {
            Effect::Swap { expected: values.id(expected), new: values.id(new) }
        }
        (Call::CompareAndSet { expected, .. }, Outcome::Failed) => {
            Effect::ObserveOther(values.id(expected))
        }
        (Call::Read, Outcome::Ok)
        | (Call::Write(_) | Call::CompareAndSet { .. }, Outcome::ReadOk(_)) => {
            return Err(format!("{source}: this outcome cannot end this call"));
        }
    };
    let required = source.outcome != Outcome::Unknown;
    Ok(Some(RegisterOp { source, invoked_at: source.invoked_at, returned_at, effect, required }))
}

#[derive(Default)]
struct Values {
    ids: HashMap<Option<String>, ValueId>,
    shown: Vec<Option<String>>,
}

impl Values {
    fn id(&mut self, value: &Option<String>) -> ValueId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.shown.len();
        self.ids.insert(value.clone(), id);
        self.shown.push(value.clone());
        id
    }
}

enum Found {
    Linearization,
    DeadEnd,
    OutOfSteps,
}

/// Depth-first search over linearization points of one register.
struct Search<'r, 'h> {
    register: &'r Register<'h>,
    /// Indices into `register.ops` by return time: the first one not yet ordered bounds which
    /// operations may come next.
    by_return: Vec<usize>,
    /// Bitset over `register.ops`: the operations ordered so far.
    ordered: Vec<u64>,
    path: Vec<usize>,
    /// States left without success; a state reached again has the same (failed) future.
    dead: HashSet<(Vec<u64>, ValueId)>,
    steps: u64,
    steps_max: u64,
    /// The longest order found and the value it leaves: where a violation is reported.
    deepest_path: Vec<usize>,
    deepest_value: ValueId,
}

impl<'r, 'h> Search<'r, 'h> {
    fn new(register: &'r Register<'h>, steps_max: u64) -> Self {
        let mut by_return: Vec<usize> = (0..register.ops.len()).collect();
        by_return.sort_by_key(|&index| register.ops[index].returned_at);
        Search {
            register,
            by_return,
            ordered: vec![0; register.ops.len().div_ceil(64)],
            path: Vec::new(),
            dead: HashSet::new(),
            steps: 0,
            steps_max,
            deepest_path: Vec::new(),
            deepest_value: register.initial,
        }
    }

    fn is_ordered(&self, index: usize) -> bool {
        self.ordered[index / 64] & (1 << (index % 64)) != 0
    }

    fn flip(&mut self, index: usize) {
        self.ordered[index / 64] ^= 1 << (index % 64);
    }

    /// Operations invoked after this time must wait: an operation not yet ordered returned
    /// before they were invoked.
    fn horizon(&self) -> u64 {
        self.by_return
            .iter()
            .find(|&&index| !self.is_ordered(index))
            .map_or(u64::MAX, |&index| self.register.ops[index].returned_at)
    }

    fn explore(&mut self, value: ValueId, required_left: usize) -> Found {
        if required_left == 0 {
            return Found::Linearization;
        }
        self.steps += 1;
        if self.steps > self.steps_max {
            return Found::OutOfSteps;
        }
        if !self.dead.insert((self.ordered.clone(), value)) {
            return Found::DeadEnd;
        }
        assert!(self.path.len() < self.register.ops.len());
        if self.path.len() > self.deepest_path.len() {
            self.deepest_path.clone_from(&self.path);
            self.deepest_value = value;
        }
        let horizon = self.horizon();
        let register = self.register;
        // Unknown operations last: ordered only once nothing known can come next, they are
        // placed where an answer needs them instead of wherever they were invoked.
        for required_pass in [true, false] {
            for (index, op) in register.ops.iter().enumerate() {
                if op.invoked_at > horizon {
                    break;
                }
                if op.required != required_pass || self.is_ordered(index) {
                    continue;
                }
                let Some(next) = op.effect.apply(value) else { continue };
                // An unknown operation that changes nothing here is better left for later, or out.
                if !op.required && next == value {
                    continue;
                }
                self.flip(index);
                self.path.push(index);
                let found = self.explore(next, required_left - usize::from(op.required));
                self.path.pop();
                self.flip(index);
                match found {
                    Found::DeadEnd => {}
                    Found::Linearization | Found::OutOfSteps => return found,
                }
            }
        }
        Found::DeadEnd
    }

    /// The deepest dead end: the value there, who wrote it, and the operations that could not
    /// come next. No order of those operations was consistent, and every shorter order stops
    /// earlier.
    fn dead_end_report(&self) -> String {
        let ops = &self.register.ops;
        let ordered: HashSet<usize> = self.deepest_path.iter().copied().collect();
        let horizon = (0..ops.len())
            .filter(|index| !ordered.contains(index))
            .map(|index| ops[index].returned_at)
            .min()
            .unwrap_or(u64::MAX);
        let next: Vec<String> = (0..ops.len())
            .filter(|index| !ordered.contains(index))
            .map(|index| &ops[index])
            .filter(|op| op.required && op.invoked_at <= horizon)
            .map(|op| op.source.to_string())
            .collect();
        let origin = self
            .deepest_path
            .iter()
            .rev()
            .map(|&index| &ops[index])
            .find(|op| op.effect.writes())
            .map_or_else(|| "its initial value".to_string(), |op| format!("set by {}", op.source));
        format!(
            "after ordering {} of {} operations the register holds {} ({origin}), and no \
             operation that may come next agrees with it: {}",
            self.deepest_path.len(),
            ops.len(),
            shown(&self.register.values[self.deepest_value]),
            next.join("; ")
        )
    }
}

fn shown(value: &Option<String>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_string(),
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} ", self.process)?;
        match &self.call {
            Call::Write(Some(value)) => write!(f, "write {value:?}")?,
            Call::Write(None) => write!(f, "delete")?,
            Call::Read => write!(f, "read")?,
            Call::CompareAndSet { expected, new } => {
                write!(f, "compare-and-set {} to {}", shown(expected), shown(new))?;
            }
        }
        match &self.outcome {
            Outcome::Ok => write!(f, " ok")?,
            Outcome::ReadOk(seen) => write!(f, " saw {}", shown(seen))?,
            Outcome::Failed => write!(f, " failed")?,
            Outcome::Unknown => write!(f, " outcome unknown")?,
        }
        write!(f, ", invoked at {}", self.invoked_at)?;
        match self.returned_at {
            Some(at) => write!(f, ", returned at {at}"),
            None => write!(f, ", no answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    /// A completed operation on register "k".
    fn op(process: u64, span: (u64, u64), call: Call, outcome: Outcome) -> Operation {
        Operation {
            process,
            invoked_at: span.0,
            returned_at: Some(span.1),
            key: "k".to_string(),
            call,
            outcome,
        }
    }

    fn write(process: u64, span: (u64, u64), text: &str) -> Operation {
        op(process, span, Call::Write(value(text)), Outcome::Ok)
    }

    fn read(process: u64, span: (u64, u64), seen: Option<&str>) -> Operation {
        op(process, span, Call::Read, Outcome::ReadOk(seen.map(str::to_string)))
    }

    fn cas(
        process: u64,
        span: (u64, u64),
        expected: &str,
        new: &str,
        outcome: Outcome,
    ) -> Operation {
        op(
            process,
            span,
            Call::CompareAndSet { expected: value(expected), new: value(new) },
            outcome,
        )
    }

    /// A write whose answer never came.
    fn unknown_write(process: u64, invoked_at: u64, text: &str) -> Operation {
        Operation {
            returned_at: None,
            outcome: Outcome::Unknown,
            ..write(process, (invoked_at, invoked_at), text)
        }
    }

    fn on(key: &str, operation: Operation) -> Operation {
        Operation { key: key.to_string(), ..operation }
    }

    fn absent_initially() -> BTreeMap<String, Option<String>> {
        BTreeMap::new()
    }

    fn initially(text: &str) -> BTreeMap<String, Option<String>> {
        BTreeMap::from([("k".to_string(), value(text))])
    }

    /// Setup: one process reads the initial value, writes, reads, compare-and-sets, deletes.
    /// Action: check. Expectation: linearizable, one register, every operation counted.
    #[test]
    fn c1_sequential_history_is_linearizable() {
        let history = vec![
            read(1, (0, 1), Some("old")),
            write(1, (2, 3), "a"),
            read(1, (4, 5), Some("a")),
            cas(1, (6, 7), "a", "b", Outcome::Ok),
            cas(1, (8, 9), "a", "c", Outcome::Failed),
            read(1, (10, 11), Some("b")),
            op(1, (12, 13), Call::Write(None), Outcome::Ok),
            read(1, (14, 15), None),
        ];
        let verdict = check(&history, &initially("old"));
        assert!(verdict.is_linearizable(), "{verdict:?}");
        assert_eq!(verdict.registers_checked, 1);
        assert_eq!(verdict.operations, 8);
    }

    /// Setup: two writes overlap each other and three reads; the reads see b, a, then a, which
    /// only the order "write b, write a" explains. Action: check. Expectation: linearizable.
    #[test]
    fn c1_overlapping_writes_and_reads_are_linearizable_when_an_order_exists() {
        let history = vec![
            write(1, (0, 100), "a"),
            write(2, (10, 90), "b"),
            read(3, (20, 30), Some("b")),
            read(4, (40, 120), Some("a")),
            read(3, (130, 140), Some("a")),
        ];
        let verdict = check(&history, &absent_initially());
        assert!(verdict.is_linearizable(), "{verdict:?}");
    }

    /// Setup: two overlapping writes, then two reads one after the other see b and then a, with
    /// no write left to explain the change back. Action: check. Expectation: a violation.
    #[test]
    fn c1_reads_flipping_back_after_overlapping_writes_is_a_violation() {
        let history = vec![
            write(1, (0, 100), "a"),
            write(2, (10, 90), "b"),
            read(3, (110, 120), Some("b")),
            read(3, (130, 140), Some("a")),
        ];
        let verdict = check(&history, &absent_initially());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
    }

    /// Setup: process 1's write of "new" is acknowledged; afterwards process 2 reads "old".
    /// Action: check. Expectation: a violation on "k" whose detail names the value and its
    /// writer and the stale read, with its times.
    #[test]
    fn c1_stale_read_after_acknowledged_write_is_a_violation() {
        let history = vec![write(1, (0, 10), "new"), read(2, (20, 30), Some("old"))];
        let verdict = check(&history, &initially("old"));
        assert!(!verdict.is_linearizable());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        let violation = &verdict.violations[0];
        assert_eq!(violation.key, "k");
        assert_eq!(
            violation.detail,
            "after ordering 1 of 2 operations the register holds \"new\" (set by process 1 write \
             \"new\" ok, invoked at 0, returned at 10), and no operation that may come next \
             agrees with it: process 2 read saw \"old\", invoked at 20, returned at 30"
        );
    }

    /// Setup: writes of a and b, concurrent with a read that sees z, which nobody wrote.
    /// Action: check. Expectation: a violation naming the read.
    #[test]
    fn c1_read_of_a_value_never_written_is_a_violation() {
        let history =
            vec![write(1, (0, 50), "a"), write(2, (0, 50), "b"), read(3, (10, 40), Some("z"))];
        let verdict = check(&history, &absent_initially());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert!(verdict.violations[0].detail.contains("process 3 read saw \"z\""), "{verdict:?}");
    }

    /// Setup: process 1 writes a then b, both acknowledged; later, with no write in flight,
    /// process 2 reads a twice (b was lost). Action: check. Expectation: a violation.
    #[test]
    fn c1_lost_acknowledged_write_is_a_violation() {
        let history = vec![
            write(1, (0, 10), "a"),
            write(1, (20, 30), "b"),
            read(2, (40, 50), Some("a")),
            read(2, (60, 70), Some("a")),
        ];
        let verdict = check(&history, &absent_initially());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert!(verdict.violations[0].detail.contains("set by process 1 write \"b\""));
    }

    /// Setup: a write of "new" gets no answer; a read before it sees "old", reads long after
    /// see "new". Action: check. Expectation: linearizable (the write took effect late).
    #[test]
    fn c1_unknown_write_seen_later_is_linearizable() {
        let history = vec![
            read(2, (0, 5), Some("old")),
            unknown_write(1, 10, "new"),
            read(2, (20, 30), Some("old")),
            read(2, (1_000, 1_010), Some("new")),
            read(3, (2_000, 2_010), Some("new")),
        ];
        let verdict = check(&history, &initially("old"));
        assert!(verdict.is_linearizable(), "{verdict:?}");
    }

    /// Setup: a write of "new" gets no answer and every later read sees "old".
    /// Action: check. Expectation: linearizable (the write never took effect).
    #[test]
    fn c1_unknown_write_never_seen_is_linearizable() {
        let history = vec![
            unknown_write(1, 10, "new"),
            read(2, (20, 30), Some("old")),
            read(2, (1_000, 1_010), Some("old")),
        ];
        let verdict = check(&history, &initially("old"));
        assert!(verdict.is_linearizable(), "{verdict:?}");
    }

    /// Setup: a write of "new" gets no answer; a read that returned before it was invoked saw
    /// "new". Action: check. Expectation: a violation (no effect before the invocation).
    #[test]
    fn c1_unknown_write_cannot_take_effect_before_its_invocation() {
        let history = vec![read(2, (0, 5), Some("new")), unknown_write(1, 10, "new")];
        let verdict = check(&history, &initially("old"));
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
    }

    /// Setup: a write of "new" failed; a later read sees "new". Action: check.
    /// Expectation: a violation (a failed write never takes effect).
    #[test]
    fn c1_failed_write_seen_later_is_a_violation() {
        let history = vec![
            op(1, (0, 10), Call::Write(value("new")), Outcome::Failed),
            read(2, (20, 30), Some("new")),
        ];
        let verdict = check(&history, &initially("old"));
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
    }

    /// Setup: the register holds a; a compare-and-set from a to b fails while nothing else
    /// runs. Action: check. Expectation: a violation (it saw a, its expected value).
    #[test]
    fn c1_failed_cas_that_saw_its_expected_value_is_a_violation() {
        let history = vec![write(1, (0, 10), "a"), cas(2, (20, 30), "a", "b", Outcome::Failed)];
        let verdict = check(&history, &absent_initially());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert!(verdict.violations[0].detail.contains("compare-and-set \"a\" to \"b\" failed"));
    }

    /// Setup: two processes compare-and-set from a at the same time; one wins, the other fails
    /// (it saw the winner's value); an unknown compare-and-set is never seen.
    /// Action: check. Expectation: linearizable.
    #[test]
    fn c1_concurrent_cas_with_one_winner_is_linearizable() {
        let history = vec![
            write(1, (0, 10), "a"),
            cas(2, (20, 40), "a", "b", Outcome::Ok),
            cas(3, (20, 40), "a", "c", Outcome::Failed),
            Operation {
                returned_at: None,
                outcome: Outcome::Unknown,
                ..cas(4, (50, 50), "a", "d", Outcome::Ok)
            },
            read(1, (60, 70), Some("b")),
        ];
        let verdict = check(&history, &absent_initially());
        assert!(verdict.is_linearizable(), "{verdict:?}");
    }

    /// Setup: registers x and y interleaved in time; y's reads see x's values (a violation on
    /// y), x's history is fine. Action: check. Expectation: two registers checked, one violation
    /// on y only.
    #[test]
    fn c1_registers_are_checked_independently() {
        let history = vec![
            on("x", write(1, (0, 10), "1")),
            on("y", write(2, (5, 15), "one")),
            on("x", read(3, (20, 30), Some("1"))),
            on("y", read(3, (20, 30), Some("1"))),
        ];
        let initial = BTreeMap::from([("y".to_string(), value("zero"))]);
        let verdict = check(&history, &initial);
        assert_eq!(verdict.registers_checked, 2);
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
        assert_eq!(verdict.violations[0].key, "y");
        assert!(verdict.undecided.is_empty());
    }

    /// Twelve concurrent writes of distinct values, then a read of a value none wrote: every
    /// subset of the writes has to be tried before the search gives up.
    fn adversarial_history() -> Vec<Operation> {
        let mut history: Vec<Operation> =
            (0..12).map(|process| write(process, (0, 100), &format!("v{process}"))).collect();
        history.push(read(99, (200, 210), Some("never")));
        history
    }

    /// Setup: the adversarial history and a budget of 50 search steps. Action: check.
    /// Expectation: no violation, "k" undecided with the reason; with the default budget the
    /// same history is a violation.
    #[test]
    fn step_budget_exhausted_leaves_the_register_undecided() {
        let history = adversarial_history();
        let verdict = check_with_budget(&history, &absent_initially(), 50);
        assert!(verdict.violations.is_empty(), "{verdict:?}");
        assert_eq!(verdict.undecided.len(), 1);
        assert!(verdict.undecided[0].starts_with("k: no verdict within 50 search steps"));
        assert!(!verdict.is_linearizable());

        let verdict = check(&history, &absent_initially());
        assert_eq!(verdict.violations.len(), 1, "{verdict:?}");
    }

    /// Setup: one more sequential read than a register may hold. Action: check.
    /// Expectation: "k" undecided, naming the bound; no search, no violation.
    #[test]
    fn register_over_the_operation_bound_is_undecided() {
        let history: Vec<Operation> = (0..=OPERATIONS_PER_REGISTER_MAX as u64)
            .map(|at| read(1, (2 * at, 2 * at + 1), None))
            .collect();
        let verdict = check(&history, &absent_initially());
        assert!(verdict.violations.is_empty());
        assert_eq!(verdict.undecided.len(), 1);
        assert!(verdict.undecided[0].contains("more than the 512"), "{verdict:?}");
    }

    /// Setup: histories with a read that returned before its invocation, a read answered "ok"
    /// without a value, and a write with a known outcome but no return time. Action: check
    /// each. Expectation: each leaves "k" undecided as malformed.
    #[test]
    fn malformed_operation_leaves_the_register_undecided() {
        let histories = [
            vec![read(1, (10, 5), None)],
            vec![op(1, (0, 5), Call::Read, Outcome::Ok)],
            vec![Operation { returned_at: None, ..write(1, (0, 5), "a") }],
        ];
        for history in histories {
            let verdict = check(&history, &absent_initially());
            assert!(verdict.violations.is_empty());
            assert_eq!(verdict.undecided.len(), 1, "{verdict:?}");
            assert!(verdict.undecided[0].starts_with("k: malformed history: process 1"));
        }
    }

    /// A deterministic xorshift generator: a number below `below`.
    fn random(seed: &mut u64, below: u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed % below
    }

    /// The definition itself, without the search: some order of the known operations and of any
    /// subset of the unknown ones respects real time and replays on the register.
    fn linearizable_by_enumeration(history: &[Operation], initial: &Option<String>) -> bool {
        let ops: Vec<&Operation> = history
            .iter()
            .filter(|op| match (&op.call, &op.outcome) {
                (Call::Write(_), Outcome::Failed) => false,
                (Call::Read, outcome) => matches!(outcome, Outcome::ReadOk(_)),
                _ => true,
            })
            .collect();
        enumerate(&ops, &mut Vec::new(), initial)
    }

    fn enumerate(ops: &[&Operation], order: &mut Vec<usize>, initial: &Option<String>) -> bool {
        let complete = (0..ops.len())
            .all(|index| order.contains(&index) || ops[index].outcome == Outcome::Unknown);
        if complete && replays(ops, order, initial) {
            return true;
        }
        for index in 0..ops.len() {
            if !order.contains(&index) {
                order.push(index);
                let found = enumerate(ops, order, initial);
                order.pop();
                if found {
                    return true;
                }
            }
        }
        false
    }

    fn replays(ops: &[&Operation], order: &[usize], initial: &Option<String>) -> bool {
        let returned = |op: &Operation| match op.outcome {
            Outcome::Unknown => u64::MAX,
            _ => op.returned_at.unwrap_or(u64::MAX),
        };
        for (position, &later) in order.iter().enumerate() {
            if order[..position]
                .iter()
                .any(|&earlier| returned(ops[later]) < ops[earlier].invoked_at)
            {
                return false;
            }
        }
        let mut register = initial.clone();
        for &index in order {
            let op = ops[index];
            match (&op.call, &op.outcome) {
                (Call::Write(new), _) => register.clone_from(new),
                (Call::Read, Outcome::ReadOk(seen)) if *seen != register => return false,
                (Call::CompareAndSet { expected, .. }, Outcome::Failed)
                    if *expected == register =>
                {
                    return false;
                }
                (Call::CompareAndSet { expected, new }, _) if *expected == register => {
                    register.clone_from(new);
                }
                (Call::CompareAndSet { .. }, Outcome::Ok) => return false,
                _ => {}
            }
        }
        true
    }

    /// Up to six random operations on "k" over values absent, "0" and "1", with random spans
    /// and outcomes: most histories are not linearizable.
    fn small_random_history(seed: &mut u64) -> Vec<Operation> {
        let some_value = |seed: &mut u64| match random(seed, 3) {
            0 => None,
            n => value(&(n - 1).to_string()),
        };
        let count = 1 + random(seed, 6);
        (0..count)
            .map(|process| {
                let invoked_at = random(seed, 12);
                let span = (invoked_at, invoked_at + random(seed, 6));
                let outcome = match random(seed, 5) {
                    0 => Outcome::Unknown,
                    1 => Outcome::Failed,
                    _ => Outcome::Ok,
                };
                let operation = match random(seed, 3) {
                    0 => op(process, span, Call::Read, Outcome::ReadOk(some_value(seed))),
                    1 => op(process, span, Call::Write(some_value(seed)), outcome),
                    _ => {
                        let call = Call::CompareAndSet {
                            expected: some_value(seed),
                            new: some_value(seed),
                        };
                        op(process, span, call, outcome)
                    }
                };
                match operation.outcome {
                    Outcome::Unknown => Operation { returned_at: None, ..operation },
                    _ => operation,
                }
            })
            .collect()
    }

    /// Setup: 5,000 small random histories, from an initial value of absent or "0".
    /// Action: check each, and decide each by enumerating every order.
    /// Expectation: the same answer every time, never undecided.
    #[test]
    fn c1_search_agrees_with_enumerating_every_order() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let (mut linearizable, mut violations) = (0, 0);
        for round in 0..5_000 {
            let history = small_random_history(&mut seed);
            let initial = if round % 2 == 0 { initially("0") } else { absent_initially() };
            let expected =
                linearizable_by_enumeration(&history, &initial.get("k").cloned().flatten());
            let verdict = check(&history, &initial);
            assert!(verdict.undecided.is_empty(), "{verdict:?}");
            assert_eq!(verdict.is_linearizable(), expected, "{history:#?}\n{verdict:?}");
            if expected {
                linearizable += 1;
            } else {
                violations += 1;
            }
        }
        // Both answers must be common, or the comparison proves little.
        assert!(linearizable > 1_000 && violations > 1_000, "{linearizable} / {violations}");
    }

    /// Setup: 400 operations of five processes (writes, reads, compare-and-sets, some without
    /// answer) generated against a real register, each taking effect at a point inside its
    /// span. Action: check. Expectation: linearizable, well within the step budget.
    #[test]
    fn c1_generated_history_from_an_atomic_register_is_linearizable() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = move |below: u64| random(&mut seed, below);
        // (effect time, process, call, invoked, returned, unknown): applied in effect order.
        let mut planned = Vec::new();
        for process in 0..5 {
            let mut at = random(10);
            for _ in 0..80 {
                let invoked_at = at;
                let returned_at = invoked_at + 1 + random(40);
                let effect_at = (invoked_at + random(returned_at - invoked_at + 1)) * 10 + process;
                let call = match random(4) {
                    0 => Call::Read,
                    1 => Call::CompareAndSet {
                        expected: value(&format!("{}", random(3))),
                        new: value(&format!("{}", random(3))),
                    },
                    _ => Call::Write(value(&format!("{}", random(3)))),
                };
                let unknown = random(20) == 0 && call != Call::Read;
                planned.push((effect_at, process, call, invoked_at, returned_at, unknown));
                at = returned_at + 1 + random(10);
            }
        }
        planned.sort_by_key(|planned| planned.0);
        let mut register: Option<String> = None;
        let mut history = Vec::new();
        for (_, process, call, invoked_at, returned_at, unknown) in planned {
            let outcome = match &call {
                Call::Read => Outcome::ReadOk(register.clone()),
                Call::Write(new) => {
                    register.clone_from(new);
                    Outcome::Ok
                }
                Call::CompareAndSet { expected, new } if *expected == register => {
                    register.clone_from(new);
                    Outcome::Ok
                }
                Call::CompareAndSet { .. } => Outcome::Failed,
            };
            let (returned_at, outcome) =
                if unknown { (None, Outcome::Unknown) } else { (Some(returned_at), outcome) };
            let key = "k".to_string();
            history.push(Operation { process, invoked_at, returned_at, key, call, outcome });
        }
        let verdict = check_with_budget(&history, &absent_initially(), SEARCH_STEPS_MAX / 10);
        assert!(verdict.is_linearizable(), "{verdict:?}");
        assert_eq!(verdict.operations, 400);
    }
}
