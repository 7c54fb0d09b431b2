//! Watch-fed caches of the objects bulkhead manages, indexed by tenant.
//!
//! kube's reflector store has no index, and pruning one tenant must not scan
//! every object of every tenant, so this cache keeps a per-tenant key set.
//! Objects are kept as compact JSON without managedFields and last-applied
//! annotations (most of an object's size, never read by bulkhead) and
//! decoded on the rare read: memory grows with the bytes of the objects,
//! not with the allocations of their typed form.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::api::StoredTenant;
use crate::plan::namespaces::Existing;
use crate::plan::{LABEL_SHARED, LABEL_TENANT, ObjectKey, object::Kind};

/// An object's namespace and name in one shared allocation: `namespace/name`,
/// or `/name` when cluster-scoped (neither may contain a slash). The map and
/// the per-tenant index hold the same one; at a thousand tenants a key of
/// two strings behind an `Arc` was 3 allocations and ~140 bytes per object.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key(Arc<str>);

impl Key {
    fn new(namespace: Option<&str>, name: &str) -> Self {
        Key(Arc::from(Self::text(namespace, name)))
    }

    /// The text of a key, to look one up without allocating a shared one.
    fn text(namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", namespace.unwrap_or_default())
    }

    fn namespace(&self) -> Option<&str> {
        self.0.split_once('/').map(|(ns, _)| ns).filter(|ns| !ns.is_empty())
    }

    fn name(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, name)| name)
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A resourceVersion, inline when it is a plain number (what every apiserver
/// hands out: etcd revisions), as text otherwise (the API calls it opaque).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Version {
    Number(u64),
    Text(Box<str>),
}

impl Version {
    fn of(resource_version: Option<&str>) -> Option<Self> {
        let v = resource_version?;
        // Only the canonical spelling is kept as a number, so that it reads back unchanged.
        let canonical = v.bytes().all(|b| b.is_ascii_digit()) && (v == "0" || !v.starts_with('0'));
        Some(match v.parse() {
            Ok(n) if canonical => Version::Number(n),
            _ => Version::Text(v.into()),
        })
    }

    fn text(&self) -> String {
        match self {
            Version::Number(n) => n.to_string(),
            Version::Text(t) => t.to_string(),
        }
    }
}

/// One cached object, compact: the handful of fields every event needs, and
/// the rest as the JSON bulkhead compares against. A typed object costs
/// several times its JSON (an allocation per string, a B-tree node per
/// map), and a thousand tenants are tens of thousands of objects.
#[derive(Clone)]
struct Entry {
    resource_version: Option<Version>,
    /// Shared by every entry of the tenant (and its index key).
    tenant: Option<Arc<str>>,
    managed: bool,
    shared: bool,
    /// Being deleted (a deletionTimestamp is set).
    terminating: bool,
    body: Body,
}

/// What a cached object keeps of its content.
#[derive(Clone)]
enum Body {
    /// The object as JSON, without identity and version fields.
    Json(Box<[u8]>),
    /// Found to hold the planned configuration with this applied-hash (see
    /// [`hash_bits`]): at this resourceVersion nothing else needs to be
    /// known. Any change arrives with a new version and brings the JSON back.
    AsPlanned(u64),
    /// Without bulkhead's managed-by label, which every planned object
    /// carries, and of a kind or namespace whose content nothing reads: no
    /// plan can hold it as it is, so its content is never compared. These
    /// are the cluster's other namespaces, most of the namespace cache.
    Unplannable,
}

/// An applied-hash (16 hex digits, [`crate::controller::diff::config_hash`])
/// as the number it spells: kept inline, not as one more allocation per object.
fn hash_bits(hash: &str) -> Option<u64> {
    (hash.len() == 16).then(|| u64::from_str_radix(hash, 16).ok()).flatten()
}

impl Entry {
    /// The change this entry stands for, when it changed or went away.
    fn change(&self, key: &Key) -> Change {
        Change {
            name: key.name().to_string(),
            namespace: key.namespace().map(str::to_string),
            resource_version: self.resource_version.as_ref().map(Version::text),
            tenant: self.tenant.as_deref().map(str::to_string),
            managed: self.managed,
            shared: self.shared,
            terminating: self.terminating,
        }
    }

    fn new(change: Change, body: Body) -> Self {
        Entry {
            resource_version: Version::of(change.resource_version.as_deref()),
            tenant: change.tenant.map(Arc::from),
            managed: change.managed,
            shared: change.shared,
            terminating: change.terminating,
            body,
        }
    }

    fn as_planned_at(&self, resource_version: Option<&str>) -> bool {
        matches!(self.body, Body::AsPlanned(_))
            && resource_version.is_some()
            && self.resource_version == Version::of(resource_version)
    }
}

