//! Workload controllers: ReplicaSet/ReplicationController, Deployment, StatefulSet, DaemonSet,
//! Job and CronJob.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod, ReplicationController};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::{env, eventually, finish, make_ready, names, obj};

fn pod_template(app: &str) -> serde_json::Value {
    json!({ "metadata": { "labels": { "app": app } }, "spec": { "containers": [{ "name": "main", "image": "busybox" }] } })
}

async fn pods_with(pods: &Api<Pod>, selector: &str) -> Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

#[tokio::test]
async fn replicasets_keep_replicas_adopt_orphans_and_report_status() -> Result<()> {
    let e = env(&[]).await?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    rs_api
        .create(&PostParams::default(), &obj(json!({
            "metadata": { "name": "web" },
            "spec": { "replicas": 3, "minReadySeconds": 1, "selector": { "matchLabels": { "app": "web" } }, "template": pod_template("web") }
        })))
        .await?;
    let created = eventually("three pods", 20, || async {
        Ok(Some(pods_with(&pods, "app=web").await?).filter(|p| p.len() == 3))
    })
    .await?;
    for p in &created {
        let r = p.owner_references();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (
                r[0].kind.as_str(),
                r[0].controller,
                r[0].block_owner_deletion
            ),
            ("ReplicaSet", Some(true), Some(true))
        );
        assert!(p.name_any().starts_with("web-"));
    }
    for (i, p) in created.iter().take(2).enumerate() {
        make_ready(&pods, &p.name_any(), &format!("10.0.0.{}", i + 1)).await?;
    }
    let status = eventually("ready and available counts", 20, || async {
        let rs = rs_api.get("web").await?;
        let s = rs.status.unwrap_or_default();
        Ok((s.ready_replicas == Some(2) && s.available_replicas == Some(2)).then_some(s))
    })
    .await?;
    assert_eq!(
        (status.replicas, status.fully_labeled_replicas),
        (3, Some(3))
    );
    assert_eq!(status.observed_generation, Some(1));

    // An orphan that matches is adopted, and one surplus pod goes: the unready one.
    pods.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "stray", "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "main", "image": "busybox" }] } })))
        .await?;
    eventually(
        "the orphan adopted and the count back to three",
        20,
        || async {
            let all = pods_with(&pods, "app=web").await?;
            let live: Vec<&Pod> = all
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let adopted = pods
                .get_opt("stray")
                .await?
                .is_none_or(|p| p.owner_references().iter().any(|r| r.kind == "ReplicaSet"));
            Ok((live.len() == 3 && adopted).then_some(()))
        },
    )
    .await?;
    let ready_names: Vec<String> = created.iter().take(2).map(|p| p.name_any()).collect();
    for name in &ready_names {
        assert!(
            pods.get_opt(name).await?.is_some(),
            "a ready pod {name} was deleted before unready ones"
        );
    }

    // A pod whose labels stop matching is released.
    let victim = ready_names[0].clone();
    pods.patch(
        &victim,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "metadata": { "labels": { "app": "other" } } })),
    )
    .await?;
    eventually("the relabelled pod released and replaced", 20, || async {
        let released = pods.get(&victim).await?.owner_references().is_empty();
        let count = pods_with(&pods, "app=web")
            .await?
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        Ok((released && count == 3).then_some(()))
    })
    .await?;

    // Scale down through the scale subresource.
    rs_api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 1 } })),
        )
        .await?;
    eventually("one pod left", 20, || async {
        Ok((pods_with(&pods, "app=web").await?.len() == 1).then_some(()))
    })
    .await?;
    let events: Api<Event> = Api::namespaced(e.client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "SuccessfulCreate")
            && reasons.iter().any(|r| r == "SuccessfulDelete"),
        "{reasons:?}"
    );
    Ok(())
}

