//! How fast a broken watch is retried. kube's default backoff grows to 30 s:
//! after an apiserver restart the Tenant store and the caches would then lag
//! the cluster for up to half a minute, and reconciles would act on stale
//! copies (conflicts, needless retries). Capped at 5 s, a dozen watches
//! retrying cost the apiserver a few requests per second during an outage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(5);

/// Exponential backoff from 250 ms to 5 s, with jitter so replicas and watches do not retry in lockstep.
#[derive(Default)]
pub struct WatchBackoff {
    attempt: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = FIRST.saturating_mul(1 << self.attempt.min(5)).min(CAP);
        self.attempt = self.attempt.saturating_add(1);
        // Up to +50 %, from the clock's sub-second noise: spreading retries needs no CSPRNG.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 2000.0);
        Some((base + jitter).min(CAP))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_a_quarter_second_to_five_seconds_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| b.next().unwrap_or_default()).collect();
        assert!(delays[0] >= FIRST && delays[0] < FIRST * 2);
        assert!(delays.iter().all(|d| *d <= CAP));
        assert_eq!(delays[9], CAP, "capped");
        b.reset();
        assert!(b.next().unwrap_or_default() < FIRST * 2, "a success starts over");
    }
}
