//! The embedded engine: an MVCC index in memory, made durable by a write-ahead log.
//!
//! Writers apply their change to the in-memory index under a short lock (which assigns the
//! revision and checks preconditions in revision order), append the encoded record to a
//! pending buffer and wait. One committer thread writes the whole pending buffer and calls
//! `fdatasync` once for everything that accumulated meanwhile (group commit), then publishes
//! the new *durable revision*: only then do writers get their acknowledgement, reads see the
//! change and watchers receive it. So nothing is ever observed that a crash could take back.
//!
//! On disk (`<dir>/`): `snapshot` (every live key at one revision, CRC-checked) and
//! `wal-<first revision>.log` segments of length+CRC framed records. Opening loads the
//! snapshot and replays newer records; a torn record at the tail (a crash mid-append) is cut
//! off, a bad record before the tail is corruption. When the live segment grows past
//! [`EmbeddedOptions::checkpoint_bytes`] the committer rotates to a new segment and writes a
//! snapshot, after which older segments are deleted: restart time stays bounded.
//!
//! History is kept for watches and consistent pagination and compacted automatically like
//! kube-apiserver does against etcd: every [`EmbeddedOptions::compaction_interval`], to the
//! revision that was current one interval earlier.

mod index;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, Watch,
};
use index::Index;
use wal::Record;

/// Tuning of the embedded engine.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Call `fdatasync` before acknowledging writes. Only tests of non-durable paths turn
    /// this off.
    pub sync: bool,
    /// Write a snapshot and start a new WAL segment once the live segment is this large.
    pub checkpoint_bytes: u64,
    /// How often history is compacted (to the revision current one interval earlier).
    pub compaction_interval: Duration,
    /// Events a watcher may have queued before it is dropped as too slow.
    pub watcher_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            sync: true,
            checkpoint_bytes: 64 << 20,
            // upstream: kube-apiserver's --etcd-compaction-interval default.
            compaction_interval: Duration::from_secs(300),
            watcher_buffer: 4096,
        }
    }
}

/// A watcher registered with the engine.
struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Event>,
}

/// A write waiting for the committer.
struct Waiter {
    revision: Revision,
    done: oneshot::Sender<Result<()>>,
}

/// Everything behind the engine's one lock.
struct State {
    index: Index,
    /// The highest revision assigned (applied in memory, maybe not yet durable).
    applied: Revision,
    /// The highest revision on stable storage: the revision reads and watches see.
    durable: Revision,
    /// Encoded records not yet written.
    pending: Vec<u8>,
    /// Events of not-yet-durable revisions, in order.
    pending_events: Vec<Event>,
    waiters: Vec<Waiter>,
    watchers: Vec<Watcher>,
    /// Set when the WAL failed: the engine refuses everything afterwards.
    failed: Option<String>,
    shutdown: bool,
}

/// The embedded, durable MVCC store.
pub struct EmbeddedStore {
    state: Mutex<State>,
    /// Wakes the committer when `pending` gains records.
    wake: Condvar,
    options: EmbeddedOptions,
    dir: PathBuf,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Open (or create) the store in `dir`, recovering from the snapshot and the WAL.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Arc<EmbeddedStore>> {
        let started = Instant::now();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "creating the data directory",
            source,
        })?;
        let recovered = wal::recover(dir)?;
        let mut index = Index::default();
        let revision = recovered.snapshot_revision;
        for entry in recovered.snapshot {
            index.load(entry);
        }
        let mut applied = revision;
        for record in recovered.records {
            if let Some(revision) = record.write_revision() {
                applied = revision;
            }
            apply_record(&mut index, record);
        }
        // History before the snapshot is gone; so is whatever was compacted before.
        let compacted = recovered.compacted.max(revision);
        index.set_compacted(compacted);
        let log = wal::Writer::open(dir, applied + 1, recovered.live_segment)?;
        tracing::info!(
            dir = %dir.display(),
            revision = applied,
            keys = index.live_keys(),
            took_ms = started.elapsed().as_millis() as u64,
            "embedded store opened"
        );
        let store = Arc::new(EmbeddedStore {
            state: Mutex::new(State {
                index,
                applied,
                durable: applied,
                pending: Vec::new(),
                pending_events: Vec::new(),
                waiters: Vec::new(),
                watchers: Vec::new(),
                failed: None,
                shutdown: false,
            }),
            wake: Condvar::new(),
            options,
            dir: dir.to_owned(),
            committer: Mutex::new(None),
        });
        let weak = Arc::downgrade(&store);
        let handle = std::thread::Builder::new()
            .name("skiff-store-commit".into())
            .spawn(move || committer(weak, log))
            .map_err(|source| Error::Io {
                action: "starting the commit thread",
                source,
            })?;
        *store.committer.lock() = Some(handle);
        Ok(store)
    }

    /// Flush pending writes and stop the commit thread; later writes fail.
    pub fn close(&self) {
        self.state.lock().shutdown = true;
        self.wake.notify_all();
        if let Some(handle) = self.committer.lock().take() {
            let _ = handle.join();
        }
    }

    /// Apply a write in memory and wait until it is durable.
    async fn write(
        &self,
        prepare: impl FnOnce(&mut Index, Revision) -> Result<(Record, Event)>,
    ) -> Result<Event> {
        let (rx, event) = {
            let mut state = self.state.lock();
            if let Some(reason) = &state.failed {
                return Err(Error::Unavailable {
                    reason: reason.clone(),
                });
            }
            if state.shutdown {
                return Err(Error::Unavailable {
                    reason: "the store is shutting down".into(),
                });
            }
            let revision = state.applied + 1;
            let (record, event) = prepare(&mut state.index, revision)?;
            state.applied = revision;
            record.encode(&mut state.pending);
            state.pending_events.push(event.clone());
            let (tx, rx) = oneshot::channel();
            state.waiters.push(Waiter { revision, done: tx });
            (rx, event)
        };
        self.wake.notify_one();
        match rx.await {
            Ok(Ok(())) => Ok(event),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable {
                reason: "the commit thread stopped".into(),
            }),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.state.get_mut().shutdown = true;
        self.wake.notify_all();
    }
}

