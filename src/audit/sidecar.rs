//! The audit sidecar: intake → one sealing task → shipper.
//!
//! A single task owns the chain so records are numbered and linked in one
//! order, whatever their source. A batch is sealed on a copy of the chain
//! state and the copy is kept only once the spool took the whole batch, so a
//! refused batch leaves no gap. After every accepted batch the chain state is
//! saved to `<spool-dir>/chain.json`; on start the sidecar takes the newer of
//! that file and the last line in the spool, so a crash between the two
//! writes neither forks nor skips the chain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use super::chain::ChainState;
use super::intake::{self, ChainRequest, FollowConfig, IntakeError, IntakeStats, SealedRange, Submitter};
use super::keys::{KeyError, KeyRing};
use super::record::Identity;
use super::sink::{Shipper, ShipperConfig, SinkError};
use super::spool::{SpoolError, write_atomic};

/// Everything the sidecar needs.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    /// Who the records come from.
    pub identity: Identity,
    /// The mounted `bulkhead-keys` Secret.
    pub keys_dir: PathBuf,
    /// Loopback address for the HTTP intake.
    pub listen: SocketAddr,
    /// JSON-lines files to follow.
    pub follow: Vec<PathBuf>,
    /// Sink, spool, batching and retries.
    pub shipper: ShipperConfig,
    /// Largest HTTP body accepted.
    pub max_body_bytes: usize,
    /// Poll interval for followed files.
    pub poll: Duration,
    /// How often the key directory is re-read (rotation).
    pub key_reload: Duration,
    /// How long shutdown may spend delivering the backlog.
    pub shutdown_grace: Duration,
}

/// Why the sidecar cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The key directory is unusable.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The sink or spool is unusable.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The listen address is not loopback.
    #[error(
        "--listen {0} is not a loopback address: the sidecar takes records only from its own pod (use 127.0.0.1:PORT or [::1]:PORT)"
    )]
    NotLoopback(SocketAddr),
    /// The listen address is taken.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The chain state cannot be read.
    #[error(
        "{path} is unreadable ({reason}); it holds where the audit chain stands: restore it, or delete it (and the spool) to start a new chain"
    )]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP server failed.
    #[error("the intake server failed: {0}")]
    Serve(std::io::Error),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedState {
    identity: Identity,
    seq: u64,
    prev: String,
}

const STATE_FILE: &str = "chain.json";

/// Where the chain stood when this identity last sealed something in `spool_dir`.
fn recover(spool_dir: &Path, who: &Identity, last_line: Option<String>) -> Result<ChainState, SidecarError> {
    let path = spool_dir.join(STATE_FILE);
    let from_file = match std::fs::read(&path) {
        Ok(bytes) => {
            let bad = |reason: String| SidecarError::State { path: path.clone(), reason };
            let saved: SavedState = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            let mut prev = [0u8; 32];
            hex::decode_to_slice(&saved.prev, &mut prev).map_err(|e| bad(format!("prev: {e}")))?;
            if saved.identity == *who {
                Some(ChainState { seq: saved.seq, prev })
            } else {
                tracing::warn!(previous = %saved.identity, now = %who, "the spool directory held another writer's chain; starting a new chain");
                None
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(SidecarError::State { path, reason: e.to_string() });
        }
    };
    let from_spool = last_line.and_then(|l| ChainState::after_line(&l)).filter(|(id, _)| id == who).map(|(_, s)| s);
    let state = match (from_file, from_spool) {
        (Some(a), Some(b)) => {
            if a.seq > b.seq {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b).unwrap_or_default(),
    };
    Ok(state)
}

fn save(spool_dir: &Path, who: &Identity, state: ChainState) -> Result<(), SpoolError> {
    let saved = SavedState { identity: who.clone(), seq: state.seq, prev: hex::encode(state.prev) };
    let bytes = serde_json::to_vec(&saved).unwrap_or_default();
    write_atomic(&spool_dir.join(STATE_FILE), &bytes)
}

struct Sealer {
    who: Identity,
    keys_dir: PathBuf,
    keys: KeyRing,
    state: ChainState,
    spool_dir: PathBuf,
    shipper: Arc<Shipper>,
}

impl Sealer {
    fn seal(&mut self, records: Vec<Map<String, Value>>) -> Result<SealedRange, IntakeError> {
        let Some(key) = self.keys.signing_key() else {
            return Err(IntakeError::Internal("no current audit key".into()));
        };
        let mut next = self.state;
        let now = jiff::Timestamp::now();
        let lines: Vec<String> = records.into_iter().map(|r| next.seal(&self.who, key, now, r).line).collect();
        match self.shipper.append(&lines) {
            Ok(()) => {
                let range = SealedRange { first: self.state.seq + 1, last: next.seq };
                self.state = next;
                if let Err(e) = save(&self.spool_dir, &self.who, next) {
                    // The spool's last line still carries the state; only a second fault would lose it.
                    tracing::error!("cannot save the audit chain state: {e}");
                }
                Ok(range)
            }
            Err(e @ SpoolError::Full { .. }) => Err(IntakeError::Full(format!("audit {e}"))),
            Err(e @ SpoolError::TooLarge { .. }) => Err(IntakeError::TooLarge(e.to_string())),
            Err(e) => {
                tracing::error!("cannot spool audit records: {e}");
                Err(IntakeError::Internal(format!("cannot store the records: {e}")))
            }
        }
    }

    fn reload_keys(&mut self) {
        match KeyRing::load_for_signing(&self.keys_dir) {
            Ok(ring) => {
                let old = self.keys.signing_key().map(|k| k.id().to_string());
                let new = ring.signing_key().map(|k| k.id().to_string());
                if old != new {
                    tracing::info!(
                        key_id = new.as_deref().unwrap_or(""),
                        previous = old.as_deref().unwrap_or(""),
                        "audit key rotated; signing with the new key id"
                    );
                }
                self.keys = ring;
            }
            Err(e) => tracing::error!("cannot re-read the audit keys, still signing with the loaded ones: {e}"),
        }
    }
}

async fn sealing_task(mut sealer: Sealer, mut rx: mpsc::Receiver<ChainRequest>, key_reload: Duration) -> Sealer {
    let mut tick = tokio::time::interval(key_reload);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            req = rx.recv() => match req {
                Some(req) => {
                    let result = sealer.seal(req.records);
                    let _ = req.reply.send(result);
                }
                None => return sealer,
            },
            _ = tick.tick() => sealer.reload_keys(),
        }
    }
}

