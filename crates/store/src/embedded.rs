//! The embedded engine: an MVCC index in memory, made durable by a write-ahead log.
//!
//! Writers check preconditions and apply their change to the in-memory index under a short
//! write lock (which also assigns the revision), append the encoded record to a pending
//! buffer and wait. One committer thread writes the whole pending buffer and calls
//! `fdatasync` once for everything that accumulated meanwhile (group commit), then publishes
//! the new *durable revision*: only then do writers get their acknowledgement, reads see the
//! change and watchers receive it. So nothing is ever observed that a crash could take back.
//!
//! Locks, always taken in this order and held briefly: `core` (the index; a read-write lock
//! so reads run in parallel), then `queue` (pending records and waiting writers), then
//! `watchers`. Watchers are fed by the committer after it has released `core`, so a slow
//! watcher never holds up writers or readers, and one that falls
//! [`EmbeddedOptions::watcher_buffer`] events behind is dropped (its channel closes and the
//! client re-watches, like an etcd watch cancelled for being slow).
//!
//! On disk (`<dir>/`): `snapshot` (every live key at one revision, CRC-checked) and
//! `wal-<first revision>.log` segments of length+CRC framed records, plus a `LOCK` file that
//! keeps a second process out. Opening loads the snapshot and replays newer records; a torn
//! record at the tail (a crash mid-append) is cut off, a bad record before the tail is
//! corruption. When the live segment grows past [`EmbeddedOptions::checkpoint_bytes`] the
//! committer starts a new segment and writes a snapshot, after which older segments are
//! deleted: restart time and disk use stay bounded.
//!
//! History is kept for watches and consistent pagination and compacted automatically like
//! kube-apiserver does against etcd: every [`EmbeddedOptions::compaction_interval`], to the
//! revision that was current one interval earlier (upstream:
//! k8s.io/apiserver/pkg/storage/etcd3/compact.go).

mod index;
mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock, RwLockWriteGuard};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, SnapshotFormat, Store,
    Watch,
};
use index::Index;
use wal::{Record, Replayed};

/// Keys copied per lock hold while a snapshot is written, so writers wait microseconds, not
/// the whole snapshot.
const SNAPSHOT_CHUNK: usize = 1024;

/// How long the idle committer sleeps before looking at timers (compaction) again.
const IDLE_WAKEUP: Duration = Duration::from_millis(250);

/// How long to wait before trying again after a checkpoint failed (e.g. a full disk); the
/// WAL keeps everything meanwhile.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(30);

/// Tuning of the embedded engine.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Call `fdatasync` before acknowledging writes. Only tests of non-durable paths turn
    /// this off.
    pub sync: bool,
    /// Write a snapshot and start a new WAL segment once the live segment is this large.
    pub checkpoint_bytes: u64,
    /// How often history is compacted (to the revision current one interval earlier), so
    /// about one to two intervals of history stay readable and watchable. Zero disables
    /// automatic compaction.
    pub compaction_interval: Duration,
    /// Events a watcher may have queued before it is dropped as too slow.
    pub watcher_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            sync: true,
            checkpoint_bytes: 64 << 20,
            // upstream: kube-apiserver's --etcd-compaction-interval default (5m).
            compaction_interval: Duration::from_secs(300),
            watcher_buffer: 4096,
        }
    }
}

/// The index and the revisions it is read at.
struct Core {
    index: Index,
    /// The highest revision assigned (applied in memory, maybe not yet durable).
    applied: Revision,
    /// The highest revision on stable storage: the revision reads and watches see.
    durable: Revision,
}

/// A write waiting for the committer.
struct Waiter {
    revision: Revision,
    done: oneshot::Sender<Result<()>>,
}

/// What the committer has still to write.
struct Queue {
    /// Encoded records not yet written, in revision order.
    pending: Vec<u8>,
    waiters: Vec<Waiter>,
    /// The highest revision in `pending` (or already written).
    last: Revision,
    /// Set when the WAL failed: the engine refuses writes afterwards.
    failed: Option<String>,
    shutdown: bool,
}

/// A watcher registered with the engine.
struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Event>,
    /// The revision its history was replayed up to: later dispatches skip events up to here.
    after: Revision,
}

/// State shared between the store handle and the committer thread.
struct Shared {
    core: RwLock<Core>,
    queue: Mutex<Queue>,
    /// Wakes the committer when `queue.pending` gains records or on shutdown.
    wake: Condvar,
    watchers: Mutex<Vec<Watcher>>,
    options: EmbeddedOptions,
    dir: PathBuf,
    /// The locked `LOCK` file; released when the committer stops.
    dir_lock: Mutex<Option<File>>,
    /// Revisions that running snapshots read at (with counts): compaction stays at or below
    /// the lowest, so a snapshot read in chunks stays consistent however long it takes.
    pins: Mutex<std::collections::BTreeMap<Revision, usize>>,
}

