//! Create, update, patch, delete and deletecollection, all sharing one admission core.
//!
//! Every write goes: decode → type/namespace checks → field validation (`fieldValidation`) →
//! server-managed metadata → the kind's [`Strategy::admit`](skiff_api::registry::Strategy) →
//! per-resource hooks ([`crate::hooks`]) → compare-and-swap in the store. A rejected request
//! changes nothing. Updates without a `resourceVersion` precondition retry on conflicts
//! (upstream `GuaranteedUpdate`); with one, a stale version is a 409.

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_api::registry::{Operation, Rejection};
use skiff_store::{KeyValue, Revision};

use super::{Ctx, decode_object};
use crate::error::{ApiError, ApiResult};
use crate::fieldvalidation::{self, Directive};
use crate::objects::{self, encode, finalizers, meta_str, metadata_mut, set_resource_version};
use crate::output;
use crate::patch;
use crate::time::now_rfc3339;

/// How many times a write retries after losing a compare-and-swap race.
const MAX_RETRIES: usize = 16;

/// POST to a collection.
pub async fn create(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    let dry_run = ctx.query.dry_run()?;
    let obj = decode_object(&ctx.headers, &body)?;
    let obj = check_new_object(ctx, obj)?;
    let created = create_object(ctx, obj, dry_run).await?;
    Ok(output::object_response(
        StatusCode::CREATED,
        &ctx.info,
        &created,
        ctx.output,
    ))
}

/// Check type metadata, namespace and unknown fields of a client-supplied object.
pub fn check_new_object(ctx: &mut Ctx, mut obj: Value) -> ApiResult<Value> {
    let directive = Directive::from_query(&ctx.query)?;
    check_type_meta(ctx, &mut obj)?;
    let ns = ctx.namespace().map(str::to_owned);
    if ctx.info.namespaced {
        let body_ns = meta_str(&obj, "namespace").to_owned();
        match ns.as_deref() {
            Some(path_ns) if !body_ns.is_empty() && body_ns != path_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            Some(path_ns) => {
                metadata_mut(&mut obj).insert("namespace".into(), json!(path_ns));
            }
            None => return Err(ApiError::path_not_found()),
        }
    } else {
        metadata_mut(&mut obj).remove("namespace");
    }
    let unknown = fieldvalidation::unknown_fields(&ctx.info, &obj);
    fieldvalidation::report(directive, unknown, &mut ctx.warnings)?;
    Ok(obj)
}

/// Ensure `apiVersion`/`kind` match the endpoint (filled in when absent).
fn check_type_meta(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    let expected_version = ctx.info.api_version();
    let map = obj.as_object_mut().expect("decode_object returns objects");
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != expected_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )));
        }
        _ => {
            map.insert("apiVersion".into(), json!(expected_version));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != ctx.info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                ctx.info.kind
            )));
        }
        _ => {
            map.insert("kind".into(), json!(ctx.info.kind));
        }
    }
    Ok(())
}

fn rejection(ctx: &Ctx, name: &str, rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::Decode(message) => ApiError::bad_request(message),
        Rejection::Invalid(errors) => {
            ApiError::invalid(&ctx.info.kind, &ctx.info.group, name, &errors)
        }
    }
}

/// Upstream's `generateName` suffix alphabet: no vowels, no confusable digits.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    // Upstream trims the prefix so the result stays within 63 characters.
    let keep = prefix.len().min(63 - 5);
    format!("{}{suffix}", &prefix[..keep])
}

