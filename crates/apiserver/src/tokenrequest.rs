//! `serviceaccounts/token` (TokenRequest): short-lived, audience-bound service-account tokens,
//! as `kubectl create token` and the kubelet's projected volumes ask for, and the bearer-token
//! authenticator that accepts them.

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_api::field::{FieldError, Path};

use crate::error::{ApiError, ApiResult};
use crate::handlers::{Ctx, decode_object};
use crate::objects::meta_str;
use crate::output;
use crate::server::Identity;
use crate::state::State;

/// The token issuer, and the default audience (upstream's `--service-account-issuer` and
/// `--api-audiences` defaults).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Serve `POST serviceaccounts/<name>/token`.
pub async fn create(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    let Some(signer) = ctx.state.settings.service_accounts.clone() else {
        return Err(ApiError::unavailable(
            "this API server has no service-account signing key",
        ));
    };
    let request = decode_object(&ctx.headers, &body)?;
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut errors = Vec::new();
    let spec_path = Path::new("spec");
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(v) => match v.as_i64() {
            Some(n) => n,
            None => {
                errors.push(FieldError::invalid(
                    &spec_path.child("expirationSeconds"),
                    v.to_string(),
                    "must be an integer",
                ));
                DEFAULT_EXPIRATION
            }
        },
    };
    if expiration < MIN_EXPIRATION {
        errors.push(FieldError::invalid(
            &spec_path.child("expirationSeconds"),
            expiration.to_string(),
            "may not specify a duration less than 10 minutes",
        ));
    } else if expiration > MAX_EXPIRATION {
        errors.push(FieldError::invalid(
            &spec_path.child("expirationSeconds"),
            expiration.to_string(),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => vec![ISSUER.to_owned()],
    };
    let bound = spec.get("boundObjectRef").filter(|v| !v.is_null()).cloned();
    if let Some(b) = &bound {
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "Pod" | "Secret" | "Node") {
            errors.push(FieldError::not_supported(
                &spec_path.child("boundObjectRef").child("kind"),
                kind,
                &["Pod", "Node", "Secret"],
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            ctx.name(),
            &errors,
        ));
    }

    let namespace = ctx.namespace().unwrap_or("").to_owned();
    let (account, _) = ctx
        .state
        .objects
        .get_existing(&ctx.info, Some(&namespace), ctx.name())
        .await?;
    let mut private = json!({
        "namespace": namespace,
        "serviceaccount": { "name": meta_str(&account, "name"), "uid": meta_str(&account, "uid") },
    });
    if let Some(b) = &bound {
        let kind = b["kind"].as_str().unwrap_or("");
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            _ => "nodes",
        };
        let info = ctx.state.resource("", "v1", plural)?;
        let name = b.get("name").and_then(Value::as_str).unwrap_or("");
        let ns = (kind != "Node").then_some(namespace.as_str());
        let (object, _) = ctx.state.objects.get_existing(&info, ns, name).await?;
        let uid = meta_str(&object, "uid");
        if let Some(wanted) = b.get("uid").and_then(Value::as_str)
            && !wanted.is_empty()
            && wanted != uid
        {
            return Err(ApiError::conflict(
                &ctx.gr(),
                ctx.name(),
                &format!(
                    "the UID in the bound object reference ({wanted}) does not match the {kind} ({uid})"
                ),
            ));
        }
        private[kind.to_lowercase()] = json!({ "name": name, "uid": uid });
    }

    let now = unix_now();
    let claims = json!({
        "aud": audiences,
        "exp": now + expiration,
        "iat": now,
        "iss": ISSUER,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": private,
        "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{}", ctx.name()),
    });
    let token = signer.sign(&claims);
    let mut out_spec = json!({ "audiences": audiences, "expirationSeconds": expiration });
    out_spec["boundObjectRef"] = bound.unwrap_or(Value::Null);
    let response = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {
            "name": ctx.name(),
            "namespace": namespace,
            "creationTimestamp": crate::time::now_rfc3339(),
        },
        "spec": out_spec,
        "status": {
            "token": token,
            "expirationTimestamp": crate::time::rfc3339_after(expiration),
        },
    });
    Ok(output::json_response(StatusCode::CREATED, &response))
}

/// The identity a service-account token proves: `system:serviceaccount:<ns>:<name>` in the
/// service-account groups. Tokens must be meant for this API server (the default audience).
pub fn authenticate(state: &State, token: &str) -> Option<Identity> {
    let signer = state.settings.service_accounts.as_ref()?;
    let claims = signer.verify(token, unix_now()).ok()?;
    if claims["iss"] != ISSUER {
        return None;
    }
    let audiences: Vec<&str> = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&ISSUER) {
        return None;
    }
    let subject = claims["sub"].as_str()?;
    let rest = subject.strip_prefix("system:serviceaccount:")?;
    let (namespace, _) = rest.split_once(':')?;
    Some(Identity::User {
        name: subject.to_owned(),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ],
    })
}
