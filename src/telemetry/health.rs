//! Readiness: a replica is ready when every registered gate is open.
//!
//! Each component that must be working before the replica takes traffic
//! registers its own gate at start-up (the controller's watch caches, the
//! admission server's TLS) and opens it when it is; `/readyz` reports the
//! gates still closed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The set of readiness gates of one process.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<String, bool>>>);

/// One component's readiness, opened with [`Gate::set`].
#[derive(Clone, Debug)]
pub struct Gate {
    name: String,
    all: Readiness,
}

impl Readiness {
    /// A process with no gates (ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a gate, closed until [`Gate::set`] opens it; the same name returns the same gate.
    pub fn gate(&self, name: &str) -> Gate {
        if let Ok(mut gates) = self.0.lock() {
            gates.entry(name.to_string()).or_insert(false);
        }
        Gate { name: name.to_string(), all: self.clone() }
    }

    /// Ok when every gate is open, else the names of the closed ones.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let Ok(gates) = self.0.lock() else {
            return Err(vec!["readiness state poisoned".into()]);
        };
        let closed: Vec<String> = gates.iter().filter(|(_, open)| !**open).map(|(n, _)| n.clone()).collect();
        if closed.is_empty() { Ok(()) } else { Err(closed) }
    }
}

impl Gate {
    /// Opens (true) or closes (false) the gate.
    pub fn set(&self, ready: bool) {
        if let Ok(mut gates) = self.all.0.lock() {
            gates.insert(self.name.clone(), ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_gate_is_open() {
        let r = Readiness::new();
        assert!(r.check().is_ok());
        let caches = r.gate("watch-caches");
        let tls = r.gate("admission-tls");
        assert_eq!(r.check(), Err(vec!["admission-tls".to_string(), "watch-caches".to_string()]));
        caches.set(true);
        assert_eq!(r.check(), Err(vec!["admission-tls".to_string()]));
        tls.set(true);
        assert!(r.check().is_ok());
        tls.set(false);
        assert!(r.check().is_err());
    }
}