fn apply_record(index: &mut Index, record: Record) {
    match record {
        Record::Put {
            revision,
            key,
            value,
        } => {
            index.put(key, value, revision);
        }
        Record::Delete { revision, key } => {
            index.delete(&key, revision);
        }
        Record::Compact { revision } => index.compact(revision),
    }
}

/// The commit thread: write, sync, publish; checkpoint and compact on the side.
fn committer(store: std::sync::Weak<EmbeddedStore>, mut log: wal::Writer) {
    let mut last_compaction = Instant::now();
    let mut compact_next: Option<Revision> = None;
    loop {
        let Some(this) = store.upgrade() else {
            return;
        };
        let (buffer, upto, events, waiters, shutdown) = {
            let mut state = this.state.lock();
            if state.pending.is_empty() && !state.shutdown {
                this.wake.wait_for(&mut state, Duration::from_millis(500));
            }
            let buffer = std::mem::take(&mut state.pending);
            let events = std::mem::take(&mut state.pending_events);
            let waiters = std::mem::take(&mut state.waiters);
            (buffer, state.applied, events, waiters, state.shutdown)
        };

        let outcome = if buffer.is_empty() {
            Ok(())
        } else {
            log.append(&buffer, this.options.sync)
        };
        {
            let mut state = this.state.lock();
            match &outcome {
                Ok(()) => {
                    state.durable = upto;
                    state.index.publish(&events);
                    dispatch(&mut state.watchers, &events);
                }
                Err(e) => {
                    tracing::error!(error = %e, "write-ahead log failed; the store stops accepting writes");
                    state.failed = Some(e.to_string());
                }
            }
        }
        for waiter in waiters {
            let result = match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::Unavailable {
                    reason: format!("write at revision {} not durable: {e}", waiter.revision),
                }),
            };
            let _ = waiter.done.send(result);
        }
        if outcome.is_err() {
            return;
        }

        if log.segment_bytes() >= this.options.checkpoint_bytes
            && let Err(e) = checkpoint(&this, &mut log)
        {
            tracing::warn!(error = %e, "checkpoint failed; will retry");
        }
        if last_compaction.elapsed() >= this.options.compaction_interval {
            last_compaction = Instant::now();
            let mut state = this.state.lock();
            if let Some(revision) = compact_next.take() {
                compact_locked(&mut state, revision);
            }
            compact_next = Some(state.durable);
        }
        if shutdown && this.state.lock().pending.is_empty() {
            let mut state = this.state.lock();
            state.watchers.clear();
            for waiter in state.waiters.drain(..) {
                let _ = waiter.done.send(Err(Error::Unavailable {
                    reason: "the store is shutting down".into(),
                }));
            }
            return;
        }
    }
}

/// Snapshot every live key at the durable revision and rotate the WAL, so older segments
/// can go.
fn checkpoint(store: &EmbeddedStore, log: &mut wal::Writer) -> Result<()> {
    let (revision, compacted, entries) = {
        let state = store.state.lock();
        // The snapshot is taken at `applied`, which may include records still pending for
        // the log: they will land in the new segment and be skipped on replay, as the
        // snapshot already holds them. Either way nothing acknowledged is lost.
        log.rotate(state.applied + 1)?;
        (
            state.applied,
            state.index.compacted(),
            state.index.snapshot_at(state.applied),
        )
    };
    wal::write_snapshot(&store.dir, revision, compacted, &entries)?;
    log.remove_old_segments()?;
    tracing::debug!(revision, keys = entries.len(), "store checkpoint written");
    Ok(())
}

