//! API errors and their one conversion into `meta.k8s.io/v1` Status responses.
//!
//! Every handler returns `Result<_, ApiError>`; this module is the only place that renders a
//! Status, so codes, reasons and message wording stay consistent with upstream
//! (k8s.io/apimachinery/pkg/api/errors).

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};
use skiff_api::field::ErrorList;

/// A group-qualified resource name as upstream prints it: `pods`, `deployments.apps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResource {
    /// API group ("" for core).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// An error answered to the client as a Status object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Status `reason` (e.g. `NotFound`); empty for none.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Status `details`.
    pub details: Option<Box<Value>>,
    /// Seconds to put in a `Retry-After` header.
    pub retry_after: Option<u64>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

fn details(name: &str, gr: &GroupResource) -> Value {
    let mut d = json!({ "name": name, "kind": gr.resource });
    if !gr.group.is_empty() {
        d["group"] = json!(gr.group);
    }
    d
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(gr: &GroupResource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{gr} \"{name}\" not found"))
            .with_details(details(name, gr))
    }

    /// 404 for a path that names no resource.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 404 for a namespace that does not exist on create.
    pub fn namespace_not_found(namespace: &str) -> Self {
        let gr = GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        };
        Self::not_found(&gr, namespace)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(gr: &GroupResource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{gr} \"{name}\" already exists"),
        )
        .with_details(details(name, gr))
    }

    /// 409 Conflict on a stale resourceVersion or failed precondition.
    pub fn conflict(gr: &GroupResource, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
        )
        .with_details(details(name, gr))
    }

    /// A server-side apply that changes fields other managers own (upstream NewApplyConflict).
    pub fn apply_conflict(
        gr: &GroupResource,
        name: &str,
        message: String,
        causes: Vec<Value>,
    ) -> Self {
        let mut d = details(name, gr);
        d["causes"] = Value::Array(causes);
        Self::new(409, "Conflict", message).with_details(d)
    }

    /// The standard stale-object conflict.
    pub fn stale(gr: &GroupResource, name: &str) -> Self {
        Self::conflict(
            gr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with one cause per field error: `Pod "x" is invalid: spec...: Required value`.
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &ErrorList) -> Self {
        // Upstream prints the group-qualified kind: `Deployment.apps "web" is invalid: ...`.
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let message = match rendered.as_slice() {
            [one] => format!("{qualified} \"{name}\" is invalid: {one}"),
            many => format!("{qualified} \"{name}\" is invalid: [{}]", many.join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let mut msg = e.error_type.phrase().to_owned();
                if let Some(v) = &e.bad_value {
                    msg.push_str(": ");
                    msg.push_str(v);
                }
                if !e.detail.is_empty() {
                    msg.push_str(": ");
                    msg.push_str(&e.detail);
                }
                json!({ "reason": e.error_type.reason(), "message": msg, "field": e.field.as_str() })
            })
            .collect();
        let mut d = json!({ "name": name, "kind": kind, "causes": causes });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        Self::new(422, "Invalid", message).with_details(d)
    }

    /// 422 Invalid with only a message (e.g. a JSON patch `test` that failed).
    pub fn invalid_message(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_supported(gr: &GroupResource, verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{gr}\""),
        )
        .with_details(json!({ "kind": gr.resource, "group": gr.group }))
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(accepted: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: {accepted}"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(got: &str, accepted: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted} (got {got:?})"
            ),
        )
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 410 Expired: a list or continue token at a compacted revision.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 410 Gone: a watch from a compacted revision.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Gone", message)
    }

    /// 504 Timeout (e.g. a resourceVersion the store has not reached).
    pub fn timeout(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(504, "Timeout", message)
            .with_details(json!({ "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }], "retryAfterSeconds": retry_after }));
        e.retry_after = Some(retry_after);
        e
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with a message.
    pub fn forbidden(gr: &GroupResource, name: &str, why: &str) -> Self {
        let message = if name.is_empty() {
            format!("{gr} is forbidden: {why}")
        } else {
            format!("{gr} \"{name}\" is forbidden: {why}")
        };
        Self::new(403, "Forbidden", message).with_details(details(name, gr))
    }

    /// 500 InternalError: only for server-side failures (store IO), never for user input.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({ "causes": [{ "message": message }] }))
    }

    /// 429 TooManyRequests with one cause (a disruption budget refusing an eviction).
    pub fn too_many_requests(message: &str, cause_reason: &str, cause_message: &str) -> Self {
        Self::new(429, "TooManyRequests", message).with_details(
            json!({ "causes": [{ "reason": cause_reason, "message": cause_message }] }),
        )
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The Status object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            status["details"] = (**d).clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut response = (
            code,
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<skiff_store::Error> for ApiError {
    /// Only store failures that are not about the request itself reach this conversion;
    /// handlers map NotFound/AlreadyExists/Conflict/Compacted with resource context first.
    fn from(err: skiff_store::Error) -> Self {
        match err {
            skiff_store::Error::Compacted { .. } => ApiError::expired(format!(
                "The resourceVersion for the provided list is too old: {err}"
            )),
            skiff_store::Error::Unavailable { .. } => ApiError::unavailable(err.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::field::{FieldError, Path};

    #[test]
    fn not_found_reads_like_upstream() {
        let gr = GroupResource {
            group: "apps".into(),
            resource: "deployments".into(),
        };
        let s = ApiError::not_found(&gr, "web").to_status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_causes() {
        let errs = vec![FieldError::required(
            &Path::new("spec").child("containers"),
            "",
        )];
        let s = ApiError::invalid("Pod", "", "p", &errs).to_status();
        assert_eq!(
            s["message"],
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        assert_eq!(s["details"]["causes"][0]["field"], "spec.containers");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
    }
}
