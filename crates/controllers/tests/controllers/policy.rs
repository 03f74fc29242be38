//! Policy: ResourceQuota usage and admission, LimitRange defaults, disruption budgets and
//! evictions, PersistentVolume binding, horizontal autoscaling.

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Event, LimitRange, PersistentVolume, PersistentVolumeClaim, Pod, ResourceQuota,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, EvictParams, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::json;

use crate::{env, eventually, make_ready, obj};

fn pod(name: &str, resources: serde_json::Value) -> Pod {
    obj(
        json!({ "metadata": { "name": name, "labels": { "app": "q" } }, "spec": { "containers": [{ "name": "main", "image": "busybox", "resources": resources }] } }),
    )
}

fn api_error(e: kube::Error) -> Result<kube::core::Status> {
    match e {
        kube::Error::Api(s) => Ok(*s),
        other => bail!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn quotas_track_usage_and_refuse_creates_over_the_limit() -> Result<()> {
    let e = env(&[]).await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    quotas.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "compute" },
        "spec": { "hard": { "pods": "2", "requests.cpu": "1", "requests.memory": "1Gi", "count/deployments.apps": "1" } } })))
        .await?;
    eventually("usage computed", 20, || async {
        let s = quotas.get("compute").await?.status.unwrap_or_default();
        Ok(s.used
            .is_some_and(|u| u.get("pods").is_some_and(|q| q.0 == "0"))
            .then_some(()))
    })
    .await?;
    // Every container must state what the quota tracks.
    let err = api_error(
        pods.create(&PostParams::default(), &pod("bare", json!({})))
            .await
            .unwrap_err(),
    )?;
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains(
            "failed quota: compute: must specify requests.cpu for: main; requests.memory for: main"
        ),
        "{}",
        err.message
    );
    let req = json!({ "requests": { "cpu": "400m", "memory": "256Mi" } });
    pods.create(&PostParams::default(), &pod("one", req.clone()))
        .await?;
    pods.create(&PostParams::default(), &pod("two", req.clone()))
        .await?;
    let err = api_error(
        pods.create(&PostParams::default(), &pod("three", req.clone()))
            .await
            .unwrap_err(),
    )?;
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert!(
        err.message.contains("pods \"three\" is forbidden: exceeded quota: compute, requested: pods=1,requests.cpu=400m, used: pods=2,requests.cpu=800m, limited: pods=2,requests.cpu=1"),
        "{}",
        err.message
    );
    let used = quotas.get("compute").await?.status.unwrap().used.unwrap();
    assert_eq!(used["requests.memory"].0, "512Mi");
    // Object counts of any kind.
    e.cluster
        .k(&["create", "deployment", "d1", "--image=busybox"])?;
    eventually("the deployment counted", 20, || async {
        let u = quotas
            .get("compute")
            .await?
            .status
            .and_then(|s| s.used)
            .unwrap_or_default();
        Ok(u.get("count/deployments.apps")
            .is_some_and(|q| q.0 == "1")
            .then_some(()))
    })
    .await?;
    let out = e
        .cluster
        .k_fail(&["create", "deployment", "d2", "--image=busybox"])?;
    assert!(out.contains("exceeded quota: compute"), "{out}");
    // Deleting frees quota (the controller recalculates).
    pods.delete("one", &DeleteParams::default()).await?;
    eventually("usage lowered", 20, || async {
        let u = quotas
            .get("compute")
            .await?
            .status
            .and_then(|s| s.used)
            .unwrap_or_default();
        Ok(u.get("pods").is_some_and(|q| q.0 == "1").then_some(()))
    })
    .await?;
    pods.create(&PostParams::default(), &pod("three", req))
        .await?;
    Ok(())
}

