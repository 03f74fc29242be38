//! The PersistentVolume binder (upstream pkg/controller/volume/persistentvolume): binds each
//! pending claim to the smallest available volume that satisfies it — same storage class,
//! every requested access mode, enough capacity, the same volume mode, the claim's label
//! selector — or to the volume it names. Binding is the two-sided upstream protocol: the
//! volume's `claimRef` first (so no other claim can take it), then the claim's `volumeName`,
//! then both statuses. Claims of a class with a provisioner are annotated for it; classes
//! with `WaitForFirstConsumer` wait for a node to be selected. A volume whose claim is gone is
//! Released (and deleted when its reclaim policy says so); a bound claim whose volume is gone
//! is Lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use skiff_api::quantity::Quantity;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::{Informer, ObjectKey, WorkQueue};

use crate::context::{Context, synced};
use crate::{Error, Result, pods};

/// Set on a claim once its binding is complete.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on objects this controller bound.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Names the provisioner a claim waits for.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Set by the scheduler for `WaitForFirstConsumer` claims.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// What the queue holds: claims and volumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Item {
    /// A claim.
    Claim(ObjectKey),
    /// A volume.
    Volume(String),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Claim(k) => write!(f, "claim {k}"),
            Item::Volume(n) => write!(f, "volume {n}"),
        }
    }
}

/// Start the binder.
pub async fn start(ctx: Context) {
    let claims = ctx.informer::<PersistentVolumeClaim>();
    let volumes = ctx.informer::<PersistentVolume>();
    let classes = ctx.informer::<StorageClass>();
    let queue: WorkQueue<Item> = WorkQueue::default();
    {
        let volumes = volumes.clone();
        controller::feed(&claims, &queue, &ctx.stop, move |c| {
            let claim = c.object();
            let mut items = vec![Item::Claim(ObjectKey::of(claim.as_ref()))];
            // The volume bound to it may be released.
            if let Some(v) = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty())
            {
                items.push(Item::Volume(v));
            }
            items.extend(
                volumes
                    .list()
                    .iter()
                    .filter(|v| claim_ref_is(v, claim))
                    .map(|v| Item::Volume(v.name_any())),
            );
            items
        });
    }
    {
        let claims = claims.clone();
        controller::feed(&volumes, &queue, &ctx.stop, move |c| {
            let volume = c.object();
            let mut items = vec![Item::Volume(volume.name_any())];
            // A new or freed volume may satisfy a pending claim.
            items.extend(
                claims
                    .list()
                    .iter()
                    .filter(|cl| {
                        cl.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
                    })
                    .map(|cl| Item::Claim(ObjectKey::of(cl.as_ref()))),
            );
            items
        });
    }
    if !ctx
        .wait_synced(vec![synced(&claims), synced(&volumes), synced(&classes)])
        .await
    {
        return;
    }
    {
        let (claims, volumes) = (claims.clone(), volumes.clone());
        controller::resync_every(
            &queue,
            std::time::Duration::from_secs(15),
            &ctx.stop,
            move || {
                claims
                    .keys()
                    .into_iter()
                    .map(Item::Claim)
                    .chain(volumes.keys().into_iter().map(|k| Item::Volume(k.name)))
                    .collect()
            },
        );
    }
    let reconciler = Arc::new(Binder {
        client: ctx.client.clone(),
        claims,
        volumes,
        classes,
        recorder: ctx.recorder("persistentvolume-controller"),
    });
    // One worker: binding decisions must not race each other for the same volume.
    controller::run(reconciler, queue, 1, ctx.stop.clone()).await;
}

fn claim_ref_is(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.namespace == claim.namespace() && r.name.as_deref() == Some(claim.name_any().as_str())
        })
}

struct Binder {
    client: Client,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    recorder: Recorder,
}

fn volume_phase(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn capacity(v: &PersistentVolume) -> Quantity {
    v.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| Quantity::parse(&q.0).ok())
        .unwrap_or_default()
}

