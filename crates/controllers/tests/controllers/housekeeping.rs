//! Cluster housekeeping: garbage collection, namespace deletion, service accounts and the root
//! CA, endpoints and endpoint slices, node lifecycle with taint eviction, TTL after finished.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use serde_json::json;

use crate::{env, eventually, finish, make_ready, names, obj, renew};

fn owner_ref(
    kind: &str,
    api_version: &str,
    name: &str,
    uid: &str,
    block: bool,
) -> serde_json::Value {
    json!({ "apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": block })
}

#[tokio::test]
async fn garbage_collection_in_all_three_modes_and_for_dangling_references() -> Result<()> {
    let e = env(&[]).await?;
    let cms: Api<ConfigMap> = Api::namespaced(e.client.clone(), "default");
    let mk = |name: &str, owners: Vec<serde_json::Value>, finalizers: Vec<&str>| -> ConfigMap {
        obj(
            json!({ "metadata": { "name": name, "ownerReferences": owners, "finalizers": finalizers }, "data": { "k": "v" } }),
        )
    };
    let pp = PostParams::default();
    let gone = |name: &'static str| {
        let cms = cms.clone();
        async move { Ok::<_, anyhow::Error>(cms.get_opt(name).await?.is_none().then_some(())) }
    };

    // Background: the owner goes at once, then its dependents.
    let owner = cms.create(&pp, &mk("bg-owner", vec![], vec![])).await?;
    cms.create(
        &pp,
        &mk(
            "bg-child",
            vec![owner_ref(
                "ConfigMap",
                "v1",
                "bg-owner",
                &owner.uid().unwrap(),
                false,
            )],
            vec![],
        ),
    )
    .await?;
    cms.delete("bg-owner", &DeleteParams::background()).await?;
    eventually("background dependent deleted", 20, || gone("bg-child")).await?;

    // Foreground: the owner waits, with the foregroundDeletion finalizer, for a blocking
    // dependent (held here by a finalizer of its own).
    let owner = cms.create(&pp, &mk("fg-owner", vec![], vec![])).await?;
    let uid = owner.uid().unwrap();
    cms.create(
        &pp,
        &mk(
            "fg-blocker",
            vec![owner_ref("ConfigMap", "v1", "fg-owner", &uid, true)],
            vec!["example.com/hold"],
        ),
    )
    .await?;
    cms.create(
        &pp,
        &mk(
            "fg-free",
            vec![owner_ref("ConfigMap", "v1", "fg-owner", &uid, false)],
            vec![],
        ),
    )
    .await?;
    cms.delete("fg-owner", &DeleteParams::foreground()).await?;
    eventually("the non-blocking dependent deleted", 20, || gone("fg-free")).await?;
    eventually("the blocker marked for deletion", 20, || async {
        Ok(cms
            .get("fg-blocker")
            .await?
            .metadata
            .deletion_timestamp
            .map(|_| ()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = cms.get("fg-owner").await?;
    assert!(
        waiting
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion"),
        "{:?}",
        waiting.finalizers()
    );
    cms.patch(
        "fg-blocker",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "metadata": { "finalizers": null } })),
    )
    .await?;
    eventually("the owner gone after its blocker", 20, || gone("fg-owner")).await?;

    // Orphan: dependents stay and lose the owner reference.
    let owner = cms.create(&pp, &mk("or-owner", vec![], vec![])).await?;
    cms.create(
        &pp,
        &mk(
            "or-child",
            vec![owner_ref(
                "ConfigMap",
                "v1",
                "or-owner",
                &owner.uid().unwrap(),
                true,
            )],
            vec![],
        ),
    )
    .await?;
    cms.delete("or-owner", &DeleteParams::orphan()).await?;
    eventually("the orphaning owner gone", 20, || gone("or-owner")).await?;
    let child = cms.get("or-child").await?;
    assert!(
        child.owner_references().is_empty(),
        "{:?}",
        child.owner_references()
    );

    // Dangling: an owner that never existed.
    cms.create(
        &pp,
        &mk(
            "dangling",
            vec![owner_ref(
                "ConfigMap",
                "v1",
                "ghost",
                "00000000-0000-0000-0000-000000000000",
                false,
            )],
            vec![],
        ),
    )
    .await?;
    eventually("dangling dependent deleted", 20, || gone("dangling")).await?;

    // Two owners, one gone: the reference is dropped, the object kept.
    let keep = cms.create(&pp, &mk("keeper", vec![], vec![])).await?;
    cms.create(
        &pp,
        &mk(
            "shared",
            vec![
                owner_ref("ConfigMap", "v1", "keeper", &keep.uid().unwrap(), false),
                owner_ref(
                    "ConfigMap",
                    "v1",
                    "ghost",
                    "00000000-0000-0000-0000-000000000001",
                    false,
                ),
            ],
            vec![],
        ),
    )
    .await?;
    eventually("the dangling reference dropped", 20, || async {
        Ok((cms.get("shared").await?.owner_references().len() == 1).then_some(()))
    })
    .await?;

    // A ReplicaSet deleted in the foreground takes its pods first.
    let rsets: Api<ReplicaSet> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    rsets.create(&pp, &obj(json!({ "metadata": { "name": "rs" }, "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "rs" } },
        "template": { "metadata": { "labels": { "app": "rs" } }, "spec": { "containers": [{ "name": "main", "image": "busybox" }] } } } }))).await?;
    eventually("pods", 20, || async {
        Ok((pods
            .list(&ListParams::default().labels("app=rs"))
            .await?
            .items
            .len()
            == 2)
            .then_some(()))
    })
    .await?;
    rsets
        .delete(
            "rs",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..Default::default()
            },
        )
        .await?;
    eventually("replica set and pods gone", 20, || async {
        let none = pods
            .list(&ListParams::default().labels("app=rs"))
            .await?
            .items
            .is_empty();
        Ok((none && rsets.get_opt("rs").await?.is_none()).then_some(()))
    })
    .await?;
    Ok(())
}

