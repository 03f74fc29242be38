//! Strategic merge patch, with the semantics of upstream's server side
//! (k8s.io/apimachinery/pkg/util/strategicpatch/patch.go, `StrategicMergeMapPatch`: parallel
//! lists merged, unmatched nulls ignored):
//!
//! - maps merge key by key; `null` deletes a key;
//! - a list whose field has `patchStrategy: merge` merges: objects by the field's
//!   `patchMergeKey` (matching items merge recursively, new items are added), scalars as a
//!   set; other lists, and maps with `patchStrategy: replace`, are replaced whole;
//! - directives: `$patch: replace` and `$patch: delete` in a map or list item,
//!   `$retainKeys: [...]` (keys to keep in the object), `$deleteFromPrimitiveList/<field>:
//!   [...]` (scalars to remove), `$setElementOrder/<field>: [...]` (the order of the merged
//!   list). `$patch: merge` is rejected as upstream rejects it;
//! - order of a merged list: patch items in patch order (or `$setElementOrder` order),
//!   interleaved with the object's other items in their old order; an item new to the list
//!   goes before the first old item it cannot be ordered against (so a patch adding one
//!   container puts it first, as upstream's "kubectl patch" documentation shows).
//!
//! Types come from [`crate::listmeta`]; under a field without metadata (an unknown definition,
//! a map of scalars) maps still merge and lists are replaced, as JSON merge patch does.

use serde_json::{Map, Value};

use super::PatchError;
use super::gofmt::{go_fmt, go_type};
use crate::listmeta::{self, Definition, FieldType, ItemType, PatchStrategy};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

type Result<T, E = PatchError> = std::result::Result<T, E>;

/// Apply a strategic merge patch to `doc`, an object of the OpenAPI `definition` (e.g.
/// `io.k8s.api.apps.v1.Deployment`). Both must be JSON objects.
///
/// With a definition [`listmeta`] does not know, every list is replaced (JSON merge patch
/// semantics for lists); the API server should instead refuse strategic merge patches for
/// such kinds (see [`super::supports_strategic_merge`]), as upstream does for custom resources.
pub fn apply_strategic_merge_patch(doc: &Value, patch: &Value, definition: &str) -> Result<Value> {
    let (Value::Object(original), Value::Object(patch)) = (doc, patch) else {
        return Err(PatchError::InvalidDocument);
    };
    let types = Types(listmeta::definitions());
    let schema = types.schema(definition);
    merge_map(original.clone(), patch.clone(), schema).map(Value::Object)
}

