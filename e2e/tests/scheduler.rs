//! The scheduler end to end, with stock kubectl against a real `skiff server` (scheduler
//! in-process) and `skiff hollow-nodes`: resource requests, node selectors and affinity, taints,
//! pod (anti-)affinity, topology spread, priority and preemption, failure messages in
//! `kubectl describe`, scheduling gates, pods left to another scheduler, metrics, and two
//! `skiff scheduler` processes electing one leader.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use skiff_testing::{ChildGuard, TestCluster, free_port};

/// Poll `check` until it yields a value (30 s at most).
fn wait<T>(what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start `count` hollow nodes named `<prefix>-<i>` with extra flags; wait until Ready.
fn hollow(c: &TestCluster, prefix: &str, count: usize, flags: &[&str]) -> Result<ChildGuard> {
    let n = count.to_string();
    let mut args = vec!["hollow-nodes", "--count", &n, "--name-prefix", prefix];
    args.extend_from_slice(flags);
    let guard = c.spawn_skiff(&format!("hollow-{prefix}"), &args)?;
    wait(&format!("{count} hollow nodes {prefix}-*"), || {
        let out = c.k(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ])?;
        let ready = out
            .lines()
            .filter(|l| l.starts_with(&format!("{prefix}-")) && l.ends_with(" True"))
            .count();
        Ok((ready >= count).then_some(()))
    })?;
    Ok(guard)
}

fn apply(c: &TestCluster, yaml: &str) -> Result<()> {
    c.k_stdin(&["apply", "-f", "-"], yaml)?;
    Ok(())
}

/// A pod manifest: `extra` is YAML indented under `spec:` (after the container).
fn pod(name: &str, labels: &str, cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n    resources:\n      requests: {{cpu: \"{cpu}\"}}\n{extra}"
    )
}

/// The node a pod runs on, once it is Running.
fn running_on(c: &TestCluster, name: &str) -> Result<String> {
    wait(&format!("pod {name} running"), || {
        let out = c.k(&[
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.status.phase} {.spec.nodeName}",
        ])?;
        Ok(match out.split_once(' ') {
            Some(("Running", node)) if !node.is_empty() => Some(node.to_owned()),
            _ => None,
        })
    })
}

/// The PodScheduled=False message of a pending pod, once it contains `part`.
fn unschedulable_message(c: &TestCluster, name: &str, part: &str) -> Result<String> {
    wait(&format!("pod {name} unschedulable with {part:?}"), || {
        let pod = c.k_json(&["get", "pod", name])?;
        let msg = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["type"] == "PodScheduled"
                    && c["status"] == "False"
                    && c["reason"] == "Unschedulable"
            })
            .and_then(|c| c["message"].as_str())
            .unwrap_or("")
            .to_owned();
        Ok(msg.contains(part).then_some(msg))
    })
}

fn nodes_of(c: &TestCluster, selector: &str) -> Result<BTreeMap<String, String>> {
    let out = c.k(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}{\"\\n\"}{end}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect())
}

#[test]
fn requests_taints_and_failure_messages() -> Result<()> {
    let c = TestCluster::start()?;
    let _workers = hollow(&c, "worker", 1, &["--cpu", "2"])?;
    let _cp = hollow(
        &c,
        "cp",
        2,
        &[
            "--cpu",
            "8",
            "--taint",
            "node-role.kubernetes.io/control-plane:NoSchedule",
        ],
    )?;
    apply(&c, &pod("fits", "app: a", "1500m", ""))?;
    assert_eq!(running_on(&c, "fits")?, "worker-0");
    // 1 cpu more does not fit on the worker; the control-plane nodes are tainted.
    apply(&c, &pod("too-big", "app: a", "1", ""))?;
    let msg = unschedulable_message(&c, "too-big", "0/3 nodes are available")?;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.."
    );
    let describe = c.k(&["describe", "pod", "too-big"])?;
    assert!(describe.contains("FailedScheduling"), "{describe}");
    assert!(describe.contains("default-scheduler"), "{describe}");
    assert!(describe.contains("Insufficient cpu"), "{describe}");
    let events = c.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=fits",
    ])?;
    assert!(
        events.contains("Successfully assigned default/fits to worker-0"),
        "{events}"
    );

    // Tolerating the taint opens the control-plane nodes.
    let tolerate = "  tolerations:\n  - key: node-role.kubernetes.io/control-plane\n    operator: Exists\n    effect: NoSchedule\n";
    apply(&c, &pod("tolerant", "app: a", "4", tolerate))?;
    assert!(running_on(&c, "tolerant")?.starts_with("cp-"));

    // Freeing room requeues the waiting pod.
    c.k(&["delete", "pod", "fits", "--wait=false"])?;
    assert_eq!(running_on(&c, "too-big")?, "worker-0");
    Ok(())
}

