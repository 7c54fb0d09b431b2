//! The Tenant API types and the CRD generated from them.

pub mod stored;
pub mod tenant;

pub use stored::StoredTenant;
pub use tenant::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSONSchemaProps};
use kube::CustomResourceExt;

/// The Tenant CRD as YAML, exactly what `bulkhead crd` prints and `crds/` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let crd = with_metadata_name(Tenant::crd());
    serde_yaml::to_string(&crd).map(|yaml| format!("---\n{yaml}"))
}

/// Declares `metadata.name` in the schema (a string, no restriction of its
/// own): the rule on the Tenant's name can then report its failure at
/// `metadata.name`, where the apiserver would otherwise print `<nil>`.
fn with_metadata_name(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let roots = crd.spec.versions.iter_mut().filter_map(|v| v.schema.as_mut()?.open_api_v3_schema.as_mut());
    for root in roots {
        let name = JSONSchemaProps { type_: Some("string".into()), ..Default::default() };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some([("name".to_string(), name)].into()),
            ..Default::default()
        };
        root.properties.get_or_insert_default().insert("metadata".into(), metadata);
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formats the apiserver knows; any other draws a warning on every apply of the CRD.
    const KNOWN_FORMATS: &[&str] =
        &["int32", "int64", "float", "double", "byte", "date", "date-time", "duration", "uuid"];

    fn formats(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(f)) = map.get("format") {
                    out.push(f.clone());
                }
                map.values().for_each(|v| formats(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| formats(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_schema_uses_only_formats_the_apiserver_knows() {
        let crd = serde_json::to_value(with_metadata_name(Tenant::crd())).expect("CRD serializes");
        let mut found = Vec::new();
        formats(&crd, &mut found);
        assert!(found.contains(&"int32".to_string()), "the walk found no format at all: {found:?}");
        let unknown: Vec<_> = found.iter().filter(|f| !KNOWN_FORMATS.contains(&f.as_str())).collect();
        assert!(unknown.is_empty(), "formats the apiserver warns about: {unknown:?}");
    }

    #[test]
    fn the_name_rule_can_report_at_metadata_name() {
        let crd = with_metadata_name(Tenant::crd());
        let root = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("schema");
        let name = root.properties.as_ref().and_then(|p| p.get("metadata")?.properties.as_ref()?.get("name"));
        assert_eq!(name.and_then(|n| n.type_.as_deref()), Some("string"));
        let rules = root.x_kubernetes_validations.as_deref().unwrap_or_default();
        assert!(rules.iter().any(|r| r.field_path.as_deref() == Some(".metadata.name")), "{rules:?}");
    }
}
