//! Controls that are objects: everything the plan gives the tenant, compared
//! with the live cluster by the controller's own subset comparison
//! ([`diff::contains`] over [`apply::desired_json`]); quotas, bindings that
//! reach other tenants, keys, and bulkhead's webhook configurations.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{RuleWithOperations, WebhookClientConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use serde_json::Value;

use crate::api::{Isolation, SubjectKind};
use crate::controller::{apply, diff};
use crate::plan::ManagedObject;
use crate::plan::network as net;
use crate::plan::object::Kind;
use crate::plan::secrets::{AUDIT_KEY_ID, DEK_ID, KEYS_SECRET};

use super::checks::*;
use super::network;
use super::view::{ClusterView, MaterialState, key_digests};
use super::{CheckResult, Ctx, Evidence, Status};

/// Paths (dotted) where `observed` lacks what `desired` wants, found with [`diff::contains`] itself.
pub fn differences(observed: &Value, desired: &Value) -> Vec<(String, Value, Value)> {
    fn walk(observed: &Value, desired: &Value, path: String, out: &mut Vec<(String, Value, Value)>) {
        if diff::contains(observed, desired) {
            return;
        }
        match (desired, observed) {
            (Value::Object(d), Value::Object(o)) => {
                for (k, dv) in d {
                    let ov = o.get(k).cloned().unwrap_or(Value::Null);
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(&ov, dv, p, out);
                }
            }
            _ => out.push((path, desired.clone(), observed.clone())),
        }
    }
    let mut out = Vec::new();
    walk(observed, desired, String::new(), &mut out);
    out
}

