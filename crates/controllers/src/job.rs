//! The Job controller (upstream pkg/controller/job): runs pods until `completions` succeed
//! (NonIndexed: any `completions` successes; Indexed: one success per index 0..completions,
//! each pod carrying its index in an annotation, label, `JOB_COMPLETION_INDEX` and
//! hostname), at most `parallelism` at once, replacing failed pods with exponential backoff.
//! The job fails after `backoffLimit` failures, on `activeDeadlineSeconds`, by a
//! `podFailurePolicy` rule (FailJob, Ignore, Count, FailIndex), or when per-index limits
//! (`backoffLimitPerIndex`, `maxFailedIndexes`) are exceeded; `successPolicy` can complete it
//! early; `suspend` deletes its active pods until resumed.
//!
//! Counting is exactly-once like upstream: pods carry the `batch.kubernetes.io/job-tracking`
//! finalizer; a finished pod's uid first goes to `status.uncountedTerminatedPods`, then its
//! finalizer is removed, then it is counted. A finishing job gets `FailureTarget` or
//! `SuccessCriteriaMet` first, and `Failed` or `Complete` once its pods are gone.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicyRule, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::expectations::Expectations;
use skiff_runtime::owner;
use skiff_runtime::{Change, Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::replicaset::{api_message, pod_informer};
use crate::{During, Error, Result, pods};

/// The finalizer that keeps a pod until the controller counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The completion index of an Indexed job's pod (annotation and label).
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable with the completion index.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The controller name in `spec.managedBy` that this controller handles.
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Upstream `DefaultJobPodFailureBackOff` and its cap.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

const COMPONENT: &str = "job-controller";

/// Start the controller.
pub async fn start(ctx: Context) {
    let jobs = ctx.informer::<Job>();
    let pods = pod_informer(&ctx);
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    let expectations: Arc<Expectations<ObjectKey>> = Arc::new(Expectations::default());
    let finalizers: Arc<Expectations<ObjectKey>> = Arc::new(Expectations::default());
    controller::feed(&jobs, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    {
        let expectations = expectations.clone();
        let finalizers = finalizers.clone();
        controller::feed(&pods, &queue, &ctx.stop, move |c| {
            let pod = c.object();
            let Some(r) = owner::controller_of(&pod.metadata).filter(|r| r.kind == "Job") else {
                return Vec::new();
            };
            let key = ObjectKey::new(pod.namespace().unwrap_or_default(), r.name.clone());
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let released = match c {
                Change::Applied {
                    old: Some(old),
                    new,
                } => has_tracking_finalizer(old) && !has_tracking_finalizer(new),
                Change::Deleted(_) => true,
                Change::Applied { old: None, new } => !has_tracking_finalizer(new),
            };
            if released {
                finalizers.deletion_observed(&key, &uid);
            }
            match c {
                Change::Applied { old: None, new } if new.metadata.deletion_timestamp.is_none() => {
                    expectations.creation_observed(&key)
                }
                Change::Applied {
                    old: Some(old),
                    new,
                } if new.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none() =>
                {
                    expectations.deletion_observed(&key, &uid)
                }
                Change::Deleted(_) => expectations.deletion_observed(&key, &uid),
                _ => {}
            }
            vec![key]
        });
    }
    if !ctx.wait_synced(vec![synced(&jobs), synced(&pods)]).await {
        return;
    }
    let reconciler = Arc::new(JobController {
        client: ctx.client.clone(),
        jobs,
        pods,
        expectations,
        finalizers,
        recorder: ctx.recorder(COMPONENT),
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

struct JobController {
    client: Client,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    expectations: Arc<Expectations<ObjectKey>>,
    /// Pods whose tracking finalizer was removed but whose update was not seen yet: until
    /// it is, the cache would show them as finished-and-uncounted again.
    finalizers: Arc<Expectations<ObjectKey>>,
    recorder: Recorder,
}

/// Parse an index set like `1,3-5,7`.
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// Format an index set as upstream does (`1,3-5,7`).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// A pod's completion index.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(INDEX_KEY)?
        .parse()
        .ok()
}

fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn condition<'j>(status: &'j JobStatus, type_: &str) -> Option<&'j JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the job finished (Complete or Failed).
pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| condition(s, "Complete").is_some() || condition(s, "Failed").is_some())
}

fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
) -> bool {
    let now = Time(Timestamp::now());
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status == value
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return false;
        }
        if c.status != value {
            c.last_transition_time = Some(now.clone());
        }
        c.status = value.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(now);
        return true;
    }
    conditions.push(JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
    true
}

