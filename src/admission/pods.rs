//! Pod rules, pure: host namespaces, host paths and ports, privileged
//! containers and capabilities beyond the tenant's profile are refused
//! whatever the Pod Security level; pull policy `Always`; the audit sidecar
//! intact under `Required`; data residency kept.

use k8s_openapi::api::core::v1::{ContainerPort, EnvVar, Pod, PodSpec, SecurityContext, Volume};

use super::decision::{Violation, rule};
use super::facts::TenantFacts;
use super::mutate::{self, KEYS_VOLUME, PULL_ALWAYS, SIDECAR_NAME, SINK_VOLUME, SPOOL_VOLUME, SidecarConfig};
use crate::api::{AUDIT_OPT_OUT_ANNOTATION, AuditMode};
use crate::plan::secrets::KEYS_SECRET;

/// One container of any list, with where it sits in the pod.
#[derive(Debug)]
pub struct ContainerRef<'a> {
    /// Its path, e.g. `spec.initContainers[1]`.
    pub field: String,
    /// Container name.
    pub name: &'a str,
    /// Image reference.
    pub image: Option<&'a str>,
    /// Pull policy.
    pub pull_policy: Option<&'a str>,
    /// Security context.
    pub security: Option<&'a SecurityContext>,
    /// Ports.
    pub ports: &'a [ContainerPort],
}

/// Every container, init container and ephemeral container of a pod spec.
pub fn containers(spec: &PodSpec) -> Vec<ContainerRef<'_>> {
    let mut out = Vec::new();
    for (list, items) in [("containers", Some(&spec.containers)), ("initContainers", spec.init_containers.as_ref())] {
        for (i, c) in items.into_iter().flatten().enumerate() {
            out.push(ContainerRef {
                field: format!("spec.{list}[{i}]"),
                name: &c.name,
                image: c.image.as_deref(),
                pull_policy: c.image_pull_policy.as_deref(),
                security: c.security_context.as_ref(),
                ports: c.ports.as_deref().unwrap_or_default(),
            });
        }
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        out.push(ContainerRef {
            field: format!("spec.ephemeralContainers[{i}]"),
            name: &c.name,
            image: c.image.as_deref(),
            pull_policy: c.image_pull_policy.as_deref(),
            security: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        });
    }
    out
}

/// The containers a request adds or changes: all on create; on update, those whose image or
/// security settings differ from the stored pod (ephemeral containers and image updates).
pub fn changed<'a>(spec: &'a PodSpec, old: Option<&PodSpec>) -> Vec<ContainerRef<'a>> {
    let Some(old) = old else {
        return containers(spec);
    };
    let before = containers(old);
    containers(spec)
        .into_iter()
        .filter(|c| {
            !before.iter().any(|b| {
                b.field == c.field
                    && b.name == c.name
                    && b.image == c.image
                    && b.pull_policy == c.pull_policy
                    && b.security == c.security
                    && b.ports == c.ports
            })
        })
        .collect()
}

fn normalise_capability(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").map(str::to_string).unwrap_or(upper)
}

/// Container-level rules: privileged, capabilities, host ports, pull policy.
pub fn container_rules(c: &ContainerRef, facts: &TenantFacts) -> Vec<Violation> {
    let mut out = Vec::new();
    let tenant = &facts.name;
    if let Some(sc) = c.security {
        if sc.privileged == Some(true) {
            out.push(Violation::new(
                rule::PRIVILEGED,
                format!("{}.securityContext.privileged", c.field),
                format!("containers of tenant {tenant} may not run privileged; remove privileged: true"),
            ));
        }
        for (j, cap) in sc.capabilities.iter().flat_map(|c| c.add.iter().flatten()).enumerate() {
            let name = normalise_capability(cap);
            if !facts.effective.allowed_capabilities.contains(&name.as_str()) {
                let allowed = if facts.effective.allowed_capabilities.is_empty() {
                    "none".to_string()
                } else {
                    facts.effective.allowed_capabilities.join(", ")
                };
                out.push(Violation::new(
                    rule::CAPABILITIES,
                    format!("{}.securityContext.capabilities.add[{j}]", c.field),
                    format!("capability {name} is beyond what tenant {tenant} may add ({allowed}); remove it"),
                ));
            }
        }
    }
    for (j, port) in c.ports.iter().enumerate() {
        if port.host_port.is_some_and(|p| p != 0) {
            out.push(Violation::new(
                rule::HOST_PORT,
                format!("{}.ports[{j}].hostPort", c.field),
                format!("containers of tenant {tenant} may not bind ports on the node; remove hostPort and expose a Service instead"),
            ));
        }
    }
    if c.pull_policy.is_some_and(|p| p != PULL_ALWAYS) {
        out.push(Violation::new(
            rule::PULL_POLICY,
            format!("{}.imagePullPolicy", c.field),
            "images must be pulled on every start so a node's cached private image never serves another tenant; use imagePullPolicy: Always",
        ));
    }
    out
}

