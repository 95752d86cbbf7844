//! Forwarding: a KMA that does not lead sends each proposal to the leader, which answers with
//! the applied result. Links first ([`crate::transport::forward_links`]); a leader of an older
//! version that does not take proposals on a link gets them over HTTP.

use std::time::Duration;

use crate::transport::forward_links::{ForwardFailure, ForwardLinks};
use crate::transport::wire::POSTCARD;
use crate::write::{
    BoxFuture, LeaderLink, Proposal, ProposeError, ProposeRequest, ProposeResponse, Proposer,
};

/// The leader could not be reached, or the exchange broke after the proposal may have reached
/// it (the outcome is then unknown): the proposer is told so, and may retry with the same
/// request ID.
#[derive(Clone, Debug)]
pub struct Unreachable(pub String);

impl Proposer {
    /// Forwards a proposal to the leader `leader`, on behalf of the actor it names.
    pub(crate) async fn forward(&self, leader: u64, proposal: Proposal) -> ProposeResponse {
        let address = self.inner.log.address_of(leader).ok_or(ProposeError::NoLeader)?;
        let request = ProposeRequest {
            actor: Some(proposal.actor),
            origin_node_id: Some(proposal.origin_node_id),
            request_id: proposal.request_id,
            command: proposal.command,
            // The verifier was made on the KMA that took the passphrase.
            passphrase: None,
        };
        let started = std::time::Instant::now();
        let answered = self.inner.leader_link.propose(&address, request).await;
        if matches!(answered, Ok(Ok(_))) {
            self.inner.stages.record(raft_storage::Stage::Forward, started.elapsed());
        }
        match answered {
            Ok(response) => response,
            Err(Unreachable(detail)) => {
                Err(ProposeError::LeaderUnreachable { leader_id: leader, detail })
            }
        }
    }
}

/// The production [`LeaderLink`]: pooled Raft links, then HTTP for a leader that runs no
/// proposals on links.
pub struct LinksThenHttp {
    pub links: ForwardLinks,
    /// An HTTPS client authenticated as this KMA.
    pub http: reqwest::Client,
}

impl LeaderLink for LinksThenHttp {
    fn propose(
        &self,
        address: &str,
        request: ProposeRequest,
    ) -> BoxFuture<'_, Result<ProposeResponse, Unreachable>> {
        let address = address.to_string();
        Box::pin(async move {
            match self.links.propose(&address, request.clone()).await {
                Ok(response) => Ok(response),
                Err(ForwardFailure::Unreachable(detail)) => Err(Unreachable(detail)),
                Err(ForwardFailure::NotRun(why)) => {
                    tracing::debug!(%address, %why, "the leader took no proposal on a Raft link");
                    self.over_http(&address, &request).await
                }
            }
        })
    }
}

impl LinksThenHttp {
    async fn over_http(
        &self,
        address: &str,
        request: &ProposeRequest,
    ) -> Result<ProposeResponse, Unreachable> {
        let unreachable = Unreachable;
        let body = postcard::to_allocvec(request).map_err(|e| unreachable(e.to_string()))?;
        let response = self
            .http
            .post(format!("https://{address}/v1/propose"))
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let bytes = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
        postcard::from_bytes::<ProposeResponse>(&bytes).map_err(|e| unreachable(e.to_string()))
    }
}
