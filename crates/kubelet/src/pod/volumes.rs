//! Pod volumes on the node, under `<root>/pods/<uid>/volumes/<plugin>/<name>` like upstream:
//! emptyDir (disk, or tmpfs for `medium: Memory`, sized by [`memory_empty_dir_size`]), hostPath (with its type
//! checks), configMap, secret, downwardAPI and projected volumes (including bound
//! service-account tokens, refreshed before they expire), and persistentVolumeClaims bound to
//! hostPath or local PersistentVolumes.
//!
//! Content volumes are written the way upstream's `AtomicWriter` does: the files go into a
//! fresh timestamped directory, then the `..data` symlink is swapped to it in one rename, so a
//! container reading the volume sees either the old set or the new one; each top-level name is
//! a symlink through `..data`. That is also how configMap and secret updates reach running
//! containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
    Volume,
};
use kube::Client;
use kube::api::{Api, PostParams};
use parking_lot::Mutex;

use super::env::{self, Sources};

/// Why a volume could not be set up (a `FailedMount` event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub struct MountError {
    /// The volume.
    pub volume: String,
    /// Why.
    pub message: String,
}

/// A volume ready to be mounted into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVolume {
    /// The host path.
    pub path: PathBuf,
    /// Content volumes (configMap, secret, downwardAPI, projected) are always mounted read-only.
    pub read_only: bool,
}

/// Files of a content volume: relative path → (contents, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

fn mode_or(mode: Option<i32>, default: Option<i32>) -> u32 {
    mode.or(default).unwrap_or(0o644) as u32
}

/// Files for `items` of `data` (or every key when `items` is empty). A missing key is an
/// error unless `optional`.
pub fn select(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    describe: &str,
) -> Result<Files, String> {
    let mut files = Files::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                files.insert(k.clone(), (v.clone(), mode_or(None, default_mode)));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        files.insert(
                            item.path.clone(),
                            (v.clone(), mode_or(item.mode, default_mode)),
                        );
                    }
                    None if optional => {}
                    None if describe == "secret" => {
                        return Err(format!("references non-existent secret key: {}", item.key));
                    }
                    None => {
                        return Err(format!(
                            "configmap references non-existent config key: {}",
                            item.key
                        ));
                    }
                }
            }
        }
    }
    Ok(files)
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    data
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Write `files` into `dir` atomically. Returns whether anything changed.
pub fn write_atomic(dir: &Path, files: &Files) -> std::io::Result<bool> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    let current = std::fs::read_link(&data_link).ok().map(|t| dir.join(t));
    if let Some(cur) = &current
        && same_files(cur, files)
    {
        return Ok(false);
    }
    let stamp = format!(
        "..{}.{:08x}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S"),
        rand::random::<u32>()
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    for (rel, (content, mode)) in files {
        let path = fresh.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode & 0o7777))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data_link)?;
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|rel| rel.split('/').next().map(str::to_owned))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != "..data" && name != stamp && entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
            continue;
        }
        if !top.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(true)
}

fn same_files(dir: &Path, files: &Files) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mut count = 0;
    for (rel, (content, mode)) in files {
        let path = dir.join(rel);
        match (std::fs::read(&path), std::fs::metadata(&path)) {
            (Ok(existing), Ok(meta))
                if &existing == content && meta.permissions().mode() & 0o7777 == mode & 0o7777 => {}
            _ => return false,
        }
        count += 1;
    }
    fn count_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count_files(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count == count_files(dir)
}

/// The directory of one volume.
pub fn volume_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

/// What kind of volume a mounted one is, as usage accounting needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeKind {
    /// An emptyDir; `memory` for tmpfs ones.
    EmptyDir {
        /// `medium: Memory`.
        memory: bool,
    },
    /// A configMap volume.
    ConfigMap,
    /// A secret volume.
    Secret,
    /// A downwardAPI volume.
    DownwardApi,
    /// A projected volume.
    Projected,
    /// A hostPath volume (not the pod's: never measured).
    HostPath,
    /// A PersistentVolumeClaim, by claim name.
    Claim(String),
}

