//! The in-memory MVCC index: every key's versions since the compaction point, and the
//! revision-ordered change log that watches replay from.
//!
//! The change log holds only `(revision, key)`; the event itself (value, previous value) is
//! rebuilt from the key's versions on demand, so history costs one shared key pointer per
//! write instead of a second copy of every key and value. That works because compaction keeps,
//! for every key, all versions above the compaction point plus the one visible at it — exactly
//! what the events above the compaction point and their `prev` values need.
//! (upstream: etcd server/mvcc/kvstore.go and key_index.go keep the same per-key generations.)

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use crate::{Event, EventKind, KeyValue, Revision};

/// One incarnation of a key at one revision; `value: None` marks a deletion.
#[derive(Debug, Clone)]
struct Version {
    mod_revision: Revision,
    create_revision: Revision,
    value: Option<Bytes>,
}

/// A key's versions in revision order. The latest is kept inline, so a key without history
/// (the common case after compaction) costs no allocation besides its name.
#[derive(Debug, Clone)]
struct Versions {
    older: Vec<Version>,
    latest: Version,
}

impl Versions {
    fn new(version: Version) -> Versions {
        Versions {
            older: Vec::new(),
            latest: version,
        }
    }

    fn push(&mut self, version: Version) {
        self.older
            .push(std::mem::replace(&mut self.latest, version));
    }

    /// The version visible at `revision`: the last one not newer than it.
    fn visible_at(&self, revision: Revision) -> Option<&Version> {
        if self.latest.mod_revision <= revision {
            return Some(&self.latest);
        }
        self.older.iter().rev().find(|v| v.mod_revision <= revision)
    }

    /// The version written at exactly `revision` and its predecessor, if still kept.
    fn written_at(&self, revision: Revision) -> Option<(&Version, Option<&Version>)> {
        if self.latest.mod_revision == revision {
            return Some((&self.latest, self.older.last()));
        }
        let i = self
            .older
            .binary_search_by_key(&revision, |v| v.mod_revision)
            .ok()?;
        Some((&self.older[i], i.checked_sub(1).map(|p| &self.older[p])))
    }

    /// Drop versions no read at or above `revision` can see. Returns false when nothing is
    /// left (the key was deleted at or before `revision`).
    fn compact(&mut self, revision: Revision) -> bool {
        if self.latest.mod_revision <= revision {
            self.older = Vec::new();
            return self.latest.value.is_some();
        }
        if let Some(i) = self.older.iter().rposition(|v| v.mod_revision <= revision) {
            let cut = if self.older[i].value.is_none() {
                i + 1
            } else {
                i
            };
            self.older.drain(..cut);
            if self.older.is_empty() {
                self.older = Vec::new();
            }
        }
        true
    }
}

/// A live key as stored in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    pub key: Arc<str>,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// Keys with their version history, plus the change log.
#[derive(Debug, Default)]
pub(crate) struct Index {
    keys: BTreeMap<Arc<str>, Versions>,
    /// Every write above `compacted` in revision order, including writes not yet durable
    /// (readers bound themselves by the durable revision).
    log: VecDeque<(Revision, Arc<str>)>,
    compacted: Revision,
    live: usize,
}

fn to_kv(key: &str, version: &Version) -> Option<KeyValue> {
    version.value.as_ref().map(|value| KeyValue {
        key: key.to_owned(),
        value: value.clone(),
        create_revision: version.create_revision,
        mod_revision: version.mod_revision,
        stale: false,
    })
}

impl Index {
    /// Add a key from a snapshot.
    pub fn load(&mut self, entry: SnapshotEntry) {
        let previous = self.keys.insert(
            entry.key,
            Versions::new(Version {
                mod_revision: entry.mod_revision,
                create_revision: entry.create_revision,
                value: Some(entry.value),
            }),
        );
        if previous.is_none() {
            self.live += 1;
        }
    }

    /// Number of live keys (latest versions).
    pub fn live_keys(&self) -> usize {
        self.live
    }

    /// The mod revision of the latest live version of a key, durable or not (for
    /// precondition checks).
    pub fn latest_revision(&self, key: &str) -> Option<Revision> {
        let version = &self.keys.get(key)?.latest;
        version.value.as_ref().map(|_| version.mod_revision)
    }

