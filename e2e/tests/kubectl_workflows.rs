//! The everyday kubectl workflows beyond get/create: replace, edit, diff, wait, watch (`-w`),
//! describe, deletecollection, server-side dry-run, server-side apply conflicts, and the raw
//! error classes (400, 405, 409, 413) a client can provoke.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use skiff_testing::{TestCluster, kubectl_binary};

#[test]
fn replace_edit_diff_describe_and_stale_updates() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&["create", "configmap", "cfg", "--from-literal=mode=fast"])?;
    let mut cm = c.k_json(&["get", "cm", "cfg"])?;
    let stale_rv = cm["metadata"]["resourceVersion"].clone();

    cm["data"]["mode"] = "slow".into();
    c.k_stdin(&["replace", "-f", "-"], &cm.to_string())?;
    assert_eq!(
        c.k(&["get", "cm", "cfg", "-o", "jsonpath={.data.mode}"])?,
        "slow"
    );

    // Replacing with the resourceVersion read before is a 409 Conflict.
    cm["data"]["mode"] = "other".into();
    cm["metadata"]["resourceVersion"] = stale_rv;
    let out = c.kubectl_stdin(&["replace", "-f", "-"], Some(&cm.to_string()))?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the object has been modified; please apply your changes to the latest version and try again"),
        "{stderr}"
    );

    // `kubectl edit` with a scripted editor.
    let out = c.kubectl_with(
        &["edit", "cm", "cfg"],
        None,
        &[("KUBE_EDITOR", "sed -i s/mode:\\ slow/mode:\\ edited/")],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.k(&["get", "cm", "cfg", "-o", "jsonpath={.data.mode}"])?,
        "edited"
    );

    // `kubectl diff` exits 1 when the live object differs, 0 when it matches.
    let wanted = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg","namespace":"default"},"data":{"mode":"diffed"}}"#;
    let out = c.kubectl_stdin(&["diff", "-f", "-"], Some(wanted))?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("+  mode: diffed"));
    c.k_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        wanted,
    )?;
    let out = c.kubectl_stdin(
        &["diff", "--server-side", "--force-conflicts", "-f", "-"],
        Some(wanted),
    )?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let described = c.k(&["describe", "cm", "cfg"])?;
    assert!(
        described.contains("Name:") && described.contains("diffed"),
        "{described}"
    );
    Ok(())
}

#[test]
fn wait_watch_and_delete_collection() -> Result<()> {
    let c = TestCluster::start()?;
    let mut watcher = Command::new(kubectl_binary())
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", c.data_dir())
        .args([
            "get",
            "configmaps",
            "-l",
            "batch=1",
            "-w",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(800));
    for i in 0..3 {
        c.k(&["create", "configmap", &format!("item-{i}")])?;
        c.k(&["label", "cm", &format!("item-{i}"), "batch=1"])?;
    }
    c.k(&[
        "wait",
        "--for=jsonpath={.metadata.labels.batch}=1",
        "cm/item-2",
        "--timeout=10s",
    ])?;
    c.k(&["delete", "cm", "-l", "batch=1"])?;
    std::thread::sleep(Duration::from_millis(800));
    watcher.kill()?;
    let mut seen = String::new();
    watcher.stdout.take().unwrap().read_to_string(&mut seen)?;
    // Table output with an EVENT column: "ADDED   item-0   0   0s".
    let saw = |event: &str, name: &str| {
        seen.lines().any(|l| {
            let mut cols = l.split_whitespace();
            cols.next() == Some(event) && cols.next() == Some(name)
        })
    };
    for i in 0..3 {
        // Labelling moves the object into the selection: ADDED, not MODIFIED.
        assert!(saw("ADDED", &format!("item-{i}")), "{seen}");
        assert!(saw("DELETED", &format!("item-{i}")), "{seen}");
    }
    assert!(
        c.k(&["get", "cm", "-l", "batch=1", "-o", "name"])?
            .trim()
            .is_empty()
    );
    // `kubectl wait --for=delete` returns at once for something already gone.
    c.k(&["create", "configmap", "short-lived"])?;
    c.k(&["delete", "cm", "short-lived", "--wait=false"])?;
    c.k(&["wait", "--for=delete", "cm/short-lived", "--timeout=10s"])?;
    Ok(())
}

#[test]
fn server_side_dry_run_and_apply_conflicts() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&["create", "configmap", "dry", "--dry-run=server"])?;
    assert!(c.k_fail(&["get", "cm", "dry"])?.contains("not found"));

    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: api }
