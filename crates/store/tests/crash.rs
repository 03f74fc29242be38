//! Tests as specifications, on both backends:
//!
//! - **Crash**: concurrent writers create, update (compare-and-swap) and delete their keys
//!   while the process holding the data is killed with SIGKILL — the embedded store's own
//!   process, or the etcd server. After a restart every acknowledged write is there, and no
//!   phantom: each key holds its last acknowledged state or, if an operation on it was in
//!   flight, that operation's result; never anything else.
//! - **Linearizability**: concurrent clients' gets and compare-and-swaps on a few keys are
//!   recorded with their start and end times, and a small Wing & Gong checker searches for a
//!   sequential order consistent with real time and with a register's semantics.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_store::embedded::{EmbeddedOptions, EmbeddedStore};
use skiff_store::etcd::{EtcdOptions, EtcdStore};
use skiff_store::{Error, Revision, Store};
use skiff_testing::etcd::EtcdCluster;

// ---------------------------------------------------------------------------------------
// Crash tests

const CHILD_ENV: &str = "SKIFF_STORE_CRASH2_CHILD_DIR";
const WRITERS: usize = 6;
const KEYS_PER_WRITER: usize = 8;

/// What a writer reports: an operation about to be sent, or acknowledged. `None` is a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Try(String, Option<String>),
    Ack(String, Option<String>),
}

impl Report {
    fn line(&self) -> String {
        let (tag, key, value) = match self {
            Report::Try(k, v) => ("T", k, v),
            Report::Ack(k, v) => ("A", k, v),
        };
        format!("{tag} {key} {}", value.as_deref().unwrap_or("-"))
    }

    fn parse(line: &str) -> Option<Report> {
        let mut parts = line.split(' ');
        let (tag, key, value) = (parts.next()?, parts.next()?, parts.next()?);
        let value = (value != "-").then(|| value.to_owned());
        match tag {
            "T" => Some(Report::Try(key.to_owned(), value)),
            "A" => Some(Report::Ack(key.to_owned(), value)),
            _ => None,
        }
    }
}

/// One writer: cycles create → update → update → delete over its own keys, each step a
/// compare-and-swap on the revision the previous step returned, reporting before and after.
/// Stops at the first error (its outcome is unknown).
async fn writer(store: Arc<dyn Store>, w: usize, report: impl Fn(Report)) {
    let mut revisions: Vec<Option<Revision>> = vec![None; KEYS_PER_WRITER];
    for step in 0.. {
        let k = step % KEYS_PER_WRITER;
        let key = format!("/crash/{w}/{k}");
        let value = format!("{w}.{k}.{step}");
        let result = match (step / KEYS_PER_WRITER) % 4 {
            0 => {
                report(Report::Try(key.clone(), Some(value.clone())));
                store
                    .create(&key, Bytes::from(value.clone()))
                    .await
                    .map(Some)
            }
            1 | 2 => {
                report(Report::Try(key.clone(), Some(value.clone())));
                let expected = revisions[k].expect("written before");
                store
                    .update(&key, Bytes::from(value.clone()), expected)
                    .await
                    .map(Some)
            }
            _ => {
                report(Report::Try(key.clone(), None));
                store.delete(&key, revisions[k]).await.map(|_| None)
            }
        };
        match result {
            Ok(revision) => {
                revisions[k] = revision;
                let acked = revision.map(|_| value);
                report(Report::Ack(key, acked));
            }
            Err(_) => return,
        }
    }
}

/// Check the store against the reports: acknowledged states are there, nothing else is.
async fn verify(store: &dyn Store, reports: &[Report]) -> usize {
    // key → (last acknowledged state, state of an operation still in flight)
    let mut expected: BTreeMap<String, (Option<String>, Option<Option<String>>)> = BTreeMap::new();
    let mut acks = 0;
    for report in reports {
        match report {
            Report::Try(key, value) => {
                expected.entry(key.clone()).or_insert((None, None)).1 = Some(value.clone());
            }
            Report::Ack(key, value) => {
                acks += 1;
                let entry = expected.entry(key.clone()).or_insert((None, None));
                *entry = (value.clone(), None);
            }
        }
    }
    for (key, (acked, in_flight)) in &expected {
        let stored = store
            .get(key)
            .await
            .unwrap()
            .map(|kv| String::from_utf8(kv.value.to_vec()).unwrap());
        let allowed = stored == *acked || in_flight.as_ref() == Some(&stored);
        assert!(
            allowed,
            "{key}: stored {stored:?}, acknowledged {acked:?}, in flight {in_flight:?}"
        );
    }
    // No key appears that no writer ever wrote.
    let all = store
        .range(skiff_store::RangeRequest {
            prefix: "/crash/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for kv in &all.items {
        assert!(expected.contains_key(&kv.key), "phantom key {}", kv.key);
    }
    acks
}

/// Child mode: run the writers on an embedded store in this process, reporting on stdout.
fn crash_child(dir: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = EmbeddedOptions {
            checkpoint_bytes: 64 << 10,
            ..EmbeddedOptions::default()
        };
        let store: Arc<dyn Store> =
            EmbeddedStore::open(std::path::Path::new(dir), options).unwrap();
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                writer(store, w, |r| {
                    // Written to the pipe before the operation is sent (and after it is
                    // acknowledged), so the parent knows everything that may have happened.
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", r.line()).unwrap();
                    out.flush().unwrap();
                })
                .await
            }));
        }
        for w in writers {
            let _ = w.await;
        }
    });
}

