//! bulkhead: one `Tenant` becomes a sealed, verifiable compartment of a Kubernetes cluster.
//!
//! Data flow: [`api`] types → [`plan`] (pure) → [`controller`] (apply, prune,
//! status) with [`telemetry`] on the side; [`audit`] is the tenant pods'
//! audit sidecar and its verifier.

pub mod admission;
pub mod api;
pub mod audit;
pub mod controller;
pub mod leader;
pub mod plan;
pub mod shutdown;
pub mod telemetry;
pub mod verify;