spec:
  replicas: 2
  selector: { matchLabels: { app: api } }
  template:
    metadata: { labels: { app: api } }
    spec: { containers: [{ name: app, image: "busybox:1" }] }
"#;
    c.k_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=team-a",
            "-f",
            "-",
        ],
        manifest,
    )?;
    let d = c.k_json(&["get", "deploy", "api", "--show-managed-fields"])?;
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"team-a"), "{managers:?}");

    // Another manager changing a field team-a owns conflicts...
    let other = manifest.replace("replicas: 2", "replicas: 4");
    let out = c.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=team-b",
            "-f",
            "-",
        ],
        Some(&other),
    )?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("conflict") && stderr.contains(".spec.replicas"),
        "{stderr}"
    );
    assert!(stderr.contains("team-a"), "{stderr}");
    assert_eq!(
        c.k(&["get", "deploy", "api", "-o", "jsonpath={.spec.replicas}"])?,
        "2"
    );
    // ...until it forces.
    c.k_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=team-b",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &other,
    )?;
    assert_eq!(
        c.k(&["get", "deploy", "api", "-o", "jsonpath={.spec.replicas}"])?,
        "4"
    );

    // A field team-a stops applying (and nobody else owns) is removed.
    let without_label = manifest.replace(
        "metadata: { name: api }",
        "metadata: { name: api, labels: { tier: x } }",
    );
    c.k_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=team-a",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &without_label,
    )?;
    assert_eq!(
        c.k(&[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ])?,
        "x"
    );
    c.k_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=team-a",
            "--force-conflicts",
            "-f",
            "-",
        ],
        manifest,
    )?;
    assert_eq!(
        c.k(&[
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ])?,
        ""
    );
    Ok(())
}

#[test]
fn raw_error_classes() -> Result<()> {
    let c = TestCluster::start()?;
    let dir = c.data_dir().to_owned();
    let status_of = |out: &std::process::Output| -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // 400: a body that is not JSON.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{not json")?;
    let out = c.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        bad.to_str().unwrap(),
    ])?;
    assert!(!out.status.success());
    assert!(
        status_of(&out).contains("BadRequest") || status_of(&out).contains("400"),
        "{}",
        status_of(&out)
    );

    // 405: POST to a named object.
    let cm = dir.join("cm.json");
    std::fs::write(
        &cm,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    )?;
    let out = c.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps/x",
        "-f",
        cm.to_str().unwrap(),
    ])?;
    assert!(!out.status.success());
    assert!(
        status_of(&out).contains("MethodNotAllowed") || status_of(&out).contains("405"),
        "{}",
        status_of(&out)
    );

    // 413: over 3 MiB.
    let big = dir.join("big.json");
    let payload = "x".repeat(3 * 1024 * 1024 + 10);
    std::fs::write(
        &big,
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{payload}"}}}}"#
        ),
    )?;
    let out = c.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        big.to_str().unwrap(),
    ])?;
    assert!(!out.status.success());
    assert!(
        status_of(&out).contains("413") || status_of(&out).contains("too large"),
        "{}",
        status_of(&out)
    );

    // Nothing of the above was stored.
    let names = c.k(&["get", "cm", "-o", "name"])?;
    assert!(
        !names.contains("configmap/x") && !names.contains("configmap/big"),
        "{names}"
    );

    // A well-formed raw create works, and the Status of a 404 has upstream's shape.
    c.k(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        cm.to_str().unwrap(),
    ])?;
    let out = c.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps/missing",
    ])?;
    assert!(!out.status.success());
    let status: Value = serde_json::from_str(&c.k(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps/x",
    ])?)?;
    assert_eq!(status["metadata"]["name"], "x");
    Ok(())
}

