//! The CronJob controller (upstream pkg/controller/cronjob, the v2 controller): at each
//! scheduled time (in `spec.timeZone`, else the controller's zone) create a Job named
//! `<cronjob>-<minutes since the epoch>` from the job template, honouring
//! `concurrencyPolicy` (Allow, Forbid, Replace), `startingDeadlineSeconds` (a start missed by
//! more than that is skipped) and `suspend`; track active Jobs, `lastScheduleTime` and
//! `lastSuccessfulTime`; and keep `successfulJobsHistoryLimit`/`failedJobsHistoryLimit`
//! finished Jobs. The loop sleeps until the next scheduled time.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::owner;
use skiff_runtime::{Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::cron::Schedule;
use crate::replicaset::api_message;
use crate::{During, Error, Result};

/// The scheduled time of a Job a CronJob created (RFC 3339 in the CronJob's zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream gives up listing missed start times after this many.
const MAX_MISSED: usize = 100;
const JOB_OWNER_INDEX: &str = "cronjob-owner";
const COMPONENT: &str = "cronjob-controller";

/// Start the controller.
pub async fn start(ctx: Context) {
    let cronjobs = ctx.informer::<CronJob>();
    let jobs = ctx.informer::<Job>();
    if !jobs.has_index(JOB_OWNER_INDEX) {
        jobs.add_index(JOB_OWNER_INDEX, owner::controller_uid_index);
    }
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&cronjobs, &queue, &ctx.stop, |c| {
        vec![ObjectKey::of(c.object().as_ref())]
    });
    controller::feed(&jobs, &queue, &ctx.stop, |c| {
        let job = c.object();
        owner::controller_of(&job.metadata)
            .filter(|r| r.kind == "CronJob")
            .map(|r| {
                vec![ObjectKey::new(
                    job.namespace().unwrap_or_default(),
                    r.name.clone(),
                )]
            })
            .unwrap_or_default()
    });
    if !ctx
        .wait_synced(vec![synced(&cronjobs), synced(&jobs)])
        .await
    {
        return;
    }
    let reconciler = Arc::new(CronJobController {
        client: ctx.client.clone(),
        cronjobs,
        jobs,
        recorder: ctx.recorder(COMPONENT),
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

struct CronJobController {
    client: Client,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    recorder: Recorder,
}

fn job_finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions.iter().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return Some("Complete"),
            "Failed" => return Some("Failed"),
            _ => {}
        }
    }
    None
}

fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        namespace: job.namespace(),
        name: Some(job.name_any()),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The zone a CronJob's schedule is read in (None: unknown zone name).
pub fn time_zone(cj: &CronJob) -> Option<TimeZone> {
    match cj.spec.as_ref().and_then(|s| s.time_zone.as_deref()) {
        Some(name) => TimeZone::get(name).ok(),
        None => Some(TimeZone::system()),
    }
}

/// What `concurrencyPolicy` says about a due run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Start it.
    Start,
    /// Forbid: a previous run is still active.
    Skip,
    /// Replace: delete the active runs, then start.
    ReplaceThenStart,
}

/// Upstream's concurrency decision for a due run with `active` runs going.
pub fn concurrency(policy: Option<&str>, active: usize) -> Concurrency {
    match policy.unwrap_or("Allow") {
        "Forbid" if active > 0 => Concurrency::Skip,
        "Replace" if active > 0 => Concurrency::ReplaceThenStart,
        _ => Concurrency::Start,
    }
}

/// Upstream `mostRecentScheduleTime`: the latest start time in `(earliest, now]`, and
/// whether more than [`MAX_MISSED`] were missed.
pub fn most_recent(
    schedule: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, bool) {
    let mut latest = None;
    let mut missed = 0usize;
    let mut t = earliest;
    while let Some(next) = schedule.next_after(t, tz) {
        if next > now {
            break;
        }
        latest = Some(next);
        missed += 1;
        if missed > MAX_MISSED {
            // Jump close to now: only the most recent time matters.
            let near = now
                .checked_sub(Duration::from_secs(3600 * 24 * 366))
                .unwrap_or(now);
            if t < near {
                t = near;
                continue;
            }
        }
        t = next;
    }
    (latest, missed > MAX_MISSED)
}

