//! The tenant's key material at rest: one source Secret per tenant in the
//! operator's namespace (no tenant profile can read it), optionally wrapped
//! by an operator master key with AES-256-GCM. Projections into tenant
//! namespaces are planned from it by [`crate::plan::secrets`].
//!
//! A lost source Secret is never silently replaced: new keys would make
//! everything encrypted with the old ones unreadable.

use std::collections::BTreeMap;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::api::{KeysStatus, REGENERATE_ANNOTATION, ROTATE_ANNOTATION, Tenant};
use crate::plan::secrets::{self, Change, Entropy, Key, Material};
use crate::plan::{Effective, owner_labels};

use super::{Context, Error};

/// Data key of the source Secret holding the material document.
const MATERIAL: &str = "material";
/// Annotation naming the master key that wraps a source Secret.
pub const MASTER_KEY_ANNOTATION: &str = "bulkhead.dev/master-key-id";
/// Label marking source Secrets.
pub const ROLE_LABEL: &str = "bulkhead.dev/role";
const WRAPPED_MAGIC: &[u8] = b"bkw1";

/// Why key material could not be loaded or kept.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The master key file is missing or malformed.
    #[error("master key {path}: {reason}")]
    MasterKeyFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The source Secret is wrapped by a key we do not have.
    #[error(
        "the source Secret is wrapped by master key {found}, but the operator has {have}: start the operator with the master key that wrapped it"
    )]
    MasterKeyMismatch {
        /// Key id recorded on the Secret.
        found: String,
        /// Key id the operator has (or "none").
        have: String,
    },
    /// The source Secret cannot be decoded.
    #[error("the source Secret is corrupt ({0}); restore it from backup")]
    Corrupt(String),
}

/// The operator's master key, used to wrap every tenant's material.
pub struct MasterKey {
    id: String,
    key: Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, <redacted>)", self.id)
    }
}

impl MasterKey {
    /// Builds a master key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(bytes)[..8]);
        Self { id, key: Key(bytes) }
    }

    /// Reads a master key file: 32 raw bytes, or 32 bytes in base64 (a mounted Secret).
    pub fn from_file(path: &Path) -> Result<Self, KeysError> {
        let err = |reason: &str| KeysError::MasterKeyFile { path: path.display().to_string(), reason: reason.into() };
        let raw = std::fs::read(path).map_err(|e| err(&format!("cannot be read: {e}")))?;
        let bytes: Vec<u8> = if raw.len() == 32 {
            raw
        } else {
            let text = String::from_utf8(raw).map_err(|_| err("must be 32 raw bytes or base64 of 32 bytes"))?;
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| err("must be 32 raw bytes or base64 of 32 bytes"))?
        };
        let arr: [u8; 32] = bytes.try_into().map_err(|_| err("must hold exactly 32 bytes (256 bits)"))?;
        Ok(Self::from_bytes(arr))
    }

    /// A short, non-secret id of this key.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.key.0).into())
    }

    /// Encrypts `plain`, bound to `tenant` so a wrapped blob cannot be moved to another tenant.
    pub fn wrap(&self, tenant: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        fill(&mut nonce);
        let aad = format!("bulkhead-keys/{tenant}");
        // Encryption with a valid key and nonce cannot fail for inputs this small.
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: aad.as_bytes() })
            .unwrap_or_default();
        [WRAPPED_MAGIC, &nonce, &sealed].concat()
    }

    /// Decrypts a blob made by [`MasterKey::wrap`] for `tenant`.
    pub fn unwrap(&self, tenant: &str, blob: &[u8]) -> Result<Vec<u8>, KeysError> {
        let rest =
            blob.strip_prefix(WRAPPED_MAGIC).ok_or_else(|| KeysError::Corrupt("not a wrapped document".into()))?;
        if rest.len() < 12 {
            return Err(KeysError::Corrupt("truncated".into()));
        }
        let (nonce, sealed) = rest.split_at(12);
        let aad = format!("bulkhead-keys/{tenant}");
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: aad.as_bytes() })
            .map_err(|_| KeysError::Corrupt("authentication failed: wrong master key or tampered data".into()))
    }
}

