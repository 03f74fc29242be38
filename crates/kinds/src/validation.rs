//! Validation shared by the kinds: object metadata and upstream's name rules, with upstream's
//! field paths and messages (k8s.io/apimachinery/pkg/api/validation/objectmeta.go,
//! k8s.io/apimachinery/pkg/util/validation).

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_api::field::{BadValue, ErrorList, FieldError, Path};
use skiff_api::selector::{validate_dns1123_subdomain, validate_label_key, validate_label_value};

/// Upstream caps the total size of annotations at 256 KiB.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Which rule a kind's object names follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Dns1035,
    /// Any path segment: not `.`/`..`, no `/` or `%` (RBAC kinds).
    PathSegment,
}

const LABEL_REGEX: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1035_REGEX: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

/// Upstream's `IsDNS1123Label`.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    let b = value.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !b.is_empty()
        && edge(b[0])
        && edge(b[b.len() - 1])
        && b.iter().all(|&c| edge(c) || c == b'-');
    if !ok {
        errs.push(format!("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{LABEL_REGEX}')"));
    }
    errs
}

/// Upstream's `IsDNS1035Label`.
pub fn dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    let b = value.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !ok {
        errs.push(format!("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_REGEX}')"));
    }
    errs
}

fn path_segment(value: &str) -> Vec<String> {
    if value == "." || value == ".." {
        return vec![format!("may not be '{value}'")];
    }
    let mut errs = Vec::new();
    for bad in ["/", "%"] {
        if value.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

impl NameRule {
    /// Problems with `name` under this rule.
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => validate_dns1123_subdomain(name),
            NameRule::Label => dns1123_label(name),
            NameRule::Dns1035 => dns1035_label(name),
            NameRule::PathSegment => path_segment(name),
        }
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Validate a labels map at `path`.
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &Path, errors: &mut ErrorList) {
    for (key, value) in labels {
        let key_errs = validate_label_key(key);
        if !key_errs.is_empty() {
            errors.push(FieldError::invalid(
                path,
                key.as_str(),
                &key_errs.join("; "),
            ));
        }
        let value_errs = validate_label_value(value);
        if !value_errs.is_empty() {
            errors.push(FieldError::invalid(
                path,
                value.as_str(),
                &value_errs.join("; "),
            ));
        }
    }
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Metadata checks on a JSON object (`ValidateObjectMeta`), with subdomain names.
pub fn validate_object_meta_value(obj: &Value, namespaced: bool, errors: &mut ErrorList) {
    validate_object_meta_with(obj, namespaced, NameRule::Subdomain, errors);
}

/// Metadata checks with a kind's own name rule.
pub fn validate_object_meta_with(
    obj: &Value,
    namespaced: bool,
    rule: NameRule,
    errors: &mut ErrorList,
) {
    let meta = Path::new("metadata");
    let m = obj.get("metadata");
    let get = |field: &str| m.and_then(|m| m.get(field));
    let name = get("name").and_then(Value::as_str).unwrap_or("");
    let generate_name = get("generateName").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        if generate_name.is_empty() {
            errors.push(FieldError::required(
                &meta.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        let problems = rule.check(name);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(
                &meta.child("name"),
                name,
                &problems.join(", "),
            ));
        }
    }
    if !generate_name.is_empty() && name.is_empty() {
        // The generated name adds 5 characters; the prefix must itself be valid once trimmed
        // of a trailing dash, as upstream's `maskTrailingDash` does.
        let prefix = generate_name
            .strip_suffix('-')
            .map_or(generate_name.to_owned(), |p| format!("{p}a"));
        let problems = rule.check(&prefix);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(
                &meta.child("generateName"),
                generate_name,
                &problems.join(", "),
            ));
        }
    }
    let namespace = get("namespace").and_then(Value::as_str).unwrap_or("");
    if namespaced {
        if namespace.is_empty() {
            errors.push(FieldError::required(&meta.child("namespace"), ""));
        } else {
            let problems = dns1123_label(namespace);
            if !problems.is_empty() {
                errors.push(FieldError::invalid(
                    &meta.child("namespace"),
                    namespace,
                    &problems.join(", "),
                ));
            }
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden(
            &meta.child("namespace"),
            "not allowed on this type",
        ));
    }
    validate_labels(&string_map(get("labels")), &meta.child("labels"), errors);
    let annotations = string_map(get("annotations"));
    let mut total = 0;
    for (key, value) in &annotations {
        let problems = validate_label_key(&key.to_lowercase());
        if !problems.is_empty() {
            errors.push(FieldError::invalid(
                &meta.child("annotations"),
                key.as_str(),
                &problems.join("; "),
            ));
        }
        total += key.len() + value.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errors.push(FieldError::too_long(
            &meta.child("annotations"),
            MAX_ANNOTATIONS_BYTES,
        ));
    }
    if let Some(finalizers) = get("finalizers").and_then(Value::as_array) {
        for (i, f) in finalizers.iter().enumerate() {
            let f = f.as_str().unwrap_or("");
            let problems = validate_label_key(f);
            if !problems.is_empty() {
                errors.push(FieldError::invalid(
                    &meta.child("finalizers").index(i),
                    f,
                    &problems.join("; "),
                ));
            }
        }
    }
    if let Some(owners) = get("ownerReferences").and_then(Value::as_array) {
        for (i, o) in owners.iter().enumerate() {
            let path = meta.child("ownerReferences").index(i);
            for field in ["apiVersion", "kind", "name", "uid"] {
                if o.get(field)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    errors.push(FieldError::invalid(
                        &path.child(field),
                        "",
                        &format!("{field} must not be empty"),
                    ));
                }
            }
        }
    }
}

