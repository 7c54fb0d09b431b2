//! The security event stream: one JSON line per security-relevant action,
//! with field names from the Elastic Common Schema (ECS 8.x) so SIEMs map
//! them without custom parsing. Never carries a secret value: events are
//! built only from names, kinds and reasons.

use std::io::Write;
use std::sync::OnceLock;

use serde::Serialize;

use crate::audit::sink::Shipper;

/// The SIEM the security events are also POSTed to, when configured.
static SIEM: OnceLock<Shipper> = OnceLock::new();

/// Sends every later security event to `shipper` as well (batched, retried,
/// spooled on disk while the SIEM is down). Set once, at start-up.
pub fn ship_to(shipper: Shipper) -> Result<(), &'static str> {
    SIEM.set(shipper).map_err(|_| "the SIEM sink is already set")
}

/// ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11.0";

/// What happened; the `event.action` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A tenant was seen for the first time and its compartment built.
    TenantCreated,
    /// A tenant's spec changed and was applied.
    TenantUpdated,
    /// A tenant was deleted with `Retain`: namespaces and data kept, access revoked.
    TenantReleased,
    /// A tenant was deleted with `Delete`: namespaces and data erased.
    TenantErased,
    /// A managed object was missing or changed and was restored.
    DriftRepaired,
    /// A subject was granted a profile in the tenant.
    AccessGranted,
    /// A subject's access to the tenant was removed.
    AccessRevoked,
    /// A namespace the tenant wants is held by someone else.
    NamespaceConflict,
    /// A namespace left the tenant and was kept (`Retain`).
    NamespaceReleased,
    /// A namespace left the tenant and was deleted (`Delete`).
    NamespaceDeleted,
    /// The tenant's keys were rotated.
    KeyRotated,
    /// The tenant's key material cannot be used (lost, corrupt, wrong master key).
    KeyMaterialUnavailable,
    /// An isolation check (`bulkhead verify`) started failing for the tenant.
    CheckFailed,
    /// An admission webhook refused a request (reason: the rule id).
    AdmissionDenied,
}

impl Action {
    fn category(self) -> (&'static str, &'static str) {
        match self {
            Action::AccessGranted => ("iam", "creation"),
            Action::AccessRevoked => ("iam", "deletion"),
            Action::TenantCreated => ("configuration", "creation"),
            Action::TenantErased | Action::NamespaceDeleted => ("configuration", "deletion"),
            Action::NamespaceConflict => ("configuration", "denied"),
            Action::KeyMaterialUnavailable => ("configuration", "error"),
            Action::CheckFailed => ("vulnerability", "info"),
            Action::AdmissionDenied => ("api", "denied"),
            _ => ("configuration", "change"),
        }
    }
}

/// The object an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// Kubernetes kind.
    pub kind: String,
    /// Namespace, for namespaced objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

#[derive(Serialize)]
struct EventFields<'a> {
    kind: &'static str,
    category: [&'static str; 1],
    #[serde(rename = "type")]
    type_: [&'static str; 1],
    action: Action,
    outcome: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct Bulkhead<'a> {
    tenant: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<&'a ObjectRef>,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    ecs: serde_json::Value,
    event: EventFields<'a>,
    message: &'a str,
    bulkhead: Bulkhead<'a>,
    observer: serde_json::Value,
}

/// One security event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityEvent {
    /// What happened.
    pub action: Action,
    /// The tenant concerned.
    pub tenant: String,
    /// The object concerned, if one.
    pub object: Option<ObjectRef>,
    /// Short machine-readable reason (PascalCase).
    pub reason: String,
    /// One sentence for humans.
    pub message: String,
}

impl SecurityEvent {
    /// The event as one ECS JSON line (no trailing newline).
    pub fn to_line(&self) -> String {
        let (category, type_) = self.action.category();
        let line = Line {
            timestamp: jiff::Timestamp::now().to_string(),
            ecs: serde_json::json!({"version": ECS_VERSION}),
            event: EventFields {
                kind: "event",
                category: [category],
                type_: [type_],
                action: self.action,
                outcome: "success",
                reason: &self.reason,
            },
            message: &self.message,
            bulkhead: Bulkhead { tenant: &self.tenant, object: self.object.as_ref() },
            observer: serde_json::json!({"product": "bulkhead", "vendor": "bulkhead", "version": env!("CARGO_PKG_VERSION")}),
        };
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Writes the event to stdout as one line (stdout is the security
    /// stream) and hands it to the SIEM shipper when one is configured.
    pub fn emit(&self) {
        let line = self.to_line();
        {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not take the operator down; the Kubernetes Event still records it.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if let Some(siem) = SIEM.get()
            && let Err(e) = siem.append(&[line])
        {
            tracing::error!(error = %e, action = ?self.action, "security event not spooled for the SIEM");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_the_documented_ecs_fields() {
        let ev = SecurityEvent {
            action: Action::DriftRepaired,
            tenant: "acme".into(),
            object: Some(ObjectRef {
                kind: "NetworkPolicy".into(),
                namespace: Some("acme-a".into()),
                name: "bulkhead-allow".into(),
            }),
            reason: "Deleted".into(),
            message: "restored".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&ev.to_line()).unwrap();
        assert_eq!(v["event"]["action"], "drift-repaired");
        assert_eq!(v["event"]["category"][0], "configuration");
        assert_eq!(v["bulkhead"]["tenant"], "acme");
        assert_eq!(v["bulkhead"]["object"]["kind"], "NetworkPolicy");
        assert_eq!(v["ecs"]["version"], ECS_VERSION);
        assert!(v["@timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