fn short(v: &Value) -> String {
    let text = if v.is_null() { "absent".to_string() } else { v.to_string() };
    if text.len() > 160 {
        format!("{}…", &text[..text.char_indices().nth(157).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}

/// Compares one planned object with its live JSON: one piece of evidence.
/// Secret values never appear: for Secrets only the differing paths are named.
pub fn compare(object: &ManagedObject, live: Option<&Value>) -> Evidence {
    let key = object.key();
    let request = format!("{key} as planned");
    let Some(observed) = live else {
        return Evidence::plain(request, "missing", false);
    };
    let desired = apply::desired_json(object);
    if diff::contains(observed, &desired) {
        return Evidence::plain(request, "present and as planned", true);
    }
    let diffs = differences(observed, &desired);
    let text: Vec<String> = diffs
        .iter()
        .map(|(path, want, have)| {
            if object.kind() == Kind::Secret {
                format!("{path} differs")
            } else {
                format!("{path}: want {}, found {}", short(want), short(have))
            }
        })
        .collect();
    Evidence::plain(request, format!("modified: {}", text.join("; ")), false)
}

fn compare_all(ctx: &Ctx<'_>, pick: impl Fn(&ManagedObject) -> bool) -> Vec<Evidence> {
    ctx.facts
        .desired
        .objects
        .iter()
        .filter(|o| pick(o))
        .map(|o| compare(o, ctx.facts.live.get(&o.key()).and_then(Option::as_ref)))
        .collect()
}

fn judged(id: &str, evidence: Vec<Evidence>, what: &str) -> CheckResult {
    let n = evidence.len();
    CheckResult::judge(id, evidence, format!("{n} {what} present and as planned"), |bad| {
        format!("{bad} of {n} {what} missing or modified")
    })
}

fn policy_named(o: &ManagedObject, name: &str) -> bool {
    o.kind() == Kind::NetworkPolicy && o.meta().name.as_deref() == Some(name)
}

fn objects(ctx: &Ctx<'_>) -> Vec<CheckResult> {
    let isolation = ctx.facts.desired.effective.isolation;
    let mut out = vec![judged(
        NAMESPACE_LABELS,
        compare_all(ctx, |o| o.kind() == Kind::Namespace),
        "namespace(s) with their labels",
    )];
    if isolation == Isolation::Disabled {
        out.push(CheckResult::new(
            DEFAULT_DENY,
            Status::Fail,
            "spec.network.isolation is None: no default-deny policy isolates this tenant's namespaces",
            Vec::new(),
        ));
        out.push(CheckResult::not_applicable(ALLOW_LIST, "spec.network.isolation is None: no allow-list is planned"));
    } else {
        out.push(judged(
            DEFAULT_DENY,
            compare_all(ctx, |o| policy_named(o, net::DEFAULT_DENY)),
            "default-deny policies",
        ));
        out.push(judged(ALLOW_LIST, compare_all(ctx, |o| policy_named(o, net::ALLOW)), "allow-list policies"));
    }
    let bindings =
        compare_all(ctx, |o| matches!(o.kind(), Kind::RoleBinding | Kind::ClusterRole | Kind::ClusterRoleBinding));
    out.push(if bindings.is_empty() {
        CheckResult::not_applicable(ACCESS_BINDINGS, "the tenant has no access entries: no binding is planned")
    } else {
        judged(ACCESS_BINDINGS, bindings, "access binding(s)")
    });
    let profiles: Vec<Evidence> = ctx.facts.profiles.iter().map(|(o, live)| compare(o, live.as_ref())).collect();
    out.push(judged(PROFILE_ROLES, profiles, "profile ClusterRole(s)"));
    out.push(judged(
        MANAGED_OBJECTS,
        compare_all(ctx, |o| matches!(o.kind(), Kind::ServiceAccount | Kind::ResourceQuota | Kind::LimitRange)),
        "service account(s), quota(s) and limit range(s)",
    ));
    out
}

/// Groups every authenticated (or unauthenticated) caller is in.
const EVERYONE: [&str; 3] = ["system:authenticated", "system:unauthenticated", "system:serviceaccounts"];

fn foreign_subjects(ctx: &Ctx<'_>) -> CheckResult {
    let own = &ctx.facts.name;
    let mut own_subjects: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    for a in &ctx.facts.tenant.spec.access {
        own_subjects.insert((a.kind.as_str().to_string(), a.name.clone(), a.namespace.clone()));
    }
    let mut theirs: BTreeMap<(String, String, Option<String>), String> = BTreeMap::new();
    for t in ctx.view.tenants.iter().filter(|t| &t.name != own) {
        for a in &t.access {
            let ns = if a.kind == SubjectKind::ServiceAccount { a.namespace.clone() } else { None };
            theirs.insert((a.kind.as_str().to_string(), a.name.clone(), ns), t.name.clone());
        }
    }
    let other_ns = ctx.view.other_tenant_namespaces(own, ctx.facts.namespaces());
    let mut evidence = Vec::new();
    for (ns, rbs) in &ctx.facts.role_bindings {
        for rb in rbs {
            let mut bad = Vec::new();
            for s in rb.subjects.iter().flatten() {
                let ns_of = if s.kind == "ServiceAccount" { s.namespace.clone().or(Some(ns.clone())) } else { None };
                let key = (s.kind.clone(), s.name.clone(), ns_of.clone());
                if own_subjects.contains(&key) {
                    continue;
                }
                if let Some(t) = theirs.get(&key) {
                    bad.push(format!("{} {} (a subject of tenant {t})", s.kind, s.name));
                } else if s.kind == "Group" && EVERYONE.contains(&s.name.as_str()) {
                    bad.push(format!("Group {} (every user)", s.name));
                } else if s.kind == "User" && s.name == "system:anonymous" {
                    bad.push("User system:anonymous (every unauthenticated caller)".to_string());
                } else if let Some(t) = ns_of.as_ref().and_then(|n| other_ns.get(n)) {
                    bad.push(format!(
                        "ServiceAccount {}/{} (of tenant {t})",
                        ns_of.clone().unwrap_or_default(),
                        s.name
                    ));
                } else if s.kind == "User"
                    && let Some(rest) = s.name.strip_prefix("system:serviceaccount:")
                    && let Some(t) = rest.split(':').next().and_then(|n| other_ns.get(n))
                {
                    bad.push(format!("User {} (a ServiceAccount of tenant {t})", s.name));
                }
            }
            let request = format!("RoleBinding {ns}/{} → {} {}", rb.name_any(), rb.role_ref.kind, rb.role_ref.name);
            if bad.is_empty() {
                evidence.push(Evidence::plain(
                    request,
                    "binds only this tenant's subjects or subjects of no tenant",
                    true,
                ));
            } else {
                evidence.push(Evidence::plain(request, format!("grants access to {}", bad.join(", ")), false));
            }
        }
    }
    let n = evidence.len();
    CheckResult::judge(
        NO_FOREIGN_SUBJECTS,
        evidence,
        format!("{n} RoleBinding(s) in the tenant's namespaces: none reaches another tenant's subject"),
        |bad| {
            format!(
                "{bad} RoleBinding(s) in the tenant's namespaces grant access to another tenant's subjects or to every user"
            )
        },
    )
}

fn quotas(ctx: &Ctx<'_>) -> Vec<CheckResult> {
    let mut resources = Vec::new();
    let mut objects = Vec::new();
    for ns in ctx.facts.namespaces() {
        let hard: BTreeMap<String, String> = ctx
            .facts
            .quotas
            .get(ns)
            .into_iter()
            .flatten()
            .flat_map(|rq| rq.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default())
            .map(|(k, v)| (k, v.0))
            .collect();
        let has = |base: &str| {
            hard.keys().any(|k| k == base || *k == format!("requests.{base}") || *k == format!("limits.{base}"))
        };
        let missing: Vec<&str> = ["cpu", "memory", "ephemeral-storage"].into_iter().filter(|r| !has(r)).collect();
        let request = format!("ResourceQuotas in {ns}");
        let set: Vec<String> = hard.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let listed = if set.is_empty() { "no ResourceQuota".to_string() } else { format!("hard: {}", set.join(", ")) };
        resources.push(if missing.is_empty() {
            Evidence::plain(&request, listed.clone(), true)
        } else {
            Evidence::plain(&request, format!("{listed}; no limit for {}", missing.join(", ")), false)
        });
        const COUNTS: [&str; 9] = [
            "pods",
            "services",
            "secrets",
            "configmaps",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "resourcequotas",
            "services.loadbalancers",
            "services.nodeports",
        ];
        let counted = hard.keys().any(|k| COUNTS.contains(&k.as_str()) || k.starts_with("count/"));
        objects.push(Evidence::plain(
            &request,
            if counted { listed } else { format!("{listed}; no object count limited") },
            counted,
        ));
    }
    vec![
        CheckResult::judge(
            RESOURCE_QUOTAS,
            resources,
            "cpu, memory and ephemeral-storage are limited in every namespace",
            |bad| format!("{bad} namespace(s) without a quota on cpu, memory or ephemeral-storage"),
        ),
        CheckResult::judge(OBJECT_QUOTAS, objects, "object counts are limited in every namespace", |bad| {
            format!("{bad} namespace(s) without a limit on object counts")
        }),
    ]
}

fn keys(ctx: &Ctx<'_>) -> Vec<CheckResult> {
    let facts = ctx.facts;
    let Some(status) = facts.tenant.status.as_ref().and_then(|s| s.keys.clone()) else {
        return vec![
            CheckResult::new(
                KEYS_PRESENT,
                Status::Fail,
                "the Tenant status records no key material: the tenant has no keys",
                Vec::new(),
            ),
            CheckResult::not_applicable(KEYS_DISTINCT, "the tenant has no keys to compare"),
        ];
    };
    let ids: Vec<String> =
        std::iter::once(status.current_key_id.clone()).chain(status.previous_key_ids.clone()).collect();
    let mut present = Vec::new();
    let mut digests_by_ns: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for ns in facts.namespaces() {
        let request = format!("Secret {ns}/{KEYS_SECRET} holds keys {}", ids.join(", "));
        let Some(Some(secret)) = facts.key_secrets.get(ns) else {
            present.push(Evidence::plain(request, "missing", false));
            continue;
        };
        let data: BTreeMap<String, ByteString> = secret.data.clone().unwrap_or_default();
        let mut problems = Vec::new();
        for id_key in [DEK_ID, AUDIT_KEY_ID] {
            match data.get(id_key) {
                Some(v) if v.0 == status.current_key_id.as_bytes() => {}
                Some(_) => problems.push(format!("{id_key} is not the current key id {}", status.current_key_id)),
                None => problems.push(format!("{id_key} missing")),
            }
        }
        for id in &ids {
            for prefix in ["dek.", "audit-key."] {
                match data.get(&format!("{prefix}{id}")) {
                    Some(v) if v.0.len() == 32 => {}
                    Some(v) => problems.push(format!("{prefix}{id} is {} bytes, not 32", v.0.len())),
                    None => problems.push(format!("{prefix}{id} missing")),
                }
            }
        }
        present.push(if problems.is_empty() {
            Evidence::plain(request, "present: current and previous ids, 32-byte keys", true)
        } else {
            Evidence::plain(request, problems.join("; "), false)
        });
        digests_by_ns.insert(ns.clone(), key_digests(secret));
    }
    let exact = match &facts.material {
        MaterialState::Known(_) => {
            let evidence = compare_all(ctx, |o| o.kind() == Kind::Secret);
            present.extend(evidence);
            "projections equal the plan from the source Secret".to_string()
        }
        MaterialState::Unknown(why) => format!("values not compared with the source ({why})"),
    };
    let n = facts.namespaces().len();
    let present = CheckResult::judge(
        KEYS_PRESENT,
        present,
        format!("key material present in all {n} namespace(s); {exact}"),
        |bad| format!("{bad} key Secret(s) missing, incomplete or modified; {exact}"),
    );

    // Distinctness: within the tenant every namespace holds the same keys; no key equals another tenant's.
    let mut distinct = Vec::new();
    let mut errors = Vec::new();
    let mut first: Option<(&String, &BTreeMap<String, String>)> = None;
    for (ns, d) in &digests_by_ns {
        for id in &ids {
            if let (Some(a), Some(b)) = (d.get(&format!("dek.{id}")), d.get(&format!("audit-key.{id}"))) {
                distinct.push(Evidence::plain(
                    format!("Secret {ns}/{KEYS_SECRET}: data-encryption key {id} differs from audit key {id}"),
                    if a == b { "identical" } else { "distinct" },
                    a != b,
                ));
            }
        }
        match first {
            None => first = Some((ns, d)),
            Some((fns, fd)) => distinct.push(Evidence::plain(
                format!("Secret {ns}/{KEYS_SECRET} holds the same keys as {fns}/{KEYS_SECRET}"),
                if fd == d { "same keys" } else { "different keys" },
                fd == d,
            )),
        }
    }
    let own: BTreeSet<&String> = digests_by_ns.values().flat_map(|d| d.values()).collect();
    let mut compared = 0;
    for (tenant, theirs) in &ctx.view.key_digests {
        if tenant == &facts.name {
            continue;
        }
        match theirs {
            Ok(set) => {
                compared += 1;
                let shared = set.iter().filter(|d| own.contains(d)).count();
                if shared > 0 {
                    distinct.push(Evidence::plain(
                        format!("keys of tenant {} compared with tenant {tenant}'s (by SHA-256 digest)", facts.name),
                        format!("{shared} key(s) identical"),
                        false,
                    ));
                }
            }
            Err(e) => errors.push(format!("tenant {tenant}: {e}")),
        }
    }
    distinct.push(Evidence::plain(
        format!("keys of tenant {} compared with {compared} other tenant(s) (by SHA-256 digest)", facts.name),
        format!("{} key(s) compared", own.len()),
        true,
    ));
    let distinct = if !errors.is_empty() {
        CheckResult::new(
            KEYS_DISTINCT,
            Status::Error,
            format!("cannot read other tenants' keys: {}", errors.join("; ")),
            distinct,
        )
    } else if own.is_empty() {
        CheckResult::new(
            KEYS_DISTINCT,
            Status::NotApplicable,
            "no key Secret present to compare (see BH-KEY-001)",
            distinct,
        )
    } else {
        CheckResult::judge(
            KEYS_DISTINCT,
            distinct,
            format!(
                "{} key(s) distinct from {compared} other tenant(s)' and identical across the tenant's namespaces",
                own.len()
            ),
            |bad| format!("{bad} comparison(s) found shared or inconsistent keys"),
        )
    };
    vec![present, distinct]
}

/// Whether a webhook's namespaceSelector (none: every namespace) selects `ns` as the view knows it.
fn selects(selector: Option<&LabelSelector>, view: &ClusterView, ns: &str) -> bool {
    selector.is_none_or(|s| network::selects(s, |key| view.namespaces.label(ns, key)))
}

fn rule_covers(rules: Option<&Vec<RuleWithOperations>>, group: &str, resource: &str) -> bool {
    rules.into_iter().flatten().any(|r| {
        let ops = r.operations.as_deref().unwrap_or_default();
        let groups = r.api_groups.as_deref().unwrap_or_default();
        let resources = r.resources.as_deref().unwrap_or_default();
        ops.iter().any(|o| o == "CREATE" || o == "*")
            && groups.iter().any(|g| g == "*" || g == group)
            && resources.iter().any(|x| x == "*" || x == resource)
    })
}

/// Names of bulkhead webhooks that see CREATE of `resource` in namespace `ns`.
pub fn webhooks_covering(view: &ClusterView, group: &str, resource: &str, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in &view.webhooks.validating {
        for w in c.webhooks.iter().flatten() {
            if rule_covers(w.rules.as_ref(), group, resource) && selects(w.namespace_selector.as_ref(), view, ns) {
                out.push(w.name.clone());
            }
        }
    }
    for c in &view.webhooks.mutating {
        for w in c.webhooks.iter().flatten() {
            if rule_covers(w.rules.as_ref(), group, resource) && selects(w.namespace_selector.as_ref(), view, ns) {
                out.push(w.name.clone());
            }
        }
    }
    out
}

/// Validity (notBefore, notAfter) of every certificate in a PEM bundle.
pub fn bundle_validity(pem: &[u8]) -> Result<Vec<(jiff::Timestamp, jiff::Timestamp)>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "caBundle is not PEM text".to_string())?;
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match (line, &mut body) {
            ("-----BEGIN CERTIFICATE-----", None) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(b)) => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| format!("bad base64 in caBundle: {e}"))?;
                out.push(der::validity(&der).ok_or("a certificate in caBundle is not valid X.509 DER")?);
                body = None;
            }
            (l, Some(b)) => b.push_str(l),
            _ => {}
        }
    }
    if out.is_empty() {
        return Err("caBundle holds no PEM certificate".into());
    }
    Ok(out)
}

