//! Image rules, pure: with `images.allowedRegistries` set, every container,
//! init container and ephemeral container image must start with one of the
//! prefixes. References are read the way the container runtime reads them
//! (`nginx` is `docker.io/library/nginx`); digests are accepted and nothing
//! is rewritten.

use k8s_openapi::api::core::v1::Pod;

use super::decision::{Violation, rule};
use super::facts::TenantFacts;
use super::mutate::{SIDECAR_NAME, SidecarConfig};
use super::pods;

/// The fully qualified form of an image reference: registry host first.
pub fn normalize(image: &str) -> String {
    let image = image.trim();
    let Some((first, rest)) = image.split_once('/') else {
        return format!("docker.io/library/{image}");
    };
    if first == "index.docker.io" {
        return format!("docker.io/{rest}");
    }
    if first.contains('.') || first.contains(':') || first == "localhost" {
        image.to_string()
    } else {
        format!("docker.io/{image}")
    }
}

/// Whether `image` starts with `prefix` at a path, tag or digest boundary.
pub fn matches(image: &str, prefix: &str) -> bool {
    let image = normalize(image);
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() {
        return false;
    }
    match image.strip_prefix(prefix.as_str()) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', ':', '@']),
        None => false,
    }
}

/// Image rules for a pod (on update, only for containers the update adds or changes).
pub fn validate(pod: &Pod, old: Option<&Pod>, facts: &TenantFacts, cfg: &SidecarConfig) -> Vec<Violation> {
    let allowed = facts.spec().images.as_ref().map(|i| i.allowed_registries.as_slice()).unwrap_or_default();
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    if allowed.is_empty() {
        return Vec::new();
    }
    let old_spec = old.and_then(|o| o.spec.as_ref());
    let mut out = Vec::new();
    for c in pods::changed(spec, old_spec) {
        let image = c.image.unwrap_or_default();
        // The sidecar bulkhead injects comes from the operator's own image.
        if c.name == SIDECAR_NAME && image == cfg.image {
            continue;
        }
        if !allowed.iter().any(|p| matches(image, p)) {
            out.push(Violation::new(
                rule::IMAGE_REGISTRY,
                format!("{}.image", c.field),
                format!(
                    "image {image:?} is not from a registry tenant {} allows ({}); push it there and reference it by that name",
                    facts.name,
                    allowed.join(", ")
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::facts::testing::tenant;
    use crate::plan::Config;
    use serde_json::json;

    #[test]
    fn references_are_read_like_the_runtime_reads_them() {
        assert_eq!(normalize("nginx"), "docker.io/library/nginx");
        assert_eq!(normalize("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(normalize("bitnami/redis"), "docker.io/bitnami/redis");
        assert_eq!(normalize("index.docker.io/bitnami/redis"), "docker.io/bitnami/redis");
        assert_eq!(normalize("localhost/x"), "localhost/x");
        assert_eq!(normalize("registry:5000/x"), "registry:5000/x");
        assert_eq!(normalize("registry.acme.example/team/app@sha256:abc"), "registry.acme.example/team/app@sha256:abc");
    }

    #[test]
    fn prefixes_match_only_at_boundaries() {
        assert!(matches("registry.acme.example/app:1", "registry.acme.example/"));
        assert!(matches("registry.acme.example/app:1", "registry.acme.example"));
        assert!(!matches("registry.acme.example.evil.com/app:1", "registry.acme.example"));
        assert!(matches("registry.acme.example/team/app@sha256:0123", "registry.acme.example/team"));
        assert!(!matches("registry.acme.example/teamevil/app", "registry.acme.example/team"));
        assert!(matches("nginx", "docker.io/library/"));
        assert!(!matches("nginx", "registry.acme.example/"));
        assert!(!matches("anything", ""));
    }

    #[test]
    fn every_container_list_is_checked_and_the_sidecar_is_exempt() {
        let config = Config::default();
        let cfg = SidecarConfig::default();
        let t = tenant("acme", "namespaces: [{name: a}]\nimages: {allowedRegistries: [registry.acme.example/]}");
        let f = TenantFacts::new(&t, &config).unwrap();
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "ok", "image": "registry.acme.example/app@sha256:00"}, {"name": "bad", "image": "nginx"}],
            "initContainers": [{"name": SIDECAR_NAME, "image": cfg.image}, {"name": "init", "image": "quay.io/x/y"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}}))
        .unwrap();
        let out = validate(&p, None, &f, &cfg);
        let fields: Vec<&str> = out.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.containers[1].image", "spec.initContainers[1].image", "spec.ephemeralContainers[0].image"]
        );
        assert!(out[0].message.contains("registry.acme.example/"));
        assert!(out.iter().all(|v| v.rule == rule::IMAGE_REGISTRY));
        // No list: no restriction.
        let open = tenant("acme", "namespaces: [{name: a}]");
        assert!(validate(&p, None, &TenantFacts::new(&open, &config).unwrap(), &cfg).is_empty());
    }

    #[test]
    fn an_image_update_is_judged_too() {
        let config = Config::default();
        let cfg = SidecarConfig::default();
        let t = tenant("acme", "namespaces: [{name: a}]\nimages: {allowedRegistries: [registry.acme.example/]}");
        let f = TenantFacts::new(&t, &config).unwrap();
        let old: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "nginx"}]}}),
        )
        .unwrap();
        let mut new = old.clone();
        assert!(validate(&new, Some(&old), &f, &cfg).is_empty(), "unchanged containers are not judged again");
        new.spec.as_mut().unwrap().containers[0].image = Some("docker.io/evil/miner".into());
        assert_eq!(validate(&new, Some(&old), &f, &cfg).len(), 1);
    }
}
