//! What only the etcd backend has: TLS with client certificates, the key prefix isolating
//! clusters that share one etcd, automatic compaction coordinated through etcd, and snapshots
//! through etcd's maintenance API.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skiff_store::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use skiff_store::{Error, RangeRequest, Store};
use skiff_testing::etcd::EtcdCluster;

async fn start(members: usize, tls: bool) -> EtcdCluster {
    tokio::task::spawn_blocking(move || EtcdCluster::start_members(members, tls))
        .await
        .unwrap()
        .unwrap()
}

fn options(cluster: &EtcdCluster, prefix: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: cluster.endpoints(),
        prefix: prefix.into(),
        compaction_interval: Duration::ZERO,
        ..EtcdOptions::default()
    }
}

#[tokio::test]
async fn tls_with_client_certificates() {
    let cluster = start(1, true).await;
    let files = cluster.tls().unwrap().clone();
    let tls = EtcdTls {
        ca_file: Some(files.ca_file.clone()),
        cert_file: Some(files.client_cert.clone()),
        key_file: Some(files.client_key.clone()),
    };
    let url = cluster.store_url();
    let mut with_tls = EtcdOptions::from_url(&url, tls).unwrap();
    with_tls.compaction_interval = Duration::ZERO;
    let store = EtcdStore::connect(with_tls).await.unwrap();
    let r = store
        .create("/tls/a", Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(store.get("/tls/a").await.unwrap().unwrap().mod_revision, r);

    // Without a client certificate etcd refuses the connection: a clear error, no hang.
    let no_cert = EtcdTls {
        ca_file: Some(files.ca_file.clone()),
        ..EtcdTls::default()
    };
    let mut without = EtcdOptions::from_url(&url, no_cert).unwrap();
    without.request_timeout = Duration::from_secs(3);
    match EtcdStore::connect(without).await {
        Err(Error::Unavailable { reason }) => assert!(reason.contains("etcd"), "{reason}"),
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

#[tokio::test]
async fn prefixes_isolate_clusters_sharing_one_etcd() {
    let cluster = start(1, false).await;
    let a = EtcdStore::connect(options(&cluster, "/a")).await.unwrap();
    let b = EtcdStore::connect(options(&cluster, "/b")).await.unwrap();
    a.create("/registry/x", Bytes::from_static(b"a"))
        .await
        .unwrap();
    b.create("/registry/x", Bytes::from_static(b"b"))
        .await
        .unwrap();
    let mut watch = b.watch("", 0).await.unwrap();
    a.create("/registry/y", Bytes::from_static(b"a"))
        .await
        .unwrap();
    let only_b = b
        .create("/registry/z", Bytes::from_static(b"b"))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.kv.key.as_str(), event.revision()),
        ("/registry/z", only_b)
    );
    let all_b = b.range(RangeRequest::default()).await.unwrap();
    let keys: Vec<_> = all_b.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/registry/x", "/registry/z"]);
    assert_eq!(all_b.items[0].value, Bytes::from_static(b"b"));
}

#[tokio::test]
async fn automatic_compaction_is_coordinated_through_etcd() {
    let cluster = start(1, false).await;
    let mut fast = options(&cluster, "/c");
    fast.compaction_interval = Duration::from_millis(300);
    // Two servers' stores compacting the same etcd: one wins each round, history goes.
    let one: Arc<dyn Store> = EtcdStore::connect(fast.clone()).await.unwrap();
    let two: Arc<dyn Store> = EtcdStore::connect(fast).await.unwrap();
    let first = one.create("/k", Bytes::from_static(b"1")).await.unwrap();
    let mut last = first;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        last = two
            .update("/k", Bytes::from_static(b"2"), last)
            .await
            .unwrap();
        let compacted = one.compacted_revision().await.unwrap();
        if compacted > first {
            assert!(compacted <= last);
            assert_eq!(two.compacted_revision().await.unwrap(), compacted);
            assert!(matches!(
                one.watch("", first).await,
                Err(Error::Compacted { .. })
            ));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no compaction within 15s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The latest value survives.
    assert_eq!(
        one.get("/k").await.unwrap().unwrap().value,
        Bytes::from_static(b"2")
    );
}

#[tokio::test]
async fn snapshots_stream_the_whole_database() {
    let cluster = start(1, false).await;
    let store = EtcdStore::connect(options(&cluster, "/s")).await.unwrap();
    for i in 0..50 {
        store
            .create(&format!("/k/{i}"), Bytes::from(vec![b'v'; 1024]))
            .await
            .unwrap();
    }
    assert_eq!(store.snapshot_format(), skiff_store::SnapshotFormat::Etcd);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let saving = tokio::spawn({
        let store = store.clone();
        async move { store.snapshot(tx).await }
    });
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk);
    }
    saving.await.unwrap().unwrap();
    // A bbolt file: larger than the data, and it contains the values.
    assert!(out.len() > 50 * 1024, "snapshot is {} bytes", out.len());
    let needle = vec![b'v'; 1024];
    assert!(out.windows(needle.len()).any(|w| w == needle.as_slice()));
}

#[tokio::test]
async fn ranges_larger_than_grpcs_default_message_limit() {
    let cluster = start(1, false).await;
    let store = EtcdStore::connect(options(&cluster, "/big")).await.unwrap();
    let value = Bytes::from(vec![b'x'; 1 << 20]);
    for i in 0..6 {
        store
            .create(&format!("/k/{i}"), value.clone())
            .await
            .unwrap();
    }
    let all = store.range(RangeRequest::default()).await.unwrap();
    assert_eq!(all.items.len(), 6, "6 MiB in one response");
}
