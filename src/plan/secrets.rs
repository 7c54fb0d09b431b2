//! Per-tenant key material: when keys rotate, what is kept, and the
//! Secrets projected into every tenant namespace. Pure: randomness and time
//! come in as arguments, so every rule here is unit-tested.
//!
//! Values live only in [`Material`]; its `Debug` prints key ids, never bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::api::SecretsSpec;

use super::{ManagedObject, owner_labels};

/// Name of the key Secret in every tenant namespace.
pub const KEYS_SECRET: &str = "bulkhead-keys";
/// Data key holding the current key id.
pub const DEK_ID: &str = "dek-id";
/// Data key holding the current audit key id.
pub const AUDIT_KEY_ID: &str = "audit-key-id";
/// Rotation cap under PCI-DSS: 30 days.
pub const PCI_MAX_ROTATION: SignedDuration = SignedDuration::from_hours(720);

/// The name of a tenant's source Secret in the operator's namespace.
pub fn source_name(tenant: &str) -> String {
    format!("bulkhead-keys-{tenant}")
}

/// 32 secret bytes that never print.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| serde::de::Error::custom("a key must be exactly 32 bytes"))?;
        Ok(Key(arr))
    }
}

/// One generation of the tenant's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    /// Key id, shared by the data-encryption and audit keys of this generation.
    pub id: String,
    /// When this generation was made (RFC 3339).
    pub created: Timestamp,
    /// AES-256 data-encryption key.
    pub dek: Key,
    /// HMAC-SHA256 audit-signing key.
    pub audit: Key,
}

/// Everything secret a tenant has: stored (wrapped or not) in the source Secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Material {
    /// Format version of this document.
    pub version: u32,
    /// Key generations, newest (current) first.
    pub keys: Vec<KeyPair>,
    /// The last rotation trigger acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_trigger: Option<String>,
    /// Generated credentials: Secret name → key → value.
    #[serde(default)]
    pub generated: BTreeMap<String, BTreeMap<String, Credential>>,
}

/// A generated credential value that never prints.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credential(pub String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Drop for Credential {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Material")
            .field("keys", &ids)
            .field("generated", &self.generated.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Material {
    /// The current key generation.
    pub fn current(&self) -> Option<&KeyPair> {
        self.keys.first()
    }
}

/// Where new key bytes and ids come from (the OS CSPRNG in production).
pub trait Entropy {
    /// 32 random bytes.
    fn key(&mut self) -> Key;
    /// A fresh key id.
    fn id(&mut self) -> String;
}

/// What [`evolve`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Material made for the first time.
    pub created: bool,
    /// A new key generation became current.
    pub rotated: bool,
    /// Generated credentials were added or removed.
    pub credentials: bool,
}

impl Change {
    /// Whether the source Secret must be written.
    pub fn any(self) -> bool {
        self.created || self.rotated || self.credentials
    }
}

/// When the current keys are due for replacement.
pub fn next_rotation(material: &Material, period: SignedDuration) -> Option<Timestamp> {
    material.current().and_then(|k| k.created.checked_add(period).ok())
}

fn new_pair(now: Timestamp, rng: &mut dyn Entropy) -> KeyPair {
    KeyPair { id: rng.id(), created: now, dek: rng.key(), audit: rng.key() }
}

