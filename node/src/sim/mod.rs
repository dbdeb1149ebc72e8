//! The devnet's simulators: devices that register and send transfers, BPK
//! users that send anonymous intents, and a market of sellers, buyers and
//! oracles. Each feeds the node's ingress like any other client.

pub mod bpk;
pub mod fleet;
pub mod market;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest a simulator sleeps before it looks at the stop flag again.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Sleeps for `d`, or less when `stop` is set meanwhile (looked at every
/// [`STOP_POLL`]), so that a devnet with long blocks still ends at its
/// duration. Whether it stopped.
pub fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(STOP_POLL));
    }
}
