//! The resource registry's vocabulary: what the API server must know about a kind.
//!
//! Every kind served — built-in (`skiff-kinds`) or defined by a CustomResourceDefinition — is
//! described by one [`ResourceInfo`]: its names and scope for discovery and routing, its
//! subresources, and a [`Strategy`] holding the kind's behaviour (defaulting, validation, table
//! printing, field selectors, schema). The API server's handlers, storage and printing are
//! written once against this description.

use std::sync::Arc;

use serde_json::Value;

use crate::field::ErrorList;
use crate::table::{Cells, Column};

/// Names, scope and behaviour of one resource (one group/version/plural).
#[derive(Clone)]
pub struct ResourceInfo {
    /// API group, "" for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// The list kind, e.g. `DeploymentList`.
    pub list_kind: String,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub plural: String,
    /// Singular name, e.g. `deployment`.
    pub singular: String,
    /// Short names for kubectl, e.g. `deploy`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Subresources served, e.g. `status`, `scale`, `binding`.
    pub subresources: Vec<Subresource>,
    /// Whether the main resource accepts writes (false for read-only or virtual kinds).
    pub verbs: Verbs,
    /// The kind's behaviour.
    pub strategy: Arc<dyn Strategy>,
}

impl ResourceInfo {
    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether the kind serves the named subresource.
    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceInfo")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("plural", &self.plural)
            .field("namespaced", &self.namespaced)
            .finish_non_exhaustive()
    }
}

/// Which verbs a resource supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbs {
    /// create
    pub create: bool,
    /// update, patch
    pub update: bool,
    /// delete, deletecollection
    pub delete: bool,
    /// get, list, watch
    pub read: bool,
}

impl Verbs {
    /// Every verb.
    pub const ALL: Verbs = Verbs {
        create: true,
        update: true,
        delete: true,
        read: true,
    };
    /// Only create (e.g. `tokenreviews`).
    pub const CREATE_ONLY: Verbs = Verbs {
        create: true,
        update: false,
        delete: false,
        read: false,
    };

    /// The verb names for discovery, in upstream's order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.create {
            names.push("create");
        }
        if self.delete {
            names.extend(["delete", "deletecollection"]);
        }
        if self.read {
            names.extend(["get", "list"]);
        }
        if self.update {
            names.extend(["patch", "update"]);
        }
        if self.read {
            names.push("watch");
        }
        names
    }
}

/// A subresource and how it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    /// URL segment, e.g. `status`.
    pub name: String,
    /// The kind the subresource speaks (e.g. `Scale` in group `autoscaling`/`v1` for `scale`).
    pub kind: String,
    /// Group of that kind ("" when it is the parent's).
    pub group: String,
    /// Version of that kind ("" when it is the parent's).
    pub version: String,
    /// Verbs for discovery, e.g. `get`, `patch`, `update`.
    pub verbs: Vec<String>,
}

impl Subresource {
    /// A `status` subresource: the parent's kind, get/patch/update.
    pub fn status(kind: &str) -> Self {
        Subresource::new("status", kind, "", "", &["get", "patch", "update"])
    }

    /// A `scale` subresource speaking `autoscaling/v1` Scale.
    pub fn scale() -> Self {
        Subresource::new(
            "scale",
            "Scale",
            "autoscaling",
            "v1",
            &["get", "patch", "update"],
        )
    }

    /// Any subresource.
    pub fn new(name: &str, kind: &str, group: &str, version: &str, verbs: &[&str]) -> Self {
        Subresource {
            name: name.to_owned(),
            kind: kind.to_owned(),
            group: group.to_owned(),
            version: version.to_owned(),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        }
    }
}

/// Which write is being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to the main resource (spec, metadata; status is kept from the old object when
    /// the kind has a status subresource).
    Update,
    /// A change through the `status` subresource.
    UpdateStatus,
    /// A change through a pod's `ephemeralcontainers` subresource: only
    /// `spec.ephemeralContainers` changes, and only by adding containers.
    UpdateEphemeralContainers,
}

/// Why an object could not be admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The body does not decode into the kind's type (upstream answers 400 BadRequest), e.g.
    /// `json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container`.
    Decode(String),
    /// The object decodes but is invalid (422 Invalid with one cause per error).
    Invalid(ErrorList),
}

/// Context for rendering table rows.
#[derive(Debug, Clone, Copy)]
pub struct PrintContext {
    /// Seconds since the Unix epoch, "now" for Age columns.
    pub now_unix: i64,
}

