//! Admission that reads other objects (upstream's LimitRanger, ResourceQuota and the
//! eviction subresource's PodDisruptionBudget check). The rules themselves are pure functions
//! in `skiff-kinds` (`limitrange`, `quota`); this module loads the namespace's LimitRanges,
//! ResourceQuotas and PodDisruptionBudgets from the store and applies them.
//!
//! - LimitRange defaults are applied to a pod before the kind's defaulting and validation
//!   (mutating admission), and its min/max/ratio rules are checked after.
//! - ResourceQuota: a create that would take a quota's usage over its hard limit is refused
//!   with 403, and an accepted one is charged to the quota at once (compare-and-swap on the
//!   quota's status), so concurrent creates cannot overshoot; the controller manager later
//!   recalculates usage from what exists.
//! - Eviction: a pod covered by a PodDisruptionBudget is evicted only while the budget allows
//!   a disruption, which the eviction consumes (429 otherwise, as upstream).

use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_kinds::{limitrange, quota};
use skiff_store::KeyValue;

use crate::error::{ApiError, ApiResult, GroupResource};
use crate::objects::{self, encode, meta_str};
use crate::state::State;

fn gr(info: &ResourceInfo) -> GroupResource {
    objects::group_resource(info)
}

fn is_pod(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "pods"
}

fn is_claim(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "persistentvolumeclaims"
}

/// The objects of a resource in a namespace, with their store entries.
async fn list_in(
    state: &State,
    group: &str,
    version: &str,
    plural: &str,
    namespace: &str,
) -> ApiResult<Vec<(Value, KeyValue)>> {
    let info = state.resource(group, version, plural)?;
    let page = state
        .objects
        .store
        .range(skiff_store::RangeRequest {
            prefix: objects::prefix(&info, Some(namespace)),
            ..Default::default()
        })
        .await?;
    let api_version = info.api_version();
    page.items
        .into_iter()
        .map(|kv| Ok((objects::decode(&kv, &api_version)?, kv)))
        .collect()
}

/// Mutating admission before the kind's own defaulting: LimitRange defaults for pods.
pub async fn mutate_create(state: &State, info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    if !is_pod(info) {
        return Ok(());
    }
    let ns = meta_str(obj, "namespace").to_owned();
    let items: Vec<limitrange::Item> = list_in(state, "", "v1", "limitranges", &ns)
        .await?
        .iter()
        .flat_map(|(lr, _)| limitrange::items(lr))
        .collect();
    if !items.is_empty() {
        limitrange::default_pod(&items, obj);
    }
    Ok(())
}

/// Validating admission of a create that passed the kind's validation: LimitRange rules,
/// then quota (charged unless `dry_run`).
pub async fn validate_create(
    state: &State,
    info: &ResourceInfo,
    obj: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    if !info.namespaced {
        return Ok(());
    }
    let ns = meta_str(obj, "namespace").to_owned();
    let name = meta_str(obj, "name").to_owned();
    if is_pod(info) || is_claim(info) {
        let items: Vec<limitrange::Item> = list_in(state, "", "v1", "limitranges", &ns)
            .await?
            .iter()
            .flat_map(|(lr, _)| limitrange::items(lr))
            .collect();
        let errors = if is_pod(info) {
            limitrange::validate_pod(&items, obj)
        } else {
            limitrange::validate_claim(&items, obj)
        };
        if !errors.is_empty() {
            let why = if errors.len() == 1 {
                errors[0].clone()
            } else {
                format!("[{}]", errors.join(", "))
            };
            return Err(ApiError::forbidden(&gr(info), &name, &why));
        }
    }
    charge_quota(state, info, obj, &ns, &name, dry_run).await
}

