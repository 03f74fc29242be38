//! Pods running for real: a `skiff server` with its own node (kubelet + containerd) inside a
//! network namespace the test creates, driven by stock kubectl, running the busybox image the
//! test builds. Covers the pod lifecycle, container states, restart policies and back-off,
//! init containers, environment sources, and the errors bad specs end in.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;
use skiff_testing::{BUSYBOX_IMAGE, NODE_NAME, TestCluster};

fn pod(name: &str, restart: &str, command: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},
           "spec":{{"nodeName":"{NODE_NAME}","restartPolicy":"{restart}","terminationGracePeriodSeconds":2,
             "containers":[{{"name":"main","image":"{BUSYBOX_IMAGE}","command":["sh","-c",{command:?}]}}]}}}}"#
    )
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

#[test]
fn a_pod_runs_and_reports_upstream_status() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    cluster.k_stdin(
        &["apply", "-f", "-"],
        &pod("web", "Always", "echo started; sleep 3600"),
    )?;
    let p = cluster.wait_pod("web", "Running and Ready", |p| {
        phase(p) == "Running" && p["status"]["containerStatuses"][0]["ready"] == true
    })?;
    let status = &p["status"];
    assert!(
        status["podIP"].as_str().unwrap().starts_with("10.42.0."),
        "{status}"
    );
    assert_eq!(status["hostIP"], skiff_testing::NODE_IP);
    assert_eq!(status["qosClass"], "BestEffort");
    assert!(status["startTime"].is_string());
    let c = &status["containerStatuses"][0];
    assert!(
        c["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    assert!(c["imageID"].as_str().unwrap().starts_with("sha256:"), "{c}");
    assert!(c["state"]["running"]["startedAt"].is_string());
    assert_eq!(c["started"], true);
    for kind in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        let cond = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap();
        assert_eq!(cond["status"], "True", "{kind}");
    }
    let table = cluster.k(&["get", "pod", "web", "-o", "wide"])?;
    assert!(
        table.contains("1/1") && table.contains("Running") && table.contains(NODE_NAME),
        "{table}"
    );
    let events = cluster.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "custom-columns=R:.reason",
    ])?;
    for reason in ["Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "{events}");
    }

    // Graceful deletion: the kubelet stops the container and deletes the pod for good.
    cluster.k(&["delete", "pod", "web", "--timeout=30s"])?;
    let left = cluster.k(&["get", "pods", "-o", "name"])?;
    assert!(left.trim().is_empty(), "{left}");
    Ok(())
}

#[test]
fn exits_follow_the_restart_policy() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    cluster.k_stdin(
        &["apply", "-f", "-"],
        &pod("done", "Never", "echo bye > /dev/termination-log; exit 3"),
    )?;
    cluster.k_stdin(&["apply", "-f", "-"], &pod("ok", "OnFailure", "exit 0"))?;
    cluster.k_stdin(&["apply", "-f", "-"], &pod("crash", "Always", "exit 1"))?;

    let done = cluster.wait_pod("done", "Failed", |p| phase(p) == "Failed")?;
    let t = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 3);
    assert_eq!(t["reason"], "Error");
    assert_eq!(t["message"], "bye\n");
    assert_eq!(
        done["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["reason"],
        "PodCompleted"
    );

    let ok = cluster.wait_pod("ok", "Succeeded", |p| phase(p) == "Succeeded")?;
    assert_eq!(
        ok["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(ok["status"]["containerStatuses"][0]["restartCount"], 0);

    // Restarted at once the first time, then held back: CrashLoopBackOff.
    let crash = cluster.wait_pod("crash", "a crash loop", |p| {
        let c = &p["status"]["containerStatuses"][0];
        c["restartCount"].as_i64().unwrap_or(0) >= 1
            && c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })?;
    let c = &crash["status"]["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
    assert!(
        c["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=main"),
        "{c}"
    );
    assert_eq!(phase(&crash), "Running");
    let table = cluster.k(&["get", "pod", "crash"])?;
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    Ok(())
}

#[test]
fn init_containers_run_in_order_and_share_volumes() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"init"}},
           "spec":{{"nodeName":"{NODE_NAME}","volumes":[{{"name":"work","emptyDir":{{}}}}],
             "initContainers":[
               {{"name":"first","image":"{BUSYBOX_IMAGE}","command":["sh","-c","echo one >> /work/log"],"volumeMounts":[{{"name":"work","mountPath":"/work"}}]}},
               {{"name":"second","image":"{BUSYBOX_IMAGE}","command":["sh","-c","echo two >> /work/log"],"volumeMounts":[{{"name":"work","mountPath":"/work"}}]}}],
             "containers":[{{"name":"main","image":"{BUSYBOX_IMAGE}","command":["sh","-c","cat /work/log > /dev/termination-log; sleep 3600"],
               "volumeMounts":[{{"name":"work","mountPath":"/work"}}]}}]}}}}"#
    );
    cluster.k_stdin(&["apply", "-f", "-"], &manifest)?;
    let p = cluster.wait_pod("init", "Running", |p| phase(p) == "Running")?;
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for i in inits {
        assert_eq!(i["state"]["terminated"]["reason"], "Completed", "{i}");
    }
    let first = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first <= second, "init containers ran in order");
    // The main container saw what both wrote, in order (kill it to read its message).
    cluster.k(&["delete", "pod", "init", "--wait=false"])?;
    Ok(())
}

