//! `kmsctl audit verify` (SPEC S5): the hash chain recomputed on the operator's machine, so that
//! a KMA that edits, drops or reorders stored events cannot hide it.
//!
//! 1. `GET /v1/audit/head` gives the KMA's anchor (the position and link before its first
//!    stored event) and the replicated head (position and link every KMA that applied `index`
//!    shares).
//! 2. Every record from the anchor to the head is fetched, from that one KMA. Each record's
//!    `encoded` (hex postcard of a `statemachine::AuditEvent`) is decoded, and
//!    `statemachine::verify_chain` recomputes link_i = SHA-256(domain tag || link_{i-1} ||
//!    encoded_i), page after page.
//! 3. The recomputed head must equal the replicated head: a missing tail shows here.
//!
//! With `--addresses-all`, the heads of all KMAs are compared at a common position.

use serde::Serialize;
use statemachine::{verify_chain, AuditChain, AuditEvent, ChainBreak, ChainedAuditEvent};

use super::context::{stuck, Ctx, PAGE_ROWS};
use super::exit::CliError;
use super::render::Table;
use crate::api::{AuditHead, AuditQuery, AuditRecord, ClusterStatus, Page};
use crate::client::{AdminClient, ClientError};

/// How the chain is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakKind {
    /// An event or its link was changed after it was written.
    Edited,
    /// Events are absent (in the middle or at the end).
    Missing,
    /// Events were reordered or repeated.
    OutOfOrder,
}

impl BreakKind {
    pub fn name(self) -> &'static str {
        match self {
            BreakKind::Edited => "edited",
            BreakKind::Missing => "missing",
            BreakKind::OutOfOrder => "out of order",
        }
    }
}

/// The first wrong chain position and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Broken {
    pub seq: u64,
    pub kind: BreakKind,
    pub detail: String,
}

impl From<ChainBreak> for Broken {
    fn from(chain_break: ChainBreak) -> Broken {
        let kind = match chain_break {
            ChainBreak::LinkMismatch { .. } => BreakKind::Edited,
            ChainBreak::Gap { .. } => BreakKind::Missing,
            ChainBreak::OutOfOrder { .. } => BreakKind::OutOfOrder,
        };
        Broken { seq: chain_break.seq(), kind, detail: chain_break.to_string() }
    }
}

/// A chain recomputed so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub checked: u64,
    pub chain: AuditChain,
}

/// Verifies a chain fed page by page, from an anchor up to `head_seq`. The last event of a page
/// waits for the next page when it does not fit, so that `verify_chain` can look one event
/// ahead to tell a reordering from a gap across a page boundary.
pub struct ChainVerifier {
    chain: AuditChain,
    checked: u64,
    carried: Option<ChainedAuditEvent>,
    head_seq: u64,
}

pub fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// A record as the chain sees it; a record that does not decode, or whose shown fields differ
/// from its encoded event, was edited.
pub fn decode(record: &AuditRecord) -> Result<ChainedAuditEvent, Broken> {
    let edited = |detail: String| Broken { seq: record.seq, kind: BreakKind::Edited, detail };
    let seq = record.seq;
    let bytes = hex::decode(&record.encoded)
        .map_err(|e| edited(format!("audit event {seq}: its encoding is not hex: {e}")))?;
    let (event, rest) = postcard::take_from_bytes::<AuditEvent>(&bytes).map_err(|e| {
        edited(format!("audit event {seq}: its encoding is not an audit event: {e}"))
    })?;
    if !rest.is_empty() || postcard::to_allocvec(&event).ok().as_deref() != Some(&bytes[..]) {
        return Err(edited(format!("audit event {seq}: its encoding is not the canonical one")));
    }
    let link = hex32(&record.link)
        .ok_or_else(|| edited(format!("audit event {seq}: its link is not 32 bytes of hex")))?;
    if event.index != record.index || event.at_ms != record.at_ms {
        return Err(edited(format!(
            "audit event {seq}: the index or time shown differ from the encoded event"
        )));
    }
    Ok(ChainedAuditEvent { seq, link, event })
}

impl ChainVerifier {
    pub fn new(anchor_seq: u64, anchor_link: &str, head_seq: u64) -> Option<ChainVerifier> {
        let head = hex32(anchor_link)?;
        let chain = AuditChain { events: anchor_seq, head };
        Some(ChainVerifier { chain, checked: 0, carried: None, head_seq })
    }

