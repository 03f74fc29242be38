//! ControllerRevisions (upstream pkg/controller/history), shared by StatefulSets and
//! DaemonSets: each distinct pod template a controller has run is stored as a revision whose
//! data is the strategic-merge patch `{"spec":{"template":{…,"$patch":"replace"}}}` (so
//! `kubectl rollout undo` can apply it), named `<owner>-<hash of the data>` and numbered in
//! order of use. A template used again gets its old revision renumbered instead of a copy.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use skiff_runtime::Informer;
use skiff_runtime::owner;

use crate::{Error, Result};

/// The label naming a pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Index of revisions by controller uid.
pub const OWNER_INDEX: &str = "revision-owner";

/// The revision data of a template.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({ "spec": { "template": t } })
}

/// The template a revision stores.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The hash naming a revision (upstream `HashControllerRevision`).
pub fn revision_hash(data: &Value, collision_count: Option<i32>) -> String {
    crate::hash::object_hash(data, collision_count)
}

/// A new (unsaved) revision of `owner`'s template.
pub fn new_revision<K: Resource<DynamicType = ()>>(
    owner: &K,
    template: &PodTemplateSpec,
    revision: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let data = revision_data(template);
    let hash = revision_hash(&data, collision_count);
    let labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{hash}",
                owner.meta().name.clone().unwrap_or_default()
            )),
            namespace: owner.meta().namespace.clone(),
            labels: Some(
                labels
                    .into_iter()
                    .chain([(REVISION_LABEL.to_owned(), hash)])
                    .collect(),
            ),
            owner_references: Some(vec![owner::controller_reference(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// Whether two revisions hold the same template.
pub fn same_data(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    a.data == b.data
}

/// The revisions `owner_uid` controls, oldest revision number first.
pub fn owned(
    informer: &Informer<ControllerRevision>,
    owner_uid: &str,
) -> Vec<Arc<ControllerRevision>> {
    let mut revs = informer.by_index(OWNER_INDEX, owner_uid);
    revs.sort_by_key(|r| {
        (
            r.revision,
            r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });
    revs
}

/// The shared revision informer with the owner index.
pub fn informer(ctx: &crate::Context) -> Informer<ControllerRevision> {
    let inf = ctx.informer::<ControllerRevision>();
    if !inf.has_index(OWNER_INDEX) {
        inf.add_index(OWNER_INDEX, owner::controller_uid_index);
    }
    inf
}

/// What [`ensure_update_revision`] found.
pub struct Revisions {
    /// The revision of the current template.
    pub update: ControllerRevision,
    /// Every revision after the call.
    pub all: Vec<ControllerRevision>,
    /// A changed collision count the owner must record.
    pub collision_count: Option<i32>,
}

/// Find or create the revision of `template` (upstream `getStatefulSetRevisions` /
/// `constructHistory`): reuse an identical revision (renumbering it to be the latest), or
/// create a new one, bumping the collision count when a differing revision has the name.
pub async fn ensure_update_revision<K>(
    client: &Client,
    owner: &K,
    template: &PodTemplateSpec,
    existing: &[Arc<ControllerRevision>],
    collision_count: Option<i32>,
) -> Result<Revisions>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let mut all: Vec<ControllerRevision> = existing.iter().map(|r| (**r).clone()).collect();
    let next = all.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let mut collisions = collision_count;
    let candidate = new_revision(owner, template, next, collisions);
    if let Some(i) = all.iter().position(|r| same_data(r, &candidate)) {
        let latest = all.iter().map(|r| r.revision).max().unwrap_or(0);
        if all[i].revision < latest {
            let mut renumbered = all[i].clone();
            renumbered.revision = next;
            let stored = api
                .replace(&renumbered.name_any(), &PostParams::default(), &renumbered)
                .await
                .map_err(|e| Error::Api {
                    action: format!(
                        "renumbering controller revision {ns}/{}",
                        renumbered.name_any()
                    ),
                    source: e,
                })?;
            all[i] = stored;
        }
        return Ok(Revisions {
            update: all[i].clone(),
            all,
            collision_count: None,
        });
    }
    // Create it; a name taken by a different revision is a hash collision.
    let mut attempt = candidate;
    for _ in 0..10 {
        match api.create(&PostParams::default(), &attempt).await {
            Ok(created) => {
                all.push(created.clone());
                return Ok(Revisions {
                    update: created,
                    all,
                    collision_count: collisions.filter(|c| Some(*c) != collision_count),
                });
            }
            Err(e) if crate::is_conflict(&e) => {
                let existing = api
                    .get_opt(&attempt.name_any())
                    .await
                    .map_err(|e| Error::Api {
                        action: format!("reading controller revision {ns}/{}", attempt.name_any()),
                        source: e,
                    })?;
                if let Some(found) = existing
                    && same_data(&found, &attempt)
                    && owner::is_controlled_by(
                        &found.metadata,
                        owner.meta().uid.as_deref().unwrap_or(""),
                    )
                {
                    all.push(found.clone());
                    return Ok(Revisions {
                        update: found,
                        all,
                        collision_count: collisions.filter(|c| Some(*c) != collision_count),
                    });
                }
                collisions = Some(collisions.unwrap_or(0) + 1);
                attempt = new_revision(owner, template, next, collisions);
            }
            Err(e) => {
                return Err(Error::Api {
                    action: format!("creating controller revision {ns}/{}", attempt.name_any()),
                    source: e,
                });
            }
        }
    }
    Err(Error::Invalid {
        object: format!(
            "{} {ns}/{}",
            K::kind(&()),
            owner.meta().name.clone().unwrap_or_default()
        ),
        message: "could not find a free controller revision name".into(),
    })
}

/// Delete the oldest revisions beyond `limit` that are not in `live` (upstream
/// `truncateHistory`).
pub async fn truncate(
    client: &Client,
    ns: &str,
    revisions: &[ControllerRevision],
    live: &[String],
    limit: i32,
) -> Result<()> {
    let mut old: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    let excess = old.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Ok(());
    }
    old.sort_by_key(|r| r.revision);
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    for r in old.iter().take(excess as usize) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: r.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&r.name_any(), &params).await {
            Ok(_) => {}
            Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => {}
            Err(e) => {
                return Err(Error::Api {
                    action: format!("deleting controller revision {ns}/{}", r.name_any()),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;

    #[test]
    fn revisions_round_trip_their_template_and_name_by_hash() {
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let set = StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let rev = new_revision(&set, &template, 1, None);
        assert_eq!(template_of(&rev).unwrap(), template);
        assert_eq!(
            rev.data.as_ref().unwrap().0["spec"]["template"]["$patch"],
            "replace"
        );
        let name = rev.name_any();
        assert!(name.starts_with("web-"));
        assert_ne!(new_revision(&set, &template, 1, Some(1)).name_any(), name);
        assert!(same_data(&rev, &new_revision(&set, &template, 7, None)));
    }
}
