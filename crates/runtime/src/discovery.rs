//! What the API server serves, from discovery: every resource with its scope and verbs, the
//! preferred version of each group, and the mapping from an `apiVersion` + `kind` (as in an
//! ownerReference) to the resource to address. Loops that handle every kind (the garbage
//! collector, namespace deletion, quota counting, scale targets) share it.

use std::collections::HashMap;

use kube::Client;
use kube::api::ApiResource;
use kube::discovery::{Discovery, Scope};

use crate::Error;

/// One served resource.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Group, version, kind and plural.
    pub api: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Verbs the server allows (`list`, `watch`, `delete`, `deletecollection`, ...).
    pub verbs: Vec<String>,
    /// Whether this is its group's preferred version.
    pub preferred: bool,
    /// Names of its subresources (`status`, `scale`).
    pub subresources: Vec<String>,
}

impl Resource {
    /// Whether every verb in `verbs` is allowed.
    pub fn supports(&self, verbs: &[&str]) -> bool {
        verbs
            .iter()
            .all(|v| self.verbs.iter().any(|have| have == v))
    }

    /// `plural.group` (`deployments.apps`, `pods`), upstream's group-resource string.
    pub fn group_resource(&self) -> String {
        if self.api.group.is_empty() {
            self.api.plural.clone()
        } else {
            format!("{}.{}", self.api.plural, self.api.group)
        }
    }
}

/// A snapshot of discovery.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    all: Vec<Resource>,
    by_kind: HashMap<(String, String), usize>,
    by_resource: HashMap<(String, String), usize>,
}

impl Resources {
    /// Ask the API server.
    pub async fn discover(client: &Client) -> Result<Resources, Error> {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .map_err(|source| Error::Api {
                action: "discovering API resources".into(),
                source,
            })?;
        let mut all = Vec::new();
        for group in discovery.groups() {
            let preferred = group.preferred_version_or_latest().to_owned();
            for version in group.versions() {
                for (api, caps) in group.versioned_resources(version) {
                    all.push(Resource {
                        namespaced: caps.scope == Scope::Namespaced,
                        verbs: caps.operations.clone(),
                        preferred: version == preferred,
                        subresources: caps
                            .subresources
                            .iter()
                            .map(|(s, _)| s.plural.clone())
                            .collect(),
                        api,
                    });
                }
            }
        }
        Ok(Self::from_resources(all))
    }

    /// A snapshot from a list (tests).
    pub fn from_resources(all: Vec<Resource>) -> Resources {
        let mut by_kind = HashMap::new();
        let mut by_resource = HashMap::new();
        for (i, r) in all.iter().enumerate() {
            by_kind.insert((r.api.api_version.clone(), r.api.kind.clone()), i);
            let key = (r.api.group.clone(), r.api.plural.clone());
            if r.preferred || !by_resource.contains_key(&key) {
                by_resource.insert(key, i);
            }
        }
        Resources {
            all,
            by_kind,
            by_resource,
        }
    }

    /// Every resource in every version.
    pub fn all(&self) -> &[Resource] {
        &self.all
    }

    /// The preferred version of every resource allowing all of `verbs`.
    pub fn preferred_supporting<'a>(
        &'a self,
        verbs: &'a [&'a str],
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        self.all
            .iter()
            .filter(move |r| r.preferred && r.supports(verbs))
    }

    /// The resource of objects with this `apiVersion` and `kind`.
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Option<&Resource> {
        self.by_kind
            .get(&(api_version.to_owned(), kind.to_owned()))
            .map(|&i| &self.all[i])
    }

    /// The preferred version of `plural` in `group`.
    pub fn for_resource(&self, group: &str, plural: &str) -> Option<&Resource> {
        self.by_resource
            .get(&(group.to_owned(), plural.to_owned()))
            .map(|&i| &self.all[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(group: &str, version: &str, kind: &str, plural: &str, preferred: bool) -> Resource {
        let api_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Resource {
            api: ApiResource {
                group: group.into(),
                version: version.into(),
                api_version,
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced: true,
            verbs: vec!["list".into(), "watch".into(), "delete".into()],
            preferred,
            subresources: vec![],
        }
    }

    #[test]
    fn kinds_map_to_resources_in_any_version_and_plurals_to_the_preferred_one() {
        let r = Resources::from_resources(vec![
            res(
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                true,
            ),
            res(
                "autoscaling",
                "v1",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                false,
            ),
            res("", "v1", "Pod", "pods", true),
        ]);
        assert_eq!(
            r.for_kind("autoscaling/v1", "HorizontalPodAutoscaler")
                .unwrap()
                .api
                .version,
            "v1"
        );
        assert_eq!(
            r.for_resource("autoscaling", "horizontalpodautoscalers")
                .unwrap()
                .api
                .version,
            "v2"
        );
        assert_eq!(r.for_kind("v1", "Pod").unwrap().group_resource(), "pods");
        assert_eq!(r.preferred_supporting(&["list", "watch"]).count(), 2);
        assert_eq!(r.preferred_supporting(&["deletecollection"]).count(), 0);
    }
}
