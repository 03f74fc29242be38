//! The controller loop: workers take keys from a [`WorkQueue`], call the
//! [`Reconciler`], and requeue on failure with backoff or when the reconciler asks for it.
//! Informer subscriptions feed the queue through [`feed`]; [`resync_every`] re-enqueues
//! every key periodically, which keeps the loops level-triggered even if an event was missed.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::informer::{Change, Informer, Notification};
use crate::queue::{QueueKey, WorkQueue};

/// What to do with a key after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes.
    Done,
    /// Look again after this long (e.g. a deadline or a minReadySeconds expiring).
    RequeueAfter(Duration),
}

impl Action {
    /// The earlier of two requeue requests.
    pub fn min(self, other: Action) -> Action {
        match (self, other) {
            (Action::Done, a) | (a, Action::Done) => a,
            (Action::RequeueAfter(a), Action::RequeueAfter(b)) => Action::RequeueAfter(a.min(b)),
        }
    }
}

/// One control loop's logic: make the object named by a key match its desired state.
pub trait Reconciler: Send + Sync + 'static {
    /// What the queue holds.
    type Key: QueueKey + Display;
    /// Why a reconcile failed (the key is retried with backoff).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The controller's name, for logs.
    fn name(&self) -> &'static str;

    /// Reconcile one key.
    fn reconcile(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send;
}

/// Run `workers` workers of `reconciler` over `queue` until `shutdown`.
pub async fn run<R: Reconciler>(
    reconciler: Arc<R>,
    queue: WorkQueue<R::Key>,
    workers: usize,
    shutdown: CancellationToken,
) {
    let stopper = {
        let (queue, shutdown) = (queue.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            queue.shut_down();
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (reconciler, queue) = (reconciler.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(claimed) = queue.next().await {
                let key = claimed.item().clone();
                match reconciler.reconcile(&key).await {
                    Ok(action) => {
                        queue.forget(&key);
                        if let Action::RequeueAfter(delay) = action {
                            queue.add_after(key, delay);
                        }
                    }
                    Err(err) => {
                        let failures = queue.failures(&key);
                        // The first failures are usually conflicts with a concurrent writer.
                        if failures < 3 {
                            tracing::debug!(controller = reconciler.name(), %key, error = %ErrorChain(&err), "reconcile failed; retrying");
                        } else {
                            tracing::warn!(controller = reconciler.name(), %key, failures, error = %ErrorChain(&err), "reconcile failed; retrying");
                        }
                        queue.add_rate_limited(key);
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    stopper.abort();
}

/// Prints an error with its sources: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Forward an informer's changes into a queue: `map` turns one change into the keys to
/// reconcile; after a lag every cached object is passed to `map` as if it had changed.
pub fn feed<K, T>(
    informer: &Informer<K>,
    queue: &WorkQueue<T>,
    shutdown: &CancellationToken,
    map: impl Fn(&Change<K>) -> Vec<T> + Send + Sync + 'static,
) where
    K: Resource + ResourceExt + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    T: QueueKey,
{
    let mut subscription = informer.subscribe();
    let (informer, queue, shutdown) = (informer.clone(), queue.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            let notification = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = subscription.recv() => n,
            };
            match notification {
                Some(Notification::Change(change)) => {
                    for key in map(&change) {
                        queue.add(key);
                    }
                }
                Some(Notification::Lagged) => {
                    for obj in informer.list() {
                        let change = Change::Applied {
                            old: None,
                            new: obj,
                        };
                        for key in map(&change) {
                            queue.add(key);
                        }
                    }
                }
                None => return,
            }
        }
    });
}

/// Add every key `keys` yields now and then every `period`, until `shutdown`.
pub fn resync_every<T: QueueKey>(
    queue: &WorkQueue<T>,
    period: Duration,
    shutdown: &CancellationToken,
    keys: impl Fn() -> Vec<T> + Send + 'static,
) {
    let (queue, shutdown) = (queue.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            for key in keys() {
                queue.add(key);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    struct Flaky {
        calls: Mutex<Vec<(String, tokio::time::Instant)>>,
        fail_times: Mutex<u32>,
    }

    impl Reconciler for Flaky {
        type Key = String;
        type Error = Boom;
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn reconcile(&self, key: &String) -> Result<Action, Boom> {
            self.calls
                .lock()
                .push((key.clone(), tokio::time::Instant::now()));
            let mut left = self.fail_times.lock();
            if *left > 0 {
                *left -= 1;
                return Err(Boom);
            }
            if key == "periodic" {
                return Ok(Action::RequeueAfter(Duration::from_secs(30)));
            }
            Ok(Action::Done)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_with_backoff_and_requeue_requests_are_honoured() {
        let r = Arc::new(Flaky {
            calls: Mutex::new(Vec::new()),
            fail_times: Mutex::new(3),
        });
        let q = WorkQueue::new(crate::queue::Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        });
        let stop = CancellationToken::new();
        let runner = tokio::spawn(run(r.clone(), q.clone(), 2, stop.clone()));
        let start = tokio::time::Instant::now();
        q.add("x".to_owned());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let calls: Vec<u64> = r
            .calls
            .lock()
            .iter()
            .map(|(_, t)| (*t - start).as_secs())
            .collect();
        // Fails at 0, retried after 1 s, 2 s, 4 s: 0, 1, 3, 7; then succeeds.
        assert_eq!(calls, [0, 1, 3, 7]);
        q.add("periodic".to_owned());
        tokio::time::sleep(Duration::from_secs(65)).await;
        let periodic = r
            .calls
            .lock()
            .iter()
            .filter(|(k, _)| k == "periodic")
            .count();
        assert_eq!(periodic, 3, "at 20 s, 50 s and 80 s");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), runner)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn the_earlier_requeue_wins() {
        let a = Action::RequeueAfter(Duration::from_secs(5));
        let b = Action::RequeueAfter(Duration::from_secs(2));
        assert_eq!(a.min(b), b);
        assert_eq!(Action::Done.min(a), a);
        assert_eq!(Action::Done.min(Action::Done), Action::Done);
    }
}
