//! Kubernetes Events on the Tenant and security event lines.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::api::Tenant;
use crate::plan::ObjectKey;
use crate::telemetry::security::{Action, ObjectRef, SecurityEvent};

use super::Context;

/// The security-stream form of an object key.
pub fn object_ref(key: &ObjectKey) -> ObjectRef {
    ObjectRef { kind: key.kind.as_str().to_string(), namespace: key.namespace.clone(), name: key.name.clone() }
}

/// Publishes a Kubernetes Event on the Tenant; failures are logged, never fatal.
pub async fn event(ctx: &Context, tenant: &Tenant, warning: bool, reason: &str, action: &str, note: String) {
    about(ctx, tenant, None, warning, reason, action, note).await
}

/// The Kubernetes reference of a managed object.
fn reference(key: &ObjectKey) -> ObjectReference {
    let ar = key.kind.api_resource();
    ObjectReference {
        api_version: Some(ar.api_version),
        kind: Some(ar.kind),
        namespace: key.namespace.clone(),
        name: Some(key.name.clone()),
        ..Default::default()
    }
}

/// Publishes an Event on the Tenant about one of its objects. The object is
/// the Event's `related` reference: the recorder folds repeats into one
/// Event's series by tenant, reason and related object, so without it a
/// second repaired object would only bump the first one's count.
async fn about(
    ctx: &Context,
    tenant: &Tenant,
    object: Option<&ObjectKey>,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: object.map(reference),
    };
    ctx.metrics.api_write("Event", "create");
    if let Err(e) = ctx.recorder.publish(&ev, &tenant.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
    }
}

/// Emits a security event line (stdout and the SIEM) without a Kubernetes Event.
pub fn line(tenant: &Tenant, action: Action, object: Option<&ObjectKey>, reason: &str, message: String) {
    let name = tenant.meta().name.clone().unwrap_or_default();
    SecurityEvent { action, tenant: name, object: object.map(object_ref), reason: reason.into(), message }.emit();
}

/// Emits a security event line and the matching Kubernetes Event.
pub async fn security(
    ctx: &Context,
    tenant: &Tenant,
    action: Action,
    object: Option<&ObjectKey>,
    reason: &str,
    message: String,
) {
    line(tenant, action, object, reason, message.clone());
    let warning = matches!(
        action,
        Action::DriftRepaired | Action::NamespaceConflict | Action::KeyMaterialUnavailable | Action::CheckFailed
    );
    let event_reason =
        serde_json::to_value(action).ok().and_then(|v| v.as_str().map(pascal)).unwrap_or_else(|| reason.to_string());
    about(ctx, tenant, object, warning, &event_reason, reason, message).await;
}

/// "drift-repaired" → "DriftRepaired".
fn pascal(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}
