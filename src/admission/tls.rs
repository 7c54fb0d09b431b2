//! Self-managed TLS for the webhooks: a CA and a serving certificate made
//! with rcgen (ECDSA P-256, ring), kept in one Secret in the operator's
//! namespace, rotated before expiry without a moment of distrust:
//!
//! - the serving certificate lives 90 days and is re-issued 30 days before it ends;
//! - the CA lives 10 years and is replaced 2 years before it ends. The new CA is
//!   first published next to the old one in the webhooks' `caBundle`; only after
//!   [`PROPAGATION`] does a serving certificate signed by it go live, and the old
//!   CA leaves the bundle when it expires.
//!
//! Every decision is the pure [`next_step`]; [`advance`] performs it.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// How long a CA is valid.
pub const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 3650);
/// A CA is replaced when less than this is left.
pub const CA_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 730);
/// How long a serving certificate is valid.
pub const CERT_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 90);
/// A serving certificate is re-issued when less than this is left.
pub const CERT_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 30);
/// How long a new CA sits in the caBundle before it signs the live serving certificate.
pub const PROPAGATION: SignedDuration = SignedDuration::from_mins(5);
/// Clock skew tolerated at the start of a certificate's validity.
const BACKDATE: SignedDuration = SignedDuration::from_hours(1);

/// Why TLS material cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed.
    #[error("cannot create a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The stored Secret is incomplete or corrupt.
    #[error("the webhook TLS Secret is unusable: {0}")]
    Stored(String),
    /// rustls refused the certificate and key.
    #[error("the serving certificate cannot be loaded: {0}")]
    Rustls(#[from] rustls::Error),
    /// Time outside what certificates can express.
    #[error("the clock reads a time certificates cannot express")]
    Time,
}

/// One CA certificate (never its key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaRecord {
    /// Its subject common name (unique per CA).
    pub name: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// When it expires.
    pub not_after: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    ca: CaRecord,
    previous: Vec<CaRecord>,
    ca_since: Timestamp,
    cert_not_after: Timestamp,
    cert_issuer: String,
    cert_sans: Vec<String>,
}

/// CA, serving certificate and their keys. `Debug` never prints a key.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    state: State,
    ca_key_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca", &self.state.ca.name)
            .field("previous", &self.state.previous.iter().map(|c| &c.name).collect::<Vec<_>>())
            .field("cert_not_after", &self.state.cert_not_after)
            .field("cert_issuer", &self.state.cert_issuer)
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// Data keys of the Secret.
pub mod keys {
    /// Serving certificate (PEM).
    pub const TLS_CRT: &str = "tls.crt";
    /// Serving key (PEM, PKCS#8).
    pub const TLS_KEY: &str = "tls.key";
    /// Every CA the webhooks trust (PEM bundle): the caBundle.
    pub const CA_CRT: &str = "ca.crt";
    /// Key of the current CA (PEM, PKCS#8).
    pub const CA_KEY: &str = "ca.key";
    /// Validity bookkeeping (JSON, no key material).
    pub const STATE: &str = "bulkhead-tls.json";
}

fn to_time(t: Timestamp) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| TlsError::Time)
}

fn add(t: Timestamp, d: SignedDuration) -> Result<Timestamp, TlsError> {
    t.checked_add(d).map_err(|_| TlsError::Time)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn new_ca(now: Timestamp, owner: &str) -> Result<(CaRecord, String), TlsError> {
    let name = format!("bulkhead webhook CA {owner} {}", now.as_second());
    let mut params = ca_params(&name);
    let not_after = add(now, CA_VALIDITY)?;
    params.not_before = to_time(now - BACKDATE)?;
    params.not_after = to_time(not_after)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((CaRecord { name, cert_pem: cert.pem(), not_after }, key.serialize_pem()))
}

fn issue(
    now: Timestamp,
    ca: &CaRecord,
    ca_key_pem: &str,
    sans: &[String],
) -> Result<(String, String, Timestamp), TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    // The issuer is rebuilt from the CA's own parameters: same name, same key, same key identifier.
    let issuer = Issuer::new(ca_params(&ca.name), ca_key);
    let mut params = CertificateParams::new(sans.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, sans.first().map(String::as_str).unwrap_or("bulkhead-webhook"));
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let not_after = add(now, CERT_VALIDITY)?.min(ca.not_after);
    params.not_before = to_time(now - BACKDATE)?;
    params.not_after = to_time(not_after)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// What the stored material needs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Keep,
    /// Nothing usable is stored: a new CA and serving certificate.
    Fresh,
    /// The CA is close to expiry: a new CA joins the bundle (the serving certificate stays for now).
    RotateCa,
    /// The serving certificate is close to expiry, names the wrong hosts, or a new CA has propagated.
    ReissueCert,
    /// An expired old CA leaves the bundle.
    PruneBundle,
}

