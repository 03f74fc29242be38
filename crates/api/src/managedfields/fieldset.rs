//! Sets of field paths, and their wire form `FieldsV1`.
//!
//! A path is a sequence of path elements, each kept in its `FieldsV1` spelling so the set
//! serializes without a second representation:
//!
//! - `f:<name>`: a field of an object (struct field or map key);
//! - `k:<json>`: an item of a list keyed by `x-kubernetes-list-map-keys`, e.g.
//!   `k:{"name":"app"}` (keys sorted, compact JSON);
//! - `v:<json>`: an item of a set list, by value;
//! - `i:<n>`: an item by index (lists without keys; rare).
//!
//! The set is a trie. A node is a *member* when the path ending there is itself in the set;
//! inner nodes of objects that are walked into are not members, list items are. `FieldsV1`
//! spells a member with children as a `".": {}` entry next to the children.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// One path: its elements in `FieldsV1` spelling.
pub type FieldPath = Vec<String>;

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding just the path that ends at this node.
    pub(crate) fn leaf() -> Self {
        FieldSet {
            member: true,
            children: BTreeMap::new(),
        }
    }

    /// Whether the set has no paths.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub(crate) fn set_member(&mut self) {
        self.member = true;
    }

    pub(crate) fn is_member(&self) -> bool {
        self.member
    }

    pub(crate) fn children(&self) -> &BTreeMap<String, FieldSet> {
        &self.children
    }

    pub(crate) fn child_mut(&mut self, element: String) -> &mut FieldSet {
        self.children.entry(element).or_default()
    }

    pub(crate) fn put_child(&mut self, element: String, child: FieldSet) {
        if !child.is_empty() {
            self.children.insert(element, child);
        }
    }

    /// Add a path.
    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.child_mut(first.clone()).insert(rest),
        }
    }

    /// Whether the path is in the set.
    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether some path in the set lies strictly below `path`.
    pub fn has_descendant(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => !self.children.values().all(FieldSet::is_empty),
            Some((first, rest)) => self
                .children
                .get(first)
                .is_some_and(|c| c.has_descendant(rest)),
        }
    }

    /// Add every path of `other`.
    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, v) in &other.children {
            self.child_mut(k.clone()).union_with(v);
        }
    }

    /// The paths of `self` that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            let child = match other.children.get(k) {
                Some(o) => v.difference(o),
                None => v.clone(),
            };
            out.put_child(k.clone(), child);
        }
        out
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, v) in &self.children {
            if let Some(o) = other.children.get(k) {
                out.put_child(k.clone(), v.intersection(o));
            }
        }
        out
    }

    /// Every path in the set, parents before children, siblings in element order.
    pub fn paths(&self) -> Vec<FieldPath> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, v) in &self.children {
            prefix.push(k.clone());
            v.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The set in `FieldsV1` form.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        // Upstream writes "." first, then the children.
        if self.member && !self.children.values().all(FieldSet::is_empty) {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, v) in &self.children {
            if !v.is_empty() {
                map.insert(k.clone(), v.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Parse the `FieldsV1` form. At the top level an empty object is the empty set; below,
    /// an empty object marks a member leaf.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let map = value
            .as_object()
            .ok_or_else(|| "fieldsV1 must be an object".to_owned())?;
        let mut set = FieldSet::new();
        for (k, v) in map {
            let child = parse_node(k, v)?;
            set.children.insert(k.clone(), child);
        }
        Ok(set)
    }
}

fn parse_node(element: &str, value: &Value) -> Result<FieldSet, String> {
    check_element(element)?;
    let map = value
        .as_object()
        .ok_or_else(|| format!("fieldsV1 entry {element:?} must be an object"))?;
    if map.is_empty() {
        return Ok(FieldSet::leaf());
    }
    let mut node = FieldSet::new();
    for (k, v) in map {
        if k == "." {
            node.member = true;
        } else {
            node.children.insert(k.clone(), parse_node(k, v)?);
        }
    }
    Ok(node)
}

fn check_element(element: &str) -> Result<(), String> {
    let bad = || format!("invalid fieldsV1 path element {element:?}");
    let (prefix, rest) = element.split_once(':').ok_or_else(bad)?;
    match prefix {
        "f" => Ok(()),
        "k" => match serde_json::from_str::<Value>(rest) {
            Ok(Value::Object(_)) => Ok(()),
            _ => Err(bad()),
        },
        "v" => serde_json::from_str::<Value>(rest)
            .map(|_| ())
            .map_err(|_| bad()),
        "i" => rest.parse::<usize>().map(|_| ()).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The element naming field `name` of an object.
pub fn field_element(name: &str) -> String {
    format!("f:{name}")
}

/// The element naming a keyed list item by its key fields (sorted by name).
pub fn key_element(keys: &[(&str, &Value)]) -> String {
    let mut sorted: Vec<(&str, &Value)> = keys.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut map = Map::new();
    for (k, v) in sorted {
        map.insert(k.to_owned(), v.clone());
    }
    format!("k:{}", Value::Object(map))
}

/// The element naming a set item by value.
pub fn value_element(value: &Value) -> String {
    format!("v:{value}")
}

/// A path as upstream prints it in conflict messages: `.spec.containers[name="app"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        let (prefix, rest) = element.split_once(':').unwrap_or(("f", element));
        match prefix {
            "f" => {
                out.push('.');
                out.push_str(rest);
            }
            "k" => {
                out.push('[');
                if let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(rest) {
                    let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    out.push_str(&parts.join(","));
                }
                out.push(']');
            }
            "v" => {
                out.push_str("[=");
                out.push_str(rest);
                out.push(']');
            }
            _ => {
                out.push('[');
                out.push_str(rest);
                out.push(']');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(elements: &[&str]) -> FieldPath {
        elements.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn fields_v1_round_trips_with_member_markers() {
        let wire = json!({
            "f:metadata": { "f:labels": { "f:app": {} } },
            "f:spec": {
                "f:containers": {
                    "k:{\"name\":\"app\"}": { ".": {}, "f:image": {}, "f:name": {} }
                },
                "f:replicas": {}
            }
        });
        let set = FieldSet::from_fields_v1(&wire).unwrap();
        assert!(set.contains(&p(&["f:spec", "f:replicas"])));
        assert!(set.contains(&p(&["f:spec", "f:containers", "k:{\"name\":\"app\"}"])));
        assert!(!set.contains(&p(&["f:spec", "f:containers"])));
        assert_eq!(set.to_fields_v1(), wire);
        assert_eq!(
            serde_json::to_string(&set.to_fields_v1()).unwrap(),
            serde_json::to_string(&wire).unwrap()
        );
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::new();
        a.insert(&p(&["f:spec", "f:replicas"]));
        a.insert(&p(&["f:spec", "f:paused"]));
        let mut b = FieldSet::new();
        b.insert(&p(&["f:spec", "f:replicas"]));
        assert_eq!(a.intersection(&b), b);
        let d = a.difference(&b);
        assert_eq!(d.paths(), vec![p(&["f:spec", "f:paused"])]);
        assert!(b.difference(&a).is_empty());
        assert!(a.has_descendant(&p(&["f:spec"])));
        assert!(!a.has_descendant(&p(&["f:spec", "f:paused"])));
        let mut u = b.clone();
        u.union_with(&d);
        assert_eq!(u, a);
    }

    #[test]
    fn paths_print_like_upstream() {
        let key = key_element(&[("protocol", &json!("TCP")), ("containerPort", &json!(80))]);
        assert_eq!(key, r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        let path = vec![
            field_element("spec"),
            field_element("ports"),
            key,
            field_element("name"),
        ];
        assert_eq!(
            display_path(&path),
            r#".spec.ports[containerPort=80,protocol="TCP"].name"#
        );
        assert_eq!(
            display_path(&[field_element("finalizers"), value_element(&json!("a"))]),
            r#".finalizers[="a"]"#
        );
    }

    #[test]
    fn malformed_fields_v1_is_rejected() {
        assert!(FieldSet::from_fields_v1(&json!({ "x:y": {} })).is_err());
        assert!(FieldSet::from_fields_v1(&json!({ "f:a": 1 })).is_err());
        assert!(FieldSet::from_fields_v1(&json!({ "k:notjson": {} })).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
    }
}
