//! `/healthz`, `/livez` and `/readyz`: named checks, each also served alone at
//! `/<endpoint>/<check>`, with upstream's `?verbose` and `?exclude=` and its text output
//! (upstream: k8s.io/apiserver/pkg/server/healthz). Load balancers and monitoring scripts
//! parse these lines, so the format is upstream's to the character.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::server::Front;

/// How long the store may take to answer the `etcd` check (upstream:
/// `--etcd-healthcheck-timeout`).
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One of the three health endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/healthz` (deprecated upstream, still served).
    Healthz,
    /// `/livez`: whether the server should be restarted.
    Livez,
    /// `/readyz`: whether the server should receive traffic.
    Readyz,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
        }
    }
}

/// A named check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Answers at all.
    Ping,
    /// The store answers a quorum read (named `etcd` whichever backend, as upstream and k3s).
    Store,
    /// Bootstrap (default namespaces, priority classes, the `kubernetes` Service) is done.
    Bootstrap,
    /// The server is not shutting down (readiness only).
    Shutdown,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Ping => "ping",
            Check::Store => "etcd",
            Check::Bootstrap => "poststarthook/bootstrap-controller",
            Check::Shutdown => "shutdown",
        }
    }

    /// The checks an endpoint runs, in the order it reports them.
    fn of(endpoint: Endpoint) -> &'static [Check] {
        match endpoint {
            Endpoint::Healthz | Endpoint::Livez => &[Check::Ping, Check::Store, Check::Bootstrap],
            Endpoint::Readyz => &[Check::Ping, Check::Store, Check::Bootstrap, Check::Shutdown],
        }
    }

    async fn run(self, front: &Front) -> Result<(), String> {
        match self {
            Check::Ping => Ok(()),
            Check::Store => {
                match tokio::time::timeout(
                    STORE_CHECK_TIMEOUT,
                    front.state.objects.store.current_revision(),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "the store did not answer within {STORE_CHECK_TIMEOUT:?}"
                    )),
                }
            }
            Check::Bootstrap => {
                if front.ready.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    Err("not finished".into())
                }
            }
            Check::Shutdown => {
                if front.stopping.load(Ordering::Acquire) {
                    Err("process is shutting down".into())
                } else {
                    Ok(())
                }
            }
        }
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /<endpoint>`: every check, unless `?exclude=`d; the lines only with `?verbose` or on
/// failure, and never a failure's reason (the endpoints are public; `/<endpoint>/<check>`
/// gives it to those allowed to ask).
pub async fn all(endpoint: Endpoint, front: Arc<Front>, query: Vec<(String, String)>) -> Response {
    let mut excluded: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.as_str())
        .collect();
    let verbose = query.iter().any(|(k, _)| k == "verbose");
    let mut lines = String::new();
    let mut failed: Vec<&str> = Vec::new();
    for check in Check::of(endpoint) {
        let name = check.name();
        if excluded.contains(&name) {
            excluded.retain(|e| *e != name);
            lines.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match check.run(&front).await {
            Ok(()) => lines.push_str(&format!("[+]{name} ok\n")),
            Err(reason) => {
                tracing::info!(endpoint = endpoint.name(), check = name, %reason, "health check failed");
                lines.push_str(&format!("[-]{name} failed: reason withheld\n"));
                failed.push(name);
            }
        }
    }
    if !excluded.is_empty() {
        excluded.sort_unstable();
        excluded.dedup();
        let quoted: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
        lines.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            quoted.join(",")
        ));
    }
    let name = endpoint.name();
    if !failed.is_empty() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{lines}{name} check failed\n"),
        );
    }
    if !verbose {
        return text(StatusCode::OK, "ok".into());
    }
    text(StatusCode::OK, format!("{lines}{name} check passed\n"))
}

/// `GET /<endpoint>/<check>`: one check, with the reason if it fails.
pub async fn one(endpoint: Endpoint, front: Arc<Front>, name: &str) -> Response {
    let Some(check) = Check::of(endpoint).iter().find(|c| c.name() == name) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n".into());
    };
    match check.run(&front).await {
        Ok(()) => text(StatusCode::OK, "ok".into()),
        Err(reason) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal server error: {reason}\n"),
        ),
    }
}

/// The router entries of one endpoint: `/<name>` and `/<name>/<check>`.
pub fn routes(router: axum::Router<Arc<Front>>, endpoint: Endpoint) -> axum::Router<Arc<Front>> {
    use axum::routing::get;
    let path = format!("/{}", endpoint.name());
    router
        .route(
            &path,
            get(
                move |AxState(front): AxState<Arc<Front>>,
                      Query(query): Query<Vec<(String, String)>>| {
                    all(endpoint, front, query)
                },
            ),
        )
        .route(
            &format!("{path}/{{*check}}"),
            get(
                move |AxState(front): AxState<Arc<Front>>, UrlPath(check): UrlPath<String>| async move {
                    one(endpoint, front, &check).await
                },
            ),
        )
}
