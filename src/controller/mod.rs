//! The Tenant controller: watch, plan, apply, prune, report.

pub mod activity;
pub mod apply;
pub mod backoff;
pub mod cache;
pub mod diff;
pub mod error;
pub mod finalize;
pub mod keys;
pub mod notify;
pub mod prune;
pub mod reconcile;
pub mod shared;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::StoredTenant;
use crate::leader::Leadership;
use crate::plan::{self, LABEL_MANAGED_BY, MANAGED_BY, ObjectKey, object::Kind};
use crate::shutdown::Shutdown;
use crate::telemetry::health::Readiness;
use crate::telemetry::metrics::Metrics;
pub use cache::{Cache, Lookup, OwnWrites, Reads, Triggers};
pub use error::Error;

/// Options of the controller manager.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tenants reconciled at once.
    pub concurrency: u16,
    /// Objects of one tenant applied at once.
    pub apply_concurrency: usize,
    /// Object writes in flight at once across all tenants.
    pub api_concurrency: usize,
    /// Page size for the initial lists of the watches.
    pub page_size: u32,
    /// The plan configuration.
    pub plan: plan::Config,
    /// Name reported on Events.
    pub instance: String,
    /// Master key wrapping every tenant's key material at rest, if configured.
    pub master_key: Option<Arc<keys::MasterKey>>,
    /// Only Tenants matching this label selector are reconciled (sharding, canaries, tests).
    pub tenant_selector: Option<String>,
    /// How often every Tenant's isolation is verified (spread over the interval); None disables it.
    pub verify_interval: Option<Duration>,
    /// Pod networks for the cross-tenant connectivity check; empty reads the nodes' podCIDRs.
    pub verify_pod_cidrs: Vec<ipnet::IpNet>,
    /// The audit sidecar image the webhook injects, so verification compares it too.
    pub verify_sidecar_image: Option<String>,
    /// Metrics of this process.
    pub metrics: Arc<Metrics>,
    /// Readiness gates; the controller opens [`CACHES_GATE`].
    pub readiness: Readiness,
    /// Whether this replica leads; only the leader reconciles.
    pub leadership: Leadership,
    /// Process shutdown: in-flight reconciles finish, then [`run`] returns.
    pub shutdown: Shutdown,
}

/// Readiness gate the controller opens once its watch caches are filled.
pub const CACHES_GATE: &str = "watch-caches";

impl Default for Options {
    fn default() -> Self {
        Self {
            concurrency: 32,
            apply_concurrency: 16,
            api_concurrency: 64,
            page_size: 500,
            plan: plan::Config::default(),
            instance: "bulkhead".into(),
            master_key: None,
            tenant_selector: None,
            verify_interval: Some(Duration::from_secs(3600)),
            verify_pod_cidrs: Vec::new(),
            verify_sidecar_image: None,
            metrics: Arc::new(Metrics::new()),
            readiness: Readiness::new(),
            leadership: Leadership::always(),
            shutdown: Shutdown::new(),
        }
    }
}

/// Watch caches of every managed kind.
pub struct Caches {
    /// Every namespace in the cluster (metadata only): bulkhead must see namespaces it does not own to refuse them.
    pub namespaces: Arc<Cache<PartialObjectMeta<Namespace>>>,
    /// Default ServiceAccounts of tenant namespaces.
    pub service_accounts: Arc<Cache<ServiceAccount>>,
    /// Managed NetworkPolicies.
    pub network_policies: Arc<Cache<NetworkPolicy>>,
    /// Managed ResourceQuotas (with status, for tenant-wide quotas).
    pub resource_quotas: Arc<Cache<ResourceQuota>>,
    /// Managed LimitRanges.
    pub limit_ranges: Arc<Cache<LimitRange>>,
    /// Managed RoleBindings.
    pub role_bindings: Arc<Cache<RoleBinding>>,
    /// Managed ClusterRoles (profiles and per-tenant).
    pub cluster_roles: Arc<Cache<ClusterRole>>,
    /// Managed ClusterRoleBindings.
    pub cluster_role_bindings: Arc<Cache<ClusterRoleBinding>>,
    /// Managed Secrets: key sources in the operator namespace and projections in tenant namespaces.
    pub secrets: Arc<Cache<Secret>>,
}

