//! OpenAPI documents: v3 per group version (`/openapi/v3/apis/<g>/<v>`) and v2 for all.
//!
//! Schemas come from each kind's [`Strategy::schema`](skiff_api::registry::Strategy); each
//! root carries `x-kubernetes-group-version-kind`, which is how `kubectl explain` finds a kind.
//! Paths list every verb with its query parameters (including `fieldValidation`, which kubectl
//! looks for before relying on server-side field validation). Documents are built once per
//! registry snapshot and cached.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use skiff_api::registry::ResourceInfo;

use crate::registry::RegistrySnapshot;

/// Built documents for one registry snapshot.
pub struct Documents {
    /// v3 documents by path key (`api/v1`, `apis/apps/v1`), with their hashes.
    pub v3: BTreeMap<String, (String, Arc<Vec<u8>>)>,
    /// The v2 document.
    pub v2: Arc<Vec<u8>>,
    /// The v2 document in protobuf ([`crate::openapi_proto`]).
    pub v2_protobuf: Arc<Vec<u8>>,
}

/// Caches [`Documents`] for the current registry snapshot.
#[derive(Default)]
pub struct Cache {
    current: Mutex<Option<(usize, Arc<Documents>)>>,
}

impl Cache {
    /// Documents for `snapshot`, building them if the registry changed.
    pub fn documents(&self, snapshot: &Arc<RegistrySnapshot>, version: &str) -> Arc<Documents> {
        let id = Arc::as_ptr(snapshot) as usize;
        let mut current = self.current.lock();
        if let Some((cached_id, docs)) = current.as_ref()
            && *cached_id == id
        {
            return docs.clone();
        }
        let docs = Arc::new(build(snapshot, version));
        *current = Some((id, docs.clone()));
        docs
    }
}

fn hash(bytes: &[u8]) -> String {
    // FNV-1a: a stable content hash for cache-busting URLs, not for security.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn param(name: &str, location: &str, ty: &str, description: &str) -> Value {
    json!({ "name": name, "in": location, "description": description, "schema": { "type": ty, "uniqueItems": true } })
}

