//! Leader election through a `coordination.k8s.io/v1` Lease, with client-go's rules: a
//! candidate takes the lease when it is free or when its holder has not renewed it for a lease
//! duration *as observed locally* (so clocks need not agree); the leader renews every retry
//! period and gives up leadership if it cannot renew within the renew deadline; writes are
//! compare-and-swap on the lease's resourceVersion, so two candidates never both win.
//!
//! Unlike upstream components, which exit when they lose the lease, [`LeaderElection::run`]
//! stops the leader's work (its token is cancelled), waits for it to wind down and becomes a
//! candidate again, so an all-in-one `skiff server` keeps serving.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Leader election settings (upstream kube-controller-manager defaults).
#[derive(Clone)]
pub struct LeaderElection {
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    /// How long a lease is honoured without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// How often candidates and the leader try.
    pub retry_period: Duration,
}

/// The state a candidate keeps between attempts.
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>, Option<i32>)>,
    at: Instant,
}

impl LeaderElection {
    /// Elect among processes using the Lease `namespace/name`; `identity` names this one.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: impl Into<String>,
    ) -> LeaderElection {
        LeaderElection {
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// A unique identity for this process: `<hostname>_<uuid>` like upstream.
    pub fn default_identity() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "skiff".to_owned());
        format!("{host}_{}", uuid::Uuid::new_v4())
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Until `shutdown`: wait to become leader, run `lead` with a token that is cancelled when
    /// leadership is lost (or on shutdown), wait for it to return, and start over. On shutdown
    /// the lease is released so another candidate takes over at once.
    pub async fn run<F, Fut>(&self, shutdown: CancellationToken, mut lead: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut observed = Observed {
            record: None,
            at: Instant::now(),
        };
        while !shutdown.is_cancelled() {
            // Campaign.
            loop {
                match self.try_acquire_or_renew(&mut observed).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(err) => {
                        tracing::debug!(lease = %self.name, error = %err, "leader election attempt failed")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(jittered(self.retry_period)) => {}
                }
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            let term = shutdown.child_token();
            let work = tokio::spawn(lead(term.clone()));
            // Renew until we cannot.
            let mut last_renew = Instant::now();
            loop {
                tokio::select! {
                    _ = term.cancelled() => break,
                    _ = tokio::time::sleep(self.retry_period) => {}
                }
                match tokio::time::timeout(
                    self.renew_deadline,
                    self.try_acquire_or_renew(&mut observed),
                )
                .await
                {
                    Ok(Ok(true)) => last_renew = Instant::now(),
                    Ok(Ok(false)) => {
                        tracing::warn!(lease = %self.name, "lost the lease to another candidate");
                        break;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(lease = %self.name, error = %err, "renewing the lease failed")
                    }
                    Err(_) => {}
                }
                if last_renew.elapsed() >= self.renew_deadline {
                    tracing::warn!(lease = %self.name, "could not renew the lease in time; stepping down");
                    break;
                }
            }
            term.cancel();
            let _ = work.await;
            if shutdown.is_cancelled() {
                self.release().await;
                return;
            }
        }
    }

    fn api(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// One attempt; `Ok(true)` when this candidate holds the lease afterwards.
    async fn try_acquire_or_renew(&self, observed: &mut Observed) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let api = self.api();
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    observed.record = None;
                    observed.at = Instant::now();
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            spec.lease_transitions,
        );
        if observed.record.as_ref() != Some(&record) {
            observed.record = Some(record);
            observed.at = Instant::now();
        }
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .map_or(
                self.lease_duration,
                |s| Duration::from_secs(s.max(0) as u64),
            );
        let held_by_other = !holder.is_empty() && holder != self.identity;
        if held_by_other && observed.at.elapsed() < duration {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == self.identity {
            self.spec(
                spec.acquire_time.clone().unwrap_or(now.clone()),
                now,
                transitions,
            )
        } else {
            self.spec(now.clone(), now, transitions + 1)
        };
        lease.spec = Some(new_spec);
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                let spec = updated.spec.unwrap_or_default();
                observed.record = Some((
                    spec.holder_identity,
                    spec.renew_time,
                    spec.lease_transitions,
                ));
                observed.at = Instant::now();
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Give the lease up so the next candidate need not wait for it to expire.
    async fn release(&self) {
        let api = self.api();
        let Ok(Some(mut lease)) = api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(err) = api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(lease = %self.name, error = %err, "releasing the lease failed");
        } else {
            tracing::info!(lease = %self.name, "released the lease");
        }
    }
}

/// `period` plus up to 20% so candidates do not retry in lockstep (client-go's JitterFactor 1.2).
fn jittered(period: Duration) -> Duration {
    let extra = rand::random::<f64>() * 0.2;
    period.mul_f64(1.0 + extra)
}