/// Just enough DER to read a certificate's validity period.
mod der {
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    fn time(tag: u8, v: &[u8]) -> Option<jiff::Timestamp> {
        let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
        let full = match (tag, s.len()) {
            (0x17, 12) => {
                let yy: i32 = s[..2].parse().ok()?;
                format!("{}{}", if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
            }
            (0x18, 14) => s.to_string(),
            _ => return None,
        };
        let text = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &full[..4],
            &full[4..6],
            &full[6..8],
            &full[8..10],
            &full[10..12],
            &full[12..14]
        );
        text.parse().ok()
    }

    /// (notBefore, notAfter) of an X.509 certificate.
    pub fn validity(der: &[u8]) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
        let (0x30, cert, _) = tlv(der)? else { return None };
        let (0x30, tbs, _) = tlv(cert)? else { return None };
        let mut rest = tbs;
        let (tag, _, after) = tlv(rest)?;
        if tag == 0xa0 {
            rest = after;
        }
        for _ in 0..3 {
            // serial, signature algorithm, issuer
            rest = tlv(rest)?.2;
        }
        let (0x30, validity, _) = tlv(rest)? else { return None };
        let (t1, v1, after) = tlv(validity)?;
        let (t2, v2, _) = tlv(after)?;
        Some((time(t1, v1)?, time(t2, v2)?))
    }
}

