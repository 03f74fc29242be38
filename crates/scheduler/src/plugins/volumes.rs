//! The volume plugins, for PersistentVolumeClaims (the kubelet's own local volumes —
//! emptyDir, hostPath, configMap, secret, projected — need no scheduling decision):
//!
//! - **VolumeRestrictions** (PreFilter, Filter): a `ReadWriteOncePod` claim already used by a
//!   scheduled pod blocks every node; in-tree disks (GCE PD, AWS EBS, iSCSI, RBD) cannot be
//!   mounted read-write by two pods of one node.
//! - **VolumeZone** (PreFilter, Filter): a bound volume's zone/region labels must match the
//!   node's (nodes without any such label pass, as in single-zone clusters).
//! - **VolumeBinding** (PreFilter, Filter, Reserve, PreBind): claims must exist; unbound claims
//!   of an `Immediate` class make the pod wait for the volume controller; bound volumes' node
//!   affinity must match the node; unbound `WaitForFirstConsumer` claims need an available
//!   matching volume for the node, or a provisioner whose allowed topologies include it. On
//!   PreBind the chosen volume's `claimRef` is set (or the claim is annotated with
//!   `volume.kubernetes.io/selected-node` for provisioning) and the plugin waits, up to
//!   `bindTimeoutSeconds`, for the volume controller to complete the binding.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use skiff_api::selector::LabelSelector;
use skiff_runtime::Informer;

use crate::cache::Snapshot;
use crate::extension_points;
use crate::framework::events::Resource;
use crate::framework::{
    ActionType, ClusterEvent, Code, CycleState, FilterPlugin, Handle, Plugin, PreBindPlugin,
    PreFilterPlugin, PreFilterResult, ReservePlugin, Status, events,
};
use crate::helpers::{CompiledNodeSelector, node_labels};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::registry::decode_args;

/// VolumeRestrictions' name.
pub const RESTRICTIONS: &str = "VolumeRestrictions";
/// VolumeZone's name.
pub const ZONE: &str = "VolumeZone";
/// VolumeBinding's name.
pub const BINDING: &str = "VolumeBinding";

/// Upstream's reasons.
pub const REASON_DISK_CONFLICT: &str = "node(s) had no available disk";
/// RWOP claim in use.
pub const REASON_RWOP: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";
/// Zone mismatch.
pub const REASON_ZONE: &str = "node(s) had no available volume zone";
/// Immediate unbound claims.
pub const REASON_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// Bound volume on another node.
pub const REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// No volume to bind.
pub const REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// Bound to a missing volume.
pub const REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

const ZONE_LABELS: &[&str] = &[
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];

/// The claim names a pod uses: `persistentVolumeClaim` volumes and generic ephemeral volumes
/// (whose claim is `<pod>-<volume>`).
fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else if v.ephemeral.is_some() {
                Some(format!("{pod_name}-{}", v.name))
            } else {
                None
            }
        })
        .collect()
}

fn volume_events() -> Vec<ClusterEvent> {
    vec![
        ClusterEvent::new(
            Resource::PersistentVolumeClaim,
            ActionType::ADD | ActionType::UPDATE,
            "PVCChange",
        ),
        ClusterEvent::new(
            Resource::PersistentVolume,
            ActionType::ADD | ActionType::UPDATE,
            "PVChange",
        ),
        ClusterEvent::new(
            Resource::StorageClass,
            ActionType::ADD | ActionType::UPDATE,
            "StorageClassChange",
        ),
        ClusterEvent::new(
            Resource::Node,
            ActionType::ADD | ActionType::UPDATE_NODE_LABEL,
            "NodeLabelChange",
        ),
    ]
}

// ---------------------------------------------------------------- VolumeRestrictions

/// VolumeRestrictions.
pub struct VolumeRestrictions {
    pvcs: Informer<PersistentVolumeClaim>,
}

/// VolumeRestrictions' factory.
pub fn new_restrictions(_args: Option<&Value>, handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(VolumeRestrictions {
        pvcs: handle.listers.pvcs.clone(),
    }))
}

