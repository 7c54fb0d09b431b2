//! Fuzzing entry point shared by the cargo-fuzz target (`fuzz/`, nightly,
//! unbounded) and the bounded property tests below (stable, every CI run):
//! whatever the bytes, decoding and every decision return, never panic.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::facts::MemoryView;
use super::handler::{self, Endpoint, Settings};
use super::mutate::SidecarConfig;
use crate::api::Tenant;
use crate::plan;

/// The resources the webhooks are registered for, with a subresource where one is.
pub const RESOURCES: &[(&str, &str, &str)] = &[
    ("", "pods", ""),
    ("", "pods", "ephemeralcontainers"),
    ("", "services", ""),
    ("", "namespaces", ""),
    ("", "secrets", ""),
    ("", "serviceaccounts", ""),
    ("", "resourcequotas", ""),
    ("", "limitranges", ""),
    ("rbac.authorization.k8s.io", "rolebindings", ""),
    ("networking.k8s.io", "networkpolicies", ""),
    ("bulkhead.dev", "tenants", ""),
];

/// Operations the apiserver sends.
pub const OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT"];

fn sample() -> &'static (MemoryView, Settings) {
    static SAMPLE: OnceLock<(MemoryView, Settings)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let tenant = |v: Value| serde_json::from_value::<Tenant>(v).ok();
        let tenants = [
            tenant(json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {
                "namespaces": [{"name": "agents"}, {"name": "payments"}],
                "access": [{"kind": "User", "name": "alice", "profile": "admin"}],
                "network": {"egressTo": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}, {"namespaces": ["shared"]}]},
                "audit": {"mode": "Required"}, "dataResidency": {"regions": ["eu-west-1"]},
                "images": {"allowedRegistries": ["registry.acme.example/"]}}})),
            tenant(json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "globex"}, "spec": {
                "namespaces": [{"name": "a"}], "compliance": ["PCI-DSS"]}})),
        ];
        let config = plan::Config::default();
        let view = MemoryView::with_tenants(tenants.into_iter().flatten().collect(), &config);
        let settings = Settings { operator_username: "operator".into(), plan: config, sidecar: SidecarConfig::default() };
        (view, settings)
    })
}

/// Runs `body` through both endpoints against a sample cluster.
pub fn review(body: &[u8]) {
    let (view, settings) = sample();
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        if let Ok(outcome) = handler::handle(endpoint, body, view, settings) {
            let _ = outcome.response.encode();
        }
    }
}

/// An AdmissionReview for `object` (and `old`) as `resource` in `namespace`.
pub fn envelope(
    resource: (&str, &str, &str),
    operation: &str,
    namespace: Option<&str>,
    user: &str,
    object: Value,
    old: Value,
) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "fuzz", "kind": {"group": resource.0, "version": "v1", "kind": "Fuzz"},
        "resource": {"group": resource.0, "version": "v1", "resource": resource.1}, "subResource": resource.2,
        "namespace": namespace, "operation": operation, "userInfo": {"username": user},
        "object": object, "oldObject": old}}))
    .unwrap_or_default()
}

