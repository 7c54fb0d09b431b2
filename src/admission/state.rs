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

use super::facts::{NamespaceInfo, View};
use crate::api::Tenant;
use crate::controller::cache::drop_unread;

/// Watch-fed caches of Tenants and namespaces.
#[derive(Clone)]
pub struct State {
    tenants: Store<Tenant>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl State {
    /// Starts both watches; they run until the process ends, retrying with backoff.
    pub fn start(client: &Client) -> Self {
        let (tenants, tenant_writer) = reflector::store();
        let tenant_stream = watcher(Api::<Tenant>::all(client.clone()), watcher::Config::default())
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
            .modify(drop_unread)
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
    fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        let ns = self.namespaces.get(&ObjectRef::new(name))?;
        Some(NamespaceInfo {
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        })
    }

    fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(&ObjectRef::new(name))
    }

    fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.tenants.state()
    }
}