#[derive(Clone, Default)]
struct RestrictionsState {
    /// `namespace/claim` of the pod's ReadWriteOncePod claims.
    rwop: HashSet<String>,
    /// How many scheduled pods use one of them.
    conflicts: i64,
}

fn disk_conflict(pod: &Pod, other: &Pod) -> bool {
    let vols = |p: &Pod| {
        p.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .cloned()
            .collect::<Vec<_>>()
    };
    let (mine, theirs) = (vols(pod), vols(other));
    for a in &mine {
        for b in &theirs {
            if let (Some(x), Some(y)) = (&a.gce_persistent_disk, &b.gce_persistent_disk)
                && x.pd_name == y.pd_name
                && !(x.read_only.unwrap_or(false) && y.read_only.unwrap_or(false))
            {
                return true;
            }
            if let (Some(x), Some(y)) = (&a.aws_elastic_block_store, &b.aws_elastic_block_store)
                && x.volume_id == y.volume_id
            {
                return true;
            }
            if let (Some(x), Some(y)) = (&a.iscsi, &b.iscsi)
                && x.iqn == y.iqn
                && !(x.read_only.unwrap_or(false) && y.read_only.unwrap_or(false))
            {
                return true;
            }
            if let (Some(x), Some(y)) = (&a.rbd, &b.rbd)
                && x.monitors.iter().any(|m| y.monitors.contains(m))
                && x.pool == y.pool
                && x.image == y.image
                && !(x.read_only.unwrap_or(false) && y.read_only.unwrap_or(false))
            {
                return true;
            }
        }
    }
    false
}

fn has_disk_volumes(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.gce_persistent_disk.is_some()
                || v.aws_elastic_block_store.is_some()
                || v.iscsi.is_some()
                || v.rbd.is_some()
        })
}

impl Plugin for VolumeRestrictions {
    fn name(&self) -> &'static str {
        RESTRICTIONS
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            events::ASSIGNED_POD_DELETE,
            ClusterEvent::new(
                Resource::PersistentVolumeClaim,
                ActionType::ADD | ActionType::UPDATE,
                "PVCChange",
            ),
        ]
    }
    extension_points!(as_pre_filter => PreFilterPlugin, as_filter => FilterPlugin);
}

impl PreFilterPlugin for VolumeRestrictions {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        let ns = pod.namespace();
        let mut s = RestrictionsState::default();
        for claim in claim_names(&pod.pod) {
            if let Some(pvc) = self.pvcs.get_named(ns, &claim)
                && pvc
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.access_modes.as_ref())
                    .is_some_and(|m| m.iter().any(|m| m == "ReadWriteOncePod"))
            {
                let key = format!("{ns}/{claim}");
                s.conflicts += snapshot.pvc_user_count(&key) as i64;
                s.rwop.insert(key);
            }
        }
        if s.rwop.is_empty() && !has_disk_volumes(&pod.pod) {
            return (Status::skip(), None);
        }
        state.write(RESTRICTIONS, s);
        (Status::success(), None)
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        added: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.read_mut::<RestrictionsState>(RESTRICTIONS) {
            let ns = added.namespace();
            s.conflicts += added
                .pvc_names()
                .filter(|c| s.rwop.contains(&format!("{ns}/{c}")))
                .count() as i64;
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        removed: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.read_mut::<RestrictionsState>(RESTRICTIONS) {
            let ns = removed.namespace();
            s.conflicts -= removed
                .pvc_names()
                .filter(|c| s.rwop.contains(&format!("{ns}/{c}")))
                .count() as i64;
        }
        Status::success()
    }
}

impl FilterPlugin for VolumeRestrictions {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if has_disk_volumes(&pod.pod)
            && node
                .pods
                .iter()
                .any(|other| disk_conflict(&pod.pod, &other.pod))
        {
            return Status::unschedulable(REASON_DISK_CONFLICT);
        }
        if state
            .read::<RestrictionsState>(RESTRICTIONS)
            .is_some_and(|s| s.conflicts > 0)
        {
            return Status::unschedulable(REASON_RWOP);
        }
        Status::success()
    }
}

// ---------------------------------------------------------------- VolumeZone

/// VolumeZone.
pub struct VolumeZone {
    pvcs: Informer<PersistentVolumeClaim>,
    pvs: Informer<PersistentVolume>,
}