/// Create an already type-checked object: server metadata, admission, hooks, store.
pub async fn create_object(ctx: &mut Ctx, mut obj: Value, dry_run: bool) -> ApiResult<Value> {
    let meta = metadata_mut(&mut obj);
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let generate_name = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let given_name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if obj.get("spec").is_some() || ctx.state.is_custom(&ctx.info) {
        metadata_mut(&mut obj).insert("generation".into(), json!(1));
    } else {
        metadata_mut(&mut obj).remove("generation");
    }

    if let Some(ns) = ctx.namespace().map(str::to_owned) {
        ctx.state
            .check_namespace_accepts(&ctx.info, &ns, &given_name)
            .await?;
    }

    let attempts = if given_name.is_empty() && !generate_name.is_empty() {
        8
    } else {
        1
    };
    let mut last_err = None;
    for _ in 0..attempts {
        let mut candidate = obj.clone();
        if given_name.is_empty() && !generate_name.is_empty() {
            metadata_mut(&mut candidate)
                .insert("name".into(), json!(generated_name(&generate_name)));
        }
        let name = meta_str(&candidate, "name").to_owned();
        crate::admission::mutate_create(&ctx.state, &ctx.info, &mut candidate).await?;
        let admitted = ctx
            .info
            .strategy
            .admit(candidate, None, Operation::Create)
            .map_err(|r| rejection(ctx, &name, r))?;
        let mut admitted = admitted;
        objects::drop_empty_metadata_collections(&mut admitted);
        if !ctx.applying {
            crate::managed::track_update(ctx, None, &mut admitted, Operation::Create);
        }
        let hooks_state = ctx.state.clone();
        hooks_state
            .before_create(&ctx.info, &mut admitted, dry_run)
            .await?;
        if let Err(e) =
            crate::admission::validate_create(&ctx.state, &ctx.info, &admitted, dry_run).await
        {
            hooks_state.release(&ctx.info, &admitted).await;
            return Err(e);
        }
        if dry_run {
            return Ok(admitted);
        }
        let key = objects::key(&ctx.info, ctx.namespace(), &name);
        match ctx
            .state
            .objects
            .store
            .create(&key, encode(&admitted)?)
            .await
        {
            Ok(revision) => {
                set_resource_version(&mut admitted, revision);
                ctx.state
                    .after_write(&ctx.info, None, Some(&admitted))
                    .await;
                return Ok(admitted);
            }
            Err(skiff_store::Error::AlreadyExists { .. }) => {
                hooks_state.release(&ctx.info, &admitted).await;
                last_err = Some(ApiError::already_exists(&ctx.gr(), &name));
            }
            Err(other) => {
                hooks_state.release(&ctx.info, &admitted).await;
                return Err(other.into());
            }
        }
    }
    Err(last_err.unwrap_or_else(|| ApiError::internal("create failed")))
}

/// PUT a named object.
pub async fn update(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    update_as(ctx, body, Operation::Update).await
}

/// PUT through the main resource or the status subresource.
pub async fn update_as(ctx: &mut Ctx, body: Bytes, op: Operation) -> ApiResult<Response> {
    let dry_run = ctx.query.dry_run()?;
    let obj = decode_object(&ctx.headers, &body)?;
    let obj = check_new_object(ctx, obj)?;
    check_name_matches(ctx, &obj)?;
    let body_obj = obj;
    let (updated, _) = guaranteed_update(ctx, op, dry_run, |_old| Ok(body_obj.clone())).await?;
    Ok(output::object_response(
        StatusCode::OK,
        &ctx.info,
        &updated,
        ctx.output,
    ))
}

/// The name in the body must match the URL.
pub fn check_name_matches(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    let body_name = meta_str(obj, "name");
    if body_name != ctx.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            ctx.name()
        )));
    }
    Ok(())
}

/// PATCH a named object.
pub async fn patch(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    patch_as(ctx, body, Operation::Update).await
}

