//! One AdmissionReview in, one answer out: decode, find the tenant the
//! request concerns, run the rules of its kind, encode. Pure apart from the
//! [`View`] it reads, so the unit tests and the fuzzer drive it directly.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::decision::{Decision, Violation, rule};
use super::facts::{TenantFacts, View};
use super::mutate::{self, SidecarConfig};
use super::review::{self, DecodeError, Operation, Request, Response};
use super::{images, managed, namespaces, network, pods, rbac, services, tenants};
use crate::api::Tenant;
use crate::plan;
use crate::plan::object::Kind;

/// What every decision needs besides the request.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's own identity: its requests are never judged.
    pub operator_username: String,
    /// The plan configuration (operator namespace, DNS).
    pub plan: plan::Config,
    /// How the audit sidecar is built.
    pub sidecar: SidecarConfig,
}

/// Which webhook was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The mutating webhook (pods).
    Mutate,
    /// The validating webhooks (every kind).
    Validate,
}

/// The answer and what it was about, for logs and the security event stream.
#[derive(Debug)]
pub struct Outcome {
    /// The response sent to the apiserver.
    pub response: Response,
    /// The rules broken (empty when admitted).
    pub violations: Vec<Violation>,
    /// The tenant concerned, when known.
    pub tenant: Option<String>,
    /// Kind of the object.
    pub kind: String,
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Who asked.
    pub user: String,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// The operation.
    pub operation: Operation,
}

/// The group and plural of every namespaced kind bulkhead manages (from the plan's own list).
pub fn managed_resources() -> Vec<(String, String, String)> {
    Kind::ALL
        .iter()
        .filter(|k| k.namespaced())
        .map(|k| {
            let ar = k.api_resource();
            (ar.group, ar.plural, ar.kind)
        })
        .collect()
}

enum Scope {
    /// Not in a namespace bulkhead polices (or cluster-scoped).
    Outside,
    /// In a tenant namespace.
    Tenant(Arc<Tenant>),
    /// In a namespace the webhook was called for but that cannot be judged now.
    Unknown(Violation),
}

fn scope(view: &dyn View, namespace: Option<&str>) -> Scope {
    let Some(ns) = namespace.filter(|n| !n.is_empty()) else {
        return Scope::Outside;
    };
    // The apiserver calls the namespaced hooks only for namespaces labelled as a tenant's;
    // one the caches do not know yet is refused (retry), never waved through.
    let retry = |why: String| {
        Scope::Unknown(Violation::new(
            rule::TENANT_INVALID,
            "metadata.namespace",
            format!("{why}; retry in a few seconds"),
        ))
    };
    let Some(info) = view.namespace(ns) else {
        return retry(format!("namespace {ns} is not known to bulkhead yet"));
    };
    let Some(tenant) = info.holder.as_deref() else {
        return Scope::Outside;
    };
    match view.tenant(tenant) {
        Some(t) => Scope::Tenant(t),
        None => retry(format!("namespace {ns} is labelled for tenant {tenant}, which bulkhead does not know yet")),
    }
}

fn decode_object<T: DeserializeOwned>(value: Option<&Value>, what: &str) -> Result<Option<T>, Violation> {
    value
        .filter(|v| !v.is_null())
        .map(|v| {
            review::typed::<T>(v).map_err(|e| {
                Violation::new(
                    rule::REQUEST_INVALID,
                    "object",
                    format!("the {what} in the request cannot be read: {e}"),
                )
            })
        })
        .transpose()
}

fn required<T: DeserializeOwned>(value: Option<&Value>, what: &str) -> Result<T, Violation> {
    decode_object(value, what)?
        .ok_or_else(|| Violation::new(rule::REQUEST_INVALID, "object", format!("the request carries no {what}")))
}

/// Runs `f` with the tenant's facts when the request is in a tenant namespace it owns.
fn in_tenant(
    scope: &Scope,
    namespace: &str,
    settings: &Settings,
    f: impl FnOnce(&TenantFacts) -> Result<Vec<Violation>, Violation>,
) -> Result<Vec<Violation>, Violation> {
    match scope {
        Scope::Outside => Ok(Vec::new()),
        Scope::Unknown(v) => Err(v.clone()),
        Scope::Tenant(t) => match TenantFacts::new(t, &settings.plan) {
            Ok(facts) if facts.owns(namespace) => f(&facts),
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(Violation::new(
                rule::TENANT_INVALID,
                "metadata.namespace",
                format!(
                    "tenant {} cannot be planned ({e}), so nothing in its namespaces can be admitted until its spec is fixed",
                    t.metadata.name.as_deref().unwrap_or_default()
                ),
            )),
        },
    }
}

