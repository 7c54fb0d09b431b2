//! The admission webhooks against the real control plane: the real
//! apiserver calls the operator's webhooks over TLS (self-managed CA), and
//! every request is made as the tenant's own users through impersonation,
//! so the real RBAC runs first and bulkhead's rules second.
//!
//! The test cluster is shared: each test runs its own operator with
//! uniquely named webhook configurations scoped to namespaces carrying its
//! shard label, and removes them when it ends (even on panic); leftovers of
//! killed runs are removed at start.

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bulkhead::api::Tenant;
use common::*;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
/// The admin certificate's user: the operator's identity in these tests.
const OPERATOR_USER: &str = "bulkhead-e2e-admin";
const SIDECAR_IMAGE: &str = "registry.bulkhead.example/bulkhead:e2e";
const CONFIG_PREFIX: &str = "bulkhead-e2e-adm-";

fn dry() -> PostParams {
    PostParams { dry_run: true, ..Default::default() }
}

fn kubectl(args: &[&str]) {
    let _ = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

fn delete_configurations(name: &str) {
    kubectl(&[
        "delete",
        &format!("mutatingwebhookconfiguration/{name}"),
        &format!("validatingwebhookconfiguration/{name}"),
        "--ignore-not-found",
        "--wait=false",
    ]);
    kubectl(&[
        "delete",
        "secret",
        "-n",
        OPERATOR_NAMESPACE,
        &format!("{name}-webhook-tls"),
        "--ignore-not-found",
        "--wait=false",
    ]);
}

/// Removes webhook configurations left by earlier, killed runs of this binary (other pids).
async fn remove_leftovers(client: &Client) {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let mine = format!("{CONFIG_PREFIX}{}-", std::process::id());
    let names: Vec<String> = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|c| c.name_any()).collect())
        .unwrap_or_default();
    let more: Vec<String> = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|c| c.name_any()).collect())
        .unwrap_or_default();
    for name in names.into_iter().chain(more) {
        if name.starts_with(CONFIG_PREFIX) && !name.starts_with(&mine) {
            delete_configurations(&name);
        }
    }
}

/// An operator with admission webhooks, for the Tenants and namespaces of one shard.
struct Admission {
    op: Operator,
    name: String,
}

impl Admission {
    async fn start(client: &Client) -> Self {
        remove_leftovers(client).await;
        let shard = unique("adm");
        let name = format!("{CONFIG_PREFIX}{}-{shard}", std::process::id());
        let labels = format!("{SHARD_LABEL}={shard}");
        let op = Operator::start_with(
            &shard,
            &[
                ("BULKHEAD_ADMISSION_LISTEN", "127.0.0.1:0"),
                ("BULKHEAD_ADMISSION_NAME", &name),
                ("BULKHEAD_ADMISSION_NAMESPACE_LABELS", &labels),
                ("BULKHEAD_OPERATOR_USERNAME", OPERATOR_USER),
                ("BULKHEAD_SIDECAR_IMAGE", SIDECAR_IMAGE),
                ("BULKHEAD_ADMISSION_RESYNC", "3s"),
                ("RUST_LOG", "info,bulkhead::admission=debug"),
            ],
        );
        let adm = Self { op, name };
        let (m, v) = (
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        );
        let name = adm.name.clone();
        let logs = adm.op.stderr.clone();
        wait_for(&format!("webhook configurations {name} (operator log: {})", logs.display()), WAIT, || {
            let (m, v, name) = (m.clone(), v.clone(), name.clone());
            async move {
                (m.get_opt(&name).await.ok()??.webhooks.is_some() && v.get_opt(&name).await.ok()?.is_some())
                    .then_some(())
            }
        })
        .await;
        adm
    }

    fn shard(&self) -> &str {
        &self.op.shard
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // The operator first: it would restore its configurations.
        self.op.kill();
        delete_configurations(&self.name);
    }
}

