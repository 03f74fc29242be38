//! Translating a pod spec into CRI requests: the sandbox configuration (hostname, DNS, port
//! mappings, namespaces, cgroup parent by QoS class) and each container's configuration
//! (command with `$(VAR)` expansion, environment, mounts, resources as cgroup limits, security
//! context), plus the kubelet-managed `/etc/hosts`.
//!
//! Pure: everything the translation needs is passed in.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_api::quantity::Quantity;
use skiff_cri::api;

use super::observed::labels;
use super::plan::Kind;
use super::status::qos_class;
use super::volumes::HostVolume;

/// Node-level settings pods are translated with.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The node's name.
    pub node_name: String,
    /// Cluster DNS servers.
    pub cluster_dns: Vec<String>,
    /// Cluster domain.
    pub cluster_domain: String,
    /// The host's resolv.conf contents.
    pub host_resolv_conf: String,
    /// The host's /etc/hosts contents (for host-network pods).
    pub host_hosts: String,
    /// The host's name.
    pub host_name: String,
    /// Where sandbox log directories go.
    pub logs_dir: PathBuf,
    /// Memory capacity of the node in bytes (for Burstable oom_score_adj).
    pub memory_capacity: u64,
}

/// Upstream's default masked and read-only paths for unprivileged containers.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn spec(pod: &Pod) -> k8s_openapi::api::core::v1::PodSpec {
    pod.spec.clone().unwrap_or_default()
}

/// The sandbox log directory of a pod: `<logs>/<namespace>_<name>_<uid>`.
pub fn log_directory(node: &NodeContext, pod: &Pod) -> PathBuf {
    node.logs_dir.join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    ))
}

/// A container instance's log file, relative to the sandbox log directory.
pub fn log_path(name: &str, restart_count: i32) -> String {
    format!("{name}/{restart_count}.log")
}

/// The pod's hostname (spec.hostname or the pod name, at most 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let s = spec(pod);
    let name = s
        .hostname
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    let trimmed: String = name.chars().take(63).collect();
    trimmed.trim_end_matches(['-', '.']).to_owned()
}

/// The cgroup parent of the pod by QoS class (cgroupfs layout under `/kubepods`).
pub fn cgroup_parent(pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    match qos_class(pod) {
        "Guaranteed" => format!("/kubepods/pod{uid}"),
        "Burstable" => format!("/kubepods/burstable/pod{uid}"),
        _ => format!("/kubepods/besteffort/pod{uid}"),
    }
}

struct Resolv {
    servers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

fn parse_resolv(text: &str) -> Resolv {
    let mut r = Resolv {
        servers: Vec::new(),
        searches: Vec::new(),
        options: Vec::new(),
    };
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => r.servers.extend(words.next().map(str::to_owned)),
            Some("search") | Some("domain") => r.searches = words.map(str::to_owned).collect(),
            Some("options") => r.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    r
}

/// The pod's DNS configuration (upstream `GetPodDNS`), `None` to use the runtime's default.
pub fn dns_config(pod: &Pod, node: &NodeContext) -> Option<api::DnsConfig> {
    let s = spec(pod);
    let host_network = s.host_network.unwrap_or(false);
    let mut policy = s
        .dns_policy
        .clone()
        .unwrap_or_else(|| "ClusterFirst".into());
    if policy == "ClusterFirst" && host_network {
        policy = "Default".into();
    }
    if (policy == "ClusterFirst" || policy == "ClusterFirstWithHostNet")
        && node.cluster_dns.is_empty()
    {
        // No cluster DNS configured: upstream falls back to the host's resolver.
        policy = "Default".into();
    }
    let host = parse_resolv(&node.host_resolv_conf);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = &node.cluster_domain;
    let (mut servers, mut searches, mut options) = match policy.as_str() {
        "ClusterFirst" | "ClusterFirstWithHostNet" => {
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            searches.extend(host.searches.iter().cloned());
            (
                node.cluster_dns.clone(),
                searches,
                vec!["ndots:5".to_owned()],
            )
        }
        "None" => (Vec::new(), Vec::new(), Vec::new()),
        _ => (host.servers, host.searches, host.options),
    };
    if let Some(cfg) = &s.dns_config {
        servers.extend(cfg.nameservers.iter().flatten().cloned());
        searches.extend(cfg.searches.iter().flatten().cloned());
        for opt in cfg.options.iter().flatten() {
            let name = opt.name.clone().unwrap_or_default();
            let rendered = match &opt.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            };
            options.retain(|o| o.split(':').next() != Some(name.as_str()));
            options.push(rendered);
        }
    }
    servers.dedup();
    servers.truncate(3);
    let mut seen = std::collections::BTreeSet::new();
    searches.retain(|s| seen.insert(s.clone()));
    searches.truncate(32);
    Some(api::DnsConfig {
        servers,
        searches,
        options,
    })
}

