//! A work queue with client-go's guarantees: an item waiting in the queue is held once however
//! often it is added; an item being processed is never handed to a second worker, and if it is
//! added meanwhile it is queued again when the first worker is done; items can be added after
//! a delay, or rate-limited with per-item exponential backoff that [`WorkQueue::forget`]
//! resets.
//!
//! Time is `tokio::time`, so tests with a paused clock are deterministic.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a queue item must be.
pub trait QueueKey: Clone + Eq + Hash + Send + Sync + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + 'static> QueueKey for T {}

/// Per-item exponential backoff: `base * 2^failures`, capped (upstream's
/// `ItemExponentialFailureRateLimiter`; controllers default to 5 ms .. 1000 s).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1000),
        }
    }
}

impl Backoff {
    /// The delay after `failures` earlier failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }
}

struct State<T> {
    ready: VecDeque<T>,
    /// Items in `ready` (so adding twice queues once).
    queued: HashSet<T>,
    /// Items a worker holds.
    processing: HashSet<T>,
    /// Items added while being processed: queued again on `done`.
    dirty: HashSet<T>,
    /// Delayed items by due time (with a sequence number to keep equal times apart).
    delayed: BTreeMap<(Instant, u64), T>,
    /// The due time of each delayed item, so an earlier re-add wins and a later one is ignored.
    due: HashMap<T, (Instant, u64)>,
    failures: HashMap<T, u32>,
    sequence: u64,
    shut_down: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    notify: Notify,
    backoff: Backoff,
}

/// A de-duplicating, delaying, rate-limiting work queue shared by a controller's workers.
pub struct WorkQueue<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T: QueueKey> Default for WorkQueue<T> {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

/// An item handed to a worker; the queue learns the worker is done when it is dropped.
pub struct Claimed<T: QueueKey> {
    item: Option<T>,
    queue: WorkQueue<T>,
}

impl<T: QueueKey> Claimed<T> {
    /// The item.
    pub fn item(&self) -> &T {
        self.item.as_ref().expect("item present until drop")
    }
}

impl<T: QueueKey> Drop for Claimed<T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.queue.done(item);
        }
    }
}

