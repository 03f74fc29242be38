//! The `Store` contract (see `suite`) run against both backends: the embedded engine, and a
//! real etcd started for each test (Debian's `etcd-server`) through the etcd backend, under a
//! key prefix so the prefix handling is exercised too. Plus the embedded engine's own watcher
//! back-pressure and shutdown behaviour.

mod suite;

use std::sync::Arc;

use skiff_store::Store;
use skiff_store::embedded::{EmbeddedOptions, EmbeddedStore};
use skiff_store::etcd::{EtcdOptions, EtcdStore};
use skiff_testing::etcd::EtcdCluster;

/// Whatever must outlive the store under test (a data directory, an etcd process).
enum Keep {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Etcd(#[allow(dead_code)] EtcdCluster),
}

/// A fresh, empty embedded store.
async fn embedded() -> (Keep, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    (Keep::Dir(dir), store)
}

/// A fresh etcd and a store on it.
async fn etcd() -> (Keep, Arc<dyn Store>) {
    let cluster = tokio::task::spawn_blocking(EtcdCluster::start)
        .await
        .unwrap()
        .unwrap();
    let options = EtcdOptions {
        endpoints: cluster.endpoints(),
        prefix: "/conformance".into(),
        compaction_interval: std::time::Duration::ZERO,
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(options).await.unwrap();
    (Keep::Etcd(cluster), store)
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_keep, store) = embedded().await;
                    suite::$name(store).await;
                }
            )*
        }
        mod etcd_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_keep, store) = etcd().await;
                    suite::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    create_and_get,
    update_is_compare_and_swap,
    delete_with_and_without_precondition,
    ranges_paginate,
    ranges_read_the_past,
    revisions_are_monotonic_and_gap_free,
    watches_replay_history_then_follow,
    watches_from_now_see_only_later_changes,
    many_watchers_each_get_every_event_in_order,
    compaction_forgets_history,
    watches_stay_ordered_across_compaction,
);

#[tokio::test]
async fn slow_watchers_are_dropped_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        watcher_buffer: 8,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    let mut slow = store.watch("/s/", 0).await.unwrap();
    let mut other = store.watch("/t/", 0).await.unwrap();
    for i in 0..50 {
        store
            .create(&format!("/s/{i}"), suite::b("v"))
            .await
            .unwrap();
    }
    // Writers were never blocked; the slow watcher got what fit and then its channel closed.
    let mut received = Vec::new();
    while let Some(event) = slow.events.recv().await {
        received.push(event.revision());
    }
    assert!(
        !received.is_empty() && received.len() <= 8,
        "the channel closed after its buffer filled ({} events)",
        received.len()
    );
    assert!(received.windows(2).all(|w| w[1] == w[0] + 1));
    // A watcher of another prefix is unaffected and still live.
    let r = store.create("/t/x", suite::b("v")).await.unwrap();
    assert_eq!(suite::next_event(&mut other).await.revision(), r);
}

#[tokio::test]
async fn closing_ends_watches_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut watch = store.watch("", 0).await.unwrap();
    store.create("/a", suite::b("a")).await.unwrap();
    store.close();
    assert_eq!(watch.events.recv().await.unwrap().kv.key, "/a");
    assert!(watch.events.recv().await.is_none(), "the watch ends");
    assert!(matches!(
        store.create("/b", suite::b("b")).await,
        Err(skiff_store::Error::Unavailable { .. })
    ));
    assert!(store.watch("", 0).await.is_err());
    // Reads of what was committed still work.
    assert!(store.get("/a").await.unwrap().is_some());
}
