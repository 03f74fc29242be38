//! The kubelet's `/stats/summary` document: upstream's `stats/v1alpha1` `Summary` with the
//! same JSON field names (`k8s.io/kubelet/pkg/apis/stats/v1alpha1/types.go`), so metrics-server,
//! `kubectl top` style tools and scripts written against upstream kubelets read it unchanged.
//!
//! Optional figures are `Option`s and are left out of the JSON when unknown, as upstream's
//! pointer fields are. Times are RFC 3339 with second precision (`metav1.Time`).

use serde::{Deserialize, Serialize};

/// A `metav1.Time` rendering of nanoseconds since the epoch.
pub fn time(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(nanos as i128)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Node and pod stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The node as a whole.
    pub node: NodeStats,
    /// Every pod with a running sandbox.
    pub pods: Vec<PodStats>,
}

/// Node-level stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// Raw cgroups the kubelet tracks (upstream's `pods`, `kubelet`, `runtime`, `misc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_containers: Vec<ContainerStats>,
    /// When collection for the node started (its boot).
    pub start_time: String,
    /// CPU of the whole machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory of the whole machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The node's network interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// The filesystem holding the kubelet's root directory (pods, logs, volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    /// The container runtime's image filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
    /// Process limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
}

/// Process ids of the OS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RlimitStats {
    /// When measured.
    pub time: String,
    /// `/proc/sys/kernel/pid_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxpid: Option<i64>,
    /// Processes running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curproc: Option<i64>,
}

/// The container runtime's filesystems.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    /// Where images live; `usedBytes` counts only the images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
}

/// Process count of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// Processes in the pod's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_count: Option<u64>,
}

/// Pod-level stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// When its sandbox was created.
    pub start_time: String,
    /// Its running containers.
    pub containers: Vec<ContainerStats>,
    /// The pod cgroup's CPU (containers and the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// The pod cgroup's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The pod network namespace's interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// Usage of each volume that can be measured.
    #[serde(rename = "volume", default, skip_serializing_if = "Vec::is_empty")]
    pub volume_stats: Vec<VolumeStats>,
    /// Local ephemeral storage: writable layers, logs, disk emptyDirs and configMaps, the
    /// hosts file.
    #[serde(
        rename = "ephemeral-storage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ephemeral_storage: Option<FsStats>,
    /// Processes (upstream spells this one in snake case).
    #[serde(
        rename = "process_stats",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub process_stats: Option<ProcessStats>,
}

/// Container-level stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name in the pod spec (or a system container's name).
    pub name: String,
    /// When the container was created.
    pub start_time: String,
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// The writable layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    /// The container's log files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
}

/// Identifies a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// One network interface's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    /// Receive errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    /// Bytes sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// Transmit errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

/// Network counters: the default interface inline, and every interface listed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStats {
    /// When measured.
    pub time: String,
    /// The default interface (`eth0`), inline as upstream embeds it.
    #[serde(flatten)]
    pub default: InterfaceStats,
    /// Every interface but loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStats>,
}

/// CPU usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When measured.
    pub time: String,
    /// Usage averaged over the last sample window, in nanocores (1e9 = one core busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative CPU time, nanoseconds summed over cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When measured.
    pub time: String,
    /// Limit (or the machine's memory) minus the working set; absent without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// All memory charged, page cache included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Usage minus inactive file pages: what the OOM killer and evictions look at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous and swap cache memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Cumulative minor page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// Cumulative major page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// A volume's usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    /// The usage, inline.
    #[serde(flatten)]
    pub fs: FsStats,
    /// The volume's name in the pod spec.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The claim, for volumes of a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_ref: Option<PvcReference>,
}

/// Identifies a claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvcReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// Filesystem usage: what one consumer uses, and the filesystem it is on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When measured.
    pub time: String,
    /// Free bytes for unprivileged users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Size of the filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Bytes this consumer uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Free inodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// Inodes of the filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// Inodes this consumer uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_uses_upstream_field_names() {
        let summary = Summary {
            node: NodeStats {
                node_name: "n1".into(),
                start_time: time(0),
                cpu: Some(CpuStats {
                    time: time(1_700_000_000_000_000_000),
                    usage_nano_cores: Some(5),
                    usage_core_nano_seconds: Some(7),
                }),
                network: Some(NetworkStats {
                    time: time(0),
                    default: InterfaceStats {
                        name: "eth0".into(),
                        rx_bytes: Some(1),
                        ..Default::default()
                    },
                    interfaces: Vec::new(),
                }),
                runtime: Some(RuntimeStats {
                    image_fs: Some(FsStats::default()),
                }),
                rlimit: Some(RlimitStats {
                    time: time(0),
                    maxpid: Some(10),
                    curproc: Some(2),
                }),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                volume_stats: vec![VolumeStats {
                    fs: FsStats {
                        used_bytes: Some(3),
                        ..Default::default()
                    },
                    name: "data".into(),
                    pvc_ref: Some(PvcReference {
                        name: "c".into(),
                        namespace: "ns".into(),
                    }),
                }],
                ephemeral_storage: Some(FsStats::default()),
                process_stats: Some(ProcessStats {
                    process_count: Some(1),
                }),
                ..Default::default()
            }],
        };
        let v = serde_json::to_value(&summary).unwrap();
        assert_eq!(v["node"]["nodeName"], "n1");
        assert_eq!(v["node"]["startTime"], "1970-01-01T00:00:00Z");
        assert_eq!(
            v["node"]["cpu"],
            json!({ "time": "2023-11-14T22:13:20Z", "usageNanoCores": 5, "usageCoreNanoSeconds": 7 })
        );
        assert_eq!(v["node"]["network"]["name"], "eth0");
        assert_eq!(v["node"]["network"]["rxBytes"], 1);
        assert!(v["node"]["runtime"]["imageFs"].is_object());
        assert_eq!(v["node"]["rlimit"]["maxpid"], 10);
        assert_eq!(v["node"]["rlimit"]["curproc"], 2);
        assert!(
            v["node"].get("memory").is_none(),
            "unknown figures are left out"
        );
        let pod = &v["pods"][0];
        assert_eq!(
            pod["podRef"],
            json!({ "name": "p", "namespace": "ns", "uid": "u" })
        );
        assert_eq!(pod["volume"][0]["name"], "data");
        assert_eq!(pod["volume"][0]["usedBytes"], 3);
        assert_eq!(
            pod["volume"][0]["pvcRef"],
            json!({ "name": "c", "namespace": "ns" })
        );
        assert!(pod["ephemeral-storage"].is_object());
        assert_eq!(pod["process_stats"]["process_count"], 1);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, summary);
    }
}
