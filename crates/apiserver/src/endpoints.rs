//! The `kubernetes` Service's endpoints when one or more API servers share a store: upstream's
//! lease endpoint reconciler.
//!
//! Every API server keeps a `coordination.k8s.io/v1` Lease in `kube-system` (named after its
//! advertise address, labelled `apiserver.kubernetes.io/identity=kube-apiserver`), renewing it
//! every third of its duration. Each round it lists the leases, and writes the addresses of the
//! live ones (renewed within their duration) into the `default/kubernetes` Endpoints and
//! EndpointSlice, if they changed. A server that stops cleanly deletes its lease and takes its
//! address out at once; one that dies drops out when its lease expires, and expired leases are
//! garbage-collected by whichever server notices. Every write goes through the normal
//! compare-and-swap update path, so concurrent servers never lose each other's changes.
//! (upstream: pkg/controlplane/reconcilers/lease.go, which keeps the same records as etcd keys
//! with TTLs, and the apiserver identity leases of pkg/controlplane/apiserver.)

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::registry::Operation;

use crate::error::ApiResult;
use crate::handlers::write::{create_object, delete_named, guaranteed_update};
use crate::objects::{self, meta_str};
use crate::state::State;

/// The label upstream puts on API server identity leases.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
const IDENTITY_VALUE: &str = "kube-apiserver";
/// Where this reconciler records the address a lease stands for.
const ADDRESS_ANNOTATION: &str = "skiff.io/advertise-address";
const NAMESPACE: &str = "kube-system";

/// Keeps this server's lease and the `kubernetes` endpoints current.
pub struct LeaseReconciler {
    state: Arc<State>,
    duration: Duration,
}

/// The lease name for an API server at `address`.
pub fn lease_name(address: Ipv4Addr) -> String {
    format!("apiserver-{}", address.to_string().replace('.', "-"))
}

impl LeaseReconciler {
    /// A reconciler whose lease lasts `duration` (renewed every third of it).
    pub fn new(state: Arc<State>, duration: Duration) -> LeaseReconciler {
        LeaseReconciler {
            state,
            duration: duration.max(Duration::from_secs(1)),
        }
    }

    fn own_name(&self) -> String {
        lease_name(self.state.settings.advertise_address)
    }

    /// Renew the lease and reconcile the endpoints once.
    pub async fn round(&self) -> ApiResult<()> {
        self.renew().await?;
        let live = self.live_addresses(true).await?;
        self.write_endpoints(&live).await
    }

