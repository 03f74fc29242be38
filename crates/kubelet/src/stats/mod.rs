//! Node and pod resource usage: the `/stats/summary` document ([`summary`]), the
//! `/metrics/resource` series ([`metrics`]), and the figures local-storage eviction judges.
//!
//! The [`Provider`] gathers from three places. The CRI (`ListContainerStats`,
//! `ListPodSandboxStats`, `ImageFsInfo`) comes first, as upstream's CRI stats provider
//! reads it; cgroup files ([`cgroup`]) fill in what the runtime leaves out (containerd 1.6
//! reports a container's working set but not its usage, RSS or page faults, and has no pod
//! sandbox stats), and give the node's own figures; the filesystem ([`disk`]) gives volume
//! and log usage.
//!
//! CPU and memory are read fresh on every request (a CRI list and a few small files).
//! Disk usage means walking directories, so [`Provider::housekeeping`] measures it every
//! housekeeping period and requests read the cached figures, as upstream's
//! `fsResourceAnalyzer` caches volume stats. CPU rates come from successive samples
//! ([`rate`]).

pub mod cgroup;
pub mod disk;
pub mod metrics;
pub mod network;
pub mod rate;
pub mod summary;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;
use skiff_cri::{Code, Cri, api};

use crate::pod::observed::labels;
use crate::pod::volumes::{MountedVolume, VolumeKind};
use cgroup::{Cgroups, Memory};
use disk::{Filesystem, Usage};
use rate::Rates;
use summary::{
    ContainerStats, CpuStats, FsStats, MemoryStats, NodeStats, PodReference, PodStats,
    ProcessStats, PvcReference, RlimitStats, RuntimeStats, Summary, VolumeStats, time,
};

/// Why stats could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CRI call failed.
    #[error("reading {what} from the container runtime failed")]
    Runtime {
        /// What was being read.
        what: &'static str,
        /// The cause.
        #[source]
        source: skiff_cri::Error,
    },
}

/// Where the provider learns which pods run here and what their volumes are.
pub trait PodSource: Send + Sync {
    /// The pods admitted to this node (API and static pods).
    fn pods(&self) -> Vec<Arc<Pod>>;
    /// The volumes set up for pod `uid`.
    fn volumes(&self, uid: &str) -> Vec<MountedVolume>;
}

/// Where the node's files are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The kubelet's root directory (its filesystem is the node filesystem).
    pub root_dir: PathBuf,
    /// Per-pod directories (`<uid>/etc-hosts`).
    pub pods_dir: PathBuf,
    /// Container logs, `<ns>_<pod>_<uid>/<container>/`.
    pub logs_dir: PathBuf,
    /// The cgroup filesystem (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
}

/// Disk usage of one pod, measured by housekeeping.
#[derive(Debug, Clone, Default)]
struct PodDisk {
    at: i64,
    volumes: Vec<(MountedVolume, Usage, Option<Filesystem>)>,
    logs: BTreeMap<String, Usage>,
    etc_hosts: Usage,
}

/// Gathers node and pod stats.
pub struct Provider {
    cri: Cri,
    cgroups: Cgroups,
    node_name: String,
    paths: Paths,
    memory_capacity: u64,
    boot_time: i64,
    pods: Arc<dyn PodSource>,
    disk: Mutex<HashMap<String, PodDisk>>,
    rates: Mutex<Rates>,
}

fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Boot time from `/proc/stat` (`btime`, seconds), in nanoseconds.
fn boot_time() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(0, |s| s * 1_000_000_000)
}

/// Filesystem stats of `used` on filesystem `fs`.
pub fn fs_stats(fs: Option<&Filesystem>, used: Option<Usage>, at: &str) -> FsStats {
    FsStats {
        time: at.to_owned(),
        available_bytes: fs.map(|f| f.available),
        capacity_bytes: fs.map(|f| f.capacity),
        used_bytes: used.map(|u| u.bytes),
        inodes_free: fs.map(|f| f.inodes_free),
        inodes: fs.map(|f| f.inodes),
        inodes_used: used.map(|u| u.inodes),
    }
}

