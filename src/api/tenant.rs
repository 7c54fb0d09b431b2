//! The `Tenant` custom resource: the public contract of bulkhead.
//!
//! Validation lives in the schema (patterns, bounds, enums) and in CEL rules
//! so the apiserver rejects a bad Tenant with a message before the operator
//! ever sees it; the plan still returns typed errors for anything it cannot
//! express, because `bulkhead plan` reads files that never met an apiserver.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A DNS-1123 label: what Kubernetes accepts as a namespace name.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Desired state of one customer's compartment.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tnt",
    category = "bulkhead",
    status = "TenantStatus",
    derive = "PartialEq",
    doc = "A Tenant is one customer's sealed compartment of the cluster: its namespaces, network isolation, access profiles, quotas and Pod Security level.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Namespaces", type_ = "integer", json_path = ".status.namespaceCount"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 30").message("the Tenant name must be a DNS label (lower-case letters, digits, '-') of at most 30 characters, so that '<tenant>-<namespace>' fits in 63").field_path(".metadata.name"),
    validation = Rule::new("self.spec.namespaces.all(n, self.metadata.name.size() + 1 + n.name.size() <= 63)").message("'<tenant>-<namespace>' must be at most 63 characters: shorten the namespace name").field_path(".spec.namespaces"),
    validation = Rule::new("!has(self.spec.access) || self.spec.access.all(a, a.kind != 'ServiceAccount' || (has(a.namespace) && a.namespace.startsWith(self.metadata.name + '-')))").message("a ServiceAccount subject must live in one of this tenant's own namespaces ('<tenant>-<name>')").field_path(".spec.access"),
)]
#[x_kube(
    validation = Rule::new("!has(self.compliance) || !self.compliance.exists(c, c == 'PCI-DSS' || c == 'GDPR') || self.network.isolation == 'Strict'").message("compliance profiles PCI-DSS and GDPR require network.isolation: Strict").field_path(".network.isolation"),
    validation = Rule::new("!has(self.compliance) || !self.compliance.exists(c, c == 'PCI-DSS') || self.podSecurity == 'restricted'").message("compliance profile PCI-DSS requires podSecurity: restricted").field_path(".podSecurity"),
    validation = Rule::new("!has(self.compliance) || !self.compliance.exists(c, c == 'PCI-DSS') || !has(self.audit) || !has(self.audit.mode) || self.audit.mode != 'Disabled'").message("compliance profile PCI-DSS requires the audit sidecar: audit.mode cannot be Disabled").field_path(".audit.mode")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Human-readable customer name, shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,

    /// The tenant's namespaces; each is created as `<tenant>-<name>`.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub namespaces: Vec<TenantNamespace>,

    /// Network isolation; strict by default.
    #[serde(default)]
    pub network: NetworkSpec,

    /// Pod Security Admission level enforced in every tenant namespace.
    #[serde(default)]
    pub pod_security: PodSecurityLevel,

    /// ResourceQuota per namespace and, optionally, summed over the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,

    /// LimitRange container defaults per namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,

    /// Individual access profiles: who may do what inside the tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub access: Vec<AccessEntry>,

    /// Compliance profiles that tighten the defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub compliance: Vec<ComplianceProfile>,

    /// What happens to the tenant's namespaces when they leave the spec or the Tenant is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Per-tenant keys and generated credentials.
    #[serde(default)]
    pub secrets: SecretsSpec,

    /// The audit sidecar injected into the tenant's pods.
    #[serde(default)]
    pub audit: AuditSpec,

    /// Where the tenant's pods may run; enforced at admission as a required node affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_residency: Option<DataResidency>,

    /// Which container images the tenant's pods may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImagesSpec>,
}

/// Pod annotation that opts a pod out of the audit sidecar (value `disabled`); honoured only under `audit.mode: Optional`.
pub const AUDIT_OPT_OUT_ANNOTATION: &str = "bulkhead.dev/audit-sidecar";
/// Value of [`AUDIT_OPT_OUT_ANNOTATION`] that opts out.
pub const AUDIT_OPT_OUT_VALUE: &str = "disabled";
/// Tenant annotation confirming that namespaces removed from `spec.namespaces` may be released or
/// deleted (comma-separated short or full names); without it the admission webhook refuses the update.
pub const CONFIRM_REMOVAL_ANNOTATION: &str = "bulkhead.dev/confirm-namespace-removal";