/// VolumeZone's factory.
pub fn new_zone(_args: Option<&Value>, handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(VolumeZone {
        pvcs: handle.listers.pvcs.clone(),
        pvs: handle.listers.pvs.clone(),
    }))
}

#[derive(Clone, Default)]
struct ZoneState(Vec<(String, HashSet<String>)>);

impl Plugin for VolumeZone {
    fn name(&self) -> &'static str {
        ZONE
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        volume_events()
    }
    extension_points!(as_pre_filter => PreFilterPlugin, as_filter => FilterPlugin);
}

impl PreFilterPlugin for VolumeZone {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        let ns = pod.namespace();
        let mut topology = Vec::new();
        for claim in claim_names(&pod.pod) {
            let Some(pv_name) = self
                .pvcs
                .get_named(ns, &claim)
                .and_then(|c| c.spec.as_ref().and_then(|s| s.volume_name.clone()))
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            let Some(pv) = self.pvs.get_named("", &pv_name) else {
                continue;
            };
            for key in ZONE_LABELS {
                if let Some(value) = pv.metadata.labels.as_ref().and_then(|l| l.get(*key)) {
                    topology.push((
                        (*key).to_owned(),
                        value.split("__").map(str::to_owned).collect(),
                    ));
                }
            }
        }
        if topology.is_empty() {
            return (Status::skip(), None);
        }
        state.write(ZONE, ZoneState(topology));
        (Status::success(), None)
    }
}

impl FilterPlugin for VolumeZone {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<ZoneState>(ZONE) else {
            return Status::success();
        };
        let labels = node.labels();
        if !ZONE_LABELS.iter().any(|k| labels.contains_key(*k)) {
            return Status::success();
        }
        for (key, values) in &s.0 {
            if !labels.get(key).is_some_and(|v| values.contains(v)) {
                return Status::unresolvable(REASON_ZONE);
            }
        }
        Status::success()
    }
}

// ---------------------------------------------------------------- VolumeBinding

/// `VolumeBindingArgs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindingArgs {
    /// How long PreBind waits for the volume controller (default 600).
    #[serde(default = "default_bind_timeout")]
    pub bind_timeout_seconds: i64,
    /// Accepted for compatibility (storage capacity scoring is not implemented).
    #[serde(default)]
    pub shape: Option<Value>,
}

fn default_bind_timeout() -> i64 {
    600
}

impl Default for BindingArgs {
    fn default() -> Self {
        BindingArgs {
            bind_timeout_seconds: 600,
            shape: None,
        }
    }
}

/// VolumeBinding.
pub struct VolumeBinding {
    pvcs: Informer<PersistentVolumeClaim>,
    pvs: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    client: Option<kube::Client>,
    timeout: Duration,
    /// Volumes chosen for claims whose binding is in progress: volume → claim.
    assumed: Mutex<HashMap<String, String>>,
}

/// VolumeBinding's factory.
pub fn new_binding(args: Option<&Value>, handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    let args: BindingArgs = decode_args(args)?;
    if args.bind_timeout_seconds < 0 {
        return Err(format!(
            "bindTimeoutSeconds: Invalid value: {}: must be non-negative",
            args.bind_timeout_seconds
        ));
    }
    Ok(Arc::new(VolumeBinding {
        pvcs: handle.listers.pvcs.clone(),
        pvs: handle.listers.pvs.clone(),
        classes: handle.listers.storage_classes.clone(),
        client: handle.client.clone(),
        timeout: Duration::from_secs(args.bind_timeout_seconds as u64),
        assumed: Mutex::new(HashMap::new()),
    }))
}

/// Static bindings (claim, volume) and claims to provision, for one node.
type Plan = (
    Vec<(Arc<PersistentVolumeClaim>, String)>,
    Vec<Arc<PersistentVolumeClaim>>,
);

#[derive(Clone, Default)]
struct BindingState {
    bound: Vec<Arc<PersistentVolumeClaim>>,
    delayed: Vec<Arc<PersistentVolumeClaim>>,
    /// Plans Filter found, by node, for Reserve to pick up.
    plans: Arc<Mutex<HashMap<String, Plan>>>,
    /// Decided in Reserve: (claim, volume) static bindings and claims to provision.
    static_bindings: Vec<(Arc<PersistentVolumeClaim>, String)>,
    provision: Vec<Arc<PersistentVolumeClaim>>,
}

