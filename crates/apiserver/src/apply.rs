//! Server-side apply (`application/apply-patch+yaml`): create-or-merge with field managers.
//!
//! This first version merges the applied configuration into the live object with strategic
//! merge semantics and records the manager in `managedFields`; per-field ownership,
//! conflict detection and removal of fields a manager stopped applying are being added in
//! `crate::managedfields` (see docs/ARCHITECTURE.md).

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_api::field::{FieldError, Path};
use skiff_api::registry::Operation;

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::handlers::write::{
    check_name_matches, check_new_object, create_object, guaranteed_update,
};
use crate::objects::metadata_mut;
use crate::output;
use crate::patch::{self, PatchKind};

/// Serve an apply patch.
pub async fn apply(
    ctx: &mut Ctx,
    body: &Bytes,
    op: Operation,
    dry_run: bool,
) -> ApiResult<Response> {
    let manager = ctx.query.non_empty("fieldManager").map(str::to_owned);
    let Some(manager) = manager else {
        let errors = vec![FieldError::required(
            &Path::new("fieldManager"),
            "is required for apply patch",
        )];
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            &errors,
        ));
    };
    let applied = patch::parse(PatchKind::Apply, body)?;
    for field in ["apiVersion", "kind"] {
        if applied
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            return Err(ApiError::bad_request(format!(
                "{field} must be set in an apply patch"
            )));
        }
    }
    let applied = check_new_object(ctx, applied)?;
    check_name_matches(ctx, &applied)?;
    let entry = |api_version: &str| {
        json!({ "manager": manager, "operation": "Apply", "apiVersion": api_version,
                "time": crate::time::now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": {} })
    };
    let existing = ctx
        .state
        .objects
        .get(&ctx.info, ctx.namespace(), ctx.name())
        .await?;
    if existing.is_none() && op == Operation::Update {
        let mut obj = applied.clone();
        metadata_mut(&mut obj).insert(
            "managedFields".into(),
            json!([entry(&ctx.info.api_version())]),
        );
        let created = create_object(ctx, obj, dry_run).await?;
        return Ok(output::object_response(
            StatusCode::CREATED,
            &ctx.info,
            &created,
            ctx.output,
        ));
    }
    let definition = ctx.info.strategy.schema().map(|s| s.root.clone());
    let strategic = patch::strategic_supported(definition.as_deref());
    let api_version = ctx.info.api_version();
    let (updated, _) = guaranteed_update(ctx, op, dry_run, |old| {
        let kind = if strategic {
            PatchKind::Strategic
        } else {
            PatchKind::Merge
        };
        let mut merged = patch::apply(kind, old, &applied, definition.as_deref())?;
        let mut managers: Vec<Value> = old
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        managers.retain(|m| !(m["manager"] == json!(manager) && m["operation"] == json!("Apply")));
        managers.push(entry(&api_version));
        metadata_mut(&mut merged).insert("managedFields".into(), json!(managers));
        let rv = old
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(json!(""));
        if applied.pointer("/metadata/resourceVersion").is_none() {
            metadata_mut(&mut merged).insert("resourceVersion".into(), rv);
        }
        Ok(merged)
    })
    .await?;
    Ok(output::object_response(
        StatusCode::OK,
        &ctx.info,
        &updated,
        ctx.output,
    ))
}
