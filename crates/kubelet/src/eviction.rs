//! Local ephemeral storage eviction (upstream eviction manager's `localStorageEviction`):
//! every housekeeping period the stats provider measures disk usage, then each pod is judged
//! against its limits in upstream's order, and a pod over any of them is evicted at once:
//!
//! 1. an emptyDir whose usage exceeds its `sizeLimit` —
//!    `Usage of EmptyDir volume "x" exceeds the limit "1Mi". `;
//! 2. the pod's ephemeral storage (writable layers, logs, disk emptyDirs, configMaps, the
//!    hosts file) exceeding the sum of its containers' `ephemeral-storage` limits —
//!    `Pod ephemeral local storage usage exceeds the total limit of containers 2Mi. `;
//! 3. a container's writable layer plus logs exceeding its own limit —
//!    `Container c exceeded its local ephemeral storage limit "1Mi". `.
//!
//! Node pressure (upstream's eviction manager `synchronize`): when a hard threshold
//! ([`crate::pressure`]) is crossed, or a soft one has stayed crossed for its grace period
//! ([`due`]), one pod is evicted per round, chosen by upstream's
//! rankers — pods using more than they request of the starved resource first, then lower
//! priority, then the larger use beyond the request ([`node_pressure`]); for pids, priority
//! then process count. The message is upstream's: `The node was low on resource: memory.
//! Threshold quantity: 100Mi, available: 50Mi. Container c was using 300Mi, request is 0,
//! has larger consumption of memory. `. Unlike upstream, Skiff reclaims no node-level
//! resources (unused images) before evicting for disk pressure.
//!
//! Evicting means a Warning `Evicted` event, the containers killed with a one-second grace
//! period, the pod Failed with reason `Evicted` and the message, and its emptyDirs released
//! ([`crate::pod::worker::Termination`]). Critical pods (static, mirror, or of system
//! priority) are never evicted, as upstream refuses to.
//!
//! [`local_storage`] is pure; [`run`] is the loop around it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skiff_api::quantity::Quantity;
use skiff_runtime::CancellationToken;
use skiff_runtime::events::{EventType, Recorder};

use crate::pod::manager::PodManager;
use crate::pod::worker::Termination;
use crate::pressure::{Crossed, Observation, Observations, Signal, Thresholds};
use crate::stats::Provider;
use crate::stats::summary::{FsStats, PodStats, Summary};

/// How often usage is measured and judged (upstream's eviction monitoring period and
/// housekeeping interval).
pub const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// The grace period of an eviction (upstream `immediateEvictionGracePeriodSeconds`).
pub const GRACE: Duration = Duration::from_secs(1);
/// The status reason and event reason of an eviction.
pub const REASON: &str = "Evicted";
/// Priority at and above which a pod is critical (upstream `SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// A pod to evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The pod's uid.
    pub uid: String,
    /// Why, in upstream's words.
    pub message: String,
}

/// A quantity as Go's `resource.Quantity.String()` writes it: binary-suffixed quantities
/// (`Ki`, `Mi`, …) in the largest binary unit that divides them, decimal and plain ones in
/// the largest power of 1000 (`k`, `M`, …); `written` is a quantity of the same format.
pub fn quantity_string(value: i64, written: &str) -> String {
    let binary = written.trim_end().ends_with('i');
    let (base, suffixes): (i64, &[&str]) = if binary {
        (1024, &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
    } else {
        (1000, &["", "k", "M", "G", "T", "P", "E"])
    };
    if value == 0 || (binary && value.abs() < 1024) {
        return value.to_string();
    }
    let (mut n, mut exp) = (value, 0);
    while exp + 1 < suffixes.len() && n % base == 0 {
        n /= base;
        exp += 1;
    }
    format!("{n}{}", suffixes[exp])
}

fn bytes(q: &str) -> Option<i64> {
    Quantity::parse(q).ok().map(Quantity::value)
}

/// Upstream `IsCriticalPod`: static and mirror pods, and pods of system priority.
pub fn is_critical(pod: &Pod) -> bool {
    let source = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    source.is_some_and(|s| s != "api") || mirror || priority >= SYSTEM_CRITICAL_PRIORITY
}

/// The pod's `ephemeral-storage` limit (upstream `PodLimits`): the containers' sum with
/// restartable init containers, or the largest init container if larger; `None` when no
/// container sets one. Returns the limit and a written limit to take the format from.
fn pod_ephemeral_limit(pod: &Pod) -> Option<(i64, String)> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("ephemeral-storage"))
            .map(|q| q.0.clone())
    };
    let mut written: Option<String> = None;
    let mut sum = 0i64;
    let mut sidecars = 0i64;
    let mut init_peak = 0i64;
    for c in &spec.containers {
        if let Some(q) = limit(c) {
            sum += bytes(&q).unwrap_or(0);
            written.get_or_insert(q);
        }
    }
    for c in spec.init_containers.iter().flatten() {
        let Some(q) = limit(c) else { continue };
        let b = bytes(&q).unwrap_or(0);
        written.get_or_insert(q);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars += b;
            sum += b;
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(b + sidecars);
        }
    }
    Some((sum.max(init_peak), written?))
}