/// Cluster-scoped resources: a namespaceSelector does not apply to them
/// (Namespaces excepted: the selector matches the namespace itself).
const CLUSTER_SCOPED: [&str; 8] = [
    "tenants",
    "nodes",
    "persistentvolumes",
    "clusterroles",
    "clusterrolebindings",
    "customresourcedefinitions",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
];

/// Whether a webhook sees namespaced objects, so that its namespaceSelector matters.
fn namespaced(rules: Option<&Vec<RuleWithOperations>>) -> bool {
    rules.into_iter().flatten().any(|r| {
        r.scope.as_deref() != Some("Cluster")
            && r.resources.iter().flatten().any(|res| !CLUSTER_SCOPED.contains(&res.split('/').next().unwrap_or("")))
    })
}

fn webhook_evidence(
    name: &str,
    selector: Option<&LabelSelector>,
    rules: Option<&Vec<RuleWithOperations>>,
    client: &WebhookClientConfig,
    ctx: &Ctx<'_>,
    now: jiff::Timestamp,
) -> Vec<Evidence> {
    let mut out = Vec::new();
    if namespaced(rules) {
        let covered: Vec<&String> =
            ctx.facts.namespaces().iter().filter(|ns| selects(selector, ctx.view, ns)).collect();
        let n = ctx.facts.namespaces().len();
        out.push(Evidence::plain(
            format!("webhook {name} namespaceSelector covers the tenant's namespaces"),
            format!("{} of {n} covered", covered.len()),
            covered.len() == n,
        ));
        let operator = ctx.settings.plan.operator_namespace.as_str();
        for exempt in ["kube-system", operator] {
            let hit = selects(selector, ctx.view, exempt);
            out.push(Evidence::plain(
                format!("webhook {name} exempts namespace {exempt}"),
                if hit { "not exempt: a down webhook would block it" } else { "exempt" },
                !hit,
            ));
        }
    }
    let ca = match client.ca_bundle.as_ref() {
        None => Evidence::plain(format!("webhook {name} caBundle"), "missing", false),
        Some(b) => match bundle_validity(&b.0) {
            Err(e) => Evidence::plain(format!("webhook {name} caBundle"), e, false),
            Ok(periods) => {
                let valid = periods.iter().any(|(from, to)| *from <= now && now < *to);
                let text: Vec<String> = periods.iter().map(|(f, t)| format!("valid {f} to {t}")).collect();
                Evidence::plain(
                    format!("webhook {name} caBundle holds a currently valid certificate"),
                    text.join("; "),
                    valid,
                )
            }
        },
    };
    out.push(ca);
    out
}