/// A name-like field (container name, port name...) that must be a DNS label.
pub fn require_dns_label(value: &str, path: &Path, errors: &mut ErrorList) {
    if value.is_empty() {
        errors.push(FieldError::required(path, ""));
        return;
    }
    let problems = dns1123_label(value);
    if !problems.is_empty() {
        errors.push(FieldError::invalid(path, value, &problems.join(", ")));
    }
}

/// A field that may not change on update: upstream's `ValidateImmutableField`.
pub fn immutable<T: PartialEq + serde::Serialize>(
    new: &T,
    old: &T,
    path: &Path,
    errors: &mut ErrorList,
) {
    if new != old {
        let shown = serde_json::to_value(new).unwrap_or_default();
        let shown = match &shown {
            Value::String(s) => quoted(s),
            Value::Object(_) | Value::Array(_) => format!("{shown}"),
            other => other.to_string(),
        };
        errors.push(FieldError::invalid(
            path,
            BadValue(shown),
            "field is immutable",
        ));
    }
}

/// A count that may not be negative (`ValidateNonnegativeField`).
pub fn non_negative(value: Option<i64>, path: &Path, errors: &mut ErrorList) {
    if let Some(v) = value
        && v < 0
    {
        errors.push(FieldError::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(obj: Value, namespaced: bool) -> Vec<String> {
        let mut errors = Vec::new();
        validate_object_meta_value(&obj, namespaced, &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn names_follow_upstream_rules_and_messages() {
        let errs = errors_of(
            json!({"metadata": {"name": "Bad_Name", "namespace": "default"}}),
            true,
        );
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(
                "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
            ),
            "{errs:?}"
        );
        let errs = errors_of(json!({"metadata": {"namespace": "default"}}), true);
        assert_eq!(
            errs,
            ["metadata.name: Required value: name or generateName is required"]
        );
        assert!(
            errors_of(
                json!({"metadata": {"generateName": "web-", "namespace": "d"}}),
                true
            )
            .is_empty()
        );
        let errs = errors_of(json!({"metadata": {"name": "n", "namespace": "x"}}), false);
        assert_eq!(
            errs,
            ["metadata.namespace: Forbidden: not allowed on this type"]
        );
        assert!(NameRule::Dns1035.check("1abc").len() == 1);
        assert!(NameRule::Label.check("a.b").len() == 1);
        assert!(NameRule::PathSegment.check("system:admin").is_empty());
    }

    #[test]
    fn labels_and_annotations_are_checked() {
        let errs = errors_of(
            json!({"metadata": {"name": "ok", "namespace": "d", "labels": {"bad key": "v", "k": "bad value!"}}}),
            true,
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("metadata.labels: Invalid value: \"bad key\""))
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("metadata.labels: Invalid value: \"bad value!\""))
        );
    }
}
