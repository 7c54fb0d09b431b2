//! Leader election on a `coordination.k8s.io` Lease, so that of several
//! replicas exactly one reconciles while all of them serve probes, metrics
//! and webhooks.
//!
//! [`Leadership`] says whether this replica leads and lets tasks wait for a
//! change. Acquiring and renewing is kube-lease-manager's work; on top of it a
//! watchdog re-reads the Lease and steps down as soon as our renewal is
//! overdue (slow or unreachable apiserver, stalled process), before the Lease
//! expires and another replica may take it: a lost lease stops reconciling at
//! once, never after the fact.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::telemetry::metrics::Metrics;

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Durations that cannot work.
    #[error(
        "invalid lease timing: duration {duration}s, renew {grace}s before expiry; the renew margin must be at least 1s and less than the duration"
    )]
    Timing {
        /// Lease duration in seconds.
        duration: u64,
        /// Renewal margin in seconds.
        grace: u64,
    },
}

/// Where and how to hold the Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (unique per process).
    pub identity: String,
    /// Seconds the Lease stays valid after a renewal; a crashed leader is replaced after at most this long.
    pub duration_secs: u64,
    /// Seconds before expiry at which the leader renews.
    pub renew_margin_secs: u64,
}

impl LeaseConfig {
    /// A unique identity for this process: `instance` plus a random suffix, so
    /// two processes with the same pod name never share leadership.
    pub fn identity_for(instance: &str) -> String {
        let mut b = [0u8; 4];
        // Uniqueness, not secrecy: a failing CSPRNG falls back to the process id.
        if getrandom::fill(&mut b).is_err() {
            b = std::process::id().to_be_bytes();
        }
        format!("{instance}_{}", hex::encode(b))
    }

    fn validate(&self) -> Result<(), LeaderError> {
        if self.renew_margin_secs == 0 || self.renew_margin_secs >= self.duration_secs {
            return Err(LeaderError::Timing { duration: self.duration_secs, grace: self.renew_margin_secs });
        }
        Ok(())
    }

    /// How long before expiry the watchdog steps down when no renewal came.
    fn step_down_margin(&self) -> Duration {
        Duration::from_millis((self.renew_margin_secs * 1000 / 2).max(500))
    }
}

/// Whether this replica leads; clones share the state.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    // Keeps the channel open for a replica that always leads.
    _always: Option<Arc<watch::Sender<bool>>>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self::always()
    }
}

impl Leadership {
    /// A replica that always leads (leader election off: one replica).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self { rx, _always: Some(Arc::new(tx)) }
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when this replica leads (at once if it does).
    pub async fn acquired(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|l| *l).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes when this replica no longer leads (at once if it does not).
    pub async fn lost(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|l| !*l).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// A receiver of every change (true: leading).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }
}

/// The running election; [`Elector::release`] gives the Lease up.
pub struct Elector {
    stop: watch::Sender<bool>,
    published: Arc<watch::Sender<bool>>,
    lease_task: JoinHandle<()>,
    watchdog_task: JoinHandle<()>,
}

impl Elector {
    /// Stops leading and releases the Lease so another replica takes over at
    /// once instead of after the Lease expires. Call it after in-flight work ended.
    pub async fn release(self) {
        self.published.send_replace(false);
        self.stop.send_replace(true);
        self.watchdog_task.abort();
        if tokio::time::timeout(Duration::from_secs(5), self.lease_task).await.is_err() {
            tracing::warn!("could not release the leader Lease in 5s; it will expire by itself");
        }
    }
}

/// Starts contending for the Lease. Leadership starts false and turns true when acquired.
pub fn elect(client: Client, config: LeaseConfig, metrics: Arc<Metrics>) -> Result<(Leadership, Elector), LeaderError> {
    config.validate()?;
    let (published_tx, published_rx) = watch::channel(false);
    let published = Arc::new(published_tx);
    let (stop, stop_rx) = watch::channel(false);
    let (held_tx, held_rx) = watch::channel(false);
    tracing::info!(lease = %format!("{}/{}", config.namespace, config.name), identity = %config.identity, "leader election started");
    let lease_task = tokio::spawn(hold_lease(client.clone(), config.clone(), held_tx, stop_rx));
    let watchdog_task = tokio::spawn(watchdog(client, config, held_rx, published.clone(), metrics));
    let leadership = Leadership { rx: published_rx, _always: None };
    Ok((leadership, Elector { stop, published, lease_task, watchdog_task }))
}

