//! The mutating webhook, pure: which JSON patch turns a tenant's pod into
//! one that carries the audit sidecar (a native sidecar: an init container
//! with `restartPolicy: Always`), a required node affinity for the tenant's
//! regions (merged with the pod's own), and `imagePullPolicy: Always` on
//! every container. Idempotent: a pod that already has all that gets an
//! empty patch.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, Pod, PodSpec, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretProjection, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

use super::facts::TenantFacts;
use crate::api::{AUDIT_OPT_OUT_ANNOTATION, AUDIT_OPT_OUT_VALUE, AuditMode, AuditSpec};
use crate::plan::secrets::KEYS_SECRET;

/// Name of the injected sidecar container.
pub const SIDECAR_NAME: &str = "bulkhead-audit";
/// Volume holding the tenant's `bulkhead-keys` Secret (read-only).
pub const KEYS_VOLUME: &str = "bulkhead-audit-keys";
/// Volume holding the sidecar's spool (an emptyDir).
pub const SPOOL_VOLUME: &str = "bulkhead-audit-spool";
/// Where the sidecar reads the keys.
pub const KEYS_DIR: &str = "/var/run/bulkhead/keys";
/// Where the sidecar keeps its spool and chain state.
pub const SPOOL_DIR: &str = "/var/run/bulkhead/audit-spool";
/// Volume projecting the sink's CA bundle and header values from the tenant's own ConfigMap/Secrets (read-only).
pub const SINK_VOLUME: &str = "bulkhead-audit-sink";
/// Where the sidecar reads the sink's CA bundle and header values.
pub const SINK_DIR: &str = "/var/run/bulkhead/audit-sink";
/// File of [`SINK_DIR`] holding the CA bundle.
pub const SINK_CA_FILE: &str = "ca.pem";
/// The sidecar's program in the operator's image (`src/bin/bulkhead-audit-sidecar.rs`).
pub const SIDECAR_COMMAND: &str = "/bulkhead-audit-sidecar";
/// Loopback address the application posts its records to.
pub const SIDECAR_LISTEN: &str = "127.0.0.1:8089";
/// The node label data residency is enforced on.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The only pull policy admitted: a private image cached on a node must not serve another tenant.
pub const PULL_ALWAYS: &str = "Always";

/// How the sidecar is built; the operator's flags fill it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    /// The sidecar image (the operator's own image, which holds [`SIDECAR_COMMAND`]).
    pub image: String,
    /// CPU request.
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// CPU limit.
    pub cpu_limit: String,
    /// Memory limit.
    pub memory_limit: String,
    /// `--spool-max-bytes` of the sidecar.
    pub spool_max_bytes: String,
    /// `sizeLimit` of the spool emptyDir (spool bound plus one segment and the chain state).
    pub spool_size_limit: String,
    /// Numeric user the sidecar runs as (non-root).
    pub run_as_user: i64,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self {
            image: concat!("ghcr.io/bulkhead-dev/bulkhead:", env!("CARGO_PKG_VERSION")).into(),
            cpu_request: "10m".into(),
            memory_request: "32Mi".into(),
            cpu_limit: "200m".into(),
            memory_limit: "128Mi".into(),
            spool_max_bytes: "64Mi".into(),
            spool_size_limit: "128Mi".into(),
            run_as_user: 65532,
        }
    }
}

/// File of [`SINK_DIR`] holding the value of header `name`; names are case-insensitive, so are the files.
pub fn sink_header_file(name: &str) -> String {
    format!("header-{}", name.to_ascii_lowercase())
}

/// `--sink-ca` and `--sink-header-file` for the tenant's sink: paths into [`SINK_DIR`], never values.
fn sink_args(audit: &AuditSpec) -> Vec<String> {
    let mut args = Vec::new();
    if audit.sink_ca.is_some() {
        args.extend(["--sink-ca".to_string(), format!("{SINK_DIR}/{SINK_CA_FILE}")]);
    }
    for h in &audit.sink_headers {
        args.extend(["--sink-header-file".to_string(), format!("{}={SINK_DIR}/{}", h.name, sink_header_file(&h.name))]);
    }
    args
}

