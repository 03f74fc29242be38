//! The node's resources as users meet them through stock kubectl: the kubelet's
//! `/stats/summary` and `/metrics/resource` reached through the API server's node proxy,
//! with real numbers from busy pods; node-level admission refusing pods bound straight to a
//! node that cannot run them; and local ephemeral storage limits evicting pods.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use skiff_testing::{BUSYBOX_IMAGE, NODE_NAME, TestCluster, wait_for};

fn summary(cluster: &TestCluster) -> Result<Value> {
    let raw = cluster.k(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE_NAME}/proxy/stats/summary"),
    ])?;
    Ok(serde_json::from_str(&raw)?)
}

fn pod_stats<'a>(summary: &'a Value, name: &str) -> Option<&'a Value> {
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name)
}

fn container_stats<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn volume_used(pod: &Value, name: &str) -> Option<u64> {
    pod["volume"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?["usedBytes"]
        .as_u64()
}

fn apply(cluster: &TestCluster, pod: Value) -> Result<()> {
    cluster.k_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    Ok(())
}

fn pod_manifest(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(NODE_NAME);
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name }, "spec": spec })
}

/// Wait for an event with `reason` about pod `name`; returns it and all the pod's events.
fn wait_event(
    cluster: &TestCluster,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Result<(Value, Vec<Value>)> {
    wait_for(timeout, &format!("the {reason} event of {name}"), || {
        let events = events_of(cluster, name)?;
        Ok(events
            .iter()
            .find(|e| e["reason"] == reason)
            .cloned()
            .map(|event| (event, events)))
    })
}

/// A pod pinned to the node that sleeps, with `resources` on its one container.
fn pinned_sleeper(name: &str, resources: Value) -> Value {
    pod_manifest(
        name,
        json!({ "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"],
            "resources": resources }] }),
    )
}

/// The pod's condition of `kind`, if it has one.
fn pod_condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn events_of(cluster: &TestCluster, name: &str) -> Result<Vec<Value>> {
    let list = cluster.k_json(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ])?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

const MI: u64 = 1 << 20;