/// What a pod failure policy says about a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// Fail the whole job with this message.
    FailJob(String),
    /// Fail the pod's index (backoffLimitPerIndex).
    FailIndex,
    /// Not counted against the backoff limit.
    Ignore,
    /// Counted as usual.
    Count,
}

/// Evaluate `rules` against a failed pod (upstream `matchPodFailurePolicy`): the first rule
/// that matches decides; no match counts.
pub fn evaluate_policy(rules: &[PodFailurePolicyRule], pod: &Pod) -> PolicyAction {
    let statuses: Vec<_> = pod
        .status
        .as_ref()
        .map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for (index, rule) in rules.iter().enumerate() {
        let matched: Option<String> = if let Some(req) = &rule.on_exit_codes {
            statuses.iter().find_map(|cs| {
                if req.container_name.as_ref().is_some_and(|n| *n != cs.name) {
                    return None;
                }
                let code = cs.state.as_ref()?.terminated.as_ref()?.exit_code;
                // Exit code 0 never matches (upstream ignores successful containers).
                if code == 0 {
                    return None;
                }
                let listed = req.values.contains(&code);
                let hit = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                hit.then(|| {
                    format!(
                        "Container {} for pod {}/{} failed with exit code {} matching {} rule at index {}",
                        cs.name,
                        pod.namespace().unwrap_or_default(),
                        pod.name_any(),
                        code,
                        rule.action,
                        index
                    )
                })
            })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            patterns.iter().find_map(|pat| {
                let want = pat.status.as_deref().unwrap_or("True");
                pods::condition(pod, &pat.type_)
                    .filter(|c| c.status == want)
                    .map(|_| {
                        format!(
                            "Pod {}/{} has condition {} matching {} rule at index {}",
                            pod.namespace().unwrap_or_default(),
                            pod.name_any(),
                            pat.type_,
                            rule.action,
                            index
                        )
                    })
            })
        } else {
            None
        };
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => PolicyAction::FailJob(message),
                "FailIndex" => PolicyAction::FailIndex,
                "Ignore" => PolicyAction::Ignore,
                _ => PolicyAction::Count,
            };
        }
    }
    PolicyAction::Count
}

/// When a pod finished (its latest condition transition, else its deletion or creation).
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .max()
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

impl Reconciler for JobController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(cached) = self.jobs.get(key) else {
            self.expectations.forget(key);
            return Ok(Action::Done);
        };
        let job = (*cached).clone();
        let spec = job.spec.clone().unwrap_or_default();
        if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
            return Ok(Action::Done);
        }
        let selector = pods::selector(spec.selector.as_ref(), &key.to_string())?;
        let owned =
            crate::claim::claim_pods(&self.client, &self.pods, &job, &selector, |_| true).await?;
        if is_finished(&job) {
            // Only stragglers' finalizers are left to remove.
            let stragglers: Vec<Arc<Pod>> = owned
                .iter()
                .filter(|p| has_tracking_finalizer(p))
                .cloned()
                .collect();
            self.remove_finalizers(key, &stragglers).await?;
            return Ok(Action::Done);
        }
        if !self.finalizers.satisfied(key) {
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        }
        let mut run = JobSync::new(self, job, owned);
        run.sync(key).await
    }
}

/// Where a job stands, for deciding how many pods to run.
struct Progress<'a> {
    completed: &'a BTreeSet<i32>,
    failed_indexes: &'a BTreeSet<i32>,
    terminating: i32,
    succeeded: i32,
    failed: i32,
}

/// One sync of one Job.
struct JobSync<'a> {
    c: &'a JobController,
    job: Job,
    pods: Vec<Arc<Pod>>,
    status: JobStatus,
    now: Timestamp,
}

impl<'a> JobSync<'a> {
    fn new(c: &'a JobController, job: Job, pods: Vec<Arc<Pod>>) -> Self {
        let status = job.status.clone().unwrap_or_default();
        JobSync {
            c,
            job,
            pods,
            status,
            now: Timestamp::now(),
        }
    }

    fn spec(&self) -> k8s_openapi::api::batch::v1::JobSpec {
        self.job.spec.clone().unwrap_or_default()
    }

