//! How often a denial becomes a Kubernetes Event on the Tenant. The security
//! event stream records every denial; the Event for one tenant and rule is
//! published at most once per [`EVENT_INTERVAL`] and says how many it stands
//! for, so a storm of refused requests (a controller retrying a bad pod, a
//! scripted probe) never turns into a storm of apiserver writes, nor into
//! tasks piling up behind them in the webhook's runtime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between two denial Events of the same tenant and rule.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(10);
/// Keys kept before those older than the interval are dropped (tenants × rules seen recently).
const PRUNE_AT: usize = 4096;

/// When each tenant and rule last had an Event, and how many denials since went without one.
#[derive(Debug, Default)]
pub struct Throttle {
    seen: Mutex<HashMap<(String, String), (Instant, u64)>>,
}

impl Throttle {
    /// Whether a denial of `rule` in `tenant` at `now` gets an Event: `Some(n)` with the number of
    /// earlier denials it also stands for, `None` when one was published less than [`EVENT_INTERVAL`] ago.
    pub fn admit(&self, tenant: &str, rule: &str, now: Instant) -> Option<u64> {
        // A poisoned lock only means another request panicked mid-update: the counts are still usable.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= PRUNE_AT {
            seen.retain(|_, (at, _)| now.saturating_duration_since(*at) < EVENT_INTERVAL);
        }
        let key = (tenant.to_string(), rule.to_string());
        match seen.get_mut(&key) {
            Some((at, skipped)) if now.saturating_duration_since(*at) < EVENT_INTERVAL => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let earlier = std::mem::take(skipped);
                *at = now;
                Some(earlier)
            }
            None => {
                seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_tenant_and_rule_per_interval_counting_the_rest() {
        let t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.admit("acme", "pod.host-network", start), Some(0));
        for i in 1..=5 {
            assert_eq!(t.admit("acme", "pod.host-network", start + Duration::from_millis(i)), None);
        }
        // Other tenants and rules have their own budget.
        assert_eq!(t.admit("globex", "pod.host-network", start), Some(0));
        assert_eq!(t.admit("acme", "pod.privileged", start), Some(0));
        assert_eq!(t.admit("acme", "pod.host-network", start + EVENT_INTERVAL), Some(5));
        assert_eq!(t.admit("acme", "pod.host-network", start + EVENT_INTERVAL + Duration::from_secs(1)), None);
    }

    #[test]
    fn old_keys_are_dropped_once_many_are_held() {
        let t = Throttle::default();
        let start = Instant::now();
        for i in 0..PRUNE_AT {
            t.admit(&format!("t{i}"), "r", start);
        }
        t.admit("late", "r", start + EVENT_INTERVAL);
        assert_eq!(t.seen.lock().unwrap().len(), 1, "only the fresh key is kept");
    }
}