/// A Tenant of this shard whose namespaces carry the shard label (so this test's webhooks apply to them).
fn tenant(name: &str, shard: &str, namespaces: &[&str], extra: Value) -> Value {
    let mut t = tenant_from("metadata: {name: x}\nspec: {namespaces: []}", name, shard);
    t["spec"]["namespaces"] =
        namespaces.iter().map(|n| json!({"name": n, "labels": {SHARD_LABEL: shard}})).collect::<Vec<_>>().into();
    t["spec"]["deletionPolicy"] = json!("Delete");
    t["spec"]["access"] = json!([{"kind": "User", "name": format!("{name}-alice"), "profile": "admin"}]);
    if let (Some(spec), Some(extra)) = (t["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    t
}

async fn apply_tenant_as(client: &Client, tenant: &Value) -> Result<Tenant, kube::Error> {
    apply_tenant_with(client, tenant, PatchParams::apply("e2e").force()).await
}

async fn apply_tenant_with(client: &Client, tenant: &Value, params: PatchParams) -> Result<Tenant, kube::Error> {
    let name = tenant["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut body = tenant.clone();
    body["apiVersion"] = json!("bulkhead.dev/v1alpha1");
    body["kind"] = json!("Tenant");
    Api::<Tenant>::all(client.clone()).patch(&name, &params, &Patch::Apply(&body)).await
}

async fn wait_ready(client: &Client, name: &str) -> Tenant {
    let api: Api<Tenant> = Api::all(client.clone());
    wait_for(&format!("Tenant {name} Ready"), WAIT, || {
        let api = api.clone();
        async move {
            let t = api.get(name).await.ok()?;
            let status = t.status.as_ref()?;
            let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.observed_generation == t.metadata.generation).then_some(t)
        }
    })
    .await
}

/// Creates the tenants and waits until each is Ready and the webhooks police its first namespace.
async fn tenants_ready(client: &Client, tenants: &[Value]) {
    for t in tenants {
        apply_tenant_as(client, t).await.unwrap_or_else(|e| panic!("Tenant {} rejected: {e}", t["metadata"]["name"]));
    }
    for t in tenants {
        let name = t["metadata"]["name"].as_str().unwrap();
        wait_ready(client, name).await;
        let ns = format!("{name}-{}", t["spec"]["namespaces"][0]["name"].as_str().unwrap());
        wait_enforced(&ns, &format!("{name}-alice")).await;
    }
}

/// Waits until both webhooks police `ns` (configurations registered, caches current): a NodePort
/// Service is refused by bulkhead (Pod Security never judges Services) and a pod passing every Pod
/// Security level comes back mutated.
async fn wait_enforced(ns: &str, user: &str) {
    let alice = as_user(user, &[]).await;
    let (pods, svcs) = (Api::<Pod>::namespaced(alice.clone(), ns), Api::<Service>::namespaced(alice, ns));
    let probe: Service = serde_json::from_value(
        json!({"metadata": {"name": "probe"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
    )
    .unwrap();
    wait_for(&format!("the webhooks to police {ns}"), WAIT, || {
        let (pods, svcs, probe) = (pods.clone(), svcs.clone(), probe.clone());
        async move {
            match svcs.create(&dry(), &probe).await {
                Err(kube::Error::Api(s)) if s.message.contains("[service.node-port]") => {}
                _ => return None,
            }
            let p = pods.create(&dry(), &restricted_pod("probe")).await.ok()?;
            (p.spec?.containers[0].image_pull_policy.as_deref() == Some("Always")).then_some(())
        }
    })
    .await;
}

async fn delete_tenants(client: &Client, names: &[&str]) {
    let api: Api<Tenant> = Api::all(client.clone());
    for n in names {
        let _ = api.delete(n, &DeleteParams::default()).await;
    }
    for n in names {
        let gone = async {
            loop {
                if matches!(api.get_opt(n).await, Ok(None)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        // Best effort: a slow cleanup must not fail the test that already passed.
        let _ = tokio::time::timeout(Duration::from_secs(30), gone).await;
    }
}

/// A pod with one container from the allowed registry; `spec` is merged in.
fn pod(name: &str, spec: Value) -> Pod {
    let mut v = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.acme.example/app:1"}]}});
    if let (Some(s), Some(extra)) = (v["spec"].as_object_mut(), spec.as_object()) {
        for (k, val) in extra {
            s.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(v).expect("pod")
}

/// A pod that passes Pod Security `restricted`.
fn restricted_pod(name: &str) -> Pod {
    pod(
        name,
        json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "registry.acme.example/app:1",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}),
    )
}

/// The denial message, or panics naming what was admitted.
fn denied<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(s)) => s.message,
        Err(e) => panic!("{what}: unexpected client error {e}"),
        Ok(v) => panic!("{what} was admitted: {v:?}"),
    }
}

fn assert_denied<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>, rule: &str, field: &str) -> String {
    let m = denied(what, result);
    assert!(m.contains("admission webhook") && m.contains("bulkhead.dev"), "{what}: not bulkhead's denial: {m}");
    assert!(m.contains(&format!("[{rule}] {field}")), "{what}: expected [{rule}] {field} in {m:?}");
    m
}

fn platform_admin() -> impl std::future::Future<Output = Client> {
    // A cluster administrator who is not the operator.
    as_user("platform-admin@example.com", &["system:masters"])
}

#[tokio::test]
async fn pods_that_break_isolation_are_denied_by_rule_and_field() {
    let client = admin().await;
    install_crd(&client).await;
    let adm = Admission::start(&client).await;
    let t = unique("p");
    let spec = json!({"podSecurity": "privileged", "audit": {"mode": "Disabled"},
        "images": {"allowedRegistries": ["registry.acme.example/"]}});
    tenants_ready(&client, &[tenant(&t, adm.shard(), &["a"], spec)]).await;
    let ns = format!("{t}-a");
    let alice = as_user(&format!("{t}-alice"), &[]).await;
    let pods: Api<Pod> = Api::namespaced(alice.clone(), &ns);

    // Pod Security is `privileged` here: every refusal below is bulkhead's.
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("hostNetwork", json!({"hostNetwork": true}), "pod.host-network", "spec.hostNetwork"),
        ("hostPID", json!({"hostPID": true}), "pod.host-pid", "spec.hostPID"),
        ("hostIPC", json!({"hostIPC": true}), "pod.host-ipc", "spec.hostIPC"),
        (
            "hostPath",
            json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
            "pod.host-path",
            "spec.volumes[0].hostPath",
        ),
        (
            "hostPort",
            json!({"containers": [{"name": "app", "image": "registry.acme.example/app:1", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
            "pod.host-port",
            "spec.containers[0].ports[0].hostPort",
        ),
        (
            "privileged",
            json!({"containers": [{"name": "app", "image": "registry.acme.example/app:1", "securityContext": {"privileged": true}}]}),
            "pod.privileged",
            "spec.containers[0].securityContext.privileged",
        ),
        (
            "capabilities",
            json!({"containers": [{"name": "app", "image": "registry.acme.example/app:1", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}),
            "pod.capabilities",
            "spec.containers[0].securityContext.capabilities.add[0]",
        ),
        (
            "image",
            json!({"containers": [{"name": "app", "image": "nginx:1.27"}]}),
            "image.registry",
            "spec.containers[0].image",
        ),
        (
            "init image",
            json!({"initContainers": [{"name": "init", "image": "quay.io/evil/init:1"}]}),
            "image.registry",
            "spec.initContainers[0].image",
        ),
    ];
    for (what, spec, rule, field) in cases {
        let m = assert_denied(what, pods.create(&dry(), &pod("bad", spec)).await, rule, field);
        assert!(m.contains(&format!("tenant {t}")) || rule == "image.registry", "{what}: {m}");
    }
    // A real (not dry-run) refusal reaches the security event stream.
    assert_denied(
        "hostNetwork",
        pods.create(&PostParams::default(), &pod("bad", json!({"hostNetwork": true}))).await,
        "pod.host-network",
        "spec.hostNetwork",
    );

    // A clean pod by digest is admitted, unchanged but for the pull policy.
    let digest = format!("registry.acme.example/app@sha256:{}", "0".repeat(64));
    let good =
        pod("good", json!({"containers": [{"name": "app", "image": digest, "imagePullPolicy": "IfNotPresent"}]}));
    let stored = pods.create(&PostParams::default(), &good).await.expect("clean pod admitted");
    let c = &stored.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some(digest.as_str()), "images are never rewritten");
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));

    // Updates and ephemeral containers are held to the same registries.
    let swap = Patch::Strategic(json!({"spec": {"containers": [{"name": "app", "image": "docker.io/evil/miner:1"}]}}));
    assert_denied(
        "image update",
        pods.patch("good", &PatchParams::default(), &swap).await,
        "image.registry",
        "spec.containers[0].image",
    );
    let debug = Patch::Strategic(
        json!({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox", "targetContainerName": "app"}]}}),
    );
    assert_denied(
        "ephemeral container",
        pods.patch_ephemeral_containers("good", &PatchParams::default(), &debug).await,
        "image.registry",
        "spec.ephemeralContainers[0].image",
    );
    let ok_debug = Patch::Strategic(
        json!({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "registry.acme.example/debug:1"}]}}),
    );
    let p = pods
        .patch_ephemeral_containers("good", &PatchParams::default(), &ok_debug)
        .await
        .expect("allowed debug container");
    let eph = &p.spec.unwrap().ephemeral_containers.unwrap()[0];
    assert_eq!(eph.image_pull_policy.as_deref(), Some("Always"), "ephemeral containers are mutated too");

    let events = wait_for("the admission-denied security event", Duration::from_secs(10), || {
        let events = adm.op.security_events();
        async move {
            events
                .into_iter()
                .find(|e| e["event"]["action"] == "admission-denied" && e["event"]["reason"] == "pod.host-network")
        }
    })
    .await;
    assert_eq!(events["bulkhead"]["tenant"], t.as_str());
    assert_eq!(events["bulkhead"]["object"]["namespace"], ns.as_str());
    assert_eq!(events["event"]["type"][0], "denied");
    // And a Kubernetes Event on the Tenant, for `kubectl describe tenant`.
    let kube_events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let found = wait_for("the AdmissionDenied Kubernetes Event", Duration::from_secs(10), || {
        let kube_events = kube_events.clone();
        let t = t.clone();
        async move {
            let list =
                kube_events.list(&ListParams::default().fields(&format!("involvedObject.name={t}"))).await.ok()?;
            list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("AdmissionDenied")
                    && e.message.as_deref().is_some_and(|m| m.contains("pod.host-network"))
            })
        }
    })
    .await;
    assert_eq!(found.type_.as_deref(), Some("Warning"));

    delete_tenants(&client, &[&t]).await;
}

fn sidecar_of(p: &Pod) -> Option<&k8s_openapi::api::core::v1::Container> {
    p.spec.as_ref()?.init_containers.as_ref()?.iter().find(|c| c.name == "bulkhead-audit")
}

#[tokio::test]
async fn audit_sidecar_is_injected_once_and_opt_out_follows_the_mode() {
    let client = admin().await;
    install_crd(&client).await;
    let adm = Admission::start(&client).await;
    let (opt, req, off) = (unique("o"), unique("r"), unique("d"));
    tenants_ready(
        &client,
        &[
            tenant(
                &opt,
                adm.shard(),
                &["a"],
                json!({"podSecurity": "baseline", "audit": {"sink": "https://siem.example/ingest"}}),
            ),
            // PCI-DSS makes the sidecar Required though the spec leaves the default (Optional); restricted PSA.
            tenant(&req, adm.shard(), &["a"], json!({"compliance": ["PCI-DSS"]})),
            tenant(&off, adm.shard(), &["a"], json!({"podSecurity": "baseline", "audit": {"mode": "Disabled"}})),
        ],
    )
    .await;
    let opt_out = json!({"bulkhead.dev/audit-sidecar": "disabled"});

    // Optional: injected as a native sidecar with the tenant's key mounted read-only.
    let pods: Api<Pod> = Api::namespaced(as_user(&format!("{opt}-alice"), &[]).await, &format!("{opt}-a"));
    let created = pods.create(&PostParams::default(), &pod("web", json!({}))).await.expect("pod admitted");
    let side = sidecar_of(&created).expect("sidecar injected");
    assert_eq!(side.restart_policy.as_deref(), Some("Always"));
    assert_eq!(side.image.as_deref(), Some(SIDECAR_IMAGE));
    assert_eq!(side.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(side.command, Some(vec!["/bulkhead-audit-sidecar".to_string()]));
    let args = side.args.clone().unwrap();
    assert_eq!(&args[..1], &["--keys".to_string()]);
    assert!(args.windows(2).any(|w| w == ["--sink", "https://siem.example/ingest"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--container", "app"]), "{args:?}");
    let keys = side.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "bulkhead-audit-keys").unwrap();
    assert_eq!(keys.read_only, Some(true));
    let spec = created.spec.as_ref().unwrap();
    let vol = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "bulkhead-audit-keys").unwrap();
    assert_eq!(vol.secret.as_ref().unwrap().secret_name.as_deref(), Some("bulkhead-keys"));
    let env = side.env.as_ref().unwrap();
    assert_eq!(env.iter().find(|e| e.name == "BULKHEAD_TENANT").unwrap().value.as_deref(), Some(opt.as_str()));
    assert_eq!(
        env.iter()
            .find(|e| e.name == "POD_NAME")
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    // Idempotent: the stored pod sent again gets nothing more.
    let mut again = created.clone();
    again.metadata = serde_json::from_value(json!({"name": "web-again"})).unwrap();
    again.status = None;
    let second = pods.create(&PostParams::default(), &again).await.expect("re-sent pod admitted");
    assert_eq!(second.spec.as_ref().unwrap().init_containers, spec.init_containers, "sidecar injected twice");
    assert_eq!(second.spec.as_ref().unwrap().volumes, spec.volumes);
    // Opting out is honoured under Optional.
    let mut out = pod("quiet", json!({}));
    out.metadata.annotations = serde_json::from_value(opt_out.clone()).unwrap();
    let quiet = pods.create(&PostParams::default(), &out).await.expect("opted-out pod admitted");
    assert!(sidecar_of(&quiet).is_none(), "opt-out ignored under Optional");

    // Required (PCI-DSS): injected, and the sidecar passes Pod Security `restricted`.
    let pods: Api<Pod> = Api::namespaced(as_user(&format!("{req}-alice"), &[]).await, &format!("{req}-a"));
    let created = pods.create(&PostParams::default(), &restricted_pod("web")).await.expect("restricted pod admitted");
    assert!(sidecar_of(&created).is_some());
    let mut out = restricted_pod("quiet");
    out.metadata.annotations = serde_json::from_value(opt_out).unwrap();
    let m = assert_denied(
        "opt-out under Required",
        pods.create(&dry(), &out).await,
        "pod.audit-opt-out",
        "metadata.annotations",
    );
    assert!(m.contains("cannot opt out"), "{m}");
    // A forged sidecar is not the sidecar.
    let mut forged = restricted_pod("forged");
    let mut fake = created.spec.as_ref().unwrap().containers[0].clone();
    fake.name = "bulkhead-audit".into();
    fake.restart_policy = Some("Always".into());
    forged.spec.as_mut().unwrap().init_containers = Some(vec![fake]);
    let m = assert_denied(
        "forged sidecar",
        pods.create(&dry(), &forged).await,
        "pod.audit-sidecar",
        "spec.initContainers[0]",
    );
    assert!(m.contains("let bulkhead inject it"), "{m}");

    // Disabled: nothing injected, pull policy still enforced.
    let pods: Api<Pod> = Api::namespaced(as_user(&format!("{off}-alice"), &[]).await, &format!("{off}-a"));
    let created = pods.create(&PostParams::default(), &pod("web", json!({}))).await.expect("pod admitted");
    assert!(sidecar_of(&created).is_none());
    assert_eq!(created.spec.unwrap().containers[0].image_pull_policy.as_deref(), Some("Always"));

    delete_tenants(&client, &[&opt, &req, &off]).await;
}

#[tokio::test]
async fn the_sidecar_gets_the_tenants_siem_ca_and_token_as_mounted_files_never_as_values() {
    let client = admin().await;
    install_crd(&client).await;
    let adm = Admission::start(&client).await;
    let t = unique("siem");
    let audit = json!({"mode": "Required", "sink": "https://siem.example/ingest",
        "sinkCA": {"configMap": "trust-bundle", "key": "ca.crt"},
        "sinkHeaders": [{"name": "Authorization", "secret": "siem-token", "key": "header"}]});
    tenants_ready(&client, &[tenant(&t, adm.shard(), &["a"], json!({"audit": audit}))]).await;
    let ns = format!("{t}-a");
    let token = format!("Bearer {}", unique("never-in-the-pod-"));
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "siem-token"}, "stringData": {"header": token}})).unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.expect("token Secret");

    // Through the real webhooks (Required: the validating one re-checks what the mutating one injected,
    // after the apiserver's defaulting) and Pod Security `restricted`.
    let pods: Api<Pod> = Api::namespaced(as_user(&format!("{t}-alice"), &[]).await, &ns);
    let created = pods.create(&dry(), &restricted_pod("web")).await.expect("restricted pod with the SIEM sidecar");
    let side = sidecar_of(&created).expect("sidecar injected");
    let args = side.args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--sink-ca", "/var/run/bulkhead/audit-sink/ca.pem"]), "{args:?}");
    assert!(
        args.windows(2)
            .any(|w| w == ["--sink-header-file", "Authorization=/var/run/bulkhead/audit-sink/header-authorization"]),
        "{args:?}"
    );
    let mount = side.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "bulkhead-audit-sink").unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/var/run/bulkhead/audit-sink", Some(true)));
    let spec = created.spec.as_ref().unwrap();
    let volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "bulkhead-audit-sink").unwrap();
    let sources = volume.projected.as_ref().unwrap().sources.clone().unwrap();
    let ca = sources[0].config_map.as_ref().expect("CA from the ConfigMap");
    assert_eq!((ca.name.as_str(), ca.optional), ("trust-bundle", Some(false)));
    assert_eq!(ca.items.as_ref().unwrap()[0].path, "ca.pem");
    let header = sources[1].secret.as_ref().expect("header from the Secret");
    assert_eq!((header.name.as_str(), header.optional), ("siem-token", Some(false)));
    assert_eq!(header.items.as_ref().unwrap()[0].key, "header");
    // The value lives only in the Secret: not in the pod, not even as an environment variable.
    let whole = serde_json::to_string(&created).unwrap();
    assert!(!whole.contains(&token) && !whole.contains("Bearer"), "the header value leaked into the pod");
    assert!(side.env.iter().flatten().all(|e| e.value_from.as_ref().is_none_or(|v| v.secret_key_ref.is_none())));

    // The projected volume is part of the intact sidecar: swapping the token's Secret is refused.
    let mut forged = created.clone();
    forged.metadata = serde_json::from_value(json!({"name": "forged"})).unwrap();
    forged.status = None;
    let spec = forged.spec.as_mut().unwrap();
    let volume = spec.volumes.as_mut().unwrap().iter_mut().find(|v| v.name == "bulkhead-audit-sink").unwrap();
    volume.projected.as_mut().unwrap().sources.as_mut().unwrap()[1].secret.as_mut().unwrap().name = "mine".into();
    let m =
        assert_denied("a swapped sink Secret", pods.create(&dry(), &forged).await, "pod.audit-sidecar", "spec.volumes");
    assert!(m.contains("bulkhead-audit-sink"), "{m}");

    delete_tenants(&client, &[&t]).await;
}