impl Caches {
    /// Empty caches; the key sources live in `operator_namespace`.
    fn new(operator_namespace: &str) -> Self {
        Self {
            namespaces: Cache::new(Kind::Namespace, Reads::Nothing),
            service_accounts: Cache::new(Kind::ServiceAccount, Reads::Nothing),
            network_policies: Cache::new(Kind::NetworkPolicy, Reads::Nothing),
            resource_quotas: Cache::new(Kind::ResourceQuota, Reads::All),
            limit_ranges: Cache::new(Kind::LimitRange, Reads::Nothing),
            role_bindings: Cache::new(Kind::RoleBinding, Reads::Nothing),
            cluster_roles: Cache::new(Kind::ClusterRole, Reads::Nothing),
            cluster_role_bindings: Cache::new(Kind::ClusterRoleBinding, Reads::Nothing),
            secrets: Cache::new(Kind::Secret, Reads::In(operator_namespace.to_string())),
        }
    }

    /// The cache holding objects of `kind`.
    fn of_kind(&self, kind: Kind) -> &dyn Lookup {
        match kind {
            Kind::Namespace => self.namespaces.as_ref(),
            Kind::ServiceAccount => self.service_accounts.as_ref(),
            Kind::NetworkPolicy => self.network_policies.as_ref(),
            Kind::ResourceQuota => self.resource_quotas.as_ref(),
            Kind::LimitRange => self.limit_ranges.as_ref(),
            Kind::RoleBinding => self.role_bindings.as_ref(),
            Kind::ClusterRole => self.cluster_roles.as_ref(),
            Kind::ClusterRoleBinding => self.cluster_role_bindings.as_ref(),
            Kind::Secret => self.secrets.as_ref(),
        }
    }

    /// Whether the cached object for `key` holds `desired`, the stamped
    /// planned object whose applied-hash is `hash`; None when not cached.
    pub fn is_as_planned(&self, key: &ObjectKey, hash: &str, desired: &serde_json::Value) -> Option<bool> {
        self.of_kind(key.kind).is_as_planned(key.namespace.as_deref(), &key.name, hash, &|observed| {
            apply::holds(key.kind, observed, desired)
        })
    }

    /// The cached resourceVersion of `key`, if cached.
    pub fn resource_version(&self, key: &ObjectKey) -> Option<String> {
        self.of_kind(key.kind).resource_version(key.namespace.as_deref(), &key.name)
    }

    /// Every object bulkhead still manages for `tenant` (released objects excluded).
    pub fn owned(&self, tenant: &str) -> Vec<ObjectKey> {
        // A fixed order (the one this list always had), so prune and release act in the same sequence every time.
        const ORDER: [Kind; 9] = [
            Kind::Namespace,
            Kind::ServiceAccount,
            Kind::NetworkPolicy,
            Kind::ResourceQuota,
            Kind::LimitRange,
            Kind::RoleBinding,
            Kind::ClusterRole,
            Kind::ClusterRoleBinding,
            Kind::Secret,
        ];
        ORDER
            .into_iter()
            .flat_map(|kind| {
                self.of_kind(kind).managed_of_tenant(tenant).into_iter().map(move |(namespace, name)| ObjectKey {
                    kind,
                    namespace,
                    name,
                })
            })
            .collect()
    }

    async fn wait_ready(&self) {
        futures::future::join_all(Kind::ALL.iter().map(|k| self.of_kind(*k).wait_ready())).await;
    }
}

/// Shared state of all reconciles.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Controller options.
    pub options: Options,
    /// Watch caches.
    pub caches: Caches,
    /// Echoes of our own writes.
    pub own_writes: Arc<OwnWrites>,
    /// Echoes of our own finalizer patches on Tenants, by Tenant name.
    pub own_tenant_writes: Arc<OwnWrites<String>>,
    /// Our Tenant writes the store has not shown yet.
    pub tenant_writes: cache::TenantWrites,
    /// Kubernetes Event recorder.
    pub recorder: crate::telemetry::events::Recorder,
    /// Metrics of this process.
    pub metrics: Arc<Metrics>,
    /// Reconciles in flight, for background work that must yield to them.
    pub activity: activity::Activity,
    /// Permits for object writes in flight ([`Options::api_concurrency`]).
    pub api_slots: tokio::sync::Semaphore,
}