#[test]
fn stats_summary_and_resource_metrics_report_real_usage() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    // A claim pre-bound to a hostPath volume, to see claims reported with their pvcRef.
    let pv_dir = cluster.data_dir().join("pv-data");
    cluster.k_stdin(
        &["apply", "-f", "-"],
        &json!({ "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "v1", "kind": "PersistentVolume", "metadata": { "name": "stats-pv" },
              "spec": { "capacity": { "storage": "1Gi" }, "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "hostPath": { "path": pv_dir.display().to_string(), "type": "DirectoryOrCreate" } } },
            { "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": { "name": "stats-claim" },
              "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                "volumeName": "stats-pv", "resources": { "requests": { "storage": "1Gi" } } } },
        ] })
        .to_string(),
    )?;
    apply(
        &cluster,
        pod_manifest(
            "busy",
            json!({
                "volumes": [
                    { "name": "scratch", "emptyDir": {} },
                    { "name": "claim", "persistentVolumeClaim": { "claimName": "stats-claim" } },
                ],
                "containers": [
                    { "name": "burner", "image": BUSYBOX_IMAGE,
                      "command": ["sh", "-c", "while :; do :; done"],
                      "volumeMounts": [
                          { "name": "scratch", "mountPath": "/scratch" },
                          { "name": "claim", "mountPath": "/claim" },
                      ] },
                    // 32 MB of anonymous memory held by the shell (which waits rather than
                    // exec the sleep and let go of it).
                    { "name": "hog", "image": BUSYBOX_IMAGE,
                      "command": ["sh", "-c", "x=$(head -c 33554432 /dev/zero | tr '\\0' a); echo held; sleep 3600 & wait"] },
                ],
            }),
        ),
    )?;
    cluster.wait_pod("busy", "running", |p| {
        p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["state"]["running"].is_object()))
    })?;

    // CPU rates need two samples; memory needs the hog to have allocated.
    let s = wait_for(Duration::from_secs(90), "busy pod stats", || {
        let s = summary(&cluster)?;
        let Some(pod) = pod_stats(&s, "busy") else {
            bail!("no busy pod in {s}");
        };
        let burning = container_stats(pod, "burner")
            .and_then(|c| c["cpu"]["usageNanoCores"].as_u64())
            .is_some_and(|n| n > 10_000_000);
        let holding = container_stats(pod, "hog")
            .and_then(|c| c["memory"]["workingSetBytes"].as_u64())
            .is_some_and(|ws| ws > 30 * MI);
        let measured = volume_used(pod, "scratch").is_some();
        if !(burning && holding && measured) {
            bail!("busy pod not fully measured yet: {pod}");
        }
        Ok(Some(s))
    })?;

    let node = &s["node"];
    assert_eq!(node["nodeName"], NODE_NAME);
    assert!(node["startTime"].is_string(), "{node}");
    assert!(
        node["cpu"]["usageNanoCores"].as_u64().unwrap_or(0) > 0,
        "{node}"
    );
    assert!(node["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap_or(0) > 0);
    let capacity = {
        let n = cluster.k_json(&["get", "node", NODE_NAME])?;
        let ki: u64 = n["status"]["capacity"]["memory"]
            .as_str()
            .and_then(|m| m.strip_suffix("Ki"))
            .and_then(|m| m.parse().ok())
            .context("node memory capacity")?;
        ki * 1024
    };
    let node_ws = node["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    assert!(node_ws > 0 && node_ws <= capacity, "{node}");
    assert_eq!(
        node["memory"]["availableBytes"].as_u64(),
        Some(capacity - node_ws)
    );
    for key in ["usageBytes", "rssBytes", "pageFaults"] {
        assert!(node["memory"][key].is_u64(), "node memory {key}: {node}");
    }
    assert_eq!(node["network"]["name"], "eth0", "{node}");
    assert!(node["network"]["rxBytes"].is_u64());
    let fs = &node["fs"];
    assert!(fs["capacityBytes"].as_u64().unwrap_or(0) > 0, "{fs}");
    assert!(fs["usedBytes"].as_u64().unwrap_or(0) > 0);
    assert!(fs["availableBytes"].as_u64() <= fs["capacityBytes"].as_u64());
    assert!(
        node["runtime"]["imageFs"]["usedBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the busybox image takes room: {node}"
    );
    assert!(node["rlimit"]["maxpid"].as_u64().unwrap_or(0) > 0);
    assert!(node["rlimit"]["curproc"].as_u64().unwrap_or(0) > 0);

    let pod = pod_stats(&s, "busy").context("busy pod")?;
    let uid = cluster.k(&["get", "pod", "busy", "-o", "jsonpath={.metadata.uid}"])?;
    assert_eq!(
        pod["podRef"],
        json!({ "name": "busy", "namespace": "default", "uid": uid })
    );
    let burner = container_stats(pod, "burner").context("burner")?;
    let hog = container_stats(pod, "hog").context("hog")?;
    assert!(burner["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap_or(0) > 0);
    let burner_ws = burner["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    assert!(
        burner_ws > 0 && burner_ws < 64 * MI,
        "a shell loop is small: {burner}"
    );
    let hog_ws = hog["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    assert!(
        hog_ws > 30 * MI && hog_ws < 512 * MI,
        "the hog holds its 32 MB: {hog}"
    );
    assert!(
        hog["memory"]["rssBytes"].as_u64().unwrap_or(0) > 30 * MI,
        "{hog}"
    );
    assert!(
        burner["rootfs"]["capacityBytes"].as_u64().unwrap_or(0) > 0,
        "{burner}"
    );
    assert!(burner["logs"]["usedBytes"].is_u64(), "{burner}");
    // The pod cgroup holds both containers (and the sandbox).
    let pod_ws = pod["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    assert!(pod_ws >= hog_ws, "pod {pod_ws} < hog {hog_ws}");
    assert!(
        pod["cpu"]["usageNanoCores"].as_u64().unwrap_or(0) > 0,
        "{pod}"
    );
    assert_eq!(pod["network"]["name"], "eth0", "{pod}");
    assert!(pod["ephemeral-storage"]["usedBytes"].is_u64(), "{pod}");
    assert!(pod["process_stats"]["process_count"].as_u64().unwrap_or(0) >= 2);

    let claim = pod["volume"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "claim"))
        .context("the claim's volume stats")?;
    assert_eq!(
        claim["pvcRef"],
        json!({ "name": "stats-claim", "namespace": "default" })
    );
    assert!(
        claim["usedBytes"].is_u64() && claim["capacityBytes"].is_u64(),
        "{claim}"
    );

    // Writing into the emptyDir shows in its usage at the next measurement.
    let before = volume_used(pod, "scratch").context("scratch usage")?;
    cluster.k(&[
        "exec",
        "busy",
        "-c",
        "burner",
        "--",
        "dd",
        "if=/dev/urandom",
        "of=/scratch/blob",
        "bs=1048576",
        "count=4",
    ])?;
    let after = wait_for(Duration::from_secs(60), "scratch usage to grow", || {
        let s = summary(&cluster)?;
        Ok(pod_stats(&s, "busy")
            .and_then(|p| volume_used(p, "scratch"))
            .filter(|used| *used >= before + 4 * MI))
    })?;
    assert!(after < before + 64 * MI, "{before} → {after}");

    // The slim variant metrics-server asks for.
    let slim: Value = serde_json::from_str(&cluster.k(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE_NAME}/proxy/stats/summary?only_cpu_and_memory=true"),
    ])?)?;
    assert!(slim["node"]["cpu"].is_object() && slim["node"].get("fs").is_none());
    let slim_pod = pod_stats(&slim, "busy").context("busy in the slim summary")?;
    assert!(slim_pod.get("volume").is_none() && slim_pod["memory"].is_object());

    // The Prometheus series metrics-server scrapes.
    let metrics = cluster.k(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{NODE_NAME}/proxy/metrics/resource"),
    ])?;
    let sample = |prefix: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let cpu = sample(
        "container_cpu_usage_seconds_total{container=\"burner\",namespace=\"default\",pod=\"busy\"}",
    )
    .with_context(|| format!("burner cpu series:\n{metrics}"))?;
    assert!(cpu > 0.0, "{metrics}");
    let ws = sample(
        "container_memory_working_set_bytes{container=\"hog\",namespace=\"default\",pod=\"busy\"}",
    )
    .context("hog memory series")?;
    assert!(ws > (30 * MI) as f64, "{metrics}");
    assert!(sample("pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"busy\"}").is_some());
    assert!(sample("pod_memory_working_set_bytes{namespace=\"default\",pod=\"busy\"}").is_some());
    assert!(sample("node_cpu_usage_seconds_total ").unwrap_or(0.0) > 0.0);
    assert!(sample("node_memory_working_set_bytes ").unwrap_or(0.0) > 0.0);
    assert_eq!(sample("resource_scrape_error "), Some(0.0), "{metrics}");
    assert!(metrics.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
    Ok(())
}

/// Wait for a pod the kubelet rejects and check upstream's status, event and that nothing
/// of it ran.
fn expect_rejected(cluster: &TestCluster, name: &str, reason: &str, message: &str) -> Result<()> {
    let p = cluster.wait_pod(name, "rejection", |p| p["status"]["phase"] == "Failed")?;
    assert_eq!(p["status"]["reason"], reason, "{}", p["status"]);
    assert_eq!(
        p["status"]["message"],
        format!("Pod was rejected: {message}"),
        "{}",
        p["status"]
    );
    assert!(
        p["status"]["containerStatuses"].is_null(),
        "a rejected pod's containers never start: {}",
        p["status"]
    );
    let (event, events) = wait_event(cluster, name, reason, Duration::from_secs(30))?;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["message"], message);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e["reason"].as_str(), Some("Pulled" | "Created" | "Started"))),
        "{events:?}"
    );
    Ok(())
}

