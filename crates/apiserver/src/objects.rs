//! Objects in the store: key layout, JSON encoding, and the `resourceVersion` ↔ revision mapping.
//!
//! Keys follow upstream's etcd layout, `/registry/<group>/<plural>/<namespace>/<name>` (group
//! `core` for the core group), so one prefix read lists a namespace or the whole resource.
//! Objects are stored as JSON without `metadata.resourceVersion`; it is filled in from the
//! key's mod revision on every read, which makes it exactly the store revision.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};
use skiff_api::registry::ResourceInfo;
use skiff_store::{KeyValue, Revision, Store};

use crate::error::{ApiError, ApiResult, GroupResource};

/// The store key prefix of a resource, optionally narrowed to one namespace. Ends with `/`.
pub fn prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
    let group = if info.group.is_empty() {
        "core"
    } else {
        info.group.as_str()
    };
    match namespace {
        Some(ns) if info.namespaced => format!("/registry/{group}/{}/{ns}/", info.plural),
        _ => format!("/registry/{group}/{}/", info.plural),
    }
}

/// The store key of one object.
pub fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", prefix(info, namespace))
}

/// The group/resource of an info, for error messages.
pub fn group_resource(info: &ResourceInfo) -> GroupResource {
    GroupResource {
        group: info.group.clone(),
        resource: info.plural.clone(),
    }
}

/// Decode a stored object, setting `metadata.resourceVersion` and the requested apiVersion.
pub fn decode(kv: &KeyValue, api_version: &str) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(api_version.to_owned()));
    }
    Ok(obj)
}

/// Encode an object for storage (without `metadata.resourceVersion`).
pub fn encode(obj: &Value) -> ApiResult<Bytes> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("selfLink");
    }
    serde_json::to_vec(&obj)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

/// Set `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    metadata_mut(obj).insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
}

/// The object's metadata map, created if missing or not an object.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("object ensured above");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("object ensured above")
}

/// Drop the empty collections of `metadata` the way Go's `omitempty` does when upstream
/// re-encodes an object: removing the last label or annotation leaves no `labels: {}`.
pub fn drop_empty_metadata_collections(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|field, value| {
            let collection = matches!(
                field.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences" | "managedFields"
            );
            let empty = match value {
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Null => true,
                _ => false,
            };
            !(collection && empty)
        });
    }
}

/// A string field of metadata ("" when absent).
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.labels` as pairs.
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Parse a client-supplied resourceVersion.
pub fn parse_revision(text: &str) -> ApiResult<Revision> {
    text.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {text:?}")))
}

/// Thin typed access to the store for the handlers.
#[derive(Clone)]
pub struct Objects {
    /// The backing store.
    pub store: Arc<dyn Store>,
}

impl Objects {
    /// Read one object, `None` if absent.
    pub async fn get(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<Option<(Value, KeyValue)>> {
        match self.store.get(&key(info, namespace, name)).await? {
            Some(kv) => Ok(Some((decode(&kv, &info.api_version())?, kv))),
            None => Ok(None),
        }
    }

    /// Read one object or answer 404.
    pub async fn get_existing(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<(Value, KeyValue)> {
        self.get(info, namespace, name)
            .await?
            .ok_or_else(|| ApiError::not_found(&group_resource(info), name))
    }
}