    /// The chain position verified so far.
    pub fn position(&self) -> u64 {
        self.chain.events
    }

    /// Feeds the next page; records past the head are left out. `more`: whether pages follow.
    pub fn feed(&mut self, records: &[AuditRecord], more: bool) -> Result<(), Broken> {
        let mut batch: Vec<ChainedAuditEvent> = self.carried.take().into_iter().collect();
        let mut undecodable = None;
        for record in records.iter().filter(|r| r.seq <= self.head_seq) {
            match decode(record) {
                Ok(event) => batch.push(event),
                Err(broken) => {
                    undecodable = Some(broken);
                    break;
                }
            }
        }
        let may_wait = more && undecodable.is_none();
        match verify_chain(self.chain, batch.iter()) {
            Ok(check) => self.advance(check.head, check.events),
            Err(chain_break) => {
                // `verify_chain` stops at the first break: events before it fit.
                let at = chain_break.seq().saturating_sub(self.chain.events + 1);
                let last = usize::try_from(at).is_ok_and(|at| at + 1 == batch.len());
                if !(may_wait && last) {
                    return Err(chain_break.into());
                }
                self.carried = batch.pop();
                let check = verify_chain(self.chain, batch.iter())?;
                self.advance(check.head, check.events);
            }
        }
        undecodable.map_or(Ok(()), Err)
    }

    fn advance(&mut self, chain: AuditChain, events: u64) {
        assert!(chain.events >= self.chain.events, "the chain only moves forward");
        self.chain = chain;
        self.checked += events;
    }

    /// The end: what waits is checked, then the recomputed head must be the replicated one.
    pub fn finish(mut self, head_link: &str) -> Result<Verified, Broken> {
        if let Some(event) = self.carried.take() {
            let check = verify_chain(self.chain, std::iter::once(&event))?;
            self.advance(check.head, check.events);
        }
        let head_seq = self.head_seq;
        if self.chain.events < head_seq {
            let first = self.chain.events + 1;
            return Err(Broken {
                seq: first,
                kind: BreakKind::Missing,
                detail: format!(
                    "audit events {first} to {head_seq} are missing at the end: the stored log \
                     stops before the replicated head"
                ),
            });
        }
        if Some(self.chain.head) != hex32(head_link) {
            return Err(Broken {
                seq: head_seq,
                kind: BreakKind::Edited,
                detail: format!(
                    "the recomputed head at {head_seq} differs from the replicated head: the \
                     stored log is not the one the cluster wrote"
                ),
            });
        }
        Ok(Verified { checked: self.checked, chain: self.chain })
    }
}

/// What `audit verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub address: String,
    pub ok: bool,
    pub anchor_seq: u64,
    pub checked: u64,
    pub head_seq: u64,
    pub head_link: String,
    pub index: u64,
    pub matches_replicated_head: bool,
    pub broken: Option<Broken>,
    /// With `--addresses-all`: each KMA's head.
    pub kmas: Option<Vec<KmaHead>>,
}

/// One KMA's own chain, and its link at the position all KMAs reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KmaHead {
    pub name: String,
    pub address: Option<String>,
    pub index: Option<u64>,
    pub head_seq: Option<u64>,
    pub head_link: Option<String>,
    /// This KMA's stored chain: `ok`, `broken at seq S: <kind>`, `unreachable: ...`.
    pub chain: String,
    /// The link at the common position, as this KMA has it.
    pub link_at_common: Option<String>,
    /// `agrees`, `disagrees` or `not comparable: ...` (against the profile's KMA).
    pub verdict: String,
}

impl KmaHead {
    fn broken(&self) -> bool {
        self.chain.starts_with("broken") || self.verdict == "disagrees"
    }
}