#[test]
fn node_selectors_affinity_and_spread() -> Result<()> {
    let c = TestCluster::start()?;
    let _a = hollow(
        &c,
        "a",
        2,
        &["--label", "topology.kubernetes.io/zone=zone-a"],
    )?;
    let _b = hollow(
        &c,
        "b",
        2,
        &["--label", "topology.kubernetes.io/zone=zone-b"],
    )?;
    c.k(&["label", "node", "b-1", "disktype=ssd"])?;

    apply(
        &c,
        &pod("ssd", "app: x", "100m", "  nodeSelector: {disktype: ssd}\n"),
    )?;
    assert_eq!(running_on(&c, "ssd")?, "b-1");
    let affinity = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: topology.kubernetes.io/zone, operator: In, values: [zone-a]}\n";
    apply(&c, &pod("in-a", "app: x", "100m", affinity))?;
    assert!(running_on(&c, "in-a")?.starts_with("a-"));
    apply(
        &c,
        &pod(
            "nowhere",
            "app: x",
            "100m",
            "  nodeSelector: {disktype: nvme}\n",
        ),
    )?;
    let msg = unschedulable_message(&c, "nowhere", "didn't match")?;
    assert!(
        msg.starts_with(
            "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector."
        ),
        "{msg}"
    );

    // Four pods spread with maxSkew 1 over the two zones: two per zone.
    let spread = "  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector:\n      matchLabels: {app: spread}\n";
    for i in 0..4 {
        apply(
            &c,
            &pod(&format!("spread-{i}"), "app: spread", "100m", spread),
        )?;
        running_on(&c, &format!("spread-{i}"))?;
    }
    let placed = nodes_of(&c, "app=spread")?;
    let in_a = placed.values().filter(|n| n.starts_with("a-")).count();
    assert_eq!(in_a, 2, "{placed:?}");
    Ok(())
}

#[test]
fn pod_affinity_and_anti_affinity() -> Result<()> {
    let c = TestCluster::start()?;
    let _a = hollow(
        &c,
        "a",
        1,
        &["--label", "topology.kubernetes.io/zone=zone-a"],
    )?;
    let _b = hollow(
        &c,
        "b",
        2,
        &["--label", "topology.kubernetes.io/zone=zone-b"],
    )?;
    // The upstream docs' redis example: one cache replica per node.
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels: {app: store}\n        topologyKey: kubernetes.io/hostname\n";
    for i in 0..4 {
        apply(&c, &pod(&format!("cache-{i}"), "app: store", "100m", anti))?;
    }
    let placed = wait("three caches placed", || {
        let placed = nodes_of(&c, "app=store")?;
        Ok((placed.values().filter(|n| !n.is_empty()).count() == 3).then_some(placed))
    })?;
    let (pending, _) = placed
        .iter()
        .find(|(_, n)| n.is_empty())
        .expect("one pending");
    let msg = unschedulable_message(&c, pending, "anti-affinity")?;
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
    );
    let distinct: std::collections::BTreeSet<_> =
        placed.values().filter(|n| !n.is_empty()).collect();
    assert_eq!(distinct.len(), 3, "{placed:?}");

    // A web pod with affinity to a zone-b-only backend lands in zone-b.
    apply(
        &c,
        &pod(
            "backend",
            "app: backend",
            "100m",
            "  nodeSelector: {topology.kubernetes.io/zone: zone-b}\n",
        ),
    )?;
    running_on(&c, "backend")?;
    let affinity = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchExpressions:\n          - {key: app, operator: In, values: [backend]}\n        topologyKey: topology.kubernetes.io/zone\n";
    apply(&c, &pod("web", "app: web", "100m", affinity))?;
    assert!(running_on(&c, "web")?.starts_with("b-"));
    Ok(())
}

#[test]
fn preemption_with_priority_classes() -> Result<()> {
    let c = TestCluster::start()?;
    let _n = hollow(&c, "n", 2, &["--cpu", "1"])?;
    apply(
        &c,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: 10\n",
    )?;
    for i in 0..2 {
        apply(
            &c,
            &pod(
                &format!("low-{i}"),
                "tier: low",
                "800m",
                "  priorityClassName: low\n",
            ),
        )?;
        running_on(&c, &format!("low-{i}"))?;
    }
    let low = c.k_json(&["get", "pod", "low-0"])?;
    assert_eq!(low["spec"]["priority"], 10);
    apply(
        &c,
        &pod("vip", "tier: high", "800m", "  priorityClassName: high\n"),
    )?;
    let node = running_on(&c, "vip")?;
    // One low pod was evicted from the vip's node, with the upstream event and condition.
    let remaining = nodes_of(&c, "tier=low")?;
    assert!(
        !remaining.values().any(|n| *n == node && !n.is_empty()),
        "{remaining:?}"
    );
    let events = c.k(&["get", "events", "--field-selector", "reason=Preempted"])?;
    assert!(events.contains("Preempted by pod"), "{events}");

    // A pod of the low class cannot preempt its peers (nor the vip); the message says so.
    apply(
        &c,
        &pod("peer", "tier: peer", "800m", "  priorityClassName: low\n"),
    )?;
    let msg = unschedulable_message(&c, "peer", "preemption")?;
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.."
    );
    Ok(())
}