fn used(fs: Option<&FsStats>) -> i64 {
    fs.and_then(|f| f.used_bytes).unwrap_or(0) as i64
}

/// Which pods exceed a local storage limit. `dedicated_image_fs` leaves writable layers out
/// of container usage (they are then on another filesystem), as upstream does.
pub fn local_storage(
    pods: &[Arc<Pod>],
    summary: &Summary,
    dedicated_image_fs: bool,
) -> Vec<Eviction> {
    let mut out = Vec::new();
    for pod in pods {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            continue;
        };
        let Some(stats) = summary.pods.iter().find(|p| p.pod_ref.uid == uid) else {
            continue;
        };
        // Critical pods are not evicted; pods already terminating are on their way out.
        if is_critical(pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let evict = |message: String| Eviction {
            uid: uid.to_owned(),
            message,
        };
        // 1. emptyDir size limits.
        let over_size = spec.volumes.iter().flatten().find_map(|v| {
            let limit = v.empty_dir.as_ref()?.size_limit.as_ref()?;
            let size = bytes(&limit.0).filter(|s| *s > 0)?;
            let usage = stats
                .volume_stats
                .iter()
                .find(|s| s.name == v.name)?
                .fs
                .used_bytes? as i64;
            (usage > size).then(|| {
                format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                    v.name,
                    quantity_string(size, &limit.0)
                )
            })
        });
        if let Some(message) = over_size {
            out.push(evict(message));
            continue;
        }
        // 2. The pod's total.
        if let Some((limit, written)) = pod_ephemeral_limit(pod)
            && used(stats.ephemeral_storage.as_ref()) > limit
        {
            out.push(evict(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                quantity_string(limit, &written)
            )));
            continue;
        }
        // 3. Each container.
        let over_container = spec.containers.iter().find_map(|c| {
            let written = c
                .resources
                .as_ref()?
                .limits
                .as_ref()?
                .get("ephemeral-storage")?;
            let limit = bytes(&written.0).filter(|l| *l != 0)?;
            let cs = stats.containers.iter().find(|s| s.name == c.name)?;
            let mut usage = used(cs.logs.as_ref());
            if !dedicated_image_fs {
                usage += used(cs.rootfs.as_ref());
            }
            (usage > limit).then(|| {
                format!(
                    "Container {} exceeded its local ephemeral storage limit {:?}. ",
                    c.name,
                    quantity_string(limit, &written.0)
                )
            })
        });
        if let Some(message) = over_container {
            out.push(evict(message));
        }
    }
    out
}

/// The eviction signals `summary` measures (upstream `makeSignalObservations`).
pub fn observations(summary: &Summary) -> Observations {
    let fs = |fs: Option<&FsStats>| {
        let fs = fs?;
        Some(Observation {
            available: fs.available_bytes?,
            capacity: fs.capacity_bytes?,
        })
    };
    let node = &summary.node;
    Observations {
        memory: node.memory.as_ref().and_then(|m| {
            let available = m.available_bytes?;
            Some(Observation {
                available,
                capacity: available + m.working_set_bytes.unwrap_or(0),
            })
        }),
        nodefs: fs(node.fs.as_ref()),
        imagefs: fs(node.runtime.as_ref().and_then(|r| r.image_fs.as_ref()))
            .or_else(|| fs(node.fs.as_ref())),
        pid: node.rlimit.as_ref().and_then(|r| {
            let max = u64::try_from(r.maxpid?).ok()?;
            let used = u64::try_from(r.curproc.unwrap_or(0)).unwrap_or(0);
            Some(Observation {
                available: max.saturating_sub(used),
                capacity: max,
            })
        }),
    }
}

