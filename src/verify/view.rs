//! What verification reads from the cluster.
//!
//! [`ClusterView`] is what every tenant's checks share: Tenants, namespaces,
//! NetworkPolicies and RoleBindings of the whole cluster, webhook
//! configurations and digests of every tenant's keys. [`TenantFacts`] is
//! one tenant's plan (the controller's own, from [`crate::plan`]) and its
//! live objects, read fresh for every check of that tenant.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, ObjectList};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::{AccessEntry, Tenant};
use crate::controller::cache::drop_unread;
use crate::controller::keys::decode_source;
use crate::plan::quota::Observed;
use crate::plan::secrets::{KEYS_SECRET, Material, source_name};
use crate::plan::{self, DesiredState, ManagedObject, ObjectKey};

use super::packed::{ByNamespace, Namespaces};
use super::{Settings, VerifyError};

/// Phase of a namespace a tenant holds (as the controller records it).
const PHASE_READY: &str = "Ready";

/// The namespaces the Tenant's status records as held and ready: only the
/// controller writes the status, so this (not a label) says whose a namespace is.
pub fn held_namespaces(tenant: &Tenant) -> Vec<String> {
    tenant
        .status
        .as_ref()
        .map(|s| s.namespaces.iter().filter(|n| n.phase == PHASE_READY).map(|n| n.name.clone()).collect())
        .unwrap_or_default()
}

/// Lists every object of a kind, page by page, without managedFields (most
/// of each object's size; no check reads them, and a view is kept for minutes).
pub(crate) async fn list_all<K>(api: &Api<K>, params: &ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    for_each_page(api, params, |page| out.extend(page)).await?;
    Ok(out)
}

/// Hands every page of a list to `take`, each object without what nothing reads ([`drop_unread`]).
async fn for_each_page<K>(api: &Api<K>, params: &ListParams, mut take: impl FnMut(Vec<K>)) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.clone().limit(500);
    loop {
        let page: ObjectList<K> = api.list(&params).await?;
        take(
            page.items
                .into_iter()
                .map(|mut o| {
                    drop_unread(&mut o);
                    o
                })
                .collect(),
        );
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// SHA-256 digests of the key values (`dek.*`, `audit-key.*`) of a key Secret.
pub fn key_digests(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .as_ref()
        .map(|data| {
            data.iter()
                .filter(|(k, _)| k.starts_with("dek.") || k.starts_with("audit-key."))
                .map(|(k, v)| (k.clone(), hex::encode(Sha256::digest(&v.0))))
                .collect()
        })
        .unwrap_or_default()
}

/// bulkhead's webhook configurations, or why they could not be read.
#[derive(Clone, Debug, Default)]
pub struct Webhooks {
    /// Validating configurations named `bulkhead*` or labelled as managed by bulkhead.
    pub validating: Vec<ValidatingWebhookConfiguration>,
    /// Mutating configurations, likewise.
    pub mutating: Vec<MutatingWebhookConfiguration>,
    /// Why they could not be listed, if so.
    pub error: Option<String>,
    /// Whether that was the verifier lacking the right to list them.
    pub forbidden: bool,
}

fn is_bulkhead<K: Resource>(o: &K) -> bool {
    o.meta().name.as_deref().is_some_and(|n| n.starts_with("bulkhead"))
        || o.meta().labels.as_ref().and_then(|l| l.get(plan::LABEL_MANAGED_BY)).is_some_and(|v| v == plan::MANAGED_BY)
}

/// Lists every object of a kind into the view's compact form, page by page,
/// so no more than one page is ever held in typed form.
async fn packed<K>(api: &Api<K>, params: &ListParams) -> Result<ByNamespace<K>, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let mut packed = ByNamespace::default();
    for_each_page(api, params, |page| packed.extend(page)).await?;
    Ok(packed)
}

/// What one tenant's checks read about every tenant: who it names and what it holds.
#[derive(Clone, Debug)]
pub struct TenantOutline {
    /// The Tenant's name.
    pub name: String,
    /// Its access entries (subjects and profiles).
    pub access: Vec<AccessEntry>,
    /// The namespaces its status records as held and ready.
    pub held: Vec<String>,
}

impl TenantOutline {
    /// The outline of `tenant`.
    pub fn of(tenant: &Tenant) -> Self {
        Self { name: tenant.name_any(), access: tenant.spec.access.clone(), held: held_namespaces(tenant) }
    }
}

