//! A second machine joins with `skiff agent`: its own network namespace linked to the
//! server's, the join token from the server's data directory, credentials obtained from the
//! server (CA pinned by the token), and pods bound to it run there.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use skiff_testing::{AGENT_IP, BUSYBOX_IMAGE, TestCluster};

#[test]
fn an_agent_joins_with_the_token_and_runs_pods() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let agent = cluster.join_agent("worker-1", &["--node-label", "tier=batch"])?;

    let node = cluster.k_json(&["get", "node", "worker-1"])?;
    assert_eq!(node["metadata"]["labels"]["tier"], "batch");
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "worker-1"
    );
    assert!(
        node["metadata"]["labels"]
            .get("node-role.kubernetes.io/control-plane")
            .is_none()
    );
    assert_eq!(node["status"]["addresses"][0]["address"], AGENT_IP);
    let lease = cluster.k_json(&["get", "lease", "-n", "kube-node-lease", "worker-1"])?;
    assert_eq!(lease["spec"]["holderIdentity"], "worker-1");
    let nodes = cluster.k(&["get", "nodes"])?;
    assert!(
        nodes.contains("worker-1") && nodes.contains("control-plane"),
        "{nodes}"
    );

    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"remote"}},
           "spec":{{"nodeName":"worker-1","containers":[{{"name":"main","image":"{BUSYBOX_IMAGE}","command":["sleep","3600"]}}]}}}}"#
    );
    cluster.k_stdin(&["apply", "-f", "-"], &pod)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = cluster.k_json(&["get", "pod", "remote"])?;
        if p["status"]["phase"] == "Running" {
            assert_eq!(p["status"]["hostIP"], AGENT_IP);
            assert!(
                p["status"]["podIP"]
                    .as_str()
                    .unwrap()
                    .starts_with("10.42.1."),
                "{}",
                p["status"]
            );
            break;
        }
        if Instant::now() > deadline {
            bail!("remote pod not running: {}\n{}", p["status"], agent.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The agent kept its credentials: the API server saw it as system:node:worker-1.
    assert!(
        agent
            .data_dir()
            .join("agent/node-credentials.json")
            .exists()
    );
    Ok(())
}

#[test]
fn a_wrong_token_is_refused() -> Result<()> {
    let cluster = TestCluster::with_node()?;
    let token = std::fs::read_to_string(cluster.data_dir().join("token"))?;
    // Right CA hash, wrong secret.
    let (prefix, _) = token.trim().rsplit_once(':').unwrap();
    let bad = format!("{prefix}:not-the-secret");
    let out = cluster
        .command(&skiff_testing::skiff_binary())
        .args([
            "agent",
            "--server",
            &format!("https://127.0.0.1:{}", cluster.port),
            "--token",
            &bad,
        ])
        .arg("--data-dir")
        .arg(cluster.data_dir().join("bad-agent"))
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused to enroll"), "{err}");
    // A token pinning another CA is refused before any credentials are sent.
    let other = format!("K10{}::server:x", "0".repeat(64));
    let out = cluster
        .command(&skiff_testing::skiff_binary())
        .args([
            "agent",
            "--server",
            &format!("https://127.0.0.1:{}", cluster.port),
            "--token",
            &other,
        ])
        .arg("--data-dir")
        .arg(cluster.data_dir().join("bad-agent"))
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the join token"), "{err}");
    Ok(())
}