/// Which of a cache's objects bulkhead reads beyond comparing them with the
/// plan. The others keep only the plan's hash once found as planned: at a
/// thousand tenants that is most of the cache's memory, and it keeps the
/// tenants' key projections out of it.
pub enum Reads {
    /// Every object (namespace labels and deletion, quota usage).
    All,
    /// Objects in this namespace (the key source Secrets in the operator's namespace).
    In(String),
    /// None.
    Nothing,
}

impl Reads {
    fn content_of(&self, namespace: Option<&str>) -> bool {
        match self {
            Reads::All => true,
            Reads::In(ns) => namespace == Some(ns.as_str()),
            Reads::Nothing => false,
        }
    }
}

/// What a watch event changed, for the reconcile triggers.
struct Change {
    name: String,
    namespace: Option<String>,
    resource_version: Option<String>,
    tenant: Option<String>,
    managed: bool,
    shared: bool,
    terminating: bool,
}

struct Inner {
    // Keys are shared between the map and the per-tenant index: at a
    // thousand tenants a second copy of every key was megabytes.
    objects: HashMap<Key, Entry>,
    /// Each tenant's managed keys (what pruning looks for), sorted: a tenant
    /// has a handful of objects of a kind, and a B-tree node is sized for
    /// eleven (9 caches × 1,000 tenants of them were 1.5 MB).
    by_tenant: HashMap<Arc<str>, Vec<Key>>,
    relist: Option<HashMap<Key, Entry>>,
    /// Highest resourceVersion the watch delivered: a write at or below it
    /// has already reached the cache, with whatever followed it.
    seen: u64,
}

/// What every cache answers whatever its object type, so callers that only
/// know a [`Kind`] reach the right cache through one dispatch.
pub trait Lookup: Send + Sync {
    /// Whether the cached object holds the planned configuration whose
    /// applied-hash is `hash`, as `holds` judges its JSON (without identity
    /// and version fields); None when it is not cached.
    fn is_as_planned(
        &self,
        namespace: Option<&str>,
        name: &str,
        hash: &str,
        holds: &dyn Fn(&serde_json::Value) -> bool,
    ) -> Option<bool>;
    /// The cached resourceVersion, if cached.
    fn resource_version(&self, namespace: Option<&str>, name: &str) -> Option<String>;
    /// Namespace and name of every object of `tenant` that still carries bulkhead's managed-by label.
    fn managed_of_tenant(&self, tenant: &str) -> Vec<(Option<String>, String)>;
    /// Waits until the first complete list has arrived.
    fn wait_ready(&self) -> futures::future::BoxFuture<'_, ()>;
    /// Puts an object bulkhead just wrote (the apiserver's answer) into the
    /// cache ahead of its watch echo; `as_planned` is the applied-hash of the
    /// plan the answer was found to hold. False when the watch already went
    /// past it (the echo, or a later change, is already in): nothing changes
    /// and no echo is to come.
    fn write_through(&self, written: serde_json::Value, as_planned: Option<&str>) -> bool;
}

/// Objects of one kind, by namespace and name, with a per-tenant index.
pub struct Cache<K> {
    kind: Kind,
    reads: Reads,
    inner: RwLock<Inner>,
    ready: watch::Sender<bool>,
    _kind: PhantomData<fn() -> K>,
}

/// Resource versions of bulkhead's own writes, so their watch echoes do not
/// trigger a reconcile. At most one entry per object: a later write replaces it.
pub struct OwnWrites<K = ObjectKey>(Mutex<HashMap<K, String>>);

impl<K> Default for OwnWrites<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: std::hash::Hash + Eq> OwnWrites<K> {
    /// Records that bulkhead just wrote `key` at `resource_version`.
    pub fn record(&self, key: K, resource_version: Option<String>) {
        if let (Some(rv), Ok(mut map)) = (resource_version, self.0.lock()) {
            map.insert(key, rv);
        }
    }

    /// Forgets a recorded write whose echo will never be looked for.
    pub fn forget(&self, key: &K) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    /// True (once) when this event is the echo of bulkhead's own write.
    pub fn is_echo(&self, key: &K, resource_version: Option<&str>) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        match (map.get(key), resource_version) {
            (Some(ours), Some(rv)) if ours == rv => {
                map.remove(key);
                true
            }
            _ => false,
        }
    }
}

/// The newest resourceVersion of each Tenant bulkhead wrote (finalizer,
/// status) until the Tenant store shows it. A reconcile that starts from an
/// older copy (another trigger came while the watch was still delivering
/// our write) would compute the status again against a stale one and write
/// it twice; it waits for the store instead.
#[derive(Default)]
pub struct TenantWrites(Mutex<HashMap<String, (u64, std::time::Instant)>>);

