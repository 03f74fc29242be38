//! Recording core/v1 Events the way client-go's recorder does, so `kubectl describe` and
//! `kubectl get events` tell what components did: an event identical to a recent one (same
//! object, type, reason, message and source) increments that event's `count` and
//! `lastTimestamp` instead of creating another; a per-object token bucket keeps a flapping
//! object from flooding the store. Recording never blocks or fails the caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;

/// Upstream's event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong or needs attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The reference an Event points at.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: obj.meta().namespace.clone(),
        name: obj.meta().name.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DedupKey {
    object: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    field_path: Option<String>,
    kind: EventType,
    reason: String,
    message: String,
}

struct Seen {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

/// Token bucket per involved object (client-go's spam filter: burst 25, one more per 5 min).
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

const BURST: f64 = 25.0;
const REFILL_EVERY: Duration = Duration::from_secs(300);
const CACHE_LIMIT: usize = 4096;
/// Identical events further apart than this start a new Event object.
const DEDUP_WINDOW: Duration = Duration::from_secs(600);

/// Kind, namespace and name of an involved object.
type ObjectId = (Option<String>, Option<String>, Option<String>);

#[derive(Default)]
struct State {
    seen: HashMap<DedupKey, Seen>,
    buckets: HashMap<ObjectId, Bucket>,
}

/// Records Events for one component (`source.component`) on one host.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    state: Arc<Mutex<State>>,
}

impl Recorder {
    /// A recorder writing as `component` (e.g. `deployment-controller`, `kubelet`).
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.to_owned(),
            host: host.map(str::to_owned),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Record in the background.
    pub fn publish(&self, object: &ObjectReference, kind: EventType, reason: &str, message: &str) {
        let this = self.clone();
        let (object, reason, message) = (object.clone(), reason.to_owned(), message.to_owned());
        tokio::spawn(async move {
            if let Err(err) = this.record(&object, kind, &reason, &message).await {
                tracing::debug!(reason, error = %err, "recording an event failed");
            }
        });
    }

    /// Record and wait for the write.
    pub async fn record(
        &self,
        object: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let key = DedupKey {
            object: (
                object.kind.clone(),
                object.namespace.clone(),
                object.name.clone(),
                object.uid.clone(),
            ),
            field_path: object.field_path.clone(),
            kind,
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        let previous = {
            let mut state = self.state.lock();
            if !Self::take_token(&mut state, object) {
                return Ok(());
            }
            match state.seen.get_mut(&key) {
                Some(seen) if seen.at.elapsed() < DEDUP_WINDOW => {
                    seen.count += 1;
                    seen.at = Instant::now();
                    Some((seen.namespace.clone(), seen.name.clone(), seen.count))
                }
                _ => None,
            }
        };
        let now = Time(jiff::Timestamp::now());
        if let Some((namespace, name, count)) = previous {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({ "count": count, "lastTimestamp": now, "message": message });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = object
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let nanos = jiff::Timestamp::now().as_nanosecond();
        let name = format!("{}.{:x}", object.name.as_deref().unwrap_or("object"), nanos);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(kind.as_str().to_owned()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let created = api.create(&PostParams::default(), &event).await?;
        let mut state = self.state.lock();
        if state.seen.len() >= CACHE_LIMIT {
            let oldest = state
                .seen
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                state.seen.remove(&oldest);
            }
        }
        state.seen.insert(
            key,
            Seen {
                namespace,
                name: created.name_any(),
                count: 1,
                at: Instant::now(),
            },
        );
        Ok(())
    }

    fn take_token(state: &mut State, object: &ObjectReference) -> bool {
        let key: ObjectId = (
            object.kind.clone(),
            object.namespace.clone(),
            object.name.clone(),
        );
        if state.buckets.len() >= CACHE_LIMIT && !state.buckets.contains_key(&key) {
            state.buckets.clear();
        }
        let bucket = state.buckets.entry(key).or_insert(Bucket {
            tokens: BURST,
            refilled: Instant::now(),
        });
        let earned = bucket.refilled.elapsed().as_secs_f64() / REFILL_EVERY.as_secs_f64();
        if earned > 0.0 {
            bucket.tokens = (bucket.tokens + earned).min(BURST);
            bucket.refilled = Instant::now();
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
