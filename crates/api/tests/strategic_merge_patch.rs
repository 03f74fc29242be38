//! Strategic merge patch specifications, table-driven.
//!
//! Cases come from upstream's task page "Update API Objects in Place Using kubectl patch"
//! (containers merge by name, tolerations are replaced, `$retainKeys` on a Deployment's
//! strategy), from the directives of upstream's strategic-merge-patch design document
//! (`$patch`, `$retainKeys`, `$deleteFromPrimitiveList`, `$setElementOrder`), and from the
//! patches `kubectl apply` sends (three-way patches with `$setElementOrder` lists).

use serde_json::{Value, json};
use skiff_api::patch::{
    PatchError, apply_merge_patch, apply_strategic_merge_patch, supports_strategic_merge,
};

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
const POD: &str = "io.k8s.api.core.v1.Pod";
const SERVICE: &str = "io.k8s.api.core.v1.Service";
const PDB: &str = "io.k8s.api.policy.v1.PodDisruptionBudget";

/// The Deployment of the kubectl patch task page.
fn patch_demo() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "patch-demo"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {
                    "containers": [{"name": "patch-demo-ctr", "image": "nginx"}],
                    "tolerations": [{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}]
                }
            }
        }
    })
}

/// A Deployment shaped like what `kubectl apply` maintains.
fn web() -> Value {
    json!({
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a.example/x", "b.example/y"]},
        "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "30%", "maxUnavailable": 0}},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "args": ["--a", "--b"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
                            "ports": [{"containerPort": 8080, "name": "http"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                        },
                        {"name": "sidecar", "image": "sidecar:1"}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
                    "nodeSelector": {"disk": "ssd"}
                }
            }
        }
    })
}

/// A field and its expected value after the patch.
type Expectation = (&'static str, fn() -> Value);

struct Case {
    name: &'static str,
    definition: &'static str,
    doc: Value,
    patch: Value,
    /// A JSON pointer into the result and the value expected there.
    expect: &'static [Expectation],
}

fn run(cases: Vec<Case>) {
    for case in cases {
        let out = apply_strategic_merge_patch(&case.doc, &case.patch, case.definition)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        for (pointer, want) in case.expect {
            let got = out.pointer(pointer).cloned().unwrap_or(Value::Null);
            assert_eq!(got, want(), "{}: at {pointer}", case.name);
        }
    }
}

#[test]
fn kubectl_patch_task_page() {
    run(vec![
        Case {
            name: "a new container is merged in by name, ahead of the existing one",
            definition: DEPLOYMENT,
            doc: patch_demo(),
            patch: json!({"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}}}),
            expect: &[(
                "/spec/template/spec/containers",
                || json!([{"name": "patch-demo-ctr-2", "image": "redis"}, {"name": "patch-demo-ctr", "image": "nginx"}]),
            )],
        },
        Case {
            name: "tolerations have no patch strategy: the list is replaced",
            definition: DEPLOYMENT,
            doc: patch_demo(),
            patch: json!({"spec": {"template": {"spec": {"tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]}}}}),
            expect: &[(
                "/spec/template/spec/tolerations",
                || json!([{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]),
            )],
        },
        Case {
            name: "without $retainKeys the old rollingUpdate stays",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"strategy": {"type": "Recreate"}}}),
            expect: &[(
                "/spec/strategy",
                || json!({"type": "Recreate", "rollingUpdate": {"maxSurge": "30%", "maxUnavailable": 0}}),
            )],
        },
        Case {
            name: "$retainKeys clears the keys it does not list",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            expect: &[("/spec/strategy", || json!({"type": "Recreate"}))],
        },
    ]);
    // The JSON merge patch variant of the first example replaces the list instead.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-3", "image": "gcr.io/google-samples/hello-app:2.0"}]}}}});
    let out = apply_merge_patch(&patch_demo(), &patch);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "patch-demo-ctr-3", "image": "gcr.io/google-samples/hello-app:2.0"}])
    );
}

#[test]
fn directives() {
    run(vec![
        Case {
            name: "$patch: delete removes list items by merge key",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
            expect: &[
                ("/spec/template/spec/containers/0/name", || json!("app")),
                ("/spec/template/spec/containers/1", || Value::Null),
            ],
        },
        Case {
            name: "$patch: replace in a list makes the other patch items the whole list",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}}}),
            expect: &[(
                "/spec/template/spec/containers",
                || json!([{"name": "only", "image": "x"}]),
            )],
        },
        Case {
            name: "$patch: replace in a map replaces the map",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"metadata": {"labels": {"$patch": "replace", "app": "other"}}}),
            expect: &[
                ("/metadata/labels", || json!({"app": "other"})),
                ("/metadata/name", || json!("web")),
            ],
        },
        Case {
            name: "$patch: delete on a map empties it",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {"nodeSelector": {"$patch": "delete"}}}}}),
            expect: &[("/spec/template/spec/nodeSelector", || json!({}))],
        },
        Case {
            name: "$patch: delete on a map the object lacks adds nothing",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {"affinity": {"$patch": "delete"}}}}}),
            expect: &[("/spec/template/spec/affinity", || Value::Null)],
        },
        Case {
            name: "$deleteFromPrimitiveList removes scalars from a set",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x", "not-there"]}}),
            expect: &[("/metadata/finalizers", || json!(["b.example/y"]))],
        },
        Case {
            name: "$deleteFromPrimitiveList and additions in one patch",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b.example/y"], "finalizers": ["c.example/z"]}}),
            expect: &[("/metadata/finalizers", || {
                json!(["c.example/z", "a.example/x"])
            })],
        },
        Case {
            name: "$setElementOrder orders a merged list",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}}}),
            expect: &[
                ("/spec/template/spec/containers/0/name", || json!("sidecar")),
                ("/spec/template/spec/containers/1/name", || json!("app")),
            ],
        },
        Case {
            name: "$setElementOrder orders scalars",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"metadata": {"$setElementOrder/finalizers": ["b.example/y", "c.example/z", "a.example/x"], "finalizers": ["c.example/z"]}}),
            expect: &[("/metadata/finalizers", || {
                json!(["b.example/y", "c.example/z", "a.example/x"])
            })],
        },
        Case {
            name: "null deletes a key",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"metadata": {"labels": {"tier": null, "new": "x"}}}),
            expect: &[("/metadata/labels", || json!({"app": "web", "new": "x"}))],
        },
        Case {
            name: "nulls inside a new value are dropped",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"metadata": {"annotations": {"a": "1", "b": null}}}),
            expect: &[("/metadata/annotations", || json!({"a": "1"}))],
        },
    ]);
}