#[tokio::test]
async fn replication_controllers_share_the_replicaset_logic() -> Result<()> {
    let e = env(&[]).await?;
    let rcs: Api<ReplicationController> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    rcs.create(&PostParams::default(), &obj(json!({
        "metadata": { "name": "legacy" },
        "spec": { "replicas": 2, "selector": { "app": "legacy" }, "template": pod_template("legacy") }
    })))
    .await?;
    let created = eventually("two pods", 20, || async {
        Ok(Some(pods_with(&pods, "app=legacy").await?).filter(|p| p.len() == 2))
    })
    .await?;
    make_ready(&pods, &created[0].name_any(), "10.0.1.1").await?;
    eventually("status", 20, || async {
        let s = rcs.get("legacy").await?.status.unwrap_or_default();
        Ok((s.replicas == 2 && s.ready_replicas == Some(1)).then_some(()))
    })
    .await?;
    pods.delete(&created[1].name_any(), &DeleteParams::default())
        .await?;
    eventually("a replacement", 20, || async {
        let now = names(&pods_with(&pods, "app=legacy").await?);
        Ok((now.len() == 2 && !now.contains(&created[1].name_any())).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deployments_roll_recreate_clean_up_and_time_out() -> Result<()> {
    let e = env(&[]).await?;
    let deploys: Api<Deployment> = Api::namespaced(e.client.clone(), "default");
    let rsets: Api<ReplicaSet> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    deploys
        .create(&PostParams::default(), &obj(json!({
            "metadata": { "name": "web", "annotations": { "kubernetes.io/change-cause": "first" } },
            "spec": { "replicas": 4, "revisionHistoryLimit": 1, "selector": { "matchLabels": { "app": "web" } }, "template": pod_template("web"),
                      "strategy": { "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } } }
        })))
        .await?;
    // Play the kubelet for every pod of the deployment until told to stop.
    let ready_all = || async {
        let mut n = 0;
        for p in pods_with(&pods, "app=web").await? {
            if p.metadata.deletion_timestamp.is_none()
                && !p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"))
            {
                n += 1;
                make_ready(&pods, &p.name_any(), &format!("10.1.0.{n}")).await?;
            }
        }
        anyhow::Ok(())
    };
    let first = eventually("the first rollout", 30, || async {
        ready_all().await?;
        let d = deploys.get("web").await?;
        let s = d.status.clone().unwrap_or_default();
        Ok((s.available_replicas == Some(4) && s.updated_replicas == Some(4)).then_some(d))
    })
    .await?;
    assert_eq!(
        first
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let progressing = first
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );

    // A new template rolls over without dropping below 4 available pods (maxUnavailable 0)
    // and never above 5 pods (maxSurge 1).
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&json!({ "metadata": { "annotations": { "kubernetes.io/change-cause": "second" } }, "spec": { "template": { "spec": { "containers": [{ "name": "main", "image": "busybox:2" }] } } } })))
        .await?;
    eventually("the second rollout", 40, || async {
        let live: Vec<Pod> = pods_with(&pods, "app=web")
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        assert!(
            live.len() <= 5,
            "more than replicas + maxSurge pods: {}",
            live.len()
        );
        let ready = live
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        assert!(
            ready >= 4,
            "fewer than replicas - maxUnavailable ready pods: {ready}"
        );
        ready_all().await?;
        let d = deploys.get("web").await?;
        let s = d.status.unwrap_or_default();
        Ok((s.updated_replicas == Some(4)
            && s.replicas == Some(4)
            && s.available_replicas == Some(4)
            && s.observed_generation == Some(2))
        .then_some(()))
    })
    .await?;
    let all = rsets
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items;
    assert_eq!(
        all.len(),
        2,
        "revisionHistoryLimit 1 keeps one old replica set"
    );
    let newest = all
        .iter()
        .find(|r| {
            r.annotations()
                .get("deployment.kubernetes.io/revision")
                .map(String::as_str)
                == Some("2")
        })
        .expect("revision 2");
    assert_eq!(
        newest
            .annotations()
            .get("kubernetes.io/change-cause")
            .map(String::as_str),
        Some("second")
    );
    assert!(newest.labels().contains_key("pod-template-hash"));

    // Recreate: the old pods are gone before any new one exists.
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "strategy": { "type": "Recreate", "rollingUpdate": null }, "template": { "spec": { "containers": [{ "name": "main", "image": "busybox:3" }] } } } })))
        .await?;
    eventually("the recreate rollout", 40, || async {
        let all = pods_with(&pods, "app=web").await?;
        let images: std::collections::BTreeSet<String> = all
            .iter()
            .map(|p| {
                p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default()
            })
            .collect();
        assert!(
            !(images.contains("busybox:2") && images.contains("busybox:3")),
            "old and new pods at once: {images:?}"
        );
        ready_all().await?;
        let s = deploys.get("web").await?.status.unwrap_or_default();
        Ok((s.updated_replicas == Some(4)
            && s.available_replicas == Some(4)
            && s.replicas == Some(4))
        .then_some(()))
    })
    .await?;

    // Pods that never become ready exceed a short progress deadline.
    deploys
        .create(&PostParams::default(), &obj(json!({
            "metadata": { "name": "stuck" },
            "spec": { "replicas": 1, "progressDeadlineSeconds": 2, "selector": { "matchLabels": { "app": "stuck" } }, "template": pod_template("stuck") }
        })))
        .await?;
    eventually("ProgressDeadlineExceeded", 30, || async {
        let d = deploys.get("stuck").await?;
        let c = d.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(c.iter()
            .any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn statefulsets_create_in_order_with_claims_and_update_from_the_top() -> Result<()> {
    let e = env(&[]).await?;
    let sets: Api<StatefulSet> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(e.client.clone(), "default");
    sets.create(&PostParams::default(), &obj(json!({
        "metadata": { "name": "db" },
        "spec": {
            "serviceName": "db", "replicas": 3, "selector": { "matchLabels": { "app": "db" } }, "template": pod_template("db"),
            "persistentVolumeClaimRetentionPolicy": { "whenScaled": "Delete", "whenDeleted": "Retain" },
            "volumeClaimTemplates": [{ "metadata": { "name": "data" }, "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } } }]
        }
    })))
    .await?;
    let db0 = eventually("db-0", 20, || async {
        pods.get_opt("db-0").await.map_err(Into::into)
    })
    .await?;
    assert_eq!(db0.spec.as_ref().unwrap().hostname.as_deref(), Some("db-0"));
    assert_eq!(db0.spec.as_ref().unwrap().subdomain.as_deref(), Some("db"));
    assert_eq!(
        db0.labels()
            .get("statefulset.kubernetes.io/pod-name")
            .map(String::as_str),
        Some("db-0")
    );
    assert_eq!(
        db0.labels()
            .get("apps.kubernetes.io/pod-index")
            .map(String::as_str),
        Some("0")
    );
    let volumes = db0
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .clone()
        .unwrap_or_default();
    assert!(volumes.iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == "data-db-0")
    }));
    assert!(claims.get_opt("data-db-0").await?.is_some());
    // OrderedReady: db-1 waits for db-0.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        pods.get_opt("db-1").await?.is_none(),
        "db-1 created before db-0 was ready"
    );
    for (i, name) in ["db-0", "db-1", "db-2"].iter().enumerate() {
        eventually(name, 20, || async {
            pods.get_opt(name).await.map_err(Into::into)
        })
        .await?;
        make_ready(&pods, name, &format!("10.2.0.{i}")).await?;
    }
    let s = eventually("3 ready replicas", 20, || async {
        let s = sets.get("db").await?.status.unwrap_or_default();
        Ok((s.ready_replicas == Some(3) && s.current_replicas == Some(3)).then_some(s))
    })
    .await?;
    assert_eq!(s.current_revision, s.update_revision);

    // A partitioned update touches only ordinals at or above the partition, highest first.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": {
        "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "partition": 1 } },
        "template": { "spec": { "containers": [{ "name": "main", "image": "busybox:2" }] } } } })),
    )
    .await?;
    let image = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default()
    };
    for name in ["db-2", "db-1"] {
        eventually(
            &format!("{name} recreated with the new template"),
            30,
            || async {
                match pods.get_opt(name).await? {
                    Some(p)
                        if image(&p) == "busybox:2" && p.metadata.deletion_timestamp.is_none() =>
                    {
                        make_ready(&pods, name, "10.2.0.9").await?;
                        Ok(Some(()))
                    }
                    Some(p) if image(&p) == "busybox" && name == "db-1" => {
                        assert_eq!(
                            image(&pods.get("db-2").await?),
                            "busybox:2",
                            "db-1 updated before db-2"
                        );
                        Ok(None)
                    }
                    _ => Ok(None),
                }
            },
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        image(&pods.get("db-0").await?),
        "busybox",
        "the partition protects db-0"
    );
    let s = eventually("updated count", 20, || async {
        let s = sets.get("db").await?.status.unwrap_or_default();
        Ok((s.updated_replicas == Some(2)).then_some(s))
    })
    .await?;
    assert_ne!(s.current_revision, s.update_revision);

    // Scaling down removes the highest ordinal, and whenScaled: Delete removes its claim.
    sets.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "replicas": 2 } })),
    )
    .await?;
    eventually("db-2 and its claim gone", 30, || async {
        let claim = claims.get_opt("data-db-2").await?;
        let claim_owned_by_pod = claim
            .as_ref()
            .is_some_and(|c| c.owner_references().iter().any(|r| r.kind == "Pod"));
        Ok(
            (pods.get_opt("db-2").await?.is_none() && (claim.is_none() || claim_owned_by_pod))
                .then_some(()),
        )
    })
    .await?;
    assert!(
        claims.get_opt("data-db-0").await?.is_some(),
        "retained claims stay"
    );
    Ok(())
}

