//! Whether the reconciler is busy, so background work (continuous
//! verification) yields to convergence instead of competing with it for the
//! apiserver, and never verifies a cluster that is still being written.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Reconciles in flight and when the last one ended.
pub struct Activity {
    state: watch::Sender<(usize, Instant)>,
}

impl Default for Activity {
    fn default() -> Self {
        Self { state: watch::channel((0, Instant::now())).0 }
    }
}

/// Marks one reconcile in flight until dropped.
pub struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.state.send_modify(|(n, last)| {
            *n = n.saturating_sub(1);
            *last = Instant::now();
        });
    }
}

impl Activity {
    /// Records a reconcile starting; it ends when the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        self.state.send_modify(|(n, _)| *n += 1);
        Busy(self)
    }

    /// Returns once no reconcile has run for `quiet`.
    pub async fn quiet_for(&self, quiet: Duration) {
        let mut rx = self.state.subscribe();
        loop {
            let (in_flight, last) = *rx.borrow_and_update();
            if in_flight == 0 {
                let until = last + quiet;
                if Instant::now() >= until {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = rx.changed() => {}
                }
            } else if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quiet_waits_for_the_last_reconcile_plus_the_pause() {
        let activity = std::sync::Arc::new(Activity::default());
        let guard = activity.busy();
        let a = activity.clone();
        let waiter = tokio::spawn(async move {
            a.quiet_for(Duration::from_secs(10)).await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiter.is_finished(), "a reconcile in flight keeps background work waiting");
        let ended = Instant::now();
        drop(guard);
        let resumed = waiter.await.expect("waiter");
        assert!(resumed >= ended + Duration::from_secs(10), "waits the quiet period after the last reconcile");
        assert!(resumed < ended + Duration::from_secs(11));
    }
}