#[tokio::test]
async fn limit_ranges_default_and_bound_containers() -> Result<()> {
    let e = env(&[]).await?;
    let ranges: Api<LimitRange> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(e.client.clone(), "default");
    ranges.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "limits" }, "spec": { "limits": [
        { "type": "Container", "default": { "cpu": "500m", "memory": "128Mi" }, "defaultRequest": { "cpu": "100m" }, "max": { "cpu": "1" } },
        { "type": "PersistentVolumeClaim", "max": { "storage": "2Gi" } } ] } })))
        .await?;
    let created = pods
        .create(&PostParams::default(), &pod("defaults", json!({})))
        .await?;
    let r = created.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "500m");
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "128Mi");
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "100m");
    assert_eq!(
        r.requests.as_ref().unwrap()["memory"].0,
        "128Mi",
        "the request defaults to the default limit"
    );
    assert!(
        created.metadata.annotations.unwrap()["kubernetes.io/limit-ranger"]
            .starts_with("LimitRanger plugin set:")
    );
    let err = api_error(
        pods.create(
            &PostParams::default(),
            &pod("greedy", json!({ "limits": { "cpu": "2" } })),
        )
        .await
        .unwrap_err(),
    )?;
    assert_eq!(err.code, 403);
    assert!(
        err.message
            .contains("maximum cpu usage per Container is 1, but limit is 2"),
        "{}",
        err.message
    );
    let err = api_error(
        claims
            .create(&PostParams::default(), &obj(json!({ "metadata": { "name": "big" }, "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "5Gi" } } } })))
            .await
            .unwrap_err(),
    )?;
    assert!(
        err.message
            .contains("maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn evictions_honour_disruption_budgets() -> Result<()> {
    let e = env(&[]).await?;
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(e.client.clone(), "default");
    e.cluster.k(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ])?;
    let created = eventually("three pods", 20, || async {
        let l = pods
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items;
        Ok((l.len() == 3).then_some(l))
    })
    .await?;
    for (i, p) in created.iter().enumerate() {
        make_ready(&pods, &p.name_any(), &format!("10.5.0.{i}")).await?;
    }
    pdbs.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "web" }, "spec": { "maxUnavailable": 1, "selector": { "matchLabels": { "app": "web" } } } }))).await?;
    let s = eventually("the budget computed", 20, || async {
        let s = pdbs.get("web").await?.status.unwrap_or_default();
        Ok((s.observed_generation == Some(1) && s.current_healthy == 3).then_some(s))
    })
    .await?;
    assert_eq!(
        (s.expected_pods, s.desired_healthy, s.disruptions_allowed),
        (3, 2, 1)
    );
    assert!(
        s.conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "DisruptionAllowed" && c.status == "True")
    );
    // One eviction is allowed; the budget is consumed at once, so the next is refused. (A
    // client that does not retry 429s, as kube-rs does by default for minutes, sees the refusal.)
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(e.cluster.kubeconfig())?,
        &Default::default(),
    )
    .await?;
    config.default_retry = false;
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config)?, "default");
    pods.evict(&created[0].name_any(), &EvictParams::default())
        .await?;
    let err = api_error(
        pods.evict(&created[1].name_any(), &EvictParams::default())
            .await
            .unwrap_err(),
    )?;
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        err.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert!(
        err.details
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "DisruptionBudget"))
    );
    assert_eq!(
        pdbs.get("web").await?.status.unwrap().disruptions_allowed,
        0
    );
    Ok(())
}

