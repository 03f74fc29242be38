//! Subresources: status, scale, binding, eviction, namespace finalize. The node-proxied ones
//! (pods' log, exec, attach, portforward; nodes/proxy) are served by [`crate::nodeproxy`].

use axum::response::Response;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use skiff_api::registry::Operation;

use super::write::{self, DeleteOptions};
use super::{Ctx, decode_object};
use crate::error::{ApiError, ApiResult};
use crate::objects::{meta_str, metadata_mut};
use crate::output::{self, Output};
use crate::patch;

/// Serve a subresource request.
pub async fn serve(ctx: &mut Ctx, method: &Method, sub: &str, body: Bytes) -> ApiResult<Response> {
    if !ctx.info.has_subresource(sub) {
        return Err(ApiError::path_not_found());
    }
    match (sub, method) {
        ("status", &Method::GET) => super::read::get(ctx).await,
        ("status", &Method::PUT) => write::update_as(ctx, body, Operation::UpdateStatus).await,
        ("status", &Method::PATCH) => write::patch_as(ctx, body, Operation::UpdateStatus).await,
        ("ephemeralcontainers" | "resize", &Method::GET) => super::read::get(ctx).await,
        ("ephemeralcontainers", &Method::PUT) => {
            write::update_as(ctx, body, Operation::UpdateEphemeralContainers).await
        }
        ("ephemeralcontainers", &Method::PATCH) => {
            write::patch_as(ctx, body, Operation::UpdateEphemeralContainers).await
        }
        ("resize", &Method::PUT) => write::update_as(ctx, body, Operation::Update).await,
        ("resize", &Method::PATCH) => write::patch_as(ctx, body, Operation::Update).await,
        ("scale", &Method::GET | &Method::PUT | &Method::PATCH) => scale(ctx, method, body).await,
        ("binding", &Method::POST) => binding(ctx, body).await,
        ("token", &Method::POST) => crate::tokenrequest::create(ctx, body).await,
        ("eviction", &Method::POST) => eviction(ctx, body).await,
        ("finalize", &Method::PUT) => finalize(ctx, body).await,
        // pods/log, exec, attach, portforward and nodes/proxy go to kubelets before this
        // (crate::nodeproxy); proxying to pods and services is not served yet.
        ("proxy", _) => Err(ApiError::unavailable(format!(
            "the proxy subresource of {} is not served by this API server yet",
            ctx.info.plural
        ))),
        _ => Err(ApiError::method_not_supported(&ctx.gr(), method.as_str())),
    }
}

/// Read a dotted JSON path like `.spec.replicas`.
fn get_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(obj, |v, seg| v.get(seg))
}

/// Set a dotted JSON path, creating objects on the way.
fn set_path(obj: &mut Value, path: &str, value: Value) {
    let segments: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = obj;
    for seg in &segments[..segments.len() - 1] {
        if !cur.get(*seg).is_some_and(Value::is_object) {
            cur[*seg] = json!({});
        }
        cur = cur.get_mut(*seg).expect("inserted above");
    }
    cur[segments[segments.len() - 1]] = value;
}

/// The selector string of a scalable object.
fn selector_string(obj: &Value, paths: &skiff_api::registry::ScalePaths) -> String {
    let Some(sel) = paths
        .label_selector
        .as_deref()
        .and_then(|p| get_path(obj, p))
    else {
        return String::new();
    };
    if !paths.selector_is_object {
        return sel.as_str().unwrap_or("").to_owned();
    }
    // apps/v1 kinds hold a metav1.LabelSelector; ReplicationControllers a plain map.
    let is_label_selector =
        sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some();
    if is_label_selector {
        if let Ok(k8s) = serde_json::from_value(sel.clone())
            && let Ok(parsed) = skiff_api::selector::LabelSelector::from_k8s(&k8s)
        {
            return parsed.to_string();
        }
        return String::new();
    }
    let mut pairs: Vec<String> = sel
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs.join(",")
}

/// The `autoscaling/v1` Scale view of a scalable object.
fn scale_of(paths: &skiff_api::registry::ScalePaths, obj: &Value) -> Value {
    let spec = get_path(obj, &paths.spec_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status = get_path(obj, &paths.status_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let keep = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    let meta: serde_json::Map<String, Value> = obj
        .get("metadata")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": { "replicas": spec },
        "status": { "replicas": status },
    });
    let selector = selector_string(obj, paths);
    if !selector.is_empty() {
        scale["status"]["selector"] = json!(selector);
    }
    scale
}