    /// Run rounds until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.duration / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e.message, "reconciling the kubernetes endpoints failed");
            }
        }
    }

    /// On clean shutdown: delete this server's lease and take its address out.
    pub async fn remove_self(&self) -> ApiResult<()> {
        let info = self.state.resource("coordination.k8s.io", "v1", "leases")?;
        let ctx = self
            .state
            .internal_ctx(info, Some(NAMESPACE), Some(&self.own_name()));
        match delete_named(&ctx, &self.own_name(), &Default::default()).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        let live = self.live_addresses(false).await?;
        if live.is_empty() {
            // The last server leaves its address in place: nothing else would serve it, and
            // an empty endpoints list would only break in-cluster clients until it returns.
            return Ok(());
        }
        self.write_endpoints(&live).await
    }

    fn lease_object(&self, now: &str) -> Value {
        let address = self.state.settings.advertise_address.to_string();
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {
                "name": self.own_name(), "namespace": NAMESPACE,
                "labels": { IDENTITY_LABEL: IDENTITY_VALUE },
                "annotations": { ADDRESS_ANNOTATION: address },
            },
            "spec": {
                "holderIdentity": format!("{address}:{}", self.state.settings.port),
                "leaseDurationSeconds": self.duration.as_secs().max(1),
                "acquireTime": now,
                "renewTime": now,
            },
        })
    }

    async fn renew(&self) -> ApiResult<()> {
        let info = self.state.resource("coordination.k8s.io", "v1", "leases")?;
        let name = self.own_name();
        let now = crate::time::now_micro();
        let mut ctx = self
            .state
            .internal_ctx(info.clone(), Some(NAMESPACE), Some(&name));
        let fresh = self.lease_object(&now);
        if self
            .state
            .objects
            .get(&info, Some(NAMESPACE), &name)
            .await?
            .is_none()
        {
            match create_object(&mut ctx, fresh.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        guaranteed_update(&mut ctx, Operation::Update, false, |old| {
            let mut lease = old.clone();
            lease["spec"]["renewTime"] = Value::from(now.clone());
            lease["spec"]["leaseDurationSeconds"] = fresh["spec"]["leaseDurationSeconds"].clone();
            lease["spec"]["holderIdentity"] = fresh["spec"]["holderIdentity"].clone();
            let meta = objects::metadata_mut(&mut lease);
            meta.insert("labels".into(), fresh["metadata"]["labels"].clone());
            meta.insert(
                "annotations".into(),
                fresh["metadata"]["annotations"].clone(),
            );
            Ok(lease)
        })
        .await?;
        Ok(())
    }

    /// Addresses of live API server leases; expired ones are deleted on the way. With
    /// `include_self`, this server counts as live whatever its lease says.
    async fn live_addresses(&self, include_self: bool) -> ApiResult<BTreeSet<Ipv4Addr>> {
        let info = self.state.resource("coordination.k8s.io", "v1", "leases")?;
        let page = self
            .state
            .objects
            .store
            .range(skiff_store::RangeRequest {
                prefix: objects::prefix(&info, Some(NAMESPACE)),
                ..Default::default()
            })
            .await?;
        let now = jiff::Timestamp::now();
        let own = self.own_name();
        let mut live = BTreeSet::new();
        if include_self {
            live.insert(self.state.settings.advertise_address);
        }
        for kv in &page.items {
            let lease = objects::decode(kv, &info.api_version())?;
            if lease.pointer(&format!(
                "/metadata/labels/{}",
                IDENTITY_LABEL.replace('/', "~1")
            )) != Some(&Value::from(IDENTITY_VALUE))
            {
                continue;
            }
            let name = meta_str(&lease, "name").to_owned();
            let Some(address) = lease
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    ADDRESS_ANNOTATION.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if name == own {
                // Counted above when wanted; when leaving, our own lease no longer counts.
                continue;
            }
            if lease_is_live(&lease, now) {
                live.insert(address);
            } else {
                let ctx = self
                    .state
                    .internal_ctx(info.clone(), Some(NAMESPACE), Some(&name));
                if let Err(e) = delete_named(&ctx, &name, &Default::default()).await
                    && e.code != 404
                {
                    tracing::debug!(lease = %name, error = %e.message, "deleting an expired lease");
                }
            }
        }
        Ok(live)
    }

    /// Point the `kubernetes` Endpoints and EndpointSlice at `live`, if they differ.
    async fn write_endpoints(&self, live: &BTreeSet<Ipv4Addr>) -> ApiResult<()> {
        let port = self.state.settings.port;
        let addresses: Vec<Value> = live
            .iter()
            .map(|ip| json!({ "ip": ip.to_string() }))
            .collect();
        let subsets = json!([{
            "addresses": addresses,
            "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
        }]);
        let info = self.state.resource("", "v1", "endpoints")?;
        let mut ctx = self
            .state
            .internal_ctx(info, Some("default"), Some("kubernetes"));
        guaranteed_update(&mut ctx, Operation::Update, false, |old| {
            let mut endpoints = old.clone();
            endpoints["subsets"] = subsets.clone();
            Ok(endpoints)
        })
        .await?;

        let slice_endpoints: Vec<Value> = live
            .iter()
            .map(|ip| json!({ "addresses": [ip.to_string()], "conditions": { "ready": true } }))
            .collect();
        let info = self
            .state
            .resource("discovery.k8s.io", "v1", "endpointslices")?;
        let mut ctx = self
            .state
            .internal_ctx(info, Some("default"), Some("kubernetes"));
        guaranteed_update(&mut ctx, Operation::Update, false, |old| {
            let mut slice = old.clone();
            slice["endpoints"] = Value::Array(slice_endpoints.clone());
            slice["ports"] = json!([{ "name": "https", "port": port, "protocol": "TCP" }]);
            Ok(slice)
        })
        .await?;
        Ok(())
    }
}

/// Whether a lease was renewed within its duration.
fn lease_is_live(lease: &Value, now: jiff::Timestamp) -> bool {
    let Some(renewed) = lease
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return false;
    };
    let seconds = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    renewed + jiff::SignedDuration::from_secs(seconds) > now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_live_for_their_duration() {
        let now = jiff::Timestamp::now();
        let at = |offset: i64, duration: i64| {
            let renewed = now - jiff::SignedDuration::from_secs(offset);
            json!({ "spec": {
                "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
                "leaseDurationSeconds": duration,
            }})
        };
        assert!(lease_is_live(&at(5, 15), now));
        assert!(!lease_is_live(&at(20, 15), now));
        assert!(!lease_is_live(&json!({ "spec": {} }), now));
        assert_eq!(lease_name(Ipv4Addr::new(10, 0, 0, 7)), "apiserver-10-0-0-7");
    }
}