/// The volume projecting the sink's CA bundle and header values, when the tenant configures any. Every
/// source is `optional: false`: a missing object keeps the pod from starting, with an event saying which,
/// rather than letting the sidecar ship without its CA or token.
pub fn sink_volume(audit: &AuditSpec) -> Option<Volume> {
    let item = |key: &str, path: String| Some(vec![KeyToPath { key: key.into(), path, mode: None }]);
    let mut sources = Vec::new();
    if let Some(ca) = &audit.sink_ca {
        let items = item(&ca.key, SINK_CA_FILE.into());
        sources.push(match &ca.config_map {
            Some(name) => VolumeProjection {
                config_map: Some(ConfigMapProjection { name: name.clone(), items, optional: Some(false) }),
                ..Default::default()
            },
            None => VolumeProjection {
                secret: Some(SecretProjection {
                    name: ca.secret.clone().unwrap_or_default(),
                    items,
                    optional: Some(false),
                }),
                ..Default::default()
            },
        });
    }
    for h in &audit.sink_headers {
        sources.push(VolumeProjection {
            secret: Some(SecretProjection {
                name: h.secret.clone(),
                items: item(&h.key, sink_header_file(&h.name)),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    (!sources.is_empty()).then(|| Volume {
        name: SINK_VOLUME.into(),
        projected: Some(ProjectedVolumeSource { default_mode: Some(0o444), sources: Some(sources) }),
        ..Default::default()
    })
}

/// The arguments of [`SIDECAR_COMMAND`] for one pod.
pub fn sidecar_args(facts: &TenantFacts, app_container: &str, cfg: &SidecarConfig) -> Vec<String> {
    let mut args: Vec<String> = [
        "--keys",
        KEYS_DIR,
        "--listen",
        SIDECAR_LISTEN,
        "--sink",
        facts.spec().audit.sink.as_str(),
        "--spool-dir",
        SPOOL_DIR,
        "--spool-max-bytes",
        cfg.spool_max_bytes.as_str(),
        "--container",
        app_container,
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    args.extend(sink_args(&facts.spec().audit));
    args
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { api_version: None, field_path: path.into() }),
            ..Default::default()
        }),
    }
}

/// The environment of the sidecar: tenant name, and pod namespace and name from the downward API.
pub fn sidecar_env(facts: &TenantFacts) -> Vec<EnvVar> {
    vec![
        EnvVar { name: "BULKHEAD_TENANT".into(), value: Some(facts.name.clone()), value_from: None },
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_NAME", "metadata.name"),
    ]
}

/// The sidecar's volume mounts: the keys and the sink's CA and headers read-only, the spool writable.
pub fn sidecar_mounts(audit: &AuditSpec) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: KEYS_VOLUME.into(),
            mount_path: KEYS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount { name: SPOOL_VOLUME.into(), mount_path: SPOOL_DIR.into(), ..Default::default() },
    ];
    if sink_volume(audit).is_some() {
        mounts.push(VolumeMount {
            name: SINK_VOLUME.into(),
            mount_path: SINK_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts
}

/// The sidecar container for a pod whose records come from `app_container`.
pub fn sidecar_container(facts: &TenantFacts, app_container: &str, cfg: &SidecarConfig) -> Container {
    let q = |s: &str| Quantity(s.to_string());
    Container {
        name: SIDECAR_NAME.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: Some(PULL_ALWAYS.into()),
        restart_policy: Some("Always".into()),
        command: Some(vec![SIDECAR_COMMAND.into()]),
        args: Some(sidecar_args(facts, app_container, cfg)),
        env: Some(sidecar_env(facts)),
        volume_mounts: Some(sidecar_mounts(&facts.spec().audit)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), q(&cfg.cpu_request)),
                ("memory".into(), q(&cfg.memory_request)),
            ])),
            limits: Some(BTreeMap::from([("cpu".into(), q(&cfg.cpu_limit)), ("memory".into(), q(&cfg.memory_limit))])),
            ..Default::default()
        }),
        // Passes Pod Security `restricted`, so the sidecar never makes a pod inadmissible.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { add: None, drop: Some(vec!["ALL".into()]) }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(cfg.run_as_user),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// The pod volumes the sidecar needs.
pub fn sidecar_volumes(audit: &AuditSpec, cfg: &SidecarConfig) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: KEYS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(KEYS_SECRET.into()),
                default_mode: Some(0o444),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: SPOOL_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity(cfg.spool_size_limit.clone())),
            }),
            ..Default::default()
        },
    ];
    volumes.extend(sink_volume(audit));
    volumes
}