/// Pod-level host access: host network, PID and IPC namespaces, hostPath volumes.
pub fn host_rules(spec: &PodSpec, facts: &TenantFacts) -> Vec<Violation> {
    let tenant = &facts.name;
    let mut out = Vec::new();
    for (on, rule_id, field, what, fix) in [
        (spec.host_network, rule::HOST_NETWORK, "spec.hostNetwork", "the node's network", "hostNetwork"),
        (spec.host_pid, rule::HOST_PID, "spec.hostPID", "the node's process namespace", "hostPID"),
        (spec.host_ipc, rule::HOST_IPC, "spec.hostIPC", "the node's IPC namespace", "hostIPC"),
    ] {
        if on == Some(true) {
            out.push(Violation::new(
                rule_id,
                field,
                format!("pods of tenant {tenant} may not share {what}; remove {fix}: true"),
            ));
        }
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if v.host_path.is_some() {
            out.push(Violation::new(
                rule::HOST_PATH,
                format!("spec.volumes[{i}].hostPath"),
                format!("pods of tenant {tenant} may not mount directories of the node; use an emptyDir or a PersistentVolumeClaim for volume {}", v.name),
            ));
        }
    }
    out
}

fn env_matches(actual: &[EnvVar], expected: &EnvVar) -> bool {
    actual.iter().any(|a| {
        a.name == expected.name
            && a.value == expected.value
            && a.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| &f.field_path)
                == expected.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| &f.field_path)
    })
}

/// What is wrong with the pod's audit sidecar, if anything; `None` when it is intact.
pub fn sidecar_problem(spec: &PodSpec, facts: &TenantFacts, cfg: &SidecarConfig) -> Option<(String, String)> {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let Some((i, side)) = inits.iter().enumerate().find(|(_, c)| c.name == SIDECAR_NAME) else {
        return Some(("spec.initContainers".into(), "the pod has no audit sidecar".into()));
    };
    let field = format!("spec.initContainers[{i}]");
    let app = spec.containers.first().map(|c| c.name.as_str()).unwrap_or_default();
    let expected = mutate::sidecar_container(facts, app, cfg);
    if side.restart_policy.as_deref() != Some("Always") {
        return Some((
            format!("{field}.restartPolicy"),
            "the audit sidecar must be a native sidecar (restartPolicy: Always)".into(),
        ));
    }
    if side.image != expected.image {
        return Some((
            format!("{field}.image"),
            format!("the audit sidecar image is {}, expected {}", side.image.as_deref().unwrap_or("unset"), cfg.image),
        ));
    }
    if side.command != expected.command {
        return Some((format!("{field}.command"), "the audit sidecar's program was changed".into()));
    }
    if side.args != expected.args {
        return Some((format!("{field}.args"), "the audit sidecar's command line was changed".into()));
    }
    let env = side.env.as_deref().unwrap_or_default();
    if let Some(missing) = expected.env.iter().flatten().find(|e| !env_matches(env, e)) {
        return Some((format!("{field}.env"), format!("the audit sidecar's {} was changed or removed", missing.name)));
    }
    let mounts = side.volume_mounts.as_deref().unwrap_or_default();
    for m in expected.volume_mounts.iter().flatten() {
        let ok = mounts.iter().any(|a| {
            a.name == m.name
                && a.mount_path == m.mount_path
                && a.read_only.unwrap_or(false) == m.read_only.unwrap_or(false)
        });
        if !ok {
            return Some((
                format!("{field}.volumeMounts"),
                format!("the audit sidecar's mount of volume {} was changed", m.name),
            ));
        }
    }
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let keys_ok = volumes.iter().any(|v| {
        v.name == KEYS_VOLUME && v.secret.as_ref().is_some_and(|s| s.secret_name.as_deref() == Some(KEYS_SECRET))
    });
    if !keys_ok {
        return Some((
            "spec.volumes".into(),
            format!("volume {KEYS_VOLUME} must be the tenant's {KEYS_SECRET} Secret"),
        ));
    }
    if !volumes.iter().any(|v| v.name == SPOOL_VOLUME && v.empty_dir.is_some()) {
        return Some(("spec.volumes".into(), format!("volume {SPOOL_VOLUME} must be an emptyDir")));
    }
    // Only the projected sources matter: the apiserver fills in defaults around them.
    let sources = |v: &Volume| v.projected.as_ref().map(|p| p.sources.clone());
    if let Some(sink) = mutate::sink_volume(&facts.spec().audit)
        && !volumes.iter().any(|v| v.name == sink.name && sources(v) == sources(&sink))
    {
        return Some((
            "spec.volumes".into(),
            format!("volume {SINK_VOLUME} must project exactly the tenant's audit.sinkCA and audit.sinkHeaders"),
        ));
    }
    None
}