    /// Set `key` to `value` at `revision`; returns the key's create revision.
    pub fn put(&mut self, key: &str, value: Bytes, revision: Revision) -> Revision {
        let fresh = |create_revision| Version {
            mod_revision: revision,
            create_revision,
            value: Some(value.clone()),
        };
        let (shared, create_revision) = match self.keys.get_key_value(key) {
            Some((shared, versions)) => {
                let shared = shared.clone();
                let create_revision = match &versions.latest {
                    Version {
                        value: Some(_),
                        create_revision,
                        ..
                    } => *create_revision,
                    _ => {
                        self.live += 1;
                        revision
                    }
                };
                if let Some(versions) = self.keys.get_mut(key) {
                    versions.push(fresh(create_revision));
                }
                (shared, create_revision)
            }
            None => {
                let shared: Arc<str> = Arc::from(key);
                self.keys
                    .insert(shared.clone(), Versions::new(fresh(revision)));
                self.live += 1;
                (shared, revision)
            }
        };
        self.log.push_back((revision, shared));
        create_revision
    }

    /// Delete `key` at `revision`; returns the deleted value (`None`, and no change, if the
    /// key is not live).
    pub fn delete(&mut self, key: &str, revision: Revision) -> Option<KeyValue> {
        let (shared, versions) = self.keys.get_key_value(key)?;
        let prev = to_kv(key, &versions.latest)?;
        let shared = shared.clone();
        self.keys.get_mut(key)?.push(Version {
            mod_revision: revision,
            create_revision: 0,
            value: None,
        });
        self.live -= 1;
        self.log.push_back((revision, shared));
        Some(prev)
    }

    /// The value of `key` at `revision`.
    pub fn get_at(&self, key: &str, revision: Revision) -> Option<KeyValue> {
        to_kv(key, self.keys.get(key)?.visible_at(revision)?)
    }

