//! Generic resource handlers: one implementation of every verb, driven by the registry.

pub mod read;
pub mod subresource;
pub mod watch;
pub mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use skiff_api::registry::ResourceInfo;

use crate::error::{ApiError, ApiResult};
use crate::objects::group_resource;
use crate::output::{self, MediaType, Output};
use crate::request::{Query, ResourcePath, Verb, parse_query, parse_resource_path};
use crate::state::State;

/// Request bodies larger than this are refused with 413, as upstream's 3 MiB limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Everything a handler needs about one resource request.
pub struct Ctx {
    /// Server state.
    pub state: Arc<State>,
    /// The resource addressed.
    pub info: Arc<ResourceInfo>,
    /// The parsed path.
    pub path: ResourcePath,
    /// Query parameters.
    pub query: Query,
    /// Request headers.
    pub headers: HeaderMap,
    /// Response representation.
    pub output: Output,
    /// Warnings to return in `Warning` headers.
    pub warnings: Vec<String>,
    /// Set while serving an apply patch: the apply has already recorded field ownership, so
    /// the generic write path must not record it again as an update.
    pub applying: bool,
}

impl Ctx {
    /// The namespace from the path, for namespaced resources.
    pub fn namespace(&self) -> Option<&str> {
        if self.info.namespaced {
            self.path.namespace.as_deref()
        } else {
            None
        }
    }

    /// The name from the path ("" if none).
    pub fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }

    /// The resource's group/resource for messages.
    pub fn gr(&self) -> crate::error::GroupResource {
        group_resource(&self.info)
    }
}

/// Serve any request below `/api/<v>/` or `/apis/<g>/<v>/`.
pub async fn serve(state: Arc<State>, request: Request<Body>) -> Response {
    let (mut parts, body) = request.into_parts();
    let query = Query(parse_query(parts.uri.query()));
    let forward = crate::nodeproxy::Forward {
        method: parts.method.clone(),
        query: parts.uri.query().map(str::to_owned),
        body: Body::empty(),
        upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
    };
    let Some(path) = parse_resource_path(parts.uri.path()) else {
        return ApiError::path_not_found().into_response();
    };
    let watch_path = parts
        .uri
        .path()
        .contains(&format!("/{}/watch/", path.version));
    match route(state, parts.headers, path, query, body, watch_path, forward).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn route(
    state: Arc<State>,
    headers: HeaderMap,
    path: ResourcePath,
    query: Query,
    body: Body,
    watch_path: bool,
    forward: crate::nodeproxy::Forward,
) -> ApiResult<Response> {
    let method = forward.method.clone();
    let registry = state.registry.snapshot();
    let info = registry
        .get(&path.group, &path.version, &path.resource)
        .cloned()
        .ok_or_else(ApiError::path_not_found)?;
    // A namespaced object must be addressed through its namespace; a cluster-scoped one never is.
    if info.namespaced && path.namespace.is_none() && path.name.is_some() {
        return Err(ApiError::path_not_found());
    }
    if !info.namespaced && path.namespace.is_some() {
        return Err(ApiError::path_not_found());
    }
    let output = output::negotiate(&headers, query.get("includeObject"))?;
    let mut ctx = Ctx {
        state,
        info,
        path,
        query,
        headers,
        output,
        warnings: Vec::new(),
        applying: false,
    };

    if let Some(sub) = ctx.path.subresource.clone() {
        if crate::nodeproxy::handles(&ctx.info, &sub) {
            let forward = crate::nodeproxy::Forward { body, ..forward };
            return crate::nodeproxy::serve(&ctx, &sub, forward).await;
        }
        let body = read_body(&ctx.headers, body).await?;
        let response = subresource::serve(&mut ctx, &method, &sub, body).await?;
        return Ok(with_warnings(response, &ctx.warnings));
    }

    let has_name = ctx.path.name.is_some();
    let watch = watch_path || ctx.query.flag("watch");
    let verb = match (&method, has_name) {
        (&Method::GET, _) if watch => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => return Err(ApiError::method_not_supported(&ctx.gr(), method.as_str())),
    };
    let verbs = ctx.info.verbs;
    let allowed = match verb {
        Verb::Get | Verb::List | Verb::Watch => verbs.read,
        Verb::Create => verbs.create,
        Verb::Update | Verb::Patch => verbs.update,
        Verb::Delete | Verb::DeleteCollection => verbs.delete,
    };
    if !allowed {
        return Err(ApiError::method_not_supported(&ctx.gr(), verb.as_str()));
    }
    let response = match verb {
        Verb::Get => read::get(&ctx).await?,
        Verb::List => read::list(&ctx).await?,
        Verb::Watch => watch::watch(&ctx).await?,
        Verb::Create => {
            let body = read_body(&ctx.headers, body).await?;
            write::create(&mut ctx, body).await?
        }
        Verb::Update => {
            let body = read_body(&ctx.headers, body).await?;
            write::update(&mut ctx, body).await?
        }
        Verb::Patch => {
            let body = read_body(&ctx.headers, body).await?;
            write::patch(&mut ctx, body).await?
        }
        Verb::Delete => {
            let body = read_body(&ctx.headers, body).await?;
            write::delete(&mut ctx, body).await?
        }
        Verb::DeleteCollection => {
            let body = read_body(&ctx.headers, body).await?;
            write::delete_collection(&mut ctx, body).await?
        }
    };
    Ok(with_warnings(response, &ctx.warnings))
}

/// Read a request body, refusing ones over [`MAX_BODY_BYTES`].
pub async fn read_body(headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY_BYTES
    {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(MAX_BODY_BYTES))
        }
        Err(err) => Err(ApiError::bad_request(format!(
            "reading request body: {err}"
        ))),
    }
}

/// The request's content type.
pub fn content_type(headers: &HeaderMap) -> MediaType {
    MediaType::parse(
        headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json"),
    )
}

/// Decode a JSON, YAML or Kubernetes-protobuf object body (create/update/delete options).
pub fn decode_object(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let media = content_type(headers);
    let value: Value = match media.essence.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })?,
        // kubectl's typed clients (create configmap/secret/deployment…)
        // send protobuf and never fall back to JSON.
        skiff_api::protobuf::MEDIA_TYPE => {
            skiff_api::protobuf::decode_object(body).map_err(|e| match e {
                skiff_api::protobuf::ProtobufError::UnknownKind { .. } => {
                    ApiError::unsupported_media_type(
                        &format!("{} ({e})", skiff_api::protobuf::MEDIA_TYPE),
                        "application/json, application/yaml",
                    )
                }
                other => ApiError::bad_request(format!(
                    "the request body is not a valid protobuf object: {other}"
                )),
            })?
        }
        other => {
            return Err(ApiError::unsupported_media_type(
                other,
                "application/json, application/yaml, application/vnd.kubernetes.protobuf",
            ));
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, got {}",
            json_type_name(&value)
        )));
    }
    Ok(value)
}

/// A JSON value's type for messages.
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append("Warning", v);
        }
    }
    response
}
