//! `kmsctl user` and `kmsctl quorum` (SPEC S1, S4).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::Method;

use super::args::{duration_ms, quorum_operations, roles, PassphraseArgs};
use super::cluster::quorum_operation_of;
use super::context::{note, out, Ctx};
use super::exit::CliError;
use super::prompt::{self, Source};
use super::render;
use super::{profile, session};
use crate::api::{
    ApproveRequest, ChangeQuorumProgress, ChangeQuorumRequest, Done, Enabled, ErrorBody, ErrorCode,
    MemberUnlockProgress, NewQuorumOperation, NewUser, Passphrase, QuorumMemberPassphrase,
    QuorumView, Roles, User,
};
use crate::client::{segment, ClientError};

#[derive(Clone, Debug, Subcommand)]
pub enum UserCommand {
    /// List the users and their roles.
    List,
    /// Create a user with one or more roles; the passphrase is asked twice (or read from stdin).
    Create {
        id: String,
        /// A role, repeatable.
        #[arg(long = "role", value_name = "ROLE", required = true, value_parser = roles())]
        roles: Vec<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Replace the roles of a user.
    Roles {
        id: String,
        /// A role, repeatable.
        #[arg(long = "role", value_name = "ROLE", required = true, value_parser = roles())]
        roles: Vec<String>,
    },
    /// Allow a user to log in again.
    Enable { id: String },
    /// Stop a user from logging in and end what their certificate may do.
    Disable { id: String },
    /// Set a new passphrase for a user.
    Passphrase {
        id: String,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Delete a user.
    Delete { id: String },
}

#[derive(Clone, Debug, Subcommand)]
pub enum QuorumCommand {
    /// Show the quorum members, the threshold and the pending operations.
    Show,
    /// Start a quorum operation; members then approve it.
    Start {
        #[arg(value_parser = quorum_operations())]
        operation: String,
        /// The KMA, or for restore-from-backup the backup ID; none for rotate-ca.
        target: Option<String>,
        /// How long it waits for approvals [default: the security setting].
        #[arg(long, value_parser = duration_ms, value_name = "DURATION")]
        ttl: Option<u64>,
    },
    /// Cancel a pending quorum operation.
    Cancel { id: u64 },
    /// Start a change of the quorum: the KMA splits the master key among the new members and
    /// waits for each to enter their passphrase with `kmsctl quorum member-passphrase` (nobody
    /// types another member's); the current quorum then approves the change.
    Change {
        /// A member of the new quorum; repeat for each (at most 10).
        #[arg(long = "member", value_name = "ID", required = true)]
        members: Vec<String>,
        /// How many of them must approve a quorum operation.
        #[arg(long)]
        threshold: u8,
        /// How long it waits for approvals [default: the security setting].
        #[arg(long, value_parser = duration_ms, value_name = "DURATION")]
        ttl: Option<u64>,
    },
    /// Enter one new member's passphrase for a pending quorum change (the member types it; it
    /// wraps that member's share of the master key). Once every new member has, the change
    /// starts as a quorum operation.
    MemberPassphrase {
        /// The change, as `kmsctl quorum change` printed it.
        #[arg(long)]
        change: u64,
        /// The new member entering their passphrase.
        #[arg(long)]
        member: String,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Approve a pending operation as a quorum member (the member's passphrase unwraps its
    /// share); or, with --unlock, give the share straight to a locked KMA, without logging in
    /// (after a cold restart, when every KMA is locked).
    Approve(ApproveArgs),
}

/// `kmsctl quorum approve`: an operation ID through the session, or `--unlock HOST:PORT`.
#[derive(Clone, Debug, Args)]
pub struct ApproveArgs {
    /// The pending operation, as the command that started it printed it (not with --unlock).
    #[arg(required_unless_present = "unlock", conflicts_with = "unlock")]
    pub id: Option<u64>,
    /// The quorum member approving.
    #[arg(long)]
    pub member: String,
    /// The index the operation was started at (printed by the command that started it).
    #[arg(long, default_value_t = 0, conflicts_with = "unlock")]
    pub min_index: u64,
    /// Give the member's share straight to the locked KMA at this management address, with the
    /// passphrase alone (no login needed); each locked KMA is unlocked on its own.
    #[arg(long, value_name = "HOST:PORT")]
    pub unlock: Option<String>,
    /// With --unlock: the cluster's CA certificate, PEM [default: the profile's].
    // clap lets a requirement go when something conflicting with it (the ID) is present:
    // `conflicts_with` refuses `ID --ca` explicitly.
    #[arg(long, value_name = "CA.pem", requires = "unlock", conflicts_with = "id")]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
}

pub async fn user(ctx: &Ctx, command: UserCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        UserCommand::List => {
            let rows: Vec<User> = client.get("/v1/users").await?;
            ctx.show(&rows, |rows| render::users(rows))
        }
        UserCommand::Create { id, roles, passphrase } => {
            let source = Source::from_flag(passphrase.passphrase_stdin);
            let secret = prompt::new_passphrase(source, &format!("passphrase of user {id}"))?;
            let body = NewUser { id: id.clone(), roles, passphrase: secret.to_string() };
            let done = client.write(Method::POST, "/v1/users", Some(&body)).await;
            prompt::wipe(body.passphrase);
            ctx.done(&format!("User {id} created"), &done?)
        }
        UserCommand::Passphrase { id, passphrase } => {
            let source = Source::from_flag(passphrase.passphrase_stdin);
            let secret = prompt::new_passphrase(source, &format!("passphrase of user {id}"))?;
            let body = Passphrase { passphrase: secret.to_string() };
            let path = format!("/v1/users/{}/passphrase", segment(&id));
            let done = client.write(Method::PUT, &path, Some(&body)).await;
            prompt::wipe(body.passphrase);
            ctx.done(&format!("Passphrase of user {id} changed"), &done?)
        }
        UserCommand::Roles { id, roles } => {
            let path = format!("/v1/users/{}/roles", segment(&id));
            let done = client.write(Method::PUT, &path, Some(&Roles { roles })).await?;
            ctx.done(&format!("Roles of user {id} set"), &done)
        }
        UserCommand::Enable { id } => set_enabled(ctx, &id, true).await,
        UserCommand::Disable { id } => set_enabled(ctx, &id, false).await,
        UserCommand::Delete { id } => {
            let path = format!("/v1/users/{}", segment(&id));
            let done = client.write::<()>(Method::DELETE, &path, None).await?;
            ctx.done(&format!("User {id} deleted"), &done)
        }
    }
}

async fn set_enabled(ctx: &Ctx, id: &str, enabled: bool) -> Result<(), CliError> {
    let path = format!("/v1/users/{}/enabled", segment(id));
    let done = ctx.client.write(Method::PUT, &path, Some(&Enabled { enabled })).await?;
    let what = if enabled { "enabled" } else { "disabled" };
    ctx.done(&format!("User {id} {what}"), &done)
}

pub async fn quorum(ctx: &Ctx, command: QuorumCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        QuorumCommand::Show => {
            let view: QuorumView = client.get("/v1/quorum").await?;
            ctx.show(&view, render::quorum)
        }
        QuorumCommand::Start { operation, target, ttl } => {
            let target = target.unwrap_or_default();
            let body = NewQuorumOperation { operation: operation.clone(), target, ttl_ms: ttl };
            let done = client.write(Method::POST, "/v1/quorum/start", Some(&body)).await?;
            ctx.done(&format!("Quorum operation {operation} started"), &done)?;
            if let (Some(id), false) = (quorum_operation_of(&done), ctx.json) {
                note(&format!(
                    "help: each quorum member approves with: kmsctl quorum approve {id} --member \
                     MEMBER --min-index {}",
                    done.index
                ));
            }
            Ok(())
        }
        QuorumCommand::Cancel { id } => {
            let path = format!("/v1/quorum/operations/{id}");
            let done = client.write::<()>(Method::DELETE, &path, None).await?;
            ctx.done(&format!("Quorum operation {id} cancelled"), &done)
        }
        QuorumCommand::Change { members, threshold, ttl } => {
            let body = ChangeQuorumRequest { members, threshold, ttl_ms: ttl };
            let progress: ChangeQuorumProgress =
                client.send(Method::POST, "/v1/quorum/change", Some(&body)).await?;
            show_change(ctx, &progress)
        }
        QuorumCommand::MemberPassphrase { change, member, passphrase } => {
            let source = Source::from_flag(passphrase.passphrase_stdin);
            let what = format!("passphrase of new quorum member {member}");
            let secret = prompt::new_passphrase(source, &what)?;
            let body = QuorumMemberPassphrase {
                change,
                member: member.clone(),
                passphrase: secret.to_string(),
            };
            let answer = client.send(Method::POST, "/v1/quorum/change/member", Some(&body)).await;
            prompt::wipe(body.passphrase);
            show_change(ctx, &answer?)
        }
        QuorumCommand::Approve(args) => approve(ctx, args).await,
    }
}

/// The member's passphrase, from the terminal or standard input.
fn member_passphrase(
    member: &str,
    args: PassphraseArgs,
) -> Result<zeroize::Zeroizing<String>, CliError> {
    let source = Source::from_flag(args.passphrase_stdin);
    let prompt_text = format!("Passphrase of quorum member {member}: ");
    let what = format!("passphrase of quorum member {member}");
    prompt::passphrase(source, &prompt_text, &what, None)
}

/// Approves a pending operation through the session.
async fn approve(ctx: &Ctx, args: ApproveArgs) -> Result<(), CliError> {
    let Some(id) = args.id else {
        return Err(CliError::usage("kmsctl quorum approve needs an operation ID or --unlock"));
    };
    let member = args.member;
    let secret = member_passphrase(&member, args.passphrase)?;
    let body = ApproveRequest {
        operation: id,
        member: member.clone(),
        passphrase: secret.to_string(),
        min_index: args.min_index,
        on_behalf_of: None,
    };
    let answer = ctx.client.send(Method::POST, "/v1/quorum/approve", Some(&body)).await;
    prompt::wipe(body.passphrase);
    let done = approval_outcome(answer?)?;
    ctx.client.observe_index(done.index);
    ctx.done(&format!("Approval of operation {id} by {member}"), &done)
}

/// `kmsctl quorum approve --member M --unlock HOST:PORT`: the member's share straight to the
/// locked KMA, over TLS that authenticates the KMA by the cluster CA, without a session (the
/// dispatcher routes it here before it loads one).
pub async fn approve_unlock(
    home: &Path,
    name: &str,
    json: bool,
    args: &ApproveArgs,
) -> Result<(), CliError> {
    let Some(unlock) = &args.unlock else {
        return Err(CliError::usage("kmsctl quorum approve --unlock needs HOST:PORT"));
    };
    let address = session::check_address_of("--unlock", unlock)?;
    let member = &args.member;
    let ca_pem = match &args.ca {
        Some(path) => std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?,
        None => saved_ca(home, name, member, &address)?,
    };
    let secret = member_passphrase(member, args.passphrase)?;
    let progress = crate::client::approve_unlock(&address, &ca_pem, member, &secret).await?;
    drop(secret);
    if json {
        return out(&render::json(&progress));
    }
    out(&render::member_unlock(member, &progress))?;
    if let Some(help) = member_unlock_help(&progress, &address) {
        note(&help);
    }
    Ok(())
}

/// The CA a profile saved at login (kept by `logout`), for `--unlock` without `--ca`.
fn saved_ca(home: &Path, name: &str, member: &str, address: &str) -> Result<String, CliError> {
    match profile::load(home, name) {
        Ok(saved) => saved.ca_pem(),
        Err(CliError::NotLoggedIn { .. }) => Err(CliError::Usage {
            message: format!("no --ca given and no profile '{name}' holds the cluster's CA"),
            help: Some(format!(
                "kmsctl quorum approve --member {member} --unlock {address} --ca CA.pem"
            )),
        }),
        Err(e) => Err(e),
    }
}

/// The next step after a member gave their share: another member, while the KMA still needs
/// shares.
pub fn member_unlock_help(progress: &MemberUnlockProgress, address: &str) -> Option<String> {
    if progress.unlocked || progress.members_missing() == 0 {
        return None;
    }
    Some(format!(
        "help: the next member runs: kmsctl quorum approve --member MEMBER --unlock {address}"
    ))
}

/// Where a quorum change stands: who still has to enter a passphrase, or the operation the
/// current quorum now approves.
fn show_change(ctx: &Ctx, progress: &ChangeQuorumProgress) -> Result<(), CliError> {
    if let Some(index) = progress.index {
        ctx.client.observe_index(index);
    }
    ctx.show(progress, |progress| match (progress.operation, progress.index) {
        (Some(operation), Some(index)) => format!(
            "Quorum change {}: every new member entered their passphrase; quorum operation \
             {operation} started at index {index}\n",
            progress.change
        ),
        _ => format!(
            "Quorum change {}: waiting for {}\n",
            progress.change,
            progress.waiting_for.join(", ")
        ),
    })?;
    if ctx.json {
        return Ok(());
    }
    match (progress.operation, progress.index) {
        (Some(operation), Some(index)) => note(&format!(
            "help: the current quorum approves with: kmsctl quorum approve {operation} --member \
             MEMBER --min-index {index}"
        )),
        _ => note(&format!(
            "help: each new member, in turn: kmsctl quorum member-passphrase --change {} \
             --member ID",
            progress.change
        )),
    }
    Ok(())
}

/// The approval endpoint answers a [`Done`], or (as the node serves it today) the proposal's
/// `Result<ApplyResponse, ProposeError>` as JSON: `{"Ok":{"index":..,"result":{"Ok":reply}}}`,
/// a rejection in `result.Err`, no leader in `Err`. Both become a `Done` or a refusal.
pub fn approval_outcome(answer: serde_json::Value) -> Result<Done, CliError> {
    if let Ok(done) = serde_json::from_value::<Done>(answer.clone()) {
        return Ok(done);
    }
    let refusal = |code: ErrorCode, message: String, retryable: bool| {
        let error = ErrorBody::new(code, message).with_retryable(retryable);
        let status = code.http_status();
        CliError::Client(ClientError::Api { status, address: "the approving KMA".into(), error })
    };
    if let Some(proposed) = answer.get("Ok") {
        let index = proposed.get("index").and_then(serde_json::Value::as_u64).unwrap_or(0);
        match proposed.get("result") {
            Some(result) if result.get("Ok").is_some() => {
                // The state machine's reply, rendered as every other command's `Done.detail`.
                let detail = serde_json::from_value::<statemachine::Reply>(result["Ok"].clone())
                    .map_or_else(|_| result["Ok"].clone(), |reply| crate::view::reply(&reply));
                return Ok(Done { index, detail });
            }
            Some(result) if result.get("Err").is_some() => {
                let message = format!("the approval was rejected: {}", result["Err"]);
                return Err(refusal(ErrorCode::Rejected, message, false));
            }
            _ => {}
        }
    }
    if let Some(error) = answer.get("Err") {
        let message = format!("the approval could not be proposed: {error}");
        return Err(refusal(ErrorCode::Unavailable, message, true));
    }
    Err(CliError::Other {
        message: format!("unexpected answer to the approval: {answer}"),
        help: None,
    })
}
