//! The main-port and admin-port routers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::config::{ExitHook, Role};
use crate::faults::{parse_injection, ClearReason, FaultKind, FaultSpec, Faults};
use crate::metrics::{Metrics, Outcome, RouteCode, RouteLabel, CONTENT_TYPE};

/// Delay between answering a crash request and exiting.
const CRASH_DELAY: Duration = Duration::from_millis(50);

pub(crate) struct App {
    pub role: Role,
    pub version: String,
    pub bad_version: bool,
    pub metrics: Arc<Metrics>,
    pub faults: Arc<Faults>,
    pub exit: ExitHook,
    pub client: reqwest::Client,
    pub shutdown: watch::Receiver<bool>,
    pub served: AtomicU64,
}

type Shared = Arc<App>;

impl App {
    fn route_label(&self, path: &str) -> &'static str {
        match path {
            "/healthz" => "/healthz",
            "/metrics" => "/metrics",
            p if p == self.role.api_route() => self.role.api_route(),
            _ => "other",
        }
    }

    fn state_json(&self) -> Value {
        json!({
            "service": self.role.service_name(),
            "version": self.version,
            "bad_version": self.bad_version,
            "active": self.faults.snapshot(),
        })
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn shutting_down() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
}

/// Decrements the in-flight gauge when the request ends, also when its client goes away.
struct InFlight(Gauge);

impl InFlight {
    fn start(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) fn main_router(app: Shared) -> Router {
    let api = match app.role {
        Role::ServiceA { .. } => get(work),
        Role::ServiceB => get(data),
    };
    Router::new()
        .route(app.role.api_route(), api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), faults_and_metrics))
        .with_state(app)
}

pub(crate) fn admin_router(app: Shared) -> Router {
    Router::new()
        .route("/faults", get(list_faults).delete(clear_all))
        .route("/faults/{kind}", post(inject).delete(clear_one))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// Applies the hang, latency, bad-version and errors faults to main-port requests and records the
/// request metrics.
async fn faults_and_metrics(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let route = app.route_label(path);
    let is_api = path.starts_with("/api/");
    let mut shutdown = app.shutdown.clone();
    if route == "/metrics" {
        if !app.faults.wait_while_hung(&mut shutdown).await {
            return shutting_down();
        }
        return next.run(req).await;
    }

    let _in_flight = InFlight::start(&app.metrics.in_flight);
    let start = Instant::now();
    let response = async {
        if !app.faults.wait_while_hung(&mut shutdown).await {
            return shutting_down();
        }
        if is_api {
            if let Some(latency) = app.faults.latency() {
                tokio::time::sleep(latency).await;
            }
            if app.bad_version {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "bad version");
            }
            if app.faults.should_error() {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "injected error");
            }
        }
        next.run(req).await
    }
    .await;
    app.metrics
        .requests
        .get_or_create(&RouteCode {
            route,
            code: response.status().as_u16(),
        })
        .inc();
    app.metrics
        .duration
        .get_or_create(&RouteLabel { route })
        .observe(start.elapsed().as_secs_f64());
    response
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn metrics(State(app): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics.encode()).into_response()
}

/// service_b's API.
async fn data(State(app): State<Shared>) -> Json<Value> {
    let n = app.served.fetch_add(1, Ordering::Relaxed) + 1;
    Json(json!({ "service": "service_b", "version": app.version, "value": n }))
}

/// service_a's API: calls service_b.
async fn work(State(app): State<Shared>) -> Response {
    let Role::ServiceA {
        service_b_url,
        upstream_timeout,
    } = &app.role
    else {
        return not_found().await;
    };
    if app.faults.is_active(FaultKind::Dependency) {
        app.metrics.upstream(Outcome::Failure);
        return error(
            StatusCode::BAD_GATEWAY,
            "service_b unreachable (dependency fault injected)",
        );
    }
    let url = format!("{service_b_url}/api/data");
    let result = async {
        let resp = app.client.get(&url).timeout(*upstream_timeout).send().await?;
        let status = resp.status();
        if !status.is_success() {
            return Ok(Err(status));
        }
        resp.json::<Value>().await.map(Ok)
    }
    .await;
    match result {
        Ok(Ok(upstream)) => {
            app.metrics.upstream(Outcome::Success);
            let n = app.served.fetch_add(1, Ordering::Relaxed) + 1;
            Json(json!({
                "service": "service_a",
                "version": app.version,
                "value": n,
                "upstream": upstream,
            }))
            .into_response()
        }
        Ok(Err(status)) => {
            app.metrics.upstream(Outcome::Failure);
            debug!(%status, "service_b answered an error");
            error(StatusCode::BAD_GATEWAY, format!("service_b answered {status}"))
        }
        Err(e) if e.is_timeout() => {
            app.metrics.upstream(Outcome::Failure);
            debug!(error = %e, "service_b timed out");
            error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("service_b did not answer within {} ms", upstream_timeout.as_millis()),
            )
        }
        Err(e) => {
            app.metrics.upstream(Outcome::Failure);
            debug!(error = %e, "service_b call failed");
            error(StatusCode::BAD_GATEWAY, format!("calling service_b failed: {e}"))
        }
    }
}

async fn list_faults(State(app): State<Shared>) -> Json<Value> {
    Json(app.state_json())
}

/// The fault kind of a URL, if this service accepts it; else the 400 message.
fn parse_kind(app: &App, kind: &str) -> Result<FaultKind, String> {
    let kind: FaultKind = kind.parse()?;
    if !app.faults.supports(kind) {
        return Err(format!("{} has no {kind}", app.role.service_name()));
    }
    Ok(kind)
}

async fn inject(State(app): State<Shared>, Path(kind): Path<String>, body: Bytes) -> Response {
    let injection = match parse_kind(&app, &kind).and_then(|kind| parse_injection(kind, &body)) {
        Ok(injection) => injection,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let FaultSpec::Crash { exit_code } = injection.spec {
        info!(fault = "crash", exit_code, "fault injected: exiting in 50 ms");
        let exit = app.exit.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CRASH_DELAY).await;
            exit.call(exit_code);
        });
        let mut state = app.state_json();
        state["exiting_with"] = json!(exit_code);
        return Json(state).into_response();
    }
    app.faults.inject(injection);
    Json(app.state_json()).into_response()
}

async fn clear_one(State(app): State<Shared>, Path(kind): Path<String>) -> Response {
    match parse_kind(&app, &kind) {
        Ok(kind) => {
            app.faults.clear(kind, ClearReason::Admin);
            Json(app.state_json()).into_response()
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn clear_all(State(app): State<Shared>) -> Json<Value> {
    app.faults.clear_all(ClearReason::Admin);
    Json(app.state_json())
}
