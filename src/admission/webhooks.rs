//! The Mutating- and ValidatingWebhookConfiguration bulkhead owns, pure.
//!
//! Every hook is scoped so a down operator can never take the cluster down:
//! namespaced hooks select only namespaces labelled as a tenant's *and*
//! managed by bulkhead, and never kube-system, kube-public, kube-node-lease,
//! default or the operator's namespace; the namespace hook only objects
//! carrying the tenant label; the Tenant hook only the Tenants this operator
//! serves. The operator's own requests skip the validating hooks by a
//! match condition. docs/admission.md lists what each hook does when the
//! operator is down.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};

use super::handler::managed_resources;
use crate::plan::network::NAMESPACE_NAME_LABEL;
use crate::plan::{LABEL_MANAGED_BY, LABEL_TENANT, MANAGED_BY, RESERVED_NAMESPACES};

/// Where the apiserver reaches the webhook server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A URL (local development: `https://127.0.0.1:<port>`).
    Url {
        /// Host name or IP in the URL (and the certificate).
        host: String,
        /// Port.
        port: u16,
    },
    /// A Service in front of the operator's pods (in a cluster).
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its port.
        port: i32,
    },
}

impl Target {
    /// The names the serving certificate must carry.
    pub fn sans(&self) -> Vec<String> {
        match self {
            Target::Url { host, .. } => {
                let mut v = vec![host.clone()];
                for extra in ["127.0.0.1", "localhost"] {
                    if !v.iter().any(|h| h == extra) {
                        v.push(extra.into());
                    }
                }
                v
            }
            Target::Service { namespace, name, .. } => {
                vec![
                    format!("{name}.{namespace}.svc"),
                    format!("{name}.{namespace}.svc.cluster.local"),
                    format!("{name}.{namespace}"),
                ]
            }
        }
    }
}

/// What the configurations depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookOptions {
    /// Name of both configurations.
    pub name: String,
    /// Where the server is.
    pub target: Target,
    /// The operator's namespace (never selected).
    pub operator_namespace: String,
    /// The operator's identity (its requests skip the validating hooks).
    pub operator_username: String,
    /// Extra labels a namespace must carry to be selected (sharding, canaries, tests).
    pub namespace_labels: BTreeMap<String, String>,
    /// The Tenants this operator serves (the controller's `--tenant-selector`).
    pub tenant_selector: Option<LabelSelector>,
    /// Timeout of each call, seconds (1–30).
    pub timeout_seconds: i32,
}

/// The validating hooks, by the last segment of their path (`/validate/<hook>`).
pub const VALIDATING_HOOKS: &[&str] =
    &["pods", "rolebindings", "networkpolicies", "services", "managed", "managed-delete", "namespaces", "tenants"];
/// The mutating hooks (`/mutate/<hook>`).
pub const MUTATING_HOOKS: &[&str] = &["pods"];

/// Group of the admission labels on the configurations.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

fn req(key: &str, operator: &str, values: &[String]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.to_vec()),
    }
}

fn excluded(opts: &WebhookOptions) -> LabelSelectorRequirement {
    let mut names: Vec<String> = RESERVED_NAMESPACES.iter().map(|s| s.to_string()).collect();
    names.push(opts.operator_namespace.clone());
    names.sort();
    names.dedup();
    req(NAMESPACE_NAME_LABEL, "NotIn", &names)
}

/// Namespaces of tenants, managed by bulkhead, never a system namespace.
pub fn tenant_namespaces(opts: &WebhookOptions) -> LabelSelector {
    LabelSelector {
        match_labels: (!opts.namespace_labels.is_empty()).then(|| opts.namespace_labels.clone()),
        match_expressions: Some(vec![
            req(LABEL_TENANT, "Exists", &[]),
            req(LABEL_MANAGED_BY, "In", &[MANAGED_BY.to_string()]),
            excluded(opts),
        ]),
    }
}

