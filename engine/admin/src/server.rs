//! The admin API: reads through the read models, admin commands to sagas, and bulk jobs, for
//! callers with a bearer token (see [`crate::auth`]); and the dashboard, a page over the same
//! API, at `/`.
//!
//! A command to one saga is audited on that saga's event log by the engine; everything else a
//! caller asks that changes something (jobs), everything refused before it reached a saga, and
//! every 401 and 403 is written to the audit topic before the answer goes out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sagaflow_avro::{AdminAction, AuditOutcome, Resolution};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::audit::{Audit, Entry};
use crate::auth::{require, Auth, Denied, Principal, Role};
use crate::commands::{Answer, Commands, Outcome, Request};
use crate::error::{Error, Result};
use crate::jobs::{Job, JobSpec};
use crate::participants::{Change, Participants};
use crate::read_models::{ReadModels, FILTERS};

/// The admin API's own operations; [`openapi`] adds the read operations of the read models'.
const OWN_OPENAPI: &str = include_str!("../openapi.json");

/// Read operations passed through to the read models' query API: (its path, ours).
const READS: [(&str, &str); 4] = [
    ("/sagas", "/api/sagas"),
    ("/sagas/{saga_id}", "/api/sagas/{saga_id}"),
    ("/stats/daily", "/api/stats/daily"),
    ("/stats/status", "/api/stats/status"),
];

/// The dashboard: one page and its script and style, embedded so the binary serves it alone.
const UI_HTML: &str = include_str!("../ui/index.html");
const UI_JS: &str = include_str!("../ui/app.js");
const UI_CSS: &str = include_str!("../ui/app.css");

/// A dashboard file. The policy lets the page load only what this service serves: no CDN, no
/// external font or script, and no inline script.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The rate of a job that names none, commands per second.
const DEFAULT_RATE: f64 = 50.0;

/// Most sagas a dry run lists.
const MAX_SAMPLE: usize = 500;

/// What the service needs besides its clients.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a command waits for the engine's answer.
    pub answer_wait: Duration,
}

/// The service's parts.
#[derive(Debug)]
pub struct Parts {
    /// Who may call.
    pub auth: Auth,
    /// Sends commands to the group's engines.
    pub commands: Commands,
    /// The read models' query API.
    pub read_models: ReadModels,
    /// The audit topic.
    pub audit: Audit,
    /// Pauses of participants (`<group>.control`).
    pub participants: Participants,
}

#[derive(Debug)]
struct App {
    parts: Parts,
    config: ServerConfig,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    openapi: String,
}

/// The admin API's OpenAPI document: its own operations, and the read models' read
/// operations under `/api`, with their schemas.
pub fn openapi() -> Value {
    let mut doc: Value = serde_json::from_str(OWN_OPENAPI).expect("the embedded openapi.json");
    let read: Value = serde_json::from_str(sagaflow_projections::OPENAPI)
        .expect("the read models' embedded openapi.json");
    for kind in ["schemas", "responses"] {
        if let Some(theirs) = read["components"][kind].as_object() {
            let ours = doc["components"][kind].as_object_mut().expect("components");
            for (name, schema) in theirs {
                ours.entry(name.clone()).or_insert_with(|| schema.clone());
            }
        }
    }
    for (theirs, ours) in READS {
        let mut item = read["paths"][theirs].clone();
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] = json!({"$ref": "#/components/responses/Unauthenticated"});
            op["responses"]["403"] = json!({"$ref": "#/components/responses/Forbidden"});
            if let Some(id) = op["operationId"].as_str() {
                op["operationId"] = json!(format!("read_{id}"));
            }
        }
        doc["paths"][ours] = item;
    }
    // A job's filter takes exactly the read models' saga filters, with their schemas.
    let mut filter = json!({"type": "object", "additionalProperties": false, "minProperties": 1,
        "description": "Which sagas, as the read models' GET /sagas filters them; at least one.",
        "properties": {}});
    for param in read["paths"]["/sagas"]["get"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = param["name"].as_str().unwrap_or_default();
        if FILTERS.contains(&name) {
            let mut schema = param["schema"].clone();
            schema["description"] = param["description"].clone();
            filter["properties"][name] = schema;
        }
    }
    doc["components"]["schemas"]["JobFilter"] = filter;
    doc
}

