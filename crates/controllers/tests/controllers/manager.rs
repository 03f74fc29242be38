//! The controller manager as its own process: `--controllers` is checked at start-up, and two
//! managers against one API server elect one leader through the
//! `kube-system/kube-controller-manager` Lease; killing the leader hands over within the lease
//! duration without any duplicate pods.

use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use skiff_testing::{TestCluster, skiff_binary};

use crate::eventually;

const MANAGER: [&str; 7] = [
    "controller-manager",
    "--leader-elect-lease-duration=4s",
    "--leader-elect-renew-deadline=3s",
    "--leader-elect-retry-period=500ms",
    "--controllers=*,-garbage-collector-controller",
    "--node-monitor-period=1s",
    "--node-monitor-grace-period=10s",
];

#[tokio::test]
async fn an_unknown_controller_name_is_a_usage_error() -> Result<()> {
    let cluster = TestCluster::start_with(&["--disable-agent", "--disable-controller-manager"])?;
    let out = std::process::Command::new(skiff_binary())
        .args([
            "controller-manager",
            "--controllers=*,-no-such-controller",
            "--kubeconfig",
        ])
        .arg(cluster.kubeconfig())
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown controller \"no-such-controller\""),
        "{stderr}"
    );
    Ok(())
}

async fn live_pods(pods: &Api<Pod>) -> Result<usize> {
    Ok(pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count())
}

#[tokio::test]
async fn two_managers_elect_one_leader_and_fail_over_without_duplicates() -> Result<()> {
    let cluster = TestCluster::start_with(&["--disable-agent", "--disable-controller-manager"])?;
    let client = skiff_runtime::client::from_kubeconfig(&cluster.kubeconfig()).await?;
    let mut first = cluster.spawn_skiff("manager-a", &MANAGER)?;
    let mut second = cluster.spawn_skiff("manager-b", &MANAGER)?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = eventually("a leader", 30, || async {
        leases
            .get_opt("kube-controller-manager")
            .await
            .map_err(Into::into)
    })
    .await?;
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    eventually("exactly one manager leading", 20, || async {
        let a = first.log().contains("became leader");
        let b = second.log().contains("became leader");
        assert!(!(a && b), "two leaders");
        Ok((a || b).then_some(()))
    })
    .await?;
    let a_leads = first.log().contains("became leader");

    cluster.k(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ])?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("three pods", 30, || async {
        Ok((live_pods(&pods).await? == 3).then_some(()))
    })
    .await?;

    // Kill the leader without letting it release the lease.
    let killed = Instant::now();
    if a_leads {
        first.kill()?
    } else {
        second.kill()?
    };
    let survivor = if a_leads { &second } else { &first };
    eventually("the other manager leading", 30, || async {
        let l = leases.get("kube-controller-manager").await?;
        let spec = l.spec.unwrap_or_default();
        Ok((spec.holder_identity.as_deref() != Some(holder.as_str())
            && spec.holder_identity.is_some())
        .then_some(spec))
    })
    .await?;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(4) + Duration::from_secs(3),
        "failover took {took:?}"
    );
    assert!(survivor.log().contains("became leader"));
    let l = leases.get("kube-controller-manager").await?;
    assert_eq!(l.spec.unwrap().lease_transitions, Some(1));

    // The new leader picks up where the old one stopped, without duplicates.
    cluster.k(&["scale", "deployment", "web", "--replicas=5"])?;
    eventually("five pods", 30, || async {
        Ok((live_pods(&pods).await? == 5).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(live_pods(&pods).await?, 5, "duplicate pods after failover");
    Ok(())
}
