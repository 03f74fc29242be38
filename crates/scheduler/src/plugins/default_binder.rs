//! DefaultBinder (Bind): `POST /api/v1/namespaces/{ns}/pods/{name}/binding` with the pod's UID
//! as a precondition, as upstream's binder does.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::extension_points;
use crate::framework::{BindPlugin, CycleState, Handle, Plugin, Status};
use crate::nodeinfo::PodInfo;

/// The plugin name.
pub const NAME: &str = "DefaultBinder";

/// The plugin.
pub struct DefaultBinder {
    client: Option<kube::Client>,
}

/// Factory.
pub fn new(_args: Option<&Value>, handle: &Handle) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(DefaultBinder {
        client: handle.client.clone(),
    }))
}

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        NAME
    }
    extension_points!(as_bind => BindPlugin);
}

/// The Binding object for `pod` → `node`.
pub fn binding(pod: &Pod, node: &str) -> Binding {
    Binding {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..Default::default()
        },
    }
}

#[async_trait]
impl BindPlugin for DefaultBinder {
    async fn bind(&self, _state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        let Some(client) = self.client.clone() else {
            return Status::error("no API client to bind with");
        };
        let api: Api<Pod> = Api::namespaced(client, pod.namespace());
        let name = pod.pod.metadata.name.as_deref().unwrap_or("");
        match api
            .create_subresource::<Binding, Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding(&pod.pod, node),
            )
            .await
        {
            Ok(_) => Status::success(),
            Err(e) => Status::error(format!("binding rejected: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::pod;

    #[test]
    fn the_binding_targets_the_node_with_the_pods_uid() {
        let p = pod("web").0;
        let b = binding(&p, "node-1");
        assert_eq!(b.metadata.uid.as_deref(), Some("uid-web"));
        assert_eq!(b.target.name.as_deref(), Some("node-1"));
        assert_eq!(b.target.kind.as_deref(), Some("Node"));
    }
}
