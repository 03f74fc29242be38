//! The three PATCH flavours as pure functions over `serde_json::Value`:
//!
//! - [`apply_json_patch`]: JSON patch, RFC 6902 (`application/json-patch+json`);
//! - [`apply_merge_patch`]: JSON merge patch, RFC 7386 (`application/merge-patch+json`);
//! - [`apply_strategic_merge_patch`]: strategic merge patch
//!   (`application/strategic-merge-patch+json`), upstream
//!   k8s.io/apimachinery/pkg/util/strategicpatch/patch.go, driven by [`crate::listmeta`].
//!
//! [`PatchError`] says which HTTP status upstream's patch handler
//! (k8s.io/apiserver/pkg/endpoints/handlers/patch.go) answers for each failure, and what its
//! Status message reads: see [`PatchError::status_code`], [`PatchError::reason`] and
//! [`PatchError::status_message`].

mod gofmt;
mod strategic;

pub use strategic::apply_strategic_merge_patch;

use serde_json::Value;

/// Upstream's limit on the operations of one JSON patch (`maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Why a patch could not be applied.
///
/// The HTTP status upstream answers with (see [`PatchError::status_code`]):
///
/// | status | variants |
/// |---|---|
/// | 400 BadRequest | [`DecodeJsonPatch`](Self::DecodeJsonPatch), [`InvalidDocument`](Self::InvalidDocument), [`PrimitiveListFormat`](Self::PrimitiveListFormat), [`RetainKeysFormat`](Self::RetainKeysFormat), [`SetElementOrderFormat`](Self::SetElementOrderFormat) |
/// | 413 RequestEntityTooLarge | [`TooManyOperations`](Self::TooManyOperations) |
/// | 422 Invalid | [`JsonPatchOperation`](Self::JsonPatchOperation), [`ListOfLists`](Self::ListOfLists) |
/// | 500 (reason unknown) | every other strategic-merge failure: upstream returns these errors unwrapped, so they surface as internal errors with the error text as message |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The JSON patch body is not an array of valid operations.
    #[error("error decoding json patch: {reason}")]
    DecodeJsonPatch {
        /// The decoder's complaint.
        reason: String,
    },
    /// The JSON patch has more operations than upstream allows.
    #[error("The allowed maximum operations in a JSON patch is {max}, got {count}")]
    TooManyOperations {
        /// Operations in the patch.
        count: usize,
        /// The limit, [`MAX_JSON_PATCH_OPERATIONS`].
        max: usize,
    },
    /// A JSON patch operation failed: a `test` did not match, or a path (or `from`) does not
    /// exist. Messages follow upstream's json-patch library.
    #[error("{}", operation_message(.op, .path, .from.as_deref(), *.failure))]
    JsonPatchOperation {
        /// The index of the operation in the patch.
        index: usize,
        /// The operation name (`add`, `remove`, `replace`, `move`, `copy`, `test`).
        op: &'static str,
        /// The operation's `path`.
        path: String,
        /// The operation's `from`, for `move` and `copy`.
        from: Option<String>,
        /// What failed.
        failure: OperationFailure,
    },
    /// The document or the strategic merge patch is not a JSON object.
    #[error("invalid JSON document")]
    InvalidDocument,
    /// A `$deleteFromPrimitiveList` key is malformed.
    #[error("invalid patch format of primitive list")]
    PrimitiveListFormat,
    /// A `$retainKeys` directive is not a list, or the patch sets a key it does not retain.
    #[error("invalid patch format of retainKeys")]
    RetainKeysFormat,
    /// A `$setElementOrder` key is malformed.
    #[error("invalid patch format of setElementOrder list")]
    SetElementOrderFormat,
    /// A merging list holds lists.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// A list item lacks the list's merge key (upstream `ErrNoMergeKey`).
    #[error("map: {item} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// The item, printed as Go prints a map (`map[image:nginx]`).
        item: String,
        /// The merge key.
        key: String,
    },
    /// A `$patch` directive other than `replace`/`delete` in a map, or other than
    /// `replace`/`delete`/`merge` in a list (upstream `ErrBadPatchType`).
    #[error("unknown patch type: {directive} in map: {map}")]
    UnknownDirective {
        /// The directive.
        directive: String,
        /// The map holding it, printed as Go prints a map.
        map: String,
    },
    /// `$patch: merge` inside a list, which upstream never implemented.
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,
    /// Objects in a list that merges, or is deleted from, without a merge key.
    #[error("cannot merge lists without merge key for {type_kind}")]
    NoMergeKeyDeclared {
        /// The Go kind of the item type (`struct`, `map`, `interface`).
        type_kind: &'static str,
    },
    /// A value has another JSON type than the operation needs (upstream `ErrBadArgType`).
    #[error("expected a {expected}, but received a {actual}")]
    ArgumentType {
        /// The Go type wanted, e.g. `[]interface {}`.
        expected: &'static str,
        /// The Go type found, e.g. `string`.
        actual: &'static str,
    },
    /// A list item that must be an object is not.
    #[error("value for key {index} is not a map")]
    ItemNotAMap {
        /// The item's index.
        index: usize,
    },
    /// The items of merged lists have different JSON types.
    #[error("list element types are not identical: {lists}")]
    ElementTypes {
        /// The lists, printed as Go prints them.
        lists: String,
    },
    /// A `$setElementOrder` list names no items and the lists are empty.
    #[error("no elements in any of the given slices")]
    NoElements,
    /// The patch list's order contradicts its `$setElementOrder` list.
    #[error("The order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}\n")]
    SetElementOrderMismatch {
        /// The patch list, printed as Go prints it.
        patch: String,
        /// The order list, printed as Go prints it.
        order: String,
    },
    /// The patch merges into a field the type does not have.
    #[error("unable to find api field in struct {type_name} for the json field \"{field}\"")]
    UnknownField {
        /// The type's name, e.g. `PodSpec`.
        type_name: String,
        /// The JSON field.
        field: String,
    },
}

