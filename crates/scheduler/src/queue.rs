//! The scheduling queue (upstream `PriorityQueue`): three sub-queues and a nominator.
//!
//! - **active**: a heap ordered by the QueueSort plugin (priority, then age); the scheduling
//!   loop pops from it.
//! - **backoff**: pods that failed recently, ordered by when their backoff (initial × 2^(n-1),
//!   capped) expires; they move to active when it does — or earlier, when nothing else is
//!   active and they were rejected by plugins rather than by an error (upstream
//!   SchedulerPopFromBackoffQ).
//! - **unschedulable**: pods that no node fits and that nothing has changed for since. A
//!   [`ClusterEvent`] moves a pod back (to backoff if it is still backing off, else to active)
//!   when one of the plugins that rejected it registered that event and its queueing hint
//!   agrees; pods left there for 5 minutes are retried anyway. Pods a PreEnqueue plugin holds
//!   (scheduling gates) wait here too, until an update lets them through.
//!
//! A pod that fails while an event arrived during its cycle goes to backoff instead of
//! unschedulable, so no event is lost (the move-request cycle). The [`Nominator`] remembers
//! which pods preemption nominated to which node, so lower-priority pods do not take the room.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::framework::{ClusterEvent, EventObject, Framework, Plugin, Status, events};
use crate::nodeinfo::{PodInfo, pod_key};

/// Pods left unschedulable this long are retried without an event.
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(300);
const LEFTOVER_CHECK: Duration = Duration::from_secs(30);

/// A pod in the queue with its scheduling history.
#[derive(Debug, Clone)]
pub struct QueuedPodInfo {
    /// The pod.
    pub pod: Arc<PodInfo>,
    /// When it was last added to a sub-queue (the age QueueSort compares).
    pub timestamp: Instant,
    /// When it first entered the queue (for end-to-end latency).
    pub first_enqueued: Instant,
    /// When it was first popped.
    pub initial_attempt: Option<Instant>,
    /// How many times it was popped.
    pub attempts: u32,
    /// Plugins that rejected it in its last attempt.
    pub unschedulable_plugins: HashSet<&'static str>,
    /// The PreEnqueue rejection keeping it out of the active queue.
    pub gated: Option<Status>,
}

impl QueuedPodInfo {
    /// A pod entering the queue now.
    pub fn new(pod: Arc<PodInfo>) -> QueuedPodInfo {
        let now = Instant::now();
        QueuedPodInfo {
            pod,
            timestamp: now,
            first_enqueued: now,
            initial_attempt: None,
            attempts: 0,
            unschedulable_plugins: HashSet::new(),
            gated: None,
        }
    }
}

/// Orders the active queue.
type Less = Arc<dyn Fn(&QueuedPodInfo, &QueuedPodInfo) -> bool + Send + Sync>;

/// A binary heap under an arbitrary order, with removal by key.
struct Heap {
    items: Vec<QueuedPodInfo>,
    positions: HashMap<String, usize>,
    less: Less,
}

