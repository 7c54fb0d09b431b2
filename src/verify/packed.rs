//! The compact forms the cluster view keeps for minutes: every namespace's
//! labels and every NetworkPolicy and RoleBinding of the cluster.
//!
//! At a thousand tenants these were the operator's largest steady cost
//! (10 MB of a 40 MB heap, measured with heaptrack), almost all of it
//! repetition: namespaces carry the same few label keys and mostly the same
//! values, every tenant namespace holds the same default-deny policy, and a
//! tenant's namespaces hold identical allow policies and bindings. Each
//! distinct string and each distinct object is stored once and shared.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::plan::network::NAMESPACE_NAME_LABEL;

/// One shared copy of each distinct value.
#[derive(Debug)]
struct Interner<T: ?Sized>(HashSet<Arc<T>>);

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Self(HashSet::new())
    }
}

impl<T: ?Sized> Clone for Interner<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T>
where
    for<'a> Arc<T>: From<&'a T>,
{
    fn intern(&mut self, value: &T) -> Arc<T> {
        if let Some(shared) = self.0.get(value) {
            return shared.clone();
        }
        let shared: Arc<T> = Arc::from(value);
        self.0.insert(shared.clone());
        shared
    }
}

/// A namespace's labels, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceLabels(Box<[(Arc<str>, Arc<str>)]>);

impl NamespaceLabels {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().map(|i| self.0[i].1.as_ref())
    }
}

impl Serialize for NamespaceLabels {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }
}

/// Every namespace's labels, by namespace name.
#[derive(Clone, Debug, Default)]
pub struct Namespaces {
    labels: BTreeMap<String, NamespaceLabels>,
    strings: Interner<str>,
}

impl Namespaces {
    /// Records `namespace` with `labels` (replacing what it had).
    pub fn insert<K: AsRef<str>, V: AsRef<str>>(&mut self, namespace: &str, labels: impl IntoIterator<Item = (K, V)>) {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> = labels
            .into_iter()
            .map(|(k, v)| (self.strings.intern(k.as_ref()), self.strings.intern(v.as_ref())))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        self.labels.insert(namespace.to_string(), NamespaceLabels(pairs.into_boxed_slice()));
    }

    /// A label of a namespace as a namespaceSelector sees it: the apiserver
    /// sets `kubernetes.io/metadata.name` to the name and keeps it so, which
    /// wins over any stored copy (and holds for a namespace the view missed).
    pub fn label<'a>(&'a self, namespace: &'a str, key: &str) -> Option<&'a str> {
        if key == NAMESPACE_NAME_LABEL {
            return Some(namespace);
        }
        self.labels.get(namespace).and_then(|l| l.get(key))
    }

    /// Every namespace with its labels.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &NamespaceLabels)> {
        self.labels.iter().map(|(n, l)| (n.as_str(), l))
    }
}

/// The view's copy of a cluster-wide object: its spec, subjects and name,
/// which is all the connectivity model and the access checks read (labels
/// and annotations were most of each). The namespace is where it is filed.
fn identity_only<K: Resource>(mut o: K) -> K {
    let meta = o.meta_mut();
    *meta = ObjectMeta { name: meta.name.take(), ..Default::default() };
    o
}

/// Objects of one kind by namespace, each kept as compact JSON, decoded
/// when a check asks for it, and stored once however many namespaces hold
/// an identical one.
#[derive(Clone, Debug)]
pub struct ByNamespace<K> {
    packed: BTreeMap<String, Vec<Arc<[u8]>>>,
    objects: Interner<[u8]>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Default for ByNamespace<K> {
    fn default() -> Self {
        Self { packed: BTreeMap::new(), objects: Interner::default(), _kind: PhantomData }
    }
}

impl<K: Resource + Serialize + DeserializeOwned> ByNamespace<K> {
    /// Adds `objects`, keeping only what the checks read (see [`identity_only`]).
    pub fn extend(&mut self, objects: impl IntoIterator<Item = K>) {
        for mut o in objects {
            let namespace = o.meta_mut().namespace.take().unwrap_or_default();
            // Serializing an object that was just decoded cannot fail.
            let Ok(json) = serde_json::to_vec(&identity_only(o)) else { continue };
            let shared = self.objects.intern(json.as_slice());
            self.packed.entry(namespace).or_default().push(shared);
        }
    }