#[test]
fn pods_bound_to_a_node_that_cannot_run_them_are_rejected() -> Result<()> {
    let cluster = TestCluster::with_node_flags(&["--max-pods", "5"])?;
    let node = cluster.k_json(&["get", "node", NODE_NAME])?;
    let cpu_capacity: u64 = node["status"]["allocatable"]["cpu"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .context("allocatable cpu")?;
    let sleeper = |name: &str, extra: Value| {
        let mut container =
            json!({ "name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"] });
        if let Some(e) = extra.get("container") {
            for (k, v) in e.as_object().unwrap() {
                container[k] = v.clone();
            }
        }
        let mut spec = json!({ "containers": [container], "terminationGracePeriodSeconds": 1 });
        if let Some(e) = extra.get("spec") {
            for (k, v) in e.as_object().unwrap() {
                spec[k] = v.clone();
            }
        }
        pod_manifest(name, spec)
    };

    // A pod that takes most of the cpu is admitted; the next one does not fit beside it.
    let half = cpu_capacity * 1000 / 2;
    apply(
        &cluster,
        sleeper(
            "big",
            json!({ "container": { "resources": { "requests": { "cpu": format!("{half}m") } } } }),
        ),
    )?;
    cluster.wait_pod("big", "running", |p| p["status"]["phase"] == "Running")?;
    let too_much = cpu_capacity * 1000 - half + 1;
    apply(
        &cluster,
        sleeper(
            "greedy",
            json!({ "container": { "resources": { "requests": { "cpu": format!("{too_much}m") } } } }),
        ),
    )?;
    expect_rejected(
        &cluster,
        "greedy",
        "OutOfcpu",
        &format!(
            "Node didn't have enough resource: cpu, requested: {too_much}, used: {half}, capacity: {}",
            cpu_capacity * 1000
        ),
    )?;
    // The rejected pod holds nothing: what is left still fits.
    apply(
        &cluster,
        sleeper(
            "fits",
            json!({ "container": { "resources": { "requests": { "cpu": format!("{}m", too_much - 1) } } } }),
        ),
    )?;
    cluster.wait_pod("fits", "running", |p| p["status"]["phase"] == "Running")?;

    apply(
        &cluster,
        sleeper(
            "huge",
            json!({ "container": { "resources": { "requests": { "memory": "100000Gi" } } } }),
        ),
    )?;
    let p = cluster.wait_pod("huge", "rejection", |p| p["status"]["phase"] == "Failed")?;
    assert_eq!(p["status"]["reason"], "OutOfmemory");
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!(
                "Pod was rejected: Node didn't have enough resource: memory, requested: {}, used: 0, capacity: ",
                100000u64 << 30
            )),
        "{}",
        p["status"]
    );

    apply(
        &cluster,
        sleeper(
            "picky",
            json!({ "spec": { "nodeSelector": { "disktype": "ssd" } } }),
        ),
    )?;
    expect_rejected(
        &cluster,
        "picky",
        "NodeAffinity",
        "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector",
    )?;

    // Host ports: the second pod asking for a taken port is refused.
    apply(
        &cluster,
        sleeper(
            "port-holder",
            json!({ "container": { "ports": [{ "containerPort": 80, "hostPort": 18090 }] } }),
        ),
    )?;
    cluster.wait_pod("port-holder", "running", |p| {
        p["status"]["phase"] == "Running"
    })?;
    // Extended resources the node advertises are counted like cpu.
    cluster.k(&[
        "patch",
        "node",
        NODE_NAME,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"capacity":{"example.com/dongle":"2"},"allocatable":{"example.com/dongle":"2"}}}"#,
    ])?;
    wait_for(
        Duration::from_secs(30),
        "the node to advertise dongles",
        || {
            let n = cluster.k_json(&["get", "node", NODE_NAME])?;
            Ok((n["status"]["allocatable"]["example.com/dongle"] == "2").then_some(()))
        },
    )?;
    apply(
        &cluster,
        sleeper(
            "port-taker",
            json!({ "container": { "ports": [{ "containerPort": 8080, "hostPort": 18090 }] } }),
        ),
    )?;
    expect_rejected(
        &cluster,
        "port-taker",
        "NodePorts",
        "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
    )?;
    let dongles = |n: u32| json!({ "container": { "resources": { "requests": { "example.com/dongle": n.to_string() }, "limits": { "example.com/dongle": n.to_string() } } } });
    apply(&cluster, sleeper("one-dongle", dongles(1)))?;
    cluster.wait_pod("one-dongle", "running", |p| {
        p["status"]["phase"] == "Running"
    })?;
    apply(&cluster, sleeper("two-dongles", dongles(2)))?;
    expect_rejected(
        &cluster,
        "two-dongles",
        "OutOfexample.com/dongle",
        "Node didn't have enough resource: example.com/dongle, requested: 2, used: 1, capacity: 2",
    )?;

    // Five pods run (big, fits, port-holder, one-dongle, and this one); a sixth is one too many.
    apply(&cluster, sleeper("fifth", json!({})))?;
    cluster.wait_pod("fifth", "running", |p| p["status"]["phase"] == "Running")?;
    apply(&cluster, sleeper("sixth", json!({})))?;
    expect_rejected(
        &cluster,
        "sixth",
        "OutOfpods",
        "Node didn't have enough resource: pods, requested: 1, used: 5, capacity: 5",
    )?;
    // Deleting a pod frees its place.
    cluster.k(&["delete", "pod", "fifth", "--wait=true", "--timeout=60s"])?;

    apply(
        &cluster,
        sleeper(
            "windows",
            json!({ "spec": { "os": { "name": "windows" } } }),
        ),
    )
    .or_else(|e| {
        // The API server may refuse a Windows pod with Linux-only fields; then nothing to check.
        if format!("{e:#}").contains("invalid") {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    if cluster
        .kubectl(&["get", "pod", "windows"])?
        .status
        .success()
    {
        expect_rejected(
            &cluster,
            "windows",
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS",
        )?;
    }

    // An untolerated NoExecute taint refuses new pods (kept last: the taint also sends the
    // pods already here away).
    cluster.k(&["taint", "node", NODE_NAME, "dedicated=db:NoExecute"])?;
    wait_for(
        Duration::from_secs(30),
        "the taint to reach the node",
        || {
            let n = cluster.k_json(&["get", "node", NODE_NAME])?;
            Ok(n["spec"]["taints"]
                .to_string()
                .contains("dedicated")
                .then_some(()))
        },
    )?;
    apply(&cluster, sleeper("untolerant", json!({})))?;
    // The taint manager deletes the pod too, possibly before its status can be read: the
    // kubelet's verdict shows in its event either way.
    let (event, events) = wait_event(
        &cluster,
        "untolerant",
        "TaintToleration",
        Duration::from_secs(60),
    )?;
    assert_eq!(
        event["message"],
        "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
    );
    assert!(
        !events.iter().any(|e| e["reason"] == "Started"),
        "{events:?}"
    );
    if let Ok(p) = cluster.k_json(&["get", "pod", "untolerant"])
        && p["metadata"]["deletionTimestamp"].is_null()
    {
        assert_eq!(p["status"]["reason"], "TaintToleration", "{}", p["status"]);
    }
    apply(
        &cluster,
        sleeper(
            "tolerant",
            json!({ "spec": { "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute" }] } }),
        ),
    )?;
    cluster.wait_pod("tolerant", "running", |p| p["status"]["phase"] == "Running")?;
    Ok(())
}