pub async fn verify(ctx: &Ctx, addresses_all: bool) -> Result<(), CliError> {
    let head: AuditHead = ctx.client.get("/v1/audit/head").await?;
    ctx.client.observe_index(head.index);
    // Anchor and records must come from the same KMA: another one may store from elsewhere.
    let address = ctx.client.current_address().to_string();
    let mut kmas = if addresses_all { Some(kma_heads(ctx).await?) } else { None };
    // The position all KMAs reached: each walk keeps its record there for the comparison.
    let common = kmas.iter().flatten().filter_map(|k| k.head_seq).fold(head.head_seq, u64::min);
    let walk = check_chain(ctx, &ctx.client.at(&address), &head, common, &address).await?;
    if let Some(kmas) = &mut kmas {
        let reference = link_at_common(&head, common, walk.at_common.as_ref());
        for row in kmas.iter_mut() {
            check_kma(ctx, row, common, reference.as_deref()).await?;
        }
    }
    let kmas_broken = kmas.iter().flatten().any(KmaHead::broken);
    let report = VerifyReport {
        address,
        ok: walk.broken.is_none() && !kmas_broken,
        anchor_seq: head.anchor_seq,
        checked: walk.checked,
        head_seq: head.head_seq,
        head_link: head.head_link.clone(),
        index: head.index,
        matches_replicated_head: walk.broken.is_none(),
        broken: walk.broken,
        kmas,
    };
    ctx.show(&report, render_report)?;
    verdict(&report)
}

/// The exit of `audit verify`: a broken chain or disagreeing KMAs first, then unreachable ones.
fn verdict(report: &VerifyReport) -> Result<(), CliError> {
    if let Some(broken) = &report.broken {
        return Err(CliError::AuditBroken {
            message: format!("audit chain broken at seq {}: {}", broken.seq, broken.kind.name()),
        });
    }
    let kmas = report.kmas.iter().flatten();
    let apart: Vec<String> =
        kmas.clone().filter(|k| k.broken()).map(|k| format!("{} ({})", k.name, k.chain)).collect();
    if !apart.is_empty() {
        return Err(CliError::AuditBroken {
            message: format!("the audit chain of {} does not agree", apart.join(", ")),
        });
    }
    let unreachable: Vec<String> = kmas
        .filter(|k| k.chain.starts_with("unreachable"))
        .map(|k| format!("{}: {}", k.name, k.chain))
        .collect();
    if !unreachable.is_empty() {
        return Err(ClientError::Unreachable { attempts: unreachable }.into());
    }
    Ok(())
}

/// What the walk over the chain found.
struct Walked {
    checked: u64,
    broken: Option<Broken>,
    /// The record at the common position, as this KMA stores it.
    at_common: Option<AuditRecord>,
}

/// The link at `common` seen from one KMA: its anchor, its replicated head, or the record
/// its walk kept.
fn link_at_common(head: &AuditHead, common: u64, record: Option<&AuditRecord>) -> Option<String> {
    if common == head.head_seq {
        Some(head.head_link.clone())
    } else if common == head.anchor_seq {
        Some(head.anchor_link.clone())
    } else {
        record.filter(|r| r.seq == common).map(|r| r.link.clone())
    }
}

async fn check_chain(
    ctx: &Ctx,
    client: &AdminClient,
    head: &AuditHead,
    common: u64,
    name: &str,
) -> Result<Walked, CliError> {
    let Some(mut verifier) = ChainVerifier::new(head.anchor_seq, &head.anchor_link, head.head_seq)
    else {
        let message = format!("the anchor link {} is not 32 bytes of hex", head.anchor_link);
        return Err(CliError::Other { message, help: None });
    };
    let total = head.head_seq.saturating_sub(head.anchor_seq);
    let bar = ctx.progress(Some(total), &format!("verifying the audit chain on {name}"));
    let mut walked = Walked { checked: 0, broken: None, at_common: None };
    let mut after: Option<String> = None;
    loop {
        let query =
            AuditQuery { after: after.clone(), limit: Some(PAGE_ROWS), ..AuditQuery::default() };
        let page: Page<AuditRecord> = client.get_with("/v1/audit", &query).await?;
        if let Some(record) = page.rows.iter().find(|r| r.seq == common) {
            walked.at_common = Some(record.clone());
        }
        let past_head = page.rows.last().is_some_and(|r| r.seq >= head.head_seq);
        let next = if past_head { None } else { page.next.clone() };
        let fed = verifier.feed(&page.rows, next.is_some());
        walked.checked = verifier.position().saturating_sub(head.anchor_seq);
        if let Err(broken) = fed {
            bar.abandon();
            walked.broken = Some(broken);
            return Ok(walked);
        }
        bar.set_position(walked.checked.min(total));
        match next {
            None => break,
            Some(next) if Some(&next) == after.as_ref() => return Err(stuck("/v1/audit", &next)),
            Some(next) => after = Some(next),
        }
    }
    bar.finish_and_clear();
    let finished = verifier.finish(&head.head_link);
    if let Ok(verified) = &finished {
        walked.checked = verified.checked;
    }
    walked.broken = finished.err();
    Ok(walked)
}

