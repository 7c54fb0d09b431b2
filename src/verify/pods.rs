//! Controls that live in the tenant's running pods: the audit sidecar
//! (`BH-AUDIT-001`) and data residency (`BH-RES-001`). Each pod is judged by
//! the admission webhook's own rules ([`admission::pods::audit_rules`],
//! [`admission::pods::sidecar_problem`], [`admission::pods::residency_rules`])
//! on the tenant's effective settings ([`admission::facts::TenantFacts`]), so
//! a pod that slipped past admission (webhook down or not covering the
//! namespace, created before the rule, or made by someone it does not judge)
//! shows here, and verification can never disagree with what admission enforces.

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::ResourceExt;

use crate::admission::facts::TenantFacts as Rules;
use crate::admission::mutate::{self, SIDECAR_NAME, SidecarConfig};
use crate::admission::pods::{audit_rules, residency_rules, sidecar_problem};
use crate::api::{AUDIT_OPT_OUT_ANNOTATION, AUDIT_OPT_OUT_VALUE, AuditMode};

use super::checks::{AUDIT_SIDECAR, DATA_RESIDENCY};
use super::view::Unreadable;
use super::{CheckResult, Ctx, Evidence};

/// Pods named in a failing check's reason; the evidence names them all.
const NAMED_IN_REASON: usize = 5;

fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The sidecar as the operator builds it; with `image` unknown, the image the pod's sidecar carries is taken
/// as expected, so every other property is still compared.
fn expected_sidecar(image: Option<&str>, spec: &PodSpec) -> SidecarConfig {
    let found = || spec.init_containers.iter().flatten().find(|c| c.name == SIDECAR_NAME).and_then(|c| c.image.clone());
    let mut cfg = SidecarConfig::default();
    if let Some(image) = image.map(str::to_string).or_else(found) {
        cfg.image = image;
    }
    cfg
}

fn failing_reason(what: &str, evidence: &[Evidence]) -> String {
    let bad: Vec<&str> =
        evidence.iter().filter(|e| !e.ok).filter_map(|e| e.request.strip_prefix("pod ")?.split(':').next()).collect();
    let more = bad.len().saturating_sub(NAMED_IN_REASON);
    let mut names = bad.iter().take(NAMED_IN_REASON).copied().collect::<Vec<_>>().join(", ");
    if more > 0 {
        names.push_str(&format!(" and {more} more"));
    }
    format!("{} pod(s) {what}: {names}", bad.len())
}

/// `BH-AUDIT-001` over `pods`, with the tenant's effective audit mode.
pub fn audit_sidecar(rules: &Rules, pods: &[Pod], image: Option<&str>) -> CheckResult {
    let mode = rules.effective.audit_mode;
    if mode == AuditMode::Disabled {
        return CheckResult::not_applicable(
            AUDIT_SIDECAR,
            "audit.mode is Disabled: no pod of the tenant gets the sidecar",
        );
    }
    let empty = PodSpec::default();
    let evidence: Vec<Evidence> = pods
        .iter()
        .map(|pod| {
            let spec = pod.spec.as_ref().unwrap_or(&empty);
            let cfg = expected_sidecar(image, spec);
            let request = format!("pod {}: audit sidecar (audit.mode {})", pod_name(pod), mode.as_str());
            let problem = match mode {
                AuditMode::Required => audit_rules(pod, spec, rules, &cfg)
                    .into_iter()
                    .next()
                    .map(|v| format!("{}: {}", v.field, v.message)),
                _ if mutate::opted_out(pod) => None,
                _ => sidecar_problem(spec, rules, &cfg).map(|(field, problem)| format!("{field}: {problem}")),
            };
            match problem {
                Some(p) => Evidence::plain(request, p, false),
                None if mode == AuditMode::Optional && mutate::opted_out(pod) => Evidence::plain(
                    request,
                    format!("opted out ({AUDIT_OPT_OUT_ANNOTATION}: {AUDIT_OPT_OUT_VALUE}), allowed under Optional"),
                    true,
                ),
                None if image.is_none() => {
                    Evidence::plain(request, "intact (image not compared: pass --sidecar-image)", true)
                }
                None => Evidence::plain(request, "intact", true),
            }
        })
        .collect();
    let passing = if pods.is_empty() {
        "no pod runs in the tenant's namespaces".to_string()
    } else {
        format!("all {} pod(s) carry an intact audit sidecar or opted out where audit.mode allows it", pods.len())
    };
    let failing = failing_reason(&format!("lack an intact audit sidecar (audit.mode {})", mode.as_str()), &evidence);
    CheckResult::judge(AUDIT_SIDECAR, evidence, passing, |_| failing.clone())
}

