//! The cloud-controller roles with the built-in `local` provider, seen through stock kubectl:
//! a node registers with the `uninitialized` taint and the cloud node controller initializes
//! it (provider ID, instance-type and topology labels, addresses); Services of `type:
//! LoadBalancer` get the nodes' addresses as EXTERNAL-IP, the cleanup finalizer and upstream's
//! events, and are cleaned up on type change and deletion; and pods on two nodes reach each
//! other through the routes the route controller publishes and the kubelets program, with the
//! client's pod IP as the source the server sees.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use skiff_testing::{AGENT_IP, BUSYBOX_IMAGE, NODE_IP, NODE_NAME, TestCluster};

/// A documentation address (TEST-NET-3) published as the node's external address: only ever
/// written into objects, never sent traffic.
const EXTERNAL_IP: &str = "203.0.113.10";

/// Poll `check` until it yields a value (60 s at most: the machine is shared and slow).
fn wait<T>(what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            match last_err {
                Some(e) => bail!("timed out waiting for {what}: {e:#}"),
                None => bail!("timed out waiting for {what}"),
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The reasons of the events about an object, oldest first.
fn event_reasons(c: &TestCluster, namespace: &str, name: &str) -> Result<Vec<String>> {
    let events = c.k_json(&[
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "--sort-by=.metadata.creationTimestamp",
    ])?;
    Ok(events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect())
}

fn condition<'v>(node: &'v Value, type_: &str) -> Option<&'v Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[test]
fn nodes_are_initialized_and_load_balancers_publish_their_addresses() -> Result<()> {
    let c = TestCluster::with_node_flags(&[
        "--node-zone",
        "zone-a",
        "--node-region",
        "region-1",
        "--node-external-ip",
        EXTERNAL_IP,
    ])?;

    // Node initialization: the taint the kubelet registered with is gone and the provider's
    // facts are on the node.
    let node = c.k_json(&["get", "node", NODE_NAME])?;
    let taints = node["spec"]["taints"].to_string();
    assert!(!taints.contains("uninitialized"), "{taints}");
    assert_eq!(node["spec"]["providerID"], format!("skiff://{NODE_NAME}"));
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["node.kubernetes.io/instance-type"], "skiff");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
    assert_eq!(labels["topology.kubernetes.io/region"], "region-1");
    assert_eq!(labels["failure-domain.beta.kubernetes.io/zone"], "zone-a");
    let addresses: Vec<(String, String)> = node["status"]["addresses"]
        .as_array()
        .context("addresses")?
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap_or("").to_owned(),
                a["address"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        addresses.contains(&("InternalIP".into(), NODE_IP.into()))
            && addresses.contains(&("ExternalIP".into(), EXTERNAL_IP.into()))
            && addresses.contains(&("Hostname".into(), NODE_NAME.into())),
        "{addresses:?}"
    );
    assert_eq!(
        node["metadata"]["annotations"]["alpha.kubernetes.io/provided-node-ip"],
        NODE_IP
    );
    let shown = c.k(&[
        "get",
        "nodes",
        "-L",
        "topology.kubernetes.io/zone,node.kubernetes.io/instance-type",
    ])?;
    assert!(
        shown.contains("zone-a") && shown.contains("skiff"),
        "{shown}"
    );
    wait("the node's Synced event", || {
        Ok(event_reasons(&c, "default", NODE_NAME)?
            .contains(&"Synced".to_owned())
            .then_some(()))
    })?;
    // The route controller gave the node's pod CIDR a route and said so in its condition.
    wait("NetworkUnavailable=False", || {
        let node = c.k_json(&["get", "node", NODE_NAME])?;
        Ok(condition(&node, "NetworkUnavailable")
            .filter(|n| n["status"] == "False" && n["reason"] == "RouteCreated")
            .map(|_| ()))
    })?;
    let routes = c.k_json(&["get", "configmap", "-n", "kube-system", "skiff-routes"])?;
    let route: Value = serde_json::from_str(
        routes["data"]["skiff-node.10.42.0.0-24"]
            .as_str()
            .context("the node's route")?,
    )?;
    assert_eq!(route["gateway"], NODE_IP);

    // A LoadBalancer Service gets the node's external address, the finalizer and events.
    c.k(&["create", "service", "loadbalancer", "web", "--tcp=80:8080"])?;
    let external = wait("EXTERNAL-IP of web", || {
        let out = c.k(&["get", "service", "web", "--no-headers"])?;
        Ok(out.contains(EXTERNAL_IP).then_some(out))
    })?;
    assert!(!external.contains("<pending>"), "{external}");
    let svc = c.k_json(&["get", "service", "web"])?;
    assert_eq!(
        svc["metadata"]["finalizers"][0],
        "service.kubernetes.io/load-balancer-cleanup"
    );
    assert_eq!(
        svc["status"]["loadBalancer"]["ingress"][0]["ip"],
        EXTERNAL_IP
    );
    let reasons = wait("load balancer events", || {
        let r = event_reasons(&c, "default", "web")?;
        Ok(r.contains(&"EnsuredLoadBalancer".to_owned()).then_some(r))
    })?;
    assert!(
        reasons.contains(&"EnsuringLoadBalancer".to_owned()),
        "{reasons:?}"
    );
    let described = c.k(&["describe", "service", "web"])?;
    assert!(
        described.contains("LoadBalancer Ingress:") && described.contains(EXTERNAL_IP),
        "{described}"
    );
    let inventory = c.k_json(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "skiff-load-balancers",
    ])?;
    assert!(
        inventory["data"].to_string().contains("default/web"),
        "{inventory}"
    );

    // A Service of another class is somebody else's.
    c.k_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: classy\nspec:\n  type: LoadBalancer\n  loadBalancerClass: example.com/other\n  ports: [{port: 80}]\n",
    )?;

    // Changing the type releases the load balancer.
    c.k(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ])?;
    wait("web released", || {
        let svc = c.k_json(&["get", "service", "web"])?;
        Ok((svc["metadata"]["finalizers"].is_null()
            && svc["status"]["loadBalancer"]["ingress"].is_null())
        .then_some(()))
    })?;
    wait("the type change and deletion events", || {
        let r = event_reasons(&c, "default", "web")?;
        Ok(["Type", "DeletingLoadBalancer", "DeletedLoadBalancer"]
            .iter()
            .all(|want| r.iter().any(|got| got == want))
            .then_some(()))
    })?;

    // Deleting a LoadBalancer Service waits for the cleanup, then it is gone with its entry.
    c.k(&["create", "service", "loadbalancer", "api", "--tcp=443:8443"])?;
    wait("EXTERNAL-IP of api", || {
        let out = c.k(&["get", "service", "api", "--no-headers"])?;
        Ok(out.contains(EXTERNAL_IP).then_some(()))
    })?;
    c.k(&["delete", "service", "api", "--timeout=60s"])?;
    assert!(c.k_fail(&["get", "service", "api"])?.contains("NotFound"));
    let inventory = c.k_json(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "skiff-load-balancers",
    ])?;
    assert!(
        !inventory["data"].to_string().contains("default/api"),
        "{inventory}"
    );
    let classy = c.k_json(&["get", "service", "classy"])?;
    assert!(
        classy["metadata"]["finalizers"].is_null()
            && classy["status"]["loadBalancer"]["ingress"].is_null(),
        "{classy}"
    );
    Ok(())
}