    fn ns(&self) -> String {
        self.job.namespace().unwrap_or_default()
    }

    fn indexed(&self) -> bool {
        self.spec().completion_mode.as_deref() == Some("Indexed")
    }

    fn event(&self, kind: EventType, reason: &str, message: &str) {
        self.c
            .recorder
            .publish(&reference(&self.job), kind, reason, message);
    }

    /// Whether a finished pod counts as failed (upstream `isPodFailed`): failed pods, and —
    /// unless pods are replaced only once terminal — pods being deleted before succeeding.
    fn pod_failed(&self, pod: &Pod) -> bool {
        if pods::phase(pod) == "Failed" {
            return true;
        }
        let only_failed = self.spec().pod_replacement_policy.as_deref() == Some("Failed")
            || self.spec().pod_failure_policy.is_some();
        !only_failed && pod.metadata.deletion_timestamp.is_some() && pods::phase(pod) != "Succeeded"
    }

    fn pod_finished(&self, pod: &Pod) -> bool {
        pods::phase(pod) == "Succeeded" || self.pod_failed(pod)
    }

    async fn sync(&mut self, key: &ObjectKey) -> Result<Action> {
        let spec = self.spec();
        let mut requeue = Action::Done;
        // 1. Exactly-once counting of finished pods.
        let mut uncounted = self
            .status
            .uncounted_terminated_pods
            .clone()
            .unwrap_or_default();
        let mut u_succeeded: Vec<String> = uncounted.succeeded.clone().unwrap_or_default();
        let mut u_failed: Vec<String> = uncounted.failed.clone().unwrap_or_default();
        let known: HashSet<String> = u_succeeded.iter().chain(&u_failed).cloned().collect();
        let recorded_before = u_succeeded.len() + u_failed.len();
        // Every finished pod still holding the finalizer: the newly finished, and those
        // recorded in an earlier round whose release failed (a crash, an API error).
        let mut release = Vec::new();
        let mut fail_job: Option<(String, String)> = None;
        let rules = spec
            .pod_failure_policy
            .as_ref()
            .map(|p| p.rules.clone())
            .unwrap_or_default();
        for pod in &self.pods {
            if !has_tracking_finalizer(pod) || !self.pod_finished(pod) {
                continue;
            }
            release.push(pod.clone());
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if known.contains(&uid) {
                continue;
            }
            if pods::phase(pod) == "Succeeded" {
                u_succeeded.push(uid);
            } else {
                match evaluate_policy(&rules, pod) {
                    PolicyAction::FailJob(message) => {
                        fail_job.get_or_insert(("PodFailurePolicy".into(), message));
                        u_failed.push(uid);
                    }
                    // Ignored failures are not counted at all.
                    PolicyAction::Ignore => {}
                    PolicyAction::Count | PolicyAction::FailIndex => u_failed.push(uid),
                }
            }
        }
        if u_succeeded.len() + u_failed.len() > recorded_before {
            uncounted.succeeded = Some(u_succeeded.clone());
            uncounted.failed = Some(u_failed.clone());
            self.status.uncounted_terminated_pods = Some(uncounted.clone());
            // Persist the uids before the finalizers go, so a crash cannot lose a count.
            self.write_status().await?;
        }
        if !release.is_empty() {
            self.c.remove_finalizers(key, &release).await?;
        }
        // Move uids whose pods are released (finalizer gone) into the counters.
        let held: HashSet<String> = self
            .pods
            .iter()
            .filter(|p| has_tracking_finalizer(p))
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let mut completed = parse_indexes(self.status.completed_indexes.as_deref().unwrap_or(""));
        let index_of = |uid: &str| {
            self.pods
                .iter()
                .find(|p| p.metadata.uid.as_deref() == Some(uid))
                .and_then(|p| pod_index(p))
        };
        let (count_s, keep_s): (Vec<String>, Vec<String>) =
            u_succeeded.into_iter().partition(|u| !held.contains(u));
        let (count_f, keep_f): (Vec<String>, Vec<String>) =
            u_failed.into_iter().partition(|u| !held.contains(u));
        // Pods recorded as finished but not counted yet still count for every decision.
        let (pending_s, pending_f) = (keep_s.len() as i32, keep_f.len() as i32);
        let mut succeeded = self.status.succeeded.unwrap_or(0);
        let mut failed = self.status.failed.unwrap_or(0);
        for uid in &count_s {
            if self.indexed() {
                if let Some(i) = index_of(uid) {
                    if completed.insert(i) {
                        succeeded += 1;
                    }
                } else {
                    succeeded += 1;
                }
            } else {
                succeeded += 1;
            }
        }
        failed += count_f.len() as i32;
        self.status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(keep_s).filter(|v| !v.is_empty()),
            failed: Some(keep_f).filter(|v| !v.is_empty()),
        });
        if self.indexed() {
            let completions = spec.completions.unwrap_or(1);
            completed.retain(|i| *i < completions);
            // Successes of pods still held count as completed indexes already.
            for pod in self.pods.iter().filter(|p| pods::phase(p) == "Succeeded") {
                if let Some(i) = pod_index(pod)
                    && i < completions
                    && completed.insert(i)
                {
                    succeeded += 1;
                }
            }
            self.status.completed_indexes = Some(format_indexes(&completed));
        }
        self.status.succeeded = Some(succeeded);
        self.status.failed = Some(failed);
        let succeeded_all = if self.indexed() {
            succeeded
        } else {
            succeeded + pending_s
        };
        let failed_all = failed + pending_f;

        // 2. Start time, suspension.
        let suspended = spec.suspend.unwrap_or(false);
        let active: Vec<Arc<Pod>> = self
            .pods
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let terminating = self.pods.iter().filter(|p| pods::is_terminating(p)).count() as i32;
        if suspended {
            if set_condition(
                &mut self.status,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
            ) {
                self.event(EventType::Normal, "Suspended", "Job suspended");
            }
        } else {
            if self
                .status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Suspended" && c.status == "True")
            {
                set_condition(
                    &mut self.status,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                );
                self.event(EventType::Normal, "Resumed", "Job resumed");
                // Upstream restarts the active deadline on resume.
                self.status.start_time = Some(Time(self.now));
            }
            if self.status.start_time.is_none() {
                self.status.start_time = Some(Time(self.now));
            }
        }

        // 3. Failure and success criteria.
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let mut failed_indexes = parse_indexes(self.status.failed_indexes.as_deref().unwrap_or(""));
        if let Some(per_index) = spec.backoff_limit_per_index.filter(|_| self.indexed()) {
            for pod in self.pods.iter().filter(|p| self.pod_failed(p)) {
                let Some(i) = pod_index(pod) else { continue };
                let failures = self
                    .pods
                    .iter()
                    .filter(|p| pod_index(p) == Some(i) && self.pod_failed(p))
                    .count() as i32;
                let fail_index = evaluate_policy(&rules, pod) == PolicyAction::FailIndex;
                if (failures > per_index || fail_index) && !completed.contains(&i) {
                    failed_indexes.insert(i);
                }
            }
            self.status.failed_indexes = Some(format_indexes(&failed_indexes));
            if let Some(max) = spec.max_failed_indexes
                && failed_indexes.len() as i32 > max
            {
                fail_job.get_or_insert((
                    "MaxFailedIndexesExceeded".into(),
                    "Job has exceeded the specified maximal number of failed indexes".into(),
                ));
            }
        } else if failed_all > backoff_limit {
            fail_job.get_or_insert((
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        }
        if !suspended
            && let (Some(deadline), Some(start)) = (
                spec.active_deadline_seconds,
                self.status.start_time.as_ref(),
            )
        {
            let due = start.0 + Duration::from_secs(deadline.max(0) as u64);
            if due <= self.now {
                fail_job.get_or_insert((
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                let left = Duration::try_from(due.duration_since(self.now)).unwrap_or_default();
                requeue = requeue.min(Action::RequeueAfter(left));
            }
        }
        if let Some(reason) = self.existing_target("FailureTarget") {
            fail_job = Some(reason);
        }
        let success = if fail_job.is_some() {
            None
        } else if let Some(reason) = self.existing_target("SuccessCriteriaMet") {
            Some(reason)
        } else {
            self.success_reason(succeeded_all, &completed, &active)
        };
        let all_indexes_done = self.indexed()
            && !failed_indexes.is_empty()
            && (0..spec.completions.unwrap_or(1))
                .all(|i| completed.contains(&i) || failed_indexes.contains(&i))
            && active.is_empty();
        if all_indexes_done && fail_job.is_none() && success.is_none() {
            fail_job = Some(("FailedIndexes".into(), "Job has failed indexes".into()));
        }

        if let Some((reason, message)) = fail_job {
            set_condition(&mut self.status, "FailureTarget", "True", &reason, &message);
            self.delete_pods(key, &active).await?;
            self.status.active = Some(0);
            self.status.ready = Some(0);
            let pending = terminating + active.len() as i32 + self.held_count();
            self.status.terminating = Some(terminating + active.len() as i32);
            if pending == 0 {
                set_condition(&mut self.status, "Failed", "True", &reason, &message);
                self.event(EventType::Warning, &reason, &message);
            }
            self.write_status().await?;
            return Ok(if pending == 0 {
                Action::Done
            } else {
                Action::RequeueAfter(Duration::from_secs(1))
            });
        }
        if let Some((reason, message)) = success {
            set_condition(
                &mut self.status,
                "SuccessCriteriaMet",
                "True",
                &reason,
                &message,
            );
            self.delete_pods(key, &active).await?;
            self.status.active = Some(0);
            self.status.ready = Some(0);
            let pending = terminating + active.len() as i32 + self.held_count();
            self.status.terminating = Some(terminating + active.len() as i32);
            if pending == 0 {
                set_condition(&mut self.status, "Complete", "True", &reason, &message);
                self.status.completion_time = Some(Time(self.now));
                self.event(EventType::Normal, "Completed", "Job completed");
            }
            self.write_status().await?;
            return Ok(if pending == 0 {
                Action::Done
            } else {
                Action::RequeueAfter(Duration::from_secs(1))
            });
        }

        // 4. Keep the right number of pods running.
        if suspended {
            self.delete_pods(key, &active).await?;
            self.status.active = Some(0);
        } else if self.c.expectations.satisfied(key) {
            let progress = Progress {
                completed: &completed,
                failed_indexes: &failed_indexes,
                terminating,
                succeeded: succeeded_all,
                failed: failed_all,
            };
            requeue = requeue.min(self.manage(key, &active, progress).await?);
        }
        let active_now: Vec<&Arc<Pod>> = if suspended {
            Vec::new()
        } else {
            active.iter().collect()
        };
        self.status.active = Some(active_now.len() as i32);
        self.status.ready = Some(active_now.iter().filter(|p| pods::is_ready(p)).count() as i32);
        self.status.terminating = Some(terminating);
        self.write_status().await?;
        Ok(requeue)
    }

    /// The reason of a target condition set by an earlier sync, which stands.
    fn existing_target(&self, type_: &str) -> Option<(String, String)> {
        let c = condition(self.job.status.as_ref()?, type_)?;
        Some((
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        ))
    }

    /// Pods counted as finished but whose finalizer is still being removed.
    fn held_count(&self) -> i32 {
        self.pods
            .iter()
            .filter(|p| has_tracking_finalizer(p) && !pods::is_active(p))
            .count() as i32
    }

    /// Whether the job met its success criteria (successPolicy, then completions).
    fn success_reason(
        &self,
        succeeded: i32,
        completed: &BTreeSet<i32>,
        active: &[Arc<Pod>],
    ) -> Option<(String, String)> {
        let spec = self.spec();
        if let Some(policy) = &spec.success_policy
            && self.indexed()
        {
            for rule in &policy.rules {
                let wanted = rule.succeeded_indexes.as_deref().map(parse_indexes);
                let hits = match &wanted {
                    Some(w) => w.intersection(completed).count() as i32,
                    None => completed.len() as i32,
                };
                let all_wanted = wanted.as_ref().is_none_or(|w| w.is_subset(completed));
                let enough = match rule.succeeded_count {
                    Some(n) => hits >= n,
                    None => all_wanted,
                };
                if enough {
                    return Some(("SuccessPolicy".into(), "Matched rules at index 0".into()));
                }
            }
        }
        let done = match (spec.completions, self.indexed()) {
            (Some(c), true) => (0..c).all(|i| completed.contains(&i)),
            (Some(c), false) => succeeded >= c,
            // No completions: done at the first success once nothing else runs.
            (None, _) => succeeded > 0 && active.is_empty(),
        };
        done.then(|| {
            (
                "CompletionsReached".into(),
                "Reached expected number of succeeded pods".into(),
            )
        })
    }

    /// Create or delete pods so `parallelism` (bounded by remaining work) run.
    async fn manage(
        &self,
        key: &ObjectKey,
        active: &[Arc<Pod>],
        progress: Progress<'_>,
    ) -> Result<Action> {
        let Progress {
            completed,
            failed_indexes,
            terminating,
            succeeded,
            failed,
        } = progress;
        let spec = self.spec();
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let want = match (spec.completions, self.indexed()) {
            (None, _) => {
                if succeeded > 0 {
                    0
                } else {
                    parallelism
                }
            }
            (Some(c), true) => {
                let remaining = (0..c)
                    .filter(|i| !completed.contains(i) && !failed_indexes.contains(i))
                    .count() as i32;
                remaining.min(parallelism)
            }
            (Some(c), false) => (c - succeeded).max(0).min(parallelism),
        };
        // With podReplacementPolicy Failed, terminating pods still hold their slots.
        let occupying = active.len() as i32
            + if spec.pod_replacement_policy.as_deref() == Some("Failed")
                || spec.pod_failure_policy.is_some()
            {
                terminating
            } else {
                0
            };
        if occupying > want {
            let mut extra = pods::pods_to_delete(active, active, (occupying - want) as usize);
            if self.indexed() {
                // Prefer deleting duplicates of an index, then the highest indexes.
                extra.sort_by_key(|p| std::cmp::Reverse(pod_index(p).unwrap_or(i32::MAX)));
            }
            self.delete_pods(key, &extra).await?;
            return Ok(Action::Done);
        }
        if occupying == want {
            return Ok(Action::Done);
        }
        // Back off after failures (upstream: 10 s doubling, at most 6 min, since the last one).
        if failed > 0 {
            let delay = BACKOFF_BASE
                .saturating_mul(2u32.saturating_pow((failed - 1).clamp(0, 20) as u32))
                .min(BACKOFF_MAX);
            let last = self
                .pods
                .iter()
                .filter(|p| self.pod_failed(p))
                .filter_map(|p| finished_at(p))
                .max();
            if let Some(last) = last {
                let due = last + delay;
                if due > self.now {
                    let left = Duration::try_from(due.duration_since(self.now)).unwrap_or_default();
                    return Ok(Action::RequeueAfter(left));
                }
            }
        }
        let count = (want - occupying) as usize;
        let indexes: Vec<Option<i32>> = if self.indexed() {
            let running: HashSet<i32> = active.iter().filter_map(|p| pod_index(p)).collect();
            (0..spec.completions.unwrap_or(1))
                .filter(|i| {
                    !completed.contains(i) && !failed_indexes.contains(i) && !running.contains(i)
                })
                .take(count)
                .map(Some)
                .collect()
        } else {
            vec![None; count]
        };
        if indexes.is_empty() {
            return Ok(Action::Done);
        }
        let n = indexes.len();
        self.c.expectations.expect_creations(key, n);
        let api: Api<Pod> = Api::namespaced(self.c.client.clone(), &self.ns());
        let (done, err) = pods::slow_start_batch(n, 1, |i| {
            let pod = self.new_pod(indexes[i]);
            let api = api.clone();
            async move {
                match api.create(&PostParams::default(), &pod).await {
                    Ok(created) => {
                        self.event(
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {}", created.name_any()),
                        );
                        Ok(())
                    }
                    Err(e) => {
                        self.c.expectations.creation_observed(key);
                        if pods::is_namespace_terminating(&e) {
                            return Ok(());
                        }
                        self.event(
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {}", api_message(&e)),
                        );
                        Err(Error::Api {
                            action: "creating pod".into(),
                            source: e,
                        })
                    }
                }
            }
        })
        .await;
        let skipped = n - done - usize::from(err.is_some());
        if skipped > 0 {
            self.c.expectations.lower_creations(key, skipped);
        }
        match err {
            Some(e) => Err(e),
            None => Ok(Action::Done),
        }
    }

    /// A pod for the job (with the index for Indexed jobs).
    fn new_pod(&self, index: Option<i32>) -> Pod {
        let spec = self.spec();
        let name = self.job.name_any();
        let generate = match index {
            Some(i) => format!("{name}-{i}-"),
            None => pods::generate_name_prefix(&name),
        };
        let mut pod = pods::from_template(
            &spec.template,
            &self.ns(),
            owner::controller_reference(&self.job),
            None,
            Some(generate),
        );
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.into());
        if let Some(i) = index {
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(INDEX_KEY.into(), i.to_string());
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(INDEX_KEY.into(), i.to_string());
            if let Some(ps) = pod.spec.as_mut() {
                if ps.hostname.as_deref().unwrap_or("").is_empty() {
                    ps.hostname = Some(format!("{name}-{i}"));
                }
                let env = EnvVar {
                    name: INDEX_ENV.into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                        }),
                        ..Default::default()
                    }),
                };
                for c in ps
                    .init_containers
                    .iter_mut()
                    .flatten()
                    .chain(ps.containers.iter_mut())
                {
                    let envs = c.env.get_or_insert_with(Vec::new);
                    if !envs.iter().any(|e| e.name == INDEX_ENV) {
                        envs.push(env.clone());
                    }
                }
            }
        }
        pod
    }

    async fn delete_pods(&self, key: &ObjectKey, victims: &[Arc<Pod>]) -> Result<()> {
        if victims.is_empty() {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.c.client.clone(), &self.ns());
        self.c
            .expectations
            .expect_deletions(key, victims.iter().filter_map(|p| p.metadata.uid.clone()));
        for pod in victims {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&pod.name_any(), &params).await {
                Ok(_) => self.event(
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", pod.name_any()),
                ),
                Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => {
                    self.c.expectations.deletion_observed(key, &uid)
                }
                Err(e) => {
                    self.c.expectations.deletion_observed(key, &uid);
                    return Err(Error::Api {
                        action: format!("deleting pod {}/{}", self.ns(), pod.name_any()),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    async fn write_status(&mut self) -> Result<()> {
        if self.job.status.as_ref() == Some(&self.status) {
            return Ok(());
        }
        let mut updated = self.job.clone();
        updated.status = Some(self.status.clone());
        let api: Api<Job> = Api::namespaced(self.c.client.clone(), &self.ns());
        let stored = api
            .replace_status(&self.job.name_any(), &PostParams::default(), &updated)
            .await
            .during(|| {
                format!(
                    "updating status of job {}/{}",
                    self.ns(),
                    self.job.name_any()
                )
            })?;
        self.job = stored;
        Ok(())
    }
}

impl JobController {
    /// Drop the tracking finalizer from counted pods.
    async fn remove_finalizers(&self, key: &ObjectKey, finished: &[Arc<Pod>]) -> Result<()> {
        self.finalizers
            .expect_deletions(key, finished.iter().filter_map(|p| p.metadata.uid.clone()));
        for pod in finished {
            let ns = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            // Removes just this finalizer, whatever else changed (upstream's patch): the
            // kubelet keeps writing the pod's status, so a resourceVersion precondition would
            // conflict often. The uid keeps a same-named successor pod untouched.
            let patch = json!({
                "metadata": {
                    "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
                    "uid": pod.metadata.uid,
                }
            });
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            match api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if crate::is_not_found(&e) => self.finalizers.deletion_observed(key, &uid),
                Err(e) => {
                    self.finalizers.deletion_observed(key, &uid);
                    return Err(Error::Api {
                        action: format!(
                            "removing the tracking finalizer of pod {ns}/{}",
                            pod.name_any()
                        ),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::PodFailurePolicyOnExitCodesRequirement;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };

    #[test]
    fn index_sets_round_trip_in_upstream_form() {
        let set = parse_indexes("0,2-4,7");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&parse_indexes("5")), "5");
    }

    fn failed_with(code: i32) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pod_failure_policy_rules_match_in_order() {
        let rule = |action: &str, op: &str, values: Vec<i32>| PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: op.into(),
                values,
            }),
            on_pod_conditions: None,
        };
        let rules = vec![
            rule("Ignore", "In", vec![1]),
            rule("FailJob", "NotIn", vec![1, 2]),
        ];
        assert_eq!(
            evaluate_policy(&rules, &failed_with(1)),
            PolicyAction::Ignore
        );
        assert_eq!(
            evaluate_policy(&rules, &failed_with(2)),
            PolicyAction::Count
        );
        match evaluate_policy(&rules, &failed_with(42)) {
            PolicyAction::FailJob(m) => assert!(
                m.contains("exit code 42 matching FailJob rule at index 1"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
