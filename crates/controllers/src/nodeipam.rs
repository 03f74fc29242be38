//! Node IPAM (upstream pkg/controller/nodeipam, the range allocator): every node without
//! `spec.podCIDR` gets the next free `/--node-cidr-mask-size` block of `--cluster-cidr`.
//! Blocks in use are learned from the nodes themselves at start, and reserved in memory the
//! moment they are handed out, so a lagging cache never hands one out twice.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use skiff_runtime::controller::{self, Action, Reconciler};
use skiff_runtime::events::{EventType, Recorder, reference};
use skiff_runtime::{Change, Informer, WorkQueue};

use crate::config::{Ipv4Net, mask};
use crate::context::{Context, synced};
use crate::{Error, Result};

/// Start the allocator (idle without `--cluster-cidr`/`--allocate-node-cidrs`).
pub async fn start(ctx: Context) {
    let Some(cidr) = ctx.config.cluster_cidr else {
        return ctx.stop.cancelled().await;
    };
    let nodes = ctx.informer::<Node>();
    let queue: WorkQueue<String> = WorkQueue::default();
    let allocator = Arc::new(Mutex::new(Allocator::new(
        cidr,
        ctx.config.node_cidr_mask_size,
    )));
    {
        let allocator = allocator.clone();
        controller::feed(&nodes, &queue, &ctx.stop, move |c| match c {
            Change::Deleted(node) => {
                if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
                    allocator.lock().release(cidr, &node.name_any());
                }
                Vec::new()
            }
            Change::Applied { new, .. } => vec![new.name_any()],
        });
    }
    if !ctx.wait_synced(vec![synced(&nodes)]).await {
        return;
    }
    {
        let mut a = allocator.lock();
        for node in nodes.list() {
            if let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
                a.occupy(cidr, &node.name_any());
            }
        }
    }
    let reconciler = Arc::new(NodeIpam {
        client: ctx.client.clone(),
        nodes,
        allocator,
        recorder: ctx.recorder("node-ipam-controller"),
    });
    // One worker: allocation is serial by nature.
    controller::run(reconciler, queue, 1, ctx.stop.clone()).await;
}

/// The block allocator.
#[derive(Debug)]
pub struct Allocator {
    cidr: Ipv4Net,
    size: u8,
    used: HashMap<u32, String>,
}

impl Allocator {
    /// Blocks of `/size` from `cidr`.
    pub fn new(cidr: Ipv4Net, size: u8) -> Allocator {
        Allocator {
            cidr,
            size,
            used: HashMap::new(),
        }
    }

    fn parse(&self, cidr: &str) -> Option<u32> {
        let net: Ipv4Net = cidr.parse().ok()?;
        (net.prefix == self.size
            && u32::from(net.addr) & mask(self.cidr.prefix) == u32::from(self.cidr.addr))
        .then(|| u32::from(net.addr))
    }

    /// Record a block a node already has.
    pub fn occupy(&mut self, cidr: &str, node: &str) {
        if let Some(b) = self.parse(cidr) {
            self.used.insert(b, node.to_owned());
        }
    }

    /// Free a deleted node's block.
    pub fn release(&mut self, cidr: &str, node: &str) {
        if let Some(b) = self.parse(cidr)
            && self.used.get(&b).is_some_and(|n| n == node)
        {
            self.used.remove(&b);
        }
    }

    /// The next free block for `node` (the one it holds already, if any).
    pub fn allocate(&mut self, node: &str) -> Option<String> {
        if let Some((b, _)) = self.used.iter().find(|(_, n)| *n == node) {
            return Some(format!("{}/{}", Ipv4Addr::from(*b), self.size));
        }
        let base = u32::from(self.cidr.addr);
        let count = 1u64 << (self.size - self.cidr.prefix);
        let step = 1u64 << (32 - self.size);
        let taken: HashSet<u32> = self.used.keys().copied().collect();
        for i in 0..count {
            let block = (u64::from(base) + i * step) as u32;
            if !taken.contains(&block) {
                self.used.insert(block, node.to_owned());
                return Some(format!("{}/{}", Ipv4Addr::from(block), self.size));
            }
        }
        None
    }
}

struct NodeIpam {
    client: Client,
    nodes: Informer<Node>,
    allocator: Arc<Mutex<Allocator>>,
    recorder: Recorder,
}

impl Reconciler for NodeIpam {
    type Key = String;
    type Error = Error;

    fn name(&self) -> &'static str {
        "node-ipam-controller"
    }

    async fn reconcile(&self, name: &String) -> Result<Action> {
        let Some(node) = self.nodes.get_named("", name) else {
            return Ok(Action::Done);
        };
        if let Some(cidr) = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .filter(|c| !c.is_empty())
        {
            self.allocator.lock().occupy(cidr, name);
            return Ok(Action::Done);
        }
        let Some(cidr) = self.allocator.lock().allocate(name) else {
            self.recorder.publish(
                &reference(node.as_ref()),
                EventType::Normal,
                "CIDRNotAvailable",
                &format!("Node {name} status is now: CIDRNotAvailable"),
            );
            return Ok(Action::Done);
        };
        let patch = json!({ "spec": { "podCIDR": cidr, "podCIDRs": [cidr] } });
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "allocated pod CIDR");
                Ok(Action::Done)
            }
            Err(e) if crate::is_not_found(&e) => {
                self.allocator.lock().release(&cidr, name);
                Ok(Action::Done)
            }
            Err(e) => {
                self.allocator.lock().release(&cidr, name);
                self.recorder.publish(
                    &reference(node.as_ref()),
                    EventType::Warning,
                    "CIDRAssignmentFailed",
                    &format!("Node {name} status is now: CIDRAssignmentFailed"),
                );
                Err(Error::Api {
                    action: format!("assigning pod CIDR {cidr} to node {name}"),
                    source: e,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_once_and_reused_after_release() {
        let mut a = Allocator::new("10.42.0.0/16".parse().unwrap(), 24);
        a.occupy("10.42.0.0/24", "existing");
        assert_eq!(a.allocate("n1").as_deref(), Some("10.42.1.0/24"));
        assert_eq!(
            a.allocate("n1").as_deref(),
            Some("10.42.1.0/24"),
            "idempotent per node"
        );
        assert_eq!(a.allocate("n2").as_deref(), Some("10.42.2.0/24"));
        a.release("10.42.1.0/24", "n1");
        assert_eq!(a.allocate("n3").as_deref(), Some("10.42.1.0/24"));
        let mut tiny = Allocator::new("10.0.0.0/30".parse().unwrap(), 31);
        assert!(tiny.allocate("a").is_some() && tiny.allocate("b").is_some());
        assert!(tiny.allocate("c").is_none(), "exhausted");
    }
}