#[test]
fn pods_waiting_for_a_node_are_admitted_oldest_first() -> Result<()> {
    // Two pods bound to a node that has not joined yet, each asking for 60% of its cpu. The
    // older one must win whatever order the kubelet lists them in: its name sorts last.
    let cluster = TestCluster::with_node()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let share = format!("{}m", cpus * 600);
    let bound = |name: &str| {
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
            "spec": { "nodeName": "late-node", "terminationGracePeriodSeconds": 1,
                "containers": [{ "name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"],
                    "resources": { "requests": { "cpu": share } } }] } })
    };
    apply(&cluster, bound("zz-first"))?;
    // Creation times have second precision.
    std::thread::sleep(Duration::from_millis(1100));
    apply(&cluster, bound("aa-second"))?;
    let _agent = cluster.join_agent("late-node", &[])?;
    cluster.wait_pod("zz-first", "running", |p| p["status"]["phase"] == "Running")?;
    let p = cluster.wait_pod("aa-second", "rejection", |p| {
        p["status"]["phase"] == "Failed"
    })?;
    assert_eq!(p["status"]["reason"], "OutOfcpu", "{}", p["status"]);
    assert_eq!(
        p["status"]["message"],
        format!(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: {0}, used: {0}, capacity: {1}",
            cpus * 600,
            cpus * 1000
        )
    );
    Ok(())
}