fn webhooks(ctx: &Ctx<'_>) -> CheckResult {
    let hooks = &ctx.view.webhooks;
    if let Some(e) = &hooks.error {
        if hooks.forbidden && ctx.settings.lenient {
            return CheckResult::not_applicable(
                WEBHOOKS,
                format!(
                    "{e}: the operator's RBAC does not grant it; `bulkhead verify` with an auditor's credentials checks this"
                ),
            );
        }
        return CheckResult::error(WEBHOOKS, e.clone());
    }
    if hooks.validating.is_empty() && hooks.mutating.is_empty() {
        return CheckResult::not_applicable(
            WEBHOOKS,
            "bulkhead's admission webhooks are not installed in this cluster (no webhook configuration named bulkhead* or labelled app.kubernetes.io/managed-by=bulkhead)",
        );
    }
    let now = jiff::Timestamp::now();
    let mut evidence = Vec::new();
    // Validating and mutating webhooks are different types with the same fields this check reads.
    let validating = hooks
        .validating
        .iter()
        .flat_map(|c| c.webhooks.iter().flatten())
        .map(|w| (&w.name, w.namespace_selector.as_ref(), w.rules.as_ref(), &w.client_config));
    let mutating = hooks
        .mutating
        .iter()
        .flat_map(|c| c.webhooks.iter().flatten())
        .map(|w| (&w.name, w.namespace_selector.as_ref(), w.rules.as_ref(), &w.client_config));
    for (name, selector, rules, client) in validating.chain(mutating) {
        evidence.extend(webhook_evidence(name, selector, rules, client, ctx, now));
    }
    CheckResult::judge(
        WEBHOOKS,
        evidence,
        "every bulkhead webhook covers the tenant, exempts kube-system and the operator, and trusts a valid CA",
        |bad| format!("{bad} webhook property(ies) wrong"),
    )
}