#[test]
fn selectors_on_events_secrets_and_nodes() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&["create", "secret", "generic", "plain", "--from-literal=a=b"])?;
    c.k(&[
        "create",
        "secret",
        "docker-registry",
        "reg",
        "--docker-server=r.example",
        "--docker-username=u",
        "--docker-password=p",
    ])?;
    assert_eq!(
        c.k(&[
            "get",
            "secrets",
            "--field-selector",
            "type=kubernetes.io/dockerconfigjson",
            "-o",
            "name"
        ])?
        .trim(),
        "secret/reg"
    );
    let event = r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e1"},"involvedObject":{"kind":"Pod","name":"web-1","namespace":"default"},"reason":"Started","message":"started","type":"Normal"}"#;
    c.k_stdin(&["create", "-f", "-"], event)?;
    let selected = c.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Pod,involvedObject.name=web-1",
        "-o",
        "name",
    ])?;
    assert_eq!(selected.trim(), "event/e1");
    assert!(
        c.k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=other",
            "-o",
            "name"
        ])?
        .trim()
        .is_empty()
    );
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"node-role.kubernetes.io/worker":""}}}"#;
    c.k_stdin(&["create", "-f", "-"], node)?;
    let nodes = c.k(&["get", "nodes"])?;
    let header: Vec<&str> = nodes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert!(nodes.contains("worker"), "{nodes}");
    c.k(&["cordon", "n1"])?;
    assert_eq!(
        c.k(&[
            "get",
            "nodes",
            "--field-selector",
            "spec.unschedulable=true",
            "-o",
            "name"
        ])?
        .trim(),
        "node/n1"
    );
    Ok(())
}

#[test]
fn binding_assigns_a_pod_exactly_once() -> Result<()> {
    let c = TestCluster::start()?;
    c.k_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
            "spec":{"containers":[{"name":"c","image":"busybox"}]}}"#,
    )?;
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p","annotations":{"scheduled-by":"test"}},
        "target":{"apiVersion":"v1","kind":"Node","name":"node-a"}}"#;
    c.k_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/p/binding",
            "-f",
            "-",
        ],
        binding,
    )?;
    let pod = c.k_json(&["get", "pod", "p"])?;
    assert_eq!(pod["spec"]["nodeName"], "node-a");
    assert_eq!(pod["metadata"]["annotations"]["scheduled-by"], "test");
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "True");
    assert!(scheduled, "{pod}");
    // Field selectors see the binding.
    assert_eq!(
        c.k(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=node-a",
            "-o",
            "name"
        ])?
        .trim(),
        "pod/p"
    );

    // A second binding is refused and changes nothing.
    let again = binding.replace("node-a", "node-b");
    let out = c.kubectl_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/p/binding",
            "-f",
            "-",
        ],
        Some(&again),
    )?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already assigned"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.k(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"])?,
        "node-a"
    );
    Ok(())
}