#[test]
fn merge_keys_of_the_built_in_types() {
    run(vec![
        Case {
            name: "env merges by name, ports by containerPort, volumeMounts by mountPath",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {"containers": [{
                "name": "app",
                "env": [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}],
                "volumeMounts": [{"mountPath": "/data", "readOnly": true}]
            }]}}}}),
            expect: &[
                (
                    "/spec/template/spec/containers/0/env",
                    || json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]),
                ),
                (
                    "/spec/template/spec/containers/0/ports",
                    || json!([{"containerPort": 8080, "name": "http", "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}]),
                ),
                (
                    "/spec/template/spec/containers/0/volumeMounts",
                    || json!([{"name": "data", "mountPath": "/data", "readOnly": true}]),
                ),
                ("/spec/template/spec/containers/0/image", || json!("app:1")),
                ("/spec/template/spec/containers/1/name", || json!("sidecar")),
            ],
        },
        Case {
            name: "args have no patch strategy: replaced",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["--c"]}]}}}}),
            expect: &[("/spec/template/spec/containers/0/args", || json!(["--c"]))],
        },
        Case {
            name: "maps without strategy merge key by key (nodeSelector)",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {"nodeSelector": {"zone": "a"}}}}}),
            expect: &[(
                "/spec/template/spec/nodeSelector",
                || json!({"disk": "ssd", "zone": "a"}),
            )],
        },
        Case {
            name: "volumes merge by name and honour $retainKeys (emptyDir -> hostPath)",
            definition: DEPLOYMENT,
            doc: web(),
            patch: json!({"spec": {"template": {"spec": {
                "$setElementOrder/volumes": [{"name": "data"}, {"name": "cfg"}],
                "volumes": [{"$retainKeys": ["hostPath", "name"], "name": "data", "hostPath": {"path": "/srv"}}]
            }}}}),
            expect: &[(
                "/spec/template/spec/volumes",
                || json!([{"name": "data", "hostPath": {"path": "/srv"}}, {"name": "cfg", "configMap": {"name": "cfg"}}]),
            )],
        },
        Case {
            name: "ownerReferences merge on uid",
            definition: POD,
            doc: json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "rs-a", "kind": "ReplicaSet"}]}}),
            patch: json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}, {"uid": "2", "name": "other", "kind": "X"}]}}),
            expect: &[(
                "/metadata/ownerReferences",
                || json!([{"uid": "1", "name": "rs-a", "kind": "ReplicaSet", "controller": true}, {"uid": "2", "name": "other", "kind": "X"}]),
            )],
        },
        Case {
            name: "pod conditions merge on type",
            definition: POD,
            doc: json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}}),
            patch: json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            expect: &[(
                "/status/conditions",
                || json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]),
            )],
        },
        Case {
            name: "service ports merge on port",
            definition: SERVICE,
            doc: json!({"spec": {"ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443, "name": "https"}]}}),
            patch: json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
            expect: &[(
                "/spec/ports",
                || json!([{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}]),
            )],
        },
        Case {
            name: "a PDB selector has patchStrategy replace",
            definition: PDB,
            doc: json!({"spec": {"selector": {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}}}),
            patch: json!({"spec": {"selector": {"matchLabels": {"c": "3"}}}}),
            expect: &[("/spec/selector", || json!({"matchLabels": {"c": "3"}}))],
        },
        Case {
            name: "an unknown definition merges maps and replaces lists",
            definition: "com.example.v1.Widget",
            doc: json!({"spec": {"items": [{"name": "a"}], "size": {"w": 1}}}),
            patch: json!({"spec": {"items": [{"name": "b"}], "size": {"h": 2}}}),
            expect: &[
                ("/spec/items", || json!([{"name": "b"}])),
                ("/spec/size", || json!({"w": 1, "h": 2})),
            ],
        },
    ]);
}

