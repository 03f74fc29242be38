//! How server-side apply sees a kind's schema: for each value, whether it is a leaf (scalar or
//! atomic), an object walked field by field, or a list merged as a whole, as a set or by keys.
//!
//! The input is the kind's OpenAPI v3 schema ([`KindSchema`]): generated from the built-in
//! types (decorated with upstream's `x-kubernetes-*` extensions) or taken from a CRD. Parts
//! without a schema (`x-kubernetes-preserve-unknown-fields`, `RawExtension`) are *untyped*
//! and, like upstream's deduced schema, treat objects as granular and lists as atomic.

use serde_json::{Map, Value};

use crate::registry::KindSchema;

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// Replaced whole.
    Atomic,
    /// A set of scalars.
    Set,
    /// Objects identified by these key fields.
    Map(Vec<String>),
}

/// A position in a schema.
#[derive(Debug, Clone, Copy)]
pub enum Node<'a> {
    /// A schema fragment, possibly a `$ref`/`allOf` wrapper.
    Schema(&'a Value),
    /// No schema: shape deduced from the value.
    Untyped,
}

/// What a value at a node is, for merging and ownership.
#[derive(Debug, Clone)]
pub enum Shape<'a> {
    /// Owned and replaced as a whole.
    Leaf,
    /// Walked key by key.
    Object {
        /// Declared fields.
        properties: Option<&'a Map<String, Value>>,
        /// The schema of keys that are not declared fields.
        additional: Node<'a>,
    },
    /// A list.
    List {
        /// Merge behaviour.
        kind: ListKind,
        /// The items' schema.
        items: Node<'a>,
    },
}

/// A kind's schema with its definitions, for resolving `$ref`s.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    definitions: Option<&'a Map<String, Value>>,
    root: Node<'a>,
}

const REF_PREFIX: &str = "#/components/schemas/";

impl<'a> Schema<'a> {
    /// The schema of a kind; `None` gives an untyped walk.
    pub fn new(kind: Option<&'a KindSchema>) -> Self {
        match kind {
            Some(k) => Schema {
                definitions: Some(&k.definitions),
                root: k
                    .definitions
                    .get(&k.root)
                    .map_or(Node::Untyped, Node::Schema),
            },
            None => Schema {
                definitions: None,
                root: Node::Untyped,
            },
        }
    }

    /// The node of the whole object.
    pub fn root(&self) -> Node<'a> {
        self.root
    }

    /// The shape of `value` at `node`. A value that does not fit its schema (a string where
    /// an object is declared) is a leaf.
    pub fn shape(&self, node: Node<'a>, value: &Value) -> Shape<'a> {
        let resolved = match node {
            Node::Untyped => return untyped_shape(value),
            Node::Schema(s) => self.resolve(s),
        };
        let shape = match resolved.classify() {
            Some(shape) => shape,
            None => return untyped_shape(value),
        };
        match (&shape, value) {
            (Shape::Object { .. }, Value::Object(_)) | (Shape::List { .. }, Value::Array(_)) => {
                shape
            }
            _ => Shape::Leaf,
        }
    }

    /// The node of field `name` inside an object shape, and whether it is a declared field
    /// (declared fields that hold objects are not members themselves; map keys are).
    pub fn field(&self, shape: &Shape<'a>, name: &str) -> (Node<'a>, bool) {
        match shape {
            Shape::Object {
                properties,
                additional,
            } => match properties.and_then(|p| p.get(name)) {
                Some(s) => (Node::Schema(s), true),
                None => (*additional, false),
            },
            _ => (Node::Untyped, false),
        }
    }

    fn resolve(&self, mut schema: &'a Value) -> Resolved<'a> {
        let mut out = Resolved::default();
        for _ in 0..32 {
            out.absorb(schema);
            if let Some(name) = schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
                && let Some(target) = self.definitions.and_then(|d| d.get(name))
            {
                schema = target;
                continue;
            }
            let wrapped = ["allOf", "anyOf", "oneOf"].iter().find_map(|k| {
                schema.get(*k).and_then(Value::as_array).and_then(|alts| {
                    alts.iter()
                        .find(|alt| alt.get("type").and_then(Value::as_str) != Some("null"))
                })
            });
            match wrapped {
                Some(inner) => schema = inner,
                None => break,
            }
        }
        out
    }
}

/// Facts gathered while following `$ref`/`allOf` wrappers; the outermost mention wins.
#[derive(Debug, Default)]
struct Resolved<'a> {
    types: Vec<&'a str>,
    properties: Option<&'a Map<String, Value>>,
    additional: Option<&'a Value>,
    items: Option<&'a Value>,
    list_type: Option<&'a str>,
    list_keys: Option<Vec<String>>,
    map_type: Option<&'a str>,
    preserve_unknown: bool,
    int_or_string: bool,
}

impl<'a> Resolved<'a> {
    fn absorb(&mut self, s: &'a Value) {
        if self.types.is_empty() {
            match s.get("type") {
                Some(Value::String(t)) => self.types.push(t),
                Some(Value::Array(ts)) => {
                    self.types.extend(ts.iter().filter_map(Value::as_str));
                }
                _ => {}
            }
            self.types.retain(|t| *t != "null");
        }
        if self.properties.is_none() {
            self.properties = s.get("properties").and_then(Value::as_object);
        }
        if self.additional.is_none() {
            self.additional = s.get("additionalProperties");
        }
        if self.items.is_none() {
            self.items = s.get("items");
        }
        if self.list_type.is_none() {
            self.list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
        }
        if self.list_keys.is_none() {
            self.list_keys = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                });
        }
        if self.map_type.is_none() {
            self.map_type = s
                .get("x-kubernetes-map-type")
                .and_then(Value::as_str)
                .or_else(|| s.get("x-kubernetes-struct-type").and_then(Value::as_str));
        }
        self.preserve_unknown |= s
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        self.int_or_string |= s
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    }

    /// `None`: nothing known, deduce from the value.
    fn classify(&self) -> Option<Shape<'a>> {
        if self.int_or_string {
            return Some(Shape::Leaf);
        }
        let is = |t: &str| self.types.contains(&t);
        if is("array") || (self.types.is_empty() && self.items.is_some()) {
            let kind = match (self.list_type, &self.list_keys) {
                (Some("set"), _) => ListKind::Set,
                (Some("map"), Some(keys)) => ListKind::Map(keys.clone()),
                _ => ListKind::Atomic,
            };
            let items = self.items.map_or(Node::Untyped, Node::Schema);
            return Some(Shape::List { kind, items });
        }
        let objectish = is("object")
            || (self.types.is_empty() && (self.properties.is_some() || self.additional.is_some()));
        if objectish {
            if self.map_type == Some("atomic") {
                return Some(Shape::Leaf);
            }
            if self.properties.is_none() && self.additional.is_none() {
                // `type: object` alone (or with preserve-unknown-fields): free-form.
                return None;
            }
            let additional = match self.additional {
                Some(s @ Value::Object(_)) => Node::Schema(s),
                _ => Node::Untyped,
            };
            return Some(Shape::Object {
                properties: self.properties,
                additional,
            });
        }
        if self.types.is_empty() || self.preserve_unknown {
            return None;
        }
        Some(Shape::Leaf)
    }
}

fn untyped_shape<'a>(value: &Value) -> Shape<'a> {
    match value {
        Value::Object(_) => Shape::Object {
            properties: None,
            additional: Node::Untyped,
        },
        _ => Shape::Leaf,
    }
}