/// Whether the pod asks not to get the sidecar.
pub fn opted_out(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(AUDIT_OPT_OUT_ANNOTATION))
        .is_some_and(|v| v == AUDIT_OPT_OUT_VALUE)
}

/// Whether the pod already has a container named like the sidecar (init or regular).
pub fn has_sidecar(spec: &PodSpec) -> bool {
    spec.init_containers.iter().flatten().chain(&spec.containers).any(|c| c.name == SIDECAR_NAME)
}

/// Whether bulkhead injects the sidecar into this pod: by mode, opt-out (only under `Optional`) and presence.
pub fn wants_sidecar(pod: &Pod, facts: &TenantFacts) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let mode_wants = match facts.effective.audit_mode {
        AuditMode::Disabled => false,
        AuditMode::Optional => !opted_out(pod),
        AuditMode::Required => true,
    };
    mode_wants && !spec.containers.is_empty() && !has_sidecar(spec)
}

/// The region requirement for `regions`.
pub fn region_requirement(regions: &[String]) -> NodeSelectorRequirement {
    let mut values = regions.to_vec();
    values.sort();
    values.dedup();
    NodeSelectorRequirement { key: REGION_LABEL.into(), operator: "In".into(), values: Some(values) }
}

/// Whether a node selector term already keeps the pod inside `regions`.
pub fn term_within_regions(term: &NodeSelectorTerm, regions: &[String]) -> bool {
    term.match_expressions.iter().flatten().any(|e| {
        e.key == REGION_LABEL
            && e.operator == "In"
            && e.values.as_ref().is_some_and(|v| !v.is_empty() && v.iter().all(|r| regions.contains(r)))
    })
}

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path: ptr(tokens), value })
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // k8s-openapi types hold only strings, numbers and maps: serializing cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn pull_policy_ops(list: &str, containers: impl Iterator<Item = Option<String>>) -> Vec<PatchOperation> {
    containers
        .enumerate()
        .filter(|(_, policy)| policy.as_deref() != Some(PULL_ALWAYS))
        .map(|(i, _)| add(&["spec", list, &i.to_string(), "imagePullPolicy"], json!(PULL_ALWAYS)))
        .collect()
}

/// `imagePullPolicy: Always` for every container, init container and ephemeral container that lacks it.
pub fn pull_policy_patch(spec: &PodSpec) -> Vec<PatchOperation> {
    let mut ops = pull_policy_ops("containers", spec.containers.iter().map(|c| c.image_pull_policy.clone()));
    ops.extend(pull_policy_ops(
        "initContainers",
        spec.init_containers.iter().flatten().map(|c| c.image_pull_policy.clone()),
    ));
    ops.extend(pull_policy_ops(
        "ephemeralContainers",
        spec.ephemeral_containers.iter().flatten().map(|c| c.image_pull_policy.clone()),
    ));
    ops
}

/// The required node affinity for `regions`, merged with the pod's own: the region requirement is added
/// (ANDed) to every term that does not already keep the pod inside the regions.
pub fn residency_patch(spec: &PodSpec, regions: &[String]) -> Vec<PatchOperation> {
    let requirement = region_requirement(regions);
    let term = json!({"matchExpressions": [to_value(&requirement)]});
    const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";
    let Some(affinity) = &spec.affinity else {
        return vec![add(&["spec", "affinity"], json!({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [term]}}}))];
    };
    let Some(node) = &affinity.node_affinity else {
        return vec![add(&["spec", "affinity", "nodeAffinity"], json!({REQUIRED: {"nodeSelectorTerms": [term]}}))];
    };
    let Some(required) = &node.required_during_scheduling_ignored_during_execution else {
        return vec![add(&["spec", "affinity", "nodeAffinity", REQUIRED], json!({"nodeSelectorTerms": [term]}))];
    };
    if required.node_selector_terms.is_empty() {
        return vec![add(&["spec", "affinity", "nodeAffinity", REQUIRED, "nodeSelectorTerms"], json!([term]))];
    }
    let base = ["spec", "affinity", "nodeAffinity", REQUIRED, "nodeSelectorTerms"];
    let mut ops = Vec::new();
    for (i, t) in required.node_selector_terms.iter().enumerate() {
        if term_within_regions(t, regions) {
            continue;
        }
        let index = i.to_string();
        let mut path: Vec<&str> = base.to_vec();
        path.extend([index.as_str(), "matchExpressions"]);
        if t.match_expressions.is_none() {
            ops.push(add(&path, json!([to_value(&requirement)])));
        } else {
            path.push("-");
            ops.push(add(&path, to_value(&requirement)));
        }
    }
    ops
}

