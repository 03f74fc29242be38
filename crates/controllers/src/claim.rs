//! Claiming pods for a controller (upstream `PodControllerRefManager.ClaimPods`): among the
//! controller's own pods and the namespace's orphans, keep those that match its selector,
//! adopt matching orphans (after an uncached check that the controller still exists and is
//! not being deleted) and release owned pods that stopped matching.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use skiff_api::selector::LabelSelector;
use skiff_runtime::Informer;
use skiff_runtime::owner::{self, Claim};

use crate::replicaset::claim_candidates;
use crate::{During, Error, Result, pods};

/// Claim pods for `owner`; `adoptable` says which orphans may be adopted (ReplicaSets take
/// only active ones). Returns every pod the owner controls afterwards.
pub async fn claim_pods<K>(
    client: &Client,
    pod_informer: &Informer<Pod>,
    owner: &K,
    selector: &LabelSelector,
    adoptable: impl Fn(&Pod) -> bool,
) -> Result<Vec<Arc<Pod>>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut claimed = Vec::new();
    let mut rechecked: Option<bool> = None;
    for pod in claim_candidates(pod_informer, &uid, &ns) {
        let matches = !selector.is_empty() && selector.matches(&pods::labels(&pod.metadata));
        match owner::classify(&pod.metadata, &uid, deleting, matches) {
            Claim::Owned => claimed.push(pod),
            Claim::Adopt if adoptable(&pod) => {
                let fresh_ok = match rechecked {
                    Some(ok) => ok,
                    None => {
                        let fresh = Api::<K>::namespaced(client.clone(), &ns)
                            .get_opt(&owner.name_any())
                            .await
                            .during(|| {
                                format!("re-reading {} {ns}/{}", K::kind(&()), owner.name_any())
                            })?;
                        let ok = fresh.is_some_and(|f| {
                            f.meta().uid == owner.meta().uid
                                && f.meta().deletion_timestamp.is_none()
                        });
                        rechecked = Some(ok);
                        ok
                    }
                };
                if !fresh_ok {
                    continue;
                }
                match owner::adopt(
                    &api,
                    &pod.name_any(),
                    pod.metadata.uid.as_deref().unwrap_or(""),
                    &owner::controller_reference(owner),
                )
                .await
                {
                    Ok(p) => claimed.push(Arc::new(p)),
                    Err(e) if crate::is_not_found(&e) || crate::is_conflict(&e) => {}
                    Err(e) => {
                        return Err(Error::Api {
                            action: format!("adopting pod {ns}/{}", pod.name_any()),
                            source: e,
                        });
                    }
                }
            }
            Claim::Release => {
                owner::release(
                    &api,
                    &pod.name_any(),
                    pod.metadata.uid.as_deref().unwrap_or(""),
                    &uid,
                )
                .await
                .during(|| format!("releasing pod {ns}/{}", pod.name_any()))?;
            }
            _ => {}
        }
    }
    Ok(claimed)
}
