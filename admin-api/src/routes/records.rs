//! Backup records (SPEC B2, B4, B5) and the audit log (SPEC S5, C8).
//!
//! The audit log is read from this KMA's storage (through `AdminNode`), where `apply` wrote it
//! in the same synced batch as the applied index. Each record carries its chain link and its canonical encoding,
//! so `kmsctl audit verify` recomputes the chain itself instead of trusting the server.

use axum::extract::State;
use statemachine::audit::ChainedAuditEvent;
use statemachine::cluster::BackupSchedule as SmSchedule;
use statemachine::limits::LIST_SCAN_MAX;
use statemachine::list::page_size;
use statemachine::Read;
use statemachine::{Actor, AuditWhat, Command, Outcome, State as SmState};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path, Query};
use super::{read, read_at, read_point, run, AdminState, Answer, Refusal};
use crate::api::{
    AuditAnchor, AuditHead, AuditQuery, AuditRecord, Backup, BackupSchedule, Done, ErrorBody, Page,
    ReadParams,
};
use crate::backend::Caller;
use crate::view;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_backups))
        .routes(routes!(mark_backup_destroyed))
        .routes(routes!(set_backup_schedule))
        .routes(routes!(audit))
        .routes(routes!(audit_head))
}

#[utoipa::path(get, path = "/v1/backups", tag = "records", params(ReadParams),
    responses((status = 200, body = Vec<Backup>), (status = "default", body = ErrorBody)))]
async fn list_backups(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<Vec<Backup>> {
    read_at(&admin, &caller, read_point(&params)?, Read::Backups, |state, _| {
        Ok(state.meta().backups.values().map(view::backup).collect())
    })
    .await
    .map(Json)
}

/// Records that a backup's files were destroyed: destroyed keys it held may become Completely
/// destroyed (SPEC B4).
#[utoipa::path(post, path = "/v1/backups/{id}/destroyed", tag = "records",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn mark_backup_destroyed(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Answer<Done> {
    run(&admin, &caller, Command::MarkBackupDestroyed { id }, None).await
}

#[utoipa::path(put, path = "/v1/backups/schedule", tag = "records", request_body = BackupSchedule,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_backup_schedule(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(schedule): Json<BackupSchedule>,
) -> Answer<Done> {
    // No KMA named: a follower takes them (on a one-KMA cluster, the KMA itself), so that the
    // leader's work is not slowed (SPEC B5).
    let schedule = schedule
        .interval_ms
        .map(|interval_ms| SmSchedule { interval_ms, kma: schedule.kma.unwrap_or_default() });
    run(&admin, &caller, Command::SetBackupSchedule { schedule }, None).await
}

