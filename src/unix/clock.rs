//! The system-wide monotonic clock, in milliseconds: heartbeats and systemd's timestamps
//! compare it across processes.

use nix::time::{clock_gettime, ClockId};

/// Milliseconds on the system-wide monotonic clock (comparable across processes).
pub fn monotonic_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            secs * 1000 + nanos / 1_000_000
        }
        Err(_) => 0,
    }
}