/// The kubelet-managed `/etc/hosts` of a pod.
pub fn hosts_file(pod: &Pod, pod_ip: &str, node: &NodeContext) -> String {
    let s = spec(pod);
    let mut out = String::new();
    if s.host_network.unwrap_or(false) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(&node.host_hosts);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        if !pod_ip.is_empty() {
            let host = hostname(pod);
            match s.subdomain.as_deref().filter(|d| !d.is_empty()) {
                Some(sub) => {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                    out.push_str(&format!(
                        "{pod_ip}\t{host}.{sub}.{ns}.svc.{}\t{host}\n",
                        node.cluster_domain
                    ));
                }
                None => out.push_str(&format!("{pod_ip}\t{host}\n")),
            }
        }
    }
    let aliases = s.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&a.ip);
            for h in a.hostnames.unwrap_or_default() {
                out.push('\t');
                out.push_str(&h);
            }
            out.push('\n');
        }
    }
    out
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    l.insert(
        labels::POD_NAME.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(
        labels::POD_NAMESPACE.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    l.insert(
        labels::POD_UID.into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    l
}

fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let s = spec(pod);
    let mode = |node: bool| {
        if node {
            api::NamespaceMode::Node
        } else {
            api::NamespaceMode::Pod
        }
    };
    let pid = if s.host_pid.unwrap_or(false) {
        api::NamespaceMode::Node
    } else if s.share_process_namespace.unwrap_or(false) {
        api::NamespaceMode::Pod
    } else {
        api::NamespaceMode::Container
    };
    api::NamespaceOption {
        network: mode(s.host_network.unwrap_or(false)) as i32,
        pid: pid as i32,
        ipc: mode(s.host_ipc.unwrap_or(false)) as i32,
        ..Default::default()
    }
}

/// The sandbox configuration of `pod` for creation attempt `attempt`.
pub fn sandbox_config(pod: &Pod, attempt: u32, node: &NodeContext) -> api::PodSandboxConfig {
    let s = spec(pod);
    let mut port_mappings = Vec::new();
    for c in s
        .containers
        .iter()
        .chain(s.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port.filter(|hp| *hp > 0) else {
                continue;
            };
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::Udp,
                Some("SCTP") => api::Protocol::Sctp,
                _ => api::Protocol::Tcp,
            };
            port_mappings.push(api::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let privileged = s
        .containers
        .iter()
        .chain(s.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|sc| sc.privileged)
                .unwrap_or(false)
        });
    let psc = s.security_context.clone().unwrap_or_default();
    let host_network = s.host_network.unwrap_or(false);
    let sysctls: HashMap<String, String> = psc
        .sysctls
        .iter()
        .flatten()
        .map(|sc| (sc.name.clone(), sc.value.clone()))
        .collect();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        // Host-network pods share the node's UTS namespace: no hostname of their own.
        hostname: if host_network {
            String::new()
        } else {
            hostname(pod)
        },
        log_directory: log_directory(node, pod).to_string_lossy().into_owned(),
        dns_config: dns_config(pod, node),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(pod),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                privileged,
                run_as_user: psc.run_as_user.map(|v| api::Int64Value { value: v }),
                // A group alone is refused by the runtime; it only goes with a user.
                run_as_group: psc
                    .run_as_group
                    .filter(|_| psc.run_as_user.is_some())
                    .map(|v| api::Int64Value { value: v }),
                supplemental_groups: supplemental_groups(pod),
                readonly_rootfs: false,
                seccomp: Some(api::SecurityProfile {
                    profile_type: api::security_profile::ProfileType::Unconfined as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn supplemental_groups(pod: &Pod) -> Vec<i64> {
    let psc = spec(pod).security_context.unwrap_or_default();
    let mut groups: Vec<i64> = psc.supplemental_groups.unwrap_or_default();
    if let Some(fs) = psc.fs_group {
        groups.insert(0, fs);
    }
    groups
}

/// The cgroup resources of a container (upstream's CPU shares/quota and memory limit math).
pub fn resources(pod: &Pod, c: &Container, memory_capacity: u64) -> api::LinuxContainerResources {
    let res = c.resources.clone().unwrap_or_default();
    let q =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .and_then(|v| Quantity::parse(&v.0).ok())
        };
    let cpu_request = q(&res.requests, "cpu").or_else(|| q(&res.limits, "cpu"));
    let cpu_limit = q(&res.limits, "cpu");
    let memory_request = q(&res.requests, "memory").or_else(|| q(&res.limits, "memory"));
    let memory_limit = q(&res.limits, "memory");
    // Shares: milli * 1024 / 1000, at least 2 (upstream MilliCPUToShares).
    let shares = cpu_request.map_or(2, |r| (r.milli_value() * 1024 / 1000).max(2));
    let period = 100_000;
    let quota = cpu_limit.map_or(0, |l| (l.milli_value() * period / 1000).max(1000));
    let oom_score_adj = match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = memory_request.map_or(0, |r| r.value()).max(0) as u64;
            let adj = 1000 - (1000 * request / memory_capacity.max(1)) as i64;
            adj.clamp(2, 999)
        }
    };
    api::LinuxContainerResources {
        cpu_period: if quota > 0 { period } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory_limit.map_or(0, |l| l.value()),
        oom_score_adj,
        ..Default::default()
    }
}

