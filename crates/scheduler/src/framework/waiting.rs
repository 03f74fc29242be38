//! Pods a Permit plugin told to wait: the binding cycle blocks until a plugin allows or rejects
//! the pod through [`WaitingPods`], or the timeout passes (upstream `waitingPodsMap`).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::Status;

/// Pods waiting at Permit, by pod key.
#[derive(Default)]
pub struct WaitingPods {
    pods: Mutex<HashMap<String, oneshot::Sender<Status>>>,
}

impl WaitingPods {
    /// Let a waiting pod bind.
    pub fn allow(&self, key: &str) -> bool {
        self.send(key, Status::success())
    }

    /// Reject a waiting pod.
    pub fn reject(&self, key: &str, message: &str) -> bool {
        self.send(key, Status::unschedulable(message))
    }

    fn send(&self, key: &str, status: Status) -> bool {
        match self.pods.lock().remove(key) {
            Some(tx) => tx.send(status).is_ok(),
            None => false,
        }
    }

    /// Keys of the waiting pods.
    pub fn keys(&self) -> Vec<String> {
        self.pods.lock().keys().cloned().collect()
    }

    /// Wait for a verdict on `key` for at most `timeout`.
    pub async fn wait(&self, key: &str, timeout: Duration) -> Status {
        let (tx, rx) = oneshot::channel();
        self.pods.lock().insert(key.to_owned(), tx);
        let verdict = tokio::time::timeout(timeout, rx).await;
        self.pods.lock().remove(key);
        match verdict {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => Status::error("waiting pod dropped"),
            Err(_) => Status::unschedulable(format!(
                "rejected due to timeout after waiting {}s at plugin Permit",
                timeout.as_secs()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn waiting_pods_are_allowed_rejected_or_time_out() {
        let w = Arc::new(WaitingPods::default());
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.wait("a", Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        assert!(w.allow("a"));
        assert!(waiter.await.unwrap().is_success());
        let timed_out = w.wait("b", Duration::from_secs(1)).await;
        assert!(timed_out.is_rejected());
        assert!(!w.reject("b", "gone"));
    }
}
