//! One generic [`Strategy`] over k8s-openapi types: decode, default, prepare, validate,
//! re-encode. Each kind contributes only small functions ([`Hooks`]); the glue exists once.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use k8s_openapi::{NamespaceResourceScope, Resource};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use skiff_api::field::ErrorList;
use skiff_api::registry::{
    KindSchema, Operation, PrintContext, Rejection, ResourceInfo, ScalePaths, Strategy,
    Subresource, Verbs,
};
use skiff_api::table::{Cells, Column};

use crate::validation::{NameRule, validate_object_meta_with};

/// A kind's behaviour as plain functions; defaults do nothing.
pub struct Hooks<K> {
    /// Upstream defaulting plus PrepareForCreate/PrepareForUpdate (`old` is set on updates).
    pub prepare: fn(&mut K, Option<&K>, Operation),
    /// Upstream ValidateX / ValidateXUpdate.
    pub validate: fn(&K, Option<&K>, Operation) -> ErrorList,
    /// Table columns; `None` for NAME and AGE only.
    pub columns: Option<fn() -> Vec<Column>>,
    /// One table row, matching `columns`.
    pub row: Option<fn(&Value, &PrintContext) -> Cells>,
    /// Field selector keys beyond `metadata.name`/`metadata.namespace`, with their JSON
    /// pointers into the object.
    pub fields: &'static [(&'static str, &'static str)],
    /// Where the scale subresource finds replicas and selector (for scalable kinds).
    pub scale: Option<fn() -> ScalePaths>,
    /// Whether metadata.generation counts changes outside `spec` (kinds without spec).
    pub generation_without_spec: bool,
    /// The rule object names follow.
    pub name_rule: NameRule,
}

impl<K> Default for Hooks<K> {
    fn default() -> Self {
        Hooks {
            prepare: |_, _, _| {},
            validate: |_, _, _| Vec::new(),
            columns: None,
            row: None,
            fields: &[],
            scale: None,
            generation_without_spec: false,
            name_rule: NameRule::Subdomain,
        }
    }
}

/// The strategy of a k8s-openapi kind `K`.
pub struct TypedStrategy<K> {
    hooks: Hooks<K>,
    namespaced: bool,
    schema: OnceLock<Arc<KindSchema>>,
    _kind: PhantomData<fn() -> K>,
}

/// The bounds every built-in kind meets.
pub trait Kind:
    Resource + DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static
{
}
impl<K> Kind for K where
    K: Resource + DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static
{
}

impl<K: Kind> TypedStrategy<K> {
    fn decode(&self, obj: Value) -> Result<K, Rejection> {
        serde_json::from_value::<K>(obj).map_err(|e| {
            Rejection::Decode(format!(
                "json: cannot unmarshal into Go value of type {}.{}: {e}",
                if K::GROUP.is_empty() {
                    "core"
                } else {
                    K::GROUP
                },
                K::KIND
            ))
        })
    }
}

impl<K: Kind> Strategy for TypedStrategy<K> {
    fn admit(&self, obj: Value, old: Option<&Value>, op: Operation) -> Result<Value, Rejection> {
        let mut errors = Vec::new();
        validate_object_meta_with(&obj, self.namespaced, self.hooks.name_rule, &mut errors);
        let mut typed = self.decode(obj)?;
        let old_typed = old.and_then(|o| serde_json::from_value::<K>(o.clone()).ok());
        (self.hooks.prepare)(&mut typed, old_typed.as_ref(), op);
        errors.extend((self.hooks.validate)(&typed, old_typed.as_ref(), op));
        if !errors.is_empty() {
            return Err(Rejection::Invalid(errors));
        }
        serde_json::to_value(&typed).map_err(|e| Rejection::Decode(e.to_string()))
    }

    fn generation_changed(&self, old: &Value, new: &Value) -> bool {
        if self.hooks.generation_without_spec
            || old.get("spec").is_none() && new.get("spec").is_none()
        {
            let strip = |v: &Value| -> Value {
                let mut v = v.clone();
                if let Value::Object(map) = &mut v {
                    for key in ["metadata", "status", "apiVersion", "kind"] {
                        map.remove(key);
                    }
                }
                v
            };
            return strip(old) != strip(new);
        }
        old.get("spec") != new.get("spec")
    }

