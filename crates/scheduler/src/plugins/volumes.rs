//! The volume plugins, for PersistentVolumeClaims (the kubelet's own local volumes —
//! emptyDir, hostPath, configMap, secret, projected — need no scheduling decision):
//!
//! - **VolumeRestrictions** (PreFilter, Filter): a `ReadWriteOncePod` claim already used by a
//!   scheduled pod blocks every node; in-tree disks (GCE PD, AWS EBS, iSCSI, RBD) cannot be
//!   mounted read-write by two pods of one node.
//! - **VolumeZone** (PreFilter, Filter): a bound volume's zone/region labels must match the
//!   node's (nodes without any such label pass, as in single-zone clusters).
//! - **VolumeBinding** (PreFilter, Filter, PreScore, Score, Reserve, PreBind): claims must
//!   exist; unbound claims of an `Immediate` class make the pod wait for the volume controller;
//!   bound volumes' node affinity must match the node; unbound `WaitForFirstConsumer` claims
//!   need an available matching volume for the node, or a provisioner whose allowed topologies
//!   include it and — when its CSIDriver publishes storage capacity — a CSIStorageCapacity
//!   for the node's topology with room for the claim. Score is upstream's storage capacity
//!   scoring (StorageCapacityScoring, on here as from v1.37): per storage class, the share of
//!   capacity the pod's volumes would use on the node — of the chosen static volumes, or else
//!   of the CSIStorageCapacity the provisioned ones come from — through the `shape` function
//!   (by default 0 % → 10, 100 % → 0: prefer room), averaged over classes. On PreBind the
//!   chosen volume's `claimRef` is set (or the claim is annotated with
//!   `volume.kubernetes.io/selected-node` for provisioning) and the plugin waits, up to
//!   `bindTimeoutSeconds`, for the volume controller to complete the binding.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIStorageCapacity, StorageClass};
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
    ActionType, ClusterEvent, Code, CycleState, FilterPlugin, Handle, MAX_NODE_SCORE, Plugin,
    PreBindPlugin, PreFilterPlugin, PreFilterResult, PreScorePlugin, ReservePlugin, ScorePlugin,
    Status, events,
};
use crate::helpers::{CompiledNodeSelector, node_labels};
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::plugins::node_resources::{ShapePoint, broken_linear, empty_scores_highest};
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
/// No CSIStorageCapacity with room for a claim to provision.
pub const REASON_NOT_ENOUGH_SPACE: &str = "node(s) did not have enough free storage";
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
            Resource::CsiStorageCapacity,
            ActionType::ADD | ActionType::UPDATE,
            "CSIStorageCapacityChange",
        ),
        ClusterEvent::new(Resource::CsiDriver, ActionType::UPDATE, "CSIDriverChange"),
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
    /// Storage capacity scoring's utilization (0-100) → score (0-10) points, utilization
    /// increasing; [`empty_scores_highest`] when absent.
    #[serde(default)]
    pub shape: Option<Vec<ShapePoint>>,
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

/// Upstream `validateFunctionShape`: every problem of the shape.
fn validate_shape(shape: &[ShapePoint]) -> Vec<String> {
    if shape.is_empty() {
        return vec!["shape: Required value: at least one point must be specified".into()];
    }
    let mut problems = Vec::new();
    if let Some(i) = (1..shape.len()).find(|&i| shape[i - 1].utilization >= shape[i].utilization) {
        problems.push(format!(
            "shape[{i}].utilization: Invalid value: {}: values must be sorted in increasing order",
            shape[i].utilization
        ));
    }
    for (i, p) in shape.iter().enumerate() {
        if !(0..=100).contains(&p.utilization) {
            problems.push(format!(
                "shape[{i}].utilization: Invalid value: {}: not in valid range [0, 100]",
                p.utilization
            ));
        }
        if !(0..=10).contains(&p.score) {
            problems.push(format!(
                "shape[{i}].score: Invalid value: {}: not in valid range [0, 10]",
                p.score
            ));
        }
    }
    problems
}

