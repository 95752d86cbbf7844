//! Membership changes: learners added, promoted to voters, voters removed. They run on the
//! leader; a KMA that does not lead sends the request there.
//!
//! Each change is the effect of a replicated, audited command, and the leader checks that the
//! command is there before it changes anything (issue #16 point 3): a learner is added or
//! promoted only for a KMA entry the quorum approved to join, and a KMA is removed only once
//! the cluster deleted it. No one, user or KMA, changes the membership by asking alone.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, Raft};
use raft_storage::{KmaRaft, StateHandle};
use statemachine::cluster::KmaStatus;

use crate::transport::wire::{MembershipRequest, POSTCARD};

/// The handle that changes the membership.
#[derive(Clone)]
pub struct Membership {
    pub raft: Raft<KmaRaft>,
    /// The applied state: the commands each change must follow from.
    pub state: StateHandle,
    pub node_id: u64,
    /// An HTTPS client authenticated as this KMA.
    pub http: reqwest::Client,
}

/// Why the applied state does not call for `request`, if it does not.
pub fn unwarranted(state: &statemachine::State, request: &MembershipRequest) -> Option<String> {
    let node_id = match request {
        MembershipRequest::AddLearner { node_id, .. } | MembershipRequest::Promote { node_id } => {
            *node_id
        }
        MembershipRequest::Remove { node_id } => {
            return (!state.kma_deleted(*node_id)).then(|| {
                format!(
                    "KMA {node_id} is not deleted: a KMA leaves the membership only after a \
                     Security Officer deletes it (kmsctl kma delete)"
                )
            })
        }
    };
    match state.kma_by_node_id(node_id).map(|kma| kma.status) {
        Some(KmaStatus::JoinApproved | KmaStatus::Member) => None,
        Some(KmaStatus::Created) => Some(format!(
            "the join of KMA {node_id} waits for the quorum's approval: it cannot enter the \
             membership before"
        )),
        None => {
            Some(format!("no KMA entry holds node ID {node_id}: it cannot enter the membership"))
        }
    }
}

impl Membership {
    /// Runs a membership change on the leader (forwarded there if needed), once the applied
    /// state calls for it.
    pub async fn change_membership(&self, request: MembershipRequest) -> Result<u64, String> {
        if let Some(why) = unwarranted(&*self.state.read().await, &request) {
            return Err(why);
        }
        let result = match request {
            MembershipRequest::AddLearner { node_id, address } => {
                self.raft.add_learner(node_id, BasicNode { addr: address }, false).await
            }
            MembershipRequest::Promote { node_id } => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), true)
                    .await
            }
            MembershipRequest::Remove { node_id } => {
                let voter = crate::transport::members::is_voter(&self.raft, node_id);
                let voters = ChangeMembers::RemoveVoters(BTreeSet::from([node_id]));
                let removed = match voter {
                    true => self.raft.change_membership(voters, true).await.map(|_| ()),
                    false => Ok(()),
                };
                match removed {
                    Ok(()) => {
                        self.raft
                            .change_membership(
                                ChangeMembers::RemoveNodes(BTreeSet::from([node_id])),
                                false,
                            )
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        result.map(|response| response.log_id.index).map_err(|e| e.to_string())
    }

    /// Sends a membership change to the leader (this KMA or another).
    pub async fn membership_on_leader(&self, request: MembershipRequest) -> Result<u64, String> {
        let leader = self.raft.metrics().borrow().current_leader.ok_or("no leader is known")?;
        if leader == self.node_id {
            return self.change_membership(request).await;
        }
        let address = crate::transport::members::address_of(&self.raft, leader)
            .ok_or("the leader's address is unknown")?;
        let body = postcard::to_allocvec(&request).map_err(|e| e.to_string())?;
        let response = self
            .http
            .post(format!("https://{address}/v1/members"))
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("{e:#}"))?;
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        postcard::from_bytes::<Result<u64, String>>(&bytes).map_err(|e| e.to_string())?
    }
}
