//! Volumes, probes and lifecycle hooks on a real node: every volume type mounts the right
//! content (read back through the container's termination message or a host path), configMap
//! updates reach running containers, liveness failures restart containers, readiness gates
//! the Ready condition, and preStop hooks and SIGTERM run within the grace period.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;
use skiff_testing::{BUSYBOX_IMAGE, NODE_NAME, TestCluster};

fn message(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn every_volume_type_mounts_its_content() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    cluster.k(&[
        "create",
        "configmap",
        "app",
        "--from-literal=color=blue",
        "--from-literal=size=L",
    ])?;
    cluster.k(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cr3t",
    ])?;
    let host_dir = cluster.data_dir().join("host-volume");
    let script = concat!(
        "set -e; (",
        "echo cm=$(cat /cm/nested/color); ",
        "echo secret=$(cat /sec/password) mode=$(stat -L -c %a /sec/password); ",
        "echo name=$(cat /down/name) labels=$(cat /down/labels); ",
        "echo mem=$(grep ' /mem ' /proc/mounts | cut -d' ' -f3); ",
        "echo disk-writable=$(touch /disk/x && echo yes); ",
        "echo hello > /host/from-pod; ",
        "echo sub=$(cat /sub); ",
        "echo token=$(test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo yes) ",
        "ca=$(grep -c 'BEGIN CERTIFICATE' /var/run/secrets/kubernetes.io/serviceaccount/ca.crt) ",
        "ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); ",
        "echo readonly=$(touch /cm/x 2>/dev/null && echo no || echo yes)",
        ") > /dev/termination-log",
    );
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "vols", "labels": { "app": "vols" } },
        "spec": {
            "nodeName": NODE_NAME, "restartPolicy": "Never",
            "volumes": [
                { "name": "cm", "configMap": { "name": "app", "items": [{ "key": "color", "path": "nested/color" }] } },
                { "name": "sec", "secret": { "secretName": "creds", "defaultMode": 0o400 } },
                { "name": "down", "downwardAPI": { "items": [
                    { "path": "labels", "fieldRef": { "fieldPath": "metadata.labels" } },
                    { "path": "name", "fieldRef": { "fieldPath": "metadata.name" } } ] } },
                { "name": "mem", "emptyDir": { "medium": "Memory", "sizeLimit": "16Mi" } },
                { "name": "disk", "emptyDir": {} },
                { "name": "host", "hostPath": { "path": host_dir.to_string_lossy(), "type": "DirectoryOrCreate" } },
            ],
            "containers": [{
                "name": "main", "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", script],
                "volumeMounts": [
                    { "name": "cm", "mountPath": "/cm" },
                    { "name": "sec", "mountPath": "/sec" },
                    { "name": "down", "mountPath": "/down" },
                    { "name": "mem", "mountPath": "/mem" },
                    { "name": "disk", "mountPath": "/disk" },
                    { "name": "host", "mountPath": "/host" },
                    { "name": "cm", "mountPath": "/sub", "subPath": "nested/color" },
                ],
            }],
        },
    });
    cluster.k_stdin(&["apply", "-f", "-"], &manifest.to_string())?;
    let p = cluster.wait_pod("vols", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed"
    })?;
    let out = message(&p);
    assert_eq!(p["status"]["phase"], "Succeeded", "{out}\n{}", p["status"]);
    for want in [
        "cm=blue",
        "secret=s3cr3t mode=400",
        "name=vols labels=app=\"vols\"",
        "mem=tmpfs",
        "disk-writable=yes",
        "sub=blue",
        "token=yes ca=1 ns=default",
        "readonly=yes",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert_eq!(
        std::fs::read_to_string(host_dir.join("from-pod"))?,
        "hello\n"
    );
    Ok(())
}

#[test]
fn config_map_updates_reach_running_containers() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    cluster.k(&["create", "configmap", "live", "--from-literal=mode=v1"])?;
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "watcher" },
        "spec": {
            "nodeName": NODE_NAME,
            "volumes": [{ "name": "cfg", "configMap": { "name": "live" } }],
            "containers": [{
                "name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"],
                "volumeMounts": [{ "name": "cfg", "mountPath": "/cfg" }],
                "readinessProbe": { "exec": { "command": ["grep", "-q", "v2", "/cfg/mode"] }, "periodSeconds": 1, "failureThreshold": 1 },
            }],
        },
    });
    cluster.k_stdin(&["apply", "-f", "-"], &manifest.to_string())?;
    cluster.wait_pod("watcher", "Running but not ready", |p| {
        p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == false
    })?;
    cluster.k(&[
        "patch",
        "configmap",
        "live",
        "-p",
        r#"{"data":{"mode":"v2"}}"#,
    ])?;
    let p = cluster.wait_pod("watcher", "ready after the update", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    })?;
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True");
    Ok(())
}