#[test]
fn kubectl_debug_adds_ephemeral_containers_only() -> Result<()> {
    let c = TestCluster::start()?;
    c.k(&["run", "app", "--image=busybox:1", "--restart=Never"])?;
    c.k(&[
        "debug",
        "app",
        "--image=busybox:1",
        "-c",
        "dbg",
        "--profile=general",
    ])?;
    let pod = c.k_json(&["get", "pod", "app"])?;
    let ephemeral = &pod["spec"]["ephemeralContainers"][0];
    assert_eq!(ephemeral["name"], "dbg");
    assert_eq!(ephemeral["terminationMessagePolicy"], "File");
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox:1");

    // The subresource, as kubectl would PUT it.
    let replace_ephemeral = |pod: &serde_json::Value| {
        c.kubectl_stdin(
            &[
                "replace",
                "--raw",
                "/api/v1/namespaces/default/pods/app/ephemeralcontainers",
                "-f",
                "-",
            ],
            Some(&pod.to_string()),
        )
    };
    // Removing it, or changing anything else through the subresource, is refused.
    let mut edited = pod.clone();
    edited["spec"]["ephemeralContainers"] = serde_json::json!([]);
    let out = replace_ephemeral(&edited)?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not be removed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sneaky = pod.clone();
    sneaky["spec"]["containers"][0]["image"] = "busybox:2".into();
    replace_ephemeral(&sneaky)?;
    assert_eq!(
        c.k(&[
            "get",
            "pod",
            "app",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ])?,
        "busybox:1"
    );

    // What the pod could come to rely on is refused, as is a target that does not exist.
    let mut probing = pod.clone();
    probing["spec"]["ephemeralContainers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "bad", "image": "busybox:1", "ports": [{ "containerPort": 80 }],
            "readinessProbe": { "exec": { "command": ["true"] } },
            "targetContainerName": "nope",
        }));
    let out = replace_ephemeral(&probing)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for needle in [
        "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
        "spec.ephemeralContainers[1].readinessProbe: Forbidden",
        "spec.ephemeralContainers[1].targetContainerName: Not found: \"nope\"",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    // And a pod cannot be created with ephemeral containers.
    let mut fresh = pod.clone();
    fresh["metadata"] = serde_json::json!({ "name": "born-debugged" });
    fresh.as_object_mut().unwrap().remove("status");
    let out = c.kubectl_stdin(&["create", "-f", "-"], Some(&fresh.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.ephemeralContainers: Forbidden: cannot be set on create"),
        "{stderr}"
    );
    Ok(())
}

/// `kind: List` manifests are validated on the client against the protobuf OpenAPI v2
/// document (kubectl cannot ask the server to validate a List): good items are applied, a bad
/// item gets kubectl's own validation errors and nothing of the manifest is written.
#[test]
fn lists_are_validated_by_kubectl_against_openapi_v2() -> Result<()> {
    let c = TestCluster::start_with(&["--disable-controller-manager", "--disable-scheduler"])?;
    let good = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n  data: {k: v}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n  spec:\n    ports: [{port: 80, targetPort: web}]\n";
    let out = c.k_stdin(&["apply", "-f", "-"], good)?;
    assert!(
        out.contains("configmap/a created") && out.contains("service/s created"),
        "{out}"
    );
    let out = c.k_stdin(&["apply", "--validate=strict", "-f", "-"], good)?;
    assert!(out.contains("configmap/a unchanged"), "{out}");

    let bad = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n  bogus: 1\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n  spec:\n    replicas: three\n    selector: {matchLabels: {app: d}}\n    template:\n      metadata: {labels: {app: d}}\n      spec:\n        containers: [{name: c, image: busybox}]\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(bad))?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains(r#"unknown field "bogus" in io.k8s.api.core.v1.ConfigMap"#)
            && stderr.contains(
                r#"invalid type for io.k8s.api.apps.v1.DeploymentSpec.replicas: got "string", expected "integer""#
            ),
        "{stderr}"
    );
    assert!(c.k_fail(&["get", "configmap", "b"])?.contains("NotFound"));
    assert!(c.k_fail(&["get", "deployment", "d"])?.contains("NotFound"));

    // The document itself, as kubectl fetches it.
    let out = Command::new(kubectl_binary())
        .env("KUBECONFIG", c.kubeconfig())
        .args(["get", "--raw", "/openapi/v2"])
        .output()?;
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert!(json["definitions"]["io.k8s.api.core.v1.ConfigMap"].is_object());
    Ok(())
}