/// An httpd answering `/cgi-bin/ip` with the client address it sees, logging every request.
const SERVER: &str = r#"mkdir -p /tmp/www/cgi-bin
printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$REMOTE_ADDR"\n' > /tmp/www/cgi-bin/ip
chmod +x /tmp/www/cgi-bin/ip
exec httpd -f -vv -p 0.0.0.0:8080 -h /tmp/www"#;

fn pod(name: &str, node: &str, script: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": 0,
            "containers": [{ "name": "main", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script] }],
        },
    })
    .to_string()
}

/// The routes and nat rules of both nodes, for failure messages.
fn network_state(c: &TestCluster, agent: &skiff_testing::TestAgent) -> String {
    let mut out = String::new();
    for (who, ns) in [("server", c.netns()), ("agent", agent.netns())] {
        let Some(ns) = ns else { continue };
        for args in [
            vec!["-n", ns.name(), "route", "show"],
            vec!["netns", "exec", ns.name(), "iptables", "-t", "nat", "-S"],
        ] {
            if let Ok(o) = std::process::Command::new("ip").args(&args).output() {
                out.push_str(&format!(
                    "--- {who}: ip {}\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
    }
    out
}

#[test]
fn pods_on_two_nodes_reach_each_other_without_nat() -> Result<()> {
    let c = TestCluster::with_node()?;
    let agent = c.join_agent("worker-1", &[])?;
    c.k_stdin(&["apply", "-f", "-"], &pod("server", NODE_NAME, SERVER))?;
    c.k_stdin(
        &["apply", "-f", "-"],
        &pod("client", "worker-1", "exec sleep 3600"),
    )?;
    let running = |p: &Value| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string();
    let server = c.wait_pod("server", "running with an IP", running)?;
    let client = c.wait_pod("client", "running with an IP", running)?;
    let server_ip = server["status"]["podIP"]
        .as_str()
        .context("server IP")?
        .to_owned();
    let client_ip = client["status"]["podIP"]
        .as_str()
        .context("client IP")?
        .to_owned();
    assert!(server_ip.starts_with("10.42.0."), "{server_ip}");
    assert!(client_ip.starts_with("10.42.1."), "{client_ip}");

    // Both nodes got a route and NetworkUnavailable=False from the route controller.
    for (node, gateway) in [(NODE_NAME, NODE_IP), ("worker-1", AGENT_IP)] {
        wait(&format!("{node}'s route"), || {
            let n = c.k_json(&["get", "node", node])?;
            let routes = c.k_json(&["get", "configmap", "-n", "kube-system", "skiff-routes"])?;
            let published = routes["data"].to_string().contains(gateway);
            Ok((published
                && condition(&n, "NetworkUnavailable").is_some_and(|c| c["status"] == "False"))
            .then_some(()))
        })?;
    }

    // The kubelets programmed the routes: the client reaches the server's pod IP, and the
    // server sees the client's pod IP (no masquerading inside the cluster CIDR).
    let url = format!("http://{server_ip}:8080/cgi-bin/ip");
    let seen = wait("the server's answer", || {
        // `timeout`, not wget's -T, which crashes this busybox.
        let out = c.kubectl(&[
            "exec", "client", "--", "timeout", "5", "wget", "-q", "-O", "-", &url,
        ])?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    })
    .with_context(|| network_state(&c, &agent))?;
    assert_eq!(seen, client_ip, "the server saw the client's pod IP");
    let log = wait("the request in the server's log", || {
        let log = c.k(&["logs", "server"])?;
        Ok(log.contains("url:/cgi-bin/ip").then_some(log))
    })?;
    assert!(log.contains(&format!("{client_ip}:")), "{log}");

    // And back: the server's pod reaches the client's node's pods too.
    let back = c.kubectl(&[
        "exec", "server", "--", "ping", "-c", "1", "-W", "3", &client_ip,
    ])?;
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stdout)
    );
    // The server node's kernel route carries Skiff's protocol tag.
    let ns = c.netns().context("the server's namespace")?;
    let out = std::process::Command::new("ip")
        .args(["-n", ns.name(), "route", "show", "proto", "77"])
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("10.42.1.0/24 via {AGENT_IP}")),
        "{table}"
    );
    Ok(())
}