impl Heap {
    fn new(less: Less) -> Heap {
        Heap {
            items: Vec::new(),
            positions: HashMap::new(),
            less,
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn contains(&self, key: &str) -> bool {
        self.positions.contains_key(key)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.items.swap(a, b);
        self.positions.insert(self.items[a].pod.key.clone(), a);
        self.positions.insert(self.items[b].pod.key.clone(), b);
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if (self.less)(&self.items[i], &self.items[parent]) {
                self.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < self.items.len() && (self.less)(&self.items[l], &self.items[best]) {
                best = l;
            }
            if r < self.items.len() && (self.less)(&self.items[r], &self.items[best]) {
                best = r;
            }
            if best == i {
                break;
            }
            self.swap(i, best);
            i = best;
        }
    }

    fn push(&mut self, item: QueuedPodInfo) {
        if let Some(&i) = self.positions.get(&item.pod.key) {
            self.items[i] = item;
            self.up(i);
            self.down(i);
            return;
        }
        self.positions
            .insert(item.pod.key.clone(), self.items.len());
        self.items.push(item);
        self.up(self.items.len() - 1);
    }

    fn pop(&mut self) -> Option<QueuedPodInfo> {
        if self.items.is_empty() {
            return None;
        }
        let last = self.items.len() - 1;
        self.swap(0, last);
        let item = self.items.pop()?;
        self.positions.remove(&item.pod.key);
        if !self.items.is_empty() {
            self.down(0);
        }
        Some(item)
    }

    fn remove(&mut self, key: &str) -> Option<QueuedPodInfo> {
        let i = self.positions.remove(key)?;
        let last = self.items.len() - 1;
        if i != last {
            self.items.swap(i, last);
            self.positions.insert(self.items[i].pod.key.clone(), i);
        }
        let item = self.items.pop();
        if i < self.items.len() {
            self.up(i);
            self.down(i);
        }
        item
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut QueuedPodInfo> {
        let i = *self.positions.get(key)?;
        self.items.get_mut(i)
    }
}

/// Pods preemption nominated to nodes (upstream `nominator`).
#[derive(Default)]
pub struct Nominator {
    state: RwLock<NominatorState>,
}

/// Looked up for every node a cycle filters while any pod is nominated: a fast hasher.
#[derive(Default)]
struct NominatorState {
    by_node: FxHashMap<String, Vec<Arc<PodInfo>>>,
    node_of: FxHashMap<String, String>,
}

impl Nominator {
    /// Nominate `pod` to `node` (replacing an earlier nomination).
    pub fn add(&self, pod: Arc<PodInfo>, node: &str) {
        if node.is_empty() {
            return self.delete(&pod.key);
        }
        let mut s = self.state.write();
        Self::remove_locked(&mut s, &pod.key);
        s.node_of.insert(pod.key.clone(), node.to_owned());
        s.by_node.entry(node.to_owned()).or_default().push(pod);
    }

    fn remove_locked(s: &mut NominatorState, key: &str) {
        if let Some(node) = s.node_of.remove(key)
            && let Some(list) = s.by_node.get_mut(&node)
        {
            list.retain(|p| p.key != key);
            if list.is_empty() {
                s.by_node.remove(&node);
            }
        }
    }

    /// Forget a pod's nomination.
    pub fn delete(&self, key: &str) {
        let mut s = self.state.write();
        Self::remove_locked(&mut s, key);
    }

    /// The pods nominated to `node`.
    pub fn pods_for_node(&self, node: &str) -> Vec<Arc<PodInfo>> {
        let s = self.state.read();
        if s.by_node.is_empty() {
            return Vec::new();
        }
        s.by_node.get(node).cloned().unwrap_or_default()
    }

    /// Whether any pod is nominated anywhere.
    pub fn is_empty(&self) -> bool {
        self.state.read().node_of.is_empty()
    }

    /// The node a pod is nominated to.
    pub fn node_of(&self, key: &str) -> Option<String> {
        self.state.read().node_of.get(key).cloned()
    }
}

/// How many pods wait in each sub-queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Ready to be scheduled.
    pub active: usize,
    /// Waiting out a backoff.
    pub backoff: usize,
    /// Waiting for a cluster event.
    pub unschedulable: usize,
    /// Held by a PreEnqueue plugin (scheduling gates).
    pub gated: usize,
}

/// What happened to a pod while it was being scheduled.
enum InFlight {
    Unchanged,
    Updated(Arc<Pod>),
    Deleted,
}

struct State {
    active: Heap,
    backoff: BTreeMap<(Instant, u64), String>,
    backoff_items: HashMap<String, (QueuedPodInfo, (Instant, u64))>,
    unschedulable: HashMap<String, QueuedPodInfo>,
    /// Popped pods, with what happened to them meanwhile.
    in_flight: HashMap<String, InFlight>,
    scheduling_cycle: u64,
    move_request_cycle: Option<u64>,
    sequence: u64,
    last_leftover_check: Instant,
    closed: bool,
}

/// A plugin's registration for cluster events.
struct Registration {
    plugin: Arc<dyn Plugin>,
    event: ClusterEvent,
}

/// The scheduling queue shared by the event handlers and the scheduling loop.
pub struct SchedulingQueue {
    state: Mutex<State>,
    notify: Notify,
    profiles: HashMap<String, Arc<Framework>>,
    registrations: Vec<Registration>,
    initial_backoff: Duration,
    max_backoff: Duration,
    /// Nominated pods.
    pub nominator: Arc<Nominator>,
}

/// Whether a pod update may change its schedulability (anything but status and
/// bookkeeping metadata changed).
fn pod_updated(old: &Pod, new: &Pod) -> bool {
    let strip = |p: &Pod| {
        let mut p = p.clone();
        p.status = None;
        p.metadata.resource_version = None;
        p.metadata.generation = None;
        p.metadata.managed_fields = None;
        p
    };
    strip(old) != strip(new)
}

impl SchedulingQueue {
    /// A queue for these profiles, ordered by the first profile's QueueSort plugin.
    pub fn new(
        profiles: HashMap<String, Arc<Framework>>,
        nominator: Arc<Nominator>,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> SchedulingQueue {
        let mut names: Vec<&String> = profiles.keys().collect();
        names.sort();
        let sort = names
            .first()
            .map(|n| profiles[*n].queue_sort())
            .expect("at least one profile");
        let less: Less = Arc::new(move |a, b| match sort.as_queue_sort() {
            Some(qs) => qs.less(a, b),
            None => a.timestamp < b.timestamp,
        });
        let mut registrations = Vec::new();
        for f in profiles.values() {
            for (name, event) in f.events_to_register() {
                if let Some(plugin) = f.plugin(name) {
                    registrations.push(Registration { plugin, event });
                }
            }
        }
        SchedulingQueue {
            state: Mutex::new(State {
                active: Heap::new(less),
                backoff: BTreeMap::new(),
                backoff_items: HashMap::new(),
                unschedulable: HashMap::new(),
                in_flight: HashMap::new(),
                scheduling_cycle: 0,
                move_request_cycle: None,
                sequence: 0,
                last_leftover_check: Instant::now(),
                closed: false,
            }),
            notify: Notify::new(),
            profiles,
            registrations,
            initial_backoff,
            max_backoff,
            nominator,
        }
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d > self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    fn backoff_expiry(&self, qpi: &QueuedPodInfo) -> Instant {
        qpi.timestamp + self.backoff_duration(qpi.attempts)
    }

    fn is_backing_off(&self, qpi: &QueuedPodInfo) -> bool {
        qpi.attempts > 0 && self.backoff_expiry(qpi) > Instant::now()
    }

    fn pre_enqueue(&self, qpi: &mut QueuedPodInfo) -> bool {
        let scheduler = qpi
            .pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
        let status = self
            .profiles
            .get(scheduler)
            .map_or(Status::success(), |f| f.run_pre_enqueue(&qpi.pod));
        if status.is_success() {
            qpi.gated = None;
            true
        } else {
            qpi.gated = Some(status);
            false
        }
    }

    /// Put a pod where it belongs: gated → unschedulable, backing off → backoff, else active.
    /// Returns whether the popper must look again (the active queue grew, or a backoff may
    /// expire before the popper planned to wake).
    fn place(&self, s: &mut State, mut qpi: QueuedPodInfo, to_unschedulable: bool) -> bool {
        let key = qpi.pod.key.clone();
        if !self.pre_enqueue(&mut qpi) || to_unschedulable {
            s.unschedulable.insert(key, qpi);
            return false;
        }
        if self.is_backing_off(&qpi) {
            s.sequence += 1;
            let slot = (self.backoff_expiry(&qpi), s.sequence);
            s.backoff.insert(slot, key.clone());
            s.backoff_items.insert(key, (qpi, slot));
            return true;
        }
        s.active.push(qpi);
        true
    }

    fn remove_everywhere(s: &mut State, key: &str) -> Option<QueuedPodInfo> {
        if let Some(q) = s.active.remove(key) {
            return Some(q);
        }
        if let Some((q, slot)) = s.backoff_items.remove(key) {
            s.backoff.remove(&slot);
            return Some(q);
        }
        s.unschedulable.remove(key)
    }

    /// A new pod to schedule.
    pub fn add(&self, pod: Arc<Pod>) {
        let info = Arc::new(PodInfo::new(pod));
        self.track_nomination(&info);
        let mut s = self.state.lock();
        if s.closed {
            return;
        }
        if s.active.contains(&info.key)
            || s.backoff_items.contains_key(&info.key)
            || s.unschedulable.contains_key(&info.key)
        {
            drop(s);
            return self.update(None, info.pod.clone());
        }
        if let Some(slot) = s.in_flight.get_mut(&info.key) {
            *slot = InFlight::Updated(info.pod.clone());
            return;
        }
        if self.place(&mut s, QueuedPodInfo::new(info), false) {
            drop(s);
            self.notify.notify_one();
        }
    }

    fn track_nomination(&self, info: &Arc<PodInfo>) {
        let nominated = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .unwrap_or("");
        if nominated.is_empty() {
            if self.nominator.node_of(&info.key).is_some() {
                self.nominator.delete(&info.key);
            }
        } else {
            self.nominator.add(info.clone(), nominated);
        }
    }

    /// A queued pod changed.
    pub fn update(&self, old: Option<&Pod>, new: Arc<Pod>) {
        let key = pod_key(&new);
        let info = Arc::new(PodInfo::new(new.clone()));
        self.track_nomination(&info);
        let mut s = self.state.lock();
        if let Some(slot) = s.in_flight.get_mut(&key) {
            *slot = InFlight::Updated(new);
            return;
        }
        if let Some(q) = s.active.get_mut(&key) {
            q.pod = info;
            return;
        }
        if let Some((q, _)) = s.backoff_items.get_mut(&key) {
            q.pod = info;
            return;
        }
        if let Some(mut q) = s.unschedulable.remove(&key) {
            let changed = old.is_none_or(|o| pod_updated(o, &new));
            q.pod = info;
            if !changed {
                s.unschedulable.insert(key, q);
                return;
            }
            let grew = self.place(&mut s, q, false);
            drop(s);
            if grew {
                self.notify.notify_one();
            }
            return;
        }
        drop(s);
        self.add(new);
    }

    /// A queued pod was deleted or bound elsewhere.
    pub fn delete(&self, pod: &Pod) {
        let key = pod_key(pod);
        self.nominator.delete(&key);
        let mut s = self.state.lock();
        Self::remove_everywhere(&mut s, &key);
        if let Some(slot) = s.in_flight.get_mut(&key) {
            *slot = InFlight::Deleted;
        }
    }

    /// Whether the queue holds (or is scheduling) the pod.
    pub fn contains(&self, key: &str) -> bool {
        let s = self.state.lock();
        s.active.contains(key)
            || s.backoff_items.contains_key(key)
            || s.unschedulable.contains_key(key)
            || s.in_flight.contains_key(key)
    }

    /// Keys of every queued pod (re-list reconciliation).
    pub fn keys(&self) -> Vec<String> {
        let s = self.state.lock();
        s.active
            .positions
            .keys()
            .chain(s.backoff_items.keys())
            .chain(s.unschedulable.keys())
            .cloned()
            .collect()
    }

    /// Remove a pod by key (re-list reconciliation).
    pub fn delete_key(&self, key: &str) {
        self.nominator.delete(key);
        let mut s = self.state.lock();
        Self::remove_everywhere(&mut s, key);
    }

    fn flush(&self, s: &mut State) {
        let now = Instant::now();
        while let Some(entry) = s.backoff.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some((q, _)) = s.backoff_items.remove(&key) {
                s.active.push(q);
            }
        }
        if now.duration_since(s.last_leftover_check) >= LEFTOVER_CHECK {
            s.last_leftover_check = now;
            // Gated pods too, as upstream: placing them asks their PreEnqueue plugins again
            // (and keeps them here while those still refuse).
            let stale: Vec<String> = s
                .unschedulable
                .iter()
                .filter(|(_, q)| now.duration_since(q.timestamp) > MAX_IN_UNSCHEDULABLE)
                .map(|(k, _)| k.clone())
                .collect();
            if stale.iter().any(|k| s.unschedulable[k].gated.is_none()) {
                s.move_request_cycle = Some(s.scheduling_cycle);
            }
            for key in stale {
                if let Some(q) = s.unschedulable.remove(&key) {
                    self.place(s, q, false);
                }
            }
        }
    }

    /// Nothing is active: move the pod whose backoff ends first to the active queue before its
    /// time (upstream SchedulerPopFromBackoffQ, on by default since v1.33: an idle scheduler
    /// need not wait out backoffs). Pods backing off after an error wait it out.
    fn pop_from_backoff(s: &mut State) {
        let early = s
            .backoff
            .iter()
            .find(|(_, key)| {
                s.backoff_items
                    .get(*key)
                    .is_some_and(|(q, _)| !q.unschedulable_plugins.is_empty())
            })
            .map(|(slot, key)| (*slot, key.clone()));
        if let Some((slot, key)) = early {
            s.backoff.remove(&slot);
            if let Some((q, _)) = s.backoff_items.remove(&key) {
                s.active.push(q);
            }
        }
    }

    /// The next pod to schedule, waiting for one; `None` once closed.
    pub async fn pop(&self) -> Option<QueuedPodInfo> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut s = self.state.lock();
                if s.closed {
                    return None;
                }
                self.flush(&mut s);
                if s.active.len() == 0 {
                    Self::pop_from_backoff(&mut s);
                }
                if let Some(mut q) = s.active.pop() {
                    q.attempts += 1;
                    let now = Instant::now();
                    q.initial_attempt.get_or_insert(now);
                    s.scheduling_cycle += 1;
                    s.in_flight.insert(q.pod.key.clone(), InFlight::Unchanged);
                    let more = s.active.len() > 0;
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(q);
                }
                let next_backoff = s.backoff.keys().next().map(|(at, _)| *at);
                let leftover = s.last_leftover_check + LEFTOVER_CHECK;
                next_backoff.map_or(leftover, |b| b.min(leftover))
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// The number of the latest scheduling cycle (a pod popped in cycle N failing after a move
    /// request at cycle ≥ N goes to backoff instead of unschedulable).
    pub fn scheduling_cycle(&self) -> u64 {
        self.state.lock().scheduling_cycle
    }

    /// A popped pod was scheduled (assumed); it leaves the in-flight set.
    pub fn done(&self, key: &str) {
        self.state.lock().in_flight.remove(key);
    }

    /// A popped pod failed: back to the unschedulable set, or to backoff when something
    /// changed during its cycle (an event, or an update of the pod itself). `error` failures
    /// always back off.
    pub fn add_unschedulable_if_not_present(
        &self,
        mut qpi: QueuedPodInfo,
        cycle: u64,
        error: bool,
    ) {
        let mut s = self.state.lock();
        let key = qpi.pod.key.clone();
        let updated = s.in_flight.remove(&key);
        if s.closed
            || s.active.contains(&key)
            || s.backoff_items.contains_key(&key)
            || s.unschedulable.contains_key(&key)
        {
            return;
        }
        let mut changed = error;
        match updated {
            Some(InFlight::Deleted) => return,
            Some(InFlight::Updated(pod)) => {
                qpi.pod = Arc::new(PodInfo::new(pod));
                changed = true;
            }
            _ => {}
        }
        qpi.timestamp = Instant::now();
        let moved = s.move_request_cycle.is_some_and(|m| m >= cycle);
        let to_unschedulable = !(changed || moved || qpi.unschedulable_plugins.is_empty());
        let grew = self.place(&mut s, qpi, to_unschedulable);
        drop(s);
        if grew {
            self.notify.notify_one();
        }
    }

    /// A cluster event happened: move the unschedulable pods it may help.
    pub fn move_on_event(
        &self,
        event: &ClusterEvent,
        old: &EventObject<'_>,
        new: &EventObject<'_>,
    ) {
        let mut s = self.state.lock();
        s.move_request_cycle = Some(s.scheduling_cycle);
        if s.unschedulable.is_empty() {
            return;
        }
        let candidates: Vec<String> = s
            .unschedulable
            .iter()
            .filter(|(_, q)| q.gated.is_none() && self.event_may_help(q, event, old, new))
            .map(|(k, _)| k.clone())
            .collect();
        // Pods a PreEnqueue plugin held back are asked again on the events that plugin
        // registered (upstream: preemption holds a pod while its victims are evicted, and a
        // pod deletion may end that); once let through, the usual hints decide.
        let gated: Vec<String> = s
            .unschedulable
            .iter()
            .filter(|(_, q)| {
                q.gated
                    .as_ref()
                    .is_some_and(|g| self.registered(g.plugin(), event))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut grew = false;
        for key in candidates {
            if let Some(q) = s.unschedulable.remove(&key) {
                grew |= self.place(&mut s, q, false);
            }
        }
        for key in gated {
            let Some(mut q) = s.unschedulable.remove(&key) else {
                continue;
            };
            if self.pre_enqueue(&mut q) && self.event_may_help(&q, event, old, new) {
                grew |= self.place(&mut s, q, false);
            } else {
                s.unschedulable.insert(key, q);
            }
        }
        drop(s);
        if grew {
            self.notify.notify_one();
        }
    }

    /// Whether `plugin` registered `event`.
    fn registered(&self, plugin: &str, event: &ClusterEvent) -> bool {
        self.registrations
            .iter()
            .any(|r| r.plugin.name() == plugin && r.event.matches(event))
    }

    fn event_may_help(
        &self,
        q: &QueuedPodInfo,
        event: &ClusterEvent,
        old: &EventObject<'_>,
        new: &EventObject<'_>,
    ) -> bool {
        if event.resource == crate::framework::events::Resource::Wildcard
            || q.unschedulable_plugins.is_empty()
        {
            return true;
        }
        self.registrations.iter().any(|r| {
            q.unschedulable_plugins.contains(r.plugin.name())
                && r.event.matches(event)
                && r.plugin.queueing_hint(event, &q.pod, old, new)
        })
    }

    /// A pod a PreEnqueue plugin held back may go now (upstream `Activate`, for the pods a
    /// plugin held): ask the PreEnqueue plugins again and queue it if they agree.
    pub fn release_if_held(&self, key: &str) {
        let mut s = self.state.lock();
        if s.unschedulable.get(key).is_none_or(|q| q.gated.is_none()) {
            return;
        }
        let Some(q) = s.unschedulable.remove(key) else {
            return;
        };
        let grew = self.place(&mut s, q, false);
        drop(s);
        if grew {
            self.notify.notify_one();
        }
    }

    /// Move every unschedulable pod (binding failed, or a catch-all change).
    pub fn move_all(&self) {
        self.move_on_event(&events::WILDCARD, &EventObject::None, &EventObject::None);
    }

    /// Pod counts per sub-queue.
    pub fn pending(&self) -> Pending {
        let s = self.state.lock();
        let gated = s
            .unschedulable
            .values()
            .filter(|q| q.gated.is_some())
            .count();
        Pending {
            active: s.active.len(),
            backoff: s.backoff_items.len(),
            unschedulable: s.unschedulable.len() - gated,
            gated,
        }
    }

    /// Stop handing out pods.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfiguration;
    use crate::framework::{ActionType, Handle, events::Resource};
    use crate::registry::Registry;
    use k8s_openapi::api::core::v1::{PodSchedulingGate, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn queue() -> SchedulingQueue {
        let config = SchedulerConfiguration::default();
        let nominator = Arc::new(Nominator::default());
        let mut handle = Handle::for_tests();
        handle.nominator = nominator.clone();
        let f = Framework::new(&config.profiles()[0], &Registry::in_tree(), handle).unwrap();
        let profiles = [("default-scheduler".to_owned(), Arc::new(f))].into();
        SchedulingQueue::new(
            profiles,
            nominator,
            Duration::from_secs(1),
            Duration::from_secs(10),
        )
    }

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                priority: Some(priority),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn pop_now(q: &SchedulingQueue) -> Option<QueuedPodInfo> {
        tokio::time::timeout(Duration::from_millis(1), q.pop())
            .await
            .ok()
            .flatten()
    }

    fn name(q: &QueuedPodInfo) -> &str {
        q.pod.pod.metadata.name.as_deref().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_first_then_oldest_first() {
        let q = queue();
        q.add(pod("low", 0));
        tokio::time::advance(Duration::from_millis(1)).await;
        q.add(pod("high", 100));
        tokio::time::advance(Duration::from_millis(1)).await;
        q.add(pod("low2", 0));
        let order: Vec<String> = [
            q.pop().await.unwrap(),
            q.pop().await.unwrap(),
            q.pop().await.unwrap(),
        ]
        .iter()
        .map(|p| name(p).to_owned())
        .collect();
        assert_eq!(order, ["high", "low", "low2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_a_registered_event_then_back_off() {
        let q = queue();
        q.add(pod("a", 0));
        let mut p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins.insert("NodeResourcesFit");
        q.add_unschedulable_if_not_present(p, cycle, false);
        assert_eq!(q.pending().unschedulable, 1);
        // An event NodeResourcesFit did not register (a node annotation change) does not move it.
        let label = ClusterEvent::new(
            Resource::Node,
            ActionType::UPDATE_NODE_ANNOTATION,
            "NodeAnnotationChange",
        );
        q.move_on_event(&label, &EventObject::None, &EventObject::None);
        assert_eq!(q.pending().unschedulable, 1);
        // A node being added does; the pod is still backing off (1 s after one attempt).
        q.move_on_event(&events::NODE_ADD, &EventObject::None, &EventObject::None);
        assert_eq!(q.pending().backoff, 1);
        // Active pods go first; with none left the backing-off pod is popped early
        // (SchedulerPopFromBackoffQ).
        q.add(pod("b", 0));
        assert_eq!(name(&pop_now(&q).await.unwrap()), "b");
        let start = Instant::now();
        let again = pop_now(&q).await.unwrap();
        assert_eq!(name(&again), "a");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(again.attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn pods_that_failed_with_an_error_wait_out_their_backoff() {
        let q = queue();
        q.add(pod("a", 0));
        let p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        q.add_unschedulable_if_not_present(p, cycle, true);
        assert_eq!(q.pending().backoff, 1);
        let start = Instant::now();
        assert!(pop_now(&q).await.is_none(), "not popped early");
        let again = q.pop().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(again.attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleeping_popper_wakes_for_a_pod_moved_into_backoff() {
        let q = Arc::new(queue());
        q.add(pod("a", 0));
        let mut p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins.insert("NodeResourcesFit");
        q.add_unschedulable_if_not_present(p, cycle, false);
        let popper = {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await.map(|p| Instant::now() - p.timestamp) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.move_on_event(&events::NODE_ADD, &EventObject::None, &EventObject::None);
        let waited = popper.await.unwrap().unwrap();
        assert!(waited <= Duration::from_secs(2), "popped after {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_maximum() {
        let q = queue();
        assert_eq!(q.backoff_duration(1), Duration::from_secs(1));
        assert_eq!(q.backoff_duration(2), Duration::from_secs(2));
        assert_eq!(q.backoff_duration(4), Duration::from_secs(8));
        assert_eq!(q.backoff_duration(5), Duration::from_secs(10));
        assert_eq!(q.backoff_duration(50), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_during_the_cycle_sends_the_pod_to_backoff() {
        let q = queue();
        q.add(pod("a", 0));
        let mut p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        q.move_on_event(&events::NODE_ADD, &EventObject::None, &EventObject::None);
        p.unschedulable_plugins.insert("NodeResourcesFit");
        q.add_unschedulable_if_not_present(p, cycle, false);
        assert_eq!(q.pending().backoff, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gated_pods_wait_until_their_gates_are_removed() {
        let q = queue();
        let mut gated = (*pod("g", 0)).clone();
        gated.spec.as_mut().unwrap().scheduling_gates = Some(vec![PodSchedulingGate {
            name: "example.com/wait".into(),
        }]);
        q.add(Arc::new(gated.clone()));
        assert_eq!(q.pending().gated, 1);
        assert!(pop_now(&q).await.is_none());
        q.move_all();
        assert_eq!(q.pending().gated, 1, "events do not release gated pods");
        let mut open = gated.clone();
        open.spec.as_mut().unwrap().scheduling_gates = None;
        q.update(Some(&gated), Arc::new(open));
        assert_eq!(name(&pop_now(&q).await.unwrap()), "g");
    }

    #[tokio::test(start_paused = true)]
    async fn deleted_pods_leave_every_sub_queue() {
        let q = queue();
        q.add(pod("a", 0));
        q.add(pod("b", 0));
        q.delete(&pod("a", 0));
        assert_eq!(name(&pop_now(&q).await.unwrap()), "b");
        assert!(pop_now(&q).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn stale_unschedulable_pods_are_retried_after_five_minutes() {
        let q = queue();
        q.add(pod("a", 0));
        let mut p = q.pop().await.unwrap();
        let cycle = q.scheduling_cycle();
        p.unschedulable_plugins.insert("NodeResourcesFit");
        q.add_unschedulable_if_not_present(p, cycle, false);
        let start = Instant::now();
        let again = q.pop().await.unwrap();
        assert!(start.elapsed() >= MAX_IN_UNSCHEDULABLE);
        assert!(start.elapsed() <= MAX_IN_UNSCHEDULABLE + LEFTOVER_CHECK);
        assert_eq!(name(&again), "a");
    }

    use crate::framework::PreEnqueuePlugin;

    static TEST_GATE_OPEN: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    /// A PreEnqueue plugin that holds pods back until opened, asked again on pod deletions.
    struct TestGate;

    impl Plugin for TestGate {
        fn name(&self) -> &'static str {
            "TestGate"
        }
        fn events_to_register(&self) -> Vec<ClusterEvent> {
            vec![events::ASSIGNED_POD_DELETE]
        }
        fn queueing_hint(
            &self,
            _: &ClusterEvent,
            _: &PodInfo,
            _: &EventObject<'_>,
            _: &EventObject<'_>,
        ) -> bool {
            false
        }
        crate::extension_points!(as_pre_enqueue => PreEnqueuePlugin);
    }

    impl PreEnqueuePlugin for TestGate {
        fn pre_enqueue(&self, _pod: &PodInfo) -> Status {
            if TEST_GATE_OPEN.load(std::sync::atomic::Ordering::SeqCst) {
                Status::success()
            } else {
                Status::unresolvable("held")
            }
        }
    }

    /// Upstream asks a PreEnqueue plugin again when an event it registered happens (async
    /// preemption holds a preemptor back until its victims are being deleted).
    #[tokio::test(start_paused = true)]
    async fn held_pods_are_asked_again_on_the_holding_plugins_events() {
        let config = SchedulerConfiguration::parse(
            "profiles:\n- plugins:\n    preEnqueue:\n      enabled: [{name: TestGate}]\n",
        )
        .unwrap();
        let mut registry = Registry::in_tree();
        registry.register("TestGate", |_, _| Ok(Arc::new(TestGate)));
        let nominator = Arc::new(Nominator::default());
        let f = Framework::new(&config.profiles()[0], &registry, Handle::for_tests()).unwrap();
        let q = SchedulingQueue::new(
            [("default-scheduler".to_owned(), Arc::new(f))].into(),
            nominator,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        q.add(pod("held", 0));
        assert_eq!(q.pending().gated, 1);
        q.move_on_event(
            &events::ASSIGNED_POD_DELETE,
            &EventObject::None,
            &EventObject::None,
        );
        assert_eq!(q.pending().gated, 1, "still held");
        TEST_GATE_OPEN.store(true, std::sync::atomic::Ordering::SeqCst);
        q.move_on_event(&events::NODE_ADD, &EventObject::None, &EventObject::None);
        assert_eq!(q.pending().gated, 1, "not an event the gate registered");
        q.move_on_event(
            &events::ASSIGNED_POD_DELETE,
            &EventObject::None,
            &EventObject::None,
        );
        assert_eq!(q.pending().active, 1);
        assert_eq!(name(&pop_now(&q).await.unwrap()), "held");
    }

    #[tokio::test(start_paused = true)]
    async fn a_plugin_can_release_a_pod_it_held() {
        let q = queue();
        let mut gated = (*pod("g", 0)).clone();
        gated.spec.as_mut().unwrap().scheduling_gates = Some(vec![PodSchedulingGate {
            name: "example.com/wait".into(),
        }]);
        q.add(Arc::new(gated));
        let key = "uid-g";
        q.release_if_held(key);
        assert_eq!(q.pending().gated, 1, "its gate still holds it");
        q.add(pod("free", 0));
        q.release_if_held("uid-free");
        assert_eq!(
            q.pending().active,
            1,
            "pods not held are left where they are"
        );
    }
}
