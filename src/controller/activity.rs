//! How busy the reconciler is, so background work (continuous verification)
//! yields to convergence instead of competing with it for the apiserver.
//!
//! Busy means "reconciling for most of the recent past", not "reconciled
//! lately": in a cluster whose pods come and go, quota usage changes, and
//! each change is a short reconcile of its tenant. Waiting for a pause
//! between those would starve verification for as long as the churn lasts.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Reconciles in flight and the recent spans during which any was.
#[derive(Default)]
pub struct Activity {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    /// When the reconciler last went from idle to busy, while it still is.
    busy_since: Option<Instant>,
    /// Ended busy spans, oldest first; only the last [`Activity::WINDOW`] is kept.
    spans: VecDeque<(Instant, Instant)>,
}

/// Marks one reconcile in flight until dropped.
pub struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.update(|state, now| {
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0
                && let Some(since) = state.busy_since.take()
            {
                state.spans.push_back((since, now));
            }
        });
    }
}

impl Activity {
    /// How far back the busy share looks.
    pub const WINDOW: Duration = Duration::from_secs(5);

    fn update<R>(&self, change: impl FnOnce(&mut State, Instant) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update; the counts are still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let out = change(&mut state, now);
        while state.spans.front().is_some_and(|(_, end)| now.duration_since(*end) > Self::WINDOW) {
            state.spans.pop_front();
        }
        out
    }

    /// Records a reconcile starting; it ends when the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        self.update(|state, now| {
            state.in_flight += 1;
            state.busy_since.get_or_insert(now);
        });
        Busy(self)
    }

    /// Reconciles in flight now, and the share (0 to 1) of the last
    /// [`Self::WINDOW`] during which any was.
    fn snapshot(&self) -> (usize, f64) {
        self.update(|state, now| {
            let from = now.checked_sub(Self::WINDOW).unwrap_or(now);
            let open = state.busy_since.map(|since| (since, now));
            let busy: Duration = state
                .spans
                .iter()
                .copied()
                .chain(open)
                .map(|(start, end)| end.saturating_duration_since(start.max(from)))
                .sum();
            (state.in_flight, busy.as_secs_f64() / Self::WINDOW.as_secs_f64())
        })
    }

    /// Returns once no reconcile is in flight and the reconciler has been
    /// busy for at most half of the last [`Self::WINDOW`]: a burst of
    /// convergence holds it until the burst is mostly over, the short
    /// reconciles of a steady trickle of changes only for their length.
    pub async fn settled(&self) {
        loop {
            let (in_flight, share) = self.snapshot();
            if in_flight == 0 && share <= 0.5 {
                return;
            }
            // Polling: a trickle's reconciles end within tens of milliseconds.
            tokio::time::sleep(Self::WINDOW / 50).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn waiter(activity: &Arc<Activity>) -> tokio::task::JoinHandle<Instant> {
        let a = activity.clone();
        tokio::spawn(async move {
            a.settled().await;
            Instant::now()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_holds_background_work_until_it_is_mostly_over() {
        let activity = Arc::new(Activity::default());
        let guard = activity.busy();
        let waiting = waiter(&activity);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiting.is_finished(), "a reconcile in flight for the whole window keeps background work waiting");
        let ended = Instant::now();
        drop(guard);
        let resumed = waiting.await.expect("waiter");
        assert!(resumed >= ended + Activity::WINDOW / 2, "waits until the burst is less than half the window");
        assert!(resumed <= ended + Activity::WINDOW / 2 + Activity::WINDOW / 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_of_short_reconciles_does_not_starve_it() {
        let activity = Arc::new(Activity::default());
        let trickle = {
            let a = activity.clone();
            tokio::spawn(async move {
                // 100 ms of reconciling every 700 ms, for a minute: never a 5 s pause.
                for _ in 0..86 {
                    let guard = a.busy();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    drop(guard);
                    tokio::time::sleep(Duration::from_millis(600)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        let share = activity.snapshot().1;
        assert!((0.1..0.2).contains(&share), "the trickle keeps the reconciler busy ~14 % of the time: {share}");
        let asked = Instant::now();
        let resumed = waiter(&activity).await.expect("waiter");
        assert!(resumed < asked + Duration::from_secs(1), "verification goes on between short reconciles");
        trickle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_reconciles_count_once() {
        let activity = Activity::default();
        let first = activity.busy();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = activity.busy();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(second);
        let share = activity.snapshot().1;
        assert!((share - 0.6).abs() < 0.01, "3 s of 5 busy, not 4: {share}");
        tokio::time::sleep(Activity::WINDOW).await;
        assert_eq!(activity.snapshot().1, 0.0, "spans older than the window are forgotten");
    }
}