fn claim_class(claim: &PersistentVolumeClaim) -> String {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// Whether a volume can serve a claim (upstream `findMatchingVolume` predicates).
pub fn volume_fits(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let (Some(cs), Some(vs)) = (claim.spec.as_ref(), volume.spec.as_ref()) else {
        return false;
    };
    if vs.storage_class_name.clone().unwrap_or_default() != claim_class(claim) {
        return false;
    }
    let modes = vs.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| modes.contains(m)) {
        return false;
    }
    let want_mode = cs
        .volume_mode
        .clone()
        .unwrap_or_else(|| "Filesystem".into());
    if vs
        .volume_mode
        .clone()
        .unwrap_or_else(|| "Filesystem".into())
        != want_mode
    {
        return false;
    }
    let request = cs
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::parse(&q.0).ok())
        .unwrap_or_default();
    if capacity(volume) < request {
        return false;
    }
    match pods::selector(cs.selector.as_ref(), "") {
        Ok(sel) if cs.selector.is_some() => sel.matches(&pods::labels(&volume.metadata)),
        Ok(_) => true,
        Err(_) => false,
    }
}

impl Reconciler for Binder {
    type Key = Item;
    type Error = Error;

    fn name(&self) -> &'static str {
        "persistentvolume-binder-controller"
    }

    async fn reconcile(&self, item: &Item) -> Result<Action> {
        match item {
            Item::Claim(key) => self.sync_claim(key).await,
            Item::Volume(name) => self.sync_volume(name).await,
        }
    }
}

