//! ResourceQuota and LimitRange per namespace, and the tenant-wide quota.
//!
//! `tenantHard` is enforced by giving each namespace a share of the tenant
//! limit in its own ResourceQuota, so the apiserver's quota admission does the
//! enforcing and the sum can never exceed the limit. Shares start equal; when
//! a namespace exhausts its share while the tenant still has headroom,
//! [`rebalance`] moves the free headroom to where it is needed. Shares only
//! change when a namespace runs out, so quota usage alone causes no writes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::TenantSpec;

use super::quantity::Quantity;
use super::{ManagedObject, PlanError, owner_labels};

/// Name of the ResourceQuota in every tenant namespace.
pub const QUOTA: &str = "bulkhead-quota";
/// Name of the LimitRange in every tenant namespace.
pub const LIMITS: &str = "bulkhead-limits";

/// Quantities by resource name.
pub type Resources = BTreeMap<String, Quantity>;

/// Parses a map of quantities, naming the field on error.
pub fn parse_map(map: &BTreeMap<String, K8sQuantity>, field: &str) -> Result<Resources, PlanError> {
    map.iter()
        .map(|(k, v)| {
            Quantity::parse(&v.0)
                .map(|q| (k.clone(), q))
                .map_err(|source| PlanError::Quantity { field: format!("{field}.{k}"), source })
        })
        .collect()
}

fn to_k8s(map: &Resources) -> BTreeMap<String, K8sQuantity> {
    map.iter().map(|(k, v)| (k.clone(), K8sQuantity(v.to_string()))).collect()
}

/// Smallest step a share of `resource` is rounded to: thousandths for CPU, whole units otherwise.
fn step(resource: &str) -> i128 {
    if resource.ends_with("cpu") { 1 } else { 1000 }
}

/// `amount / parts`, rounded down to the resource's step.
fn share_of(resource: &str, amount: i128, parts: usize) -> i128 {
    let parts = parts.max(1) as i128;
    let raw = amount.max(0) / parts;
    raw - raw % step(resource)
}

/// Equal shares of each tenant-wide limit, capped by the per-namespace `hard`.
fn initial_hard(hard: &Resources, tenant_hard: &Resources, namespaces: usize) -> Resources {
    let mut out = hard.clone();
    for (resource, limit) in tenant_hard {
        let share = Quantity::from_milli(share_of(resource, limit.milli(), namespaces), limit.is_binary());
        let capped = match hard.get(resource) {
            Some(h) if h.milli() < share.milli() => *h,
            _ => share,
        };
        out.insert(resource.clone(), capped);
    }
    out
}

/// ResourceQuota and LimitRange for every namespace, when the spec asks for them.
pub fn plan(tenant: &str, namespaces: &[String], spec: &TenantSpec) -> Result<Vec<ManagedObject>, PlanError> {
    let mut out = Vec::new();
    if let Some(quota) = &spec.quota {
        let hard = parse_map(&quota.hard, "spec.quota.hard")?;
        let tenant_hard = parse_map(&quota.tenant_hard, "spec.quota.tenantHard")?;
        let per_namespace = initial_hard(&hard, &tenant_hard, namespaces.len());
        if !per_namespace.is_empty() {
            for ns in namespaces {
                out.push(quota_object(tenant, ns, &per_namespace));
            }
        }
    }
    if let Some(limits) = &spec.limits {
        let item = LimitRangeItem {
            type_: "Container".into(),
            default: non_empty(to_k8s(&parse_map(&limits.default, "spec.limits.default")?)),
            default_request: non_empty(to_k8s(&parse_map(&limits.default_request, "spec.limits.defaultRequest")?)),
            max: non_empty(to_k8s(&parse_map(&limits.max, "spec.limits.max")?)),
            ..Default::default()
        };
        if item.default.is_some() || item.default_request.is_some() || item.max.is_some() {
            for ns in namespaces {
                out.push(ManagedObject::LimitRange(LimitRange {
                    metadata: meta(tenant, ns, LIMITS),
                    spec: Some(LimitRangeSpec { limits: vec![item.clone()] }),
                }));
            }
        }
    }
    Ok(out)
}

fn non_empty(map: BTreeMap<String, K8sQuantity>) -> Option<BTreeMap<String, K8sQuantity>> {
    (!map.is_empty()).then_some(map)
}

fn meta(tenant: &str, namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(owner_labels(tenant)),
        ..Default::default()
    }
}

fn quota_object(tenant: &str, namespace: &str, hard: &Resources) -> ManagedObject {
    ManagedObject::ResourceQuota(ResourceQuota {
        metadata: meta(tenant, namespace, QUOTA),
        spec: Some(ResourceQuotaSpec { hard: Some(to_k8s(hard)), ..Default::default() }),
        status: None,
    })
}