/// What every tenant's checks share, read once per run.
pub struct ClusterView {
    /// Every Tenant, in outline: a view lives for minutes, and a thousand
    /// typed Tenants with their status are megabytes no check reads.
    pub tenants: Vec<TenantOutline>,
    /// Every namespace and its labels.
    pub namespaces: Namespaces,
    /// Every NetworkPolicy, by namespace.
    pub policies: ByNamespace<NetworkPolicy>,
    /// Every RoleBinding, by namespace.
    pub role_bindings: ByNamespace<RoleBinding>,
    /// bulkhead's webhook configurations.
    pub webhooks: Webhooks,
    /// Pod networks used to model pod addresses.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Digests of each tenant's keys (from its first namespace), or why they could not be read.
    pub key_digests: BTreeMap<String, Result<BTreeSet<String>, String>>,
    /// When this view was read.
    pub fetched_at: Instant,
}

impl ClusterView {
    /// Reads the view of `tenants`.
    pub async fn fetch(client: &Client, settings: &Settings, tenants: Vec<TenantOutline>) -> Result<Self, VerifyError> {
        let lp = ListParams::default();
        let mut namespaces = Namespaces::default();
        for_each_page(&Api::<Namespace>::all(client.clone()), &lp, |page| {
            for n in page {
                namespaces.insert(&n.name_any(), n.labels());
            }
        })
        .await
        .map_err(|e| VerifyError::api("list namespaces", e))?;
        let policies = packed(&Api::<NetworkPolicy>::all(client.clone()), &lp)
            .await
            .map_err(|e| VerifyError::api("list NetworkPolicies", e))?;
        let role_bindings = packed(&Api::<RoleBinding>::all(client.clone()), &lp)
            .await
            .map_err(|e| VerifyError::api("list RoleBindings", e))?;
        let (vwc, mwc) = (
            Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
        );
        let webhooks = match futures::try_join!(list_all(&vwc, &lp), list_all(&mwc, &lp)) {
            Ok((v, m)) => Webhooks {
                validating: v.into_iter().filter(is_bulkhead).collect(),
                mutating: m.into_iter().filter(is_bulkhead).collect(),
                error: None,
                forbidden: false,
            },
            Err(e) => Webhooks {
                error: Some(format!("cannot list webhook configurations: {e}")),
                forbidden: forbidden(&e),
                ..Default::default()
            },
        };
        let pod_cidrs =
            if settings.pod_cidrs.is_empty() { node_pod_cidrs(client).await } else { settings.pod_cidrs.clone() };
        let key_digests = futures::stream::iter(tenants.iter().map(|t| {
            let client = client.clone();
            let name = t.name.clone();
            let first = t.held.first().cloned();
            async move {
                let Some(ns) = first else {
                    return (name, Ok(BTreeSet::new()));
                };
                let got = named(&Api::<Secret>::namespaced(client, &ns), KEYS_SECRET).await;
                let digests = match got {
                    Ok(Some(s)) => Ok(key_digests(&s).into_values().collect()),
                    Ok(None) => Ok(BTreeSet::new()),
                    Err(e) => Err(format!("cannot read Secret {ns}/{KEYS_SECRET}: {e}")),
                };
                (name, digests)
            }
        }))
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
        Ok(Self {
            tenants,
            namespaces,
            policies,
            role_bindings,
            webhooks,
            pod_cidrs,
            key_digests,
            fetched_at: Instant::now(),
        })
    }

    /// Namespaces of tenants other than `tenant`: held by them per their status,
    /// or labelled as theirs (released namespaces keep the label and the data).
    pub fn other_tenant_namespaces(&self, tenant: &str, own: &[String]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for t in self.tenants.iter().filter(|t| t.name != tenant) {
            for ns in &t.held {
                out.insert(ns.clone(), t.name.clone());
            }
        }
        for (ns, labels) in self.namespaces.iter() {
            if let Some(holder) = labels.get(plan::LABEL_TENANT)
                && holder != tenant
            {
                out.entry(ns.to_string()).or_insert_with(|| holder.to_string());
            }
        }
        for ns in own {
            out.remove(ns);
        }
        out
    }
}