/// Adds the sidecar (first init container, so it runs before the others) and any missing volume.
pub fn sidecar_patch(spec: &PodSpec, facts: &TenantFacts, cfg: &SidecarConfig) -> Vec<PatchOperation> {
    let Some(app) = spec.containers.first() else {
        return Vec::new();
    };
    let mut ops = Vec::new();
    let present: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    let missing: Vec<Volume> =
        sidecar_volumes(&facts.spec().audit, cfg).into_iter().filter(|v| !present.contains(&v.name.as_str())).collect();
    if spec.volumes.is_none() {
        ops.push(add(&["spec", "volumes"], to_value(&missing)));
    } else {
        ops.extend(missing.iter().map(|v| add(&["spec", "volumes", "-"], to_value(v))));
    }
    let container = to_value(&sidecar_container(facts, &app.name, cfg));
    if spec.init_containers.is_none() {
        ops.push(add(&["spec", "initContainers"], json!([container])));
    } else {
        ops.push(add(&["spec", "initContainers", "0"], container));
    }
    ops
}

/// The whole patch for a pod being created in a tenant namespace. Pull policies come first: their
/// indices are those of the pod as sent, before the sidecar shifts the init containers.
pub fn mutate_pod(pod: &Pod, facts: &TenantFacts, cfg: &SidecarConfig) -> Vec<PatchOperation> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut ops = pull_policy_patch(spec);
    if let Some(regions) = facts.regions() {
        ops.extend(residency_patch(spec, regions));
    }
    if wants_sidecar(pod, facts) {
        ops.extend(sidecar_patch(spec, facts, cfg));
    }
    ops
}

