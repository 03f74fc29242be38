//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write records which manager set which fields, the way upstream's structured-merge-diff
//! does:
//!
//! - An **update** (create, PUT, JSON/merge/strategic patch) compares the object before and
//!   after: the changed and added fields move to the writing manager (an `Update` entry keyed
//!   by manager, API version and subresource), removed fields leave every manager.
//! - An **apply** merges the applied configuration into the live object using the schema's
//!   list and map types. Fields whose value it changes but which another manager owns are
//!   *conflicts*: the apply fails unless forced, in which case ownership moves. The applier
//!   then owns exactly the fields it applied, and fields it applied last time but no longer
//!   does, and that nobody else owns, are removed from the object.
//!
//! Server-owned metadata (`name`, `uid`, `resourceVersion`…) and, for kinds with a status
//! subresource, `status` on the main resource (or everything but `status` on the
//! subresource) are never tracked.

mod fieldset;
mod schema;

use serde_json::{Map, Value, json};

pub use fieldset::{FieldPath, FieldSet, display_path};
pub use schema::{ListKind, Node, Schema, Shape};

use fieldset::{field_element, key_element, value_element};

/// Metadata fields the server owns; never part of a field set.
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Which part of the object a request writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `status` is untracked when the kind has a status subresource.
    Main {
        /// Whether the kind has a status subresource.
        has_status: bool,
    },
    /// The status subresource: only `status` is tracked.
    Status,
    /// The scale subresource: tracked like the main resource, recorded apart.
    Scale,
}

impl Scope {
    fn subresource(self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
            Scope::Scale => "scale",
        }
    }
}

/// The kind of write a manager performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who is writing.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The field manager name.
    pub manager: &'a str,
    /// The API version the request used (`apps/v1`).
    pub api_version: &'a str,
    /// The current time, RFC 3339.
    pub now: &'a str,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// API version the fields were written in.
    pub api_version: String,
    /// Subresource written through, "" for the main resource.
    pub subresource: String,
    /// When the manager's set last changed.
    pub time: Option<String>,
    /// The owned fields.
    pub fields: FieldSet,
}

impl Entry {
    fn is(&self, writer: &Writer, op: Operation, scope: Scope) -> bool {
        self.manager == writer.manager
            && self.operation == op.as_str()
            && self.subresource == scope.subresource()
            && (op == Operation::Apply || self.api_version == writer.api_version)
    }

    /// The manager as upstream names it in conflict messages.
    pub fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<Entry, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let fields = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f)?,
            None => FieldSet::new(),
        };
        let fields_type = s("fieldsType");
        if !fields_type.is_empty() && fields_type != "FieldsV1" {
            return Err(format!("unsupported fieldsType {fields_type:?}"));
        }
        Ok(Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            subresource: s("subresource"),
            time: v.get("time").and_then(Value::as_str).map(str::to_owned),
            fields,
        })
    }
}

/// An apply that changes fields other managers own.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The owner, as [`Entry::describe`] prints it.
    pub manager: String,
    /// The contested field.
    pub path: FieldPath,
}

/// Upstream's message for failed applies: `Apply failed with 1 conflict: conflict with
/// "team-a": .spec.replicas`, or grouped by manager for several.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager,
            display_path(&only.path)
        );
    }
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for manager in managers {
        lines.push(format!("conflicts with {manager}:"));
        for c in conflicts.iter().filter(|c| c.manager == manager) {
            lines.push(format!("- {}", display_path(&c.path)));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// The `managedFields` entries of an object.
pub fn entries_of(obj: &Value) -> Result<Vec<Entry>, String> {
    match obj.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(Entry::from_json).collect(),
        Some(_) => Err("metadata.managedFields must be a list".into()),
    }
}

fn store_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    // Upstream's order: Apply before Update, then oldest first, then by name.
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        let list = entries.iter().map(Entry::to_json).collect();
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Tracks field ownership for one kind.
#[derive(Debug, Clone, Copy)]
pub struct FieldManager<'a> {
    schema: Schema<'a>,
    scope: Scope,
}

/// What changed between two versions of an object.
struct Comparison {
    /// Added or changed.
    changed: FieldSet,
    /// Present before, gone now.
    removed: FieldSet,
}

impl<'a> FieldManager<'a> {
    /// A field manager over a kind's schema, for writes in `scope`.
    pub fn new(schema: Schema<'a>, scope: Scope) -> Self {
        FieldManager { schema, scope }
    }

    /// The fields of `obj` that ownership is tracked for.
    pub fn field_set(&self, obj: &Value) -> FieldSet {
        let view = self.tracked_view(obj);
        walk(&self.schema, self.schema.root(), &view)
    }