/// The table of definitions that types are looked up in (sorted by name).
#[derive(Debug, Clone, Copy)]
struct Types(&'static [Definition]);

impl Types {
    fn schema(self, name: &str) -> Schema {
        match self.0.binary_search_by(|d| d.name.cmp(name)) {
            Ok(i) => Schema::Object(&self.0[i], self),
            Err(_) => Schema::Unknown,
        }
    }
}

/// The type of the map being merged.
#[derive(Debug, Clone, Copy)]
enum Schema {
    /// No metadata: maps merge, lists are replaced.
    Unknown,
    /// An object of this definition.
    Object(&'static Definition, Types),
    /// A string-keyed map whose values are objects of this definition.
    MapOf(&'static Definition, Types),
}

/// A field's patch metadata and the schema of its value (of its items, for lists).
#[derive(Debug, Clone, Copy)]
struct Meta {
    schema: Schema,
    strategy: PatchStrategy,
    merge_key: Option<&'static str>,
}

impl Schema {
    /// Upstream `LookupPatchMetadataForStruct`/`ForSlice`: unknown fields of a struct are an
    /// error; keys of a map all share the value type.
    fn lookup(self, key: &str) -> Result<Meta> {
        let none = Meta {
            schema: Schema::Unknown,
            strategy: PatchStrategy::None,
            merge_key: None,
        };
        match self {
            Schema::Unknown => Ok(none),
            Schema::MapOf(def, types) => Ok(Meta {
                schema: Schema::Object(def, types),
                ..none
            }),
            Schema::Object(def, types) => {
                let field = def.field(key).ok_or_else(|| PatchError::UnknownField {
                    type_name: def.name.rsplit('.').next().unwrap_or(def.name).to_owned(),
                    field: key.to_owned(),
                })?;
                let schema = match field.value {
                    FieldType::Object(child) | FieldType::List(ItemType::Object(child)) => {
                        types.schema(child)
                    }
                    FieldType::Map(ItemType::Object(child)) => match types.schema(child) {
                        Schema::Object(def, types) => Schema::MapOf(def, types),
                        other => other,
                    },
                    _ => Schema::Unknown,
                };
                Ok(Meta {
                    schema,
                    strategy: field.patch_strategy,
                    merge_key: field.patch_merge_key,
                })
            }
        }
    }

    /// What Go's `reflect.Kind` of the type would print, for upstream's error text.
    fn kind_name(self) -> &'static str {
        match self {
            Schema::Unknown => "interface",
            Schema::Object(..) => "struct",
            Schema::MapOf(..) => "map",
        }
    }
}

/// Upstream `mergeMap`.
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Schema,
) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                Ok(patch)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(PatchError::UnknownDirective {
                directive: go_fmt(directive),
                map: go_fmt(&Value::Object(patch.clone())),
            }),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, schema)?;

    for (key, mut patch_value) in patch {
        let (key, is_delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(_) => (
                extract_key(
                    &key,
                    DELETE_FROM_PRIMITIVE_LIST,
                    PatchError::PrimitiveListFormat,
                )?,
                true,
            ),
            None => (key, false),
        };
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(original_value) = original.get_mut(&key) else {
            if !is_delete_list {
                discard_nulls(&mut patch_value);
                if let Some(value) = remove_directives(patch_value) {
                    original.insert(key, value);
                }
            }
            continue;
        };
        if std::mem::discriminant(original_value) != std::mem::discriminant(&patch_value) {
            if !is_delete_list {
                discard_nulls(&mut patch_value);
                match remove_directives(patch_value) {
                    Some(value) => *original_value = value,
                    None => {
                        original.remove(&key);
                    }
                }
            }
            continue;
        }
        match (original_value, patch_value) {
            (Value::Object(original_map), Value::Object(patch_map)) => {
                let meta = schema.lookup(&key)?;
                let merged = if meta.strategy.replaces() {
                    patch_map
                } else {
                    merge_map(std::mem::take(original_map), patch_map, meta.schema)?
                };
                *original_map = merged;
            }
            (Value::Array(original_list), Value::Array(patch_list)) => {
                let meta = schema.lookup(&key)?;
                let list = std::mem::take(original_list);
                *original_list = merge_list_field(list, patch_list, meta, is_delete_list)?;
            }
            (slot, value) => *slot = value,
        }
    }
    Ok(original)
}

/// Upstream `mergeSliceHandler`: merge when the field merges (or for a deletion list), else
/// the patch list replaces the old one as it is.
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: Meta,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    if meta.strategy.merges() || is_delete_list {
        merge_list(original, patch, meta.schema, meta.merge_key, is_delete_list)
    } else {
        Ok(patch)
    }
}

/// The key after `<prefix>/`, or the given format error.
fn extract_key(key: &str, prefix: &str, error: PatchError) -> Result<String> {
    match key.split_once('/') {
        Some((head, rest)) if head == prefix => Ok(rest.to_owned()),
        _ => Err(error),
    }
}

/// Upstream `applyRetainKeysDirective`: drop from `original` every key `$retainKeys` does not
/// list; the patch itself may only set retained keys.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::RetainKeysFormat);
    };
    let retained = |key: &str| retain.iter().any(|v| v.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !retained(key) {
            return Err(PatchError::RetainKeysFormat);
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// Upstream `mergePatchIntoOriginal`: merge every list that has a `$setElementOrder`, then
/// order it as the directive says (items it does not name keep their place among the rest).
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Schema,
) -> Result<()> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let order = patch.remove(&key).unwrap_or_default();
        let Value::Array(order) = order else {
            return Err(PatchError::ArgumentType {
                expected: "[]interface {}",
                actual: go_type(&order),
            });
        };
        let field = extract_key(&key, SET_ELEMENT_ORDER, PatchError::SetElementOrderFormat)?;
        let original_list = list_at(original, &field)?;
        let patch_list = list_at(patch, &field)?;
        let meta = schema.lookup(&field)?;
        validate_set_element_order(
            patch_list.as_deref().unwrap_or_default(),
            &order,
            meta.merge_key,
        )?;
        let merged = match (&original_list, patch_list.clone()) {
            (Some(old), None) => old.clone(),
            (None, Some(new)) => match remove_directives(Value::Array(new)) {
                Some(Value::Array(items)) => items,
                _ => continue,
            },
            (Some(old), Some(new)) => merge_list_field(old.clone(), new, meta, false)?,
            (None, None) => continue,
        };
        let (in_order, others) = partition(merged, &order, meta.merge_key)?;
        let old = original_list.unwrap_or_default();
        let new = patch_list.unwrap_or_default();
        let kind = element_kind(&[&old, &new])?;
        let old_order = match meta.merge_key {
            Some(key) if kind == Kind::Map && meta.strategy.merges() => {
                aliased_old_order(old, &new, key)
            }
            _ => old,
        };
        let items =
            normalize_element_order(in_order, others, &order, &old_order, meta.merge_key, kind)?;
        original.insert(field.clone(), Value::Array(items));
        patch.remove(&field);
    }
    Ok(())
}