/// `BH-RES-001` over `pods`, with the tenant's regions.
pub fn data_residency(rules: &Rules, pods: &[Pod]) -> CheckResult {
    let Some(regions) = rules.regions() else {
        return CheckResult::not_applicable(
            DATA_RESIDENCY,
            "the Tenant sets no spec.dataResidency: its pods may run in any region",
        );
    };
    let within = format!("{} In [{}]", mutate::REGION_LABEL, regions.join(", "));
    let empty = PodSpec::default();
    let evidence: Vec<Evidence> = pods
        .iter()
        .map(|pod| {
            let request = format!("pod {}: required node affinity within {within}", pod_name(pod));
            match residency_rules(pod.spec.as_ref().unwrap_or(&empty), rules).into_iter().next() {
                Some(v) => Evidence::plain(request, format!("{}: {}", v.field, v.message), false),
                None => Evidence::plain(request, "every required node selector term keeps it there", true),
            }
        })
        .collect();
    let passing = if pods.is_empty() {
        "no pod runs in the tenant's namespaces".to_string()
    } else {
        format!("all {} pod(s) are pinned to the tenant's regions ({})", pods.len(), regions.join(", "))
    };
    let failing = failing_reason(&format!("may be scheduled outside {}", regions.join(", ")), &evidence);
    CheckResult::judge(DATA_RESIDENCY, evidence, passing, |_| failing.clone())
}

fn unreadable(id: &str, e: &Unreadable, lenient: bool) -> CheckResult {
    if e.forbidden && lenient {
        return CheckResult::not_applicable(
            id,
            format!(
                "{e}: the operator's RBAC does not grant listing pods; `bulkhead verify` with an auditor's credentials checks this"
            ),
        );
    }
    CheckResult::error(id, e.to_string())
}