impl VolumeKind {
    /// The kind of a pod volume.
    pub fn of(volume: &Volume) -> Option<VolumeKind> {
        if let Some(e) = &volume.empty_dir {
            return Some(VolumeKind::EmptyDir {
                memory: e.medium.as_deref() == Some("Memory"),
            });
        }
        if volume.config_map.is_some() {
            return Some(VolumeKind::ConfigMap);
        }
        if volume.secret.is_some() {
            return Some(VolumeKind::Secret);
        }
        if volume.downward_api.is_some() {
            return Some(VolumeKind::DownwardApi);
        }
        if volume.projected.is_some() {
            return Some(VolumeKind::Projected);
        }
        if volume.host_path.is_some() {
            return Some(VolumeKind::HostPath);
        }
        volume
            .persistent_volume_claim
            .as_ref()
            .map(|c| VolumeKind::Claim(c.claim_name.clone()))
    }

    /// Whether the volume counts toward the pod's local ephemeral storage (upstream
    /// `isVolumeEphemeral`: disk emptyDirs and configMaps).
    pub fn is_ephemeral(&self) -> bool {
        matches!(
            self,
            VolumeKind::EmptyDir { memory: false } | VolumeKind::ConfigMap
        )
    }
}

/// A volume set up for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    /// The volume's name in the pod spec.
    pub name: String,
    /// Where it is on the host.
    pub path: PathBuf,
    /// What it is.
    pub kind: VolumeKind,
}

/// The size of a `medium: Memory` emptyDir's tmpfs (upstream `calculateEmptyDirMemorySize`,
/// SizeMemoryBackedVolumes): the node's allocatable memory, lowered to the pod's memory
/// limit when it has one, lowered to the volume's `sizeLimit` when that is smaller still. A
/// tmpfs that could outgrow what the pod may use would let it take memory nobody accounts.
pub fn memory_empty_dir_size(pod: &Pod, size_limit: Option<i64>, node_allocatable: u64) -> u64 {
    let mut size = node_allocatable;
    if let Some(limit) = pod_memory_limit(pod)
        && limit > 0
        && limit <= size
    {
        size = limit;
    }
    if let Some(limit) = size_limit.and_then(|l| u64::try_from(l).ok())
        && limit > 0
        && limit <= size
    {
        size = limit;
    }
    size
}

/// The pod's memory limit as its cgroup gets it (upstream `ResourceConfigForPod`): the
/// pod-level limit if set; otherwise, only when every container and init container has a
/// memory limit, the larger of the containers' sum (with restartable init containers) and
/// the largest init container, plus the pod overhead.
pub fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    use skiff_api::quantity::Quantity;
    let spec = pod.spec.as_ref()?;
    let limit_of = |r: Option<&k8s_openapi::api::core::v1::ResourceRequirements>| {
        r.and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| Quantity::parse(&q.0).ok())
            .map(|q| q.value().max(0) as u64)
    };
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get("memory"))
        .and_then(|q| Quantity::parse(&q.0).ok())
        .map_or(0, |q| q.value().max(0) as u64);
    if let Some(pod_level) = limit_of(spec.resources.as_ref()) {
        return Some(pod_level + overhead);
    }
    let mut sum = 0u64;
    let mut sidecars = 0u64;
    let mut init_peak = 0u64;
    for c in &spec.containers {
        sum += limit_of(c.resources.as_ref())?;
    }
    for c in spec.init_containers.iter().flatten() {
        let limit = limit_of(c.resources.as_ref())?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars += limit;
            sum += limit;
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(limit + sidecars);
        }
    }
    Some(sum.max(init_peak) + overhead)
}

/// A service-account token the kubelet obtained for a projected volume.
#[derive(Debug, Clone)]
struct Token {
    value: String,
    refresh_at: jiff::Timestamp,
}