/// Storage capacity scoring (upstream `buildScorerFunction`): per storage class the pod's
/// volumes use `requested` of `capacity` on a node; each class scores the shape at that
/// utilization (a class without capacity, or asking more than it has, scores as full), and the
/// node scores the rounded mean over classes (0 without any).
#[derive(Debug, Clone)]
struct CapacityScorer {
    /// The shape with scores scaled to 0-100.
    shape: Vec<ShapePoint>,
}

impl CapacityScorer {
    fn new(shape: &[ShapePoint]) -> CapacityScorer {
        CapacityScorer {
            shape: shape
                .iter()
                .map(|p| ShapePoint {
                    utilization: p.utilization,
                    score: p.score * (MAX_NODE_SCORE / 10),
                })
                .collect(),
        }
    }

    fn class_score(&self, requested: i64, capacity: i64) -> i64 {
        let utilization = if capacity == 0 || requested > capacity {
            100
        } else {
            requested * 100 / capacity
        };
        broken_linear(&self.shape, utilization)
    }

    /// The score of a node for the volumes planned there: the static bindings, or when there
    /// are none the provisions whose capacity is known.
    fn score(&self, plan: &Plan) -> i64 {
        let mut classes: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        if !plan.statics.is_empty() {
            for b in &plan.statics {
                let c = classes.entry(b.class.as_str()).or_default();
                c.0 += b.requested;
                c.1 += b.capacity;
            }
        } else {
            for p in &plan.provisions {
                let Some(capacity) = p.capacity else { continue };
                let c = classes.entry(p.class.as_str()).or_default();
                c.0 += p.requested;
                c.1 = capacity;
            }
        }
        if classes.is_empty() {
            return 0;
        }
        let sum: i64 = classes
            .values()
            .map(|(requested, capacity)| self.class_score(*requested, *capacity))
            .sum();
        (sum as f64 / classes.len() as f64).round() as i64
    }
}

/// VolumeBinding.
pub struct VolumeBinding {
    pvcs: Informer<PersistentVolumeClaim>,
    pvs: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    drivers: Informer<CSIDriver>,
    capacities: Informer<CSIStorageCapacity>,
    scorer: CapacityScorer,
    client: Option<kube::Client>,
    timeout: Duration,
    /// Volumes chosen for claims whose binding is in progress: volume → claim.
    assumed: Mutex<HashMap<String, String>>,
}

/// VolumeBinding's factory.
pub fn new_binding(args: Option<&Value>, handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    let args: BindingArgs = decode_args(args)?;
    let mut problems = Vec::new();
    if args.bind_timeout_seconds < 0 {
        problems.push(format!(
            "bindTimeoutSeconds: Invalid value: {}: must be non-negative",
            args.bind_timeout_seconds
        ));
    }
    let shape = args.shape.unwrap_or_else(empty_scores_highest);
    problems.extend(validate_shape(&shape));
    match problems.len() {
        0 => {}
        1 => return Err(problems.remove(0)),
        _ => return Err(format!("[{}]", problems.join(", "))),
    }
    Ok(Arc::new(VolumeBinding {
        pvcs: handle.listers.pvcs.clone(),
        pvs: handle.listers.pvs.clone(),
        classes: handle.listers.storage_classes.clone(),
        drivers: handle.listers.csi_drivers.clone(),
        capacities: handle.listers.csi_storage_capacities.clone(),
        scorer: CapacityScorer::new(&shape),
        client: handle.client.clone(),
        timeout: Duration::from_secs(args.bind_timeout_seconds as u64),
        assumed: Mutex::new(HashMap::new()),
    }))
}

/// A volume chosen for a claim on one node, with what scoring reads: the storage class, the
/// claim's request and the volume's capacity.
#[derive(Debug, Clone)]
struct StaticBinding {
    claim: Arc<PersistentVolumeClaim>,
    volume: String,
    class: String,
    requested: i64,
    capacity: i64,
}

/// A claim to provision on one node, with the capacity of the CSIStorageCapacity that has room
/// for it (`None` when its driver does not publish capacity).
#[derive(Debug, Clone)]
struct Provision {
    claim: Arc<PersistentVolumeClaim>,
    class: String,
    requested: i64,
    capacity: Option<i64>,
}

/// What the delayed claims would get on one node (upstream `PodVolumes`).
#[derive(Debug, Clone, Default)]
struct Plan {
    statics: Vec<StaticBinding>,
    provisions: Vec<Provision>,
}

