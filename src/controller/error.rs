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
    /// The store's compact copy of a Tenant does not decode (a bug: it was
    /// encoded from a Tenant the apiserver served).
    #[error("cannot decode the stored copy of Tenant {tenant}: {source}")]
    Unreadable {
        /// The Tenant's name.
        tenant: String,
        /// What the decoder found.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A short, bounded reason for metrics: the kind of failure, never an object name.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Plan(_) => "InvalidSpec",
            Error::Unreadable { .. } => "Unreadable",
            Error::Api { source: kube::Error::Api(status), .. } => match status.code {
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                422 => "Invalid",
                429 => "TooManyRequests",
                500..=599 => "ServerError",
                _ => "ApiError",
            },
            Error::Api { .. } => "Unreachable",
        }
    }

    /// An API error about `key`.
    pub fn api(action: &'static str, key: &ObjectKey, source: kube::Error) -> Self {
        Error::Api { action, object: key.to_string(), source }
    }

    /// An API error about a named object.
    pub fn api_named(action: &'static str, object: impl Into<String>, source: kube::Error) -> Self {
        Error::Api { action, object: object.into(), source }
    }
}