fn not_system(opts: &WebhookOptions) -> LabelSelector {
    LabelSelector {
        match_labels: (!opts.namespace_labels.is_empty()).then(|| opts.namespace_labels.clone()),
        match_expressions: Some(vec![excluded(opts)]),
    }
}

fn selector(key: &str, operator: &str, values: &[&str]) -> LabelSelector {
    let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
    LabelSelector { match_labels: None, match_expressions: Some(vec![req(key, operator, &values)]) }
}

fn rule(group: &str, version: &str, resources: &[&str], operations: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![group.into()]),
        api_versions: Some(vec![version.into()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        operations: Some(operations.iter().map(|s| s.to_string()).collect()),
        scope: None,
    }
}

fn client(opts: &WebhookOptions, path: &str, ca_bundle: &[u8]) -> WebhookClientConfig {
    let ca_bundle = Some(ByteString(ca_bundle.to_vec()));
    match &opts.target {
        Target::Url { host, port } => {
            let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            WebhookClientConfig { url: Some(format!("https://{host}:{port}{path}")), service: None, ca_bundle }
        }
        Target::Service { namespace, name, port } => WebhookClientConfig {
            url: None,
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(path.into()),
                port: Some(*port),
            }),
            ca_bundle,
        },
    }
}

fn cel_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn not_operator(opts: &WebhookOptions) -> Option<Vec<MatchCondition>> {
    (!opts.operator_username.is_empty()).then(|| {
        vec![MatchCondition {
            name: "not-the-operator".into(),
            expression: format!("request.userInfo.username != {}", cel_string(&opts.operator_username)),
        }]
    })
}

fn meta(opts: &WebhookOptions) -> ObjectMeta {
    ObjectMeta {
        name: Some(opts.name.clone()),
        labels: Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (COMPONENT_LABEL.to_string(), "admission".to_string()),
        ])),
        ..Default::default()
    }
}

/// One validating hook as documented in docs/admission.md.
struct Hook {
    name: &'static str,
    /// Last segment of the path; one of [`VALIDATING_HOOKS`].
    path: &'static str,
    rules: Vec<RuleWithOperations>,
    namespaces: Option<LabelSelector>,
    objects: Option<LabelSelector>,
    fail: bool,
}

fn validating_hooks(opts: &WebhookOptions) -> Vec<Hook> {
    let cu = ["CREATE", "UPDATE"];
    let tenant_ns = Some(tenant_namespaces(opts));
    let managed = Some(selector(LABEL_MANAGED_BY, "In", &[MANAGED_BY]));
    let (mut core_managed, mut all_managed) = (Vec::new(), Vec::new());
    for (group, plural, _) in managed_resources() {
        all_managed.push(rule(&group, "*", &[plural.as_str()], &["DELETE"]));
        if !matches!(plural.as_str(), "rolebindings" | "networkpolicies") {
            core_managed.push(rule(&group, "*", &[plural.as_str()], &cu));
        }
    }
    vec![
        Hook {
            name: "pods.validate.bulkhead.dev",
            path: "pods",
            rules: vec![rule("", "v1", &["pods"], &cu), rule("", "v1", &["pods/ephemeralcontainers"], &["UPDATE"])],
            namespaces: tenant_ns.clone(),
            objects: None,
            fail: true,
        },
        Hook {
            name: "rolebindings.validate.bulkhead.dev",
            path: "rolebindings",
            rules: vec![rule("rbac.authorization.k8s.io", "v1", &["rolebindings"], &cu)],
            namespaces: tenant_ns.clone(),
            objects: None,
            fail: true,
        },
        Hook {
            name: "networkpolicies.validate.bulkhead.dev",
            path: "networkpolicies",
            rules: vec![rule("networking.k8s.io", "v1", &["networkpolicies"], &cu)],
            namespaces: tenant_ns.clone(),
            objects: None,
            fail: true,
        },
        Hook {
            name: "services.validate.bulkhead.dev",
            path: "services",
            rules: vec![rule("", "v1", &["services"], &cu)],
            namespaces: tenant_ns.clone(),
            objects: None,
            fail: true,
        },
        Hook {
            name: "managed.validate.bulkhead.dev",
            path: "managed",
            rules: core_managed,
            namespaces: tenant_ns.clone(),
            objects: managed.clone(),
            fail: true,
        },
        Hook {
            name: "managed-delete.validate.bulkhead.dev",
            path: "managed-delete",
            rules: all_managed,
            namespaces: tenant_ns,
            objects: managed,
            // A down operator must never keep a namespace from being deleted: drift repair restores anything deleted meanwhile.
            fail: false,
        },
        Hook {
            name: "namespaces.validate.bulkhead.dev",
            path: "namespaces",
            rules: vec![rule("", "v1", &["namespaces"], &cu)],
            namespaces: Some(not_system(opts)),
            // Old or new object carrying the tenant label: catches setting, changing and removing it.
            objects: Some(selector(LABEL_TENANT, "Exists", &[])),
            fail: true,
        },
        Hook {
            name: "tenants.validate.bulkhead.dev",
            path: "tenants",
            rules: vec![rule("bulkhead.dev", "*", &["tenants"], &cu)],
            namespaces: None,
            objects: opts.tenant_selector.clone(),
            // The controller refuses the same conflicts on its own (Conflict phase), so GitOps keeps working while we are down.
            fail: false,
        },
    ]
}

