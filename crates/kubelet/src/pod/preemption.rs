//! Critical pod admission (upstream's `CriticalPodAdmissionHandler`): a critical pod —
//! above all a static pod, which no scheduler placed — refused only for lack of resources
//! makes room by preempting non-critical pods, which end Failed with reason `Preempting`.
//!
//! Which pods go follows upstream's `getPodsToPreempt`: what is short is computed for every
//! resource at once ([`shortage`]); BestEffort pods are taken before Burstable before
//! Guaranteed (each class only as far as the cheaper classes cannot cover it), and within a
//! class, greedily, the pod whose requests leave the least of the shortage uncovered
//! (distance = Σ (uncovered / needed)², so each resource weighs the same), ties going to the
//! pod with the smaller memory, then cpu, request. Pure: the manager evicts what this picks.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use skiff_api::scheduling::{Resources, add, allocatable, pod_requests};

use crate::eviction::is_critical;
use crate::pod::status::qos_class;

/// The status reason and event reason of a preempted pod.
pub const REASON: &str = "Preempting";
/// The status and event message of a preempted pod.
pub const MESSAGE: &str = "Preempted in order to admit critical pod";

/// A pod's request of `resource`; every pod takes one of `pods`.
fn request(pod: &Pod, resource: &str) -> i64 {
    if resource == "pods" {
        return 1;
    }
    pod_requests(pod).get(resource).copied().unwrap_or(0)
}

/// What `pod` needs beyond what `node` has free besides `admitted`: each resource short, by
/// how much (upstream's insufficient amounts: requested − (allocatable − used)).
pub fn shortage(
    pod: &Pod,
    node: &k8s_openapi::api::core::v1::Node,
    admitted: &[Arc<Pod>],
) -> Resources {
    let allocatable = allocatable(node);
    let mut used = Resources::new();
    for p in admitted {
        add(&mut used, &pod_requests(p));
    }
    used.insert("pods".into(), admitted.len() as i64);
    let mut wanted = pod_requests(pod);
    wanted.insert("pods".into(), 1);
    wanted
        .into_iter()
        .filter(|(name, want)| *want > 0 && allocatable.contains_key(name))
        .filter_map(|(name, want)| {
            let free = allocatable[&name] - used.get(&name).copied().unwrap_or(0);
            (want > free).then_some((name, want - free))
        })
        .collect()
}

/// What is still short if `pods` were gone.
fn subtract<'a>(
    needed: &Resources,
    pods: impl IntoIterator<Item = &'a Arc<Pod>> + Clone,
) -> Resources {
    needed
        .iter()
        .filter_map(|(name, amount)| {
            let left = pods
                .clone()
                .into_iter()
                .fold(*amount, |left, p| left - request(p, name));
            (left > 0).then(|| (name.clone(), left))
        })
        .collect()
}

/// How far `pod` leaves `needed` from covered.
fn distance(needed: &Resources, pod: &Pod) -> f64 {
    needed
        .iter()
        .map(|(name, amount)| {
            let uncovered = (amount - request(pod, name)).max(0) as f64;
            (uncovered / *amount as f64).powi(2)
        })
        .sum()
}

/// Whether `a` asks for less than `b` (memory first, then cpu); equal counts as less.
fn smaller(a: &Pod, b: &Pod) -> bool {
    for resource in ["memory", "cpu"] {
        let (ra, rb) = (request(a, resource), request(b, resource));
        if ra != rb {
            return ra < rb;
        }
    }
    true
}

/// Upstream `getPodsToPreemptByDistance`: pods from `class` covering `needed`, greedily.
fn by_distance(mut class: Vec<Arc<Pod>>, mut needed: Resources) -> Option<Vec<Arc<Pod>>> {
    let mut out = Vec::new();
    while !needed.is_empty() {
        if class.is_empty() {
            return None;
        }
        let mut best = 0;
        let mut best_distance = f64::INFINITY;
        for (i, pod) in class.iter().enumerate() {
            let d = distance(&needed, pod);
            if d < best_distance || (d == best_distance && smaller(pod, &class[best])) {
                best = i;
                best_distance = d;
            }
        }
        let pod = class.swap_remove(best);
        needed = subtract(&needed, [&pod]);
        out.push(pod);
    }
    Some(out)
}

