//! ownerReferences as controllers use them (upstream `ControllerRefManager`): which object
//! controls another, building a controller reference, and claiming — adopting orphans that
//! match a controller's selector and releasing owned objects that stopped matching — with
//! strategic-merge patches that carry the object's uid as a precondition, so a patch never
//! lands on a recreated object of the same name.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// The controlling owner reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with this uid.
pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == owner_uid)
}

/// A controller reference to `owner` (`controller` and `blockOwnerDeletion` true, as every
/// upstream workload controller sets them).
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What a controller should do with an object it might own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It is ours and matches.
    Owned,
    /// An orphan that matches: take it.
    Adopt,
    /// Ours but no longer matching: let it go.
    Release,
    /// Not ours to touch.
    Ignore,
}

/// Upstream `ClaimObject`: `owner_uid` is the controller's uid, `owner_deleting` whether it
/// has a deletionTimestamp (a deleting controller neither adopts nor releases), `matches`
/// whether the object matches its selector.
pub fn classify(meta: &ObjectMeta, owner_uid: &str, owner_deleting: bool, matches: bool) -> Claim {
    match controller_of(meta) {
        Some(r) if r.uid == owner_uid => {
            if matches || owner_deleting {
                Claim::Owned
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None => {
            if matches && !owner_deleting && meta.deletion_timestamp.is_none() {
                Claim::Adopt
            } else {
                Claim::Ignore
            }
        }
    }
}

/// Make `reference` the controller of the object `name` (whose uid must still be
/// `object_uid`).
pub async fn adopt<K>(
    api: &Api<K>,
    name: &str,
    object_uid: &str,
    reference: &OwnerReference,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let patch = json!({ "metadata": { "ownerReferences": [reference], "uid": object_uid } });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
}

/// Remove the owner reference with `owner_uid` from the object `name`; an object that is
/// already gone or recreated counts as released.
pub async fn release<K>(
    api: &Api<K>,
    name: &str,
    object_uid: &str,
    owner_uid: &str,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let patch = json!({ "metadata": {
        "ownerReferences": [{ "$patch": "delete", "uid": owner_uid }],
        "uid": object_uid,
    } });
    match api
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 || s.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The uid of the controller of `obj`, for an index of objects by controller.
pub fn controller_uid_index<K: ResourceExt>(obj: &K) -> Vec<String> {
    controller_of(obj.meta())
        .map(|r| vec![r.uid.clone()])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(controller: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            owner_references: controller.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn claiming_follows_upstream_rules() {
        assert_eq!(classify(&meta(Some("me")), "me", false, true), Claim::Owned);
        assert_eq!(
            classify(&meta(Some("me")), "me", false, false),
            Claim::Release
        );
        assert_eq!(classify(&meta(Some("me")), "me", true, false), Claim::Owned);
        assert_eq!(
            classify(&meta(Some("other")), "me", false, true),
            Claim::Ignore
        );
        assert_eq!(classify(&meta(None), "me", false, true), Claim::Adopt);
        assert_eq!(classify(&meta(None), "me", true, true), Claim::Ignore);
        assert_eq!(classify(&meta(None), "me", false, false), Claim::Ignore);
        let mut deleting = meta(None);
        deleting.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        assert_eq!(classify(&deleting, "me", false, true), Claim::Ignore);
    }
}