/// How a JSON patch operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationFailure {
    /// A `test` found another value.
    TestFailed,
    /// The `path` does not exist (or its parent does not, for `add`).
    MissingPath,
    /// The `from` path does not exist.
    MissingFrom,
    /// A `move` into its own child.
    MoveIntoItself,
}

fn operation_message(
    op: &str,
    path: &str,
    from: Option<&str>,
    failure: OperationFailure,
) -> String {
    // upstream: gopkg.in/evanphx/json-patch.v4, the library behind the API server's JSON patch.
    match failure {
        OperationFailure::TestFailed => format!("testing value {path} failed: test failed"),
        OperationFailure::MissingPath if op == "replace" => {
            format!("replace operation does not apply: doc is missing key: {path}: missing value")
        }
        OperationFailure::MissingPath => {
            format!("{op} operation does not apply: doc is missing path: \"{path}\": missing value")
        }
        OperationFailure::MissingFrom => format!(
            "{op} operation does not apply: doc is missing from path: {}: missing value",
            from.unwrap_or_default()
        ),
        OperationFailure::MoveIntoItself => {
            format!(
                "move operation does not apply: cannot move {} into its own child {path}",
                from.unwrap_or_default()
            )
        }
    }
}

impl PatchError {
    /// The HTTP status upstream answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::DecodeJsonPatch { .. }
            | PatchError::InvalidDocument
            | PatchError::PrimitiveListFormat
            | PatchError::RetainKeysFormat
            | PatchError::SetElementOrderFormat => 400,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::JsonPatchOperation { .. } | PatchError::ListOfLists => 422,
            _ => 500,
        }
    }

    /// The Status `reason` upstream answers with; "" (StatusReasonUnknown) for the 500s,
    /// which upstream returns as plain errors.
    pub fn reason(&self) -> &'static str {
        match self.status_code() {
            400 => "BadRequest",
            413 => "RequestEntityTooLarge",
            422 => "Invalid",
            _ => "",
        }
    }

    /// The Status `message` upstream answers with. The 422s carry upstream's generic text
    /// (`NewGenericServerResponse` drops the detail; the detail is this error's `Display`,
    /// worth logging); 413 is prefixed as upstream's `NewRequestEntityTooLargeError` does.
    pub fn status_message(&self) -> String {
        match self.status_code() {
            422 => "the server rejected our request due to an error in our request".to_owned(),
            413 => format!("Request entity too large: {self}"),
            _ => self.to_string(),
        }
    }
}

/// Apply a JSON patch (RFC 6902) given as its JSON value (an array of operations).
///
/// The operations apply atomically: on failure the document is untouched (the copy returned
/// on success is the only output).
pub fn apply_json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::DecodeJsonPatch {
            reason: e.to_string(),
        })?;
    if operations.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            count: operations.0.len(),
            max: MAX_JSON_PATCH_OPERATIONS,
        });
    }
    let mut out = doc.clone();
    json_patch::patch(&mut out, &operations).map_err(|e| {
        let (op, from) = match &operations.0[e.operation] {
            json_patch::PatchOperation::Add(_) => ("add", None),
            json_patch::PatchOperation::Remove(_) => ("remove", None),
            json_patch::PatchOperation::Replace(_) => ("replace", None),
            json_patch::PatchOperation::Move(m) => ("move", Some(m.from.to_string())),
            json_patch::PatchOperation::Copy(c) => ("copy", Some(c.from.to_string())),
            json_patch::PatchOperation::Test(_) => ("test", None),
        };
        let failure = match e.kind {
            json_patch::PatchErrorKind::TestFailed => OperationFailure::TestFailed,
            json_patch::PatchErrorKind::InvalidFromPointer => OperationFailure::MissingFrom,
            json_patch::PatchErrorKind::CannotMoveInsideItself => OperationFailure::MoveIntoItself,
            _ => OperationFailure::MissingPath,
        };
        PatchError::JsonPatchOperation {
            index: e.operation,
            op,
            path: e.path.to_string(),
            from,
            failure,
        }
    })?;
    Ok(out)
}