/// Binds `listen` and serves the API (and `/health`, `/openapi.json`) on the current runtime.
pub async fn serve(listen: &str, parts: Parts, config: ServerConfig) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            listen: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        listen: listen.to_string(),
        source,
    })?;
    let app = Arc::new(App {
        parts,
        config,
        jobs: Mutex::default(),
        openapi: openapi().to_string(),
    });
    let router = router(app);
    drop(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            warn!(error = %e, "the admin API stopped");
        }
    }));
    Ok(addr)
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/openapi.json", get(openapi_json))
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", UI_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { page("text/javascript; charset=utf-8", UI_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { page("text/css; charset=utf-8", UI_CSS) }),
        )
        .route("/api/whoami", get(whoami))
        .route("/api/sagas", get(read_through))
        .route("/api/sagas/{saga_id}", get(read_through))
        .route("/api/stats/daily", get(read_through))
        .route("/api/stats/status", get(read_through))
        .route("/api/sagas/{saga_id}/commands", post(send_command))
        .route("/api/jobs", get(list_jobs).post(start_job))
        .route("/api/jobs/{job_id}", get(get_job))
        .route("/api/jobs/{job_id}/cancel", post(cancel_job))
        .route("/api/participants", get(list_participants))
        .route(
            "/api/participants/{topic}/{action}",
            post(participant_action),
        )
        .fallback(|uri: Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {}; see /openapi.json", uri.path()),
            )
        })
        .with_state(app)
}