/// The nodes' pod CIDRs, or the usual defaults when there are none or they cannot be read.
async fn node_pod_cidrs(client: &Client) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    if let Ok(nodes) = list_all(&Api::<Node>::all(client.clone()), &ListParams::default()).await {
        for node in nodes {
            let spec = node.spec.unwrap_or_default();
            for cidr in spec.pod_cidrs.unwrap_or_default().into_iter().chain(spec.pod_cidr) {
                if let Ok(net) = cidr.parse::<ipnet::IpNet>()
                    && !out.contains(&net)
                {
                    out.push(net);
                }
            }
        }
    }
    if out.is_empty() {
        out = ["10.244.0.0/16", "fd00:10:244::/56"].iter().filter_map(|c| c.parse().ok()).collect();
    }
    out
}

/// Whether the key material could be read, so projections can be compared value for value.
#[derive(Clone)]
pub enum MaterialState {
    /// Decoded from the source Secret: projections are planned and compared exactly.
    Known(Box<Material>),
    /// Not readable; keys are checked by shape and ids only. The reason says why.
    Unknown(String),
}

/// One tenant's plan and live objects.
pub struct TenantFacts {
    /// The Tenant.
    pub tenant: Tenant,
    /// The tenant's name.
    pub name: String,
    /// The plan, as the controller makes it (held namespaces only, projections when known, rebalanced quotas).
    pub desired: DesiredState,
    /// The key material, if readable.
    pub material: MaterialState,
    /// The live object (as JSON) for every planned object; None when missing.
    pub live: BTreeMap<ObjectKey, Option<Value>>,
    /// The shared profile ClusterRoles as planned, with their live JSON.
    pub profiles: Vec<(ManagedObject, Option<Value>)>,
    /// NetworkPolicies in each of the tenant's namespaces, read now.
    pub policies: BTreeMap<String, Vec<NetworkPolicy>>,
    /// RoleBindings in each of the tenant's namespaces, read now.
    pub role_bindings: BTreeMap<String, Vec<RoleBinding>>,
    /// ResourceQuotas in each of the tenant's namespaces, read now.
    pub quotas: BTreeMap<String, Vec<ResourceQuota>>,
    /// The bulkhead-keys Secret of each namespace (None when missing).
    pub key_secrets: BTreeMap<String, Option<Secret>>,
    /// The pods of the tenant's namespaces, read now, or why they could not be listed.
    pub pods: Result<Vec<Pod>, Unreadable>,
}

/// Why objects of the tenant's namespaces could not be listed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unreadable {
    /// What was refused and the apiserver's answer.
    pub message: String,
    /// Whether that was the verifier lacking the right (403).
    pub forbidden: bool,
}

impl From<Unreadable> for String {
    fn from(u: Unreadable) -> Self {
        u.message
    }
}

/// One object by name: `get`, or, when only `list` is granted (the operator's
/// least-privilege RBAC lists what it watches), a list by field selector.
pub(crate) async fn named<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            let found = api.list(&ListParams::default().fields(&format!("metadata.name={name}"))).await?;
            Ok(found.items.into_iter().next())
        }
        other => other,
    }
}

/// Whether an error is the apiserver refusing the verifier itself.
pub(crate) fn forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

async fn live_json(client: &Client, key: &ObjectKey) -> Result<Option<Value>, String> {
    match named(&key.api(client), &key.name).await {
        Ok(o) => Ok(o.map(|mut o| {
            // Items of a list (the fallback) carry no apiVersion and kind.
            let ar = key.kind.api_resource();
            o.types.get_or_insert(kube::core::TypeMeta { api_version: ar.api_version, kind: ar.kind });
            serde_json::to_value(o).unwrap_or(Value::Null)
        })),
        Err(e) => Err(format!("cannot read {key}: {e}")),
    }
}

async fn per_namespace<K>(client: &Client, namespaces: &[String]) -> Result<BTreeMap<String, Vec<K>>, Unreadable>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    futures::stream::iter(namespaces.iter().cloned())
        .map(|ns| async move {
            let api = Api::<K>::namespaced(client.clone(), &ns);
            list_all(&api, &ListParams::default()).await.map(|items| (ns.clone(), items)).map_err(|e| Unreadable {
                message: format!("cannot list {} in {ns}: {e}", K::kind(&())),
                forbidden: forbidden(&e),
            })
        })
        .buffer_unordered(8)
        .try_collect()
        .await
}