/// The audit sidecar: injected into every pod of the tenant by the mutating webhook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.sinkCA) || (has(self.sink) && self.sink.startsWith('https://'))").message("audit.sinkCA applies only to an https:// sink: remove it or use an https:// URL"),
    validation = Rule::new("!has(self.sinkHeaders) || size(self.sinkHeaders) == 0 || (has(self.sink) && (self.sink.startsWith('http://') || self.sink.startsWith('https://')))").message("audit.sinkHeaders apply only to an http:// or https:// sink: remove them or use a URL")
)]
pub struct AuditSpec {
    /// `Required`: every pod must carry an intact sidecar (no opt-out); `Optional` (default): injected, but a pod
    /// may opt out with the annotation `bulkhead.dev/audit-sidecar: disabled`; `Disabled`: never injected.
    /// Compliance profile PCI-DSS makes it `Required`.
    #[serde(default)]
    pub mode: AuditMode,

    /// Where the sidecar ships sealed records: `stdout`, `file:PATH`, or an `http://` / `https://` URL (a SIEM).
    #[serde(default = "default_audit_sink")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self == 'stdout' || (self.startsWith('file:') && self.size() > 5) || self.startsWith('http://') || self.startsWith('https://')").message("audit.sink must be stdout, file:PATH, or an http:// or https:// URL"))]
    pub sink: String,

    /// The PEM CA bundle the sidecar trusts for an `https://` sink instead of the system roots: one key of a
    /// ConfigMap (such as a trust-manager bundle) or of a Secret in the pod's own namespace. The object must
    /// exist in every tenant namespace that runs pods; until it does, the pod does not start (a missing object
    /// shows up as a pod event). Read when the sidecar starts.
    #[serde(default, rename = "sinkCA", skip_serializing_if = "Option::is_none")]
    pub sink_ca: Option<AuditSinkCa>,

    /// HTTP headers sent with every request to an http(s) sink, each value read from a key of a Secret in the
    /// pod's own namespace, e.g. `{name: Authorization, secret: siem-token, key: header}` holding `Bearer …`.
    /// Values are mounted as files into the sidecar only (never in the pod spec) and re-read for every request,
    /// so a rotated token is used without a restart. Like `sinkCA`, the Secret must exist in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(h, self.filter(o, o.name.lowerAscii() == h.name.lowerAscii()).size() == 1)").message("audit.sinkHeaders names each header once (header names are case-insensitive)")
    )]
    pub sink_headers: Vec<AuditSinkHeader>,
}

impl Default for AuditSpec {
    fn default() -> Self {
        Self { mode: AuditMode::default(), sink: default_audit_sink(), sink_ca: None, sink_headers: Vec::new() }
    }
}

/// A DNS-1123 subdomain: what Kubernetes accepts as a Secret or ConfigMap name.
pub const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// The characters Kubernetes accepts in a Secret or ConfigMap key.
pub const DATA_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// An HTTP header name: an RFC 9110 token.
pub const HTTP_TOKEN: &str = r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";

/// Where the sidecar finds the CA bundle of its sink: exactly one of `configMap` and `secret`, and the key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.secret)").message("audit.sinkCA names either a configMap or a secret (in the pod's namespace), not both and not neither"))]
pub struct AuditSinkCa {
    /// Name of a ConfigMap in the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub config_map: Option<String>,
    /// Name of a Secret in the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub secret: Option<String>,
    /// The key holding the PEM certificates, such as `ca.crt`.
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY))]
    #[x_kube(validation = Rule::new("!self.startsWith('..') && self != '.'").message("a ConfigMap or Secret key cannot be '.' or start with '..'"))]
    pub key: String,
}

/// One header of the sink's requests whose value comes from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditSinkHeader {
    /// The HTTP header name, such as `Authorization`; not a hop-by-hop header, `Host`, `Content-Length`,
    /// `Content-Type` or `X-Bulkhead-Lines`, which the connection and the sidecar set themselves.
    #[schemars(length(min = 1, max = 128), regex(pattern = HTTP_TOKEN))]
    #[x_kube(validation = Rule::new("!(self.lowerAscii() in ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'content-type', 'x-bulkhead-lines'])").message("audit.sinkHeaders cannot set hop-by-hop headers, Host, Content-Length, Content-Type or X-Bulkhead-Lines"))]
    pub name: String,
    /// Name of the Secret in the pod's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub secret: String,
    /// The key holding the header value (trailing whitespace is trimmed).
    #[schemars(length(min = 1, max = 253), regex(pattern = DATA_KEY))]
    #[x_kube(validation = Rule::new("!self.startsWith('..') && self != '.'").message("a ConfigMap or Secret key cannot be '.' or start with '..'"))]
    pub key: String,
}

fn default_audit_sink() -> String {
    "stdout".into()
}

/// Whether the audit sidecar is injected and required.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuditMode {
    /// Injected into every pod; pods without an intact sidecar are refused.
    Required,
    /// Injected into every pod that does not opt out.
    #[default]
    Optional,
    /// Never injected.
    Disabled,
}

