//! The API server's side of field ownership: who the field manager of a request is, and
//! recording each write in `metadata.managedFields` with [`skiff_api::managedfields`].

use std::sync::Arc;

use serde_json::{Value, json};
use skiff_api::field::{FieldError, Path};
use skiff_api::managedfields::{
    Conflict, FieldManager, Schema, Scope, Writer, conflict_message, display_path,
};
use skiff_api::registry::{KindSchema, Operation};

use crate::error::{ApiError, ApiResult, GroupResource};
use crate::handlers::Ctx;

/// Upstream's limit on `fieldManager` (apimachinery ValidateFieldManager).
const MAX_MANAGER_LEN: usize = 128;

/// The request's field manager: `?fieldManager=`, else the client's User-Agent up to the
/// first `/` (how upstream names `kubectl`, `kube-rs`, `OpenAPI-Generator` writers).
pub fn manager_name(ctx: &Ctx) -> ApiResult<String> {
    if let Some(name) = ctx.query.get("fieldManager") {
        validate_manager(name)?;
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
    }
    let agent = ctx
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let prefix: String = agent
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(MAX_MANAGER_LEN)
        .collect();
    Ok(if prefix.is_empty() {
        "unknown".to_owned()
    } else {
        prefix
    })
}

fn validate_manager(name: &str) -> ApiResult<()> {
    let path = Path::new("fieldManager");
    let error = if name.chars().count() > MAX_MANAGER_LEN {
        Some(FieldError::too_long(&path, MAX_MANAGER_LEN))
    } else if name.chars().any(|c| c.is_control()) {
        Some(FieldError::invalid(
            &path,
            name,
            "must only contain printable characters",
        ))
    } else {
        None
    };
    match error {
        Some(e) => Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            &vec![e],
        )),
        None => Ok(()),
    }
}

fn scope(ctx: &Ctx, op: Operation) -> Scope {
    match op {
        Operation::UpdateStatus => Scope::Status,
        _ if ctx.path.subresource.as_deref() == Some("scale") => Scope::Scale,
        _ => Scope::Main {
            has_status: ctx.info.has_subresource("status"),
        },
    }
}

/// Field ownership bookkeeping for one request: the kind's schema, the scope written and
/// who writes. Owns everything it needs so it can run inside update retry loops.
pub struct RequestFields {
    schema: Option<Arc<KindSchema>>,
    scope: Scope,
    manager: String,
    api_version: String,
    now: String,
    resource: GroupResource,
    name: String,
}

impl RequestFields {
    /// The bookkeeping of `ctx`'s request performing `op`.
    pub fn new(ctx: &Ctx, op: Operation) -> ApiResult<Self> {
        Ok(RequestFields {
            schema: ctx.info.strategy.schema(),
            scope: scope(ctx, op),
            manager: manager_name(ctx)?,
            api_version: ctx.info.api_version(),
            now: crate::time::now_rfc3339(),
            resource: ctx.gr(),
            name: ctx.name().to_owned(),
        })
    }

    fn run<T>(&self, f: impl FnOnce(&FieldManager, &Writer) -> T) -> T {
        let manager = FieldManager::new(Schema::new(self.schema.as_deref()), self.scope);
        let writer = Writer {
            manager: &self.manager,
            api_version: &self.api_version,
            now: &self.now,
        };
        f(&manager, &writer)
    }

    /// Record a non-apply write of `new` over `old` (`None` for a create).
    pub fn update(&self, old: Option<&Value>, new: &mut Value) {
        self.run(|manager, writer| manager.update(old, new, writer));
    }

    /// Apply `config` over `live`; conflicts become upstream's 409.
    pub fn apply(&self, live: Option<&Value>, config: &Value, force: bool) -> ApiResult<Value> {
        self.run(|manager, writer| manager.apply(live, config, writer, force))
            .map_err(|conflicts| self.conflict_error(&conflicts))
    }

    fn conflict_error(&self, conflicts: &[Conflict]) -> ApiError {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", c.manager),
                    "field": display_path(&c.path),
                })
            })
            .collect();
        ApiError::apply_conflict(
            &self.resource,
            &self.name,
            conflict_message(conflicts),
            causes,
        )
    }
}

/// Record a non-apply write of `new` over `old` (`None` for a create).
pub fn track_update(ctx: &Ctx, old: Option<&Value>, new: &mut Value, op: Operation) {
    // An invalid fieldManager is rejected before a write gets here.
    if let Ok(fields) = RequestFields::new(ctx, op) {
        fields.update(old, new);
    }
}
