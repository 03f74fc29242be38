//! Expectations (upstream `ControllerExpectations`/`UIDTrackingControllerExpectations`): a
//! controller that just created or deleted objects must not act again on a cache that has not
//! seen those writes yet, or it would create a second batch of pods. It records what it
//! expects to observe, the informer handlers tick the expectations off, and the reconciler
//! acts only once they are met — or once they are too old to trust (a watch event can be
//! lost to a relist), after which the cache is taken as the truth again.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How long expectations are trusted (upstream `ExpectationsTimeout`).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Record {
    adds: i64,
    deletes: HashSet<String>,
    at: Instant,
}

/// Pending creations (counted) and deletions (by uid) per controller key.
#[derive(Debug)]
pub struct Expectations<T> {
    records: Mutex<HashMap<T, Record>>,
    timeout: Duration,
}

impl<T: Clone + Eq + Hash> Default for Expectations<T> {
    fn default() -> Self {
        Self::new(EXPECTATIONS_TIMEOUT)
    }
}

impl<T: Clone + Eq + Hash> Expectations<T> {
    /// Expectations that expire after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Expectations {
            records: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// Whether the controller of `key` may act: nothing is pending, or what is pending is too
    /// old to trust.
    pub fn satisfied(&self, key: &T) -> bool {
        let records = self.records.lock();
        match records.get(key) {
            None => true,
            Some(r) => (r.adds <= 0 && r.deletes.is_empty()) || r.at.elapsed() > self.timeout,
        }
    }

    /// Expect `adds` more creations.
    pub fn expect_creations(&self, key: &T, adds: usize) {
        let mut records = self.records.lock();
        let r = records.entry(key.clone()).or_insert_with(|| Record {
            adds: 0,
            deletes: HashSet::new(),
            at: Instant::now(),
        });
        if r.adds <= 0 && r.deletes.is_empty() {
            r.adds = 0;
        }
        r.adds += adds as i64;
        r.at = Instant::now();
    }

    /// Expect the deletion of objects with these uids.
    pub fn expect_deletions(&self, key: &T, uids: impl IntoIterator<Item = String>) {
        let mut records = self.records.lock();
        let r = records.entry(key.clone()).or_insert_with(|| Record {
            adds: 0,
            deletes: HashSet::new(),
            at: Instant::now(),
        });
        r.deletes.extend(uids);
        r.at = Instant::now();
    }

    /// A creation was observed (or will never happen because it failed).
    pub fn creation_observed(&self, key: &T) {
        if let Some(r) = self.records.lock().get_mut(key) {
            r.adds -= 1;
        }
    }

    /// Lower the expected creations by `n` (creations skipped after an error).
    pub fn lower_creations(&self, key: &T, n: usize) {
        if let Some(r) = self.records.lock().get_mut(key) {
            r.adds -= n as i64;
        }
    }

    /// The deletion of `uid` was observed (or failed and will not be).
    pub fn deletion_observed(&self, key: &T, uid: &str) {
        if let Some(r) = self.records.lock().get_mut(key) {
            r.deletes.remove(uid);
        }
    }

    /// Forget everything about `key` (its controller object is gone).
    pub fn forget(&self, key: &T) {
        self.records.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pending_writes_hold_the_controller_until_observed_or_expired() {
        let e: Expectations<&str> = Expectations::default();
        assert!(e.satisfied(&"rs"));
        e.expect_creations(&"rs", 2);
        e.expect_deletions(&"rs", ["u1".to_owned()]);
        assert!(!e.satisfied(&"rs"));
        e.creation_observed(&"rs");
        e.creation_observed(&"rs");
        assert!(!e.satisfied(&"rs"), "a deletion is still pending");
        // Seeing the same deletion twice (graceful delete, then removal) counts once.
        e.deletion_observed(&"rs", "u1");
        e.deletion_observed(&"rs", "u1");
        assert!(e.satisfied(&"rs"));
        e.expect_creations(&"rs", 1);
        assert!(!e.satisfied(&"rs"));
        tokio::time::advance(EXPECTATIONS_TIMEOUT + Duration::from_secs(1)).await;
        assert!(e.satisfied(&"rs"), "stale expectations are not trusted");
        e.forget(&"rs");
        assert!(e.satisfied(&"rs"));
    }
}
