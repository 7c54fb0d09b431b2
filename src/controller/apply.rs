//! Server-side apply of planned objects, deletion and release, each only
//! when the cache shows it is needed, so a converged tenant costs no writes.

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Context, Error, diff};
use crate::plan::object::Kind;
use crate::plan::{FIELD_MANAGER, LABEL_MANAGED_BY, ManagedObject, ObjectKey};

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Already as planned; nothing written.
    Unchanged,
    /// Did not exist; created.
    Created,
    /// Existed but differed; updated.
    Updated,
}

/// The planned object as it is sent (JSON with the applied-hash annotation) and that hash.
pub fn stamped(object: &ManagedObject) -> (Value, String) {
    let mut value = object.to_json();
    let hash = diff::stamp(&mut value);
    (value, hash)
}

/// The planned object as it is sent: JSON with the applied-hash annotation.
pub fn desired_json(object: &ManagedObject) -> Value {
    stamped(object).0
}

/// Whether an object as the cluster holds it (a cached copy or a write's
/// answer) holds the stamped `desired` object.
pub fn holds(kind: Kind, observed: &Value, desired: &Value) -> bool {
    match kind {
        // The namespace cache holds metadata only, as PartialObjectMetadata.
        Kind::Namespace => diff::contains(&observed["metadata"], &desired["metadata"]),
        _ => diff::contains(observed, desired),
    }
}

/// Applies one object with server-side apply, forcing ownership of the
/// fields bulkhead manages, unless the cache shows it is already as planned.
pub async fn apply(ctx: &Context, object: &ManagedObject) -> Result<Applied, Error> {
    let key = object.key();
    let (desired, hash) = stamped(object);
    let outcome = match ctx.caches.is_as_planned(&key, &hash, &desired) {
        Some(true) => return Ok(Applied::Unchanged),
        Some(false) => Applied::Updated,
        None => Applied::Created,
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    ctx.metrics.api_write(key.kind.as_str(), "apply");
    let written = {
        let _slot = ctx.api_slots.acquire().await;
        key.api(&ctx.client).patch(&key.name, &params, &Patch::Apply(&desired)).await
    }
    .map_err(|e| Error::api("apply", &key, e))?;
    // An answer that does not hold the plan (another admission webhook
    // changed it) is cached whole and compared again on the next reconcile.
    if let Ok(written) = serde_json::to_value(written) {
        let as_planned = holds(key.kind, &written, &desired);
        ctx.remember_write(key, written, as_planned.then_some(&hash));
    }
    Ok(outcome)
}

/// Deletes one object; an object already gone is not an error.
pub async fn delete(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    ctx.metrics.api_write(key.kind.as_str(), "delete");
    let _slot = ctx.api_slots.acquire().await;
    match key.api(&ctx.client).delete(&key.name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::api("delete", key, e)),
    }
}

/// Ends bulkhead's management of an object but keeps it, with its tenant
/// label, for the record: the managed-by label goes, so pruning and drift
/// repair never touch it again.
pub async fn release(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    let patch = json!({"metadata": {"labels": {LABEL_MANAGED_BY: null}}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    ctx.metrics.api_write(key.kind.as_str(), "patch");
    let _slot = ctx.api_slots.acquire().await;
    match key.api(&ctx.client).patch(&key.name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::api("release", key, e)),
    }
}