#[test]
fn local_storage_limits_evict_pods() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let writer = |name: &str, volumes: Value, containers: Value| {
        pod_manifest(
            name,
            json!({ "volumes": volumes, "containers": containers, "terminationGracePeriodSeconds": 30 }),
        )
    };
    let write_then_sleep = |path: &str, mb: u32| {
        format!("dd if=/dev/urandom of={path} bs=1048576 count={mb} 2>/dev/null; sleep 3600")
    };
    apply(
        &cluster,
        writer(
            "overflow",
            json!([{ "name": "scratch", "emptyDir": { "sizeLimit": "1Mi" } }]),
            json!([{ "name": "main", "image": BUSYBOX_IMAGE,
                     "command": ["sh", "-c", write_then_sleep("/scratch/blob", 4)],
                     "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }] }]),
        ),
    )?;
    apply(
        &cluster,
        writer(
            "within",
            json!([{ "name": "scratch", "emptyDir": { "sizeLimit": "8Mi" } }]),
            json!([{ "name": "main", "image": BUSYBOX_IMAGE,
                     "command": ["sh", "-c", write_then_sleep("/scratch/blob", 1)],
                     "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }] }]),
        ),
    )?;
    // One container: its writable layer is the pod's whole usage, so the pod total trips.
    apply(
        &cluster,
        writer(
            "layer-pod",
            json!([]),
            json!([{ "name": "main", "image": BUSYBOX_IMAGE,
                     "command": ["sh", "-c", write_then_sleep("/tmp/blob", 6)],
                     "resources": { "limits": { "ephemeral-storage": "2Mi" } } }]),
        ),
    )?;
    // Two containers: the pod total (2Mi + 100Mi) holds, the writer's own limit does not.
    apply(
        &cluster,
        writer(
            "layer-container",
            json!([]),
            json!([
                { "name": "main", "image": BUSYBOX_IMAGE,
                  "command": ["sh", "-c", write_then_sleep("/tmp/blob", 6)],
                  "resources": { "limits": { "ephemeral-storage": "2Mi" } } },
                { "name": "roomy", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"],
                  "resources": { "limits": { "ephemeral-storage": "100Mi" } } },
            ]),
        ),
    )?;
    // A memory-backed emptyDir is a tmpfs of its sizeLimit (writes past it fail instead), or
    // of the pod's memory limit without one.
    apply(
        &cluster,
        writer(
            "tmpfs",
            json!([
                { "name": "mem", "emptyDir": { "medium": "Memory", "sizeLimit": "2Mi" } },
                { "name": "unsized", "emptyDir": { "medium": "Memory" } },
            ]),
            json!([{ "name": "main", "image": BUSYBOX_IMAGE,
                     "command": ["sh", "-c", "(df -k /mem /unsized | tail -2 | awk '{print $2}'; dd if=/dev/zero of=/mem/blob bs=1048576 count=4 2>/dev/null || echo full) > /dev/termination-log; sleep 3600"],
                     "resources": { "limits": { "memory": "64Mi" } },
                     "volumeMounts": [
                         { "name": "mem", "mountPath": "/mem" },
                         { "name": "unsized", "mountPath": "/unsized" },
                     ] }]),
        ),
    )?;

    let evicted = |name: &str, message: &str| -> Result<Value> {
        let p = wait_for(
            Duration::from_secs(120),
            &format!("{name} to be evicted"),
            || {
                let p = cluster.k_json(&["get", "pod", name])?;
                Ok((p["status"]["phase"] == "Failed").then_some(p))
            },
        )?;
        assert_eq!(p["status"]["reason"], "Evicted", "{}", p["status"]);
        assert_eq!(p["status"]["message"], message, "{}", p["status"]);
        for c in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(
                c["state"]["terminated"].is_object(),
                "an evicted pod's containers are stopped: {c}"
            );
        }
        let (event, _) = wait_event(&cluster, name, "Evicted", Duration::from_secs(30))?;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["message"], message);
        Ok(p)
    };
    evicted(
        "overflow",
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ",
    )?;
    evicted(
        "layer-pod",
        "Pod ephemeral local storage usage exceeds the total limit of containers 2Mi. ",
    )?;
    evicted(
        "layer-container",
        "Container main exceeded its local ephemeral storage limit \"2Mi\". ",
    )?;

    // The evicted pods stay evicted: nothing restarts them.
    std::thread::sleep(Duration::from_secs(12));
    let overflow = cluster.k_json(&["get", "pod", "overflow"])?;
    assert_eq!(overflow["status"]["phase"], "Failed");
    assert!(
        overflow["status"]["containerStatuses"][0]["state"]["terminated"].is_object(),
        "{}",
        overflow["status"]
    );
    // The pods within their limits were judged by the same passes and still run.
    for name in ["within", "tmpfs"] {
        let p = cluster.k_json(&["get", "pod", name])?;
        assert_eq!(p["status"]["phase"], "Running", "{name}: {}", p["status"]);
    }
    let s = summary(&cluster)?;
    let within = pod_stats(&s, "within").context("within in the summary")?;
    let used = volume_used(within, "scratch").context("within's scratch")?;
    assert!(
        (MI..8 * MI).contains(&used),
        "1 MB written, under its 8Mi limit: {used}"
    );
    assert!(
        pod_stats(&s, "overflow").is_none(),
        "an evicted pod has no running sandbox"
    );

    let tmpfs = cluster.k(&["exec", "tmpfs", "--", "cat", "/dev/termination-log"])?;
    assert_eq!(
        tmpfs, "2048\n65536\nfull\n",
        "a 2Mi tmpfs that refuses 4 MB, and one of the pod's 64Mi memory limit"
    );
    Ok(())
}

/// The node once it reports MemoryPressure (and, with `tainted`, carries its taint).
fn wait_memory_pressure(cluster: &TestCluster, tainted: bool) -> Result<Value> {
    wait_for(Duration::from_secs(30), "MemoryPressure", || {
        let node = cluster.k_json(&["get", "node", NODE_NAME])?;
        let pressure = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "MemoryPressure" && c["status"] == "True");
        let taint = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/memory-pressure");
        Ok((pressure && (taint || !tainted)).then_some(node))
    })
}

/// Run a Burstable pod on a node under memory pressure (threshold 1Pi) and wait for its
/// eviction; returns the pod and upstream's eviction message.
fn burstable_evicted_for_memory(cluster: &TestCluster) -> Result<(Value, String)> {
    apply(
        cluster,
        pinned_sleeper("burstable", json!({ "requests": { "cpu": "10m" } })),
    )?;
    let p = wait_for(Duration::from_secs(90), "burstable to be evicted", || {
        let p = cluster.k_json(&["get", "pod", "burstable"])?;
        Ok((p["status"]["phase"] == "Failed").then_some(p))
    })?;
    assert_eq!(p["status"]["reason"], "Evicted", "{}", p["status"]);
    let message = p["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1Pi, available: "
        ),
        "{message}"
    );
    Ok((p, message))
}

/// Node pressure with a memory threshold above anything the machine has
/// (`--eviction-hard memory.available<1Pi`): the node reports MemoryPressure and is tainted,
/// BestEffort pods bound to it are refused, and a running pod is evicted with upstream's
/// message. Static pods would stay (critical); the node runs none here.
#[test]
fn memory_pressure_refuses_best_effort_pods_and_evicts_running_ones() -> Result<()> {
    let cluster = TestCluster::with_node_flags(&["--eviction-hard", "memory.available<1Pi"])?;
    let node = wait_memory_pressure(&cluster, true)?;
    let condition = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "MemoryPressure")
        .cloned()
        .unwrap_or_default();
    assert_eq!(condition["reason"], "KubeletHasInsufficientMemory");
    assert_eq!(
        node["status"]["allocatable"]["memory"], "0",
        "the threshold is reserved from allocatable"
    );

    apply(&cluster, pinned_sleeper("best-effort", json!({})))?;
    expect_rejected(
        &cluster,
        "best-effort",
        "Evicted",
        "The node had condition: [MemoryPressure]. ",
    )?;

    // Burstable pods are admitted under memory pressure alone, then evicted to relieve it.
    let (p, message) = burstable_evicted_for_memory(&cluster)?;
    assert!(
        message.ends_with(", request is 0, has larger consumption of memory. ")
            && message.contains("Container main was using "),
        "{message}"
    );
    let disruption = pod_condition(&p, "DisruptionTarget")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        disruption["reason"], "TerminationByKubelet",
        "{}",
        p["status"]
    );
    assert_eq!(disruption["message"], message.as_str());
    let (event, _) = wait_event(&cluster, "burstable", "Evicted", Duration::from_secs(30))?;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["message"], message.as_str());
    Ok(())
}