/// A container's use of `resource` (memory working set, or writable layer plus logs).
fn container_usage(stats: &crate::stats::summary::ContainerStats, resource: &str) -> i64 {
    match resource {
        "memory" => stats
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes)
            .unwrap_or(0) as i64,
        _ => used(stats.rootfs.as_ref()) + used(stats.logs.as_ref()),
    }
}

/// The pod's use of the starved resource, as upstream's rankers measure it.
fn pod_usage(stats: &PodStats, signal: Signal) -> i64 {
    match signal {
        Signal::MemoryAvailable => {
            let containers: i64 = stats
                .containers
                .iter()
                .map(|c| container_usage(c, "memory"))
                .sum();
            stats
                .memory
                .as_ref()
                .and_then(|m| m.working_set_bytes)
                .map_or(containers, |w| w as i64)
        }
        Signal::NodeFsAvailable | Signal::ImageFsAvailable => {
            used(stats.ephemeral_storage.as_ref())
        }
        Signal::PidAvailable => stats
            .process_stats
            .as_ref()
            .and_then(|p| p.process_count)
            .unwrap_or(0) as i64,
    }
}

/// Each container's request of `resource`: name, amount, and as written (`0` if none).
fn container_requests(pod: &Pod, resource: &str) -> Vec<(String, i64, String)> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let written = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .map_or_else(|| "0".to_owned(), |q| q.0.clone());
            let value = bytes(&written).unwrap_or(0);
            (c.name.clone(), value, written)
        })
        .collect()
}

/// The pod to evict for `crossed`, chosen as upstream ranks (see the module documentation),
/// among `pods` (the active, non-critical ones count), with upstream's message.
pub fn node_pressure(pods: &[Arc<Pod>], summary: &Summary, crossed: &Crossed) -> Option<Eviction> {
    let signal = crossed.threshold.signal;
    let resource = signal.resource();
    let candidates = pods.iter().filter_map(|pod| {
        let uid = pod.metadata.uid.as_deref()?;
        if is_critical(pod) || pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let stats = summary.pods.iter().find(|p| p.pod_ref.uid == uid)?;
        let usage = pod_usage(stats, signal);
        // The pod's request as admission counts it (init containers, sidecars, overhead).
        let request = skiff_api::scheduling::pod_requests(pod)
            .get(resource)
            .copied()
            .unwrap_or(0);
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        Some((pod, stats, usage, request, priority))
    });
    let (pod, stats, ..) = candidates.min_by_key(|(_, _, usage, request, priority)| {
        if signal == Signal::PidAvailable {
            // Upstream `rankPIDPressure`: priority, then the most processes.
            (false, *priority, -usage)
        } else {
            // `exceedsRequests`, then priority, then use beyond the request.
            (usage <= request, *priority, -(usage - request))
        }
    })?;
    let mut message = format!("The node was low on resource: {resource}. ");
    let (threshold, available) = match (&crossed.threshold.amount, signal) {
        (_, Signal::PidAvailable) => (
            crossed.quantity.to_string(),
            crossed.observed.available.to_string(),
        ),
        (crate::pressure::Amount::Quantity { value, written }, _) => (
            quantity_string(*value, written),
            quantity_string(crossed.observed.available as i64, "Ki"),
        ),
        (crate::pressure::Amount::Percent(_), _) => (
            quantity_string(crossed.quantity, "Ki"),
            quantity_string(crossed.observed.available as i64, "Ki"),
        ),
    };
    message.push_str(&format!(
        "Threshold quantity: {threshold}, available: {available}. "
    ));
    if signal != Signal::PidAvailable {
        for (name, request, written) in container_requests(pod, resource) {
            let Some(cs) = stats.containers.iter().find(|c| c.name == name) else {
                continue;
            };
            let usage = container_usage(cs, resource);
            if usage > request {
                message.push_str(&format!(
                    "Container {name} was using {}, request is {written}, has larger consumption of {resource}. ",
                    quantity_string(usage, "Ki")
                ));
            }
        }
    }
    Some(Eviction {
        uid: pod.metadata.uid.clone()?,
        message,
    })
}

