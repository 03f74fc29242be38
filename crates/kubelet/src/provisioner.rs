//! The built-in local-path provisioner (k3s ships one too): claims of a StorageClass whose
//! provisioner is [`PROVISIONER`] get a directory on a node and a hostPath PersistentVolume
//! pinned to that node, so a PVC "just works" on a single machine. Every node runs it for
//! itself: a `WaitForFirstConsumer` claim is provisioned by the node the scheduler selected
//! (`volume.kubernetes.io/selected-node`); an `Immediate` claim by whichever node creates the
//! volume first (its name is derived from the claim, so only one create succeeds). When such
//! a volume is released under a `Delete` policy, or deleted, its directory goes too.
//!
//! Binding the claim to the volume is the PersistentVolume controller's work.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::informer::{Change, Notification};
use skiff_runtime::{CancellationToken, Informer, Informers, ObjectKey, WorkQueue};

/// The provisioner name StorageClasses use.
pub const PROVISIONER: &str = "skiff.io/local-path";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const NODE_ANNOTATION: &str = "skiff.io/local-path-node";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

/// What the provisioner needs.
pub struct Provisioner {
    client: Client,
    node: String,
    dir: PathBuf,
    claims: Informer<PersistentVolumeClaim>,
    classes: Informer<StorageClass>,
    volumes: Informer<PersistentVolume>,
}

/// The name of the volume provisioned for a claim.
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.uid().unwrap_or_default())
}

/// The PersistentVolume for `claim` at `path` on `node`.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    path: &str,
) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map_or_else(|| "1Gi".to_owned(), |q| q.0.clone());
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(claim),
            "annotations": { PROVISIONED_BY: PROVISIONER, NODE_ANNOTATION: node },
            "labels": { "skiff.io/local-path-node": node },
        },
        "spec": {
            "capacity": { "storage": request },
            "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.metadata.name,
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "hostPath": { "path": path, "type": "DirectoryOrCreate" },
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace(), "name": claim.name_any(), "uid": claim.uid(),
            },
            "nodeAffinity": { "required": { "nodeSelectorTerms": [{ "matchExpressions": [
                { "key": "kubernetes.io/hostname", "operator": "In", "values": [node] },
            ] }] } },
        },
    }))
    .expect("a well-formed PersistentVolume")
}

/// Queue items: claims to provision, volumes to clean up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Item {
    /// A claim.
    Claim(ObjectKey),
    /// A volume (by name) that may need its directory removed.
    Volume(String),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Claim(k) => write!(f, "claim {k}"),
            Item::Volume(v) => write!(f, "volume {v}"),
        }
    }
}

impl Provisioner {
    fn class_of(&self, claim: &PersistentVolumeClaim) -> Option<Arc<StorageClass>> {
        let name = claim.spec.as_ref()?.storage_class_name.clone()?;
        self.classes.get_named("", &name)
    }

    fn path_for(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    async fn provision(&self, claim: &PersistentVolumeClaim) -> Result<(), kube::Error> {
        if claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .is_some_and(|v| !v.is_empty())
        {
            return Ok(());
        }
        let Some(class) = self.class_of(claim) else {
            return Ok(());
        };
        if class.provisioner != PROVISIONER {
            return Ok(());
        }
        let annotations = claim.annotations();
        let wait = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
        match annotations.get(SELECTED_NODE) {
            Some(node) if node != &self.node => return Ok(()),
            None if wait => return Ok(()),
            _ => {}
        }
        if annotations
            .get(STORAGE_PROVISIONER)
            .is_some_and(|p| p != PROVISIONER)
        {
            return Ok(());
        }
        let name = volume_name(claim);
        if self.volumes.get_named("", &name).is_some() {
            return Ok(());
        }
        let path = self.path_for(&format!(
            "{name}_{}_{}",
            claim.namespace().unwrap_or_default(),
            claim.name_any()
        ));
        if let Err(e) = std::fs::create_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "creating a local volume directory failed");
            return Ok(());
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777));
        }
        let volume = volume_for(claim, &class, &self.node, &path.to_string_lossy());
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &volume).await {
            Ok(_) => {
                tracing::info!(claim = %ObjectKey::of(claim), volume = %name, path = %path.display(), "provisioned a local volume");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Another node won an Immediate claim: drop our directory.
                let _ = std::fs::remove_dir(&path);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                Err(e)
            }
        }
    }

    fn ours(&self, volume: &PersistentVolume) -> Option<PathBuf> {
        let a = volume.annotations();
        if a.get(PROVISIONED_BY).map(String::as_str) != Some(PROVISIONER)
            || a.get(NODE_ANNOTATION) != Some(&self.node)
        {
            return None;
        }
        volume
            .spec
            .as_ref()
            .and_then(|s| s.host_path.as_ref())
            .map(|h| PathBuf::from(&h.path))
            .filter(|p| p.starts_with(&self.dir))
    }

    async fn reclaim(&self, name: &str) -> Result<(), kube::Error> {
        let Some(volume) = self.volumes.get_named("", name) else {
            return Ok(());
        };
        let Some(path) = self.ours(&volume) else {
            return Ok(());
        };
        let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            != Some("Retain");
        if released && delete {
            remove_dir(&path);
            let api: Api<PersistentVolume> = Api::all(self.client.clone());
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
            tracing::info!(volume = %name, "deleted a released local volume");
        }
        Ok(())
    }
}