impl<T: QueueKey> WorkQueue<T> {
    /// An empty queue with the given rate-limiting backoff.
    pub fn new(backoff: Backoff) -> WorkQueue<T> {
        WorkQueue {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    ready: VecDeque::new(),
                    queued: HashSet::new(),
                    processing: HashSet::new(),
                    dirty: HashSet::new(),
                    delayed: BTreeMap::new(),
                    due: HashMap::new(),
                    failures: HashMap::new(),
                    sequence: 0,
                    shut_down: false,
                }),
                notify: Notify::new(),
                backoff,
            }),
        }
    }

    /// Queue `item` now.
    pub fn add(&self, item: T) {
        let mut state = self.inner.state.lock();
        if Self::enqueue(&mut state, item) {
            drop(state);
            self.inner.notify.notify_one();
        }
    }

    /// Returns whether a worker should be woken.
    fn enqueue(state: &mut State<T>, item: T) -> bool {
        if state.shut_down || state.queued.contains(&item) {
            return false;
        }
        if let Some(slot) = state.due.remove(&item) {
            state.delayed.remove(&slot);
        }
        if state.processing.contains(&item) {
            state.dirty.insert(item);
            return false;
        }
        state.queued.insert(item.clone());
        state.ready.push_back(item);
        true
    }

    /// Queue `item` after `delay`. If it is already due sooner, the sooner time stands.
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let at = Instant::now() + delay;
        let mut state = self.inner.state.lock();
        if state.shut_down || state.queued.contains(&item) {
            return;
        }
        if let Some(existing) = state.due.get(&item) {
            if existing.0 <= at {
                return;
            }
            let existing = *existing;
            state.delayed.remove(&existing);
        }
        state.sequence += 1;
        let slot = (at, state.sequence);
        state.due.insert(item.clone(), slot);
        state.delayed.insert(slot, item);
        drop(state);
        // A waiting worker may need to wake earlier than it planned.
        self.inner.notify.notify_one();
    }

    /// Queue `item` after its backoff, and count one more failure for it.
    pub fn add_rate_limited(&self, item: T) {
        let delay = {
            let mut state = self.inner.state.lock();
            let failures = state.failures.entry(item.clone()).or_insert(0);
            let delay = self.inner.backoff.delay(*failures);
            *failures += 1;
            delay
        };
        self.add_after(item, delay);
    }

    /// Reset `item`'s failure count (after it succeeded).
    pub fn forget(&self, item: &T) {
        self.inner.state.lock().failures.remove(item);
    }

    /// How often `item` failed since it was last forgotten.
    pub fn failures(&self, item: &T) -> u32 {
        self.inner
            .state
            .lock()
            .failures
            .get(item)
            .copied()
            .unwrap_or(0)
    }

    /// Items ready now (not counting delayed or in-process ones).
    pub fn len(&self) -> usize {
        self.inner.state.lock().ready.len()
    }

    /// Whether nothing is ready now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stop handing out items; waiting workers get `None`.
    pub fn shut_down(&self) {
        self.inner.state.lock().shut_down = true;
        self.inner.notify.notify_waiters();
    }

    /// The next item, waiting for one to be ready; `None` after [`WorkQueue::shut_down`].
    pub async fn next(&self) -> Option<Claimed<T>> {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut state = self.inner.state.lock();
                if state.shut_down {
                    return None;
                }
                let now = Instant::now();
                while let Some(entry) = state.delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let item = entry.remove();
                    state.due.remove(&item);
                    Self::enqueue(&mut state, item);
                }
                if let Some(item) = state.ready.pop_front() {
                    state.queued.remove(&item);
                    state.processing.insert(item.clone());
                    let more = !state.ready.is_empty();
                    drop(state);
                    if more {
                        // Pass the wake-up on: another worker can take the next item.
                        self.inner.notify.notify_one();
                    }
                    return Some(Claimed {
                        item: Some(item),
                        queue: self.clone(),
                    });
                }
                state.delayed.keys().next().map(|(at, _)| *at)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn done(&self, item: T) {
        let mut state = self.inner.state.lock();
        state.processing.remove(&item);
        if state.dirty.remove(&item) && Self::enqueue(&mut state, item) {
            drop(state);
            self.inner.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_now(q: &WorkQueue<&'static str>) -> Option<Claimed<&'static str>> {
        tokio::time::timeout(Duration::from_millis(1), q.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn adding_twice_queues_once() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(*q.next().await.unwrap().item(), "a");
        assert_eq!(*q.next().await.unwrap().item(), "b");
        assert!(next_now(&q).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_in_process_is_not_handed_out_again_until_done() {
        let q = WorkQueue::default();
        q.add("a");
        let claimed = q.next().await.unwrap();
        q.add("a");
        assert!(next_now(&q).await.is_none(), "a is being processed");
        drop(claimed);
        assert_eq!(*next_now(&q).await.unwrap().item(), "a");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_items_arrive_when_due_and_the_sooner_time_wins() {
        let q = WorkQueue::default();
        let start = Instant::now();
        q.add_after("late", Duration::from_secs(10));
        q.add_after("x", Duration::from_secs(5));
        q.add_after("x", Duration::from_secs(60));
        assert!(next_now(&q).await.is_none());
        assert_eq!(*q.next().await.unwrap().item(), "x");
        assert_eq!(start.elapsed().as_secs(), 5);
        assert_eq!(*q.next().await.unwrap().item(), "late");
        assert_eq!(start.elapsed().as_secs(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn an_immediate_add_overrides_a_delay() {
        let q = WorkQueue::default();
        q.add_after("x", Duration::from_secs(60));
        q.add("x");
        assert_eq!(*next_now(&q).await.unwrap().item(), "x");
        // The delayed copy is gone.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(next_now(&q).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiting_backs_off_exponentially_until_forgotten() {
        let q = WorkQueue::new(Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        });
        let mut waits = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            q.add_rate_limited("x");
            let _claimed = q.next().await.unwrap();
            waits.push(start.elapsed().as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 8]);
        assert_eq!(q.failures(&"x"), 5);
        q.forget(&"x");
        let start = Instant::now();
        q.add_rate_limited("x");
        let _claimed = q.next().await.unwrap();
        assert_eq!(start.elapsed().as_secs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutting_down_releases_waiting_workers() {
        let q: WorkQueue<&'static str> = WorkQueue::default();
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.next().await.is_none() })
        };
        tokio::task::yield_now().await;
        q.shut_down();
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn many_workers_share_the_items() {
        let q: WorkQueue<u32> = WorkQueue::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (q, seen) = (q.clone(), seen.clone());
            workers.push(tokio::spawn(async move {
                while let Some(item) = q.next().await {
                    seen.lock().push(*item.item());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
        for i in 0..100 {
            q.add(i);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        q.shut_down();
        for w in workers {
            w.await.unwrap();
        }
        let mut seen = seen.lock().clone();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }
}