impl Context {
    /// Takes a write of ours (the apiserver's answer, as JSON) into the cache
    /// at once, so the next reconcile sees it even before the watch does (a
    /// stale cache would write again, or take a just-created key source for
    /// a lost one), and remembers it so its watch echo does not trigger a
    /// reconcile. `as_planned`: the applied-hash of the plan the answer holds.
    pub fn remember_write(&self, key: ObjectKey, written: serde_json::Value, as_planned: Option<&str>) {
        let version = written.pointer("/metadata/resourceVersion").and_then(|v| v.as_str()).map(str::to_string);
        // Recorded first: the echo may arrive while the cache is updated.
        self.own_writes.record(key.clone(), version);
        if !self.caches.of_kind(key.kind).write_through(written, as_planned) {
            // The watch is already past this write: its echo has come or never will.
            self.own_writes.forget(&key);
        }
    }
}

fn spawn_cache<K>(client: &Client, cache: &Arc<Cache<K>>, selector: Option<&str>, page_size: u32, triggers: &Triggers)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let mut cfg = watcher::Config::default().page_size(page_size);
    if let Some(s) = selector {
        cfg = cfg.labels(s);
    }
    let stream = watcher(Api::<K>::all(client.clone()), cfg).backoff(backoff::WatchBackoff::default());
    tokio::spawn(cache.clone().run(stream, triggers.clone()));
}

/// A stream over a receiver shared by successive leadership terms.
fn shared_stream<T: Send + 'static>(
    rx: Arc<tokio::sync::Mutex<futures::channel::mpsc::UnboundedReceiver<T>>>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |rx| async move {
        let item = rx.lock().await.next().await;
        item.map(|i| (i, rx))
    })
}

/// The watch caches, running, and the triggers they send: started before
/// the controller so that the admission webhooks can share the namespace
/// cache (every replica keeps it warm, leader or not).
pub struct Watches {
    caches: Caches,
    own_writes: Arc<OwnWrites>,
    tenant_rx: futures::channel::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<StoredTenant>>,
    shared_rx: futures::channel::mpsc::UnboundedReceiver<()>,
}

impl Watches {
    /// Every namespace of the cluster, as much as a namespace claim reads of it.
    pub fn namespaces(&self) -> Arc<Cache<PartialObjectMeta<Namespace>>> {
        self.caches.namespaces.clone()
    }
}

/// Starts the watch caches (they run until the process ends, retrying with backoff).
pub fn watch(client: &Client, options: &Options) -> Watches {
    let (tenant_tx, tenant_rx) = futures::channel::mpsc::unbounded();
    let (shared_tx, shared_rx) = futures::channel::mpsc::unbounded();
    let own_writes = Arc::new(OwnWrites::default());
    let triggers = Triggers { tenants: tenant_tx, shared: shared_tx, own_writes: own_writes.clone() };
    let caches = Caches::new(&options.plan.operator_namespace);
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let page = options.page_size;

    let ns_stream =
        watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default().page_size(page))
            .backoff(backoff::WatchBackoff::default());
    tokio::spawn(caches.namespaces.clone().run(ns_stream, triggers.clone()));
    spawn_cache(client, &caches.service_accounts, Some(&managed), page, &triggers);
    spawn_cache(client, &caches.network_policies, Some(&managed), page, &triggers);
    spawn_cache(client, &caches.resource_quotas, Some(&managed), page, &triggers);
    spawn_cache(client, &caches.limit_ranges, Some(&managed), page, &triggers);
    spawn_cache(client, &caches.role_bindings, Some(&managed), page, &triggers);
    spawn_cache(client, &caches.cluster_roles, Some(&managed), page, &triggers);
    spawn_cache(client, &caches.cluster_role_bindings, Some(&managed), page, &triggers);
    spawn_cache(client, &caches.secrets, Some(&managed), page, &triggers);
    Watches { caches, own_writes, tenant_rx, shared_rx }
}