fn value(v: &Option<api::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

/// Memory stats preferring the runtime's figures and filling gaps from the cgroup;
/// available = limit − working set when there is a limit (`limit` stands in when the
/// cgroup has none, e.g. the machine's memory for the node).
pub fn memory_stats(
    cri: Option<&api::MemoryUsage>,
    cgroup: Option<Memory>,
    limit: Option<u64>,
    at: &str,
) -> Option<MemoryStats> {
    if cri.is_none() && cgroup.is_none() {
        return None;
    }
    let pick = |from_cri: Option<u64>, from_cgroup: Option<u64>| from_cri.or(from_cgroup);
    let working_set = pick(
        cri.and_then(|m| value(&m.working_set_bytes)),
        cgroup.map(|m| m.working_set),
    );
    // containerd reports 0 available bytes for a container without a limit, where upstream
    // leaves the figure out: compute it from the limit when there is one.
    let limit = cgroup.and_then(|m| m.limit).or(limit);
    let available = match (limit, working_set) {
        (Some(limit), Some(ws)) => Some(limit.saturating_sub(ws)),
        _ => cri
            .and_then(|m| value(&m.available_bytes))
            .filter(|a| *a > 0),
    };
    Some(MemoryStats {
        time: at.to_owned(),
        available_bytes: available,
        usage_bytes: pick(
            cri.and_then(|m| value(&m.usage_bytes)),
            cgroup.map(|m| m.usage),
        ),
        working_set_bytes: working_set,
        rss_bytes: pick(cri.and_then(|m| value(&m.rss_bytes)), cgroup.map(|m| m.rss)),
        page_faults: pick(
            cri.and_then(|m| value(&m.page_faults)),
            cgroup.map(|m| m.page_faults),
        ),
        major_page_faults: pick(
            cri.and_then(|m| value(&m.major_page_faults)),
            cgroup.map(|m| m.major_page_faults),
        ),
    })
}

/// Local ephemeral storage of a pod (upstream `calcEphemeralStorage`): its containers'
/// writable layers and logs, its ephemeral volumes and its hosts file, on the node
/// filesystem.
pub fn ephemeral_storage(
    containers: &[ContainerStats],
    volumes: &[VolumeStats],
    ephemeral: &HashSet<String>,
    etc_hosts: Usage,
    fs: Option<&Filesystem>,
    at: &str,
) -> FsStats {
    let mut used = etc_hosts;
    let add = |used: &mut Usage, s: Option<&FsStats>| {
        if let Some(s) = s {
            used.bytes += s.used_bytes.unwrap_or(0);
            used.inodes += s.inodes_used.unwrap_or(0);
        }
    };
    for c in containers {
        add(&mut used, c.rootfs.as_ref());
        add(&mut used, c.logs.as_ref());
    }
    for v in volumes.iter().filter(|v| ephemeral.contains(&v.name)) {
        add(&mut used, Some(&v.fs));
    }
    fs_stats(fs, Some(used), at)
}

impl Provider {
    /// A provider reading `cri`, the cgroups and the files under `paths`.
    pub fn new(
        cri: Cri,
        node_name: String,
        paths: Paths,
        memory_capacity: u64,
        pods: Arc<dyn PodSource>,
    ) -> Provider {
        Provider {
            cri,
            cgroups: Cgroups::at(&paths.cgroup_root),
            node_name,
            paths,
            memory_capacity,
            boot_time: boot_time(),
            pods,
            disk: Mutex::new(HashMap::new()),
            rates: Mutex::new(Rates::default()),
        }
    }

    /// The pods this node runs (what eviction judges).
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.pods()
    }

    fn log_dir(&self, pod: &Pod) -> PathBuf {
        self.paths.logs_dir.join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or(""),
            pod.metadata.uid.as_deref().unwrap_or("")
        ))
    }

    /// Measure what needs a directory walk: every pod's volumes, container logs and hosts
    /// file. Runs on a blocking thread; called every housekeeping period.
    pub async fn housekeeping(&self) {
        let pods = self.pods.pods();
        let jobs: Vec<(String, Vec<MountedVolume>, PathBuf, PathBuf)> = pods
            .iter()
            .filter_map(|p| {
                let uid = p.metadata.uid.clone()?;
                Some((
                    uid.clone(),
                    self.pods.volumes(&uid),
                    self.log_dir(p),
                    self.paths.pods_dir.join(&uid).join("etc-hosts"),
                ))
            })
            .collect();
        let measured = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|(uid, volumes, log_dir, etc_hosts)| {
                    let volumes = volumes
                        .into_iter()
                        .filter(|v| v.kind != VolumeKind::HostPath)
                        .map(|v| {
                            let used = disk::usage(&v.path);
                            let fs = disk::filesystem(&v.path);
                            (v, used, fs)
                        })
                        .collect();
                    let logs = std::fs::read_dir(&log_dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| {
                            (
                                e.file_name().to_string_lossy().into_owned(),
                                disk::usage(&e.path()),
                            )
                        })
                        .collect();
                    (
                        uid,
                        PodDisk {
                            at: now_nanos(),
                            volumes,
                            logs,
                            etc_hosts: disk::usage(&etc_hosts),
                        },
                    )
                })
                .collect::<HashMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        *self.disk.lock() = measured;
    }

    fn cpu_stats(
        &self,
        key: &str,
        cri: Option<&api::CpuUsage>,
        cgroup_ns: Option<u64>,
        now: i64,
        at: &str,
    ) -> Option<CpuStats> {
        let usage = cri
            .and_then(|c| value(&c.usage_core_nano_seconds))
            .or(cgroup_ns)?;
        let measured_at = cri.map(|c| c.timestamp).filter(|t| *t > 0).unwrap_or(now);
        let rate = self.rates.lock().observe(key, measured_at, usage);
        Some(CpuStats {
            time: at.to_owned(),
            usage_nano_cores: cri.and_then(|c| value(&c.usage_nano_cores)).or(rate),
            usage_core_nano_seconds: Some(usage),
        })
    }

    async fn node_stats(&self, now: i64, at: &str) -> NodeStats {
        let root = self.cgroups.sample("/");
        let cpu_ns = root.cpu_usage_ns.or_else(|| {
            cgroup::cpu_proc_stat(
                &std::fs::read_to_string("/proc/stat").unwrap_or_default(),
                100,
            )
        });
        let memory = root.memory.or_else(|| {
            cgroup::memory_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
        });
        let fs = disk::filesystem(&self.paths.root_dir);
        let image_fs = match self
            .cri
            .image_fs_info(api::ImageFsInfoRequest::default())
            .await
        {
            Ok(info) => info.image_filesystems.into_iter().next().map(|f| {
                let mount = f.fs_id.map(|i| i.mountpoint).unwrap_or_default();
                let on = disk::filesystem(std::path::Path::new(&mount));
                fs_stats(
                    on.as_ref(),
                    Some(Usage {
                        bytes: value(&f.used_bytes).unwrap_or(0),
                        inodes: value(&f.inodes_used).unwrap_or(0),
                    }),
                    at,
                )
            }),
            Err(e) => {
                tracing::debug!(error = %e, "ImageFsInfo failed");
                None
            }
        };
        let (procs, pid_max) = crate::sysinfo::pids();
        let pods_cgroup = self.cgroups.sample("/kubepods");
        let system_containers = if pods_cgroup.cpu_usage_ns.is_some() {
            vec![ContainerStats {
                name: "pods".into(),
                start_time: time(self.boot_time),
                cpu: self.cpu_stats("system/pods", None, pods_cgroup.cpu_usage_ns, now, at),
                memory: memory_stats(None, pods_cgroup.memory, Some(self.memory_capacity), at),
                ..Default::default()
            }]
        } else {
            Vec::new()
        };
        NodeStats {
            node_name: self.node_name.clone(),
            system_containers,
            start_time: time(self.boot_time),
            cpu: self.cpu_stats("node", None, cpu_ns, now, at),
            // The node's available memory is its capacity minus the working set, whatever
            // limit the root cgroup shows.
            memory: memory_stats(
                None,
                memory.map(|m| Memory { limit: None, ..m }),
                Some(self.memory_capacity),
                at,
            ),
            network: network::network_stats(network::read(None), at.to_owned()),
            fs: fs.map(|f| {
                fs_stats(
                    Some(&f),
                    Some(Usage {
                        bytes: f.capacity.saturating_sub(f.free),
                        inodes: f.inodes.saturating_sub(f.inodes_free),
                    }),
                    at,
                )
            }),
            runtime: Some(RuntimeStats { image_fs }),
            rlimit: Some(RlimitStats {
                time: at.to_owned(),
                maxpid: Some(pid_max as i64),
                curproc: Some(procs as i64),
            }),
        }
    }

    /// The runtime's stats of `containers`. A list call fails as a whole when one container
    /// is in a state the runtime cannot measure (just exited, say): then each is asked
    /// alone, and those that still fail are measured from their cgroups.
    async fn container_stats(
        &self,
        containers: &[api::Container],
    ) -> HashMap<String, api::ContainerStats> {
        let by_id = |stats: Vec<api::ContainerStats>| {
            stats
                .into_iter()
                .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
                .collect()
        };
        match self
            .cri
            .list_container_stats(api::ListContainerStatsRequest::default())
            .await
        {
            Ok(r) => by_id(r.stats),
            Err(e) => {
                tracing::debug!(error = %e, "ListContainerStats failed; asking container by container");
                let mut stats = Vec::new();
                for c in containers {
                    if let Ok(r) = self
                        .cri
                        .container_stats(api::ContainerStatsRequest {
                            container_id: c.id.clone(),
                        })
                        .await
                    {
                        stats.extend(r.stats);
                    }
                }
                by_id(stats)
            }
        }
    }

    /// The runtime's stats of `sandboxes`, as [`Provider::container_stats`] does for
    /// containers. Runtimes without the calls (`Unimplemented`) leave it to the cgroups.
    async fn sandbox_stats(
        &self,
        sandboxes: &[api::PodSandbox],
    ) -> HashMap<String, api::PodSandboxStats> {
        let by_id = |stats: Vec<api::PodSandboxStats>| {
            stats
                .into_iter()
                .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
                .collect()
        };
        let request = match sandboxes {
            [one] => api::ListPodSandboxStatsRequest {
                filter: Some(api::PodSandboxStatsFilter {
                    id: one.id.clone(),
                    ..Default::default()
                }),
            },
            _ => api::ListPodSandboxStatsRequest::default(),
        };
        match self.cri.list_pod_sandbox_stats(request).await {
            Ok(r) => by_id(r.stats),
            Err(e) if matches!(e.code(), Code::Unimplemented) => HashMap::new(),
            Err(e) => {
                tracing::debug!(error = %e, "ListPodSandboxStats failed; asking sandbox by sandbox");
                let mut stats = Vec::new();
                for s in sandboxes {
                    if let Ok(r) = self
                        .cri
                        .pod_sandbox_stats(api::PodSandboxStatsRequest {
                            pod_sandbox_id: s.id.clone(),
                        })
                        .await
                    {
                        stats.extend(r.stats);
                    }
                }
                by_id(stats)
            }
        }
    }

    /// The summary: the node, and every pod with a ready sandbox.
    pub async fn summary(&self) -> Result<Summary, Error> {
        let now = now_nanos();
        let at = time(now);
        let runtime = |what| move |source| Error::Runtime { what, source };
        let sandboxes = self
            .cri
            .ready_sandboxes()
            .await
            .map_err(runtime("pod sandboxes"))?;
        let containers = self
            .cri
            .running_containers()
            .await
            .map_err(runtime("containers"))?;
        let container_stats = self.container_stats(&containers).await;
        // The newest ready sandbox of each pod, with the pod's cgroup.
        let mut newest: BTreeMap<String, &api::PodSandbox> = BTreeMap::new();
        for s in &sandboxes {
            let uid = s
                .labels
                .get(labels::POD_UID)
                .cloned()
                .or_else(|| s.metadata.as_ref().map(|m| m.uid.clone()))
                .unwrap_or_default();
            if newest.get(&uid).is_none_or(|o| o.created_at < s.created_at) {
                newest.insert(uid, s);
            }
        }
        let pod_cgroups: HashMap<String, Option<String>> = newest
            .keys()
            .map(|uid| (uid.clone(), self.cgroups.pod_cgroup(uid)))
            .collect();
        // Pod-level figures come from the pod cgroup, as upstream's default (cAdvisor)
        // provider reads them: containerd answers ListPodSandboxStats with a shim round
        // trip per sandbox (about a second at 100 pods). The runtime is asked only about
        // pods whose cgroup is not where the kubelet put it (another cgroup driver).
        let unplaced: Vec<api::PodSandbox> = newest
            .iter()
            .filter(|(uid, _)| pod_cgroups.get(*uid).is_some_and(Option::is_none))
            .map(|(_, s)| (*s).clone())
            .collect();
        let sandbox_stats = if unplaced.is_empty() {
            HashMap::new()
        } else {
            self.sandbox_stats(&unplaced).await
        };
        let node = self.node_stats(now, &at).await;
        let root_fs = disk::filesystem(&self.paths.root_dir);
        let image_fs = node
            .runtime
            .as_ref()
            .and_then(|r| r.image_fs.as_ref())
            .map(|f| Filesystem {
                capacity: f.capacity_bytes.unwrap_or(0),
                available: f.available_bytes.unwrap_or(0),
                free: f.available_bytes.unwrap_or(0),
                inodes: f.inodes.unwrap_or(0),
                inodes_free: f.inodes_free.unwrap_or(0),
            });
        let disk = self.disk.lock().clone();
        let mut live: HashSet<String> = ["node".to_owned(), "system/pods".to_owned()].into();
        let mut pods = Vec::new();
        for (uid, sandbox) in newest {
            let meta = sandbox.metadata.clone().unwrap_or_default();
            let pod_cgroup = pod_cgroups.get(&uid).cloned().flatten();
            let sandbox_stats = sandbox_stats
                .get(&sandbox.id)
                .and_then(|s| s.linux.as_ref());
            let pod_disk = disk.get(&uid);
            let mut stats = Vec::new();
            for c in containers.iter().filter(|c| c.pod_sandbox_id == sandbox.id) {
                let name = c
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                let cri = container_stats.get(&c.id);
                let cg = pod_cgroup
                    .as_ref()
                    .map(|p| self.cgroups.sample(&format!("{p}/{}", c.id)))
                    .unwrap_or_default();
                let key = format!("container/{}", c.id);
                live.insert(key.clone());
                let rootfs = cri.and_then(|s| s.writable_layer.as_ref()).map(|w| {
                    fs_stats(
                        image_fs.as_ref(),
                        Some(Usage {
                            bytes: value(&w.used_bytes).unwrap_or(0),
                            inodes: value(&w.inodes_used).unwrap_or(0),
                        }),
                        &at,
                    )
                });
                let logs = pod_disk.map(|d| {
                    fs_stats(
                        root_fs.as_ref(),
                        Some(d.logs.get(&name).copied().unwrap_or_default()),
                        &time(d.at),
                    )
                });
                stats.push(ContainerStats {
                    start_time: time(c.created_at),
                    cpu: self.cpu_stats(
                        &key,
                        cri.and_then(|s| s.cpu.as_ref()),
                        cg.cpu_usage_ns,
                        now,
                        &at,
                    ),
                    memory: memory_stats(cri.and_then(|s| s.memory.as_ref()), cg.memory, None, &at),
                    rootfs,
                    logs,
                    name,
                });
            }
            stats.sort_by(|a, b| a.name.cmp(&b.name));
            let cg = pod_cgroup
                .as_ref()
                .map(|p| self.cgroups.sample(p))
                .unwrap_or_default();
            let pod_key = format!("pod/{uid}");
            live.insert(pod_key.clone());
            let network = match sandbox_stats.and_then(|s| s.network.as_ref()) {
                Some(n) => {
                    let by_name: BTreeMap<String, summary::InterfaceStats> = n
                        .default_interface
                        .iter()
                        .chain(&n.interfaces)
                        .map(|i| (i.name.clone(), interface(i)))
                        .collect();
                    network::network_stats(by_name.into_values().collect(), at.clone())
                }
                None => pod_cgroup
                    .as_ref()
                    .and_then(|p| {
                        self.cgroups
                            .procs(&format!("{p}/{}", sandbox.id))
                            .first()
                            .copied()
                    })
                    .and_then(|pid| network::network_stats(network::read(Some(pid)), at.clone())),
            };
            let mut volume_stats = Vec::new();
            let mut ephemeral = HashSet::new();
            if let Some(d) = pod_disk {
                for (v, used, fs) in &d.volumes {
                    if v.kind.is_ephemeral() {
                        ephemeral.insert(v.name.clone());
                    }
                    volume_stats.push(VolumeStats {
                        fs: fs_stats(fs.as_ref(), Some(*used), &time(d.at)),
                        name: v.name.clone(),
                        pvc_ref: match &v.kind {
                            VolumeKind::Claim(claim) => Some(PvcReference {
                                name: claim.clone(),
                                namespace: meta.namespace.clone(),
                            }),
                            _ => None,
                        },
                    });
                }
            }
            let ephemeral_storage = pod_disk.map(|d| {
                ephemeral_storage(
                    &stats,
                    &volume_stats,
                    &ephemeral,
                    d.etc_hosts,
                    root_fs.as_ref(),
                    &at,
                )
            });
            let process_count = sandbox_stats
                .and_then(|s| s.process.as_ref())
                .and_then(|p| value(&p.process_count))
                .or(cg.pids);
            pods.push(PodStats {
                pod_ref: PodReference {
                    name: meta.name.clone(),
                    namespace: meta.namespace.clone(),
                    uid: uid.clone(),
                },
                start_time: time(sandbox.created_at),
                containers: stats,
                cpu: self.cpu_stats(
                    &pod_key,
                    sandbox_stats.and_then(|s| s.cpu.as_ref()),
                    cg.cpu_usage_ns,
                    now,
                    &at,
                ),
                memory: memory_stats(
                    sandbox_stats.and_then(|s| s.memory.as_ref()),
                    cg.memory,
                    None,
                    &at,
                ),
                network,
                volume_stats,
                ephemeral_storage,
                process_stats: process_count.map(|n| ProcessStats {
                    process_count: Some(n),
                }),
            });
        }
        self.rates.lock().retain(&live);
        Ok(Summary { node, pods })
    }
}

