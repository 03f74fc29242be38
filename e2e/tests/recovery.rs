//! Recovering from failures on the node: a killed container is restarted, a killed
//! containerd is restarted by Skiff without disturbing running pods, a restarted kubelet
//! adopts its pods instead of recreating them, and deleting pods leaves nothing behind
//! (sandboxes, containers, pod IPs, mounts).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use skiff_testing::{BUSYBOX_IMAGE, NODE_NAME, TestCluster};

fn running_pod(cluster: &TestCluster, name: &str, marker: &str) -> Result<Value> {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
        "spec": { "nodeName": NODE_NAME, "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", marker] }] },
    });
    cluster.k_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    cluster.wait_pod(name, "Running", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    })
}

fn container_id(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Pids whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<i32> {
    let want = args.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c == want.as_bytes())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn kill(pid: i32) -> Result<()> {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill {pid} failed");
    }
    Ok(())
}

fn containerd_pid(cluster: &TestCluster) -> Result<i32> {
    let text = std::fs::read_to_string(cluster.data_dir().join("agent/containerd/containerd.pid"))?;
    text.trim().parse().context("containerd pid file")
}

fn ctr(cluster: &TestCluster, args: &[&str]) -> Result<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(cluster.data_dir().join("agent/containerd/containerd.sock"))
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn killed_containers_and_runtimes_are_recovered() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let first = running_pod(&cluster, "victim", "3601")?;

    // A container killed behind the kubelet's back is restarted by its restart policy.
    let pids = pids_running(&["sleep", "3601"]);
    assert_eq!(pids.len(), 1, "{pids:?}");
    kill(pids[0])?;
    let restarted = cluster.wait_pod("victim", "a restart", |p| {
        p["status"]["containerStatuses"][0]["restartCount"] == 1
            && p["status"]["containerStatuses"][0]["ready"] == true
    })?;
    assert_ne!(container_id(&restarted), container_id(&first));
    assert_eq!(
        restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );

    // containerd killed: Skiff restarts it; the running container is untouched, new pods run.
    let old = containerd_pid(&cluster)?;
    kill(old)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while containerd_pid(&cluster).unwrap_or(old) == old
        || ctr(&cluster, &["version"]).unwrap_or_default().is_empty()
    {
        if Instant::now() > deadline {
            bail!("containerd was not restarted:\n{}", cluster.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    running_pod(&cluster, "after-runtime-restart", "3602")?;
    let victim = cluster.k_json(&["get", "pod", "victim"])?;
    assert_eq!(
        container_id(&victim),
        container_id(&restarted),
        "the container survived"
    );
    assert_eq!(victim["status"]["containerStatuses"][0]["restartCount"], 1);
    Ok(())
}

#[test]
fn a_restarted_kubelet_adopts_its_pods_and_deletion_leaks_nothing() -> Result<()> {
    let mut cluster = TestCluster::with_node()?;
    let before = running_pod(&cluster, "steady", "3603")?;
    cluster.restart()?;
    cluster.wait_node_ready(Duration::from_secs(60))?;
    // Give the kubelet a few syncs to (wrongly) recreate anything.
    std::thread::sleep(Duration::from_secs(3));
    let after = cluster.wait_pod("steady", "Running", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    })?;
    assert_eq!(
        container_id(&after),
        container_id(&before),
        "the pod was adopted, not recreated"
    );
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(pids_running(&["sleep", "3603"]).len(), 1);

    // Deleting every pod leaves no container, sandbox, pod IP or mount behind.
    running_pod(&cluster, "second", "3604")?;
    cluster.k(&["delete", "pods", "--all", "--timeout=60s"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let containers = ctr(&cluster, &["containers", "ls", "-q"])?;
        let ips: Vec<String> = std::fs::read_dir(cluster.data_dir().join("agent/cni/ipam/skiff"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("10.42."))
                    .collect()
            })
            .unwrap_or_default();
        let pods_dir = cluster.data_dir().join("agent/pods");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .filter(|l| l.contains(&*pods_dir.to_string_lossy()))
            .count();
        let pod_dirs = std::fs::read_dir(&pods_dir)
            .map(|rd| rd.count())
            .unwrap_or(0);
        let sleeping =
            pids_running(&["sleep", "3603"]).len() + pids_running(&["sleep", "3604"]).len();
        if containers.trim().is_empty()
            && ips.is_empty()
            && mounts == 0
            && pod_dirs == 0
            && sleeping == 0
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "left behind: containers {containers:?}, ips {ips:?}, mounts {mounts}, pod dirs {pod_dirs}, processes {sleeping}"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(Path::new(&cluster.data_dir().join("agent/cni/ipam/skiff")).exists());
    Ok(())
}
