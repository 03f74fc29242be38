//! The cloud-controller loops with the built-in `local` provider against a real server: tests
//! play the kubelets, registering Nodes with the annotations a Skiff kubelet publishes (and
//! the `uninitialized` taint when it runs with `--cloud-provider=external`).

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{env, eventually, obj, renew};

const UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// A Node as a Skiff kubelet registers it: its machine's facts in annotations, optionally
/// the provider ID already (an initialized node) or the `uninitialized` taint.
fn node(name: &str, ip: &str, annotations: Value, tainted: bool, provider_id: bool) -> Node {
    let mut a = json!({ "skiff.io/internal-ip": ip, "skiff.io/hostname": name });
    if let (Some(a), Value::Object(extra)) = (a.as_object_mut(), annotations) {
        a.extend(extra);
    }
    let mut spec = json!({});
    if tainted {
        spec["taints"] = json!([{ "key": UNINITIALIZED, "value": "true", "effect": "NoSchedule" }]);
    }
    if provider_id {
        spec["providerID"] = json!(format!("skiff://{name}"));
    }
    obj(json!({ "metadata": { "name": name, "annotations": a }, "spec": spec }))
}

/// Report the node's status as its kubelet would (Ready, InternalIP and Hostname).
async fn report(nodes: &Api<Node>, name: &str, ip: &str, ready: &str) -> Result<()> {
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({ "status": {
        "conditions": [{ "type": "Ready", "status": ready, "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now }],
        "addresses": [{ "type": "InternalIP", "address": ip }, { "type": "Hostname", "address": name }],
    } });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(())
}

fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.key)
        .collect()
}

fn label<'n>(n: &'n Node, key: &str) -> Option<&'n str> {
    n.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn condition(n: &Node, type_: &str) -> Option<(String, String)> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// The reasons of the events about an object.
async fn reasons(events: &Api<Event>, name: &str) -> Result<Vec<String>> {
    Ok(events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect())
}

#[tokio::test]
async fn tainted_nodes_are_initialized_from_what_their_kubelet_published() -> Result<()> {
    let e = env(&[]).await?;
    let nodes: Api<Node> = Api::all(e.client.clone());
    let pp = PostParams::default();
    nodes
        .create(
            &pp,
            &node(
                "n1",
                "192.0.2.21",
                json!({
                    "skiff.io/external-ip": "203.0.113.21",
                    "skiff.io/zone": "zone-a",
                    "skiff.io/region": "region-1",
                    "alpha.kubernetes.io/provided-node-ip": "192.0.2.21",
                }),
                true,
                false,
            ),
        )
        .await?;
    // A node whose kubelet published nothing (a hollow node, say) and one whose provided IP
    // the provider does not know keep the taint.
    let mut bare = node("bare", "unused", json!({}), true, false);
    bare.metadata.annotations = None;
    nodes.create(&pp, &bare).await?;
    nodes
        .create(
            &pp,
            &node(
                "liar",
                "192.0.2.23",
                json!({ "alpha.kubernetes.io/provided-node-ip": "192.0.2.99" }),
                true,
                false,
            ),
        )
        .await?;

    let n1 = eventually("n1 initialized", 30, || async {
        let n = nodes.get("n1").await?;
        let addressed = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .is_some_and(|a| !a.is_empty());
        Ok((!taint_keys(&n).contains(&UNINITIALIZED.to_owned()) && addressed).then_some(n))
    })
    .await?;
    assert_eq!(
        n1.spec.as_ref().unwrap().provider_id.as_deref(),
        Some("skiff://n1")
    );
    assert_eq!(
        label(&n1, "node.kubernetes.io/instance-type"),
        Some("skiff")
    );
    assert_eq!(
        label(&n1, "beta.kubernetes.io/instance-type"),
        Some("skiff")
    );
    assert_eq!(label(&n1, "topology.kubernetes.io/zone"), Some("zone-a"));
    assert_eq!(
        label(&n1, "topology.kubernetes.io/region"),
        Some("region-1")
    );
    let addresses: Vec<(String, String)> = n1
        .status
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        [
            ("InternalIP".to_owned(), "192.0.2.21".to_owned()),
            ("ExternalIP".into(), "203.0.113.21".into()),
            ("Hostname".into(), "n1".into()),
        ]
    );
    let events: Api<Event> = Api::namespaced(e.client.clone(), "default");
    eventually("the Synced event", 20, || async {
        Ok(reasons(&events, "n1")
            .await?
            .contains(&"Synced".to_owned())
            .then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in ["bare", "liar"] {
        let n = nodes.get(name).await?;
        assert!(
            taint_keys(&n).contains(&UNINITIALIZED.to_owned()),
            "{name} was initialized"
        );
        assert!(n.spec.unwrap().provider_id.is_none());
    }
    // Once the kubelet publishes its address the node is initialized (retried on change).
    nodes
        .patch(
            "bare",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({ "metadata": { "annotations": { "skiff.io/internal-ip": "192.0.2.22" } } }),
            ),
        )
        .await?;
    eventually("bare initialized", 30, || async {
        let n = nodes.get("bare").await?;
        Ok((!taint_keys(&n).contains(&UNINITIALIZED.to_owned())).then_some(()))
    })
    .await?;
    // Initialized nodes keep their GA labels in step with the beta ones.
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "metadata": { "labels": { "failure-domain.beta.kubernetes.io/zone": "zone-b" } } })),
        )
        .await?;
    eventually("the GA zone label following", 20, || async {
        let n = nodes.get("n1").await?;
        Ok((label(&n, "topology.kubernetes.io/zone") == Some("zone-b")).then_some(()))
    })
    .await?;
    Ok(())
}

