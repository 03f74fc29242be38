//! The horizontal pod autoscaler (upstream pkg/controller/podautoscaler, autoscaling/v2):
//! every `--horizontal-pod-autoscaler-sync-period` it reads the target's scale subresource,
//! the pods its selector picks and their usage from the resource metrics API
//! (`metrics.k8s.io/v1beta1` PodMetrics), computes the replica count that brings each
//! Resource/ContainerResource metric to its target (utilization of requests, or average
//! value) with upstream's tolerance and its handling of missing and unready pods, then
//! applies `behavior`: stabilization windows (scale-down default from
//! `--horizontal-pod-autoscaler-downscale-stabilization`) and rate policies (default: double or
//! +4 pods per 15 s up, anything per 15 s down), clamped to `minReplicas..maxReplicas`.
//! Status reports the metrics and the AbleToScale, ScalingActive and ScalingLimited
//! conditions; when no metrics API answers, ScalingActive says so and replicas are kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricTarget, MetricValueStatus,
    ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use skiff_api::quantity::Quantity;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::{Informer, ObjectKey, WorkQueue};
use tokio::time::Instant;

use crate::context::{Context, synced};
use crate::{Config, Error, Result, pods};

/// Start the controller.
pub async fn start(ctx: Context) {
    let hpas = ctx.informer::<HorizontalPodAutoscaler>();
    let pods = ctx.informer::<Pod>();
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&hpas, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    if !ctx.wait_synced(vec![synced(&hpas), synced(&pods)]).await {
        return;
    }
    {
        let hpas = hpas.clone();
        controller::resync_every(&queue, ctx.config.hpa_sync_period, &ctx.stop, move || {
            hpas.keys()
        });
    }
    let reconciler = Arc::new(Autoscaler {
        client: ctx.client.clone(),
        ctx: ctx.clone(),
        config: ctx.config.clone(),
        hpas,
        pods,
        recommendations: Mutex::new(HashMap::new()),
        scale_events: Mutex::new(HashMap::new()),
        recorder: ctx.recorder("horizontal-pod-autoscaler"),
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

struct Autoscaler {
    client: Client,
    ctx: Context,
    config: Arc<Config>,
    hpas: Informer<HorizontalPodAutoscaler>,
    pods: Informer<Pod>,
    /// Recent (time, recommendation) per autoscaler, for stabilization windows.
    recommendations: Mutex<HashMap<ObjectKey, Vec<(Instant, i32)>>>,
    /// Recent (time, replica change) per autoscaler, for rate policies.
    scale_events: Mutex<HashMap<ObjectKey, Vec<(Instant, i32)>>>,
    recorder: Recorder,
}

fn metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// One pod's view for a metric: its usage and request of the resource.
#[derive(Debug, Clone, Default)]
pub struct PodSample {
    /// Usage, if the metrics API reported it.
    pub usage: Option<Quantity>,
    /// The summed request of the resource.
    pub request: Quantity,
    /// Ready and past its initialization (unready pods do not count when scaling up).
    pub ready: bool,
}

/// What a metric recommends.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Desired replicas.
    pub replicas: i32,
    /// Observed utilization percentage (for Utilization targets).
    pub utilization: Option<i32>,
    /// Observed average value.
    pub average: Quantity,
}

/// Upstream `GetResourceReplicas`/`calcPlainMetricReplicas`: replicas that bring the average
/// to the target, with missing pods assumed at 100 % (scale-down) or 0 % (scale-up) of target
/// and unready pods ignored when scaling up.
pub fn replicas_for(
    samples: &[PodSample],
    current: i32,
    target: &MetricTarget,
    tolerance: f64,
) -> std::result::Result<Recommendation, String> {
    let utilization_target = target.average_utilization;
    let value_target = target
        .average_value
        .as_ref()
        .and_then(|q| Quantity::parse(&q.0).ok());
    let ready: Vec<&PodSample> = samples
        .iter()
        .filter(|s| s.usage.is_some() && s.ready)
        .collect();
    let missing = samples.iter().filter(|s| s.usage.is_none()).count();
    let unready = samples
        .iter()
        .filter(|s| s.usage.is_some() && !s.ready)
        .count();
    if ready.is_empty() && unready == 0 {
        return Err("no metrics returned from resource metrics API".into());
    }
    let usage: i128 = ready.iter().map(|s| s.usage.unwrap_or_default().0).sum();
    let requests: i128 = ready.iter().map(|s| s.request.0).sum();
    let ratio_of = |usage: i128,
                    requests: i128,
                    count: usize|
     -> std::result::Result<f64, String> {
        match (utilization_target, value_target) {
            (Some(t), _) => {
                if requests == 0 {
                    return Err("missing request for resource".into());
                }
                Ok((usage as f64 / requests as f64 * 100.0) / f64::from(t))
            }
            (None, Some(v)) => {
                if v.0 == 0 || count == 0 {
                    return Err("invalid average value target".into());
                }
                Ok(usage as f64 / count as f64 / v.0 as f64)
            }
            _ => Err("the metric target has neither averageUtilization nor averageValue".into()),
        }
    };
    let ready_count = ready.len();
    let ratio = if ready_count == 0 {
        0.0
    } else {
        ratio_of(usage, requests, ready_count)?
    };
    let utilization = (utilization_target.is_some() && requests > 0)
        .then(|| (usage as f64 / requests as f64 * 100.0).round() as i32);
    let average = Quantity(if ready_count == 0 {
        0
    } else {
        usage / ready_count as i128
    });
    let done = |replicas: i32| {
        Ok(Recommendation {
            replicas,
            utilization,
            average,
        })
    };
    if missing == 0 && unready == 0 {
        if (ratio - 1.0).abs() <= tolerance {
            return done(current);
        }
        return done((ratio * ready_count as f64).ceil() as i32);
    }
    // Rebalance: missing pods count against the direction of the change.
    let mut usage2 = usage;
    let mut requests2 = requests;
    let per_pod_request = if ready_count > 0 {
        requests / ready_count as i128
    } else {
        samples.first().map_or(0, |s| s.request.0)
    };
    let scaling_up = ratio > 1.0;
    for s in samples.iter().filter(|s| s.usage.is_none()) {
        let request = if s.request.0 > 0 {
            s.request.0
        } else {
            per_pod_request
        };
        requests2 += request;
        if !scaling_up {
            usage2 += match (utilization_target, value_target) {
                (Some(t), _) => request * i128::from(t) / 100,
                (None, Some(v)) => v.0,
                _ => 0,
            };
        }
    }
    let mut counted = ready_count + missing;
    if scaling_up {
        for s in samples.iter().filter(|s| s.usage.is_some() && !s.ready) {
            requests2 += if s.request.0 > 0 {
                s.request.0
            } else {
                per_pod_request
            };
            counted += 1;
        }
    }
    let ratio2 = ratio_of(usage2, requests2, counted)?;
    if (ratio2 - 1.0).abs() <= tolerance
        || (ratio < 1.0 && ratio2 > 1.0)
        || (ratio > 1.0 && ratio2 < 1.0)
    {
        return done(current);
    }
    let replicas = (ratio2 * counted as f64).ceil() as i32;
    // Never move against the direction the ready pods asked for.
    if (ratio < 1.0 && replicas > current) || (ratio > 1.0 && replicas < current) {
        return done(current);
    }
    done(replicas)
}

fn default_policies(up: bool, config: &Config) -> HPAScalingRules {
    if up {
        HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Max".into()),
            policies: Some(vec![
                HPAScalingPolicy {
                    type_: "Percent".into(),
                    value: 100,
                    period_seconds: 15,
                },
                HPAScalingPolicy {
                    type_: "Pods".into(),
                    value: 4,
                    period_seconds: 15,
                },
            ]),
            tolerance: None,
        }
    } else {
        HPAScalingRules {
            stabilization_window_seconds: Some(config.hpa_downscale_stabilization.as_secs() as i32),
            select_policy: Some("Max".into()),
            policies: Some(vec![HPAScalingPolicy {
                type_: "Percent".into(),
                value: 100,
                period_seconds: 15,
            }]),
            tolerance: None,
        }
    }
}

/// Upstream `calculateScaleUpLimitWithScalingRules` / `…ScaleDown…`: the bound the rate
/// policies put on a change from `current`, given the changes made within their periods.
pub fn rate_limit(
    rules: &HPAScalingRules,
    up: bool,
    current: i32,
    changes: &[(Duration, i32)],
) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let policies = rules.policies.clone().unwrap_or_default();
    let mut limits = Vec::new();
    for p in &policies {
        let period = Duration::from_secs(p.period_seconds.max(0) as u64);
        let moved: i32 = changes
            .iter()
            .filter(|(age, _)| *age < period)
            .map(|(_, c)| *c)
            .filter(|c| if up { *c > 0 } else { *c < 0 })
            .sum();
        let start = current - moved;
        let limit = match (p.type_.as_str(), up) {
            ("Pods", true) => start + p.value,
            ("Pods", false) => start - p.value,
            ("Percent", true) => {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
            ("Percent", false) => {
                (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)).ceil() as i32
            }
            _ => continue,
        };
        limits.push(limit);
    }
    if limits.is_empty() {
        return current;
    }
    let most = if up {
        *limits.iter().max().unwrap_or(&current)
    } else {
        *limits.iter().min().unwrap_or(&current)
    };
    let least = if up {
        *limits.iter().min().unwrap_or(&current)
    } else {
        *limits.iter().max().unwrap_or(&current)
    };
    if select == "Min" { least } else { most }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(Timestamp::now())),
    }
}

