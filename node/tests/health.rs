//! Metrics and health endpoints through running `kma` processes (SPEC U3), and communication
//! errors between KMAs in the audit log (SPEC C8).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use node::config::NodeConfig;
use statemachine::{AuditWhat, Command};
use support::{done_if, no_change, wait_until, Cluster};

/// A client with the cluster CA as its only root and no client certificate: what Prometheus
/// and a load balancer's probe have.
fn anonymous(cluster: &Cluster) -> reqwest::Client {
    let ca = node::pki::read(&cluster.nodes[0].data_dir.join("tls/ca.pem")).expect("CA");
    let tls = node::transport::tls::anonymous_client_config(&ca).expect("TLS config");
    node::kma::https_client(tls).expect("HTTPS client")
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(url).timeout(Duration::from_secs(10)).send().await.expect(url);
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn node_id(cluster: &Cluster, index: usize) -> u64 {
    NodeConfig::load(&cluster.nodes[index].data_dir).expect("config").node_id
}

/// One sample line: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, checked for the text format 0.0.4 as it is parsed.
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y\"z"}` at the start of `text`: the labels and the rest after `}`.
fn parse_labels(text: &str, line: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    assert_eq!(chars.next(), Some('{'), "{line}");
    loop {
        if chars.peek() == Some(&'}') {
            chars.next();
            break;
        }
        let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert!(valid_name(&label), "label name {label:?} in {line}");
        assert_eq!(chars.next(), Some('"'), "{line}");
        let mut value = String::new();
        loop {
            match chars.next().expect("label value ends") {
                '"' => break,
                '\\' => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("escape {other:?} in {line}"),
                },
                '\n' => panic!("raw newline in {line}"),
                c => value.push(c),
            }
        }
        assert!(labels.insert(label, value).is_none(), "label twice in {line}");
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => panic!("{other:?} after a label in {line}"),
        }
    }
    (labels, chars.collect())
}

fn parse_value(text: &str, line: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().unwrap_or_else(|_| panic!("value {number:?} in {line}")),
    }
}

/// The family a sample belongs to: its own name, or a histogram's name for its series.
fn family_of(types: &BTreeMap<String, String>, name: &str) -> String {
    if types.contains_key(name) {
        return name.to_string();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|kind| kind == "histogram") {
                return base.to_string();
            }
        }
    }
    panic!("sample {name} has no # TYPE line before it");
}

/// Parses a scrape and checks every line: HELP then TYPE once per family before its samples,
/// families not interleaved, names and labels well formed, values numbers, counters >= 0.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut scrape = Scrape::default();
    let mut helped = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name and text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            finished.extend(current.take());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name and type");
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(scrape.types.insert(name.into(), kind.into()).is_none(), "TYPE twice: {line}");
            current = Some(name.to_string());
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "unexpected line {line:?}");
        let name_end = line.find(['{', ' ']).expect("name ends");
        let name = &line[..name_end];
        assert!(valid_name(name), "{line}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..], line)
        } else {
            (BTreeMap::new(), line[name_end..].to_string())
        };
        let value_text = rest.strip_prefix(' ').unwrap_or_else(|| panic!("space in {line}"));
        assert!(!value_text.contains(' '), "a value and nothing else (no time stamp): {line}");
        let value = parse_value(value_text, line);
        let family = family_of(&scrape.types, name);
        assert!(!finished.contains(&family), "family {family} interleaved: {line}");
        assert_eq!(current.as_ref(), Some(&family), "sample outside its family: {line}");
        if scrape.types[&family] == "counter" {
            assert!(value.is_finite() && value >= 0.0, "counter {line}");
        }
        scrape.samples.push(Sample { name: name.into(), labels, value });
    }
    scrape.check_histograms();
    scrape
}

/// A histogram series' buckets in order: (`le`, cumulative count).
type Buckets = Vec<(f64, f64)>;

impl Scrape {
    /// Every histogram series: buckets in increasing `le`, cumulative counts, `+Inf` last and
    /// equal to `_count`, and a `_sum`.
    fn check_histograms(&self) {
        let histograms = self.types.iter().filter(|(_, kind)| *kind == "histogram");
        for (name, _) in histograms {
            let mut series: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
            let bucket_name = format!("{name}_bucket");
            for sample in self.samples.iter().filter(|s| s.name == bucket_name) {
                let le = parse_value(&sample.labels["le"], &sample.name);
                let mut labels = sample.labels.clone();
                labels.remove("le");
                series.entry(labels.into_iter().collect()).or_default().push((le, sample.value));
            }
            for (labels, buckets) in &series {
                let pairs: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                for pair in buckets.windows(2) {
                    assert!(pair[0].0 < pair[1].0, "{name} {labels:?}: le not increasing");
                    assert!(pair[0].1 <= pair[1].1, "{name} {labels:?}: not cumulative");
                }
                let (le, count) = *buckets.last().expect("a bucket");
                assert!(le.is_infinite(), "{name} {labels:?}: +Inf last");
                let counted = self.value(&format!("{name}_count"), &pairs);
                assert_eq!(counted, Some(count), "{name} {labels:?}: _count is the +Inf bucket");
                assert!(self.value(&format!("{name}_sum"), &pairs).is_some(), "{name}: _sum");
            }
        }
    }

    /// The value of the sample named `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == wanted).map(|s| s.value)
    }
}

