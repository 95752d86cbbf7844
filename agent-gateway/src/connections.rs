//! How many connections a listener holds, and for how long (issue #16, point 6).
//!
//! Why: every connection holds a file descriptor until it ends, and a KMA's descriptors are shared
//! by both listeners, the Raft links and the storage. Tried on a KMA without these bounds: about
//! 20,000 idle TLS sessions opened without a certificate (two ordinary client processes, 16 s)
//! used up its descriptors, neither listener could accept, and every write of the cluster failed
//! while that KMA stayed leader. Anyone who can reach a port can open sockets, so the bounds
//! must hold whatever a client sends, and must not let such a flood shut out the clients that
//! matter: drives and users with a certificate, other KMAs, and the anonymous requests a KMA has
//! to answer (enrollment, logins, joins, health probes).
//!
//! The rules, per listener:
//! - at most [`ConnectionLimits::connections_max`] connections in any phase; beyond it a new
//!   connection is accepted and closed at once, counted, and warned about at most once per
//!   [`REFUSAL_WARNING_INTERVAL`];
//! - at most [`ConnectionLimits::handshakes_max`] in their TLS handshake: when full, the one
//!   waiting longest is dropped for the newcomer, so sockets that connect and send nothing cannot
//!   fill the total;
//! - at most [`ConnectionLimits::anonymous_max`] that completed their handshake without a client
//!   certificate: when full, the oldest idle one is closed for the newcomer (a connection with a
//!   request in flight is never cut; when every one is busy the newcomer is closed);
//! - connections with a CA-verified client certificate, and those handed off to another protocol
//!   (which need one), are never closed to make room: the anonymous and handshake budgets keep
//!   `connections_max - handshakes_max - anonymous_max` slots for them whatever a flood does.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Refusals beyond the bounds are logged at most this often, with the count since the last
/// warning: one line per refused socket would let a flood fill the disk with logs instead.
pub const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// A connection asked to close (idle, evicted) has this long to finish what it writes; a request
/// still in flight by then keeps it open until it ends.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The bounds of one listener (see the module documentation for how they work together).
/// `Default` gives values for a KMA whose process may hold 20,000 descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections the listener holds at once, in any phase. Beyond it a new connection is
    /// accepted and closed at once, so that the process never runs out of descriptors: two
    /// listeners at 4,096 each leave most of a 20,000 descriptor limit to Raft links and storage.
    /// Raising it costs a descriptor and some tens of KiB (TLS and HTTP buffers) per connection.
    pub connections_max: usize,
    /// Most connections in their TLS handshake at once (at least 1). When full, the oldest
    /// handshake is dropped for the new one. A real handshake takes a round trip or two and a few
    /// hundred microseconds of CPU, so a real client is rarely the oldest even under a flood; too
    /// small a value drops slow (long-distance) clients while many others connect at once.
    pub handshakes_max: usize,
    /// Most connections without a client certificate once their handshake is done (enrollment,
    /// logins, joins, health probes). When full, the oldest idle one is closed for the new one;
    /// when none is idle, the new one is closed.
    pub anonymous_max: usize,
    /// Longest TLS handshake; a client that has not finished by then is disconnected.
    pub handshake_timeout: Duration,
    /// Longest time from the end of the handshake to the complete headers of the first request
    /// (HTTP/1.1 or HTTP/2). Later requests on the same connection are bounded by the idle time:
    /// until its headers are read, a request is not in flight.
    pub header_read_timeout: Duration,
    /// A connection with a client certificate and no request in flight for this long is closed
    /// (HTTP/2 too). Drives and users keep connections open to spare handshakes, so it is long.
    pub idle_timeout: Duration,
    /// The idle time of connections without a client certificate: short, since their clients
    /// send a request or two (a hello and its proof, one probe) and go.
    pub anonymous_idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            connections_max: 4096,
            handshakes_max: 512,
            anonymous_max: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            anonymous_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// What a listener's connections look like now, and what its bounds did so far: a cloneable
/// handle the node reads to export metrics. Gauges are exact after each change; reading several
/// is not one snapshot.
#[derive(Clone, Debug, Default)]
pub struct ConnectionStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    handshaking: AtomicU64,
    anonymous: AtomicU64,
    refused_total: AtomicU64,
    evicted_total: AtomicU64,
}

