//! ResourceQuota evaluation (upstream pkg/quota/v1/evaluator/core), shared by the API
//! server's quota admission and the controller manager's usage recalculation: what one object
//! uses (`pods`, `count/deployments.apps`, `requests.cpu`, `services.nodeports`,
//! `<class>.storageclass.storage.k8s.io/requests.storage`, …), whether it falls under a
//! quota's scopes, and the messages upstream uses when a create is refused.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_api::quantity::Quantity;

/// Usage by resource name.
pub type Usage = BTreeMap<String, Quantity>;

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn one() -> Quantity {
    Quantity::from_units(1)
}

/// The group-resource name used in `count/<resource>` keys.
pub fn count_key(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Whether a pod still counts against quota (upstream `QuotaV1Pod`): finished pods do not.
pub fn pod_counts(pod: &Value) -> bool {
    !matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

fn parse(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => n
            .as_f64()
            .and_then(|f| Quantity::parse(&f.to_string()).ok()),
        _ => None,
    }
}

/// The effective requests and limits of a pod (upstream `PodRequests`/`PodLimits`): the
/// larger of the containers' sum (with restartable init containers) and each init container,
/// plus the pod overhead.
pub fn pod_resources(pod: &Value) -> (Usage, Usage) {
    let mut out = (Usage::new(), Usage::new());
    for (field, total) in [("requests", &mut out.0), ("limits", &mut out.1)] {
        let mut sum = Usage::new();
        let containers = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let inits = pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let add = |acc: &mut Usage, c: &Value| {
            if let Some(m) = c
                .pointer(&format!("/resources/{field}"))
                .and_then(Value::as_object)
            {
                for (k, v) in m {
                    if let Some(q) = parse(v) {
                        *acc.entry(k.clone()).or_default() += q;
                    }
                }
            }
        };
        for c in &containers {
            add(&mut sum, c);
        }
        let (sidecars, plain): (Vec<&Value>, Vec<&Value>) = inits
            .iter()
            .partition(|c| str_at(c, "/restartPolicy") == "Always");
        for c in &sidecars {
            add(&mut sum, c);
        }
        let mut result = sum;
        for c in plain {
            let mut one_init = Usage::new();
            add(&mut one_init, c);
            for (k, v) in one_init {
                let e = result.entry(k).or_default();
                if v > *e {
                    *e = v;
                }
            }
        }
        if let Some(m) = pod.pointer("/spec/overhead").and_then(Value::as_object) {
            for (k, v) in m {
                if let Some(q) = parse(v) {
                    *result.entry(k.clone()).or_default() += q;
                }
            }
        }
        *total = result;
    }
    out
}

/// What one object of `group`/`plural` uses.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    u.insert(count_key(group, plural), one());
    if !group.is_empty() {
        return u;
    }
    match plural {
        "pods" => {
            if !pod_counts(obj) {
                return Usage::new();
            }
            u.insert("pods".into(), one());
            let (requests, limits) = pod_resources(obj);
            for (k, v) in requests {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    u.insert(k.clone(), v);
                }
                u.insert(format!("requests.{k}"), v);
            }
            for (k, v) in limits {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    u.insert(format!("limits.{k}"), v);
                }
            }
        }
        "services" => {
            u.insert("services".into(), one());
            let ty = str_at(obj, "/spec/type");
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), one());
            }
            if ty == "NodePort" || ty == "LoadBalancer" {
                let ports = obj
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                u.insert(
                    "services.nodeports".into(),
                    Quantity::from_units(ports as i64),
                );
            }
        }
        "persistentvolumeclaims" => {
            u.insert("persistentvolumeclaims".into(), one());
            let storage = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(parse)
                .unwrap_or_default();
            u.insert("requests.storage".into(), storage);
            let class = str_at(obj, "/spec/storageClassName");
            if !class.is_empty() {
                u.insert(
                    format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                    one(),
                );
                u.insert(
                    format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                    storage,
                );
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            u.insert(plural.into(), one());
        }
        _ => {}
    }
    u
}

