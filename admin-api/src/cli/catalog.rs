//! `kmsctl policy`, `group` and `agent` (SPEC O1–O3).

use clap::{ArgGroup, Subcommand};
use reqwest::Method;

use super::args::{duration_ms, PageArgs, PassphraseArgs};
use super::context::{note, Ctx};
use super::exit::CliError;
use super::prompt::{self, Source};
use super::render;
use crate::api::{
    Agent, AgentQuery, Enabled, GroupName, KeyGroup, KeyPolicy, KmipCertificate, KmipEnrollment,
    KmipRights, NewAgent, NewKeyGroup, Passphrase, PolicyFlags, SiteName,
};
use crate::client::segment;

#[derive(Clone, Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the key policies.
    List,
    /// Create a key policy.
    Create {
        name: String,
        /// How long a key encrypts after its first use, e.g. 30d.
        #[arg(long, value_parser = duration_ms, value_name = "DURATION")]
        encryption_period: u64,
        /// How long a key decrypts after its first use (at least the encryption period), e.g. 1y.
        #[arg(long, value_parser = duration_ms, value_name = "DURATION")]
        cryptoperiod: u64,
        /// Keys of groups with this policy may be exported to transfer partners.
        #[arg(long)]
        allow_export: bool,
        /// Keys may be imported into groups with this policy.
        #[arg(long)]
        allow_import: bool,
    },
    /// Change the export and import flags of a policy (the one not given stays).
    #[command(group(ArgGroup::new("flags").required(true).multiple(true)))]
    Flags {
        name: String,
        #[arg(long, group = "flags", value_name = "true|false")]
        allow_export: Option<bool>,
        #[arg(long, group = "flags", value_name = "true|false")]
        allow_import: Option<bool>,
    },
    /// Delete a key policy no key group uses.
    Delete { name: String },
}

#[derive(Clone, Debug, Subcommand)]
pub enum GroupCommand {
    /// List the key groups.
    List,
    /// Create a key group bound to a policy.
    Create {
        name: String,
        #[arg(long)]
        policy: String,
    },
    /// Delete a key group that holds no key.
    Delete { name: String },
}

