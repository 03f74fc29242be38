//! Stock kubectl against a real `skiff server`: discovery, CRUD on several kinds, every output
//! format, selectors, patches and errors — what a new user tries first.

use anyhow::Result;
use serde_json::Value;
use skiff_testing::TestCluster;

#[test]
fn cluster_info_version_and_discovery() -> Result<()> {
    let c = TestCluster::start()?;
    let info = c.k(&["cluster-info"])?;
    assert!(
        info.contains("Kubernetes control plane is running at"),
        "{info}"
    );
    let version = c.k(&["version", "-o", "json"])?;
    let v: Value = serde_json::from_str(&version)?;
    assert_eq!(v["serverVersion"]["major"], "1");
    assert!(
        v["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.35")
    );

    let resources = c.k(&["api-resources"])?;
    for needle in [
        "pods",
        "deployments",
        "customresourcedefinitions",
        "leases",
        "endpointslices",
    ] {
        assert!(
            resources.contains(needle),
            "api-resources lacks {needle}:\n{resources}"
        );
    }
    let short = c.k(&["api-resources", "-o", "name", "--namespaced=false"])?;
    assert!(short.lines().any(|l| l == "nodes"), "{short}");
    assert!(!short.lines().any(|l| l == "pods"), "{short}");
    let versions = c.k(&["api-versions"])?;
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "rbac.authorization.k8s.io/v1",
        "apiextensions.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "api-versions lacks {gv}:\n{versions}"
        );
    }
    Ok(())
}

#[test]
fn default_namespaces_and_kubernetes_service() -> Result<()> {
    let c = TestCluster::start()?;
    let ns = c.k(&["get", "namespaces", "-o", "name"])?;
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
    let svc = c.k_json(&["get", "service", "kubernetes", "-n", "default"])?;
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1");
    let table = c.k(&["get", "svc", "kubernetes"])?;
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("CLUSTER-IP") && table.contains("443/TCP"),
        "{table}"
    );
    Ok(())
}

