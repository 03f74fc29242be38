//! `fieldValidation=Strict|Warn|Ignore`: reporting fields the kind's schema does not know.
//!
//! Upstream decodes strictly and reports unknown fields as a 400 (`Strict`), as `Warning`
//! headers (`Warn`, the default), or not at all (`Ignore`); either way unknown fields are
//! dropped before storage (by typed decoding for built-ins, by pruning for custom resources).

use serde_json::Value;
use skiff_api::registry::ResourceInfo;

use crate::error::{ApiError, ApiResult};
use crate::request::Query;
use crate::schema;

/// The client's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Reject unknown fields.
    Strict,
    /// Warn about them.
    Warn,
    /// Drop them silently.
    Ignore,
}

impl Directive {
    /// From the `fieldValidation` query parameter (default Warn).
    pub fn from_query(query: &Query) -> ApiResult<Self> {
        match query.non_empty("fieldValidation") {
            None | Some("Warn") => Ok(Directive::Warn),
            Some("Strict") => Ok(Directive::Strict),
            Some("Ignore") => Ok(Directive::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}, supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// The unknown fields of an object, by its kind's schema.
pub fn unknown_fields(info: &ResourceInfo, obj: &Value) -> Vec<String> {
    let Some(kind_schema) = info.strategy.schema() else {
        return Vec::new();
    };
    let Some(root) = kind_schema.definitions.get(&kind_schema.root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    schema::unknown_fields(&kind_schema.definitions, root, obj, "", &mut out);
    out
}

/// Apply the directive to found unknown fields.
pub fn report(
    directive: Directive,
    unknown: Vec<String>,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    let rendered: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match directive {
        Directive::Strict => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            rendered.join(", ")
        ))),
        Directive::Warn => {
            warnings.extend(rendered);
            Ok(())
        }
        Directive::Ignore => Ok(()),
    }
}