/// Sets volumes up and tears them down.
pub struct VolumeManager {
    client: Client,
    pods_dir: PathBuf,
    allocatable_memory: u64,
    tokens: Mutex<BTreeMap<(String, String, String), Token>>,
    mounted: Mutex<BTreeMap<String, Vec<MountedVolume>>>,
}

impl VolumeManager {
    /// A manager writing under `pods_dir`; `allocatable_memory` bounds memory-backed
    /// emptyDirs.
    pub fn new(client: Client, pods_dir: PathBuf, allocatable_memory: u64) -> VolumeManager {
        VolumeManager {
            client,
            pods_dir,
            allocatable_memory,
            tokens: Mutex::new(BTreeMap::new()),
            mounted: Mutex::new(BTreeMap::new()),
        }
    }

    /// The volumes set up for pod `uid` (for usage accounting).
    pub fn mounted(&self, uid: &str) -> Vec<MountedVolume> {
        self.mounted.lock().get(uid).cloned().unwrap_or_default()
    }

    /// The pod's directory.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    /// Set up (or refresh) every volume of `pod`.
    pub async fn prepare(
        &self,
        pod: &Pod,
        sources: &Sources,
    ) -> Result<BTreeMap<String, HostVolume>, MountError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod_dir = self.pod_dir(&uid);
        let mut out = BTreeMap::new();
        let mut mounted = Vec::new();
        for volume in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            let fail = |message: String| MountError {
                volume: volume.name.clone(),
                message,
            };
            let host = self
                .prepare_one(pod, &pod_dir, volume, sources)
                .await
                .map_err(fail)?;
            if let Some(kind) = VolumeKind::of(volume) {
                mounted.push(MountedVolume {
                    name: volume.name.clone(),
                    path: host.path.clone(),
                    kind,
                });
            }
            out.insert(volume.name.clone(), host);
        }
        self.mounted.lock().insert(uid, mounted);
        Ok(out)
    }

    async fn prepare_one(
        &self,
        pod: &Pod,
        pod_dir: &Path,
        volume: &Volume,
        sources: &Sources,
    ) -> Result<HostVolume, String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let io = |e: std::io::Error| e.to_string();
        if let Some(empty) = &volume.empty_dir {
            let dir = volume_dir(pod_dir, "empty-dir", &volume.name);
            std::fs::create_dir_all(&dir).map_err(io)?;
            if empty.medium.as_deref() == Some("Memory") && !is_mount_point(&dir) {
                let size = memory_empty_dir_size(
                    pod,
                    empty
                        .size_limit
                        .as_ref()
                        .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
                        .map(|q| q.value()),
                    self.allocatable_memory,
                );
                nix::mount::mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    Some(format!("mode=0777,size={size}").as_str()),
                )
                .map_err(|e| format!("mounting tmpfs: {e}"))?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(io)?;
            }
            return Ok(HostVolume {
                path: dir,
                read_only: false,
            });
        }
        if let Some(hp) = &volume.host_path {
            let path = PathBuf::from(&hp.path);
            check_host_path(&path, hp.type_.as_deref().unwrap_or(""))?;
            return Ok(HostVolume {
                path,
                read_only: false,
            });
        }
        if let Some(cm_source) = &volume.config_map {
            let name = cm_source.name.as_str();
            let optional = cm_source.optional == Some(true);
            let data = match self.get::<ConfigMap>(namespace, name).await? {
                Some(cm) => config_map_data(&cm),
                None if optional => BTreeMap::new(),
                None => return Err(format!("configmap \"{name}\" not found")),
            };
            let files = select(
                &data,
                cm_source.items.as_ref(),
                cm_source.default_mode,
                optional,
                "configmap",
            )?;
            let dir = volume_dir(pod_dir, "configmap", &volume.name);
            write_atomic(&dir, &files).map_err(io)?;
            return Ok(HostVolume {
                path: dir,
                read_only: true,
            });
        }
        if let Some(s_source) = &volume.secret {
            let name = s_source.secret_name.clone().unwrap_or_default();
            let optional = s_source.optional == Some(true);
            let data = match self.get::<Secret>(namespace, &name).await? {
                Some(s) => secret_data(&s),
                None if optional => BTreeMap::new(),
                None => return Err(format!("secret \"{name}\" not found")),
            };
            let files = select(
                &data,
                s_source.items.as_ref(),
                s_source.default_mode,
                optional,
                "secret",
            )?;
            let dir = volume_dir(pod_dir, "secret", &volume.name);
            write_atomic(&dir, &files).map_err(io)?;
            return Ok(HostVolume {
                path: dir,
                read_only: true,
            });
        }
        if let Some(dapi) = &volume.downward_api {
            let mut files = Files::new();
            for item in dapi.items.iter().flatten() {
                let content = downward_item(
                    pod,
                    item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                    item.resource_field_ref.as_ref(),
                    sources,
                )?;
                files.insert(
                    item.path.clone(),
                    (content.into_bytes(), mode_or(item.mode, dapi.default_mode)),
                );
            }
            let dir = volume_dir(pod_dir, "downward-api", &volume.name);
            write_atomic(&dir, &files).map_err(io)?;
            return Ok(HostVolume {
                path: dir,
                read_only: true,
            });
        }
        if let Some(projected) = &volume.projected {
            let mut files = Files::new();
            for source in projected.sources.iter().flatten() {
                if let Some(cm_source) = &source.config_map {
                    let optional = cm_source.optional == Some(true);
                    match self.get::<ConfigMap>(namespace, &cm_source.name).await? {
                        Some(cm) => files.extend(select(
                            &config_map_data(&cm),
                            cm_source.items.as_ref(),
                            projected.default_mode,
                            optional,
                            "configmap",
                        )?),
                        None if optional => {}
                        None => return Err(format!("configmap \"{}\" not found", cm_source.name)),
                    }
                }
                if let Some(s_source) = &source.secret {
                    let optional = s_source.optional == Some(true);
                    match self.get::<Secret>(namespace, &s_source.name).await? {
                        Some(s) => files.extend(select(
                            &secret_data(&s),
                            s_source.items.as_ref(),
                            projected.default_mode,
                            optional,
                            "secret",
                        )?),
                        None if optional => {}
                        None => return Err(format!("secret \"{}\" not found", s_source.name)),
                    }
                }
                if let Some(d) = &source.downward_api {
                    for item in d.items.iter().flatten() {
                        let content = downward_item(
                            pod,
                            item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                            item.resource_field_ref.as_ref(),
                            sources,
                        )?;
                        files.insert(
                            item.path.clone(),
                            (
                                content.into_bytes(),
                                mode_or(item.mode, projected.default_mode),
                            ),
                        );
                    }
                }
                if let Some(sat) = &source.service_account_token {
                    let token = self
                        .token(
                            pod,
                            sat.audience.as_deref().unwrap_or(""),
                            sat.expiration_seconds.unwrap_or(3600),
                        )
                        .await?;
                    files.insert(
                        sat.path.clone(),
                        (token.into_bytes(), mode_or(None, projected.default_mode)),
                    );
                }
                if source.cluster_trust_bundle.is_some() {
                    return Err("clusterTrustBundle projections are not supported".into());
                }
            }
            let dir = volume_dir(pod_dir, "projected", &volume.name);
            write_atomic(&dir, &files).map_err(io)?;
            return Ok(HostVolume {
                path: dir,
                read_only: true,
            });
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let pvc = self
                .get::<PersistentVolumeClaim>(namespace, &claim.claim_name)
                .await?
                .ok_or_else(|| {
                    format!("persistentvolumeclaim \"{}\" not found", claim.claim_name)
                })?;
            let pv_name = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    format!(
                        "persistentvolumeclaim \"{}\" is not bound",
                        claim.claim_name
                    )
                })?;
            let pv = self
                .get_cluster::<PersistentVolume>(&pv_name)
                .await?
                .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
            let spec = pv.spec.unwrap_or_default();
            let path = if let Some(hp) = spec.host_path {
                let path = PathBuf::from(&hp.path);
                check_host_path(&path, hp.type_.as_deref().unwrap_or("DirectoryOrCreate"))?;
                path
            } else if let Some(local) = spec.local {
                let path = PathBuf::from(local.path);
                if !path.exists() {
                    return Err(format!("path {} does not exist", path.display()));
                }
                path
            } else {
                return Err(format!(
                    "persistentvolume \"{pv_name}\" is not a hostPath or local volume"
                ));
            };
            return Ok(HostVolume {
                path,
                read_only: claim.read_only == Some(true),
            });
        }
        let kind = serde_json::to_value(volume)
            .ok()
            .and_then(|v| {
                v.as_object()
                    .and_then(|o| o.keys().find(|k| *k != "name").cloned())
            })
            .unwrap_or_else(|| "unknown".into());
        Err(format!("volume type {kind} is not supported by this node"))
    }

    async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::<K>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())
    }

    async fn get_cluster<K>(&self, name: &str) -> Result<Option<K>, String>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::<K>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())
    }

    /// A bound service-account token for `pod`, re-requested at 80% of its lifetime.
    async fn token(&self, pod: &Pod, audience: &str, expiration: i64) -> Result<String, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let key = (
            pod.metadata.uid.clone().unwrap_or_default(),
            audience.to_owned(),
            expiration.to_string(),
        );
        if let Some(t) = self.tokens.lock().get(&key)
            && jiff::Timestamp::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if audience.is_empty() {
                    Vec::new()
                } else {
                    vec![audience.to_owned()]
                },
                expiration_seconds: Some(expiration.max(600)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let response: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("failed to fetch token: {e}"))?;
        let status = response.status.ok_or("failed to fetch token: no status")?;
        let lifetime = status
            .expiration_timestamp
            .0
            .duration_since(jiff::Timestamp::now());
        let refresh_at = jiff::Timestamp::now()
            + jiff::SignedDuration::from_secs_f64(lifetime.as_secs_f64() * 0.8);
        self.tokens.lock().insert(
            key,
            Token {
                value: status.token.clone(),
                refresh_at,
            },
        );
        Ok(status.token)
    }

    /// Remove the content of the pod's emptyDirs (unmounting tmpfs ones), as upstream's
    /// teardown of a terminated pod's volumes does: an evicted pod must give back the space
    /// it was evicted for, while its other files stay until the pod is deleted.
    pub fn release_empty_dirs(&self, uid: &str) {
        let dir = self
            .pod_dir(uid)
            .join("volumes")
            .join("kubernetes.io~empty-dir");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for entry in rd.flatten() {
                if is_mount_point(&entry.path()) {
                    let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
                }
                if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(dir = %entry.path().display(), error = %err, "removing an emptyDir failed");
                }
            }
        }
        if let Some(volumes) = self.mounted.lock().get_mut(uid) {
            volumes.retain(|v| !matches!(v.kind, VolumeKind::EmptyDir { .. }));
        }
    }

    /// Tear down the pod's volumes: unmount tmpfs, forget tokens, remove the pod directory.
    pub fn cleanup(&self, uid: &str) {
        let dir = self.pod_dir(uid);
        let empty_dirs = dir.join("volumes").join("kubernetes.io~empty-dir");
        if let Ok(rd) = std::fs::read_dir(&empty_dirs) {
            for entry in rd.flatten() {
                if is_mount_point(&entry.path()) {
                    let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        self.tokens.lock().retain(|(u, _, _), _| u != uid);
        self.mounted.lock().remove(uid);
        if let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %err, "removing the pod directory failed");
        }
    }
}

