//! The in-memory MVCC index: every key's versions since the compaction point, and the log
//! of durable events that watches replay from.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use crate::{Event, EventKind, KeyValue, Revision};

/// One incarnation of a key at one revision; `value: None` marks a deletion.
#[derive(Debug, Clone)]
struct Version {
    mod_revision: Revision,
    create_revision: Revision,
    value: Option<Bytes>,
}

/// A live key as stored in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotEntry {
    pub key: String,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// Keys with their version history, plus the event log.
#[derive(Debug, Default)]
pub(crate) struct Index {
    keys: BTreeMap<String, Vec<Version>>,
    /// Durable events after `compacted`, in revision order.
    events: VecDeque<Event>,
    compacted: Revision,
    live: usize,
}

fn to_kv(key: &str, version: &Version) -> Option<KeyValue> {
    version.value.as_ref().map(|value| KeyValue {
        key: key.to_owned(),
        value: value.clone(),
        create_revision: version.create_revision,
        mod_revision: version.mod_revision,
    })
}

/// The version visible at `revision`: the last one not newer than it.
fn visible_at(versions: &[Version], revision: Revision) -> Option<&Version> {
    versions.iter().rev().find(|v| v.mod_revision <= revision)
}

impl Index {
    /// Add a key from a snapshot.
    pub fn load(&mut self, entry: SnapshotEntry) {
        self.live += 1;
        self.keys.insert(
            entry.key,
            vec![Version {
                mod_revision: entry.mod_revision,
                create_revision: entry.create_revision,
                value: Some(entry.value),
            }],
        );
    }

    /// Number of live keys (latest versions).
    pub fn live_keys(&self) -> usize {
        self.live
    }

    /// The latest version of a key, durable or not (for precondition checks).
    pub fn latest(&self, key: &str) -> Option<KeyValue> {
        let versions = self.keys.get(key)?;
        to_kv(key, versions.last()?)
    }

    /// Set `key` to `value` at `revision`.
    pub fn put(&mut self, key: String, value: Bytes, revision: Revision) -> KeyValue {
        let versions = self.keys.entry(key.clone()).or_default();
        let create_revision = match versions.last() {
            Some(Version {
                value: Some(_),
                create_revision,
                ..
            }) => *create_revision,
            _ => {
                self.live += 1;
                revision
            }
        };
        versions.push(Version {
            mod_revision: revision,
            create_revision,
            value: Some(value.clone()),
        });
        KeyValue {
            key,
            value,
            create_revision,
            mod_revision: revision,
        }
    }

    /// Delete `key` at `revision` (no-op if it is not live).
    pub fn delete(&mut self, key: &str, revision: Revision) {
        if let Some(versions) = self.keys.get_mut(key)
            && versions.last().is_some_and(|v| v.value.is_some())
        {
            self.live -= 1;
            versions.push(Version {
                mod_revision: revision,
                create_revision: 0,
                value: None,
            });
        }
    }

    /// The value of `key` at `revision`.
    pub fn get_at(&self, key: &str, revision: Revision) -> Option<KeyValue> {
        let versions = self.keys.get(key)?;
        to_kv(key, visible_at(versions, revision)?)
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
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let mut items = Vec::new();
        let mut remaining = 0;
        for (key, versions) in self.keys.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            let Some(version) = visible_at(versions, revision) else {
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

    /// Record events that just became durable.
    pub fn publish(&mut self, events: &[Event]) {
        self.events.extend(events.iter().cloned());
    }

    /// Durable events under `prefix` with revision in `(after, upto]`.
    pub fn events_after(&self, prefix: &str, after: Revision, upto: Revision) -> Vec<Event> {
        let start = self.events.partition_point(|e| e.revision() <= after);
        self.events
            .range(start..)
            .take_while(|e| e.revision() <= upto)
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .collect()
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
    pub fn compact(&mut self, revision: Revision) {
        if revision <= self.compacted {
            return;
        }
        self.keys.retain(|_, versions| {
            // Index of the version visible at `revision`; everything before it goes.
            let visible = versions.iter().rposition(|v| v.mod_revision <= revision);
            if let Some(i) = visible {
                let drop_visible = versions[i].value.is_none();
                let cut = if drop_visible { i + 1 } else { i };
                versions.drain(..cut);
            }
            !versions.is_empty()
        });
        while self
            .events
            .front()
            .is_some_and(|e| e.revision() <= revision)
        {
            self.events.pop_front();
        }
        self.compacted = revision;
    }

    /// Every live key at `revision`, for a snapshot.
    pub fn snapshot_at(&self, revision: Revision) -> Vec<SnapshotEntry> {
        self.keys
            .iter()
            .filter_map(|(key, versions)| {
                let v = visible_at(versions, revision)?;
                Some(SnapshotEntry {
                    key: key.clone(),
                    value: v.value.clone()?,
                    create_revision: v.create_revision,
                    mod_revision: v.mod_revision,
                })
            })
            .collect()
    }
}

/// The delete event for `prev` at `revision`, as watchers see it.
pub(crate) fn delete_event(prev: KeyValue, revision: Revision) -> Event {
    let mut kv = prev.clone();
    kv.mod_revision = revision;
    Event {
        kind: EventKind::Delete,
        kv,
        prev: Some(prev),
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
        index.put("/a".into(), b("1"), 1);
        index.put("/a".into(), b("2"), 2);
        index.put("/b".into(), b("x"), 3);
        index.delete("/b", 4);
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
            !index.keys.contains_key("/b"),
            "deleted keys vanish on compaction"
        );
        // A recreated key starts a new incarnation.
        let kv = index.put("/b".into(), b("y"), 5);
        assert_eq!(kv.create_revision, 5);
    }

    #[test]
    fn range_paginates_with_remaining_counts() {
        let mut index = Index::default();
        for (i, k) in ["/p/a", "/p/b", "/p/c", "/q/a"].iter().enumerate() {
            index.put((*k).into(), b("v"), i as i64 + 1);
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
}