/// The audit head of every KMA in the cluster status.
async fn kma_heads(ctx: &Ctx) -> Result<Vec<KmaHead>, CliError> {
    let status: ClusterStatus = ctx.client.get("/v1/cluster/status").await?;
    let mut kmas = Vec::new();
    for kma in &status.kmas {
        let mut row = KmaHead {
            name: kma.name.clone(),
            address: kma.management_address.clone(),
            index: None,
            head_seq: None,
            head_link: None,
            chain: "unreachable: no management address known".into(),
            link_at_common: None,
            verdict: "not comparable".into(),
        };
        if let Some(address) = &kma.management_address {
            match ctx.client.at(address).get::<AuditHead>("/v1/audit/head").await {
                Ok(head) => {
                    row.index = Some(head.index);
                    row.head_seq = Some(head.head_seq);
                    row.head_link = Some(head.head_link);
                    row.chain = String::new();
                }
                Err(e) => row.chain = format!("unreachable: {e}"),
            }
        }
        kmas.push(row);
    }
    Ok(kmas)
}

/// Walks one KMA's own chain and compares its link at `common` with the reference.
async fn check_kma(
    ctx: &Ctx,
    row: &mut KmaHead,
    common: u64,
    reference: Option<&str>,
) -> Result<(), CliError> {
    let (Some(address), true) = (row.address.clone(), row.chain.is_empty()) else {
        return Ok(());
    };
    let client = ctx.client.at(&address);
    let head = match client.get::<AuditHead>("/v1/audit/head").await {
        Ok(head) => head,
        Err(e) => {
            row.chain = format!("unreachable: {e}");
            return Ok(());
        }
    };
    let walk = match check_chain(ctx, &client, &head, common, &row.name).await {
        Ok(walk) => walk,
        Err(CliError::Client(e)) => {
            row.chain = format!("unreachable: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    row.chain = match &walk.broken {
        None => format!("ok ({} events)", walk.checked),
        Some(broken) => format!("broken at seq {}: {}", broken.seq, broken.kind.name()),
    };
    row.link_at_common = if row.head_seq == Some(common) {
        row.head_link.clone()
    } else {
        link_at_common(&head, common, walk.at_common.as_ref())
    };
    row.verdict = match (&row.link_at_common, reference) {
        (Some(link), Some(reference)) if link == reference => "agrees".into(),
        (Some(_), Some(_)) => "disagrees".into(),
        _ => format!("not comparable at seq {common}"),
    };
    Ok(())
}

pub fn render_report(report: &VerifyReport) -> String {
    let mut text = match &report.broken {
        None => format!(
            "Audit chain OK on {}: {} events checked after the anchor at seq {}.\nHead: seq {} \
             link {}\nIt equals the replicated head at index {}.\n",
            report.address,
            report.checked,
            report.anchor_seq,
            report.head_seq,
            report.head_link,
            report.index
        ),
        Some(broken) => format!(
            "Audit chain BROKEN on {} at seq {}: {}.\n{}\n{} events fit the chain before it; the \
             replicated head is seq {} link {} (index {}).\n",
            report.address,
            broken.seq,
            broken.kind.name(),
            broken.detail,
            report.checked,
            report.head_seq,
            report.head_link,
            report.index
        ),
    };
    if let Some(kmas) = &report.kmas {
        text.push('\n');
        let header = ["KMA", "ADDRESS", "INDEX", "HEAD-SEQ", "HEAD-LINK", "CHAIN", "AT-COMMON"];
        let mut table = Table::new(&header);
        for kma in kmas {
            let short = |link: &Option<String>| {
                link.as_deref().map_or("-".to_string(), |l| l.chars().take(16).collect())
            };
            table.row(vec![
                kma.name.clone(),
                kma.address.clone().unwrap_or_else(|| "-".into()),
                kma.index.map_or("-".into(), |i| i.to_string()),
                kma.head_seq.map_or("-".into(), |s| s.to_string()),
                short(&kma.head_link),
                kma.chain.clone(),
                kma.verdict.clone(),
            ]);
        }
        text.push_str(&table.render());
    }
    text
}
