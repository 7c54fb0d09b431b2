//! Watch-fed caches of the objects bulkhead manages, indexed by tenant.
//!
//! kube's reflector store has no index, and pruning one tenant must not scan
//! every object of every tenant, so this cache keeps a per-tenant key set.
//! managedFields and last-applied annotations are dropped before caching:
//! they are most of an object's size and bulkhead never reads them.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::api::Tenant;
use crate::plan::{LABEL_MANAGED_BY, LABEL_SHARED, LABEL_TENANT, MANAGED_BY, ObjectKey, object::Kind};

type Key = (Option<String>, String);

struct Inner<K> {
    objects: HashMap<Key, Arc<K>>,
    by_tenant: HashMap<String, BTreeSet<Key>>,
    relist: Option<HashMap<Key, Arc<K>>>,
}

/// Objects of one kind, by namespace and name, with a per-tenant index.
pub struct Cache<K> {
    kind: Kind,
    inner: RwLock<Inner<K>>,
    ready: watch::Sender<bool>,
}

/// Resource versions of bulkhead's own writes, so their watch echoes do not trigger a reconcile.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<ObjectKey, String>>);

impl OwnWrites {
    /// Records that bulkhead just wrote `key` at `resource_version`.
    pub fn record(&self, key: ObjectKey, resource_version: Option<String>) {
        if let (Some(rv), Ok(mut map)) = (resource_version, self.0.lock()) {
            map.insert(key, rv);
        }
    }

    /// True (once) when this event is the echo of bulkhead's own write.
    fn is_echo(&self, key: &ObjectKey, resource_version: Option<&str>) -> bool {
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

/// Where cache changes are reported.
#[derive(Clone)]
pub struct Triggers {
    /// Tenants whose objects changed.
    pub tenants: UnboundedSender<ObjectRef<Tenant>>,
    /// Shared (cross-tenant) objects changed.
    pub shared: UnboundedSender<()>,
    /// Echoes of bulkhead's own writes to ignore.
    pub own_writes: Arc<OwnWrites>,
}

/// The tenant named by an object's labels, if bulkhead manages it.
pub fn tenant_of(labels: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    labels.get(LABEL_TENANT).map(String::as_str)
}

fn key_of<K: kube::Resource>(obj: &K) -> Key {
    (obj.meta().namespace.clone(), obj.meta().name.clone().unwrap_or_default())
}

fn strip<K: kube::Resource>(mut obj: K) -> K {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    obj
}

impl<K> Cache<K>
where
    K: kube::Resource + Clone + Debug + Send + Sync + 'static,
{
    /// An empty cache for `kind`.
    pub fn new(kind: Kind) -> Arc<Self> {
        let (ready, _) = watch::channel(false);
        Arc::new(Self {
            kind,
            inner: RwLock::new(Inner { objects: HashMap::new(), by_tenant: HashMap::new(), relist: None }),
            ready,
        })
    }

    /// The cached object, if any.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let inner = self.inner.read().ok()?;
        inner.objects.get(&(namespace.map(str::to_string), name.to_string())).cloned()
    }

    /// Every cached object labelled as belonging to `tenant`.
    pub fn of_tenant(&self, tenant: &str) -> Vec<Arc<K>> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        inner
            .by_tenant
            .get(tenant)
            .map(|keys| keys.iter().filter_map(|k| inner.objects.get(k).cloned()).collect())
            .unwrap_or_default()
    }

    /// Every cached object.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.inner.read().map(|i| i.objects.values().cloned().collect()).unwrap_or_default()
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

    fn index_insert(by_tenant: &mut HashMap<String, BTreeSet<Key>>, obj: &K, key: &Key) {
        if let Some(t) = tenant_of(obj.labels()) {
            by_tenant.entry(t.to_string()).or_default().insert(key.clone());
        }
    }

    fn index_remove(by_tenant: &mut HashMap<String, BTreeSet<Key>>, obj: &K, key: &Key) {
        if let Some(t) = tenant_of(obj.labels())
            && let Some(set) = by_tenant.get_mut(t)
        {
            set.remove(key);
            if set.is_empty() {
                by_tenant.remove(t);
            }
        }
    }

    /// Applies one watch event; returns the objects whose change should trigger work.
    fn apply(&self, event: watcher::Event<K>) -> Vec<Arc<K>> {
        let Ok(mut inner) = self.inner.write() else {
            return Vec::new();
        };
        match event {
            watcher::Event::Apply(obj) => {
                let obj = Arc::new(strip(obj));
                let key = key_of(obj.as_ref());
                let old = inner.objects.insert(key.clone(), obj.clone());
                if let Some(old) = &old {
                    Self::index_remove(&mut inner.by_tenant, old, &key);
                }
                Self::index_insert(&mut inner.by_tenant, &obj, &key);
                // A relabelled object concerns the tenant it was taken from too.
                match old {
                    Some(old) if tenant_of(old.labels()) != tenant_of(obj.labels()) => {
                        vec![obj, old]
                    }
                    _ => vec![obj],
                }
            }
            watcher::Event::Delete(obj) => {
                let key = key_of(&obj);
                if let Some(old) = inner.objects.remove(&key) {
                    Self::index_remove(&mut inner.by_tenant, &old, &key);
                }
                vec![Arc::new(strip(obj))]
            }
            watcher::Event::Init => {
                inner.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                let obj = Arc::new(strip(obj));
                if let Some(buffer) = inner.relist.as_mut() {
                    buffer.insert(key_of(obj.as_ref()), obj);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = inner.relist.take().unwrap_or_default();
                // After a relist, everything that changed or vanished while the
                // watch was down must be looked at again.
                let mut changed: Vec<Arc<K>> = inner
                    .objects
                    .iter()
                    .filter(|(k, old)| {
                        fresh.get(*k).is_none_or(|new| new.meta().resource_version != old.meta().resource_version)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                changed.extend(fresh.iter().filter(|(k, _)| !inner.objects.contains_key(*k)).map(|(_, o)| o.clone()));
                let mut by_tenant = HashMap::new();
                for (key, obj) in &fresh {
                    Self::index_insert(&mut by_tenant, obj, key);
                }
                inner.objects = fresh;
                inner.by_tenant = by_tenant;
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
            for (i, obj) in self.apply(event).into_iter().enumerate() {
                let labels = obj.labels();
                let key = ObjectKey {
                    kind: self.kind,
                    namespace: obj.meta().namespace.clone(),
                    name: obj.meta().name.clone().unwrap_or_default(),
                };
                // Only the new version can be the echo of our own write: the
                // replaced one carries an older resourceVersion, which may match
                // a write of ours whose echo arrived before we recorded it.
                if i == 0 && !is_delete && triggers.own_writes.is_echo(&key, obj.meta().resource_version.as_deref()) {
                    break;
                }
                if labels.get(LABEL_SHARED).is_some_and(|v| v == "true")
                    && labels.get(LABEL_MANAGED_BY).is_some_and(|v| v == MANAGED_BY)
                {
                    let _ = triggers.shared.unbounded_send(());
                } else if let Some(tenant) = tenant_of(labels) {
                    let _ = triggers.tenants.unbounded_send(ObjectRef::new(tenant));
                }
            }
        }
    }
}