/// Brings the material up to date: creates it, rotates it when due or asked
/// (`trigger` differs from the last one handled), trims old generations to
/// `keepPrevious`, and adds or removes generated credentials. Existing
/// values are never changed: data encrypted with them stays readable.
pub fn evolve(
    existing: Option<Material>,
    spec: &SecretsSpec,
    period: SignedDuration,
    trigger: Option<&str>,
    now: Timestamp,
    rng: &mut dyn Entropy,
) -> (Material, Change) {
    let mut change = Change::default();
    let mut m = match existing {
        Some(m) if !m.keys.is_empty() => m,
        _ => {
            change.created = true;
            Material {
                version: 1,
                keys: vec![new_pair(now, rng)],
                handled_trigger: trigger.map(str::to_string),
                generated: BTreeMap::new(),
            }
        }
    };
    let due = next_rotation(&m, period).is_some_and(|next| now >= next);
    let asked = trigger.is_some() && trigger != m.handled_trigger.as_deref();
    if !change.created && (due || asked) {
        m.keys.insert(0, new_pair(now, rng));
        m.handled_trigger = trigger.map(str::to_string);
        change.rotated = true;
    }
    let keep = usize::from(spec.keep_previous) + 1;
    if m.keys.len() > keep {
        m.keys.truncate(keep);
        change.rotated = true;
    }
    let wanted: BTreeMap<&str, BTreeSet<&str>> =
        spec.generated.iter().map(|g| (g.name.as_str(), g.keys.iter().map(String::as_str).collect())).collect();
    let before = m.generated.clone();
    m.generated.retain(|name, _| wanted.contains_key(name.as_str()));
    for (name, keys) in &wanted {
        let entry = m.generated.entry(name.to_string()).or_default();
        entry.retain(|k, _| keys.contains(k.as_str()));
        for key in keys {
            entry.entry(key.to_string()).or_insert_with(|| Credential(URL_SAFE_NO_PAD.encode(rng.key().0)));
        }
    }
    if m.generated != before {
        change.credentials = true;
    }
    (m, change)
}

