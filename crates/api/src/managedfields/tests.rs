use serde_json::{Value, json};

use super::*;
use crate::registry::KindSchema;

/// A Deployment-shaped schema: granular metadata maps, an atomic selector struct, containers
/// keyed by name, ports keyed by (containerPort, protocol), a set of finalizers.
fn deployment_schema() -> KindSchema {
    let r = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let defs = json!({
        "Deployment": { "type": "object", "properties": {
            "apiVersion": { "type": "string" }, "kind": { "type": "string" },
            "metadata": { "allOf": [r("ObjectMeta")] },
            "spec": r("DeploymentSpec"),
            "status": { "type": "object", "properties": { "replicas": { "type": "integer" } } }
        } },
        "ObjectMeta": { "type": "object", "properties": {
            "name": { "type": "string" },
            "labels": { "type": "object", "additionalProperties": { "type": "string" } },
            "annotations": { "type": "object", "additionalProperties": { "type": "string" } },
            "finalizers": { "type": "array", "items": { "type": "string" }, "x-kubernetes-list-type": "set" }
        } },
        "LabelSelector": { "type": "object", "x-kubernetes-map-type": "atomic", "properties": {
            "matchLabels": { "type": "object", "additionalProperties": { "type": "string" } }
        } },
        "DeploymentSpec": { "type": "object", "properties": {
            "replicas": { "type": ["integer", "null"] },
            "selector": r("LabelSelector"),
            "template": { "type": "object", "properties": {
                "metadata": r("ObjectMeta"),
                "spec": { "type": "object", "properties": {
                    "containers": { "type": "array", "items": r("Container"),
                        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"] },
                    "args": { "type": "array", "items": { "type": "string" } }
                } }
            } }
        } },
        "Container": { "type": "object", "properties": {
            "name": { "type": "string" }, "image": { "type": "string" },
            "ports": { "type": "array", "items": { "type": "object", "properties": {
                "containerPort": { "type": "integer" }, "protocol": { "type": "string" },
                "name": { "type": "string" } } },
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["containerPort", "protocol"] }
        } }
    });
    KindSchema {
        root: "Deployment".into(),
        definitions: defs.as_object().unwrap().clone(),
    }
}

fn manifest(replicas: i64, extra_label: bool) -> Value {
    let mut labels = json!({ "app": "web" });
    if extra_label {
        labels["tier"] = json!("x");
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "labels": labels },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "app", "image": "busybox:1",
                    "ports": [{ "containerPort": 80, "protocol": "TCP" }] }] }
            }
        }
    })
}

fn writer(manager: &str) -> Writer<'_> {
    Writer {
        manager,
        api_version: "apps/v1",
        now: "2026-11-22T10:00:00Z",
    }
}

fn fm(kind: &KindSchema) -> FieldManager<'_> {
    FieldManager::new(Schema::new(Some(kind)), Scope::Main { has_status: true })
}

fn owners(obj: &Value) -> Vec<(String, String)> {
    entries_of(obj)
        .unwrap()
        .into_iter()
        .map(|e| (e.manager, e.operation))
        .collect()
}

#[test]
fn apply_owns_exactly_the_applied_fields_in_upstream_form() {
    let kind = deployment_schema();
    let obj = fm(&kind)
        .apply(None, &manifest(2, false), &writer("team-a"), false)
        .unwrap();
    let entry = &obj["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "team-a");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(
        entry["fieldsV1"],
        json!({
            "f:metadata": { "f:labels": { "f:app": {} } },
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": { "f:labels": { "f:app": {} } },
                    "f:spec": { "f:containers": { "k:{\"name\":\"app\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": { "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}, "f:protocol": {} } }
                    } } }
                }
            }
        })
    );
}

#[test]
fn another_manager_changing_an_owned_field_conflicts_until_forced() {
    let kind = deployment_schema();
    let m = fm(&kind);
    let live = m
        .apply(None, &manifest(2, false), &writer("team-a"), false)
        .unwrap();
    let conflicts = m
        .apply(Some(&live), &manifest(4, false), &writer("team-b"), false)
        .unwrap_err();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(display_path(&conflicts[0].path), ".spec.replicas");
    assert_eq!(
        conflict_message(&conflicts),
        "Apply failed with 1 conflict: conflict with \"team-a\": .spec.replicas"
    );

    let forced = m
        .apply(Some(&live), &manifest(4, false), &writer("team-b"), true)
        .unwrap();
    assert_eq!(forced["spec"]["replicas"], 4);
    let entries = entries_of(&forced).unwrap();
    let a = entries.iter().find(|e| e.manager == "team-a").unwrap();
    let b = entries.iter().find(|e| e.manager == "team-b").unwrap();
    let replicas = vec!["f:spec".to_owned(), "f:replicas".to_owned()];
    assert!(!a.fields.contains(&replicas));
    assert!(b.fields.contains(&replicas));
    // Fields both applied with the same value are shared, not contested.
    let image = ["f:spec", "f:template", "f:spec", "f:containers"]
        .iter()
        .map(|s| s.to_string())
        .chain([r#"k:{"name":"app"}"#.to_owned(), "f:image".to_owned()])
        .collect::<Vec<_>>();
    assert!(a.fields.contains(&image) && b.fields.contains(&image));
}

#[test]
fn fields_a_manager_stops_applying_are_removed_unless_someone_else_owns_them() {
    let kind = deployment_schema();
    let m = fm(&kind);
    let live = m
        .apply(None, &manifest(2, true), &writer("team-a"), false)
        .unwrap();
    assert_eq!(live["metadata"]["labels"]["tier"], "x");
    let next = m
        .apply(Some(&live), &manifest(2, false), &writer("team-a"), false)
        .unwrap();
    assert!(next["metadata"]["labels"].get("tier").is_none(), "{next}");
    assert_eq!(next["metadata"]["labels"]["app"], "web");

    // With a second owner the field stays.
    let live = m
        .apply(None, &manifest(2, true), &writer("team-a"), false)
        .unwrap();
    let shared = m
        .apply(Some(&live), &manifest(2, true), &writer("team-b"), false)
        .unwrap();
    let next = m
        .apply(Some(&shared), &manifest(2, false), &writer("team-a"), false)
        .unwrap();
    assert_eq!(next["metadata"]["labels"]["tier"], "x");
}

#[test]
fn dropped_list_items_are_removed_and_kept_items_merge_by_key() {
    let kind = deployment_schema();
    let m = fm(&kind);
    let mut two = manifest(1, false);
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "sidecar", "image": "busybox:2" }));
    let live = m.apply(None, &two, &writer("a"), false).unwrap();
    let one = manifest(1, false);
    let next = m.apply(Some(&live), &one, &writer("a"), false).unwrap();
    let names: Vec<&str> = next["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app"]);
}

