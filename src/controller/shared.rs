//! The profile ClusterRoles every tenant binds: applied at start-up and
//! restored whenever one is changed or deleted.

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use std::sync::Arc;
use std::time::Duration;

use crate::plan::ObjectKey;
use crate::plan::access::profile_cluster_roles;
use crate::plan::object::Kind;

use super::apply::{self, Applied};
use super::{Context, Error};

/// Applies every profile ClusterRole that differs and deletes shared roles no longer planned.
pub async fn ensure(ctx: &Context) -> Result<usize, Error> {
    let desired = profile_cluster_roles();
    let mut changed = 0;
    for role in &desired {
        if apply::apply(ctx, role).await? != Applied::Unchanged {
            changed += 1;
            tracing::info!(object = %role.key(), "profile ClusterRole applied");
        }
    }
    let wanted: Vec<ObjectKey> = desired.iter().map(|o| o.key()).collect();
    for name in ctx.caches.cluster_roles.shared_names() {
        let key = ObjectKey { kind: Kind::ClusterRole, namespace: None, name };
        if !wanted.contains(&key) {
            apply::delete(ctx, &key).await?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Re-applies the profile roles on every change to them.
pub async fn run(ctx: Arc<Context>, mut changes: UnboundedReceiver<()>) {
    while changes.next().await.is_some() {
        // Coalesce a burst of changes into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while changes.try_recv().is_ok() {}
        match ensure(&ctx).await {
            Ok(0) => {}
            Ok(n) => {
                (0..n).for_each(|_| ctx.metrics.drift_repaired("ClusterRole"));
                tracing::warn!(repaired = n, "profile ClusterRoles were changed outside bulkhead and restored")
            }
            Err(e) => tracing::error!(error = %e, "cannot restore the profile ClusterRoles"),
        }
    }
}