/// An error answer: a status and a message that says what to fix.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::ReadModels {
                status: Some(400), ..
            } => StatusCode::BAD_REQUEST,
            Error::UnknownParticipant { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        Self::new(
            StatusCode::from_u16(d.status).unwrap_or(StatusCode::UNAUTHORIZED),
            d.message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({"error": self.message}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl App {
    /// The caller, if its token verifies and its role reaches `role`; else the 401 or 403,
    /// audited.
    async fn guard(
        &self,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        role: Role,
        what: &str,
    ) -> Result<Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let checked = self
            .parts
            .auth
            .authenticate(authorization)
            .and_then(|p| require(&p, role, what).map(|()| p));
        match checked {
            Ok(p) => Ok(p),
            Err(denied) => {
                let outcome = if denied.status == 403 {
                    AuditOutcome::Forbidden
                } else {
                    AuditOutcome::Unauthenticated
                };
                self.audit(Entry {
                    actor: denied.actor.clone(),
                    role: denied.role.map(|r| r.as_str().to_string()),
                    method: method.to_string(),
                    path: path.to_string(),
                    outcome,
                    status: denied.status,
                    target: None,
                    message: Some(denied.message.clone()),
                    detail: None,
                })
                .await?;
                Err(denied.into())
            }
        }
    }

    /// Writes an audit record; when it cannot be written, the request fails (503) rather than
    /// go unaudited.
    async fn audit(&self, entry: Entry) -> Result<(), ApiError> {
        self.parts.audit.record(entry).await.map_err(|e| {
            // The cause is for the operator's log, not for a caller who may not even be
            // authenticated.
            warn!(error = %e, "an audit record could not be written; the request is refused");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request was not carried out because it could not be audited; try again, and tell the operators if it persists (the admin API's log says why)",
            )
        })
    }

    /// Audits a mutation refused before it reached a saga, and returns the refusal.
    async fn refuse(
        &self,
        who: &Principal,
        method: &Method,
        path: &str,
        target: Option<String>,
        error: ApiError,
    ) -> ApiError {
        match self
            .record_refusal(who, method, path, target, error.status, &error.message)
            .await
        {
            Ok(()) => error,
            Err(unaudited) => unaudited,
        }
    }

    /// Audits a request that was carried out (or is about to be: a failed audit stops it).
    async fn accepted(
        &self,
        who: &Principal,
        method: &Method,
        path: &str,
        status: u16,
        target: String,
        detail: Value,
    ) -> Result<(), ApiError> {
        self.audit(Entry {
            actor: who.actor.clone(),
            role: Some(who.role.as_str().to_string()),
            method: method.to_string(),
            path: path.to_string(),
            outcome: AuditOutcome::Accepted,
            status,
            target: Some(target),
            message: None,
            detail: Some(detail),
        })
        .await
    }

    /// Audits a refusal with `status` and `message`.
    async fn record_refusal(
        &self,
        who: &Principal,
        method: &Method,
        path: &str,
        target: Option<String>,
        status: StatusCode,
        message: &str,
    ) -> Result<(), ApiError> {
        self.audit(Entry {
            actor: who.actor.clone(),
            role: Some(who.role.as_str().to_string()),
            method: method.to_string(),
            path: path.to_string(),
            outcome: AuditOutcome::Refused,
            status: status.as_u16(),
            target,
            message: Some(message.to_string()),
            detail: None,
        })
        .await
    }

    async fn pass_through(&self, path: &str, params: Vec<(String, String)>) -> Response {
        match self.parts.read_models.get(path, &params).await {
            Ok(passed) => (
                StatusCode::from_u16(passed.status).unwrap_or(StatusCode::BAD_GATEWAY),
                Json(passed.body),
            )
                .into_response(),
            Err(e) => ApiError::from(e).into_response(),
        }
    }
}

async fn openapi_json(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.clone(),
    )
        .into_response()
}

async fn whoami(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let who = app
        .guard(&headers, &method, uri.path(), Role::Viewer, "whoami")
        .await?;
    Ok(Json(json!({"actor": who.actor, "role": who.role})))
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .filter(|(k, _)| !k.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `a=1&b=x%20y` → pairs, percent-decoded (`+` is a space, as in forms).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://query/?{query}"))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// A read of the read models: `/api/X` is their `/X`, with the same query.
async fn read_through(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.guard(&headers, &method, uri.path(), Role::Viewer, "reading sagas")
        .await?;
    // The path stays percent-encoded as it came, so a saga id passes through unchanged.
    let theirs = uri.path().strip_prefix("/api").unwrap_or(uri.path());
    Ok(app.pass_through(theirs, query_pairs(&uri)).await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    action: String,
    step: Option<String>,
    step_output: Option<serde_json::Map<String, Value>>,
    resolution: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobBody {
    action: String,
    filter: BTreeMap<String, Value>,
    step: Option<String>,
    step_output: Option<serde_json::Map<String, Value>>,
    resolution: Option<String>,
    reason: Option<String>,
    rate: Option<f64>,
    #[serde(default)]
    dry_run: bool,
    sample: Option<usize>,
}

/// The request a body describes, for `who`; a 400 names an unknown action or resolution.
fn request(
    who: &Principal,
    action: &str,
    step: Option<String>,
    step_output: Option<serde_json::Map<String, Value>>,
    resolution: Option<&str>,
    reason: Option<String>,
) -> Result<Request, ApiError> {
    let request = Request {
        action: AdminAction::parse(action).map_err(ApiError::bad)?,
        step,
        output_json: step_output.map(|o| Value::Object(o).to_string()),
        resolution: resolution
            .map(Resolution::parse)
            .transpose()
            .map_err(ApiError::bad)?,
        reason,
        actor: who.actor.clone(),
    };
    request.validate().map_err(ApiError::bad)?;
    Ok(request)
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "the body is not a valid {what} ({e}); see /openapi.json"
        ))
    })
}

async fn send_command(
    State(app): State<Arc<App>>,
    Path(saga_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = app
        .guard(
            &headers,
            &method,
            uri.path(),
            Role::Operator,
            "sending a command",
        )
        .await?;
    let checked = parse_body::<CommandBody>(&body, "command").and_then(|b| {
        request(
            &who,
            &b.action,
            b.step,
            b.step_output,
            b.resolution.as_deref(),
            b.reason,
        )
    });
    let request = match checked {
        Ok(r) => r,
        Err(e) => {
            return Err(app
                .refuse(&who, &method, uri.path(), Some(saga_id), e)
                .await)
        }
    };
    let command = request.command(&saga_id, None);
    info!(saga_id = %saga_id, action = command.action.as_str(), actor = %who.actor, request_id = %command.request_id, "admin command");
    let answer = match app
        .parts
        .commands
        .send(&command, app.config.answer_wait)
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            let e = ApiError::from(e);
            return Err(app
                .refuse(&who, &method, uri.path(), Some(saga_id), e)
                .await);
        }
    };
    let response = command_response(&answer, app.config.answer_wait);
    // A dead-lettered command never reached the saga's event log: audited here instead.
    if let Outcome::DeadLettered { reason, detail } = &answer.outcome {
        let message = format!("the engine could not take it: {detail} ({reason})");
        app.record_refusal(
            &who,
            &method,
            uri.path(),
            Some(saga_id),
            response.status(),
            &message,
        )
        .await?;
    }
    Ok(response)
}

