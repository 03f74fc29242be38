//! CustomResourceDefinitions: their status, the resources they define, and cleanup on delete
//! (what upstream's apiextensions-apiserver does in-process).
//!
//! A CRD's served versions become [`ResourceInfo`]s with a [`CustomStrategy`] driven by the
//! version's structural schema, printer columns, selectable fields and subresources, so custom
//! resources go through exactly the same handlers as built-in kinds.

use std::sync::Arc;

use serde_json::{Value, json};
use skiff_api::field::{ErrorList, FieldError, Path};
use skiff_api::registry::{
    KindSchema, Operation, PrintContext, Rejection, ResourceInfo, ScalePaths, Strategy,
    Subresource, Verbs,
};
use skiff_api::table::{Cells, Column};

use crate::jsonpath;
use crate::objects::{finalizers, meta_str, metadata_mut};
use crate::schema;
use crate::state::State;

/// The finalizer that holds a CRD until its custom resources are deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Fill in a CRD's server-owned status (accepted names, conditions, stored versions) and
/// its cleanup finalizer.
pub fn prepare(crd: &mut Value) {
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut accepted = names.clone();
    if let Some(kind) = names.get("kind").and_then(Value::as_str) {
        if names.get("singular").is_none() {
            accepted["singular"] = json!(kind.to_lowercase());
        }
        if names.get("listKind").is_none() {
            accepted["listKind"] = json!(format!("{kind}List"));
        }
    }
    crd["spec"]["names"] = accepted.clone();
    let now = crate::time::now_rfc3339();
    let condition = |ty: &str, reason: &str, message: &str| json!({ "type": ty, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message });
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"] == json!(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for v in storage {
        if !stored.contains(&v) {
            stored.push(v);
        }
    }
    let conditions = vec![
        condition("NamesAccepted", "NoConflicts", "no conflicts found"),
        condition(
            "Established",
            "InitialNamesAccepted",
            "the initial names have been accepted",
        ),
    ];
    let existing = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let conditions: Vec<Value> = conditions
        .into_iter()
        .map(|c| {
            existing
                .iter()
                .find(|e| e["type"] == c["type"] && e["status"] == c["status"])
                .cloned()
                .unwrap_or(c)
        })
        .collect();
    crd["status"] =
        json!({ "acceptedNames": accepted, "conditions": conditions, "storedVersions": stored });
    if crd.pointer("/metadata/deletionTimestamp").is_none() {
        let mut fins = finalizers(crd);
        if !fins.iter().any(|f| f == CLEANUP_FINALIZER) {
            fins.push(CLEANUP_FINALIZER.to_owned());
            metadata_mut(crd).insert("finalizers".into(), json!(fins));
        }
    }
}

/// Register (or re-register) the resources a CRD defines.
pub fn register(state: &State, crd: &Value) {
    state
        .registry
        .set_custom(meta_str(crd, "name"), resources_of(crd));
}

