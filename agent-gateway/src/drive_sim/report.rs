//! What a fleet run measured: operations by kind, the latency of every agent request, errors
//! and verification failures, and the table that prints them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::DriveMode;

/// The operations a drive performs. Only the four data operations count toward
/// [`FleetReport::ops`] and the `ops` budget; mounts and dismounts are listed beside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// Load a tape; StorageTek drives prefetch the data unit's keys here.
    Mount,
    /// Write a blank tape from BOT.
    WriteFromBot,
    /// Write after the last record.
    Append,
    /// Read the whole tape and check every record.
    Read,
    /// Rewrite a used tape from BOT.
    Recycle,
    Dismount,
}

impl OpKind {
    pub const ALL: [OpKind; 6] = [
        OpKind::Mount,
        OpKind::WriteFromBot,
        OpKind::Append,
        OpKind::Read,
        OpKind::Recycle,
        OpKind::Dismount,
    ];

    pub fn is_data(self) -> bool {
        !matches!(self, OpKind::Mount | OpKind::Dismount)
    }

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Mount => "mount",
            OpKind::WriteFromBot => "write from BOT",
            OpKind::Append => "append",
            OpKind::Read => "read",
            OpKind::Recycle => "recycle",
            OpKind::Dismount => "dismount",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Sub-buckets per power of two above [`EXACT_US`]: a reported latency is within about 3% of
/// the measured one.
const SUB_BUCKETS: u64 = 32;
/// Latencies below this many microseconds are counted exactly.
const EXACT_US: u64 = 2 * SUB_BUCKETS;
const EXACT_BITS: u32 = EXACT_US.trailing_zeros();
/// Enough buckets for any `u64` of microseconds.
const BUCKETS: usize = (EXACT_US + (64 - EXACT_BITS as u64) * SUB_BUCKETS) as usize;

/// A log-linear latency histogram in microseconds: fixed memory however long the run, and
/// drives' histograms add up.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0 }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < EXACT_US {
            return us as usize;
        }
        let exponent = 63 - us.leading_zeros(); // >= EXACT_BITS
        let mantissa = us >> (exponent - EXACT_BITS + 1); // in [SUB_BUCKETS, 2 * SUB_BUCKETS)
        let index =
            EXACT_US + u64::from(exponent - EXACT_BITS) * SUB_BUCKETS + (mantissa - SUB_BUCKETS);
        index as usize
    }

    /// The middle of bucket `index`, in microseconds.
    fn value(index: usize) -> f64 {
        let index = index as u64;
        if index < EXACT_US {
            return index as f64;
        }
        let step = index - EXACT_US;
        let shift = step / SUB_BUCKETS + 1;
        let mantissa = step % SUB_BUCKETS + SUB_BUCKETS;
        let low = (mantissa << shift) as f64;
        low + ((1u64 << shift) as f64 - 1.0) / 2.0
    }

    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
    }

    pub fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency at quantile `q` (0..=1), in milliseconds; 0 when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::value(index) / 1000.0;
            }
        }
        0.0
    }
}

/// What one drive counted; the fleet adds them up.
#[derive(Clone, Default)]
pub struct DriveStats {
    pub ops: BTreeMap<OpKind, u64>,
    pub errors: BTreeMap<OpKind, u64>,
    /// Latency of each agent request, by the operation that sent it.
    pub latency: BTreeMap<OpKind, Histogram>,
    pub verification_failures: u64,
    pub records_written: u64,
    pub records_verified: u64,
    /// Drives that stopped early after too many failed operations in a row.
    pub drives_given_up: usize,
}

impl DriveStats {
    pub fn add(&mut self, other: &DriveStats) {
        for (kind, count) in &other.ops {
            *self.ops.entry(*kind).or_default() += count;
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(*kind).or_default() += count;
        }
        for (kind, histogram) in &other.latency {
            self.latency.entry(*kind).or_default().add(histogram);
        }
        self.verification_failures += other.verification_failures;
        self.records_written += other.records_written;
        self.records_verified += other.records_verified;
        self.drives_given_up += other.drives_given_up;
    }
}

/// One line of the table: an operation kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindReport {
    /// Completed operations of this kind.
    pub ops: u64,
    /// Operations abandoned on a client error (retried later).
    pub errors: u64,
    /// Agent requests sent by operations of this kind, and their latency.
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The outcome of a fleet run.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetReport {
    pub mode: DriveMode,
    pub drives: usize,
    /// Completed data operations (write from BOT, append, read, recycle).
    pub ops: u64,
    pub elapsed: Duration,
    pub ops_per_s: f64,
    /// Agent requests answered, and their latency percentiles over the whole run.
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Records read back that did not decrypt to exactly what was written. Must be zero.
    pub verification_failures: u64,
    /// Operations abandoned on an error of the client library (after its own failover).
    pub errors: u64,
    pub records_written: u64,
    pub records_verified: u64,
    /// Drives that stopped before the end of the run: every KMA failed them too many times in
    /// a row. A healthy cluster run has none.
    pub drives_given_up: usize,
    pub by_kind: BTreeMap<OpKind, KindReport>,
}