impl AuditMode {
    /// The spelling in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMode::Required => "Required",
            AuditMode::Optional => "Optional",
            AuditMode::Disabled => "Disabled",
        }
    }
}

/// Where the tenant's data may live.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataResidency {
    /// Regions (node label `topology.kubernetes.io/region`) the tenant's pods may be scheduled to.
    #[schemars(
        length(min = 1, max = 16),
        inner(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub regions: Vec<String>,
}

/// Which container images the tenant may run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImagesSpec {
    /// Image reference prefixes, such as `registry.acme.example/` or `registry.acme.example/team`; every container,
    /// init container and ephemeral container image must start with one (a prefix without a trailing `/` matches
    /// only at a path, tag or digest boundary). Short Docker Hub names are read as `docker.io/library/...`.
    /// Digests are accepted; tags are never rewritten. Empty means any registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 255), regex(pattern = r"^[a-z0-9][a-z0-9._:/-]*$")))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_registries: Vec<String>,
}

/// Annotation on a Tenant that asks for an immediate key rotation; each new value rotates once.
pub const ROTATE_ANNOTATION: &str = "bulkhead.dev/rotate-keys";
/// Annotation on a Tenant that accepts brand-new keys after its source Secret was lost for good.
pub const REGENERATE_ANNOTATION: &str = "bulkhead.dev/regenerate-keys";

/// Key material and credentials generated for the tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretsSpec {
    /// How often the data-encryption and audit keys rotate, as a duration such as `2160h`.
    #[serde(default = "default_rotation")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('87600h')").message("rotationPeriod must be a duration between 10s and 87600h, such as 2160h"))]
    pub rotation_period: String,

    /// Rotated-out keys kept for decryption.
    #[serde(default = "default_keep_previous")]
    // schemars says `format: uint8`, which the apiserver warns about on every apply of the CRD.
    #[schemars(range(min = 0, max = 10), extend("format" = "int32"))]
    pub keep_previous: u8,

    /// Named credentials with random values, one Secret each in every tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub generated: Vec<GeneratedSecret>,
}

impl Default for SecretsSpec {
    fn default() -> Self {
        Self { rotation_period: default_rotation(), keep_previous: default_keep_previous(), generated: Vec::new() }
    }
}

fn default_rotation() -> String {
    "2160h".into()
}

fn default_keep_previous() -> u8 {
    3
}

/// One generated credential.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedSecret {
    /// Name of the Secret created in every tenant namespace.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self != 'bulkhead-keys'").message("bulkhead-keys is reserved for the tenant's key material"))]
    pub name: String,
    /// Keys of the Secret; each gets 32 random bytes, URL-safe base64.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$")))]
    pub keys: Vec<String>,
}

/// One tenant namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantNamespace {
    /// Short name; the namespace is `<tenant>-<name>`.
    #[schemars(length(min = 1, max = 62), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Extra labels for the namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('bulkhead.dev/') && !k.startsWith('pod-security.kubernetes.io/') && k != 'kubernetes.io/metadata.name' && k != 'app.kubernetes.io/managed-by')").message("labels under bulkhead.dev/, pod-security.kubernetes.io/, kubernetes.io/metadata.name and app.kubernetes.io/managed-by are set by bulkhead and cannot be overridden"))]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations for the namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('bulkhead.dev/'))").message("annotations under bulkhead.dev/ are set by bulkhead and cannot be overridden"))]
    pub annotations: BTreeMap<String, String>,
}

/// Schema of a map from resource name to quantity, without repeating
/// k8s-openapi's long Quantity description at every use.
fn quantity_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "pattern": "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$"
        }
    })
}

/// Network isolation settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// `Strict` denies all traffic but the tenant's own, DNS and the listed exceptions.
    #[serde(default)]
    pub isolation: Isolation,

    /// Allow egress to kube-dns in kube-system on UDP and TCP 53.
    #[serde(default = "default_true", rename = "allowDNS")]
    pub allow_dns: bool,

    /// Extra sources allowed into every tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub ingress_from: Vec<NetworkPeer>,

    /// Extra destinations every tenant namespace may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub egress_to: Vec<NetworkPeer>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self { isolation: Isolation::Strict, allow_dns: true, ingress_from: Vec::new(), egress_to: Vec::new() }
    }
}

fn default_true() -> bool {
    true
}

/// Network isolation mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Deny all, then allow the tenant's own traffic, DNS and the listed exceptions.
    #[default]
    Strict,
    /// No NetworkPolicies are written.
    #[serde(rename = "None")]
    Disabled,
}