/// A claim's storage request in bytes, if it makes one.
fn claim_request(claim: &PersistentVolumeClaim) -> Option<i64> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| crate::resources::units(&q.0))
}

/// The largest volume a CSIStorageCapacity can hold (upstream `volumeLimit`: the maximum
/// volume size when given, else the capacity).
fn volume_limit(c: &CSIStorageCapacity) -> Option<i64> {
    c.maximum_volume_size
        .as_ref()
        .or(c.capacity.as_ref())
        .map(|q| crate::resources::units(&q.0))
}

/// Whether the node is in the capacity's topology segment (none: no node is).
fn node_has_access(node: &k8s_openapi::api::core::v1::Node, c: &CSIStorageCapacity) -> bool {
    c.node_topology
        .as_ref()
        .and_then(|t| LabelSelector::from_k8s(t).ok())
        .is_some_and(|s| s.matches(node_labels(node)))
}

#[derive(Clone, Default)]
struct BindingState {
    bound: Vec<Arc<PersistentVolumeClaim>>,
    delayed: Vec<Arc<PersistentVolumeClaim>>,
    /// Plans Filter found, by node, for Score and Reserve to pick up.
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
    /// An available volume for `claim` usable on `node`, the smallest that fits: its name and
    /// capacity.
    fn find_volume(
        &self,
        claim: &PersistentVolumeClaim,
        node: &k8s_openapi::api::core::v1::Node,
        taken: &HashSet<String>,
    ) -> Option<(String, i64)> {
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
        best.map(|(size, name)| (name, size))
    }

    /// Whether `claim` can be provisioned for `node` (upstream `checkVolumeProvisions`): its
    /// class must have a provisioner whose allowed topologies include the node and, if the
    /// provisioner's CSIDriver publishes storage capacity, a CSIStorageCapacity of the class
    /// reachable from the node must have room for the claim. The capacity found, if any.
    fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        node: &k8s_openapi::api::core::v1::Node,
    ) -> Result<Option<i64>, &'static str> {
        let Some(class) = self.classes.get_named("", &claim_class(claim)) else {
            return Err(REASON_BIND_CONFLICT);
        };
        if class.provisioner.is_empty() || class.provisioner == "kubernetes.io/no-provisioner" {
            return Err(REASON_BIND_CONFLICT);
        }
        let labels = node_labels(node);
        let allowed = class.allowed_topologies.as_ref().is_none_or(|terms| {
            terms.is_empty()
                || terms.iter().any(|t| {
                    t.match_label_expressions
                        .iter()
                        .flatten()
                        .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
                })
        });
        if !allowed {
            return Err(REASON_BIND_CONFLICT);
        }
        // Upstream `hasEnoughCapacity`: only for CSI drivers that opt in, and claims with a size.
        let Some(size) = claim_request(claim) else {
            return Ok(None);
        };
        let tracked = self
            .drivers
            .get_named("", &class.provisioner)
            .is_some_and(|d| d.spec.storage_capacity == Some(true));
        if !tracked {
            return Ok(None);
        }
        let class_name = class.metadata.name.as_deref().unwrap_or("");
        self.capacities
            .list()
            .into_iter()
            .find(|c| {
                c.storage_class_name == class_name
                    && volume_limit(c).is_some_and(|limit| limit >= size)
                    && node_has_access(node, c)
            })
            .map(|c| {
                Some(
                    c.capacity
                        .as_ref()
                        .map_or(0, |q| crate::resources::units(&q.0)),
                )
            })
            .ok_or(REASON_NOT_ENOUGH_SPACE)
    }

    /// Decide bindings for the delayed claims on `node`, or why some claim cannot be
    /// satisfied there.
    fn plan(
        &self,
        s: &BindingState,
        node: &k8s_openapi::api::core::v1::Node,
    ) -> Result<Plan, &'static str> {
        let mut taken = HashSet::new();
        let mut plan = Plan::default();
        for claim in &s.delayed {
            let requested = claim_request(claim).unwrap_or(0);
            if let Some((volume, capacity)) = self.find_volume(claim, node, &taken) {
                taken.insert(volume.clone());
                plan.statics.push(StaticBinding {
                    claim: claim.clone(),
                    volume,
                    class: claim_class(claim),
                    requested,
                    capacity,
                });
            } else {
                let capacity = self.provision(claim, node)?;
                plan.provisions.push(Provision {
                    claim: claim.clone(),
                    class: claim_class(claim),
                    requested,
                    capacity,
                });
            }
        }
        Ok(plan)
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
        as_pre_score => PreScorePlugin,
        as_score => ScorePlugin,
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
                Err(reason) => return Status::unresolvable(reason),
                Ok(plan) => {
                    s.plans.lock().insert(node.name.clone(), plan);
                }
            }
        }
        Status::success()
    }
}