impl FleetReport {
    pub(crate) fn new(
        mode: DriveMode,
        drives: usize,
        stats: &DriveStats,
        elapsed: Duration,
    ) -> Self {
        let mut all = Histogram::default();
        let mut by_kind = BTreeMap::new();
        for kind in OpKind::ALL {
            let latency = stats.latency.get(&kind).cloned().unwrap_or_default();
            all.add(&latency);
            let line = KindReport {
                ops: stats.ops.get(&kind).copied().unwrap_or(0),
                errors: stats.errors.get(&kind).copied().unwrap_or(0),
                requests: latency.count(),
                p50_ms: latency.quantile_ms(0.5),
                p99_ms: latency.quantile_ms(0.99),
            };
            by_kind.insert(kind, line);
        }
        let ops = by_kind.iter().filter(|(kind, _)| kind.is_data()).map(|(_, line)| line.ops).sum();
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        FleetReport {
            mode,
            drives,
            ops,
            elapsed,
            ops_per_s: ops as f64 / seconds,
            requests: all.count(),
            requests_per_s: all.count() as f64 / seconds,
            p50_ms: all.quantile_ms(0.5),
            p99_ms: all.quantile_ms(0.99),
            p999_ms: all.quantile_ms(0.999),
            verification_failures: stats.verification_failures,
            errors: stats.errors.values().sum(),
            records_written: stats.records_written,
            records_verified: stats.records_verified,
            drives_given_up: stats.drives_given_up,
            by_kind,
        }
    }
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "drive-sim: {} {} drives, {:.2} s, {} ops ({:.1} ops/s), {} agent requests ({:.1}/s)",
            self.drives,
            self.mode,
            self.elapsed.as_secs_f64(),
            self.ops,
            self.ops_per_s,
            self.requests,
            self.requests_per_s,
        )?;
        writeln!(
            f,
            "{:<16} {:>9} {:>7} {:>9} {:>9} {:>9}",
            "operation", "ops", "errors", "requests", "p50 ms", "p99 ms"
        )?;
        for (kind, line) in &self.by_kind {
            let (p50, p99) = match line.requests {
                0 => ("-".to_owned(), "-".to_owned()),
                _ => (format!("{:.2}", line.p50_ms), format!("{:.2}", line.p99_ms)),
            };
            writeln!(
                f,
                "{:<16} {:>9} {:>7} {:>9} {:>9} {:>9}",
                kind, line.ops, line.errors, line.requests, p50, p99
            )?;
        }
        writeln!(
            f,
            "{:<16} {:>9} {:>7} {:>9} {:>9.2} {:>9.2}   p99.9 {:.2} ms",
            "all", self.ops, self.errors, self.requests, self.p50_ms, self.p99_ms, self.p999_ms
        )?;
        write!(
            f,
            "records written {}, records verified {}, verification failures {}",
            self.records_written, self.records_verified, self.verification_failures
        )?;
        if self.drives_given_up > 0 {
            write!(
                f,
                "\n{} drives gave up after failing too often in a row (see their errors above)",
                self.drives_given_up
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_few_percent() {
        let mut histogram = Histogram::default();
        for us in 1..=10_000u64 {
            histogram.record(Duration::from_micros(us));
        }
        assert_eq!(histogram.count(), 10_000);
        for (q, expected_ms) in [(0.5, 5.0), (0.99, 9.9), (0.999, 9.99)] {
            let got = histogram.quantile_ms(q);
            assert!((got - expected_ms).abs() / expected_ms < 0.04, "q{q}: {got} ms");
        }
        assert_eq!(Histogram::default().quantile_ms(0.5), 0.0);
        histogram.record(Duration::MAX);
        assert!(histogram.quantile_ms(1.0) > 1e12);
    }

    #[test]
    fn histogram_buckets_are_ordered_and_contain_their_values() {
        let mut last = 0;
        for us in (0..1_000_000u64).step_by(97).chain([u64::MAX / 2, u64::MAX]) {
            let bucket = Histogram::bucket(us);
            assert!(bucket >= last && bucket < BUCKETS);
            let middle = Histogram::value(bucket);
            assert!((middle - us as f64).abs() <= us as f64 / 30.0 + 0.5, "{us} -> {middle}");
            last = bucket;
        }
    }
}