async fn scale(ctx: &mut Ctx, method: &Method, body: Bytes) -> ApiResult<Response> {
    let respond = |scale: &Value, output: Output| match output {
        Output::Yaml => output::respond(StatusCode::OK, scale, Output::Yaml),
        _ => output::json_response(StatusCode::OK, scale),
    };
    if method == Method::GET {
        let (obj, _) = ctx
            .state
            .objects
            .get_existing(&ctx.info, ctx.namespace(), ctx.name())
            .await?;
        return Ok(respond(
            &scale_of(&ctx.info.strategy.scale_paths(), &obj),
            ctx.output,
        ));
    }
    let dry_run = ctx.query.dry_run()?;
    let kind = if method == Method::PATCH {
        Some(patch::PatchKind::from_headers(&ctx.headers)?)
    } else {
        None
    };
    let patch_doc = match kind {
        Some(k) => Some((k, patch::parse(k, &body)?)),
        None => None,
    };
    let put_body = if kind.is_none() {
        Some(decode_object(&ctx.headers, &body)?)
    } else {
        None
    };
    let paths = ctx.info.strategy.scale_paths();
    let (updated, _) = write::guaranteed_update(ctx, Operation::Update, dry_run, |old| {
        let current = scale_of(&paths, old);
        let wanted = match (&patch_doc, &put_body) {
            (Some((k, doc)), _) => {
                patch::apply(*k, &current, doc, Some("io.k8s.api.autoscaling.v1.Scale"))?
            }
            (None, Some(b)) => b.clone(),
            (None, None) => current.clone(),
        };
        let replicas = wanted
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(json!(0));
        let Some(n) = replicas.as_i64() else {
            return Err(ApiError::bad_request(
                "spec.replicas of a Scale must be an integer",
            ));
        };
        if n < 0 {
            let errors = vec![skiff_api::field::FieldError::invalid(
                &skiff_api::field::Path::new("spec").child("replicas"),
                n,
                "must be greater than or equal to 0",
            )];
            return Err(ApiError::invalid(
                "Scale",
                "autoscaling",
                meta_str(old, "name"),
                &errors,
            ));
        }
        let rv = meta_str(&wanted, "resourceVersion").to_owned();
        let mut next = old.clone();
        set_path(&mut next, &paths.spec_replicas, json!(n));
        metadata_mut(&mut next).insert("resourceVersion".into(), json!(rv));
        Ok(next)
    })
    .await?;
    Ok(respond(&scale_of(&paths, &updated), ctx.output))
}

fn success_status(ctx: &Ctx, code: u16) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code,
            "details": { "name": ctx.name(), "kind": ctx.info.plural } })
}

/// `pods/binding`: assign a pod to a node (what schedulers call).
async fn binding(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    let dry_run = ctx.query.dry_run()?;
    let binding = decode_object(&ctx.headers, &body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if node.is_empty() {
        let errors = vec![skiff_api::field::FieldError::required(
            &skiff_api::field::Path::new("target").child("name"),
            "",
        )];
        return Err(ApiError::invalid("Binding", "", ctx.name(), &errors));
    }
    let pod_name = ctx.name().to_owned();
    let gr = ctx.gr();
    let wanted_uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let annotations = binding
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    write::server_update(ctx, dry_run, |old| {
        if !wanted_uid.is_empty() && wanted_uid != meta_str(old, "uid") {
            return Err(ApiError::conflict(
                &gr,
                &pod_name,
                &format!(
                    "Precondition failed: UID in precondition: {wanted_uid}, UID in object meta: {}",
                    meta_str(old, "uid")
                ),
            ));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(&gr, &pod_name, "pod is being deleted, cannot be assigned to a host"));
        }
        let current = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
        if !current.is_empty() {
            return Err(ApiError::conflict(&gr, &pod_name, &format!("pod {pod_name} is already assigned to node \"{current}\"")));
        }
        let mut next = old.clone();
        next["spec"]["nodeName"] = json!(node);
        if !annotations.is_empty() {
            let meta = metadata_mut(&mut next);
            let target = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(target) = target.as_object_mut() {
                for (k, v) in &annotations {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        let now = crate::time::now_rfc3339();
        let condition = json!({ "type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now });
        let conditions = next["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conditions.push(condition);
        next["status"]["conditions"] = json!(conditions);
        Ok(next)
    })
    .await?;
    Ok(output::json_response(
        StatusCode::CREATED,
        &success_status(ctx, 201),
    ))
}

/// `pods/eviction`: a policy-checked delete.
async fn eviction(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    let eviction = decode_object(&ctx.headers, &body)?;
    let mut opts = DeleteOptions::default();
    if let Some(d) = eviction.get("deleteOptions") {
        opts.grace_period = d.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.precondition_uid = d
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        opts.precondition_rv = d
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        opts.dry_run = d
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    }
    opts.dry_run |= ctx.query.dry_run()?;
    let name = ctx.name().to_owned();
    let (pod, _) = ctx
        .state
        .objects
        .get_existing(&ctx.info, ctx.namespace(), &name)
        .await?;
    crate::admission::check_eviction(&ctx.state, &pod, opts.dry_run).await?;
    write::delete_named(ctx, &name, &opts).await?;
    Ok(output::json_response(
        StatusCode::CREATED,
        &success_status(ctx, 201),
    ))
}

/// `namespaces/finalize`: replace `spec.finalizers`; completes a pending namespace deletion.
async fn finalize(ctx: &mut Ctx, body: Bytes) -> ApiResult<Response> {
    let dry_run = ctx.query.dry_run()?;
    let ns = decode_object(&ctx.headers, &body)?;
    write::check_name_matches(ctx, &ns)?;
    let finalizers = ns.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
    // Upstream's finalize strategy changes spec.finalizers and nothing else; the namespace
    // strategy's own update rule (spec is immutable through the main resource) must not run.
    let (updated, _) = write::server_update(ctx, dry_run, |old| {
        let mut next = old.clone();
        next["spec"]["finalizers"] = finalizers.clone();
        if let Some(rv) = ns.pointer("/metadata/resourceVersion") {
            metadata_mut(&mut next).insert("resourceVersion".into(), rv.clone());
        }
        Ok(next)
    })
    .await?;
    Ok(output::object_response(
        StatusCode::OK,
        &ctx.info,
        &updated,
        ctx.output,
    ))
}