/// A kind's behaviour. All values are the JSON form of one object of the kind.
///
/// Implementations are pure: no IO, no clock except through [`PrintContext`]; the API server
/// calls them from request handlers.
pub trait Strategy: Send + Sync + 'static {
    /// Decode, default, prepare and validate an object for a write, returning the object to
    /// store. Decoding drops fields the kind does not know (after the API server has reported
    /// them under `fieldValidation`). `old` is the stored object for updates.
    ///
    /// Metadata common to all kinds (name, namespace, labels, annotations, ...) is validated by
    /// the API server; this validates what is particular to the kind (the `ValidateX` of upstream).
    fn admit(&self, obj: Value, old: Option<&Value>, op: Operation) -> Result<Value, Rejection>;

    /// Whether a change from `old` to `new` bumps `metadata.generation` (upstream: spec changes
    /// only; for kinds without spec, any change except metadata and status).
    fn generation_changed(&self, old: &Value, new: &Value) -> bool {
        let ignore = ["metadata", "status", "apiVersion", "kind"];
        let strip = |v: &Value| -> Value {
            let mut v = v.clone();
            if let Value::Object(map) = &mut v {
                for key in ignore {
                    map.remove(key);
                }
            }
            v
        };
        strip(old) != strip(new)
    }

    /// Table columns, default ones first; wide ones have priority 1.
    fn columns(&self) -> Vec<Column> {
        vec![Column::name(), Column::age()]
    }

    /// One row's cells, matching [`Strategy::columns`].
    fn row(&self, obj: &Value, ctx: &PrintContext) -> Cells {
        let name = obj
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::String(String::new()));
        vec![name, Value::String(age(obj, ctx))]
    }

    /// Field selector keys this kind supports beyond `metadata.name` and `metadata.namespace`.
    fn field_selector_keys(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The value of a field selector key for an object (`None` for unsupported keys).
    fn field_value(&self, obj: &Value, key: &str) -> Option<String> {
        match key {
            "metadata.name" => obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            "metadata.namespace" => Some(
                obj.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// Where the `scale` subresource finds replicas and the selector (upstream's
    /// `CustomResourceSubresourceScale`); built-in scalable kinds use the defaults.
    fn scale_paths(&self) -> ScalePaths {
        ScalePaths::default()
    }

    /// The kind's OpenAPI schema name (e.g. `io.k8s.api.apps.v1.Deployment`) and the
    /// definitions it refers to, all as JSON Schema (OpenAPI v3 flavour), for OpenAPI
    /// publishing and unknown-field detection. `None` for kinds without a known schema.
    /// Called on every write, so implementations build it once and hand out the `Arc`.
    fn schema(&self) -> Option<Arc<KindSchema>> {
        None
    }
}

/// JSON paths (dot form, e.g. `.spec.replicas`) used by the `scale` subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// Desired replicas.
    pub spec_replicas: String,
    /// Observed replicas.
    pub status_replicas: String,
    /// Where the label selector lives.
    pub label_selector: Option<String>,
    /// Whether the selector at `label_selector` is a `metav1.LabelSelector` object (built-ins)
    /// rather than a serialized string (custom resources).
    pub selector_is_object: bool,
}

impl Default for ScalePaths {
    fn default() -> Self {
        ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".spec.selector".into()),
            selector_is_object: true,
        }
    }
}

/// A kind's schema: a root definition name and every definition reachable from it.
#[derive(Debug, Clone)]
pub struct KindSchema {
    /// The root definition's name, e.g. `io.k8s.api.core.v1.Pod`.
    pub root: String,
    /// Definitions by name; references are `#/components/schemas/<name>`.
    pub definitions: serde_json::Map<String, Value>,
}

/// `Age` cell text for an object: time since `metadata.creationTimestamp`, or `<unknown>`.
pub fn age(obj: &Value, ctx: &PrintContext) -> String {
    match obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
    {
        Some(created) => crate::table::human_duration(ctx.now_unix - created),
        None => "<unknown>".to_owned(),
    }
}

/// Parse an RFC 3339 UTC timestamp (`2024-01-02T03:04:05Z`, fractional seconds allowed) into
/// seconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-03-01T12:30:15Z"), Some(1_709_296_215));
        assert_eq!(
            parse_rfc3339("2024-03-01T12:30:15.123456Z"),
            Some(1_709_296_215)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn verbs_in_discovery_order() {
        assert_eq!(
            Verbs::ALL.names(),
            [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ]
        );
    }
}