impl Binder {
    async fn sync_claim(&self, key: &ObjectKey) -> Result<Action> {
        let Some(claim) = self.claims.get(key) else {
            return Ok(Action::Done);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let phase = claim
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        if phase == "Bound" {
            // A bound claim whose volume vanished is lost.
            if let Some(v) = &volume_name
                && self.volumes.get_named("", v).is_none()
            {
                let fresh = Api::<PersistentVolume>::all(self.client.clone())
                    .get_opt(v)
                    .await
                    .map_err(|e| Error::Api {
                        action: format!("reading volume {v}"),
                        source: e,
                    })?;
                if fresh.is_none() {
                    self.recorder.publish(&reference(claim.as_ref()), EventType::Warning, "ClaimLost", "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!");
                    self.set_claim_status(&claim, "Lost", None).await?;
                }
            }
            return Ok(Action::Done);
        }
        let target = reference(claim.as_ref());
        // A volume already reserved for this claim, or the one it names.
        let reserved = self.volumes.list().into_iter().find(|v| {
            v.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid == claim.metadata.uid && r.uid.is_some())
        });
        let chosen = match (&reserved, &volume_name) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(name)) => match self.volumes.get_named("", name) {
                Some(v)
                    if volume_phase(&v) == "Available"
                        || v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none() =>
                {
                    Some(v)
                }
                Some(_) => {
                    self.recorder.publish(
                        &target,
                        EventType::Warning,
                        "FailedBinding",
                        &format!("volume {name:?} already bound to a different claim."),
                    );
                    return Ok(Action::Done);
                }
                None => {
                    self.recorder.publish(
                        &target,
                        EventType::Normal,
                        "FailedBinding",
                        &format!("volume {name:?} not found"),
                    );
                    return Ok(Action::Done);
                }
            },
            (None, None) => None,
        };
        let chosen = match chosen {
            Some(v) => v,
            None => {
                let class_name = claim_class(&claim);
                let class = self.classes.get_named("", &class_name).or_else(|| {
                    claim
                        .spec
                        .as_ref()
                        .and_then(|s| s.storage_class_name.as_ref())
                        .is_none()
                        .then(|| {
                            self.classes.list().into_iter().find(|c| {
                                c.metadata
                                    .annotations
                                    .as_ref()
                                    .and_then(|a| a.get(DEFAULT_CLASS))
                                    .is_some_and(|v| v == "true")
                            })
                        })
                        .flatten()
                });
                let waits = class
                    .as_ref()
                    .and_then(|c| c.volume_binding_mode.as_deref())
                    == Some("WaitForFirstConsumer");
                if waits
                    && claim
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(SELECTED_NODE))
                        .is_none()
                {
                    self.recorder.publish(
                        &target,
                        EventType::Normal,
                        "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding",
                    );
                    return Ok(Action::Done);
                }
                let mut candidates: Vec<Arc<PersistentVolume>> = self
                    .volumes
                    .list()
                    .into_iter()
                    .filter(|v| {
                        volume_phase(v) == "Available"
                            && v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none()
                            && volume_fits(&claim, v)
                    })
                    .collect();
                candidates.sort_by_key(|v| (capacity(v), v.name_any()));
                match candidates.into_iter().next() {
                    Some(v) => v,
                    None => {
                        match class.as_ref().map(|c| c.provisioner.clone()).filter(|p| !p.is_empty() && p != "kubernetes.io/no-provisioner") {
                            Some(provisioner) => {
                                self.annotate_provisioner(&claim, &provisioner).await?;
                                self.recorder.publish(&target, EventType::Normal, "ExternalProvisioning", &format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."));
                            }
                            None if class_name.is_empty() => self.recorder.publish(&target, EventType::Normal, "FailedBinding", "no persistent volumes available for this claim and no storage class is set"),
                            None => self.recorder.publish(&target, EventType::Warning, "ProvisioningFailed", &format!("storageclass.storage.k8s.io {class_name:?} not found")),
                        }
                        return Ok(Action::Done);
                    }
                }
            }
        };
        self.bind(&claim, &chosen).await?;
        Ok(Action::Done)
    }

    async fn annotate_provisioner(
        &self,
        claim: &PersistentVolumeClaim,
        provisioner: &str,
    ) -> Result<()> {
        if claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STORAGE_PROVISIONER))
            .map(String::as_str)
            == Some(provisioner)
        {
            return Ok(());
        }
        let mut c = claim.clone();
        let a = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.insert(STORAGE_PROVISIONER.into(), provisioner.into());
        a.insert(BETA_STORAGE_PROVISIONER.into(), provisioner.into());
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default());
        api.replace(&claim.name_any(), &PostParams::default(), &c)
            .await
            .map_err(|e| Error::Api {
                action: format!("annotating claim {}", claim.name_any()),
                source: e,
            })?;
        Ok(())
    }

    /// Upstream `bind`: volume first, then claim, then statuses.
    async fn bind(&self, claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> Result<()> {
        let ns = claim.namespace().unwrap_or_default();
        let pv_api: Api<PersistentVolume> = Api::all(self.client.clone());
        let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let claim_ref = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(ns.clone()),
            name: Some(claim.name_any()),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            field_path: None,
        };
        let mut v = volume.clone();
        let already = v
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| r.uid == claim.metadata.uid);
        if !already {
            v.spec.get_or_insert_with(Default::default).claim_ref = Some(claim_ref);
            v.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            v = pv_api
                .replace(&v.name_any(), &PostParams::default(), &v)
                .await
                .map_err(|e| Error::Api {
                    action: format!("binding volume {}", v.name_any()),
                    source: e,
                })?;
        }
        if volume_phase(&v) != "Bound" {
            v.status = Some(PersistentVolumeStatus {
                phase: Some("Bound".into()),
                ..v.status.clone().unwrap_or_default()
            });
            pv_api
                .replace_status(&v.name_any(), &PostParams::default(), &v)
                .await
                .map_err(|e| Error::Api {
                    action: format!("updating status of volume {}", v.name_any()),
                    source: e,
                })?;
        }
        let mut c = claim.clone();
        let spec = c.spec.get_or_insert_with(Default::default);
        if spec.volume_name.as_deref() != Some(v.name_any().as_str())
            || c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(BIND_COMPLETED))
                .is_none()
        {
            spec.volume_name = Some(v.name_any());
            let a = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
            a.insert(BIND_COMPLETED.into(), "yes".into());
            a.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            c = pvc_api
                .replace(&c.name_any(), &PostParams::default(), &c)
                .await
                .map_err(|e| Error::Api {
                    action: format!("binding claim {ns}/{}", c.name_any()),
                    source: e,
                })?;
        }
        self.set_claim_status(&c, "Bound", Some(&v)).await?;
        tracing::info!(claim = %format!("{ns}/{}", claim.name_any()), volume = %v.name_any(), "bound claim to volume");
        Ok(())
    }

    async fn set_claim_status(
        &self,
        claim: &PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
    ) -> Result<()> {
        let mut c = claim.clone();
        let old = c.status.clone().unwrap_or_default();
        let status = PersistentVolumeClaimStatus {
            phase: Some(phase.into()),
            capacity: volume
                .and_then(|v| v.spec.as_ref()?.capacity.clone())
                .or(old.capacity.clone()),
            access_modes: volume
                .and_then(|v| v.spec.as_ref()?.access_modes.clone())
                .or(old.access_modes.clone()),
            ..old.clone()
        };
        if status == old {
            return Ok(());
        }
        c.status = Some(status);
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default());
        api.replace_status(&c.name_any(), &PostParams::default(), &c)
            .await
            .map_err(|e| Error::Api {
                action: format!("updating status of claim {}", c.name_any()),
                source: e,
            })?;
        Ok(())
    }

    async fn sync_volume(&self, name: &str) -> Result<Action> {
        let Some(volume) = self.volumes.get_named("", name) else {
            return Ok(Action::Done);
        };
        if volume.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.clone());
        let Some(r) = claim_ref else {
            if volume_phase(&volume) != "Available" {
                let mut v = (*volume).clone();
                v.status = Some(PersistentVolumeStatus {
                    phase: Some("Available".into()),
                    ..v.status.clone().unwrap_or_default()
                });
                api.replace_status(name, &PostParams::default(), &v)
                    .await
                    .map_err(|e| Error::Api {
                        action: format!("updating status of volume {name}"),
                        source: e,
                    })?;
            }
            return Ok(Action::Done);
        };
        let key = ObjectKey::new(
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
        );
        let claim = match self.claims.get(&key) {
            Some(c) => Some(c),
            None => {
                // Confirm with the API server: a claim created a moment ago may not be cached.
                let api: Api<PersistentVolumeClaim> =
                    Api::namespaced(self.client.clone(), &key.namespace);
                api.get_opt(&key.name)
                    .await
                    .map_err(|e| Error::Api {
                        action: format!("reading claim {key}"),
                        source: e,
                    })?
                    .map(Arc::new)
            }
        };
        let claim_matches = claim
            .as_ref()
            .is_some_and(|c| r.uid.is_none() || c.metadata.uid == r.uid);
        if claim_matches {
            // Pre-bound to a claim (claimRef without uid) or being bound: the claim side finishes.
            return Ok(Action::Done);
        }
        // The claim is gone: release, then reclaim.
        if volume_phase(&volume) != "Released" && volume_phase(&volume) != "Failed" {
            let mut v = (*volume).clone();
            v.status = Some(PersistentVolumeStatus {
                phase: Some("Released".into()),
                ..v.status.clone().unwrap_or_default()
            });
            api.replace_status(name, &PostParams::default(), &v)
                .await
                .map_err(|e| Error::Api {
                    action: format!("releasing volume {name}"),
                    source: e,
                })?;
        }
        let policy = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_else(|| "Retain".into());
        if policy == "Delete" {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: volume.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => {
                    tracing::info!(volume = %name, "deleted released volume (reclaim policy Delete)")
                }
                Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => {}
                Err(e) => {
                    return Err(Error::Api {
                        action: format!("deleting released volume {name}"),
                        source: e,
                    });
                }
            }
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    fn claim(size: &str, class: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: class.map(str::to_owned),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), Q(size.into()))].into()),
                    limits: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn volume(size: &str, class: Option<&str>, modes: &[&str]) -> PersistentVolume {
        PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                capacity: Some([("storage".to_owned(), Q(size.into()))].into()),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                storage_class_name: class.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn volumes_fit_by_class_modes_and_size() {
        assert!(volume_fits(
            &claim("1Gi", None),
            &volume("2Gi", None, &["ReadWriteOnce"])
        ));
        assert!(!volume_fits(
            &claim("3Gi", None),
            &volume("2Gi", None, &["ReadWriteOnce"])
        ));
        assert!(!volume_fits(
            &claim("1Gi", Some("fast")),
            &volume("2Gi", None, &["ReadWriteOnce"])
        ));
        assert!(!volume_fits(
            &claim("1Gi", None),
            &volume("2Gi", None, &["ReadOnlyMany"])
        ));
        assert!(volume_fits(
            &claim("1Gi", Some("fast")),
            &volume("1Gi", Some("fast"), &["ReadWriteOnce", "ReadWriteMany"])
        ));
    }
}
