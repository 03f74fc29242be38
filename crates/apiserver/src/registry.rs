//! The live resource registry: built-in kinds plus the kinds CustomResourceDefinitions add.
//!
//! Readers take a cheap `Arc` snapshot ([`Registry::snapshot`]); CRD changes build a new
//! snapshot and swap it in, so request handling never blocks on registry updates.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use skiff_api::registry::ResourceInfo;

/// An immutable view of every served resource.
#[derive(Debug, Default)]
pub struct RegistrySnapshot {
    /// Resources keyed by (group, version, plural).
    by_path: BTreeMap<(String, String, String), Arc<ResourceInfo>>,
    /// Group versions in discovery order: group → versions (preferred first).
    groups: Vec<(String, Vec<String>)>,
}

impl RegistrySnapshot {
    fn build(resources: Vec<Arc<ResourceInfo>>) -> Self {
        let mut by_path = BTreeMap::new();
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for info in resources {
            match groups.iter_mut().find(|(g, _)| *g == info.group) {
                Some((_, versions)) => {
                    if !versions.contains(&info.version) {
                        versions.push(info.version.clone());
                    }
                }
                None => groups.push((info.group.clone(), vec![info.version.clone()])),
            }
            by_path.insert(
                (
                    info.group.clone(),
                    info.version.clone(),
                    info.plural.clone(),
                ),
                info,
            );
        }
        for (_, versions) in &mut groups {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        RegistrySnapshot { by_path, groups }
    }

    /// The resource served at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceInfo>> {
        self.by_path
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
    }

    /// Every resource of one group version, in plural order.
    pub fn resources_in(&self, group: &str, version: &str) -> Vec<&Arc<ResourceInfo>> {
        self.by_path
            .iter()
            .filter(|((g, v, _), _)| g == group && v == version)
            .map(|(_, info)| info)
            .collect()
    }

    /// Groups with their versions, preferred version first; the core group ("") first.
    pub fn groups(&self) -> &[(String, Vec<String>)] {
        &self.groups
    }

    /// Whether a group version is served.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.groups
            .iter()
            .any(|(g, vs)| g == group && vs.iter().any(|v| v == version))
    }

    /// The resource for a group/kind in any version, preferring the group's preferred version.
    pub fn by_group_kind(&self, group: &str, kind: &str) -> Option<&Arc<ResourceInfo>> {
        let versions = &self.groups.iter().find(|(g, _)| g == group)?.1;
        versions.iter().find_map(|v| {
            self.by_path.iter().find_map(|((g, ver, _), info)| {
                (g == group && ver == v && info.kind == kind).then_some(info)
            })
        })
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.by_path.values()
    }
}

/// Kubernetes version ordering: GA > beta > alpha, then by number (upstream
/// `version.CompareKubeAwareVersionStrings`).
pub fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (stage, major, num.parse().unwrap_or(0))
}

/// The registry: built-ins fixed at start, custom resources added and removed at run time.
#[derive(Debug)]
pub struct Registry {
    builtin: Vec<Arc<ResourceInfo>>,
    custom: RwLock<BTreeMap<String, Vec<Arc<ResourceInfo>>>>,
    current: RwLock<Arc<RegistrySnapshot>>,
}

impl Registry {
    /// A registry serving the given built-in resources.
    pub fn new(builtin: Vec<ResourceInfo>) -> Self {
        let builtin: Vec<Arc<ResourceInfo>> = builtin.into_iter().map(Arc::new).collect();
        let current = RwLock::new(Arc::new(RegistrySnapshot::build(builtin.clone())));
        Registry {
            builtin,
            custom: RwLock::new(BTreeMap::new()),
            current,
        }
    }

    /// The current view.
    pub fn snapshot(&self) -> Arc<RegistrySnapshot> {
        self.current.read().clone()
    }

    /// Set (or, with an empty list, remove) the resources defined by one CRD, keyed by its name.
    pub fn set_custom(&self, crd_name: &str, resources: Vec<ResourceInfo>) {
        let mut custom = self.custom.write();
        if resources.is_empty() {
            custom.remove(crd_name);
        } else {
            custom.insert(
                crd_name.to_owned(),
                resources.into_iter().map(Arc::new).collect(),
            );
        }
        let mut all = self.builtin.clone();
        for infos in custom.values() {
            all.extend(infos.iter().cloned());
        }
        *self.current.write() = Arc::new(RegistrySnapshot::build(all));
    }
}

#[cfg(test)]
mod tests {
    use super::version_priority;

    #[test]
    fn versions_order_like_upstream() {
        let mut v = vec!["v1alpha1", "v2beta1", "v1", "v2", "v1beta2", "v1beta1"];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1"]);
    }
}