fn fill(buf: &mut [u8]) {
    // The OS CSPRNG failing is unrecoverable: no key may ever come from anywhere else.
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random number generator failed: {e}");
    }
}

/// Key bytes and ids from the OS CSPRNG.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn key(&mut self) -> Key {
        let mut k = [0u8; 32];
        fill(&mut k);
        Key(k)
    }

    fn id(&mut self) -> String {
        let mut b = [0u8; 6];
        fill(&mut b);
        format!("k{}", hex::encode(b))
    }
}

/// What became of the tenant's keys in this reconcile.
pub enum Keys {
    /// Material ready to project.
    Ready {
        /// The material.
        material: Box<Material>,
        /// Its status (ids and times).
        status: KeysStatus,
        /// What changed.
        change: Change,
    },
    /// Cannot go on; the reason says what to do.
    Blocked {
        /// Condition reason.
        reason: &'static str,
        /// Condition message.
        message: String,
    },
}

fn decode(ctx: &Context, tenant: &str, secret: &Secret) -> Result<Material, KeysError> {
    decode_source(ctx.options.master_key.as_deref(), tenant, secret)
}

/// Reads a tenant's source Secret, unwrapping it with `master_key` when it is wrapped.
pub fn decode_source(master_key: Option<&MasterKey>, tenant: &str, secret: &Secret) -> Result<Material, KeysError> {
    let blob = secret
        .data
        .as_ref()
        .and_then(|d| d.get(MATERIAL))
        .ok_or_else(|| KeysError::Corrupt(format!("no '{MATERIAL}' entry")))?;
    let wrapped_by = secret.annotations().get(MASTER_KEY_ANNOTATION).cloned();
    let plain = match (wrapped_by, master_key) {
        (None, _) => blob.0.clone(),
        (Some(found), Some(mk)) if found == mk.id() => mk.unwrap(tenant, &blob.0)?,
        (Some(found), have) => {
            return Err(KeysError::MasterKeyMismatch {
                found,
                have: have.map_or("none".to_string(), |m| m.id().to_string()),
            });
        }
    };
    serde_json::from_slice(&plain).map_err(|e| KeysError::Corrupt(e.to_string()))
}

fn encode(ctx: &Context, tenant: &str, material: &Material) -> (BTreeMap<String, String>, ByteString) {
    // Serialising owned, already-validated data cannot fail.
    let plain = serde_json::to_vec(material).unwrap_or_default();
    match &ctx.options.master_key {
        Some(mk) => (
            BTreeMap::from([(MASTER_KEY_ANNOTATION.to_string(), mk.id().to_string())]),
            ByteString(mk.wrap(tenant, &plain)),
        ),
        None => (BTreeMap::new(), ByteString(plain)),
    }
}

fn status_of(material: &Material, effective: &Effective) -> Option<KeysStatus> {
    let current = material.current()?;
    Some(KeysStatus {
        current_key_id: current.id.clone(),
        previous_key_ids: material.keys.iter().skip(1).map(|k| k.id.clone()).collect(),
        last_rotation: current.created.to_string(),
        next_rotation: secrets::next_rotation(material, effective.rotation_period)
            .map(|t| t.to_string())
            .unwrap_or_default(),
    })
}

