//! The HTTP API: Alertmanager's webhook, the incident list, health and metrics.
//!
//! The webhook acknowledges fast and never loses what it acknowledged: it
//! reserves a place in the pipeline queue, commits the delivery to the
//! journal, answers, and only then hands the delivery to the pipeline. A full
//! queue or an unavailable journal answers 503, which Alertmanager retries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::metrics::{self, KindLabels, Metrics, StatusLabels};
use crate::pipeline::Controls;
use homeostat_core::alert::is_label_name;
use homeostat_core::alert::{self, AlertStatus, DecodeError};
use homeostat_core::clock::Clock;
use homeostat_core::config::{Credentials, Role};
use homeostat_core::threshold::{self, FeedbackEvent, FeedbackReason, ThresholdsConfig};
use homeostat_journal::audit::AuditEntry;
use homeostat_journal::leadership::Term;
use homeostat_journal::{Delivery, IncidentQuery, Journal, JournalError};

/// Largest page `GET /api/v1/incidents` returns.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;
const WEBHOOK_PATH: &str = "/api/v1/alerts";

/// What every handler shares.
pub struct AppState {
    /// The configuration running, as loaded.
    pub config: homeostat_core::config::Config,
    pub journal: Journal,
    pub queue: mpsc::Sender<Delivery>,
    pub metrics: Arc<Metrics>,
    pub controls: Arc<Controls>,
    /// Where "now" comes from (a delivery's receipt time).
    pub clock: Arc<dyn Clock>,
    pub credentials: Credentials,
    /// Adaptive thresholds, for feedback on their alerts; `None` when not configured.
    pub thresholds: Option<Arc<ThresholdsConfig>>,
    pub max_body_bytes: usize,
    /// Start-up is complete: the journal is open and its backlog replayed.
    pub ready: AtomicBool,
    /// Shutdown has begun.
    pub stopping: AtomicBool,
}

/// Serves `router` on `listener` over HTTP/1.1 until `stop` resolves, then
/// lets open connections finish their requests for up to `drain` and closes
/// whatever is still open. A client must send a request's headers within
/// `header_timeout` (axum's own `serve` sets no such limit, so a client that
/// stalls mid-headers would keep its connection, and a stop, waiting). At
/// most `max_connections` are open at once.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: Router,
    header_timeout: Duration,
    drain: Duration,
    max_connections: usize,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    // One permit per open connection: past the cap, nothing more is
    // accepted until a connection closes (the kernel's backlog holds the rest).
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Connection ended with an error.");
            }
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?drain, "Connections still open after the drain timeout; closing them.");
    }
    connections.shutdown().await;
}

/// The whole HTTP API. Requests not answered within `request_timeout`
/// (a client stalling its upload, say) get 408.
pub fn router(state: Arc<AppState>, request_timeout: Duration) -> Router {
    let protected = Router::new()
        .route(WEBHOOK_PATH, post(receive_alerts))
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route("/api/v1/incidents/{id}/decisions", get(get_decisions))
        .route("/api/v1/incidents/{id}/notifications", get(get_notifications))
        .route("/api/v1/incidents/{id}/feedback", post(post_feedback))
        .route("/api/v1/incidents/{id}/approve", post(approve))
        .route("/api/v1/incidents/{id}/reject", post(reject))
        .route("/api/v1/controls", get(controls))
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/audit", get(get_audit))
        .route("/api/v1/anomaly", get(get_anomaly))
        .route("/-/reload", post(post_reload))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .route_layer(middleware::from_fn(same_origin_json));
    Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(serve_metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        // The path only: a query string may hold what a client should not
        // have put there (a token), and logs keep it.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
        }))
        .with_state(state)
}

/// An error answer: a status and a JSON body saying what went wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    /// Bounded label for `homeostat_webhook_requests_total`.
    outcome: &'static str,
    body: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            outcome,
            body: json!({ "error": message.into() }),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn journal(err: JournalError) -> ApiError {
        tracing::error!(error = %err, "Journal write failed; answering 503 so Alertmanager retries.");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "journal_error",
            format!("the journal is unavailable ({err}); retry later"),
        )
    }
}

