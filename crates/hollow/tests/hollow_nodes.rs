//! `skiff hollow-nodes` against a real server: nodes register Ready with the requested
//! capacity, labels and taints and keep Leases; pods bound to them run, end when annotated to,
//! and complete graceful deletion.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use skiff_testing::TestCluster;

fn wait_for(cluster: &TestCluster, what: &str, args: &[&str], want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = cluster.kubectl(args)?;
        let out = String::from_utf8_lossy(&got.stdout).trim().to_owned();
        if out == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: wanted {want:?}, last saw {out:?} ({})",
                String::from_utf8_lossy(&got.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod(name: &str, node: &str, annotations: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","annotations":{{{annotations}}}}},
           "spec":{{"nodeName":"{node}","containers":[{{"name":"main","image":"busybox"}}]}}}}"#
    )
}

#[test]
fn hollow_nodes_register_and_run_their_pods() -> Result<()> {
    let cluster = TestCluster::start()?;
    let _nodes = cluster.hollow_nodes(
        3,
        &[
            "--cpu",
            "4",
            "--label",
            "zone=a",
            "--taint",
            "dedicated=sim:PreferNoSchedule",
            "--extended-resource",
            "example.com/gpu=2",
        ],
    )?;
    let node = cluster.k_json(&["get", "node", "hollow-node-1"])?;
    assert_eq!(node["status"]["capacity"]["cpu"], "4");
    assert_eq!(node["status"]["allocatable"]["example.com/gpu"], "2");
    assert_eq!(node["metadata"]["labels"]["zone"], "a");
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "hollow-node-1"
    );
    assert_eq!(node["spec"]["taints"][0]["effect"], "PreferNoSchedule");
    let lease = cluster.k_json(&["get", "lease", "-n", "kube-node-lease", "hollow-node-2"])?;
    assert_eq!(lease["spec"]["holderIdentity"], "hollow-node-2");

    cluster.k_stdin(&["create", "-f", "-"], &pod("web", "hollow-node-0", ""))?;
    wait_for(
        &cluster,
        "the pod running",
        &["get", "pod", "web", "-o", "jsonpath={.status.phase}"],
        "Running",
    )?;
    let table = cluster.k(&["get", "pod", "web", "-o", "wide"])?;
    assert!(table.contains("1/1"), "{table}");
    assert!(table.contains("hollow-node-0"), "{table}");

    cluster.k_stdin(
        &["create", "-f", "-"],
        &pod(
            "job-like",
            "hollow-node-1",
            r#""hollow.skiff.io/succeed-after-seconds":"1""#,
        ),
    )?;
    wait_for(
        &cluster,
        "the pod completing",
        &["get", "pod", "job-like", "-o", "jsonpath={.status.phase}"],
        "Succeeded",
    )?;
    let done = cluster.k_json(&["get", "pod", "job-like"])?;
    assert_eq!(
        done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );

    // Graceful deletion completes because the hollow node does the kubelet's final delete.
    cluster.k(&["delete", "pod", "web", "--wait=true", "--timeout=20s"])?;
    wait_for(
        &cluster,
        "the pod gone",
        &["get", "pods", "-o", "name"],
        "pod/job-like",
    )?;
    Ok(())
}

#[test]
fn bad_flags_are_refused_with_every_problem_listed() -> Result<()> {
    let out = std::process::Command::new(skiff_testing::skiff_binary())
        .args([
            "hollow-nodes",
            "--kubeconfig",
            "/nonexistent",
            "--count",
            "0",
            "--taint",
            "x:Sometimes",
            "--label",
            "novalue",
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["--count", "--taint", "--label"] {
        assert!(err.contains(needle), "{err}");
    }
    Ok(())
}