/// Apply a JSON merge patch (RFC 7386): objects merge recursively, `null` deletes a key, any
/// other value (lists included) replaces.
pub fn apply_merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// Whether strategic merge patch applies to objects of this OpenAPI definition: only to the
/// built-in types, whose merge metadata is known. Upstream answers `415 Unsupported Media
/// Type` for custom resources (their Go type is `Unstructured`, without patch tags).
pub fn supports_strategic_merge(definition: &str) -> bool {
    crate::listmeta::definition(definition).is_some()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    }

    #[test]
    fn json_patch_applies_operations_in_order() {
        let patch = json!([
            {"op": "add", "path": "/metadata/labels/tier", "value": "fe"},
            {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.27"},
            {"op": "test", "path": "/metadata/name", "value": "p"},
            {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
            {"op": "move", "from": "/metadata/labels/copy", "path": "/metadata/labels/moved"},
            {"op": "remove", "path": "/metadata/labels/app"},
            {"op": "add", "path": "/spec/containers/-", "value": {"name": "d"}},
        ]);
        let out = apply_json_patch(&pod(), &patch).unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"tier": "fe", "moved": "web"})
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c", "image": "nginx:1.27"}, {"name": "d"}])
        );
    }

    #[test]
    fn json_patch_failures_are_422_with_upstream_texts() {
        let cases = [
            (
                json!([{"op": "test", "path": "/metadata/name", "value": "q"}]),
                "testing value /metadata/name failed: test failed",
            ),
            (
                json!([{"op": "add", "path": "/spec/missing/x", "value": 1}]),
                "add operation does not apply: doc is missing path: \"/spec/missing/x\": missing value",
            ),
            (
                json!([{"op": "remove", "path": "/metadata/annotations"}]),
                "remove operation does not apply: doc is missing path: \"/metadata/annotations\": missing value",
            ),
            (
                json!([{"op": "replace", "path": "/spec/replicas", "value": 2}]),
                "replace operation does not apply: doc is missing key: /spec/replicas: missing value",
            ),
            (
                json!([{"op": "move", "from": "/nope", "path": "/x"}]),
                "move operation does not apply: doc is missing from path: /nope: missing value",
            ),
        ];
        for (patch, message) in cases {
            let err = apply_json_patch(&pod(), &patch).unwrap_err();
            assert_eq!(err.to_string(), message);
            assert_eq!((err.status_code(), err.reason()), (422, "Invalid"));
            assert_eq!(
                err.status_message(),
                "the server rejected our request due to an error in our request"
            );
        }
    }

    #[test]
    fn json_patch_is_atomic() {
        // The first operation succeeds, the second fails: nothing may change.
        let doc = pod();
        let patch = json!([
            {"op": "add", "path": "/metadata/labels/x", "value": "y"},
            {"op": "test", "path": "/metadata/name", "value": "other"},
        ]);
        assert!(apply_json_patch(&doc, &patch).is_err());
        assert_eq!(doc, pod());
    }

    #[test]
    fn malformed_json_patches_are_400_and_huge_ones_413() {
        for patch in [
            json!({"op": "add"}),
            json!([{"op": "frobnicate", "path": "/a"}]),
            json!([{"op": "add", "value": 1}]),
        ] {
            let err = apply_json_patch(&pod(), &patch).unwrap_err();
            assert!(
                matches!(err, PatchError::DecodeJsonPatch { .. }),
                "{patch}: {err}"
            );
            assert_eq!(err.status_code(), 400);
        }
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/metadata/name", "value": "p"}))
            .collect();
        let err = apply_json_patch(&pod(), &Value::Array(ops)).unwrap_err();
        assert_eq!(err.status_code(), 413);
        assert_eq!(
            err.status_message(),
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }

    // RFC 7386 section 3 examples, plus the Kubernetes case of replacing a list.
    #[test]
    fn merge_patch_follows_rfc7386() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(apply_merge_patch(&doc, &patch), want, "{doc} + {patch}");
        }
        let out = apply_merge_patch(&pod(), &json!({"spec": {"containers": [{"name": "d"}]}}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "d"}]),
            "lists are replaced, not merged"
        );
    }

    #[test]
    fn strategic_merge_is_for_built_in_types_only() {
        assert!(supports_strategic_merge("io.k8s.api.apps.v1.Deployment"));
        assert!(supports_strategic_merge(
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
        ));
        assert!(!supports_strategic_merge("com.example.v1.Widget"));
        assert!(!supports_strategic_merge(""));
    }
}