fn claim_key(c: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        c.metadata.namespace.as_deref().unwrap_or(""),
        c.metadata.name.as_deref().unwrap_or("")
    )
}

fn claim_class(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn pv_matches_node(pv: &PersistentVolume, node: &k8s_openapi::api::core::v1::Node) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_none_or(|sel| CompiledNodeSelector::new(sel).matches(node))
}

impl VolumeBinding {
    /// An available volume for `claim` usable on `node`, the smallest that fits.
    fn find_volume(
        &self,
        claim: &PersistentVolumeClaim,
        node: &k8s_openapi::api::core::v1::Node,
        taken: &HashSet<String>,
    ) -> Option<String> {
        let spec = claim.spec.as_ref()?;
        let want = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map_or(0, |q| crate::resources::units(&q.0));
        let modes: Vec<String> = spec.access_modes.clone().unwrap_or_default();
        let class = claim_class(claim);
        let mode = spec
            .volume_mode
            .clone()
            .unwrap_or_else(|| "Filesystem".into());
        let selector = spec
            .selector
            .as_ref()
            .and_then(|s| LabelSelector::from_k8s(s).ok());
        let claim_uid = claim.metadata.uid.clone();
        let assumed = self.assumed.lock();
        let mut best: Option<(i64, String)> = None;
        for pv in self.pvs.list() {
            let name = pv.metadata.name.clone().unwrap_or_default();
            let Some(ps) = pv.spec.as_ref() else { continue };
            if pv.metadata.deletion_timestamp.is_some() || taken.contains(&name) {
                continue;
            }
            if let Some(holder) = assumed.get(&name)
                && *holder != claim_key(claim)
            {
                continue;
            }
            if let Some(r) = &ps.claim_ref {
                let same = r.uid.is_some() && r.uid == claim_uid
                    || (r.uid.is_none()
                        && r.name == claim.metadata.name
                        && r.namespace == claim.metadata.namespace);
                if !same {
                    continue;
                }
            }
            if ps.storage_class_name.clone().unwrap_or_default() != class
                || ps
                    .volume_mode
                    .clone()
                    .unwrap_or_else(|| "Filesystem".into())
                    != mode
            {
                continue;
            }
            let pv_modes = ps.access_modes.clone().unwrap_or_default();
            if !modes.iter().all(|m| pv_modes.contains(m)) {
                continue;
            }
            let size = ps
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map_or(0, |q| crate::resources::units(&q.0));
            if size < want {
                continue;
            }
            if let Some(sel) = &selector
                && !sel.matches(pv.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
            {
                continue;
            }
            if !pv_matches_node(&pv, node) {
                continue;
            }
            if best.as_ref().is_none_or(|(s, _)| size < *s) {
                best = Some((size, name));
            }
        }
        best.map(|(_, n)| n)
    }

    fn can_provision(
        &self,
        claim: &PersistentVolumeClaim,
        node: &k8s_openapi::api::core::v1::Node,
    ) -> bool {
        let Some(class) = self.classes.get_named("", &claim_class(claim)) else {
            return false;
        };
        if class.provisioner == "kubernetes.io/no-provisioner" {
            return false;
        }
        let labels = node_labels(node);
        class.allowed_topologies.as_ref().is_none_or(|terms| {
            terms.is_empty()
                || terms.iter().any(|t| {
                    t.match_label_expressions
                        .iter()
                        .flatten()
                        .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
                })
        })
    }

    /// Decide bindings for the delayed claims on `node`: `None` when some claim cannot be
    /// satisfied.
    fn plan(&self, s: &BindingState, node: &k8s_openapi::api::core::v1::Node) -> Option<Plan> {
        let mut taken = HashSet::new();
        let mut statics = Vec::new();
        let mut provision = Vec::new();
        for claim in &s.delayed {
            if let Some(pv) = self.find_volume(claim, node, &taken) {
                taken.insert(pv.clone());
                statics.push((claim.clone(), pv));
            } else if self.can_provision(claim, node) {
                provision.push(claim.clone());
            } else {
                return None;
            }
        }
        Some((statics, provision))
    }

    async fn wait_bound(&self, claims: &[String]) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let all = claims.iter().all(|key| {
                let (ns, name) = key.split_once('/').unwrap_or(("", key));
                self.pvcs.get_named(ns, name).is_some_and(|c| {
                    c.spec
                        .as_ref()
                        .and_then(|s| s.volume_name.as_deref())
                        .is_some_and(|v| !v.is_empty())
                        && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                })
            });
            if all {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("binding volumes: context deadline exceeded".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        BINDING
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        volume_events()
    }
    extension_points!(
        as_pre_filter => PreFilterPlugin,
        as_filter => FilterPlugin,
        as_reserve => ReservePlugin,
        as_pre_bind => PreBindPlugin,
    );
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (Status, PreFilterResult) {
        let names = claim_names(&pod.pod);
        if names.is_empty() {
            return (Status::skip(), None);
        }
        let ns = pod.namespace();
        let mut s = BindingState::default();
        let mut immediate = false;
        for name in names {
            let Some(claim) = self.pvcs.get_named(ns, &name) else {
                return (
                    Status::unresolvable(format!("persistentvolumeclaim \"{name}\" not found")),
                    None,
                );
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return (
                    Status::unresolvable(format!(
                        "persistentvolumeclaim \"{name}\" is being deleted"
                    )),
                    None,
                );
            }
            let bound = claim
                .spec
                .as_ref()
                .and_then(|sp| sp.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty());
            if bound {
                s.bound.push(claim);
                continue;
            }
            let delayed = self
                .classes
                .get_named("", &claim_class(&claim))
                .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
            if delayed {
                s.delayed.push(claim);
            } else {
                immediate = true;
            }
        }
        if immediate {
            return (Status::unresolvable(REASON_UNBOUND_IMMEDIATE), None);
        }
        state.write(BINDING, s);
        (Status::success(), None)
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<BindingState>(BINDING) else {
            return Status::success();
        };
        for claim in &s.bound {
            let pv_name = claim
                .spec
                .as_ref()
                .and_then(|sp| sp.volume_name.clone())
                .unwrap_or_default();
            match self.pvs.get_named("", &pv_name) {
                None => return Status::unresolvable(REASON_PV_NOT_EXIST),
                Some(pv) if !pv_matches_node(&pv, &node.node) => {
                    return Status::unresolvable(REASON_NODE_CONFLICT);
                }
                Some(_) => {}
            }
        }
        if !s.delayed.is_empty() {
            match self.plan(s, &node.node) {
                None => return Status::unresolvable(REASON_BIND_CONFLICT),
                Some(plan) => {
                    s.plans.lock().insert(node.name.clone(), plan);
                }
            }
        }
        Status::success()
    }
}

impl ReservePlugin for VolumeBinding {
    fn reserve(&self, state: &mut CycleState, _pod: &PodInfo, node: &str) -> Status {
        let Some(s) = state.read::<BindingState>(BINDING).cloned() else {
            return Status::success();
        };
        if s.delayed.is_empty() {
            return Status::success();
        }
        let Some((statics, provision)) = s.plans.lock().remove(node) else {
            return Status::new(Code::Unschedulable, vec![REASON_BIND_CONFLICT.into()]);
        };
        {
            let mut assumed = self.assumed.lock();
            for (claim, pv) in &statics {
                assumed.insert(pv.clone(), claim_key(claim));
            }
        }
        let mut s = s;
        s.static_bindings = statics;
        s.provision = provision;
        state.write(BINDING, s);
        Status::success()
    }

    fn unreserve(&self, state: &mut CycleState, _pod: &PodInfo, _node: &str) {
        if let Some(s) = state.read::<BindingState>(BINDING) {
            let mut assumed = self.assumed.lock();
            for (_, pv) in &s.static_bindings {
                assumed.remove(pv);
            }
        }
    }
}

#[async_trait]
impl PreBindPlugin for VolumeBinding {
    async fn pre_bind(&self, state: &CycleState, _pod: &PodInfo, node: &str) -> Status {
        let Some(s) = state.read::<BindingState>(BINDING) else {
            return Status::success();
        };
        if s.static_bindings.is_empty() && s.provision.is_empty() {
            return Status::success();
        }
        let Some(client) = self.client.clone() else {
            return Status::error("no API client to bind volumes with");
        };
        let pv_api: Api<PersistentVolume> = Api::all(client.clone());
        for (claim, pv) in &s.static_bindings {
            let patch = json!({ "spec": { "claimRef": {
                "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": claim.metadata.namespace, "name": claim.metadata.name,
                "uid": claim.metadata.uid, "resourceVersion": claim.metadata.resource_version,
            }}});
            if let Err(e) = pv_api
                .patch(pv, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                return Status::error(format!("binding volume {pv}: {e}"));
            }
        }
        for claim in &s.provision {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(
                client.clone(),
                claim.metadata.namespace.as_deref().unwrap_or(""),
            );
            let patch = json!({ "metadata": { "annotations": { "volume.kubernetes.io/selected-node": node } } });
            if let Err(e) = api
                .patch(
                    claim.metadata.name.as_deref().unwrap_or(""),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                return Status::error(format!(
                    "selecting a node for claim {}: {e}",
                    claim_key(claim)
                ));
            }
        }
        let keys: Vec<String> = s
            .static_bindings
            .iter()
            .map(|(c, _)| claim_key(c))
            .chain(s.provision.iter().map(|c| claim_key(c)))
            .collect();
        let result = self.wait_bound(&keys).await;
        {
            let mut assumed = self.assumed.lock();
            for (_, pv) in &s.static_bindings {
                assumed.remove(pv);
            }
        }
        match result {
            Ok(()) => Status::success(),
            Err(e) => Status::error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimSpec,
        PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Volume, VolumeNodeAffinity,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::watcher::Event;

    fn handle() -> Handle {
        Handle::for_tests()
    }

    fn claim(name: &str, class: &str, volume: &str, modes: &[&str]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                volume_name: (!volume.is_empty()).then(|| volume.to_owned()),
                access_modes: Some(modes.iter().map(|m| (*m).into()).collect()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), Quantity("1Gi".into()))].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn local_pv(name: &str, class: &str, node_name: &str, zone: Option<&str>) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: zone
                    .map(|z| [("topology.kubernetes.io/zone".to_owned(), z.to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some(class.into()),
                capacity: Some([("storage".to_owned(), Quantity("10Gi".into()))].into()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "kubernetes.io/hostname".into(),
                                operator: "In".into(),
                                values: Some(vec![node_name.into()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn class(name: &str, mode: &str, provisioner: &str) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            provisioner: provisioner.into(),
            volume_binding_mode: Some(mode.into()),
            ..Default::default()
        }
    }

    fn with_claim(name: &str, claim_name: &str) -> crate::plugins::testing::P {
        let mut p = pod(name);
        p.0.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name.into(),
                read_only: None,
            }),
            ..Default::default()
        }]);
        p
    }

    fn run(
        plugin: &Arc<dyn Plugin>,
        p: &PodInfo,
        nodes: &[Arc<NodeInfo>],
    ) -> (Status, Vec<Status>) {
        let snap = Snapshot::from_nodes(nodes.to_vec());
        let mut state = CycleState::new();
        let (s, _) = plugin
            .as_pre_filter()
            .unwrap()
            .pre_filter(&mut state, p, &snap);
        let per_node = if s.is_success() {
            nodes
                .iter()
                .map(|n| plugin.as_filter().unwrap().filter(&state, p, n))
                .collect()
        } else {
            Vec::new()
        };
        (s, per_node)
    }

    #[test]
    fn local_volumes_pin_pods_to_their_node() {
        let h = handle();
        h.listers.storage_classes.handle(Event::Apply(class(
            "local",
            "WaitForFirstConsumer",
            "kubernetes.io/no-provisioner",
        )));
        h.listers
            .pvs
            .handle(Event::Apply(local_pv("pv-a", "local", "a", None)));
        h.listers
            .pvcs
            .handle(Event::Apply(claim("data", "local", "", &["ReadWriteOnce"])));
        let plugin = new_binding(None, &h).unwrap();
        let nodes = vec![node("a").info(), node("b").info()];
        let (s, per_node) = run(&plugin, &with_claim("p", "data").info(), &nodes);
        assert!(s.is_success());
        assert!(per_node[0].is_success());
        assert_eq!(per_node[1].message(), REASON_BIND_CONFLICT);

        // Once bound, the volume's node affinity decides.
        h.listers.pvcs.handle(Event::Apply(claim(
            "data",
            "local",
            "pv-a",
            &["ReadWriteOnce"],
        )));
        let (_, per_node) = run(&plugin, &with_claim("p", "data").info(), &nodes);
        assert!(per_node[0].is_success());
        assert_eq!(per_node[1].message(), REASON_NODE_CONFLICT);
    }

    #[test]
    fn missing_and_immediate_unbound_claims_block_the_pod() {
        let h = handle();
        let plugin = new_binding(None, &h).unwrap();
        let (s, _) = run(
            &plugin,
            &with_claim("p", "nope").info(),
            &[node("a").info()],
        );
        assert_eq!(s.message(), "persistentvolumeclaim \"nope\" not found");
        h.listers
            .pvcs
            .handle(Event::Apply(claim("now", "", "", &["ReadWriteOnce"])));
        let (s, _) = run(&plugin, &with_claim("p", "now").info(), &[node("a").info()]);
        assert_eq!(s.message(), REASON_UNBOUND_IMMEDIATE);
        let (s, _) = run(&plugin, &pod("plain").info(), &[node("a").info()]);
        assert!(s.is_skip());
    }

    #[test]
    fn volume_zone_matches_node_zone() {
        let h = handle();
        h.listers.pvs.handle(Event::Apply(local_pv(
            "pv-z",
            "",
            "any",
            Some("us-east-1a"),
        )));
        h.listers
            .pvcs
            .handle(Event::Apply(claim("data", "", "pv-z", &["ReadWriteOnce"])));
        let plugin = new_zone(None, &h).unwrap();
        let nodes = vec![
            node("a")
                .label("topology.kubernetes.io/zone", "us-east-1a")
                .info(),
            node("b")
                .label("topology.kubernetes.io/zone", "us-east-1b")
                .info(),
            node("c").info(),
        ];
        let (_, per_node) = run(&plugin, &with_claim("p", "data").info(), &nodes);
        assert!(per_node[0].is_success());
        assert_eq!(per_node[1].message(), REASON_ZONE);
        assert!(per_node[2].is_success(), "nodes without zone labels pass");
    }

    #[test]
    fn read_write_once_pod_claims_allow_one_pod() {
        let h = handle();
        h.listers
            .pvcs
            .handle(Event::Apply(claim("solo", "", "pv", &["ReadWriteOncePod"])));
        let plugin = new_restrictions(None, &h).unwrap();
        let free = vec![node("a").info()];
        let (s, per_node) = run(&plugin, &with_claim("p", "solo").info(), &free);
        assert!(s.is_success() && per_node[0].is_success());
        let used = vec![
            node("a").with(vec![with_claim("other", "solo")]),
            node("b").info(),
        ];
        let (_, per_node) = run(&plugin, &with_claim("p", "solo").info(), &used);
        assert!(per_node.iter().all(|s| s.message() == REASON_RWOP));
    }

    #[test]
    fn in_tree_disks_conflict_on_one_node() {
        let plugin = new_restrictions(None, &handle()).unwrap();
        let ebs = |name: &str| {
            let mut p = pod(name);
            p.0.spec.as_mut().unwrap().volumes = Some(vec![Volume {
                name: "disk".into(),
                aws_elastic_block_store: Some(
                    k8s_openapi::api::core::v1::AWSElasticBlockStoreVolumeSource {
                        volume_id: "vol-1".into(),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            }]);
            p
        };
        let nodes = vec![node("a").with(vec![ebs("first")]), node("b").info()];
        let (_, per_node) = run(&plugin, &ebs("second").info(), &nodes);
        assert_eq!(per_node[0].message(), REASON_DISK_CONFLICT);
        assert!(per_node[1].is_success());
    }
}