/// What the cluster reports for one namespace's ResourceQuota.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// `spec.hard` as stored.
    pub hard: Resources,
    /// `status.used` as counted by the quota controller.
    pub used: Resources,
}

impl Observed {
    /// What a ResourceQuota object reports (unparseable quantities are skipped).
    pub fn of(rq: &ResourceQuota) -> Self {
        let parse = |map: Option<&BTreeMap<String, K8sQuantity>>| {
            map.map(|m| m.iter().filter_map(|(k, v)| Quantity::parse(&v.0).ok().map(|q| (k.clone(), q))).collect())
                .unwrap_or_default()
        };
        Self {
            hard: parse(rq.spec.as_ref().and_then(|s| s.hard.as_ref())),
            used: parse(rq.status.as_ref().and_then(|s| s.used.as_ref())),
        }
    }
}

/// Moves tenant-wide headroom to namespaces that exhausted their share.
///
/// Keeps the current shares while they still sum within the tenant limit and
/// every namespace has room left; otherwise every namespace gets its usage
/// plus an equal part of the free headroom. The sum never exceeds the limit.
pub fn rebalance(
    tenant_hard: &Resources,
    ns_hard: &Resources,
    namespaces: &[String],
    observed: &BTreeMap<String, Observed>,
) -> BTreeMap<String, Resources> {
    let mut out: BTreeMap<String, Resources> = namespaces.iter().map(|ns| (ns.clone(), ns_hard.clone())).collect();
    for (resource, limit) in tenant_hard {
        let current: Vec<Option<i128>> = namespaces
            .iter()
            .map(|ns| observed.get(ns).and_then(|o| o.hard.get(resource)).map(|q| q.milli()))
            .collect();
        let used: Vec<i128> = namespaces
            .iter()
            .map(|ns| observed.get(ns).and_then(|o| o.used.get(resource)).map_or(0, |q| q.milli()))
            .collect();
        let cap = ns_hard.get(resource).map(|q| q.milli());
        // Rebalancing is a no-op write-wise when it reproduces the current
        // shares, so recomputing whenever a namespace is full is stable.
        let keep = current.iter().all(Option::is_some) && {
            let cur: Vec<i128> = current.iter().map(|c| c.unwrap_or(0)).collect();
            let within_limit = cur.iter().sum::<i128>() <= limit.milli();
            let within_cap = cap.is_none_or(|cap| cur.iter().all(|c| *c <= cap));
            let room_everywhere = cur.iter().zip(&used).all(|(c, u)| u < c);
            within_limit && within_cap && room_everywhere
        };
        let shares: Vec<i128> = if keep {
            current.iter().map(|c| c.unwrap_or(0)).collect()
        } else {
            let free = limit.milli() - used.iter().sum::<i128>();
            let each = share_of(resource, free, namespaces.len());
            used.iter().map(|u| u + each).collect()
        };
        for (ns, share) in namespaces.iter().zip(shares) {
            let share = cap.map_or(share, |cap| share.min(cap));
            if let Some(map) = out.get_mut(ns) {
                map.insert(resource.clone(), Quantity::from_milli(share, limit.is_binary()));
            }
        }
    }
    out
}

/// Replaces the ResourceQuotas in `objects` with rebalanced shares.
pub fn apply_rebalance(
    objects: &mut [ManagedObject],
    tenant: &str,
    spec: &TenantSpec,
    namespaces: &[String],
    observed: &BTreeMap<String, Observed>,
) -> Result<(), PlanError> {
    let Some(quota) = &spec.quota else {
        return Ok(());
    };
    if quota.tenant_hard.is_empty() {
        return Ok(());
    }
    let hard = parse_map(&quota.hard, "spec.quota.hard")?;
    let tenant_hard = parse_map(&quota.tenant_hard, "spec.quota.tenantHard")?;
    let shares = rebalance(&tenant_hard, &hard, namespaces, observed);
    for object in objects.iter_mut() {
        if let ManagedObject::ResourceQuota(rq) = object
            && let Some(ns) = rq.metadata.namespace.clone()
            && let Some(share) = shares.get(&ns)
        {
            *object = quota_object(tenant, &ns, share);
        }
    }
    Ok(())
}

/// Tenant-wide limit and summed usage for each `tenantHard` resource.
pub fn tenant_usage(
    tenant_hard: &Resources,
    observed: &BTreeMap<String, Observed>,
) -> BTreeMap<String, (Quantity, Quantity)> {
    tenant_hard
        .iter()
        .map(|(resource, limit)| {
            let used: i128 = observed.values().filter_map(|o| o.used.get(resource)).map(|q| q.milli()).sum();
            (resource.clone(), (*limit, Quantity::from_milli(used, limit.is_binary())))
        })
        .collect()
}