/// The embedded, durable MVCC store.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

/// Take the data directory's lock, so two processes never append to the same log.
fn lock_dir(dir: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(|source| Error::Io {
            action: "opening the data directory lock",
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Unavailable {
            reason: format!("{} is in use by another store", dir.display()),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            action: "locking the data directory",
            source,
        }),
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
        let dir_lock = lock_dir(dir)?;
        let mut index = Index::default();
        let recovered = wal::recover(dir, |item| match item {
            Replayed::Entry(entry) => index.load(entry),
            Replayed::Record(record) => apply_record(&mut index, record),
        })?;
        // History before the snapshot was not kept; neither was what was compacted before.
        index.set_compacted(recovered.compacted.max(recovered.snapshot_revision));
        let applied = recovered.revision;
        let log = wal::Writer::open(dir, applied + 1, recovered.live_segment)?;
        tracing::info!(
            dir = %dir.display(),
            revision = applied,
            keys = index.live_keys(),
            took_ms = started.elapsed().as_millis() as u64,
            "embedded store opened"
        );
        let shared = Arc::new(Shared {
            core: RwLock::new(Core {
                index,
                applied,
                durable: applied,
            }),
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                waiters: Vec::new(),
                last: applied,
                failed: None,
                shutdown: false,
            }),
            wake: Condvar::new(),
            watchers: Mutex::new(Vec::new()),
            options,
            dir: dir.to_owned(),
            dir_lock: Mutex::new(Some(dir_lock)),
            pins: Mutex::new(std::collections::BTreeMap::new()),
        });
        let for_thread = shared.clone();
        let handle = std::thread::Builder::new()
            .name("skiff-store-commit".into())
            .spawn(move || committer(&for_thread, log))
            .map_err(|source| Error::Io {
                action: "starting the commit thread",
                source,
            })?;
        Ok(Arc::new(EmbeddedStore {
            shared,
            committer: Mutex::new(Some(handle)),
        }))
    }

    /// Write out pending writes, close every watch and stop; later calls fail with
    /// [`Error::Unavailable`]. The data directory can be opened again once this returns.
    pub fn close(&self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.committer.lock().take() {
            let _ = handle.join();
        }
    }

    /// Apply a write in memory and wait until it is durable. `prepare` checks preconditions,
    /// changes the index and encodes the WAL record, or fails having changed nothing.
    async fn write<T>(
        &self,
        prepare: impl FnOnce(&mut Index, Revision, &mut Vec<u8>) -> Result<T>,
    ) -> Result<T> {
        let (rx, out) = {
            let mut core = self.shared.core.write();
            let mut queue = self.shared.queue.lock();
            if let Some(reason) = &queue.failed {
                return Err(Error::Unavailable {
                    reason: reason.clone(),
                });
            }
            if queue.shutdown {
                return Err(shutting_down());
            }
            let revision = core.applied + 1;
            let (tx, rx) = oneshot::channel();
            match prepare(&mut core.index, revision, &mut queue.pending) {
                Ok(out) => {
                    core.applied = revision;
                    queue.last = revision;
                    queue.waiters.push(Waiter { revision, done: tx });
                    (rx, Ok(out))
                }
                // A failed precondition may have been decided by a write that is applied but
                // not yet durable. Answering before it is durable would let the caller learn
                // of a state no read can show yet (and that a failing disk could still take
                // back), so the answer waits for everything applied so far: linearizable.
                Err(e) if core.applied > core.durable => {
                    queue.waiters.push(Waiter {
                        revision: core.applied,
                        done: tx,
                    });
                    (rx, Err(e))
                }
                Err(e) => return Err(e),
            }
        };
        self.shared.wake.notify_one();
        match rx.await {
            Ok(Ok(())) => out,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable {
                reason: "the commit thread stopped".into(),
            }),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // The committer holds only `Shared`, never the handle, so this never runs on it.
        self.close();
    }
}

fn shutting_down() -> Error {
    Error::Unavailable {
        reason: "the store is shutting down".into(),
    }
}

fn apply_record(index: &mut Index, record: Record) {
    match record {
        Record::Put {
            revision,
            key,
            value,
        } => {
            index.put(&key, value, revision);
        }
        Record::Delete { revision, key } => {
            index.delete(&key, revision);
        }
        Record::Compact { revision } => index.compact(revision),
    }
}