#[derive(Clone, Debug, Subcommand)]
pub enum AgentCommand {
    /// List agents, optionally filtered.
    List {
        #[arg(long)]
        site: Option<String>,
        #[arg(long, value_name = "true|false")]
        enabled: Option<bool>,
        /// Only agents that can access this key group.
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one agent.
    Show { id: String },
    /// Create an agent; its enrollment passphrase is asked twice (or read from stdin).
    Create {
        id: String,
        #[arg(long)]
        site: String,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Set a new enrollment passphrase (the agent enrolls again with it).
    Passphrase {
        id: String,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Allow an agent to use keys again.
    Enable { id: String },
    /// Stop an agent from using keys.
    Disable { id: String },
    /// Move an agent to another site.
    Site { id: String, site: String },
    /// Delete an agent.
    Delete { id: String },
    /// Let an agent use the keys of a key group.
    AddGroup { id: String, group: String },
    /// Take a key group away from an agent.
    RemoveGroup { id: String, group: String },
    /// Set the key group new keys of an agent come from.
    DefaultGroup { id: String, group: String },
    /// Enroll a KMIP client (a tape library) from its certificate request: writes the
    /// certificate it presents from now on to --out (Operator).
    EnrollKmip {
        id: String,
        /// Its certificate request, PEM PKCS#10.
        #[arg(long)]
        csr: std::path::PathBuf,
        /// Where to write its certificate (never overwritten).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Grant or withdraw a KMIP client's right to revoke and destroy keys (Security Officer).
    KmipRights {
        id: String,
        #[arg(long, value_name = "on|off")]
        revoke_destroy: Switch,
    },
}

/// A yes/no setting, spelled as an operator says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

pub async fn policy(ctx: &Ctx, command: PolicyCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        PolicyCommand::List => {
            let rows: Vec<KeyPolicy> = client.get("/v1/policies").await?;
            ctx.show(&rows, |rows| render::policies(rows))
        }
        PolicyCommand::Create {
            name,
            encryption_period,
            cryptoperiod,
            allow_export,
            allow_import,
        } => {
            let body = KeyPolicy {
                name: name.clone(),
                encryption_period_ms: encryption_period,
                cryptoperiod_ms: cryptoperiod,
                allow_export,
                allow_import,
            };
            let done = client.write(Method::POST, "/v1/policies", Some(&body)).await?;
            ctx.done(&format!("Key policy {name} created"), &done)
        }
        PolicyCommand::Flags { name, allow_export, allow_import } => {
            let rows: Vec<KeyPolicy> = client.get("/v1/policies").await?;
            let now = rows.iter().find(|p| p.name == name);
            let body = match (allow_export, allow_import, now) {
                (Some(allow_export), Some(allow_import), _) => {
                    PolicyFlags { allow_export, allow_import }
                }
                (export, import, Some(now)) => PolicyFlags {
                    allow_export: export.unwrap_or(now.allow_export),
                    allow_import: import.unwrap_or(now.allow_import),
                },
                (_, _, None) => return Err(CliError::usage(format!("no key policy {name}"))),
            };
            let path = format!("/v1/policies/{}/flags", segment(&name));
            let done = client.write(Method::PUT, &path, Some(&body)).await?;
            ctx.done(&format!("Flags of key policy {name} set"), &done)
        }
        PolicyCommand::Delete { name } => {
            let path = format!("/v1/policies/{}", segment(&name));
            let done = client.write::<()>(Method::DELETE, &path, None).await?;
            ctx.done(&format!("Key policy {name} deleted"), &done)
        }
    }
}

pub async fn group(ctx: &Ctx, command: GroupCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        GroupCommand::List => {
            let rows: Vec<KeyGroup> = client.get("/v1/groups").await?;
            ctx.show(&rows, |rows| render::groups(rows))
        }
        GroupCommand::Create { name, policy } => {
            let body = NewKeyGroup { name: name.clone(), policy };
            let done = client.write(Method::POST, "/v1/groups", Some(&body)).await?;
            ctx.done(&format!("Key group {name} created"), &done)
        }
        GroupCommand::Delete { name } => {
            let path = format!("/v1/groups/{}", segment(&name));
            let done = client.write::<()>(Method::DELETE, &path, None).await?;
            ctx.done(&format!("Key group {name} deleted"), &done)
        }
    }
}

pub async fn agent(ctx: &Ctx, command: AgentCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    let agent_path = |id: &str, rest: &str| format!("/v1/agents/{}{rest}", segment(id));
    let (what, method, path, body) = match command {
        AgentCommand::List { site, enabled, group, page } => {
            return agent_list(ctx, site, enabled, group, &page).await;
        }
        kmip @ (AgentCommand::EnrollKmip { .. } | AgentCommand::KmipRights { .. }) => {
            return agent_kmip(ctx, kmip).await;
        }
        AgentCommand::Show { id } => {
            let agent: Agent = client.get(&agent_path(&id, "")).await?;
            return ctx.show(&agent, render::agent);
        }
        AgentCommand::Create { id, site, passphrase } => {
            return agent_create(ctx, id, site, passphrase).await
        }
        AgentCommand::Passphrase { id, passphrase } => {
            let source = Source::from_flag(passphrase.passphrase_stdin);
            let secret =
                prompt::new_passphrase(source, &format!("enrollment passphrase of agent {id}"))?;
            let body = Passphrase { passphrase: secret.to_string() };
            let done =
                client.write(Method::PUT, &agent_path(&id, "/passphrase"), Some(&body)).await;
            prompt::wipe(body.passphrase);
            return ctx
                .done(&format!("Passphrase of agent {id} set; it enrolls again with it"), &done?);
        }
        AgentCommand::Enable { id } => {
            let body = serde_json::to_value(Enabled { enabled: true });
            (format!("Agent {id} enabled"), Method::PUT, agent_path(&id, "/enabled"), Some(body))
        }
        AgentCommand::Disable { id } => {
            let body = serde_json::to_value(Enabled { enabled: false });
            (format!("Agent {id} disabled"), Method::PUT, agent_path(&id, "/enabled"), Some(body))
        }
        AgentCommand::Site { id, site } => {
            let body = serde_json::to_value(SiteName { site: site.clone() });
            (
                format!("Agent {id} moved to site {site}"),
                Method::PUT,
                agent_path(&id, "/site"),
                Some(body),
            )
        }
        AgentCommand::Delete { id } => {
            (format!("Agent {id} deleted"), Method::DELETE, agent_path(&id, ""), None)
        }
        AgentCommand::AddGroup { id, group } => {
            let body = serde_json::to_value(GroupName { group: group.clone() });
            let what = format!("Agent {id} may use key group {group}");
            (what, Method::POST, agent_path(&id, "/groups"), Some(body))
        }
        AgentCommand::RemoveGroup { id, group } => {
            let path = agent_path(&id, &format!("/groups/{}", segment(&group)));
            (format!("Key group {group} taken from agent {id}"), Method::DELETE, path, None)
        }
        AgentCommand::DefaultGroup { id, group } => {
            let body = serde_json::to_value(GroupName { group: group.clone() });
            let what = format!("Default key group of agent {id} set to {group}");
            (what, Method::PUT, agent_path(&id, "/default-group"), Some(body))
        }
    };
    let body =
        body.transpose().map_err(|e| CliError::Other { message: e.to_string(), help: None })?;
    let done = client.write(method, &path, body.as_ref()).await?;
    ctx.done(&what, &done)
}

/// The commands for KMIP clients (issue 19).
async fn agent_kmip(ctx: &Ctx, command: AgentCommand) -> Result<(), CliError> {
    match command {
        AgentCommand::EnrollKmip { id, csr, out } => agent_enroll_kmip(ctx, &id, &csr, &out).await,
        AgentCommand::KmipRights { id, revoke_destroy } => {
            agent_kmip_rights(ctx, &id, revoke_destroy == Switch::On).await
        }
        other => Err(CliError::usage(format!("{other:?} is not a command for KMIP clients"))),
    }
}

async fn agent_enroll_kmip(
    ctx: &Ctx,
    id: &str,
    csr: &std::path::Path,
    out: &std::path::Path,
) -> Result<(), CliError> {
    if out.exists() {
        return Err(CliError::usage(format!(
            "{} exists: a certificate is never written over a file; choose another --out",
            out.display()
        )));
    }
    let csr_pem = std::fs::read_to_string(csr).map_err(|e| CliError::file(csr, e))?;
    let path = format!("/v1/agents/{}/kmip-enrollment", segment(id));
    let body = KmipEnrollment { csr_pem };
    let enrolled: KmipCertificate = ctx.client.send(Method::POST, &path, Some(&body)).await?;
    ctx.client.observe_index(enrolled.index);
    super::records::write_atomically(out, enrolled.certificate_pem.as_bytes())?;
    ctx.show(&enrolled, |e| {
        format!(
            "KMIP client {} enrolled: its certificate is in {}\nFingerprint: {}\nIt trusts this CA:\n{}",
            e.agent,
            out.display(),
            e.fingerprint,
            e.ca_pem
        )
    })
}

async fn agent_kmip_rights(ctx: &Ctx, id: &str, revoke_and_destroy: bool) -> Result<(), CliError> {
    let path = format!("/v1/agents/{}/kmip-rights", segment(id));
    let done =
        ctx.client.write(Method::PUT, &path, Some(&KmipRights { revoke_and_destroy })).await?;
    let what = if revoke_and_destroy {
        format!("KMIP client {id} may revoke and destroy keys (Destroy still needs a deactivated or compromised key)")
    } else {
        format!("KMIP client {id} may no longer revoke or destroy keys")
    };
    ctx.done(&what, &done)
}

async fn agent_create(
    ctx: &Ctx,
    id: String,
    site: String,
    passphrase: PassphraseArgs,
) -> Result<(), CliError> {
    let source = Source::from_flag(passphrase.passphrase_stdin);
    let secret = prompt::new_passphrase(source, &format!("enrollment passphrase of agent {id}"))?;
    let body = NewAgent { id: id.clone(), site, passphrase: secret.to_string() };
    let done = ctx.client.write(Method::POST, "/v1/agents", Some(&body)).await;
    prompt::wipe(body.passphrase);
    ctx.done(&format!("Agent {id} created; it enrolls with its ID and passphrase"), &done?)
}

async fn agent_list(
    ctx: &Ctx,
    site: Option<String>,
    enabled: Option<bool>,
    group: Option<String>,
    page: &PageArgs,
) -> Result<(), CliError> {
    let query = |after: Option<String>, limit: usize| {
        Ok(AgentQuery {
            site: site.clone(),
            enabled,
            group: group.clone(),
            after,
            limit: Some(limit),
            min_index: None,
        })
    };
    let (rows, next): (Vec<Agent>, _) =
        ctx.collect("/v1/agents", page.walk(), "agents", query).await?;
    ctx.show(&rows, |rows| render::agents(rows))?;
    more_rows(next.as_deref());
    Ok(())
}

/// Tells on stderr that a list stopped at its limit and how to go on.
pub fn more_rows(next: Option<&str>) {
    if let Some(next) = next {
        note(&format!(
            "note: more rows follow: add --after {next} to go on, or --all for every row"
        ));
    }
}