#[tokio::test]
async fn daemonsets_run_one_pod_per_eligible_node() -> Result<()> {
    let e = env(&[]).await?;
    let nodes: Api<Node> = Api::all(e.client.clone());
    for (name, taint) in [
        ("n1", None),
        ("n2", None),
        (
            "gpu",
            Some(json!([{ "key": "gpu", "value": "yes", "effect": "NoSchedule" }])),
        ),
    ] {
        let mut n = json!({ "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } }, "spec": {} });
        if let Some(t) = taint {
            n["spec"]["taints"] = t;
        }
        nodes.create(&PostParams::default(), &obj(n)).await?;
    }
    let sets: Api<DaemonSet> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    sets.create(&PostParams::default(), &obj(json!({
        "metadata": { "name": "agent" },
        "spec": { "selector": { "matchLabels": { "app": "agent" } }, "template": pod_template("agent") }
    })))
    .await?;
    let pinned = |p: &Pod| -> String {
        p.spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .and_then(|s| s.node_selector_terms.first())
            .and_then(|t| t.match_fields.as_ref())
            .and_then(|f| f.first())
            .and_then(|f| f.values.as_ref())
            .and_then(|v| v.first().cloned())
            .unwrap_or_default()
    };
    let targets = eventually("a pod for n1 and n2 only", 20, || async {
        let mut t: Vec<String> = pods_with(&pods, "app=agent")
            .await?
            .iter()
            .map(pinned)
            .collect();
        t.sort();
        Ok((t == ["n1", "n2"]).then_some(t))
    })
    .await?;
    assert_eq!(targets, ["n1", "n2"]);
    let some = pods_with(&pods, "app=agent").await?;
    let tolerations = some[0]
        .spec
        .as_ref()
        .unwrap()
        .tolerations
        .clone()
        .unwrap_or_default();
    assert!(tolerations.iter().any(
        |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
            && t.effect.as_deref() == Some("NoExecute")
            && t.toleration_seconds.is_none()
    ));
    assert!(
        some[0].spec.as_ref().unwrap().node_name.is_none(),
        "binding is the scheduler's job"
    );
    // A new node gets a pod; a deleted node loses its pod.
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({ "metadata": { "name": "n3" } })),
        )
        .await?;
    nodes.delete("n1", &DeleteParams::default()).await?;
    eventually("pods follow the nodes", 20, || async {
        let mut t: Vec<String> = pods_with(&pods, "app=agent")
            .await?
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(pinned)
            .collect();
        t.sort();
        Ok((t == ["n2", "n3"]).then_some(()))
    })
    .await?;
    let s = eventually("status", 20, || async {
        let s = sets.get("agent").await?.status.unwrap_or_default();
        Ok((s.desired_number_scheduled == 2 && s.current_number_scheduled == 2).then_some(s))
    })
    .await?;
    assert_eq!(s.number_misscheduled, 0);
    Ok(())
}