fn validate(req: &Request, view: &dyn View, settings: &Settings, scope: &Scope) -> Result<Vec<Violation>, Violation> {
    let res = &req.resource;
    let ns = req.namespace.as_deref().unwrap_or_default();
    let name = req.object_name();
    let sub = req.sub_resource.as_deref().filter(|s| !s.is_empty());
    let write = matches!(req.operation, Operation::Create | Operation::Update);
    let old_labels = req.old_object.as_ref().map(|o| review::labels(Some(o)));
    if let Some((_, _, kind)) = managed_resources()
        .into_iter()
        .find(|(g, r, _)| *g == res.group && *r == res.resource)
        .filter(|_| sub.is_none())
    {
        if req.operation == Operation::Delete {
            let terminating = view.namespace(ns).is_some_and(|n| n.terminating);
            return Ok(managed::guard_delete(
                &kind,
                &name,
                &old_labels.unwrap_or_default(),
                terminating,
                req.username(),
            ));
        }
        if write {
            let guard = managed::guard_write(&kind, &name, &review::labels(req.object.as_ref()), old_labels.as_ref());
            if !guard.is_empty() {
                return Ok(guard);
            }
        }
    }
    if !write {
        return Ok(Vec::new());
    }
    match (res.group.as_str(), res.resource.as_str(), sub) {
        ("", "pods", None | Some("ephemeralcontainers")) => {
            let pod: Pod = required(req.object.as_ref(), "Pod")?;
            let old: Option<Pod> = decode_object(req.old_object.as_ref(), "stored Pod")?;
            in_tenant(scope, ns, settings, |f| {
                let mut out = pods::validate(&pod, old.as_ref(), f, &settings.sidecar);
                out.extend(images::validate(&pod, old.as_ref(), f, &settings.sidecar));
                Ok(out)
            })
        }
        ("", "services", None) => {
            let svc: Service = required(req.object.as_ref(), "Service")?;
            in_tenant(scope, ns, settings, |f| Ok(services::validate(&svc, f)))
        }
        ("rbac.authorization.k8s.io", "rolebindings", None) => {
            let rb: RoleBinding = required(req.object.as_ref(), "RoleBinding")?;
            in_tenant(scope, ns, settings, |f| Ok(rbac::validate(&rb, ns, f)))
        }
        ("networking.k8s.io", "networkpolicies", None) => {
            let np: NetworkPolicy = required(req.object.as_ref(), "NetworkPolicy")?;
            in_tenant(scope, ns, settings, |f| Ok(network::validate(&np, f)))
        }
        ("", "namespaces", None) => {
            let labels = review::labels(req.object.as_ref());
            Ok(namespaces::validate(&name, &labels, old_labels.as_ref()))
        }
        ("bulkhead.dev", "tenants", None) => {
            let tenant: Tenant = required(req.object.as_ref(), "Tenant")?;
            let old: Option<Tenant> = decode_object(req.old_object.as_ref(), "stored Tenant")?;
            Ok(tenants::validate(&tenant, old.as_ref(), view, &settings.plan))
        }
        _ => Ok(Vec::new()),
    }
}

fn mutate(req: &Request, settings: &Settings, scope: &Scope) -> Result<Option<json_patch::Patch>, Violation> {
    let res = &req.resource;
    if !res.group.is_empty() || res.resource != "pods" {
        return Ok(None);
    }
    let sub = req.sub_resource.as_deref().filter(|s| !s.is_empty());
    let ns = req.namespace.as_deref().unwrap_or_default();
    let ops = match (sub, req.operation) {
        (None, Operation::Create) => {
            let pod: Pod = required(req.object.as_ref(), "Pod")?;
            let mut ops = Vec::new();
            in_tenant(scope, ns, settings, |f| {
                ops = mutate::mutate_pod(&pod, f, &settings.sidecar);
                Ok(Vec::new())
            })?;
            ops
        }
        (Some("ephemeralcontainers"), Operation::Update) => {
            let pod: Pod = required(req.object.as_ref(), "Pod")?;
            let mut ops = Vec::new();
            in_tenant(scope, ns, settings, |_| {
                ops = mutate::mutate_ephemeral(&pod);
                Ok(Vec::new())
            })?;
            ops
        }
        _ => Vec::new(),
    };
    Ok((!ops.is_empty()).then_some(json_patch::Patch(ops)))
}

