//! Server state shared by every request, and the per-resource hooks that need storage
//! (upstream's REST-storage specialisations): namespace lifecycle checks, Service ClusterIP and
//! NodePort allocation, pod priority admission (`priority.rs`), and CustomResourceDefinition
//! status and registration.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use http::HeaderMap;
use serde_json::{Value, json};
use skiff_api::field::{FieldError, Path};
use skiff_api::registry::ResourceInfo;

use crate::allocator::{Allocator, Specific};
use crate::crd;
use crate::error::{ApiError, ApiResult, GroupResource};
use crate::handlers::Ctx;
use crate::objects::{Objects, meta_str};
use crate::output::Output;
use crate::registry::Registry;
use crate::request::{Query, ResourcePath};

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address clients reach this server at (for discovery and the `kubernetes` endpoints).
    pub advertise_address: Ipv4Addr,
    /// HTTPS port.
    pub port: u16,
    /// Signs service-account tokens (`serviceaccounts/token`); `None` disables issuing.
    pub service_accounts: Option<Arc<skiff_pki::TokenSigner>>,
    /// TLS to kubelets for logs, exec, attach, port-forward and nodes/proxy.
    pub kubelet_client: Option<Arc<rustls::ClientConfig>>,
}

/// Everything shared across requests.
pub struct State {
    /// Served resources.
    pub registry: Registry,
    /// Object access.
    pub objects: Objects,
    /// ClusterIP/NodePort allocation.
    pub allocator: Allocator,
    /// Settings.
    pub settings: Settings,
    builtin: HashSet<(String, String)>,
}

fn is(info: &ResourceInfo, group: &str, plural: &str) -> bool {
    info.group == group && info.plural == plural
}

impl State {
    /// Build the state.
    pub fn new(
        registry: Registry,
        objects: Objects,
        allocator: Allocator,
        settings: Settings,
    ) -> Self {
        let builtin = registry
            .snapshot()
            .all()
            .map(|i| (i.group.clone(), i.plural.clone()))
            .collect();
        State {
            registry,
            objects,
            allocator,
            settings,
            builtin,
        }
    }

    /// Whether a resource comes from a CustomResourceDefinition.
    pub fn is_custom(&self, info: &ResourceInfo) -> bool {
        !self
            .builtin
            .contains(&(info.group.clone(), info.plural.clone()))
    }

    /// A request context for work the server does on its own behalf.
    pub fn internal_ctx(
        self: &Arc<Self>,
        info: Arc<ResourceInfo>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Ctx {
        Ctx {
            state: self.clone(),
            path: ResourcePath {
                group: info.group.clone(),
                version: info.version.clone(),
                namespace: namespace.map(str::to_owned),
                resource: info.plural.clone(),
                name: name.map(str::to_owned),
                subresource: None,
            },
            info,
            query: Query::default(),
            headers: HeaderMap::new(),
            output: Output::Json,
            warnings: Vec::new(),
            applying: false,
        }
    }

    /// The resource info for a group/version/plural.
    pub fn resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> ApiResult<Arc<ResourceInfo>> {
        self.registry
            .snapshot()
            .get(group, version, plural)
            .cloned()
            .ok_or_else(ApiError::path_not_found)
    }

    /// Refuse new objects in namespaces that do not exist or are terminating.
    pub async fn check_namespace_accepts(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        name: &str,
    ) -> ApiResult<()> {
        let ns_info = self.resource("", "v1", "namespaces")?;
        match self.objects.get(&ns_info, None, namespace).await? {
            None => Err(ApiError::namespace_not_found(namespace)),
            Some((ns, _)) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
                let gr = GroupResource {
                    group: info.group.clone(),
                    resource: info.plural.clone(),
                };
                let mut err = ApiError::forbidden(
                    &gr,
                    name,
                    &format!(
                        "unable to create new content in namespace {namespace} because it is being terminated"
                    ),
                );
                if let Some(d) = err.details.as_mut() {
                    d["causes"] = json!([{ "reason": "NamespaceTerminating", "message": format!("namespace {namespace} is being terminated"), "field": "metadata.namespace" }]);
                }
                Err(err)
            }
            Some(_) => Ok(()),
        }
    }