/// The validating configuration, with `ca_bundle` (PEM) trusted for the server.
pub fn validating(opts: &WebhookOptions, ca_bundle: &[u8]) -> ValidatingWebhookConfiguration {
    let webhooks = validating_hooks(opts)
        .into_iter()
        .map(|h| ValidatingWebhook {
            name: h.name.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: client(opts, &format!("/validate/{}", h.path), ca_bundle),
            failure_policy: Some(if h.fail { "Fail" } else { "Ignore" }.into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: h.namespaces,
            object_selector: h.objects,
            rules: Some(h.rules),
            side_effects: "None".into(),
            timeout_seconds: Some(opts.timeout_seconds),
            match_conditions: not_operator(opts),
        })
        .collect();
    ValidatingWebhookConfiguration { metadata: meta(opts), webhooks: Some(webhooks) }
}

/// The mutating configuration: the audit sidecar, data residency and pull policy for tenant pods.
pub fn mutating(opts: &WebhookOptions, ca_bundle: &[u8]) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: meta(opts),
        webhooks: Some(vec![MutatingWebhook {
            name: "pods.mutate.bulkhead.dev".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: client(opts, "/mutate/pods", ca_bundle),
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(tenant_namespaces(opts)),
            object_selector: None,
            reinvocation_policy: Some("IfNeeded".into()),
            rules: Some(vec![
                rule("", "v1", &["pods"], &["CREATE"]),
                rule("", "v1", &["pods/ephemeralcontainers"], &["UPDATE"]),
            ]),
            side_effects: "None".into(),
            timeout_seconds: Some(opts.timeout_seconds),
            match_conditions: None,
        }]),
    }
}

/// Creates or replaces both configurations when they differ from what `opts` and `ca_bundle` want;
/// returns whether anything was written. Reading first keeps an idle operator write-free.
pub async fn apply(client: &kube::Client, opts: &WebhookOptions, ca_bundle: &[u8]) -> Result<bool, kube::Error> {
    let a = put(client, mutating(opts, ca_bundle)).await?;
    let b = put(client, validating(opts, ca_bundle)).await?;
    Ok(a || b)
}