impl TenantWrites {
    /// How long the store may lag before a reconcile goes on with what it has
    /// (a broken watch relists; it must not hold reconciles forever).
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

    /// Records that bulkhead wrote `tenant`, answered with `resource_version`.
    pub fn wrote(&self, tenant: &str, resource_version: Option<&str>) {
        let version = version_number(resource_version);
        if let (true, Ok(mut map)) = (version > 0, self.0.lock()) {
            // Entries past their patience answer nothing: without this, every
            // tenant deleted before its next reconcile would stay here.
            map.retain(|_, (_, at)| at.elapsed() < Self::PATIENCE);
            map.insert(tenant.to_string(), (version, std::time::Instant::now()));
        }
    }

    /// Whether the store's copy of `tenant` (at `resource_version`) is older than our last write of it.
    pub fn store_behind(&self, tenant: &str, resource_version: Option<&str>) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        match map.get(tenant) {
            Some((ours, at)) if version_number(resource_version) < *ours && at.elapsed() < Self::PATIENCE => true,
            Some(_) => {
                map.remove(tenant);
                false
            }
            None => false,
        }
    }
}

/// Where cache changes are reported.
#[derive(Clone)]
pub struct Triggers {
    /// Tenants whose objects changed.
    pub tenants: UnboundedSender<ObjectRef<StoredTenant>>,
    /// Shared (cross-tenant) objects changed.
    pub shared: UnboundedSender<()>,
    /// Echoes of bulkhead's own writes to ignore.
    pub own_writes: Arc<OwnWrites>,
}

/// The tenant named by an object's labels, if bulkhead manages it.
pub fn tenant_of(labels: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    labels.get(LABEL_TENANT).map(String::as_str)
}

fn key_of(meta: &ObjectMeta) -> Key {
    Key::new(meta.namespace.as_deref(), meta.name.as_deref().unwrap_or_default())
}

/// Drops what no part of bulkhead reads from any object it keeps:
/// managedFields and kubectl's last-applied copy (client-side apply, as
/// GitOps tools use it), which are most of an object's size.
pub fn drop_unread<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// [`drop_unread`], and the identity and version fields, which are never
/// part of what the cache compares (the version is kept aside).
fn strip<K: kube::Resource>(obj: &mut K) {
    drop_unread(obj);
    let meta = obj.meta_mut();
    meta.resource_version = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.generation = None;
}

fn change_of(meta: &ObjectMeta) -> Change {
    // Tenant, managed and terminating as a namespace claim reads them: one definition for both.
    let Existing { holder, managed, terminating } =
        Existing::of(meta.labels.as_ref(), meta.deletion_timestamp.is_some());
    let shared = meta.labels.as_ref().and_then(|l| l.get(LABEL_SHARED)).is_some_and(|v| v == "true");
    Change {
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone(),
        resource_version: meta.resource_version.clone(),
        tenant: holder,
        managed,
        shared: shared && managed,
        terminating,
    }
}

fn entry_of<K: kube::Resource + Serialize>(mut obj: K, reads: &Reads) -> Entry {
    let change = change_of(obj.meta());
    if !change.managed && !reads.content_of(change.namespace.as_deref()) {
        return Entry::new(change, Body::Unplannable);
    }
    strip(&mut obj);
    // Serializing a value that came from JSON cannot fail; an empty body decodes as "absent".
    Entry::new(change, Body::Json(serde_json::to_vec(&obj).unwrap_or_default().into_boxed_slice()))
}

impl Inner {
    /// The entry for a version of `obj` the watch delivered. The version an
    /// entry was found as planned at keeps only its hash: same version, same content.
    fn entry_for<K: kube::Resource + Serialize>(&self, key: &Key, obj: K, reads: &Reads) -> Entry {
        match self.objects.get(key) {
            Some(known) if known.as_planned_at(obj.meta().resource_version.as_deref()) => known.clone(),
            _ => entry_of(obj, reads),
        }
    }

    /// Stores `entry` under `key`, keeping the per-tenant index in step; the entry it replaced.
    fn put(&mut self, key: Key, mut entry: Entry) -> Option<Entry> {
        // A known key keeps its allocation (the index holds it too).
        let key = match self.objects.get_key_value(&key) {
            Some((known, _)) => known.clone(),
            None => key,
        };
        let old = self.objects.remove(&key);
        if let Some(old) = &old {
            self.index_remove(old.tenant.as_deref(), &key);
        }
        // Only what bulkhead manages is pruned, so only that is indexed: a
        // namespace released or labelled by hand is found by its key alone.
        if let Some(tenant) = entry.tenant.take() {
            entry.tenant = Some(if entry.managed { self.index_insert(tenant, key.clone()) } else { tenant });
        }
        self.objects.insert(key, entry);
        old
    }

