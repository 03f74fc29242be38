//! Streaming with stock kubectl against a server with its own node: `kubectl logs` and its
//! options, `exec` (stdin with end-of-file, exit codes, a terminal and its size), `attach`,
//! `cp` both ways, `debug` (an ephemeral container in the target's process namespace),
//! `port-forward`, and `nodes/proxy`, over both protocols kubectl speaks
//! (WebSocket first, SPDY when told to fall back). The API server proxies each to the
//! kubelet, which uses containerd's streaming server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use skiff_testing::{BUSYBOX_IMAGE, NODE_NAME, TestCluster};

/// kubectl's switches back to the SPDY protocols.
const SPDY: &[(&str, &str)] = &[
    ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
    ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
];

fn container(name: &str, command: &str) -> Value {
    serde_json::json!({"name": name, "image": BUSYBOX_IMAGE, "command": ["sh", "-c", command]})
}

fn apply_pod(
    cluster: &TestCluster,
    name: &str,
    restart: &str,
    containers: Vec<Value>,
) -> Result<()> {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": NODE_NAME, "restartPolicy": restart,
                 "terminationGracePeriodSeconds": 1, "containers": containers},
    });
    cluster.k_stdin(&["apply", "-f", "-"], &pod.to_string())?;
    Ok(())
}

fn running(p: &Value) -> bool {
    p["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object()))
}

/// kubectl with a deadline (a hung stream fails the test instead of hanging it).
fn kubectl(
    cluster: &TestCluster,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Result<Output> {
    use std::io::Write;
    let mut cmd = cluster.command(Path::new("/usr/bin/timeout"));
    cmd.arg("30")
        .arg(skiff_testing::kubectl_binary())
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("HOME", cluster.data_dir())
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting kubectl")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("kubectl stdin")?;
        pipe.write_all(input)?;
    }
    Ok(child.wait_with_output()?)
}

fn ok(out: Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn kubectl_logs_with_its_options() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    apply_pod(
        &cluster,
        "web",
        "Always",
        vec![
            container("main", "echo one; echo two; echo three; sleep 3600"),
            container("side", "echo side-says-hi; sleep 3600"),
        ],
    )?;
    apply_pod(
        &cluster,
        "crash",
        "Always",
        vec![container(
            "main",
            "echo run-at-$(date +%s%N); sleep 0.5; exit 3",
        )],
    )?;
    cluster.wait_pod("web", "Running", running)?;
    // The containers wrote their lines before the pod reports Running only just.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.k(&["logs", "web", "-c", "main"])? != "one\ntwo\nthree\n" {
        if Instant::now() > deadline {
            bail!(
                "logs never showed the three lines: {:?}",
                cluster.k(&["logs", "web", "-c", "main"])?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        cluster.k(&["logs", "web", "-c", "main", "--tail=1"])?,
        "three\n"
    );
    assert_eq!(
        cluster.k(&["logs", "web", "-c", "main", "--limit-bytes=5"])?,
        "one\nt"
    );
    assert_eq!(
        cluster.k(&["logs", "web", "-c", "main", "--since=1h"])?,
        "one\ntwo\nthree\n"
    );
    assert_eq!(
        cluster.k(&[
            "logs",
            "web",
            "-c",
            "main",
            "--since-time=2099-01-01T00:00:00Z"
        ])?,
        ""
    );
    let stamped = cluster.k(&["logs", "web", "-c", "side", "--timestamps"])?;
    let (ts, rest) = stamped.trim_end().split_once(' ').context("a timestamp")?;
    assert_eq!(rest, "side-says-hi");
    assert!(ts.parse::<jiff_like::Rfc3339>().is_ok(), "{stamped}");
    let all = cluster.k(&["logs", "web", "--all-containers"])?;
    assert!(
        all.contains("three") && all.contains("side-says-hi"),
        "{all}"
    );
    // Without -c kubectl picks the first container.
    assert!(cluster.k(&["logs", "web"])?.contains("three"));

    let bad = cluster.k_fail(&["logs", "web", "-c", "nope"])?;
    assert!(
        bad.contains("container nope is not valid for pod web"),
        "{bad}"
    );
    let missing = cluster.k_fail(&["logs", "ghost"])?;
    assert!(missing.contains("pods \"ghost\" not found"), "{missing}");
    cluster.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"unscheduled"},"spec":{"schedulerName":"left-alone","containers":[{"name":"c","image":"x"}]}}"#,
    )?;
    let pending = cluster.k_fail(&["logs", "unscheduled"])?;
    assert!(
        pending.contains("pod unscheduled does not have a host assigned"),
        "{pending}"
    );

    // -f streams until the container exits.
    apply_pod(
        &cluster,
        "ticker",
        "Never",
        vec![container(
            "main",
            "sleep 1; for i in 1 2 3 4 5; do echo tick-$i; sleep 0.2; done",
        )],
    )?;
    cluster.wait_pod("ticker", "Running", running)?;
    let started = Instant::now();
    let followed = ok(
        kubectl(&cluster, &["logs", "-f", "ticker"], None, &[])?,
        "kubectl logs -f",
    )?;
    assert_eq!(followed, "tick-1\ntick-2\ntick-3\ntick-4\ntick-5\n");
    assert!(started.elapsed() < Duration::from_secs(15));

    // --previous shows the instance before the restart.
    let p = cluster.wait_pod("crash", "a restart", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
            && p["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object()
    })?;
    let previous = cluster.k(&["logs", "crash", "--previous"])?;
    assert!(previous.starts_with("run-at-"), "{previous}");
    let current = cluster.k(&["logs", "crash"]).unwrap_or_default();
    assert_ne!(previous, current, "{p}");
    let none = cluster.k_fail(&["logs", "web", "-c", "main", "--previous"])?;
    assert!(
        none.contains("previous terminated container \"main\" in pod \"web\" not found"),
        "{none}"
    );
    Ok(())
}