/// The node's eviction thresholds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Evict at once.
    pub hard: Thresholds,
    /// Evict once crossed for their grace period.
    pub soft: Thresholds,
    /// The longest grace period of a pod evicted for a soft threshold.
    pub max_pod_grace: Duration,
}

/// The thresholds to act on now (upstream `thresholdsMetGracePeriod`): every crossed hard
/// one, and the soft ones crossed continuously for their grace period. `since` remembers
/// when each soft threshold was first seen crossed, and forgets those no longer crossed.
pub fn due<'a>(
    hard: Vec<Crossed<'a>>,
    soft: Vec<Crossed<'a>>,
    since: &mut std::collections::HashMap<Signal, tokio::time::Instant>,
    now: tokio::time::Instant,
) -> Vec<Crossed<'a>> {
    since.retain(|signal, _| soft.iter().any(|c| c.threshold.signal == *signal));
    let mut out = hard;
    for crossed in soft {
        let first = *since.entry(crossed.threshold.signal).or_insert(now);
        let grace = crossed.threshold.grace.unwrap_or_default();
        if now.duration_since(first) >= grace {
            out.push(crossed);
        }
    }
    out.sort_by_key(|c| c.threshold.signal);
    out
}

/// Measure and judge every [`HOUSEKEEPING`] until `shutdown`, evicting what is over its
/// local storage limits, then, if a hard threshold is crossed, one pod to relieve it.
pub async fn run(
    stats: Arc<Provider>,
    limits: Limits,
    manager: Arc<PodManager>,
    recorder: Recorder,
    shutdown: CancellationToken,
) {
    let mut soft_since = std::collections::HashMap::new();
    let evict = |pod: &Pod, eviction: &Eviction, grace: Duration| {
        let termination = Termination {
            reason: REASON.to_owned(),
            message: eviction.message.clone(),
            grace,
        };
        let evicted = manager.evict(&eviction.uid, termination);
        if evicted {
            tracing::info!(pod = ?pod.metadata.name, message = %eviction.message, "evicting pod");
            recorder.publish(
                &skiff_runtime::events::reference(pod),
                EventType::Warning,
                REASON,
                &eviction.message,
            );
        }
        evicted
    };
    loop {
        stats.housekeeping().await;
        match stats.summary().await {
            Ok(summary) => {
                let pods = stats.pods();
                // The image filesystem is the node filesystem unless the runtime's root is
                // on another device (upstream's `dedicatedImageFs`).
                let dedicated = match (
                    summary.node.fs.as_ref(),
                    summary
                        .node
                        .runtime
                        .as_ref()
                        .and_then(|r| r.image_fs.as_ref()),
                ) {
                    (Some(node), Some(image)) => node.capacity_bytes != image.capacity_bytes,
                    _ => false,
                };
                let mut evicted = false;
                for eviction in local_storage(&pods, &summary, dedicated) {
                    if let Some(pod) = pods
                        .iter()
                        .find(|p| p.metadata.uid.as_deref() == Some(eviction.uid.as_str()))
                    {
                        evicted |= evict(pod, &eviction, GRACE);
                    }
                }
                // Upstream: local storage evictions, when any, are this round's reclaim.
                let observed = observations(&summary);
                let due = due(
                    limits.hard.crossed(&observed),
                    limits.soft.crossed(&observed),
                    &mut soft_since,
                    tokio::time::Instant::now(),
                );
                if let (false, Some(crossed)) = (evicted, due.first()) {
                    let active: Vec<Arc<Pod>> =
                        manager.admitted().into_iter().map(|(pod, _)| pod).collect();
                    match node_pressure(&active, &summary, crossed) {
                        Some(eviction) => {
                            if let Some(pod) = active
                                .iter()
                                .find(|p| p.metadata.uid.as_deref() == Some(eviction.uid.as_str()))
                            {
                                // Soft: the pod's own grace period, at most the
                                // configured longest (upstream's override).
                                let grace = match crossed.threshold.grace {
                                    None => GRACE,
                                    Some(_) => pod
                                        .spec
                                        .as_ref()
                                        .and_then(|s| s.termination_grace_period_seconds)
                                        .map_or(limits.max_pod_grace, |own| {
                                            limits
                                                .max_pod_grace
                                                .min(Duration::from_secs(own.max(0) as u64))
                                        }),
                                };
                                evict(pod, &eviction, grace);
                            }
                        }
                        None => tracing::debug!(
                            signal = crossed.threshold.signal.name(),
                            "eviction threshold crossed, but no pod can be evicted"
                        ),
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading stats for eviction failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HOUSEKEEPING) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::{ContainerStats, PodReference, PodStats, VolumeStats};
    use serde_json::{Value, json};

    fn pod(uid: &str, spec: Value, annotations: Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": uid, "namespace": "default", "uid": uid, "annotations": annotations },
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn fs(bytes: u64) -> Option<FsStats> {
        Some(FsStats {
            used_bytes: Some(bytes),
            ..Default::default()
        })
    }

    fn stats(
        uid: &str,
        volumes: &[(&str, u64)],
        containers: &[(&str, u64, u64)],
        total: u64,
    ) -> PodStats {
        PodStats {
            pod_ref: PodReference {
                name: uid.into(),
                namespace: "default".into(),
                uid: uid.into(),
            },
            volume_stats: volumes
                .iter()
                .map(|(name, used)| VolumeStats {
                    fs: fs(*used).unwrap(),
                    name: (*name).into(),
                    pvc_ref: None,
                })
                .collect(),
            containers: containers
                .iter()
                .map(|(name, rootfs, logs)| ContainerStats {
                    name: (*name).into(),
                    rootfs: fs(*rootfs),
                    logs: fs(*logs),
                    ..Default::default()
                })
                .collect(),
            ephemeral_storage: fs(total),
            ..Default::default()
        }
    }

    fn summary(pods: Vec<PodStats>) -> Summary {
        Summary {
            pods,
            ..Default::default()
        }
    }

    const MI: u64 = 1 << 20;

    /// A pod with one container `main` requesting `request` of memory (none if empty).
    fn memory_pod(uid: &str, request: &str, priority: i32, annotations: Value) -> Arc<Pod> {
        let resources = if request.is_empty() {
            json!({})
        } else {
            json!({ "requests": { "memory": request } })
        };
        pod(
            uid,
            json!({ "priority": priority, "containers": [
                { "name": "main", "image": "busybox", "resources": resources }
            ]}),
            annotations,
        )
    }

    fn using_memory(uid: &str, working_set: u64) -> PodStats {
        let memory = Some(crate::stats::summary::MemoryStats {
            working_set_bytes: Some(working_set),
            ..Default::default()
        });
        PodStats {
            pod_ref: PodReference {
                name: uid.into(),
                namespace: "default".into(),
                uid: uid.into(),
            },
            containers: vec![ContainerStats {
                name: "main".into(),
                memory: memory.clone(),
                ..Default::default()
            }],
            memory,
            ..Default::default()
        }
    }

    #[test]
    fn memory_pressure_evicts_by_upstreams_ranking_with_its_message() {
        let thresholds = Thresholds::parse("memory.available<100Mi").unwrap();
        let observed = Observations {
            memory: Some(Observation {
                available: 50 * MI,
                capacity: 1024 * MI,
            }),
            ..Default::default()
        };
        let crossed = thresholds.crossed(&observed);
        let crossed = &crossed[0];
        let mut pods = vec![
            memory_pod("within", "500Mi", 0, json!({})),
            memory_pod("hog", "", 0, json!({})),
            memory_pod("important-hog", "", 1000, json!({})),
            memory_pod("cheap", "100Mi", -10, json!({})),
            memory_pod(
                "static",
                "",
                0,
                json!({ "kubernetes.io/config.source": "file" }),
            ),
        ];
        let summary = summary(vec![
            using_memory("within", 200 * MI),
            using_memory("hog", 300 * MI),
            using_memory("important-hog", 900 * MI),
            using_memory("cheap", 50 * MI),
            using_memory("static", 2048 * MI),
        ]);
        let first = node_pressure(&pods, &summary, crossed).unwrap();
        assert_eq!(
            first.uid, "hog",
            "over its request and lowest priority first"
        );
        assert_eq!(
            first.message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container main was using 300Mi, request is 0, has larger consumption of memory. "
        );
        let mut order = vec![first.uid];
        loop {
            pods.retain(|p| p.metadata.uid.as_deref() != order.last().map(String::as_str));
            match node_pressure(&pods, &summary, crossed) {
                Some(next) => order.push(next.uid),
                None => break,
            }
        }
        // Over-request pods before priority; the critical static pod never.
        assert_eq!(order, ["hog", "important-hog", "cheap", "within"]);
    }

    #[test]
    fn soft_thresholds_act_after_their_grace_period_and_hard_ones_at_once() {
        let hard = Thresholds::parse("memory.available<100Mi").unwrap();
        let soft = Thresholds::soft("memory.available<1Gi", "memory.available=1m").unwrap();
        let low = |available: u64| Observations {
            memory: Some(Observation {
                available,
                capacity: 8192 * MI,
            }),
            ..Default::default()
        };
        let mut since = std::collections::HashMap::new();
        let t0 = tokio::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let signals = |d: Vec<Crossed>| -> Vec<Option<Duration>> {
            d.iter().map(|c| c.threshold.grace).collect()
        };
        // 500Mi: only the soft threshold, not yet for a minute.
        let o = low(500 * MI);
        assert!(due(hard.crossed(&o), soft.crossed(&o), &mut since, at(0)).is_empty());
        assert!(due(hard.crossed(&o), soft.crossed(&o), &mut since, at(59)).is_empty());
        assert_eq!(
            signals(due(hard.crossed(&o), soft.crossed(&o), &mut since, at(60))),
            [Some(Duration::from_secs(60))]
        );
        // Recovering resets the clock.
        let fine = low(2048 * MI);
        assert!(due(hard.crossed(&fine), soft.crossed(&fine), &mut since, at(61)).is_empty());
        assert!(due(hard.crossed(&o), soft.crossed(&o), &mut since, at(62)).is_empty());
        // 50Mi: the hard threshold acts at once.
        let o = low(50 * MI);
        assert_eq!(
            signals(due(hard.crossed(&o), soft.crossed(&o), &mut since, at(63))),
            [None]
        );
    }

    #[test]
    fn the_summary_gives_every_signal() {
        let mut s = summary(vec![]);
        s.node.memory = Some(crate::stats::summary::MemoryStats {
            available_bytes: Some(300 * MI),
            working_set_bytes: Some(700 * MI),
            ..Default::default()
        });
        s.node.fs = Some(FsStats {
            available_bytes: Some(10),
            capacity_bytes: Some(100),
            ..Default::default()
        });
        s.node.rlimit = Some(crate::stats::summary::RlimitStats {
            maxpid: Some(4096),
            curproc: Some(96),
            ..Default::default()
        });
        let o = observations(&s);
        assert_eq!(
            o.memory,
            Some(Observation {
                available: 300 * MI,
                capacity: 1000 * MI
            })
        );
        let fs = Some(Observation {
            available: 10,
            capacity: 100,
        });
        assert_eq!(o.nodefs, fs);
        assert_eq!(o.imagefs, fs, "no image filesystem of its own: the node's");
        assert_eq!(
            o.pid,
            Some(Observation {
                available: 4000,
                capacity: 4096
            })
        );
    }

    #[test]
    fn quantities_print_like_go() {
        assert_eq!(quantity_string(1 << 20, "1Mi"), "1Mi");
        assert_eq!(quantity_string(3 << 20, "1Mi"), "3Mi");
        assert_eq!(quantity_string(1536 << 20, "1.5Gi"), "1536Mi");
        assert_eq!(quantity_string(1000, "1Ki"), "1000");
        assert_eq!(quantity_string(2_000_000, "2000000"), "2M");
        assert_eq!(quantity_string(1_500_000, "1500k"), "1500k");
        assert_eq!(quantity_string(1_048_576, "1048576"), "1048576");
        assert_eq!(quantity_string(0, "0"), "0");
    }

    #[test]
    fn an_empty_dir_over_its_size_limit_is_evicted_with_upstreams_message() {
        let p = pod(
            "u1",
            json!({ "containers": [{ "name": "c" }], "volumes": [
                { "name": "scratch", "emptyDir": { "sizeLimit": "1Mi" } },
                { "name": "unbounded", "emptyDir": {} },
            ] }),
            json!({}),
        );
        let within = summary(vec![stats(
            "u1",
            &[("scratch", MI), ("unbounded", 50 * MI)],
            &[],
            51 * MI,
        )]);
        assert!(
            local_storage(std::slice::from_ref(&p), &within, false).is_empty(),
            "equal is within"
        );
        let over = summary(vec![stats("u1", &[("scratch", MI + 4096)], &[], MI)]);
        assert_eq!(
            local_storage(&[p], &over, false),
            [Eviction {
                uid: "u1".into(),
                message: "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ".into(),
            }]
        );
    }

    #[test]
    fn the_pod_total_is_judged_against_its_containers_limits() {
        let p = pod(
            "u2",
            json!({ "containers": [
                { "name": "a", "resources": { "limits": { "ephemeral-storage": "1Mi" } } },
                { "name": "b", "resources": { "limits": { "ephemeral-storage": "2Mi" } } },
            ] }),
            json!({}),
        );
        let over = summary(vec![stats(
            "u2",
            &[],
            &[("a", 0, 0), ("b", 0, 0)],
            3 * MI + 1,
        )]);
        assert_eq!(
            local_storage(std::slice::from_ref(&p), &over, false)[0].message,
            "Pod ephemeral local storage usage exceeds the total limit of containers 3Mi. "
        );
        let fine = summary(vec![stats(
            "u2",
            &[],
            &[("a", MI / 2, 0), ("b", MI, 0)],
            3 * MI,
        )]);
        assert!(local_storage(&[p], &fine, false).is_empty());
    }

    #[test]
    fn a_container_over_its_own_limit_counts_layer_and_logs() {
        let p = pod(
            "u3",
            json!({ "containers": [
                { "name": "small", "resources": { "limits": { "ephemeral-storage": "1Mi" } } },
                { "name": "free" },
            ] }),
            json!({}),
        );
        // The pod total (1Mi: only `small` sets a limit) is not exceeded; the container is.
        let over = summary(vec![stats(
            "u3",
            &[],
            &[("small", MI / 2 + 1, MI / 2), ("free", 100 * MI, 0)],
            MI,
        )]);
        assert_eq!(
            local_storage(std::slice::from_ref(&p), &over, false)[0].message,
            "Container small exceeded its local ephemeral storage limit \"1Mi\". "
        );
        assert!(
            local_storage(&[p], &over, true).is_empty(),
            "with a dedicated image filesystem the writable layer is not counted"
        );
    }

    #[test]
    fn critical_terminating_and_unmeasured_pods_are_left_alone() {
        let spec = json!({ "containers": [{ "name": "c" }], "volumes": [{ "name": "v", "emptyDir": { "sizeLimit": "1Ki" } }] });
        let over = |uid: &str| stats(uid, &[("v", MI)], &[], MI);
        let static_pod = pod(
            "s",
            spec.clone(),
            json!({ "kubernetes.io/config.source": "file" }),
        );
        let mut critical = (*pod("c", spec.clone(), json!({}))).clone();
        critical.spec.as_mut().unwrap().priority = Some(2_000_001_000);
        let mut leaving = (*pod("d", spec.clone(), json!({}))).clone();
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let unmeasured = pod("n", spec, json!({}));
        let s = summary(vec![over("s"), over("c"), over("d")]);
        assert!(
            local_storage(
                &[
                    static_pod,
                    Arc::new(critical),
                    Arc::new(leaving),
                    unmeasured
                ],
                &s,
                false
            )
            .is_empty()
        );
    }
}