/// Runs the controller on `watches` until `options.shutdown` is triggered;
/// reconciles only while `options.leadership` says so.
pub async fn run(client: Client, options: Options, watches: Watches) -> Result<(), Error> {
    let Watches { caches, own_writes, tenant_rx, shared_rx } = watches;
    tracing::info!("waiting for the watch caches to fill");
    caches.wait_ready().await;
    tracing::info!("watch caches ready");
    options.readiness.gate(CACHES_GATE).set(true);

    let recorder = crate::telemetry::events::Recorder::new(
        client.clone(),
        Reporter { controller: "bulkhead".into(), instance: Some(options.instance.clone()) },
    );
    let metrics = options.metrics.clone();
    let ctx = Arc::new(Context {
        client: client.clone(),
        options: options.clone(),
        caches,
        own_writes,
        own_tenant_writes: Default::default(),
        tenant_writes: Default::default(),
        recorder,
        metrics,
        activity: Default::default(),
        api_slots: tokio::sync::Semaphore::new(options.api_concurrency.max(1)),
    });

    // Every replica keeps its caches warm (fast takeover, readiness); only the
    // leader reconciles. Each leadership term starts with a full list of the
    // Tenants, so triggers that arrive while standing by can be dropped.
    let tenant_rx = Arc::new(tokio::sync::Mutex::new(tenant_rx));
    let shared_rx = Arc::new(tokio::sync::Mutex::new(shared_rx));
    let shutdown = &options.shutdown;
    let leadership = &options.leadership;
    while !shutdown.is_triggered() {
        let standby = async {
            let drain_tenants = shared_stream(tenant_rx.clone()).for_each(|_| async {});
            let drain_shared = shared_stream(shared_rx.clone()).for_each(|_| async {});
            futures::join!(drain_tenants, drain_shared);
        };
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = leadership.acquired() => {}
            _ = standby => {}
        }
        tokio::select! {
            // Ends only on shutdown, after in-flight reconciles finished.
            _ = lead(ctx.clone(), tenant_rx.clone(), shared_rx.clone()) => break,
            // Dropping the term cancels in-flight reconciles at their next await: no write after losing the Lease.
            _ = leadership.lost() => tracing::warn!("leadership lost: reconciling stopped"),
        }
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// What a Tenant asks for: spec (generation), labels, annotations (key
/// rotation, regeneration), finalizers and deletion. Status writes (ours, on
/// every convergence, and the verifier's) change none of it, so they do not
/// trigger a reconcile that would only find nothing to do.
fn intent(tenant: &StoredTenant) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = &tenant.metadata;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (meta.generation, &meta.labels, &meta.annotations, &meta.finalizers, meta.deletion_timestamp.is_some())
        .hash(&mut h);
    Some(h.finish())
}

/// One leadership term: the profile ClusterRoles and the Tenant controller, until shutdown.
async fn lead(
    ctx: Arc<Context>,
    tenant_rx: Arc<
        tokio::sync::Mutex<
            futures::channel::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<StoredTenant>>,
        >,
    >,
    shared_rx: Arc<tokio::sync::Mutex<futures::channel::mpsc::UnboundedReceiver<()>>>,
) {
    let options = &ctx.options;
    if let Err(e) = shared::ensure(&ctx).await {
        tracing::error!(error = %e, "cannot apply the profile ClusterRoles; retrying on the next change");
    }
    let (shared_tx, shared_changes) = futures::channel::mpsc::unbounded();
    let forward_shared = shared_stream(shared_rx).map(Ok).forward(shared_tx);

    let tenants = Api::<StoredTenant>::all(ctx.client.clone());
    let mut tenant_watch = watcher::Config::default().page_size(options.page_size);
    if let Some(selector) = &options.tenant_selector {
        tenant_watch = tenant_watch.labels(selector);
    }
    // managedFields (and a last-applied copy) are the bulk of a Tenant and
    // never read: the store keeps Tenants without them, and the rest compact.
    let (store, writer) = kube::runtime::reflector::store();
    let own = ctx.own_tenant_writes.clone();
    let tenant_stream = watcher(tenants, tenant_watch)
        .backoff(backoff::WatchBackoff::default())
        .modify(cache::drop_unread)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(intent, Default::default())
        // The finalizer a reconcile adds changes the intent, but that
        // reconcile goes on with it: a second one would only race the status
        // it is about to write. A finalizer someone else adds or strips still triggers.
        .filter(move |event| {
            let echo = event.as_ref().is_ok_and(|t| own.is_echo(&t.name_any(), t.metadata.resource_version.as_deref()));
            futures::future::ready(!echo)
        });
    let controller = Controller::for_stream(tenant_stream, store.clone())
        .with_config(controller::Config::default().concurrency(options.concurrency).debounce(Duration::from_millis(50)))
        .reconcile_on(shared_stream(tenant_rx))
        .graceful_shutdown_on(options.shutdown.signalled())
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile round ended with an error");
            }
        });
    tokio::select! {
        _ = controller => {}
        _ = shared::run(ctx.clone(), shared_changes) => {}
        _ = crate::verify::schedule::run(ctx.clone(), store) => {}
        _ = forward_shared => {}
    }
}