#[test]
fn embedded_kill_9_under_concurrent_writes_keeps_acks_and_adds_no_phantoms() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        crash_child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded_kill_9_under_concurrent_writes_keeps_acks_and_adds_no_phantoms",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reports = Vec::new();
    let mut acks = 0;
    while acks < 2000 {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(report) = Report::parse(&line) {
                    acks += usize::from(matches!(report, Report::Ack(..)));
                    reports.push(report);
                }
            }
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    // Reports printed before the kill but not yet read still count.
    reports.extend(
        lines
            .map_while(Result::ok)
            .filter_map(|l| Report::parse(&l)),
    );
    assert!(acks >= 2000, "the child acknowledged only {acks}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let verified = verify(store.as_ref(), &reports).await;
        assert!(verified >= 2000);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_kill_9_under_concurrent_writes_keeps_acks_and_adds_no_phantoms() {
    let mut cluster = tokio::task::spawn_blocking(EtcdCluster::start)
        .await
        .unwrap()
        .unwrap();
    let options = EtcdOptions {
        endpoints: cluster.endpoints(),
        prefix: "/c".into(),
        compaction_interval: Duration::ZERO,
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    let store: Arc<dyn Store> = EtcdStore::connect(options.clone()).await.unwrap();
    let reports = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, reports, acks) = (store.clone(), reports.clone(), acks.clone());
        writers.push(tokio::spawn(async move {
            writer(store, w, move |r| {
                if matches!(r, Report::Ack(..)) {
                    acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                reports.lock().push(r);
            })
            .await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.load(std::sync::atomic::Ordering::Relaxed) < 600 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(0).unwrap(); // SIGKILL the etcd server mid-stream
    for w in writers {
        w.await.unwrap(); // each stops at its first failed (unknown) operation
    }
    let reports = reports.lock().clone();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(0).unwrap();
        cluster
    })
    .await
    .unwrap();
    let store = EtcdStore::connect(options).await.unwrap();
    let verified = verify(store.as_ref(), &reports).await;
    assert!(
        verified >= 600,
        "only {verified} acknowledged writes before the kill"
    );
    drop(cluster);
}

// ---------------------------------------------------------------------------------------
// Linearizability

/// A register's state: the value and its mod revision (`None` when absent).
type State = Option<(String, Revision)>;

#[derive(Debug, Clone)]
enum Call {
    Get,
    Cas { expected: Revision, value: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Read(State),
    Written(Revision),
    Conflict(Revision),
}

#[derive(Debug, Clone)]
struct Op {
    start: Instant,
    end: Instant,
    call: Call,
    outcome: Outcome,
}

/// Apply `op` to `state` if the register could have answered it so; the new state.
fn step(state: &State, op: &Op) -> Option<State> {
    let current = state.as_ref().map_or(0, |(_, r)| *r);
    match (&op.call, &op.outcome) {
        (Call::Get, Outcome::Read(read)) => (read == state).then(|| state.clone()),
        (Call::Cas { expected, value }, Outcome::Written(revision)) => {
            (state.is_some() && current == *expected && *revision > current)
                .then(|| Some((value.clone(), *revision)))
        }
        (Call::Cas { expected, .. }, Outcome::Conflict(actual)) => {
            (current != *expected && *actual == current).then(|| state.clone())
        }
        _ => None,
    }
}

/// Wing & Gong's search: is there an order of `ops`, respecting real time (an op that ended
/// before another started comes first), in which every answer is the register's?
fn linearizable(initial: State, ops: &[Op]) -> bool {
    assert!(
        ops.len() <= 128,
        "the checker handles up to 128 operations per key"
    );
    fn search(ops: &[Op], done: u128, state: State, seen: &mut HashSet<(u128, State)>) -> bool {
        if done.count_ones() as usize == ops.len() {
            return true;
        }
        if !seen.insert((done, state.clone())) {
            return false;
        }
        let pending = |i: usize| done & (1 << i) == 0;
        // Whatever goes next must have started before every pending op ended.
        let horizon = (0..ops.len())
            .filter(|&i| pending(i))
            .map(|i| ops[i].end)
            .min()
            .expect("something is pending");
        for i in (0..ops.len()).filter(|&i| pending(i)) {
            if ops[i].start > horizon {
                continue;
            }
            if let Some(next) = step(&state, &ops[i])
                && search(ops, done | (1 << i), next, seen)
            {
                return true;
            }
        }
        false
    }
    search(ops, 0, initial, &mut HashSet::new())
}

#[test]
fn the_checker_rejects_a_stale_read_and_accepts_overlap() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let initial: State = Some(("a".into(), 1));
    let write = Op {
        start: at(0),
        end: at(10),
        call: Call::Cas {
            expected: 1,
            value: "b".into(),
        },
        outcome: Outcome::Written(5),
    };
    let stale_read = Op {
        start: at(20),
        end: at(30),
        call: Call::Get,
        outcome: Outcome::Read(Some(("a".into(), 1))),
    };
    assert!(!linearizable(
        initial.clone(),
        &[write.clone(), stale_read.clone()]
    ));
    // The same read overlapping the write may see either value.
    let overlapping = Op {
        start: at(5),
        ..stale_read.clone()
    };
    assert!(linearizable(initial.clone(), &[write.clone(), overlapping]));
    // Two writes from the same revision cannot both win.
    let rival = Op {
        outcome: Outcome::Written(6),
        ..write.clone()
    };
    assert!(!linearizable(initial.clone(), &[write.clone(), rival]));
    let loser = Op {
        outcome: Outcome::Conflict(5),
        start: at(11),
        end: at(12),
        ..write.clone()
    };
    assert!(linearizable(initial, &[write, loser]));
}

async fn record_history(store: Arc<dyn Store>) {
    const KEYS: usize = 3;
    const CLIENTS: usize = 4;
    const OPS: usize = 24;
    let mut initial = Vec::new();
    for k in 0..KEYS {
        let revision = store
            .create(&format!("/lin/{k}"), Bytes::from("init"))
            .await
            .unwrap();
        initial.push(Some(("init".to_owned(), revision)));
    }
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let store = store.clone();
        clients.push(tokio::spawn(async move {
            let mut history: Vec<(usize, Op)> = Vec::new();
            let mut known = [0; KEYS];
            let mut seed = (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = |n: usize| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n as u64) as usize
            };
            for i in 0..OPS {
                let k = next(KEYS);
                let key = format!("/lin/{k}");
                let start = Instant::now();
                let (call, outcome) = if next(2) == 0 {
                    let read = store.get(&key).await.unwrap();
                    let state = read.map(|kv| {
                        (
                            String::from_utf8(kv.value.to_vec()).unwrap(),
                            kv.mod_revision,
                        )
                    });
                    if let Some((_, r)) = &state {
                        known[k] = *r;
                    }
                    (Call::Get, Outcome::Read(state))
                } else {
                    let value = format!("c{c}-{i}");
                    let expected = known[k];
                    let outcome = match store
                        .update(&key, Bytes::from(value.clone()), expected)
                        .await
                    {
                        Ok(r) => {
                            known[k] = r;
                            Outcome::Written(r)
                        }
                        Err(Error::Conflict { actual, .. }) => {
                            known[k] = actual;
                            Outcome::Conflict(actual)
                        }
                        Err(e) => panic!("unexpected store error {e}"),
                    };
                    (Call::Cas { expected, value }, outcome)
                };
                history.push((
                    k,
                    Op {
                        start,
                        end: Instant::now(),
                        call,
                        outcome,
                    },
                ));
            }
            history
        }));
    }
    let mut per_key: Vec<Vec<Op>> = vec![Vec::new(); KEYS];
    for client in clients {
        for (k, op) in client.await.unwrap() {
            per_key[k].push(op);
        }
    }
    for (k, ops) in per_key.iter().enumerate() {
        assert!(
            linearizable(initial[k].clone(), ops),
            "history of /lin/{k} is not linearizable: {ops:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_histories_are_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    record_history(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_histories_are_linearizable() {
    let cluster = tokio::task::spawn_blocking(EtcdCluster::start)
        .await
        .unwrap()
        .unwrap();
    let store = EtcdStore::connect(EtcdOptions {
        endpoints: cluster.endpoints(),
        compaction_interval: Duration::ZERO,
        ..EtcdOptions::default()
    })
    .await
    .unwrap();
    record_history(store).await;
}