async fn put<K>(client: &kube::Client, desired: K) -> Result<bool, kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    use kube::api::{Api, PostParams};
    let api: Api<K> = Api::all(client.clone());
    let name = desired.meta().name.clone().unwrap_or_default();
    let mut wanted = serde_json::to_value(&desired).map_err(kube::Error::SerdeError)?;
    crate::controller::diff::stamp(&mut wanted);
    let mut desired: K = serde_json::from_value(wanted.clone()).map_err(kube::Error::SerdeError)?;
    match api.get_opt(&name).await? {
        None => {
            api.create(&PostParams::default(), &desired).await?;
        }
        Some(existing) => {
            let observed = serde_json::to_value(&existing).map_err(kube::Error::SerdeError)?;
            if crate::controller::diff::contains(&observed, &wanted) {
                return Ok(false);
            }
            desired.meta_mut().resource_version = existing.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &desired).await?;
        }
    }
    tracing::info!(configuration = name, "admission webhook configuration written");
    Ok(true)
}

/// Parses a label selector as kubectl writes it: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated.
pub fn parse_selector(text: &str) -> Result<LabelSelector, String> {
    let mut labels = BTreeMap::new();
    let mut exprs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        // Split off one requirement: up to a comma outside parentheses.
        let mut depth = 0i32;
        let mut end = rest.len();
        for (i, ch) in rest.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let part = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("").trim();
        if part.is_empty() {
            return Err(format!("{text:?}: empty requirement"));
        }
        let set = |op: &str, kw: &str| -> Option<Result<LabelSelectorRequirement, String>> {
            let lower = part.to_ascii_lowercase();
            let idx = lower.find(kw)?;
            let key = part[..idx].trim();
            let values = part[idx + kw.len()..].trim();
            let inner = values.strip_prefix('(').and_then(|v| v.strip_suffix(')'));
            Some(match inner {
                Some(inner) if !key.is_empty() => {
                    let vals: Vec<String> =
                        inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
                    Ok(req(key, op, &vals))
                }
                _ => Err(format!("{part:?}: expected `key {} (a,b)`", kw.trim())),
            })
        };
        if let Some(r) = set("NotIn", " notin ") {
            exprs.push(r?);
        } else if let Some(r) = set("In", " in ") {
            exprs.push(r?);
        } else if let Some((k, v)) = part.split_once("!=") {
            exprs.push(req(k.trim(), "NotIn", &[v.trim().to_string()]));
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            if k.trim().is_empty() {
                return Err(format!("{part:?}: no key"));
            }
            labels.insert(k.trim().to_string(), v.trim().to_string());
        } else if let Some(k) = part.strip_prefix('!') {
            exprs.push(req(k.trim(), "DoesNotExist", &[]));
        } else if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
            exprs.push(req(part, "Exists", &[]));
        } else {
            return Err(format!("{part:?} is not a label requirement"));
        }
    }
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> WebhookOptions {
        WebhookOptions {
            name: "bulkhead".into(),
            target: Target::Url { host: "127.0.0.1".into(), port: 9443 },
            operator_namespace: "bulkhead-system".into(),
            operator_username: "system:serviceaccount:bulkhead-system:bulkhead".into(),
            namespace_labels: BTreeMap::new(),
            tenant_selector: None,
            timeout_seconds: 5,
        }
    }

    #[test]
    fn every_hook_is_scoped_and_never_selects_system_namespaces() {
        let v = validating(&opts(), b"CA");
        let hooks = v.webhooks.unwrap();
        for h in &hooks {
            assert_eq!(h.side_effects, "None");
            assert_eq!(h.timeout_seconds, Some(5));
            assert!(h.client_config.url.as_deref().unwrap().starts_with("https://127.0.0.1:9443/validate/"));
            assert_eq!(h.client_config.ca_bundle.as_ref().unwrap().0, b"CA");
            if h.name != "tenants.validate.bulkhead.dev" {
                let ns = h.namespace_selector.as_ref().unwrap();
                let exclusion = ns.match_expressions.iter().flatten().find(|e| e.operator == "NotIn").unwrap();
                for system in ["kube-system", "kube-public", "kube-node-lease", "bulkhead-system", "default"] {
                    assert!(exclusion.values.as_ref().unwrap().contains(&system.to_string()), "{} {system}", h.name);
                }
            }
            assert!(
                h.match_conditions.as_ref().unwrap()[0]
                    .expression
                    .contains("'system:serviceaccount:bulkhead-system:bulkhead'")
            );
        }
        let policy = |name: &str| hooks.iter().find(|h| h.name == name).unwrap().failure_policy.clone().unwrap();
        assert_eq!(policy("pods.validate.bulkhead.dev"), "Fail");
        assert_eq!(policy("rolebindings.validate.bulkhead.dev"), "Fail");
        assert_eq!(policy("managed-delete.validate.bulkhead.dev"), "Ignore");
        assert_eq!(policy("tenants.validate.bulkhead.dev"), "Ignore");
        let ns_hook = hooks.iter().find(|h| h.name == "namespaces.validate.bulkhead.dev").unwrap();
        assert_eq!(ns_hook.object_selector.as_ref().unwrap().match_expressions.as_ref().unwrap()[0].key, LABEL_TENANT);
        let m = mutating(&opts(), b"CA");
        let hook = &m.webhooks.unwrap()[0];
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert!(
            hook.namespace_selector
                .as_ref()
                .unwrap()
                .match_expressions
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.key == LABEL_TENANT)
        );
    }

    #[test]
    fn every_hook_has_a_known_path() {
        let v = validating(&opts(), b"CA");
        let paths: Vec<String> = v.webhooks.unwrap().into_iter().filter_map(|h| h.client_config.url).collect();
        let known: Vec<String> =
            VALIDATING_HOOKS.iter().map(|h| format!("https://127.0.0.1:9443/validate/{h}")).collect();
        assert_eq!(paths, known);
        let m = mutating(&opts(), b"CA");
        assert_eq!(
            m.webhooks.unwrap()[0].client_config.url.as_deref(),
            Some(format!("https://127.0.0.1:9443/mutate/{}", MUTATING_HOOKS[0]).as_str())
        );
    }

    #[test]
    fn in_cluster_mode_uses_a_service() {
        let mut o = opts();
        o.target = Target::Service { namespace: "bulkhead-system".into(), name: "bulkhead-webhook".into(), port: 443 };
        let m = mutating(&o, b"CA");
        let svc = m.webhooks.unwrap()[0].client_config.service.clone().unwrap();
        assert_eq!(svc.path.as_deref(), Some("/mutate/pods"));
        assert!(o.target.sans().contains(&"bulkhead-webhook.bulkhead-system.svc".to_string()));
    }

    #[test]
    fn extra_labels_and_tenant_selector_narrow_the_hooks() {
        let mut o = opts();
        o.namespace_labels = BTreeMap::from([("shard".to_string(), "a".to_string())]);
        o.tenant_selector = Some(parse_selector("shard=a").unwrap());
        let v = validating(&o, b"CA");
        for h in v.webhooks.unwrap() {
            if h.name == "tenants.validate.bulkhead.dev" {
                assert_eq!(h.object_selector.unwrap().match_labels.unwrap()["shard"], "a");
            } else {
                assert_eq!(h.namespace_selector.unwrap().match_labels.unwrap()["shard"], "a");
            }
        }
    }

    #[test]
    fn selectors_parse_like_kubectl() {
        let s = parse_selector("a=b, c==d,e!=f,g,!h,i in (j, k),l notin (m)").unwrap();
        assert_eq!(s.match_labels.unwrap(), BTreeMap::from([("a".into(), "b".into()), ("c".into(), "d".into())]));
        let ops: Vec<(String, String)> =
            s.match_expressions.unwrap().into_iter().map(|e| (e.key, e.operator)).collect();
        assert_eq!(
            ops,
            vec![
                ("e".into(), "NotIn".into()),
                ("g".into(), "Exists".into()),
                ("h".into(), "DoesNotExist".into()),
                ("i".into(), "In".into()),
                ("l".into(), "NotIn".into())
            ]
        );
        for bad in ["a in b", ",", "=x", "a b"] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
        assert_eq!(cel_string("it's"), "'it\\'s'");
    }
}
