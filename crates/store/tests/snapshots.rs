//! Embedded-store snapshots: consistent at one revision while writes and compactions go on,
//! restorable into a fresh data directory with the revision raised and history marked
//! compacted, and refused when damaged.

use std::sync::Arc;

use bytes::Bytes;
use skiff_store::embedded::{self, EmbeddedOptions, EmbeddedStore};
use skiff_store::{Error, RangeRequest, Store};

async fn collect(store: Arc<EmbeddedStore>, pause_after_first: impl AsyncFnOnce()) -> Vec<u8> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let taking = tokio::spawn(async move { store.snapshot(tx).await });
    let mut out = Vec::new();
    out.extend_from_slice(&rx.recv().await.expect("a first chunk"));
    pause_after_first().await;
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk);
    }
    taking.await.unwrap().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_consistent_under_writes_and_compaction_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("db"), EmbeddedOptions::default()).unwrap();
    let value = Bytes::from(vec![b'v'; 1024]);
    let mut revisions = Vec::new();
    for i in 0..3000 {
        revisions.push(
            store
                .create(&format!("/k/{i:05}"), value.clone())
                .await
                .unwrap(),
        );
    }
    let expected = store.range(RangeRequest::default()).await.unwrap();

    // Between chunks: rewrite and delete keys the snapshot has not reached yet, and compact
    // everything. The snapshot still shows the state at its revision.
    let writer = store.clone();
    let snapshot = collect(store.clone(), async move || {
        for i in (2000..3000).step_by(2) {
            let key = format!("/k/{i:05}");
            let kv = writer.get(&key).await.unwrap().unwrap();
            writer
                .update(&key, Bytes::from_static(b"new"), kv.mod_revision)
                .await
                .unwrap();
            writer
                .delete(&format!("/k/{:05}", i + 1), None)
                .await
                .unwrap();
        }
        let now = writer.current_revision().await.unwrap();
        writer.compact(now).await.unwrap();
    })
    .await;
    assert!(embedded::is_snapshot(&snapshot));
    let file = dir.path().join("snap");
    std::fs::write(&file, &snapshot).unwrap();
    let summary = embedded::verify_snapshot(&file).unwrap();
    assert_eq!(summary.revision, expected.revision);
    assert_eq!(summary.keys, 3000);
    // Compaction was held back to the snapshot's revision while it ran, and goes on after.
    let now = store.current_revision().await.unwrap();
    store.compact(now).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), now);

    let restored_dir = dir.path().join("restored");
    let restored = embedded::restore(&file, &restored_dir, 100).unwrap();
    assert_eq!(restored.revision, expected.revision + 100);
    let copy = EmbeddedStore::open(&restored_dir, EmbeddedOptions::default()).unwrap();
    let items = copy.range(RangeRequest::default()).await.unwrap();
    assert_eq!(
        items.items, expected.items,
        "every key with its value and revisions"
    );
    assert_eq!(
        copy.current_revision().await.unwrap(),
        expected.revision + 100
    );
    assert!(matches!(
        copy.watch("", expected.revision).await,
        Err(Error::Compacted { .. })
    ));
    let next = copy
        .create("/after", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(next, expected.revision + 101);

    // A second restore into the same directory is refused and changes nothing.
    drop(copy);
    assert!(embedded::restore(&file, &restored_dir, 100).is_err());
    let reopened = EmbeddedStore::open(&restored_dir, EmbeddedOptions::default()).unwrap();
    assert!(reopened.get("/after").await.unwrap().is_some());

    // Damage anywhere is refused.
    for cut in [1, snapshot.len() / 2, snapshot.len() - 1] {
        let damaged = dir.path().join(format!("damaged-{cut}"));
        let mut bytes = snapshot.clone();
        bytes[cut] ^= 0x55;
        std::fs::write(&damaged, &bytes).unwrap();
        assert!(matches!(
            embedded::verify_snapshot(&damaged),
            Err(Error::Corrupt { .. })
        ));
        assert!(embedded::restore(&damaged, &dir.path().join(format!("r-{cut}")), 0).is_err());
    }
}
