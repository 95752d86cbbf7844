//! The cluster version gate (SPEC C7): a command whose format some KMA of the cluster cannot
//! decode is refused before it is proposed, so that an older KMA never meets an entry it cannot
//! apply. The rule is the state machine's (`statemachine::format`: what each KMA reported, what
//! each command needs); this only turns its answer into a retryable refusal.

use statemachine::{Command, State};

use crate::write::ProposeError;

/// `Err(NotAvailableYet)` when some KMA that applies the log cannot decode `command` yet.
pub fn check(state: &State, command: &Command) -> Result<(), ProposeError> {
    state.check_format(command).map_err(|reject| ProposeError::NotAvailableYet {
        what: reject.to_string(),
        needed: command.format_needed(),
        cluster: state.cluster_format_version(),
    })
}
