//! The audit record format and its canonical bytes.
//!
//! Every audit record is one JSON object on one line:
//!
//! ```json
//! {"container":"app","key_id":"k2","namespace":"acme-calls","pod":"ivr-7d9f","prev":"<64 hex>",
//!  "record":{"action":"read","object":"call/42"},"seq":17,"sig":"<64 hex>","tenant":"acme",
//!  "time":"2025-01-31T12:00:00.123456789Z"}
//! ```
//!
//! | field | meaning |
//! | --- | --- |
//! | `record` | the application's record, any JSON object, unchanged |
//! | `tenant`, `namespace`, `pod`, `container` | who wrote it (downward API and flags); together they name the chain |
//! | `seq` | position in the chain, 1 for the first record, +1 for each next one; survives sidecar restarts |
//! | `time` | when the sidecar sealed it, RFC 3339 in UTC |
//! | `prev` | hex SHA-256 of the previous record's canonical bytes (with its `sig`), 64 zeros for `seq` 1 |
//! | `key_id` | id of the tenant audit key that signed it (file `audit-key.<key_id>`) |
//! | `sig` | hex HMAC-SHA256, under that key, of the canonical bytes of the record without `sig` |
//!
//! **Canonical bytes** of a JSON value are its compact serde_json serialisation
//! (no whitespace at all) with the keys of every object, at every depth, in
//! ascending byte order of their UTF-8 encoding; strings are escaped as
//! serde_json does (only `"`, `\` and U+0000–U+001F, everything else as raw
//! UTF-8), integers are plain decimal and other numbers use the shortest form
//! that reads back to the same `f64`. Because the sidecar writes every line in
//! canonical form, the line's own bytes are its canonical bytes; the verifier
//! still recomputes them from the parsed value, so a log pipeline that
//! reorders keys or adds whitespace does not break verification.

use serde_json::{Map, Value};

/// Hex of the `prev` of the first record of a chain.
pub const GENESIS_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Field names of a sealed record.
pub mod field {
    /// The application's record.
    pub const RECORD: &str = "record";
    /// Tenant name.
    pub const TENANT: &str = "tenant";
    /// Pod namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Pod name.
    pub const POD: &str = "pod";
    /// Container name.
    pub const CONTAINER: &str = "container";
    /// Sequence number.
    pub const SEQ: &str = "seq";
    /// Sealing time.
    pub const TIME: &str = "time";
    /// Hash of the previous record.
    pub const PREV: &str = "prev";
    /// Signing key id.
    pub const KEY_ID: &str = "key_id";
    /// Signature.
    pub const SIG: &str = "sig";
}

/// Who writes a chain: one chain per (tenant, namespace, pod, container).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Tenant name (`BULKHEAD_TENANT`).
    pub tenant: String,
    /// Pod namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// Pod name (`POD_NAME`).
    pub pod: String,
    /// Name of the container whose records these are.
    pub container: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}/{}", self.tenant, self.namespace, self.pod, self.container)
    }
}

/// The canonical bytes of `value` (see the module documentation).
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical bytes of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out),
        leaf => write_leaf(leaf, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    // serde_json maps are BTreeMaps (sorted) unless some crate in the build
    // turns on `preserve_order`; sorting here keeps the signature format
    // independent of that feature, and costs nothing when already sorted.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    if !entries.is_sorted_by(|a, b| a.0.as_bytes() <= b.0.as_bytes()) {
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_leaf(value: &Value, out: &mut Vec<u8>) {
    // Null, booleans, numbers and strings: serde_json's own output is canonical.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serde_json_maps_stay_sorted() {
        // If a dependency ever enables serde_json's `preserve_order`, maps keep
        // insertion order; canonical bytes must not change when that happens.
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"z":1,"y":2}}"#).unwrap();
        let plain = serde_json::to_string(&v).unwrap();
        assert_eq!(plain, r#"{"a":{"y":2,"z":1},"b":1}"#, "serde_json/preserve_order got enabled in this build");
        assert_eq!(canonical_bytes(&v), plain.as_bytes());
    }

    #[test]
    fn canonical_form_is_compact_sorted_and_escaped() {
        let v = json!({"é": "ü\n\"", "B": [1, 2.5, null, true, {"d": -0.0, "c": 1e300}], "a": ""});
        let got = String::from_utf8(canonical_bytes(&v)).unwrap();
        assert_eq!(got, "{\"B\":[1,2.5,null,true,{\"c\":1e+300,\"d\":-0.0}],\"a\":\"\",\"é\":\"ü\\n\\\"\"}");
    }

    #[test]
    fn canonical_bytes_read_back_identically() {
        let v = json!({"x": 0.1, "y": 1.0000000000000002, "z": 123456789012345678u64, "w": -5, "big": 1.7976931348623157e308});
        let bytes = canonical_bytes(&v);
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(canonical_bytes(&back), bytes);
    }
}