#[tokio::test]
async fn jobs_complete_fail_run_indexed_and_suspend() -> Result<()> {
    let e = env(&[]).await?;
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    let job_template = |extra: serde_json::Value| {
        let mut t = json!({ "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox" }] } });
        if let Some(m) = extra.as_object() {
            for (k, v) in m {
                t["spec"][k] = v.clone();
            }
        }
        t
    };
    // Completions with parallelism.
    jobs.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "batch" }, "spec": { "completions": 3, "parallelism": 2, "template": job_template(json!({})) } }))).await?;
    eventually("batch to complete", 40, || async {
        let running = pods_with(&pods, "job-name=batch").await?;
        let active: Vec<&Pod> = running
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
            .collect();
        assert!(active.len() <= 2, "parallelism exceeded: {}", active.len());
        for p in active {
            assert!(
                p.finalizers()
                    .iter()
                    .any(|f| f == "batch.kubernetes.io/job-tracking")
            );
            finish(&pods, &p.name_any(), "Succeeded", 0).await?;
        }
        let s = jobs.get("batch").await?.status.unwrap_or_default();
        Ok(s.conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(()))
    })
    .await?;
    let s = jobs.get("batch").await?.status.unwrap_or_default();
    assert_eq!(
        (s.succeeded, s.failed.unwrap_or(0), s.active),
        (Some(3), 0, Some(0))
    );
    assert!(s.completion_time.is_some());
    // Counted pods lose the tracking finalizer.
    for p in pods_with(&pods, "job-name=batch").await? {
        assert!(
            !p.finalizers()
                .iter()
                .any(|f| f == "batch.kubernetes.io/job-tracking"),
            "{} kept its finalizer",
            p.name_any()
        );
    }

    // The pod failure policy fails the job on exit code 42.
    jobs.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "policy" }, "spec": {
        "backoffLimit": 5,
        "podFailurePolicy": { "rules": [{ "action": "FailJob", "onExitCodes": { "operator": "In", "values": [42] } }] },
        "template": job_template(json!({})) } })))
        .await?;
    let p = eventually("policy pod", 20, || async {
        Ok(pods_with(&pods, "job-name=policy")
            .await?
            .into_iter()
            .next())
    })
    .await?;
    finish(&pods, &p.name_any(), "Failed", 42).await?;
    eventually("Failed by PodFailurePolicy", 20, || async {
        let c = jobs
            .get("policy")
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        Ok(c.iter()
            .any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("PodFailurePolicy"))
            .then_some(()))
    })
    .await?;

    // Indexed: one pod per index with the index in annotation, label, env and hostname.
    jobs.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "idx" }, "spec": { "completions": 3, "parallelism": 3, "completionMode": "Indexed", "template": job_template(json!({})) } }))).await?;
    let indexed = eventually("three indexed pods", 20, || async {
        Ok(Some(pods_with(&pods, "job-name=idx").await?).filter(|p| p.len() == 3))
    })
    .await?;
    let mut indexes: Vec<String> = indexed
        .iter()
        .map(|p| {
            p.annotations()
                .get("batch.kubernetes.io/job-completion-index")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    for p in &indexed {
        let i = &p.annotations()["batch.kubernetes.io/job-completion-index"];
        assert_eq!(
            p.spec.as_ref().unwrap().hostname.as_deref(),
            Some(format!("idx-{i}").as_str())
        );
        assert!(
            p.spec.as_ref().unwrap().containers[0]
                .env
                .iter()
                .flatten()
                .any(|e| e.name == "JOB_COMPLETION_INDEX")
        );
        if i != "1" {
            finish(&pods, &p.name_any(), "Succeeded", 0).await?;
        }
    }
    eventually("completedIndexes 0,2", 20, || async {
        let s = jobs.get("idx").await?.status.unwrap_or_default();
        Ok((s.completed_indexes.as_deref() == Some("0,2")).then_some(()))
    })
    .await?;

    // Suspending deletes the active pod; resuming starts it again.
    jobs.patch(
        "idx",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "suspend": true } })),
    )
    .await?;
    eventually("suspended without active pods", 20, || async {
        let j = jobs.get("idx").await?;
        let s = j.status.unwrap_or_default();
        let suspended = s
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Suspended" && c.status == "True");
        Ok((suspended && s.active == Some(0)).then_some(()))
    })
    .await?;
    jobs.patch(
        "idx",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "suspend": false } })),
    )
    .await?;
    let again = eventually("index 1 running again", 30, || async {
        Ok(pods_with(&pods, "job-name=idx")
            .await?
            .into_iter()
            .find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.annotations()
                        .get("batch.kubernetes.io/job-completion-index")
                        .map(String::as_str)
                        == Some("1")
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
            }))
    })
    .await?;
    finish(&pods, &again.name_any(), "Succeeded", 0).await?;
    eventually("idx complete", 20, || async {
        let c = jobs
            .get("idx")
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        Ok(c.iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
            .then_some(()))
    })
    .await?;

    // Deadline.
    jobs.create(&PostParams::default(), &obj(json!({ "metadata": { "name": "slow" }, "spec": { "activeDeadlineSeconds": 1, "template": job_template(json!({})) } }))).await?;
    eventually("DeadlineExceeded", 20, || async {
        let c = jobs
            .get("slow")
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        Ok(c.iter()
            .any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("DeadlineExceeded"))
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// A pod recorded in `uncountedTerminatedPods` whose finalizer is still on (the controller
/// stopped, or its patch failed, between the two writes) is released and counted when the
/// controller comes back, and the job completes.
#[tokio::test]
async fn a_recorded_pod_still_holding_its_finalizer_is_released() -> Result<()> {
    let cluster = skiff_testing::TestCluster::start_with(&[
        "--disable-agent",
        "--disable-controller-manager",
    ])?;
    let client = skiff_runtime::client::from_kubeconfig(&cluster.kubeconfig()).await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let job = jobs
        .create(
            &PostParams::default(),
            &obj(json!({ "metadata": { "name": "recorded" }, "spec": { "template": {
                "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox" }] } } } })),
        )
        .await?;
    let job_uid = job.metadata.uid.clone().unwrap();
    // The state the first half of the controller's work leaves behind.
    let pod = pods
        .create(
            &PostParams::default(),
            &obj(json!({ "metadata": {
                "name": "recorded-1",
                "labels": job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels,
                "finalizers": ["batch.kubernetes.io/job-tracking"],
                "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": "recorded",
                    "uid": job_uid, "controller": true, "blockOwnerDeletion": true }] },
                "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox" }] } })),
        )
        .await?;
    finish(&pods, "recorded-1", "Succeeded", 0).await?;
    let status = json!({ "status": {
        "startTime": "2026-01-01T00:00:00Z",
        "active": 0,
        "uncountedTerminatedPods": { "succeeded": [pod.metadata.uid] } } });
    jobs.patch_status("recorded", &PatchParams::default(), &Patch::Merge(&status))
        .await?;

    let _manager = cluster.spawn_skiff(
        "manager",
        &["controller-manager", "--controllers=job-controller"],
    )?;
    eventually("the job to complete", 30, || async {
        let s = jobs.get("recorded").await?.status.unwrap_or_default();
        let complete = s
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        Ok(complete.then_some(s))
    })
    .await
    .map(|s| {
        assert_eq!(s.succeeded, Some(1));
        assert!(
            s.uncounted_terminated_pods
                .is_none_or(|u| u.succeeded.unwrap_or_default().is_empty())
        );
    })?;
    let pod = pods.get("recorded-1").await?;
    assert!(pod.finalizers().is_empty(), "{:?}", pod.finalizers());
    Ok(())
}

