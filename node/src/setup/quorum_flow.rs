//! Scripted quorum operations for setups where one operator holds every secret: `kma local`,
//! the container harness and tests. Each function is what a Security Officer and the quorum
//! members would do by hand: start the operation, then enter approvals until the threshold.

use statemachine::quorum::QuorumOperation;
use statemachine::reply::Reply;
use statemachine::{Command, Reject};

use crate::client::KmaClient;
use crate::setup::InitSecrets;

/// Proposes `command`, accepting `tolerated` rejections (e.g. "already exists" on a rerun).
async fn propose(
    client: &KmaClient,
    peer: &str,
    command: Command,
    passphrase: Option<&str>,
    tolerated: fn(&Reject) -> bool,
) -> anyhow::Result<(u64, Option<Reply>)> {
    let applied = client.propose_with_passphrase(peer, None, command, passphrase).await??;
    match applied.result {
        Ok(reply) => Ok((applied.index, Some(reply))),
        Err(reject) if tolerated(&reject) => Ok((applied.index, None)),
        Err(reject) => Err(anyhow::anyhow!("{reject}")),
    }
}

/// Starts `operation` and approves it with the first `threshold` members of the quorum.
pub async fn run_quorum_operation(
    client: &KmaClient,
    peer: &str,
    secrets: &InitSecrets,
    operation: QuorumOperation,
) -> anyhow::Result<()> {
    run_unless(client, peer, secrets, operation, |_| false).await
}

/// As `run_quorum_operation`, but done at once when the start is refused with a `tolerated`
/// rejection (the operation's effect is already there).
async fn run_unless(
    client: &KmaClient,
    peer: &str,
    secrets: &InitSecrets,
    operation: QuorumOperation,
    tolerated: fn(&Reject) -> bool,
) -> anyhow::Result<()> {
    let command = Command::StartQuorumOperation { operation, ttl_ms: None };
    let (index, reply) = propose(client, peer, command, None, tolerated).await?;
    if reply.is_none() {
        return Ok(());
    }
    let Some(Reply::QuorumOperationStarted { id, .. }) = reply else {
        anyhow::bail!("unexpected answer to a quorum operation: {reply:?}");
    };
    for member in secrets.quorum.iter().take(usize::from(secrets.quorum_threshold)) {
        let applied = client.approve(peer, id, &member.id, &member.passphrase, index).await??;
        if let Err(reject) = applied.result {
            anyhow::bail!("approval by '{}' refused: {reject}", member.id);
        }
    }
    Ok(())
}

/// Creates the entry of a new KMA (and its site) and has the quorum approve its join; the new
/// KMA then runs `kma join` with `passphrase`.
pub async fn admit_kma(
    client: &KmaClient,
    peer: &str,
    secrets: &InitSecrets,
    (name, site): (&str, &str),
    passphrase: &str,
) -> anyhow::Result<()> {
    let create_site = Command::CreateSite { name: site.into() };
    propose(client, peer, create_site, None, |r| matches!(r, Reject::SiteExists { .. })).await?;
    let create_kma = Command::CreateKma {
        name: name.into(),
        site: site.into(),
        passphrase_verifier: Vec::new(),
    };
    let exists = |r: &Reject| matches!(r, Reject::KmaExists { .. });
    propose(client, peer, create_kma, Some(passphrase), exists).await?;
    // On a rerun the entry may already be approved or a member: nothing is left to approve.
    let join = QuorumOperation::JoinKma { kma: name.into() };
    let done = |r: &Reject| matches!(r, Reject::KmaWrongStatus { .. });
    run_unless(client, peer, secrets, join, done).await
}

/// Unlocks a KMA through the quorum and, when asked, lets it unlock itself after reboots.
pub async fn unlock_kma(
    client: &KmaClient,
    peer: &str,
    secrets: &InitSecrets,
    name: &str,
    autonomous: bool,
) -> anyhow::Result<()> {
    run_quorum_operation(client, peer, secrets, QuorumOperation::UnlockKma { kma: name.into() })
        .await?;
    if autonomous {
        let operation = QuorumOperation::EnableAutonomousUnlock { kma: name.into() };
        run_quorum_operation(client, peer, secrets, operation).await?;
    }
    Ok(())
}