impl From<DecodeError> for ApiError {
    fn from(err: DecodeError) -> ApiError {
        let mut body = json!({ "error": err.to_string() });
        if let DecodeError::Malformed { path, line, column, .. } = &err {
            body["path"] = json!(path);
            body["line"] = json!(line);
            body["column"] = json!(column);
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            outcome: err.metric_label(),
            body,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The webhook's answer once the delivery is journalled. Alertmanager
/// ignores it; it is kept small because every delivery pays for it.
#[derive(Serialize)]
struct Ack {
    status: &'static str,
    delivery: i64,
    /// The incident each alert of the delivery belongs to, in payload order.
    incidents: Vec<i64>,
}

async fn receive_alerts(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let result = accept(&state, &headers, body).await;
    state
        .metrics
        .webhook_ack_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(ack) => {
            state.metrics.count_request("accepted");
            Json(ack).into_response()
        }
        Err(err) => {
            state.metrics.count_request(err.outcome);
            tracing::warn!(status = err.status.as_u16(), error = %err.body["error"], "Rejected a webhook request.");
            err.into_response()
        }
    }
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Ack, ApiError> {
    let limit = state.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body exceeds the limit of {limit} bytes (server.max_body_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|err| {
        if std::error::Error::source(&err).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            ApiError::bad_request(format!("cannot read the request body: {err}"))
        }
    })?;
    let message = alert::decode(&bytes)?;

    // Reserve the queue slot before journalling, so a delivery is either
    // journalled and queued (by the journal, in commit order), or refused
    // whole and retried by Alertmanager.
    let queue_slot = state.queue.clone().try_reserve_owned().map_err(|err| match err {
        mpsc::error::TrySendError::Full(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the processing queue is full (server.queue_capacity); retry later",
        ),
        mpsc::error::TrySendError::Closed(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "homeostat is shutting down; retry later",
        ),
    })?;
    let mut firing = 0;
    for a in &message.alerts {
        firing += u64::from(a.status == AlertStatus::Firing);
    }
    let resolved = message.alerts.len() as u64 - firing;
    let delivery = state
        .journal
        .ingest(message, state.clock.now(), queue_slot)
        .await
        .map_err(ApiError::journal)?;

    let m = &state.metrics;
    m.webhook_alerts
        .get_or_create(&StatusLabels { status: "firing" })
        .inc_by(firing);
    m.webhook_alerts
        .get_or_create(&StatusLabels { status: "resolved" })
        .inc_by(resolved);
    for event in &delivery.events {
        m.incident_events
            .get_or_create(&KindLabels {
                kind: event.kind.as_str(),
            })
            .inc();
    }
    Ok(Ack {
        status: "accepted",
        delivery: delivery.id,
        incidents: delivery.events.iter().map(|e| e.incident_id).collect(),
    })
}

async fn list_incidents(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let query = incident_query(params)?;
    let page = state.journal.incidents(query).await.map_err(read_failed)?;
    Ok(Json(page).into_response())
}

/// The incident `id` names (400 for a bad id, 404 for none).
async fn incident_of(state: &AppState, id: &str) -> Result<homeostat_core::incident::Incident, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("incident id must be an integer, got {id:?}")))?;
    state
        .journal
        .incident(id)
        .await
        .map_err(read_failed)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no incident {id}")))
}

async fn get_incident(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(incident_of(&state, &id).await?).into_response())
}

async fn get_decisions(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = incident_of(&state, &id).await?.id;
    let decisions = state.journal.decisions(id).await.map_err(read_failed)?;
    Ok(Json(json!({ "incident": id, "decisions": decisions })).into_response())
}

async fn get_notifications(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = incident_of(&state, &id).await?.id;
    let notifications = state.journal.notifications(id).await.map_err(read_failed)?;
    Ok(Json(json!({ "incident": id, "notifications": notifications })).into_response())
}

/// `POST /api/v1/incidents/{id}/feedback` with `{"verdict": "false_alarm" | "true_alarm", "comment": "…"}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    verdict: Verdict,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Clone, Copy, Debug, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    /// The alert was not a real problem: its band widens one step.
    FalseAlarm,
    /// The alert was real: recorded, the band stays.
    TrueAlarm,
}

/// Longest accepted feedback comment, in characters.
const MAX_COMMENT: usize = 1000;

