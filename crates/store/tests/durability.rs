//! Durability: what was acknowledged survives a clean close, a torn WAL tail, a checkpoint
//! with segment rotation, and a real `kill -9` of a process in the middle of writing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use skiff_store::embedded::{EmbeddedOptions, EmbeddedStore};
use skiff_store::{RangeRequest, Store};

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD_DIR";

async fn count(store: &EmbeddedStore, prefix: &str) -> usize {
    store
        .range(RangeRequest {
            prefix: prefix.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test]
async fn reopen_keeps_everything_and_revisions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let r = store.create("/a", Bytes::from_static(b"1")).await.unwrap();
        store
            .update("/a", Bytes::from_static(b"2"), r)
            .await
            .unwrap();
        store.create("/b", Bytes::from_static(b"b")).await.unwrap();
        let (_, last) = store.delete("/b", None).await.unwrap();
        store.close();
        last
    };
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), last);
    assert_eq!(
        store.get("/a").await.unwrap().unwrap().value,
        Bytes::from_static(b"2")
    );
    assert!(store.get("/b").await.unwrap().is_none());
    let next = store.create("/c", Bytes::from_static(b"c")).await.unwrap();
    assert_eq!(next, last + 1);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        for i in 0..10 {
            store
                .create(&format!("/t/{i}"), Bytes::from(vec![b'x'; 100]))
                .await
                .unwrap();
        }
        store.close();
    }
    // Cut the last record in half, as a crash in the middle of an append would.
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 50).unwrap();
    drop(file);
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(count(&store, "/t/").await, 9);
    // Appending after the cut works and survives another reopen.
    store
        .create("/t/new", Bytes::from_static(b"n"))
        .await
        .unwrap();
    store.close();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(count(&store, "/t/").await, 10);
}

#[tokio::test]
async fn checkpoints_rotate_segments_and_keep_data() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        checkpoint_bytes: 4096,
        ..EmbeddedOptions::default()
    };
    {
        let store = EmbeddedStore::open(dir.path(), options.clone()).unwrap();
        for i in 0..300 {
            store
                .create(&format!("/cp/{i:03}"), Bytes::from(vec![b'v'; 64]))
                .await
                .unwrap();
        }
        for i in 0..100 {
            store.delete(&format!("/cp/{i:03}"), None).await.unwrap();
        }
        store.close();
    }
    assert!(dir.path().join("snapshot").exists());
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("wal-"))
        .count();
    assert!(
        segments <= 2,
        "old segments are removed after a checkpoint ({segments})"
    );
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    assert_eq!(count(&store, "/cp/").await, 200);
    assert_eq!(store.current_revision().await.unwrap(), 400);
}

fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.into_iter().next().unwrap()
}

async fn write_ten(dir: &std::path::Path) {
    let store = EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap();
    for i in 0..10 {
        store
            .create(&format!("/t/{i}"), Bytes::from(vec![b'x'; 100]))
            .await
            .unwrap();
    }
    store.close();
}

#[tokio::test]
async fn zero_filled_space_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_ten(dir.path()).await;
    // The file grew but the data never landed: what a crash after extending it leaves.
    let segment = only_segment(dir.path());
    let mut data = std::fs::read(&segment).unwrap();
    data.extend_from_slice(&[0; 4096]);
    std::fs::write(&segment, &data).unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(count(&store, "/t/").await, 10);
    store
        .create("/t/next", Bytes::from_static(b"n"))
        .await
        .unwrap();
    store.close();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(count(&store, "/t/").await, 11);
}

#[tokio::test]
async fn a_damaged_record_in_the_middle_is_corruption_not_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_ten(dir.path()).await;
    let segment = only_segment(dir.path());
    let mut data = std::fs::read(&segment).unwrap();
    // Flip a byte inside the third record's value; seven intact records follow it.
    let record = data.len() / 10;
    data[2 * record + record / 2] ^= 0xff;
    std::fs::write(&segment, &data).unwrap();
    match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
        Err(skiff_store::Error::Corrupt { detail }) => {
            assert!(detail.contains("damaged record"), "{detail}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_data_directory_is_used_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert!(matches!(
        EmbeddedStore::open(dir.path(), EmbeddedOptions::default()),
        Err(skiff_store::Error::Unavailable { .. })
    ));
    store.close();
    let again = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    drop(again);
    // Dropping the last handle releases the directory as well.
    EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
}

#[tokio::test]
async fn compaction_and_history_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (r1, r2, r3) = {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let r1 = store
            .create("/h/a", Bytes::from_static(b"1"))
            .await
            .unwrap();
        let r2 = store
            .update("/h/a", Bytes::from_static(b"2"), r1)
            .await
            .unwrap();
        store.compact(r2).await.unwrap();
        let r3 = store
            .update("/h/a", Bytes::from_static(b"3"), r2)
            .await
            .unwrap();
        store.close();
        (r1, r2, r3)
    };
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), r2);
    assert!(matches!(
        store.watch("/h/", r1).await,
        Err(skiff_store::Error::Compacted { .. })
    ));
    // History above the compaction point was replayed from the log, previous values too.
    let mut watch = store.watch("/h/", r2).await.unwrap();
    let event = watch.events.recv().await.unwrap();
    assert_eq!(event.revision(), r3);
    assert_eq!(event.prev.unwrap().value, Bytes::from_static(b"2"));
}

#[tokio::test]
async fn history_is_compacted_automatically() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        compaction_interval: Duration::from_millis(100),
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    let r1 = store
        .create("/auto", Bytes::from_static(b"1"))
        .await
        .unwrap();
    // The first tick remembers the current revision, the second compacts to it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.compacted_revision().await.unwrap() < r1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction within 5s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store.get("/auto").await.unwrap().unwrap().value,
        Bytes::from_static(b"1")
    );
}

/// Child mode: write keys forever, printing each one once acknowledged.
fn crash_child(dir: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(
            std::path::Path::new(dir),
            EmbeddedOptions {
                checkpoint_bytes: 256 << 10,
                ..EmbeddedOptions::default()
            },
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for writer in 0..8 {
            let store = store.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{writer}-{i}");
                    store
                        .create(&key, Bytes::from(vec![b'v'; 200]))
                        .await
                        .unwrap();
                    if tx.send(key).is_err() {
                        return;
                    }
                }
            });
        }
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        while let Some(key) = rx.recv().await {
            writeln!(out, "{key}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        crash_child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_loses_no_acknowledged_write",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < 3000 {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("/crash/") => acked.push(line),
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill but not yet read still count.
    for line in lines.map_while(Result::ok) {
        if line.starts_with("/crash/") {
            acked.push(line);
        }
    }
    assert!(
        acked.len() >= 3000,
        "child acknowledged only {}",
        acked.len()
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let mut missing = Vec::new();
        for key in &acked {
            if store.get(key).await.unwrap().is_none() {
                missing.push(key.clone());
            }
        }
        assert!(
            missing.is_empty(),
            "lost {} acknowledged writes: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    });
}