fn command_response(answer: &Answer, wait: Duration) -> Response {
    let command = &answer.command;
    let action = command.action.as_str();
    let body = |outcome: &str, rejection: Option<&str>| {
        let mut body = json!({
            "outcome": outcome,
            "request_id": command.request_id,
            "saga_id": command.saga_id,
            "action": action,
            "rejection": rejection,
            "status": answer.status(),
            "events": answer.events.iter().map(sagaflow_avro::SagaEvent::to_json).collect::<Vec<_>>(),
        });
        if let Some(why) = rejection {
            body["error"] = json!(format!(
                "the engine rejected {action} of saga {}: {why}",
                command.saga_id
            ));
        }
        body
    };
    match &answer.outcome {
        Outcome::Applied => (StatusCode::OK, Json(body("applied", None))).into_response(),
        Outcome::Rejected(why) => {
            (StatusCode::CONFLICT, Json(body("rejected", Some(why)))).into_response()
        }
        Outcome::DeadLettered { reason, .. } if reason == "unknown-saga" => ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no saga {}: the engine knows no saga with this id (unknown-saga)",
                command.saga_id
            ),
        )
        .into_response(),
        Outcome::DeadLettered { reason, detail } => (
            StatusCode::CONFLICT,
            Json(body(
                "rejected",
                Some(&format!("the engine could not take it: {detail} ({reason})")),
            )),
        )
            .into_response(),
        Outcome::Unanswered => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the engine did not answer {action} of saga {} within {}s (request {}): is an engine of this group running? The command stays on the admin topic and is decided when one is",
                command.saga_id,
                wait.as_secs(),
                command.request_id
            ),
        )
        .into_response(),
    }
}

/// How many ended jobs the service remembers: each holds the fate of every saga it matched,
/// so a service running jobs for months would otherwise grow without end. Their outcomes stay
/// on `<group>.audit` and the sagas' event logs.
const ENDED_JOBS_KEPT: usize = 100;

/// Forgets the oldest ended jobs beyond [`ENDED_JOBS_KEPT`]; running ones are kept.
fn forget_old_jobs(jobs: &mut BTreeMap<String, Arc<Job>>) {
    let mut ended: Vec<(i64, String)> = jobs
        .iter()
        .map(|(id, job)| (id, job.snapshot()))
        .filter(|(_, s)| s.status != crate::jobs::JobStatus::Running)
        .map(|(id, s)| (s.created_at, id.clone()))
        .collect();
    if ended.len() <= ENDED_JOBS_KEPT {
        return;
    }
    ended.sort();
    for (_, id) in &ended[..ended.len() - ENDED_JOBS_KEPT] {
        let _ = jobs.remove(id);
    }
}