/// Answers one AdmissionReview body. `Err` means the body itself is unusable (HTTP 400).
pub fn handle(endpoint: Endpoint, body: &[u8], view: &dyn View, settings: &Settings) -> Result<Outcome, DecodeError> {
    let req = review::decode(body)?;
    let user = req.username().to_string();
    let is_operator = !settings.operator_username.is_empty() && user == settings.operator_username;
    let scope = if req.resource.resource == "namespaces" || req.resource.resource == "tenants" {
        Scope::Outside
    } else {
        scope(view, req.namespace.as_deref())
    };
    let tenant = match &scope {
        Scope::Tenant(t) => t.metadata.name.clone(),
        _ => req
            .object
            .as_ref()
            .filter(|_| req.resource.resource == "tenants")
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let (response, violations) = match endpoint {
        Endpoint::Validate if is_operator => (Response::allow(&req.uid), Vec::new()),
        Endpoint::Validate => match validate(&req, view, settings, &scope) {
            Ok(v) => {
                let decision = Decision::of(v);
                let response = match &decision {
                    Decision::Allow => Response::allow(&req.uid),
                    Decision::Deny(_) => Response::deny(&req.uid, decision.message()),
                };
                (response, decision.violations().to_vec())
            }
            Err(v) => refusal(&req.uid, v),
        },
        Endpoint::Mutate => match mutate(&req, settings, &scope) {
            Ok(patch) => {
                let mut r = Response::allow(&req.uid);
                r.patch = patch;
                (r, Vec::new())
            }
            Err(v) => refusal(&req.uid, v),
        },
    };
    Ok(Outcome {
        response,
        violations,
        tenant,
        kind: if req.kind.kind.is_empty() { req.resource.resource.clone() } else { req.kind.kind.clone() },
        namespace: req.namespace.clone(),
        name: req.object_name(),
        user,
        dry_run: req.is_dry_run(),
        operation: req.operation,
    })
}

fn refusal(uid: &str, v: Violation) -> (Response, Vec<Violation>) {
    let message = Decision::Deny(vec![v.clone()]).message();
    let response =
        if v.rule == rule::REQUEST_INVALID { Response::invalid(uid, message) } else { Response::deny(uid, message) };
    (response, vec![v])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::admission::facts::MemoryView;
    use crate::admission::facts::testing::acme;
    use crate::plan::namespaces::Existing;
    use serde_json::json;

    /// A cluster in memory: acme with its two namespaces, plus kube-system.
    pub(crate) fn cluster() -> MemoryView {
        let mut m = MemoryView::with_tenants(vec![acme()], &plan::Config::default());
        m.namespaces.insert("kube-system".into(), Existing::default());
        m
    }

    pub(crate) fn settings() -> Settings {
        Settings {
            operator_username: "system:serviceaccount:bulkhead-system:bulkhead".into(),
            plan: plan::Config::default(),
            sidecar: SidecarConfig::default(),
        }
    }

    pub(crate) fn body(
        resource: (&str, &str),
        ns: Option<&str>,
        op: &str,
        user: &str,
        object: Value,
        old: Value,
    ) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "uid-1", "kind": {"group": resource.0, "version": "v1", "kind": "X"},
            "resource": {"group": resource.0, "version": "v1", "resource": resource.1},
            "namespace": ns, "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null), "operation": op,
            "userInfo": {"username": user}, "object": object, "oldObject": old, "dryRun": false}}))
        .unwrap()
    }

    fn host_pod() -> Value {
        json!({"metadata": {"name": "p", "namespace": "acme-agents"}, "spec": {"hostNetwork": true,
            "containers": [{"name": "a", "image": "x", "imagePullPolicy": "Always"}]}})
    }

    #[test]
    fn pods_in_tenant_namespaces_are_judged_elsewhere_not() {
        let view = cluster();
        let out = handle(
            Endpoint::Validate,
            &body(("", "pods"), Some("acme-agents"), "CREATE", "alice", host_pod(), Value::Null),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(!out.response.allowed);
        assert_eq!(out.response.code, 403);
        assert!(out.response.message.starts_with("[pod.host-network] spec.hostNetwork:"), "{}", out.response.message);
        assert_eq!(out.tenant.as_deref(), Some("acme"));
        let out = handle(
            Endpoint::Validate,
            &body(("", "pods"), Some("kube-system"), "CREATE", "alice", host_pod(), Value::Null),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(out.response.allowed);
        // The operator is never judged.
        let op = settings().operator_username;
        let out = handle(
            Endpoint::Validate,
            &body(("", "pods"), Some("acme-agents"), "CREATE", &op, host_pod(), Value::Null),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(out.response.allowed);
    }

    #[test]
    fn unknown_namespaces_fail_closed() {
        let view = cluster();
        let out = handle(
            Endpoint::Validate,
            &body(("", "pods"), Some("acme-new"), "CREATE", "alice", host_pod(), Value::Null),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(!out.response.allowed);
        assert!(out.response.message.contains("retry"));
    }

    #[test]
    fn mutation_returns_a_patch_for_tenant_pods_only() {
        let view = cluster();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let out = handle(
            Endpoint::Mutate,
            &body(("", "pods"), Some("acme-agents"), "CREATE", "alice", pod.clone(), Value::Null),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(out.response.allowed);
        let ops = out.response.patch.as_ref().unwrap();
        let mut doc = pod.clone();
        json_patch::patch(&mut doc, ops).unwrap();
        assert_eq!(doc["spec"]["initContainers"][0]["name"], mutate::SIDECAR_NAME);
        let out = handle(
            Endpoint::Mutate,
            &body(("", "pods"), Some("kube-system"), "CREATE", "alice", pod, Value::Null),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(out.response.patch.is_none());
    }

    #[test]
    fn managed_objects_and_namespaces_are_guarded() {
        let view = cluster();
        let np = json!({"metadata": {"name": "bulkhead-default-deny", "namespace": "acme-agents", "labels": plan::owner_labels("acme")}, "spec": {"podSelector": {}}});
        let out = handle(
            Endpoint::Validate,
            &body(
                ("networking.k8s.io", "networkpolicies"),
                Some("acme-agents"),
                "DELETE",
                "alice",
                Value::Null,
                np.clone(),
            ),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(!out.response.allowed);
        assert!(out.response.message.contains("managed.operator-only"));
        let out = handle(
            Endpoint::Validate,
            &body(("networking.k8s.io", "networkpolicies"), Some("acme-agents"), "UPDATE", "alice", np.clone(), np),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(!out.response.allowed);
        let nsobj = json!({"metadata": {"name": "acme-agents", "labels": {"bulkhead.dev/tenant": "globex"}}});
        let old = json!({"metadata": {"name": "acme-agents", "labels": {"bulkhead.dev/tenant": "acme"}}});
        let out = handle(
            Endpoint::Validate,
            &body(("", "namespaces"), None, "UPDATE", "root", nsobj, old),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(out.response.message.contains("namespace.tenant-label"), "{}", out.response.message);
    }

    #[test]
    fn unreadable_objects_are_invalid_not_panics() {
        let view = cluster();
        let bad = json!({"metadata": {"name": "p"}, "spec": {"containers": "not a list"}});
        let out = handle(
            Endpoint::Validate,
            &body(("", "pods"), Some("acme-agents"), "CREATE", "alice", bad, Value::Null),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(!out.response.allowed);
        assert_eq!(out.response.code, 400);
        assert!(out.response.message.contains("request.invalid"));
        assert!(handle(Endpoint::Validate, b"garbage", &view, &settings()).is_err());
    }

    #[test]
    fn tenants_are_judged_against_the_view() {
        let view = cluster();
        let t = json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme-agents-x"},
            "spec": {"namespaces": [{"name": "y"}]}});
        let out = handle(
            Endpoint::Validate,
            &body(("bulkhead.dev", "tenants"), None, "CREATE", "root", t, Value::Null),
            &view,
            &settings(),
        )
        .unwrap();
        assert!(out.response.allowed, "{}", out.response.message);
        let t = json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"},
            "spec": {"namespaces": [{"name": "agents"}]}});
        let mut other = cluster();
        other.tenants.clear();
        let out = handle(
            Endpoint::Validate,
            &body(("bulkhead.dev", "tenants"), None, "CREATE", "root", t, Value::Null),
            &other,
            &settings(),
        )
        .unwrap();
        assert!(out.response.allowed, "acme's own namespaces carry acme's label: {}", out.response.message);
    }
}