/// The three-way patch `kubectl apply` sends after a manifest changes one env var, adds a
/// port and a container, and drops a finalizer it had set.
#[test]
fn kubectl_apply_three_way_patch() {
    let patch = json!({
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x"]},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "logger"}, {"name": "sidecar"}],
            "containers": [
                {
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                    "$setElementOrder/ports": [{"containerPort": 8080}, {"containerPort": 9090}],
                    "env": [{"name": "B", "value": "2"}],
                    "name": "app",
                    "ports": [{"containerPort": 9090, "name": "metrics"}]
                },
                {"name": "logger", "image": "logger:1"}
            ]
        }}}
    });
    let out = apply_strategic_merge_patch(&web(), &patch, DEPLOYMENT).unwrap();
    let containers = &out["spec"]["template"]["spec"]["containers"];
    let names: Vec<&str> = containers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "logger", "sidecar"], "the manifest's order");
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(
        containers[0]["ports"],
        json!([{"containerPort": 8080, "name": "http"}, {"containerPort": 9090, "name": "metrics"}])
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b.example/y"]));
}

#[test]
fn failures_map_to_upstream_statuses() {
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "list item without its merge key",
            json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx"}]}}}}),
            500,
            "map: map[image:nginx] does not contain declared merge key: name",
        ),
        (
            "$patch: merge is not implemented upstream",
            json!({"metadata": {"labels": {"$patch": "merge"}}}),
            500,
            "unknown patch type: merge in map: map[$patch:merge]",
        ),
        (
            "$patch: merge in a list",
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}}),
            500,
            "merging lists cannot yet be specified in the patch",
        ),
        (
            "$retainKeys not listing a key the patch sets",
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}}),
            400,
            "invalid patch format of retainKeys",
        ),
        (
            "$retainKeys that is not a list",
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
            400,
            "invalid patch format of retainKeys",
        ),
        (
            "malformed $deleteFromPrimitiveList key",
            json!({"metadata": {"$deleteFromPrimitiveList": ["x"]}}),
            400,
            "invalid patch format of primitive list",
        ),
        (
            "malformed $setElementOrder key",
            json!({"metadata": {"$setElementOrder": ["x"]}}),
            400,
            "invalid patch format of setElementOrder list",
        ),
        (
            "$setElementOrder contradicting the patch list",
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{"name": "sidecar"}, {"name": "app"}]
            }}}}),
            500,
            "The order in patch list:\n[map[name:sidecar] map[name:app]]\n doesn't match $setElementOrder list:\n[map[name:app] map[name:sidecar]]\n",
        ),
        (
            "items of different types",
            json!({"metadata": {"finalizers": [["x"]]}}),
            500,
            "list element types are not identical: [[a.example/x b.example/y] [[x]]]",
        ),
    ];
    for (name, patch, status, message) in cases {
        let err: PatchError =
            apply_strategic_merge_patch(&web(), &patch, DEPLOYMENT).expect_err(name);
        assert_eq!(
            (err.status_code(), err.to_string().as_str()),
            (status, message),
            "{name}"
        );
    }
    // A list of lists is refused when its first item is a list.
    let doc = json!({"metadata": {"finalizers": []}});
    let err = apply_strategic_merge_patch(
        &doc,
        &json!({"metadata": {"finalizers": [["x"]]}}),
        DEPLOYMENT,
    )
    .unwrap_err();
    assert_eq!(
        (err.status_code(), err.reason(), err.to_string().as_str()),
        (422, "Invalid", "lists of lists are not supported")
    );
}

#[test]
fn strategic_merge_support_is_by_definition() {
    assert!(supports_strategic_merge(DEPLOYMENT));
    assert!(supports_strategic_merge(POD));
    assert!(!supports_strategic_merge("com.example.v1.Widget"));
}