#[tokio::test]
async fn claims_bind_to_the_smallest_fitting_volume_and_release_on_delete() -> Result<()> {
    let e = env(&[]).await?;
    let volumes: Api<PersistentVolume> = Api::all(e.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(e.client.clone(), "default");
    for (name, size, policy) in [
        ("small", "1Gi", "Retain"),
        ("medium", "5Gi", "Delete"),
        ("large", "10Gi", "Retain"),
    ] {
        volumes.create(&PostParams::default(), &obj(json!({ "metadata": { "name": name }, "spec": {
            "capacity": { "storage": size }, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": policy, "hostPath": { "path": format!("/tmp/{name}") } } })))
            .await?;
    }
    eventually("volumes available", 20, || async {
        let l = volumes.list(&ListParams::default()).await?.items;
        Ok(l.iter()
            .all(|v| v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available"))
            .then_some(()))
    })
    .await?;
    claims.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "data" }, "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": { "requests": { "storage": "2Gi" } } } }))).await?;
    let claim = eventually("the claim bound", 20, || async {
        let c = claims.get("data").await?;
        Ok((c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")).then_some(c))
    })
    .await?;
    assert_eq!(
        claim.spec.as_ref().unwrap().volume_name.as_deref(),
        Some("medium")
    );
    assert_eq!(
        claim.status.as_ref().unwrap().capacity.as_ref().unwrap()["storage"].0,
        "5Gi"
    );
    assert_eq!(
        claim
            .annotations()
            .get("pv.kubernetes.io/bind-completed")
            .map(String::as_str),
        Some("yes")
    );
    let pv = volumes.get("medium").await?;
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("data")
    );
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
    // A claim too big for anything stays pending with an event.
    claims.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "huge" }, "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": { "requests": { "storage": "100Gi" } } } }))).await?;
    let events: Api<Event> = Api::namespaced(e.client.clone(), "default");
    eventually("FailedBinding", 20, || async {
        let l = events.list(&ListParams::default()).await?.items;
        Ok(l.iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedBinding")
                    && e.involved_object.name.as_deref() == Some("huge")
            })
            .then_some(()))
    })
    .await?;
    // The Delete reclaim policy removes the volume once its claim is gone.
    claims.delete("data", &DeleteParams::default()).await?;
    eventually("the released volume deleted", 20, || async {
        Ok(volumes.get_opt("medium").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn autoscaler_enforces_bounds_and_follows_pod_metrics() -> Result<()> {
    let e = env(&[
        "--kube-controller-manager-arg",
        "horizontal-pod-autoscaler-sync-period=1s",
    ])
    .await?;
    let deploys: Api<Deployment> = Api::namespaced(e.client.clone(), "default");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    deploys.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "web" }, "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "web" } },
        "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "main", "image": "busybox", "resources": { "requests": { "cpu": "100m" } } }] } } } })))
        .await?;
    hpas.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "web" }, "spec": {
        "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" }, "minReplicas": 2, "maxReplicas": 6,
        "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 50 } } }] } })))
        .await?;
    // Below minReplicas it scales up without any metrics.
    eventually("scaled to minReplicas", 20, || async {
        Ok((deploys.get("web").await?.spec.unwrap().replicas == Some(2)).then_some(()))
    })
    .await?;
    // Without a metrics API it says so and keeps the size.
    eventually("ScalingActive False", 20, || async {
        let c = hpas
            .get("web")
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        Ok(c.iter()
            .any(|c| {
                c.type_ == "ScalingActive"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("FailedGetResourceMetric")
            })
            .then_some(()))
    })
    .await?;
    // Serve metrics.k8s.io PodMetrics as a custom resource and report 90 % CPU.
    e.cluster.k_stdin(&["apply", "-f", "-"], r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: pods.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  names: {kind: PodMetrics, plural: pods, singular: podmetrics}
  scope: Namespaced
  versions: [{name: v1beta1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
"#)?;
    let metrics: Api<DynamicObject> = Api::namespaced_with(
        e.client.clone(),
        "default",
        &kube::api::ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        },
    );
    let report = || async {
        for (i, p) in pods
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items
            .iter()
            .enumerate()
        {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if !p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"))
            {
                make_ready(&pods, &p.name_any(), &format!("10.6.0.{i}")).await?;
            }
            let m = json!({ "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics", "metadata": { "name": p.name_any(), "labels": { "app": "web" } },
                "timestamp": jiff::Timestamp::now().to_string(), "window": "30s", "containers": [{ "name": "main", "usage": { "cpu": "90m", "memory": "10Mi" } }] });
            metrics
                .patch(
                    &p.name_any(),
                    &PatchParams::apply("test-metrics").force(),
                    &Patch::Apply(&m),
                )
                .await?;
        }
        anyhow::Ok(())
    };
    let status = eventually("scaled up by the metric", 40, || async {
        report().await?;
        let replicas = deploys
            .get("web")
            .await?
            .spec
            .unwrap()
            .replicas
            .unwrap_or(0);
        // The autoscaler writes its status after scaling: read it afterwards, and wait for it.
        let h = hpas.get("web").await?;
        let active = h
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "ScalingActive" && c.status == "True")
            });
        Ok((replicas >= 4 && active).then_some(h))
    })
    .await?;
    let s = status.status.unwrap();
    assert!(
        s.conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "ScalingActive" && c.status == "True")
    );
    let current = &s.current_metrics.unwrap()[0];
    assert_eq!(
        current
            .resource
            .as_ref()
            .unwrap()
            .current
            .average_utilization,
        Some(90)
    );
    let events: Api<Event> = Api::namespaced(e.client.clone(), "default");
    let rescaled = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("SuccessfulRescale"));
    assert!(rescaled);
    // It never goes beyond maxReplicas.
    eventually("held at maxReplicas", 40, || async {
        report().await?;
        let replicas = deploys
            .get("web")
            .await?
            .spec
            .unwrap()
            .replicas
            .unwrap_or(0);
        assert!(replicas <= 6, "beyond maxReplicas: {replicas}");
        Ok((replicas == 6).then_some(()))
    })
    .await?;
    Ok(())
}