#[tokio::test]
async fn data_residency_is_merged_into_the_pods_own_affinity() {
    let client = admin().await;
    install_crd(&client).await;
    let adm = Admission::start(&client).await;
    let t = unique("g");
    let spec = json!({"podSecurity": "baseline", "audit": {"mode": "Disabled"}, "dataResidency": {"regions": ["eu-west-1", "eu-central-1"]}});
    tenants_ready(&client, &[tenant(&t, adm.shard(), &["a"], spec)]).await;
    let pods: Api<Pod> = Api::namespaced(as_user(&format!("{t}-alice"), &[]).await, &format!("{t}-a"));
    let region = |p: &Pod| -> Vec<Vec<(String, Vec<String>)>> {
        p.spec
            .as_ref()
            .unwrap()
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms
            .iter()
            .map(|term| {
                term.match_expressions
                    .iter()
                    .flatten()
                    .map(|e| (e.key.clone(), e.values.clone().unwrap_or_default()))
                    .collect()
            })
            .collect()
    };
    let plain = pods.create(&PostParams::default(), &pod("plain", json!({}))).await.expect("admitted");
    assert_eq!(
        region(&plain),
        vec![vec![(
            "topology.kubernetes.io/region".to_string(),
            vec!["eu-central-1".to_string(), "eu-west-1".to_string()]
        )]]
    );
    let own = pod(
        "zoned",
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}]},
            {"matchExpressions": [{"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-west-1"]}]}
        ]}}}}),
    );
    let zoned = pods.create(&PostParams::default(), &own).await.expect("admitted");
    let terms = region(&zoned);
    assert_eq!(terms[0][0].0, "topology.kubernetes.io/zone", "the pod's own requirement is kept");
    assert_eq!(terms[0][1].0, "topology.kubernetes.io/region", "ours is added to it");
    assert_eq!(
        terms[1],
        vec![("topology.kubernetes.io/region".to_string(), vec!["eu-west-1".to_string()])],
        "a narrower choice stays"
    );
    delete_tenants(&client, &[&t]).await;
}

