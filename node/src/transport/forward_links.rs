//! Proposals a follower forwards to the leader, on Raft links ([`crate::transport::link`]) kept open
//! between calls: a forwarded write costs a frame each way instead of an HTTP/2 request and its
//! task hops on both ends.
//!
//! A link carries one call at a time and a proposal holds its link until the entry commits, so
//! each leader address has a pool of idle links; concurrent proposals open more, up to
//! [`LINKS_MAX`] at once (beyond, a proposal waits for one). A link is reused only while it is
//! younger than [`LINK_REUSE_MAX`], well inside the leader's idle timeout, and still open (a
//! leader that restarted or closed it is seen before the call is sent). A failed exchange is
//! never sent again: the leader may have run the proposal, and the proposer is told the outcome
//! is unknown (as with HTTP); the other idle links to that leader are dropped with it. A leader that does not run the call (a KMA of an older version)
//! answers with a refusal, and the caller goes by HTTP instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::transport::link::{Answer, Link, LinkError, RaftCall};
use crate::transport::wire::{ProposeRequest, ProposeResponse};

/// How long a forwarded proposal may take, as the HTTP route allows.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled link older than this is closed rather than reused (the leader closes idle links
/// after two minutes).
pub const LINK_REUSE_MAX: Duration = Duration::from_secs(60);

/// Links carrying a call at once (and so, at most, idle per leader): each is a TLS connection
/// and, on the leader, a task, so a site with many drives behind one follower does not open
/// one per drive.
pub const LINKS_MAX: usize = 64;

/// Why a proposal did not go over a link.
pub enum ForwardFailure {
    /// The leader did not run the call (an older version, or no Raft link protocol): nothing
    /// happened, so the HTTP route may be tried.
    NotRun(String),
    /// No link could be opened, or it failed after the call may have reached the leader (the
    /// outcome is then unknown).
    Unreachable(String),
}

/// The idle links to each leader address this KMA has forwarded to.
pub struct ForwardLinks {
    tls: Arc<rustls::ClientConfig>,
    idle: Mutex<BTreeMap<String, Vec<(Link, Instant)>>>,
    in_use: tokio::sync::Semaphore,
}

impl ForwardLinks {
    /// `tls` must offer the Raft link protocol (`link::client_config`).
    pub fn new(tls: Arc<rustls::ClientConfig>) -> ForwardLinks {
        let in_use = tokio::sync::Semaphore::new(LINKS_MAX);
        ForwardLinks { tls, idle: Mutex::new(BTreeMap::new()), in_use }
    }

    /// Sends `request` to the leader at `address` and returns its answer.
    pub async fn propose(
        &self,
        address: &str,
        request: ProposeRequest,
    ) -> Result<ProposeResponse, ForwardFailure> {
        let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
        let unreachable = |why: &str| ForwardFailure::Unreachable(format!("{address}: {why}"));
        let permit = tokio::time::timeout_at(deadline, self.in_use.acquire()).await;
        let Ok(Ok(_permit)) = permit else {
            return Err(unreachable("every link to the leader stayed busy"));
        };
        let (mut link, opened_at) = match self.take(address) {
            Some(pooled) => pooled,
            None => {
                let connect = Link::connect(self.tls.clone(), address);
                match tokio::time::timeout_at(deadline, connect).await {
                    Ok(Ok(link)) => (link, Instant::now()),
                    Ok(Err(LinkError::Protocol)) => {
                        return Err(ForwardFailure::NotRun(format!(
                            "{address}: no Raft link protocol"
                        )))
                    }
                    Ok(Err(error)) => return Err(unreachable(&format!("{error:?}"))),
                    Err(_elapsed) => return Err(unreachable("no connection within the time")),
                }
            }
        };
        let call = RaftCall::Propose(request);
        let exchanged = tokio::time::timeout_at(deadline, link.exchange(&call)).await;
        if !matches!(exchanged, Ok(Ok(Ok(_)))) {
            // Whatever broke this link (a restart, a reset) broke the idle ones too.
            self.idle().remove(address);
        }
        match exchanged {
            Ok(Ok(Ok(Answer::Done(response)))) => {
                self.put_back(address, link, opened_at);
                Ok(response)
            }
            Ok(Ok(Ok(Answer::Refused(why)))) => Err(ForwardFailure::NotRun(why)),
            Ok(Ok(Err(error))) => {
                Err(ForwardFailure::Unreachable(format!("undecodable answer: {error}")))
            }
            Ok(Err(error)) => Err(ForwardFailure::Unreachable(format!("{address}: {error:?}"))),
            Err(_elapsed) => Err(ForwardFailure::Unreachable(format!(
                "{address}: no answer within {}s",
                FORWARD_TIMEOUT.as_secs()
            ))),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<(Link, Instant)>>> {
        // Only links move in and out under this lock: a panic cannot leave it inconsistent.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, address: &str) -> Option<(Link, Instant)> {
        let mut idle = self.idle();
        let links = idle.get_mut(address)?;
        // The newest first; old or closed ones are dropped (closed) on the way.
        while let Some((link, opened_at)) = links.pop() {
            if opened_at.elapsed() < LINK_REUSE_MAX && link.is_open() {
                return Some((link, opened_at));
            }
        }
        None
    }

    fn put_back(&self, address: &str, link: Link, opened_at: Instant) {
        let mut idle = self.idle();
        // Links to a former leader's address would otherwise wait for it to lead again.
        idle.retain(|_, links| {
            links.retain(|(_, opened_at)| opened_at.elapsed() < LINK_REUSE_MAX);
            !links.is_empty()
        });
        if opened_at.elapsed() < LINK_REUSE_MAX {
            idle.entry(address.to_string()).or_default().push((link, opened_at));
        }
    }
}
