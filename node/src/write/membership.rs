//! Membership changes: learners added, promoted to voters, voters removed. They run on the
//! leader; a KMA that does not lead sends the request there.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, Raft};
use raft_storage::KmaRaft;

use crate::transport::wire::{MembershipRequest, POSTCARD};

/// The handle that changes the membership.
#[derive(Clone)]
pub struct Membership {
    pub raft: Raft<KmaRaft>,
    pub node_id: u64,
    /// An HTTPS client authenticated as this KMA.
    pub http: reqwest::Client,
}

impl Membership {
    /// Runs a membership change on the leader (forwarded there if needed).
    pub async fn change_membership(&self, request: MembershipRequest) -> Result<u64, String> {
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
                let voters = ChangeMembers::RemoveVoters(BTreeSet::from([node_id]));
                match self.raft.change_membership(voters, true).await {
                    Ok(_) => {
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