fn merge_conditions(
    old: &[HorizontalPodAutoscalerCondition],
    new: Vec<HorizontalPodAutoscalerCondition>,
) -> Vec<HorizontalPodAutoscalerCondition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        })
        .collect()
}

impl Reconciler for Autoscaler {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        "horizontal-pod-autoscaler-controller"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(hpa) = self.hpas.get(key) else {
            self.recommendations.lock().remove(key);
            self.scale_events.lock().remove(key);
            return Ok(Action::Done);
        };
        let spec = hpa.spec.clone().unwrap_or_default();
        let target = reference(hpa.as_ref());
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let mut conditions = Vec::new();
        let old_status = hpa.status.clone().unwrap_or_default();
        let tref = &spec.scale_target_ref;
        let api_version = tref.api_version.clone().unwrap_or_default();
        let resources = self.ctx.cached_resources().await?;
        let Some(resource) = resources
            .for_kind(&api_version, &tref.kind)
            .filter(|r| r.subresources.iter().any(|s| s == "scale"))
            .cloned()
        else {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: no matches for kind {:?} in group {:?}",
                tref.kind,
                api_version.split('/').next().unwrap_or("")
            );
            self.recorder
                .publish(&target, EventType::Warning, "FailedGetScale", &message);
            conditions.push(condition("AbleToScale", "False", "FailedGetScale", message));
            return self
                .write_status(
                    &hpa,
                    old_status.current_replicas.unwrap_or(0),
                    old_status.desired_replicas,
                    None,
                    conditions,
                    old_status.last_scale_time.clone(),
                )
                .await;
        };
        let scale_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, &resource.api);
        let scale = match scale_api.get_scale(&tref.name).await {
            Ok(s) => s,
            Err(e) => {
                let message = format!(
                    "the HPA controller was unable to get the target's current scale: {}",
                    crate::replicaset::api_message(&e)
                );
                self.recorder
                    .publish(&target, EventType::Warning, "FailedGetScale", &message);
                conditions.push(condition("AbleToScale", "False", "FailedGetScale", message));
                return self
                    .write_status(
                        &hpa,
                        old_status.current_replicas.unwrap_or(0),
                        old_status.desired_replicas,
                        None,
                        conditions,
                        old_status.last_scale_time.clone(),
                    )
                    .await;
            }
        };
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        conditions.push(condition(
            "AbleToScale",
            "True",
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        ));
        let mut metric_statuses = None;
        let (desired, reason) = if current == 0 && min != 0 {
            conditions.push(condition(
                "ScalingActive",
                "False",
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            ));
            (0, String::new())
        } else if current > max {
            (
                max,
                "Current number of replicas above Spec.MaxReplicas".to_owned(),
            )
        } else if current < min {
            (
                min,
                "Current number of replicas below Spec.MinReplicas".to_owned(),
            )
        } else {
            match self
                .compute(
                    key,
                    &spec.metrics.clone().unwrap_or_default(),
                    &selector,
                    current,
                )
                .await
            {
                Ok((proposal, metric, statuses)) => {
                    metric_statuses = Some(statuses);
                    conditions.push(condition("ScalingActive", "True", "ValidMetricFound", format!("the HPA was able to successfully calculate a replica count from {metric}")));
                    let (normalized, limited) =
                        self.normalize(key, &hpa, current, proposal, min, max);
                    conditions.push(limited);
                    let reason = if normalized > current {
                        format!("{metric} above target")
                    } else {
                        "All metrics below target".to_owned()
                    };
                    (normalized, reason)
                }
                Err((reason, message)) => {
                    self.recorder
                        .publish(&target, EventType::Warning, &reason, &message);
                    conditions.push(condition(
                        "ScalingActive",
                        "False",
                        &reason,
                        format!("the HPA was unable to compute the replica count: {message}"),
                    ));
                    (current, String::new())
                }
            }
        };
        let mut last_scale = old_status.last_scale_time.clone();
        if desired != current {
            let patch = json!({ "spec": { "replicas": desired } });
            match scale_api
                .patch_scale(&tref.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.recorder.publish(
                        &target,
                        EventType::Normal,
                        "SuccessfulRescale",
                        &format!("New size: {desired}; reason: {reason}"),
                    );
                    self.scale_events
                        .lock()
                        .entry(key.clone())
                        .or_default()
                        .push((Instant::now(), desired - current));
                    last_scale = Some(Time(Timestamp::now()));
                    conditions[0] = condition(
                        "AbleToScale",
                        "True",
                        "SucceededRescale",
                        format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                    );
                }
                Err(e) => {
                    let message = format!(
                        "New size: {desired}; reason: {reason}; error: {}",
                        crate::replicaset::api_message(&e)
                    );
                    self.recorder
                        .publish(&target, EventType::Warning, "FailedRescale", &message);
                    conditions[0] = condition(
                        "AbleToScale",
                        "False",
                        "FailedUpdateScale",
                        format!(
                            "the HPA controller was unable to update the target scale: {}",
                            crate::replicaset::api_message(&e)
                        ),
                    );
                }
            }
        } else if conditions[0].reason.as_deref() == Some("SucceededGetScale") {
            conditions[0] = condition(
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            );
        }
        self.write_status(
            &hpa,
            current,
            desired,
            metric_statuses,
            conditions,
            last_scale,
        )
        .await
    }
}