/// A user's verdict on an adaptive-threshold alert: a false alarm widens
/// its series' band one step; journalled with the comment, once per incident.
async fn post_feedback(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("incident id must be an integer, got {id:?}")))?;
    let body: FeedbackBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid feedback ({e}); expected {{\"verdict\": \"false_alarm\" | \"true_alarm\", \"comment\": \"…\"}}"
        ))
    })?;
    let comment = body.comment.unwrap_or_default();
    if comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::bad_request(format!(
            "comment is longer than {MAX_COMMENT} characters"
        )));
    }
    let unprocessable = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_adaptive", message);
    let incident = state
        .journal
        .incident(id)
        .await
        .map_err(read_failed)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no incident {id}")))?;
    let (Some(spec_name), Some(series)) = (
        incident.labels.get(threshold::SPEC_LABEL),
        incident.annotations.get(threshold::SERIES_ANNOTATION),
    ) else {
        return Err(unprocessable(format!(
            "incident {id} ({}) is not an adaptive-threshold alert: it lacks the {} label or the {} annotation",
            incident.alertname,
            threshold::SPEC_LABEL,
            threshold::SERIES_ANNOTATION
        )));
    };
    let Some(config) = &state.thresholds else {
        return Err(unprocessable(
            "adaptive thresholds are not configured (thresholds:)".into(),
        ));
    };
    let Some(spec) = config.specs.iter().find(|s| &s.name == spec_name) else {
        return Err(unprocessable(format!(
            "threshold spec {spec_name:?} of incident {id} is not configured (any more)"
        )));
    };
    let reason = match body.verdict {
        Verdict::FalseAlarm => FeedbackReason::MarkedFalse,
        Verdict::TrueAlarm => FeedbackReason::MarkedTrue,
    };
    let event = FeedbackEvent {
        spec: spec.name.clone(),
        series: series.clone(),
        reason,
        incident_id: id,
        detail: if comment.is_empty() {
            format!("{} by {}", reason.as_str(), who.name)
        } else {
            format!("{} by {}: {comment}", reason.as_str(), who.name)
        },
    };
    let step = state
        .journal
        .record_feedback(event, spec.coverage, config.feedback.clone())
        .await
        .map_err(ApiError::journal)?;
    if let Some(step) = &step {
        crate::thresholds::count_feedback(&state.metrics, step);
    }
    audit(
        &state,
        &who,
        "feedback",
        Some(id.to_string()),
        Some(format!("{}: {comment}", reason.as_str())),
    )
    .await?;

    Ok(Json(json!({
        "incident": id,
        "spec": spec.name,
        "series": series,
        "recorded": step.is_some(),
        "step": step,
    }))
    .into_response())
}

async fn controls(State(state): State<Arc<AppState>>) -> Response {
    let term = match state.journal.leadership().term() {
        Term::Leading(term) => Some(term),
        Term::Following => None,
    };
    Json(json!({
        "paused": state.controls.paused.load(Ordering::Acquire),
        // Whether this replica acts, and in which term of the lease.
        "leader": term.is_some(),
        "term": term,
    }))
    .into_response()
}

/// `GET /api/v1/anomaly`: the anomaly specs and what the leader's detectors
/// say of each live series now (empty on a replica that does not lead).
async fn get_anomaly(State(state): State<Arc<AppState>>) -> Response {
    let specs: Vec<_> = state
        .config
        .anomaly
        .iter()
        .flat_map(|a| &a.specs)
        .map(|s| json!({"name": s.name, "expr": s.expr, "step": s.step, "threshold": s.threshold, "hold": s.hold, "alert": s.alert}))
        .collect();
    Json(json!({
        "leader": matches!(state.journal.leadership().term(), Term::Leading(_)),
        "specs": specs,
        "series": state.controls.anomaly.list(),
    }))
    .into_response()
}

/// `POST /api/v1/pause` and `/resume`: an optional `{"reason": "…"}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    #[serde(default)]
    reason: Option<String>,
}

/// Stops all actions (each is deferred, and recorded so) until resumed,
/// across restarts too.
async fn pause(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Identity>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    set_paused(&state, &who, true, &body).await
}

async fn resume(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Identity>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    set_paused(&state, &who, false, &body).await
}

async fn set_paused(state: &AppState, who: &Identity, paused: bool, body: &[u8]) -> Result<Response, ApiError> {
    let body = control_body(body)?;
    let action = if paused { "pause" } else { "resume" };
    // Who asked is journalled before anything changes; then the pause
    // itself, before it takes effect: a pause a restart forgets is no pause.
    audit(state, who, action, None, body.reason.clone()).await?;
    state.journal.set_paused(paused).await.map_err(ApiError::journal)?;
    state.controls.paused.store(paused, Ordering::Release);
    state.metrics.paused.set(i64::from(paused));
    let reason = body.reason.as_deref().unwrap_or("none given");
    if paused {
        tracing::warn!(who = %who.name, reason, "Paused: no action will be taken until POST /api/v1/resume.");
    } else {
        tracing::warn!(who = %who.name, reason, "Resumed: actions are allowed again.");
    }
    Ok(Json(json!({ "paused": paused })).into_response())
}