/// The pods to preempt so that `preemptor` fits, or `None` if evicting every non-critical
/// pod would not be enough (or `preemptor` is not critical).
pub fn pods_to_preempt(
    preemptor: &Pod,
    needed: &Resources,
    admitted: &[Arc<Pod>],
) -> Option<Vec<Arc<Pod>>> {
    if !is_critical(preemptor) {
        return None;
    }
    let candidates: Vec<Arc<Pod>> = admitted
        .iter()
        .filter(|p| !is_critical(p))
        .cloned()
        .collect();
    if !subtract(needed, &candidates).is_empty() {
        return None;
    }
    let class = |name: &str| -> Vec<Arc<Pod>> {
        candidates
            .iter()
            .filter(|p| qos_class(p) == name)
            .cloned()
            .collect()
    };
    let (best_effort, burstable, guaranteed) =
        (class("BestEffort"), class("Burstable"), class("Guaranteed"));
    let guaranteed_out = by_distance(
        guaranteed,
        subtract(needed, best_effort.iter().chain(&burstable)),
    )?;
    let burstable_out = by_distance(
        burstable,
        subtract(needed, best_effort.iter().chain(&guaranteed_out)),
    )?;
    let best_effort_out = by_distance(
        best_effort,
        subtract(needed, burstable_out.iter().chain(&guaranteed_out)),
    )?;
    Some(
        best_effort_out
            .into_iter()
            .chain(burstable_out)
            .chain(guaranteed_out)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(name: &str, requests: Value, limits: Value, annotations: Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": "default", "annotations": annotations },
                "spec": { "containers": [{ "name": "main", "image": "busybox",
                    "resources": { "requests": requests, "limits": limits } }] },
            }))
            .unwrap(),
        )
    }

    fn node(allocatable: Value) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(json!({
            "metadata": { "name": "node-1" },
            "status": { "allocatable": allocatable },
        }))
        .unwrap()
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    fn static_pod(requests: Value) -> Arc<Pod> {
        pod(
            "static",
            requests,
            json!({}),
            json!({ "kubernetes.io/config.source": "file" }),
        )
    }

    #[test]
    fn the_shortage_covers_every_resource_at_once() {
        let n = node(json!({ "cpu": "2", "memory": "1Gi", "pods": "2" }));
        let running = vec![
            pod(
                "a",
                json!({ "cpu": "1500m", "memory": "512Mi" }),
                json!({}),
                json!({}),
            ),
            pod("b", json!({}), json!({}), json!({})),
        ];
        let short = shortage(
            &static_pod(json!({ "cpu": "1", "memory": "256Mi" })),
            &n,
            &running,
        );
        assert_eq!(
            short,
            Resources::from([("cpu".into(), 500), ("pods".into(), 1)]),
            "memory fits; cpu is 500m and one pod slot short"
        );
    }

    #[test]
    fn cheaper_classes_go_first_and_the_closest_pod_within_a_class() {
        let guaranteed = pod(
            "guaranteed",
            json!({ "cpu": "1", "memory": "1Gi" }),
            json!({ "cpu": "1", "memory": "1Gi" }),
            json!({}),
        );
        let big = pod("burstable-big", json!({ "cpu": "1" }), json!({}), json!({}));
        let small = pod(
            "burstable-small",
            json!({ "cpu": "300m" }),
            json!({}),
            json!({}),
        );
        let best_effort = pod("best-effort", json!({}), json!({}), json!({}));
        let critical = pod(
            "mirror",
            json!({ "cpu": "4" }),
            json!({}),
            json!({ "kubernetes.io/config.mirror": "x" }),
        );
        let admitted = vec![
            guaranteed.clone(),
            big.clone(),
            small.clone(),
            best_effort.clone(),
            critical,
        ];
        let preemptor = static_pod(json!({ "cpu": "250m" }));

        // A pod slot: the BestEffort pod.
        let slot = Resources::from([("pods".into(), 1)]);
        let out = pods_to_preempt(&preemptor, &slot, &admitted).unwrap();
        assert_eq!(names(&out), ["best-effort"]);

        // 250m of cpu: BestEffort pods free none, so the Burstable pod closest to it.
        let cpu = Resources::from([("cpu".into(), 250)]);
        let out = pods_to_preempt(&preemptor, &cpu, &admitted).unwrap();
        assert_eq!(names(&out), ["burstable-small"]);

        // 2 cpus: every Burstable pod (1.3) is not enough, so the Guaranteed one goes too;
        // with it, one Burstable pod covers the rest, and the closest is the big one.
        let two = Resources::from([("cpu".into(), 2000)]);
        let out = pods_to_preempt(&preemptor, &two, &admitted).unwrap();
        assert_eq!(names(&out), ["burstable-big", "guaranteed"]);

        // More than every non-critical pod holds: nothing is preempted.
        let four = Resources::from([("cpu".into(), 4000)]);
        assert!(pods_to_preempt(&preemptor, &four, &admitted).is_none());

        // Only critical pods preempt.
        let plain = pod("plain", json!({}), json!({}), json!({}));
        assert!(pods_to_preempt(&plain, &slot, &admitted).is_none());
    }

    #[test]
    fn ties_go_to_the_smaller_request() {
        let a = pod("a", json!({ "memory": "64Mi" }), json!({}), json!({}));
        let b = pod("b", json!({ "memory": "32Mi" }), json!({}), json!({}));
        let slot = Resources::from([("pods".into(), 1)]);
        let out = pods_to_preempt(&static_pod(json!({})), &slot, &[a, b]).unwrap();
        assert_eq!(names(&out), ["b"]);
    }
}