#[test]
fn probes_restart_and_gate_readiness() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let pods = serde_json::json!([
            { "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "liveness" }, "spec": {
                "nodeName": NODE_NAME, "terminationGracePeriodSeconds": 1,
                "containers": [{ "name": "main", "image": BUSYBOX_IMAGE,
                    "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"],
                    "livenessProbe": { "exec": { "command": ["cat", "/tmp/healthy"] }, "periodSeconds": 1, "failureThreshold": 2 } }] } },
            { "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web" }, "spec": {
                "nodeName": NODE_NAME,
                "containers": [{ "name": "main", "image": BUSYBOX_IMAGE,
                    "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                    "ports": [{ "name": "http", "containerPort": 8080 }],
                    "readinessProbe": { "httpGet": { "path": "/index.html", "port": "http" }, "periodSeconds": 1 },
                    "startupProbe": { "tcpSocket": { "port": 8080 }, "periodSeconds": 1, "failureThreshold": 10 } }] } },
            { "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "never-ready" }, "spec": {
                "nodeName": NODE_NAME,
                "containers": [{ "name": "main", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"],
                    "readinessProbe": { "httpGet": { "path": "/", "port": 9999 }, "periodSeconds": 1 } }] } },
    ]);
    for pod in pods.as_array().unwrap() {
        cluster.k_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    }
    let web = cluster.wait_pod("web", "ready", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    })?;
    assert_eq!(web["status"]["containerStatuses"][0]["started"], true);
    let live = cluster.wait_pod("liveness", "a restart after failed liveness", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    })?;
    assert!(live["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object());
    let events = cluster.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=liveness",
        "-o",
        "custom-columns=R:.reason,M:.message",
    ])?;
    assert!(
        events.contains("Unhealthy") && events.contains("Liveness probe failed"),
        "{events}"
    );
    assert!(events.contains("Killing"), "{events}");
    let never = cluster.k_json(&["get", "pod", "never-ready"])?;
    assert_eq!(never["status"]["phase"], "Running");
    assert_eq!(never["status"]["containerStatuses"][0]["ready"], false);
    let ready = never["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "ContainersNotReady");
    Ok(())
}

#[test]
fn hooks_and_graceful_termination() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let host_dir = cluster.data_dir().join("hooks");
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "hooked" },
        "spec": {
            "nodeName": NODE_NAME, "terminationGracePeriodSeconds": 20,
            "volumes": [{ "name": "out", "hostPath": { "path": host_dir.to_string_lossy(), "type": "DirectoryOrCreate" } }],
            "containers": [{
                "name": "main", "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", "trap 'echo term >> /out/log; exit 0' TERM; while true; do sleep 0.2; done"],
                "volumeMounts": [{ "name": "out", "mountPath": "/out" }],
                "lifecycle": {
                    "postStart": { "exec": { "command": ["sh", "-c", "echo poststart >> /out/log"] } },
                    "preStop": { "exec": { "command": ["sh", "-c", "echo prestop >> /out/log"] } },
                },
            }],
        },
    });
    cluster.k_stdin(&["apply", "-f", "-"], &manifest.to_string())?;
    cluster.wait_pod("hooked", "Running", |p| p["status"]["phase"] == "Running")?;
    let started = Instant::now();
    cluster.k(&["delete", "pod", "hooked", "--timeout=60s"])?;
    // The container handled SIGTERM at once, well inside its 20 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(host_dir.join("log"))?;
    assert_eq!(log, "poststart\nprestop\nterm\n");
    Ok(())
}

#[test]
fn a_claim_on_the_default_class_gets_a_local_volume() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let claim = serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": { "name": "data" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
    });
    cluster.k_stdin(&["apply", "-f", "-"], &claim.to_string())?;
    let pvc = cluster.k_json(&["get", "pvc", "data"])?;
    assert_eq!(
        pvc["spec"]["storageClassName"], "local-path",
        "DefaultStorageClass admission"
    );
    let classes = cluster.k(&["get", "storageclass"])?;
    assert!(
        classes.contains("local-path (default)") && classes.contains("WaitForFirstConsumer"),
        "{classes}"
    );
    // The claim waits for its first consumer; the scheduler picks the node, the node
    // provisions, the binder binds, and the pod starts.
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "writer" },
        "spec": { "restartPolicy": "Never",
            "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": "data" } }],
            "containers": [{ "name": "main", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", "echo kept > /data/file"],
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }] }] },
    });
    cluster.k_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    let p = cluster.wait_pod("writer", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    })?;
    assert_eq!(p["spec"]["nodeName"], NODE_NAME);
    let pvc = cluster.k_json(&["get", "pvc", "data"])?;
    assert_eq!(pvc["status"]["phase"], "Bound");
    let volume = pvc["spec"]["volumeName"].as_str().unwrap().to_owned();
    let pv = cluster.k_json(&["get", "pv", &volume])?;
    let path = std::path::PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().unwrap());
    assert!(
        path.starts_with(cluster.data_dir().join("agent/storage")),
        "{}",
        path.display()
    );
    assert_eq!(std::fs::read_to_string(path.join("file"))?, "kept\n");
    // Deleting the claim releases the volume; the Delete policy removes it and its data.
    cluster.k(&["delete", "pod", "writer"])?;
    cluster.k(&["delete", "pvc", "data"])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.kubectl(&["get", "pv", &volume])?.status.success() || path.exists() {
        if Instant::now() > deadline {
            bail!(
                "the released volume was not deleted (exists: {})",
                path.exists()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}
