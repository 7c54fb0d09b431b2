//! Process shutdown: one signal every long-running task listens to, set by
//! SIGTERM or SIGINT, so the controller finishes in-flight reconciles, the
//! leader releases its Lease and the servers drain before the process exits.

use std::sync::Arc;

use tokio::sync::watch;

/// A shutdown signal; clones share it.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    /// Triggers shutdown.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Whether shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown is triggered.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`, so this only returns once triggered.
        let _ = rx.wait_for(|down| *down).await;
    }

    /// A `'static` future that completes once shutdown is triggered.
    pub fn signalled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move { this.wait().await }
    }

    /// Triggers shutdown on the first SIGTERM (Kubernetes stopping the pod) or SIGINT.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let name = wait_for_signal().await;
            tracing::info!(signal = name, "shutting down: finishing in-flight work");
            this.trigger();
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_once_triggered() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let waiter = tokio::spawn(s.signalled());
        s.clone().trigger();
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter).await.unwrap().unwrap();
        assert!(s.is_triggered());
    }
}