/// The old list as upstream sees it when it orders a merged list by `$setElementOrder`.
///
/// Upstream merges in place: deleting an item shifts the later items left within the same
/// array (leaving a stale copy of the last one), and the first item appended after a deletion
/// lands in the freed slot. The ordering step then reads that array as "the old order"
/// (upstream's object comes from the unstructured converter, whose slices have no spare
/// capacity, so only slots freed by deletions are reused). Replaying this keeps the order of
/// server-only items next to deleted and added ones identical to upstream's.
fn aliased_old_order(old: Vec<Value>, patch: &[Value], key: &str) -> Vec<Value> {
    let mut view = old;
    let capacity = view.len();
    let mut len = capacity;
    let key_of = |item: &Value| item.get(key).cloned();
    for item in patch {
        if item.get(DIRECTIVE).and_then(Value::as_str) != Some("delete") {
            continue;
        }
        let Some(value) = key_of(item) else { continue };
        while let Some(i) = view[..len]
            .iter()
            .position(|v| key_of(v).is_some_and(|k| go_eq(&k, &value)))
        {
            // Go's `append(s[:i], s[i+1:]...)`: shift left; the last slot keeps its value.
            for j in i..len - 1 {
                view[j] = view[j + 1].clone();
            }
            len -= 1;
        }
    }
    let mut keys: Vec<Value> = view[..len].iter().filter_map(key_of).collect();
    let mut shared = true;
    for item in patch.iter().filter(|i| i.get(DIRECTIVE).is_none()) {
        let Some(value) = key_of(item) else { continue };
        if keys.iter().any(|k| go_eq(k, &value)) {
            continue;
        }
        keys.push(value);
        if shared && len < capacity {
            view[len] = item.clone();
            len += 1;
        } else {
            shared = false;
        }
    }
    view
}

/// The list at `key`, `None` when absent; another type is an error.
fn list_at(map: &Map<String, Value>, key: &str) -> Result<Option<Vec<Value>>> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.clone())),
        Some(other) => Err(PatchError::ArgumentType {
            expected: "[]interface {}",
            actual: go_type(other),
        }),
    }
}

/// Upstream `validatePatchWithSetOrderList`: the patch list's items (deletions and directive
/// items aside) must appear in the order list, in the same relative order.
fn validate_set_element_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<()> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let items: Vec<Value> = match merge_key {
        Some(_) => split_deletions(patch_list.to_vec())?.0,
        None => patch_list.to_vec(),
    };
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if items[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if merge_key_equal(&items[p], &order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() && o >= order.len() {
        return Err(PatchError::SetElementOrderMismatch {
            patch: go_fmt(&Value::Array(patch_list.to_vec())),
            order: go_fmt(&Value::Array(order.to_vec())),
        });
    }
    Ok(())
}

fn merge_key_equal(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool> {
    let Some(key) = merge_key else {
        return Ok(go_eq(left, right));
    };
    Ok(go_eq(
        merge_key_value(left, key)?,
        merge_key_value(right, key)?,
    ))
}

/// The value of `key` in a list item, which must be an object holding it.
fn merge_key_value<'a>(item: &'a Value, key: &str) -> Result<&'a Value> {
    let Value::Object(map) = item else {
        return Err(PatchError::ArgumentType {
            expected: "map[string]interface {}",
            actual: go_type(item),
        });
    };
    map.get(key).ok_or_else(|| PatchError::MissingMergeKey {
        item: go_fmt(item),
        key: key.to_owned(),
    })
}

