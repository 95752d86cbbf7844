//! How process tests let time pass: they wait for something they can observe (an applied
//! index, a status field, a digest, a leader, an audit record, a metric), with a deadline, and
//! fail naming what they waited for and what they saw last. No test sleeps to "give it time".

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// The first pause between two probes; it doubles up to [`POLL_MAX`], so that a quick
/// condition is seen within milliseconds and a slow one (a pool of 25,000 keys) is not probed
/// hundreds of times on a two-core machine.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(250);

/// Probes until `probe` answers `Ok(value)` and returns that value. `Err(seen)` means "not
/// yet" and carries what was observed; once `timeout` has passed the test fails with `what`
/// (say what is awaited: "kma2 to be locked") and the last `seen`.
pub async fn wait_until<T, S: Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, S>,
) -> T {
    let started = Instant::now();
    let mut pause = POLL_FIRST;
    loop {
        let seen = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(started.elapsed() < timeout, "waited {timeout:?} for {what}; last seen: {seen:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Probes for the whole of `period` and fails at the first `Err(seen)`: for what must stay
/// true ("no refill starts", "the pool never passes its high water mark"). Returns the last
/// value. `period` is a length of time chosen on purpose: name it where it is defined.
pub async fn holds_for<T, S: Debug>(
    period: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, S>,
) -> T {
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) if started.elapsed() >= period => return value,
            Ok(_) => tokio::time::sleep(POLL_MAX.min(period)).await,
            Err(seen) => panic!("{what} stopped holding after {:?}: {seen:?}", started.elapsed()),
        }
    }
}

/// A probe's answer for a condition on what it saw: `Ok(seen)` when `done`, else `Err(seen)`.
pub fn done_if<T>(done: bool, seen: T) -> Result<T, T> {
    if done {
        Ok(seen)
    } else {
        Err(seen)
    }
}