impl Reconciler for CronJobController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        COMPONENT
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(cached) = self.cronjobs.get(key) else {
            return Ok(Action::Done);
        };
        if cached.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let mut cj = (*cached).clone();
        let spec = cj.spec.clone().unwrap_or_default();
        let now = Timestamp::now();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Job>> = self.jobs.by_index(JOB_OWNER_INDEX, &uid);
        let target = reference(&cj);
        let mut status = cj.status.clone().unwrap_or_default();
        let mut active: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
        // Reconcile the active list with the Jobs that exist.
        for job in &owned {
            let finished = job_finished(job);
            let listed = active.iter().any(|r| r.uid == job.metadata.uid);
            match (finished, listed) {
                (None, false) if job.metadata.deletion_timestamp.is_none() => {
                    // The cache may not show our own status write yet: ask (upstream does).
                    let fresh = Api::<CronJob>::namespaced(self.client.clone(), &key.namespace)
                        .get_opt(&key.name)
                        .await
                        .during(|| format!("reading cronjob {key}"))?;
                    let listed_fresh = fresh
                        .as_ref()
                        .and_then(|f| f.status.as_ref())
                        .and_then(|s| s.active.as_ref())
                        .is_some_and(|a| a.iter().any(|r| r.uid == job.metadata.uid));
                    if let Some(fresh) = fresh {
                        cj = fresh;
                        status = cj.status.clone().unwrap_or_default();
                        active = status.active.clone().unwrap_or_default();
                    }
                    if !listed_fresh {
                        self.recorder.publish(
                            &target,
                            EventType::Warning,
                            "UnexpectedJob",
                            &format!(
                                "Saw a job that the controller did not create or forgot: {}",
                                job.name_any()
                            ),
                        );
                        active.push(job_reference(job));
                    }
                }
                (Some(condition), true) => {
                    active.retain(|r| r.uid != job.metadata.uid);
                    self.recorder.publish(
                        &target,
                        EventType::Normal,
                        "SawCompletedJob",
                        &format!(
                            "Saw completed job: {}, condition: {condition}",
                            job.name_any()
                        ),
                    );
                }
                _ => {}
            }
            if job_finished(job) == Some("Complete")
                && let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.clone())
                && status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < done.0)
            {
                status.last_successful_time = Some(done);
            }
        }
        // Listed Jobs that are gone.
        let mut still = Vec::new();
        for r in active {
            if owned.iter().any(|j| j.metadata.uid == r.uid) {
                still.push(r);
                continue;
            }
            let live = Api::<Job>::namespaced(self.client.clone(), &key.namespace)
                .get_opt(r.name.as_deref().unwrap_or(""))
                .await
                .during(|| format!("reading job {key}"))?;
            if live.is_some_and(|j| j.metadata.uid == r.uid) {
                still.push(r);
            } else {
                self.recorder.publish(
                    &target,
                    EventType::Normal,
                    "MissingJob",
                    &format!(
                        "Active job went missing: {}",
                        r.name.as_deref().unwrap_or("")
                    ),
                );
            }
        }
        status.active = Some(still.clone()).filter(|a| !a.is_empty());
        cj.status = Some(status);
        let requeue = self.schedule(&mut cj, &spec, &owned, now).await?;
        self.cleanup_history(&cj, &spec, &owned).await?;
        if cj.status != cached.status {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), &key.namespace);
            api.replace_status(&key.name, &PostParams::default(), &cj)
                .await
                .during(|| format!("updating status of cronjob {key}"))?;
        }
        Ok(requeue)
    }
}