/// Both pod checks of one tenant.
pub fn run(ctx: &Ctx<'_>) -> Vec<CheckResult> {
    let rules = match Rules::new(&ctx.facts.tenant, &ctx.settings.plan) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("Tenant {} cannot be planned, so its pods cannot be judged: {e}", ctx.facts.name);
            return vec![CheckResult::error(AUDIT_SIDECAR, why.clone()), CheckResult::error(DATA_RESIDENCY, why)];
        }
    };
    let pods = ctx.facts.pods.as_deref();
    // Applicability first: a tenant without the feature needs no pod list (and no right to read one).
    let audit = match pods {
        _ if rules.effective.audit_mode == AuditMode::Disabled => audit_sidecar(&rules, &[], None),
        Ok(pods) => audit_sidecar(&rules, pods, ctx.settings.sidecar_image.as_deref()),
        Err(e) => unreadable(AUDIT_SIDECAR, e, ctx.settings.lenient),
    };
    let residency = match pods {
        _ if rules.regions().is_none() => data_residency(&rules, &[]),
        Ok(pods) => data_residency(&rules, pods),
        Err(e) => unreadable(DATA_RESIDENCY, e, ctx.settings.lenient),
    };
    vec![audit, residency]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::facts::testing::tenant;
    use crate::plan::Config;
    use crate::verify::Status;
    use serde_json::{Value, json};

    const IMAGE: &str = "registry.example/bulkhead:test";

    fn raw(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "acme-a"},
               "spec": {"containers": [{"name": "app", "image": "registry.acme.example/app:1"}]}})
    }

    /// The pod as the mutating webhook returns it: its own patch applied.
    fn admitted(rules: &Rules, name: &str) -> Pod {
        let mut doc = raw(name);
        let pod: Pod = serde_json::from_value(doc.clone()).unwrap();
        let cfg = SidecarConfig { image: IMAGE.into(), ..Default::default() };
        json_patch::patch(&mut doc, &mutate::mutate_pod(&pod, rules, &cfg)).expect("the webhook's patch applies");
        serde_json::from_value(doc).unwrap()
    }

    fn plain(name: &str) -> Pod {
        serde_json::from_value(raw(name)).unwrap()
    }

    fn bad(r: &CheckResult) -> Vec<String> {
        r.evidence.iter().filter(|e| !e.ok).map(|e| e.request.clone()).collect()
    }

    #[test]
    fn required_fails_each_pod_without_an_intact_sidecar_and_names_it() {
        let t = tenant("acme", "namespaces: [{name: a}]\ncompliance: [PCI-DSS]");
        let config = Config::default();
        let rules = Rules::new(&t, &config).unwrap();
        assert_eq!(rules.effective.audit_mode, AuditMode::Required, "PCI-DSS makes it Required");
        let good = admitted(&rules, "good");
        let mut forged = admitted(&rules, "forged");
        forged.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].args = Some(vec!["sleep".into()]);
        let mut opted = admitted(&rules, "opted");
        opted.metadata.annotations = Some([(AUDIT_OPT_OUT_ANNOTATION.into(), AUDIT_OPT_OUT_VALUE.into())].into());
        let pods = [good.clone(), plain("bare"), forged, opted];
        let r = audit_sidecar(&rules, &pods, Some(IMAGE));
        assert_eq!(r.status, Status::Fail);
        let bad = bad(&r);
        assert_eq!(bad.len(), 3, "{bad:?}");
        for name in ["bare", "forged", "opted"] {
            assert!(bad.iter().any(|b| b.contains(&format!("acme-a/{name}:"))), "{name} in {bad:?}");
        }
        assert!(r.reason.starts_with("3 pod(s)") && r.reason.contains("acme-a/bare"), "{}", r.reason);
        let bare = r.evidence.iter().find(|e| e.request.contains("/bare:")).unwrap();
        assert!(bare.response.contains("no audit sidecar"), "{}", bare.response);
        // Another image than the operator's is not its sidecar; unknown, the image alone is not compared.
        assert_eq!(audit_sidecar(&rules, std::slice::from_ref(&good), Some("evil/image:1")).status, Status::Fail);
        assert_eq!(audit_sidecar(&rules, std::slice::from_ref(&good), None).status, Status::Pass);
        assert_eq!(audit_sidecar(&rules, &[good], Some(IMAGE)).status, Status::Pass);
        assert_eq!(audit_sidecar(&rules, &[], Some(IMAGE)).status, Status::Pass);
    }

    #[test]
    fn optional_accepts_an_opt_out_and_disabled_is_not_applicable() {
        let t = tenant("acme", "namespaces: [{name: a}]");
        let config = Config::default();
        let rules = Rules::new(&t, &config).unwrap();
        assert_eq!(rules.effective.audit_mode, AuditMode::Optional);
        let mut opted = plain("opted");
        opted.metadata.annotations = Some([(AUDIT_OPT_OUT_ANNOTATION.into(), AUDIT_OPT_OUT_VALUE.into())].into());
        let r = audit_sidecar(&rules, &[admitted(&rules, "good"), opted.clone()], Some(IMAGE));
        assert_eq!(r.status, Status::Pass, "{:?}", r.evidence);
        let r = audit_sidecar(&rules, &[opted, plain("bare")], Some(IMAGE));
        assert_eq!(r.status, Status::Fail);
        assert_eq!(bad(&r), vec!["pod acme-a/bare: audit sidecar (audit.mode Optional)".to_string()]);

        let t = tenant("acme", "namespaces: [{name: a}]\naudit: {mode: Disabled}");
        let rules = Rules::new(&t, &config).unwrap();
        assert_eq!(audit_sidecar(&rules, &[plain("bare")], Some(IMAGE)).status, Status::NotApplicable);
    }

    #[test]
    fn residency_fails_pods_that_can_leave_the_regions() {
        let t =
            tenant("acme", "namespaces: [{name: a}]\naudit: {mode: Disabled}\ndataResidency: {regions: [eu-west-1]}");
        let config = Config::default();
        let rules = Rules::new(&t, &config).unwrap();
        let good = admitted(&rules, "good");
        let mut elsewhere = good.clone();
        elsewhere.metadata.name = Some("elsewhere".into());
        let affinity = elsewhere.spec.as_mut().unwrap().affinity.as_mut().unwrap();
        let terms = &mut affinity
            .node_affinity
            .as_mut()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_mut()
            .unwrap()
            .node_selector_terms;
        terms[0].match_expressions.as_mut().unwrap()[0].values = Some(vec!["us-east-1".into()]);
        let r = data_residency(&rules, &[good.clone(), elsewhere, plain("bare")]);
        assert_eq!(r.status, Status::Fail);
        let bad = bad(&r);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("acme-a/elsewhere:") && bad[1].contains("acme-a/bare:"), "{bad:?}");
        assert!(r.reason.contains("may be scheduled outside eu-west-1"), "{}", r.reason);
        assert_eq!(data_residency(&rules, &[good]).status, Status::Pass);

        let t = tenant("acme", "namespaces: [{name: a}]");
        let rules = Rules::new(&t, &config).unwrap();
        assert_eq!(data_residency(&rules, &[plain("bare")]).status, Status::NotApplicable);
    }

    #[test]
    fn the_reason_names_a_few_pods_and_counts_the_rest() {
        let evidence: Vec<Evidence> =
            (0..8).map(|i| Evidence::plain(format!("pod ns/p{i}: audit sidecar"), "missing", i % 2 == 0)).collect();
        assert_eq!(failing_reason("lack it", &evidence), "4 pod(s) lack it: ns/p1, ns/p3, ns/p5, ns/p7");
        let evidence: Vec<Evidence> =
            (0..7).map(|i| Evidence::plain(format!("pod ns/p{i}: x"), "missing", false)).collect();
        assert!(failing_reason("lack it", &evidence).ends_with("ns/p4 and 2 more"));
    }
}
