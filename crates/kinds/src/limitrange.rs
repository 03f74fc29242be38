//! LimitRange admission (upstream plugin/pkg/admission/limitranger) as pure functions: the
//! defaults a namespace's LimitRanges give containers that state no requests or limits (with
//! the `kubernetes.io/limit-ranger` annotation recording what was set), and the min/max/
//! ratio checks for containers, whole pods and claims.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use skiff_api::quantity::Quantity;

/// The annotation naming what LimitRanger defaulted.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn quantities(v: Option<&Value>) -> BTreeMap<String, (Quantity, String)> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let s = v
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| v.as_f64().map(|f| f.to_string()))?;
                    Quantity::parse(&s).ok().map(|q| (k.clone(), (q, s)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One `spec.limits[]` item with upstream's LimitRange defaulting applied (default limit
/// from max, default request from default, then from min).
#[derive(Debug, Clone, Default)]
pub struct Item {
    /// Container, Pod or PersistentVolumeClaim.
    pub kind: String,
    /// Maximum per item.
    pub max: BTreeMap<String, (Quantity, String)>,
    /// Minimum per item.
    pub min: BTreeMap<String, (Quantity, String)>,
    /// Default limits.
    pub default: BTreeMap<String, (Quantity, String)>,
    /// Default requests.
    pub default_request: BTreeMap<String, (Quantity, String)>,
    /// Largest limit/request ratio.
    pub max_ratio: BTreeMap<String, (Quantity, String)>,
}

/// The items of a LimitRange object.
pub fn items(limit_range: &Value) -> Vec<Item> {
    let limits = limit_range
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    limits
        .iter()
        .map(|l| {
            let mut item = Item {
                kind: l
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                max: quantities(l.get("max")),
                min: quantities(l.get("min")),
                default: quantities(l.get("default")),
                default_request: quantities(l.get("defaultRequest")),
                max_ratio: quantities(l.get("maxLimitRequestRatio")),
            };
            if item.kind == "Container" {
                for (k, v) in item.max.clone() {
                    item.default.entry(k).or_insert(v);
                }
                for (k, v) in item.default.clone() {
                    item.default_request.entry(k).or_insert(v);
                }
                for (k, v) in item.min.clone() {
                    item.default_request.entry(k).or_insert(v);
                }
            }
            item
        })
        .collect()
}

fn set_defaults(
    resources: &mut Map<String, Value>,
    field: &str,
    defaults: &BTreeMap<String, (Quantity, String)>,
    what: &str,
    who: &str,
    notes: &mut Vec<String>,
) {
    let target = resources
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(target) = target.as_object_mut() else {
        return;
    };
    let mut names = Vec::new();
    for (k, (_, text)) in defaults {
        if !target.contains_key(k) {
            target.insert(k.clone(), json!(text));
            names.push(k.clone());
        }
    }
    if !names.is_empty() {
        notes.push(format!("{} {what} for {who}", names.join(", ")));
    }
}

/// Apply Container defaults to a pod; returns whether anything was set.
pub fn default_pod(items: &[Item], pod: &mut Value) -> bool {
    let mut notes: Vec<String> = Vec::new();
    for item in items.iter().filter(|i| i.kind == "Container") {
        for list in ["containers", "initContainers"] {
            let Some(containers) = pod
                .pointer_mut(&format!("/spec/{list}"))
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for c in containers {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let resources = c
                    .as_object_mut()
                    .map(|m| m.entry("resources").or_insert_with(|| json!({})));
                let Some(resources) = resources.and_then(Value::as_object_mut) else {
                    continue;
                };
                let who = format!(
                    "{} {name}",
                    if list == "containers" {
                        "container"
                    } else {
                        "init container"
                    }
                );
                set_defaults(
                    resources,
                    "limits",
                    &item.default,
                    "limit",
                    &who,
                    &mut notes,
                );
                // Requests default to limits the container states, then to the range's
                // default request (upstream `defaultContainerResourceRequirements`).
                let stated_limits: BTreeMap<String, (Quantity, String)> = resources
                    .get("limits")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| {
                                v.as_str().and_then(|s| {
                                    Quantity::parse(s)
                                        .ok()
                                        .map(|q| (k.clone(), (q, s.to_owned())))
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut request_defaults = item.default_request.clone();
                for (k, v) in stated_limits {
                    if !item.default.contains_key(&k) {
                        request_defaults.entry(k).or_insert(v);
                    }
                }
                set_defaults(
                    resources,
                    "requests",
                    &request_defaults,
                    "request",
                    &who,
                    &mut notes,
                );
                for field in ["limits", "requests"] {
                    if resources
                        .get(field)
                        .and_then(Value::as_object)
                        .is_some_and(Map::is_empty)
                    {
                        resources.remove(field);
                    }
                }
            }
        }
    }
    if notes.is_empty() {
        return false;
    }
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                ANNOTATION.into(),
                json!(format!("LimitRanger plugin set: {}", notes.join("; "))),
            );
        }
    }
    true
}

fn fmt(q: Quantity, like: &str) -> String {
    crate::quota::format(q, Some(like))
}

fn check(
    kind: &str,
    item: &Item,
    requests: &BTreeMap<String, Quantity>,
    limits: &BTreeMap<String, Quantity>,
    errors: &mut Vec<String>,
) {
    for (k, (min, text)) in &item.min {
        match requests.get(k) {
            Some(r) if r < min => errors.push(format!(
                "minimum {k} usage per {kind} is {text}, but request is {}",
                fmt(*r, text)
            )),
            None if kind != "PersistentVolumeClaim" => errors.push(format!(
                "minimum {k} usage per {kind} is {text}.  No request is specified"
            )),
            _ => {}
        }
        if let Some(l) = limits.get(k)
            && l < min
        {
            errors.push(format!(
                "minimum {k} usage per {kind} is {text}, but limit is {}",
                fmt(*l, text)
            ));
        }
    }
    for (k, (max, text)) in &item.max {
        match limits.get(k) {
            Some(l) if l > max => errors.push(format!(
                "maximum {k} usage per {kind} is {text}, but limit is {}",
                fmt(*l, text)
            )),
            None if kind != "PersistentVolumeClaim" => errors.push(format!(
                "maximum {k} usage per {kind} is {text}.  No limit is specified"
            )),
            _ => {}
        }
        if kind == "PersistentVolumeClaim"
            && let Some(r) = requests.get(k)
            && r > max
        {
            errors.push(format!(
                "maximum {k} usage per {kind} is {text}, but request is {}",
                fmt(*r, text)
            ));
        }
    }
    for (k, (ratio, text)) in &item.max_ratio {
        let (Some(l), Some(r)) = (limits.get(k), requests.get(k)) else {
            if limits.contains_key(k) {
                errors.push(format!("{k} max limit to request ratio per {kind} is {text}, but no request is specified or request is 0"));
            }
            continue;
        };
        if r.is_zero() {
            errors.push(format!("{k} max limit to request ratio per {kind} is {text}, but no request is specified or request is 0"));
            continue;
        }
        let actual = l.0 as f64 / r.0 as f64;
        let allowed = ratio.0 as f64 / 1e9;
        if actual > allowed {
            errors.push(format!("{k} max limit to request ratio per {kind} is {text}, but provided ratio is {actual:.6}"));
        }
    }
}

fn container_resources(c: &Value, field: &str) -> BTreeMap<String, Quantity> {
    quantities(c.pointer(&format!("/resources/{field}")))
        .into_iter()
        .map(|(k, (q, _))| (k, q))
        .collect()
}

/// Check a pod against the Container and Pod items; returns upstream's messages.
pub fn validate_pod(items: &[Item], pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let containers: Vec<Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| {
            pod.pointer(&format!("/spec/{l}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    for item in items {
        match item.kind.as_str() {
            "Container" => {
                for c in &containers {
                    check(
                        "Container",
                        item,
                        &container_resources(c, "requests"),
                        &container_resources(c, "limits"),
                        &mut errors,
                    );
                }
            }
            "Pod" => {
                let (requests, limits) = crate::quota::pod_resources(pod);
                check("Pod", item, &requests, &limits, &mut errors);
            }
            _ => {}
        }
    }
    errors
}

/// Check a claim against the PersistentVolumeClaim items.
pub fn validate_claim(items: &[Item], claim: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let requests: BTreeMap<String, Quantity> =
        quantities(claim.pointer("/spec/resources/requests"))
            .into_iter()
            .map(|(k, (q, _))| (k, q))
            .collect();
    let limits: BTreeMap<String, Quantity> = quantities(claim.pointer("/spec/resources/limits"))
        .into_iter()
        .map(|(k, (q, _))| (k, q))
        .collect();
    for item in items.iter().filter(|i| i.kind == "PersistentVolumeClaim") {
        check(
            "PersistentVolumeClaim",
            item,
            &requests,
            &limits,
            &mut errors,
        );
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Vec<Item> {
        items(&json!({ "spec": { "limits": [
            { "type": "Container", "default": { "cpu": "500m" }, "defaultRequest": { "memory": "64Mi" }, "max": { "cpu": "1", "memory": "1Gi" } },
            { "type": "PersistentVolumeClaim", "max": { "storage": "5Gi" } }
        ] } }))
    }

    #[test]
    fn containers_get_defaults_and_an_annotation() {
        let mut pod =
            json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "web" }] } });
        assert!(default_pod(&range(), &mut pod));
        let r = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"]["cpu"], "500m");
        // The default limit for memory comes from max; the request from defaultRequest.
        assert_eq!(r["limits"]["memory"], "1Gi");
        assert_eq!(r["requests"]["memory"], "64Mi");
        assert_eq!(r["requests"]["cpu"], "500m");
        assert!(
            pod["metadata"]["annotations"][ANNOTATION]
                .as_str()
                .unwrap()
                .starts_with("LimitRanger plugin set: ")
        );
        assert!(validate_pod(&range(), &pod).is_empty());
    }

    #[test]
    fn limits_over_max_and_claims_over_max_are_reported() {
        let pod = json!({ "spec": { "containers": [{ "name": "web", "resources": { "limits": { "cpu": "2", "memory": "128Mi" } } }] } });
        let errors = validate_pod(&range(), &pod);
        assert_eq!(
            errors,
            ["maximum cpu usage per Container is 1, but limit is 2"]
        );
        let claim = json!({ "spec": { "resources": { "requests": { "storage": "10Gi" } } } });
        assert_eq!(validate_claim(&range(), &claim).len(), 1);
    }
}
