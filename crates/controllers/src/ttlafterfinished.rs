//! The TTL-after-finished controller (upstream pkg/controller/ttlafterfinished): a Job with
//! `ttlSecondsAfterFinished` is deleted (in the foreground, so its pods go first) that many
//! seconds after it completed or failed. The decision is re-checked against a fresh read, so a
//! TTL changed at the last moment is honoured.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::{Client, ResourceExt};
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::{Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::{During, Error, Result};

/// Start the controller.
pub async fn start(ctx: Context) {
    let jobs = ctx.informer::<Job>();
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    controller::feed(&jobs, &queue, &ctx.stop, |c| {
        let job = c.object();
        if job
            .spec
            .as_ref()
            .and_then(|s| s.ttl_seconds_after_finished)
            .is_some()
        {
            vec![ObjectKey::of(job.as_ref())]
        } else {
            Vec::new()
        }
    });
    if !ctx.wait_synced(vec![synced(&jobs)]).await {
        return;
    }
    let reconciler = Arc::new(TtlController {
        client: ctx.client.clone(),
        jobs,
    });
    controller::run(reconciler, queue, ctx.config.workers(5), ctx.stop.clone()).await;
}

struct TtlController {
    client: Client,
    jobs: Informer<Job>,
}

/// When a finished job expires (None: no TTL, or not finished).
pub fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let status = job.status.as_ref()?;
    let finished = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = if finished.type_ == "Complete" {
        status
            .completion_time
            .as_ref()
            .or(finished.last_transition_time.as_ref())
    } else {
        finished.last_transition_time.as_ref()
    }?;
    Some(at.0 + Duration::from_secs(ttl.max(0) as u64))
}

impl Reconciler for TtlController {
    type Key = ObjectKey;
    type Error = Error;

    fn name(&self) -> &'static str {
        "ttl-after-finished-controller"
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(job) = self.jobs.get(key) else {
            return Ok(Action::Done);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let Some(at) = expires_at(&job) else {
            return Ok(Action::Done);
        };
        let now = Timestamp::now();
        if at > now {
            let left = Duration::try_from(at.duration_since(now)).unwrap_or_default();
            return Ok(Action::RequeueAfter(left + Duration::from_millis(100)));
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);
        let fresh = api
            .get_opt(&key.name)
            .await
            .during(|| format!("reading job {key}"))?;
        let Some(fresh) = fresh.filter(|f| f.metadata.uid == job.metadata.uid) else {
            return Ok(Action::Done);
        };
        match expires_at(&fresh) {
            Some(at) if at <= now => {}
            _ => return Ok(Action::Done),
        }
        tracing::info!(job = %key, "deleting finished job after its TTL");
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: fresh.metadata.uid.clone(),
                resource_version: fresh.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        match api.delete(&fresh.name_any(), &params).await {
            Ok(_) => Ok(Action::Done),
            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => Ok(Action::Done),
            Err(e) => Err(Error::Api {
                action: format!("deleting expired job {key}"),
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn jobs_expire_ttl_after_finishing() {
        let done: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let job = Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: Some(30),
                ..Default::default()
            }),
            status: Some(JobStatus {
                completion_time: Some(Time(done)),
                conditions: Some(vec![JobCondition {
                    type_: "Complete".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            expires_at(&job).unwrap().to_string(),
            "2024-01-01T00:00:30Z"
        );
        let mut running = job.clone();
        running.status.as_mut().unwrap().conditions = None;
        assert!(expires_at(&running).is_none());
    }
}
