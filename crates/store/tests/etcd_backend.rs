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

/// A loopback TCP proxy in front of etcd whose connections can be frozen: bytes stop flowing
/// both ways while the sockets stay open, as on a channel that has stopped answering without
/// failing. Connections made after a freeze flow normally.
struct FreezingProxy {
    address: std::net::SocketAddr,
    connections: Arc<parking_lot::Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>>,
}

impl FreezingProxy {
    async fn start(upstream: &str) -> FreezingProxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections: Arc<parking_lot::Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>> =
            Arc::default();
        let registry = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
                registry.lock().push(Arc::clone(&frozen));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, Arc::clone(&frozen)));
                tokio::spawn(pump(server_read, client_write, frozen));
            }
        });
        FreezingProxy {
            address,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn freeze_existing(&self) {
        for frozen in self.connections.lock().iter() {
            frozen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Copy bytes until the connection freezes, then hold both sockets open forever.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if frozen.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if n == 0 || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_channel_that_stops_answering_is_dialled_again() {
    let cluster = start(1, false).await;
    let proxy = FreezingProxy::start(&cluster.endpoints()[0]).await;
    let store = EtcdStore::connect(EtcdOptions {
        endpoints: vec![proxy.url()],
        request_timeout: Duration::from_secs(2),
        ..options(&cluster, "/redial")
    })
    .await
    .unwrap();
    let created = store.create("/a", Bytes::from_static(b"1")).await.unwrap();
    let mut old_watch = store.watch("", created).await.unwrap();

    proxy.freeze_existing();
    let frozen_at = tokio::time::Instant::now();
    // Nothing answers and nothing fails: the request waits out its timeout...
    match store.get("/a").await {
        Err(Error::Unavailable { reason }) => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // ...and the store dials a new channel, so the next requests are answered long before
    // HTTP/2 keep-alive (10 s, then 5 s for the answer) could notice the dead one.
    let value = loop {
        match store.get("/a").await {
            Ok(found) => break found.unwrap().value,
            Err(e) => assert!(
                frozen_at.elapsed() < Duration::from_secs(8),
                "still unanswered after {:?}: {e}",
                frozen_at.elapsed()
            ),
        }
    };
    assert_eq!(value, Bytes::from_static(b"1"));
    assert!(frozen_at.elapsed() < Duration::from_secs(8));

    // The watch on the frozen channel ended, so its client re-watches, and the new watch
    // sees writes.
    let ended = tokio::time::timeout(Duration::from_secs(5), old_watch.events.recv()).await;
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    let mut new_watch = store.watch("", created).await.unwrap();
    let written = store.create("/b", Bytes::from_static(b"2")).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), new_watch.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.kv.key.as_str(), event.kv.mod_revision),
        ("/b", written)
    );
}