#[tokio::test]
async fn a_tenant_admin_cannot_reach_another_tenant_through_rbac_or_network_policies() {
    let client = admin().await;
    install_crd(&client).await;
    let adm = Admission::start(&client).await;
    let (a, b) = (unique("a"), unique("b"));
    let spec_a = json!({"podSecurity": "baseline", "audit": {"mode": "Disabled"},
        "access": [{"kind": "User", "name": format!("{a}-alice"), "profile": "admin"}, {"kind": "User", "name": format!("{a}-dev"), "profile": "developer"}],
        "network": {"egressTo": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}]}});
    tenants_ready(
        &client,
        &[
            tenant(&a, adm.shard(), &["x", "y"], spec_a),
            tenant(&b, adm.shard(), &["x"], json!({"audit": {"mode": "Disabled"}})),
        ],
    )
    .await;
    let (a_ns, a_other, b_ns) = (format!("{a}-x"), format!("{a}-y"), format!("{b}-x"));
    let alice_name = format!("{a}-alice");
    let alice = as_user(&alice_name, &[]).await;

    // Even given `bind` on every ClusterRole (so RBAC's escalation check lets it through), a tenant
    // admin cannot reference cluster-admin or bind tenant B's user.
    let binder = format!("{}-binder", adm.shard());
    let cr: ClusterRole = serde_json::from_value(json!({"metadata": {"name": binder},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"]}]}))
    .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": binder},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": binder},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": alice_name}]}))
    .unwrap();
    Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &cr).await.unwrap();
    Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &crb).await.unwrap();

    let rbs: Api<RoleBinding> = Api::namespaced(alice.clone(), &a_ns);
    let binding = |name: &str, kind: &str, role: &str, subject: Value| -> RoleBinding {
        serde_json::from_value(json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}, "subjects": [subject]}))
        .unwrap()
    };
    let bob = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("{b}-alice")});
    let m = assert_denied(
        "binding tenant B's user",
        rbs.create(&dry(), &binding("b", "ClusterRole", "bulkhead-profile-viewer", bob)).await,
        "rbac.subject",
        "subjects[0]",
    );
    assert!(m.contains(&format!("User {b}-alice is not one of tenant {a}'s subjects")), "{m}");
    let me = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": alice_name});
    let m = assert_denied(
        "binding cluster-admin",
        rbs.create(&dry(), &binding("c", "ClusterRole", "cluster-admin", me.clone())).await,
        "rbac.role-ref",
        "roleRef.name",
    );
    assert!(m.contains("cluster-admin can never be granted"), "{m}");
    let foreign_sa = json!({"kind": "ServiceAccount", "name": "default", "namespace": b_ns});
    assert_denied(
        "binding tenant B's ServiceAccount",
        rbs.create(&dry(), &binding("s", "ClusterRole", "bulkhead-profile-viewer", foreign_sa)).await,
        "rbac.subject",
        "subjects[0]",
    );
    // Their own people and workloads, to a profile, are fine.
    let dev = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("{a}-dev")});
    rbs.create(&dry(), &binding("d", "ClusterRole", "bulkhead-profile-viewer", dev)).await.expect("own user");
    let own_sa = json!({"kind": "ServiceAccount", "name": "ci", "namespace": a_other});
    rbs.create(&dry(), &binding("e", "ClusterRole", "bulkhead-profile-developer", own_sa)).await.expect("own SA");
    // bulkhead's own bindings are hands-off.
    let managed = Api::<RoleBinding>::namespaced(client.clone(), &a_ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
        .await
        .unwrap();
    let ours = managed.items[0].name_any();
    let relabel = Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}));
    assert_denied(
        "editing a managed binding",
        rbs.patch(&ours, &PatchParams::default(), &relabel).await,
        "managed.operator-only",
        "metadata.labels",
    );
    assert_denied(
        "deleting a managed binding",
        rbs.delete(&ours, &DeleteParams::default()).await,
        "managed.operator-only",
        "metadata.name",
    );
    let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(&binder, &DeleteParams::default()).await;
    let _ = Api::<ClusterRole>::all(client.clone()).delete(&binder, &DeleteParams::default()).await;

    // NetworkPolicies cannot reopen traffic across tenants.
    let nps: Api<NetworkPolicy> = Api::namespaced(alice.clone(), &a_ns);
    let policy = |spec: Value| -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "mine"}, "spec": spec})).unwrap()
    };
    let by_name = |ns: &str| json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns]}]});
    let m = assert_denied(
        "ingress from tenant B",
        nps.create(
            &dry(),
            &policy(json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": by_name(&b_ns)}]}]})),
        )
        .await,
        "netpol.peer-namespace",
        "spec.ingress[0].from[0].namespaceSelector",
    );
    assert!(m.contains(&format!("namespace {b_ns} is neither")), "{m}");
    assert_denied(
        "ingress from every namespace",
        nps.create(&dry(), &policy(json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})))
            .await,
        "netpol.peer-namespace",
        "spec.ingress[0].from[0].namespaceSelector",
    );
    assert_denied(
        "ingress selected by a copyable label",
        nps.create(&dry(), &policy(json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"bulkhead.dev/tenant": b}}}]}]}))).await,
        "netpol.peer-namespace",
        "spec.ingress[0].from[0].namespaceSelector",
    );
    assert_denied(
        "egress to the internet",
        nps.create(
            &dry(),
            &policy(json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})),
        )
        .await,
        "netpol.ip-block",
        "spec.egress[0].to[0].ipBlock.cidr",
    );
    nps.create(
        &dry(),
        &policy(json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": by_name(&a_other)}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/25"}}]}]})),
    )
    .await
    .expect("own namespaces and listed CIDRs are fine");
    let open = Patch::Merge(json!({"spec": {"ingress": [{}]}}));
    assert_denied(
        "editing bulkhead-allow",
        nps.patch("bulkhead-allow", &PatchParams::default(), &open).await,
        "managed.operator-only",
        "metadata.labels",
    );
    assert_denied(
        "deleting bulkhead-default-deny",
        nps.delete("bulkhead-default-deny", &DeleteParams::default()).await,
        "managed.operator-only",
        "metadata.name",
    );

    delete_tenants(&client, &[&a, &b]).await;
}