impl PreScorePlugin for VolumeBinding {
    fn pre_score(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        // Only claims waiting for their first consumer get volumes chosen per node; for any
        // other pod every node would score 0.
        match state.read::<BindingState>(BINDING) {
            Some(s) if !s.delayed.is_empty() => Status::success(),
            _ => Status::skip(),
        }
    }
}

impl ScorePlugin for VolumeBinding {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<BindingState>(BINDING) else {
            return Ok(0);
        };
        Ok(s.plans
            .lock()
            .get(&node.name)
            .map_or(0, |plan| self.scorer.score(plan)))
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
        let Some(plan) = s.plans.lock().remove(node) else {
            return Status::new(Code::Unschedulable, vec![REASON_BIND_CONFLICT.into()]);
        };
        let statics: Vec<(Arc<PersistentVolumeClaim>, String)> = plan
            .statics
            .into_iter()
            .map(|b| (b.claim, b.volume))
            .collect();
        let provision: Vec<Arc<PersistentVolumeClaim>> =
            plan.provisions.into_iter().map(|p| p.claim).collect();
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

    fn plan_of(statics: &[(&str, i64, i64)], provisions: &[(&str, i64, Option<i64>)]) -> Plan {
        let c = Arc::new(claim("c", "", "", &[]));
        Plan {
            statics: statics
                .iter()
                .map(|(class, requested, capacity)| StaticBinding {
                    claim: c.clone(),
                    volume: "v".into(),
                    class: (*class).into(),
                    requested: *requested,
                    capacity: *capacity,
                })
                .collect(),
            provisions: provisions
                .iter()
                .map(|(class, requested, capacity)| Provision {
                    claim: c.clone(),
                    class: (*class).into(),
                    requested: *requested,
                    capacity: *capacity,
                })
                .collect(),
        }
    }

    /// Upstream's storage capacity scoring with the default shape: the share of a class's
    /// capacity the pod would use maps linearly from 100 (nothing) to 0 (all of it or more),
    /// and classes are averaged.
    #[test]
    fn capacity_scoring_prefers_room_per_class() {
        let scorer = CapacityScorer::new(&empty_scores_highest());
        let score = |statics: &[(&str, i64, i64)]| scorer.score(&plan_of(statics, &[]));
        assert_eq!(score(&[("hdd", 0, 200)]), 100);
        assert_eq!(score(&[("hdd", 50, 200)]), 75);
        assert_eq!(score(&[("hdd", 200, 200)]), 0);
        assert_eq!(score(&[("hdd", 300, 200)]), 0, "more than the capacity");
        assert_eq!(score(&[("hdd", 10, 0)]), 0, "no capacity at all");
        // Static volumes of one class add requests and capacities (50 of 400: 12 % → 88);
        // classes are averaged (88 and 40 → 64).
        assert_eq!(
            score(&[("hdd", 25, 200), ("hdd", 25, 200), ("ssd", 60, 100)]),
            64
        );
        // Rounded half away from zero: 75 and 40 → 57.5 → 58.
        assert_eq!(score(&[("hdd", 50, 200), ("ssd", 60, 100)]), 58);
        assert_eq!(scorer.score(&Plan::default()), 0, "no volumes");
    }