async fn route_table(cms: &Api<ConfigMap>) -> Result<Vec<(String, Value)>> {
    Ok(cms
        .get_opt("skiff-routes")
        .await?
        .and_then(|c| c.data)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?)))
        .collect())
}

#[tokio::test]
async fn routes_follow_pod_cidrs_and_addresses_and_mark_the_network_available() -> Result<()> {
    let e = env(&[
        "--kube-controller-manager-arg",
        "route-reconciliation-period=1s",
    ])
    .await?;
    let nodes: Api<Node> = Api::all(e.client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(e.client.clone(), "kube-system");
    let pp = PostParams::default();
    for (name, ip) in [("r1", "192.0.2.31"), ("r2", "192.0.2.32")] {
        nodes
            .create(&pp, &node(name, ip, json!({}), false, true))
            .await?;
        report(&nodes, name, ip, "True").await?;
    }
    // Not an instance of the provider (no provider ID): no route, no condition.
    nodes
        .create(
            &pp,
            &node("outsider", "192.0.2.39", json!({}), false, false),
        )
        .await?;
    report(&nodes, "outsider", "192.0.2.39", "True").await?;
    // An instance without an address cannot be routed to.
    nodes
        .create(&pp, &node("mute", "192.0.2.38", json!({}), false, true))
        .await?;

    let table = eventually("routes for r1 and r2", 30, || async {
        let t = route_table(&cms).await?;
        Ok((t.len() == 2).then_some(t))
    })
    .await?;
    for (name, entry) in &table {
        let node = entry["targetNode"].as_str().unwrap();
        let n = nodes.get(node).await?;
        let cidr = n.spec.unwrap().pod_cidr.unwrap();
        assert_eq!(entry["destinationCIDR"], cidr.as_str());
        assert_eq!(*name, format!("{node}.{}", cidr.replace('/', "-")));
        let ip = if node == "r1" {
            "192.0.2.31"
        } else {
            "192.0.2.32"
        };
        assert_eq!(entry["gateway"], ip);
    }
    for name in ["r1", "r2"] {
        eventually(&format!("{name} network available"), 20, || async {
            let n = nodes.get(name).await?;
            Ok((condition(&n, "NetworkUnavailable")
                == Some(("False".to_owned(), "RouteCreated".to_owned())))
            .then_some(()))
        })
        .await?;
    }
    // The node that cannot be routed to is marked, tainted by the node lifecycle controller,
    // and told why.
    eventually("mute network unavailable and tainted", 30, || async {
        let n = nodes.get("mute").await?;
        Ok((condition(&n, "NetworkUnavailable")
            == Some(("True".to_owned(), "NoRouteCreated".to_owned()))
            && taint_keys(&n).contains(&"node.kubernetes.io/network-unavailable".to_owned()))
        .then_some(()))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(e.client.clone(), "default");
    eventually("the FailedToCreateRoute event", 20, || async {
        Ok(reasons(&events, "mute")
            .await?
            .contains(&"FailedToCreateRoute".to_owned())
            .then_some(()))
    })
    .await?;
    assert!(condition(&nodes.get("outsider").await?, "NetworkUnavailable").is_none());

    // A new address moves the route; a deleted node loses it.
    report(&nodes, "r2", "192.0.2.42", "True").await?;
    eventually("r2's route through its new address", 30, || async {
        let t = route_table(&cms).await?;
        Ok(t.iter()
            .any(|(_, e)| e["targetNode"] == "r2" && e["gateway"] == "192.0.2.42")
            .then_some(()))
    })
    .await?;
    nodes.delete("r1", &DeleteParams::default()).await?;
    eventually("r1's route removed", 30, || async {
        let t = route_table(&cms).await?;
        Ok((!t.iter().any(|(_, e)| e["targetNode"] == "r1")).then_some(()))
    })
    .await?;
    Ok(())
}

fn lb_service(name: &str, extra: Value) -> Service {
    let mut spec = json!({ "type": "LoadBalancer", "selector": { "app": name }, "ports": [{ "port": 80, "targetPort": 8080 }] });
    if let (Some(s), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        s.extend(extra);
    }
    obj(json!({ "metadata": { "name": name }, "spec": spec }))
}

fn ingress(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect()
}

#[tokio::test]
async fn pool_load_balancers_hand_out_addresses_once_and_give_them_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("cloud.yaml");
    std::fs::write(
        &config,
        "loadBalancer:\n  addressPool: [192.0.2.240-192.0.2.241]\n",
    )?;
    let arg = format!("cloud-config={}", config.display());
    let e = env(&["--kube-controller-manager-arg", &arg]).await?;
    let svcs: Api<Service> = Api::namespaced(e.client.clone(), "default");
    let events: Api<Event> = Api::namespaced(e.client.clone(), "default");
    let pp = PostParams::default();
    for name in ["a", "b"] {
        svcs.create(&pp, &lb_service(name, json!({}))).await?;
    }
    let mut given = Vec::new();
    for name in ["a", "b"] {
        let svc = eventually(&format!("{name}'s address"), 30, || async {
            let s = svcs.get(name).await?;
            Ok((!ingress(&s).is_empty()).then_some(s))
        })
        .await?;
        assert_eq!(
            svc.metadata.finalizers.as_deref(),
            Some(&["service.kubernetes.io/load-balancer-cleanup".to_owned()][..])
        );
        given.extend(ingress(&svc));
    }
    given.sort();
    assert_eq!(given, ["192.0.2.240", "192.0.2.241"]);

    // The pool is empty now; a requested address outside it is refused; another class is
    // not ours.
    svcs.create(&pp, &lb_service("c", json!({}))).await?;
    svcs.create(
        &pp,
        &lb_service("outside", json!({ "loadBalancerIP": "198.51.100.7" })),
    )
    .await?;
    svcs.create(
        &pp,
        &lb_service("classy", json!({ "loadBalancerClass": "example.com/lb" })),
    )
    .await?;
    for name in ["c", "outside"] {
        eventually(&format!("{name}'s failure event"), 30, || async {
            Ok(reasons(&events, name)
                .await?
                .contains(&"SyncLoadBalancerFailed".to_owned())
                .then_some(()))
        })
        .await?;
    }
    let failures: Vec<String> = events
        .list(&ListParams::default().fields("involvedObject.name=c"))
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SyncLoadBalancerFailed"))
        .filter_map(|e| e.message)
        .collect();
    assert!(
        failures[0].starts_with("Error syncing load balancer: failed to ensure load balancer")
            && failures[0].contains("no free address left in the load balancer address pool"),
        "{failures:?}"
    );
    let classy = svcs.get("classy").await?;
    assert!(classy.metadata.finalizers.is_none() && ingress(&classy).is_empty());

    // Deleting a Service gives its address back; c gets it on its next sync.
    let freed = ingress(&svcs.get("a").await?);
    svcs.delete("a", &DeleteParams::default()).await?;
    eventually("a gone after its cleanup", 30, || async {
        Ok(svcs.get_opt("a").await?.is_none().then_some(()))
    })
    .await?;
    let a_reasons = reasons(&events, "a").await?;
    for r in [
        "EnsuringLoadBalancer",
        "EnsuredLoadBalancer",
        "DeletingLoadBalancer",
        "DeletedLoadBalancer",
    ] {
        assert!(a_reasons.contains(&r.to_owned()), "{r}: {a_reasons:?}");
    }
    // Any change that concerns the load balancer syncs it at once (not after the backoff).
    svcs.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "metadata": { "annotations": { "retry": "now" } } })),
    )
    .await?;
    let c = eventually("c's address", 30, || async {
        let s = svcs.get("c").await?;
        Ok((!ingress(&s).is_empty()).then_some(s))
    })
    .await?;
    assert_eq!(ingress(&c), freed);
    Ok(())
}