/// The commit thread: write, sync, publish; checkpoint and compact on the side.
fn committer(shared: &Shared, mut log: wal::Writer) {
    let mut buffer = Vec::new();
    let mut waiters = Vec::new();
    let mut compaction = AutoCompaction::new(shared.options.compaction_interval);
    let mut next_checkpoint = Instant::now();
    loop {
        let (upto, shutdown) = {
            let mut queue = shared.queue.lock();
            if queue.pending.is_empty() && !queue.shutdown {
                shared.wake.wait_for(&mut queue, IDLE_WAKEUP);
            }
            // Swap rather than take: both buffers keep their capacity across batches.
            std::mem::swap(&mut queue.pending, &mut buffer);
            std::mem::swap(&mut queue.waiters, &mut waiters);
            (queue.last, queue.shutdown)
        };

        if !buffer.is_empty() {
            let written = log.append(&buffer, shared.options.sync);
            buffer.clear();
            if let Err(e) = written {
                fail(shared, &e, &mut waiters);
                break;
            }
        }
        publish(shared, upto);
        for waiter in waiters.drain(..) {
            let _ = waiter.done.send(Ok(()));
        }

        if log.segment_bytes() >= shared.options.checkpoint_bytes
            && Instant::now() >= next_checkpoint
            && let Err(e) = checkpoint(shared, &mut log)
        {
            tracing::warn!(error = %e, "store checkpoint failed; will retry");
            next_checkpoint = Instant::now() + CHECKPOINT_RETRY;
        }
        compaction.tick(shared);
        if shutdown {
            break;
        }
    }
    // Dropping the senders ends every watch.
    shared.watchers.lock().clear();
    shared.dir_lock.lock().take();
}

/// Make revisions up to `upto` visible and hand their events to the watchers.
fn publish(shared: &Shared, upto: Revision) {
    let mut core = shared.core.write();
    if upto <= core.durable {
        return;
    }
    let from = core.durable;
    core.durable = upto;
    // Readers may proceed while the events are gathered; compaction (a writer) may not, so
    // the versions the events are rebuilt from stay put.
    let core = RwLockWriteGuard::downgrade(core);
    if shared.watchers.lock().is_empty() {
        return;
    }
    let events = core.index.events_between("", from, upto);
    drop(core);
    dispatch(&shared.watchers, &events);
}

/// The WAL failed: refuse everything from now on and tell every waiting writer.
fn fail(shared: &Shared, error: &Error, waiters: &mut Vec<Waiter>) {
    let reason = error.to_string();
    tracing::error!(error = %reason, "write-ahead log failed; the store stops accepting writes");
    {
        let mut queue = shared.queue.lock();
        queue.failed = Some(reason.clone());
        waiters.append(&mut queue.waiters);
    }
    for waiter in waiters.drain(..) {
        let _ = waiter.done.send(Err(Error::Unavailable {
            reason: format!(
                "write at revision {} not durable: {reason}",
                waiter.revision
            ),
        }));
    }
}

