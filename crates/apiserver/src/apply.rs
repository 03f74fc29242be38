//! Server-side apply (`application/apply-patch+yaml`): create-or-merge with field ownership.
//!
//! The merge, conflict detection and pruning live in [`skiff_api::managedfields`]; this
//! module checks the request, runs the apply against the live object inside the generic
//! compare-and-swap update loop (or the create path when the object does not exist yet) and
//! maps conflicts to upstream's 409.

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use skiff_api::field::{FieldError, Path};
use skiff_api::registry::Operation;

use crate::error::{ApiError, ApiResult};
use crate::handlers::Ctx;
use crate::handlers::write::{
    check_name_matches, check_new_object, create_object, guaranteed_update,
};
use crate::managed::RequestFields;
use crate::output;
use crate::patch::{self, PatchKind};

/// Serve an apply patch.
pub async fn apply(
    ctx: &mut Ctx,
    body: &Bytes,
    op: Operation,
    dry_run: bool,
) -> ApiResult<Response> {
    if ctx.query.non_empty("fieldManager").is_none() {
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
    }
    let force = ctx.query.flag("force");
    let applied = patch::parse(PatchKind::Apply, body)?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the apply patch must be a YAML or JSON object",
        ));
    }
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
    if applied.pointer("/metadata/managedFields").is_some() {
        return Err(ApiError::bad_request(
            "metadata.managedFields must be nil in an apply patch",
        ));
    }
    let applied = check_new_object(ctx, applied)?;
    check_name_matches(ctx, &applied)?;
    ctx.applying = true;

    let existing = ctx
        .state
        .objects
        .get(&ctx.info, ctx.namespace(), ctx.name())
        .await?;
    if existing.is_none() && op == Operation::Update {
        let fields = RequestFields::new(ctx, Operation::Create)?;
        let created = fields.apply(None, &applied, force)?;
        let created = create_object(ctx, created, dry_run).await?;
        return Ok(output::object_response(
            StatusCode::CREATED,
            &ctx.info,
            &created,
            ctx.output,
        ));
    }
    let fields = RequestFields::new(ctx, op)?;
    let (updated, _) = guaranteed_update(ctx, op, dry_run, |old| {
        fields.apply(Some(old), &applied, force)
    })
    .await?;
    Ok(output::object_response(
        StatusCode::OK,
        &ctx.info,
        &updated,
        ctx.output,
    ))
}