#[test]
fn configmap_lifecycle_with_every_output_format() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&[
        "create",
        "configmap",
        "app",
        "--from-literal=color=blue",
        "--from-literal=size=L",
    ])?;
    let cm = c.k_json(&["get", "cm", "app"])?;
    assert_eq!(cm["data"]["color"], "blue");
    assert!(
        cm["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(
        cm["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()?
            > 0
    );
    assert!(cm["metadata"]["creationTimestamp"].as_str().is_some());

    let yaml = c.k(&["get", "cm", "app", "-o", "yaml"])?;
    assert!(yaml.contains("color: blue"), "{yaml}");
    assert_eq!(
        c.k(&["get", "cm", "app", "-o", "jsonpath={.data.size}"])?,
        "L"
    );
    assert_eq!(
        c.k(&["get", "cm", "app", "-o", "name"])?.trim(),
        "configmap/app"
    );
    let cols = c.k(&[
        "get",
        "cm",
        "app",
        "-o",
        "custom-columns=N:.metadata.name,C:.data.color",
        "--no-headers",
    ])?;
    assert_eq!(cols.split_whitespace().collect::<Vec<_>>(), ["app", "blue"]);
    let table = c.k(&["get", "cm", "app"])?;
    assert!(table.contains("DATA") && table.contains("AGE"), "{table}");

    c.k(&["label", "cm", "app", "tier=web"])?;
    c.k(&["annotate", "cm", "app", "note=hello"])?;
    let by_label = c.k(&["get", "cm", "-l", "tier=web", "-o", "name"])?;
    assert_eq!(by_label.trim(), "configmap/app");
    assert!(
        !c.k(&["get", "cm", "-l", "tier!=web", "-o", "name"])?
            .contains("configmap/app")
    );
    assert_eq!(
        c.k(&[
            "get",
            "cm",
            "-l",
            "tier in (web,api),!missing",
            "-o",
            "name"
        ])?
        .trim(),
        "configmap/app"
    );

    c.k(&[
        "patch",
        "cm",
        "app",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ])?;
    c.k(&[
        "patch",
        "cm",
        "app",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/shape","value":"round"}]"#,
    ])?;
    c.k(&["patch", "cm", "app", "-p", r#"{"data":{"size":"XL"}}"#])?;
    let cm = c.k_json(&["get", "cm", "app"])?;
    assert_eq!(
        cm["data"],
        serde_json::json!({ "color": "green", "size": "XL", "shape": "round" })
    );

    c.k(&["delete", "cm", "app"])?;
    let err = c.k_fail(&["get", "cm", "app"])?;
    assert!(err.contains("configmaps \"app\" not found"), "{err}");
    Ok(())
}

#[test]
fn deployment_apply_scale_and_server_side_apply() -> Result<()> {
    let c = TestCluster::start()?;
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: { app: web }
spec:
  replicas: 2
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports: [{ containerPort: 80 }]
        env: [{ name: A, value: "1" }]
"#;
    c.k_stdin(&["apply", "-f", "-"], manifest)?;
    let d = c.k_json(&["get", "deploy", "web"])?;
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    // Re-applying a changed manifest merges containers by name (strategic merge patch).
    let changed = manifest
        .replace("nginx:1.27", "nginx:1.28")
        .replace("value: \"1\"", "value: \"2\"");
    c.k_stdin(&["apply", "-f", "-"], &changed)?;
    let d = c.k_json(&["get", "deploy", "web"])?;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "2"
    );
    assert_eq!(d["metadata"]["generation"], 2);

    c.k(&["scale", "deploy", "web", "--replicas=5"])?;
    assert_eq!(
        c.k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])?,
        "5"
    );
    let table = c.k(&["get", "deploy", "web", "-o", "wide"])?;
    for col in [
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ] {
        assert!(table.contains(col), "{table}");
    }

    // `kubectl scale` made its manager own .spec.replicas: a server-side apply that changes
    // it conflicts, as upstream, until it forces.
    let three = changed.replace("replicas: 2", "replicas: 3");
    let out = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&three))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("conflict") && stderr.contains(".spec.replicas"),
        "{stderr}"
    );
    c.k_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &three,
    )?;
    assert_eq!(
        c.k(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])?,
        "3"
    );
    Ok(())
}

#[test]
fn services_get_cluster_ips_and_node_ports() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&["create", "service", "nodeport", "np", "--tcp=80:8080"])?;
    let svc = c.k_json(&["get", "svc", "np"])?;
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.43."), "{ip}");
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    c.k(&[
        "create",
        "service",
        "clusterip",
        "headless",
        "--clusterip=None",
    ])?;
    assert_eq!(
        c.k(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIP}"])?,
        "None"
    );
    let err = c.k_fail(&[
        "create",
        "service",
        "clusterip",
        "clash",
        "--tcp=80",
        "--clusterip",
        ip,
    ])?;
    assert!(err.contains("already allocated"), "{err}");
    Ok(())
}

#[test]
fn bad_input_gets_upstream_errors_and_stores_nothing() -> Result<()> {
    let c = TestCluster::start()?;
    let err = c.k_fail(&["create", "configmap", "Bad_Name"])?;
    assert!(
        err.contains("is invalid") && err.contains("RFC 1123"),
        "{err}"
    );
    c.k(&["create", "configmap", "dup"])?;
    let err = c.k_fail(&["create", "configmap", "dup"])?;
    assert!(err.contains("configmaps \"dup\" already exists"), "{err}");
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox","bogus":1}]}}"#;
    let err = c.kubectl_stdin(&["create", "--validate=strict", "-f", "-"], Some(pod))?;
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        stderr.contains("unknown field") && stderr.contains("bogus"),
        "{stderr}"
    );
    assert!(c.k_fail(&["get", "pod", "p"])?.contains("not found"));
    let no_image = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p2"},"spec":{"containers":[{"name":"c"}]}}"#;
    let out = c.kubectl_stdin(&["create", "-f", "-"], Some(no_image))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.containers[0].image: Required value"),
        "{stderr}"
    );
    let err = c.k_fail(&["get", "pods", "--field-selector", "spec.bogus=1"])?;
    assert!(err.contains("field label not supported"), "{err}");
    Ok(())
}