    /// The objects in `namespace`, if it holds any.
    pub fn get(&self, namespace: &str) -> Option<Vec<K>> {
        let packed = self.packed.get(namespace)?;
        Some(
            packed
                .iter()
                .filter_map(|json| serde_json::from_slice::<K>(json).ok())
                .map(|mut o| {
                    o.meta_mut().namespace = Some(namespace.to_string());
                    o
                })
                .collect(),
        )
    }

    /// How many distinct objects are stored (however many namespaces share them).
    pub fn distinct(&self) -> usize {
        self.objects.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::ResourceExt;
    use serde_json::json;

    fn policy(ns: &str, name: &str, team: &str) -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}"), "resourceVersion": "7",
                         "labels": {"app.kubernetes.io/managed-by": "bulkhead"}, "annotations": {"a": "b"}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"t": team}}}]}]}
        }))
        .expect("policy")
    }

    #[test]
    fn objects_keep_spec_name_and_namespace_and_nothing_else() {
        let mut packed = ByNamespace::default();
        packed.extend([policy("a", "p1", "x"), policy("b", "p2", "x"), policy("a", "p3", "x")]);
        let a = packed.get("a").expect("namespace a");
        assert_eq!(a.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["p1", "p3"]);
        assert_eq!(a[0].spec, policy("a", "p1", "x").spec);
        assert_eq!(a[0].metadata.namespace.as_deref(), Some("a"));
        assert!(a[0].metadata.labels.is_none() && a[0].metadata.annotations.is_none() && a[0].metadata.uid.is_none());
        assert_eq!(packed.get("b").map(|v| v.len()), Some(1));
        assert!(packed.get("c").is_none());
    }

    #[test]
    fn identical_objects_are_stored_once_and_read_back_in_each_namespace() {
        let mut packed = ByNamespace::default();
        packed.extend([policy("a", "deny", "x"), policy("a", "allow", "x")]);
        // A second page: the same objects in another namespace, and one that differs.
        packed.extend([policy("b", "deny", "x"), policy("b", "allow", "y"), policy("a", "extra", "x")]);
        assert_eq!(packed.distinct(), 4, "deny once, allow twice (different spec), extra once");
        let b = packed.get("b").expect("namespace b");
        assert_eq!(b.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["deny", "allow"]);
        assert!(b.iter().all(|p| p.metadata.namespace.as_deref() == Some("b")));
        assert_eq!(b[1].spec, policy("b", "allow", "y").spec);
        let a = packed.get("a").expect("namespace a");
        assert_eq!(a.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["deny", "allow", "extra"]);
        assert_eq!(a[1].spec, policy("a", "allow", "x").spec);
    }

    #[test]
    fn labels_are_found_by_key_and_the_name_label_is_implied() {
        let mut ns = Namespaces::default();
        ns.insert("a", [("team", "x"), ("tier", "web")]);
        ns.insert("b", [("team", "x"), (NAMESPACE_NAME_LABEL, "stale")]);
        assert_eq!(ns.label("a", "team"), Some("x"));
        assert_eq!(ns.label("a", "tier"), Some("web"));
        assert_eq!(ns.label("a", "zone"), None);
        assert_eq!(ns.label("b", NAMESPACE_NAME_LABEL), Some("b"), "the apiserver's name label wins");
        assert_eq!(ns.label("missing", NAMESPACE_NAME_LABEL), Some("missing"));
        assert_eq!(ns.label("missing", "team"), None);
        assert_eq!(ns.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["a", "b"], "only the namespaces inserted");
        let (_, a) = ns.iter().next().expect("a");
        let (_, b) = ns.iter().nth(1).expect("b");
        let team = |l: &NamespaceLabels| l.0.iter().find(|(k, _)| &**k == "team").map(|(k, v)| (k.clone(), v.clone()));
        let (ka, va) = team(a).expect("a has team");
        let (kb, vb) = team(b).expect("b has team");
        assert!(Arc::ptr_eq(&ka, &kb) && Arc::ptr_eq(&va, &vb), "one copy of each string");
    }
}