    /// Live keys under `prefix` after `start_after` at `revision`: up to `limit` items (0 =
    /// all) and how many more match.
    pub fn range_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Revision,
    ) -> (Vec<KeyValue>, usize) {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut items = Vec::new();
        let mut remaining = 0;
        for (key, versions) in self.keys.range::<str, _>((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            let Some(version) = versions.visible_at(revision) else {
                continue;
            };
            if version.value.is_none() {
                continue;
            }
            if limit == 0 || items.len() < limit {
                items.extend(to_kv(key, version));
            } else {
                remaining += 1;
            }
        }
        (items, remaining)
    }

    /// Changes under `prefix` with revision in `(after, upto]`, in revision order.
    pub fn events_between(&self, prefix: &str, after: Revision, upto: Revision) -> Vec<Event> {
        let start = self.log.partition_point(|(r, _)| *r <= after);
        self.log
            .range(start..)
            .take_while(|(r, _)| *r <= upto)
            .filter(|(_, key)| key.starts_with(prefix))
            .filter_map(|(revision, key)| self.event_at(key, *revision))
            .collect()
    }

    /// Rebuild the event that changed `key` at `revision` from the key's versions.
    fn event_at(&self, key: &str, revision: Revision) -> Option<Event> {
        let (version, before) = self.keys.get(key)?.written_at(revision)?;
        let prev = before.and_then(|v| to_kv(key, v));
        match &version.value {
            Some(_) => Some(Event {
                kind: EventKind::Put,
                kv: to_kv(key, version)?,
                prev,
            }),
            None => {
                let prev = prev?;
                let mut kv = prev.clone();
                kv.mod_revision = revision;
                Some(Event {
                    kind: EventKind::Delete,
                    kv,
                    prev: Some(prev),
                })
            }
        }
    }

    /// The compaction point: reads below it fail.
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Set the compaction point after recovery (history before it was not recovered).
    pub fn set_compacted(&mut self, revision: Revision) {
        self.compacted = self.compacted.max(revision);
    }

    /// Drop history at and below `revision`, keeping each key's value as of `revision`.
    ///
    /// Only keys written since the last compaction can have history to drop, and the change
    /// log names exactly those, so this costs O(writes since then), not O(keys).
    pub fn compact(&mut self, revision: Revision) {
        if revision <= self.compacted {
            return;
        }
        while self.log.front().is_some_and(|(r, _)| *r <= revision) {
            let Some((_, key)) = self.log.pop_front() else {
                break;
            };
            // Everything before the version visible at `revision` goes; so does that version
            // itself if it is a deletion.
            if let Some(versions) = self.keys.get_mut(&*key)
                && !versions.compact(revision)
            {
                self.keys.remove(&*key);
            }
        }
        self.compacted = revision;
    }

    /// Up to `max` live keys at `revision` after the key `after`, for a snapshot written in
    /// chunks; also returns the last key examined (to continue from), `None` at the end.
    pub fn snapshot_chunk(
        &self,
        after: Option<&str>,
        revision: Revision,
        max: usize,
    ) -> (Vec<SnapshotEntry>, Option<Arc<str>>) {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut entries = Vec::new();
        let mut last = None;
        for (key, versions) in self
            .keys
            .range::<str, _>((lower, Bound::Unbounded))
            .take(max)
        {
            last = Some(key.clone());
            if let Some(Version {
                value: Some(value),
                create_revision,
                mod_revision,
            }) = versions.visible_at(revision)
            {
                entries.push(SnapshotEntry {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: *create_revision,
                    mod_revision: *mod_revision,
                });
            }
        }
        (entries, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    #[test]
    fn versions_are_visible_by_revision_and_compaction_keeps_the_latest() {
        let mut index = Index::default();
        index.put("/a", b("1"), 1);
        index.put("/a", b("2"), 2);
        index.put("/b", b("x"), 3);
        assert_eq!(index.delete("/b", 4).unwrap().value, b("x"));
        assert!(
            index.delete("/b", 5).is_none(),
            "deleting a dead key is a no-op"
        );
        assert_eq!(index.get_at("/a", 1).unwrap().value, b("1"));
        assert_eq!(index.get_at("/a", 4).unwrap().value, b("2"));
        assert_eq!(index.get_at("/a", 4).unwrap().create_revision, 1);
        assert!(index.get_at("/b", 4).is_none());
        assert_eq!(index.get_at("/b", 3).unwrap().value, b("x"));
        assert_eq!(index.live_keys(), 1);
        let (items, more) = index.range_at("/", None, 0, 3);
        assert_eq!(items.len(), 2);
        assert_eq!(more, 0);
        index.compact(4);
        assert_eq!(index.get_at("/a", 4).unwrap().value, b("2"));
        assert!(
            index.keys["/a"].older.is_empty(),
            "history below the point is gone"
        );
        assert!(
            !index.keys.contains_key("/b"),
            "deleted keys vanish on compaction"
        );
        // A recreated key starts a new incarnation.
        assert_eq!(index.put("/b", b("y"), 5), 5);
    }

    #[test]
    fn events_are_rebuilt_with_previous_values() {
        let mut index = Index::default();
        index.put("/w/a", b("1"), 1);
        index.put("/w/a", b("2"), 2);
        index.put("/x", b("x"), 3);
        index.delete("/w/a", 4);
        index.put("/w/a", b("3"), 5);
        let events = index.events_between("/w/", 0, 5);
        let summary: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.kind.clone(),
                    e.revision(),
                    e.kv.value.clone(),
                    e.prev.as_ref().map(|p| p.value.clone()),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (EventKind::Put, 1, b("1"), None),
                (EventKind::Put, 2, b("2"), Some(b("1"))),
                (EventKind::Delete, 4, b("2"), Some(b("2"))),
                (EventKind::Put, 5, b("3"), None),
            ]
        );
        assert_eq!(events[2].kv.create_revision, 1);
        assert_eq!(events[3].kv.create_revision, 5);
        // After compacting to 2 the later events, and their previous values, survive.
        index.compact(2);
        let events = index.events_between("/w/", 2, 5);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].prev.as_ref().unwrap().value, b("2"));
        // The upper bound hides writes that are not durable yet.
        assert_eq!(index.events_between("", 2, 4).len(), 2);
    }

    #[test]
    fn range_paginates_with_remaining_counts() {
        let mut index = Index::default();
        for (i, k) in ["/p/a", "/p/b", "/p/c", "/q/a"].iter().enumerate() {
            index.put(k, b("v"), i as i64 + 1);
        }
        let (items, remaining) = index.range_at("/p/", None, 2, 4);
        assert_eq!(
            items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
            ["/p/a", "/p/b"]
        );
        assert_eq!(remaining, 1);
        let (items, remaining) = index.range_at("/p/", Some("/p/b"), 2, 4);
        assert_eq!(
            items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
            ["/p/c"]
        );
        assert_eq!(remaining, 0);
    }

    #[test]
    fn snapshots_are_taken_in_chunks_at_a_revision() {
        let mut index = Index::default();
        for i in 0..10 {
            index.put(&format!("/k/{i}"), b("v"), i + 1);
        }
        index.delete("/k/3", 11);
        index.put("/k/4", b("late"), 12);
        let mut all = Vec::new();
        let mut after: Option<Arc<str>> = None;
        loop {
            let (entries, last) = index.snapshot_chunk(after.as_deref(), 11, 3);
            all.extend(entries);
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        assert_eq!(all.len(), 9);
        let four = all.iter().find(|e| &*e.key == "/k/4").unwrap();
        assert_eq!(
            four.value,
            b("v"),
            "a write after the snapshot revision is not in it"
        );
    }
}