impl Autoscaler {
    /// The largest recommendation over every metric (upstream `computeReplicasForMetrics`).
    async fn compute(
        &self,
        key: &ObjectKey,
        metrics: &[MetricSpec],
        selector: &str,
        current: i32,
    ) -> std::result::Result<(i32, String, Vec<MetricStatus>), (String, String)> {
        let sel = skiff_api::selector::parse_label_selector(selector).map_err(|e| {
            (
                "InvalidSelector".to_owned(),
                format!(
                    "couldn't convert selector into a corresponding internal selector object: {e}"
                ),
            )
        })?;
        let selected: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| {
                sel.matches(&pods::labels(&p.metadata))
                    && p.metadata.deletion_timestamp.is_none()
                    && pods::phase(p) != "Failed"
            })
            .collect();
        let metrics_api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, &metrics_resource());
        let mut usage_cache: Option<HashMap<String, Value>> = None;
        let mut best: Option<(i32, String)> = None;
        let mut statuses = Vec::new();
        if metrics.is_empty() {
            return Err((
                "FailedGetResourceMetric".into(),
                "no metrics configured".into(),
            ));
        }
        for m in metrics {
            let (resource, container, target) = match (
                m.type_.as_str(),
                &m.resource,
                &m.container_resource,
            ) {
                ("Resource", Some(r), _) => (r.name.clone(), None, r.target.clone()),
                ("ContainerResource", _, Some(c)) => {
                    (c.name.clone(), Some(c.container.clone()), c.target.clone())
                }
                (other, _, _) => {
                    let reason = match other {
                        "Pods" => "FailedGetPodsMetric",
                        "Object" => "FailedGetObjectMetric",
                        "External" => "FailedGetExternalMetric",
                        _ => "InvalidMetricSourceType",
                    };
                    return Err((
                        reason.into(),
                        format!(
                            "unable to get {other} metric: no custom or external metrics API (custom.metrics.k8s.io, external.metrics.k8s.io) is served by this cluster"
                        ),
                    ));
                }
            };
            if usage_cache.is_none() {
                let list = metrics_api
                    .list(&ListParams::default().labels(selector))
                    .await
                    .map_err(|e| ("FailedGetResourceMetric".to_owned(), format!("unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {}", crate::replicaset::api_message(&e))))?;
                usage_cache = Some(
                    list.items
                        .into_iter()
                        .map(|o| (o.name_any(), o.data))
                        .collect(),
                );
            }
            let by_pod = usage_cache.as_ref().expect("filled above");
            if by_pod.is_empty() {
                return Err((
                    "FailedGetResourceMetric".into(),
                    format!(
                        "unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
                    ),
                ));
            }
            let mut samples = Vec::new();
            for pod in &selected {
                let containers = pod
                    .spec
                    .as_ref()
                    .map(|s| s.containers.clone())
                    .unwrap_or_default();
                let mut request = Quantity::ZERO;
                for c in containers
                    .iter()
                    .filter(|c| container.as_ref().is_none_or(|n| *n == c.name))
                {
                    match c
                        .resources
                        .as_ref()
                        .and_then(|r| r.requests.as_ref())
                        .and_then(|r| r.get(&resource))
                    {
                        Some(q) => request += Quantity::parse(&q.0).unwrap_or_default(),
                        None if target.type_ == "Utilization" => {
                            return Err((
                                "FailedGetResourceMetric".into(),
                                format!(
                                    "missing request for {resource} in container {} of Pod {}",
                                    c.name,
                                    pod.name_any()
                                ),
                            ));
                        }
                        None => {}
                    }
                }
                let usage = by_pod.get(&pod.name_any()).map(|data| {
                    data.get("containers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|c| {
                            container
                                .as_ref()
                                .is_none_or(|n| c.get("name").and_then(Value::as_str) == Some(n))
                        })
                        .filter_map(|c| {
                            c.pointer(&format!("/usage/{resource}"))
                                .and_then(Value::as_str)
                                .and_then(|s| Quantity::parse(s).ok())
                        })
                        .fold(Quantity::ZERO, |a, b| a + b)
                });
                // Usage of pods that are not ready is not trusted when scaling up.
                samples.push(PodSample {
                    usage,
                    request,
                    ready: pods::is_ready(pod),
                });
            }
            let tolerance = self.config.hpa_tolerance;
            let rec = replicas_for(&samples, current, &target, tolerance).map_err(|e| {
                (
                    "FailedGetResourceMetric".to_owned(),
                    format!("failed to get {resource} utilization: {e}"),
                )
            })?;
            let label = if target.type_ == "Utilization" {
                format!("{resource} resource utilization (percentage of request)")
            } else {
                format!("{resource} resource")
            };
            statuses.push(MetricStatus {
                type_: m.type_.clone(),
                resource: Some(ResourceMetricStatus {
                    name: resource.clone(),
                    current: MetricValueStatus {
                        average_utilization: rec.utilization,
                        average_value: Some(K8sQuantity(rec.average.to_string())),
                        value: None,
                    },
                }),
                ..Default::default()
            });
            if best.as_ref().is_none_or(|(r, _)| rec.replicas > *r) {
                best = Some((rec.replicas, label));
            }
        }
        let (replicas, label) = best.expect("metrics is not empty");
        Ok((replicas, label, statuses))
    }

    /// Upstream `normalizeDesiredReplicasWithBehaviors`: stabilize, rate-limit, clamp.
    fn normalize(
        &self,
        key: &ObjectKey,
        hpa: &HorizontalPodAutoscaler,
        current: i32,
        proposal: i32,
        min: i32,
        max: i32,
    ) -> (i32, HorizontalPodAutoscalerCondition) {
        let behavior = hpa
            .spec
            .as_ref()
            .and_then(|s| s.behavior.clone())
            .unwrap_or_default();
        let mut up_rules = default_policies(true, &self.config);
        let mut down_rules = default_policies(false, &self.config);
        if let Some(u) = behavior.scale_up {
            up_rules = HPAScalingRules {
                stabilization_window_seconds: u
                    .stabilization_window_seconds
                    .or(up_rules.stabilization_window_seconds),
                select_policy: u.select_policy.or(up_rules.select_policy),
                policies: u.policies.or(up_rules.policies),
                tolerance: u.tolerance,
            };
        }
        if let Some(d) = behavior.scale_down {
            down_rules = HPAScalingRules {
                stabilization_window_seconds: d
                    .stabilization_window_seconds
                    .or(down_rules.stabilization_window_seconds),
                select_policy: d.select_policy.or(down_rules.select_policy),
                policies: d.policies.or(down_rules.policies),
                tolerance: d.tolerance,
            };
        }
        let now = Instant::now();
        let up_window =
            Duration::from_secs(up_rules.stabilization_window_seconds.unwrap_or(0).max(0) as u64);
        let down_window =
            Duration::from_secs(down_rules.stabilization_window_seconds.unwrap_or(0).max(0) as u64);
        let stabilized = {
            let mut recs = self.recommendations.lock();
            let history = recs.entry(key.clone()).or_default();
            let keep = up_window.max(down_window);
            history.retain(|(t, _)| now.duration_since(*t) <= keep);
            let mut up = proposal;
            let mut down = proposal;
            for (t, r) in history.iter() {
                let age = now.duration_since(*t);
                if age <= up_window {
                    up = up.min(*r);
                }
                if age <= down_window {
                    down = down.max(*r);
                }
            }
            history.push((now, proposal));
            current.max(up).min(down)
        };
        let changes: Vec<(Duration, i32)> = {
            let mut events = self.scale_events.lock();
            let e = events.entry(key.clone()).or_default();
            e.retain(|(t, _)| now.duration_since(*t) < Duration::from_secs(3600));
            e.iter()
                .map(|(t, c)| (now.duration_since(*t), *c))
                .collect()
        };
        let mut desired = stabilized;
        let mut limited = None;
        if desired > current {
            let limit = rate_limit(&up_rules, true, current, &changes);
            if desired > limit {
                desired = limit;
                limited = Some(condition(
                    "ScalingLimited",
                    "True",
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate"
                        .into(),
                ));
            }
        } else if desired < current {
            let limit = rate_limit(&down_rules, false, current, &changes);
            if desired < limit {
                desired = limit;
                limited = Some(condition(
                    "ScalingLimited",
                    "True",
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate"
                        .into(),
                ));
            }
        }
        if desired > max {
            desired = max;
            limited = Some(condition(
                "ScalingLimited",
                "True",
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count".into(),
            ));
        } else if desired < min {
            desired = min;
            limited = Some(condition(
                "ScalingLimited",
                "True",
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count".into(),
            ));
        }
        (
            desired,
            limited.unwrap_or_else(|| {
                condition(
                    "ScalingLimited",
                    "False",
                    "DesiredWithinRange",
                    "the desired count is within the acceptable range".into(),
                )
            }),
        )
    }

    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        current: i32,
        desired: i32,
        metrics: Option<Vec<MetricStatus>>,
        conditions: Vec<HorizontalPodAutoscalerCondition>,
        last_scale: Option<Time>,
    ) -> Result<Action> {
        let old = hpa.status.clone().unwrap_or_default();
        let status = HorizontalPodAutoscalerStatus {
            observed_generation: hpa.metadata.generation,
            current_replicas: Some(current),
            desired_replicas: desired,
            current_metrics: metrics.or(old.current_metrics.clone()),
            conditions: Some(merge_conditions(
                old.conditions.as_deref().unwrap_or(&[]),
                conditions,
            )),
            last_scale_time: last_scale,
        };
        if Some(&status) != hpa.status.as_ref() {
            let mut updated = hpa.clone();
            updated.status = Some(status);
            let api: Api<HorizontalPodAutoscaler> =
                Api::namespaced(self.client.clone(), &hpa.namespace().unwrap_or_default());
            match api
                .replace_status(&hpa.name_any(), &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(e) if crate::is_not_found(&e) => {}
                Err(e) => {
                    return Err(Error::Api {
                        action: format!("updating status of autoscaler {}", hpa.name_any()),
                        source: e,
                    });
                }
            }
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(usage: Option<&str>, request: &str, ready: bool) -> PodSample {
        PodSample {
            usage: usage.map(|u| Quantity::parse(u).unwrap()),
            request: Quantity::parse(request).unwrap(),
            ready,
        }
    }

    fn utilization(pct: i32) -> MetricTarget {
        MetricTarget {
            type_: "Utilization".into(),
            average_utilization: Some(pct),
            ..Default::default()
        }
    }

    #[test]
    fn replicas_follow_the_usage_ratio_outside_the_tolerance() {
        let samples = vec![
            sample(Some("400m"), "500m", true),
            sample(Some("400m"), "500m", true),
        ];
        // 80 % of request against a 50 % target: 2 × 1.6 = 3.2 → 4.
        let r = replicas_for(&samples, 2, &utilization(50), 0.1).unwrap();
        assert_eq!((r.replicas, r.utilization), (4, Some(80)));
        // Within 10 % of the target nothing changes.
        assert_eq!(
            replicas_for(&samples, 2, &utilization(75), 0.1)
                .unwrap()
                .replicas,
            2
        );
        let low = vec![
            sample(Some("50m"), "500m", true),
            sample(Some("50m"), "500m", true),
            sample(Some("50m"), "500m", true),
        ];
        assert_eq!(
            replicas_for(&low, 3, &utilization(50), 0.1)
                .unwrap()
                .replicas,
            1
        );
    }

    #[test]
    fn missing_pods_hold_back_a_scale_down() {
        // Ready pods suggest scaling down; the pod without metrics is assumed at target.
        let samples = vec![sample(Some("100m"), "1", true), sample(None, "1", true)];
        let r = replicas_for(&samples, 2, &utilization(50), 0.1).unwrap();
        assert_eq!(
            r.replicas, 2,
            "10 % and an assumed 50 % average 30 %: 2 × 0.6 = 1.2 → 2"
        );
        assert!(replicas_for(&[], 2, &utilization(50), 0.1).is_err());
    }

    #[test]
    fn rate_policies_bound_changes_within_their_period() {
        let cfg = Config::default();
        let up = default_policies(true, &cfg);
        assert_eq!(rate_limit(&up, true, 2, &[]), 6, "max(+100 %, +4)");
        assert_eq!(rate_limit(&up, true, 10, &[]), 20);
        assert_eq!(
            rate_limit(&up, true, 6, &[(Duration::from_secs(5), 4)]),
            6,
            "the 15 s period already used its budget from 2"
        );
        let down = default_policies(false, &cfg);
        assert_eq!(rate_limit(&down, false, 10, &[]), 0);
        let gentle = HPAScalingRules {
            policies: Some(vec![HPAScalingPolicy {
                type_: "Pods".into(),
                value: 1,
                period_seconds: 60,
            }]),
            select_policy: None,
            stabilization_window_seconds: None,
            tolerance: None,
        };
        assert_eq!(rate_limit(&gentle, false, 10, &[]), 9);
    }
}