/// The name of an event's kind, as filters and tables show it.
pub fn kind_name(what: &AuditWhat) -> String {
    let debug = format!("{what:?}");
    let variant = debug.split([' ', '{', '(']).next().unwrap_or_default();
    let mut name = String::new();
    for (n, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && n > 0 {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

fn actor_name(actor: &Actor) -> String {
    match actor {
        Actor::System => "system".into(),
        Actor::User(id) => format!("user:{id}"),
        Actor::Agent(id) => format!("agent:{id}"),
    }
}

/// One stored event as the API shows it.
pub fn record(state: &SmState, row: &ChainedAuditEvent) -> AuditRecord {
    let event = &row.event;
    let (actor, kma, outcome) = match &event.what {
        AuditWhat::Command { actor, origin_node_id, outcome, .. } => {
            let kma = state.meta().kmas.values().find(|kma| kma.node_id == *origin_node_id);
            let outcome = match outcome {
                Outcome::Applied => "applied".to_string(),
                Outcome::Rejected { code } => format!("rejected:{code}"),
            };
            let kma = kma.map_or_else(|| format!("node-{origin_node_id}"), |k| k.name.clone());
            (Some(actor_name(actor)), Some(kma), Some(outcome))
        }
        AuditWhat::Login { principal, .. } | AuditWhat::AuthenticationFailure { principal, .. } => {
            (Some(principal.clone()), None, None)
        }
        AuditWhat::CommunicationError { from_kma, .. } => (None, Some(from_kma.clone()), None),
        _ => (None, None, None),
    };
    AuditRecord {
        seq: row.seq,
        index: event.index,
        at_ms: event.at_ms,
        kind: kind_name(&event.what),
        actor,
        kma,
        outcome,
        detail: format!("{:?}", event.what),
        link: hex::encode(row.link),
        encoded: hex::encode(postcard::to_allocvec(event).unwrap_or_default()),
    }
}

fn admits(query: &AuditQuery, record: &AuditRecord) -> bool {
    query.kind.as_ref().is_none_or(|kind| record.kind == *kind)
        && query.actor.as_ref().is_none_or(|actor| record.actor.as_ref() == Some(actor))
        && query.since_ms.is_none_or(|since| record.at_ms >= since)
        && query.until_ms.is_none_or(|until| record.at_ms <= until)
}

/// `next` of an audit page: the log index and chain position of the last record examined.
fn cursor(row: &ChainedAuditEvent) -> String {
    format!("{}.{}", row.event.index, row.seq)
}

fn parse_cursor(text: &str) -> Result<(u64, u64), Refusal> {
    let bad = || Refusal::bad_request(format!("'{text}' is not an audit cursor (use `next`)"));
    let (index, seq) = text.split_once('.').ok_or_else(bad)?;
    Ok((index.parse().map_err(|_| bad())?, seq.parse().map_err(|_| bad())?))
}

/// Audit events in chain order, filtered on the server; Auditors only (SPEC S5).
#[utoipa::path(get, path = "/v1/audit", tag = "records", params(AuditQuery),
    responses((status = 200, body = Page<AuditRecord>), (status = "default", body = ErrorBody)))]
async fn audit(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Answer<Page<AuditRecord>> {
    let (from_index, after_seq) = match &query.after {
        Some(text) => parse_cursor(text)?,
        None => (0, 0),
    };
    read(&admin, &caller, query.min_index, Read::AuditLog, |_, _| Ok(())).await?;
    let rows = admin.node.audit_events(from_index, LIST_SCAN_MAX).await?;
    let scanned = rows.len();
    let state = admin.node.state().await;
    let limit = page_size(query.limit);
    let mut page = Page { rows: Vec::new(), next: None };
    for row in rows.iter().filter(|row| row.seq > after_seq) {
        page.next = Some(cursor(row));
        let record = record(&state, row);
        if admits(&query, &record) {
            page.rows.push(record);
            if page.rows.len() == limit {
                break;
            }
        }
    }
    let exhausted = scanned < LIST_SCAN_MAX
        && rows.last().is_none_or(|last| page.next.as_deref() == Some(&cursor(last)));
    if exhausted {
        page.next = None;
    }
    Ok(Json(page))
}

/// Where this KMA's audit log starts (its anchor) and the replicated chain head.
#[utoipa::path(get, path = "/v1/audit/head", tag = "records", params(ReadParams),
    responses((status = 200, body = AuditHead), (status = "default", body = ErrorBody)))]
async fn audit_head(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<AuditHead> {
    read_at(&admin, &caller, read_point(&params)?, Read::AuditLog, |_, _| Ok(())).await?;
    let anchors = admin.node.audit_anchors().await?;
    let anchor = anchors.first().copied().unwrap_or(statemachine::audit::AuditChain::GENESIS);
    let state = admin.node.state().await;
    let head = state.meta().audit_chain;
    Ok(Json(AuditHead {
        anchor_seq: anchor.events,
        anchor_link: hex::encode(anchor.head),
        anchors: anchors
            .iter()
            .map(|a| AuditAnchor { seq: a.events, link: hex::encode(a.head) })
            .collect(),
        head_seq: head.events,
        head_link: hex::encode(head.head),
        index: state.last_applied_index(),
    }))
}
