//! The plugin registry: plugin name → factory. Profiles name plugins; [`Registry::in_tree`]
//! holds Skiff's implementations of upstream's default plugins under upstream's names, and
//! embedders may [`Registry::register`] more before the scheduler starts. The default plugin
//! set and score weights are upstream's (`getDefaultPlugins` of `kubescheduler.config.k8s.io/v1`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::framework::{Handle, Plugin};
use crate::plugins;

/// Builds a plugin from its arguments (`pluginConfig[].args`).
pub type Factory = fn(Option<&Value>, &Handle) -> Result<Arc<dyn Plugin>, String>;

/// Upstream's default plugins, in order, with their default score weights (0: none given, so a
/// Score plugin weighs 1, as VolumeBinding does).
pub const DEFAULT_PLUGINS: &[(&str, i32)] = &[
    ("SchedulingGates", 0),
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0),
    ("VolumeBinding", 0),
    ("VolumeZone", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
];

/// Name → factory.
#[derive(Clone)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl Registry {
    /// Skiff's plugins.
    pub fn in_tree() -> Registry {
        let mut r = Registry {
            factories: BTreeMap::new(),
        };
        r.register(
            plugins::scheduling_gates::NAME,
            plugins::scheduling_gates::new,
        );
        r.register(plugins::queue_sort::NAME, plugins::queue_sort::new);
        r.register(
            plugins::node_unschedulable::NAME,
            plugins::node_unschedulable::new,
        );
        r.register(plugins::node_name::NAME, plugins::node_name::new);
        r.register(
            plugins::taint_toleration::NAME,
            plugins::taint_toleration::new,
        );
        r.register(plugins::node_affinity::NAME, plugins::node_affinity::new);
        r.register(plugins::node_ports::NAME, plugins::node_ports::new);
        r.register(
            plugins::node_resources::FIT,
            plugins::node_resources::new_fit,
        );
        r.register(
            plugins::node_resources::BALANCED,
            plugins::node_resources::new_balanced,
        );
        r.register(
            plugins::volumes::RESTRICTIONS,
            plugins::volumes::new_restrictions,
        );
        r.register(plugins::volumes::BINDING, plugins::volumes::new_binding);
        r.register(plugins::volumes::ZONE, plugins::volumes::new_zone);
        r.register(
            plugins::pod_topology_spread::NAME,
            plugins::pod_topology_spread::new,
        );
        r.register(
            plugins::inter_pod_affinity::NAME,
            plugins::inter_pod_affinity::new,
        );
        r.register(
            plugins::default_preemption::NAME,
            plugins::default_preemption::new,
        );
        r.register(plugins::image_locality::NAME, plugins::image_locality::new);
        r.register(plugins::default_binder::NAME, plugins::default_binder::new);
        r
    }

    /// Add (or replace) a plugin.
    pub fn register(&mut self, name: &str, factory: Factory) {
        self.factories.insert(name.to_owned(), factory);
    }

    /// The factory of a plugin.
    pub fn get(&self, name: &str) -> Option<Factory> {
        self.factories.get(name).copied()
    }

    /// Every registered name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}

/// Decode plugin arguments strictly into `T` (absent arguments give `T::default()`);
/// `apiVersion`/`kind` fields of the args object are accepted and ignored.
pub fn decode_args<T: DeserializeOwned + Default>(args: Option<&Value>) -> Result<T, String> {
    let Some(args) = args else {
        return Ok(T::default());
    };
    let mut args = args.clone();
    if let Some(obj) = args.as_object_mut() {
        obj.remove("apiVersion");
        obj.remove("kind");
    }
    serde_json::from_value(args).map_err(|e| format!("decoding arguments failed: {e}"))
}