impl CronJobController {
    /// Start a Job if one is due; returns when to look again.
    async fn schedule(
        &self,
        cj: &mut CronJob,
        spec: &k8s_openapi::api::batch::v1::CronJobSpec,
        owned: &[Arc<Job>],
        now: Timestamp,
    ) -> Result<Action> {
        if spec.suspend.unwrap_or(false) {
            return Ok(Action::Done);
        }
        let target = reference(cj);
        let schedule: Schedule = match spec.schedule.parse() {
            Ok(s) => s,
            Err(e) => {
                self.recorder.publish(
                    &target,
                    EventType::Warning,
                    "UnparseableSchedule",
                    &format!("unparseable schedule: {:?} : {e}", spec.schedule),
                );
                return Ok(Action::Done);
            }
        };
        let Some(tz) = time_zone(cj) else {
            self.recorder.publish(
                &target,
                EventType::Warning,
                "UnknownTimeZone",
                &format!(
                    "invalid timeZone: {:?}",
                    spec.time_zone.as_deref().unwrap_or("")
                ),
            );
            return Ok(Action::Done);
        };
        let next_in = |after: Timestamp| -> Action {
            match schedule.next_after(after, &tz) {
                Some(next) => {
                    let wait = Duration::try_from(next.duration_since(Timestamp::now()))
                        .unwrap_or_default();
                    Action::RequeueAfter(wait + Duration::from_millis(100))
                }
                None => Action::Done,
            }
        };
        let mut status = cj.status.clone().unwrap_or_default();
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(now);
        if let Some(deadline) = spec.starting_deadline_seconds {
            let horizon = now
                .checked_sub(Duration::from_secs(deadline.max(0) as u64))
                .unwrap_or(now);
            earliest = earliest.max(horizon);
        }
        let (scheduled, too_many) = most_recent(&schedule, &tz, earliest, now);
        if too_many {
            self.recorder.publish(&target, EventType::Warning, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew");
        }
        let Some(scheduled) = scheduled else {
            return Ok(next_in(now));
        };
        if let Some(deadline) = spec.starting_deadline_seconds
            && scheduled + Duration::from_secs(deadline.max(0) as u64) < now
        {
            self.recorder.publish(
                &target,
                EventType::Warning,
                "MissSchedule",
                &format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.to_zoned(tz.clone())
                ),
            );
            return Ok(next_in(now));
        }
        let name = format!("{}-{}", cj.name_any(), scheduled.as_second() / 60);
        if owned.iter().any(|j| j.name_any() == name) {
            return Ok(next_in(now));
        }
        let ns = cj.namespace().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let active = status.active.clone().unwrap_or_default();
        match concurrency(spec.concurrency_policy.as_deref(), active.len()) {
            Concurrency::Skip => {
                self.recorder.publish(&target, EventType::Normal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid");
                return Ok(next_in(now));
            }
            Concurrency::ReplaceThenStart => {
                for r in &active {
                    let name = r.name.clone().unwrap_or_default();
                    let params = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..Default::default()
                    };
                    match jobs.delete(&name, &params).await {
                        Ok(_) => self.recorder.publish(
                            &target,
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted job {name}"),
                        ),
                        Err(e) if crate::is_not_found(&e) => {}
                        Err(e) => {
                            return Err(Error::Api {
                                action: format!("deleting job {ns}/{name}"),
                                source: e,
                            });
                        }
                    }
                }
                status.active = None;
                cj.status = Some(status.clone());
            }
            Concurrency::Start => {}
        }
        let template = spec.job_template.clone();
        let tmeta = template.metadata.unwrap_or_default();
        let mut annotations = tmeta.annotations.unwrap_or_default();
        annotations.insert(
            SCHEDULED_TIMESTAMP.into(),
            scheduled
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
        );
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: tmeta.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![owner::controller_reference(cj)]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        let created = match jobs.create(&PostParams::default(), &job).await {
            Ok(j) => j,
            Err(e) if crate::is_conflict(&e) => {
                // Created by an earlier attempt the cache has not seen.
                return Ok(next_in(now));
            }
            Err(e) => {
                self.recorder.publish(
                    &target,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating job: {}", api_message(&e)),
                );
                return Err(Error::Api {
                    action: format!("creating job {ns}/{name}"),
                    source: e,
                });
            }
        };
        self.recorder.publish(
            &target,
            EventType::Normal,
            "SuccessfulCreate",
            &format!("Created job {name}"),
        );
        status
            .active
            .get_or_insert_with(Vec::new)
            .push(job_reference(&created));
        status.last_schedule_time = Some(Time(scheduled));
        cj.status = Some(status);
        Ok(next_in(now))
    }

    /// Delete the oldest finished Jobs beyond the history limits.
    async fn cleanup_history(
        &self,
        cj: &CronJob,
        spec: &k8s_openapi::api::batch::v1::CronJobSpec,
        owned: &[Arc<Job>],
    ) -> Result<()> {
        let ns = cj.namespace().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        for (condition, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut finished: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| {
                    job_finished(j) == Some(condition) && j.metadata.deletion_timestamp.is_none()
                })
                .collect();
            let excess = finished.len() as i64 - i64::from(limit.max(0));
            if excess <= 0 {
                continue;
            }
            finished.sort_by_key(|j| {
                (
                    j.status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .map(|t| t.0),
                    j.metadata.creation_timestamp.as_ref().map(|t| t.0),
                )
            });
            for job in finished.iter().take(excess as usize) {
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..Default::default()
                };
                match jobs.delete(&job.name_any(), &params).await {
                    Ok(_) => self.recorder.publish(
                        &reference(cj),
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted job {}", job.name_any()),
                    ),
                    Err(e) if crate::is_not_found(&e) => {}
                    Err(e) => {
                        return Err(Error::Api {
                            action: format!("deleting job {ns}/{}", job.name_any()),
                            source: e,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_policies_decide_about_a_due_run() {
        assert_eq!(
            concurrency(None, 3),
            Concurrency::Start,
            "Allow is the default"
        );
        assert_eq!(concurrency(Some("Forbid"), 1), Concurrency::Skip);
        assert_eq!(concurrency(Some("Forbid"), 0), Concurrency::Start);
        assert_eq!(
            concurrency(Some("Replace"), 2),
            Concurrency::ReplaceThenStart
        );
        assert_eq!(concurrency(Some("Replace"), 0), Concurrency::Start);
    }

    #[test]
    fn the_most_recent_missed_time_wins_and_many_misses_are_flagged() {
        let s: Schedule = "*/5 * * * *".parse().unwrap();
        let tz = TimeZone::UTC;
        let earliest: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let now: Timestamp = "2024-01-01T00:17:00Z".parse().unwrap();
        let (t, too_many) = most_recent(&s, &tz, earliest, now);
        assert_eq!(t.unwrap().to_string(), "2024-01-01T00:15:00Z");
        assert!(!too_many);
        let (t, too_many) = most_recent(&s, &tz, earliest, "2024-01-02T00:01:00Z".parse().unwrap());
        assert_eq!(t.unwrap().to_string(), "2024-01-02T00:00:00Z");
        assert!(too_many);
        let (t, _) = most_recent(&s, &tz, now, "2024-01-01T00:19:00Z".parse().unwrap());
        assert!(t.is_none());
    }
}