    /// Files `key` under its tenant; returns the tenant's name as every entry of it shares it.
    fn index_insert(&mut self, tenant: Arc<str>, key: Key) -> Arc<str> {
        let shared = match self.by_tenant.get_key_value(&*tenant) {
            Some((known, _)) => known.clone(),
            None => tenant,
        };
        let keys = self.by_tenant.entry(shared.clone()).or_default();
        if let Err(at) = keys.binary_search(&key) {
            keys.insert(at, key);
        }
        shared
    }

    fn index_remove(&mut self, entry_tenant: Option<&str>, key: &Key) {
        if let Some(t) = entry_tenant
            && let Some(keys) = self.by_tenant.get_mut(t)
        {
            if let Ok(at) = keys.binary_search(key) {
                keys.remove(at);
            }
            if keys.is_empty() {
                self.by_tenant.remove(t);
            }
        }
    }
}

impl<K> Cache<K>
where
    K: kube::Resource + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// An empty cache for `kind`, keeping the content of the objects bulkhead `reads`.
    pub fn new(kind: Kind, reads: Reads) -> Arc<Self> {
        let (ready, _) = watch::channel(false);
        Arc::new(Self {
            kind,
            reads,
            inner: RwLock::new(Inner { objects: HashMap::new(), by_tenant: HashMap::new(), relist: None, seen: 0 }),
            ready,
            _kind: PhantomData,
        })
    }

    /// The object of an entry whose content is kept ([`Reads`]).
    fn decode(entry: &Entry) -> Option<K> {
        let Body::Json(json) = &entry.body else {
            return None;
        };
        let mut obj: K = serde_json::from_slice(json).ok()?;
        obj.meta_mut().resource_version = entry.resource_version.as_ref().map(Version::text);
        Some(obj)
    }

    /// The cached object, if any.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<K> {
        let inner = self.inner.read().ok()?;
        inner.objects.get(Key::text(namespace, name).as_str()).and_then(Self::decode)
    }

    /// What a namespace claim reads of the cached object, if it is cached.
    pub fn existing(&self, namespace: Option<&str>, name: &str) -> Option<Existing> {
        let inner = self.inner.read().ok()?;
        let entry = inner.objects.get(Key::text(namespace, name).as_str())?;
        Some(Existing {
            holder: entry.tenant.as_deref().map(str::to_string),
            managed: entry.managed,
            terminating: entry.terminating,
        })
    }

    /// Names of the cached objects bulkhead shares between tenants.
    pub fn shared_names(&self) -> Vec<String> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        inner.objects.iter().filter(|(_, e)| e.shared).map(|(key, _)| key.name().to_string()).collect()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.objects.len()).unwrap_or(0)
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the first complete list has arrived.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // An error means the sender is gone, i.e. the cache is being dropped.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Applies one watch event; returns the changes that should trigger work.
    fn apply(&self, event: watcher::Event<K>) -> Vec<Change> {
        let Ok(mut inner) = self.inner.write() else {
            return Vec::new();
        };
        if let watcher::Event::Apply(obj) | watcher::Event::Delete(obj) | watcher::Event::InitApply(obj) = &event {
            inner.seen = inner.seen.max(version_number(obj.meta().resource_version.as_deref()));
        }
        match event {
            watcher::Event::Apply(obj) => {
                let key = key_of(obj.meta());
                let entry = inner.entry_for(&key, obj, &self.reads);
                let change = entry.change(&key);
                // A relabelled object concerns the tenant it was taken from too.
                match inner.put(key.clone(), entry) {
                    Some(old) if old.tenant.as_deref() != change.tenant.as_deref() => {
                        vec![change, old.change(&key)]
                    }
                    _ => vec![change],
                }
            }
            watcher::Event::Delete(obj) => {
                let key = key_of(obj.meta());
                if let Some(old) = inner.objects.remove(&key) {
                    inner.index_remove(old.tenant.as_deref(), &key);
                }
                vec![change_of(obj.meta())]
            }
            watcher::Event::Init => {
                inner.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                let key = key_of(obj.meta());
                let entry = inner.entry_for(&key, obj, &self.reads);
                if let Some(buffer) = inner.relist.as_mut() {
                    buffer.insert(key, entry);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = inner.relist.take().unwrap_or_default();
                // After a relist, everything that changed or vanished while the
                // watch was down must be looked at again.
                let mut changed: Vec<Change> = inner
                    .objects
                    .iter()
                    .filter(|(k, old)| fresh.get(*k).is_none_or(|new| new.resource_version != old.resource_version))
                    .map(|(k, o)| o.change(k))
                    .collect();
                changed.extend(fresh.iter().filter(|(k, _)| !inner.objects.contains_key(*k)).map(|(k, o)| o.change(k)));
                inner.objects = HashMap::with_capacity(fresh.len());
                inner.by_tenant = HashMap::new();
                for (key, entry) in fresh {
                    inner.put(key, entry);
                }
                let first = !*self.ready.borrow();
                self.ready.send_replace(true);
                // The first list is the starting point, not a change.
                if first { Vec::new() } else { changed }
            }
        }
    }

    /// Runs the watch until the stream ends, keeping the cache current and
    /// reporting every change of a tenant's object to its reconciler.
    pub async fn run(
        self: Arc<Self>,
        stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
        triggers: Triggers,
    ) {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(kind = self.kind.as_str(), error = %e, "watch failed; retrying with backoff");
                    continue;
                }
            };
            let is_delete = matches!(event, watcher::Event::Delete(_));
            // The first object is the one the event carries; a second one is
            // the version it replaced (relabelled away from another tenant).
            for (i, change) in self.apply(event).into_iter().enumerate() {
                let key = ObjectKey { kind: self.kind, namespace: change.namespace, name: change.name };
                // Only the new version can be the echo of our own write: the
                // replaced one carries an older resourceVersion, which may match
                // a write of ours whose echo arrived before we recorded it.
                if i == 0 && !is_delete && triggers.own_writes.is_echo(&key, change.resource_version.as_deref()) {
                    break;
                }
                if change.shared {
                    let _ = triggers.shared.unbounded_send(());
                } else if let Some(tenant) = change.tenant {
                    let _ = triggers.tenants.unbounded_send(ObjectRef::new(&tenant));
                }
            }
        }
    }
}