/// Audit rules on create: under `Required` no opt-out annotation and an intact sidecar.
pub fn audit_rules(pod: &Pod, spec: &PodSpec, facts: &TenantFacts, cfg: &SidecarConfig) -> Vec<Violation> {
    if facts.effective.audit_mode != AuditMode::Required {
        return Vec::new();
    }
    let mut out = Vec::new();
    if mutate::opted_out(pod) {
        out.push(Violation::new(
            rule::AUDIT_OPT_OUT,
            format!("metadata.annotations[{AUDIT_OPT_OUT_ANNOTATION}]"),
            format!("tenant {} requires the audit sidecar (audit.mode Required), so pods cannot opt out; remove the annotation", facts.name),
        ));
    }
    if let Some((field, problem)) = sidecar_problem(spec, facts, cfg) {
        out.push(Violation::new(
            rule::AUDIT_SIDECAR,
            field,
            format!("{problem}; tenant {} requires an intact audit sidecar: remove any {SIDECAR_NAME} container and its volumes from the manifest and let bulkhead inject it", facts.name),
        ));
    }
    out
}

/// Data residency on create: every required node selector term keeps the pod inside the tenant's regions.
pub fn residency_rules(spec: &PodSpec, facts: &TenantFacts) -> Vec<Violation> {
    let Some(regions) = facts.regions() else {
        return Vec::new();
    };
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    if !terms.is_empty() && terms.iter().all(|t| mutate::term_within_regions(t, regions)) {
        return Vec::new();
    }
    vec![Violation::new(
        rule::DATA_RESIDENCY,
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        format!(
            "tenant {}'s data must stay in {}: every required node selector term must include {} In [{}]",
            facts.name,
            regions.join(", "),
            mutate::REGION_LABEL,
            regions.join(", ")
        ),
    )]
}