/// Upstream `mergeSlice`.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: Schema,
    merge_key: Option<&str>,
    is_delete_list: bool,
) -> Result<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let kind = element_kind(&[&original, &patch])?;
    if kind != Kind::Map {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.iter().any(|d| go_eq(v, d)))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for item in original.iter().chain(&patch) {
            if !merged.iter().any(|m| go_eq(m, item)) {
                merged.push(item.clone());
            }
        }
        let (in_patch, others) = partition(merged, &patch, None)?;
        return normalize_element_order(in_patch, others, &patch, &original, None, kind);
    }
    let key = merge_key.ok_or(PatchError::NoMergeKeyDeclared {
        type_kind: schema.kind_name(),
    })?;
    let (original, patch) = apply_list_directives(original, patch, key)?;
    let server_order = original.clone();
    let merged = merge_items(original, &patch, key, schema)?;
    let (in_patch, others) = partition(merged, &patch, Some(key))?;
    normalize_element_order(in_patch, others, &patch, &server_order, Some(key), kind)
}

/// Upstream `mergeSliceWithSpecialElements`: `$patch: delete` items remove the old items
/// with their key; a `$patch: replace` item makes the other patch items the whole list.
/// Returns the old list after deletions and the patch items without directives.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = merge_key_value(&item, key)?.clone();
                while let Some(index) = find_by_key(&original, key, &value)? {
                    original.remove(index);
                }
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(PatchError::MergeDirectiveInList),
            _ => {
                return Err(PatchError::UnknownDirective {
                    directive: go_fmt(directive),
                    map: go_fmt(&item),
                });
            }
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// Upstream `findMapInSliceBasedOnKeyValue`: the index of the first object whose `key` equals
/// `value`; items before it that are not objects are an error.
fn find_by_key(items: &[Value], key: &str, value: &Value) -> Result<Option<usize>> {
    for (index, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(PatchError::ItemNotAMap { index });
        };
        if map.get(key).is_some_and(|v| go_eq(v, value)) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Upstream `mergeSliceWithoutSpecialElements`: patch items merge into the old item with the
/// same key, or are appended.
fn merge_items(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    schema: Schema,
) -> Result<Vec<Value>> {
    for item in patch {
        let value = merge_key_value(item, key)?;
        let Value::Object(patch_map) = item else {
            unreachable!("merge_key_value checked the item is an object")
        };
        match find_by_key(&original, key, value)? {
            Some(index) => {
                let Value::Object(old) = std::mem::take(&mut original[index]) else {
                    unreachable!("find_by_key only matches objects")
                };
                original[index] = Value::Object(merge_map(old, patch_map.clone(), schema)?);
            }
            None => original.push(item.clone()),
        }
    }
    Ok(original)
}

/// Split items into those present in `by` (by merge key for objects) and the others.
fn partition(
    items: Vec<Value>,
    by: &[Value],
    merge_key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut present = Vec::new();
    let mut others = Vec::new();
    for item in items {
        let found = match merge_key {
            None => by.iter().any(|b| go_eq(b, &item)),
            Some(key) => find_by_key(by, key, merge_key_value(&item, key)?)?.is_some(),
        };
        if found {
            present.push(item)
        } else {
            others.push(item)
        }
    }
    Ok((present, others))
}

/// The Go kind of list items, which must all have the same JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Scalar(std::mem::Discriminant<Value>),
}

/// Upstream `sliceElementType`.
fn element_kind(lists: &[&[Value]]) -> Result<Kind> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let this = match item {
            Value::Object(_) => Kind::Map,
            Value::Array(_) if kind.is_none() => return Err(PatchError::ListOfLists),
            other => Kind::Scalar(std::mem::discriminant(other)),
        };
        match kind {
            None if item.is_null() => return Err(element_types_error(lists)),
            None => kind = Some(this),
            Some(k) if k != this => return Err(element_types_error(lists)),
            Some(_) => {}
        }
    }
    kind.ok_or(PatchError::NoElements)
}

fn element_types_error(lists: &[&[Value]]) -> PatchError {
    let lists = Value::Array(lists.iter().map(|l| Value::Array(l.to_vec())).collect());
    PatchError::ElementTypes {
        lists: go_fmt(&lists),
    }
}

