//! Where one KMS write's time goes (issue 21 point 2), read from what the KMAs themselves
//! report on `/metrics`: `kms_write_stage_seconds_total` and `kms_write_stage_total` per stage
//! (`raft_storage::write_stages`), and the request histogram of `/v1/propose`. The bench reads
//! every KMA before and after a run; the differences give each stage's mean, and how often it
//! ran per write.

use std::collections::BTreeMap;

use anyhow::Context;
use raft_storage::Stage;

const STAGE_SECONDS: &str = "kms_write_stage_seconds_total";
const STAGE_COUNT: &str = "kms_write_stage_total";
const REQUEST_SECONDS: &str = "kms_http_request_duration_seconds_sum";
const REQUEST_COUNT: &str = "kms_http_request_duration_seconds_count";
/// The route a KMS write of the bench takes (`KmaClient::propose`).
const PROPOSE_ROUTE: &str = "/v1/propose";

/// Runs and seconds of one stage.
#[derive(Clone, Copy, Default)]
struct Sum {
    count: f64,
    seconds: f64,
}

/// What one KMA reported: each stage's sum, and its `/v1/propose` requests as the stage
/// "request".
#[derive(Clone, Default)]
pub struct Totals(BTreeMap<&'static str, Sum>);

/// The name of the request line in the breakdown, beside the stages of `Stage::ALL`.
const REQUEST: &str = "request";

impl Totals {
    pub fn parse(text: &str) -> anyhow::Result<Totals> {
        let mut totals = Totals::default();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let label = |key: &str| {
                labels.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == key).then(|| v.trim_end_matches('}').trim_matches('"'))
                })
            };
            let slot = match name {
                STAGE_SECONDS | STAGE_COUNT => {
                    label("stage").and_then(Stage::from_name).map(Stage::name)
                }
                REQUEST_SECONDS | REQUEST_COUNT => (label("listener") == Some("management")
                    && label("route") == Some(PROPOSE_ROUTE))
                .then_some(REQUEST),
                _ => None,
            };
            let Some(slot) = slot else { continue };
            let value: f64 =
                value.parse().with_context(|| format!("a metrics line of the KMA: {line}"))?;
            let sum = totals.0.entry(slot).or_default();
            match name {
                STAGE_SECONDS | REQUEST_SECONDS => sum.seconds = value,
                _ => sum.count = value,
            }
        }
        anyhow::ensure!(
            totals.0.contains_key(Stage::Propose.name()),
            "the KMA's /metrics has no {STAGE_SECONDS}: is it a build before issue 21?"
        );
        Ok(totals)
    }

    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let mut delta = Totals::default();
        for (name, now) in &self.0 {
            let before = earlier.0.get(name).copied().unwrap_or_default();
            let sum =
                Sum { count: now.count - before.count, seconds: now.seconds - before.seconds };
            delta.0.insert(name, sum);
        }
        delta
    }

    /// The mean of a stage in ms and how often it ran per write, if it ran.
    fn mean(&self, name: &str, writes: f64) -> Option<(f64, f64)> {
        let sum = self.0.get(name).filter(|sum| sum.count > 0.0)?;
        Some((sum.seconds * 1e3 / sum.count, sum.count / writes))
    }

    /// The stage's time over the run divided by the writes, in ms (0 if it did not run).
    fn per_write_ms(&self, name: &str, writes: f64) -> f64 {
        self.0.get(name).map_or(0.0, |sum| sum.seconds * 1e3 / writes)
    }
}

/// The three KMAs of a run by role, each with what it did during the run.
pub struct Breakdown {
    pub leader: Totals,
    /// The follower the bench sends to when it writes through a follower.
    pub follower: Totals,
    pub other_follower: Totals,
    /// Writes the run counted, and their mean as the bench saw them.
    pub writes: usize,
    pub client_mean_ms: f64,
}

/// What the request line times (the stages say it themselves, `Stage::what`).
const REQUEST_WHAT: &str = "`/v1/propose` on this KMA: request in to answer out";

impl Breakdown {
    pub fn print(&self, title: &str) {
        let writes = self.writes.max(1) as f64;
        println!();
        println!(
            "{title}: {} writes, {:.3} ms each as the bench saw them",
            self.writes, self.client_mean_ms
        );
        println!();
        println!("| stage | what it times | leader | follower written to | other follower |");
        println!("|---|---|---:|---:|---:|");
        let rows = std::iter::once((REQUEST, REQUEST_WHAT))
            .chain(Stage::ALL.into_iter().map(|stage| (stage.name(), stage.what())));
        for (name, what) in rows {
            let cell = |totals: &Totals| match totals.mean(name, writes) {
                Some((ms, per_write)) => format!("{ms:.3} ms × {per_write:.2}"),
                None => String::new(),
            };
            println!(
                "| {name} | {what} | {} | {} | {} |",
                cell(&self.leader),
                cell(&self.follower),
                cell(&self.other_follower)
            );
        }
        self.print_derived();
    }

    /// The gaps between nested stages: what no stage times on its own. Each is taken from the
    /// stages' time per write (their seconds over the run divided by the writes), so that a
    /// stage that ran more or less often than once per write still adds up.
    fn print_derived(&self) {
        let writes = self.writes.max(1) as f64;
        let per_write = |totals: &Totals, name: &str| totals.per_write_ms(name, writes);
        let leader = &self.leader;
        let asked =
            if self.follower.mean(REQUEST, 1.0).is_some() { &self.follower } else { leader };
        println!();
        println!("Gaps, in ms per write:");
        println!(
            "- bench to KMA and back (TLS, HTTP/2, both ends' code): {:.3} (client mean - \
             request on the KMA written to)",
            self.client_mean_ms - per_write(asked, REQUEST)
        );
        println!(
            "- the handler around the write path (authentication, decoding, encoding): {:.3} \
             (request - propose)",
            per_write(asked, REQUEST) - per_write(asked, Stage::Propose.name())
        );
        if self.follower.mean(Stage::Forward.name(), 1.0).is_some() {
            println!(
                "- forwarding, beyond the leader's own work: {:.3} (forward - propose on the \
                 leader)",
                per_write(&self.follower, Stage::Forward.name())
                    - per_write(leader, Stage::Propose.name())
            );
        }
        println!(
            "- on the leader, Raft beyond its own log append and the apply (the voters' answers, \
             the commit): {:.3} (raft_write - log_append - apply)",
            per_write(leader, Stage::RaftWrite.name())
                - per_write(leader, Stage::LogAppend.name())
                - per_write(leader, Stage::Apply.name())
        );
    }
}