/// Snapshot every live key at the durable revision and start a new WAL segment, so older
/// segments can go.
fn checkpoint(shared: &Shared, log: &mut wal::Writer) -> Result<()> {
    let started = Instant::now();
    let (revision, compacted) = {
        let core = shared.core.read();
        (core.durable, core.index.compacted())
    };
    // This thread is the only appender and has written everything up to `revision`, so the
    // live segment holds nothing newer: records from here on go to the new segment.
    log.rotate(revision + 1)?;
    let mut snapshot = wal::SnapshotWriter::create(&shared.dir, revision, compacted)?;
    let mut after: Option<Arc<str>> = None;
    let mut keys = 0;
    loop {
        // Between chunks, compaction (only ever to at most the durable revision) keeps every
        // version visible at `revision`, so the chunks add up to one consistent snapshot.
        let (entries, last) =
            shared
                .core
                .read()
                .index
                .snapshot_chunk(after.as_deref(), revision, SNAPSHOT_CHUNK);
        keys += entries.len();
        snapshot.write(&entries)?;
        match last {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    snapshot.finish()?;
    log.remove_old_segments()?;
    tracing::debug!(
        revision,
        keys,
        took_ms = started.elapsed().as_millis() as u64,
        "store checkpoint written"
    );
    Ok(())
}

/// Drop history at and below `revision` (held below any snapshot's pinned revision) and log
/// the compaction so a restart keeps it. Losing that record in a crash is harmless: the store
/// would just keep more history.
fn compact_locked(shared: &Shared, core: &mut Core, queue: &mut Queue, revision: Revision) {
    let revision = match shared.pins.lock().keys().next() {
        Some(&pinned) => revision.min(pinned),
        None => revision,
    };
    if revision <= core.index.compacted() {
        return;
    }
    core.index.compact(revision);
    wal::encode_compact(&mut queue.pending, revision);
}

/// kube-apiserver's compaction loop: each interval, compact to the revision that was current
/// at the previous tick.
struct AutoCompaction {
    interval: Duration,
    last: Instant,
    target: Option<Revision>,
}

impl AutoCompaction {
    fn new(interval: Duration) -> AutoCompaction {
        AutoCompaction {
            interval,
            last: Instant::now(),
            target: None,
        }
    }

    fn tick(&mut self, shared: &Shared) {
        if self.interval.is_zero() || self.last.elapsed() < self.interval {
            return;
        }
        self.last = Instant::now();
        let mut core = shared.core.write();
        if let Some(revision) = self.target.take() {
            compact_locked(shared, &mut core, &mut shared.queue.lock(), revision);
            tracing::debug!(revision, "store history compacted");
        }
        self.target = Some(core.durable);
    }
}

/// Hand events to the watchers whose prefix matches; drop watchers that cannot keep up.
fn dispatch(watchers: &Mutex<Vec<Watcher>>, events: &[Event]) {
    watchers.lock().retain(|watcher| {
        for event in events {
            if event.revision() <= watcher.after || !event.kv.key.starts_with(&watcher.prefix) {
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
        let core = self.shared.core.read();
        Ok(core.index.get_at(key, core.durable))
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let core = self.shared.core.read();
        let revision = if request.revision == 0 {
            core.durable
        } else {
            request.revision
        };
        if revision > core.durable {
            return Err(Error::FutureRevision {
                requested: revision,
                current: core.durable,
            });
        }
        if revision < core.index.compacted() {
            return Err(Error::Compacted {
                requested: revision,
                compacted: core.index.compacted(),
            });
        }
        let (items, remaining) = core.index.range_at(
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
        self.write(|index, revision, out| {
            if index.latest_revision(key).is_some() {
                return Err(Error::AlreadyExists {
                    key: key.to_owned(),
                });
            }
            wal::encode_put(out, revision, key, &value);
            index.put(key, value, revision);
            Ok(revision)
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_revision: Revision,
    ) -> Result<Revision> {
        self.write(|index, revision, out| {
            let Some(actual) = index.latest_revision(key) else {
                return Err(Error::NotFound {
                    key: key.to_owned(),
                });
            };
            if actual != expected_revision {
                return Err(Error::Conflict {
                    key: key.to_owned(),
                    expected: expected_revision,
                    actual,
                });
            }
            wal::encode_put(out, revision, key, &value);
            index.put(key, value, revision);
            Ok(revision)
        })
        .await
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<(KeyValue, Revision)> {
        self.write(|index, revision, out| {
            let not_found = || Error::NotFound {
                key: key.to_owned(),
            };
            let actual = index.latest_revision(key).ok_or_else(not_found)?;
            if let Some(expected) = expected_revision
                && actual != expected
            {
                return Err(Error::Conflict {
                    key: key.to_owned(),
                    expected,
                    actual,
                });
            }
            let prev = index.delete(key, revision).ok_or_else(not_found)?;
            wal::encode_delete(out, revision, key);
            Ok((prev, revision))
        })
        .await
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<Watch> {
        let core = self.shared.core.read();
        {
            let queue = self.shared.queue.lock();
            if let Some(reason) = &queue.failed {
                return Err(Error::Unavailable {
                    reason: reason.clone(),
                });
            }
            if queue.shutdown {
                return Err(shutting_down());
            }
        }
        let after = if after_revision == 0 {
            core.durable
        } else {
            after_revision
        };
        if after > core.durable {
            return Err(Error::FutureRevision {
                requested: after,
                current: core.durable,
            });
        }
        // Replaying from `after` needs the events of after+1.., i.e. history above the
        // compaction point (upstream: etcd's watch fails with ErrCompacted when the start
        // revision is at or below the compacted revision).
        if after < core.index.compacted() {
            return Err(Error::Compacted {
                requested: after,
                compacted: core.index.compacted(),
            });
        }
        let history = core.index.events_between(prefix, after, core.durable);
        let (tx, rx) = mpsc::channel(self.shared.options.watcher_buffer.max(1) + history.len());
        for event in history {
            // The capacity covers the history, so this cannot fail.
            let _ = tx.try_send(event);
        }
        // Registered while `core` is still held: the committer cannot publish in between,
        // so every later event reaches this watcher exactly once.
        self.shared.watchers.lock().push(Watcher {
            prefix: prefix.to_owned(),
            tx,
            after: core.durable,
        });
        Ok(Watch { events: rx })
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.core.read().durable)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.core.read().index.compacted())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        {
            let mut core = self.shared.core.write();
            if revision > core.durable {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current: core.durable,
                });
            }
            compact_locked(
                &self.shared,
                &mut core,
                &mut self.shared.queue.lock(),
                revision,
            );
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    fn snapshot_format(&self) -> SnapshotFormat {
        SnapshotFormat::Skiff
    }

    /// Every live key at the durable revision, read in chunks under short read locks (writes
    /// go on meanwhile) while the revision is pinned against compaction. The stream is the
    /// on-disk snapshot format, so a restore installs it as is.
    async fn snapshot(&self, out: mpsc::Sender<Bytes>) -> Result<()> {
        let (revision, compacted) = {
            let core = self.shared.core.read();
            *self.shared.pins.lock().entry(core.durable).or_insert(0) += 1;
            (core.durable, core.index.compacted())
        };
        let _unpin = Unpin {
            shared: &self.shared,
            revision,
        };
        let gone = || Error::Unavailable {
            reason: "the snapshot receiver went away".into(),
        };
        let mut buf = Vec::new();
        wal::encode_snapshot_header(&mut buf, revision, compacted);
        let mut after: Option<Arc<str>> = None;
        let mut count = 0i64;
        loop {
            let (entries, last) = self.shared.core.read().index.snapshot_chunk(
                after.as_deref(),
                revision,
                SNAPSHOT_CHUNK,
            );
            for entry in &entries {
                wal::encode_snapshot_entry(&mut buf, entry);
            }
            count += entries.len() as i64;
            if buf.len() >= 1 << 20 || last.is_none() {
                if last.is_none() {
                    wal::encode_snapshot_trailer(&mut buf, count);
                }
                out.send(Bytes::from(std::mem::take(&mut buf)))
                    .await
                    .map_err(|_| gone())?;
            }
            match last {
                Some(last) => after = Some(last),
                None => return Ok(()),
            }
        }
    }
}

/// Releases a snapshot's pin on drop (also when the snapshot is abandoned midway).
struct Unpin<'a> {
    shared: &'a Shared,
    revision: Revision,
}

impl Drop for Unpin<'_> {
    fn drop(&mut self) {
        let mut pins = self.shared.pins.lock();
        if let Some(count) = pins.get_mut(&self.revision) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.revision);
            }
        }
    }
}

/// What a snapshot file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The revision it was taken at.
    pub revision: Revision,
    /// Live keys in it.
    pub keys: u64,
}

/// Whether `head` (the first bytes of a file) looks like a Skiff snapshot.
pub fn is_snapshot(head: &[u8]) -> bool {
    wal::is_snapshot(head)
}

/// Read a snapshot file end to end, checking every frame and the trailer.
pub fn verify_snapshot(path: &Path) -> Result<SnapshotSummary> {
    let mut keys = 0u64;
    let (revision, _) = wal::read_snapshot_file(path, &mut |_| keys += 1)?;
    Ok(SnapshotSummary { revision, keys })
}

/// Install a snapshot file as the store of `dir` (which must hold no store yet), with the
/// revision raised by `bump` and everything below marked compacted: writes that happened
/// after the snapshot was taken may have handed out revisions up to `bump` higher, and
/// clients holding those must re-list (410 Gone) rather than silently miss events
/// (upstream: `etcdutl snapshot restore --bump-revision --mark-compacted`).
pub fn restore(snapshot: &Path, dir: &Path, bump: Revision) -> Result<SnapshotSummary> {
    let summary = verify_snapshot(snapshot)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "creating the data directory",
        source,
    })?;
    let _lock = lock_dir(dir)?;
    let existing = std::fs::read_dir(dir)
        .map_err(|source| Error::Io {
            action: "reading the data directory",
            source,
        })?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name() != "LOCK");
    if existing {
        return Err(Error::Unavailable {
            reason: format!(
                "{} already holds a store; restore into an empty directory",
                dir.display()
            ),
        });
    }
    let revision = summary.revision + bump.max(0);
    let mut writer = wal::SnapshotWriter::create(dir, revision, revision)?;
    let mut batch = Vec::with_capacity(SNAPSHOT_CHUNK);
    let mut failed = None;
    wal::read_snapshot_file(snapshot, &mut |entry| {
        batch.push(entry);
        if batch.len() == SNAPSHOT_CHUNK && failed.is_none() {
            failed = writer.write(&batch).err();
            batch.clear();
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    writer.write(&batch)?;
    writer.finish()?;
    Ok(SnapshotSummary {
        revision,
        keys: summary.keys,
    })
}