impl<K> Lookup for Cache<K>
where
    K: kube::Resource + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn is_as_planned(
        &self,
        namespace: Option<&str>,
        name: &str,
        hash: &str,
        holds: &dyn Fn(&serde_json::Value) -> bool,
    ) -> Option<bool> {
        let key = Key::text(namespace, name);
        let (version, observed) = {
            let inner = self.inner.read().ok()?;
            let entry = inner.objects.get(key.as_str())?;
            match &entry.body {
                Body::AsPlanned(planned) => return Some(hash_bits(hash) == Some(*planned)),
                Body::Unplannable => return Some(false),
                Body::Json(json) => (entry.resource_version.clone(), serde_json::from_slice(json).ok()?),
            }
        };
        let as_planned = holds(&observed);
        if as_planned
            && !self.reads.content_of(namespace)
            && let Some(bits) = hash_bits(hash)
            && let Ok(mut inner) = self.inner.write()
            && let Some(entry) = inner.objects.get_mut(key.as_str())
            // Unless the watch replaced it meanwhile.
            && entry.resource_version == version
        {
            entry.body = Body::AsPlanned(bits);
        }
        Some(as_planned)
    }

    fn resource_version(&self, namespace: Option<&str>, name: &str) -> Option<String> {
        let inner = self.inner.read().ok()?;
        let entry = inner.objects.get(Key::text(namespace, name).as_str())?;
        entry.resource_version.as_ref().map(Version::text)
    }

    fn managed_of_tenant(&self, tenant: &str) -> Vec<(Option<String>, String)> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let Some(keys) = inner.by_tenant.get(tenant) else {
            return Vec::new();
        };
        keys.iter().map(|k| (k.namespace().map(str::to_string), k.name().to_string())).collect()
    }

    fn wait_ready(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(Cache::wait_ready(self))
    }

    fn write_through(&self, written: serde_json::Value, as_planned: Option<&str>) -> bool {
        let meta = identity(&written["metadata"]);
        let key = key_of(&meta);
        // An answer that holds the plan needs no more than its hash and labels.
        let entry = match as_planned.filter(|_| !self.reads.content_of(key.namespace())).and_then(hash_bits) {
            Some(bits) => Entry::new(change_of(&meta), Body::AsPlanned(bits)),
            None => match serde_json::from_value::<K>(written) {
                Ok(obj) => entry_of(obj, &self.reads),
                Err(_) => return false,
            },
        };
        let version = version_number(meta.resource_version.as_deref());
        let Ok(mut inner) = self.inner.write() else {
            return false;
        };
        // Versions are compared only to order this write against what the
        // watch delivered (etcd revisions); an unreadable one is left to the
        // watch, whose echo is then still to come.
        if version == 0 {
            return true;
        }
        if version <= inner.seen {
            return false;
        }
        inner.put(key, entry);
        true
    }
}

/// Name, namespace, version and labels from an object's JSON metadata, without decoding the rest (managedFields are most of it).
fn identity(meta: &serde_json::Value) -> ObjectMeta {
    let text = |field: &str| meta[field].as_str().map(str::to_string);
    ObjectMeta {
        name: text("name"),
        namespace: text("namespace"),
        resource_version: text("resourceVersion"),
        labels: serde_json::from_value(meta["labels"].clone()).ok(),
        ..Default::default()
    }
}