/// Critical pod admission: a static pod that finds the node full (`--max-pods 2`, two API
/// pods running) preempts the BestEffort pod rather than the Burstable one, and runs; the
/// preempted pod ends Failed with upstream's reason and message. A static pod that cannot fit
/// even so (a node selector no node matches) does not run and says why in an event.
#[test]
fn static_pods_preempt_to_fit_and_say_why_they_cannot() -> Result<()> {
    let cluster =
        TestCluster::with_node_flags(&["--max-pods", "2", "--file-check-frequency", "1"])?;
    apply(&cluster, pinned_sleeper("best-effort", json!({})))?;
    apply(
        &cluster,
        pinned_sleeper("burstable", json!({ "requests": { "cpu": "10m" } })),
    )?;
    for name in ["best-effort", "burstable"] {
        cluster.wait_pod(name, "Running", |p| p["status"]["phase"] == "Running")?;
    }

    let manifests = cluster.data_dir().join("agent/pod-manifests");
    let static_pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{extra}  containers:\n  - name: main\n    image: {BUSYBOX_IMAGE}\n    command: [sleep, '3600']\n"
        )
    };
    std::fs::write(manifests.join("critical.yaml"), static_pod("critical", ""))?;
    let preempted = cluster.wait_pod("best-effort", "preemption", |p| {
        p["status"]["phase"] == "Failed"
    })?;
    assert_eq!(
        preempted["status"]["reason"], "Preempting",
        "{}",
        preempted["status"]
    );
    assert_eq!(
        preempted["status"]["message"],
        "Preempted in order to admit critical pod"
    );
    assert_eq!(
        pod_condition(&preempted, "DisruptionTarget").map(|c| c["reason"].clone()),
        Some(json!("TerminationByKubelet")),
        "{}",
        preempted["status"]
    );
    let (event, _) = wait_event(
        &cluster,
        "best-effort",
        "Preempting",
        Duration::from_secs(30),
    )?;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["message"], "Preempted in order to admit critical pod");
    let mirror = format!("critical-{NODE_NAME}");
    cluster.wait_pod(&mirror, "Running", |p| p["status"]["phase"] == "Running")?;
    let burstable = cluster.k_json(&["get", "pod", "burstable"])?;
    assert_eq!(
        burstable["status"]["phase"], "Running",
        "the Burstable pod stays"
    );

    // Nothing to preempt for a node selector: the static pod is refused, and no pod goes.
    std::fs::write(
        manifests.join("misfit.yaml"),
        static_pod("misfit", "  nodeSelector:\n    disk: none\n"),
    )?;
    let misfit = format!("misfit-{NODE_NAME}");
    let (event, _) = wait_event(&cluster, &misfit, "NodeAffinity", Duration::from_secs(30))?;
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        event["message"],
        "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
    );
    assert!(
        cluster.kubectl(&["get", "pod", &misfit])?.status.code() != Some(0),
        "a refused static pod has no mirror"
    );
    let burstable = cluster.k_json(&["get", "pod", "burstable"])?;
    assert_eq!(burstable["status"]["phase"], "Running");
    Ok(())
}

/// Soft thresholds (`--eviction-soft` with `--eviction-soft-grace-period`): the node reports
/// the pressure at once but reserves nothing from allocatable, and evicts only once the
/// threshold has held for its grace period.
#[test]
fn soft_thresholds_evict_after_their_grace_period() -> Result<()> {
    let cluster = TestCluster::with_node_flags(&[
        "--eviction-hard=",
        "--eviction-soft",
        "memory.available<1Pi",
        "--eviction-soft-grace-period",
        "memory.available=5s",
        "--eviction-max-pod-grace-period",
        "2",
    ])?;
    let node = wait_memory_pressure(&cluster, false)?;
    assert_eq!(
        node["status"]["allocatable"]["memory"], node["status"]["capacity"]["memory"],
        "soft thresholds reserve nothing"
    );
    burstable_evicted_for_memory(&cluster)?;
    Ok(())
}
