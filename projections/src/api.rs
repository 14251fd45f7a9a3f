//! The query API over the read models, with `/health`, `/metrics` and the OpenAPI document.
//!
//! Every answer is JSON; a bad parameter is a 400 that names the parameter and what it takes,
//! and a database outage is a 503, never a 500.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};
use tracing::{error, warn};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The OpenAPI document, checked against the handlers by schemathesis in the tests.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Epoch ms of 0001-01-01 and 9999-12-31: times outside are clamped to these, which PostgreSQL
/// stores and which match the same sagas (none started that early or late).
const MIN_MS: i64 = -62_135_596_800_000;
const MAX_MS: i64 = 253_402_300_799_999;

/// Most sagas one page returns.
const MAX_LIMIT: i64 = 500;
const DEFAULT_LIMIT: i64 = 50;

/// What the HTTP endpoint needs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub database_url: String,
    pub schema: String,
}

struct Db {
    config: ApiConfig,
    client: Mutex<Option<Arc<Client>>>,
}

impl Db {
    /// A live connection, reconnecting if the last one closed.
    async fn client(&self) -> std::result::Result<Arc<Client>, ApiError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.config.database_url, NoTls)
            .await
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "cannot connect to PostgreSQL at {}: {e}",
                    crate::store::redact(&self.config.database_url)
                ))
            })?;
        drop(tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "query API connection closed");
            }
        }));
        client
            .batch_execute(&format!("SET search_path TO {}", self.config.schema))
            .await
            .map_err(ApiError::db)?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}

struct AppState {
    db: Db,
    metrics: Arc<Metrics>,
    /// Whether the projector loop still runs.
    running: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Open sagas by definition and status, refreshed at most every few seconds.
    live_read: Mutex<Option<Instant>>,
}

/// An error answer: a status and a message that says what to fix.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }

    fn db(e: tokio_postgres::Error) -> Self {
        // The server's own message says more than the client's "db error".
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string());
        error!(error = %detail, "read model query failed");
        Self::unavailable(format!(
            "the read models cannot be queried right now: {detail}"
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

/// Binds `listen` and serves the API on the current tokio runtime.
pub async fn serve(
    listen: &str,
    config: ApiConfig,
    metrics: Arc<Metrics>,
    running: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<SocketAddr> {
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
    let state = Arc::new(AppState {
        db: Db {
            config,
            client: Mutex::new(None),
        },
        metrics,
        running,
        live_read: Mutex::new(None),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/sagas", get(list_sagas))
        .route("/sagas/{saga_id}", get(one_saga))
        .route("/stats/daily", get(daily_stats))
        .route("/stats/status", get(status_counts))
        .with_state(state);
    drop(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "query API stopped");
        }
    }));
    Ok(addr)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let text = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    if !(state.running)() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "down: the projector loop has stopped; see the log for why\n".into(),
        );
    }
    let (events, seconds) = state.metrics.lag();
    match state.metrics.failing() {
        Some(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: {reason}\nlag: {events} events, {seconds:.1} s\n"),
        ),
        None => text(
            StatusCode::OK,
            format!("ok\nlag: {events} events, {seconds:.1} s\n"),
        ),
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    refresh_live(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Reads the open sagas by definition and status into the metrics, at most every 5 s.
async fn refresh_live(state: &AppState) {
    let mut last = state.live_read.lock().await;
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
        return;
    }
    *last = Some(Instant::now());
    let Ok(client) = state.db.client().await else {
        return;
    };
    match client
        .query(
            "SELECT definition, status, count(*) FROM sagas WHERE ended_at IS NULL
             GROUP BY definition, status ORDER BY definition, status",
            &[],
        )
        .await
    {
        Ok(rows) => state.metrics.set_live(
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        ),
        Err(e) => warn!(error = %e, "reading open sagas for the metrics failed"),
    }
}

/// The columns of a saga, as JSON.
const SAGA_JSON: &str = "json_build_object(
    'saga_id', saga_id, 'definition', definition, 'version', version, 'status', status,
    'started_at', started_at, 'ended_at', ended_at, 'duration_ms', duration_ms,
    'current_step', current_step, 'last_error_code', last_error_code,
    'last_error_message', last_error_message, 'attempts', attempts,
    'compensations', compensations, 'retries', retries, 'timeouts', timeouts,
    'business_keys', business_keys, 'last_seq', last_seq, 'updated_at', updated_at)::text";

fn time_param(
    params: &HashMap<String, String>,
    name: &str,
) -> std::result::Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp_millis().clamp(MIN_MS, MAX_MS))
                .map_err(|e| {
                    ApiError::bad(format!(
                        "`{name}` must be an RFC 3339 time such as 2026-12-01T10:00:00Z, got `{text}` ({e})"
                    ))
                })
        })
        .transpose()
}

