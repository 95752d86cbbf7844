//! Process-wide request metrics of both listeners (SPEC U3) and the Prometheus text exposition
//! (format 0.0.4) that `health` serves on `/metrics`.
//!
//! [`MetricsLayer`] wraps a router: every request is counted by listener, route and status class,
//! and its latency goes into a histogram per listener and route. The route is the template the
//! router matched (`/agent/v1/data-units/{id}/keys`), never the raw URI: IDs in paths would make
//! one series per data unit, and a URI is the client's text. Recording takes one short std
//! `Mutex` per request; nothing else is shared.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::Request;
use axum::response::Response;

/// The `listener` label of the management listener (admin API, Raft between KMAs, probes).
pub const MANAGEMENT: &str = "management";
/// The `listener` label of the service listener (agents).
pub const SERVICE: &str = "service";

/// Upper bounds of the latency buckets, in seconds (`+Inf` comes after them).
pub const LATENCY_BUCKETS_S: [f64; 13] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Routes tracked per listener: a router has a few dozen; beyond this bound requests are
/// counted under [`ROUTE_OTHER`] so that no input can grow the registry.
pub const ROUTES_PER_LISTENER_MAX: usize = 256;
/// The route of requests that matched no route (the router's fallback).
pub const ROUTE_UNMATCHED: &str = "unmatched";
/// The route of requests past [`ROUTES_PER_LISTENER_MAX`].
pub const ROUTE_OTHER: &str = "other";

const REQUESTS_TOTAL: &str = "kms_http_requests_total";
const REQUEST_DURATION: &str = "kms_http_request_duration_seconds";
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What one listener and route have seen.
#[derive(Clone, Debug, Default, PartialEq)]
struct RouteStats {
    /// Requests by status class, 1xx to 5xx.
    by_class: [u64; 5],
    /// Requests per latency bucket, not cumulative; the last one is above every bound.
    buckets: [u64; LATENCY_BUCKETS_S.len() + 1],
    sum_s: f64,
    count: u64,
}

/// Request counters and latency histograms, by listener then route.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    listeners: Mutex<BTreeMap<&'static str, BTreeMap<String, RouteStats>>>,
}

static REQUESTS: RequestMetrics = RequestMetrics::new();

/// The metrics of this process's listeners.
pub fn requests() -> &'static RequestMetrics {
    &REQUESTS
}

impl RequestMetrics {
    pub const fn new() -> RequestMetrics {
        RequestMetrics { listeners: Mutex::new(BTreeMap::new()) }
    }

    /// Counts one answered request.
    pub fn record(&self, listener: &'static str, route: &str, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS_S.iter().position(|le| seconds <= *le);
        let bucket = bucket.unwrap_or(LATENCY_BUCKETS_S.len());
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters: keep counting.
        let mut listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner);
        let routes = listeners.entry(listener).or_default();
        let known = routes.contains_key(route) || routes.len() < ROUTES_PER_LISTENER_MAX;
        let key = if known { route } else { ROUTE_OTHER };
        if !routes.contains_key(key) {
            routes.insert(key.to_owned(), RouteStats::default());
        }
        if let Some(stats) = routes.get_mut(key) {
            stats.by_class[class] += 1;
            stats.buckets[bucket] += 1;
            stats.sum_s += seconds;
            stats.count += 1;
        }
    }

    /// Appends the request counter and the latency histogram families to `out`.
    pub fn encode(&self, out: &mut Exposition) {
        let listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner).clone();
        out.family(
            REQUESTS_TOTAL,
            Kind::Counter,
            "HTTP requests answered, by listener, route and status class.",
        );
        for (listener, routes) in &listeners {
            for (route, stats) in routes {
                for (class, count) in STATUS_CLASSES.iter().zip(stats.by_class) {
                    let labels = [
                        ("listener", *listener),
                        ("route", route.as_str()),
                        ("status_class", *class),
                    ];
                    out.sample_u64(REQUESTS_TOTAL, &labels, count);
                }
            }
        }
        let help = "Time from a request's arrival to its response head, by listener and route.";
        out.family(REQUEST_DURATION, Kind::Histogram, help);
        for (listener, routes) in &listeners {
            for (route, stats) in routes {
                let labels = [("listener", *listener), ("route", route.as_str())];
                out.histogram(REQUEST_DURATION, &labels, &stats.buckets, stats.sum_s);
            }
        }
    }
}