/// A tiny RFC 3339 check without another dependency: `YYYY-MM-DDTHH:MM:SS(.frac)Z`.
mod jiff_like {
    pub struct Rfc3339;
    impl std::str::FromStr for Rfc3339 {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let b = s.as_bytes();
            let digits = |r: std::ops::Range<usize>| {
                r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
            };
            let shape = b.len() >= 20
                && digits(0..4)
                && b[4] == b'-'
                && digits(5..7)
                && b[10] == b'T'
                && b[13] == b':'
                && s.ends_with('Z');
            if shape { Ok(Rfc3339) } else { Err(()) }
        }
    }
}

#[test]
fn kubectl_exec_attach_and_cp() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    apply_pod(
        &cluster,
        "web",
        "Always",
        vec![container("main", "sleep 3600")],
    )?;
    let attach = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echoer"},
        "spec": {"nodeName": NODE_NAME, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "stdin": true, "stdinOnce": true,
                                 "command": ["sh", "-c", "while read l; do echo got-$l; done; echo bye"]}]},
    });
    cluster.k_stdin(&["apply", "-f", "-"], &attach.to_string())?;
    cluster.wait_pod("web", "Running", running)?;

    for (protocol, env) in [("websocket", &[][..]), ("spdy", SPDY)] {
        let out = ok(
            kubectl(&cluster, &["exec", "web", "--", "echo", "hello"], None, env)?,
            protocol,
        )?;
        assert_eq!(out, "hello\n", "{protocol}");
        // stdin reaches the process, and its end-of-file too.
        let out = ok(
            kubectl(
                &cluster,
                &["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"],
                Some(b"abc\n"),
                env,
            )?,
            protocol,
        )?;
        assert_eq!(out, "abc\ndone\n", "{protocol}");
        // Exit codes and stderr.
        let failed = kubectl(
            &cluster,
            &["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 7"],
            None,
            env,
        )?;
        assert_eq!(failed.status.code(), Some(7), "{protocol}: {failed:?}");
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(
            stderr.contains("oops") && stderr.contains("command terminated with exit code 7"),
            "{protocol}: {stderr}"
        );
    }

    // A terminal: kubectl needs one on its own stdin; the size it reports reaches the container
    // (containerd applies it just after starting the process, hence the pause).
    let kubectl_bin = skiff_testing::kubectl_binary();
    let script = format!(
        "stty cols 123 rows 45; {} exec -it web -- sh -c 'sleep 1; stty size; tty'",
        kubectl_bin.display()
    );
    let mut cmd = cluster.command(Path::new("/usr/bin/timeout"));
    cmd.args(["30", "/usr/bin/script", "-qfec", &script, "/dev/null"])
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("HOME", cluster.data_dir())
        .stdin(Stdio::null());
    let tty = ok(cmd.output()?, "kubectl exec -it")?;
    assert!(tty.contains("45 123"), "{tty:?}");
    assert!(tty.contains("/dev/pts/"), "{tty:?}");

    // Errors the upstream way.
    let bad = cluster.k_fail(&["exec", "web", "-c", "nope", "--", "true"])?;
    assert!(
        bad.contains("container nope is not valid for pod web"),
        "{bad}"
    );
    let missing = cluster.k_fail(&["exec", "ghost", "--", "true"])?;
    assert!(missing.contains("pods \"ghost\" not found"), "{missing}");

    // cp both ways (tar through exec with stdin and its end).
    let local = cluster.data_dir().join("upload.txt");
    let content = "line one\nline two\n".repeat(2000);
    std::fs::write(&local, &content)?;
    let local_s = local.to_string_lossy().into_owned();
    ok(
        kubectl(
            &cluster,
            &["cp", &local_s, "web:/tmp/upload.txt"],
            None,
            &[],
        )?,
        "kubectl cp to the pod",
    )?;
    let inside = ok(
        kubectl(
            &cluster,
            &["exec", "web", "--", "cat", "/tmp/upload.txt"],
            None,
            &[],
        )?,
        "cat",
    )?;
    assert_eq!(inside, content);
    let back = cluster.data_dir().join("download.txt");
    let back_s = back.to_string_lossy().into_owned();
    ok(
        kubectl(&cluster, &["cp", "web:/tmp/upload.txt", &back_s], None, &[])?,
        "kubectl cp from the pod",
    )?;
    assert_eq!(std::fs::read_to_string(&back)?, content);

    // attach: stdin goes to the container's, output comes back, and the session ends with it.
    cluster.wait_pod("echoer", "Running", running)?;
    let out = ok(
        kubectl(&cluster, &["attach", "-i", "echoer"], Some(b"x\ny\n"), &[])?,
        "kubectl attach",
    )?;
    assert!(
        out.contains("got-x") && out.contains("got-y") && out.contains("bye"),
        "{out:?}"
    );
    Ok(())
}