#[test]
fn updates_take_over_changed_fields_and_keep_the_rest_with_their_owners() {
    let kind = deployment_schema();
    let m = fm(&kind);
    let live = m
        .apply(None, &manifest(2, false), &writer("team-a"), false)
        .unwrap();
    let mut edited = live.clone();
    edited["spec"]["replicas"] = json!(5);
    edited["metadata"]["annotations"] = json!({ "note": "hi" });
    m.update(Some(&live), &mut edited, &writer("kubectl-edit"));
    assert_eq!(
        owners(&edited),
        [
            ("team-a".to_owned(), "Apply".to_owned()),
            ("kubectl-edit".to_owned(), "Update".to_owned())
        ]
    );
    let entries = entries_of(&edited).unwrap();
    assert_eq!(
        entries[1].fields.to_fields_v1(),
        json!({ "f:metadata": { "f:annotations": { ".": {}, "f:note": {} } }, "f:spec": { "f:replicas": {} } })
    );
    assert!(
        !entries[0]
            .fields
            .contains(&["f:spec".to_owned(), "f:replicas".to_owned()])
    );
    assert_eq!(entries[1].time.as_deref(), Some("2026-11-22T10:00:00Z"));

    // Now team-a re-applying replicas: 2 conflicts with the editor.
    let conflicts = m
        .apply(Some(&edited), &manifest(2, false), &writer("team-a"), false)
        .unwrap_err();
    assert_eq!(conflicts[0].manager, "\"kubectl-edit\" using apps/v1");
}

#[test]
fn create_records_the_creator_and_status_writes_are_separate() {
    let kind = deployment_schema();
    let mut obj = manifest(1, false);
    fm(&kind).update(None, &mut obj, &writer("kubectl-create"));
    let e = &entries_of(&obj).unwrap()[0];
    assert_eq!(
        (e.manager.as_str(), e.operation.as_str()),
        ("kubectl-create", "Update")
    );
    assert!(
        e.fields
            .contains(&["f:spec".to_owned(), "f:replicas".to_owned()])
    );
    assert!(
        !e.fields
            .contains(&["f:metadata".to_owned(), "f:name".to_owned()])
    );

    let status_fm = FieldManager::new(Schema::new(Some(&kind)), Scope::Status);
    let mut with_status = obj.clone();
    with_status["status"] = json!({ "replicas": 1 });
    status_fm.update(Some(&obj), &mut with_status, &writer("controller"));
    let entries = entries_of(&with_status).unwrap();
    let ctl = entries.iter().find(|e| e.manager == "controller").unwrap();
    assert_eq!(ctl.subresource, "status");
    assert_eq!(
        ctl.fields.to_fields_v1(),
        json!({ "f:status": { "f:replicas": {} } })
    );
}

#[test]
fn a_no_op_apply_changes_nothing() {
    let kind = deployment_schema();
    let m = fm(&kind);
    let live = m
        .apply(None, &manifest(2, false), &writer("a"), false)
        .unwrap();
    let later = Writer {
        now: "2030-01-01T00:00:00Z",
        ..writer("a")
    };
    let again = m
        .apply(Some(&live), &manifest(2, false), &later, false)
        .unwrap();
    assert_eq!(again, live);
}

#[test]
fn sending_one_empty_entry_resets_ownership() {
    let kind = deployment_schema();
    let m = fm(&kind);
    let live = m
        .apply(None, &manifest(2, false), &writer("a"), false)
        .unwrap();
    let mut reset = live.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    m.update(Some(&live), &mut reset, &writer("kubectl"));
    assert!(reset["metadata"].get("managedFields").is_none());
}

#[test]
fn untyped_objects_track_granular_maps_and_atomic_lists() {
    let m = FieldManager::new(Schema::new(None), Scope::Main { has_status: false });
    let obj = json!({ "apiVersion": "x/v1", "kind": "X", "metadata": { "name": "a" },
        "spec": { "list": [1, 2], "nested": { "k": "v" } } });
    let set = m.field_set(&obj);
    assert_eq!(
        set.to_fields_v1(),
        json!({ "f:spec": { ".": {}, "f:list": {}, "f:nested": { ".": {}, "f:k": {} } } })
    );
}
