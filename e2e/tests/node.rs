//! The node as users see it: its registration (capacity, nodeInfo, labels, conditions,
//! Lease), static pods with mirror pods, images imported without a registry with the pull
//! policies, host networking and ports, pods' /etc/hosts and resolv.conf, cgroup limits,
//! security contexts and OOM kills.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;
use skiff_testing::{BUSYBOX_IMAGE, NODE_IP, NODE_NAME, TestCluster};

/// Run `script` in a pod to completion and return what it wrote to its termination log.
fn run_script(
    cluster: &TestCluster,
    name: &str,
    spec_extra: Value,
    container_extra: Value,
    script: &str,
) -> Result<Value> {
    let mut container = serde_json::json!({
        "name": "main", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", format!("({script}) > /dev/termination-log 2>&1")],
    });
    merge(&mut container, container_extra);
    let mut spec = serde_json::json!({ "nodeName": NODE_NAME, "restartPolicy": "Never", "containers": [container] });
    merge(&mut spec, spec_extra);
    let pod = serde_json::json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name }, "spec": spec });
    cluster.k_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    cluster.wait_pod(name, "to finish", |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

fn message(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn the_node_registers_with_upstream_fields() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let node = cluster.k_json(&["get", "node", NODE_NAME])?;
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], NODE_NAME);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
    let status = &node["status"];
    for key in [
        "cpu",
        "memory",
        "pods",
        "ephemeral-storage",
        "hugepages-2Mi",
    ] {
        assert!(
            status["capacity"][key].is_string(),
            "capacity {key}: {}",
            status["capacity"]
        );
        assert!(status["allocatable"][key].is_string(), "allocatable {key}");
    }
    assert_eq!(status["capacity"]["pods"], "110");
    assert_ne!(
        status["capacity"]["memory"], status["allocatable"]["memory"],
        "eviction reserve"
    );
    let info = &status["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{info}"
    );
    assert_eq!(info["kubeletVersion"], "v1.35.0-skiff");
    assert_eq!(info["operatingSystem"], "linux");
    assert!(!info["kernelVersion"].as_str().unwrap().is_empty());
    assert!(!info["osImage"].as_str().unwrap().is_empty());
    let conditions: Vec<(String, String)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // DiskPressure follows the real filesystem against the default `nodefs.available<5%`,
    // which a busy test machine may reach; the others must hold here. Free space moves while
    // the test runs, so a reading close to the line accepts either answer.
    let disk = std::process::Command::new("df")
        .args(["--output=size,avail", "-B1"])
        .arg(cluster.data_dir())
        .output()?;
    let nums: Vec<f64> = String::from_utf8_lossy(&disk.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let free_percent = match nums[..] {
        [size, avail] if size > 0.0 => avail / size * 100.0,
        _ => anyhow::bail!("unreadable df output: {nums:?}"),
    };
    let disk_pressure: &[&str] = if free_percent < 4.0 {
        &["True"]
    } else if free_percent < 6.0 {
        &["True", "False"]
    } else {
        &["False"]
    };
    for (kind, wanted) in [
        ("Ready", &["True"][..]),
        ("MemoryPressure", &["False"][..]),
        ("DiskPressure", disk_pressure),
        ("PIDPressure", &["False"][..]),
    ] {
        assert!(
            conditions
                .iter()
                .any(|(k, status)| k == kind && wanted.contains(&status.as_str())),
            "{kind} should be one of {wanted:?} (disk {free_percent:.1}% free): {conditions:?}"
        );
    }
    assert_eq!(
        status["addresses"][0],
        serde_json::json!({ "type": "InternalIP", "address": NODE_IP })
    );
    assert_eq!(status["addresses"][1]["type"], "Hostname");
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    let lease = cluster.k_json(&["get", "lease", "-n", "kube-node-lease", NODE_NAME])?;
    assert_eq!(lease["spec"]["holderIdentity"], NODE_NAME);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    let wide = cluster.k(&["get", "nodes", "-o", "wide"])?;
    assert!(
        wide.contains("Ready") && wide.contains("control-plane") && wide.contains("containerd://"),
        "{wide}"
    );
    Ok(())
}