/// Start `kubectl port-forward` and wait until it listens; returns the child.
#[test]
fn kubectl_debug_runs_an_ephemeral_container_beside_its_target() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    apply_pod(
        &cluster,
        "app",
        "Always",
        vec![container("main", "sleep 3600")],
    )?;
    cluster.wait_pod("app", "Running", running)?;
    let debug = [
        "debug",
        "app",
        "--image",
        BUSYBOX_IMAGE,
        "--image-pull-policy=IfNotPresent",
        "--profile=general",
        "--container=debugger",
        "--target=main",
        "--",
        "sh",
        "-c",
        "ps -o pid,args",
    ];
    ok(kubectl(&cluster, &debug, None, &[])?, "kubectl debug")?;
    let pod = cluster.wait_pod("app", "the debugger to finish", |p| {
        p["status"]["ephemeralContainerStatuses"][0]["state"]["terminated"].is_object()
    })?;
    let status = &pod["status"]["ephemeralContainerStatuses"][0];
    assert_eq!(status["name"], "debugger");
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{status}");
    assert_eq!(status["ready"], false);
    // The pod itself is untouched: still Running, Ready, not restarted.
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    // It joined the target's process namespace: the target's process is PID 1 there.
    let logs = cluster.k(&["logs", "app", "-c", "debugger"])?;
    assert!(
        logs.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sleep", "3600"]),
        "{logs}"
    );
    // Ephemeral containers run once: a later sync does not start it again.
    std::thread::sleep(Duration::from_secs(2));
    let after = cluster.k_json(&["get", "pod", "app"])?;
    assert_eq!(
        after["status"]["ephemeralContainerStatuses"][0]["state"]["terminated"]["containerID"],
        status["state"]["terminated"]["containerID"]
    );
    assert_eq!(
        after["status"]["ephemeralContainerStatuses"][0]["restartCount"],
        0
    );
    Ok(())
}

