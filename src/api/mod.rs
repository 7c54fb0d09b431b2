//! The Tenant API types and the CRD generated from them.

pub mod tenant;

pub use tenant::*;

use kube::CustomResourceExt;

/// The Tenant CRD as YAML, exactly what `bulkhead crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let crd = Tenant::crd();
    serde_yaml::to_string(&crd).map(|yaml| format!("---\n{yaml}"))
}