/// Everything a container's configuration is built from.
pub struct ContainerInputs<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container spec.
    pub container: &'a Container,
    /// Which list it is from.
    pub kind: Kind,
    /// Its restart count (also the attempt and log file number).
    pub restart_count: i32,
    /// The image reference to run (as resolved by the pull).
    pub image: String,
    /// The resolved environment.
    pub env: Vec<(String, String)>,
    /// The pod's volumes.
    pub volumes: &'a BTreeMap<String, HostVolume>,
    /// The kubelet-managed hosts file (none for containers that manage /etc/hosts).
    pub hosts_file: Option<PathBuf>,
    /// The host file holding this instance's termination message.
    pub termination_log: PathBuf,
    /// Spec hash (recorded so spec changes restart the container).
    pub hash: String,
    /// Node memory capacity (bytes).
    pub memory_capacity: u64,
    /// The uid the image runs as, when the runtime knows it.
    pub image_uid: Option<i64>,
    /// The runtime id of the container whose process namespace this one joins (an ephemeral
    /// container's target).
    pub pid_target: Option<String>,
}

/// The container configuration, or a `CreateContainerConfigError` message.
pub fn container_config(inputs: &ContainerInputs<'_>) -> Result<api::ContainerConfig, String> {
    let c = inputs.container;
    let pod = inputs.pod;
    let vars: BTreeMap<String, String> = inputs.env.iter().cloned().collect();
    let expand = |v: &Vec<String>| {
        v.iter()
            .map(|s| super::env::expand(s, &vars))
            .collect::<Vec<_>>()
    };
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let volume = inputs.volumes.get(&m.name).ok_or_else(|| {
            format!(
                "cannot find volume \"{}\" to mount into container \"{}\"",
                m.name, c.name
            )
        })?;
        let mut host = volume.path.clone();
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => Some(p.clone()),
            (_, Some(e)) if !e.is_empty() => Some(super::env::expand(e, &vars)),
            _ => None,
        };
        if let Some(sub) = sub {
            if sub.starts_with('/') || sub.split('/').any(|part| part == "..") {
                return Err(format!(
                    "subPath \"{sub}\" must be a relative path without '..'"
                ));
            }
            host = host.join(&sub);
            if std::fs::symlink_metadata(&host).is_err() {
                std::fs::create_dir_all(&host)
                    .map_err(|e| format!("creating subPath {}: {e}", host.display()))?;
            }
        }
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
            _ => api::MountPropagation::PropagationPrivate,
        };
        mounts.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false) || volume.read_only,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    let mounted =
        |mounts: &[api::Mount], path: &str| mounts.iter().any(|m| m.container_path == path);
    if let Some(hosts) = &inputs.hosts_file
        && !mounted(&mounts, "/etc/hosts")
    {
        mounts.push(api::Mount {
            container_path: "/etc/hosts".into(),
            host_path: hosts.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    let termination_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    if !mounted(&mounts, &termination_path) {
        mounts.push(api::Mount {
            container_path: termination_path.clone(),
            host_path: inputs.termination_log.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }

    let mut labels_map = HashMap::new();
    labels_map.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    labels_map.insert(
        labels::POD_NAME.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    labels_map.insert(
        labels::POD_NAMESPACE.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    labels_map.insert(
        labels::POD_UID.into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    let mut annotations = HashMap::new();
    annotations.insert(labels::CONTAINER_HASH.into(), inputs.hash.clone());
    annotations.insert(
        labels::RESTART_COUNT.into(),
        inputs.restart_count.to_string(),
    );
    annotations.insert(labels::TERMINATION_MESSAGE_PATH.into(), termination_path);
    annotations.insert(labels::CONTAINER_KIND.into(), inputs.kind.as_str().into());

    let sc = c.security_context.clone().unwrap_or_default();
    let psc = spec(pod).security_context.unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(psc.run_as_user);
    let run_as_group = sc.run_as_group.or(psc.run_as_group);
    if sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false) {
        let pod_ref = format!(
            "pod: \"{}_{}({})\", container: {}",
            pod.metadata.name.as_deref().unwrap_or(""),
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.uid.as_deref().unwrap_or(""),
            c.name
        );
        match run_as_user.or(inputs.image_uid) {
            Some(0) if run_as_user.is_some() => {
                return Err(format!(
                    "container's runAsUser breaks non-root policy ({pod_ref})"
                ));
            }
            Some(0) | None => {
                return Err(format!(
                    "container has runAsNonRoot and image will run as root ({pod_ref})"
                ));
            }
            Some(_) => {}
        }
    }
    let security = api::LinuxContainerSecurityContext {
        capabilities: Some(api::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged,
        namespace_options: Some(match &inputs.pid_target {
            Some(target) => api::NamespaceOption {
                pid: api::NamespaceMode::Target as i32,
                target_id: target.clone(),
                ..namespace_options(pod)
            },
            None => namespace_options(pod),
        }),
        run_as_user: run_as_user.map(|v| api::Int64Value { value: v }),
        run_as_group: run_as_group.map(|v| api::Int64Value { value: v }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(pod),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: if privileged {
            Vec::new()
        } else {
            MASKED_PATHS.iter().map(|s| (*s).to_owned()).collect()
        },
        readonly_paths: if privileged {
            Vec::new()
        } else {
            READONLY_PATHS.iter().map(|s| (*s).to_owned()).collect()
        },
        seccomp: Some(api::SecurityProfile {
            profile_type: match sc
                .seccomp_profile
                .as_ref()
                .or(psc.seccomp_profile.as_ref())
                .map(|p| p.type_.as_str())
            {
                Some("RuntimeDefault") => api::security_profile::ProfileType::RuntimeDefault as i32,
                _ => api::security_profile::ProfileType::Unconfined as i32,
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt: inputs.restart_count.max(0) as u32,
        }),
        image: Some(api::ImageSpec {
            image: inputs.image.clone(),
            ..Default::default()
        }),
        command: expand(&c.command.clone().unwrap_or_default()),
        args: expand(&c.args.clone().unwrap_or_default()),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: inputs
            .env
            .iter()
            .map(|(k, v)| api::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts,
        labels: labels_map,
        annotations,
        log_path: log_path(&c.name, inputs.restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources(pod, c, inputs.memory_capacity)),
            security_context: Some(security),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> NodeContext {
        NodeContext {
            node_name: "node-1".into(),
            cluster_dns: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n".into(),
            host_hosts: "127.0.0.1 localhost\n".into(),
            host_name: "host-a".into(),
            logs_dir: "/var/log/pods".into(),
            memory_capacity: 8 << 30,
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "web-0", "namespace": "shop", "uid": "u1", "labels": { "app": "web" } },
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn cluster_first_dns_searches_the_namespace_first() {
        let p = pod(json!({ "containers": [] }));
        let dns = dns_config(&p, &node()).unwrap();
        assert_eq!(dns.servers, ["10.43.0.10"]);
        assert_eq!(
            dns.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(dns.options, ["ndots:5"]);
    }

    #[test]
    fn host_network_pods_use_the_host_resolver_unless_asked() {
        let p = pod(json!({ "hostNetwork": true, "containers": [] }));
        assert_eq!(dns_config(&p, &node()).unwrap().servers, ["192.0.2.53"]);
        let p = pod(
            json!({ "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": [] }),
        );
        assert_eq!(dns_config(&p, &node()).unwrap().servers, ["10.43.0.10"]);
        let p = pod(
            json!({ "dnsPolicy": "None", "dnsConfig": { "nameservers": ["1.1.1.1"], "options": [{ "name": "ndots", "value": "2" }] }, "containers": [] }),
        );
        let dns = dns_config(&p, &node()).unwrap();
        assert_eq!(
            (dns.servers, dns.options),
            (vec!["1.1.1.1".to_owned()], vec!["ndots:2".to_owned()])
        );
    }

    #[test]
    fn hosts_files_name_the_pod_and_its_aliases() {
        let p = pod(
            json!({ "subdomain": "web", "hostAliases": [{ "ip": "192.0.2.9", "hostnames": ["db", "db.local"] }], "containers": [] }),
        );
        let hosts = hosts_file(&p, "10.42.0.7", &node());
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("10.42.0.7\tweb-0.web.shop.svc.cluster.local\tweb-0\n"));
        assert!(hosts.ends_with("# Entries added by HostAliases.\n192.0.2.9\tdb\tdb.local\n"));
    }

    #[test]
    fn cpu_and_memory_become_cgroup_limits() {
        let p = pod(json!({ "containers": [{ "name": "a", "resources": {
            "requests": { "cpu": "250m", "memory": "64Mi" }, "limits": { "cpu": "500m", "memory": "128Mi" } } }] }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = resources(&p, c, 8 << 30);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_period, r.cpu_quota), (100_000, 50_000));
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        assert_eq!(cgroup_parent(&p), "/kubepods/burstable/podu1");
        assert!((2..=999).contains(&r.oom_score_adj));
        let be = pod(json!({ "containers": [{ "name": "a" }] }));
        let r = resources(&be, &be.spec.as_ref().unwrap().containers[0], 8 << 30);
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.memory_limit_in_bytes,
                r.oom_score_adj
            ),
            (2, 0, 0, 1000)
        );
    }

    #[test]
    fn containers_get_expanded_commands_mounts_and_security() {
        let p = pod(json!({ "containers": [{
            "name": "app", "image": "busybox:1", "command": ["sh", "-c"], "args": ["echo $(GREETING)"],
            "volumeMounts": [{ "name": "data", "mountPath": "/data" }, { "name": "cfg", "mountPath": "/etc/app", "readOnly": false }],
            "securityContext": { "runAsUser": 1000, "allowPrivilegeEscalation": false, "capabilities": { "add": ["NET_ADMIN"], "drop": ["ALL"] }, "readOnlyRootFilesystem": true },
        }] }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let volumes: BTreeMap<String, HostVolume> = [
            (
                "data".to_owned(),
                HostVolume {
                    path: "/v/data".into(),
                    read_only: false,
                },
            ),
            (
                "cfg".to_owned(),
                HostVolume {
                    path: "/v/cfg".into(),
                    read_only: true,
                },
            ),
        ]
        .into();
        let cfg = container_config(&ContainerInputs {
            pod: &p,
            container: c,
            kind: Kind::Regular,
            restart_count: 2,
            image: "busybox:1".into(),
            env: vec![("GREETING".into(), "hi".into())],
            volumes: &volumes,
            hosts_file: Some("/p/etc-hosts".into()),
            termination_log: "/p/termination".into(),
            hash: "abc".into(),
            memory_capacity: 8 << 30,
            image_uid: None,
            pid_target: None,
        })
        .unwrap();
        assert_eq!(cfg.args, ["echo hi"]);
        assert_eq!(cfg.log_path, "app/2.log");
        assert_eq!(cfg.metadata.as_ref().unwrap().attempt, 2);
        let paths: Vec<(&str, bool)> = cfg
            .mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.readonly))
            .collect();
        assert_eq!(
            paths,
            [
                ("/data", false),
                ("/etc/app", true),
                ("/etc/hosts", false),
                ("/dev/termination-log", false)
            ]
        );
        let sc = cfg.linux.unwrap().security_context.unwrap();
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
        assert!(sc.no_new_privs && sc.readonly_rootfs);
        assert_eq!(sc.add_capabilities(), ["NET_ADMIN"]);
        assert!(!sc.masked_paths.is_empty());
    }

    trait Caps {
        fn add_capabilities(&self) -> Vec<String>;
    }
    impl Caps for api::LinuxContainerSecurityContext {
        fn add_capabilities(&self) -> Vec<String> {
            self.capabilities
                .clone()
                .unwrap_or_default()
                .add_capabilities
        }
    }

    #[test]
    fn a_missing_volume_is_a_config_error() {
        let p = pod(
            json!({ "containers": [{ "name": "app", "volumeMounts": [{ "name": "nope", "mountPath": "/x" }] }] }),
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let err = container_config(&ContainerInputs {
            pod: &p,
            container: c,
            kind: Kind::Regular,
            restart_count: 0,
            image: "b".into(),
            env: vec![],
            volumes: &BTreeMap::new(),
            hosts_file: None,
            termination_log: "/t".into(),
            hash: String::new(),
            memory_capacity: 1,
            image_uid: None,
            pid_target: None,
        })
        .unwrap_err();
        assert_eq!(
            err,
            "cannot find volume \"nope\" to mount into container \"app\""
        );
    }
}