fn port_forward(
    cluster: &TestCluster,
    local: u16,
    env: &[(&str, &str)],
) -> Result<std::process::Child> {
    let mut cmd = cluster.command(&skiff_testing::kubectl_binary());
    cmd.args(["port-forward", "pod/httpd", &format!("{local}:8080")])
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("HOME", cluster.data_dir())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().context("port-forward stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Forwarding from") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        bail!("kubectl port-forward did not start listening");
    }
    Ok(child)
}

#[test]
fn kubectl_port_forward_and_node_proxy() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    apply_pod(
        &cluster,
        "httpd",
        "Always",
        vec![container(
            "main",
            "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        )],
    )?;
    cluster.wait_pod("httpd", "Running", running)?;
    for (i, env) in [&[][..], SPDY].into_iter().enumerate() {
        let local = 18080 + i as u16;
        let mut child = port_forward(&cluster, local, env)?;
        // Two requests: each is its own forwarded connection.
        for _ in 0..2 {
            let out = cluster
                .command(Path::new("/usr/bin/curl"))
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    &format!("http://127.0.0.1:{local}/"),
                ])
                .output()?;
            let _ = (&out.status, &out.stderr);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "hello-from-pod\n",
                "{env:?}: {out:?}"
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    // nodes/proxy reaches the kubelet's own API.
    let base = format!("/api/v1/nodes/{NODE_NAME}/proxy");
    assert_eq!(
        cluster.k(&["get", "--raw", &format!("{base}/healthz")])?,
        "ok"
    );
    let pods: Value =
        serde_json::from_str(&cluster.k(&["get", "--raw", &format!("{base}/pods")])?)?;
    assert_eq!(pods["kind"], "PodList");
    assert!(
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["name"] == "httpd")
    );
    let running_pods: Value =
        serde_json::from_str(&cluster.k(&["get", "--raw", &format!("{base}/runningpods/")])?)?;
    let httpd = running_pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "httpd")
        .context("httpd among the running pods")?;
    assert_eq!(httpd["spec"]["containers"][0]["name"], "main");
    Ok(())
}

#[test]
fn an_unreachable_kubelet_is_a_clear_error() -> Result<()> {
    // A control plane alone, with a node whose kubelet address answers nothing.
    let cluster = TestCluster::start()?;
    let port = skiff_testing::free_port();
    cluster.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"gone"}}"#,
    )?;
    cluster.k(&[
        "patch",
        "node",
        "gone",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
        ),
    ])?;
    cluster.k_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"gone","containers":[{"name":"c","image":"x"}]}}"#,
    )?;
    let err = cluster.k_fail(&["logs", "p"])?;
    assert!(
        err.contains(&format!("error dialing backend: dial tcp 127.0.0.1:{port}")),
        "{err}"
    );
    let bad = cluster.k_fail(&["logs", "p", "-c", "other"])?;
    assert!(
        bad.contains("container other is not valid for pod p"),
        "{bad}"
    );
    Ok(())
}