#[test]
fn static_pods_run_and_are_mirrored() -> Result<()> {
    let cluster = TestCluster::with_node_flags(&["--file-check-frequency", "1"])?;
    let manifests = cluster.data_dir().join("agent/pod-manifests");
    std::fs::write(
        manifests.join("web.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: kube-system\nspec:\n  containers:\n  - name: main\n    image: {BUSYBOX_IMAGE}\n    command: [sleep, '3600']\n"
        ),
    )?;
    let mirror_name = format!("web-{NODE_NAME}");
    let wait_mirror = |what: &str| -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(p) = cluster.k_json(&["get", "pod", "-n", "kube-system", &mirror_name])
                && p["status"]["phase"] == "Running"
            {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("mirror pod: timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let mirror = wait_mirror("a running mirror pod")?;
    assert!(mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string());
    assert_eq!(
        mirror["metadata"]["annotations"]["kubernetes.io/config.source"],
        "file"
    );
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    let container = mirror["status"]["containerStatuses"][0]["containerID"].clone();
    // Deleting the mirror does not stop the static pod; the kubelet puts the mirror back.
    cluster.k(&[
        "delete",
        "pod",
        "-n",
        "kube-system",
        &mirror_name,
        "--wait=false",
    ])?;
    std::thread::sleep(Duration::from_secs(1));
    let again = wait_mirror("the mirror to come back")?;
    assert_eq!(
        again["status"]["containerStatuses"][0]["containerID"], container,
        "the static pod kept running"
    );
    // Removing the manifest stops it and removes the mirror.
    std::fs::remove_file(manifests.join("web.yaml"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster
        .kubectl(&["get", "pod", "-n", "kube-system", &mirror_name])?
        .status
        .success()
    {
        if Instant::now() > deadline {
            bail!("the mirror pod outlived its manifest");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

#[test]
fn images_import_without_a_registry_and_pull_policies_apply() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let archive = cluster.data_dir().join("tools.tar");
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "/hello".to_owned(),
        skiff_oci::Entry::File {
            mode: 0o644,
            data: b"tools".to_vec(),
        },
    );
    skiff_oci::write_archive(
        &skiff_oci::Image {
            name: "skiff.local/tools:2.0".into(),
            files,
            ..Default::default()
        },
        std::fs::File::create(&archive)?,
    )?;
    let out = std::process::Command::new(skiff_testing::skiff_binary())
        .args(["images", "import"])
        .arg(&archive)
        .arg("--data-dir")
        .arg(cluster.data_dir())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "imported skiff.local/tools:2.0\n"
    );
    let node = cluster.k_json(&["get", "node", NODE_NAME])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut images = node["status"]["images"].to_string();
    while !images.contains("skiff.local/tools:2.0") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        images = cluster.k_json(&["get", "node", NODE_NAME])?["status"]["images"].to_string();
    }
    assert!(images.contains("skiff.local/tools:2.0"), "{images}");

    // Never: the imported image runs; a missing one is ErrImageNeverPull.
    let layered = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "never-missing" },
        "spec": { "nodeName": NODE_NAME, "containers": [{ "name": "main", "image": "skiff.local/absent:1.0", "imagePullPolicy": "Never" }] },
    });
    cluster.k_stdin(&["apply", "-f", "-"], &layered.to_string())?;
    let p = cluster.wait_pod("never-missing", "ErrImageNeverPull", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    })?;
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "Container image \"skiff.local/absent:1.0\" is not present with pull policy of Never"
    );
    let ran = run_script(
        &cluster,
        "never-present",
        Value::Null,
        serde_json::json!({ "imagePullPolicy": "Never" }),
        "echo ok",
    )?;
    assert_eq!(ran["status"]["phase"], "Succeeded");

    // The archives in <data-dir>/agent/images are imported once, not again after a restart.
    let mut cluster = cluster;
    cluster.restart()?;
    cluster.wait_node_ready(Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(1));
    let imports = cluster.log().matches("imported image archive").count();
    assert_eq!(
        imports, 1,
        "busybox.tar was imported again after the restart"
    );
    Ok(())
}

