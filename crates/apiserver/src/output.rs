//! Content negotiation and response shaping.
//!
//! Clients choose the representation with `Accept`: plain JSON or YAML, a `meta.k8s.io/v1`
//! Table (kubectl's server-side printing), or `PartialObjectMetadata(List)` (metadata-only
//! informers). Protobuf is not spoken; clients that also accept JSON get JSON, the rest 406.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use skiff_api::registry::{PrintContext, ResourceInfo};

use crate::error::{ApiError, ApiResult};

/// What a response body should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The object(s) as JSON.
    Json,
    /// The object(s) as YAML.
    Yaml,
    /// A Table, with `rows[].object` per `includeObject`.
    Table(IncludeObject),
    /// Only metadata (`PartialObjectMetadata` / `PartialObjectMetadataList`).
    Metadata,
}

/// Upstream `includeObject` for Table rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// A parsed media type from `Accept` or `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower-case.
    pub essence: String,
    /// Parameters such as `as`, `g`, `v`.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parse one media type like `application/json;as=Table;v=v1;g=meta.k8s.io`.
    pub fn parse(text: &str) -> MediaType {
        let mut parts = text.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_owned(),
                ))
            })
            .collect();
        MediaType { essence, params }
    }

    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The media types listed in an `Accept` header, in order.
pub fn accepted(headers: &HeaderMap) -> Vec<MediaType> {
    let text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    text.split(',')
        .map(MediaType::parse)
        .filter(|m| !m.essence.is_empty())
        .collect()
}

fn is_jsonish(essence: &str) -> bool {
    matches!(
        essence,
        "application/json"
            | "*/*"
            | "application/*"
            | "application/json-patch+json"
            | "application/merge-patch+json"
    )
}

/// Choose the representation for an object or list response.
pub fn negotiate(headers: &HeaderMap, include: Option<&str>) -> ApiResult<Output> {
    let types = accepted(headers);
    if types.is_empty() {
        return Ok(Output::Json);
    }
    for media in &types {
        match media.param("as") {
            Some("Table") if media.essence == "application/json" => {
                let group_ok = media.param("g").is_none_or(|g| g == "meta.k8s.io");
                let version_ok = media.param("v").is_none_or(|v| v == "v1" || v == "v1beta1");
                if group_ok && version_ok {
                    let include = match include {
                        Some("None") => IncludeObject::None,
                        Some("Object") => IncludeObject::Object,
                        _ => IncludeObject::Metadata,
                    };
                    return Ok(Output::Table(include));
                }
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if media.essence == "application/json" =>
            {
                return Ok(Output::Metadata);
            }
            Some(_) => {}
            None if is_jsonish(&media.essence) => return Ok(Output::Json),
            None if media.essence == "application/yaml" => return Ok(Output::Yaml),
            None => {}
        }
    }
    Err(ApiError::not_acceptable(
        "application/json, application/yaml",
    ))
}

/// Serialize a value as the chosen plain format.
pub fn respond(status: StatusCode, body: &Value, output: Output) -> Response {
    match output {
        Output::Yaml => match serde_yaml::to_string(body) {
            Ok(text) => {
                (status, [(header::CONTENT_TYPE, "application/yaml")], text).into_response()
            }
            Err(e) => ApiError::internal(format!("encoding yaml: {e}")).into_response(),
        },
        _ => json_response(status, body),
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Build the `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The columns of a Table for a resource, as JSON column definitions.
pub fn column_definitions(info: &ResourceInfo) -> Value {
    Value::Array(
        info.strategy
            .columns()
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// One Table row for an object.
pub fn table_row(
    info: &ResourceInfo,
    obj: &Value,
    include: IncludeObject,
    ctx: &PrintContext,
) -> Value {
    let cells = info.strategy.row(obj, ctx);
    let mut row = json!({ "cells": cells });
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(obj),
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A Table for some objects; `list_meta` becomes the Table's metadata.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    include: IncludeObject,
    list_meta: Value,
    with_columns: bool,
) -> Value {
    let ctx = print_context();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| table_row(info, o, include, &ctx))
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = column_definitions(info);
    }
    t
}

/// "Now" for printing.
pub fn print_context() -> PrintContext {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    PrintContext { now_unix }
}

/// Shape a single object response.
pub fn object_response(
    status: StatusCode,
    info: &ResourceInfo,
    obj: &Value,
    output: Output,
) -> Response {
    match output {
        Output::Table(include) => {
            let meta = json!({ "resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!("")) });
            json_response(
                status,
                &table(info, std::slice::from_ref(obj), include, meta, true),
            )
        }
        Output::Metadata => json_response(status, &partial_metadata(obj)),
        other => respond(status, obj, other),
    }
}

/// Shape a list response.
pub fn list_response(
    info: &ResourceInfo,
    items: Vec<Value>,
    list_meta: Value,
    output: Output,
) -> Response {
    match output {
        Output::Table(include) => json_response(
            StatusCode::OK,
            &table(info, &items, include, list_meta, true),
        ),
        Output::Metadata => {
            let items: Vec<Value> = items.iter().map(partial_metadata).collect();
            json_response(
                StatusCode::OK,
                &json!({ "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items }),
            )
        }
        other => {
            let list = json!({
                "kind": info.list_kind,
                "apiVersion": info.api_version(),
                "metadata": list_meta,
                "items": items,
            });
            respond(StatusCode::OK, &list, other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, accept.parse().unwrap());
        h
    }

    #[test]
    fn kubectl_table_accept() {
        let h = headers(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        );
        assert_eq!(
            negotiate(&h, None).unwrap(),
            Output::Table(IncludeObject::Metadata)
        );
    }

    #[test]
    fn protobuf_falls_back_to_json_or_406() {
        let h = headers("application/vnd.kubernetes.protobuf, */*");
        assert_eq!(negotiate(&h, None).unwrap(), Output::Json);
        let h = headers("application/vnd.kubernetes.protobuf");
        assert_eq!(negotiate(&h, None).unwrap_err().code, 406);
    }
}
