//! Turning a request path and query into what it asks for (upstream `RequestInfoFactory`).

use std::collections::HashMap;

use crate::error::{ApiError, ApiResult};

/// The verb a request performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET a named object.
    Get,
    /// GET a collection.
    List,
    /// GET a collection with `watch=true`.
    Watch,
    /// POST to a collection.
    Create,
    /// PUT a named object.
    Update,
    /// PATCH a named object.
    Patch,
    /// DELETE a named object.
    Delete,
    /// DELETE a collection.
    DeleteCollection,
}

impl Verb {
    /// The lower-case verb name used in discovery and RBAC.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// A parsed resource request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Plural resource name.
    pub resource: String,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource, if any.
    pub subresource: Option<String>,
}

/// Parse `/api/v1/...` or `/apis/<group>/<version>/...` below the group version.
/// Returns `None` for paths that are not resource paths (discovery and the like).
pub fn parse_resource_path(path: &str) -> Option<ResourcePath> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => ((*group).to_owned(), (*version).to_owned(), rest),
        _ => return None,
    };
    if rest.is_empty() || rest.iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut rest: &[&str] = rest;
    // The deprecated `/watch/` prefix form.
    if rest.first() == Some(&"watch") {
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() >= 2 {
        namespace = Some(rest[1].to_owned());
        // `/namespaces/<ns>/status` and `/finalize` are subresources of the namespace itself.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        } else {
            namespace = None;
        }
    }
    let resource = (*rest.first()?).to_owned();
    let name = rest.get(1).map(|s| (*s).to_owned());
    let subresource = if rest.len() > 2 {
        Some(rest[2..].join("/"))
    } else {
        None
    };
    Some(ResourcePath {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
    })
}

/// Query parameters as a map (last one wins), decoded.
pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Typed access to the query parameters the handlers use.
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A parameter that is absent or empty counts as unset.
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True"))
    }

    /// An integer parameter; malformed values are a 400.
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value {v:?} for query parameter {key}: must be an integer"
                ))
            }),
        }
    }

    /// `dryRun=All` (any other value is rejected like upstream).
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.0.get("dryRun") {
            None => Ok(false),
            Some(v) if v.is_empty() => Ok(false),
            Some(v) if v == "All" => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: unsupported dry run value {v:?}, supported values: \"All\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> ResourcePath {
        parse_resource_path(path).unwrap()
    }

    #[test]
    fn parses_namespaced_paths() {
        let r = p("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.resource, "pods");
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = p("/apis/apps/v1/namespaces/x/deployments");
        assert_eq!(
            (r.group.as_str(), r.resource.as_str(), r.name),
            ("apps", "deployments", None)
        );
    }

    #[test]
    fn namespace_subresources_are_not_resources() {
        let r = p("/api/v1/namespaces/foo/finalize");
        assert_eq!(r.namespace, None);
        assert_eq!(r.resource, "namespaces");
        assert_eq!(r.name.as_deref(), Some("foo"));
        assert_eq!(r.subresource.as_deref(), Some("finalize"));
        let r = p("/api/v1/namespaces/foo");
        assert_eq!((r.namespace, r.resource.as_str()), (None, "namespaces"));
    }

    #[test]
    fn non_resource_paths() {
        assert_eq!(parse_resource_path("/api"), None);
        assert_eq!(parse_resource_path("/api/v1"), None);
        assert_eq!(parse_resource_path("/apis/apps/v1"), None);
        assert_eq!(parse_resource_path("/healthz"), None);
    }
}