/// Drop history at and below `revision`, and log the compaction so a restart keeps it.
/// Losing that record in a crash is harmless: the store would just keep more history.
fn compact_locked(state: &mut State, revision: Revision) {
    if revision <= state.index.compacted() {
        return;
    }
    state.index.compact(revision);
    Record::Compact { revision }.encode(&mut state.pending);
}

/// Hand events to the watchers whose prefix matches; drop watchers that cannot keep up.
fn dispatch(watchers: &mut Vec<Watcher>, events: &[Event]) {
    if watchers.is_empty() || events.is_empty() {
        return;
    }
    watchers.retain(|watcher| {
        for event in events {
            if !event.kv.key.starts_with(&watcher.prefix) {
                continue;
            }
            match watcher.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(prefix = %watcher.prefix, "dropping a watcher that fell behind");
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        !watcher.tx.is_closed()
    });
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let state = self.state.lock();
        Ok(state.index.get_at(key, state.durable))
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let state = self.state.lock();
        let revision = if request.revision == 0 {
            state.durable
        } else {
            request.revision
        };
        if revision > state.durable {
            return Err(Error::FutureRevision {
                requested: revision,
                current: state.durable,
            });
        }
        if revision < state.index.compacted() {
            return Err(Error::Compacted {
                requested: revision,
                compacted: state.index.compacted(),
            });
        }
        let (items, remaining) = state.index.range_at(
            &request.prefix,
            request.start_after.as_deref(),
            request.limit,
            revision,
        );
        Ok(RangeResponse {
            items,
            more: remaining > 0,
            remaining,
            revision,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let event = self
            .write(|index, revision| {
                if index.latest(key).is_some() {
                    return Err(Error::AlreadyExists {
                        key: key.to_owned(),
                    });
                }
                let kv = index.put(key.to_owned(), value.clone(), revision);
                Ok((
                    Record::Put {
                        revision,
                        key: key.to_owned(),
                        value,
                    },
                    Event {
                        kind: EventKind::Put,
                        kv,
                        prev: None,
                    },
                ))
            })
            .await?;
        Ok(event.revision())
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: Revision,
    ) -> Result<Revision> {
        let event = self
            .write(|index, revision| {
                let Some(prev) = index.latest(key) else {
                    return Err(Error::NotFound {
                        key: key.to_owned(),
                    });
                };
                if prev.mod_revision != expected_revision {
                    return Err(Error::Conflict {
                        key: key.to_owned(),
                        expected: expected_revision,
                        actual: prev.mod_revision,
                    });
                }
                let kv = index.put(key.to_owned(), value.clone(), revision);
                Ok((
                    Record::Put {
                        revision,
                        key: key.to_owned(),
                        value,
                    },
                    Event {
                        kind: EventKind::Put,
                        kv,
                        prev: Some(prev),
                    },
                ))
            })
            .await?;
        Ok(event.revision())
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision)> {
        let event = self
            .write(|index, revision| {
                let Some(prev) = index.latest(key) else {
                    return Err(Error::NotFound {
                        key: key.to_owned(),
                    });
                };
                if let Some(expected) = expected_revision
                    && prev.mod_revision != expected
                {
                    return Err(Error::Conflict {
                        key: key.to_owned(),
                        expected,
                        actual: prev.mod_revision,
                    });
                }
                index.delete(key, revision);
                Ok((
                    Record::Delete {
                        revision,
                        key: key.to_owned(),
                    },
                    index::delete_event(prev, revision),
                ))
            })
            .await?;
        let revision = event.revision();
        Ok((event.prev.unwrap_or(event.kv), revision))
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<Watch> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.failed {
            return Err(Error::Unavailable {
                reason: reason.clone(),
            });
        }
        let after = if after_revision == 0 {
            state.durable
        } else {
            after_revision
        };
        if after > state.durable {
            return Err(Error::FutureRevision {
                requested: after,
                current: state.durable,
            });
        }
        // Replaying from `after` needs the events of after+1.., i.e. history above the
        // compaction point.
        if after < state.index.compacted() {
            return Err(Error::Compacted {
                requested: after,
                compacted: state.index.compacted(),
            });
        }
        let history = state.index.events_after(prefix, after, state.durable);
        let (tx, rx) = mpsc::channel(self.options.watcher_buffer + history.len());
        for event in history {
            // Capacity covers the history, so this cannot fail.
            let _ = tx.try_send(event);
        }
        state.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            tx,
        });
        Ok(Watch { events: rx })
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.state.lock().durable)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.state.lock().index.compacted())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        {
            let mut state = self.state.lock();
            if revision > state.durable {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current: state.durable,
                });
            }
            compact_locked(&mut state, revision);
        }
        self.wake.notify_one();
        Ok(())
    }
}
