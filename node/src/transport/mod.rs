//! The lowest layer of a KMA: how it talks to other KMAs and accepts connections.
//!
//! Owns the rustls configurations ([`tls`]) and the certificate and trusted CAs behind them,
//! which a CA rotation replaces while the KMA runs ([`live_tls`]), the check of other KMAs' clocks ([`clock`]), Raft
//! links (framed mutual-TLS streams, [`link`]),
//! openraft's network over them ([`network`], with each peer's link health in
//! [`network::PeerLinks`]), entries sent ahead of the leader's own sync
//! ([`parallel_append`]), pooled links to the leader for forwarded proposals
//! ([`forward_links`]), the TLS accept loop of both listeners ([`accept`]), the wire types
//! that cross a link ([`wire`]), and what the membership says about a node ([`members`]).
//!
//! It must never touch `write/` or `listen/` (a CI check, `scripts/check-layers.sh`, says so):
//! what arrives for a higher layer goes up through channels ([`link::InboundProposal`]) or is
//! reported for it to read ([`network::PeerLinks::changed`]), never by calling up.

pub mod accept;
pub mod clock;
pub mod forward_links;
pub mod link;
pub mod live_tls;
pub mod members;
pub mod network;
pub mod parallel_append;
pub mod tls;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch from the wall clock.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Wall-clock ms of the last AppendEntries accepted from a leader or vote granted: the link
/// server touches it, the election watchdog reads it.
#[derive(Clone, Debug)]
pub struct LeaderContact(Arc<AtomicU64>);

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact(Arc::new(AtomicU64::new(wall_clock_ms())))
    }
}

impl LeaderContact {
    /// Records contact now: it puts off this KMA's own candidacy.
    pub fn touch(&self) {
        self.0.fetch_max(wall_clock_ms(), Ordering::SeqCst);
    }

    /// Milliseconds since the last contact.
    pub fn silent_ms(&self) -> u64 {
        wall_clock_ms().saturating_sub(self.0.load(Ordering::SeqCst))
    }
}