/// A text filter: `Err` if empty (leave it out instead). PostgreSQL text cannot hold NUL, so a
/// value with one matches nothing rather than failing the query.
fn text_param<'a>(
    params: &'a HashMap<String, String>,
    name: &str,
) -> std::result::Result<Option<&'a str>, ApiError> {
    match params.get(name).map(String::as_str) {
        Some("") => Err(ApiError::bad(format!(
            "`{name}` is empty; leave it out to match any"
        ))),
        other => Ok(other),
    }
}

fn int_param(
    params: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> std::result::Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|text| match text.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::bad(format!(
                "`{name}` must be a whole number from {} to {}, got `{text}`",
                range.start(),
                range.end()
            ))),
        })
        .transpose()
}

/// The page cursor: the last row's start (epoch ms) and id, hex-encoded so that it is opaque
/// and URL-safe.
fn encode_cursor(started_ms: i64, saga_id: &str) -> String {
    format!("{started_ms}:{saga_id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(text: &str) -> Option<(i64, String)> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect();
    let decoded = String::from_utf8_lossy(&bytes?).into_owned();
    let (ms, id) = decoded.split_once(':')?;
    if ms.is_empty() || ms.len() > 18 || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        ms.parse::<i64>().ok()?.clamp(MIN_MS, MAX_MS),
        id.to_string(),
    ))
}

/// A WHERE clause being built, with its parameters.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filter {
    /// Adds a text parameter; returns its placeholder. A value PostgreSQL cannot store (with
    /// a NUL) matches no saga.
    fn text(&mut self, value: &str) -> String {
        if value.contains('\0') {
            self.clauses.push("false".into());
            return "NULL".into();
        }
        self.arg(value.to_string())
    }

    /// Adds a parameter; returns its placeholder.
    fn arg(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.args.push(Box::new(value));
        format!("${}", self.args.len())
    }
}

/// The sagas' filters of `params` (all but `status` when `with_status` is false).
fn saga_filter(
    params: &HashMap<String, String>,
    with_status: bool,
) -> std::result::Result<Filter, ApiError> {
    let mut f = Filter::default();
    for (name, column) in [
        ("definition", "definition"),
        ("status", "status"),
        ("step", "current_step"),
        ("error_code", "last_error_code"),
    ] {
        if name == "status" && !with_status {
            continue;
        }
        if let Some(value) = text_param(params, name)? {
            let p = f.text(value);
            f.clauses.push(format!("{column} = {p}"));
        }
    }
    if let Some(version) = int_param(params, "version", 1..=i64::from(i32::MAX))? {
        let p = f.arg(version as i32);
        f.clauses.push(format!("version = {p}"));
    }
    if let Some(from) = time_param(params, "started_after")? {
        let p = f.arg(from);
        f.clauses
            .push(format!("started_at >= to_timestamp({p}::int8 / 1000.0)"));
    }
    if let Some(to) = time_param(params, "started_before")? {
        let p = f.arg(to);
        f.clauses
            .push(format!("started_at < to_timestamp({p}::int8 / 1000.0)"));
    }
    if let Some(key) = text_param(params, "key")? {
        let Some((name, value)) = key.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            return Err(ApiError::bad(format!(
                "`key` must be NAME=VALUE, a business key the definition declares under `index:`, e.g. key=customer=c-42; got `{key}`"
            )));
        };
        // Containment uses the GIN index on business_keys; it matches string values.
        let (n, v) = (f.text(name), f.text(value));
        f.clauses.push(format!(
            "business_keys @> jsonb_build_object({n}::text, {v}::text)"
        ));
    }
    Ok(f)
}

impl Filter {
    /// `WHERE …`, or nothing.
    fn clause(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// How many sagas the filters match, by status (the `status` filter does not apply: the
/// counts are what a status filter would choose from).
async fn status_counts(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> std::result::Result<Json<Value>, ApiError> {
    let f = saga_filter(&params, false)?;
    let sql = format!(
        "SELECT status, count(*) FROM sagas {} GROUP BY status ORDER BY status",
        f.clause()
    );
    let client = state.db.client().await?;
    let refs: Vec<&(dyn ToSql + Sync)> = f.args.iter().map(|a| a.as_ref() as _).collect();
    let rows = client.query(&sql, &refs).await.map_err(ApiError::db)?;
    let mut by_status = serde_json::Map::new();
    let mut total = 0i64;
    for row in rows {
        let n: i64 = row.get(1);
        total += n;
        by_status.insert(row.get(0), json!(n));
    }
    Ok(Json(json!({"total": total, "by_status": by_status})))
}

async fn list_sagas(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> std::result::Result<Json<Value>, ApiError> {
    let limit = int_param(&params, "limit", 1..=MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let mut f = saga_filter(&params, true)?;
    if let Some(cursor) = text_param(&params, "cursor")? {
        let (ms, id) = decode_cursor(cursor).ok_or_else(|| {
            ApiError::bad("`cursor` is not one this API returned; pass `next_cursor` from the previous page as it is")
        })?;
        let (ms, id) = (f.arg(ms), f.text(&id));
        f.clauses.push(format!(
            "(started_at, saga_id) < (to_timestamp({ms}::int8 / 1000.0), {id})"
        ));
    }
    let filter = f.clause();
    let args = f.args;
    let sql = format!(
        "SELECT {SAGA_JSON}, (extract(epoch FROM started_at) * 1000)::int8, saga_id
         FROM sagas {filter} ORDER BY started_at DESC, saga_id DESC LIMIT {}",
        limit + 1
    );
    let client = state.db.client().await?;
    let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as _).collect();
    let rows = client.query(&sql, &refs).await.map_err(ApiError::db)?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let items: Vec<Value> = page
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap_or(Value::Null))
        .collect();
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => Some(encode_cursor(last.get(1), last.get(2))),
        _ => None,
    };
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})))
}