    #[test]
    fn provisions_score_by_their_capacity_only_without_static_volumes() {
        let scorer = CapacityScorer::new(&empty_scores_highest());
        // A provisioned claim scores against the capacity its CSIStorageCapacity reports;
        // claims whose driver reports none are left out.
        let p = plan_of(&[], &[("fast", 25, Some(100)), ("slow", 99, None)]);
        assert_eq!(scorer.score(&p), 75);
        let p = plan_of(&[], &[("fast", 10, Some(100)), ("fast", 10, Some(100))]);
        assert_eq!(
            scorer.score(&p),
            80,
            "one class: requests add, capacity is the pool's"
        );
        // Static volumes take precedence.
        let p = plan_of(&[("hdd", 100, 100)], &[("fast", 0, Some(100))]);
        assert_eq!(scorer.score(&p), 0);
    }

    #[test]
    fn a_custom_shape_is_scaled_and_interpolated() {
        // Bin-packing: fuller nodes score higher, flat below 50 %.
        let shape = [
            ShapePoint {
                utilization: 50,
                score: 0,
            },
            ShapePoint {
                utilization: 100,
                score: 10,
            },
        ];
        let scorer = CapacityScorer::new(&shape);
        let score = |requested| scorer.score(&plan_of(&[("hdd", requested, 100)], &[]));
        assert_eq!(
            [score(20), score(50), score(75), score(100)],
            [0, 0, 50, 100]
        );
    }

    #[test]
    fn shape_arguments_are_validated_like_upstream() {
        let err = |args: serde_json::Value| new_binding(Some(&args), &handle()).err().unwrap();
        assert_eq!(
            err(serde_json::json!({ "shape": [] })),
            "shape: Required value: at least one point must be specified"
        );
        assert_eq!(
            err(serde_json::json!({ "shape": [
                { "utilization": 50, "score": 1 }, { "utilization": 50, "score": 11 } ] })),
            "[shape[1].utilization: Invalid value: 50: values must be sorted in increasing order, \
             shape[1].score: Invalid value: 11: not in valid range [0, 10]]"
        );
        assert_eq!(
            err(serde_json::json!({ "shape": [{ "utilization": 101, "score": 0 }] })),
            "shape[0].utilization: Invalid value: 101: not in valid range [0, 100]"
        );
        assert!(
            new_binding(
                Some(&serde_json::json!({ "shape": [{ "utilization": 0, "score": 10 }] })),
                &handle()
            )
            .is_ok()
        );
    }