fn list_params() -> Vec<Value> {
    vec![
        param(
            "allowWatchBookmarks",
            "query",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
        ),
        param(
            "continue",
            "query",
            "string",
            "The continue option should be set when retrieving more results from the server.",
        ),
        param(
            "fieldSelector",
            "query",
            "string",
            "A selector to restrict the list of returned objects by their fields.",
        ),
        param(
            "labelSelector",
            "query",
            "string",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        param(
            "limit",
            "query",
            "integer",
            "limit is a maximum number of responses to return for a list call.",
        ),
        param(
            "resourceVersion",
            "query",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
        ),
        param(
            "resourceVersionMatch",
            "query",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
        ),
        param(
            "sendInitialEvents",
            "query",
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`.",
        ),
        param(
            "timeoutSeconds",
            "query",
            "integer",
            "Timeout for the list/watch call.",
        ),
        param(
            "watch",
            "query",
            "boolean",
            "Watch for changes to the described resources.",
        ),
    ]
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        param(
            "dryRun",
            "query",
            "string",
            "When present, indicates that modifications should not be persisted.",
        ),
        param(
            "fieldManager",
            "query",
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        param(
            "fieldValidation",
            "query",
            "string",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.",
        ),
    ];
    if patch {
        p.push(param(
            "force",
            "query",
            "boolean",
            "Force is going to \"force\" Apply requests.",
        ));
    }
    p
}

fn operation(
    info: &ResourceInfo,
    action: &str,
    id: &str,
    params: Vec<Value>,
    root_ref: &str,
    body: bool,
    patch: bool,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "parameters": params,
        "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": root_ref } } } },
                       "401": { "description": "Unauthorized" } },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": { "group": info.group, "version": info.version, "kind": info.kind },
    });
    if body {
        let content = if patch {
            json!({
                "application/json-patch+json": { "schema": { "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch" } },
                "application/merge-patch+json": { "schema": { "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch" } },
                "application/strategic-merge-patch+json": { "schema": { "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch" } },
                "application/apply-patch+yaml": { "schema": { "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch" } },
            })
        } else {
            json!({ "*/*": { "schema": { "$ref": root_ref } } })
        };
        op["requestBody"] = json!({ "content": content, "required": true });
    }
    op
}

fn paths_for(info: &ResourceInfo, root: &str, paths: &mut Map<String, Value>) {
    let gv_prefix = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    let root_ref = format!("#/components/schemas/{root}");
    let (collection, item) = if info.namespaced {
        (
            format!("{gv_prefix}/namespaces/{{namespace}}/{}", info.plural),
            format!(
                "{gv_prefix}/namespaces/{{namespace}}/{}/{{name}}",
                info.plural
            ),
        )
    } else {
        (
            format!("{gv_prefix}/{}", info.plural),
            format!("{gv_prefix}/{}/{{name}}", info.plural),
        )
    };
    let kind = &info.kind;
    let mut c = Map::new();
    let mut i = Map::new();
    if info.verbs.read {
        c.insert(
            "get".into(),
            operation(
                info,
                "list",
                &format!("list{kind}"),
                list_params(),
                &root_ref,
                false,
                false,
            ),
        );
        i.insert(
            "get".into(),
            operation(
                info,
                "get",
                &format!("read{kind}"),
                vec![],
                &root_ref,
                false,
                false,
            ),
        );
    }
    if info.verbs.create {
        c.insert(
            "post".into(),
            operation(
                info,
                "post",
                &format!("create{kind}"),
                write_params(false),
                &root_ref,
                true,
                false,
            ),
        );
    }
    if info.verbs.update {
        i.insert(
            "put".into(),
            operation(
                info,
                "put",
                &format!("replace{kind}"),
                write_params(false),
                &root_ref,
                true,
                false,
            ),
        );
        i.insert(
            "patch".into(),
            operation(
                info,
                "patch",
                &format!("patch{kind}"),
                write_params(true),
                &root_ref,
                true,
                true,
            ),
        );
    }
    if info.verbs.delete {
        c.insert(
            "delete".into(),
            operation(
                info,
                "deletecollection",
                &format!("deleteCollection{kind}"),
                vec![],
                &root_ref,
                false,
                false,
            ),
        );
        i.insert(
            "delete".into(),
            operation(
                info,
                "delete",
                &format!("delete{kind}"),
                vec![],
                &root_ref,
                false,
                false,
            ),
        );
    }
    let mut scope = vec![];
    if info.namespaced {
        scope.push(json!({ "name": "namespace", "in": "path", "required": true, "schema": { "type": "string" } }));
    }
    let mut named = scope.clone();
    named.push(
        json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }),
    );
    c.insert("parameters".into(), json!(scope));
    i.insert("parameters".into(), json!(named));
    paths.insert(collection, Value::Object(c));
    paths.insert(item.clone(), Value::Object(i));
    for sub in &info.subresources {
        if sub.name == "status" || sub.name == "scale" {
            let mut s = Map::new();
            s.insert(
                "get".into(),
                operation(
                    info,
                    "get",
                    &format!("read{kind}{}", capitalize(&sub.name)),
                    vec![],
                    &root_ref,
                    false,
                    false,
                ),
            );
            s.insert(
                "put".into(),
                operation(
                    info,
                    "put",
                    &format!("replace{kind}{}", capitalize(&sub.name)),
                    write_params(false),
                    &root_ref,
                    true,
                    false,
                ),
            );
            s.insert(
                "patch".into(),
                operation(
                    info,
                    "patch",
                    &format!("patch{kind}{}", capitalize(&sub.name)),
                    write_params(true),
                    &root_ref,
                    true,
                    true,
                ),
            );
            s.insert("parameters".into(), json!(named));
            paths.insert(format!("{item}/{}", sub.name), Value::Object(s));
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Shared meta types every document refers to.
fn meta_definitions(schemas: &mut Map<String, Value>) {
    schemas.entry("io.k8s.apimachinery.pkg.apis.meta.v1.Patch").or_insert(json!({
        "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
        "type": "object",
    }));
}

fn document(resources: &[&Arc<ResourceInfo>], version: &str) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for info in resources {
        let Some(kind_schema) = info.strategy.schema() else {
            continue;
        };
        for (name, def) in &kind_schema.definitions {
            schemas.entry(name.clone()).or_insert_with(|| def.clone());
        }
        if let Some(root) = schemas.get_mut(&kind_schema.root) {
            let gvk = json!({ "group": info.group, "version": info.version, "kind": info.kind });
            let list = root["x-kubernetes-group-version-kind"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !list.contains(&gvk) {
                let mut list = list;
                list.push(gvk);
                root["x-kubernetes-group-version-kind"] = json!(list);
            }
        }
        paths_for(info, &kind_schema.root, &mut paths);
    }
    meta_definitions(&mut schemas);
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": version },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

/// Rewrite `#/components/schemas/` references to `#/definitions/` for Swagger 2.0.
fn to_v2(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if k == "$ref"
                        && let Some(r) = v.as_str()
                    {
                        return (
                            k.clone(),
                            json!(r.replace("#/components/schemas/", "#/definitions/")),
                        );
                    }
                    (k.clone(), to_v2(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}

fn build(snapshot: &RegistrySnapshot, version: &str) -> Documents {
    let mut v3 = BTreeMap::new();
    let mut all_definitions = Map::new();
    for (group, versions) in snapshot.groups() {
        for v in versions {
            let resources = snapshot.resources_in(group, v);
            let doc = document(&resources, version);
            if let Some(schemas) = doc
                .pointer("/components/schemas")
                .and_then(Value::as_object)
            {
                for (k, s) in schemas {
                    all_definitions.entry(k.clone()).or_insert_with(|| to_v2(s));
                }
            }
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            let key = if group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{group}/{v}")
            };
            v3.insert(key, (hash(&bytes), Arc::new(bytes)));
        }
    }
    let v2 = json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": version },
        "paths": {},
        "definitions": all_definitions,
    });
    Documents {
        v3,
        v2_protobuf: Arc::new(crate::openapi_proto::encode(&v2)),
        v2: Arc::new(serde_json::to_vec(&v2).unwrap_or_default()),
    }
}

/// The `/openapi/v3` index.
pub fn v3_index(docs: &Documents) -> Value {
    let paths: Map<String, Value> = docs
        .v3
        .iter()
        .map(|(k, (h, _))| {
            (
                k.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{k}?hash={h}") }),
            )
        })
        .collect();
    json!({ "paths": paths })
}
