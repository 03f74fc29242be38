//! [`ObjectKey`]: the namespace/name pair caches and queues are keyed by (client-go's
//! `MetaNamespaceKeyFunc`).

use std::fmt;

use kube::ResourceExt;

/// A namespaced name; `namespace` is empty for cluster-scoped objects. Keys order by
/// namespace first, so a cache keyed by them lists one namespace as a contiguous range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectKey {
    /// Namespace ("" for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A cluster-scoped key.
    pub fn cluster(name: impl Into<String>) -> ObjectKey {
        ObjectKey::new("", name)
    }

    /// The key of an object.
    pub fn of<K: ResourceExt>(obj: &K) -> ObjectKey {
        ObjectKey::new(obj.namespace().unwrap_or_default(), obj.name_any())
    }

    /// Parse `namespace/name` or `name`.
    pub fn parse(s: &str) -> ObjectKey {
        match s.split_once('/') {
            Some((ns, name)) => ObjectKey::new(ns, name),
            None => ObjectKey::cluster(s),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_and_parse_like_client_go() {
        let k = ObjectKey::new("default", "web");
        assert_eq!(k.to_string(), "default/web");
        assert_eq!(ObjectKey::parse("default/web"), k);
        assert_eq!(ObjectKey::cluster("node-1").to_string(), "node-1");
        assert_eq!(ObjectKey::parse("node-1"), ObjectKey::cluster("node-1"));
    }

    #[test]
    fn keys_sort_by_namespace_first() {
        let mut keys = vec![
            ObjectKey::new("b", "a"),
            ObjectKey::new("a", "z"),
            ObjectKey::new("a", "b"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                ObjectKey::new("a", "b"),
                ObjectKey::new("a", "z"),
                ObjectKey::new("b", "a")
            ]
        );
    }
}