async fn charge_quota(
    state: &State,
    info: &ResourceInfo,
    obj: &Value,
    ns: &str,
    name: &str,
    dry_run: bool,
) -> ApiResult<()> {
    let delta = quota::usage(&info.group, &info.plural, obj);
    if delta.is_empty() {
        return Ok(());
    }
    let quota_info = state.resource("", "v1", "resourcequotas")?;
    for _attempt in 0..8 {
        let quotas = list_in(state, "", "v1", "resourcequotas", ns).await?;
        let mut charges: Vec<(Value, KeyValue)> = Vec::new();
        for (q, kv) in quotas {
            let spec = q.get("spec").cloned().unwrap_or_default();
            if !quota::in_scope(&spec, &info.group, &info.plural, obj) {
                continue;
            }
            let hard = quota::hard(&q);
            let relevant: Vec<&String> = delta.keys().filter(|k| hard.contains_key(*k)).collect();
            let qname = meta_str(&q, "name").to_owned();
            if is_pod(info) {
                let missing = quota::missing_compute(&hard, obj);
                if !missing.is_empty() {
                    let parts: Vec<String> = missing
                        .iter()
                        .map(|(r, cs)| format!("{r} for: {}", cs.join(",")))
                        .collect();
                    return Err(ApiError::forbidden(
                        &gr(info),
                        name,
                        &format!("failed quota: {qname}: must specify {}", parts.join("; ")),
                    ));
                }
            }
            if relevant.is_empty() {
                continue;
            }
            let Some(used) =
                quota::used(&q).filter(|u| relevant.iter().all(|k| u.contains_key(*k)))
            else {
                let keys: Vec<&str> = relevant.iter().map(|k| k.as_str()).collect();
                return Err(ApiError::forbidden(
                    &gr(info),
                    name,
                    &format!(
                        "status unknown for quota: {qname}, resources: {}",
                        keys.join(",")
                    ),
                ));
            };
            let like: std::collections::BTreeMap<String, String> = q
                .pointer("/spec/hard")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let mut exceeded = quota::Usage::new();
            let mut requested = quota::Usage::new();
            let mut currently = quota::Usage::new();
            let mut limited = quota::Usage::new();
            let mut new_used = used.clone();
            for k in &relevant {
                let total = used[*k] + delta[*k];
                if total > hard[*k] {
                    exceeded.insert((*k).clone(), total);
                    requested.insert((*k).clone(), delta[*k]);
                    currently.insert((*k).clone(), used[*k]);
                    limited.insert((*k).clone(), hard[*k]);
                }
                new_used.insert((*k).clone(), total);
            }
            if !exceeded.is_empty() {
                return Err(ApiError::forbidden(
                    &gr(info),
                    name,
                    &format!(
                        "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                        quota::list(&requested, &like),
                        quota::list(&currently, &like),
                        quota::list(&limited, &like)
                    ),
                ));
            }
            let mut charged = q.clone();
            let used_json: serde_json::Map<String, Value> = new_used
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!(quota::format(*v, like.get(k).map(String::as_str))),
                    )
                })
                .collect();
            charged["status"]["used"] = Value::Object(used_json);
            charges.push((charged, kv));
        }
        if dry_run || charges.is_empty() {
            return Ok(());
        }
        let mut conflict = false;
        for (charged, kv) in &charges {
            match state
                .objects
                .store
                .update(&kv.key, encode(charged)?, kv.mod_revision)
                .await
            {
                Ok(_) => {}
                Err(skiff_store::Error::Conflict { .. }) => {
                    conflict = true;
                    break;
                }
                Err(skiff_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !conflict {
            return Ok(());
        }
    }
    Err(ApiError::conflict(
        &objects::group_resource(&quota_info),
        "",
        "quota usage is being updated concurrently; please try again",
    ))
}

/// Whether the eviction of `pod` may go ahead; a budget it consumes is updated in the store.
/// Upstream's rules: finished, pending and deleting pods ignore budgets; more than one budget
/// is an error; a budget not yet observed or without allowed disruptions refuses (429).
pub async fn check_eviction(state: &State, pod: &Value, dry_run: bool) -> ApiResult<()> {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed" | "Pending" | "")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
    {
        return Ok(());
    }
    let ns = meta_str(pod, "namespace").to_owned();
    let pod_name = meta_str(pod, "name").to_owned();
    let labels = objects::labels(pod);
    let pdb_info = state.resource("policy", "v1", "poddisruptionbudgets")?;
    for _attempt in 0..8 {
        let mut matching: Vec<(Value, KeyValue)> = Vec::new();
        for (pdb, kv) in list_in(state, "policy", "v1", "poddisruptionbudgets", &ns).await? {
            let selector = pdb
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or(Value::Null);
            let Ok(k8s) = serde_json::from_value::<
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
            >(selector) else {
                continue;
            };
            let Ok(sel) = skiff_api::selector::LabelSelector::from_k8s(&k8s) else {
                continue;
            };
            if !sel.is_empty() && sel.matches(&labels) {
                matching.push((pdb, kv));
            }
        }
        if matching.is_empty() {
            return Ok(());
        }
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let (pdb, kv) = matching.remove(0);
        let pdb_name = meta_str(&pdb, "name").to_owned();
        let too_many = |message: String| {
            ApiError::too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                "DisruptionBudget",
                &message,
            )
        };
        let generation = pdb
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let observed = pdb
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if observed < generation {
            return Err(too_many(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )));
        }
        let ready = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        let current = pdb
            .pointer("/status/currentHealthy")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let desired = pdb
            .pointer("/status/desiredHealthy")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !ready {
            let policy = pdb
                .pointer("/spec/unhealthyPodEvictionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("IfHealthyBudget");
            if policy == "AlwaysAllow" || current >= desired {
                return Ok(());
            }
        }
        let allowed = pdb
            .pointer("/status/disruptionsAllowed")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if allowed <= 0 {
            return Err(too_many(format!(
                "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
            )));
        }
        if dry_run {
            return Ok(());
        }
        let mut consumed = pdb.clone();
        consumed["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !consumed["status"]["disruptedPods"].is_object() {
            consumed["status"]["disruptedPods"] = json!({});
        }
        consumed["status"]["disruptedPods"][&pod_name] = json!(crate::time::now_rfc3339());
        match state
            .objects
            .store
            .update(&kv.key, encode(&consumed)?, kv.mod_revision)
            .await
        {
            Ok(_) => return Ok(()),
            Err(skiff_store::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        &objects::group_resource(&pdb_info),
        "",
        "the disruption budget is being updated concurrently; please try again",
    ))
}
