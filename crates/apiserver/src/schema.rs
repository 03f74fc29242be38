//! Structural OpenAPI v3 schemas of custom resources: validation, pruning and defaulting
//! (upstream k8s.io/apiextensions-apiserver/pkg/apiserver/schema).
//!
//! Supported: `type`, `properties`, `additionalProperties`, `items`, `required`, `enum`,
//! `minimum`/`maximum` (+ exclusive), `minLength`/`maxLength`, `minItems`/`maxItems`,
//! `minProperties`/`maxProperties`, `pattern`, `nullable`, `default`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-embedded-resource`. Error messages read
//! like upstream's (`spec.replicas in body must be of type integer: "string"`).

use serde_json::{Map, Value};
use skiff_api::field::{ErrorList, FieldError, Path};

use crate::handlers::json_type_name;

fn type_name_for_message(v: &Value) -> &'static str {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        other => json_type_name(other),
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => {
            v.as_i64().is_some()
                || v.as_u64().is_some()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

/// Validate `value` against `schema`, appending errors. `path` is the field path of `value`.
pub fn validate(schema: &Value, value: &Value, path: &Path, errors: &mut ErrorList) {
    let body_path = path.as_str().to_owned();
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        if schema.get("type").is_some() {
            let ty = schema["type"].as_str().unwrap_or("");
            errors.push(FieldError::invalid(
                path,
                skiff_api::field::BadValue("null".into()),
                &format!("{body_path} in body must be of type {ty}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !(value.is_string() || type_matches("integer", value)) {
            errors.push(FieldError::invalid(
                path,
                skiff_api::field::BadValue(render(value)),
                &format!(
                    "{body_path} in body must be of type integer,string: {}",
                    render(value)
                ),
            ));
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str)
        && !type_matches(ty, value)
    {
        errors.push(FieldError::invalid(
            path,
            skiff_api::field::BadValue(render(value)),
            &format!(
                "{body_path} in body must be of type {ty}: \"{}\"",
                type_name_for_message(value)
            ),
        ));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported: Vec<String> = options
            .iter()
            .map(|o| o.as_str().map_or(o.to_string(), str::to_owned))
            .collect();
        let refs: Vec<&str> = supported.iter().map(String::as_str).collect();
        errors.push(FieldError::not_supported(
            path,
            skiff_api::field::BadValue(render(value)),
            &refs,
        ));
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                let exclusive =
                    schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if x < min || (exclusive && x == min) {
                    let op = if exclusive {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errors.push(FieldError::invalid(
                        path,
                        skiff_api::field::BadValue(n.to_string()),
                        &format!("{body_path} in body should be {op} {}", fmt_num(min)),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                let exclusive =
                    schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if x > max || (exclusive && x == max) {
                    let op = if exclusive {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errors.push(FieldError::invalid(
                        path,
                        skiff_api::field::BadValue(n.to_string()),
                        &format!("{body_path} in body should be {op} {}", fmt_num(max)),
                    ));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    &format!("{body_path} in body should be at least {min} chars long"),
                ));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(FieldError::too_long(path, max as usize));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && let Ok(re) = regex::Regex::new(pattern)
                && !re.is_match(s)
            {
                errors.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    &format!("{body_path} in body should match '{pattern}'"),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(FieldError::invalid(
                    path,
                    items.len(),
                    &format!("{body_path} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(FieldError::too_many(path, items.len(), max as usize));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &path.index(i), errors);
                }
            }
        }
        Value::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(FieldError::required(&path.child(r), ""));
                    }
                }
            }
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
                && (map.len() as u64) < min
            {
                errors.push(FieldError::invalid(
                    path,
                    map.len(),
                    &format!("{body_path} in body should have at least {min} properties"),
                ));
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                errors.push(FieldError::too_many(path, map.len(), max as usize));
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    validate(s, v, &path.child(k), errors);
                } else if let Some(s) = additional {
                    validate(s, v, &path.key(k), errors);
                }
            }
        }
        _ => {}
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// Whether a schema keeps fields it does not declare.
fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Remove fields the schema does not declare (upstream pruning), returning their paths.
/// `metadata`, `apiVersion` and `kind` at the root are never pruned.
pub fn prune(schema: &Value, value: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let embedded = schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keep_unknown =
                preserves_unknown(schema) || additional.is_some_and(|a| a.as_bool() == Some(true));
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(&k)) {
                    if let Some(v) = map.get_mut(&k) {
                        prune(s, v, &child_path, false, pruned);
                    }
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    if let Some(v) = map.get_mut(&k) {
                        prune(s, v, &child_path, false, pruned);
                    }
                } else if !keep_unknown {
                    map.remove(&k);
                    pruned.push(child_path);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(s, item, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// Apply `default`s for absent properties, recursively.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if !map.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(v) = map.get_mut(k) {
                        apply_defaults(s, v);
                    }
                }
            }
            if let Some(s) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for v in map.values_mut() {
                    apply_defaults(s, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    apply_defaults(s, item);
                }
            }
        }
        _ => {}
    }
}

/// Unknown fields of `value` per a schema with `$ref`s into `definitions`, as upstream's
/// strict decoding reports them (`spec.foo`, `spec.containers[0].bar`).
pub fn unknown_fields(
    definitions: &Map<String, Value>,
    schema: &Value,
    value: &Value,
    path: &str,
    out: &mut Vec<String>,
) {
    let schema = resolve(definitions, schema);
    if preserves_unknown(schema) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                return;
            }
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    unknown_fields(definitions, s, v, &child, out);
                } else if let Some(s) = additional {
                    unknown_fields(definitions, s, v, &child, out);
                } else {
                    out.push(child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_fields(definitions, s, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Follow `$ref` (directly or through a single-element `allOf`) to its definition.
pub fn resolve<'a>(definitions: &'a Map<String, Value>, schema: &'a Value) -> &'a Value {
    let mut current = schema;
    for _ in 0..8 {
        let reference = current.get("$ref").and_then(Value::as_str).or_else(|| {
            current
                .get("allOf")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 1)
                .and_then(|a| a[0].get("$ref"))
                .and_then(Value::as_str)
        });
        match reference
            .and_then(|r| r.rsplit('/').next())
            .and_then(|name| definitions.get(name))
        {
            Some(next) => current = next,
            None => break,
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": { "type": "string", "minLength": 1 },
                        "replicas": { "type": "integer", "minimum": 0, "maximum": 10, "default": 1 },
                        "mode": { "type": "string", "enum": ["a", "b"] },
                        "port": { "x-kubernetes-int-or-string": true },
                        "extra": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                    }
                }
            }
        })
    }

    #[test]
    fn type_errors_read_like_upstream() {
        let mut errors = Vec::new();
        validate(
            &schema(),
            &json!({ "spec": { "image": "x", "replicas": "three" } }),
            &Path::default(),
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "spec.replicas: Invalid value: \"three\": spec.replicas in body must be of type integer: \"string\""
        );
    }

    #[test]
    fn required_enum_and_ranges() {
        let mut errors = Vec::new();
        validate(
            &schema(),
            &json!({ "spec": { "replicas": 11, "mode": "c", "port": true } }),
            &Path::default(),
            &mut errors,
        );
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"spec.image: Required value".to_owned()),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("should be less than or equal to 10")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("spec.mode: Unsupported value: \"c\"")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("integer,string")),
            "{text:?}"
        );
    }

    #[test]
    fn prunes_unknown_but_keeps_preserved_and_defaults() {
        let mut v = json!({ "apiVersion": "x/v1", "kind": "K", "metadata": { "name": "n" }, "spec": { "image": "i", "bogus": 1, "extra": { "anything": true } }, "top": 1 });
        let mut pruned = Vec::new();
        prune(&schema(), &mut v, "", true, &mut pruned);
        apply_defaults(&schema(), &mut v);
        assert_eq!(pruned, vec!["spec.bogus".to_owned(), "top".to_owned()]);
        assert_eq!(v["spec"]["extra"]["anything"], true);
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["metadata"]["name"], "n");
    }
}