async fn list_jobs(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.guard(&headers, &method, uri.path(), Role::Viewer, "listing jobs")
        .await?;
    let jobs: Vec<Arc<Job>> = app
        .jobs
        .lock()
        .expect("jobs lock")
        .values()
        .cloned()
        .collect();
    let mut items: Vec<_> = jobs.iter().map(|j| j.snapshot()).collect();
    items.sort_by_key(|j| std::cmp::Reverse(j.created_at));
    Ok(Json(json!({"items": items})))
}

async fn get_job(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.guard(&headers, &method, uri.path(), Role::Viewer, "reading a job")
        .await?;
    let job = app.jobs.lock().expect("jobs lock").get(&job_id).cloned();
    match job {
        Some(job) => Ok(Json(json!(job.snapshot()))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no job {job_id} on this service (jobs live as long as the service that runs them)"
            ),
        )),
    }
}

async fn cancel_job(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let who = app
        .guard(
            &headers,
            &method,
            uri.path(),
            Role::Operator,
            "cancelling a job",
        )
        .await?;
    let job = app.jobs.lock().expect("jobs lock").get(&job_id).cloned();
    let Some(job) = job else {
        let e = ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no job {job_id} on this service"),
        );
        return Err(app.refuse(&who, &method, uri.path(), Some(job_id), e).await);
    };
    if let Err(why) = job.cancel() {
        let e = ApiError::new(
            StatusCode::CONFLICT,
            format!("job {job_id} cannot be cancelled: {why}"),
        );
        return Err(app.refuse(&who, &method, uri.path(), Some(job_id), e).await);
    }
    let snapshot = job.snapshot();
    app.accepted(
        &who,
        &method,
        uri.path(),
        200,
        job_id,
        json!({"done": snapshot.done, "remaining": snapshot.remaining}),
    )
    .await?;
    Ok(Json(json!(snapshot)))
}

async fn list_participants(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.guard(
        &headers,
        &method,
        uri.path(),
        Role::Viewer,
        "listing participants",
    )
    .await?;
    let items = app.parts.participants.list().await?;
    Ok(Json(json!({"items": items})))
}

/// What a pause, a resume or new limits may say (the limits only for `/limits`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    reason: Option<String>,
    max_in_flight: Option<i32>,
    max_rate: Option<f64>,
}

/// `POST /api/participants/{topic}/{pause,resume,limits}`.
async fn participant_action(
    State(app): State<Arc<App>>,
    Path((topic, action)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let change = match action.as_str() {
        "pause" => Change::Pause,
        "resume" => Change::Resume,
        // The limits come from the body; they are filled in once it is read.
        "limits" => Change::Limit {
            max_in_flight: None,
            max_rate: None,
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no action {action:?} on a participant: pause, resume or limits"),
            ))
        }
    };
    control_participant(&app, &topic, change, &method, &uri, &headers, &body).await
}