    /// Storage-aware work before an object is first stored.
    pub async fn before_create(
        &self,
        info: &ResourceInfo,
        obj: &mut Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        if is(info, "", "services") {
            return self.allocate_service(obj, None, dry_run).await;
        }
        if is(info, "", "persistentvolumeclaims") {
            self.default_storage_class(obj).await?;
        }
        if is(info, "", "pods") {
            let namespace = meta_str(obj, "namespace").to_owned();
            let sa = obj
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned();
            let automount = match self.resource("", "v1", "serviceaccounts") {
                Ok(sa_info) => self
                    .objects
                    .get(&sa_info, Some(&namespace), &sa)
                    .await?
                    .and_then(|(v, _)| {
                        v.get("automountServiceAccountToken")
                            .and_then(Value::as_bool)
                    }),
                Err(_) => None,
            };
            crate::serviceaccount::mount_token(obj, automount);
            self.admit_pod_priority(obj).await?;
        }
        if is(info, "scheduling.k8s.io", "priorityclasses") {
            self.check_single_default(obj).await?;
        }
        if is(info, "apiextensions.k8s.io", "customresourcedefinitions") {
            if let Some(err) = crd::name_conflict(obj) {
                return Err(ApiError::invalid(
                    "CustomResourceDefinition",
                    "apiextensions.k8s.io",
                    meta_str(obj, "name"),
                    &vec![err],
                ));
            }
            crd::prepare(obj);
        }
        Ok(())
    }

    /// Upstream's DefaultStorageClass admission: a claim that names no class gets the one
    /// annotated `storageclass.kubernetes.io/is-default-class: "true"` (the newest if several).
    /// An explicit `""` means "no class" and is kept.
    async fn default_storage_class(&self, claim: &mut Value) -> ApiResult<()> {
        if claim
            .pointer("/spec/storageClassName")
            .is_some_and(|v| !v.is_null())
        {
            return Ok(());
        }
        let info = self.resource("storage.k8s.io", "v1", "storageclasses")?;
        let prefix = crate::objects::prefix(&info, None);
        let page = self
            .objects
            .store
            .range(skiff_store::RangeRequest {
                prefix,
                ..Default::default()
            })
            .await?;
        let mut default: Option<(String, String)> = None;
        for kv in page.items {
            let Ok(class) = crate::objects::decode(&kv, &info.api_version()) else {
                continue;
            };
            let annotated = class
                .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                .and_then(Value::as_str)
                == Some("true");
            if annotated {
                let created = meta_str(&class, "creationTimestamp").to_owned();
                let name = meta_str(&class, "name").to_owned();
                if default.as_ref().is_none_or(|(c, _)| created > *c) {
                    default = Some((created, name));
                }
            }
        }
        if let (Some((_, name)), Some(spec)) = (
            default,
            claim.get_mut("spec").and_then(Value::as_object_mut),
        ) {
            spec.insert("storageClassName".into(), Value::String(name));
        }
        Ok(())
    }

    /// Storage-aware work before an update is admitted: carry allocated values forward.
    pub async fn before_update(
        &self,
        info: &ResourceInfo,
        old: &Value,
        new: &mut Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        if is(info, "", "services") {
            carry_service_allocations(old, new);
            return self.allocate_service(new, Some(old), dry_run).await;
        }
        if is(info, "scheduling.k8s.io", "priorityclasses") {
            return self.check_single_default(new).await;
        }
        if is(info, "apiextensions.k8s.io", "customresourcedefinitions") {
            crd::prepare(new);
        }
        Ok(())
    }

    /// Undo `before_create` allocations when the object was not stored after all.
    pub async fn release(&self, info: &ResourceInfo, obj: &Value) {
        if is(info, "", "services") {
            self.release_service(obj, None).await;
        }
    }

    /// Work after a successful create or update.
    pub async fn after_write(
        self: &Arc<Self>,
        info: &ResourceInfo,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        if is(info, "", "services")
            && let (Some(old), Some(new)) = (old, new)
        {
            self.release_service(old, Some(new)).await;
        }
        if is(info, "apiextensions.k8s.io", "customresourcedefinitions")
            && let Some(new) = new
        {
            crd::register(self, new);
            if new.pointer("/metadata/deletionTimestamp").is_some() {
                crd::spawn_cleanup(self.clone(), new.clone());
            }
        }
    }

    /// Work after an object is gone.
    pub async fn after_delete(&self, info: &ResourceInfo, obj: &Value) {
        if is(info, "", "services") {
            self.release_service(obj, None).await;
        }
        if is(info, "apiextensions.k8s.io", "customresourcedefinitions") {
            self.registry.set_custom(meta_str(obj, "name"), Vec::new());
        }
    }