async fn scrape(http: &reqwest::Client, address: &str) -> Scrape {
    let (status, text) = get(http, &format!("https://{address}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    parse(&text)
}

/// Polls `/readyz` until it answers `status` with a body containing `reason`.
async fn wait_readyz(http: &reqwest::Client, address: &str, status: u16, reason: &str) -> String {
    let what = format!("{address}/readyz to answer {status} {reason:?}");
    let url = format!("https://{address}/readyz");
    let answer = wait_until(Duration::from_secs(45), &what, async || {
        let answer = get(http, &url).await;
        done_if(answer.0 == status && answer.1.contains(reason), answer)
    })
    .await;
    answer.1
}

const STATUS_2XX: [(&str, &str); 3] =
    [("listener", "management"), ("route", "/v1/status"), ("status_class", "2xx")];

/// Setup: three KMAs; a client with no certificate. Action: probe and scrape each, wait for
/// the key counts, send status requests and an agent request with an ID in its path, then lock
/// a follower. Expect: `/healthz` 200 `ok` and `/readyz` 200 everywhere; every scrape is well
/// formed text 0.0.4 (HELP/TYPE, cumulative buckets); `kms_keys` for ready and generated equals
/// the pool status reports; the status counter and histogram grow by the requests sent; the
/// service route is its template, never the ID; the Raft gauges agree with status; the locked
/// follower answers 503 with the reason and `kms_locked 1`. (SPEC U3)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u3_metrics_and_probes_answer_without_a_certificate() {
    let cluster = Cluster::start(3, no_change).await;
    let http = anonymous(&cluster);
    for node in &cluster.nodes {
        let healthz = get(&http, &format!("https://{}/healthz", node.address)).await;
        assert_eq!(healthz, (200, "ok\n".to_string()), "{}", node.name);
        wait_readyz(&http, &node.address, 200, "ready").await;
    }
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let address = cluster.nodes[leader].address.clone();
    key_counts_match_the_pool(&cluster, &http, &address).await;

    let before = scrape(&http, &address).await;
    let sent = 5;
    for _ in 0..sent {
        cluster.admin.status(&address).await.expect("status");
    }
    let unit = "00000000000000010000000000004242";
    let service = format!("https://{}", cluster.nodes[leader].service);
    let (code, _) = get(&http, &format!("{service}/agent/v1/data-units/{unit}/keys")).await;
    assert_eq!(code, 401, "agent routes need the agent's certificate");
    let (_, text) = get(&http, &format!("https://{address}/metrics")).await;
    assert!(!text.contains(unit), "a path's ID never becomes a label");
    let after = parse(&text);
    // Other KMAs ask for the leader's status too (agent discovery): at least the ones sent.
    let count = |scrape: &Scrape| scrape.value("kms_http_requests_total", &STATUS_2XX);
    let grown = count(&after).expect("counted") - count(&before).unwrap_or(0.0);
    assert!(grown >= f64::from(sent), "status requests counted: {grown}");
    let timed = [("listener", "management"), ("route", "/v1/status")];
    let histogram = |s: &Scrape| s.value("kms_http_request_duration_seconds_count", &timed);
    let grown = histogram(&after).expect("timed") - histogram(&before).unwrap_or(0.0);
    assert!(grown >= f64::from(sent), "status requests timed: {grown}");
    let agent = [
        ("listener", "service"),
        ("route", "/agent/v1/data-units/{id}/keys"),
        ("status_class", "4xx"),
    ];
    assert_eq!(after.value("kms_http_requests_total", &agent), Some(1.0));
    families_are_the_golden_ones(&after);
    raft_gauges_agree_with_status(&cluster, &http, leader).await;
    write_stages_are_timed(&cluster, &http, leader).await;

    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let name = cluster.nodes[follower].name.clone();
    let locked = cluster.admin.propose(&address, None, Command::LockKma { name }).await;
    assert!(locked.expect("sent").expect("applied").result.is_ok());
    let follower_address = &cluster.nodes[follower].address;
    let body = wait_readyz(&http, follower_address, 503, "locked").await;
    assert!(body.lines().all(|line| !line.is_empty()), "one reason per line: {body:?}");
    let scrape = scrape(&http, follower_address).await;
    assert_eq!(scrape.value("kms_locked", &[]), Some(1.0));
    wait_readyz(&http, &address, 200, "ready").await;
}

/// A write sent to a follower: each KMA counts and times the stages it passed the write
/// through, and only those (issue 21 point 2): the follower forwards it and appends it, the
/// leader queues it, writes it through Raft, syncs its WAL, replicates it; both apply it.
async fn write_stages_are_timed(cluster: &Cluster, http: &reqwest::Client, leader: usize) {
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let addresses = [&cluster.nodes[leader].address, &cluster.nodes[follower].address];
    let stage_runs = async |address: &str| {
        let scrape = scrape(http, address).await;
        let runs = |stage: &str| {
            let seconds = scrape.value("kms_write_stage_seconds_total", &[("stage", stage)]);
            let count = scrape.value("kms_write_stage_total", &[("stage", stage)]);
            (count.expect("a count for every stage"), seconds.expect("a sum for every stage"))
        };
        [
            "propose",
            "forward",
            "queue",
            "raft_write",
            "log_append",
            "wal_sync",
            "replicate",
            "apply",
            "follower_append",
        ]
        .map(|stage| (stage, runs(stage)))
    };
    let before = [stage_runs(addresses[0]).await, stage_runs(addresses[1]).await];
    let site = Command::CreateSite { name: "stage-timing".into() };
    let created = cluster.admin.propose(addresses[1], None, site).await;
    assert!(created.expect("sent").expect("applied").result.is_ok());
    let grown = |kma: usize, after: &[(&'static str, (f64, f64)); 9]| -> Vec<&'static str> {
        let pairs = before[kma].iter().zip(after);
        pairs
            .filter(|((_, was), (_, now))| now.0 > was.0 && now.1 > was.1)
            .map(|((stage, _), _)| *stage)
            .collect()
    };
    // The follower applies a moment after the leader answered.
    let what = "the follower to time its apply of the write";
    let (leader_grew, follower_grew) = wait_until(Duration::from_secs(10), what, async || {
        let after = [stage_runs(addresses[0]).await, stage_runs(addresses[1]).await];
        let grew = (grown(0, &after[0]), grown(1, &after[1]));
        done_if(grew.1.contains(&"apply"), grew)
    })
    .await;
    for stage in ["propose", "queue", "raft_write", "log_append", "wal_sync", "replicate", "apply"]
    {
        assert!(leader_grew.contains(&stage), "the leader timed {stage}: {leader_grew:?}");
    }
    assert!(!leader_grew.contains(&"forward"), "the leader forwards nothing");
    for stage in ["propose", "forward", "log_append", "apply", "follower_append"] {
        assert!(follower_grew.contains(&stage), "the follower timed {stage}: {follower_grew:?}");
    }
    assert!(!follower_grew.contains(&"raft_write"), "a follower writes no entry itself");
}

/// The families of a leader's scrape, their types and (where they have samples) their label
/// names are exactly those of `golden/metrics_families.txt`. (SPEC U3, issue #15 point 7)
fn families_are_the_golden_ones(scrape: &Scrape) {
    let golden = include_str!("golden/metrics_families.txt");
    let mut expected = BTreeMap::new();
    for line in golden.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let labels: BTreeSet<String> =
            fields[2].split(',').filter(|l| *l != "-").map(str::to_string).collect();
        expected.insert(fields[0].to_string(), (fields[1].to_string(), labels));
    }
    let types: BTreeMap<String, String> = scrape.types.clone();
    let served: BTreeMap<&String, &String> = types.iter().collect();
    let wanted: BTreeMap<&String, &String> = expected.iter().map(|(n, (t, _))| (n, t)).collect();
    assert_eq!(served, wanted, "families and types of /metrics");
    for (family, (_, labels)) in &expected {
        let seen: BTreeSet<String> = scrape
            .samples
            .iter()
            .filter(|sample| family_of(&types, &sample.name) == *family)
            .flat_map(|sample| sample.labels.keys().filter(|l| *l != "le").cloned())
            .collect();
        if !seen.is_empty() {
            assert_eq!(&seen, labels, "label names of {family}");
        }
    }
}

/// Waits (the counts are cached up to 10 s, and the pool fills after the unlock) until the
/// leader's `kms_keys` for ready and generated equal the pool sizes its status reports, and its
/// pool gauges equal them too.
async fn key_counts_match_the_pool(cluster: &Cluster, http: &reqwest::Client, address: &str) {
    let what = "kms_keys for ready and generated to equal the pool sizes status reports";
    let (counted, pool) = wait_until(Duration::from_secs(60), what, async || {
        let status = cluster.admin.status(address).await.expect("status");
        let scrape = scrape(http, address).await;
        let sizes = (status.key_pool_ready as f64, status.key_pool_generated as f64);
        let counted = (
            scrape.value("kms_keys", &[("state", "ready")]),
            scrape.value("kms_keys", &[("state", "generated")]),
        );
        let pool = (
            scrape.value("kms_key_pool_keys", &[("level", "ready")]),
            scrape.value("kms_key_pool_keys", &[("level", "generated")]),
        );
        let after = cluster.admin.status(address).await.expect("status");
        let steady = (after.key_pool_ready, after.key_pool_generated)
            == (status.key_pool_ready, status.key_pool_generated);
        let matched = steady && sizes.0 > 0.0 && counted == (Some(sizes.0), Some(sizes.1));
        done_if(matched, (counted, pool, status)).map(|(counted, pool, _)| (counted, pool))
    })
    .await;
    assert_eq!(pool, counted, "the pool gauges equal the key counts");
}

/// Every KMA's Raft gauges: its term and applied index as status reports them, committed at or
/// after applied, leader 1 only on the leader, and the leader's replication lag for each
/// follower.
async fn raft_gauges_agree_with_status(cluster: &Cluster, http: &reqwest::Client, leader: usize) {
    for (index, node) in cluster.nodes.iter().enumerate() {
        let scrape = scrape(http, &node.address).await;
        let status = cluster.admin.status(&node.address).await.expect("status");
        let term = scrape.value("kms_raft_term", &[]).expect("term");
        assert!(term >= 1.0 && term <= status.term as f64, "{} term {term}", node.name);
        let applied = scrape.value("kms_raft_applied_index", &[]).expect("applied");
        let committed = scrape.value("kms_raft_committed_index", &[]).expect("committed");
        assert!(applied <= status.applied_index as f64 && committed >= applied, "{scrape:?}");
        assert!(scrape.value("kms_raft_apply_lag_entries", &[]).is_some());
        assert!(scrape.value("kms_raft_last_log_index", &[]).is_some());
        let is_leader = scrape.value("kms_raft_is_leader", &[]);
        assert_eq!(is_leader, Some(if index == leader { 1.0 } else { 0.0 }), "{}", node.name);
        assert_eq!(scrape.value("kms_locked", &[]), Some(0.0), "{}", node.name);
        let counter = "kms_communication_errors_recorded_total";
        let mut counters = scrape.samples.iter().filter(|s| s.name == counter);
        assert!(counters.all(|s| s.labels.contains_key("node_id")), "{}", node.name);
    }
    let scrape = scrape(http, &cluster.nodes[leader].address).await;
    for follower in (0..3).filter(|i| *i != leader) {
        let id = node_id(cluster, follower).to_string();
        let labels = [("node_id", id.as_str()), ("kma", cluster.nodes[follower].name.as_str())];
        let lag = scrape.value("kms_raft_replication_lag_entries", &labels);
        assert!(lag.is_some_and(|lag| lag >= 0.0), "lag of {id}: {scrape:?}");
    }
}

/// Setup: three KMAs. Action: kill -9 a follower; once the leader counts a new "failing"
/// record about it, stop the leader; probe the last KMA; stop it and read the leader's audit
/// log. Expect: the leader sees its RPCs to the killed KMA failing and records it (within the
/// one record per peer per minute: a join may have used this minute); the survivor, alone,
/// answers `/readyz` 503 "no leader known" while `/healthz` stays 200; the audit log holds,
/// after the kill, a communication error from the leader to the killed KMA whose short detail
/// names the failure. (SPEC C8, U3)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c8_u3_a_killed_peer_is_audited_and_a_lone_survivor_is_not_ready() {
    let mut cluster = Cluster::start(3, no_change).await;
    let http = anonymous(&cluster);
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (victim, survivor) = (followers[0], followers[1]);
    let leader_address = cluster.nodes[leader].address.clone();
    let victim_id = node_id(&cluster, victim).to_string();
    let recorded = "kms_communication_errors_recorded_total";
    let labels = [("node_id", victim_id.as_str()), ("link", "failing")];
    let before = scrape(&http, &leader_address).await.value(recorded, &labels).unwrap_or(0.0);
    let applied_before = cluster.admin.status(&leader_address).await.expect("status").applied_index;
    cluster.kill9(victim).await;

    let what = format!("the leader to record its links to {victim_id} failing");
    wait_until(Duration::from_secs(100), &what, async || {
        let scrape = scrape(&http, &leader_address).await;
        let failing = scrape.value("kms_peer_rpc_failing", &[("node_id", &victim_id)]);
        let recorded = scrape.value(recorded, &labels).unwrap_or(0.0);
        done_if(failing == Some(1.0) && recorded > before, (failing, recorded))
    })
    .await;

    cluster.stop(leader).await;
    let survivor_address = cluster.nodes[survivor].address.clone();
    let body = wait_readyz(&http, &survivor_address, 503, "no leader known").await;
    assert!(body.lines().all(|line| !line.is_empty()), "one reason per line: {body:?}");
    let healthz = get(&http, &format!("https://{survivor_address}/healthz")).await;
    assert_eq!(healthz.0, 200);
    cluster.stop(survivor).await;

    let raft_dir = cluster.nodes[leader].data_dir.join("raft");
    let (_dir, _log, state_machine) = raft_storage::open_stores(&raft_dir).expect("data dir");
    let events = state_machine.state().audit_events(0, usize::MAX).expect("audit log");
    let (leader_name, victim_name) = (&cluster.nodes[leader].name, &cluster.nodes[victim].name);
    let details: Vec<(u64, String)> = events
        .iter()
        .filter_map(|event| match &event.what {
            AuditWhat::CommunicationError { from_kma, to_kma, detail }
                if from_kma == leader_name && to_kma == victim_name =>
            {
                Some((event.index, detail.clone()))
            }
            _ => None,
        })
        .collect();
    let after_kill = details.iter().find(|(index, _)| *index > applied_before);
    let (_, detail) = after_kill
        .unwrap_or_else(|| panic!("no record of {victim_name} after the kill: {details:?}"));
    assert!(detail.contains("failing") && detail.contains(&victim_id), "{detail}");
    for (_, detail) in &details {
        assert!(detail.len() <= 256 && !detail.contains("BEGIN"), "{detail}");
    }
}

/// Setup: three KMAs with parallel append on (the default). Action: 100 writes through the
/// leader, one after the other; then every KMA stopped, `parallel_append = false` in each
/// config, all restarted, and 30 more writes. Expect: while it is on, the followers write at
/// least 100 of the entries the leader sends ahead (`kms_raft_entries_ahead_total`, counted per
/// follower, so close to 200) and none fails; once it is off, nothing is sent ahead; both
/// times every write is on every KMA and the digests agree. (SPEC C1, C7, U3)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_u3_followers_write_the_entries_the_leader_sends_ahead() {
    const AHEAD: &str = "kms_raft_entries_ahead_total";
    let mut cluster = Cluster::start(3, no_change).await;
    let http = anonymous(&cluster);
    let acked = support::Acked::default();
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let address = cluster.nodes[leader].address.clone();
    let entries = |scrape: &Scrape, outcome: &str| scrape.value(AHEAD, &[("outcome", outcome)]);
    let before = scrape(&http, &address).await;
    for n in 0..100 {
        assert!(support::write_user(&cluster.admin, &address, format!("on-{n}"), &acked).await);
    }
    let after = scrape(&http, &address).await;
    let grown =
        |outcome| entries(&after, outcome).expect(AHEAD) - entries(&before, outcome).expect(AHEAD);
    assert!(grown("written") >= 100.0, "entries written ahead: {after:?}");
    assert_eq!(grown("failed"), 0.0, "{after:?}");
    cluster.assert_converged(&acked).await;

    for index in 0..3 {
        cluster.stop(index).await;
        let data_dir = &cluster.nodes[index].data_dir;
        let mut config = NodeConfig::load(data_dir).expect("config");
        config.parallel_append = false;
        config.save(data_dir).expect("config saved");
    }
    for index in 0..3 {
        cluster.restart(index).await;
    }
    for index in 0..3 {
        cluster.wait_ready(index).await;
    }
    let leader = cluster.leader(Duration::from_secs(15)).await;
    let address = cluster.nodes[leader].address.clone();
    for n in 0..30 {
        assert!(support::write_user(&cluster.admin, &address, format!("off-{n}"), &acked).await);
    }
    let off = scrape(&http, &address).await;
    for outcome in ["written", "refused", "failed", "dropped"] {
        assert_eq!(entries(&off, outcome), Some(0.0), "{outcome} with parallel append off");
    }
    cluster.assert_converged(&acked).await;
}

