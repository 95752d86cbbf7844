//! Request metrics of both listeners (SPEC U3), and the registry `health` serves on
//! `/metrics`, encoded by `prometheus-client` (the Prometheus project's own crate) in the text
//! format 0.0.4.
//!
//! [`MetricsLayer`] wraps a router: every request is counted by listener, route and status class,
//! and its latency goes into a histogram per listener and route. The route is the template the
//! router matched (`/agent/v1/data-units/{id}/keys`), never the raw URI: IDs in paths would make
//! one series per data unit, and a URI is the client's text. At most
//! [`ROUTES_PER_LISTENER_MAX`] routes are tracked per listener, so no input grows the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::Request;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

/// The content type of the text `/metrics` serves.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: &'static str,
    route: String,
}

type Durations = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_S)
}

/// Request counters and latency histograms, by listener then route: a cheap handle shared by
/// the layers that count and the registry that `/metrics` encodes.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    /// The routes seen per listener, for the bound.
    routes: Arc<Mutex<BTreeMap<&'static str, BTreeSet<String>>>>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(latency_histogram),
            routes: Arc::default(),
        }
    }
}

impl RequestMetrics {
    pub fn new() -> RequestMetrics {
        RequestMetrics::default()
    }

    /// Adds the request counter and the latency histogram families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kms_http_requests",
            "HTTP requests answered, by listener, route and status class",
            self.requests.clone(),
        );
        registry.register(
            "kms_http_request_duration_seconds",
            "Time from a request's arrival to its response head, by listener and route",
            self.durations.clone(),
        );
    }

    /// Counts one answered request.
    pub fn record(&self, listener: &'static str, route: &str, status: u16, elapsed: Duration) {
        let class = STATUS_CLASSES[usize::from(status / 100).clamp(1, 5) - 1];
        let route = self.bounded(listener, route);
        let labels = RequestLabels { listener, route: route.clone(), status_class: class };
        self.requests.get_or_create(&labels).inc();
        let labels = RouteLabels { listener, route };
        self.durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// `route`, or [`ROUTE_OTHER`] once the listener has [`ROUTES_PER_LISTENER_MAX`] others.
    fn bounded(&self, listener: &'static str, route: &str) -> String {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = routes.entry(listener).or_default();
        if seen.contains(route) {
            return route.to_owned();
        }
        if seen.len() < ROUTES_PER_LISTENER_MAX {
            seen.insert(route.to_owned());
            return route.to_owned();
        }
        ROUTE_OTHER.to_owned()
    }
}

/// The registry's text, format 0.0.4.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; a metric that failed to encode would show as a gap.
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        tracing::error!(%error, "metrics could not be encoded");
    }
    text
}

/// Measures every request of the router it wraps (see the module doc).
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    listener: &'static str,
    metrics: RequestMetrics,
}

impl MetricsLayer {
    /// `listener` is [`MANAGEMENT`] or [`SERVICE`].
    pub fn new(listener: &'static str, metrics: RequestMetrics) -> MetricsLayer {
        MetricsLayer { listener, metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured { inner, listener: self.listener, metrics: self.metrics.clone() }
    }
}

/// A service whose requests are measured.
#[derive(Clone, Debug)]
pub struct Measured<S> {
    inner: S,
    listener: &'static str,
    metrics: RequestMetrics,
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
        let metrics = self.metrics.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            if let Ok(response) = &answer {
                let route = route.as_deref().unwrap_or(ROUTE_UNMATCHED);
                metrics.record(listener, route, response.status().as_u16(), started.elapsed());
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(metrics: &RequestMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        encode(&registry)
    }

    /// Setup: fresh request metrics. Action: three requests on two routes of one listener.
    /// Expect: a counter per route and status class seen, buckets cumulative and ending with
    /// `+Inf` equal to `_count`, `_sum` the total seconds. (SPEC U3)
    #[test]
    fn u3_request_metrics_encode_as_prometheus_text() {
        let metrics = RequestMetrics::new();
        metrics.record(SERVICE, "/agent/v1/keys/{key_id}", 200, Duration::from_millis(2));
        metrics.record(SERVICE, "/agent/v1/keys/{key_id}", 404, Duration::from_millis(20));
        metrics.record(SERVICE, ROUTE_UNMATCHED, 503, Duration::from_secs(30));
        let text = encoded(&metrics);
        let keys = r#"listener="service",route="/agent/v1/keys/{key_id}""#;
        let unmatched = r#"listener="service",route="unmatched""#;
        for line in [
            "# TYPE kms_http_requests_total counter".to_string(),
            format!("kms_http_requests_total{{{keys},status_class=\"2xx\"}} 1"),
            format!("kms_http_requests_total{{{keys},status_class=\"4xx\"}} 1"),
            format!("kms_http_requests_total{{{unmatched},status_class=\"5xx\"}} 1"),
            "# TYPE kms_http_request_duration_seconds histogram".to_string(),
            format!("kms_http_request_duration_seconds_bucket{{{keys},le=\"0.001\"}} 0"),
            format!("kms_http_request_duration_seconds_bucket{{{keys},le=\"0.0025\"}} 1"),
            format!("kms_http_request_duration_seconds_bucket{{{keys},le=\"0.025\"}} 2"),
            format!("kms_http_request_duration_seconds_bucket{{{keys},le=\"+Inf\"}} 2"),
            format!("kms_http_request_duration_seconds_sum{{{keys}}} 0.022"),
            format!("kms_http_request_duration_seconds_count{{{keys}}} 2"),
            format!("kms_http_request_duration_seconds_bucket{{{unmatched},le=\"10\"}} 0"),
            format!("kms_http_request_duration_seconds_bucket{{{unmatched},le=\"+Inf\"}} 1"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert_eq!(text.matches("status_class=\"2xx\"").count(), 1, "{text}");
    }

    /// Setup: request metrics. Action: requests on more distinct routes than the bound. Expect:
    /// the routes past it are counted under `other`, so the registry stays bounded. (SPEC U3)
    #[test]
    fn u3_routes_past_the_bound_are_counted_as_other() {
        let metrics = RequestMetrics::new();
        for n in 0..ROUTES_PER_LISTENER_MAX + 10 {
            metrics.record(MANAGEMENT, &format!("/r{n}"), 200, Duration::from_millis(1));
        }
        let text = encoded(&metrics);
        let counters = text.lines().filter(|l| l.starts_with("kms_http_requests_total{"));
        assert_eq!(counters.count(), ROUTES_PER_LISTENER_MAX + 1);
        let other =
            r#"kms_http_requests_total{listener="management",route="other",status_class="2xx"} 10"#;
        assert!(text.lines().any(|l| l == other), "{text}");
    }
}