/// Approves the incident's proposed action: it goes ahead at once if the
/// guard and the premise still allow it.
async fn approve(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    answer(&state, &who, &id, true, &body).await
}

/// Rejects the incident's proposed action: nothing is done, and the
/// incident is escalated.
async fn reject(
    State(state): State<Arc<AppState>>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    answer(&state, &who, &id, false, &body).await
}

async fn answer(state: &AppState, who: &Identity, id: &str, approved: bool, body: &[u8]) -> Result<Response, ApiError> {
    let id = incident_of(state, id).await?.id;
    let body = control_body(body)?;
    let action = if approved { "approve" } else { "reject" };
    let entry = audit_entry(state, who, action, Some(id.to_string()), body.reason);
    // Proposals older than the approval timeout have expired.
    let timeout = state
        .config
        .actions
        .as_ref()
        .map_or(chrono::Duration::zero(), |a| a.approval_timeout.as_delta());
    let proposed_after = entry.at - timeout;
    let answered = state.journal.answer(id, approved, entry, proposed_after).await;
    let Some(proposal) = answered.map_err(ApiError::journal)? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_proposal",
            format!("incident {id} has no proposed action waiting for an answer (it may have expired, been answered, or resolved)"),
        ));
    };
    state.controls.wake.notify_one();
    tracing::warn!(incident = id, proposal, who = %who.name, action, "A proposed action was answered.");
    Ok(Json(json!({ "incident": id, "proposal": proposal, "approved": approved })).into_response())
}

/// Reads the config file again and puts its playbook in effect; 400 with
/// the reason when it does not validate (the running one stays).
async fn post_reload(State(state): State<Arc<AppState>>, Extension(who): Extension<Identity>) -> Response {
    let result = crate::reload::reload(&state);
    crate::reload::log(&result);
    match result {
        Ok(done) => {
            if let Err(err) = audit(&state, &who, "reload", None, None).await {
                return err.into_response();
            }
            Json(done).into_response()
        }
        Err(why) => ApiError::new(StatusCode::BAD_REQUEST, "reload_refused", why).into_response(),
    }
}

/// An optional `{"reason": "…"}` body.
fn control_body(body: &[u8]) -> Result<ControlBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ControlBody::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid body ({e}); expected nothing or {{\"reason\": \"…\"}}")))
}

fn audit_entry(
    state: &AppState,
    who: &Identity,
    action: &str,
    subject: Option<String>,
    reason: Option<String>,
) -> AuditEntry {
    AuditEntry {
        at: state.clock.now(),
        who: who.name.clone(),
        role: who.role.as_str().into(),
        action: action.into(),
        subject,
        reason,
    }
}

/// Journals an operator action with who did it.
async fn audit(
    state: &AppState,
    who: &Identity,
    action: &str,
    subject: Option<String>,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let entry = audit_entry(state, who, action, subject, reason);
    state.journal.record_audit(entry).await.map_err(ApiError::journal)
}

/// `GET /api/v1/audit?limit=N`: operator actions, newest first.
async fn get_audit(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let limit = match params.iter().find(|(k, _)| k == "limit") {
        None => DEFAULT_PAGE,
        Some((_, v)) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}, got {v:?}")))?,
    };
    let entries = state.journal.audit(limit).await.map_err(read_failed)?;
    Ok(Json(json!({ "audit": entries })).into_response())
}

fn read_failed(err: JournalError) -> ApiError {
    if let JournalError::InvalidQuery(message) = err {
        return ApiError::bad_request(message);
    }
    tracing::error!(error = %err, "Journal read failed.");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "journal_error", err.to_string())
}

