//! A coarse clock that the relay path can read for the price of a memory
//! load: the keepalive needs to know when each connection last sent and was
//! heard from, and stamping every relayed frame with a system clock read
//! would cost one per peer per update.
//!
//! The clock counts steps of `STEP` since the process started. Each
//! keepalive thread moves it on whenever it wakes (`tick`): every step
//! while connections fall due, at least once a second otherwise. Between
//! ticks it stands still, so a stamp can be late, never early.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The clock's resolution, and the keepalive's.
pub const STEP: Duration = Duration::from_millis(50);

static NOW: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The step now, as last moved on by `tick`.
pub fn now() -> u64 {
    NOW.load(Ordering::Relaxed)
}

/// Moves the clock on to the current step and returns it. Several servers
/// in one process (tests) tick the same clock; it never goes back.
pub fn tick() -> u64 {
    let step = steps(epoch().elapsed());
    NOW.fetch_max(step, Ordering::Relaxed).max(step)
}

/// When step `step` begins.
pub fn instant_of(step: u64) -> Instant {
    let nanos = u128::from(step) * STEP.as_nanos();
    epoch() + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Whole steps in `d`, rounded down.
pub fn steps(d: Duration) -> u64 {
    u64::try_from(d.as_nanos() / STEP.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_down_and_the_clock_never_goes_back() {
        assert_eq!(steps(Duration::ZERO), 0);
        assert_eq!(steps(Duration::from_millis(1)), 0);
        assert_eq!(steps(STEP), 1);
        assert_eq!(steps(STEP * 3 - Duration::from_nanos(1)), 2);
        assert_eq!(steps(Duration::from_secs(15)), 300);
        let a = tick();
        let b = tick();
        assert!(b >= a);
        assert!(now() >= b);
        assert!(instant_of(a) <= Instant::now());
    }
}