fn downward_item(
    pod: &Pod,
    field: Option<&str>,
    resource: Option<&k8s_openapi::api::core::v1::ResourceFieldSelector>,
    sources: &Sources,
) -> Result<String, String> {
    if let Some(path) = field {
        return env::pod_field(pod, path, sources);
    }
    if let Some(r) = resource {
        let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
        let name = r.container_name.as_deref().unwrap_or("");
        let container = spec
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("container {name} not found"))?;
        return env::resource_field(
            container,
            &r.resource,
            r.divisor.as_ref().map(|d| d.0.as_str()),
            sources,
        );
    }
    Err("downwardAPI item needs a fieldRef or resourceFieldRef".into())
}

/// Upstream's hostPath type checks (creating when the type says so).
pub fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path);
    let shown = path.display();
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!(
                "hostPath type check failed: {shown} is not a directory"
            )),
            Err(_) => std::fs::create_dir_all(path).map_err(|e| format!("creating {shown}: {e}")),
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {shown} is not a directory"
            )),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(format!("hostPath type check failed: {shown} is not a file")),
            Err(_) => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o644)
                    .open(path)
                    .map(|_| ())
                    .map_err(|e| format!("creating {shown}: {e}"))
            }
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(format!("hostPath type check failed: {shown} is not a file")),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {shown} is not a socket file"
            )),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {shown} is not a character device"
            )),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {shown} is not a block device"
            )),
        },
        other => Err(format!("unknown hostPath type {other}")),
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != meta.dev())
}