async fn one_saga(
    State(state): State<Arc<AppState>>,
    Path(saga_id): Path<String>,
) -> std::result::Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no saga `{saga_id}` in the read models; it may not have started, or its events are not projected yet (see /health for the lag)"
        ),
    }
    };
    if saga_id.contains('\0') {
        return Err(not_found());
    }
    let client = state.db.client().await?;
    let saga = client
        .query_opt(
            &format!("SELECT {SAGA_JSON} FROM sagas WHERE saga_id = $1"),
            &[&saga_id],
        )
        .await
        .map_err(ApiError::db)?;
    let Some(saga) = saga else {
        return Err(not_found());
    };
    let saga: Value = serde_json::from_str(saga.get::<_, &str>(0)).unwrap_or(Value::Null);
    let steps = client
        .query(
            "SELECT json_build_object('step', step, 'phase', phase, 'attempt', attempt,
                    'node', node, 'status', status, 'started_at', started_at,
                    'ended_at', ended_at, 'duration_ms', duration_ms,
                    'error_code', error_code)::text
             FROM steps WHERE saga_id = $1
             ORDER BY started_at NULLS LAST, step, phase, attempt",
            &[&saga_id],
        )
        .await
        .map_err(ApiError::db)?;
    let events = client
        .query(
            "SELECT json_build_object('seq', seq, 'type', type, 'at', at, 'step', step,
                    'attempt', attempt, 'status', status, 'due', due, 'detail', detail,
                    'input', input)::text
             FROM events WHERE saga_id = $1 ORDER BY seq",
            &[&saga_id],
        )
        .await
        .map_err(ApiError::db)?;
    let parse = |rows: Vec<tokio_postgres::Row>| -> Vec<Value> {
        rows.iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap_or(Value::Null))
            .collect()
    };
    Ok(Json(json!({
        "saga": saga,
        "steps": parse(steps),
        "timeline": parse(events),
    })))
}

fn date_param(
    params: &HashMap<String, String>,
    name: &str,
) -> std::result::Result<Option<chrono::NaiveDate>, ApiError> {
    params
        .get(name)
        .map(|text| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                ApiError::bad(format!(
                    "`{name}` must be a date such as 2026-12-01, got `{text}`"
                ))
            })
        })
        .transpose()
}

async fn daily_stats(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> std::result::Result<Json<Value>, ApiError> {
    let today = chrono::NaiveDate::default()
        + chrono::Days::new((crate::store::now_ms() / 86_400_000).max(0) as u64);
    let to = date_param(&params, "to")?.unwrap_or(today);
    let from = match date_param(&params, "from")? {
        Some(from) => from,
        None => to
            .checked_sub_days(chrono::Days::new(29))
            .unwrap_or(chrono::NaiveDate::MIN),
    };
    let definition = text_param(&params, "definition")?.map(|d| d.replace('\0', "\u{fffd}"));
    // Days count from 1970-01-01 (the read models hold none before it); a far earlier date,
    // which PostgreSQL's date range may not reach, reads as the day before.
    let day = |date: chrono::NaiveDate| {
        i32::try_from((date - chrono::NaiveDate::default()).num_days())
            .unwrap_or(i32::MAX)
            .max(-1)
    };
    let (from_day, to_day) = (day(from), day(to));
    let client = state.db.client().await?;
    let rows = client
        .query(
            "SELECT json_build_object('definition', definition, 'day', day, 'started', started,
                    'completed', completed, 'compensated', compensated, 'failed', failed,
                    'aborted', aborted, 'by_status', by_status, 'p50_ms', p50_ms,
                    'p95_ms', p95_ms, 'p99_ms', p99_ms)::text
             FROM daily_stats
             WHERE day BETWEEN date '1970-01-01' + $1::int4 AND date '1970-01-01' + $2::int4
               AND ($3::text IS NULL OR definition = $3)
             ORDER BY day DESC, definition",
            &[&from_day, &to_day, &definition],
        )
        .await
        .map_err(ApiError::db)?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap_or(Value::Null))
        .collect();
    Ok(Json(json!({"items": items})))
}
