//! The cluster as the webhooks see it: watch caches of Tenants and of every
//! namespace's metadata. The admission server keeps its own caches rather
//! than borrowing the controller's: with leader election every replica
//! serves webhooks while only the leader reconciles, and a webhook must
//! answer from memory in well under a millisecond.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::facts::View;
use crate::api::{StoredTenant, Tenant};
use crate::controller::cache::drop_unread;
use crate::plan::namespaces::Existing;
use crate::plan::{LABEL_MANAGED_BY, LABEL_TENANT};

/// Watch-fed caches of Tenants and namespaces, each kept as small as what
/// the rules read: Tenants in the controller's compact form (decoded for
/// the request that needs one), namespaces with their name, labels and
/// deletion only. At a thousand tenants the typed copies held 5.5 MiB more
/// (operator RSS 70.4 → 64.5 MiB with the webhooks on).
#[derive(Clone)]
pub struct State {
    tenants: Store<StoredTenant>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// Keeps what [`View::namespace`] reads of a namespace ([`Existing`]): its
/// name, its tenant and managed-by labels and its deletion.
fn namespace_facts(ns: &mut PartialObjectMeta<Namespace>) {
    let meta = &mut ns.metadata;
    let mut labels = meta.labels.take().unwrap_or_default();
    labels.retain(|k, _| k == LABEL_TENANT || k == LABEL_MANAGED_BY);
    *meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: meta.name.take(),
        labels: Some(labels),
        deletion_timestamp: meta.deletion_timestamp.take(),
        resource_version: meta.resource_version.take(),
        ..Default::default()
    };
}

impl State {
    /// Starts both watches; they run until the process ends, retrying with backoff.
    pub fn start(client: &Client) -> Self {
        let (tenants, tenant_writer) = reflector::store();
        let tenant_stream = watcher(Api::<StoredTenant>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(drop_unread)
            .reflect(tenant_writer);
        tokio::spawn(tenant_stream.for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "admission: Tenant watch failed; retrying");
            }
        }));
        let (namespaces, ns_writer) = reflector::store();
        let ns_stream = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(namespace_facts)
            .reflect(ns_writer);
        tokio::spawn(ns_stream.for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "admission: namespace watch failed; retrying");
            }
        }));
        Self { tenants, namespaces }
    }

    /// Waits until both caches hold a complete list, or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let ready = async {
            let _ = futures::join!(self.tenants.wait_until_ready(), self.namespaces.wait_until_ready());
        };
        tokio::time::timeout(timeout, ready).await.is_ok()
    }
}

impl View for State {
    fn namespace(&self, name: &str) -> Option<Existing> {
        let ns = self.namespaces.get(&ObjectRef::new(name))?;
        Some(Existing::of(ns.metadata.labels.as_ref(), ns.metadata.deletion_timestamp.is_some()))
    }

    fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(&ObjectRef::new(name)).and_then(|s| s.decoded()).map(Arc::new)
    }
}
