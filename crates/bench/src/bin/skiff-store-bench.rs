//! `skiff-store-bench`: the embedded store and Debian's etcd side by side, both driven through
//! the same `Store` trait (etcd through its v3 gRPC API, the backend `skiff server --store
//! etcd://` uses), with data directories on the same disk. Prints Markdown tables.
//!
//! Workloads: writes (creates of 1 KiB values, each acknowledged only once durable) at
//! several concurrency levels with p50/p99 latency; full range reads of 10k keys; watch
//! fan-out; the write latency while a compaction runs; database size after many updates to a
//! fixed key set (compacting as kube-apiserver would); recovery time after `kill -9`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use skiff_store::embedded::{EmbeddedOptions, EmbeddedStore};
use skiff_store::etcd::{EtcdOptions, EtcdStore};
use skiff_store::{RangeRequest, Store};
use skiff_testing::etcd::EtcdCluster;

/// Benchmark the embedded store against etcd.
#[derive(Debug, Parser)]
#[command(name = "skiff-store-bench")]
struct Args {
    /// Seconds each timed workload runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Concurrent writers, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    writers: Vec<usize>,
    /// Keys for the range workload and the churn key set.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Watchers in the fan-out workload.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Updates in the churn workload (spread over `keys` keys).
    #[arg(long, default_value_t = 1_000_000)]
    churn_updates: usize,
    /// Only this backend (`embedded` or `etcd`).
    #[arg(long)]
    only: Option<String>,
    /// Where data directories go (default: the system temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: run as the child that is killed in the recovery workload.
    #[arg(long, hide = true)]
    recovery_child: Option<PathBuf>,
}

#[derive(Default)]
struct Stats {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies[((self.latencies.len() - 1) as f64 * p).round() as usize]
    }
    fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Run `op(worker, i)` from `clients` tasks until `duration` passes, timing each call.
async fn drive<F, Fut>(clients: usize, duration: Duration, op: F) -> anyhow::Result<Stats>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(worker, i).await?;
                latencies.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Stats {
        ops: latencies.len() as u64,
        elapsed,
        latencies,
    })
}

/// Create `count` keys `prefix{i:08}` from 64 concurrent writers.
async fn fill(
    store: &Arc<dyn Store>,
    prefix: &str,
    count: usize,
    value: &Bytes,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, next, value, prefix) = (
            store.clone(),
            next.clone(),
            value.clone(),
            prefix.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                store
                    .create(&format!("{prefix}{i:08}"), value.clone())
                    .await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// One backend under test.
enum Backend {
    Embedded { dir: PathBuf },
    Etcd { cluster: EtcdCluster },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Embedded { .. } => "embedded",
            Backend::Etcd { .. } => "etcd 3.4",
        }
    }

    fn data_dir(&self) -> PathBuf {
        match self {
            Backend::Embedded { dir } => dir.clone(),
            Backend::Etcd { cluster } => cluster.dir().join("m0"),
        }
    }

    async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self {
            Backend::Embedded { dir } => {
                let options = EmbeddedOptions {
                    compaction_interval: Duration::ZERO,
                    ..EmbeddedOptions::default()
                };
                EmbeddedStore::open(dir, options)?
            }
            Backend::Etcd { cluster } => {
                EtcdStore::connect(EtcdOptions {
                    endpoints: cluster.endpoints(),
                    compaction_interval: Duration::ZERO,
                    ..EtcdOptions::default()
                })
                .await?
            }
        })
    }
}

/// Results of one backend, keyed by row name.
#[derive(Default)]
struct Results {
    rows: Vec<(String, String)>,
}

impl Results {
    fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.rows.push((name.into(), value.into()));
    }
}