/// Loads, creates or rotates the tenant's material and writes the source Secret when it changed.
pub async fn ensure(ctx: &Context, tenant: &Tenant, effective: &Effective) -> Result<Keys, Error> {
    let name = tenant.name_any();
    let ns = &ctx.options.plan.operator_namespace;
    let source_name = secrets::source_name(&name);
    let source = ctx.caches.secrets.get(Some(ns), &source_name);
    let had_keys = tenant.status.as_ref().is_some_and(|s| s.keys.is_some());
    let regenerate = tenant.annotations().contains_key(REGENERATE_ANNOTATION);
    let existing = match &source {
        Some(secret) => match decode(ctx, &name, secret) {
            Ok(m) => Some(m),
            Err(e) => {
                let reason = if matches!(e, KeysError::MasterKeyMismatch { .. }) {
                    "MasterKeyMismatch"
                } else {
                    "SourceSecretCorrupt"
                };
                return Ok(Keys::Blocked { reason, message: format!("{ns}/{source_name}: {e}") });
            }
        },
        None if had_keys && !regenerate => {
            return Ok(Keys::Blocked {
                reason: "SourceSecretLost",
                message: format!(
                    "the tenant's key source Secret {ns}/{source_name} is gone; bulkhead will not make new keys because data encrypted with the old ones would become unreadable. Restore the Secret from backup, or annotate the Tenant with {REGENERATE_ANNOTATION}=true to accept new keys"
                ),
            });
        }
        None => None,
    };
    let trigger = tenant.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let now = Timestamp::now();
    let wrapped_as_wanted = source.as_ref().is_some_and(|s| {
        s.annotations().get(MASTER_KEY_ANNOTATION).map(String::as_str)
            == ctx.options.master_key.as_ref().map(|m| m.id())
    });
    let (material, change) = evolve_with_os(existing, tenant, effective, trigger, now);
    if change.any() || !wrapped_as_wanted {
        let (annotations, blob) = encode(ctx, &name, &material);
        let mut labels = owner_labels(&name);
        labels.insert(ROLE_LABEL.into(), "key-source".into());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(source_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                resource_version: source.as_ref().and_then(|s| s.resource_version()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(MATERIAL.to_string(), blob)])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        // Create and compare-and-swap replace, never a blind write: two
        // replicas racing must not each mint a different first key.
        ctx.metrics.api_write("Secret", if source.is_none() { "create" } else { "update" });
        let written = match &source {
            None => api.create(&PostParams::default(), &secret).await,
            Some(_) => api.replace(&source_name, &PostParams::default(), &secret).await,
        }
        .map_err(|e| Error::api_named("write key source", format!("Secret {ns}/{source_name}"), e))?;
        if let Ok(written) = serde_json::to_value(written) {
            let key = crate::plan::ObjectKey {
                kind: crate::plan::object::Kind::Secret,
                namespace: Some(ns.clone()),
                name: source_name.clone(),
            };
            ctx.remember_write(key, written, None);
        }
    }
    let Some(status) = status_of(&material, effective) else {
        return Ok(Keys::Blocked { reason: "SourceSecretCorrupt", message: "the material holds no key".into() });
    };
    Ok(Keys::Ready { material: Box::new(material), status, change })
}

fn evolve_with_os(
    existing: Option<Material>,
    tenant: &Tenant,
    effective: &Effective,
    trigger: Option<&str>,
    now: Timestamp,
) -> (Material, Change) {
    secrets::evolve(existing, &tenant.spec.secrets, effective.rotation_period, trigger, now, &mut OsEntropy)
}

/// Crypto-erasure: deletes the tenant's source Secret, after which nothing
/// encrypted with its keys can be read again.
pub async fn erase(ctx: &Context, tenant: &str) -> Result<(), Error> {
    let key = crate::plan::ObjectKey {
        kind: crate::plan::object::Kind::Secret,
        namespace: Some(ctx.options.plan.operator_namespace.clone()),
        name: secrets::source_name(tenant),
    };
    super::apply::delete(ctx, &key).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trips_and_is_bound_to_the_tenant() {
        let mk = MasterKey::from_bytes([7; 32]);
        let blob = mk.wrap("acme", b"secret material");
        assert!(!blob.windows(6).any(|w| w == b"secret"));
        assert_eq!(mk.unwrap("acme", &blob).unwrap(), b"secret material");
        assert!(mk.unwrap("globex", &blob).is_err(), "a blob moved to another tenant does not open");
        let other = MasterKey::from_bytes([8; 32]);
        assert!(other.unwrap("acme", &blob).is_err());
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(mk.unwrap("acme", &tampered).is_err());
    }

    #[test]
    fn master_key_debug_hides_the_key() {
        let mk = MasterKey::from_bytes([9; 32]);
        let text = format!("{mk:?}");
        assert!(text.contains("redacted") && text.contains(mk.id()));
    }

    #[test]
    fn os_entropy_gives_distinct_keys() {
        let mut e = OsEntropy;
        assert_ne!(e.key(), e.key());
        assert_ne!(e.id(), e.id());
    }
}