/// Runs the sidecar until `shutdown` completes, then delivers what it can
/// within the grace period and returns.
pub async fn run(config: SidecarConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), SidecarError> {
    if !config.listen.ip().is_loopback() {
        return Err(SidecarError::NotLoopback(config.listen));
    }
    let keys = KeyRing::load_for_signing(&config.keys_dir)?;
    let spool_dir = config.shipper.spool.dir.clone();
    let shipper = Arc::new(Shipper::start(config.shipper.clone())?);
    let last_line = shipper.spool().last_line().map_err(SinkError::from)?;
    let state = recover(&spool_dir, &config.identity, last_line)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| SidecarError::Listen { addr: config.listen, source })?;
    let local = listener.local_addr().map_err(|source| SidecarError::Listen { addr: config.listen, source })?;
    tracing::info!(
        listen = %local,
        sink = %config.shipper.target,
        chain = %config.identity,
        next_seq = state.seq + 1,
        key_id = keys.signing_key().map_or("", |k| k.id()),
        "audit sidecar started"
    );

    let (tx, rx) = mpsc::channel(256);
    let submitter = Submitter::new(tx);
    let sealer = Sealer {
        who: config.identity.clone(),
        keys_dir: config.keys_dir.clone(),
        keys,
        state,
        spool_dir: spool_dir.clone(),
        shipper: shipper.clone(),
    };
    let sealing = tokio::spawn(sealing_task(sealer, rx, config.key_reload));
    let (stop_tx, stop_rx) = watch::channel(false);
    let intake_stats = Arc::new(IntakeStats::default());

    let app = intake::router(submitter.clone(), shipper.stats().clone(), intake_stats.clone(), config.max_body_bytes);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let mut followers = Vec::new();
    for path in &config.follow {
        let cfg = FollowConfig { path: path.clone(), state_dir: spool_dir.clone(), poll: config.poll };
        followers.push(tokio::spawn(intake::follow(cfg, submitter.clone(), intake_stats.clone(), stop_rx.clone())));
    }
    drop(submitter);

    let mut server = server;
    let served = tokio::select! {
        () = shutdown => None,
        result = &mut server => Some(result),
    };
    let _ = stop_tx.send(true);
    let served = match served {
        Some(r) => r,
        None => match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(r) => r,
            Err(_) => {
                server.abort();
                Ok(Ok(()))
            }
        },
    };
    for f in followers {
        let _ = f.await;
    }
    // Every submitter is gone now, so the sealing task drains and ends.
    let last_seq = sealing.await.map(|sealer| sealer.state.seq).unwrap_or(0);
    let left = match Arc::try_unwrap(shipper) {
        Ok(shipper) => shipper.shutdown(config.shutdown_grace).await,
        Err(shipper) => shipper.spool().pending_bytes(),
    };
    tracing::info!(last_seq, undelivered_bytes = left, "audit sidecar stopped");
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SidecarError::Serve(e)),
        Err(e) => Err(SidecarError::Serve(std::io::Error::other(e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::keys::SigningKey;

    fn who(pod: &str) -> Identity {
        Identity { tenant: "t".into(), namespace: "t-a".into(), pod: pod.into(), container: "app".into() }
    }

    #[test]
    fn recovery_takes_the_newer_of_state_file_and_spool() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::new("k1", [1; 32]).unwrap();
        let mut s = ChainState::default();
        let first = s.seal(&who("p"), &key, jiff::Timestamp::UNIX_EPOCH, Map::new());
        save(dir.path(), &who("p"), s).unwrap();
        let second = s.seal(&who("p"), &key, jiff::Timestamp::UNIX_EPOCH, Map::new());
        // Crash after spooling line 2 but before saving the state.
        assert_eq!(recover(dir.path(), &who("p"), Some(second.line.clone())).unwrap(), s);
        // The spool lost its tail (segments delivered and rolled): the file wins.
        let mut one = ChainState::default();
        one.seal(&who("p"), &key, jiff::Timestamp::UNIX_EPOCH, Map::new());
        assert_eq!(recover(dir.path(), &who("p"), Some(first.line)).unwrap(), one);
        // Another pod's leftovers start a new chain.
        assert_eq!(recover(dir.path(), &who("q"), Some(second.line)).unwrap(), ChainState::default());
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let err = recover(dir.path(), &who("p"), None).unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
    }
}