/// The next step for `material` at `now`, for a server reachable as `sans`.
pub fn next_step(now: Timestamp, material: Option<&Material>, sans: &[String]) -> Step {
    let Some(m) = material else {
        return Step::Fresh;
    };
    let s = &m.state;
    if s.ca.not_after <= now {
        return Step::Fresh;
    }
    if s.ca.not_after.duration_since(now) < CA_RENEW_BEFORE {
        return Step::RotateCa;
    }
    let issuer_trusted =
        s.cert_issuer == s.ca.name || s.previous.iter().any(|c| c.name == s.cert_issuer && c.not_after > now);
    // Broken now: nothing to lose by re-issuing at once.
    let broken = s.cert_not_after <= now || s.cert_sans != sans || !issuer_trusted;
    // Due, or signed by the previous CA: wait until the current CA is surely in every caBundle.
    let propagated = now.duration_since(s.ca_since) >= PROPAGATION;
    let due = s.cert_not_after.duration_since(now) < CERT_RENEW_BEFORE || s.cert_issuer != s.ca.name;
    if broken || (due && propagated) {
        return Step::ReissueCert;
    }
    if s.previous.iter().any(|c| c.not_after <= now) {
        return Step::PruneBundle;
    }
    Step::Keep
}

/// Performs `step`; `owner` names the CA (the Secret it lives in).
pub fn advance(
    now: Timestamp,
    step: Step,
    material: Option<Material>,
    sans: &[String],
    owner: &str,
) -> Result<Option<Material>, TlsError> {
    let fresh = |now| -> Result<Material, TlsError> {
        let (ca, ca_key_pem) = new_ca(now, owner)?;
        let (cert_pem, key_pem, cert_not_after) = issue(now, &ca, &ca_key_pem, sans)?;
        Ok(Material {
            state: State {
                cert_issuer: ca.name.clone(),
                ca,
                previous: Vec::new(),
                ca_since: now,
                cert_not_after,
                cert_sans: sans.to_vec(),
            },
            ca_key_pem,
            cert_pem,
            key_pem,
        })
    };
    let m = match (step, material) {
        (Step::Keep, _) => return Ok(None),
        (Step::Fresh, _) | (_, None) => fresh(now)?,
        (Step::RotateCa, Some(mut m)) => {
            let (ca, key) = new_ca(now, owner)?;
            let old = std::mem::replace(&mut m.state.ca, ca);
            m.state.previous.retain(|c| c.not_after > now);
            m.state.previous.insert(0, old);
            m.state.ca_since = now;
            m.ca_key_pem = key;
            m
        }
        (Step::ReissueCert, Some(mut m)) => {
            let (cert_pem, key_pem, not_after) = issue(now, &m.state.ca, &m.ca_key_pem, sans)?;
            m.cert_pem = cert_pem;
            m.key_pem = key_pem;
            m.state.cert_not_after = not_after;
            m.state.cert_issuer = m.state.ca.name.clone();
            m.state.cert_sans = sans.to_vec();
            m
        }
        (Step::PruneBundle, Some(mut m)) => {
            m.state.previous.retain(|c| c.not_after > now);
            m
        }
    };
    Ok(Some(m))
}

impl Material {
    /// The CAs the webhooks must trust, PEM: the current one and every unexpired predecessor.
    pub fn ca_bundle(&self) -> String {
        let mut out = self.state.ca.cert_pem.clone();
        for c in &self.state.previous {
            out.push_str(&c.cert_pem);
        }
        out
    }

    /// Name of the current CA.
    pub fn ca_name(&self) -> &str {
        &self.state.ca.name
    }

    /// The CA that signed the serving certificate.
    pub fn cert_issuer(&self) -> &str {
        &self.state.cert_issuer
    }

    /// When the serving certificate expires.
    pub fn cert_not_after(&self) -> Timestamp {
        self.state.cert_not_after
    }