#[test]
fn priority_admission_and_scheduling_gates() -> Result<()> {
    let c = TestCluster::start()?;
    let classes = c.k(&["get", "priorityclasses", "-o", "name"])?;
    assert!(
        classes.contains("system-cluster-critical") && classes.contains("system-node-critical")
    );
    let err = c.k_stdin_fail(&pod("bad", "a: b", "1m", "  priorityClassName: nope\n"))?;
    assert!(
        err.contains("no PriorityClass with name nope was found"),
        "{err}"
    );
    apply(
        &c,
        &pod(
            "critical",
            "a: b",
            "1m",
            "  priorityClassName: system-cluster-critical\n",
        ),
    )?;
    let p = c.k_json(&["get", "pod", "critical"])?;
    assert_eq!(p["spec"]["priority"], 2_000_000_000);
    assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");

    let _n = hollow(&c, "n", 1, &[])?;
    apply(
        &c,
        &pod(
            "gated",
            "a: b",
            "1m",
            "  schedulingGates:\n  - name: example.com/wait\n",
        ),
    )?;
    let p = c.k_json(&["get", "pod", "gated"])?;
    let cond = &p["status"]["conditions"][0];
    assert_eq!(cond["reason"], "SchedulingGated");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        c.k(&["get", "pod", "gated", "-o", "jsonpath={.spec.nodeName}"])?,
        ""
    );
    c.k(&[
        "patch",
        "pod",
        "gated",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/schedulingGates"}]"#,
    ])?;
    assert_eq!(running_on(&c, "gated")?, "n-0");
    Ok(())
}

#[test]
fn pods_for_another_scheduler_are_left_alone() -> Result<()> {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let c = TestCluster::start_with(&["--disable-agent", "--scheduler-metrics-address", &addr])?;
    let _n = hollow(&c, "n", 1, &[])?;
    apply(&c, &pod("mine", "a: b", "1m", ""))?;
    apply(
        &c,
        &pod(
            "theirs",
            "a: b",
            "1m",
            "  schedulerName: my-custom-scheduler\n",
        ),
    )?;
    running_on(&c, "mine")?;
    std::thread::sleep(Duration::from_secs(1));
    let theirs = c.k_json(&["get", "pod", "theirs"])?;
    assert!(theirs["spec"]["nodeName"].is_null(), "{theirs}");
    assert!(
        theirs["status"]["conditions"].is_null(),
        "untouched: {theirs}"
    );
    let events = c.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=theirs",
        "-o",
        "name",
    ])?;
    assert!(events.trim().is_empty(), "{events}");

    // The other scheduler binds through pods/binding; the pod then runs.
    c.k_stdin(
        &["create", "--raw", "/api/v1/namespaces/default/pods/theirs/binding", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"theirs"},"target":{"kind":"Node","name":"n-0"}}"#,
    )?;
    running_on(&c, "theirs")?;

    let metrics = http_get(&addr, "/metrics")?;
    assert!(metrics.contains("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 1"), "{metrics}");
    assert!(
        metrics.contains("scheduler_pod_scheduling_sli_duration_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scheduler_pending_pods{queue=\"active\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leader_election_master_status{name=\"kube-scheduler\"} 1"),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn two_scheduler_processes_elect_one_leader() -> Result<()> {
    let c = TestCluster::start_with(&["--disable-agent", "--disable-scheduler"])?;
    let _n = hollow(&c, "n", 1, &[])?;
    let config = c.data_dir().join("scheduler.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nleaderElection:\n  leaderElect: true\n  leaseDuration: 3s\n  renewDeadline: 2s\n  retryPeriod: 500ms\n",
    )?;
    let config = config.to_string_lossy().into_owned();
    let start = |name: &str| {
        c.spawn_skiff(
            name,
            &["scheduler", "--config", &config, "--metrics-address", ""],
        )
    };
    let mut first = start("scheduler-1")?;
    let leader = wait("a lease holder", || {
        let out = c.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-scheduler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        let holder = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok((!holder.is_empty()).then_some(holder))
    })?;
    let _second = start("scheduler-2")?;
    apply(&c, &pod("one", "a: b", "1m", ""))?;
    running_on(&c, "one")?;
    std::thread::sleep(Duration::from_secs(1));
    let holder = c.k(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-scheduler",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    assert_eq!(holder, leader, "the first instance keeps the lease");

    // The leader dies without releasing: the other takes over once the lease expires.
    first.kill()?;
    let new_leader = wait("a new lease holder", || {
        let holder = c.k(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-scheduler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        Ok((!holder.is_empty() && holder != leader).then_some(holder))
    })?;
    assert_ne!(new_leader, leader);
    apply(&c, &pod("two", "a: b", "1m", ""))?;
    running_on(&c, "two")?;
    Ok(())
}

/// A plain-HTTP GET on loopback.
fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

trait CreateFail {
    fn k_stdin_fail(&self, manifest: &str) -> Result<String>;
}

impl CreateFail for TestCluster {
    /// `kubectl apply` that must fail; its stderr.
    fn k_stdin_fail(&self, manifest: &str) -> Result<String> {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(manifest))?;
        if out.status.success() {
            bail!("kubectl apply unexpectedly succeeded");
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