fn qos_best_effort(pod: &Value) -> bool {
    let (requests, limits) = pod_resources(pod);
    let compute = |u: &Usage| {
        u.iter()
            .any(|(k, v)| (k == "cpu" || k == "memory") && !v.is_zero())
    };
    !compute(&requests) && !compute(&limits)
}

fn scope_matches(scope: &str, pod: &Value) -> bool {
    match scope {
        "Terminating" => pod
            .pointer("/spec/activeDeadlineSeconds")
            .is_some_and(|v| !v.is_null()),
        "NotTerminating" => pod
            .pointer("/spec/activeDeadlineSeconds")
            .is_none_or(Value::is_null),
        "BestEffort" => qos_best_effort(pod),
        "NotBestEffort" => !qos_best_effort(pod),
        _ => false,
    }
}

/// Whether an object falls under a quota's `spec.scopes` and `spec.scopeSelector` (scopes
/// select pods only; an unscoped quota covers everything).
pub fn in_scope(quota_spec: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let scopes: Vec<&str> = quota_spec
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let selector: Vec<Value> = quota_spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if scopes.is_empty() && selector.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    if !scopes.iter().all(|s| scope_matches(s, obj)) {
        return false;
    }
    selector.iter().all(|req| {
        let scope = str_at(req, "/scopeName");
        let op = str_at(req, "/operator");
        let values: Vec<&str> = req
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if scope == "PriorityClass" {
            let class = obj
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str);
            match op {
                "In" => class.is_some_and(|c| values.contains(&c)),
                "NotIn" => class.is_none_or(|c| !values.contains(&c)),
                "Exists" => class.is_some_and(|c| !c.is_empty()),
                "DoesNotExist" => class.is_none_or(str::is_empty),
                _ => false,
            }
        } else {
            let m = scope_matches(scope, obj);
            match op {
                "Exists" | "In" => m,
                "DoesNotExist" | "NotIn" => !m,
                _ => false,
            }
        }
    })
}

/// The hard limits of a quota.
pub fn hard(quota: &Value) -> Usage {
    quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| parse(v).map(|q| (k.clone(), q)))
                .collect()
        })
        .unwrap_or_default()
}

/// The recorded usage of a quota.
pub fn used(quota: &Value) -> Option<Usage> {
    quota
        .pointer("/status/used")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| parse(v).map(|q| (k.clone(), q)))
                .collect()
        })
}

/// The compute resources a quota tracks that every container must state (upstream
/// `enforcePodResources`): `requests.cpu` requires every container to have a cpu request,
/// and so on. Returns `(resource, missing containers)` pairs.
pub fn missing_compute(hard: &Usage, pod: &Value) -> Vec<(String, Vec<String>)> {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (key, field, resource) in [
        ("requests.cpu", "requests", "cpu"),
        ("cpu", "requests", "cpu"),
        ("requests.memory", "requests", "memory"),
        ("memory", "requests", "memory"),
        ("limits.cpu", "limits", "cpu"),
        ("limits.memory", "limits", "memory"),
    ] {
        if !hard.contains_key(key) {
            continue;
        }
        let missing: Vec<String> = containers
            .iter()
            .filter(|c| {
                c.pointer(&format!("/resources/{field}/{resource}"))
                    .is_none()
            })
            .map(|c| str_at(c, "/name").to_owned())
            .collect();
        if !missing.is_empty()
            && !out
                .iter()
                .any(|(k, _): &(String, _)| k == &format!("{field}.{resource}"))
        {
            out.push((format!("{field}.{resource}"), missing));
        }
    }
    out
}

