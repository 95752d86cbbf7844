//! `kmsctl audit list|export|verify` (SPEC S5, U2).

use clap::{Args, Subcommand};

use super::args::{parse_instant_ms, PageArgs};
use super::audit_verify;
use super::catalog::more_rows;
use super::context::{out, stuck, Ctx};
use super::exit::CliError;
use super::render;
use super::session::now_ms;
use crate::api::{AuditHead, AuditQuery, AuditRecord, Page};

#[derive(Clone, Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, optionally filtered.
    List {
        #[command(flatten)]
        filter: AuditFilter,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Print every matching audit event as JSON lines (one record per line) to stdout.
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        /// Start after this cursor (the `next` of an audit page).
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
    },
    /// Recompute the hash chain from the KMA's anchor to the replicated head.
    Verify {
        /// Also compare the chain head of every KMA of the cluster.
        #[arg(long)]
        addresses_all: bool,
    },
}

#[derive(Clone, Debug, Default, Args)]
pub struct AuditFilter {
    /// Only events of this kind, e.g. command, login, authentication-failure.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events naming this actor: user:<id>, agent:<id>, system.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only events at or after this instant (YYYY-MM-DD[ HH:MM:SS] UTC, or e.g. 12h ago).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only events before this instant (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
}

impl AuditFilter {
    /// The query for a page after `after`, instants resolved against `now_ms`.
    pub fn query(
        &self,
        after: Option<String>,
        limit: usize,
        now_ms: u64,
    ) -> Result<AuditQuery, CliError> {
        let instant = |text: &Option<String>| {
            text.as_deref()
                .map(|t| parse_instant_ms(t, now_ms))
                .transpose()
                .map_err(CliError::usage)
        };
        Ok(AuditQuery {
            after,
            limit: Some(limit),
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            since_ms: instant(&self.since)?,
            until_ms: instant(&self.until)?,
            min_index: None,
        })
    }
}

pub async fn audit(ctx: &Ctx, command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::List { filter, page } => {
            let now = now_ms();
            let query = |after, limit| filter.query(after, limit, now);
            let (rows, next): (Vec<AuditRecord>, _) =
                ctx.collect("/v1/audit", page.walk(), "audit events", query).await?;
            ctx.show(&rows, |rows| render::audit(rows))?;
            more_rows(next.as_deref());
            Ok(())
        }
        AuditCommand::Export { filter, after } => export(ctx, &filter, after).await,
        AuditCommand::Verify { addresses_all } => audit_verify::verify(ctx, addresses_all).await,
    }
}

/// Streams every matching record as a JSON line, page by page; the progress bar counts chain
/// positions up to the head.
async fn export(ctx: &Ctx, filter: &AuditFilter, start: Option<String>) -> Result<(), CliError> {
    let head: AuditHead = ctx.client.get("/v1/audit/head").await?;
    let bar =
        ctx.progress(Some(head.head_seq.saturating_sub(head.anchor_seq)), "exporting audit events");
    let now = now_ms();
    let mut after = start;
    loop {
        let query = filter.query(after.clone(), super::context::PAGE_ROWS, now)?;
        let page: Page<AuditRecord> = ctx.client.get_with("/v1/audit", &query).await?;
        let mut lines = String::new();
        for record in &page.rows {
            lines.push_str(&render::json_line(record));
        }
        out(&lines)?;
        if let Some(last) = page.rows.last() {
            bar.set_position(
                last.seq.saturating_sub(head.anchor_seq).min(bar.length().unwrap_or(0)),
            );
        }
        match page.next {
            None => break,
            Some(next) if Some(&next) == after.as_ref() => return Err(stuck("/v1/audit", &next)),
            Some(next) => after = Some(next),
        }
    }
    bar.finish_and_clear();
    Ok(())
}