    fn columns(&self) -> Vec<Column> {
        match self.hooks.columns {
            Some(columns) => columns(),
            None => vec![Column::name(), Column::age()],
        }
    }

    fn row(&self, obj: &Value, ctx: &PrintContext) -> Cells {
        match self.hooks.row {
            Some(row) => row(obj, ctx),
            None => vec![
                obj.pointer("/metadata/name").cloned().unwrap_or_default(),
                Value::String(skiff_api::registry::age(obj, ctx)),
            ],
        }
    }

    fn field_selector_keys(&self) -> Vec<&'static str> {
        self.hooks.fields.iter().map(|(k, _)| *k).collect()
    }

    fn field_value(&self, obj: &Value, key: &str) -> Option<String> {
        match key {
            "metadata.name" => Some(
                obj.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ),
            "metadata.namespace" => Some(
                obj.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ),
            _ => {
                let (_, pointer) = self.hooks.fields.iter().find(|(k, _)| *k == key)?;
                // Unset fields select as their zero value, like upstream's field sets.
                Some(match obj.pointer(pointer) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(other) => other.to_string(),
                })
            }
        }
    }

    fn scale_paths(&self) -> ScalePaths {
        self.hooks.scale.map(|f| f()).unwrap_or_default()
    }

    fn schema(&self) -> Option<Arc<KindSchema>> {
        Some(
            self.schema
                .get_or_init(|| Arc::new(build_schema::<K>()))
                .clone(),
        )
    }
}

/// The OpenAPI v3 definitions of `K` and everything it refers to, decorated with the list
/// and patch extensions upstream publishes (`x-kubernetes-list-type`, patch merge keys...).
fn build_schema<K: Kind>() -> KindSchema {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let _ = generator.subschema_for::<K>();
    let mut definitions: Map<String, Value> = generator.take_definitions(true);
    for (name, definition) in definitions.iter_mut() {
        decorate(name, definition);
    }
    KindSchema {
        root: K::schema_name().into_owned(),
        definitions,
    }
}

fn decorate(name: &str, definition: &mut Value) {
    if skiff_api::listmeta::struct_is_atomic(name)
        && let Some(obj) = definition.as_object_mut()
    {
        obj.insert("x-kubernetes-map-type".into(), Value::from("atomic"));
    }
    let Some(meta) = skiff_api::listmeta::definition(name) else {
        return;
    };
    let Some(properties) = definition
        .get_mut("properties")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (field, schema) in properties.iter_mut() {
        let Some(field_meta) = meta.field(field) else {
            continue;
        };
        if let Some(obj) = schema.as_object_mut() {
            for (k, v) in field_meta.openapi_extensions() {
                obj.insert(k, v);
            }
        }
    }
}

/// Names and discovery data of one kind.
pub struct Names {
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: Vec<Subresource>,
}

/// The registry entry of kind `K`.
pub fn entry<K: Kind>(names: Names, hooks: Hooks<K>) -> ResourceInfo
where
    K::Scope: 'static,
{
    let namespaced = TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>();
    ResourceInfo {
        group: K::GROUP.to_owned(),
        version: K::VERSION.to_owned(),
        kind: K::KIND.to_owned(),
        list_kind: format!("{}List", K::KIND),
        plural: K::URL_PATH_SEGMENT.to_owned(),
        singular: K::KIND.to_lowercase(),
        short_names: names.short_names.iter().map(|s| (*s).to_owned()).collect(),
        categories: names.categories.iter().map(|s| (*s).to_owned()).collect(),
        namespaced,
        subresources: names.subresources,
        verbs: Verbs::ALL,
        strategy: Arc::new(TypedStrategy::<K> {
            hooks,
            namespaced,
            schema: OnceLock::new(),
            _kind: PhantomData,
        }),
    }
}

/// Names with nothing but the given short names.
pub fn short(short_names: &'static [&'static str]) -> Names {
    Names {
        short_names,
        categories: &[],
        subresources: Vec::new(),
    }
}
