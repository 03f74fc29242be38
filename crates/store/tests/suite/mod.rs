//! The `Store` contract (etcd's MVCC semantics) as a backend-independent suite: each
//! property is a `pub async fn` over a fresh, empty `Arc<dyn Store>`, so the embedded engine
//! and an etcd-backed store run exactly the same checks.
//! (upstream: etcd api/v3rpc semantics of Range/Txn/Watch/Compact, and
//! k8s.io/apiserver/pkg/storage/testing/store_tests.go for what the API server relies on.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skiff_store::{Error, Event, EventKind, RangeRequest, Revision, Store, Watch};

pub fn b(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

/// The next event of a watch, failing the test if none arrives within five seconds.
pub async fn next_event(watch: &mut Watch) -> Event {
    tokio::time::timeout(Duration::from_secs(5), watch.events.recv())
        .await
        .expect("an event within 5s")
        .expect("the watch stays open")
}

/// Asserts that nothing more arrives on a watch for a short while.
pub async fn assert_quiet(watch: &mut Watch) {
    if let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(100), watch.events.recv()).await
    {
        panic!("unexpected event {event:?}");
    }
}

fn keys(items: &[skiff_store::KeyValue]) -> Vec<&str> {
    items.iter().map(|i| i.key.as_str()).collect()
}

pub async fn create_and_get(store: Arc<dyn Store>) {
    assert!(store.get("/k/a").await.unwrap().is_none());
    let r1 = store.create("/k/a", b("1")).await.unwrap();
    assert!(r1 > 0, "the first write gets a positive revision");
    match store.create("/k/a", b("x")).await {
        Err(Error::AlreadyExists { key }) => assert_eq!(key, "/k/a"),
        other => panic!("creating a live key must fail, got {other:?}"),
    }
    let kv = store.get("/k/a").await.unwrap().unwrap();
    assert_eq!(kv.key, "/k/a");
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b("1"), r1, r1)
    );
    assert_eq!(store.current_revision().await.unwrap(), r1);
    // A failed create did not consume a revision.
    let r2 = store.create("/k/b", b("2")).await.unwrap();
    assert_eq!(r2, r1 + 1);
}

pub async fn update_is_compare_and_swap(store: Arc<dyn Store>) {
    let r1 = store.create("/u/a", b("1")).await.unwrap();
    let r2 = store.update("/u/a", b("2"), r1).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get("/u/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b("2"), r1, r2),
        "an update keeps the create revision"
    );
    match store.update("/u/a", b("3"), r1).await {
        Err(Error::Conflict {
            key,
            expected,
            actual,
        }) => assert_eq!((key.as_str(), expected, actual), ("/u/a", r1, r2)),
        other => panic!("a stale update must conflict, got {other:?}"),
    }
    assert_eq!(store.get("/u/a").await.unwrap().unwrap().value, b("2"));
    assert!(matches!(
        store.update("/u/missing", b("3"), 1).await,
        Err(Error::NotFound { .. })
    ));
}