/// Opens `count` TLS connections without a client certificate to `address` (50 at a time) and
/// returns those whose handshake completed, held open and idle.
async fn idle_anonymous(
    ca_pem: &str,
    address: &str,
    count: usize,
) -> Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = node::transport::tls::anonymous_client_config(ca_pem).expect("TLS config");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let name = node::transport::tls::server_name(address).expect("server name");
    let mut held = Vec::new();
    for _ in 0..count.div_ceil(50) {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (connector, name, address) = (connector.clone(), name.clone(), address.to_string());
            opening.spawn(async move {
                let tcp = tokio::net::TcpStream::connect(&address).await.ok()?;
                connector.connect(name, tcp).await.ok()
            });
        }
        while let Some(opened) = opening.join_next().await {
            held.extend(opened.expect("joined"));
        }
    }
    held
}

/// Setup: three KMAs; a drive enrolled at the leader. Action: 2,000 TLS connections without a
/// certificate are opened to each of the leader's two listeners and held idle. Expect: while
/// they are held, a write commits through the leader (its Raft links work), its `/readyz`
/// answers 200, and the drive gets a write key from it; its `/metrics` show the connections it
/// turned away or closed to make room, and it holds no more anonymous connections than its
/// bound. Tried before issue #16: a flood like this used up the leader's file descriptors and
/// every write in the cluster failed. (SPEC S2, C1; issue #16 point 6)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_idle_connections_without_a_certificate_stop_neither_raft_nor_readyz_nor_a_drive() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("this test holds 4,000 sockets");
    let cluster = Cluster::start(3, no_change).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let (address, service) =
        (cluster.nodes[leader].address.clone(), cluster.nodes[leader].service.clone());
    support::agents::catalogue(
        &cluster,
        &address,
        (support::agents::DAY_MS, 2 * support::agents::DAY_MS),
    )
    .await;
    let drive = support::agents::pinned_drive(&cluster, &service, &service).await;
    let ca = node::pki::read(&cluster.nodes[0].data_dir.join("tls/ca.pem")).expect("CA");

    let started = std::time::Instant::now();
    let mut held = idle_anonymous(&ca, &address, 2_000).await;
    held.extend(idle_anonymous(&ca, &service, 2_000).await);
    println!("{} idle anonymous connections opened in {:?}", held.len(), started.elapsed());

    let acked = support::Acked::default();
    let follower = &cluster.nodes[(leader + 1) % 3].address;
    assert!(
        support::write_user(&cluster.admin, follower, "through-the-flood".into(), &acked).await
    );
    let http = anonymous(&cluster);
    let (status, body) = get(&http, &format!("https://{address}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    let (_unit, _key) = support::agents::write_key(&drive, "VOL001").await;
    let scrape = scrape(&http, &address).await;
    let turned_away: f64 = ["management", "service"]
        .iter()
        .flat_map(|listener| {
            let labels = [("listener", *listener)];
            [
                scrape.value("kms_connections_refused_total", &labels),
                scrape.value("kms_connections_evicted_total", &labels),
            ]
        })
        .flatten()
        .sum();
    assert!(turned_away > 0.0, "the bounds closed some of the flood");
    for listener in ["management", "service"] {
        let anonymous = scrape.value("kms_connections_anonymous", &[("listener", listener)]);
        let bound = node::config::NodeConfig::load(&cluster.nodes[leader].data_dir)
            .expect("config")
            .anonymous_connections_max as f64;
        assert!(anonymous.is_some_and(|held| held <= bound), "{listener}: {anonymous:?}");
    }
    drop(held);
}
