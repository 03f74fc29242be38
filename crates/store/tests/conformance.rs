//! The `Store` contract (etcd's semantics), checked against the embedded engine. Each
//! property is a function over `Arc<dyn Store>` so another backend can run the same suite.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skiff_store::embedded::{EmbeddedOptions, EmbeddedStore};
use skiff_store::{Error, EventKind, RangeRequest, Store};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap()
}

async fn create_get_update_delete(store: Arc<dyn Store>) {
    let r1 = store.create("/k/a", b("1")).await.unwrap();
    assert!(matches!(
        store.create("/k/a", b("x")).await,
        Err(Error::AlreadyExists { .. })
    ));
    let kv = store.get("/k/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.clone(), kv.create_revision, kv.mod_revision),
        (b("1"), r1, r1)
    );
    let r2 = store.update("/k/a", b("2"), r1).await.unwrap();
    assert!(r2 > r1);
    match store.update("/k/a", b("3"), r1).await {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (r1, r2)),
        other => panic!("stale update must conflict, got {other:?}"),
    }
    assert!(matches!(
        store.update("/k/missing", b("3"), 1).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("/k/a", Some(r1)).await,
        Err(Error::Conflict { .. })
    ));
    let (deleted, r3) = store.delete("/k/a", Some(r2)).await.unwrap();
    assert_eq!(deleted.value, b("2"));
    assert!(r3 > r2);
    assert!(store.get("/k/a").await.unwrap().is_none());
    assert!(matches!(
        store.delete("/k/a", None).await,
        Err(Error::NotFound { .. })
    ));
    // A recreated key is a new incarnation.
    let r4 = store.create("/k/a", b("new")).await.unwrap();
    assert_eq!(
        store.get("/k/a").await.unwrap().unwrap().create_revision,
        r4
    );
    assert_eq!(store.current_revision().await.unwrap(), r4);
}

async fn ranges_paginate_and_read_the_past(store: Arc<dyn Store>) {
    let mut revs = Vec::new();
    for name in ["a", "b", "c", "d"] {
        revs.push(store.create(&format!("/r/{name}"), b(name)).await.unwrap());
    }
    store.create("/rx", b("outside")).await.unwrap();
    let page = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let keys: Vec<_> = page.items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["/r/a", "/r/b", "/r/c"]);
    assert!(page.more);
    assert_eq!(page.remaining, 1);
    let next = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            start_after: Some("/r/c".into()),
            limit: 3,
            revision: page.revision,
        })
        .await
        .unwrap();
    assert_eq!(next.items.len(), 1);
    assert!(!next.more);
    // The past: at the revision of the second create only two keys existed.
    let past = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            revision: revs[1],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(past.items.len(), 2);
    assert_eq!(past.revision, revs[1]);
    let current = store.current_revision().await.unwrap();
    assert!(matches!(
        store
            .range(RangeRequest {
                prefix: "/r/".into(),
                revision: current + 10,
                ..Default::default()
            })
            .await,
        Err(Error::FutureRevision { .. })
    ));
}

async fn watches_replay_history_then_follow(store: Arc<dyn Store>) {
    // Revision 0 means "from now on", so give the history a predecessor.
    store.create("/before", b("0")).await.unwrap();
    let r1 = store.create("/w/a", b("1")).await.unwrap();
    let r2 = store.update("/w/a", b("2"), r1).await.unwrap();
    store.create("/other/x", b("x")).await.unwrap();
    let mut watch = store.watch("/w/", r1 - 1).await.unwrap();
    let (_, r3) = store.delete("/w/a", None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.events.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(event);
    }
    assert_eq!(
        seen.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        [r1, r2, r3]
    );
    assert_eq!(seen[0].kind, EventKind::Put);
    assert!(seen[0].prev.is_none());
    assert_eq!(seen[1].prev.as_ref().unwrap().value, b("1"));
    assert_eq!(seen[2].kind, EventKind::Delete);
    assert_eq!(seen[2].kv.value, b("2"));
    // A watch from "now" sees only later changes.
    let mut live = store.watch("/w/", 0).await.unwrap();
    let r4 = store.create("/w/b", b("b")).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), live.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.revision(), r4);
}

async fn compaction_forgets_history(store: Arc<dyn Store>) {
    let r1 = store.create("/c/a", b("1")).await.unwrap();
    let r2 = store.update("/c/a", b("2"), r1).await.unwrap();
    let r3 = store.create("/c/b", b("b")).await.unwrap();
    store.compact(r2).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), r2);
    match store
        .range(RangeRequest {
            prefix: "/c/".into(),
            revision: r1,
            ..Default::default()
        })
        .await
    {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (r1, r2)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(
        store.watch("/c/", r1).await,
        Err(Error::Compacted { .. })
    ));
    // The latest values survive, and watching from the compaction point still works.
    assert_eq!(store.get("/c/a").await.unwrap().unwrap().value, b("2"));
    let mut watch = store.watch("/c/", r2).await.unwrap();
    let event = watch.events.recv().await.unwrap();
    assert_eq!(event.revision(), r3);
}

#[tokio::test]
async fn embedded_create_get_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    create_get_update_delete(open(dir.path())).await;
}

#[tokio::test]
async fn embedded_ranges() {
    let dir = tempfile::tempdir().unwrap();
    ranges_paginate_and_read_the_past(open(dir.path())).await;
}

#[tokio::test]
async fn embedded_watches() {
    let dir = tempfile::tempdir().unwrap();
    watches_replay_history_then_follow(open(dir.path())).await;
}

#[tokio::test]
async fn embedded_compaction() {
    let dir = tempfile::tempdir().unwrap();
    compaction_forgets_history(open(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_gap_free_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let start = store.current_revision().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                revs.push(store.create(&format!("/c/{w}/{i}"), b("v")).await.unwrap());
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let expected: Vec<i64> = (start + 1..=start + 800).collect();
    assert_eq!(all, expected);
}

#[tokio::test]
async fn slow_watchers_are_dropped_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        watcher_buffer: 8,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    let mut slow = store.watch("/s/", 0).await.unwrap();
    for i in 0..50 {
        store.create(&format!("/s/{i}"), b("v")).await.unwrap();
    }
    let mut received = 0;
    while let Some(_event) = slow.events.recv().await {
        received += 1;
    }
    assert!(
        received <= 8,
        "the channel closed after its buffer filled ({received})"
    );
}