    /// The serving certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The Secret data holding this material.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let b = |s: &str| ByteString(s.as_bytes().to_vec());
        let state = serde_json::to_string(&self.state).unwrap_or_default();
        BTreeMap::from([
            (keys::TLS_CRT.to_string(), b(&self.cert_pem)),
            (keys::TLS_KEY.to_string(), b(&self.key_pem)),
            (keys::CA_CRT.to_string(), b(&self.ca_bundle())),
            (keys::CA_KEY.to_string(), b(&self.ca_key_pem)),
            (keys::STATE.to_string(), b(&state)),
        ])
    }

    /// Reads material back from Secret data; anything missing or unreadable is an error (and then replaced).
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Result<Self, TlsError> {
        let text = |k: &str| -> Result<String, TlsError> {
            let v = data.get(k).ok_or_else(|| TlsError::Stored(format!("{k} is missing")))?;
            String::from_utf8(v.0.clone()).map_err(|_| TlsError::Stored(format!("{k} is not text")))
        };
        let state: State = serde_json::from_str(&text(keys::STATE)?)
            .map_err(|e| TlsError::Stored(format!("{} is unreadable: {e}", keys::STATE)))?;
        let m = Material {
            state,
            ca_key_pem: text(keys::CA_KEY)?,
            cert_pem: text(keys::TLS_CRT)?,
            key_pem: text(keys::TLS_KEY)?,
        };
        KeyPair::from_pem(&m.ca_key_pem)
            .map_err(|e| TlsError::Stored(format!("{} is unreadable: {e}", keys::CA_KEY)))?;
        m.server_config()?;
        Ok(m)
    }

    /// A rustls server configuration (ring provider, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Stored(format!("{} is unreadable: {e}", keys::TLS_CRT)))?;
        if certs.is_empty() {
            return Err(TlsError::Stored(format!("{} holds no certificate", keys::TLS_CRT)));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Stored(format!("{} is unreadable: {e}", keys::TLS_KEY)))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Labels of the TLS Secret (deliberately not bulkhead's managed-by label: the Secret belongs to no tenant).
pub fn secret_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/part-of".to_string(), "bulkhead".to_string()),
        ("app.kubernetes.io/component".to_string(), "admission".to_string()),
    ])
}

/// Loads the material from the Secret `namespace/name`, creating or rotating it as [`next_step`] says.
/// Replicas race safely: every write is a create or a compare-and-swap replace, and the loser re-reads.
pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    sans: &[String],
) -> Result<Material, StoreError> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut last = None;
    for _ in 0..5 {
        let existing = api.get_opt(name).await?;
        let stored = existing.as_ref().and_then(|s| s.data.as_ref()).map(Material::from_data);
        let current = match stored {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) => {
                tracing::warn!(secret = name, error = %e, "webhook TLS Secret unusable; making new material");
                None
            }
            None => None,
        };
        let now = Timestamp::now();
        let step = next_step(now, current.as_ref(), sans);
        let Some(next) = advance(now, step, current.clone(), sans, name)? else {
            if let Some(m) = current {
                return Ok(m);
            }
            continue;
        };
        let mut secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(secret_labels()),
                ..Default::default()
            },
            data: Some(next.to_data()),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let written = match existing {
            None => api.create(&PostParams::default(), &secret).await,
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version;
                api.replace(name, &PostParams::default(), &secret).await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = name, step = ?step, ca = next.ca_name(), cert_not_after = %next.cert_not_after(),
                    "webhook TLS material written");
                return Ok(next);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => last = Some(kube::Error::Api(s)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map(StoreError::from).unwrap_or(StoreError::Contended))
}

