//! Builders for plugin unit tests: pods, nodes, node infos and snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerImage, ContainerPort, Node, NodeSpec, NodeStatus, Pod, PodSpec,
    ResourceRequirements, Taint, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::cache::Snapshot;
use crate::framework::{Framework, Handle};
use crate::nodeinfo::{NodeInfo, PodInfo};

pub fn list(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

/// A pod under construction.
#[derive(Clone)]
pub struct P(pub Pod);

pub fn pod(name: &str) -> P {
    P(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::new()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
}

impl P {
    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.as_mut().unwrap()
    }
    pub fn ns(mut self, ns: &str) -> P {
        self.0.metadata.namespace = Some(ns.into());
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> P {
        self.0
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }
    pub fn req(mut self, pairs: &[(&str, &str)]) -> P {
        self.spec().containers[0].resources = Some(ResourceRequirements {
            requests: Some(list(pairs)),
            ..Default::default()
        });
        self
    }
    pub fn container(mut self, image: &str, pairs: &[(&str, &str)]) -> P {
        let n = self.spec().containers.len();
        self.spec().containers.push(Container {
            name: format!("c{n}"),
            image: Some(image.into()),
            resources: Some(ResourceRequirements {
                requests: Some(list(pairs)),
                ..Default::default()
            }),
            ..Default::default()
        });
        self
    }
    pub fn image(mut self, image: &str) -> P {
        self.spec().containers[0].image = Some(image.into());
        self
    }
    pub fn priority(mut self, p: i32) -> P {
        self.spec().priority = Some(p);
        self
    }
    pub fn node(mut self, n: &str) -> P {
        self.spec().node_name = Some(n.into());
        self
    }
    pub fn node_selector(mut self, k: &str, v: &str) -> P {
        self.spec()
            .node_selector
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }
    pub fn toleration(mut self, key: &str, op: &str, value: &str, effect: &str) -> P {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        self.spec()
            .tolerations
            .get_or_insert_with(Vec::new)
            .push(Toleration {
                key: opt(key),
                operator: opt(op),
                value: opt(value),
                effect: opt(effect),
                toleration_seconds: None,
            });
        self
    }
    pub fn host_port(mut self, port: i32, ip: &str, protocol: &str) -> P {
        self.spec().containers[0]
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                container_port: port,
                host_port: Some(port),
                host_ip: (!ip.is_empty()).then(|| ip.to_owned()),
                protocol: Some(protocol.into()),
                ..Default::default()
            });
        self
    }
    pub fn affinity(mut self, a: Affinity) -> P {
        self.spec().affinity = Some(a);
        self
    }
    pub fn spread(mut self, c: TopologySpreadConstraint) -> P {
        self.spec()
            .topology_spread_constraints
            .get_or_insert_with(Vec::new)
            .push(c);
        self
    }
    pub fn terminating(mut self) -> P {
        self.0.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        self
    }
    pub fn info(self) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(self.0)))
    }
}

/// A node under construction.
pub struct N(pub Node);

pub fn node(name: &str) -> N {
    N(Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/hostname".to_owned(), name.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(list(&[("cpu", "4"), ("memory", "32Gi"), ("pods", "110")])),
            ..Default::default()
        }),
    })
}

impl N {
    pub fn alloc(mut self, pairs: &[(&str, &str)]) -> N {
        self.0.status.as_mut().unwrap().allocatable = Some(list(pairs));
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> N {
        self.0
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> N {
        self.0
            .spec
            .as_mut()
            .unwrap()
            .taints
            .get_or_insert_with(Vec::new)
            .push(Taint {
                key: key.into(),
                value: (!value.is_empty()).then(|| value.to_owned()),
                effect: effect.into(),
                time_added: None,
            });
        self
    }
    pub fn unschedulable(mut self) -> N {
        self.0.spec.as_mut().unwrap().unschedulable = Some(true);
        self
    }
    pub fn image(mut self, name: &str, size: i64) -> N {
        self.0
            .status
            .as_mut()
            .unwrap()
            .images
            .get_or_insert_with(Vec::new)
            .push(ContainerImage {
                names: Some(vec![name.into()]),
                size_bytes: Some(size),
            });
        self
    }
    /// The node with these pods on it.
    pub fn with(self, pods: Vec<P>) -> Arc<NodeInfo> {
        let name = self.0.metadata.name.clone().unwrap();
        let mut info = NodeInfo::new(Arc::new(self.0));
        for p in pods {
            info.add_pod(p.node(&name).info());
        }
        Arc::new(info)
    }
    pub fn info(self) -> Arc<NodeInfo> {
        self.with(Vec::new())
    }
}

pub fn snapshot(nodes: Vec<Arc<NodeInfo>>) -> Snapshot {
    Snapshot::from_nodes(nodes)
}

/// The default framework (all default plugins) for end-to-end plugin runs.
pub fn default_framework() -> Framework {
    framework_with(Handle::for_tests())
}

pub fn framework_with(handle: Handle) -> Framework {
    let config = crate::config::SchedulerConfiguration::default();
    Framework::new(
        &config.profiles()[0],
        &crate::registry::Registry::in_tree(),
        handle,
    )
    .unwrap()
}