fn secret(tenant: &str, namespace: &str, name: &str, data: BTreeMap<String, ByteString>) -> ManagedObject {
    ManagedObject::Secret(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(owner_labels(tenant)),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// The key Secret and one Secret per generated credential, in every namespace.
pub fn projections(tenant: &str, namespaces: &[String], material: &Material) -> Vec<ManagedObject> {
    let Some(current) = material.current() else {
        return Vec::new();
    };
    let mut keys = BTreeMap::new();
    keys.insert(DEK_ID.to_string(), ByteString(current.id.clone().into_bytes()));
    keys.insert(AUDIT_KEY_ID.to_string(), ByteString(current.id.clone().into_bytes()));
    for pair in &material.keys {
        keys.insert(format!("dek.{}", pair.id), ByteString(pair.dek.0.to_vec()));
        keys.insert(format!("audit-key.{}", pair.id), ByteString(pair.audit.0.to_vec()));
    }
    let mut out = Vec::new();
    for ns in namespaces {
        out.push(secret(tenant, ns, KEYS_SECRET, keys.clone()));
        for (name, values) in &material.generated {
            let data = values.iter().map(|(k, v)| (k.clone(), ByteString(v.0.clone().into_bytes()))).collect();
            out.push(secret(tenant, ns, name, data));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GeneratedSecret;

    struct Counter(u8);
    impl Entropy for Counter {
        fn key(&mut self) -> Key {
            self.0 += 1;
            Key([self.0; 32])
        }
        fn id(&mut self) -> String {
            self.0 += 1;
            format!("k{}", self.0)
        }
    }

    fn spec(keep: u8, generated: &[(&str, &[&str])]) -> SecretsSpec {
        SecretsSpec {
            rotation_period: "2160h".into(),
            keep_previous: keep,
            generated: generated
                .iter()
                .map(|(n, ks)| GeneratedSecret {
                    name: n.to_string(),
                    keys: ks.iter().map(|k| k.to_string()).collect(),
                })
                .collect(),
        }
    }

    const DAY: SignedDuration = SignedDuration::from_hours(24);

    fn at(days: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + days * 86_400).unwrap()
    }

    #[test]
    fn first_material_has_one_generation_and_the_credentials() {
        let mut rng = Counter(0);
        let (m, c) = evolve(None, &spec(3, &[("crm-db", &["password"])]), DAY * 90, None, at(0), &mut rng);
        assert!(c.created && !c.rotated);
        assert_eq!(m.keys.len(), 1);
        assert_ne!(m.keys[0].dek, m.keys[0].audit);
        let pw = &m.generated["crm-db"]["password"].0;
        assert_eq!(URL_SAFE_NO_PAD.decode(pw).unwrap().len(), 32);
    }

    #[test]
    fn nothing_changes_before_the_rotation_is_due() {
        let mut rng = Counter(0);
        let s = spec(3, &[]);
        let (m, _) = evolve(None, &s, DAY * 90, None, at(0), &mut rng);
        let (again, c) = evolve(Some(m.clone()), &s, DAY * 90, None, at(89), &mut rng);
        assert!(!c.any());
        assert_eq!(again, m);
    }

    #[test]
    fn rotation_keeps_previous_keys_up_to_the_limit() {
        let mut rng = Counter(0);
        let s = spec(2, &[]);
        let (mut m, _) = evolve(None, &s, DAY, None, at(0), &mut rng);
        let first = m.keys[0].clone();
        for day in 1..=4 {
            let (next, c) = evolve(Some(m), &s, DAY, None, at(day), &mut rng);
            assert!(c.rotated);
            m = next;
        }
        assert_eq!(m.keys.len(), 3, "current plus keepPrevious");
        assert!(!m.keys.contains(&first), "the oldest generation is dropped");
        assert_eq!(next_rotation(&m, DAY), Some(at(5)));
    }

    #[test]
    fn a_new_trigger_rotates_once() {
        let mut rng = Counter(0);
        let s = spec(3, &[]);
        let (m, _) = evolve(None, &s, DAY * 90, None, at(0), &mut rng);
        let (m, c) = evolve(Some(m), &s, DAY * 90, Some("2026-11-27"), at(1), &mut rng);
        assert!(c.rotated);
        let (_, c) = evolve(Some(m), &s, DAY * 90, Some("2026-11-27"), at(2), &mut rng);
        assert!(!c.rotated, "the same trigger value does not rotate again");
    }

    #[test]
    fn credentials_are_stable_and_follow_the_spec() {
        let mut rng = Counter(0);
        let (m, _) = evolve(None, &spec(3, &[("db", &["password", "user"])]), DAY, None, at(0), &mut rng);
        let pw = m.generated["db"]["password"].clone();
        let (m, c) =
            evolve(Some(m), &spec(3, &[("db", &["password"]), ("api", &["token"])]), DAY, None, at(0), &mut rng);
        assert!(c.credentials);
        assert_eq!(m.generated["db"]["password"], pw, "existing values never change");
        assert!(!m.generated["db"].contains_key("user"));
        assert!(m.generated.contains_key("api"));
    }

    #[test]
    fn projections_carry_current_and_previous_keys() {
        let mut rng = Counter(0);
        let s = spec(3, &[("db", &["password"])]);
        let (m, _) = evolve(None, &s, DAY, None, at(0), &mut rng);
        let (m, _) = evolve(Some(m), &s, DAY, None, at(1), &mut rng);
        let objs = projections("acme", &["acme-a".into(), "acme-b".into()], &m);
        assert_eq!(objs.len(), 4);
        let ManagedObject::Secret(keys) = &objs[0] else { panic!() };
        let data = keys.data.as_ref().unwrap();
        assert_eq!(data[DEK_ID].0, m.keys[0].id.as_bytes());
        assert_eq!(data[&format!("dek.{}", m.keys[1].id)].0, m.keys[1].dek.0.to_vec());
        assert_eq!(data[&format!("audit-key.{}", m.keys[0].id)].0.len(), 32);
    }

    #[test]
    fn debug_never_shows_values() {
        let mut rng = Counter(0);
        let (m, _) = evolve(None, &spec(3, &[("db", &["password"])]), DAY, None, at(0), &mut rng);
        let text = format!("{m:?} {:?} {:?}", m.keys[0], m.generated["db"]["password"]);
        assert!(!text.contains(&m.generated["db"]["password"].0));
        assert!(!text.contains(&STANDARD.encode(m.keys[0].dek.0)));
        assert!(text.contains("redacted"));
    }
}