    async fn allocate_service(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> ApiResult<()> {
        let name = meta_str(svc, "name").to_owned();
        let owner = format!("{}/{}", meta_str(svc, "namespace"), name);
        let invalid = |errors: Vec<FieldError>| ApiError::invalid("Service", "", &name, &errors);
        let ty = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_owned();
        let spec = Path::new("spec");
        if ty == "ExternalName" {
            if let Some(s) = svc.get_mut("spec").and_then(Value::as_object_mut) {
                s.remove("clusterIP");
                s.remove("clusterIPs");
            }
        } else {
            let current = svc
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let old_ip = old
                .and_then(|o| o.pointer("/spec/clusterIP"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let ip = if current == "None" {
                "None".to_owned()
            } else if !current.is_empty() && current == old_ip {
                current
            } else if current.is_empty() {
                if dry_run {
                    String::new()
                } else {
                    self.allocator.any_ip(&owner).await?.to_string()
                }
            } else {
                let cidr = self.allocator.service_cidr;
                let field = spec.child("clusterIPs").index(0);
                let parsed: Ipv4Addr = current.parse().map_err(|_| {
                    invalid(vec![FieldError::invalid(
                        &field,
                        current.as_str(),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )])
                })?;
                if !cidr.contains(parsed) {
                    return Err(invalid(vec![FieldError::invalid(
                        &field,
                        current.as_str(),
                        &format!(
                            "failed to allocate IP {current}: the provided IP ({current}) is not in the valid range. The range of valid IPs is {cidr}"
                        ),
                    )]));
                }
                if !dry_run && self.allocator.claim_ip(parsed, &owner).await? == Specific::Taken {
                    return Err(invalid(vec![FieldError::invalid(
                        &field,
                        current.as_str(),
                        &format!(
                            "failed to allocate IP {current}: provided IP is already allocated"
                        ),
                    )]));
                }
                current
            };
            if !ip.is_empty() {
                svc["spec"]["clusterIP"] = json!(ip);
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
            if ip != "None" || svc.pointer("/spec/ipFamilies").is_none() {
                svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            }
            if svc.pointer("/spec/ipFamilyPolicy").is_none() {
                svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            }
        }
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
            let old_ports = node_ports(old);
            let count = svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            for i in 0..count {
                let port = &mut svc["spec"]["ports"][i];
                match port.get("nodePort").and_then(Value::as_u64) {
                    Some(p) if old_ports.contains(&(p as u16)) => {}
                    Some(p) => {
                        let field = spec.child("ports").index(i).child("nodePort");
                        let p16 = u16::try_from(p)
                            .ok()
                            .filter(|p| crate::allocator::NODE_PORT_RANGE.contains(p));
                        let Some(p16) = p16 else {
                            return Err(invalid(vec![FieldError::invalid(
                                &field,
                                p as i64,
                                "provided port is not in the valid range. The range of valid ports is 30000-32767",
                            )]));
                        };
                        if !dry_run
                            && self.allocator.claim_port(p16, &owner).await? == Specific::Taken
                        {
                            return Err(invalid(vec![FieldError::invalid(
                                &field,
                                p as i64,
                                "provided port is already allocated",
                            )]));
                        }
                    }
                    None if !dry_run => {
                        let p = self.allocator.any_port(&owner).await?;
                        port["nodePort"] = json!(p);
                    }
                    None => {}
                }
            }
        } else if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in ports {
                if let Some(p) = port.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
        Ok(())
    }

    /// Release the allocations of `old` that `new` (if any) no longer holds.
    async fn release_service(&self, old: &Value, new: Option<&Value>) {
        let old_ip = old
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        let new_ip = new
            .and_then(|n| n.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if old_ip != new_ip
            && let Ok(ip) = old_ip.parse::<Ipv4Addr>()
            && (ip != self.allocator.service_cidr.first() || new.is_none())
        {
            self.allocator.release_ip(ip).await;
        }
        let keep = node_ports(new);
        for port in node_ports(Some(old)) {
            if !keep.contains(&port) {
                self.allocator.release_port(port).await;
            }
        }
    }
}

/// The node ports a service holds.
fn node_ports(svc: Option<&Value>) -> Vec<u16> {
    svc.and_then(|s| s.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                .map(|p| p as u16)
                .collect()
        })
        .unwrap_or_default()
}

/// Upstream keeps a service's allocated ClusterIP(s) and node ports when an update omits
/// them (so `kubectl apply` of a manifest without them is not an attempt to change them).
fn carry_service_allocations(old: &Value, new: &mut Value) {
    let Some(new_spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let old_spec = old
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let same_type = new_spec
        .get("type")
        .is_none_or(|t| Some(t) == old_spec.get("type"));
    let old_type = old_spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if old_type != "ExternalName" && same_type {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if new_spec.get(field).is_none_or(|v| v.as_str() == Some(""))
                && let Some(v) = old_spec.get(field)
            {
                new_spec.insert(field.into(), v.clone());
            }
        }
    }
    let old_ports = old_spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(ports) = new_spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            if port.get("nodePort").is_some() {
                continue;
            }
            let key = |p: &Value| {
                (
                    p.get("port").cloned(),
                    p.get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_owned(),
                )
            };
            if let Some(np) = old_ports
                .iter()
                .find(|o| key(o) == key(port))
                .and_then(|o| o.get("nodePort"))
            {
                port["nodePort"] = np.clone();
            }
        }
    }
}