#[test]
fn pods_print_like_upstream_and_select_by_field() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&[
        "run",
        "box",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ])?;
    let table = c.k(&["get", "pods"])?;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(
        table.contains("box") && table.contains("0/1") && table.contains("Pending"),
        "{table}"
    );
    let wide = c.k(&["get", "pods", "-o", "wide"])?;
    assert!(
        wide.contains("NOMINATED NODE") && wide.contains("READINESS GATES"),
        "{wide}"
    );
    assert_eq!(
        c.k(&[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Pending",
            "-o",
            "name"
        ])?
        .trim(),
        "pod/box"
    );
    assert_eq!(
        c.k(&[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name"
        ])?
        .trim(),
        ""
    );
    let pod = c.k_json(&["get", "pod", "box"])?;
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    c.k(&["delete", "pod", "box", "--wait=true", "--timeout=20s"])?;
    Ok(())
}

#[test]
fn pagination_and_chunked_lists() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&["create", "namespace", "many"])?;
    let mut manifest = String::new();
    for i in 0..25 {
        manifest.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: cm-{i:02}, namespace: many }}\n"));
    }
    c.k_stdin(&["apply", "-f", "-"], &manifest)?;
    let all = c.k(&["get", "cm", "-n", "many", "-o", "name", "--chunk-size=7"])?;
    assert_eq!(
        all.lines()
            .filter(|l| l.starts_with("configmap/cm-"))
            .count(),
        25,
        "{all}"
    );
    let raw = c.k(&[
        "get",
        "--raw",
        "/api/v1/namespaces/many/configmaps?limit=10",
    ])?;
    let page: Value = serde_json::from_str(&raw)?;
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let token = page["metadata"]["continue"].as_str().unwrap();
    // The 25 ConfigMaps, and kube-root-ca.crt once the controller manager published it.
    let at_page: Value = serde_json::from_str(&c.k(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/many/configmaps?resourceVersion={}&resourceVersionMatch=Exact",
            page["metadata"]["resourceVersion"].as_str().unwrap()
        ),
    ])?)?;
    let total = at_page["items"].as_array().unwrap().len();
    assert!((25..=26).contains(&total), "{total}");
    assert_eq!(page["metadata"]["remainingItemCount"], total - 10);
    let raw = c.k(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/many/configmaps?limit=10&continue={token}"),
    ])?;
    let page2: Value = serde_json::from_str(&raw)?;
    assert_eq!(page2["items"][0]["metadata"]["name"], "cm-10");
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        page["metadata"]["resourceVersion"]
    );
    Ok(())
}

#[test]
fn data_survives_restart_and_kill() -> Result<()> {
    let mut c = TestCluster::start()?;
    c.k(&["create", "configmap", "persist", "--from-literal=k=v"])?;
    let rv_before: i64 = c
        .k(&[
            "get",
            "cm",
            "persist",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])?
        .parse()?;
    let status = c.terminate()?;
    assert!(status.success(), "clean shutdown exits 0, got {status}");
    c.restart()?;
    assert_eq!(
        c.k(&["get", "cm", "persist", "-o", "jsonpath={.data.k}"])?,
        "v"
    );
    c.k(&["create", "configmap", "after-restart"])?;
    let rv_after: i64 = c
        .k(&[
            "get",
            "cm",
            "after-restart",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])?
        .parse()?;
    assert!(
        rv_after > rv_before,
        "revisions stay monotonic across restarts"
    );
    c.kill()?;
    c.restart()?;
    assert_eq!(
        c.k(&["get", "cm", "after-restart", "-o", "name"])?.trim(),
        "configmap/after-restart"
    );
    Ok(())
}