/// A resourceVersion as the etcd revision it is, 0 when it is not a number.
fn version_number(resource_version: Option<&str>) -> u64 {
    resource_version.and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{LABEL_MANAGED_BY, MANAGED_BY};
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;

    /// Applied-hashes as `config_hash` spells them.
    const H1: &str = "00000000000000a1";
    const H2: &str = "00000000000000b2";

    #[test]
    fn a_reconcile_waits_for_the_store_to_show_our_own_tenant_write() {
        let writes = TenantWrites::default();
        assert!(!writes.store_behind("acme", Some("5")), "nothing written");
        writes.wrote("acme", Some("10"));
        assert!(writes.store_behind("acme", Some("9")), "the store has not shown the write");
        assert!(!writes.store_behind("other", Some("9")));
        assert!(!writes.store_behind("acme", Some("10")), "shown");
        assert!(!writes.store_behind("acme", Some("9")), "forgotten once shown");
        writes.wrote("acme", None);
        assert!(!writes.store_behind("acme", Some("1")), "an answer without a version is not waited for");
        let long_ago = std::time::Instant::now().checked_sub(TenantWrites::PATIENCE * 2);
        if let (Some(at), Ok(mut map)) = (long_ago, writes.0.lock()) {
            map.insert("gone".into(), (20, at));
        }
        assert!(!writes.store_behind("gone", Some("1")), "a store that lags this long is not waited for");
        writes.0.lock().expect("lock").insert("deleted".into(), (20, long_ago.expect("a clock this old")));
        writes.wrote("acme", Some("30"));
        assert_eq!(writes.0.lock().expect("lock").len(), 1, "stale entries are dropped as new writes come");
    }

    #[test]
    fn applied_hashes_are_kept_as_the_numbers_they_spell() {
        let hash = crate::controller::diff::config_hash(&json!({"kind": "NetworkPolicy"}));
        assert_eq!(hash_bits(&hash).map(|b| format!("{b:016x}")), Some(hash));
        assert_eq!(hash_bits("h1"), None);
        assert_eq!(hash_bits("zzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn a_key_gives_back_the_namespace_and_name_it_was_made_of() {
        let namespaced = Key::new(Some("acme-payments"), "bulkhead-default-deny");
        assert_eq!((namespaced.namespace(), namespaced.name()), (Some("acme-payments"), "bulkhead-default-deny"));
        let cluster = Key::new(None, "bulkhead:acme:admin");
        assert_eq!((cluster.namespace(), cluster.name()), (None, "bulkhead:acme:admin"));
        // Looked up by its text, without a shared copy.
        let map: HashMap<Key, u8> = [(namespaced.clone(), 1)].into();
        assert_eq!(map.get(Key::text(Some("acme-payments"), "bulkhead-default-deny").as_str()), Some(&1));
        assert_eq!(map.get(Key::text(None, "bulkhead-default-deny").as_str()), None);
    }

    #[test]
    fn resource_versions_read_back_exactly_as_the_apiserver_wrote_them() {
        for rv in ["0", "7", "18446744073709551615", "007", "+5", "18446744073709551616", "a1b2", ""] {
            let version = Version::of(Some(rv)).expect("a version");
            assert_eq!(version.text(), rv);
            assert_eq!(Version::of(Some(rv)), Some(version));
        }
        assert!(matches!(Version::of(Some("123")), Some(Version::Number(123))));
        assert!(matches!(Version::of(Some("0123")), Some(Version::Text(_))));
        assert_ne!(Version::of(Some("0123")), Version::of(Some("123")));
        assert_eq!(Version::of(None), None);
    }

    fn secret(rv: &str, value: &str) -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": rv,
                         "labels": {LABEL_TENANT: "acme", LABEL_MANAGED_BY: MANAGED_BY}},
            "data": {"k": value}
        }))
        .expect("secret")
    }

    fn cached(cache: &Cache<Secret>) -> Option<(String, serde_json::Value)> {
        let rv = cache.resource_version(Some("ns"), "s")?;
        let secret = serde_json::to_value(cache.get(Some("ns"), "s")?).ok()?;
        Some((rv, secret["data"]["k"].clone()))
    }

    fn write_through(cache: &Cache<Secret>, s: Secret) -> bool {
        Lookup::write_through(cache, serde_json::to_value(s).expect("json"), None)
    }

    fn secret_in(ns: &str, rv: &str, value: &str) -> Secret {
        let mut s = secret(rv, value);
        s.metadata.namespace = Some(ns.into());
        s
    }

    /// Whether the cached Secret is as planned with `hash`, judged by its value where the content is still there.
    fn as_planned(cache: &Cache<Secret>, ns: &str, hash: &str, value: &str) -> Option<bool> {
        cache.is_as_planned(Some(ns), "s", hash, &|observed| observed["data"]["k"] == json!(value))
    }

    #[test]
    fn an_object_found_as_planned_keeps_only_the_hash_until_it_changes() {
        let cache = Cache::<Secret>::new(Kind::Secret, Reads::In("operator".into()));
        cache.apply(watcher::Event::Apply(secret_in("ns", "10", "YQ==")));
        assert_eq!(as_planned(&cache, "ns", H1, "Yg=="), Some(false), "judged on the content first");
        assert_eq!(as_planned(&cache, "ns", H1, "YQ=="), Some(true));
        assert!(cache.get(Some("ns"), "s").is_none(), "the content is dropped");
        assert_eq!(as_planned(&cache, "ns", H1, "Yg=="), Some(true), "the hash answers for that version");
        assert_eq!(as_planned(&cache, "ns", H2, "YQ=="), Some(false), "another plan needs a write");
        // The same version again (an echo, a relist) is the same content.
        cache.apply(watcher::Event::Apply(secret_in("ns", "10", "YQ==")));
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(secret_in("ns", "10", "YQ==")));
        cache.apply(watcher::Event::InitDone);
        assert!(cache.get(Some("ns"), "s").is_none());
        assert_eq!(cache.managed_of_tenant("acme"), vec![(Some("ns".into()), "s".into())]);
        // Someone changed it: the content is back and judged again.
        cache.apply(watcher::Event::Apply(secret_in("ns", "11", "Yg==")));
        assert_eq!(as_planned(&cache, "ns", H1, "YQ=="), Some(false));
        assert!(cache.get(Some("ns"), "s").is_some());
    }

    #[test]
    fn the_tenant_index_follows_relabels_and_deletions_in_a_fixed_order() {
        let cache = Cache::<Secret>::new(Kind::Secret, Reads::Nothing);
        let labelled = |ns: &str, name: &str, tenant: &str, rv: &str| {
            let mut s = secret_in(ns, rv, "YQ==");
            s.metadata.name = Some(name.into());
            s.metadata.labels.get_or_insert_default().insert(LABEL_TENANT.into(), tenant.into());
            s
        };
        for (ns, name) in [("b-ns", "y"), ("a-ns", "z"), ("a-ns", "x")] {
            cache.apply(watcher::Event::Apply(labelled(ns, name, "acme", "10")));
        }
        let keys = |tenant: &str| cache.managed_of_tenant(tenant);
        let key = |ns: &str, name: &str| (Some(ns.to_string()), name.to_string());
        assert_eq!(keys("acme"), [key("a-ns", "x"), key("a-ns", "z"), key("b-ns", "y")]);
        // Relabelled to another tenant: both tenants are told, and the index moves it.
        let changes = cache.apply(watcher::Event::Apply(labelled("a-ns", "z", "globex", "11")));
        let told: Vec<_> = changes.iter().map(|c| c.tenant.clone()).collect();
        assert_eq!(told, [Some("globex".to_string()), Some("acme".to_string())]);
        assert_eq!(keys("acme"), [key("a-ns", "x"), key("b-ns", "y")]);
        assert_eq!(keys("globex"), [key("a-ns", "z")]);
        cache.apply(watcher::Event::Delete(labelled("a-ns", "z", "globex", "12")));
        assert!(keys("globex").is_empty());
        assert!(
            !cache.inner.read().expect("lock").by_tenant.contains_key("globex"),
            "an empty tenant leaves the index"
        );
    }

    #[test]
    fn objects_bulkhead_reads_keep_their_content() {
        let cache = Cache::<Secret>::new(Kind::Secret, Reads::In("operator".into()));
        cache.apply(watcher::Event::Apply(secret_in("operator", "10", "YQ==")));
        assert_eq!(as_planned(&cache, "operator", H1, "YQ=="), Some(true));
        assert!(cache.get(Some("operator"), "s").is_some(), "a key source stays readable");
        assert!(Lookup::write_through(
            cache.as_ref(),
            serde_json::to_value(secret_in("operator", "12", "Yg==")).expect("json"),
            Some(H2)
        ));
        assert_eq!(cached_in(&cache, "operator"), Some(json!("Yg==")));
    }

    #[test]
    fn a_write_found_as_planned_is_cached_as_its_hash() {
        let cache = Cache::<Secret>::new(Kind::Secret, Reads::In("operator".into()));
        let written = serde_json::to_value(secret_in("ns", "10", "YQ==")).expect("json");
        assert!(Lookup::write_through(cache.as_ref(), written, Some(H1)));
        assert!(cache.get(Some("ns"), "s").is_none());
        assert_eq!(as_planned(&cache, "ns", H1, "Yg=="), Some(true));
        assert_eq!(cache.resource_version(Some("ns"), "s").as_deref(), Some("10"));
        assert_eq!(cache.managed_of_tenant("acme"), vec![(Some("ns".into()), "s".into())]);
        // Its echo keeps it so; a later change does not.
        cache.apply(watcher::Event::Apply(secret_in("ns", "10", "YQ==")));
        assert!(cache.get(Some("ns"), "s").is_none());
        cache.apply(watcher::Event::Apply(secret_in("ns", "13", "YQ==")));
        assert_eq!(cached_in(&cache, "ns"), Some(json!("YQ==")));
    }

    #[test]
    fn objects_without_bulkhead_s_label_keep_only_what_a_claim_reads() {
        let cache = Cache::<Secret>::new(Kind::Secret, Reads::In("operator".into()));
        let mut released = secret_in("ns", "10", "YQ==");
        released.metadata.labels = Some([(LABEL_TENANT.to_string(), "acme".to_string())].into());
        cache.apply(watcher::Event::Apply(released.clone()));
        assert!(cache.get(Some("ns"), "s").is_none(), "no content kept");
        assert_eq!(as_planned(&cache, "ns", H1, "YQ=="), Some(false), "no plan holds it as it is");
        let facts = cache.existing(Some("ns"), "s").expect("cached");
        assert_eq!(facts, Existing { holder: Some("acme".into()), managed: false, terminating: false });
        assert!(cache.managed_of_tenant("acme").is_empty());
        // Its deletion starts: the facts follow.
        released.metadata.resource_version = Some("11".into());
        released.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        cache.apply(watcher::Event::Apply(released));
        assert!(cache.existing(Some("ns"), "s").is_some_and(|e| e.terminating));
        // Taken back with bulkhead's label: the content is kept again, to be compared.
        cache.apply(watcher::Event::Apply(secret_in("ns", "12", "YQ==")));
        assert_eq!(as_planned(&cache, "ns", H1, "YQ=="), Some(true));
        let facts = cache.existing(Some("ns"), "s").expect("cached");
        assert_eq!(facts, Existing { holder: Some("acme".into()), managed: true, terminating: false });
        assert_eq!(cache.managed_of_tenant("acme"), vec![(Some("ns".into()), "s".into())]);
        // Released again (bulkhead's label gone): no longer indexed for pruning.
        let mut released = secret_in("ns", "13", "YQ==");
        released.metadata.labels = Some([(LABEL_TENANT.to_string(), "acme".to_string())].into());
        cache.apply(watcher::Event::Apply(released));
        assert!(cache.managed_of_tenant("acme").is_empty());
        // Where the content is read, it is kept whatever the labels.
        let mut foreign = secret_in("operator", "14", "YQ==");
        foreign.metadata.labels = None;
        cache.apply(watcher::Event::Apply(foreign));
        assert_eq!(cached_in(&cache, "operator"), Some(json!("YQ==")));
        assert_eq!(cache.existing(Some("operator"), "s"), Some(Existing::default()));
    }

    fn cached_in(cache: &Cache<Secret>, ns: &str) -> Option<serde_json::Value> {
        Some(serde_json::to_value(cache.get(Some(ns), "s")?).ok()?["data"]["k"].clone())
    }

    #[test]
    fn a_write_is_cached_before_its_echo() {
        let cache = Cache::<Secret>::new(Kind::Secret, Reads::All);
        assert!(write_through(&cache, secret("10", "YQ==")));
        assert_eq!(cached(&cache), Some(("10".into(), json!("YQ=="))));
        assert_eq!(cache.managed_of_tenant("acme"), vec![(Some("ns".into()), "s".into())]);
        // The echo replaces it with the same content.
        cache.apply(watcher::Event::Apply(secret("10", "YQ==")));
        assert_eq!(cached(&cache), Some(("10".into(), json!("YQ=="))));
    }

    #[test]
    fn a_write_never_masks_what_the_watch_delivered_after_it() {
        let cache = Cache::<Secret>::new(Kind::Secret, Reads::All);
        // Someone changed the object after our write and the watch saw it first.
        cache.apply(watcher::Event::Apply(secret("12", "Yg==")));
        assert!(!write_through(&cache, secret("11", "YQ==")));
        assert_eq!(cached(&cache), Some(("12".into(), json!("Yg=="))));
        // Deleted after our write: no ghost comes back.
        cache.apply(watcher::Event::Delete(secret("20", "Yg==")));
        assert!(!write_through(&cache, secret("15", "YQ==")));
        assert_eq!(cached(&cache), None);
        // A version that is not a number is left to the watch (its echo is still to come).
        assert!(write_through(&cache, secret("x", "YQ==")));
        assert_eq!(cached(&cache), None);
    }
}