/// The served resources of a CRD, one per served version.
pub fn resources_of(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("").to_owned();
    let names = &spec["names"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = text(&names["kind"]);
    let plural = text(&names["plural"]);
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let mut infos = Vec::new();
    for version in spec["versions"].as_array().cloned().unwrap_or_default() {
        if version["served"] != json!(true) {
            continue;
        }
        let vname = text(&version["name"]);
        let mut subresources = Vec::new();
        let mut scale = None;
        if version.pointer("/subresources/status").is_some() {
            subresources.push(Subresource::status(&kind));
        }
        if let Some(s) = version.pointer("/subresources/scale") {
            subresources.push(Subresource::scale());
            scale = Some(ScalePaths {
                spec_replicas: text(&s["specReplicasPath"]),
                status_replicas: text(&s["statusReplicasPath"]),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                selector_is_object: false,
            });
        }
        let columns = version["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let selectable = version["selectableFields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["jsonPath"].as_str())
                    .map(|p| p.trim_start_matches('.').to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let strategy = CustomStrategy {
            group: group.clone(),
            version: vname.clone(),
            kind: kind.clone(),
            schema: version.pointer("/schema/openAPIV3Schema").cloned(),
            columns,
            selectable,
            scale,
        };
        infos.push(ResourceInfo {
            group: group.clone(),
            version: vname,
            kind: kind.clone(),
            list_kind: names["listKind"]
                .as_str()
                .map_or_else(|| format!("{kind}List"), str::to_owned),
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map_or_else(|| kind.to_lowercase(), str::to_owned),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            namespaced,
            subresources,
            verbs: Verbs::ALL,
            strategy: Arc::new(strategy),
        });
    }
    infos
}

/// Delete every custom resource of a deleting CRD, then release its finalizer.
pub fn spawn_cleanup(state: Arc<State>, crd: Value) {
    if !finalizers(&crd).iter().any(|f| f == CLEANUP_FINALIZER) {
        return;
    }
    tokio::spawn(async move {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("");
        let prefix = format!("/registry/{group}/{plural}/");
        let store = state.objects.store.clone();
        if let Ok(page) = store
            .range(skiff_store::RangeRequest {
                prefix,
                ..Default::default()
            })
            .await
        {
            for kv in page.items {
                let _ = store.delete(&kv.key, None).await;
            }
        }
        let Ok(info) = state.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        else {
            return;
        };
        let name = meta_str(&crd, "name").to_owned();
        let mut ctx = state.internal_ctx(info, None, Some(&name));
        let result =
            crate::handlers::write::guaranteed_update(&mut ctx, Operation::Update, false, |old| {
                let mut next = old.clone();
                let fins: Vec<String> = finalizers(old)
                    .into_iter()
                    .filter(|f| f != CLEANUP_FINALIZER)
                    .collect();
                metadata_mut(&mut next).insert("finalizers".into(), json!(fins));
                Ok(next)
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(crd = %name, %err, "releasing the CRD cleanup finalizer failed");
        }
    });
}

/// The behaviour of one served version of a custom resource.
pub struct CustomStrategy {
    group: String,
    version: String,
    kind: String,
    schema: Option<Value>,
    columns: Vec<Value>,
    selectable: Vec<String>,
    scale: Option<ScalePaths>,
}

impl Strategy for CustomStrategy {
    fn admit(
        &self,
        mut obj: Value,
        _old: Option<&Value>,
        _op: Operation,
    ) -> Result<Value, Rejection> {
        let mut errors: ErrorList = Vec::new();
        skiff_kinds::validation::validate_object_meta_value(&obj, true, &mut errors);
        if let Some(schema) = &self.schema {
            let mut pruned = Vec::new();
            schema::prune(schema, &mut obj, "", true, &mut pruned);
            schema::apply_defaults(schema, &mut obj);
            let mut body = obj.clone();
            if let Some(map) = body.as_object_mut() {
                map.remove("metadata");
                map.remove("apiVersion");
                map.remove("kind");
            }
            schema::validate(schema, &body, &Path::default(), &mut errors);
        }
        if errors.is_empty() {
            Ok(obj)
        } else {
            Err(Rejection::Invalid(errors))
        }
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![Column::name()];
        for c in &self.columns {
            let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            columns.push(Column::owned(
                text("name"),
                text("type"),
                text("format"),
                text("description"),
                c.get("priority").and_then(Value::as_i64).unwrap_or(0) as i32,
            ));
        }
        if self.columns.is_empty() {
            columns.push(Column::age());
        }
        columns
    }

    fn row(&self, obj: &Value, ctx: &PrintContext) -> Cells {
        let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
        for c in &self.columns {
            let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
            let ty = c.get("type").and_then(Value::as_str).unwrap_or("string");
            let values = jsonpath::eval(obj, path);
            let cell = match (values.first(), ty) {
                (None, _) => Value::Null,
                (Some(Value::String(s)), "date") => match skiff_api::registry::parse_rfc3339(s) {
                    Some(t) => json!(skiff_api::table::human_duration(ctx.now_unix - t)),
                    None => json!(s),
                },
                (Some(_), "string") if values.len() > 1 => {
                    json!(
                        values
                            .iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
                (Some(v), "string") => {
                    json!(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                }
                (Some(v), _) => (*v).clone(),
            };
            cells.push(cell);
        }
        if self.columns.is_empty() {
            cells.push(json!(skiff_api::registry::age(obj, ctx)));
        }
        cells
    }

    fn field_selector_keys(&self) -> Vec<&'static str> {
        // Selectable fields are known only at run time; the CRD is long-lived, so leaking the
        // few short strings per CRD version keeps the trait simple.
        self.selectable
            .iter()
            .map(|s| &*Box::leak(s.clone().into_boxed_str()))
            .collect()
    }

    fn field_value(&self, obj: &Value, key: &str) -> Option<String> {
        match key {
            "metadata.name" | "metadata.namespace" => {
                let field = key.trim_start_matches("metadata.");
                Some(
                    obj.pointer(&format!("/metadata/{field}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                )
            }
            _ if self.selectable.iter().any(|s| s == key) => {
                let v = jsonpath::eval(obj, &format!(".{key}"))
                    .first()
                    .copied()
                    .cloned();
                Some(
                    v.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .unwrap_or_default(),
                )
            }
            _ => None,
        }
    }

    fn scale_paths(&self) -> ScalePaths {
        self.scale.clone().unwrap_or_default()
    }

    fn schema(&self) -> Option<Arc<KindSchema>> {
        let mut root = self.schema.clone()?;
        let name = format!("{}.{}.{}", self.group, self.version, self.kind);
        root["x-kubernetes-group-version-kind"] =
            json!([{ "group": self.group, "version": self.version, "kind": self.kind }]);
        if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
            props.entry("apiVersion").or_insert(json!({ "type": "string", "description": "APIVersion defines the versioned schema of this representation of an object." }));
            props.entry("kind").or_insert(json!({ "type": "string", "description": "Kind is a string value representing the REST resource this object represents." }));
            props.insert("metadata".into(), json!({ "allOf": [{ "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" }], "description": "Standard object's metadata." }));
        }
        let mut definitions = serde_json::Map::new();
        definitions.insert(name.clone(), root);
        Some(Arc::new(KindSchema {
            root: name,
            definitions,
        }))
    }
}

/// Field errors for a CRD whose names clash with an existing resource.
pub fn name_conflict(crd: &Value) -> Option<FieldError> {
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str)?;
    let group = crd.pointer("/spec/group").and_then(Value::as_str)?;
    let expected = format!("{plural}.{group}");
    (meta_str(crd, "name") != expected).then(|| {
        FieldError::invalid(
            &Path::new("metadata").child("name"),
            meta_str(crd, "name"),
            "must be spec.names.plural+\".\"+spec.group",
        )
    })
}
