//! Skiff's store: an MVCC key-value store with watch, with etcd's semantics.
//!
//! Every write gets the next value of one cluster-wide, monotonic *revision*; the API server uses
//! that revision as every object's `resourceVersion`. Reads can be served at any revision that
//! has not been compacted, which is what makes consistent pagination (`continue` tokens) and
//! `resourceVersionMatch=Exact` possible. Watches deliver every change after a given revision,
//! in revision order and without gaps, or fail with [`Error::Compacted`] when that history is
//! gone (the API server turns that into `410 Gone`).
//!
//! The [`Store`] trait is the only interface the API server sees, so the embedded engine
//! ([`embedded::EmbeddedStore`]) and the etcd backend ([`etcd::EtcdStore`]) are
//! interchangeable.

pub mod embedded;
pub mod etcd;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

/// A store revision. Revision 0 means "none"; the first write is revision 1.
pub type Revision = i64;

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key that exists.
        key: String,
    },
    /// `update`/`delete` found no live value at the key.
    #[error("key {key} not found")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// A compare-and-swap precondition failed: the key's mod revision differs.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key whose revision differed.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The key's current mod revision (0 if deleted).
        actual: Revision,
    },
    /// The requested revision is older than the compaction point.
    #[error("revision {requested} has been compacted; oldest available is {compacted}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The current compaction revision.
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future; current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// Reading or writing the data directory failed.
    #[error("store i/o failed while {action}")]
    Io {
        /// What the store was doing.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The data on disk is not in a format this version understands.
    #[error("store data is corrupt: {detail}")]
    Corrupt {
        /// What was wrong.
        detail: String,
    },
    /// The store cannot serve the request: it failed permanently (e.g. an fsync error), is
    /// shutting down, or its backend (etcd) did not answer. A write that fails this way may
    /// or may not have happened.
    #[error("store is unavailable: {reason}")]
    Unavailable {
        /// Why the store stopped.
        reason: String,
    },
}

/// One key's value at some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes (the API server stores JSON).
    pub value: Bytes,
    /// The revision that created this incarnation of the key.
    pub create_revision: Revision,
    /// The revision of the last change to the key.
    pub mod_revision: Revision,
    /// The value was read through a transformation that would store it differently now (an
    /// old encryption key or provider): an update that changes nothing should still rewrite
    /// it. Backends always set `false`.
    pub stale: bool,
}

/// A range read: every live key starting with `prefix`, in key order.
#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    /// Key prefix ("" for everything). A prefix that names a single key exactly also matches it.
    pub prefix: String,
    /// Only keys strictly greater than this one (for pagination).
    pub start_after: Option<String>,
    /// At most this many items (0 = no limit).
    pub limit: usize,
    /// Read at this revision (0 = the current revision).
    pub revision: Revision,
}

/// The answer to a [`RangeRequest`].
#[derive(Debug, Clone, Default)]
pub struct RangeResponse {
    /// Matching items in key order.
    pub items: Vec<KeyValue>,
    /// Whether more items exist after the last returned one.
    pub more: bool,
    /// How many items remain after the returned ones (for `remainingItemCount`).
    pub remaining: usize,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated; `prev` holds the value it replaced, if any.
    Put,
    /// The key was deleted; the event's `kv` is the last value, with `mod_revision` set to the
    /// deleting revision.
    Delete,
}

/// One change, delivered to watchers in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The new value (for a put) or the deleted value (for a delete). `kv.mod_revision` is the
    /// revision of this event.
    pub kv: KeyValue,
    /// The previous value for puts that replaced one.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A live watch: events arrive in revision order. The channel closes when the store drops the
/// watcher (shutdown, or the watcher fell too far behind); the client then re-watches from the
/// last revision it saw, exactly like an etcd watch that was cancelled.
pub struct Watch {
    /// Ordered events with revision greater than the watch's start revision.
    pub events: mpsc::Receiver<Event>,
}

/// How a backend encodes its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFormat {
    /// Skiff's own format (every live key at one revision, CRC-checked frames); restored with
    /// `skiff snapshot restore`.
    Skiff,
    /// etcd's database file as its snapshot API streams it (ending with a SHA-256 of the
    /// rest); restored with etcd's own tools.
    Etcd,
}

impl SnapshotFormat {
    /// The name used in HTTP headers and file names.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotFormat::Skiff => "skiff",
            SnapshotFormat::Etcd => "etcd",
        }
    }
}

/// The store interface. Every method is atomic; writes are durable when they return `Ok`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest value of `key`, if live.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Live keys under a prefix at a revision. Fails with [`Error::Compacted`] if the revision
    /// is below the compaction point and [`Error::FutureRevision`] if above the current one.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Create `key`; fails with [`Error::AlreadyExists`] if it is live. Returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Replace `key` if its mod revision equals `expected_revision` (compare-and-swap).
    /// Returns the new revision.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: Revision,
    ) -> Result<Revision>;

    /// Delete `key`, if `expected_revision` is given only when its mod revision matches.
    /// Returns the deleted value and the deleting revision.
    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision)>;

    /// Watch keys under `prefix` for changes after `after_revision` (0 = from now on).
    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<Watch>;

    /// The current (latest durable) revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The oldest revision that can still be read or watched from.
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Discard history at and below `revision` (the latest value of each key is kept).
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The format [`Store::snapshot`] writes.
    fn snapshot_format(&self) -> SnapshotFormat;

    /// Stream a consistent snapshot of the whole store, in chunks, into `out` while the
    /// store keeps serving. An error (or a closed receiver) leaves the stream incomplete,
    /// which the format's own checks reveal.
    async fn snapshot(&self, out: mpsc::Sender<Bytes>) -> Result<()>;
}