/// A traffic source or destination outside the tenant: whole namespaces or one CIDR.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.namespaces) != has(self.cidr)").message("a peer names either namespaces or one cidr, not both and not neither"))]
pub struct NetworkPeer {
    /// Namespaces by name (matched on the apiserver-set `kubernetes.io/metadata.name` label, which cannot be spoofed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub namespaces: Option<Vec<String>>,

    /// An IPv4 or IPv6 CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("cidr must be a valid CIDR such as 203.0.113.0/24"))]
    pub cidr: Option<String>,

    /// Limit the exception to these ports; empty means all ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<PortSpec>,
}

/// A port and protocol.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// Port number, 1–65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TCP (default), UDP or SCTP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The spelling Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// Pod Security Admission level.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    /// The hardened profile (default).
    #[default]
    Restricted,
    /// Prevents known privilege escalations.
    Baseline,
    /// Unrestricted.
    Privileged,
}

impl PodSecurityLevel {
    /// The label value Pod Security Admission reads.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Restricted => "restricted",
            PodSecurityLevel::Baseline => "baseline",
            PodSecurityLevel::Privileged => "privileged",
        }
    }
}

/// Resource quotas.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// ResourceQuota `hard` for every tenant namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub hard: BTreeMap<String, Quantity>,
    /// Limits summed over all tenant namespaces; bulkhead splits the headroom between them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub tenant_hard: BTreeMap<String, Quantity>,
}

/// LimitRange container defaults.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Default limits for containers that set none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub default: BTreeMap<String, Quantity>,
    /// Default requests for containers that set none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub default_request: BTreeMap<String, Quantity>,
    /// Largest limits a container may set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub max: BTreeMap<String, Quantity>,
}

/// One subject bound to one profile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.kind == 'ServiceAccount') == has(self.namespace)").message("namespace is required for ServiceAccount subjects and not allowed for User and Group"))]
pub struct AccessEntry {
    /// User, Group or ServiceAccount.
    pub kind: SubjectKind,
    /// The user, group or service account name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The service account's namespace (one of this tenant's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// The access profile.
    pub profile: Profile,
}

/// RBAC subject kind.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubjectKind {
    /// A user.
    User,
    /// A group.
    Group,
    /// A service account.
    ServiceAccount,
}

impl SubjectKind {
    /// The RBAC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "User",
            SubjectKind::Group => "Group",
            SubjectKind::ServiceAccount => "ServiceAccount",
        }
    }
}

/// A fixed, documented access profile.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Workloads, services, config, secrets, and the tenant's own Roles, RoleBindings and NetworkPolicies.
    Admin,
    /// Workloads, services, config and secrets; no RBAC, no NetworkPolicies.
    Developer,
    /// Read everything, including events; never secret values.
    Auditor,
    /// Read workloads, services and config; no secrets.
    Viewer,
}

impl Profile {
    /// Every profile, in documentation order.
    pub const ALL: [Profile; 4] = [Profile::Admin, Profile::Developer, Profile::Auditor, Profile::Viewer];

    /// Lower-case name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Admin => "admin",
            Profile::Developer => "developer",
            Profile::Auditor => "auditor",
            Profile::Viewer => "viewer",
        }
    }
}

/// A compliance profile that tightens defaults in one word.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComplianceProfile {
    /// Payment Card Industry Data Security Standard.
    #[serde(rename = "PCI-DSS")]
    PciDss,
    /// EU General Data Protection Regulation.
    #[serde(rename = "GDPR")]
    Gdpr,
}

/// What happens to a tenant's namespaces when they are no longer wanted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the namespaces and their data; release them from management.
    #[default]
    Retain,
    /// Delete the namespaces and everything in them (GDPR erasure).
    Delete,
}

/// Observed state of a Tenant.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and one condition per concern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The tenant's namespaces and their state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceStatus>,
    /// Number of namespaces the tenant holds.
    #[serde(default)]
    pub namespace_count: i32,
    /// Tenant-wide quota: limit and usage summed over all namespaces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quota: BTreeMap<String, QuotaUsage>,
    /// The tenant's key material (ids and times only, never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysStatus>,
}

/// Which keys are current and when they rotate.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeysStatus {
    /// Id of the current data-encryption and audit-signing keys.
    pub current_key_id: String,
    /// Ids of rotated-out keys still kept for decryption, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_key_ids: Vec<String>,
    /// When the current keys were made (RFC 3339).
    pub last_rotation: String,
    /// When they will be replaced (RFC 3339).
    pub next_rotation: String,
}

/// One namespace in the status.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// The namespace name.
    pub name: String,
    /// `Ready`, `Conflict` (held by someone else) or `Terminating`.
    pub phase: String,
}

/// Tenant-wide use of one quota resource.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    /// The tenant-wide limit.
    pub hard: Quantity,
    /// Summed usage reported by the namespaces' ResourceQuotas.
    pub used: Quantity,
}
