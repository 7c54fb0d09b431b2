//! Deciding, without writing, whether an object already is as planned.
//!
//! An object is up to date when everything bulkhead wants is present with the
//! same value (the server may add defaults and other managers may add
//! fields), and when the hash of the configuration bulkhead last applied,
//! kept in an annotation, matches the plan. The hash catches fields bulkhead
//! stopped wanting: those are only removed by a new apply.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Annotation holding the hash of the configuration bulkhead applied.
pub const APPLIED_HASH: &str = "bulkhead.dev/applied-hash";

/// Hash of a desired object, stable across runs and versions of bulkhead.
pub fn config_hash(desired: &Value) -> String {
    // serde_json keeps map keys sorted (no preserve_order feature), so the text is canonical.
    let text = desired.to_string();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// Adds the applied-hash annotation to a desired object and returns the hash.
pub fn stamp(desired: &mut Value) -> String {
    let hash = config_hash(desired);
    if let Some(meta) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(APPLIED_HASH.to_string(), Value::String(hash.clone()));
        }
    }
    hash
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether every field of `desired` is present in `observed` with the same value.
/// Empty maps, empty lists and nulls in `desired` match absent fields, as the
/// apiserver drops them.
pub fn contains(observed: &Value, desired: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, dv)| match o.get(k) {
            Some(ov) => contains(ov, dv),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(o)) => d.len() == o.len() && d.iter().zip(o).all(|(dv, ov)| contains(ov, dv)),
        (d, o) if is_empty(d) => is_empty(o) || d == o,
        (d, o) => d == o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_and_foreign_fields_are_not_drift() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 53}]}});
        let observed = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "other": "y"}},
                              "spec": {"ports": [{"port": 53, "protocol": "TCP"}]}});
        assert!(contains(&observed, &desired));
    }

    #[test]
    fn edits_removals_and_extra_list_items_are_drift() {
        let desired = json!({"spec": {"ingress": [{"from": [{"a": 1}]}]}});
        assert!(!contains(&json!({"spec": {"ingress": [{"from": [{"a": 2}]}]}}), &desired));
        assert!(!contains(&json!({"spec": {}}), &desired));
        assert!(!contains(&json!({"spec": {"ingress": [{"from": [{"a": 1}]}, {"from": []}]}}), &desired));
    }

    #[test]
    fn empty_values_match_absent_fields() {
        let desired = json!({"spec": {"podSelector": {}, "ingress": null}});
        assert!(contains(&json!({"spec": {}}), &desired));
        assert!(contains(&json!({"spec": {"podSelector": {}}}), &desired));
    }

    #[test]
    fn hash_changes_when_a_field_is_dropped() {
        let mut with = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}});
        let mut without = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        let h1 = stamp(&mut with);
        let h2 = stamp(&mut without);
        assert_ne!(h1, h2);
        // The old object still contains everything the new plan wants, but not its hash.
        assert!(!contains(&with, &without));
        assert!(contains(&with, &with.clone()));
    }
}