#[tokio::test]
async fn node_load_balancers_follow_the_eligible_nodes() -> Result<()> {
    let e = env(&[]).await?;
    let nodes: Api<Node> = Api::all(e.client.clone());
    let svcs: Api<Service> = Api::namespaced(e.client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(e.client.clone(), "kube-system");
    let pp = PostParams::default();
    nodes
        .create(&pp, &node("lb1", "192.0.2.51", json!({}), false, true))
        .await?;
    report(&nodes, "lb1", "192.0.2.51", "True").await?;
    // Without a provider ID a node is not the provider's: no traffic goes there.
    nodes
        .create(&pp, &node("plain", "192.0.2.59", json!({}), false, false))
        .await?;
    report(&nodes, "plain", "192.0.2.59", "True").await?;
    svcs.create(&pp, &lb_service("web", json!({}))).await?;
    eventually("web on lb1", 30, || async {
        let s = svcs.get("web").await?;
        Ok((ingress(&s) == ["192.0.2.51"]).then_some(()))
    })
    .await?;
    // A second node joins the load balancer, an excluded one leaves it.
    nodes
        .create(&pp, &node("lb2", "192.0.2.52", json!({}), false, true))
        .await?;
    report(&nodes, "lb2", "192.0.2.52", "True").await?;
    eventually("web on lb1 and lb2", 30, || async {
        let s = svcs.get("web").await?;
        Ok((ingress(&s) == ["192.0.2.51", "192.0.2.52"]).then_some(()))
    })
    .await?;
    nodes
        .patch(
            "lb1",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "metadata": { "labels": {
                "node.kubernetes.io/exclude-from-external-load-balancers": "" } } })),
        )
        .await?;
    eventually("web on lb2 only", 30, || async {
        let s = svcs.get("web").await?;
        Ok((ingress(&s) == ["192.0.2.52"]).then_some(()))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(e.client.clone(), "default");
    assert!(
        reasons(&events, "web")
            .await?
            .contains(&"UpdatedLoadBalancer".to_owned())
    );
    let inventory = cms
        .get("skiff-load-balancers")
        .await?
        .data
        .unwrap_or_default();
    let entry: Value = serde_json::from_str(inventory.values().next().unwrap())?;
    assert_eq!(entry["service"], "default/web");
    assert_eq!(entry["nodes"], json!(["lb2"]));
    assert_eq!(
        entry["ports"][0].as_str().unwrap().split("->").next(),
        Some("TCP/80")
    );

    // Turning the Service into a ClusterIP one releases its load balancer.
    svcs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "type": "NodePort" } })),
    )
    .await?;
    eventually("web released", 30, || async {
        let s = svcs.get("web").await?;
        Ok((s.metadata.finalizers.is_none() && ingress(&s).is_empty()).then_some(()))
    })
    .await?;
    assert!(
        cms.get("skiff-load-balancers")
            .await?
            .data
            .unwrap_or_default()
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn shut_down_machines_are_tainted_until_they_are_back() -> Result<()> {
    let e = env(&[]).await?;
    let nodes: Api<Node> = Api::all(e.client.clone());
    let leases: Api<Lease> = Api::namespaced(e.client.clone(), "kube-node-lease");
    let pp = PostParams::default();
    // The kubelet of "off" stopped cleanly; the one of "down" just went silent.
    nodes
        .create(
            &pp,
            &node(
                "off",
                "192.0.2.61",
                json!({ "skiff.io/shutdown": "2026-01-01T00:00:00Z" }),
                false,
                true,
            ),
        )
        .await?;
    report(&nodes, "off", "192.0.2.61", "False").await?;
    nodes
        .create(&pp, &node("down", "192.0.2.62", json!({}), false, true))
        .await?;
    report(&nodes, "down", "192.0.2.62", "False").await?;
    eventually("off tainted shut down", 30, || async {
        let n = nodes.get("off").await?;
        Ok(taint_keys(&n)
            .contains(&"node.cloudprovider.kubernetes.io/shutdown".to_owned())
            .then_some(()))
    })
    .await?;
    // A machine that is merely unreachable may come back: the local provider never says it is
    // gone, so it is neither deleted nor tainted shut down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = nodes.get("down").await?;
    assert!(!taint_keys(&down).contains(&"node.cloudprovider.kubernetes.io/shutdown".to_owned()));

    // Back: the kubelet clears its mark and reports Ready; the taint goes.
    nodes
        .patch(
            "off",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "metadata": { "annotations": { "skiff.io/shutdown": null } } })),
        )
        .await?;
    report(&nodes, "off", "192.0.2.61", "True").await?;
    eventually("off untainted", 30, || async {
        renew(&leases, "off").await?;
        let n = nodes.get("off").await?;
        Ok(
            (!taint_keys(&n).contains(&"node.cloudprovider.kubernetes.io/shutdown".to_owned()))
                .then_some(()),
        )
    })
    .await?;
    Ok(())
}
