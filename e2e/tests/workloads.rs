//! The controller manager end to end with stock kubectl, as a user drives it: Deployments
//! (create, scale, `set image`, `rollout status/history/undo/restart`, pause/resume), a
//! StatefulSet's ordinals, a DaemonSet per node, a Job to completion, cascading deletion in
//! each mode and namespace deletion. `skiff server` runs its scheduler and controller manager
//! in process; `skiff hollow-nodes` are the nodes (their pods report Running and Ready).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use skiff_testing::TestCluster;

/// Poll `check` until it yields a value (60 s at most).
fn wait<T>(what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pods_of(c: &TestCluster, selector: &str) -> Result<Vec<String>> {
    let out = c.k(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{end}{range .items[*]}{.metadata.name} {.spec.containers[0].image} {.status.phase}{\"\\n\"}{end}",
    ])?;
    Ok(out.lines().map(str::to_owned).collect())
}

#[test]
fn deployments_scale_roll_out_and_roll_back_with_kubectl() -> Result<()> {
    let c = TestCluster::start()?;
    let _nodes = c.hollow_nodes(3, &[])?;
    c.k(&[
        "create",
        "deployment",
        "web",
        "--image=registry.k8s.io/pause:3.10",
        "--replicas=3",
    ])?;
    let out = c.k(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    assert!(out.contains("successfully rolled out"), "{out}");
    let ready = c.k(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.readyReplicas}/{.status.availableReplicas}",
    ])?;
    assert_eq!(ready, "3/3");

    c.k(&["scale", "deployment", "web", "--replicas=5"])?;
    c.k(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    wait("5 running pods", || {
        let p = pods_of(&c, "app=web")?;
        Ok((p.len() == 5 && p.iter().all(|l| l.ends_with(" Running"))).then_some(()))
    })?;

    c.k(&[
        "set",
        "image",
        "deployment/web",
        "pause=registry.k8s.io/pause:3.9",
    ])?;
    let out = c.k(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    assert!(out.contains("successfully rolled out"), "{out}");
    wait("every pod on the new image", || {
        let p = pods_of(&c, "app=web")?;
        Ok(
            (p.len() == 5 && p.iter().all(|l| l.contains(" registry.k8s.io/pause:3.9 ")))
                .then_some(()),
        )
    })?;
    let history = c.k(&["rollout", "history", "deployment/web"])?;
    assert!(
        history.contains("REVISION") && history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    let rs = c.k(&["get", "rs", "-l", "app=web", "-o", "name"])?;
    assert_eq!(rs.lines().count(), 2, "old and new ReplicaSets: {rs}");

    c.k(&["rollout", "undo", "deployment/web"])?;
    c.k(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    wait("every pod back on the first image", || {
        let p = pods_of(&c, "app=web")?;
        Ok(
            (p.len() == 5 && p.iter().all(|l| l.contains(" registry.k8s.io/pause:3.10 ")))
                .then_some(()),
        )
    })?;
    let revision = c.k(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ])?;
    assert_eq!(revision, "3", "an undo is a new revision");

    // Paused: template changes wait for resume.
    c.k(&["rollout", "pause", "deployment/web"])?;
    c.k(&[
        "set",
        "image",
        "deployment/web",
        "pause=registry.k8s.io/pause:3.8",
    ])?;
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        pods_of(&c, "app=web")?
            .iter()
            .all(|l| !l.contains("pause:3.8")),
        "a paused deployment does not roll"
    );
    c.k(&["rollout", "resume", "deployment/web"])?;
    c.k(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    c.k(&["rollout", "restart", "deployment/web"])?;
    let out = c.k(&["rollout", "status", "deployment/web", "--timeout=60s"])?;
    assert!(out.contains("successfully rolled out"), "{out}");
    let describe = c.k(&["describe", "deployment", "web"])?;
    assert!(
        describe.contains("ScalingReplicaSet") && describe.contains("NewReplicaSetAvailable"),
        "{describe}"
    );
    Ok(())
}

#[test]
fn statefulsets_daemonsets_and_jobs_with_kubectl() -> Result<()> {
    let c = TestCluster::start()?;
    let _nodes = c.hollow_nodes(2, &[])?;
    let manifest = r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata: {annotations: {hollow.skiff.io/succeed-after-seconds: "1"}}
    spec:
      restartPolicy: Never
      containers: [{name: work, image: registry.k8s.io/pause:3.10}]
"#;
    c.k_stdin(&["apply", "-f", "-"], manifest)?;
    let out = c.k(&["rollout", "status", "statefulset/db", "--timeout=60s"])?;
    // Upstream defaults `rollingUpdate.partition` to 0, so kubectl reports a partitioned roll out.
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let names = c.k(&[
        "get",
        "pods",
        "-l",
        "app=db",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])?;
    assert_eq!(names, "db-0 db-1 db-2");
    let out = c.k(&["rollout", "status", "daemonset/agent", "--timeout=60s"])?;
    assert!(out.contains("successfully rolled out"), "{out}");
    let per_node = c.k(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
    ])?;
    let mut nodes: Vec<&str> = per_node.lines().collect();
    nodes.sort();
    assert_eq!(nodes, ["hollow-node-0", "hollow-node-1"]);
    c.k(&[
        "wait",
        "--for=condition=complete",
        "job/batch",
        "--timeout=60s",
    ])?;
    assert_eq!(
        c.k(&["get", "job", "batch", "-o", "jsonpath={.status.succeeded}"])?,
        "3"
    );
    // Scaling a StatefulSet down removes the highest ordinals first.
    c.k(&["scale", "statefulset", "db", "--replicas=1"])?;
    wait("db scaled to db-0", || {
        let names = c.k(&[
            "get",
            "pods",
            "-l",
            "app=db",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        Ok((names == "db-0").then_some(()))
    })?;
    Ok(())
}

#[test]
fn cascading_and_namespace_deletion_with_kubectl() -> Result<()> {
    let c = TestCluster::start()?;
    let _nodes = c.hollow_nodes(1, &[])?;
    for name in ["orphaned", "foreground", "background"] {
        c.k(&[
            "create",
            "deployment",
            name,
            "--image=registry.k8s.io/pause:3.10",
            "--replicas=2",
        ])?;
        c.k(&[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=60s",
        ])?;
    }
    c.k(&["delete", "deployment", "orphaned", "--cascade=orphan"])?;
    c.k(&["delete", "deployment", "foreground", "--cascade=foreground"])?;
    c.k(&["delete", "deployment", "background"])?;
    wait("dependents of the cascading deletes gone", || {
        let fg = pods_of(&c, "app=foreground")?;
        let bg = pods_of(&c, "app=background")?;
        let rs = c.k(&[
            "get",
            "rs",
            "-l",
            "app in (foreground,background)",
            "-o",
            "name",
        ])?;
        Ok((fg.is_empty() && bg.is_empty() && rs.is_empty()).then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pods_of(&c, "app=orphaned")?.len(), 2, "orphaned pods stay");
    let owner = c.k(&[
        "get",
        "rs",
        "-l",
        "app=orphaned",
        "-o",
        "jsonpath={.items[0].metadata.ownerReferences}",
    ])?;
    assert!(
        owner.is_empty(),
        "the orphaned ReplicaSet lost its owner: {owner}"
    );

    c.k(&["create", "namespace", "scratch"])?;
    c.k(&[
        "create",
        "deployment",
        "app",
        "-n",
        "scratch",
        "--image=registry.k8s.io/pause:3.10",
    ])?;
    c.k(&["create", "configmap", "settings", "-n", "scratch"])?;
    c.k(&[
        "rollout",
        "status",
        "deployment/app",
        "-n",
        "scratch",
        "--timeout=60s",
    ])?;
    c.k(&["delete", "namespace", "scratch", "--timeout=60s"])?;
    let gone = c.k_fail(&["get", "namespace", "scratch"])?;
    assert!(gone.contains("NotFound"), "{gone}");
    Ok(())
}