async fn build_manager(
    client: &Client,
    config: &LeaseConfig,
) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration_secs)
        .with_grace(config.renew_margin_secs)
        .with_field_manager(format!("bulkhead-leader-{}", config.identity))
        .build()
        .await
}

/// Acquires and renews the Lease, reporting whether kube-lease-manager holds it.
/// On any error the manager is dropped and rebuilt: a fresh one re-reads the
/// Lease and reports the truth instead of a belief from before the error.
async fn hold_lease(client: Client, config: LeaseConfig, held: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let manager = tokio::select! {
            _ = stopped(&mut stop) => return,
            m = build_manager(&client, &config) => m,
        };
        let manager = match manager {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up the leader Lease; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => {
                    held.send_replace(false);
                    match manager.release().await {
                        Ok(()) => tracing::info!("leader Lease released"),
                        Err(e) => tracing::warn!(error = %e, "cannot release the leader Lease; it will expire by itself"),
                    }
                    return;
                }
                changed = manager.changed() => match changed {
                    Ok(is_holder) => {
                        backoff = Duration::from_millis(500);
                        held.send_replace(is_holder);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "leader Lease renewal failed; stepping down until it is confirmed again");
                        held.send_replace(false);
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Completes when the stop flag is set (the guard `wait_for` returns must not live across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Publishes leadership: held by kube-lease-manager and renewed in time.
async fn watchdog(
    client: Client,
    config: LeaseConfig,
    mut held: watch::Receiver<bool>,
    published: Arc<watch::Sender<bool>>,
    metrics: Arc<Metrics>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let margin = config.step_down_margin();
    let lease_duration = Duration::from_secs(config.duration_secs);
    let mut tick = tokio::time::interval(margin);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until when our hold is confirmed, on this process's clock.
    let mut valid_until = tokio::time::Instant::now();
    let publish = |leading: bool| {
        let before = published.send_replace(leading);
        if before != leading {
            metrics.set_leader(leading);
            if leading {
                tracing::info!(identity = %config.identity, "became the leader: reconciling");
            } else {
                // A replica that does not reconcile must not report tenants it no longer watches over.
                metrics.forget_all_tenants();
                tracing::warn!(identity = %config.identity, "not the leader any more: reconciling stopped");
            }
        }
    };
    loop {
        let holder = *held.borrow_and_update();
        if holder {
            let now = tokio::time::Instant::now();
            if now + margin >= valid_until {
                // Just acquired or renewed by the manager: confirm from the Lease itself.
                valid_until = confirm(&api, &config, lease_duration, margin).await.unwrap_or(valid_until);
            }
            publish(tokio::time::Instant::now() + margin < valid_until);
        } else {
            publish(false);
        }
        tokio::select! {
            changed = held.changed() => if changed.is_err() { publish(false); return; },
            _ = tick.tick(), if holder => {}
        }
    }
}

/// Reads the Lease: when we hold it, until when it is valid (on our clock).
async fn confirm(
    api: &Api<Lease>,
    config: &LeaseConfig,
    lease_duration: Duration,
    margin: Duration,
) -> Option<tokio::time::Instant> {
    let lease = match tokio::time::timeout(margin, api.get(&config.name)).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cannot read the leader Lease");
            return None;
        }
        Err(_) => return None,
    };
    let spec = lease.spec?;
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Some(tokio::time::Instant::now());
    }
    // renewTime was written by this process (kube-lease-manager uses the local clock), so no skew applies.
    let renewed = spec.renew_time?.0;
    let age: Duration = jiff::Timestamp::now().duration_since(renewed).try_into().unwrap_or(Duration::ZERO);
    Some(tokio::time::Instant::now() + lease_duration.saturating_sub(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn always_leads_and_never_loses() {
        let l = Leadership::always();
        assert!(l.is_leader());
        tokio::time::timeout(Duration::from_millis(100), l.acquired()).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(100), l.lost()).await.is_err());
    }

    #[test]
    fn timing_is_validated_and_identities_are_unique() {
        let c = |d, g| LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            duration_secs: d,
            renew_margin_secs: g,
        };
        assert!(c(15, 5).validate().is_ok());
        assert!(c(5, 5).validate().is_err());
        assert!(c(5, 0).validate().is_err());
        assert_eq!(c(15, 5).step_down_margin(), Duration::from_millis(2500));
        let a = LeaseConfig::identity_for("pod");
        assert!(a.starts_with("pod_"));
        assert_ne!(a, LeaseConfig::identity_for("pod"));
    }
}
