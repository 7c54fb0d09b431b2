//! Errors of the controller; each says what failed and on which object.

use crate::plan::{ObjectKey, PlanError};

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or failed a request.
    #[error("{action} {object}: {source}")]
    Api {
        /// What bulkhead tried.
        action: &'static str,
        /// The object concerned.
        object: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// The Tenant cannot be planned.
    #[error("invalid Tenant: {0}")]
    Plan(#[from] PlanError),
}

impl Error {
    /// An API error about `key`.
    pub fn api(action: &'static str, key: &ObjectKey, source: kube::Error) -> Self {
        Error::Api { action, object: key.to_string(), source }
    }

    /// An API error about a named object.
    pub fn api_named(action: &'static str, object: impl Into<String>, source: kube::Error) -> Self {
        Error::Api { action, object: object.into(), source }
    }
}