#[test]
fn bad_pod_specs_end_in_clear_states_and_events() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let missing_image = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"noimage"}},
           "spec":{{"nodeName":"{NODE_NAME}","containers":[{{"name":"main","image":"registry.invalid/nothing:1.0"}}]}}}}"#
    );
    let bad_command = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"badcmd"}},
           "spec":{{"nodeName":"{NODE_NAME}","restartPolicy":"Never","containers":[{{"name":"main","image":"{BUSYBOX_IMAGE}","command":["/no/such/binary"]}}]}}}}"#
    );
    let missing_config = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"nocm"}},
           "spec":{{"nodeName":"{NODE_NAME}","containers":[{{"name":"main","image":"{BUSYBOX_IMAGE}","command":["sleep","3600"],
             "env":[{{"name":"X","valueFrom":{{"configMapKeyRef":{{"name":"absent","key":"k"}}}}}}]}}]}}}}"#
    );
    let bad_volume = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"novol"}},
           "spec":{{"nodeName":"{NODE_NAME}","volumes":[{{"name":"cfg","configMap":{{"name":"absent"}}}}],
             "containers":[{{"name":"main","image":"{BUSYBOX_IMAGE}","command":["sleep","3600"],"volumeMounts":[{{"name":"cfg","mountPath":"/cfg"}}]}}]}}}}"#
    );
    for m in [&missing_image, &bad_command, &missing_config, &bad_volume] {
        cluster.k_stdin(&["apply", "-f", "-"], m)?;
    }
    let waiting = |p: &Value| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    cluster.wait_pod("noimage", "ErrImagePull or ImagePullBackOff", |p| {
        matches!(waiting(p).as_str(), "ErrImagePull" | "ImagePullBackOff")
    })?;
    let nocm = cluster.wait_pod("nocm", "CreateContainerConfigError", |p| {
        waiting(p) == "CreateContainerConfigError"
    })?;
    assert_eq!(
        nocm["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "configmap \"absent\" not found"
    );
    let badcmd = cluster.wait_pod("badcmd", "a start failure", |p| {
        let c = &p["status"]["containerStatuses"][0];
        matches!(
            waiting(p).as_str(),
            "RunContainerError" | "CreateContainerError"
        ) || c["state"]["terminated"]["exitCode"]
            .as_i64()
            .is_some_and(|e| e != 0)
    })?;
    assert_ne!(phase(&badcmd), "Running");
    let events = cluster.k(&["describe", "pod", "novol"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = events;
    while !events.contains("FailedMount") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        events = cluster.k(&["describe", "pod", "novol"])?;
    }
    assert!(
        events.contains("FailedMount") && events.contains("configmap \"absent\" not found"),
        "{events}"
    );
    // The node is still healthy and runs good pods.
    cluster.k_stdin(&["apply", "-f", "-"], &pod("good", "Always", "sleep 3600"))?;
    cluster.wait_pod("good", "Running", |p| phase(p) == "Running")?;
    Ok(())
}