/// Decode base64 pull-secret data (`.dockerconfigjson`).
pub fn decode_docker_config(secret: &Secret) -> Option<serde_json::Value> {
    let data = secret.data.as_ref()?;
    let raw = data
        .get(".dockerconfigjson")
        .or_else(|| data.get(".dockercfg"))?;
    serde_json::from_slice(&raw.0).ok().or_else(|| {
        base64::engine::general_purpose::STANDARD
            .decode(&raw.0)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn the_atomic_writer_swaps_data_and_keeps_links() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        assert!(write_atomic(&vol, &files(&[("a", "1"), ("b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_link(vol.join("a")).unwrap(),
            PathBuf::from("..data/a")
        );
        assert!(
            !write_atomic(&vol, &files(&[("a", "1"), ("b", "2")])).unwrap(),
            "unchanged"
        );
        let before = std::fs::read_link(vol.join("..data")).unwrap();
        assert!(write_atomic(&vol, &files(&[("a", "changed")])).unwrap());
        assert_ne!(std::fs::read_link(vol.join("..data")).unwrap(), before);
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "changed");
        assert!(!vol.join("b").exists(), "removed keys disappear");
        let stamps = std::fs::read_dir(&vol)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1, "old generations are removed");
    }

    #[test]
    fn nested_item_paths_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut f = files(&[("conf/app.yaml", "x: 1")]);
        f.get_mut("conf/app.yaml").unwrap().1 = 0o400;
        write_atomic(dir.path(), &f).unwrap();
        let path = dir.path().join("conf/app.yaml");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x: 1");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o400
        );
    }

    #[test]
    fn items_select_keys_and_missing_keys_fail() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("k1".to_owned(), b"v1".to_vec()),
            ("k2".to_owned(), b"v2".to_vec()),
        ]
        .into();
        let items = vec![KeyToPath {
            key: "k2".into(),
            path: "renamed".into(),
            mode: Some(0o600),
        }];
        let f = select(&data, Some(&items), None, false, "configmap").unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f["renamed"], (b"v2".to_vec(), 0o600));
        let missing = vec![KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }];
        assert_eq!(
            select(&data, Some(&missing), None, false, "configmap").unwrap_err(),
            "configmap references non-existent config key: nope"
        );
        assert!(
            select(&data, Some(&missing), None, true, "configmap")
                .unwrap()
                .is_empty()
        );
        let all = select(&data, None, Some(0o640), false, "configmap").unwrap();
        assert_eq!(all["k1"].1, 0o640);
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "p" }, "spec": spec }))
            .unwrap()
    }

    #[test]
    fn a_pod_memory_limit_needs_every_container_limited() {
        let limited = |m: &str| serde_json::json!({ "resources": { "limits": { "memory": m } } });
        let with = |containers: serde_json::Value, init: serde_json::Value| {
            pod(serde_json::json!({ "containers": containers, "initContainers": init }))
        };
        let mut a = limited("64Mi");
        a["name"] = "a".into();
        let mut b = limited("32Mi");
        b["name"] = "b".into();
        assert_eq!(
            pod_memory_limit(&with(serde_json::json!([a, b]), serde_json::json!([]))),
            Some(96 << 20)
        );
        let mut big_init = limited("128Mi");
        big_init["name"] = "init".into();
        assert_eq!(
            pod_memory_limit(&with(serde_json::json!([a]), serde_json::json!([big_init]))),
            Some(128 << 20),
            "the largest init container when larger"
        );
        assert_eq!(
            pod_memory_limit(&with(
                serde_json::json!([a, { "name": "free" }]),
                serde_json::json!([])
            )),
            None,
            "one container without a limit leaves the pod unlimited"
        );
        let pod_level = pod(serde_json::json!({
            "resources": { "limits": { "memory": "256Mi" } },
            "containers": [{ "name": "free" }],
        }));
        assert_eq!(pod_memory_limit(&pod_level), Some(256 << 20));
    }

    #[test]
    fn memory_empty_dirs_take_the_smallest_bound() {
        let unlimited = pod(serde_json::json!({ "containers": [{ "name": "c" }] }));
        let limited = pod(serde_json::json!({ "containers": [
            { "name": "c", "resources": { "limits": { "memory": "64Mi" } } },
        ] }));
        let node = 8u64 << 30;
        assert_eq!(memory_empty_dir_size(&unlimited, None, node), node);
        assert_eq!(memory_empty_dir_size(&limited, None, node), 64 << 20);
        assert_eq!(
            memory_empty_dir_size(&limited, Some(16 << 20), node),
            16 << 20
        );
        assert_eq!(
            memory_empty_dir_size(&limited, Some(1 << 30), node),
            64 << 20,
            "a sizeLimit above what the pod may use is lowered"
        );
        assert_eq!(memory_empty_dir_size(&unlimited, Some(0), node), node);
    }

    #[test]
    fn volume_kinds_and_what_counts_as_ephemeral() {
        let v = |json: serde_json::Value| -> Volume { serde_json::from_value(json).unwrap() };
        let disk = VolumeKind::of(&v(serde_json::json!({ "name": "a", "emptyDir": {} }))).unwrap();
        assert_eq!(disk, VolumeKind::EmptyDir { memory: false });
        assert!(disk.is_ephemeral());
        let memory = VolumeKind::of(&v(
            serde_json::json!({ "name": "a", "emptyDir": { "medium": "Memory" } }),
        ))
        .unwrap();
        assert!(!memory.is_ephemeral(), "tmpfs is memory, not disk");
        let cm = VolumeKind::of(&v(
            serde_json::json!({ "name": "a", "configMap": { "name": "x" } }),
        ))
        .unwrap();
        assert!(cm.is_ephemeral());
        let claim = VolumeKind::of(&v(
            serde_json::json!({ "name": "a", "persistentVolumeClaim": { "claimName": "data" } }),
        ))
        .unwrap();
        assert_eq!(claim, VolumeKind::Claim("data".into()));
        assert!(!claim.is_ephemeral());
    }

    #[test]
    fn host_path_types_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let new_dir = dir.path().join("made");
        check_host_path(&new_dir, "DirectoryOrCreate").unwrap();
        assert!(new_dir.is_dir());
        check_host_path(&new_dir, "Directory").unwrap();
        assert!(check_host_path(&new_dir, "File").is_err());
        let file = dir.path().join("f");
        check_host_path(&file, "FileOrCreate").unwrap();
        assert!(file.is_file());
        assert!(check_host_path(&dir.path().join("absent"), "Directory").is_err());
        assert!(
            check_host_path(&file, "Socket")
                .unwrap_err()
                .contains("not a socket")
        );
    }
}