    /// Record a non-apply write of `new` (over `live`, `None` for a create) by `writer`, in
    /// `new.metadata.managedFields`.
    ///
    /// `managedFields` sent with the request replace the live ones when they differ (that is
    /// how clients edit ownership); a list of one empty entry resets ownership altogether.
    pub fn update(&self, live: Option<&Value>, new: &mut Value, writer: &Writer) {
        let live_entries = live
            .map(|l| entries_of(l).unwrap_or_default())
            .unwrap_or_default();
        let live_raw = live.and_then(|l| l.pointer("/metadata/managedFields"));
        let mut entries = match new.pointer("/metadata/managedFields") {
            Some(Value::Array(sent))
                if !sent.is_empty() && Some(&Value::Array(sent.clone())) != live_raw =>
            {
                match entries_of(new) {
                    Ok(sent)
                        if sent
                            .iter()
                            .all(|e| e.manager.is_empty() && e.fields.is_empty()) =>
                    {
                        store_entries(new, Vec::new());
                        return;
                    }
                    Ok(sent) => sent,
                    Err(_) => live_entries,
                }
            }
            _ => live_entries,
        };
        let empty = json!({});
        let cmp = self.compare(live.unwrap_or(&empty), new);
        for e in entries.iter_mut() {
            if !e.is(writer, Operation::Update, self.scope) {
                e.fields = e.fields.difference(&cmp.changed).difference(&cmp.removed);
            }
        }
        let index = match entries
            .iter()
            .position(|e| e.is(writer, Operation::Update, self.scope))
        {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    manager: writer.manager.to_owned(),
                    operation: "Update".into(),
                    api_version: writer.api_version.to_owned(),
                    subresource: self.scope.subresource().to_owned(),
                    time: None,
                    fields: FieldSet::new(),
                });
                entries.len() - 1
            }
        };
        let mine = &mut entries[index];
        let mut fields = mine.fields.clone();
        fields.union_with(&cmp.changed);
        let fields = fields.difference(&cmp.removed);
        if fields != mine.fields || mine.time.is_none() {
            mine.time = Some(writer.now.to_owned());
        }
        mine.fields = fields;
        store_entries(new, entries);
    }

    /// Apply `config` over `live` (`None`: the object does not exist yet) for `writer`.
    /// Returns the merged object with its `managedFields`, or the conflicts when other managers
    /// own fields the apply changes and `force` is off.
    pub fn apply(
        &self,
        live: Option<&Value>,
        config: &Value,
        writer: &Writer,
        force: bool,
    ) -> Result<Value, Vec<Conflict>> {
        let empty = json!({});
        let base = live.unwrap_or(&empty);
        let mut entries = entries_of(base).unwrap_or_default();
        let mut merged = merge(&self.schema, self.schema.root(), Some(base), config);
        let applied = self.field_set(config);
        let cmp = self.compare(base, &merged);

        let is_me = |e: &Entry| e.is(writer, Operation::Apply, self.scope);
        let mut conflicts = Vec::new();
        for e in entries.iter().filter(|e| !is_me(e)) {
            for path in e.fields.intersection(&cmp.changed).paths() {
                conflicts.push(Conflict {
                    manager: e.describe(),
                    path,
                });
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }
        for e in entries.iter_mut().filter(|e| !is_me(e)) {
            e.fields = e.fields.difference(&cmp.changed).difference(&cmp.removed);
        }

        let previous = match entries.iter().position(is_me) {
            Some(i) => entries.remove(i),
            None => Entry {
                manager: writer.manager.to_owned(),
                operation: "Apply".into(),
                api_version: writer.api_version.to_owned(),
                subresource: self.scope.subresource().to_owned(),
                time: None,
                fields: FieldSet::new(),
            },
        };
        let mut owned = applied.clone();
        for e in &entries {
            owned.union_with(&e.fields);
        }
        let dropped = previous.fields.difference(&owned);
        for path in dropped.paths() {
            if owned.has_descendant(&path) {
                continue;
            }
            remove_path(&mut merged, &path, &owned);
        }
        let time = if previous.fields == applied && previous.time.is_some() {
            previous.time.clone()
        } else {
            Some(writer.now.to_owned())
        };
        entries.push(Entry {
            api_version: writer.api_version.to_owned(),
            time,
            fields: applied,
            ..previous
        });
        store_entries(&mut merged, entries);
        Ok(merged)
    }

    fn compare(&self, old: &Value, new: &Value) -> Comparison {
        let old_view = self.tracked_view(old);
        let new_view = self.tracked_view(new);
        let old_set = walk(&self.schema, self.schema.root(), &old_view);
        let new_set = walk(&self.schema, self.schema.root(), &new_view);
        let mut changed = new_set.difference(&old_set);
        let removed = old_set.difference(&new_set);
        let mut prefix = Vec::new();
        modified_leaves(
            &old_view,
            &new_view,
            &old_set,
            &new_set,
            &mut prefix,
            &mut changed,
        );
        added_maps(
            &self.schema,
            self.schema.root(),
            Some(&old_view),
            &new_view,
            &mut prefix,
            &mut changed,
        );
        Comparison { changed, removed }
    }

    /// `obj` without the parts ownership is not tracked for.
    fn tracked_view(&self, obj: &Value) -> Value {
        let Some(map) = obj.as_object() else {
            return json!({});
        };
        let mut out = Map::new();
        for (k, v) in map {
            match (k.as_str(), self.scope) {
                ("apiVersion" | "kind", _) => {}
                ("status", Scope::Status) => {
                    out.insert(k.clone(), v.clone());
                }
                (_, Scope::Status) => {}
                ("status", Scope::Main { has_status: true } | Scope::Scale) => {}
                ("metadata", _) => {
                    let mut meta = v.as_object().cloned().unwrap_or_default();
                    for f in UNTRACKED_METADATA {
                        meta.remove(*f);
                    }
                    if !meta.is_empty() {
                        out.insert(k.clone(), Value::Object(meta));
                    }
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Object(out)
    }
}

/// The field set of `value` at `node`.
fn walk<'a>(schema: &Schema<'a>, node: Node<'a>, value: &Value) -> FieldSet {
    let shape = schema.shape(node, value);
    match (&shape, value) {
        (Shape::Object { .. }, Value::Object(map)) => {
            let mut set = FieldSet::new();
            for (k, v) in map {
                let (child, declared) = schema.field(&shape, k);
                let mut c = walk(schema, child, v);
                let empty_object = v.as_object().is_some_and(Map::is_empty);
                if v.is_null() || empty_object || !declared {
                    c.set_member();
                }
                set.put_child(field_element(k), c);
            }
            set
        }
        (
            Shape::List {
                kind: ListKind::Set,
                ..
            },
            Value::Array(items),
        ) => {
            let mut set = FieldSet::new();
            for item in items {
                set.put_child(value_element(item), FieldSet::leaf());
            }
            set
        }
        (
            Shape::List {
                kind: ListKind::Map(keys),
                items: item_node,
            },
            Value::Array(items),
        ) => {
            let mut set = FieldSet::new();
            for (i, item) in items.iter().enumerate() {
                let mut c = walk(schema, *item_node, item);
                c.set_member();
                set.put_child(item_element(keys, item, i), c);
            }
            set
        }
        _ => FieldSet::leaf(),
    }
}

fn item_element(keys: &[String], item: &Value, index: usize) -> String {
    let present: Vec<(&str, &Value)> = keys
        .iter()
        .filter_map(|k| item.get(k).map(|v| (k.as_str(), v)))
        .collect();
    if present.is_empty() {
        format!("i:{index}")
    } else {
        key_element(&present)
    }
}

/// Merge an applied configuration into `live` following the schema.
fn merge<'a>(schema: &Schema<'a>, node: Node<'a>, live: Option<&Value>, config: &Value) -> Value {
    let shape = schema.shape(node, config);
    match (&shape, config) {
        (Shape::Object { .. }, Value::Object(cfg)) => {
            let mut out = live.and_then(Value::as_object).cloned().unwrap_or_default();
            for (k, v) in cfg {
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                let (child, _) = schema.field(&shape, k);
                let merged = merge(schema, child, out.get(k), v);
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (
            Shape::List {
                kind: ListKind::Set,
                ..
            },
            Value::Array(cfg),
        ) => {
            let mut out = live.and_then(Value::as_array).cloned().unwrap_or_default();
            for item in cfg {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Value::Array(out)
        }
        (
            Shape::List {
                kind: ListKind::Map(keys),
                items,
            },
            Value::Array(cfg),
        ) => {
            let mut out = live.and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, item) in cfg.iter().enumerate() {
                let element = item_element(keys, item, i);
                let existing = out
                    .iter()
                    .enumerate()
                    .position(|(j, o)| item_element(keys, o, j) == element);
                match existing {
                    Some(j) => out[j] = merge(schema, *items, Some(&out[j]), item),
                    None => out.push(merge(schema, *items, None, item)),
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Add to `out` the leaves present in both versions whose values differ.
fn modified_leaves(
    old: &Value,
    new: &Value,
    old_set: &FieldSet,
    new_set: &FieldSet,
    prefix: &mut FieldPath,
    out: &mut FieldSet,
) {
    for (element, new_child) in new_set.children() {
        let Some(old_child) = old_set.children().get(element) else {
            continue;
        };
        let (Some(ov), Some(nv)) = (child_value(old, element), child_value(new, element)) else {
            continue;
        };
        prefix.push(element.clone());
        if new_child.children().is_empty() || old_child.children().is_empty() {
            if ov != nv && new_child.is_member() && old_child.is_member() {
                out.insert(prefix);
            }
        } else {
            modified_leaves(ov, nv, old_child, new_child, prefix, out);
        }
        prefix.pop();
    }
}

/// Add to `out` the maps (`labels`, `data`…) that `new` has and `old` lacks: like upstream,
/// a manager that adds a map owns the map itself too (`".": {}`), not only its keys.
fn added_maps<'a>(
    schema: &Schema<'a>,
    node: Node<'a>,
    old: Option<&Value>,
    new: &Value,
    prefix: &mut FieldPath,
    out: &mut FieldSet,
) {
    let shape = schema.shape(node, new);
    match (&shape, new) {
        (Shape::Object { properties, .. }, Value::Object(map)) => {
            if properties.is_none() && old.is_none() && !prefix.is_empty() && !map.is_empty() {
                out.insert(prefix);
            }
            for (k, v) in map {
                let (child, _) = schema.field(&shape, k);
                prefix.push(field_element(k));
                added_maps(schema, child, old.and_then(|o| o.get(k)), v, prefix, out);
                prefix.pop();
            }
        }
        (
            Shape::List {
                kind: ListKind::Map(keys),
                items,
            },
            Value::Array(list),
        ) => {
            for (i, item) in list.iter().enumerate() {
                let element = item_element(keys, item, i);
                let before = old.and_then(|o| child_value(o, &element));
                prefix.push(element);
                added_maps(schema, *items, before, item, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// The value a path element names inside `value`.
fn child_value<'v>(value: &'v Value, element: &str) -> Option<&'v Value> {
    let (kind, rest) = element.split_once(':')?;
    match kind {
        "f" => value.as_object()?.get(rest),
        "i" => value.as_array()?.get(rest.parse::<usize>().ok()?),
        "v" => {
            let wanted: Value = serde_json::from_str(rest).ok()?;
            value.as_array()?.iter().find(|i| **i == wanted)
        }
        "k" => {
            let keys: Map<String, Value> = serde_json::from_str(rest).ok()?;
            value
                .as_array()?
                .iter()
                .find(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)))
        }
        _ => None,
    }
}

/// Remove the value at `path`, then any object it leaves empty that nobody owns.
fn remove_path(root: &mut Value, path: &[String], owned: &FieldSet) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let Some(parent) = navigate_mut(root, parent_path) else {
        return;
    };
    let removed = remove_child(parent, last);
    if !removed {
        return;
    }
    // Clean up containers emptied by the removal (upstream's Go types drop them on encode).
    for depth in (1..path.len()).rev() {
        let ancestor = &path[..depth];
        if !ancestor[depth - 1].starts_with("f:") || owned.contains(ancestor) {
            break;
        }
        let empty = navigate_mut(root, ancestor).is_some_and(|v| match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        });
        if !empty {
            break;
        }
        let Some(parent) = navigate_mut(root, &ancestor[..depth - 1]) else {
            break;
        };
        remove_child(parent, &ancestor[depth - 1]);
    }
}

fn navigate_mut<'v>(mut value: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    for element in path {
        value = child_value_mut(value, element)?;
    }
    Some(value)
}

fn child_value_mut<'v>(value: &'v mut Value, element: &str) -> Option<&'v mut Value> {
    if let Some(name) = element.strip_prefix("f:") {
        return value.as_object_mut()?.get_mut(name);
    }
    let index = {
        let found = child_value(value, element)?;
        value
            .as_array()?
            .iter()
            .position(|i| std::ptr::eq(i, found))?
    };
    value.as_array_mut()?.get_mut(index)
}

fn remove_child(parent: &mut Value, element: &str) -> bool {
    if let Some(name) = element.strip_prefix("f:") {
        return parent
            .as_object_mut()
            .is_some_and(|m| m.shift_remove(name).is_some());
    }
    let Some(found) = child_value(parent, element) else {
        return false;
    };
    let found: *const Value = found;
    let Some(items) = parent.as_array_mut() else {
        return false;
    };
    let before = items.len();
    items.retain(|i| !std::ptr::eq(i, found));
    items.len() != before
}

#[cfg(test)]
mod tests;
