//! Get and list: selectors, `resourceVersion` semantics and `limit`/`continue` pagination.
//!
//! Semantics follow upstream's "Resource versions" documentation: no resourceVersion is a
//! consistent read at the latest revision; `resourceVersionMatch=Exact` reads at exactly the
//! given revision (410 once compacted); `NotOlderThan` (or a bare non-zero resourceVersion)
//! reads at a revision at least that new. A continue token pins the revision of the first page.

use axum::response::Response;
use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_api::registry::ResourceInfo;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_store::{RangeRequest, Revision};

use super::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::objects::{self, labels, parse_revision};
use crate::output;

/// GET a named object.
pub async fn get(ctx: &Ctx) -> ApiResult<Response> {
    let (obj, _) = ctx
        .state
        .objects
        .get_existing(&ctx.info, ctx.namespace(), ctx.name())
        .await?;
    Ok(output::object_response(
        StatusCode::OK,
        &ctx.info,
        &obj,
        ctx.output,
    ))
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Default)]
pub struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    /// Parse `labelSelector` and `fieldSelector`, refusing field keys the kind does not support.
    pub fn from_query(ctx: &Ctx) -> ApiResult<Self> {
        let mut filter = Filter::default();
        if let Some(text) = ctx.query.non_empty("labelSelector") {
            let selector = skiff_api::selector::parse_label_selector(text)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
            if !selector.is_empty() {
                filter.labels = Some(selector);
            }
        }
        let mut field_text = ctx.query.non_empty("fieldSelector").map(str::to_owned);
        // A watch of a named object (`.../pods/x?watch=true`) watches that name.
        if ctx.path.subresource.is_none()
            && let Some(name) = &ctx.path.name
        {
            let by_name = format!("metadata.name={name}");
            field_text = Some(match field_text {
                Some(t) => format!("{t},{by_name}"),
                None => by_name,
            });
        }
        if let Some(text) = field_text {
            let selector = skiff_api::selector::parse_field_selector(&text)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut supported = vec!["metadata.name", "metadata.namespace"];
            supported.extend(ctx.info.strategy.field_selector_keys());
            for key in selector.keys() {
                if !supported.contains(&key) {
                    let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {key} (supported: {})",
                        list.join(", ")
                    )));
                }
            }
            if !selector.is_empty() {
                filter.fields = Some(selector);
            }
        }
        Ok(filter)
    }

    /// Whether there is any selector.
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// Whether an object passes both selectors.
    pub fn matches(&self, info: &ResourceInfo, obj: &Value) -> bool {
        if let Some(sel) = &self.labels
            && !sel.matches(&labels(obj))
        {
            return false;
        }
        if let Some(sel) = &self.fields {
            let strategy = &info.strategy;
            if !sel.matches(&|key: &str| strategy.field_value(obj, key)) {
                return false;
            }
        }
        true
    }
}

/// A decoded continue token: the revision of the first page and the last key returned.
#[derive(Debug, PartialEq, Eq)]
pub struct ContinueToken {
    /// Revision the list is served at.
    pub revision: Revision,
    /// Last key returned.
    pub start_after: String,
}

impl ContinueToken {
    /// Encode as upstream-style opaque base64 JSON.
    pub fn encode(&self) -> String {
        let body = json!({ "v": "meta.k8s.io/v1", "rv": self.revision, "start": self.start_after });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body.to_string())
    }

    /// Decode, checking the key is inside `prefix` so a token cannot read other resources.
    pub fn decode(text: &str, prefix: &str) -> ApiResult<Self> {
        let bad = || ApiError::bad_request(format!("continue key is not valid: {text:?}"));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
            .map_err(|_| bad())?;
        let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
        let revision = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
        let start_after = v
            .get("start")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned();
        if !start_after.starts_with(prefix) || revision <= 0 {
            return Err(bad());
        }
        Ok(ContinueToken {
            revision,
            start_after,
        })
    }
}

