//! What the current Raft membership says about a node: read from openraft's metrics, so it is
//! as current as this KMA's log.

use std::collections::{BTreeMap, BTreeSet};

use openraft::Raft;
use raft_storage::KmaRaft;

/// A voter or learner of the current membership: a KMA deleted from the cluster still has a
/// certificate of its CA, but no longer speaks for anyone.
pub fn is_member(raft: &Raft<KmaRaft>, node_id: u64) -> bool {
    address_of(raft, node_id).is_some()
}

/// host:port of a member's management listener.
pub fn address_of(raft: &Raft<KmaRaft>, node_id: u64) -> Option<String> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let mut nodes = metrics.membership_config.membership().nodes();
    nodes.find(|(id, _)| **id == node_id).map(|(_, node)| node.addr.clone())
}

/// The voters of the current membership other than `me`, with their addresses.
pub fn other_voters(raft: &Raft<KmaRaft>, me: u64) -> BTreeMap<u64, String> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .filter(|(id, _)| voters.contains(id) && **id != me)
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect()
}

/// Every member (voters and learners) with its address.
pub fn all(raft: &Raft<KmaRaft>) -> Vec<(u64, String)> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    metrics.membership_config.membership().nodes().map(|(id, n)| (*id, n.addr.clone())).collect()
}

/// The leader this KMA knows of, if any.
pub fn leader(raft: &Raft<KmaRaft>) -> Option<u64> {
    raft.metrics().borrow().current_leader
}

/// A voter of the current membership.
pub fn is_voter(raft: &Raft<KmaRaft>, node_id: u64) -> bool {
    raft.metrics().borrow().membership_config.membership().voter_ids().any(|id| id == node_id)
}