/// Pauses, resumes or limits a participant. Audited on `<group>.audit` before it is written,
/// since it concerns no saga's event log.
async fn control_participant(
    app: &App,
    topic: &str,
    change: Change,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Json<Value>, ApiError> {
    let what = match change {
        Change::Pause => "pausing a participant",
        Change::Resume => "resuming a participant",
        Change::Limit { .. } => "limiting a participant",
    };
    let who = app
        .guard(headers, method, uri.path(), Role::Operator, what)
        .await?;
    let limits = matches!(change, Change::Limit { .. });
    // No body at all is a pause or resume without a reason. Anything else must be the JSON
    // object the document describes: a body of blanks is not JSON, and is refused like any
    // other invalid body.
    let request: ControlRequest = if body.is_empty() {
        if limits {
            let e = ApiError::bad(
                r#"the body must give the limits, e.g. {"max_in_flight": 20, "max_rate": 50} (null for no limit)"#,
            );
            return Err(app
                .refuse(&who, method, uri.path(), Some(topic.to_string()), e)
                .await);
        }
        ControlRequest::default()
    } else {
        match parse_body(body, "participant request") {
            Ok(r) => r,
            Err(e) => {
                return Err(app
                    .refuse(&who, method, uri.path(), Some(topic.to_string()), e)
                    .await)
            }
        }
    };
    let change = match change {
        Change::Limit { .. } => Change::Limit {
            max_in_flight: request.max_in_flight,
            max_rate: request.max_rate,
        },
        _ if request.max_in_flight.is_some() || request.max_rate.is_some() => {
            let e = ApiError::bad(format!(
                "a pause or a resume takes only a reason; set limits with POST /api/participants/{topic}/limits"
            ));
            return Err(app
                .refuse(&who, method, uri.path(), Some(topic.to_string()), e)
                .await);
        }
        other => other,
    };
    let checked = match change.validate() {
        Ok(()) => app
            .parts
            .participants
            .check(topic)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(ApiError::bad(e)),
    };
    if let Err(e) = checked {
        return Err(app
            .refuse(&who, method, uri.path(), Some(topic.to_string()), e)
            .await);
    }
    let detail = match change {
        Change::Limit {
            max_in_flight,
            max_rate,
        } => {
            json!({"limits": {"max_in_flight": max_in_flight, "max_rate": max_rate}, "reason": request.reason})
        }
        _ => json!({"paused": change == Change::Pause, "reason": request.reason}),
    };
    app.accepted(&who, method, uri.path(), 200, topic.to_string(), detail)
        .await?;
    let control = app
        .parts
        .participants
        .set(topic, change, &who.actor, request.reason)
        .await?;
    Ok(Json(json!(control)))
}

/// A job body's filter as query parameters: the read models' filters only, scalars only.
fn job_filter(filter: &BTreeMap<String, Value>) -> Result<Vec<(String, String)>, String> {
    if filter.is_empty() {
        return Err(format!(
            "the filter is empty; name at least one of {} (a job never targets every saga by default)",
            FILTERS.join(", ")
        ));
    }
    filter
        .iter()
        .map(|(name, value)| {
            if !FILTERS.contains(&name.as_str()) {
                return Err(format!(
                    "unknown filter {name:?}; the filters are {}",
                    FILTERS.join(", ")
                ));
            }
            // As the document types them: the version a whole number, the others strings.
            let text = match (name.as_str(), value) {
                ("version", Value::Number(n)) if n.is_i64() => n.to_string(),
                ("version", other) => {
                    return Err(format!(
                        "filter version must be a whole number, got {other}"
                    ))
                }
                (_, Value::String(s)) => s.clone(),
                (_, other) => return Err(format!("filter {name} must be a string, got {other}")),
            };
            Ok((name.clone(), text))
        })
        .collect()
}

async fn start_job(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = uri.path().to_string();
    let dry_run = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["dry_run"].as_bool())
        .unwrap_or(false);
    // A dry run changes nothing, so a viewer may count what an operator would change.
    let role = if dry_run {
        Role::Viewer
    } else {
        Role::Operator
    };
    let who = app
        .guard(&headers, &method, &path, role, "starting a bulk job")
        .await?;
    let checked = parse_body::<JobBody>(&body, "job").and_then(|b| {
        let filter = job_filter(&b.filter).map_err(ApiError::bad)?;
        let rate = b.rate.unwrap_or(DEFAULT_RATE);
        crate::jobs::check_rate(rate).map_err(ApiError::bad)?;
        let (dry_run, sample) = (b.dry_run, b.sample.unwrap_or(10));
        if sample > MAX_SAMPLE {
            return Err(ApiError::bad(format!(
                "sample must be at most {MAX_SAMPLE}, got {sample}"
            )));
        }
        let request = request(
            &who,
            &b.action,
            b.step,
            b.step_output,
            b.resolution.as_deref(),
            b.reason,
        )?;
        Ok((request, filter, rate, dry_run, sample))
    });
    let (request, filter, rate, dry_run, sample) = match checked {
        Ok(x) => x,
        Err(e) if dry_run => return Err(e),
        Err(e) => return Err(app.refuse(&who, &method, &path, None, e).await),
    };
    if dry_run {
        let (matched, sample) = app
            .parts
            .read_models
            .count_and_sample(&filter, sample)
            .await?;
        return Ok(
            Json(json!({"dry_run": true, "action": request.action.as_str(),
            "matched": matched, "sample": sample}))
            .into_response(),
        );
    }
    let ids = match app.parts.read_models.matching_ids(&filter, |_| {}).await {
        Ok(ids) => ids,
        Err(e) => return Err(app.refuse(&who, &method, &path, None, e.into()).await),
    };
    let job = Arc::new(Job::new(
        JobSpec {
            request,
            filter,
            rate,
        },
        ids,
    ));
    let snapshot = job.snapshot();
    app.accepted(
        &who,
        &method,
        &path,
        202,
        job.id().to_string(),
        json!({"action": snapshot.action, "filter": snapshot.filter,
            "matched": snapshot.matched, "rate": rate, "reason": snapshot.reason}),
    )
    .await?;
    {
        let mut jobs = app.jobs.lock().expect("jobs lock");
        forget_old_jobs(&mut jobs);
        let _ = jobs.insert(job.id().to_string(), job.clone());
    }
    let runner = app.clone();
    drop(tokio::spawn(async move {
        let done = job
            .run(&runner.parts.commands, runner.config.answer_wait)
            .await;
        let entry = Entry {
            actor: done.actor.clone(),
            role: None,
            method: "JOB".into(),
            path: format!("/api/jobs/{}", done.job_id),
            outcome: AuditOutcome::Accepted,
            status: 200,
            target: Some(done.job_id.clone()),
            message: None,
            detail: Some(json!({"status": done.status, "counts": done.counts})),
        };
        if let Err(e) = runner.audit(entry).await {
            warn!(job = %done.job_id, error = %e.message, "the end of a job could not be audited");
        }
        info!(job = %done.job_id, status = ?done.status, counts = ?done.counts, "bulk job over");
    }));
    Ok((StatusCode::ACCEPTED, Json(json!(snapshot))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fuzzer sends the float just past a bound, written as Python writes it; the check must
    /// see that float, not its neighbour on the bound.
    #[test]
    fn a_rate_one_float_past_its_bound_is_refused() {
        let limits_valid = |max_rate: &str| {
            let body = format!(r#"{{"max_rate": {max_rate}}}"#);
            let control: ControlRequest = parse_body(&Bytes::from(body), "t").unwrap();
            let limit = Change::Limit {
                max_in_flight: None,
                max_rate: control.max_rate,
            };
            limit.validate().is_ok()
        };
        assert!(!limits_valid("100000.00000000001"));
        assert!(!limits_valid("0.009999999999999998"));
        assert!(limits_valid("100000"));
        assert!(limits_valid("0.01"));
        for rate in ["10000.000000000002", "0.009999999999999998"] {
            let body = format!(r#"{{"action": "retry", "filter": {{}}, "rate": {rate}}}"#);
            let job: JobBody = parse_body(&Bytes::from(body), "t").unwrap();
            let parsed = job.rate.unwrap();
            assert!(
                crate::jobs::check_rate(parsed).is_err(),
                "{rate} read as {parsed}"
            );
        }
    }

    #[test]
    fn query_strings_are_decoded_as_forms_are() {
        assert_eq!(
            url_pairs("status=INCIDENT&key=customer%3Dc-42&x=a+b&bad=%zz&e"),
            vec![
                ("status".into(), "INCIDENT".into()),
                ("key".into(), "customer=c-42".into()),
                ("x".into(), "a b".into()),
                ("bad".into(), "%zz".into()),
                ("e".into(), String::new()),
            ]
        );
    }

    #[test]
    fn the_document_holds_the_read_operations_and_the_job_filters() {
        let doc = openapi();
        for (_, ours) in READS {
            let op = &doc["paths"][ours]["get"];
            assert!(op.is_object(), "{ours} is documented");
            assert!(op["responses"]["401"].is_object(), "{ours} documents 401");
        }
        let filter = &doc["components"]["schemas"]["JobFilter"]["properties"];
        for name in FILTERS {
            assert!(filter[name].is_object(), "the job filter takes {name}");
        }
        for schema in ["Saga", "Error", "Job"] {
            assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
        }
    }
}