#[tokio::test]
async fn services_and_namespace_labels_cannot_open_the_compartment() {
    let client = admin().await;
    install_crd(&client).await;
    let adm = Admission::start(&client).await;
    let t = unique("s");
    tenants_ready(&client, &[tenant(&t, adm.shard(), &["a", "b"], json!({"audit": {"mode": "Disabled"}}))]).await;
    let ns = format!("{t}-a");
    let svcs: Api<Service> = Api::namespaced(as_user(&format!("{t}-alice"), &[]).await, &ns);
    let svc =
        |spec: Value| -> Service { serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec})).unwrap() };
    let port = json!([{"port": 80}]);
    assert_denied(
        "NodePort",
        svcs.create(&dry(), &svc(json!({"type": "NodePort", "ports": port}))).await,
        "service.node-port",
        "spec.type",
    );
    assert_denied(
        "externalIPs",
        svcs.create(&dry(), &svc(json!({"ports": port, "externalIPs": ["198.51.100.7"]}))).await,
        "service.external-ips",
        "spec.externalIPs",
    );
    assert_denied(
        "LoadBalancer with node ports",
        svcs.create(&dry(), &svc(json!({"type": "LoadBalancer", "ports": port}))).await,
        "service.node-port",
        "spec.allocateLoadBalancerNodePorts",
    );
    let m = assert_denied(
        "ExternalName into another tenant",
        svcs.create(
            &dry(),
            &svc(json!({"type": "ExternalName", "externalName": "db.globex-payments.svc.cluster.local"})),
        )
        .await,
        "service.external-name",
        "spec.externalName",
    );
    assert!(m.contains("namespace globex-payments"), "{m}");
    svcs.create(&dry(), &svc(json!({"ports": port}))).await.expect("ClusterIP");
    svcs.create(&dry(), &svc(json!({"type": "ExternalName", "externalName": format!("db.{t}-b.svc.cluster.local")})))
        .await
        .expect("ExternalName inside the tenant");

    // A cluster administrator who is not the operator cannot move the namespace out of the tenant or loosen it.
    let namespaces: Api<Namespace> = Api::all(platform_admin().await);
    let label = |k: &str, v: Value| Patch::Merge(json!({"metadata": {"labels": {k: v}}}));
    let pp = PatchParams { dry_run: true, ..Default::default() };
    let m = assert_denied(
        "relabelling the tenant",
        namespaces.patch(&ns, &pp, &label("bulkhead.dev/tenant", json!("globex"))).await,
        "namespace.tenant-label",
        "metadata.labels[bulkhead.dev/tenant]",
    );
    assert!(m.contains(&format!("changing bulkhead.dev/tenant from {t} to globex")), "{m}");
    assert_denied(
        "removing the tenant label",
        namespaces.patch(&ns, &pp, &label("bulkhead.dev/tenant", Value::Null)).await,
        "namespace.tenant-label",
        "metadata.labels[bulkhead.dev/tenant]",
    );
    assert_denied(
        "loosening Pod Security",
        namespaces.patch(&ns, &pp, &label("pod-security.kubernetes.io/enforce", json!("privileged"))).await,
        "namespace.psa-label",
        "metadata.labels[pod-security.kubernetes.io/enforce]",
    );
    namespaces.patch(&ns, &pp, &label("cost-center", json!("7"))).await.expect("other labels are free");
    let forged: Namespace = serde_json::from_value(json!({"metadata": {"name": format!("{t}-forged"),
        "labels": {"bulkhead.dev/tenant": t, SHARD_LABEL: adm.shard()}}}))
    .unwrap();
    assert_denied(
        "a hand-made tenant namespace",
        namespaces.create(&dry(), &forged).await,
        "namespace.tenant-label",
        "metadata.labels",
    );
    delete_tenants(&client, &[&t]).await;
}