/// A metric family's type, as the `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Prometheus text format 0.0.4 being written: each family opens with its `# HELP` and
/// `# TYPE` lines, then its samples, one per line.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The content type of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Opens a family; its samples must follow before the next family opens.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    pub fn sample_u64(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_text(name, labels, &value.to_string());
    }

    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_text(name, labels, &float(value));
    }

    /// One histogram's `_bucket` series (cumulative, ending with `le="+Inf"`), `_sum` and
    /// `_count`; `buckets` holds the non-cumulative counts of [`LATENCY_BUCKETS_S`] and above.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[u64; LATENCY_BUCKETS_S.len() + 1],
        sum: f64,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0;
        let bounds = LATENCY_BUCKETS_S.iter().map(|le| float(*le)).chain([float(f64::INFINITY)]);
        for (le, count) in bounds.zip(buckets) {
            cumulative += count;
            let mut with_le = labels.to_vec();
            with_le.push(("le", le.as_str()));
            self.sample_u64(&bucket_name, &with_le, cumulative);
        }
        self.sample_f64(&format!("{name}_sum"), labels, sum);
        self.sample_u64(&format!("{name}_count"), labels, cumulative);
    }

    fn sample_text(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (n, (label, text)) in labels.iter().enumerate() {
                if n > 0 {
                    self.text.push(',');
                }
                let escaped = text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A sample value as Prometheus parses it: `+Inf`, `-Inf`, `NaN`, or a decimal number.
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

/// Measures every request of the router it wraps (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct MetricsLayer {
    listener: &'static str,
}

impl MetricsLayer {
    /// `listener` is [`MANAGEMENT`] or [`SERVICE`].
    pub fn new(listener: &'static str) -> MetricsLayer {
        MetricsLayer { listener }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured { inner, listener: self.listener }
    }
}

/// A service whose requests are measured.
#[derive(Clone, Debug)]
pub struct Measured<S> {
    inner: S,
    listener: &'static str,
}

impl<S, B> tower::Service<Request<B>> for Measured<S>
where
    S: tower::Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
        let listener = self.listener;
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            if let Ok(response) = &answer {
                let route = route.as_deref().unwrap_or(ROUTE_UNMATCHED);
                requests().record(listener, route, response.status().as_u16(), started.elapsed());
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setup: a fresh registry. Action: three requests on two routes of one listener. Expect:
    /// the exact 0.0.4 text: HELP and TYPE once per family, a counter per status class, buckets
    /// cumulative and ending with `+Inf` equal to `_count`, `_sum` the total seconds. (SPEC U3)
    #[test]
    fn u3_request_metrics_encode_as_prometheus_text() {
        let metrics = RequestMetrics::new();
        metrics.record(SERVICE, "/agent/v1/keys/{key_id}", 200, Duration::from_millis(2));
        metrics.record(SERVICE, "/agent/v1/keys/{key_id}", 404, Duration::from_millis(20));
        metrics.record(SERVICE, ROUTE_UNMATCHED, 503, Duration::from_secs(30));
        let mut out = Exposition::new();
        metrics.encode(&mut out);
        let text = out.finish();
        let keys = r#"listener="service",route="/agent/v1/keys/{key_id}""#;
        let unmatched = r#"listener="service",route="unmatched""#;
        let mut expected = String::from(
            "# HELP kms_http_requests_total HTTP requests answered, by listener, route and \
             status class.\n# TYPE kms_http_requests_total counter\n",
        );
        for (labels, counts) in [(keys, [0, 1, 0, 1, 0]), (unmatched, [0, 0, 0, 0, 1])] {
            for (class, count) in STATUS_CLASSES.iter().zip(counts) {
                expected += &format!(
                    "kms_http_requests_total{{{labels},status_class=\"{class}\"}} {count}\n"
                );
            }
        }
        expected += "# HELP kms_http_request_duration_seconds Time from a request's arrival to \
                     its response head, by listener and route.\n\
                     # TYPE kms_http_request_duration_seconds histogram\n";
        let les = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1"];
        let les = les.iter().chain(&["0.25", "0.5", "1", "2.5", "10", "+Inf"]);
        let keys_cumulative = [0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2];
        let unmatched_cumulative = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for (labels, cumulative, sum, count) in
            [(keys, keys_cumulative, "0.022", 2), (unmatched, unmatched_cumulative, "30", 1)]
        {
            for (le, n) in les.clone().zip(cumulative) {
                expected += &format!(
                    "kms_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
                );
            }
            expected += &format!("kms_http_request_duration_seconds_sum{{{labels}}} {sum}\n");
            expected += &format!("kms_http_request_duration_seconds_count{{{labels}}} {count}\n");
        }
        assert_eq!(text, expected);
    }

    /// Setup: an exposition. Action: a gauge with a label holding a quote, a backslash and a
    /// newline, a help text with a newline, and the special values. Expect: the escapes of
    /// format 0.0.4 and `+Inf`/`-Inf`/`NaN` spelled as Prometheus parses them. (SPEC U3)
    #[test]
    fn u3_exposition_escapes_labels_and_help_and_spells_special_values() {
        let mut out = Exposition::new();
        out.family("kms_example", Kind::Gauge, "first line\nsecond \\ line");
        out.sample_f64("kms_example", &[("kma", "a\"b\\c\nd")], f64::INFINITY);
        out.sample_f64("kms_example", &[], f64::NEG_INFINITY);
        out.sample_f64("kms_example", &[("x", "")], f64::NAN);
        out.sample_f64("kms_example", &[], 0.25);
        out.sample_u64("kms_example", &[], u64::MAX);
        let expected = "# HELP kms_example first line\\nsecond \\\\ line\n\
                        # TYPE kms_example gauge\n\
                        kms_example{kma=\"a\\\"b\\\\c\\nd\"} +Inf\n\
                        kms_example -Inf\n\
                        kms_example{x=\"\"} NaN\n\
                        kms_example 0.25\n\
                        kms_example 18446744073709551615\n";
        assert_eq!(out.finish(), expected);
    }

    /// Setup: a registry. Action: requests on more distinct routes than the bound. Expect: the
    /// routes past it are counted under `other`, so the registry stays bounded. (SPEC U3)
    #[test]
    fn u3_routes_past_the_bound_are_counted_as_other() {
        let metrics = RequestMetrics::new();
        for n in 0..ROUTES_PER_LISTENER_MAX + 10 {
            metrics.record(MANAGEMENT, &format!("/r{n}"), 200, Duration::from_millis(1));
        }
        let listeners = metrics.listeners.lock().expect("lock");
        let routes = &listeners[MANAGEMENT];
        assert_eq!(routes.len(), ROUTES_PER_LISTENER_MAX + 1);
        assert_eq!(routes[ROUTE_OTHER].count, 10);
        assert_eq!(routes[ROUTE_OTHER].by_class, [0, 10, 0, 0, 0]);
    }
}
