//! One log line for every key value handed to an agent, on every route (issue 20 point 2): the
//! chaos suite's checker compares these lines, from every KMA, with the committed log, to prove
//! that no key left before its assignment committed and none went to an agent outside its
//! groups. The line names the key and the index of the state it was read from, never the value.
//!
//! The format is fixed for that checker (`chaos-tests/src/history.rs` parses it): target
//! `kms::handout`, message `key handed out`, and the fields below as `name=value`.

use statemachine::{DataUnitId, KeyId, RequestId};

/// The route a key left by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST .../write-key`: the data unit's write key, assigned or reused by a committed entry.
    WriteKey,
    /// `GET .../keys`: the data unit's keys on mount.
    Keys,
    /// `GET .../keys/{id}`: one key by ID (a read of a tape whose label names it).
    Key,
    /// KMIP Get.
    KmipGet,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::WriteKey => "write-key",
            Route::Keys => "keys",
            Route::Key => "key",
            Route::KmipGet => "kmip-get",
        }
    }
}

/// Logs that `key_id` went to `agent`. `index`: the log index the value was read at (for a write
/// key, the index of the entry that assigned or reused it), so the key's assignment is at or
/// before it in any history the cluster committed. `request`: the agent's request ID, for the
/// write key (a retry of one write must get the same key, SPEC A6).
pub(crate) fn handed_out(
    route: Route,
    agent: &str,
    key_id: &KeyId,
    data_unit: Option<&DataUnitId>,
    index: u64,
    request: Option<RequestId>,
) {
    let data_unit = data_unit.map(ToString::to_string).unwrap_or_else(|| "-".into());
    let request = request.map_or_else(|| "-".into(), |id| format!("{:016x}:{}", id.client, id.seq));
    tracing::info!(
        target: "kms::handout",
        route = %route.name(),
        agent = %agent,
        key = %key_id,
        data_unit = %data_unit,
        index,
        request = %request,
        "key handed out"
    );
}
