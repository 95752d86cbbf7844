//! Tables for people: a header row, columns aligned by two spaces, instants as UTC
//! `YYYY-MM-DD HH:MM:SS`, absent values as `-`. Every function returns the whole text, so the
//! golden tests compare exactly what `kmsctl` prints.

use serde::Serialize;
use statemachine::duration::format_duration_ms;

use crate::api::{
    Agent, AuditRecord, Backup, ClusterStatus, DataUnit, Done, ImpactPreview, Key, KeyGroup,
    KeyPolicy, Kma, MemberUnlockProgress, QuorumView, Settings, Site, User,
};

/// Rows of cells under a header; each column as wide as its widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.header.len(), "a row has one cell per column");
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label: value` lines, the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(label, _)| label.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in pairs {
        let label = format!("{label}:");
        out.push_str(format!("{label:<width$}  {value}").trim_end());
        out.push('\n');
    }
    out
}

/// Pretty JSON with a final newline: what `--json` prints.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        // The API types are plain data with string keys: serializing them cannot fail.
        Err(e) => unreachable!("API values serialize to JSON: {e}"),
    }
}

/// One line of JSON (audit export).
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> String {
    match serde_json::to_string(value) {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        Err(e) => unreachable!("API values serialize to JSON: {e}"),
    }
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC). An instant past the calendar the
/// `time` crate knows (after 9999) is printed as the number it is.
pub fn format_utc_ms(ms: u64) -> String {
    let at = i128::from(ms) * 1_000_000;
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(at) else {
        return format!("{ms} ms after 1970-01-01");
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn when(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_string(), format_utc_ms)
}

fn or_dash(text: Option<&str>) -> String {
    text.filter(|t| !t.is_empty()).unwrap_or("-").to_string()
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_string()
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

pub fn sites(rows: &[Site]) -> String {
    let mut table = Table::new(&["NAME", "CREATED"]);
    for site in rows {
        table.row(vec![site.name.clone(), format_utc_ms(site.created_at_ms)]);
    }
    table.render()
}

pub fn kmas(rows: &[Kma]) -> String {
    let header = ["NAME", "NODE", "SITE", "STATUS", "LOCKED", "AUTO-UNLOCK", "VERSION", "CREATED"];
    let mut table = Table::new(&header);
    for kma in rows {
        table.row(vec![
            kma.name.clone(),
            kma.node_id.to_string(),
            kma.site.clone(),
            kma.status.clone(),
            yes_no(kma.locked),
            yes_no(kma.autonomous_unlock),
            kma.software_version.to_string(),
            format_utc_ms(kma.created_at_ms),
        ]);
    }
    table.render()
}

pub fn status(status: &ClusterStatus) -> String {
    let mut out = fields(&[
        ("Cluster", or_dash(status.cluster_id.as_deref())),
        ("Leader", status.leader.clone().unwrap_or_else(|| "none known".to_string())),
        ("Term", status.term.to_string()),
        ("Commit index", status.commit_index.to_string()),
        ("Answered by", status.answered_by.clone()),
    ]);
    out.push('\n');
    let header = [
        "NAME",
        "NODE",
        "SITE",
        "STATUS",
        "ROLE",
        "REACHABLE",
        "LOCKED",
        "AUTO-UNLOCK",
        "VERSION",
        "LAG",
        "APPLIED",
        "ADDRESS",
    ];
    let mut table = Table::new(&header);
    for kma in &status.kmas {
        table.row(vec![
            kma.name.clone(),
            kma.node_id.to_string(),
            kma.site.clone(),
            kma.status.clone(),
            kma.role.clone(),
            yes_no(kma.reachable),
            yes_no(kma.locked),
            yes_no(kma.autonomous_unlock),
            kma.software_version.to_string(),
            kma.replication_lag.map_or_else(|| "-".into(), |lag| lag.to_string()),
            kma.last_applied_index.map_or_else(|| "-".into(), |index| index.to_string()),
            or_dash(kma.management_address.as_deref()),
        ]);
    }
    out.push_str(&table.render());
    out
}

pub fn settings(settings: &Settings) -> String {
    let security = &settings.security;
    fields(&[
        ("Passphrase length min", security.passphrase_len_min.to_string()),
        ("Login failures max", security.login_failures_max.to_string()),
        ("Login throttle", format_duration_ms(security.login_throttle_ms)),
        ("Quorum operation TTL", format_duration_ms(security.quorum_operation_ttl_ms)),
        ("Key pool low water", settings.key_pool.low_water.to_string()),
        ("Key pool high water", settings.key_pool.high_water.to_string()),
        ("Key pool ready", settings.key_pool_ready.to_string()),
        ("Key pool generated", settings.key_pool_generated.to_string()),
    ])
}

pub fn users(rows: &[User]) -> String {
    let mut table = Table::new(&["ID", "ROLES", "ENABLED", "CREATED"]);
    for user in rows {
        table.row(vec![
            user.id.clone(),
            list_or_dash(&user.roles),
            yes_no(user.enabled),
            format_utc_ms(user.created_at_ms),
        ]);
    }
    table.render()
}

pub fn quorum(view: &QuorumView) -> String {
    let mut out = fields(&[
        ("Members", list_or_dash(&view.members)),
        ("Threshold", format!("{} of {}", view.threshold, view.members.len())),
    ]);
    out.push('\n');
    let header =
        ["ID", "OPERATION", "STARTED-BY", "STARTED", "EXPIRES", "APPROVALS", "APPROVED-BY"];
    let mut table = Table::new(&header);
    for op in &view.pending {
        table.row(vec![
            op.id.to_string(),
            op.operation.clone(),
            op.started_by.clone(),
            format_utc_ms(op.started_at_ms),
            format_utc_ms(op.expires_at_ms),
            format!("{}/{}", op.approvals.len(), op.threshold),
            list_or_dash(&op.approvals),
        ]);
    }
    out.push_str(&table.render());
    out
}

pub fn policies(rows: &[KeyPolicy]) -> String {
    let header = ["NAME", "ENCRYPTION-PERIOD", "CRYPTOPERIOD", "EXPORT", "IMPORT"];
    let mut table = Table::new(&header);
    for policy in rows {
        table.row(vec![
            policy.name.clone(),
            format_duration_ms(policy.encryption_period_ms),
            format_duration_ms(policy.cryptoperiod_ms),
            yes_no(policy.allow_export),
            yes_no(policy.allow_import),
        ]);
    }
    table.render()
}

pub fn groups(rows: &[KeyGroup]) -> String {
    let mut table = Table::new(&["NAME", "POLICY", "KEYS", "CREATED"]);
    for group in rows {
        table.row(vec![
            group.name.clone(),
            group.policy.clone(),
            group.keys.to_string(),
            format_utc_ms(group.created_at_ms),
        ]);
    }
    table.render()
}

pub fn agents(rows: &[Agent]) -> String {
    let header = ["ID", "SITE", "ENROLLED", "ENABLED", "DEFAULT-GROUP", "GROUPS", "CREATED"];
    let mut table = Table::new(&header);
    for agent in rows {
        table.row(vec![
            agent.id.clone(),
            agent.site.clone(),
            yes_no(agent.enrolled),
            yes_no(agent.enabled),
            or_dash(agent.default_key_group.as_deref()),
            list_or_dash(&agent.key_groups),
            format_utc_ms(agent.created_at_ms),
        ]);
    }
    table.render()
}

pub fn agent(agent: &Agent) -> String {
    fields(&[
        ("ID", agent.id.clone()),
        ("Site", agent.site.clone()),
        ("Enrolled", yes_no(agent.enrolled)),
        ("Enabled", yes_no(agent.enabled)),
        ("Default key group", or_dash(agent.default_key_group.as_deref())),
        ("Key groups", list_or_dash(&agent.key_groups)),
        ("KMIP revoke/destroy", yes_no(agent.kmip_revoke_and_destroy)),
        ("Created", format_utc_ms(agent.created_at_ms)),
    ])
}

pub fn data_units(rows: &[DataUnit]) -> String {
    let mut table = Table::new(&["ID", "TAG", "STATE", "KEYS", "IN-USE", "CREATED"]);
    for unit in rows {
        let in_use = unit.keys.iter().filter(|k| k.in_use).count();
        table.row(vec![
            unit.id.clone(),
            or_dash(Some(&unit.external_tag)),
            unit.state.clone(),
            unit.keys.len().to_string(),
            in_use.to_string(),
            format_utc_ms(unit.created_at_ms),
        ]);
    }
    table.render()
}

pub fn data_unit(unit: &DataUnit) -> String {
    let mut out = fields(&[
        ("ID", unit.id.clone()),
        ("External tag", or_dash(Some(&unit.external_tag))),
        ("State", unit.state.clone()),
        ("Created", format_utc_ms(unit.created_at_ms)),
    ]);
    out.push('\n');
    let mut table = Table::new(&["KEY", "STATE", "IN-USE"]);
    for key in &unit.keys {
        table.row(vec![key.key_id.clone(), key.state.clone(), yes_no(key.in_use)]);
    }
    out.push_str(&table.render());
    out
}

pub fn keys(rows: &[Key]) -> String {
    let header = ["ID", "STATE", "GROUP", "ORIGIN", "CREATED", "ENCRYPTION-ENDS", "DATA-UNITS"];
    let mut table = Table::new(&header);
    for key in rows {
        table.row(vec![
            key.id.clone(),
            key.state.clone(),
            or_dash(key.group.as_deref()),
            key.origin.clone(),
            format_utc_ms(key.created_at_ms),
            when(key.encryption_ends_at_ms),
            key.data_units.len().to_string(),
        ]);
    }
    table.render()
}

pub fn key(key: &Key) -> String {
    fields(&[
        ("ID", key.id.clone()),
        ("State", key.state.clone()),
        ("Group", or_dash(key.group.as_deref())),
        ("Origin", key.origin.clone()),
        ("Created", format_utc_ms(key.created_at_ms)),
        ("Activated", when(key.activated_at_ms)),
        ("Encryption ends", when(key.encryption_ends_at_ms)),
        ("Deactivates", when(key.deactivates_at_ms)),
        ("Compromised", when(key.compromised_at_ms)),
        ("Destroyed", when(key.destroyed_at_ms)),
        ("Data units", list_or_dash(&key.data_units)),
    ])
}

pub fn backups(rows: &[Backup]) -> String {
    let header =
        ["ID", "KIND", "KMA", "FILE", "COVERS-INDEX", "TAKEN", "BY", "BYTES", "DRILL", "DESTROYED"];
    let mut table = Table::new(&header);
    for backup in rows {
        let by = match (backup.taken_by.as_str(), backup.kind.as_str()) {
            ("", "database") => "schedule".to_string(),
            (by, _) => by.to_string(),
        };
        table.row(vec![
            backup.id.to_string(),
            backup.kind.clone(),
            backup.kma.clone(),
            backup.file_name.clone(),
            backup.covers_index.to_string(),
            format_utc_ms(backup.taken_at_ms),
            by,
            backup.size_bytes.to_string(),
            if backup.drill.is_empty() { "-".into() } else { backup.drill.clone() },
            yes_no(backup.destroyed),
        ]);
    }
    table.render()
}

pub fn audit(rows: &[AuditRecord]) -> String {
    let header = ["SEQ", "INDEX", "TIME", "KIND", "ACTOR", "KMA", "OUTCOME", "DETAIL"];
    let mut table = Table::new(&header);
    for record in rows {
        table.row(vec![
            record.seq.to_string(),
            record.index.to_string(),
            format_utc_ms(record.at_ms),
            record.kind.clone(),
            or_dash(record.actor.as_deref()),
            or_dash(record.kma.as_deref()),
            or_dash(record.outcome.as_deref()),
            record.detail.clone(),
        ]);
    }
    table.render()
}

/// The impact of `action` (e.g. "destroy the keys"), the ripple effect flagged, and how to
/// confirm it.
pub fn impact_preview(preview: &ImpactPreview, action: &str) -> String {
    let mut out = format!("Impact preview: {action}\n\n");
    out.push_str(&format!("Keys ({}):\n", preview.keys.len()));
    for key in &preview.keys {
        out.push_str(&format!("  {key}\n"));
    }
    let losing = &preview.data_units_losing_access;
    out.push_str(&format!("\nData units using these keys ({}):\n", losing.len()));
    for unit in losing {
        let flag =
            if preview.shared_with_unselected.contains(unit) { "  [NOT SELECTED]" } else { "" };
        out.push_str(&format!("  {unit}{flag}\n"));
    }
    let shared = &preview.shared_with_unselected;
    if shared.is_empty() {
        out.push_str(
            "\nRipple effect: none; no data unit outside the selection shares these keys.\n",
        );
    } else {
        out.push_str(&format!(
            "\nWARNING: ripple effect: {} data unit(s) you did not select share these keys and \
             are affected too:\n",
            shared.len()
        ));
        for unit in shared {
            out.push_str(&format!("  {unit}\n"));
        }
    }
    out.push_str(&format!("\nDigest: {}\n", preview.digest));
    out
}

/// Where the unlock of a locked KMA stands after `member` gave their share.
pub fn member_unlock(member: &str, progress: &MemberUnlockProgress) -> String {
    let state = match (progress.unlocked, progress.members_missing()) {
        (true, _) => "unlocked".to_string(),
        // Every share is in, yet the KMA reports itself locked (still rebuilding its key).
        (false, 0) => "not unlocked yet".to_string(),
        (false, missing) => format!("still needs {missing} more"),
    };
    format!(
        "Member {member} given on KMA {} (node {}): {} of {} needed ({}); {state}\n",
        progress.kma,
        progress.node_id,
        progress.members_given.len(),
        progress.threshold,
        progress.members_given.join(", ")
    )
}

/// A command's outcome: what was done, its log index, and what it created or counted.
pub fn done(what: &str, done: &Done) -> String {
    let detail = match &done.detail {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(map) if map.is_empty() => String::new(),
        other => format!(" {other}"),
    };
    format!("{what} (index {}){detail}\n", done.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setup: instants around leap years, the epoch and past the year 9999. Expectation: the
    /// civil date and time of each in UTC, or the plain number when no calendar date fits.
    #[test]
    fn u2_instants_print_as_utc() {
        assert_eq!(format_utc_ms(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_utc_ms(1_709_251_199_999), "2024-02-29 23:59:59");
        assert_eq!(format_utc_ms(4_102_444_800_000), "2100-01-01 00:00:00");
        assert_eq!(format_utc_ms(253_402_300_799_999), "9999-12-31 23:59:59");
        assert_eq!(format_utc_ms(u64::MAX), "18446744073709551615 ms after 1970-01-01");
    }

    /// Setup: a locked KMA's progress after one of three needed members, after the third, and
    /// with every share in but still locked (issue 16 point 5). Expectation: who gave, how
    /// many are needed, and what is left, in one line each.
    #[test]
    fn s4_member_unlock_progress_prints_what_is_left() {
        let mut progress = MemberUnlockProgress {
            kma: "kma2".into(),
            node_id: 2,
            members_given: vec!["m1".into()],
            threshold: 3,
            unlocked: false,
        };
        assert_eq!(
            member_unlock("m1", &progress),
            "Member m1 given on KMA kma2 (node 2): 1 of 3 needed (m1); still needs 2 more\n"
        );
        progress.members_given.extend(["m2".into(), "m3".into()]);
        assert_eq!(
            member_unlock("m3", &progress),
            "Member m3 given on KMA kma2 (node 2): 3 of 3 needed (m1, m2, m3); not unlocked yet\n"
        );
        progress.unlocked = true;
        assert_eq!(
            member_unlock("m3", &progress),
            "Member m3 given on KMA kma2 (node 2): 3 of 3 needed (m1, m2, m3); unlocked\n"
        );
    }

    /// Setup: cells of different widths. Expectation: aligned columns, no trailing spaces.
    #[test]
    fn u2_tables_align_columns() {
        let mut table = Table::new(&["A", "BEE"]);
        table.row(vec!["long cell".into(), "x".into()]);
        table.row(vec!["s".into(), String::new()]);
        assert_eq!(table.render(), "A          BEE\nlong cell  x\ns\n");
    }
}