/// Every pod rule. `old` is the stored pod on update: then only what the update changes is judged
/// (host settings and the sidecar are immutable after creation).
pub fn validate(pod: &Pod, old: Option<&Pod>, facts: &TenantFacts, cfg: &SidecarConfig) -> Vec<Violation> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let old_spec = old.and_then(|o| o.spec.as_ref());
    let mut out = Vec::new();
    if old.is_none() {
        out.extend(host_rules(spec, facts));
    }
    for c in changed(spec, old_spec) {
        // The injected sidecar is bulkhead's own: judged by the audit rules, not as a tenant container.
        if c.name == SIDECAR_NAME && c.image == Some(cfg.image.as_str()) && c.field.starts_with("spec.initContainers") {
            continue;
        }
        out.extend(container_rules(&c, facts));
    }
    if old.is_none() {
        out.extend(audit_rules(pod, spec, facts, cfg));
        out.extend(residency_rules(spec, facts));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::facts::testing::{acme, siem_tenant, tenant};
    use crate::plan::Config;
    use serde_json::{Value, json};

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "app:1", "imagePullPolicy": "Always"}]}})
    }

    fn rules_of(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.rule).collect()
    }

    fn disabled_audit() -> crate::api::Tenant {
        tenant("acme", "namespaces: [{name: a}]\naudit: {mode: Disabled}")
    }

    #[test]
    fn a_plain_pod_passes() {
        let t = disabled_audit();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        assert!(validate(&pod(base()), None, &f, &SidecarConfig::default()).is_empty());
    }

    #[test]
    fn host_access_is_refused_with_rule_and_field() {
        let t = disabled_audit();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let mut v = base();
        v["spec"]["hostNetwork"] = json!(true);
        v["spec"]["hostPID"] = json!(true);
        v["spec"]["hostIPC"] = json!(true);
        v["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
        v["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
        let out = validate(&pod(v), None, &f, &SidecarConfig::default());
        assert_eq!(
            rules_of(&out),
            vec![rule::HOST_NETWORK, rule::HOST_PID, rule::HOST_IPC, rule::HOST_PATH, rule::HOST_PORT]
        );
        assert_eq!(out[0].field, "spec.hostNetwork");
        assert_eq!(out[3].field, "spec.volumes[0].hostPath");
        assert_eq!(out[4].field, "spec.containers[0].ports[0].hostPort");
        assert!(out[0].message.contains("tenant acme"), "{}", out[0].message);
    }

    #[test]
    fn privileged_and_capabilities_depend_on_the_profile_not_on_psa() {
        let config = Config::default();
        let mut v = base();
        v["spec"]["initContainers"] = json!([{"name": "i", "image": "x", "imagePullPolicy": "Always",
            "securityContext": {"privileged": true, "capabilities": {"add": ["cap_net_bind_service", "SYS_ADMIN"]}}}]);
        let p = pod(v);
        let privileged = tenant("acme", "namespaces: [{name: a}]\naudit: {mode: Disabled}\npodSecurity: privileged");
        let f = TenantFacts::new(&privileged, &config).unwrap();
        let out = validate(&p, None, &f, &SidecarConfig::default());
        assert_eq!(rules_of(&out), vec![rule::PRIVILEGED, rule::CAPABILITIES]);
        assert_eq!(out[1].field, "spec.initContainers[0].securityContext.capabilities.add[1]");
        assert!(out[1].message.contains("SYS_ADMIN"));
        // Restricted allows NET_BIND_SERVICE only; PCI-DSS nothing.
        let pci = tenant("acme", "namespaces: [{name: a}]\ncompliance: [PCI-DSS]");
        let f = TenantFacts::new(&pci, &config).unwrap();
        let caps: Vec<_> = validate(&p, None, &f, &SidecarConfig::default())
            .into_iter()
            .filter(|v| v.rule == rule::CAPABILITIES)
            .collect();
        assert_eq!(caps.len(), 2, "{caps:?}");
        assert!(caps[0].message.contains("(none)"));
    }

    #[test]
    fn pull_policy_must_be_always() {
        let t = disabled_audit();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let mut v = base();
        v["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        let out = validate(&pod(v), None, &f, &SidecarConfig::default());
        assert_eq!(rules_of(&out), vec![rule::PULL_POLICY]);
    }

    #[test]
    fn updates_judge_only_what_changes() {
        let t = disabled_audit();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let mut old = base();
        old["spec"]["hostNetwork"] = json!(true); // admitted before the webhook existed
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"x": "y"});
        assert!(validate(&pod(new.clone()), Some(&pod(old.clone())), &f, &SidecarConfig::default()).is_empty());
        new["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox", "imagePullPolicy": "Always",
            "securityContext": {"privileged": true}}]);
        let out = validate(&pod(new), Some(&pod(old)), &f, &SidecarConfig::default());
        assert_eq!(rules_of(&out), vec![rule::PRIVILEGED]);
        assert_eq!(out[0].field, "spec.ephemeralContainers[0].securityContext.privileged");
    }

    #[test]
    fn required_audit_wants_an_intact_sidecar_and_no_opt_out() {
        let config = Config::default();
        let cfg = SidecarConfig::default();
        let t = tenant("acme", "namespaces: [{name: a}]\naudit: {mode: Required}");
        let f = TenantFacts::new(&t, &config).unwrap();
        // Without sidecar.
        let out = validate(&pod(base()), None, &f, &cfg);
        assert_eq!(rules_of(&out), vec![rule::AUDIT_SIDECAR]);
        // With what the mutating webhook injects: fine.
        let raw = base();
        let p = pod(raw.clone());
        let mut injected = raw.clone();
        json_patch::patch(&mut injected, &mutate::mutate_pod(&p, &f, &cfg)).unwrap();
        assert!(validate(&pod(injected.clone()), None, &f, &cfg).is_empty());
        // Tampered image, program, args (the sink), mounts, volume source, restart policy.
        assert_eq!(injected.pointer("/spec/initContainers/0/args/4"), Some(&json!("--sink")));
        for (path, value, field) in [
            ("/spec/initContainers/0/image", json!("evil/fake-audit:1"), "spec.initContainers[0].image"),
            ("/spec/initContainers/0/command/0", json!("/bin/sh"), "spec.initContainers[0].command"),
            ("/spec/initContainers/0/args/5", json!("file:/dev/null"), "spec.initContainers[0].args"),
            ("/spec/initContainers/0/volumeMounts/0/readOnly", json!(false), "spec.initContainers[0].volumeMounts"),
            ("/spec/volumes/0/secret/secretName", json!("other"), "spec.volumes"),
            ("/spec/initContainers/0/restartPolicy", json!("OnFailure"), "spec.initContainers[0].restartPolicy"),
            ("/spec/initContainers/0/env/0/value", json!("globex"), "spec.initContainers[0].env"),
        ] {
            let mut bad = injected.clone();
            *bad.pointer_mut(path).unwrap() = value;
            let out = validate(&pod(bad), None, &f, &cfg);
            assert_eq!(rules_of(&out), vec![rule::AUDIT_SIDECAR], "{path}");
            assert_eq!(out[0].field, field, "{path}");
        }
        // The opt-out annotation is refused, sidecar or not.
        let mut opted = injected;
        opted["metadata"]["annotations"] = json!({AUDIT_OPT_OUT_ANNOTATION: "disabled"});
        assert_eq!(rules_of(&validate(&pod(opted), None, &f, &cfg)), vec![rule::AUDIT_OPT_OUT]);
    }

    #[test]
    fn required_audit_wants_the_tenants_own_sink_volume() {
        let config = Config::default();
        let cfg = SidecarConfig::default();
        let mut t = siem_tenant();
        t.spec.audit.mode = AuditMode::Required;
        let f = TenantFacts::new(&t, &config).unwrap();
        let raw = base();
        let mut injected = raw.clone();
        json_patch::patch(&mut injected, &mutate::mutate_pod(&pod(raw), &f, &cfg)).unwrap();
        assert!(validate(&pod(injected.clone()), None, &f, &cfg).is_empty());
        let sink =
            injected["spec"]["volumes"].as_array().unwrap().iter().position(|v| v["name"] == SINK_VOLUME).unwrap();
        // Another Secret for the token, or the volume gone while the args still point into it.
        let mut swapped = injected.clone();
        swapped["spec"]["volumes"][sink]["projected"]["sources"][1]["secret"]["name"] = json!("my-own-token");
        let mut removed = injected.clone();
        removed["spec"]["volumes"].as_array_mut().unwrap().remove(sink);
        for bad in [swapped, removed] {
            let out = validate(&pod(bad), None, &f, &cfg);
            assert_eq!(rules_of(&out), vec![rule::AUDIT_SIDECAR]);
            assert!(out[0].message.contains(SINK_VOLUME), "{}", out[0].message);
        }
    }

    #[test]
    fn optional_audit_requires_nothing() {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        assert!(validate(&pod(base()), None, &f, &SidecarConfig::default()).is_empty());
    }

    #[test]
    fn residency_must_hold_in_every_term() {
        let config = Config::default();
        let t =
            tenant("acme", "namespaces: [{name: a}]\naudit: {mode: Disabled}\ndataResidency: {regions: [eu-west-1]}");
        let f = TenantFacts::new(&t, &config).unwrap();
        let cfg = SidecarConfig::default();
        assert_eq!(rules_of(&validate(&pod(base()), None, &f, &cfg)), vec![rule::DATA_RESIDENCY]);
        let mut v = base();
        v["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": mutate::REGION_LABEL, "operator": "In", "values": ["eu-west-1"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]}]}}});
        let out = validate(&pod(v.clone()), None, &f, &cfg);
        assert_eq!(rules_of(&out), vec![rule::DATA_RESIDENCY]);
        assert!(out[0].message.contains("eu-west-1"));
        v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            .as_array_mut()
            .unwrap()
            .pop();
        assert!(validate(&pod(v), None, &f, &cfg).is_empty());
    }
}