/// The revision a list should read at, from `resourceVersion`/`resourceVersionMatch`.
async fn list_revision(ctx: &Ctx) -> ApiResult<Revision> {
    let rv = ctx.query.non_empty("resourceVersion");
    let matching = ctx.query.non_empty("resourceVersionMatch");
    match (rv, matching) {
        (None, Some(_)) => Err(invalid_list_options(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        (None, None) | (Some("0"), None | Some("NotOlderThan")) => Ok(0),
        (Some(rv), Some("Exact")) => {
            let revision = parse_revision(rv)?;
            if revision == 0 {
                return Err(invalid_list_options(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
            Ok(revision)
        }
        (Some(rv), None | Some("NotOlderThan")) => {
            let wanted = parse_revision(rv)?;
            wait_for_revision(ctx, wanted).await?;
            Ok(0)
        }
        (Some(_), Some(other)) => Err(ApiError::bad_request(format!(
            "Unsupported resourceVersionMatch {other:?}: supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// Wait briefly for the store to reach a revision (another API server may be ahead), else 504.
pub async fn wait_for_revision(ctx: &Ctx, wanted: Revision) -> ApiResult<()> {
    let store = &ctx.state.objects.store;
    for _ in 0..30 {
        let current = store.current_revision().await?;
        if current >= wanted {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let current = store.current_revision().await?;
    Err(ApiError::timeout(
        format!("Too large resource version: {wanted}, current: {current}"),
        1,
    ))
}

fn invalid_list_options(field: &str, detail: &str) -> ApiError {
    let errors = vec![skiff_api::field::FieldError::forbidden(
        &skiff_api::field::Path::new(field),
        detail,
    )];
    ApiError::invalid("ListOptions", "meta.k8s.io", "", &errors)
}

/// One page of a list.
pub struct ListPage {
    /// Matching objects.
    pub items: Vec<Value>,
    /// The revision served.
    pub revision: Revision,
    /// The continue token, if more may follow.
    pub continue_token: Option<String>,
    /// Remaining items when known (no selectors).
    pub remaining: Option<usize>,
}

/// Read a list page at a revision, filtering, honouring `limit` and `continue`.
pub async fn read_page(
    ctx: &Ctx,
    filter: &Filter,
    limit: usize,
    token: Option<ContinueToken>,
    revision: Revision,
) -> ApiResult<ListPage> {
    let prefix = objects::prefix(&ctx.info, ctx.namespace());
    let (mut revision, mut start_after) = match token {
        Some(t) => (t.revision, Some(t.start_after)),
        None => (revision, None),
    };
    let api_version = ctx.info.api_version();
    let mut items = Vec::new();
    loop {
        let want = if limit == 0 {
            0
        } else {
            (limit - items.len()).max(if filter.is_empty() { 0 } else { 256 })
        };
        let request = RangeRequest {
            prefix: prefix.clone(),
            start_after: start_after.clone(),
            limit: want,
            revision,
        };
        let page = ctx.state.objects.store.range(request).await.map_err(|e| match e {
            skiff_store::Error::Compacted { .. } => ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ),
            other => other.into(),
        })?;
        revision = page.revision;
        let mut last_key = None;
        for (i, kv) in page.items.iter().enumerate() {
            let obj = objects::decode(kv, &api_version)?;
            last_key = Some(kv.key.clone());
            if filter.matches(&ctx.info, &obj) {
                items.push(obj);
                if limit != 0 && items.len() == limit {
                    let more = page.more || i + 1 < page.items.len();
                    let remaining = page.remaining + (page.items.len() - i - 1);
                    let token = more.then(|| {
                        ContinueToken {
                            revision,
                            start_after: kv.key.clone(),
                        }
                        .encode()
                    });
                    let remaining = (more && filter.is_empty()).then_some(remaining);
                    return Ok(ListPage {
                        items,
                        revision,
                        continue_token: token,
                        remaining,
                    });
                }
            }
        }
        if !page.more || last_key.is_none() {
            return Ok(ListPage {
                items,
                revision,
                continue_token: None,
                remaining: None,
            });
        }
        start_after = last_key;
    }
}

/// GET a collection.
pub async fn list(ctx: &Ctx) -> ApiResult<Response> {
    let filter = Filter::from_query(ctx)?;
    let limit = ctx.query.int("limit")?.unwrap_or(0).max(0) as usize;
    let prefix = objects::prefix(&ctx.info, ctx.namespace());
    let token = match ctx.query.non_empty("continue") {
        Some(text) => {
            if ctx
                .query
                .non_empty("resourceVersion")
                .is_some_and(|rv| rv != "0")
            {
                return Err(invalid_list_options(
                    "resourceVersion",
                    "specifying resource version is not allowed when using continue",
                ));
            }
            Some(ContinueToken::decode(text, &prefix)?)
        }
        None => None,
    };
    let revision = if token.is_some() {
        0
    } else {
        list_revision(ctx).await?
    };
    let page = read_page(ctx, &filter, limit, token, revision).await?;
    let mut meta = json!({ "resourceVersion": page.revision.to_string() });
    if let Some(c) = page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    Ok(output::list_response(
        &ctx.info, page.items, meta, ctx.output,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_stay_in_prefix() {
        let t = ContinueToken {
            revision: 42,
            start_after: "/registry/core/pods/default/a".into(),
        };
        let text = t.encode();
        assert_eq!(
            ContinueToken::decode(&text, "/registry/core/pods/").unwrap(),
            t
        );
        assert!(ContinueToken::decode(&text, "/registry/core/secrets/").is_err());
        assert!(ContinueToken::decode("garbage!", "/registry/").is_err());
    }
}
