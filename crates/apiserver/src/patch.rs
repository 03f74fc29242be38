//! The PATCH media types and their application, on top of `skiff_api::patch`.

use http::HeaderMap;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Which patch a request carries, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

impl PatchKind {
    /// From the request's content type; anything else is 415.
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        let media = crate::handlers::content_type(headers);
        match media.essence.as_str() {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor"
                if media.essence.ends_with("yaml") =>
            {
                Ok(PatchKind::Apply)
            }
            other => Err(ApiError::unsupported_media_type(other, ACCEPTED)),
        }
    }
}

/// Parse a patch body.
pub fn parse(kind: PatchKind, body: &[u8]) -> ApiResult<Value> {
    let parsed: Result<Value, String> = match kind {
        PatchKind::Apply => serde_yaml::from_slice(body).map_err(|e| e.to_string()),
        _ => serde_json::from_slice(body).map_err(|e| e.to_string()),
    };
    let value = parsed.map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match (kind, &value) {
        (PatchKind::Json, Value::Array(_)) => Ok(value),
        (PatchKind::Json, _) => Err(ApiError::bad_request(
            "json patch must be a JSON array of operations",
        )),
        (_, Value::Object(_)) => Ok(value),
        _ => Err(ApiError::bad_request("the patch must be a JSON object")),
    }
}

/// Whether strategic merge patch applies to a kind (built-in types only, as upstream).
pub fn strategic_supported(definition: Option<&str>) -> bool {
    definition.is_some_and(skiff_api::patch::supports_strategic_merge)
}

/// Apply a parsed patch to an object.
pub fn apply(
    kind: PatchKind,
    doc: &Value,
    patch: &Value,
    definition: Option<&str>,
) -> ApiResult<Value> {
    let result = match kind {
        PatchKind::Json => skiff_api::patch::apply_json_patch(doc, patch),
        PatchKind::Merge => Ok(skiff_api::patch::apply_merge_patch(doc, patch)),
        PatchKind::Strategic => {
            skiff_api::patch::apply_strategic_merge_patch(doc, patch, definition.unwrap_or(""))
        }
        PatchKind::Apply => Ok(skiff_api::patch::apply_merge_patch(doc, patch)),
    };
    result.map_err(|e| match e.status_code() {
        422 => ApiError::invalid_message(e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    })
}