impl ConnectionStats {
    /// Connections held now, in any phase (handshake, HTTP, handed off).
    pub fn open(&self) -> u64 {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Connections in their TLS handshake now.
    pub fn handshaking(&self) -> u64 {
        self.counters.handshaking.load(Ordering::SeqCst)
    }

    /// Connections without a client certificate, past their handshake, now.
    pub fn anonymous(&self) -> u64 {
        self.counters.anonymous.load(Ordering::SeqCst)
    }

    /// Connections closed at once since the start: beyond `connections_max`, or anonymous ones
    /// when every anonymous slot had a request in flight.
    pub fn refused_total(&self) -> u64 {
        self.counters.refused_total.load(Ordering::SeqCst)
    }

    /// Connections closed to make room for a newer one since the start: the oldest handshake
    /// when `handshakes_max` were under way, the oldest idle anonymous connection when
    /// `anonymous_max` were open.
    pub fn evicted_total(&self) -> u64 {
        self.counters.evicted_total.load(Ordering::SeqCst)
    }
}

/// The connections of one listener.
pub(crate) struct Registry {
    name: &'static str,
    limits: ConnectionLimits,
    stats: ConnectionStats,
    tables: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    next_id: u64,
    open: usize,
    /// By admission order, so the first is the oldest.
    handshaking: BTreeMap<u64, Arc<Slot>>,
    anonymous: BTreeMap<u64, Arc<Slot>>,
    refused_unreported: u64,
    warned_at: Option<Instant>,
}

/// One connection as its listener's bounds see it.
pub(crate) struct Slot {
    /// Requests whose headers were read and whose answer was not sent to its end yet.
    in_flight: AtomicUsize,
    requests_total: AtomicU64,
    admitted_at: Instant,
    /// When `in_flight` last fell to zero, in milliseconds since `admitted_at`.
    idle_since_ms: AtomicU64,
    evicted: Notify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Anonymous,
    /// A client certificate, or handed off: never evicted.
    Authenticated,
}

/// A connection's place in its listener's bounds, held for its whole life; dropping it frees
/// the place.
pub(crate) struct Admission {
    registry: Arc<Registry>,
    id: u64,
    phase: Phase,
    pub slot: Arc<Slot>,
}

/// Why a connection was asked to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// No request headers within `header_read_timeout` of the handshake.
    HeaderTimeout,
    /// No request in flight for the idle time.
    Idle,
    /// Closed to make room for a newer anonymous connection.
    Evicted,
}

impl Registry {
    pub fn new(name: &'static str, limits: ConnectionLimits, stats: ConnectionStats) -> Arc<Self> {
        Arc::new(Registry { name, limits, stats, tables: Mutex::new(Tables::default()) })
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // Every change to the tables is complete before any call that could panic.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection just accepted, in its handshake phase; `None` when the listener
    /// holds `connections_max` already and the connection must be closed at once.
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        let mut tables = self.tables();
        if tables.open >= self.limits.connections_max {
            self.refuse(&mut tables, "connections over the listener's bound closed at once");
            return None;
        }
        while tables.handshaking.len() >= self.limits.handshakes_max.max(1) {
            let Some((_, oldest)) = tables.handshaking.pop_first() else { break };
            oldest.evicted.notify_one();
            self.stats.counters.evicted_total.fetch_add(1, Ordering::SeqCst);
        }
        tables.open += 1;
        let id = tables.next_id;
        tables.next_id += 1;
        let slot = Arc::new(Slot::new());
        tables.handshaking.insert(id, slot.clone());
        self.publish(&tables);
        Some(Admission { registry: self.clone(), id, phase: Phase::Handshaking, slot })
    }

    fn refuse(&self, tables: &mut Tables, what: &'static str) {
        self.stats.counters.refused_total.fetch_add(1, Ordering::SeqCst);
        tables.refused_unreported += 1;
        let now = Instant::now();
        if tables.warned_at.is_none_or(|at| now >= at + REFUSAL_WARNING_INTERVAL) {
            let limits = &self.limits;
            tracing::warn!(
                name = self.name,
                refused = tables.refused_unreported,
                open = tables.open,
                anonymous = tables.anonymous.len(),
                connections_max = limits.connections_max,
                anonymous_max = limits.anonymous_max,
                "{what}"
            );
            tables.refused_unreported = 0;
            tables.warned_at = Some(now);
        }
    }

    fn publish(&self, tables: &Tables) {
        let counters = &self.stats.counters;
        counters.open.store(tables.open as u64, Ordering::SeqCst);
        counters.handshaking.store(tables.handshaking.len() as u64, Ordering::SeqCst);
        counters.anonymous.store(tables.anonymous.len() as u64, Ordering::SeqCst);
    }
}