#[test]
fn host_network_ports_and_name_resolution() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let regular = run_script(
        &cluster,
        "resolver",
        serde_json::json!({ "hostname": "box", "subdomain": "web" }),
        Value::Null,
        "cat /etc/hosts /etc/resolv.conf; hostname",
    )?;
    let out = message(&regular);
    let ip = regular["status"]["podIP"].as_str().unwrap_or("").to_owned();
    assert!(out.contains("# Kubernetes-managed hosts file."), "{out}");
    assert!(
        out.contains(&format!("{ip}\tbox.web.default.svc.cluster.local\tbox")),
        "{out}"
    );
    assert!(out.contains("nameserver 10.43.0.10"), "{out}");
    assert!(
        out.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{out}"
    );
    assert!(out.contains("options ndots:5"), "{out}");
    assert!(out.trim_end().ends_with("box"), "{out}");

    let host = run_script(
        &cluster,
        "hostnet",
        serde_json::json!({ "hostNetwork": true }),
        Value::Null,
        "ip -4 addr show eth0 | grep -c 172.31.255.1; head -1 /etc/hosts",
    )?;
    assert_eq!(host["status"]["podIP"], NODE_IP);
    let out = message(&host);
    assert!(
        out.starts_with("1\n# Kubernetes-managed hosts file (host network)."),
        "{out}"
    );

    // hostPort: the node's port reaches the pod.
    let web = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web" },
        "spec": { "nodeName": NODE_NAME, "containers": [{ "name": "main", "image": BUSYBOX_IMAGE,
            "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
            "ports": [{ "containerPort": 8080, "hostPort": 18080 }],
            "readinessProbe": { "tcpSocket": { "port": 8080 }, "periodSeconds": 1 } }] },
    });
    cluster.k_stdin(&["apply", "-f", "-"], &web.to_string())?;
    cluster.wait_pod("web", "ready", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    })?;
    let fetched = cluster
        .command(std::path::Path::new("curl"))
        .args([
            "-s",
            "--max-time",
            "5",
            &format!("http://{NODE_IP}:18080/index.html"),
        ])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout),
        "hello from skiff\n",
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    Ok(())
}

#[test]
fn limits_security_contexts_and_oom_kills() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let limited = run_script(
        &cluster,
        "limits",
        Value::Null,
        serde_json::json!({ "resources": { "requests": { "cpu": "100m", "memory": "32Mi" }, "limits": { "cpu": "250m", "memory": "64Mi" } } }),
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares",
    )?;
    assert_eq!(message(&limited), "67108864\n25000\n102\n");
    assert_eq!(limited["status"]["qosClass"], "Burstable");

    let secured = run_script(
        &cluster,
        "secured",
        serde_json::json!({ "securityContext": { "runAsGroup": 3000 } }),
        serde_json::json!({ "securityContext": { "runAsUser": 1000, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } } }),
        "id -u; id -g; touch /x 2>/dev/null && echo writable || echo readonly; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status",
    )?;
    let out = message(&secured);
    assert_eq!(
        out, "1000\n3000\nreadonly\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n",
        "{out}"
    );

    let privileged = run_script(
        &cluster,
        "privileged",
        Value::Null,
        serde_json::json!({ "securityContext": { "privileged": true } }),
        "grep CapEff /proc/self/status",
    )?;
    assert_ne!(message(&privileged), "CapEff:\t0000000000000000\n");

    let oom = run_script(
        &cluster,
        "oom",
        Value::Null,
        serde_json::json!({ "resources": { "limits": { "memory": "24Mi" } } }),
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    )?;
    let t = &oom["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{}", oom["status"]);
    assert_eq!(t["exitCode"], 137);
    assert_eq!(oom["status"]["phase"], "Failed");
    Ok(())
}