#[tokio::test]
async fn tenants_cannot_take_namespaces_or_drop_them_silently() {
    let client = admin().await;
    install_crd(&client).await;
    let adm = Admission::start(&client).await;
    let shard = adm.shard().to_string();
    // Tenant writes by a cluster administrator who is not the operator (the operator's own requests skip the hooks).
    let root = platform_admin().await;
    let t = unique("c");
    tenants_ready(&client, &[tenant(&t, &shard, &["p-q", "keep", "drop"], json!({"audit": {"mode": "Disabled"}}))])
        .await;

    // "<t>-p" + "q" is the namespace "<t>-p-q" that tenant t holds.
    let rival = format!("{t}-p");
    let m = denied("a rival Tenant", apply_tenant_as(&root, &tenant(&rival, &shard, &["q"], json!({}))).await);
    assert!(m.contains("[tenant.namespace-claimed] spec.namespaces"), "{m}");
    assert!(m.contains(&format!("namespace {t}-p-q belongs to tenant {t}")), "{m}");

    // A namespace that exists outside bulkhead is never taken over.
    let other = unique("f");
    let plain: Namespace = serde_json::from_value(json!({"metadata": {"name": format!("{other}-legacy")}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &plain).await.unwrap();
    let claim = tenant(&other, &shard, &["legacy"], json!({}));
    // The webhook judges from its watch of namespaces, which may lag the
    // create by a moment (the controller refuses the takeover either way).
    wait_for("the webhook to see the new namespace", WAIT, || async {
        apply_tenant_with(&root, &claim, PatchParams::apply("e2e").force().dry_run()).await.is_err().then_some(())
    })
    .await;
    let m = denied("claiming a foreign namespace", apply_tenant_as(&root, &claim).await);
    assert!(m.contains("[tenant.namespace-foreign] spec.namespaces"), "{m}");

    // A spec the plan cannot express is refused at the door.
    let m = denied(
        "PCI-DSS with open-ended egress",
        apply_tenant_as(
            &root,
            &tenant(
                &unique("v"),
                &shard,
                &["a"],
                json!({"compliance": ["PCI-DSS"], "network": {"egressTo": [{"cidr": "10.0.0.0/8"}]}}),
            ),
        )
        .await,
    );
    assert!(m.contains("[tenant.plan] spec"), "{m}");

    // Dropping a held namespace needs a confirmation naming it (deletionPolicy Delete here: it would erase data).
    let shrunk = tenant(&t, &shard, &["p-q", "keep"], json!({"audit": {"mode": "Disabled"}}));
    let m = denied("dropping a namespace", apply_tenant_as(&root, &shrunk).await);
    assert!(m.contains("[tenant.namespace-removal] spec.namespaces"), "{m}");
    assert!(m.contains(&format!("removing namespace {t}-drop would delete it with all its data")), "{m}");
    assert!(m.contains("bulkhead.dev/confirm-namespace-removal=drop"), "{m}");
    let mut confirmed = shrunk.clone();
    confirmed["metadata"]["annotations"] = json!({"bulkhead.dev/confirm-namespace-removal": "drop"});
    apply_tenant_as(&root, &confirmed).await.expect("confirmed removal");

    let _ = Api::<Namespace>::all(client.clone()).delete(&format!("{other}-legacy"), &DeleteParams::default()).await;
    delete_tenants(&client, &[&t]).await;
}

#[tokio::test]
async fn with_the_operator_down_tenant_pods_fail_closed_and_nothing_else_is_touched() {
    let client = admin().await;
    install_crd(&client).await;
    let mut adm = Admission::start(&client).await;
    let t = unique("k");
    tenants_ready(&client, &[tenant(&t, adm.shard(), &["a"], json!({"podSecurity": "baseline"}))]).await;
    let ns = format!("{t}-a");
    let alice = as_user(&format!("{t}-alice"), &[]).await;
    let pods: Api<Pod> = Api::namespaced(alice.clone(), &ns);
    pods.create(&dry(), &pod("ok", json!({}))).await.expect("admitted while the operator runs");
    let tls = Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let secret = format!("{}-webhook-tls", adm.name);
    let ca_before = tls.get(&secret).await.unwrap().data.unwrap()["ca.crt"].clone();

    adm.op.kill();
    // Tenant pods: refused, not waved through.
    let m = denied("a tenant pod with the operator down", pods.create(&dry(), &pod("down", json!({}))).await);
    assert!(m.contains("failed calling webhook"), "{m}");
    // Everything else works: other kinds in the tenant namespace, kube-system, other namespaces.
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    Api::<ConfigMap>::namespaced(alice.clone(), &ns).create(&dry(), &cm).await.expect("configmaps are not hooked");
    Api::<Pod>::namespaced(client.clone(), "kube-system")
        .create(&dry(), &pod("sys", json!({})))
        .await
        .expect("kube-system unaffected");
    let free = unique("free");
    let plain: Namespace =
        serde_json::from_value(json!({"metadata": {"name": free, "labels": {SHARD_LABEL: adm.shard()}}})).unwrap();
    let root = platform_admin().await;
    Api::<Namespace>::all(root.clone())
        .create(&PostParams::default(), &plain)
        .await
        .expect("namespaces outside tenants");
    // (the namespace's default ServiceAccount appears a moment after the namespace)
    let outside: Api<Pod> = Api::namespaced(root.clone(), &free);
    wait_for("a hostNetwork pod outside tenants to be admitted", Duration::from_secs(20), || {
        let outside = outside.clone();
        async move { outside.create(&PostParams::default(), &pod("p", json!({"hostNetwork": true}))).await.ok().map(|_| ()) }
    })
    .await;
    Api::<Namespace>::all(client.clone()).delete(&free, &DeleteParams::default()).await.expect("and their deletion");

    // Back up: same CA (the caBundle did not change), and tenant pods are admitted again.
    adm.op.restart();
    wait_for("tenant pods admitted again", WAIT, || {
        let pods = pods.clone();
        async move { pods.create(&dry(), &pod("back", json!({}))).await.ok().map(|_| ()) }
    })
    .await;
    assert_eq!(tls.get(&secret).await.unwrap().data.unwrap()["ca.crt"], ca_before, "a restart keeps the CA");
    delete_tenants(&client, &[&t]).await;
}

/// `helm template` of the chart with admission on, as documents (the pinned helm from `e2e/tools`).
fn render_chart(release: &str, namespace: &str) -> Vec<Value> {
    static TOOLS: OnceLock<()> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let status = Command::new(repo().join("e2e/tools")).status().expect("e2e/tools runs");
        assert!(status.success(), "e2e/tools could not install helm; run it by hand to see why");
    });
    let chart = repo().join("charts/bulkhead");
    let out = Command::new(repo().join(".bin/helm"))
        .args(["template", release, chart.to_str().expect("utf-8"), "--namespace", namespace])
        .args(["--set", "admission.enabled=true"])
        .output()
        .expect("helm runs");
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    serde_yaml::Deserializer::from_str(&yaml)
        .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}

