//! `skiff-scheduler-cycles`: upstream scheduler_perf's workloads through the scheduling cycle
//! alone — Skiff's default profile, cache and snapshot in-process, no API server, no binding
//! calls — to see what the scheduler itself costs per pod and where (snapshot update, PreFilter
//! + Filter, PreScore + Score, assume + the binding's confirmation).
//!
//! Nodes are built like `skiff hollow-nodes` registers them; initial pods are scheduled the same
//! way (untimed), then the measured pods are timed one cycle each. Times are this thread's CPU
//! time, so other processes' load on the machine does not change them much (wall-clock pods/s is
//! printed beside). PreemptionBasic is left out: its PostFilter evicts through the API server,
//! which `skiff-scheduler-bench` exercises. Run with `--scale 0.1` under
//! `valgrind --tool=callgrind` for instruction counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::{Node, Pod};
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::json;
use skiff_bench::scheduler_perf::{
    NODE_CPU, NODE_MEMORY, NODE_PODS, PodSet, Workload, select, workloads,
};
use skiff_scheduler::SchedulerConfiguration;
use skiff_scheduler::cache::{Cache, Snapshot};
use skiff_scheduler::framework::{CycleState, Framework, Handle};
use skiff_scheduler::nodeinfo::PodInfo;
use skiff_scheduler::registry::Registry;
use skiff_scheduler::scheduler::{Failure, find_nodes_that_fit, prioritize};

// The allocator of the `skiff` binary, so allocation costs are the scheduler's real ones.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Upstream scheduler_perf workloads through Skiff's scheduling cycle alone")]
struct Args {
    /// Workloads to run (default: all but PreemptionBasic).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Multiply node and pod counts (e.g. 0.1 under callgrind).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// `percentageOfNodesToScore` (0: upstream's adaptive default).
    #[arg(long, default_value_t = 0)]
    percentage: i32,
}

/// This thread's CPU time so far.
fn cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |u| {
        let (user, sys) = (u.user_time(), u.system_time());
        Duration::new(user.tv_sec() as u64, user.tv_usec() as u32 * 1000)
            + Duration::new(sys.tv_sec() as u64, sys.tv_usec() as u32 * 1000)
    })
}

fn node(name: &str, label: Option<&str>) -> Result<Node> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
    ]);
    if let Some((k, v)) = label.and_then(|l| l.split_once('=')) {
        labels.insert(k.to_owned(), v.to_owned());
    }
    let capacity = json!({ "cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS });
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "labels": labels },
        "status": { "capacity": capacity, "allocatable": capacity,
                    "conditions": [{ "type": "Ready", "status": "True" }] },
    }))?)
}

/// A pod of `set` as the API server would hand it to the scheduler (namespace, uid, priority
/// resolved from its class).
fn pod(set: &PodSet, name: &str) -> Result<Pod> {
    let mut pod: Pod = serde_json::from_value((set.template)(name))?;
    pod.metadata.namespace = Some(set.namespace.to_owned());
    pod.metadata.uid = Some(format!("{}-{name}", set.namespace));
    pod.metadata.resource_version = Some("1".into());
    if let Some(spec) = pod.spec.as_mut() {
        let high = spec.priority_class_name.as_deref() == Some("bench-high");
        spec.priority = Some(if high { 10 } else { 0 });
    }
    Ok(pod)
}

/// CPU time per phase, summed over the timed cycles.
#[derive(Default)]
struct Phases {
    snapshot: Duration,
    filter: Duration,
    score: Duration,
    assume: Duration,
}

struct Loop {
    framework: Framework,
    cache: Cache,
    snapshot: Snapshot,
    next_start: usize,
    percentage: i32,
}

impl Loop {
    /// One scheduling cycle for `pod`, its binding confirmed at once; the node chosen.
    fn schedule(&mut self, pod: Pod, phases: &mut Phases) -> Result<String> {
        let t0 = cpu();
        self.cache.update_snapshot(&mut self.snapshot);
        let info = Arc::new(PodInfo::new(Arc::new(pod.clone())));
        let mut state = CycleState::new();
        let t1 = cpu();
        let feasible = match find_nodes_that_fit(
            &self.framework,
            &mut state,
            &info,
            &self.snapshot,
            self.percentage,
            &mut self.next_start,
        ) {
            Ok(f) => f,
            Err(Failure::Fit(fit)) => bail!("{}", fit.message()),
            Err(Failure::Status(s)) => bail!("{}", s.message()),
        };
        let t2 = cpu();
        let best = prioritize(
            &self.framework,
            &mut state,
            &info,
            &feasible.nodes,
            &self.snapshot,
        )
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        let host = feasible.nodes[best].name.clone();
        let t3 = cpu();
        self.cache
            .assume_pod(info, &host)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut bound = pod;
        if let Some(spec) = bound.spec.as_mut() {
            spec.node_name = Some(host.clone());
        }
        bound.metadata.resource_version = Some("2".into());
        self.cache.add_pod(Arc::new(bound));
        let t4 = cpu();
        phases.snapshot += t1 - t0;
        phases.filter += t2 - t1;
        phases.score += t3 - t2;
        phases.assume += t4 - t3;
        Ok(host)
    }
}

fn run(w: &Workload, args: &Args) -> Result<()> {
    if w.priority_classes {
        bail!("preemption evicts through the API server: run it with skiff-scheduler-bench");
    }
    let config = SchedulerConfiguration::default();
    let framework = Framework::new(
        &config.profiles()[0],
        &Registry::in_tree(),
        Handle::for_tests(),
    )
    .map_err(|p| anyhow::anyhow!("default profile: {p:?}"))?;
    let mut l = Loop {
        framework,
        cache: Cache::new(),
        snapshot: Snapshot::default(),
        next_start: 0,
        percentage: args.percentage,
    };
    for g in &w.nodes {
        for i in 0..g.count {
            l.cache
                .add_node(Arc::new(node(&format!("{}-{i}", g.prefix), g.label)?));
        }
    }
    let mut untimed = Phases::default();
    let start = Instant::now();
    for (k, set) in w.init.iter().enumerate() {
        for i in 0..set.count {
            let name = format!("init{k}-{i}");
            l.schedule(pod(set, &name)?, &mut untimed)
                .with_context(|| format!("initial pod {name}"))?;
        }
    }
    let init_took = start.elapsed();
    let mut phases = Phases::default();
    let (wall, cpu0) = (Instant::now(), cpu());
    for i in 0..w.measure.count {
        let name = format!("m-{i}");
        l.schedule(pod(&w.measure, &name)?, &mut phases)
            .with_context(|| format!("measured pod {name}"))?;
    }
    let (wall, cpu_total) = (wall.elapsed(), cpu() - cpu0);
    let n = w.measure.count as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1?} |",
        w.name,
        w.node_count(),
        w.init.iter().map(|s| s.count).sum::<usize>(),
        w.measure.count,
        n / wall.as_secs_f64(),
        n / cpu_total.as_secs_f64(),
        per(cpu_total),
        per(phases.snapshot),
        per(phases.filter),
        per(phases.score),
        per(phases.assume),
        init_took,
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let all = workloads(args.scale);
    // PreemptionBasic evicts through the API server (see the module doc): only when named.
    let selected = select(&all, &args.workloads, |w| !w.priority_classes)?;
    println!(
        "| workload | nodes | initial pods | measured pods | pods/s (wall) | pods/s (CPU) | CPU µs/pod | snapshot | PreFilter+Filter | PreScore+Score | assume+confirm | initial pods took |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for w in selected {
        run(w, &args).with_context(|| w.name)?;
    }
    Ok(())
}