/// PATCH through the main resource or the status subresource.
pub async fn patch_as(ctx: &mut Ctx, body: Bytes, op: Operation) -> ApiResult<Response> {
    let dry_run = ctx.query.dry_run()?;
    let kind = patch::PatchKind::from_headers(&ctx.headers)?;
    if kind == patch::PatchKind::Apply {
        let result = crate::apply::apply(ctx, &body, op, dry_run).await?;
        return Ok(result);
    }
    let patch_doc = patch::parse(kind, &body)?;
    let directive = Directive::from_query(&ctx.query)?;
    let definition = ctx.info.strategy.schema().map(|s| s.root.clone());
    if kind == patch::PatchKind::Strategic && !patch::strategic_supported(definition.as_deref()) {
        return Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json",
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let info = ctx.info.clone();
    let mut warnings = Vec::new();
    let (updated, _) = guaranteed_update(ctx, op, dry_run, |old| {
        let mut patched = patch::apply(kind, old, &patch_doc, definition.as_deref())?;
        if !patched.is_object() {
            return Err(ApiError::bad_request(
                "the patch produced a value that is not an object",
            ));
        }
        // The resourceVersion carried over from the current object is no precondition: only
        // one the patch itself sets is (a race is then retried against the newer object, where
        // a user-set version no longer matches and so fails as stale, as upstream).
        if meta_str(&patched, "resourceVersion") == meta_str(old, "resourceVersion") {
            metadata_mut(&mut patched).remove("resourceVersion");
        }
        let unknown = fieldvalidation::unknown_fields(&info, &patched);
        warnings.clear();
        fieldvalidation::report(directive, unknown, &mut warnings)?;
        Ok(patched)
    })
    .await?;
    ctx.warnings.extend(warnings);
    Ok(output::object_response(
        StatusCode::OK,
        &ctx.info,
        &updated,
        ctx.output,
    ))
}

/// Read-modify-write with compare-and-swap, retrying lost races unless the new object carries
/// a `resourceVersion` precondition. Returns the stored object and whether it changed.
pub async fn guaranteed_update(
    ctx: &mut Ctx,
    op: Operation,
    dry_run: bool,
    transform: impl FnMut(&Value) -> ApiResult<Value>,
) -> ApiResult<(Value, bool)> {
    update_loop(ctx, dry_run, transform, |ctx, old, new| {
        admit_update(ctx, old, new, op)
    })
    .await
}

/// A change the server itself authors (a pod binding): the same compare-and-swap loop as
/// [`guaranteed_update`], without the kind's update admission, which would refuse it (pod
/// specs are immutable to clients) and without recording a field manager, as upstream.
pub async fn server_update(
    ctx: &mut Ctx,
    dry_run: bool,
    transform: impl FnMut(&Value) -> ApiResult<Value>,
) -> ApiResult<(Value, bool)> {
    update_loop(ctx, dry_run, transform, |_, _, mut new| {
        metadata_mut(&mut new).remove("resourceVersion");
        Ok(new)
    })
    .await
}

async fn update_loop(
    ctx: &mut Ctx,
    dry_run: bool,
    mut transform: impl FnMut(&Value) -> ApiResult<Value>,
    admit: impl Fn(&Ctx, &Value, Value) -> ApiResult<Value>,
) -> ApiResult<(Value, bool)> {
    let name = ctx.name().to_owned();
    for _ in 0..MAX_RETRIES {
        let (old, kv) = ctx
            .state
            .objects
            .get_existing(&ctx.info, ctx.namespace(), &name)
            .await?;
        let mut new = transform(&old)?;
        ctx.state
            .before_update(&ctx.info, &old, &mut new, dry_run)
            .await?;
        let precondition = meta_str(&new, "resourceVersion").to_owned();
        if !precondition.is_empty() && precondition != kv.mod_revision.to_string() {
            return Err(ApiError::stale(&ctx.gr(), &name));
        }
        let new_uid = meta_str(&new, "uid");
        if !new_uid.is_empty() && new_uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict(
                &ctx.gr(),
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        let admitted = admit(ctx, &old, new)?;
        // A stale value (an old encryption key) is rewritten even when nothing changed: that
        // is how `kubectl replace` of every object rotates keys (upstream does the same).
        if same_object(&admitted, &old) && !kv.stale {
            return Ok((old, false));
        }
        if dry_run {
            return Ok((admitted, true));
        }
        match persist_update(ctx, &kv, admitted).await {
            Ok(Persisted::Updated(stored)) => {
                ctx.state
                    .after_write(&ctx.info, Some(&old), Some(&stored))
                    .await;
                return Ok((stored, true));
            }
            Ok(Persisted::Deleted(gone)) => {
                ctx.state.after_delete(&ctx.info, &gone).await;
                return Ok((gone, true));
            }
            Err(PersistError::Conflict) if precondition.is_empty() => continue,
            Err(PersistError::Conflict) => return Err(ApiError::stale(&ctx.gr(), &name)),
            Err(PersistError::Api(e)) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        &ctx.gr(),
        &name,
        "too many concurrent updates; please try again",
    ))
}

/// Objects equal apart from resourceVersion: such an update is a no-op and writes nothing.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// Carry server-owned metadata over from the stored object, split spec/status by operation,
/// bump generation, then run the kind's admission.
pub fn admit_update(ctx: &Ctx, old: &Value, mut new: Value, op: Operation) -> ApiResult<Value> {
    let name = meta_str(old, "name").to_owned();
    {
        let old_meta = old
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let meta = metadata_mut(&mut new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        if matches!(
            op,
            Operation::UpdateStatus | Operation::UpdateEphemeralContainers
        ) {
            // Upstream ResetObjectMetaForStatus: a subresource write changes nothing in metadata.
            for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                match old_meta.get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
        }
        meta.remove("resourceVersion");
    }
    let has_status = ctx.info.has_subresource("status");
    if let (Some(new_map), Some(old_map)) = (new.as_object_mut(), old.as_object()) {
        match op {
            Operation::Update if has_status => match old_map.get("status") {
                Some(s) => {
                    new_map.insert("status".into(), s.clone());
                }
                None => {
                    new_map.remove("status");
                }
            },
            Operation::UpdateStatus => {
                for (k, v) in old_map {
                    if k != "status" && k != "metadata" {
                        new_map.insert(k.clone(), v.clone());
                    }
                }
            }
            Operation::UpdateEphemeralContainers => {
                let wanted = new_map
                    .get("spec")
                    .and_then(|s| s.get("ephemeralContainers"))
                    .cloned();
                for (k, v) in old_map {
                    if k != "metadata" {
                        new_map.insert(k.clone(), v.clone());
                    }
                }
                if let Some(spec) = new_map.get_mut("spec").and_then(Value::as_object_mut) {
                    match wanted {
                        Some(list) => spec.insert("ephemeralContainers".into(), list),
                        None => spec.remove("ephemeralContainers"),
                    };
                }
            }
            _ => {}
        }
    }
    let mut admitted = ctx
        .info
        .strategy
        .admit(new, Some(old), op)
        .map_err(|r| rejection(ctx, &name, r))?;
    objects::drop_empty_metadata_collections(&mut admitted);
    if let Some(old_gen) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
        let generation = if op != Operation::UpdateStatus
            && ctx.info.strategy.generation_changed(old, &admitted)
        {
            old_gen + 1
        } else {
            old_gen
        };
        metadata_mut(&mut admitted).insert("generation".into(), json!(generation));
    }
    if !ctx.applying {
        crate::managed::track_update(ctx, Some(old), &mut admitted, op);
    }
    Ok(admitted)
}

enum PersistError {
    Conflict,
    Api(ApiError),
}

impl From<ApiError> for PersistError {
    fn from(e: ApiError) -> Self {
        PersistError::Api(e)
    }
}

/// What an update turned into.
enum Persisted {
    Updated(Value),
    /// The update released the last finalizer of a deleting object, which is now gone.
    Deleted(Value),
}

/// Write an admitted update with CAS on `kv`; completes a pending deletion when the last
/// finalizer is gone.
async fn persist_update(
    ctx: &Ctx,
    kv: &KeyValue,
    mut admitted: Value,
) -> Result<Persisted, PersistError> {
    let store = &ctx.state.objects.store;
    if deletion_can_complete(&ctx.info, &admitted) {
        return match store.delete(&kv.key, Some(kv.mod_revision)).await {
            Ok((_, revision)) => {
                set_resource_version(&mut admitted, revision);
                Ok(Persisted::Deleted(admitted))
            }
            Err(skiff_store::Error::Conflict { .. } | skiff_store::Error::NotFound { .. }) => {
                Err(PersistError::Conflict)
            }
            Err(e) => Err(PersistError::Api(e.into())),
        };
    }
    match store
        .update(&kv.key, encode(&admitted)?, kv.mod_revision)
        .await
    {
        Ok(revision) => {
            set_resource_version(&mut admitted, revision);
            Ok(Persisted::Updated(admitted))
        }
        Err(skiff_store::Error::Conflict { .. } | skiff_store::Error::NotFound { .. }) => {
            Err(PersistError::Conflict)
        }
        Err(e) => Err(PersistError::Api(e.into())),
    }
}

/// Whether a deleting object has nothing left holding it (finalizers, namespace finalizers).
fn deletion_can_complete(info: &skiff_api::registry::ResourceInfo, obj: &Value) -> bool {
    if obj.pointer("/metadata/deletionTimestamp").is_none() || !finalizers(obj).is_empty() {
        return false;
    }
    if is_namespace(info) {
        let spec_finalizers = obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        return spec_finalizers == 0;
    }
    // Gracefully terminating pods wait for the kubelet's final delete.
    !(is_pod(info)
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0)
}

fn is_namespace(info: &skiff_api::registry::ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "namespaces"
}

fn is_pod(info: &skiff_api::registry::ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "pods"
}

/// Options of a delete, from the body (DeleteOptions) or the query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    /// Grace period in seconds.
    pub grace_period: Option<i64>,
    /// Orphan, Background or Foreground.
    pub propagation: Option<String>,
    /// Required uid.
    pub precondition_uid: Option<String>,
    /// Required resourceVersion.
    pub precondition_rv: Option<String>,
    /// Dry run.
    pub dry_run: bool,
}

impl DeleteOptions {
    fn parse(ctx: &Ctx, body: &[u8]) -> ApiResult<Self> {
        let mut opts = DeleteOptions {
            grace_period: ctx.query.int("gracePeriodSeconds")?,
            propagation: ctx.query.non_empty("propagationPolicy").map(str::to_owned),
            dry_run: ctx.query.dry_run()?,
            ..Default::default()
        };
        if ctx.query.get("orphanDependents") == Some("true") && opts.propagation.is_none() {
            opts.propagation = Some("Orphan".into());
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v = decode_object(&ctx.headers, body)?;
            if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
                opts.grace_period = Some(g);
            }
            if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                opts.propagation = Some(p.to_owned());
            }
            if v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
                && opts.propagation.is_none()
            {
                opts.propagation = Some("Orphan".into());
            }
            if let Some(pre) = v.get("preconditions") {
                opts.precondition_uid = pre.get("uid").and_then(Value::as_str).map(str::to_owned);
                opts.precondition_rv = pre
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            if let Some(dry) = v.get("dryRun").and_then(Value::as_array) {
                for d in dry {
                    match d.as_str() {
                        Some("All") => opts.dry_run = true,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "Invalid dry run value: unsupported dry run value {other:?}, supported values: \"All\""
                            )));
                        }
                    }
                }
            }
        }
        if let Some(p) = &opts.propagation
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            let errors = vec![skiff_api::field::FieldError::not_supported(
                &skiff_api::field::Path::new("propagationPolicy"),
                p.as_str(),
                &["Foreground", "Background", "Orphan"],
            )];
            return Err(ApiError::invalid("DeleteOptions", "", "", &errors));
        }
        if let Some(g) = opts.grace_period
            && g < 0
        {
            opts.grace_period = Some(0);
        }
        Ok(opts)
    }
}