#[tokio::test]
async fn the_charts_rbac_is_enough_for_the_webhooks() {
    let client = admin().await;
    install_crd(&client).await;
    remove_leftovers(&client).await;
    let shard = unique("adm");
    // The release name contains the chart name, so it is the full name: configurations and RBAC share it.
    let release = format!("{CONFIG_PREFIX}{}-{shard}", std::process::id());
    let ns = unique("bhadm");
    let docs = render_chart(&release, &ns);
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").expect("deployment");
    let args: Vec<&str> = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for arg in ["--admission-listen=0.0.0.0:9443", "--admission-mode=service", &format!("--admission-name={release}")] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    // Only the ServiceAccount and RBAC of the chart: the operator runs here, as that ServiceAccount.
    let sa = docs.iter().find(|d| d["kind"] == "ServiceAccount").expect("sa")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    for doc in docs.iter().filter(|d| {
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
            .contains(&d["kind"].as_str().unwrap_or(""))
    }) {
        let (group, version) = doc["apiVersion"].as_str().unwrap().split_once('/').unwrap_or(("", "v1"));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
        let plural = format!("{}s", doc["kind"].as_str().unwrap().to_ascii_lowercase());
        let ar = kube::core::ApiResource::from_gvk_with_plural(&gvk, &plural);
        let name = doc["metadata"]["name"].as_str().unwrap();
        let api: Api<kube::api::DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(n) => Api::namespaced_with(client.clone(), n, &ar),
            None if doc["kind"].as_str().unwrap().starts_with("Cluster") => Api::all_with(client.clone(), &ar),
            None => Api::namespaced_with(client.clone(), &ns, &ar),
        };
        api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let mut kc = kube::config::Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    for named in &mut kc.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{ns}:{sa}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]);
        }
    }
    let dir = std::env::temp_dir().join(format!("bulkhead-e2e-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig-sa");
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    // No --operator-username: the operator asks the apiserver who it is (its ServiceAccount).
    let labels = format!("{SHARD_LABEL}={shard}");
    let op = Operator::start_replica_with(
        &shard,
        "sa",
        &["--operator-namespace", &ns],
        &[
            ("KUBECONFIG", path.to_str().unwrap()),
            ("BULKHEAD_ADMISSION_LISTEN", "127.0.0.1:0"),
            ("BULKHEAD_ADMISSION_NAME", &release),
            ("BULKHEAD_ADMISSION_NAMESPACE_LABELS", &labels),
            ("BULKHEAD_SIDECAR_IMAGE", SIDECAR_IMAGE),
        ],
    );
    let adm = Admission { op, name: release.clone() };
    let t = unique("h");
    tenants_ready(&client, &[tenant(&t, &shard, &["a"], json!({"podSecurity": "baseline"}))]).await;
    let logs = adm.op.logs();
    assert!(logs.contains(&format!("operator=\"system:serviceaccount:{ns}:{sa}\"")), "identity not learned: {logs}");
    let pods: Api<Pod> = Api::namespaced(as_user(&format!("{t}-alice"), &[]).await, &format!("{t}-a"));
    let p = pods.create(&dry(), &pod("web", json!({}))).await.expect("admitted");
    assert!(sidecar_of(&p).is_some(), "sidecar injected by the operator running with the chart's RBAC");
    assert!(Api::<Secret>::namespaced(client.clone(), &ns).get(&format!("{release}-webhook-tls")).await.is_ok());
    // The operator's own writes (as its ServiceAccount) pass its own hooks.
    delete_tenants(&client, &[&t]).await;
    drop(adm);
    for kind in ["clusterrolebinding", "clusterrole"] {
        kubectl(&["delete", kind, &release, "--ignore-not-found", "--wait=false"]);
    }
    let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
}