/// The fuzz target: the bytes as a whole AdmissionReview, and, when they are JSON, as the object
/// (and old object) of every registered resource and operation in a tenant namespace.
pub fn exercise(data: &[u8]) {
    review(data);
    let Ok(object) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for resource in RESOURCES {
        for op in OPERATIONS {
            let ns = (resource.1 != "namespaces" && resource.1 != "tenants").then_some("acme-agents");
            review(&envelope(*resource, op, ns, "alice", object.clone(), object.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
            "[a-zA-Z0-9./:@_-]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "Always",
                "ALL",
                "SYS_ADMIN",
                "In",
                "NotIn",
                "ClusterRole",
                "cluster-admin",
                "User",
                "ServiceAccount",
                "ExternalName",
                "NodePort",
                "LoadBalancer",
                "acme-agents",
                "globex-a",
                "0.0.0.0/0",
                "a.globex-a.svc",
                "bulkhead",
                "acme",
                "bulkhead-audit",
                "disabled",
                "kubernetes.io/metadata.name",
            ])
            .prop_map(|s| Value::String(s.to_string())),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "metadata",
            "name",
            "namespace",
            "labels",
            "annotations",
            "spec",
            "containers",
            "initContainers",
            "ephemeralContainers",
            "image",
            "imagePullPolicy",
            "securityContext",
            "privileged",
            "capabilities",
            "add",
            "ports",
            "hostPort",
            "hostNetwork",
            "hostPID",
            "hostIPC",
            "volumes",
            "hostPath",
            "affinity",
            "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
            "nodeSelectorTerms",
            "matchExpressions",
            "key",
            "operator",
            "values",
            "subjects",
            "kind",
            "roleRef",
            "ingress",
            "egress",
            "from",
            "to",
            "namespaceSelector",
            "podSelector",
            "ipBlock",
            "cidr",
            "type",
            "externalIPs",
            "externalName",
            "namespaces",
            "restartPolicy",
            "args",
            "env",
            "volumeMounts",
            "secret",
            "secretName",
            "audit",
            "mode",
            "status",
            "app.kubernetes.io/managed-by",
            "bulkhead.dev/tenant",
            "bulkhead.dev/audit-sidecar",
        ])
        .prop_map(str::to_string)
    }

    fn json_value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A valid object of `resource`, with one field replaced by arbitrary JSON.
    fn template(resource: &str) -> Value {
        match resource {
            "pods" => json!({"metadata": {"name": "p", "namespace": "acme-agents"}, "spec": {
                "containers": [{"name": "app", "image": "registry.acme.example/app:1"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}}}),
            "services" => {
                json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName", "externalName": "x.y.svc"}})
            }
            "rolebindings" => {
                json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "x"},
                "subjects": [{"kind": "User", "name": "bob"}]})
            }
            "networkpolicies" => {
                json!({"metadata": {"name": "n"}, "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}})
            }
            "tenants" => {
                json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {"namespaces": [{"name": "x"}]}})
            }
            _ => json!({"metadata": {"name": "o", "labels": {"app.kubernetes.io/managed-by": "bulkhead"}}}),
        }
    }

    fn splice(mut base: Value, path: &[String], value: Value) -> Value {
        let mut cur = &mut base;
        for (i, k) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let Some(map) = cur.as_object_mut() else {
                break;
            };
            if last {
                map.insert(k.clone(), value);
                break;
            }
            cur = map.entry(k.clone()).or_insert_with(|| json!({}));
        }
        base
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
            exercise(&data);
        }

        #[test]
        fn arbitrary_json_objects_never_panic(v in json_value()) {
            exercise(&serde_json::to_vec(&v).unwrap());
        }

        #[test]
        fn mutated_real_objects_never_panic(
            r in 0..RESOURCES.len(),
            op in 0..OPERATIONS.len(),
            path in prop::collection::vec(key(), 1..5),
            value in json_value(),
            old in json_value(),
            user in prop::sample::select(vec!["alice", "operator", "system:serviceaccount:kube-system:namespace-controller"]),
        ) {
            let resource = RESOURCES[r];
            let object = splice(template(resource.1), &path, value);
            let ns = (resource.1 != "namespaces" && resource.1 != "tenants").then_some("acme-agents");
            review(&envelope(resource, OPERATIONS[op], ns, user, object.clone(), old));
            // And the stored-object side: a real object replaced by the mutation.
            review(&envelope(resource, OPERATIONS[op], ns, user, template(resource.1), object));
        }
    }

    #[test]
    fn the_fuzz_seeds_are_real_reviews_and_exercise_the_rules() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/admission_review");
        let mut denied = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz seeds present") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("seed readable");
            let (view, settings) = sample();
            let outcome = handler::handle(Endpoint::Validate, &bytes, view, settings).expect("seed decodes");
            denied += usize::from(!outcome.response.allowed);
            exercise(&bytes);
        }
        assert!(denied >= 7, "the seeds should each break a rule ({denied})");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        exercise(deep.as_bytes());
        let mut nested = String::from(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","operation":"CREATE","resource":{"resource":"pods"},"object":"#,
        );
        nested.push_str(&"{\"a\":".repeat(10_000));
        exercise(nested.as_bytes());
    }
}