    fn capacity(name: &str, class: &str, zone: &str, size: &str) -> CSIStorageCapacity {
        CSIStorageCapacity {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            storage_class_name: class.into(),
            capacity: Some(Quantity(size.into())),
            node_topology: Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some(
                        [("topology.kubernetes.io/zone".to_owned(), zone.to_owned())].into(),
                    ),
                    ..Default::default()
                },
            ),
            maximum_volume_size: None,
        }
    }

    /// Dynamic provisioning with a CSI driver that publishes capacity: a node whose topology
    /// segment lacks room is rejected with upstream's reason, and of the others the one whose
    /// pool the claim would use least scores best.
    #[test]
    fn csi_storage_capacity_filters_and_scores_provisioning() {
        let h = handle();
        h.listers.storage_classes.handle(Event::Apply(class(
            "csi",
            "WaitForFirstConsumer",
            "csi.example.com",
        )));
        h.listers.csi_drivers.handle(Event::Apply(CSIDriver {
            metadata: ObjectMeta {
                name: Some("csi.example.com".into()),
                ..Default::default()
            },
            spec: k8s_openapi::api::storage::v1::CSIDriverSpec {
                storage_capacity: Some(true),
                ..Default::default()
            },
        }));
        for (name, zone, size) in [("a", "a", "4Gi"), ("b", "b", "512Mi"), ("c", "c", "2Gi")] {
            h.listers
                .csi_storage_capacities
                .handle(Event::Apply(capacity(name, "csi", zone, size)));
        }
        h.listers
            .pvcs
            .handle(Event::Apply(claim("data", "csi", "", &["ReadWriteOnce"])));
        let plugin = new_binding(None, &h).unwrap();
        let zoned = |z: &str| {
            node(&format!("n-{z}"))
                .label("topology.kubernetes.io/zone", z)
                .info()
        };
        let nodes = vec![zoned("a"), zoned("b"), zoned("c"), zoned("d")];
        let p = with_claim("p", "data").info();
        let snap = Snapshot::from_nodes(nodes.clone());
        let mut state = CycleState::new();
        let (s, _) = plugin
            .as_pre_filter()
            .unwrap()
            .pre_filter(&mut state, &p, &snap);
        assert!(s.is_success(), "{s}");
        let statuses: Vec<Status> = nodes
            .iter()
            .map(|n| plugin.as_filter().unwrap().filter(&state, &p, n))
            .collect();
        assert!(statuses[0].is_success() && statuses[2].is_success());
        assert_eq!(
            statuses[1].message(),
            REASON_NOT_ENOUGH_SPACE,
            "512Mi < 1Gi"
        );
        assert_eq!(
            statuses[3].message(),
            REASON_NOT_ENOUGH_SPACE,
            "no capacity object"
        );
        assert_eq!(statuses[1].code(), Code::UnschedulableAndUnresolvable);
        let feasible = vec![nodes[0].clone(), nodes[2].clone()];
        let ps = plugin.as_pre_score().unwrap();
        assert!(ps.pre_score(&mut state, &p, &feasible, &snap).is_success());
        let scores: Vec<i64> = feasible
            .iter()
            .map(|n| plugin.as_score().unwrap().score(&state, &p, n).unwrap())
            .collect();
        // 1Gi of 4Gi → 75; 1Gi of 2Gi → 50.
        assert_eq!(scores, [75, 50]);

        // Without capacity tracking every node passes and none is preferred.
        h.listers.csi_drivers.handle(Event::Apply(CSIDriver {
            metadata: ObjectMeta {
                name: Some("csi.example.com".into()),
                ..Default::default()
            },
            spec: k8s_openapi::api::storage::v1::CSIDriverSpec {
                storage_capacity: Some(false),
                ..Default::default()
            },
        }));
        let (_, per_node) = run(&plugin, &p, &nodes);
        assert!(per_node.iter().all(Status::is_success));
    }

    /// Static local volumes: each node has one that fits; the node whose volume the claim
    /// would fill least is preferred.
    #[test]
    fn static_volumes_score_by_how_full_the_claim_makes_them() {
        let h = handle();
        h.listers.storage_classes.handle(Event::Apply(class(
            "local",
            "WaitForFirstConsumer",
            "kubernetes.io/no-provisioner",
        )));
        let mut small = local_pv("pv-a", "local", "a", None);
        small.spec.as_mut().unwrap().capacity =
            Some([("storage".to_owned(), Quantity("2Gi".into()))].into());
        h.listers.pvs.handle(Event::Apply(small));
        h.listers
            .pvs
            .handle(Event::Apply(local_pv("pv-b", "local", "b", None)));
        h.listers
            .pvcs
            .handle(Event::Apply(claim("data", "local", "", &["ReadWriteOnce"])));
        let plugin = new_binding(None, &h).unwrap();
        let nodes = vec![node("a").info(), node("b").info()];
        let p = with_claim("p", "data").info();
        let (s, per_node) = run(&plugin, &p, &nodes);
        assert!(s.is_success() && per_node.iter().all(Status::is_success));
        let snap = Snapshot::from_nodes(nodes.clone());
        let mut state = CycleState::new();
        plugin
            .as_pre_filter()
            .unwrap()
            .pre_filter(&mut state, &p, &snap);
        for n in &nodes {
            assert!(
                plugin
                    .as_filter()
                    .unwrap()
                    .filter(&state, &p, n)
                    .is_success()
            );
        }
        plugin
            .as_pre_score()
            .unwrap()
            .pre_score(&mut state, &p, &nodes, &snap);
        let scores: Vec<i64> = nodes
            .iter()
            .map(|n| plugin.as_score().unwrap().score(&state, &p, n).unwrap())
            .collect();
        // 1Gi of 2Gi → 50; 1Gi of 10Gi → 90.
        assert_eq!(scores, [50, 90]);
        // A pod without claims is not scored.
        let mut plain = CycleState::new();
        let (s, _) =
            plugin
                .as_pre_filter()
                .unwrap()
                .pre_filter(&mut plain, &pod("plain").info(), &snap);
        assert!(s.is_skip());
        assert!(
            plugin
                .as_pre_score()
                .unwrap()
                .pre_score(&mut plain, &pod("plain").info(), &nodes, &snap)
                .is_skip()
        );
    }
}