pub async fn delete_with_and_without_precondition(store: Arc<dyn Store>) {
    let r1 = store.create("/d/a", b("1")).await.unwrap();
    let r2 = store.update("/d/a", b("2"), r1).await.unwrap();
    match store.delete("/d/a", Some(r1)).await {
        Err(Error::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (r1, r2)),
        other => panic!("a stale delete must conflict, got {other:?}"),
    }
    assert!(store.get("/d/a").await.unwrap().is_some());
    let (deleted, r3) = store.delete("/d/a", Some(r2)).await.unwrap();
    assert_eq!(
        (deleted.value, deleted.create_revision, deleted.mod_revision),
        (b("2"), r1, r2),
        "delete returns the value it removed"
    );
    assert!(r3 > r2);
    assert!(store.get("/d/a").await.unwrap().is_none());
    assert!(matches!(
        store.delete("/d/a", None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.update("/d/a", b("x"), r2).await,
        Err(Error::NotFound { .. })
    ));
    // Unconditional delete.
    store.create("/d/b", b("b")).await.unwrap();
    let (deleted, _) = store.delete("/d/b", None).await.unwrap();
    assert_eq!(deleted.value, b("b"));
    // A recreated key is a new incarnation.
    let r4 = store.create("/d/a", b("new")).await.unwrap();
    let kv = store.get("/d/a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r4, r4));
}

pub async fn ranges_paginate(store: Arc<dyn Store>) {
    for name in ["a", "b", "c", "d", "e"] {
        store.create(&format!("/r/{name}"), b(name)).await.unwrap();
    }
    store.create("/rx", b("outside")).await.unwrap();
    store.create("/q", b("before")).await.unwrap();
    let all = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&all.items), ["/r/a", "/r/b", "/r/c", "/r/d", "/r/e"]);
    assert!(!all.more);
    assert_eq!(all.remaining, 0);
    assert_eq!(all.revision, store.current_revision().await.unwrap());

    let first = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&first.items), ["/r/a", "/r/b"]);
    assert!(first.more);
    assert_eq!(first.remaining, 3);
    // Writes between pages do not show up when reading at the first page's revision.
    store.create("/r/bb", b("late")).await.unwrap();
    store.delete("/r/d", None).await.unwrap();
    let second = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            start_after: Some("/r/b".into()),
            limit: 2,
            revision: first.revision,
        })
        .await
        .unwrap();
    assert_eq!(keys(&second.items), ["/r/c", "/r/d"]);
    assert_eq!((second.more, second.remaining), (true, 1));
    assert_eq!(second.revision, first.revision);
    let third = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            start_after: Some("/r/d".into()),
            limit: 2,
            revision: first.revision,
        })
        .await
        .unwrap();
    assert_eq!(keys(&third.items), ["/r/e"]);
    assert_eq!((third.more, third.remaining), (false, 0));
    // The current state has the late writes.
    let now = store
        .range(RangeRequest {
            prefix: "/r/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&now.items), ["/r/a", "/r/b", "/r/bb", "/r/c", "/r/e"]);
    // A prefix that names a key exactly matches it; the empty prefix matches everything.
    let exact = store
        .range(RangeRequest {
            prefix: "/q".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&exact.items), ["/q"]);
    let everything = store.range(RangeRequest::default()).await.unwrap();
    assert_eq!(everything.items.len(), 7);
}

pub async fn ranges_read_the_past(store: Arc<dyn Store>) {
    let r1 = store.create("/p/a", b("1")).await.unwrap();
    let r2 = store.create("/p/b", b("b")).await.unwrap();
    let r3 = store.update("/p/a", b("2"), r1).await.unwrap();
    let (_, r4) = store.delete("/p/b", None).await.unwrap();
    let at = |revision: Revision| {
        let store = store.clone();
        async move {
            store
                .range(RangeRequest {
                    prefix: "/p/".into(),
                    revision,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let past = at(r1).await;
    assert_eq!(keys(&past.items), ["/p/a"]);
    assert_eq!(past.items[0].value, b("1"));
    assert_eq!(past.revision, r1);
    let past = at(r2).await;
    assert_eq!(keys(&past.items), ["/p/a", "/p/b"]);
    let past = at(r3).await;
    assert_eq!(past.items[0].value, b("2"));
    assert_eq!(past.items[0].mod_revision, r3);
    assert_eq!(past.items[0].create_revision, r1);
    let past = at(r4).await;
    assert_eq!(keys(&past.items), ["/p/a"]);

    let current = store.current_revision().await.unwrap();
    match store
        .range(RangeRequest {
            prefix: "/p/".into(),
            revision: current + 10,
            ..Default::default()
        })
        .await
    {
        Err(Error::FutureRevision {
            requested,
            current: reported,
        }) => assert_eq!((requested, reported), (current + 10, current)),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

pub async fn revisions_are_monotonic_and_gap_free(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..25 {
                let key = format!("/m/{w}/{i}");
                let r = store.create(&key, b("v")).await.unwrap();
                let r2 = store.update(&key, b("w"), r).await.unwrap();
                assert!(r2 > r, "one writer's revisions increase");
                revs.extend([r, r2]);
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let expected: Vec<Revision> = (start + 1..=start + 400).collect();
    assert_eq!(
        all, expected,
        "every write gets its own revision, none skipped"
    );
    assert_eq!(store.current_revision().await.unwrap(), start + 400);
}

pub async fn watches_replay_history_then_follow(store: Arc<dyn Store>) {
    let r0 = store.create("/before", b("0")).await.unwrap();
    let r1 = store.create("/w/a", b("1")).await.unwrap();
    let r2 = store.update("/w/a", b("2"), r1).await.unwrap();
    store.create("/other/x", b("x")).await.unwrap();
    let mut watch = store.watch("/w/", r0).await.unwrap();
    let (_, r3) = store.delete("/w/a", None).await.unwrap();
    let r4 = store.create("/w/a", b("again")).await.unwrap();

    let first = next_event(&mut watch).await;
    assert_eq!(first.kind, EventKind::Put);
    assert_eq!((first.revision(), first.kv.value.clone()), (r1, b("1")));
    assert!(first.prev.is_none(), "a create has no previous value");
    let second = next_event(&mut watch).await;
    assert_eq!(second.revision(), r2);
    assert_eq!(second.kv.create_revision, r1);
    let prev = second.prev.expect("an update carries the replaced value");
    assert_eq!((prev.value, prev.mod_revision), (b("1"), r1));
    let third = next_event(&mut watch).await;
    assert_eq!(third.kind, EventKind::Delete);
    assert_eq!(third.revision(), r3);
    assert_eq!(
        third.kv.value,
        b("2"),
        "a delete event carries the last value"
    );
    assert_eq!(third.kv.create_revision, r1);
    assert_eq!(third.prev.unwrap().mod_revision, r2);
    let fourth = next_event(&mut watch).await;
    assert_eq!(fourth.kind, EventKind::Put);
    assert_eq!((fourth.revision(), fourth.kv.create_revision), (r4, r4));
    assert!(fourth.prev.is_none(), "a recreate has no previous value");
    assert_quiet(&mut watch).await;
}

pub async fn watches_from_now_see_only_later_changes(store: Arc<dyn Store>) {
    store.create("/n/old", b("old")).await.unwrap();
    let mut live = store.watch("/n/", 0).await.unwrap();
    let mut everything = store.watch("", 0).await.unwrap();
    store.create("/elsewhere", b("e")).await.unwrap();
    let r = store.create("/n/new", b("new")).await.unwrap();
    let event = next_event(&mut live).await;
    assert_eq!((event.kv.key.as_str(), event.revision()), ("/n/new", r));
    assert_quiet(&mut live).await;
    assert_eq!(next_event(&mut everything).await.kv.key, "/elsewhere");
    assert_eq!(next_event(&mut everything).await.kv.key, "/n/new");
    // Watching from the current revision is "from now on", explicitly.
    let current = store.current_revision().await.unwrap();
    let mut explicit = store.watch("/n/", current).await.unwrap();
    assert_quiet(&mut explicit).await;
    let current = store.current_revision().await.unwrap();
    match store.watch("/n/", current + 5).await {
        Err(Error::FutureRevision { requested, .. }) => assert_eq!(requested, current + 5),
        Err(e) => panic!("expected FutureRevision, got {e:?}"),
        Ok(_) => panic!("expected FutureRevision, got a watch"),
    }
}

pub async fn many_watchers_each_get_every_event_in_order(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap();
    let mut watches = Vec::new();
    for _ in 0..10 {
        watches.push(store.watch("/f/", start).await.unwrap());
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                store.create(&format!("/f/{i:03}"), b("v")).await.unwrap();
            }
        })
    };
    for watch in &mut watches {
        let mut last = start;
        for _ in 0..100 {
            let event = next_event(watch).await;
            assert_eq!(event.revision(), last + 1, "no gaps, no duplicates");
            last = event.revision();
        }
    }
    writer.await.unwrap();
}

pub async fn compaction_forgets_history(store: Arc<dyn Store>) {
    let r1 = store.create("/c/a", b("1")).await.unwrap();
    let r2 = store.update("/c/a", b("2"), r1).await.unwrap();
    let r3 = store.create("/c/b", b("b")).await.unwrap();
    let (_, r4) = store.delete("/c/b", None).await.unwrap();
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
    match store.watch("/c/", r1).await {
        Err(Error::Compacted { requested, .. }) => assert_eq!(requested, r1),
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    // The compaction point itself is still readable, with the values as of then.
    let at = store
        .range(RangeRequest {
            prefix: "/c/".into(),
            revision: r2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&at.items), ["/c/a"]);
    assert_eq!(at.items[0].value, b("2"));
    // Watching from the compaction point replays what came after, with previous values.
    let mut watch = store.watch("/c/", r2).await.unwrap();
    let created = next_event(&mut watch).await;
    assert_eq!(created.revision(), r3);
    let deleted = next_event(&mut watch).await;
    assert_eq!(
        (&deleted.kind, deleted.revision()),
        (&EventKind::Delete, r4)
    );
    assert_eq!(deleted.kv.value, b("b"));
    // The latest values survive; compacting to the future is refused.
    assert_eq!(store.get("/c/a").await.unwrap().unwrap().value, b("2"));
    let current = store.current_revision().await.unwrap();
    assert!(matches!(
        store.compact(current + 1).await,
        Err(Error::FutureRevision { .. })
    ));
    // Compacting everything still keeps the live data.
    store.compact(current).await.unwrap();
    assert_eq!(store.get("/c/a").await.unwrap().unwrap().value, b("2"));
    assert!(store.get("/c/b").await.unwrap().is_none());
    let r5 = store.create("/c/b", b("again")).await.unwrap();
    assert_eq!(
        store.get("/c/b").await.unwrap().unwrap().create_revision,
        r5
    );
}

pub async fn watches_stay_ordered_across_compaction(store: Arc<dyn Store>) {
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/wc/", start).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut watched = Vec::new();
            for i in 0..150 {
                watched.push(store.create(&format!("/wc/{i:03}"), b("v")).await.unwrap());
                store
                    .create(&format!("/elsewhere/{i:03}"), b("v"))
                    .await
                    .unwrap();
                if i % 15 == 14 {
                    // Compact right up to now, under the running watch.
                    let now = store.current_revision().await.unwrap();
                    store.compact(now).await.unwrap();
                }
            }
            watched
        })
    };
    let mut seen = Vec::new();
    while seen.len() < 150 {
        let event = next_event(&mut watch).await;
        assert!(event.kv.key.starts_with("/wc/"));
        seen.push(event.revision());
    }
    let watched = writer.await.unwrap();
    assert_eq!(
        seen, watched,
        "every watched write, in revision order, none lost to compaction"
    );
    assert!(store.compacted_revision().await.unwrap() > start);
}