/// Every object control of one tenant.
pub async fn run(ctx: &Ctx<'_>) -> Vec<CheckResult> {
    let mut out = objects(ctx);
    out.push(foreign_subjects(ctx));
    out.extend(quotas(ctx));
    out.extend(keys(ctx));
    out.push(webhooks(ctx));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_the_changed_paths() {
        let desired = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1]}});
        let observed = json!({"metadata": {"labels": {"a": "1", "b": "3", "c": "4"}}, "spec": {"x": [1, 2]}});
        let d: Vec<String> = differences(&observed, &desired).into_iter().map(|d| d.0).collect();
        assert_eq!(d, vec!["metadata.labels.b", "spec.x"]);
        assert!(differences(&desired, &desired).is_empty());
    }

    #[test]
    fn namespace_selectors_only_matter_for_namespaced_rules() {
        let rules = |v: serde_json::Value| -> Vec<RuleWithOperations> { serde_json::from_value(v).unwrap() };
        let tenants = rules(
            json!([{"apiGroups": ["bulkhead.dev"], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["tenants"]}]),
        );
        assert!(!namespaced(Some(&tenants)));
        let pods = rules(
            json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods", "pods/ephemeralcontainers"]}]),
        );
        assert!(namespaced(Some(&pods)));
        let cluster = rules(
            json!([{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"], "scope": "Cluster"}]),
        );
        assert!(!namespaced(Some(&cluster)));
        assert!(rule_covers(Some(&pods), "", "pods") && !rule_covers(Some(&pods), "", "services"));
    }

    #[test]
    fn certificate_validity_is_read_from_der() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["bulkhead.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 2);
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let cert = params.self_signed(&key).unwrap();
        let v = bundle_validity(cert.pem().as_bytes()).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0.to_string(), "2020-01-02T00:00:00Z");
        assert_eq!(v[0].1.to_string(), "2049-12-31T00:00:00Z");
        assert!(bundle_validity(b"not a certificate").is_err());
    }
}
