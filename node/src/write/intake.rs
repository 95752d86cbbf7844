//! The intake of commands: from users (through a listener, which authenticated them) and from
//! other KMAs (forwarded on Raft links, arriving through `transport::link`'s channel). Each
//! is checked here once, whichever way it came, before it reaches [`Proposer::propose`].

use raft_storage::StateHandle;
use statemachine::quorum::QuorumOperation;
use statemachine::{Access, Actor, Command};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::transport::link::InboundProposal;
use crate::write::{Proposal, ProposeError, ProposeRequest, ProposeResponse, Proposer};

/// Answers the proposals other KMAs forward on Raft links, each on its own task, until the
/// link server is gone.
pub async fn serve_forwarded(proposer: Proposer, mut inbound: mpsc::Receiver<InboundProposal>) {
    while let Some(InboundProposal { from_node, request, reply }) = inbound.recv().await {
        let proposer = proposer.clone();
        tokio::spawn(async move {
            let _ = reply.send(propose_forwarded(&proposer, from_node, request).await);
        });
    }
}

/// A proposal the KMA `node` forwards on behalf of the client it authenticated (over HTTP or a
/// Raft link): only a member KMA may, and it must name that client.
pub async fn propose_forwarded(
    proposer: &Proposer,
    node: u64,
    request: ProposeRequest,
) -> ProposeResponse {
    let mut member = proposer.inner.log.address_of(node).is_some();
    if let Some(state) = &proposer.inner.state {
        // Between its deletion and its removal from the membership, a deleted KMA is still
        // listed there: the state says it speaks for no one any more.
        member &= !state.read().await.kma_deleted(node);
    }
    match request.actor {
        Some(actor) if member => {
            let origin_node_id = request.origin_node_id.unwrap_or(node);
            let request_id = request.request_id;
            let command = request.command;
            proposer.propose(Proposal { actor, origin_node_id, request_id, command }).await
        }
        _ => Err(ProposeError::Unauthorised(format!(
            "KMA {node} is not a member of this cluster: it was deleted, or has not joined yet"
        ))),
    }
}

/// Checks a command a user sent: commands that need the node's own proof (quorum approvals,
/// a re-split master key) have their own endpoints, and a passphrase becomes a verifier here,
/// so that the cluster's minimum length holds and clients never choose verifiers.
///
/// argon2id is slow by design, so it runs on a blocking thread and only for a user the access
/// table lets issue the command (issue #16 point 8): for anyone else the command goes on
/// without a verifier, and `apply` refuses it as it refuses every command of a user without
/// the role (audited), having cost no argon2 work. The passphrase is zeroized when dropped.
pub async fn user_command(
    state: &StateHandle,
    user: &str,
    command: Command,
    passphrase: Option<Zeroizing<String>>,
) -> Result<Command, ProposeError> {
    let (may_issue, len_min) = {
        let state = state.read().await;
        let access = Access::Command(command.kind());
        let may_issue = state.check_access(&Actor::User(user.into()), access).is_ok();
        (may_issue, state.meta().security.passphrase_len_min)
    };
    prepare_user_command(command, passphrase, may_issue, len_min).await
}

/// [`user_command`] once the state was read: whether the user may issue the command, and the
/// cluster's minimum passphrase length.
pub async fn prepare_user_command(
    mut command: Command,
    passphrase: Option<Zeroizing<String>>,
    may_issue: bool,
    len_min: u32,
) -> Result<Command, ProposeError> {
    let elsewhere = |what: &str| Err(ProposeError::Unauthorised(what.into()));
    match &command {
        Command::ApproveQuorumOperation { .. } => {
            return elsewhere(
                "approvals go through POST /v1/quorum/approve with the member's passphrase",
            )
        }
        Command::StartQuorumOperation {
            operation: QuorumOperation::ChangeQuorum { .. }, ..
        } => return elsewhere(
            "a new quorum goes through POST /v1/quorum/change (the KMA re-splits the master key)",
        ),
        _ => {}
    }
    let verifier = match &mut command {
        Command::CreateUser { passphrase_verifier, .. }
        | Command::SetUserPassphrase { passphrase_verifier, .. }
        | Command::CreateAgent { passphrase_verifier, .. }
        | Command::SetAgentPassphrase { passphrase_verifier, .. }
        | Command::CreateKma { passphrase_verifier, .. } => Some(passphrase_verifier),
        _ => None,
    };
    match (verifier, passphrase) {
        (Some(verifier), Some(passphrase)) if may_issue => {
            let made = tokio::task::spawn_blocking(move || make_verifier(&passphrase, len_min))
                .await
                .map_err(|e| ProposeError::Internal(format!("making the verifier: {e}")))?;
            *verifier = made.map_err(ProposeError::Unauthorised)?;
        }
        (Some(verifier), Some(_)) => verifier.clear(),
        (Some(_), None) => {
            return elsewhere(
                "this command sets a passphrase: send it in the request's passphrase field",
            )
        }
        (None, Some(_)) => return elsewhere("this command takes no passphrase"),
        (None, None) => {}
    }
    Ok(command)
}

/// A passphrase verifier, once the passphrase meets the cluster's minimum length. argon2id is
/// slow by design: callers off the async runtime's hot path (see `security_core`).
pub fn make_verifier(passphrase: &str, len_min: u32) -> Result<Vec<u8>, String> {
    if passphrase.chars().count() < len_min as usize {
        return Err(format!(
            "the passphrase is shorter than the cluster's minimum of {len_min} characters"
        ));
    }
    let params = security_core::KdfParams::default();
    security_core::create_verifier(passphrase, params).map_err(|e| e.to_string())
}