/// The patch for an update through `pods/ephemeralcontainers`: pull policies only.
pub fn mutate_ephemeral(pod: &Pod) -> Vec<PatchOperation> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    pull_policy_ops(
        "ephemeralContainers",
        spec.ephemeral_containers.iter().flatten().map(|c| c.image_pull_policy.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::facts::testing::{acme, siem_tenant, tenant};
    use crate::plan::Config;

    fn pod(v: Value) -> (Value, Pod) {
        let p: Pod = serde_json::from_value(v.clone()).unwrap();
        (v, p)
    }

    fn apply(doc: &Value, ops: &[PatchOperation]) -> Value {
        let mut d = doc.clone();
        json_patch::patch(&mut d, ops).expect("patch applies");
        d
    }

    fn simple() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "acme-agents"},
               "spec": {"containers": [{"name": "app", "image": "registry.acme.example/app:1", "imagePullPolicy": "IfNotPresent"}]}})
    }

    #[test]
    fn injects_sidecar_volumes_and_pull_policy_and_is_idempotent() {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let cfg = SidecarConfig::default();
        let (raw, p) = pod(simple());
        let ops = mutate_pod(&p, &f, &cfg);
        let out = apply(&raw, &ops);
        assert_eq!(out["spec"]["containers"][0]["imagePullPolicy"], "Always");
        let side = &out["spec"]["initContainers"][0];
        assert_eq!(side["name"], SIDECAR_NAME);
        assert_eq!(side["restartPolicy"], "Always");
        assert_eq!(side["image"], cfg.image);
        assert!(side["args"].as_array().unwrap().iter().any(|a| a == "app"));
        assert_eq!(side["volumeMounts"][0]["readOnly"], true);
        assert_eq!(out["spec"]["volumes"][0]["secret"]["secretName"], KEYS_SECRET);
        assert_eq!(side["env"][0]["value"], "acme");
        assert_eq!(side["env"][2]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
        // Idempotent: the mutated pod needs nothing more.
        let (_, again) = pod(out);
        assert!(mutate_pod(&again, &f, &cfg).is_empty());
    }

    #[test]
    fn the_sinks_ca_and_headers_are_projected_read_only_and_passed_as_paths() {
        let t = siem_tenant();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let cfg = SidecarConfig::default();
        let (raw, p) = pod(simple());
        let out = apply(&raw, &mutate_pod(&p, &f, &cfg));
        let side = &out["spec"]["initContainers"][0];
        let args: Vec<&str> = side["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let pairs: Vec<[&str; 2]> = args.windows(2).map(|w| [w[0], w[1]]).collect();
        assert!(pairs.contains(&["--sink", "https://siem.example/ingest"]), "{args:?}");
        assert!(pairs.contains(&["--sink-ca", "/var/run/bulkhead/audit-sink/ca.pem"]), "{args:?}");
        assert!(
            pairs.contains(&["--sink-header-file", "Authorization=/var/run/bulkhead/audit-sink/header-authorization"]),
            "{args:?}"
        );
        assert!(
            pairs.contains(&["--sink-header-file", "X-Tenant-Id=/var/run/bulkhead/audit-sink/header-x-tenant-id"]),
            "{args:?}"
        );
        let mount = side["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == SINK_VOLUME).unwrap();
        assert_eq!(mount["mountPath"], SINK_DIR);
        assert_eq!(mount["readOnly"], true);
        let volume = out["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == SINK_VOLUME).unwrap();
        assert_eq!(
            volume["projected"]["sources"],
            json!([
                {"configMap": {"name": "trust-bundle", "items": [{"key": "ca.crt", "path": "ca.pem"}], "optional": false}},
                {"secret": {"name": "siem-token", "items": [{"key": "header", "path": "header-authorization"}], "optional": false}},
                {"secret": {"name": "siem-ids", "items": [{"key": "acme", "path": "header-x-tenant-id"}], "optional": false}},
            ])
        );
        // Still what Pod Security `restricted` wants, and still idempotent.
        assert_eq!(side["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(side["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        let (_, again) = pod(out);
        assert!(mutate_pod(&again, &f, &cfg).is_empty());
    }

    #[test]
    fn a_ca_from_a_secret_alone_gets_no_header_args_and_a_plain_sink_gets_no_sink_volume() {
        let config = Config::default();
        let t = tenant(
            "acme",
            "namespaces: [{name: a}]\naudit: {sink: 'https://siem.example/', sinkCA: {secret: siem-ca, key: ca.crt}}",
        );
        let f = TenantFacts::new(&t, &config).unwrap();
        let args = sidecar_args(&f, "app", &SidecarConfig::default());
        assert!(!args.iter().any(|a| a == "--sink-header-file"), "{args:?}");
        assert_eq!(args.iter().filter(|a| *a == "--sink-ca").count(), 1, "{args:?}");
        let volume = sink_volume(&t.spec.audit).expect("a sink volume");
        let sources = volume.projected.unwrap().sources.unwrap();
        assert_eq!(sources.len(), 1);
        let secret = sources[0].secret.as_ref().expect("the CA comes from the Secret");
        assert_eq!((secret.name.as_str(), secret.optional), ("siem-ca", Some(false)));

        let plain = acme();
        let f = TenantFacts::new(&plain, &config).unwrap();
        assert!(sink_volume(&plain.spec.audit).is_none());
        let cfg = SidecarConfig::default();
        assert!(!sidecar_args(&f, "app", &cfg).iter().any(|a| a.starts_with("--sink-")));
        assert!(!sidecar_container(&f, "app", &cfg).volume_mounts.unwrap().iter().any(|m| m.name == SINK_VOLUME));
    }

    #[test]
    fn sidecar_goes_first_and_existing_init_containers_keep_their_pull_policy_fix() {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let mut v = simple();
        v["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
        v["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
        let (raw, p) = pod(v);
        let out = apply(&raw, &mutate_pod(&p, &f, &SidecarConfig::default()));
        assert_eq!(out["spec"]["initContainers"][0]["name"], SIDECAR_NAME);
        assert_eq!(out["spec"]["initContainers"][1]["name"], "init");
        assert_eq!(out["spec"]["initContainers"][1]["imagePullPolicy"], "Always");
        let names: Vec<&str> =
            out["spec"]["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["data", KEYS_VOLUME, SPOOL_VOLUME]);
    }

    #[test]
    fn opt_out_only_under_optional() {
        let config = Config::default();
        let mut v = simple();
        v["metadata"]["annotations"] = json!({AUDIT_OPT_OUT_ANNOTATION: AUDIT_OPT_OUT_VALUE});
        let (_, p) = pod(v);
        for (mode, injected) in [("Optional", false), ("Required", true), ("Disabled", false)] {
            let t = tenant("acme", &format!("namespaces: [{{name: a}}]\naudit: {{mode: {mode}}}"));
            let f = TenantFacts::new(&t, &config).unwrap();
            assert_eq!(wants_sidecar(&p, &f), injected, "{mode}");
        }
        let (_, plain) = pod(simple());
        let t = tenant("acme", "namespaces: [{name: a}]\naudit: {mode: Disabled}");
        assert!(!wants_sidecar(&plain, &TenantFacts::new(&t, &config).unwrap()));
        // PCI-DSS makes it Required even when the spec says Optional.
        let pci = tenant("acme", "namespaces: [{name: a}]\ncompliance: [PCI-DSS]");
        assert!(wants_sidecar(&p, &TenantFacts::new(&pci, &config).unwrap()));
    }

    #[test]
    fn residency_is_merged_into_every_term_of_the_pods_own_affinity() {
        let config = Config::default();
        let t = tenant(
            "acme",
            "namespaces: [{name: a}]\naudit: {mode: Disabled}\ndataResidency: {regions: [eu-west-1, eu-central-1]}",
        );
        let f = TenantFacts::new(&t, &config).unwrap();
        let mut v = simple();
        v["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
        ]}}, "podAntiAffinity": {}});
        let (raw, p) = pod(v);
        let out = apply(&raw, &mutate_pod(&p, &f, &SidecarConfig::default()));
        let terms = &out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        assert_eq!(terms[0]["matchExpressions"][0]["key"], "topology.kubernetes.io/zone");
        assert_eq!(terms[0]["matchExpressions"][1]["key"], REGION_LABEL);
        assert_eq!(terms[0]["matchExpressions"][1]["values"], json!(["eu-central-1", "eu-west-1"]));
        assert_eq!(terms[1]["matchExpressions"][0]["key"], REGION_LABEL);
        assert_eq!(terms[1]["matchFields"][0]["key"], "metadata.name");
        assert!(out["spec"]["affinity"]["podAntiAffinity"].is_object());
        let (_, again) = pod(out);
        assert!(mutate_pod(&again, &f, &SidecarConfig::default()).is_empty());
        // No affinity at all: one term with the regions.
        let (raw, p) = pod(simple());
        let out = apply(&raw, &residency_patch(p.spec.as_ref().unwrap(), &["eu-west-1".to_string()]));
        assert_eq!(
            out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                [0]["matchExpressions"][0]["values"],
            json!(["eu-west-1"])
        );
    }

    #[test]
    fn a_narrower_region_choice_of_the_pod_is_kept_as_is() {
        let mut v = simple();
        v["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": REGION_LABEL, "operator": "In", "values": ["eu-west-1"]}]}]}}});
        let (_, p) = pod(v);
        assert!(residency_patch(p.spec.as_ref().unwrap(), &["eu-west-1".into(), "eu-central-1".into()]).is_empty());
        assert_eq!(residency_patch(p.spec.as_ref().unwrap(), &["us-east-1".into()]).len(), 1);
    }

    #[test]
    fn ephemeral_containers_get_pull_policy_always() {
        let mut v = simple();
        v["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox", "imagePullPolicy": "Never"}]);
        let (raw, p) = pod(v);
        let out = apply(&raw, &mutate_ephemeral(&p));
        assert_eq!(out["spec"]["ephemeralContainers"][0]["imagePullPolicy"], "Always");
        assert_eq!(out["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn pods_without_spec_or_containers_get_no_patch() {
        let t = acme();
        let config = Config::default();
        let f = TenantFacts::new(&t, &config).unwrap();
        let (_, p) = pod(json!({"metadata": {"name": "x"}}));
        assert!(mutate_pod(&p, &f, &SidecarConfig::default()).is_empty());
        let (_, p) = pod(json!({"metadata": {"name": "x"}, "spec": {"containers": []}}));
        assert!(mutate_pod(&p, &f, &SidecarConfig::default()).is_empty());
    }
}