impl Admission {
    /// The handshake is done: the connection becomes anonymous (`certified` false) or
    /// authenticated. Returns false when it must be closed: evicted during its handshake, or
    /// anonymous while every anonymous place has a request in flight.
    pub fn settle(&mut self, certified: bool) -> bool {
        assert_eq!(self.phase, Phase::Handshaking, "a connection settles once");
        let registry = self.registry.clone();
        let mut tables = registry.tables();
        let was_handshaking = tables.handshaking.remove(&self.id).is_some();
        self.phase = Phase::Authenticated;
        let settled = was_handshaking && (certified || self.make_room(&mut tables));
        if settled && !certified {
            tables.anonymous.insert(self.id, self.slot.clone());
            self.phase = Phase::Anonymous;
        }
        registry.publish(&tables);
        settled
    }

    /// Frees an anonymous place if none is left, by closing the oldest idle anonymous
    /// connection; false when every one has a request in flight.
    fn make_room(&self, tables: &mut Tables) -> bool {
        let registry = &self.registry;
        if tables.anonymous.len() < registry.limits.anonymous_max {
            return true;
        }
        let idle = tables.anonymous.iter().find(|(_, slot)| slot.is_idle()).map(|(id, _)| *id);
        match idle.and_then(|id| tables.anonymous.remove(&id)) {
            Some(oldest) => {
                oldest.evicted.notify_one();
                registry.stats.counters.evicted_total.fetch_add(1, Ordering::SeqCst);
                true
            }
            None => {
                registry.refuse(tables, "anonymous connections closed: every place is busy");
                false
            }
        }
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.registry.limits
    }

    /// How long this connection may stay without a request in flight.
    pub fn idle_timeout(&self) -> Duration {
        let limits = &self.registry.limits;
        match self.phase {
            Phase::Anonymous => limits.anonymous_idle_timeout,
            Phase::Handshaking | Phase::Authenticated => limits.idle_timeout,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let registry = self.registry.clone();
        let mut tables = registry.tables();
        match self.phase {
            Phase::Handshaking => drop(tables.handshaking.remove(&self.id)),
            Phase::Anonymous => drop(tables.anonymous.remove(&self.id)),
            Phase::Authenticated => {}
        }
        debug_assert!(tables.open > 0, "each admission counted once");
        tables.open = tables.open.saturating_sub(1);
        registry.publish(&tables);
    }
}

impl Slot {
    fn new() -> Self {
        Slot {
            in_flight: AtomicUsize::new(0),
            requests_total: AtomicU64::new(0),
            admitted_at: Instant::now(),
            idle_since_ms: AtomicU64::new(0),
            evicted: Notify::new(),
        }
    }

    /// Resolves once the connection was closed to make room for a newer one.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Called when a request's headers are read; the request is in flight until the returned
    /// guard is dropped (with the answer's body, once sent).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests_total.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight { slot: self.clone() }
    }

    /// Resolves once the connection must close (waits on `evicted` too); `headers_by` bounds the
    /// first request, `idle` the time without one in flight.
    async fn closing(&self, headers_by: Instant, idle: Duration) -> Closing {
        loop {
            let deadline = if self.requests_total.load(Ordering::SeqCst) == 0 {
                headers_by
            } else if self.is_idle() {
                let idle_since_ms = self.idle_since_ms.load(Ordering::SeqCst);
                self.admitted_at + Duration::from_millis(idle_since_ms) + idle
            } else {
                // Busy: look again later; the guard's drop resets the idle start.
                Instant::now() + idle
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = self.evicted.notified() => return Closing::Evicted,
            }
            if let Some(closing) = self.expired(headers_by, idle) {
                return closing;
            }
        }
    }

    fn expired(&self, headers_by: Instant, idle: Duration) -> Option<Closing> {
        let now = Instant::now();
        if self.requests_total.load(Ordering::SeqCst) == 0 {
            return (now >= headers_by).then_some(Closing::HeaderTimeout);
        }
        let idle_since_ms = self.idle_since_ms.load(Ordering::SeqCst);
        let idle_until = self.admitted_at + Duration::from_millis(idle_since_ms) + idle;
        (self.is_idle() && now >= idle_until).then_some(Closing::Idle)
    }
}