fn remove_dir(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "removing a local volume directory failed");
    }
}

impl Reconciler for Provisioner {
    type Key = Item;
    type Error = kube::Error;

    fn name(&self) -> &'static str {
        "local-path-provisioner"
    }

    async fn reconcile(&self, item: &Item) -> Result<Action, kube::Error> {
        match item {
            Item::Claim(key) => {
                if let Some(claim) = self.claims.get(key) {
                    self.provision(&claim).await?;
                }
            }
            Item::Volume(name) => self.reclaim(name).await?,
        }
        Ok(Action::Done)
    }
}

/// Run the provisioner for `node`, keeping volumes under `dir`, until `shutdown`.
pub async fn run(client: Client, node: String, dir: PathBuf, shutdown: CancellationToken) {
    let informers = Informers::new(client.clone(), shutdown.clone());
    let claims = informers.get::<PersistentVolumeClaim>();
    let classes = informers.get::<StorageClass>();
    let volumes = informers.get::<PersistentVolume>();
    let queue = WorkQueue::default();
    controller::feed(&claims, &queue, &shutdown, |c| {
        vec![Item::Claim(ObjectKey::of(c.object().as_ref()))]
    });
    controller::feed(&volumes, &queue, &shutdown, |c| {
        vec![Item::Volume(c.object().name_any())]
    });
    {
        // A class created after its claims: look at the claims again.
        let claims = claims.clone();
        controller::feed(&classes, &queue, &shutdown, move |_| {
            claims.keys().into_iter().map(Item::Claim).collect()
        });
    }
    let provisioner = Arc::new(Provisioner {
        client,
        node,
        dir,
        claims: claims.clone(),
        classes,
        volumes: volumes.clone(),
    });
    // A volume deleted by someone else (the binder, a user) leaves its directory: remove it.
    {
        let mut subscription = volumes.subscribe();
        let (p, stop) = (provisioner.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let n =
                    tokio::select! { _ = stop.cancelled() => return, n = subscription.recv() => n };
                match n {
                    Some(Notification::Change(Change::Deleted(v))) => {
                        if let Some(path) = p.ours(&v) {
                            remove_dir(&path);
                        }
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        });
    }
    controller::run(provisioner, queue, 2, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_pinned_to_the_node_and_bound_to_the_claim() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": { "name": "data", "namespace": "apps", "uid": "c-1" },
            "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "2Gi" } }, "storageClassName": "local-path" },
        }))
        .unwrap();
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": { "name": "local-path" }, "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
        }))
        .unwrap();
        let pv = volume_for(&claim, &class, "node-1", "/data/storage/pvc-c-1");
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-c-1"));
        let spec = pv.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"].0, "2Gi");
        assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("c-1"));
        assert_eq!(spec.host_path.unwrap().path, "/data/storage/pvc-c-1");
        assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
        let term = &spec
            .node_affinity
            .unwrap()
            .required
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(
            term.match_expressions.as_ref().unwrap()[0]
                .values
                .as_ref()
                .unwrap(),
            &vec!["node-1".to_owned()]
        );
    }
}
