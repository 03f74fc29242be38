//! Priority admission (upstream `plugin/pkg/admission/priority`): a new pod's
//! `spec.priorityClassName` is resolved to `spec.priority` and `spec.preemptionPolicy` from its
//! PriorityClass (the global default class, or priority 0, when it names none); a pod naming a
//! missing class, or setting a priority or policy that disagrees with its class, is refused
//! with 403. PriorityClasses: at most one may be the global default. The built-in
//! `system-cluster-critical` and `system-node-critical` classes are created at startup.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, GroupResource};
use crate::objects::{self, meta_str};
use crate::state::State;

/// The built-in classes: name, value, description.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The built-in PriorityClass objects.
pub fn system_classes() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": { "name": name },
                "value": value, "globalDefault": false, "description": description,
                "preemptionPolicy": "PreemptLowerPriority",
            })
        })
        .collect()
}

fn pods_gr() -> GroupResource {
    GroupResource {
        group: String::new(),
        resource: "pods".into(),
    }
}

/// The global default class among `classes`: the lowest value if several claim it (as
/// upstream, which tolerates races that create two).
pub fn global_default(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
}

/// Resolve a new pod's priority from its class (`class`: the named class, `None` if it names
/// one that does not exist; `default`: the global default class). Returns the 403 message.
pub fn resolve(
    pod: &mut Value,
    class: Option<&Value>,
    default: Option<&Value>,
) -> Result<(), String> {
    let named = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (priority, policy) = if named.is_empty() {
        match default {
            Some(d) => {
                pod["spec"]["priorityClassName"] = json!(meta_str(d, "name"));
                (
                    d.get("value").and_then(Value::as_i64).unwrap_or(0),
                    d.get("preemptionPolicy")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                )
            }
            None => (0, None),
        }
    } else {
        let Some(c) = class else {
            return Err(format!("no PriorityClass with name {named} was found"));
        };
        (
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .map(str::to_owned),
        )
    };
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && given != priority
    {
        return Err(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        ));
    }
    pod["spec"]["priority"] = json!(priority);
    let policy = policy.unwrap_or_else(|| "PreemptLowerPriority".to_owned());
    match pod
        .pointer("/spec/preemptionPolicy")
        .and_then(Value::as_str)
    {
        Some(given) if given != policy && class.or(default).is_some() => {
            return Err(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            ));
        }
        Some(_) => {}
        None => pod["spec"]["preemptionPolicy"] = json!(policy),
    }
    Ok(())
}

impl State {
    async fn priority_classes(&self) -> ApiResult<Vec<Value>> {
        let info = self.resource("scheduling.k8s.io", "v1", "priorityclasses")?;
        let page = self
            .objects
            .store
            .range(skiff_store::RangeRequest {
                prefix: objects::prefix(&info, None),
                ..Default::default()
            })
            .await?;
        let api_version = info.api_version();
        page.items
            .iter()
            .map(|kv| objects::decode(kv, &api_version))
            .collect()
    }

    /// Priority admission of a new pod.
    pub async fn admit_pod_priority(&self, pod: &mut Value) -> ApiResult<()> {
        let classes = self.priority_classes().await?;
        let named = pod
            .pointer("/spec/priorityClassName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let class = classes
            .iter()
            .find(|c| !named.is_empty() && meta_str(c, "name") == named);
        let name = meta_str(pod, "name").to_owned();
        resolve(pod, class, global_default(&classes))
            .map_err(|why| ApiError::forbidden(&pods_gr(), &name, &why))
    }

    /// Only one PriorityClass may be the global default.
    pub async fn check_single_default(&self, class: &Value) -> ApiResult<()> {
        if class.get("globalDefault").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        let name = meta_str(class, "name");
        let classes = self.priority_classes().await?;
        if let Some(other) = classes.iter().find(|c| {
            c.get("globalDefault").and_then(Value::as_bool) == Some(true)
                && meta_str(c, "name") != name
        }) {
            let gr = GroupResource {
                group: "scheduling.k8s.io".into(),
                resource: "priorityclasses".into(),
            };
            return Err(ApiError::forbidden(
                &gr,
                name,
                &format!(
                    "PriorityClass {} is already marked as default. Only one default can exist",
                    meta_str(other, "name")
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64, default: bool, policy: &str) -> Value {
        json!({ "metadata": { "name": name }, "value": value, "globalDefault": default, "preemptionPolicy": policy })
    }

    fn pod(spec: Value) -> Value {
        json!({ "metadata": { "name": "p" }, "spec": spec })
    }

    #[test]
    fn a_named_class_sets_priority_and_policy() {
        let high = class("high-priority", 1_000_000, false, "PreemptLowerPriority");
        let mut p = pod(json!({ "priorityClassName": "high-priority" }));
        resolve(&mut p, Some(&high), None).unwrap();
        assert_eq!(p["spec"]["priority"], 1_000_000);
        assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        let never = class("high-priority-nonpreempting", 1_000_000, false, "Never");
        let mut p = pod(json!({ "priorityClassName": "high-priority-nonpreempting" }));
        resolve(&mut p, Some(&never), None).unwrap();
        assert_eq!(p["spec"]["preemptionPolicy"], "Never");
    }

    #[test]
    fn missing_classes_and_conflicting_values_are_refused() {
        let mut p = pod(json!({ "priorityClassName": "nope" }));
        assert_eq!(
            resolve(&mut p, None, None).unwrap_err(),
            "no PriorityClass with name nope was found"
        );
        let high = class("high", 100, false, "PreemptLowerPriority");
        let mut p = pod(json!({ "priorityClassName": "high", "priority": 5 }));
        assert_eq!(
            resolve(&mut p, Some(&high), None).unwrap_err(),
            "the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 100 from the given PriorityClass name"
        );
        // Restating the computed value is fine (re-created objects carry it).
        let mut p = pod(json!({ "priorityClassName": "high", "priority": 100 }));
        assert!(resolve(&mut p, Some(&high), None).is_ok());
        let mut p = pod(json!({ "priorityClassName": "high", "preemptionPolicy": "Never" }));
        assert!(
            resolve(&mut p, Some(&high), None)
                .unwrap_err()
                .contains("PreemptionPolicy (Never)")
        );
    }

    #[test]
    fn pods_without_a_class_get_the_global_default_or_zero() {
        let mut p = pod(json!({}));
        resolve(&mut p, None, None).unwrap();
        assert_eq!(p["spec"]["priority"], 0);
        assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        assert!(p["spec"].get("priorityClassName").is_none());
        let classes = vec![
            class("a", 10, true, "PreemptLowerPriority"),
            class("b", 5, true, "Never"),
            class("c", 1, false, "Never"),
        ];
        let d = global_default(&classes).unwrap();
        assert_eq!(meta_str(d, "name"), "b", "the lowest default wins");
        let mut p = pod(json!({}));
        resolve(&mut p, None, Some(d)).unwrap();
        assert_eq!(p["spec"]["priority"], 5);
        assert_eq!(p["spec"]["priorityClassName"], "b");
        let mut p = pod(json!({ "priority": 7 }));
        assert!(
            resolve(&mut p, None, None).is_err(),
            "a priority without a class must be 0"
        );
    }

    #[test]
    fn the_system_classes_are_upstreams() {
        let classes = system_classes();
        assert_eq!(classes[0]["metadata"]["name"], "system-node-critical");
        assert_eq!(classes[0]["value"], 2_000_001_000);
        assert_eq!(classes[1]["value"], 2_000_000_000);
    }
}