/// Parses `status`, `alertname`, repeated `label=NAME=VALUE`, `cursor` and `limit`.
fn incident_query(params: Vec<(String, String)>) -> Result<IncidentQuery, ApiError> {
    let mut query = IncidentQuery {
        limit: DEFAULT_PAGE,
        ..IncidentQuery::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "status" => {
                query.status = Some(match value.as_str() {
                    "firing" => AlertStatus::Firing,
                    "resolved" => AlertStatus::Resolved,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "status must be `firing` or `resolved`, got {value:?}"
                        )))
                    }
                })
            }
            "alertname" => query.alertname = Some(value),
            "label" => {
                let (name, wanted) = value
                    .split_once('=')
                    .filter(|(name, _)| is_label_name(name))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "label filters are written label=NAME=VALUE with a Prometheus label name, got {value:?}"
                        ))
                    })?;
                query.labels.push((name.to_owned(), wanted.to_owned()));
            }
            "cursor" => {
                query.before = Some(
                    value
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("cursor must be an integer, got {value:?}")))?,
                )
            }
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be an integer from 1 to {MAX_PAGE}, got {value:?}"))
                    })?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}; known: status, alertname, label, cursor, limit"
                )))
            }
        }
    }
    Ok(query)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) && !state.stopping.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn serve_metrics(State(state): State<Arc<AppState>>) -> Response {
    let depth = state.queue.max_capacity() - state.queue.capacity();
    state.metrics.queue_depth.set(depth as i64);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], state.metrics.encode()).into_response()
}

/// Refuses what a web page in a browser could send to homeostat (which
/// listens on loopback without a token by default): a POST must be
/// `Content-Type: application/json`, which a cross-site page cannot send
/// without a CORS preflight homeostat never grants (415 otherwise), and an
/// `Origin`, when there is one, must be the server's own (403 otherwise).
/// Alertmanager, curl and the CLI send no `Origin`.
async fn same_origin_json(request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let own = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && !host.is_empty() && rest == host);
        if !own {
            tracing::warn!(origin = ?origin, path = request.uri().path(), "Refused a cross-origin request.");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!(
                    "Origin {origin:?} is not this server's own (http://{host}): cross-origin requests are refused"
                ),
            )
            .into_response();
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_json",
            "a POST must be sent with Content-Type: application/json",
        )
        .into_response();
    }
    next.run(request).await
}

/// Who made a request, as the audit trail names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

impl Identity {
    /// Everyone, when no `auth` is configured (homeostat on loopback).
    fn anonymous() -> Identity {
        Identity {
            name: "anonymous".into(),
            role: Role::Admin,
        }
    }
}

/// What a request needs its caller's role to allow.
fn permits(role: Role, method: &axum::http::Method, path: &str) -> Result<(), &'static str> {
    let (needs, allowed) = if *method == axum::http::Method::POST && path == WEBHOOK_PATH {
        ("post alerts", matches!(role, Role::Alertmanager | Role::Admin))
    } else if *method == axum::http::Method::GET {
        ("read", matches!(role, Role::Viewer | Role::Operator | Role::Admin))
    } else {
        ("operate", matches!(role, Role::Operator | Role::Admin))
    };
    if allowed {
        Ok(())
    } else {
        Err(needs)
    }
}

