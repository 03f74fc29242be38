//! Why a pod fits nowhere, in upstream's words (`framework.FitError`): `0/N nodes are
//! available: ` then either the PreFilter rejection or a sorted histogram of the Filter reasons
//! (`1 Insufficient cpu, 2 node(s) had untolerated taint {...}`), then what preemption said —
//! each part followed by `.`, exactly as kubectl users know it (including the doubled period
//! after a preemption message that ends in one).

use std::collections::{BTreeMap, HashSet};

use crate::framework::{NodeToStatus, Status};

/// What the Filter phase found.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// Why each evaluated node was rejected.
    pub node_to_status: NodeToStatus,
    /// The status of nodes not in `node_to_status` (e.g. outside a PreFilter result).
    pub absent: Option<Status>,
    /// Plugins that rejected the pod (they decide which cluster events requeue it).
    pub unschedulable_plugins: HashSet<&'static str>,
    /// The PreFilter rejection, if PreFilter rejected the pod.
    pub pre_filter_msg: String,
    /// What PostFilter (preemption) said.
    pub post_filter_msg: String,
}

/// No node fits the pod.
#[derive(Debug, Clone, Default)]
pub struct FitError {
    /// How many nodes the cluster has.
    pub num_all_nodes: usize,
    /// The details.
    pub diagnosis: Diagnosis,
}

impl FitError {
    /// Upstream's message.
    pub fn message(&self) -> String {
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        let d = &self.diagnosis;
        if !d.pre_filter_msg.is_empty() {
            msg.push_str(&format!(" {}.", d.pre_filter_msg));
        } else {
            let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
            for status in d.node_to_status.values() {
                for r in status.reasons() {
                    *histogram.entry(r.as_str()).or_insert(0) += 1;
                }
            }
            let absent = self.num_all_nodes.saturating_sub(d.node_to_status.len());
            if absent > 0
                && let Some(status) = &d.absent
            {
                for r in status.reasons() {
                    *histogram.entry(r.as_str()).or_insert(0) += absent;
                }
            }
            let mut parts: Vec<String> =
                histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
            parts.sort();
            if !parts.is_empty() {
                msg.push_str(&format!(" {}.", parts.join(", ")));
            }
        }
        if !d.post_filter_msg.is_empty() {
            msg.push_str(&format!(" {}.", d.post_filter_msg));
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_message() {
        let mut d = Diagnosis::default();
        d.node_to_status
            .insert("a".into(), Status::unschedulable("Insufficient cpu"));
        for n in ["cp1", "cp2"] {
            d.node_to_status.insert(
                n.into(),
                Status::unresolvable(
                    "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
                ),
            );
        }
        d.post_filter_msg =
            "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
                .into();
        let e = FitError {
            num_all_nodes: 3,
            diagnosis: d,
        };
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
        );
    }

    #[test]
    fn prefilter_rejections_and_absent_nodes() {
        let e = FitError {
            num_all_nodes: 11,
            diagnosis: Diagnosis {
                pre_filter_msg: "persistentvolumeclaim \"data\" not found".into(),
                ..Default::default()
            },
        };
        assert_eq!(
            e.message(),
            "0/11 nodes are available: persistentvolumeclaim \"data\" not found."
        );
        let e = FitError {
            num_all_nodes: 3,
            diagnosis: Diagnosis {
                absent: Some(Status::unresolvable(
                    "Preemption is not helpful for scheduling",
                )),
                ..Default::default()
            },
        };
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        assert_eq!(FitError::default().message(), "0/0 nodes are available:");
    }
}