impl TenantFacts {
    /// Plans the tenant as the controller does and reads its live objects.
    pub async fn fetch(
        client: &Client,
        settings: &Settings,
        view: &ClusterView,
        tenant: &Tenant,
    ) -> Result<Self, String> {
        let _ = view;
        let name = tenant.name_any();
        if tenant.status.is_none() {
            return Err(format!(
                "Tenant {name} has no status yet: the operator has not reconciled it, so there is nothing to verify"
            ));
        }
        let held: BTreeSet<String> = held_namespaces(tenant).into_iter().collect();
        let blocked: BTreeSet<String> = tenant
            .spec
            .namespaces
            .iter()
            .map(|n| plan::namespace_name(&name, &n.name))
            .filter(|n| !held.contains(n))
            .collect();
        let usable = plan::namespaces::without(tenant, &blocked);
        let mut desired = plan::plan(&usable, &settings.plan)
            .map_err(|e| format!("Tenant {name} cannot be planned, so its controls cannot be compared: {e}"))?;
        let namespaces = desired.namespaces.clone();

        let source_ns = &settings.plan.operator_namespace;
        let source = named(&Api::<Secret>::namespaced(client.clone(), source_ns), &source_name(&name)).await;
        let material = match source {
            Ok(Some(secret)) => match decode_source(settings.master_key.as_deref(), &name, &secret) {
                Ok(m) if m.current().is_some() => MaterialState::Known(Box::new(m)),
                Ok(_) => MaterialState::Unknown("the source Secret holds no key".into()),
                Err(e) => MaterialState::Unknown(format!("the source Secret cannot be opened: {e}")),
            },
            Ok(None) => {
                MaterialState::Unknown(format!("the source Secret {source_ns}/{} is missing", source_name(&name)))
            }
            Err(e) => MaterialState::Unknown(format!("the source Secret cannot be read: {e}")),
        };
        if let MaterialState::Known(m) = &material {
            desired.objects.extend(plan::secrets::projections(&name, &namespaces, m));
        }

        let (quotas, policies, role_bindings) = futures::try_join!(
            per_namespace::<ResourceQuota>(client, &namespaces),
            per_namespace::<NetworkPolicy>(client, &namespaces),
            per_namespace::<RoleBinding>(client, &namespaces),
        )?;
        let observed: BTreeMap<String, Observed> = quotas
            .iter()
            .filter_map(|(ns, rqs)| {
                rqs.iter().find(|rq| rq.name_any() == plan::quota::QUOTA).map(|rq| (ns.clone(), Observed::of(rq)))
            })
            .collect();
        plan::quota::apply_rebalance(&mut desired.objects, &name, &usable.spec, &namespaces, &observed)
            .map_err(|e| format!("Tenant {name} cannot be planned: {e}"))?;

        let live = futures::stream::iter(desired.objects.iter().map(|o| o.key()))
            .map(|key| async move { live_json(client, &key).await.map(|v| (key, v)) })
            .buffer_unordered(settings.concurrency.max(1))
            .try_collect::<BTreeMap<_, _>>()
            .await?;
        let mut profiles = Vec::new();
        for role in plan::access::profile_cluster_roles() {
            let v = live_json(client, &role.key()).await?;
            profiles.push((role, v));
        }
        // Not fatal: only the pod checks need pods, and the operator's own RBAC may not list them.
        let pods = per_namespace::<Pod>(client, &namespaces).await.map(|by_ns| by_ns.into_values().flatten().collect());
        let key_secrets = futures::stream::iter(namespaces.iter().cloned())
            .map(|ns| async move {
                named(&Api::<Secret>::namespaced(client.clone(), &ns), KEYS_SECRET)
                    .await
                    .map(|s| (ns.clone(), s))
                    .map_err(|e| format!("cannot read Secret {ns}/{KEYS_SECRET}: {e}"))
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(Self {
            tenant: tenant.clone(),
            name,
            desired,
            material,
            live,
            profiles,
            policies,
            role_bindings,
            quotas,
            key_secrets,
            pods,
        })
    }

    /// The tenant's namespaces (held and planned).
    pub fn namespaces(&self) -> &[String] {
        &self.desired.namespaces
    }
}