async fn run(args: &Args, backend: &Backend) -> anyhow::Result<Results> {
    let mut out = Results::default();
    let store = backend.open().await?;
    let value = Bytes::from(vec![b'v'; args.value_size]);
    let duration = Duration::from_secs_f64(args.seconds);

    for &writers in &args.writers {
        let (s, v) = (store.clone(), value.clone());
        let stats = drive(writers, duration, move |w, i| {
            let (s, v) = (s.clone(), v.clone());
            async move {
                s.create(&format!("/bench/w{writers}/{w}/{i}"), v).await?;
                Ok(())
            }
        })
        .await?;
        out.add(
            format!("writes, {writers} writer(s): ops/s · p50 · p99 ms"),
            format!(
                "{:.0} · {} · {}",
                stats.rate(),
                ms(stats.pct(0.5)),
                ms(stats.pct(0.99))
            ),
        );
        eprintln!("{}: {writers} writers done", backend.name());
    }

    fill(&store, "/bench/range/", args.keys, &value).await?;
    let (s, keys) = (store.clone(), args.keys);
    let stats = drive(1, duration, move |_, _| {
        let s = s.clone();
        async move {
            let page = s
                .range(RangeRequest {
                    prefix: "/bench/range/".into(),
                    ..Default::default()
                })
                .await?;
            if page.items.len() != keys {
                bail!("range returned {} items", page.items.len());
            }
            Ok(())
        }
    })
    .await?;
    out.add(
        format!("range of {} keys: reads/s · p50 · p99 ms", args.keys),
        format!(
            "{:.1} · {} · {}",
            stats.rate(),
            ms(stats.pct(0.5)),
            ms(stats.pct(0.99))
        ),
    );
    let (s, keys) = (store.clone(), args.keys);
    let stats = drive(16, duration, move |w, i| {
        let s = s.clone();
        async move {
            let key = format!(
                "/bench/range/{:08}",
                (w as u64 * 7919 + i * 104_729) % keys as u64
            );
            s.get(&key).await?.context("a filled key is missing")?;
            Ok(())
        }
    })
    .await?;
    out.add(
        "gets, 16 readers: ops/s · p50 · p99 ms",
        format!(
            "{:.0} · {} · {}",
            stats.rate(),
            ms(stats.pct(0.5)),
            ms(stats.pct(0.99))
        ),
    );
    eprintln!("{}: reads done", backend.name());

    // Watch fan-out: every watcher must see every event.
    let events = 2000;
    let mut watches = Vec::new();
    for _ in 0..args.watchers {
        watches.push(store.watch("/bench/fan/", 0).await?);
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut readers = Vec::new();
    for mut watch in watches {
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            let mut n = 0;
            while n < events {
                match tokio::time::timeout(Duration::from_secs(30), watch.events.recv()).await {
                    Ok(Some(_)) => n += 1,
                    _ => bail!("a watcher stopped after {n} events"),
                }
            }
            delivered.fetch_add(n as u64, Ordering::Relaxed);
            anyhow::Ok(())
        }));
    }
    fill(&store, "/bench/fan/", events, &value).await?;
    for reader in readers {
        reader.await??;
    }
    let elapsed = started.elapsed();
    out.add(
        format!(
            "watch fan-out, {} watchers × {events} events: events delivered/s",
            args.watchers
        ),
        format!(
            "{:.0}",
            delivered.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
        ),
    );
    eprintln!("{}: watch done", backend.name());

    // Churn: many updates to a fixed key set, compacting every 10% like an apiserver would
    // every few minutes; with 256 writers each owning a slice of the keys.
    let churn_keys = args.keys;
    fill(&store, "/bench/churn/", churn_keys, &value).await?;
    let size_before = dir_size(&backend.data_dir());
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let writers = 256.min(churn_keys);
    let per_writer = args.churn_updates / writers;
    let compactor = {
        let (store, done, total) = (store.clone(), done.clone(), per_writer * writers);
        tokio::spawn(async move {
            let mut next = total / 10;
            let mut pauses = Vec::new();
            while done.load(Ordering::Relaxed) < total {
                if done.load(Ordering::Relaxed) >= next {
                    next += total / 10;
                    let t = Instant::now();
                    let revision = store.current_revision().await?;
                    store.compact(revision).await?;
                    pauses.push(t.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(pauses)
        })
    };
    for w in 0..writers {
        let (store, value, done) = (store.clone(), value.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (w..churn_keys).step_by(writers).collect();
            let mut revisions = Vec::with_capacity(mine.len());
            for &k in &mine {
                let kv = store
                    .get(&format!("/bench/churn/{k:08}"))
                    .await?
                    .context("filled")?;
                revisions.push(kv.mod_revision);
            }
            let mut latencies = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let slot = i % mine.len();
                let key = format!("/bench/churn/{:08}", mine[slot]);
                let t = Instant::now();
                revisions[slot] = store.update(&key, value.clone(), revisions[slot]).await?;
                latencies.push(t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut churn = Stats::default();
    for task in tasks {
        churn.latencies.extend(task.await??);
    }
    churn.elapsed = started.elapsed();
    churn.ops = churn.latencies.len() as u64;
    churn.latencies.sort_unstable();
    let mut pauses = compactor.await??;
    pauses.sort_unstable();
    // A final compaction, then let background cleanup (etcd's physical compaction, the
    // embedded checkpoint) settle before measuring the disk.
    let revision = store.current_revision().await?;
    store.compact(revision).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let size_after = dir_size(&backend.data_dir());
    out.add(
        format!(
            "{} updates to {} keys, 256 writers: updates/s · p99 · max ms",
            churn.ops, churn_keys
        ),
        format!(
            "{:.0} · {} · {}",
            churn.rate(),
            ms(churn.pct(0.99)),
            ms(churn.max())
        ),
    );
    out.add(
        "compaction call during churn: median · max ms",
        format!(
            "{} · {}",
            ms(pauses.get(pauses.len() / 2).copied().unwrap_or_default()),
            ms(pauses.last().copied().unwrap_or_default())
        ),
    );
    out.add(
        "data on disk: after fill · after churn",
        format!("{} · {}", mib(size_before), mib(size_after)),
    );
    eprintln!("{}: churn done", backend.name());
    drop(store);
    Ok(out)
}

/// Child mode of the recovery workload: open the store, write, say so, wait to be killed.
async fn recovery_child(dir: &Path) -> anyhow::Result<()> {
    let store = EmbeddedStore::open(dir, EmbeddedOptions::default())?;
    for i in 0..1000 {
        store
            .create(&format!("/bench/recovery/{i}"), Bytes::from_static(b"x"))
            .await?;
    }
    println!("ready");
    tokio::time::sleep(Duration::from_secs(600)).await;
    Ok(())
}

/// Kill the process holding the data with SIGKILL and time until the store answers again.
async fn recovery(backend: &mut Backend) -> anyhow::Result<Duration> {
    match backend {
        Backend::Embedded { dir } => {
            use std::io::BufRead;
            let mut child = std::process::Command::new(std::env::current_exe()?)
                .arg("--recovery-child")
                .arg(&*dir)
                .stdout(std::process::Stdio::piped())
                .spawn()?;
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
            if line.trim() != "ready" {
                bail!("the recovery child failed");
            }
            child.kill()?;
            child.wait()?;
            let t = Instant::now();
            let store = EmbeddedStore::open(dir, EmbeddedOptions::default())?;
            store
                .get("/bench/recovery/999")
                .await?
                .context("recovered")?;
            Ok(t.elapsed())
        }
        Backend::Etcd { cluster } => {
            cluster.kill(0)?;
            let t = Instant::now();
            cluster.restart(0)?;
            let store = EtcdStore::connect(EtcdOptions {
                endpoints: cluster.endpoints(),
                compaction_interval: Duration::ZERO,
                ..EtcdOptions::default()
            })
            .await?;
            store
                .get("/bench/churn/00000000")
                .await?
                .context("recovered")?;
            Ok(t.elapsed())
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.recovery_child {
        return recovery_child(dir).await;
    }
    let base = match &args.dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("skiff-store-bench-")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new()
            .prefix("skiff-store-bench-")
            .tempdir()?,
    };
    let mut backends = Vec::new();
    if args.only.as_deref() != Some("etcd") {
        backends.push(Backend::Embedded {
            dir: base.path().join("embedded"),
        });
    }
    if args.only.as_deref() != Some("embedded") {
        let cluster = tokio::task::spawn_blocking(EtcdCluster::start)
            .await?
            .context("starting etcd (apt-get install etcd-server)")?;
        backends.push(Backend::Etcd { cluster });
    }
    let mut results = Vec::new();
    for backend in &mut backends {
        let mut r = run(&args, backend).await?;
        let recovered = recovery(backend).await?;
        r.add(
            "recovery after kill -9 (until the first read answers) ms",
            ms(recovered),
        );
        results.push((backend.name(), r));
    }
    println!(
        "value size {} B; {} s per timed workload; data on {}",
        args.value_size,
        args.seconds,
        base.path().display()
    );
    println!();
    let names: Vec<&str> = results.iter().map(|(n, _)| *n).collect();
    println!("| workload | {} |", names.join(" | "));
    println!("|---|{}|", vec!["---"; names.len()].join("|"));
    for (i, (row, _)) in results[0].1.rows.iter().enumerate() {
        let cells: Vec<&str> = results.iter().map(|(_, r)| r.rows[i].1.as_str()).collect();
        println!("| {row} | {} |", cells.join(" | "));
    }
    Ok(())
}