/// Upstream `normalizeElementOrder`: sort the patch items by the patch order and the others
/// by the old order, then interleave them.
fn normalize_element_order(
    patch_items: Vec<Value>,
    others: Vec<Value>,
    patch_order: &[Value],
    old_order: &[Value],
    merge_key: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>> {
    let patch_items = sort_by_order(patch_items, patch_order, merge_key, kind)?;
    let others = sort_by_order(others, old_order, merge_key, kind)?;
    interleave(others, patch_items, old_order, merge_key, kind)
}

/// Upstream `normalizeSliceOrder`: a stable sort by position in `order`; deletion items last.
fn sort_by_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>> {
    let (mut items, deletions) = if kind == Kind::Map {
        let key = merge_key.unwrap_or_default();
        for item in items.iter().chain(order) {
            merge_key_value(item, key)?;
        }
        split_deletions(items)?
    } else {
        (items, Vec::new())
    };
    items.sort_by_key(|item| index_of(order, item, merge_key, kind).unwrap_or(usize::MAX));
    items.extend(deletions);
    Ok(items)
}

/// Upstream `extractToDeleteItems`: (items, items carrying `$patch: delete`).
fn split_deletions(items: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for item in items {
        if !item.is_object() {
            return Err(PatchError::ArgumentType {
                expected: "map[string]interface {}",
                actual: go_type(&item),
            });
        }
        if item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
            delete.push(item)
        } else {
            keep.push(item)
        }
    }
    Ok((keep, delete))
}

/// The position of `item` in `list`: by merge key value for objects, by value otherwise.
fn index_of(list: &[Value], item: &Value, merge_key: Option<&str>, kind: Kind) -> Option<usize> {
    let project = |v: &'_ Value| -> Value {
        match (kind, merge_key) {
            (Kind::Map, Some(key)) => v.get(key).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let wanted = project(item);
    list.iter().position(|v| go_eq(&project(v), &wanted))
}

/// Upstream `mergeSortedSlice`: insert each of `left` (old items) into `right` (patch items),
/// keeping both relative orders; an old item goes first only when it is known to precede the
/// patch item in the old order.
fn interleave(
    left: Vec<Value>,
    right: Vec<Value>,
    old_order: &[Value],
    merge_key: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                match (
                    index_of(old_order, l, merge_key, kind),
                    index_of(old_order, r, merge_key, kind),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                }
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

/// Upstream `removeDirectives`: drop maps carrying `$patch` (and list items that are such
/// maps) from a value taken from the patch as it is; `None` when the value itself is one.
fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(DIRECTIVE) => None,
        Value::Object(map) => Some(Value::Object(
            map.into_iter()
                .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                .collect(),
        )),
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// Upstream `discardNullValuesFromPatch`: nulls in a new value mean nothing to delete.
fn discard_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(discard_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// Go's `==` on decoded JSON values: numbers compare as float64.
fn go_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const POD: &str = "io.k8s.api.core.v1.Pod";

    fn smp(doc: Value, patch: Value) -> Value {
        apply_strategic_merge_patch(&doc, &patch, POD).unwrap_or_else(|e| panic!("{patch}: {e}"))
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn new_list_items_go_first_and_old_ones_keep_their_order() {
        let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let out = smp(
            doc.clone(),
            json!({"spec": {"containers": [{"name": "b", "image": "x"}]}}),
        );
        assert_eq!(names(&out["spec"]["containers"]), ["a", "b", "c"]);
        assert_eq!(
            out["spec"]["containers"][1],
            json!({"name": "b", "image": "x"})
        );
        let out = smp(doc, json!({"spec": {"containers": [{"name": "d"}]}}));
        assert_eq!(names(&out["spec"]["containers"]), ["d", "a", "b", "c"]);
    }

    #[test]
    fn unknown_struct_fields_are_an_error_only_when_merged() {
        let doc = json!({"spec": {"containers": []}});
        let out = smp(doc.clone(), json!({"spec": {"bogus": {"a": 1}}}));
        assert_eq!(out["spec"]["bogus"], json!({"a": 1}));
        let doc = json!({"spec": {"bogus": {"a": 1}}});
        let err = apply_strategic_merge_patch(&doc, &json!({"spec": {"bogus": {"b": 2}}}), POD)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find api field in struct PodSpec for the json field \"bogus\""
        );
        assert_eq!(err.status_code(), 500);
    }

    #[test]
    fn documents_must_be_objects() {
        let err = apply_strategic_merge_patch(&json!([]), &json!({}), POD).unwrap_err();
        assert_eq!(
            (err.to_string().as_str(), err.status_code()),
            ("invalid JSON document", 400)
        );
    }

    #[test]
    fn numbers_compare_as_go_float64() {
        let doc = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80.0, "protocol": "TCP"}]}]}});
        let out = smp(doc, patch);
        let ports = out["spec"]["containers"][0]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1, "80 and 80.0 are the same merge key");
        assert_eq!(
            (ports[0]["name"].as_str(), ports[0]["protocol"].as_str()),
            (Some("http"), Some("TCP"))
        );
    }
}