/// DELETE a named object.
pub async fn delete(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    let opts = DeleteOptions::parse(ctx, &body)?;
    let name = ctx.name().to_owned();
    let (obj, deleted) = delete_named(ctx, &name, &opts).await?;
    let status = if deleted {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(output::object_response(status, &ctx.info, &obj, ctx.output))
}

/// Delete one object by name with the given options. Returns the object and whether it is gone
/// (false: deletion pending on finalizers or a grace period).
pub async fn delete_named(ctx: &Ctx, name: &str, opts: &DeleteOptions) -> ApiResult<(Value, bool)> {
    for _ in 0..MAX_RETRIES {
        let (old, kv) = ctx
            .state
            .objects
            .get_existing(&ctx.info, ctx.namespace(), name)
            .await?;
        if let Some(uid) = &opts.precondition_uid
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                &ctx.gr(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && *rv != kv.mod_revision.to_string()
        {
            return Err(ApiError::conflict(
                &ctx.gr(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                ),
            ));
        }
        let plan = plan_deletion(ctx, &old, opts);
        match plan {
            DeletionPlan::Now => {
                if opts.dry_run {
                    return Ok((old, true));
                }
                match ctx
                    .state
                    .objects
                    .store
                    .delete(&kv.key, Some(kv.mod_revision))
                    .await
                {
                    Ok((_, revision)) => {
                        let mut gone = old;
                        set_resource_version(&mut gone, revision);
                        ctx.state.after_delete(&ctx.info, &gone).await;
                        return Ok((gone, true));
                    }
                    Err(skiff_store::Error::Conflict { .. }) => continue,
                    Err(skiff_store::Error::NotFound { .. }) => {
                        return Err(ApiError::not_found(&ctx.gr(), name));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            DeletionPlan::Pending(updated) => {
                if opts.dry_run || same_object(&updated, &old) {
                    return Ok((updated, false));
                }
                match ctx
                    .state
                    .objects
                    .store
                    .update(&kv.key, encode(&updated)?, kv.mod_revision)
                    .await
                {
                    Ok(revision) => {
                        let mut updated = updated;
                        set_resource_version(&mut updated, revision);
                        ctx.state
                            .after_write(&ctx.info, Some(&old), Some(&updated))
                            .await;
                        return Ok((updated, false));
                    }
                    Err(skiff_store::Error::Conflict { .. }) => continue,
                    Err(skiff_store::Error::NotFound { .. }) => {
                        return Err(ApiError::not_found(&ctx.gr(), name));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(ApiError::conflict(
        &ctx.gr(),
        name,
        "too many concurrent updates; please try again",
    ))
}

enum DeletionPlan {
    Now,
    Pending(Value),
}

/// Decide between immediate deletion and a pending one (finalizers, propagation finalizers,
/// graceful pod termination, namespace finalization).
fn plan_deletion(ctx: &Ctx, old: &Value, opts: &DeleteOptions) -> DeletionPlan {
    let mut updated = old.clone();
    let mut fins = finalizers(old);
    let already_deleting = old.pointer("/metadata/deletionTimestamp").is_some();
    match opts.propagation.as_deref() {
        Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
        Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
            fins.push("foregroundDeletion".into())
        }
        _ => {}
    }
    // Graceful pod termination: the kubelet stops the containers, then deletes with grace 0.
    let mut grace = 0;
    if is_pod(&ctx.info) {
        let bound = !old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
        let phase = old
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let default_grace = old
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let wanted = opts.grace_period.unwrap_or(default_grace);
        let current = old
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if bound && !terminal {
            grace = match current {
                Some(c) if already_deleting => c.min(wanted),
                _ => wanted,
            };
        }
    }
    let namespace_finalizers = is_namespace(&ctx.info)
        && old
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    if fins.is_empty() && grace == 0 && !namespace_finalizers {
        return DeletionPlan::Now;
    }
    let meta = metadata_mut(&mut updated);
    if !fins.is_empty() {
        meta.insert("finalizers".into(), json!(fins));
    }
    if !already_deleting || grace > 0 {
        let when = if grace > 0 {
            crate::time::rfc3339_after(grace)
        } else {
            now_rfc3339()
        };
        if !already_deleting
            || grace
                < meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX)
        {
            meta.insert("deletionTimestamp".into(), json!(when));
        }
    }
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if is_namespace(&ctx.info) {
        updated["status"]["phase"] = json!("Terminating");
    }
    DeletionPlan::Pending(updated)
}

/// DELETE a collection: delete every object matching the list options.
pub async fn delete_collection(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    let opts = DeleteOptions::parse(ctx, &body)?;
    let filter = super::read::Filter::from_query(ctx)?;
    let prefix = objects::prefix(&ctx.info, ctx.namespace());
    let page = ctx
        .state
        .objects
        .store
        .range(skiff_store::RangeRequest {
            prefix,
            ..Default::default()
        })
        .await?;
    let api_version = ctx.info.api_version();
    let mut deleted = Vec::new();
    for kv in &page.items {
        let obj = objects::decode(kv, &api_version)?;
        if !filter.matches(&ctx.info, &obj) {
            continue;
        }
        let name = meta_str(&obj, "name").to_owned();
        let ns = meta_str(&obj, "namespace").to_owned();
        let scoped = Ctx {
            state: ctx.state.clone(),
            info: ctx.info.clone(),
            path: crate::request::ResourcePath {
                namespace: if ns.is_empty() { None } else { Some(ns) },
                name: Some(name.clone()),
                ..ctx.path.clone()
            },
            query: ctx.query.clone(),
            headers: ctx.headers.clone(),
            output: ctx.output,
            warnings: Vec::new(),
            applying: false,
        };
        match delete_named(&scoped, &name, &opts).await {
            Ok((obj, _)) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let meta = json!({ "resourceVersion": page.revision.to_string() });
    Ok(output::list_response(&ctx.info, deleted, meta, ctx.output))
}

/// The revision type re-exported for sibling modules.
pub type Rev = Revision;
