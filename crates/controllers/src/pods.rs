//! Pod facts every workload controller needs, with upstream's definitions: active,
//! terminating, ready and available (minReadySeconds); the order in which surplus pods are
//! deleted (upstream `ActivePodsWithRanks` with logarithmic scale-down); building a pod from
//! a template; and creating many pods in slow-start batches so a failing create does not
//! fail a thousand times.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use skiff_api::selector::LabelSelector;

use crate::{Error, Result};

/// Upstream's annotation ranking pods for scale-down (lower cost goes first).
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The pod's phase ("" when unset).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether the pod finished (Succeeded or Failed).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Upstream `IsPodActive`: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Being deleted but not finished (counts as `terminatingReplicas`).
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !is_terminal(pod)
}

/// The pod condition of a type.
pub fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// When the pod last became ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    condition(pod, "Ready")
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Upstream `IsPodAvailable`: ready for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(since) => since + Duration::from_secs(min_ready_seconds as u64) <= now,
        None => false,
    }
}

/// How long until a ready pod becomes available (None if not ready or already available).
pub fn available_in(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Duration> {
    if min_ready_seconds <= 0 || !is_ready(pod) {
        return None;
    }
    let at = ready_since(pod)? + Duration::from_secs(min_ready_seconds as u64);
    let left = at.duration_since(now);
    (!left.is_negative() && !left.is_zero()).then(|| Duration::try_from(left).unwrap_or_default())
}

/// An object's labels (empty when unset).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Parse a `metav1.LabelSelector`; `None` selects nothing, as upstream.
pub fn selector(sel: Option<&metav1::LabelSelector>, object: &str) -> Result<LabelSelector> {
    match sel {
        None => Ok(LabelSelector::nothing()),
        Some(s) => LabelSelector::from_k8s(s).map_err(|e| Error::Invalid {
            object: object.to_owned(),
            message: format!("invalid label selector: {e}"),
        }),
    }
}

/// The largest restart count of the pod's containers.
pub fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// The node a pod runs on ("" when unscheduled).
pub fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// A pod to create from a controller's template: its labels, annotations, finalizers and
/// spec, owned by `owner`, named `name` or generated from `generate_name`.
pub fn from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    owner: OwnerReference,
    name: Option<String>,
    generate_name: Option<String>,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(namespace.to_owned()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The generateName prefix upstream uses for a controller's pods: `<name>-`, trimmed so the
/// generated name fits 63 characters.
pub fn generate_name_prefix(controller: &str) -> String {
    let prefix = format!("{controller}-");
    if prefix.len() > 58 {
        prefix[..58].to_owned()
    } else {
        prefix
    }
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(0, i64::from)
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// Upstream's logarithmic age rank: pods whose ages have the same base-2 logarithm are
/// equally old; `-1` for a time not in the past.
fn log_age(t: Timestamp, now: Timestamp) -> i64 {
    let d = now.as_nanosecond() - t.as_nanosecond();
    if d > 0 { (d as f64).log2() as i64 } else { -1 }
}

/// What orders pods for deletion, smallest first (upstream `ActivePodsWithRanks.Less` with
/// LogarithmicScaleDown): unscheduled before scheduled; Pending, Unknown, Running; not ready
/// before ready; lower `controller.kubernetes.io/pod-deletion-cost` first; pods doubled up
/// on a node (higher `rank`) first; ready for a shorter time first (log scale); more restarts
/// first; newer first (log scale); then uid. Upstream's comparison is not a total order
/// (equal log ranks compare by uid, exactly equal times by the next rules), which Go's sort
/// tolerates and Rust's refuses; a key keeps the same preferences as a total order.
type DeletionKey = (
    bool,
    u8,
    bool,
    i64,
    Reverse<usize>,
    i64,
    Reverse<i32>,
    i64,
    String,
);

fn deletion_key(pod: &Pod, rank: usize, now: Timestamp) -> DeletionKey {
    let ready = is_ready(pod);
    let ready_age = if ready {
        // A missing time counts as "now" (the pod just became ready).
        ready_since(pod).map_or(-1, |t| log_age(t, now))
    } else {
        0
    };
    let created_age = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(i64::MAX, |t| log_age(t.0, now));
    (
        !node_name(pod).is_empty(),
        phase_ordinal(pod),
        ready,
        deletion_cost(pod),
        Reverse(rank),
        ready_age,
        Reverse(max_restarts(pod)),
        created_age,
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

/// The `count` pods of `pods` to delete first; `related` are the pods whose co-location
/// counts for ranking (upstream: every pod of the same deployment).
pub fn pods_to_delete(pods: &[Arc<Pod>], related: &[Arc<Pod>], count: usize) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        let node = node_name(p);
        if !node.is_empty() {
            *per_node.entry(node.to_owned()).or_default() += 1;
        }
    }
    let rank = |p: &Pod| per_node.get(node_name(p)).copied().unwrap_or(0);
    let now = Timestamp::now();
    let mut sorted = pods.to_vec();
    sorted.sort_by_cached_key(|p| deletion_key(p, rank(p), now));
    sorted.truncate(count);
    sorted
}

/// Upstream `slowStartBatch`: call `create(i)` for `count` items in batches of 1, 2, 4, …
/// (from `initial`), stopping after the first batch with a failure. Returns how many
/// succeeded and the first error.
pub async fn slow_start_batch<F, Fut>(
    count: usize,
    initial: usize,
    create: F,
) -> (usize, Option<Error>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut remaining = count;
    let mut batch = initial.max(1).min(count);
    let mut next = 0;
    let mut done = 0;
    while batch > 0 {
        let results = futures::future::join_all((next..next + batch).map(&create)).await;
        next += batch;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(()) => done += 1,
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        if first_error.is_some() {
            return (done, first_error);
        }
        remaining -= batch;
        batch = (batch * 2).min(remaining);
    }
    (done, None)
}

/// Whether a create failed because the namespace is being deleted (expected while a
/// namespace goes away; upstream does not report it).
pub fn is_namespace_terminating(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(
        name: &str,
        node: &str,
        phase: &str,
        ready_secs_ago: Option<i64>,
        created_secs_ago: i64,
    ) -> Arc<Pod> {
        let now = Timestamp::now();
        let conditions = ready_secs_ago.map(|ago| {
            vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(now - Duration::from_secs(ago as u64))),
                ..Default::default()
            }]
        });
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                creation_timestamp: Some(Time(now - Duration::from_secs(created_secs_ago as u64))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_owned()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions,
                ..Default::default()
            }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn scale_down_prefers_unscheduled_then_pending_then_not_ready_then_newer() {
        let pods = vec![
            pod("ready-old", "n1", "Running", Some(10_000), 10_000),
            pod("ready-new", "n2", "Running", Some(10), 10),
            pod("running-not-ready", "n3", "Running", None, 10_000),
            pod("pending", "n4", "Pending", None, 10_000),
            pod("unscheduled", "", "Pending", None, 10_000),
        ];
        let order = pods_to_delete(&pods, &pods, 5);
        assert_eq!(
            names(&order),
            [
                "unscheduled",
                "pending",
                "running-not-ready",
                "ready-new",
                "ready-old"
            ]
        );
        assert_eq!(
            names(&pods_to_delete(&pods, &pods, 2)),
            ["unscheduled", "pending"]
        );
    }

    #[test]
    fn doubled_up_pods_and_low_deletion_cost_go_first() {
        let a = pod("alone", "n1", "Running", Some(100), 100);
        let b = pod("shared-1", "n2", "Running", Some(100), 100);
        let c = pod("shared-2", "n2", "Running", Some(100), 100);
        let all = vec![a.clone(), b.clone(), c.clone()];
        let first = pods_to_delete(&all, &all, 1);
        assert_ne!(names(&first), ["alone"]);
        let mut cheap = (*a).clone();
        cheap.metadata.annotations = Some([(DELETION_COST.to_owned(), "-10".to_owned())].into());
        let all = vec![Arc::new(cheap), b, c];
        assert_eq!(names(&pods_to_delete(&all, &all, 1)), ["alone"]);
    }

    #[test]
    fn thousands_of_pods_with_close_ready_times_sort_without_a_broken_order() {
        // Upstream's comparison is not transitive for ready times in one log bucket (uid)
        // next to exactly equal ones (restarts, creation); Rust's sort panics on such an
        // order. The key must sort any mix, and still put younger-ready pods first.
        let pods: Vec<Arc<Pod>> = (0..5000)
            .map(|i| {
                pod(
                    &format!("p{i:04}"),
                    &format!("n{}", i % 50),
                    "Running",
                    Some(100 + (i % 7) * 3),
                    1000 + (i % 11),
                )
            })
            .chain((0..10).map(|i| pod(&format!("young{i}"), "n0", "Running", Some(1), 2)))
            .collect();
        let order = pods_to_delete(&pods, &pods, 10);
        assert!(
            names(&order).iter().all(|n| n.starts_with("young")),
            "{:?}",
            names(&order)
        );
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod("p", "n", "Running", Some(5), 5);
        let now = Timestamp::now();
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 5, now));
        assert!(!is_available(&p, 10, now));
        let left = available_in(&p, 10, now).unwrap();
        assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(3));
        assert!(!is_available(&pod("q", "n", "Running", None, 1), 0, now));
    }

    #[tokio::test]
    async fn slow_start_stops_after_the_first_failing_batch() {
        let calls = parking_lot::Mutex::new(Vec::new());
        let (done, err) = slow_start_batch(20, 1, |i| {
            calls.lock().push(i);
            async move {
                if i == 4 {
                    Err(Error::Invalid {
                        object: "x".into(),
                        message: "boom".into(),
                    })
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches of 1, 2, 4: the third batch (3..7) holds the failure.
        assert_eq!(calls.lock().len(), 7);
        assert_eq!(done, 6);
        assert!(err.is_some());
        let (done, err) = slow_start_batch(5, 1, |_| async { Ok(()) }).await;
        assert_eq!((done, err.is_none()), (5, true));
    }
}