/// A quantity printed the way its limit was written: binary suffixes for memory-like values.
pub fn format(q: Quantity, like: Option<&str>) -> String {
    let binary = like.is_some_and(|s| s.ends_with('i'));
    if binary && q.0 % 1_000_000_000 == 0 {
        let v = q.0 / 1_000_000_000;
        for (suffix, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let unit = 1i128 << shift;
            if v != 0 && v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
    }
    q.to_string()
}

/// `a=1,b=2`, sorted by name.
pub fn list(u: &Usage, like: &BTreeMap<String, String>) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={}", format(*v, like.get(k).map(String::as_str))))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_use_the_larger_of_containers_and_init_containers() {
        let pod = json!({ "spec": {
            "containers": [
                { "name": "a", "resources": { "requests": { "cpu": "100m", "memory": "64Mi" }, "limits": { "cpu": "200m" } } },
                { "name": "b", "resources": { "requests": { "cpu": "150m" } } }
            ],
            "initContainers": [ { "name": "init", "resources": { "requests": { "cpu": "1" } } } ],
            "overhead": { "cpu": "10m" }
        } });
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], Quantity::from_units(1));
        assert_eq!(u["count/pods"], Quantity::from_units(1));
        assert_eq!(u["requests.cpu"].milli_value(), 1010);
        assert_eq!(u["cpu"].milli_value(), 1010);
        assert_eq!(u["requests.memory"].value(), 64 << 20);
        assert_eq!(u["limits.cpu"].milli_value(), 210);
        assert!(usage("", "pods", &json!({ "status": { "phase": "Succeeded" } })).is_empty());
    }

    #[test]
    fn services_claims_and_counts() {
        let svc =
            json!({ "spec": { "type": "NodePort", "ports": [{ "port": 80 }, { "port": 443 }] } });
        let u = usage("", "services", &svc);
        assert_eq!(u["services.nodeports"], Quantity::from_units(2));
        assert!(!u.contains_key("services.loadbalancers"));
        let pvc = json!({ "spec": { "storageClassName": "fast", "resources": { "requests": { "storage": "1Gi" } } } });
        let u = usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"].value(),
            1 << 30
        );
        assert_eq!(
            usage("apps", "deployments", &json!({}))["count/deployments.apps"],
            Quantity::from_units(1)
        );
    }

    #[test]
    fn scopes_select_pods_only() {
        let best_effort = json!({ "spec": { "containers": [{ "name": "a" }] } });
        let burstable = json!({ "spec": { "containers": [{ "name": "a", "resources": { "requests": { "cpu": "1" } } }], "activeDeadlineSeconds": 5 } });
        let be = json!({ "scopes": ["BestEffort"] });
        assert!(in_scope(&be, "", "pods", &best_effort));
        assert!(!in_scope(&be, "", "pods", &burstable));
        assert!(!in_scope(&be, "", "configmaps", &json!({})));
        assert!(in_scope(
            &json!({ "scopes": ["Terminating", "NotBestEffort"] }),
            "",
            "pods",
            &burstable
        ));
        let prio = json!({ "scopeSelector": { "matchExpressions": [{ "scopeName": "PriorityClass", "operator": "In", "values": ["high"] }] } });
        assert!(!in_scope(&prio, "", "pods", &best_effort));
        assert!(in_scope(
            &prio,
            "",
            "pods",
            &json!({ "spec": { "priorityClassName": "high" } })
        ));
        assert!(in_scope(&json!({}), "", "configmaps", &json!({})));
    }

    #[test]
    fn missing_requests_and_binary_printing() {
        let hard: Usage = [
            ("requests.cpu".to_owned(), Quantity::from_units(1)),
            ("limits.memory".to_owned(), Quantity::from_units(1)),
        ]
        .into();
        let pod = json!({ "spec": { "containers": [{ "name": "a", "resources": { "requests": { "cpu": "1" } } }, { "name": "b" }] } });
        assert_eq!(
            missing_compute(&hard, &pod),
            [
                ("requests.cpu".to_owned(), vec!["b".to_owned()]),
                (
                    "limits.memory".to_owned(),
                    vec!["a".to_owned(), "b".to_owned()]
                )
            ]
        );
        assert_eq!(
            format(Quantity::parse("256Mi").unwrap(), Some("1Gi")),
            "256Mi"
        );
        assert_eq!(
            format(Quantity::parse("1500m").unwrap(), Some("2")),
            "1500m"
        );
    }
}