async fn crd(e: &crate::Env) -> Result<()> {
    e.cluster.k_stdin(&["apply", "-f", "-"], r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
"#)?;
    eventually("the widgets resource", 20, || async {
        Ok(e.cluster
            .kubectl(&["get", "widgets", "-A"])?
            .status
            .success()
            .then_some(()))
    })
    .await
}

fn widgets(e: &crate::Env, ns: &str) -> Api<DynamicObject> {
    let ar = kube::api::ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    Api::namespaced_with(e.client.clone(), ns, &ar)
}

#[tokio::test]
async fn namespace_deletion_removes_every_kind_then_finalizes() -> Result<()> {
    let e = env(&[]).await?;
    crd(&e).await?;
    let namespaces: Api<Namespace> = Api::all(e.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &obj(json!({ "metadata": { "name": "doomed" } })),
        )
        .await?;
    let cms: Api<ConfigMap> = Api::namespaced(e.client.clone(), "doomed");
    cms.create(
        &PostParams::default(),
        &obj(json!({ "metadata": { "name": "a" } })),
    )
    .await?;
    e.cluster.k(&[
        "-n",
        "doomed",
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ])?;
    let w = widgets(&e, "doomed");
    w.create(&PostParams::default(), &obj(json!({ "apiVersion": "example.com/v1", "kind": "Widget", "metadata": { "name": "held", "finalizers": ["example.com/hold"] } }))).await?;
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await?;
    // Everything else goes; the widget's finalizer keeps the namespace Terminating.
    let ns = eventually("content gone but the finalizer reported", 30, || async {
        let ns = namespaces.get("doomed").await?;
        let conditions = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let reported = conditions.iter().any(|c| {
            c.type_ == "NamespaceFinalizersRemaining"
                && c.status == "True"
                && c.message
                    .as_deref()
                    .is_some_and(|m| m.contains("example.com/hold"))
        });
        let cms_gone = cms.list(&ListParams::default()).await?.items.is_empty();
        Ok((reported && cms_gone).then_some(ns))
    })
    .await?;
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    w.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "metadata": { "finalizers": null } })),
    )
    .await?;
    eventually("the namespace gone", 30, || async {
        Ok(namespaces.get_opt("doomed").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn every_namespace_gets_a_default_service_account_and_the_root_ca() -> Result<()> {
    let e = env(&[]).await?;
    let namespaces: Api<Namespace> = Api::all(e.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &obj(json!({ "metadata": { "name": "team" } })),
        )
        .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(e.client.clone(), "team");
    let cms: Api<ConfigMap> = Api::namespaced(e.client.clone(), "team");
    eventually("default service account", 20, || async {
        sas.get_opt("default").await.map_err(Into::into)
    })
    .await?;
    let ca = eventually("kube-root-ca.crt", 20, || async {
        cms.get_opt("kube-root-ca.crt").await.map_err(Into::into)
    })
    .await?;
    let pem = ca
        .data
        .unwrap_or_default()
        .get("ca.crt")
        .cloned()
        .unwrap_or_default();
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    // Both come back when removed, and edits are undone.
    sas.delete("default", &DeleteParams::default()).await?;
    cms.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "data": { "ca.crt": "tampered" } })),
    )
    .await?;
    eventually("service account recreated", 20, || async {
        sas.get_opt("default").await.map_err(Into::into)
    })
    .await?;
    eventually("CA restored", 20, || async {
        Ok((cms
            .get("kube-root-ca.crt")
            .await?
            .data
            .unwrap_or_default()
            .get("ca.crt")
            == Some(&pem))
        .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn endpoints_and_slices_follow_pod_readiness_and_ports() -> Result<()> {
    let e = env(&[]).await?;
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(e.client.clone(), "default");
    for (name, port) in [("a", 8080), ("b", 8080), ("c", 9090)] {
        pods.create(&PostParams::default(), &obj(json!({ "metadata": { "name": name, "labels": { "app": "web" } },
            "spec": { "nodeName": "n1", "containers": [{ "name": "main", "image": "busybox", "ports": [{ "name": "http", "containerPort": port }] }] } })))
            .await?;
    }
    make_ready(&pods, "a", "10.9.0.1").await?;
    make_ready(&pods, "c", "10.9.0.3").await?;
    pods.patch_status("b", &PatchParams::default(), &Patch::Merge(&json!({ "status": { "phase": "Running", "podIP": "10.9.0.2", "podIPs": [{ "ip": "10.9.0.2" }] } }))).await?;
    services.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "web", "labels": { "tier": "front" } },
        "spec": { "selector": { "app": "web" }, "ports": [{ "name": "web", "port": 80, "targetPort": "http" }] } })))
        .await?;
    let endpoints: Api<Endpoints> = Api::namespaced(e.client.clone(), "default");
    let ep = eventually("endpoints", 20, || async {
        Ok(endpoints
            .get_opt("web")
            .await?
            .filter(|ep| ep.subsets.as_ref().is_some_and(|s| s.len() == 2)))
    })
    .await?;
    assert_eq!(ep.labels().get("tier").map(String::as_str), Some("front"));
    let subsets = ep.subsets.unwrap();
    let s8080 = subsets
        .iter()
        .find(|s| s.ports.as_ref().unwrap()[0].port == 8080)
        .unwrap();
    assert_eq!(s8080.addresses.as_ref().unwrap()[0].ip, "10.9.0.1");
    assert_eq!(
        s8080.not_ready_addresses.as_ref().unwrap()[0].ip,
        "10.9.0.2"
    );
    assert_eq!(
        s8080.addresses.as_ref().unwrap()[0]
            .target_ref
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some("a")
    );
    let slices: Api<EndpointSlice> = Api::namespaced(e.client.clone(), "default");
    let mine = eventually("two slices, one per port", 20, || async {
        let l = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?
            .items;
        Ok((l.len() == 2).then_some(l))
    })
    .await?;
    for s in &mine {
        assert_eq!(
            s.labels()
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("endpointslice-controller.k8s.io")
        );
        assert_eq!(s.owner_references()[0].kind, "Service");
    }
    let b = mine
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .find(|ep| ep.addresses == ["10.9.0.2"])
        .unwrap();
    assert_eq!(b.conditions.as_ref().unwrap().ready, Some(false));
    // publishNotReadyAddresses lists every pod as ready.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "publishNotReadyAddresses": true } })),
        )
        .await?;
    eventually("all addresses ready", 20, || async {
        let ep = endpoints.get("web").await?;
        Ok(ep
            .subsets
            .unwrap_or_default()
            .iter()
            .all(|s| s.not_ready_addresses.is_none())
            .then_some(()))
    })
    .await?;
    // Deleting the service removes both.
    services.delete("web", &DeleteParams::default()).await?;
    eventually("endpoints and slices gone", 20, || async {
        let none = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?
            .items
            .is_empty();
        Ok((none && endpoints.get_opt("web").await?.is_none()).then_some(()))
    })
    .await?;
    // The kubernetes service's endpoints belong to the API server.
    assert!(endpoints.get_opt("kubernetes").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn node_loss_taints_then_evicts_after_toleration_seconds() -> Result<()> {
    let e = env(&[]).await?;
    let nodes: Api<Node> = Api::all(e.client.clone());
    let leases: Api<Lease> = Api::namespaced(e.client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    let now = jiff::Timestamp::now().to_string();
    for name in ["alive", "lost"] {
        nodes
            .create(
                &PostParams::default(),
                &obj(json!({ "metadata": { "name": name } })),
            )
            .await?;
        nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": { "conditions": [
            { "type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now }] } })))
            .await?;
        renew(&leases, name).await?;
    }
    // Pod CIDRs come from 10.42.0.0/16.
    let cidrs = eventually("pod CIDRs", 20, || async {
        let l = nodes.list(&ListParams::default()).await?.items;
        let c: Vec<String> = l
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
            .collect();
        Ok((c.len() == 2).then_some(c))
    })
    .await?;
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.42.") && c.ends_with("/24"))
            && cidrs[0] != cidrs[1],
        "{cidrs:?}"
    );
    // Default tolerations (300 s) are added by admission; this pod asks for 2 s, that one
    // tolerates forever.
    for (name, seconds) in [("quick", json!(2)), ("stays", serde_json::Value::Null)] {
        let mut toleration = json!({ "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute" });
        if !seconds.is_null() {
            toleration["tolerationSeconds"] = seconds;
        }
        pods.create(&PostParams::default(), &obj(json!({ "metadata": { "name": name },
            "spec": { "nodeName": "lost", "tolerations": [toleration], "containers": [{ "name": "main", "image": "busybox" }] } })))
            .await?;
        make_ready(&pods, name, "10.42.1.5").await?;
    }
    pods.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "defaulted" }, "spec": { "nodeName": "lost", "containers": [{ "name": "main", "image": "busybox" }] } }))).await?;
    let defaulted = pods.get("defaulted").await?;
    let t = defaulted.spec.unwrap().tolerations.unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            t.iter()
                .any(|t| t.key.as_deref() == Some(key) && t.toleration_seconds == Some(300)),
            "{t:?}"
        );
    }
    // Keep "alive" renewing; "lost" goes silent.
    let started = std::time::Instant::now();
    let node = eventually("the lost node tainted unreachable", 30, || async {
        renew(&leases, "alive").await?;
        let n = nodes.get("lost").await?;
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let tainted = taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
            && taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoSchedule");
        Ok(tainted.then_some(n))
    })
    .await?;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "tainted before the grace period"
    );
    let ready = node
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("Unknown", Some("NodeStatusUnknown"))
    );
    assert!(
        nodes
            .get("alive")
            .await?
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .is_empty()
    );
    // Pods on the lost node are marked not ready, then evicted when their toleration ends.
    let evicted = eventually("the quick pod evicted", 20, || async {
        renew(&leases, "alive").await?;
        Ok(pods
            .get("quick")
            .await?
            .metadata
            .deletion_timestamp
            .map(|_| ()))
    })
    .await;
    evicted?;
    let quick = pods.get("quick").await?;
    let conditions = quick.status.unwrap().conditions.unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c.type_ == "DisruptionTarget"
            && c.reason.as_deref() == Some("DeletionByTaintManager"))
    );
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False")
    );
    let stays = pods.get("stays").await?;
    assert!(
        stays.metadata.deletion_timestamp.is_none(),
        "a pod tolerating forever was evicted"
    );
    assert!(
        pods.get("defaulted")
            .await?
            .metadata
            .deletion_timestamp
            .is_none(),
        "300 s have not passed"
    );
    // Deleting the node removes its pods (pod GC, after the quarantine).
    nodes.delete("lost", &DeleteParams::default()).await?;
    eventually("pods of the deleted node gone", 40, || async {
        renew(&leases, "alive").await?;
        Ok(names(&pods.list(&ListParams::default()).await?.items)
            .is_empty()
            .then_some(()))
    })
    .await?;
    // `kubectl describe node` tells the story: registered, not ready, removed.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(e.client.clone(), "default");
    eventually("the lost node's events", 20, || async {
        let reasons: Vec<String> = events
            .list(&ListParams::default().fields("involvedObject.name=lost"))
            .await?
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        Ok(["RegisteredNode", "NodeNotReady", "RemovingNode"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn ttl_after_finished_deletes_jobs_with_their_pods() -> Result<()> {
    let e = env(&[]).await?;
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    jobs.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "brief" }, "spec": { "ttlSecondsAfterFinished": 1,
        "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox" }] } } } })))
        .await?;
    let pod = eventually("the job's pod", 20, || async {
        Ok(pods
            .list(&ListParams::default().labels("job-name=brief"))
            .await?
            .items
            .into_iter()
            .next())
    })
    .await?;
    finish(&pods, &pod.name_any(), "Succeeded", 0).await?;
    eventually("job and pod deleted after the TTL", 30, || async {
        let none = pods
            .list(&ListParams::default().labels("job-name=brief"))
            .await?
            .items
            .is_empty();
        Ok((none && jobs.get_opt("brief").await?.is_none()).then_some(()))
    })
    .await?;
    Ok(())
}