/// 401 without valid credentials; 403 when the caller's role does not
/// allow the request. The caller's [`Identity`] goes to the handler.
async fn authenticate(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let identity = if state.credentials.is_empty() {
        // Anyone on loopback may, but not a web page whose name was re-pointed
        // at 127.0.0.1 (DNS rebinding): its requests name its own host.
        if state.config.server.listen.ip().is_loopback() && !loopback_host(request.headers()) {
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "foreign_host",
                format!(
                    "Host {host:?} is not a loopback name: without `auth`, homeostat answers only requests \
                     to 127.0.0.1, [::1] or localhost"
                ),
            )
            .into_response();
        }
        Some(Identity::anonymous())
    } else {
        identify(&state.credentials, request.headers())
    };
    let webhook = request.uri().path() == WEBHOOK_PATH;
    let Some(identity) = identity else {
        if webhook {
            state.metrics.count_request("unauthorized");
        }
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong credentials in the Authorization header",
        )
        .into_response();
        let challenge = if state.credentials.basic.is_some() {
            "Basic realm=\"homeostat\""
        } else {
            "Bearer realm=\"homeostat\""
        };
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        return response;
    };
    if let Err(needs) = permits(identity.role, request.method(), request.uri().path()) {
        if webhook {
            state.metrics.count_request("forbidden");
        }
        tracing::warn!(who = %identity.name, role = identity.role.as_str(), path = request.uri().path(), "Refused a request the role does not allow.");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{:?} has role {}, which may not {needs}",
                identity.name,
                identity.role.as_str()
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// Whether the `Host` header names a loopback address or `localhost`.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    // Strip the port: `[::1]:9095`, `127.0.0.1:9095`, `localhost`.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The holder of the credential the `Authorization` header carries.
/// Secrets are compared in constant time.
fn identify(credentials: &Credentials, headers: &HeaderMap) -> Option<Identity> {
    let (scheme, value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))?;
    let value = value.trim();
    let admin = |name: &str| Identity {
        name: name.to_owned(),
        role: Role::Admin,
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        // Every token compared, always, so timing does not tell which matched.
        let mut found = None;
        if let Some(token) = &credentials.bearer_token {
            if secret_eq(value, token.expose()) {
                found = Some(admin("bearer_token"));
            }
        }
        for (name, role, token) in &credentials.tokens {
            if secret_eq(value, token.expose()) {
                found = Some(Identity {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        return found;
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let (username, password) = credentials.basic.as_ref()?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
        let (user, pass) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        // Both compared, always, so timing does not tell which one was wrong.
        let user_ok = secret_eq(user, username);
        let pass_ok = secret_eq(pass, password.expose());
        return (user_ok & pass_ok).then(|| admin(username));
    }
    None
}

/// Compares digests in constant time, so neither the content nor the
/// length of the secret shows in how long a wrong guess takes.
fn secret_eq(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeostat_core::config::Secret;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        h
    }

    #[test]
    fn loopback_hosts() {
        let host = |h: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(h).unwrap());
            loopback_host(&headers)
        };
        for ok in [
            "127.0.0.1:9095",
            "127.1.2.3",
            "localhost:9095",
            "LOCALHOST",
            "[::1]:9095",
            "[::1]",
        ] {
            assert!(host(ok), "{ok}");
        }
        for foreign in [
            "evil.example:9095",
            "10.0.0.1:9095",
            "homeostat",
            "[2001:db8::1]:9095",
            "localhost.evil.example",
        ] {
            assert!(!host(foreign), "{foreign}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn bearer_and_basic_credentials() {
        let credentials = Credentials {
            bearer_token: Some(Secret::new("tok")),
            basic: Some(("am".into(), Secret::new("pw:with:colons"))),
            tokens: vec![("grafana".into(), Role::Viewer, Secret::new("view"))],
        };
        let authorized = |c: &Credentials, h: &HeaderMap| identify(c, h).is_some();
        assert_eq!(
            identify(&credentials, &headers("Bearer view")),
            Some(Identity {
                name: "grafana".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(
            identify(&credentials, &headers("Bearer tok")).unwrap().role,
            Role::Admin
        );
        assert!(authorized(&credentials, &headers("Bearer tok")));
        assert!(authorized(&credentials, &headers("bearer tok")));
        assert!(!authorized(&credentials, &headers("Bearer tok2")));
        assert!(!authorized(&credentials, &headers("Bearer")));
        let basic = base64::engine::general_purpose::STANDARD.encode("am:pw:with:colons");
        assert!(authorized(&credentials, &headers(&format!("Basic {basic}"))));
        let wrong = base64::engine::general_purpose::STANDARD.encode("am:pw");
        assert!(!authorized(&credentials, &headers(&format!("Basic {wrong}"))));
        assert!(!authorized(&credentials, &headers("Basic !!notbase64")));
        assert!(!authorized(&credentials, &HeaderMap::new()));

        let bearer_only = Credentials {
            bearer_token: Some(Secret::new("tok")),
            basic: None,
            tokens: Vec::new(),
        };
        assert!(!authorized(&bearer_only, &headers(&format!("Basic {basic}"))));
    }

    #[test]
    fn incident_query_parameters() {
        let params = |pairs: &[(&str, &str)]| {
            incident_query(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        let q = params(&[
            ("status", "firing"),
            ("alertname", "Down"),
            ("label", "service=b"),
            ("label", "team=x=y"),
            ("cursor", "40"),
            ("limit", "5"),
        ])
        .unwrap();
        assert_eq!(q.status, Some(AlertStatus::Firing));
        assert_eq!(q.alertname.as_deref(), Some("Down"));
        assert_eq!(
            q.labels,
            vec![("service".into(), "b".into()), ("team".into(), "x=y".into())]
        );
        assert_eq!((q.before, q.limit), (Some(40), 5));
        assert_eq!(params(&[]).unwrap().limit, DEFAULT_PAGE);
        for bad in [
            ("status", "open"),
            ("label", "no-equals"),
            ("label", "bad-name=x"),
            ("limit", "0"),
            ("limit", "1001"),
            ("cursor", "x"),
            ("sort", "id"),
        ] {
            let err = params(&[bad]).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