/// A request in flight on its connection: its idle time does not run.
pub(crate) struct InFlight {
    slot: Arc<Slot>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let since_ms = u64::try_from(self.slot.admitted_at.elapsed().as_millis()).unwrap_or(0);
        // Stored before the count falls, so whoever sees zero also sees when it fell.
        self.slot.idle_since_ms.store(since_ms, Ordering::SeqCst);
        self.slot.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that keeps its request in flight until hyper has sent it and drops it.
pub(crate) struct TrackedBody<B> {
    inner: B,
    /// Held for its drop only.
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        TrackedBody { inner, _in_flight: in_flight }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a supervised connection ended.
pub(crate) enum Ended<O> {
    /// The client went, or the protocol ended it: the connection's own outcome.
    ByItself(O),
    /// Its bounds closed it.
    Closed(Closing),
}

/// Runs an HTTP connection until it ends or must close; then asks it to close (`shutdown`:
/// hyper's graceful shutdown, a GOAWAY on HTTP/2) and gives it [`SHUTDOWN_GRACE`] after its
/// last request in flight.
pub(crate) async fn supervise<C: Future>(
    mut connection: Pin<&mut C>,
    shutdown: impl FnOnce(Pin<&mut C>),
    admission: &Admission,
) -> Ended<C::Output> {
    let slot = &admission.slot;
    let headers_by = Instant::now() + admission.registry.limits.header_read_timeout;
    let closing = tokio::select! {
        output = connection.as_mut() => return Ended::ByItself(output),
        closing = slot.closing(headers_by, admission.idle_timeout()) => closing,
    };
    shutdown(connection.as_mut());
    loop {
        tokio::select! {
            _ = connection.as_mut() => return Ended::Closed(closing),
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                if slot.is_idle() {
                    return Ended::Closed(closing);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        connections_max: usize,
        handshakes_max: usize,
        anonymous_max: usize,
    ) -> ConnectionLimits {
        ConnectionLimits {
            connections_max,
            handshakes_max,
            anonymous_max,
            ..ConnectionLimits::default()
        }
    }

    /// Setup: a registry of 3 connections at most. Action: admit 4, drop one, admit again.
    /// Expect: the fourth is refused and counted; after a drop a place is free again; the
    /// gauges follow. (SPEC S2, issue #16 point 6)
    #[tokio::test]
    async fn s2_admissions_stop_at_the_total_and_resume_when_one_ends() {
        let stats = ConnectionStats::default();
        let registry = Registry::new("test", limits(3, 10, 10), stats.clone());
        let mut held: Vec<Admission> = (0..3).map(|_| registry.admit().unwrap()).collect();
        assert!(registry.admit().is_none());
        assert_eq!((stats.open(), stats.handshaking(), stats.refused_total()), (3, 3, 1));
        held.pop();
        assert_eq!(stats.open(), 2);
        held.push(registry.admit().unwrap());
        assert_eq!((stats.open(), stats.refused_total()), (3, 1));
    }

    /// Setup: two anonymous places; connection A busy (a request in flight), B idle, and one
    /// authenticated connection. Action: a third, then a fourth anonymous connection settle.
    /// Expect: the third evicts B (the oldest idle, A being busy), never the authenticated one;
    /// the fourth evicts the third; with both busy a fifth is refused. (SPEC S2)
    #[tokio::test]
    async fn s2_anonymous_eviction_takes_the_oldest_idle_and_never_a_busy_one() {
        let stats = ConnectionStats::default();
        let registry = Registry::new("test", limits(100, 100, 2), stats.clone());
        let settled = |certified: bool| {
            let mut admission = registry.admit().unwrap();
            let ok = admission.settle(certified);
            (admission, ok)
        };
        let (certified, _) = settled(true);
        let (a, _) = settled(false);
        let busy_a = a.slot.begin();
        let (b, _) = settled(false);
        let (c, c_ok) = settled(false);
        assert!(c_ok);
        assert!(tokio::time::timeout(Duration::ZERO, b.slot.evicted.notified()).await.is_ok());
        let (d, d_ok) = settled(false);
        assert!(d_ok);
        assert!(tokio::time::timeout(Duration::ZERO, c.slot.evicted.notified()).await.is_ok());
        let _busy_d = d.slot.begin();
        let (_e, e_ok) = settled(false);
        assert!(!e_ok, "every anonymous place busy: the newcomer is closed");
        assert_eq!((stats.evicted_total(), stats.refused_total(), stats.anonymous()), (2, 1, 2));
        for kept in [&certified, &a] {
            let notified = tokio::time::timeout(Duration::ZERO, kept.slot.evicted.notified());
            assert!(notified.await.is_err(), "busy and authenticated connections stay");
        }
        drop(busy_a);
    }
}