/// Why the TLS Secret cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The API refused.
    #[error("webhook TLS Secret: {0}")]
    Api(#[from] kube::Error),
    /// The material could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Others kept winning the race.
    #[error("webhook TLS Secret: too many concurrent writers")]
    Contended,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans() -> Vec<String> {
        vec!["127.0.0.1".into(), "localhost".into()]
    }

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn fresh() -> Material {
        advance(t0(), Step::Fresh, None, &sans(), "test").unwrap().unwrap()
    }

    #[test]
    fn fresh_material_round_trips_and_loads_into_rustls() {
        let m = fresh();
        assert_eq!(m.cert_issuer(), m.ca_name());
        let back = Material::from_data(&m.to_data()).unwrap();
        assert_eq!(back, m);
        assert!(m.server_config().is_ok());
        assert!(!format!("{m:?}").contains("PRIVATE"));
        assert_eq!(next_step(t0(), Some(&m), &sans()), Step::Keep);
        assert_eq!(next_step(t0(), None, &sans()), Step::Fresh);
    }

    #[test]
    fn corrupt_secrets_are_refused() {
        let mut data = fresh().to_data();
        data.insert(
            keys::TLS_KEY.into(),
            ByteString(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec()),
        );
        assert!(Material::from_data(&data).is_err());
        let mut data = fresh().to_data();
        data.remove(keys::STATE);
        assert!(Material::from_data(&data).is_err());
        // A key that does not match the certificate.
        let (a, b) = (fresh(), fresh());
        let mut data = a.to_data();
        data.insert(keys::TLS_KEY.into(), b.to_data()[keys::TLS_KEY].clone());
        assert!(Material::from_data(&data).is_err());
    }

    #[test]
    fn serving_certificate_is_reissued_before_expiry_and_on_new_names() {
        let m = fresh();
        let later = t0() + SignedDuration::from_hours(24 * 61);
        assert_eq!(next_step(later, Some(&m), &sans()), Step::ReissueCert);
        let m2 = advance(later, Step::ReissueCert, Some(m.clone()), &sans(), "test").unwrap().unwrap();
        assert_eq!(m2.ca_name(), m.ca_name(), "the CA stays");
        assert!(m2.cert_not_after() > m.cert_not_after());
        assert_eq!(next_step(later, Some(&m2), &sans()), Step::Keep);
        assert_eq!(next_step(t0(), Some(&m), &["bulkhead.ns.svc".to_string()]), Step::ReissueCert);
    }

    #[test]
    fn the_ca_rotates_without_a_moment_of_distrust() {
        let late = t0() + CA_VALIDITY - CA_RENEW_BEFORE + SignedDuration::from_hours(1);
        // The serving certificate was renewed on schedule shortly before.
        let m = advance(late - SignedDuration::from_hours(2), Step::ReissueCert, Some(fresh()), &sans(), "test")
            .unwrap()
            .unwrap();
        assert_eq!(next_step(late, Some(&m), &sans()), Step::RotateCa);
        let rotated = advance(late, Step::RotateCa, Some(m.clone()), &sans(), "test").unwrap().unwrap();
        // Both CAs are trusted; the old serving certificate stays live until the new CA has propagated.
        assert_ne!(rotated.ca_name(), m.ca_name());
        assert!(rotated.ca_bundle().contains(&m.ca_bundle()));
        assert_eq!(rotated.cert_issuer(), m.ca_name());
        assert_eq!(next_step(late, Some(&rotated), &sans()), Step::Keep);
        let after = late + PROPAGATION;
        assert_eq!(next_step(after, Some(&rotated), &sans()), Step::ReissueCert);
        let reissued = advance(after, Step::ReissueCert, Some(rotated), &sans(), "test").unwrap().unwrap();
        assert_eq!(reissued.cert_issuer(), reissued.ca_name());
        assert!(reissued.server_config().is_ok());
        // The old CA leaves the bundle once expired.
        let end = t0() + CA_VALIDITY + SignedDuration::from_hours(1);
        let reissued =
            advance(end - SignedDuration::from_hours(24), Step::ReissueCert, Some(reissued), &sans(), "test")
                .unwrap()
                .unwrap();
        assert_eq!(next_step(end, Some(&reissued), &sans()), Step::PruneBundle);
        let pruned = advance(end, Step::PruneBundle, Some(reissued.clone()), &sans(), "test").unwrap().unwrap();
        assert_eq!(pruned.ca_bundle(), pruned.state.ca.cert_pem);
    }

    #[test]
    fn renewal_waits_for_a_new_ca_to_propagate_unless_the_certificate_is_broken() {
        let m = fresh();
        // Due for renewal 1 minute after a fresh CA: wait; once propagated, go.
        let mut young = m.clone();
        young.state.ca_since = t0() + SignedDuration::from_hours(24 * 61);
        let at = young.state.ca_since + SignedDuration::from_mins(1);
        assert_eq!(next_step(at, Some(&young), &sans()), Step::Keep);
        assert_eq!(next_step(at + PROPAGATION, Some(&young), &sans()), Step::ReissueCert);
        // Expired or for other names: at once.
        let expired = young.state.cert_not_after + SignedDuration::from_secs(1);
        young.state.ca_since = expired;
        assert_eq!(next_step(expired, Some(&young), &sans()), Step::ReissueCert);
        assert_eq!(next_step(t0(), Some(&m), &["other".to_string()]), Step::ReissueCert);
    }

    #[test]
    fn an_expired_ca_starts_over() {
        let m = fresh();
        assert_eq!(next_step(t0() + CA_VALIDITY, Some(&m), &sans()), Step::Fresh);
    }

    #[test]
    fn the_leaf_verifies_against_the_bundle() {
        // rustls' own verifier (webpki, ring) must accept the chain for 127.0.0.1.
        let m = fresh();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(m.ca_bundle().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let leaf = CertificateDer::from_pem_slice(m.cert_pem().as_bytes()).unwrap();
        let now =
            rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(t0().as_second() as u64 + 60));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        rustls::client::danger::ServerCertVerifier::verify_server_cert(&*verifier, &leaf, &[], &name, &[], now)
            .expect("chain verifies");
    }
}
