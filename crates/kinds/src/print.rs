//! Helpers for table cells, shared by the kinds' printers (upstream:
//! pkg/printers/internalversion/printers.go).

use serde_json::Value;
use skiff_api::registry::{PrintContext, age, parse_rfc3339};
use skiff_api::table::human_duration;

/// The string at a JSON pointer, or "".
pub fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a JSON pointer, or 0.
pub fn n(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The array at a JSON pointer, or empty.
pub fn list<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Number of entries of the object or array at a pointer.
pub fn count(obj: &Value, pointer: &str) -> usize {
    match obj.pointer(pointer) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

/// `value`, or `<none>` when empty.
pub fn or_none(value: &str) -> Value {
    Value::String(if value.is_empty() {
        "<none>".into()
    } else {
        value.into()
    })
}

/// A string cell.
pub fn text(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

/// The name cell.
pub fn name(obj: &Value) -> Value {
    text(s(obj, "/metadata/name"))
}

/// The age cell.
pub fn age_cell(obj: &Value, ctx: &PrintContext) -> Value {
    text(age(obj, ctx))
}

/// "CREATED AT" cells: the creation timestamp as RFC 3339.
pub fn created_at(obj: &Value) -> Value {
    text(s(obj, "/metadata/creationTimestamp"))
}

/// Time since an RFC 3339 timestamp, like kubectl's ages; `<unknown>` if unparseable.
pub fn since(timestamp: &str, ctx: &PrintContext) -> String {
    match parse_rfc3339(timestamp) {
        Some(t) => human_duration(ctx.now_unix - t),
        None => "<unknown>".into(),
    }
}

/// `k=v,k2=v2` of a string map at a pointer, `<none>` when empty.
pub fn map_pairs(obj: &Value, pointer: &str) -> Value {
    let pairs: Vec<String> = obj
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    or_none(&pairs.join(","))
}

/// A `metav1.LabelSelector` printed as kubectl does (`app=web,tier in (a,b)`).
pub fn label_selector(selector: Option<&Value>) -> Value {
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return text("<none>");
    };
    let mut parts: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = expr["key"].as_str().unwrap_or("");
        let values: Vec<&str> = expr["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match expr["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    or_none(&parts.join(","))
}

/// Container names and images of a pod template at a pointer (`/spec/template/spec`).
pub fn containers_and_images(obj: &Value, pod_spec: &str) -> (Value, Value) {
    let containers = list(obj, &format!("{pod_spec}/containers"));
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c["image"].as_str().unwrap_or(""))
        .collect();
    (text(names.join(",")), text(images.join(",")))
}
