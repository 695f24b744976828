//! The open loop's clock: send times handed out at their time, from a
//! thread of its own.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// The open loop's dispatcher, on its own OS thread: hands out the send
/// time of request `k`, `start + k / rate`, at that time, until `end`.
/// Sleeps to absolute `CLOCK_MONOTONIC` deadlines with the thread's timer
/// slack at 1 µs, so a send time is handed out within microseconds of
/// itself rather than on tokio's next millisecond tick.
pub(super) fn dispatch(
    start: Instant,
    end: Instant,
    rate: f64,
    tx: &mpsc::UnboundedSender<Instant>,
) {
    use rustix::thread::{ClockId, clock_nanosleep_absolute};
    use rustix::time::Timespec;
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1_000));
    // One reading of both clocks maps tokio's instants to CLOCK_MONOTONIC.
    let origin = Instant::now();
    let origin_ts = rustix::time::clock_gettime(ClockId::Monotonic);
    let origin_ns = i128::from(origin_ts.tv_sec) * 1_000_000_000 + i128::from(origin_ts.tv_nsec);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut k: u32 = 0;
    loop {
        let at = start + interval.mul_f64(f64::from(k));
        if at >= end {
            break;
        }
        let offset = if at >= origin {
            (at - origin).as_nanos() as i128
        } else {
            -((origin - at).as_nanos() as i128)
        };
        let deadline = origin_ns + offset;
        let request = Timespec {
            tv_sec: (deadline / 1_000_000_000) as _,
            tv_nsec: (deadline % 1_000_000_000) as _,
        };
        while let Err(rustix::io::Errno::INTR) =
            clock_nanosleep_absolute(ClockId::Monotonic, &request)
        {}
        if tx.send(at).is_err() {
            break;
        }
        k = k.saturating_add(1);
    }
}