fn interface(i: &api::NetworkInterfaceUsage) -> summary::InterfaceStats {
    summary::InterfaceStats {
        name: i.name.clone(),
        rx_bytes: value(&i.rx_bytes),
        rx_errors: value(&i.rx_errors),
        tx_bytes: value(&i.tx_bytes),
        tx_errors: value(&i.tx_errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(v: u64) -> Option<api::UInt64Value> {
        Some(api::UInt64Value { value: v })
    }

    #[test]
    fn runtime_figures_win_and_cgroups_fill_the_gaps() {
        // containerd 1.6: only the working set.
        let cri = api::MemoryUsage {
            timestamp: 1,
            working_set_bytes: u(900),
            ..Default::default()
        };
        let cg = Memory {
            usage: 2000,
            working_set: 1000,
            rss: 700,
            page_faults: 5,
            major_page_faults: 1,
            limit: Some(4096),
        };
        let m = memory_stats(Some(&cri), Some(cg), None, "T").unwrap();
        assert_eq!(m.working_set_bytes, Some(900));
        assert_eq!(m.usage_bytes, Some(2000));
        assert_eq!(m.rss_bytes, Some(700));
        assert_eq!(m.page_faults, Some(5));
        assert_eq!(m.available_bytes, Some(4096 - 900));
        let unlimited = memory_stats(None, Some(Memory { limit: None, ..cg }), None, "T").unwrap();
        assert_eq!(
            unlimited.available_bytes, None,
            "no limit, no availableBytes"
        );
        let node = memory_stats(None, Some(cg), Some(10_000), "T").unwrap();
        assert_eq!(
            node.available_bytes,
            Some(4096 - 1000),
            "the cgroup's limit first"
        );
        assert!(memory_stats(None, None, Some(1), "T").is_none());
    }

    #[test]
    fn ephemeral_storage_sums_layers_logs_ephemeral_volumes_and_hosts() {
        let fs = |used: u64, inodes: u64| FsStats {
            used_bytes: Some(used),
            inodes_used: Some(inodes),
            ..Default::default()
        };
        let containers = vec![
            ContainerStats {
                name: "a".into(),
                rootfs: Some(fs(100, 1)),
                logs: Some(fs(10, 1)),
                ..Default::default()
            },
            ContainerStats {
                name: "b".into(),
                rootfs: Some(fs(200, 2)),
                logs: None,
                ..Default::default()
            },
        ];
        let volumes = vec![
            VolumeStats {
                fs: fs(1000, 3),
                name: "scratch".into(),
                pvc_ref: None,
            },
            VolumeStats {
                fs: fs(5000, 4),
                name: "claim".into(),
                pvc_ref: None,
            },
        ];
        let ephemeral = HashSet::from(["scratch".to_owned()]);
        let total = ephemeral_storage(
            &containers,
            &volumes,
            &ephemeral,
            Usage {
                bytes: 4,
                inodes: 1,
            },
            Some(&Filesystem {
                capacity: 1 << 30,
                available: 1 << 29,
                free: 1 << 29,
                inodes: 100,
                inodes_free: 50,
            }),
            "T",
        );
        assert_eq!(total.used_bytes, Some(100 + 10 + 200 + 1000 + 4));
        assert_eq!(total.inodes_used, Some(1 + 1 + 2 + 3 + 1));
        assert_eq!(total.capacity_bytes, Some(1 << 30));
        assert_eq!(total.inodes_free, Some(50));
    }
}