#[tokio::test]
async fn cronjobs_fire_on_schedule_and_keep_history() -> Result<()> {
    let e = env(&[]).await?;
    let cronjobs: Api<CronJob> = Api::namespaced(e.client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(e.client.clone(), "default");
    cronjobs
        .create(&PostParams::default(), &obj(json!({ "metadata": { "name": "tick" }, "spec": {
            "schedule": "@every 2s", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 1,
            "jobTemplate": { "spec": { "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox" }] } } } } } })))
        .await?;
    let first = eventually("the first job", 20, || async {
        Ok(jobs
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .next())
    })
    .await?;
    assert!(first.name_any().starts_with("tick-"));
    assert!(
        first
            .annotations()
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp")
    );
    assert_eq!(first.owner_references()[0].kind, "CronJob");
    let cj = eventually("active job in status", 10, || async {
        let cj = cronjobs.get("tick").await?;
        Ok(cj
            .status
            .as_ref()
            .and_then(|s| s.active.as_ref())
            .is_some_and(|a| !a.is_empty())
            .then_some(cj))
    })
    .await?;
    assert!(cj.status.as_ref().unwrap().last_schedule_time.is_some());
    // Finished jobs beyond successfulJobsHistoryLimit go, oldest first. Two finished runs
    // are planted (owned by the cronjob), then the live one finishes too.
    let cj_uid = cj.uid().unwrap();
    for (name, started) in [
        ("tick-1", "2024-01-01T00:00:00Z"),
        ("tick-2", "2024-01-01T00:01:00Z"),
    ] {
        jobs.create(&PostParams::default(), &obj(json!({ "metadata": { "name": name, "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "CronJob", "name": "tick", "uid": cj_uid, "controller": true }] },
            "spec": { "suspend": true, "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "main", "image": "busybox" }] } } } })))
            .await?;
        jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": { "startTime": started, "completionTime": started,
            "conditions": [{ "type": "Complete", "status": "True", "lastTransitionTime": started }] } }))).await?;
    }
    let pods: Api<Pod> = Api::namespaced(e.client.clone(), "default");
    eventually("history kept at one finished job", 40, || async {
        for p in pods.list(&ListParams::default()).await?.items {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending") {
                finish(&pods, &p.name_any(), "Succeeded", 0).await?;
            }
        }
        let cj = cronjobs.get("tick").await?;
        let all = jobs.list(&ListParams::default()).await?.items;
        let finished = all
            .iter()
            .filter(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.completion_time.as_ref())
                    .is_some()
            })
            .count();
        let planted_gone = !names(&all).iter().any(|n| n == "tick-1" || n == "tick-2");
        let has_success = cj
            .status
            .as_ref()
            .and_then(|s| s.last_successful_time.as_ref())
            .is_some();
        Ok((has_success && planted_gone && finished == 1).then_some(()))
    })
    .await?;
    Ok(())
}
