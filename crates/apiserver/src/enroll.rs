//! Node enrollment: how `skiff agent` joins a cluster with nothing but the server's address
//! and the join token (k3s' model). `GET /cacerts` hands out the cluster CA (the agent checks
//! it against the CA hash inside the token before trusting it), and
//! `POST /v1-skiff/node-credentials`, authenticated by the join token, issues the node's
//! client certificate (`system:node:<name>` in `system:nodes`) and its kubelet serving
//! certificate.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::output;
use crate::server::Front;

/// Credentials issued to a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCredentials {
    /// The cluster CA (PEM).
    pub ca: String,
    /// The node's client certificate (PEM).
    pub client_cert: String,
    /// Its key (PEM).
    pub client_key: String,
    /// The kubelet's serving certificate (PEM).
    pub serving_cert: String,
    /// Its key (PEM).
    pub serving_key: String,
}

/// A request for node credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollRequest {
    /// The node's name.
    pub node_name: String,
    /// Its addresses (SANs of the serving certificate).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// What issues node credentials (the cluster PKI, supplied by the binary).
pub trait NodeEnrollment: Send + Sync {
    /// The cluster CA (PEM).
    fn ca_pem(&self) -> String;
    /// Issue credentials for `request`.
    fn enroll(&self, request: &EnrollRequest) -> Result<NodeCredentials, String>;
}

/// Enrollment settings: the join token and the issuer.
#[derive(Clone)]
pub struct Enrollment {
    /// The token nodes present.
    pub token: String,
    /// The issuer.
    pub issuer: Arc<dyn NodeEnrollment>,
}

/// `GET /cacerts`.
pub async fn cacerts(AxState(front): AxState<Arc<Front>>) -> Response {
    match &front.enrollment {
        Some(e) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            e.issuer.ca_pem(),
        )
            .into_response(),
        None => ApiError::path_not_found().into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Node names must be DNS subdomains (they become object names and certificate names).
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `POST /v1-skiff/node-credentials`.
pub async fn node_credentials(
    AxState(front): AxState<Arc<Front>>,
    request: Request<Body>,
) -> Response {
    let Some(enrollment) = front.enrollment.clone() else {
        return ApiError::path_not_found().into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(presented.trim().as_bytes(), enrollment.token.as_bytes()) {
        return ApiError::unauthorized().into_response();
    }
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return ApiError::bad_request("reading the request body failed").into_response(),
    };
    let req: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!("invalid enrollment request: {e}"))
                .into_response();
        }
    };
    if !valid_node_name(&req.node_name) {
        return ApiError::bad_request(format!(
            "invalid node name {:?}: must be a lowercase RFC 1123 subdomain",
            req.node_name
        ))
        .into_response();
    }
    match tokio::task::spawn_blocking(move || enrollment.issuer.enroll(&req)).await {
        Ok(Ok(creds)) => output::json_response(
            StatusCode::OK,
            &serde_json::to_value(creds).unwrap_or_default(),
        ),
        Ok(Err(e)) => {
            ApiError::internal(format!("issuing node credentials failed: {e}")).into_response()
        }
        Err(_) => ApiError::internal("issuing node credentials failed").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_subdomains() {
        assert!(valid_node_name("worker-1"));
        assert!(valid_node_name("node.example.com"));
        assert!(!valid_node_name("Worker"));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a..b"));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
