//! The AdmissionReview wire format: bytes in, a typed request or a clear
//! error out; a response back to bytes. Never panics, whatever the input:
//! malformed bodies are answered with HTTP 400 by the server, and an object
//! that cannot be read as its kind is refused with an `invalid` response.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::authentication::v1::UserInfo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only AdmissionReview version bulkhead registers for.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The kind of the envelope.
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON of the expected shape.
    #[error("the body is not an AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but another kind or version.
    #[error(
        "expected kind AdmissionReview, apiVersion admission.k8s.io/v1; got kind {kind:?}, apiVersion {api_version:?}"
    )]
    WrongType {
        /// The kind sent.
        kind: String,
        /// The apiVersion sent.
        api_version: String,
    },
    /// No `request` field.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// A request without uid cannot be answered.
    #[error("the AdmissionReview request has no uid")]
    NoUid,
}

/// Group, version and resource of the request.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Resource {
    /// API group ("" for core).
    #[serde(default)]
    pub group: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Plural resource name.
    #[serde(default)]
    pub resource: String,
}

/// Group, version and kind of the object.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Kind {
    /// API group ("" for core).
    #[serde(default)]
    pub group: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// What the request does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Create.
    Create,
    /// Update (including patches).
    Update,
    /// Delete.
    Delete,
    /// Connect (exec, attach, port-forward).
    Connect,
}

/// One admission request, with its objects still untyped.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Round-trip id, echoed in the response.
    pub uid: String,
    /// The object's kind.
    #[serde(default)]
    pub kind: Kind,
    /// The resource.
    #[serde(default)]
    pub resource: Resource,
    /// The subresource, if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// Object name (may be empty on create with generateName).
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace, for namespaced objects.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The operation.
    pub operation: Operation,
    /// Who asks.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object after the request.
    #[serde(default)]
    pub object: Option<Value>,
    /// The stored object, on update and delete.
    #[serde(default)]
    pub old_object: Option<Value>,
    /// Whether nothing will be persisted.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<Request>,
}

impl Request {
    /// The requesting user's name ("" if unset).
    pub fn username(&self) -> &str {
        self.user_info.username.as_deref().unwrap_or_default()
    }

    /// The object name, or the name the object itself carries (generateName requests have none).
    pub fn object_name(&self) -> String {
        self.name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                self.object
                    .as_ref()
                    .and_then(|o| o.pointer("/metadata/generateName"))
                    .and_then(Value::as_str)
                    .map(|g| format!("{g}*"))
            })
            .unwrap_or_default()
    }

    /// Whether this is a dry run.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }
}

/// Decodes an AdmissionReview request body.
pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    if envelope.kind != KIND || envelope.api_version != API_VERSION {
        return Err(DecodeError::WrongType { kind: envelope.kind, api_version: envelope.api_version });
    }
    let request = envelope.request.ok_or(DecodeError::NoRequest)?;
    if request.uid.is_empty() {
        return Err(DecodeError::NoUid);
    }
    Ok(request)
}

/// Reads an untyped object as its Kubernetes type.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(value)
}

/// The labels of an untyped object (empty when absent or malformed).
pub fn labels(value: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    value
        .and_then(|v| v.pointer("/metadata/labels"))
        .and_then(|l| l.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct Status<'a> {
    code: u16,
    reason: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseBody<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewBody<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseBody<'a>,
}

/// The answer to one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The request's uid.
    pub uid: String,
    /// Admitted or not.
    pub allowed: bool,
    /// HTTP-like code of a refusal: 403 for a policy denial, 400 for an unreadable object.
    pub code: u16,
    /// The refusal message.
    pub message: String,
    /// A JSON patch (mutating webhook only).
    pub patch: Option<json_patch::Patch>,
    /// Warnings shown to the client.
    pub warnings: Vec<String>,
}

impl Response {
    /// Admit.
    pub fn allow(uid: &str) -> Self {
        Self { uid: uid.into(), allowed: true, ..Default::default() }
    }

    /// Refuse by policy (403).
    pub fn deny(uid: &str, message: String) -> Self {
        Self { uid: uid.into(), allowed: false, code: 403, message, ..Default::default() }
    }

    /// Refuse an unreadable object (400).
    pub fn invalid(uid: &str, message: String) -> Self {
        Self { uid: uid.into(), allowed: false, code: 400, message, ..Default::default() }
    }

    /// The AdmissionReview JSON the apiserver expects.
    pub fn encode(&self) -> Vec<u8> {
        let patch = self
            .patch
            .as_ref()
            .filter(|p| !p.0.is_empty())
            .and_then(|p| serde_json::to_vec(p).ok())
            .map(|bytes| STANDARD.encode(bytes));
        let status = (!self.allowed).then(|| Status {
            code: self.code,
            reason: if self.code == 400 { "BadRequest" } else { "Forbidden" },
            message: &self.message,
        });
        let body = ReviewBody {
            api_version: API_VERSION,
            kind: KIND,
            response: ResponseBody {
                uid: &self.uid,
                allowed: self.allowed,
                status,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: &self.warnings,
            },
        };
        // Only strings, booleans and numbers: serializing cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": KIND, "request": request})).unwrap()
    }

    #[test]
    fn decodes_a_real_request() {
        let body = review(json!({
            "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "acme-a", "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": {"metadata": {"generateName": "web-"}}, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions"}
        }));
        let r = decode(&body).unwrap();
        assert_eq!(r.uid, "u1");
        assert_eq!(r.resource.resource, "pods");
        assert_eq!(r.operation, Operation::Create);
        assert_eq!(r.username(), "alice");
        assert_eq!(r.object_name(), "web-*");
        assert!(!r.is_dry_run());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","operation":"CREATE"}}"#,
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","operation":"EXPLODE"}}"#,
        ] {
            assert!(decode(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn responses_are_what_the_apiserver_reads() {
        let mut r = Response::deny("u", "[pod.host-network] spec.hostNetwork: no".into());
        let v: Value = serde_json::from_slice(&r.encode()).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 403);
        r = Response::allow("u");
        r.patch = Some(json_patch::Patch(vec![json_patch::PatchOperation::Remove(json_patch::RemoveOperation {
            path: json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "labels"]),
        })]));
        let v: Value = serde_json::from_slice(&r.encode()).unwrap();
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let decoded = STANDARD.decode(v["response"]["patch"].as_str().unwrap()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&decoded).unwrap()[0]["op"], "remove");
        assert!(v["response"].get("status").is_none());
    }
}
