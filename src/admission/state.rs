//! The cluster as the webhooks see it: a watch cache of Tenants, and the
//! controller's cache of every namespace. A webhook answers from memory in
//! well under a millisecond.

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
use crate::controller::cache::{Cache, drop_unread};
use crate::plan::namespaces::Existing;

/// The controller's cache of every namespace in the cluster.
pub type Namespaces = Cache<PartialObjectMeta<Namespace>>;

/// What the webhooks read of the cluster: every Tenant, in the controller's
/// compact form (decoded for the request that needs one), from a watch of
/// their own (the controller's Tenant store lives only in the leader and may
/// be limited to a shard), and every namespace from the controller's
/// namespace cache, which every replica keeps warm and which keeps of a
/// namespace exactly what a claim reads ([`Existing`]). Operator RSS at a
/// thousand tenants with the webhooks on: 70.4 MiB with typed stores of
/// their own, 64.5 with compact Tenants, 55.3 with the shared namespaces.
#[derive(Clone)]
pub struct State {
    tenants: Store<StoredTenant>,
    namespaces: Arc<Namespaces>,
}

impl State {
    /// Starts the Tenant watch (it runs until the process ends, retrying with backoff) beside `namespaces`.
    pub fn start(client: &Client, namespaces: Arc<Namespaces>) -> Self {
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
        Self { tenants, namespaces }
    }

    /// Waits until both caches hold a complete list, or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let ready = async {
            let _ = futures::join!(self.tenants.wait_until_ready(), self.namespaces.wait_ready());
        };
        tokio::time::timeout(timeout, ready).await.is_ok()
    }
}

impl View for State {
    fn namespace(&self, name: &str) -> Option<Existing> {
        self.namespaces.existing(None, name)
    }

    fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(&ObjectRef::new(name)).and_then(|s| s.decoded()).map(Arc::new)
    }
}
