//! The Confluent Schema Registry REST API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{debug, error};

use crate::error::{Error, Result};
use crate::model::{CompatibilityLevel, SchemaReference, SubjectVersion, VersionSelector, AVRO};
use crate::state::{Listing, NewSchema};
use crate::store::Store;

/// The content type Confluent's registry speaks.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = State<Arc<Store>>;
type Reply = Result<Response>;

/// The HTTP routes of the registry.
pub(crate) fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_by_level),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_with_version),
        )
        .route(
            "/config",
            get(global_config)
                .put(set_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(store)
}

// ---- handlers ----

async fn root() -> Response {
    reply(&json!({}))
}

async fn schema_types() -> Response {
    reply(&[AVRO])
}

async fn schema_by_id(State(store): Shared, Params(id): Params<String>) -> Reply {
    let found = store.state().schema_by_id(parse_id(&id)?)?;
    let mut body = json!({ "schema": found.schema });
    if found.schema_type != AVRO {
        body["schemaType"] = json!(found.schema_type);
    }
    if !found.references.is_empty() {
        body["references"] = json!(found.references);
    }
    Ok(reply(&body))
}

async fn raw_schema_by_id(State(store): Shared, Params(id): Params<String>) -> Reply {
    let found = store.state().schema_by_id(parse_id(&id)?)?;
    Ok(raw(found.schema))
}

async fn subjects_by_id(State(store): Shared, Params(id): Params<String>, q: QueryParams) -> Reply {
    let usages = store.state().usages(parse_id(&id)?, q.flag("deleted")?)?;
    let mut subjects: Vec<String> = usages.into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    Ok(reply(&subjects))
}

async fn versions_by_id(State(store): Shared, Params(id): Params<String>, q: QueryParams) -> Reply {
    let usages = store.state().usages(parse_id(&id)?, q.flag("deleted")?)?;
    let body: Vec<Value> = usages
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(reply(&body))
}

async fn list_subjects(State(store): Shared, q: QueryParams) -> Reply {
    let listing = q.listing()?;
    let subjects = store.state().subjects(listing, q.get("subjectPrefix"));
    Ok(reply(&q.page(subjects)?))
}

async fn lookup(
    State(store): Shared,
    Params(subject): Params<String>,
    q: QueryParams,
    Body(body): Body<SchemaBody>,
) -> Reply {
    let new = body.into_new_schema()?;
    let found = store.state().lookup(&subject, &new, q.flag("deleted")?)?;
    Ok(reply(&version_json(&found)))
}

async fn delete_subject(
    State(store): Shared,
    Params(subject): Params<String>,
    q: QueryParams,
) -> Reply {
    let versions = store.delete_subject(&subject, q.flag("permanent")?).await?;
    Ok(reply(&versions))
}

async fn list_versions(
    State(store): Shared,
    Params(subject): Params<String>,
    q: QueryParams,
) -> Reply {
    let versions = store.state().versions(&subject, q.listing()?)?;
    Ok(reply(&q.page(versions)?))
}

async fn register(
    State(store): Shared,
    Params(subject): Params<String>,
    Body(body): Body<SchemaBody>,
) -> Reply {
    let new = body.into_new_schema()?;
    let id = store.register(&subject, &new).await?;
    Ok(reply(&json!({ "id": id })))
}

async fn get_version(
    State(store): Shared,
    Params((subject, version)): Params<(String, String)>,
    q: QueryParams,
) -> Reply {
    let selector = VersionSelector::parse(&version)?;
    let found = store
        .state()
        .version(&subject, selector, q.flag("deleted")?)?;
    Ok(reply(&version_json(&found)))
}

async fn raw_version(
    State(store): Shared,
    Params((subject, version)): Params<(String, String)>,
    q: QueryParams,
) -> Reply {
    let selector = VersionSelector::parse(&version)?;
    let found = store
        .state()
        .version(&subject, selector, q.flag("deleted")?)?;
    Ok(raw(found.schema))
}

async fn delete_version(
    State(store): Shared,
    Params((subject, version)): Params<(String, String)>,
    q: QueryParams,
) -> Reply {
    let selector = VersionSelector::parse(&version)?;
    let deleted = store
        .delete_version(&subject, selector, q.flag("permanent")?)
        .await?;
    Ok(reply(&deleted))
}

async fn referenced_by(
    State(store): Shared,
    Params((subject, version)): Params<(String, String)>,
) -> Reply {
    let selector = VersionSelector::parse(&version)?;
    let ids = store.state().referenced_by(&subject, selector)?;
    Ok(reply(&ids))
}

async fn compatibility_by_level(
    State(store): Shared,
    Params(subject): Params<String>,
    q: QueryParams,
    Body(body): Body<SchemaBody>,
) -> Reply {
    compatibility(&store, &subject, None, &q, body)
}

async fn compatibility_with_version(
    State(store): Shared,
    Params((subject, version)): Params<(String, String)>,
    q: QueryParams,
    Body(body): Body<SchemaBody>,
) -> Reply {
    let selector = VersionSelector::parse(&version)?;
    compatibility(&store, &subject, Some(selector), &q, body)
}

fn compatibility(
    store: &Store,
    subject: &str,
    selector: Option<VersionSelector>,
    q: &QueryParams,
    body: SchemaBody,
) -> Reply {
    let verbose = q.flag("verbose")?;
    let new = body.into_new_schema()?;
    let (level, mut messages) = store.state().test_compatibility(subject, selector, &new)?;
    let mut out = json!({ "is_compatible": messages.is_empty() });
    if verbose {
        if !messages.is_empty() {
            messages.push(format!("{{compatibility: '{level}'}}"));
        }
        out["messages"] = json!(messages);
    }
    Ok(reply(&out))
}

async fn global_config(State(store): Shared) -> Response {
    let level = store.state().global_level();
    reply(&json!({ "compatibilityLevel": level }))
}

async fn set_global_config(State(store): Shared, Body(body): Body<ConfigBody>) -> Reply {
    let level = store.set_level(None, body.level()?).await?;
    Ok(reply(&json!({ "compatibility": level })))
}

async fn delete_global_config(State(store): Shared) -> Reply {
    let previous = store.delete_level(None).await?;
    Ok(reply(&json!({ "compatibilityLevel": previous })))
}

async fn subject_config(
    State(store): Shared,
    Params(subject): Params<String>,
    q: QueryParams,
) -> Reply {
    let state = store.state();
    let level = match state.subject_level(&subject) {
        Some(level) => level,
        None if q.flag("defaultToGlobal")? => state.global_level(),
        None => return Err(Error::SubjectConfigNotFound { subject }),
    };
    Ok(reply(&json!({ "compatibilityLevel": level })))
}

async fn set_subject_config(
    State(store): Shared,
    Params(subject): Params<String>,
    Body(body): Body<ConfigBody>,
) -> Reply {
    let level = store.set_level(Some(&subject), body.level()?).await?;
    Ok(reply(&json!({ "compatibility": level })))
}

async fn delete_subject_config(State(store): Shared, Params(subject): Params<String>) -> Reply {
    let previous = store.delete_level(Some(&subject)).await?;
    Ok(reply(&json!({ "compatibilityLevel": previous })))
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let body = json!({
        "error_code": 404,
        "message": format!(
            "HTTP 404 Not Found: no endpoint for {method} {}. See the Confluent Schema \
             Registry API reference for the supported paths.",
            uri.path()
        ),
    });
    with_status(StatusCode::NOT_FOUND, &body)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let body = json!({
        "error_code": 405,
        "message": format!("HTTP 405 Method Not Allowed: {} does not accept {method}.", uri.path()),
    });
    with_status(StatusCode::METHOD_NOT_ALLOWED, &body)
}

// ---- request bodies ----

/// The body of registration, lookup and compatibility requests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SchemaBody {
    schema: Option<Value>,
    schema_type: Option<String>,
    references: Option<Vec<SchemaReference>>,
}

impl SchemaBody {
    pub(crate) fn into_new_schema(self) -> Result<NewSchema> {
        let schema = match self.schema {
            Some(Value::String(schema)) => schema,
            None | Some(Value::Null) => {
                return Err(Error::InvalidSchema {
                    reason: "the request body has no \"schema\" field; send \
                             {\"schema\": \"<the Avro schema as a JSON string>\"}"
                        .to_owned(),
                })
            }
            Some(other) => {
                return Err(Error::InvalidSchema {
                    reason: format!(
                        "the \"schema\" field must be a string holding the schema's JSON, not \
                         {}; serialize the schema to a string first",
                        kind_of(&other)
                    ),
                })
            }
        };
        Ok(NewSchema {
            schema,
            schema_type: self.schema_type.unwrap_or_else(|| AVRO.to_owned()),
            references: self.references.unwrap_or_default(),
        })
    }
}

/// The body of `PUT /config`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigBody {
    compatibility: Option<String>,
    compatibility_level: Option<String>,
}

impl ConfigBody {
    pub(crate) fn level(self) -> Result<CompatibilityLevel> {
        match self.compatibility.or(self.compatibility_level) {
            Some(level) => level.parse(),
            None => Err(Error::InvalidCompatibilityLevel {
                level: "(missing: send {\"compatibility\": \"BACKWARD\"})".to_owned(),
            }),
        }
    }
}

// ---- extractors ----

/// Path parameters, with Confluent-style errors.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest {
                reason: e.body_text(),
            })?;
        Ok(Params(value))
    }
}

/// Query parameters; flags accept `true`/`false` in any case.
struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadRequest {
                reason: e.body_text(),
            })?;
        Ok(QueryParams(pairs))
    }
}

impl QueryParams {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn flag(&self, name: &str) -> Result<bool> {
        match self.get(name) {
            None => Ok(false),
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(Error::BadRequest {
                reason: format!("query parameter '{name}' must be true or false, not '{v}'"),
            }),
        }
    }

    fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::BadRequest {
                reason: format!("query parameter '{name}' must be an integer, not '{v}'"),
            }),
        }
    }

    fn listing(&self) -> Result<Listing> {
        Ok(Listing {
            deleted: self.flag("deleted")?,
            deleted_only: self.flag("deleted_only")? || self.flag("deletedOnly")?,
        })
    }

    /// Applies `offset` and `limit` (`-1` or absent: no limit).
    fn page<T>(&self, items: Vec<T>) -> Result<Vec<T>> {
        let offset = usize::try_from(self.int("offset", 0)?).unwrap_or(0);
        let limit = usize::try_from(self.int("limit", -1)?).unwrap_or(usize::MAX);
        Ok(items.into_iter().skip(offset).take(limit).collect())
    }
}

/// A JSON body, whatever its content type says (Confluent clients send
/// `application/vnd.schemaregistry.v1+json`, others `application/json` or nothing).
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Error::BadRequest {
                reason: e.body_text(),
            })?;
        json_body(&bytes).map(Body)
    }
}

/// Reads a request body as the JSON object `T`.
pub(crate) fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::BadRequest {
            reason: "the request has no body; send a JSON object such as \
                     {\"schema\": \"...\"}"
                .to_owned(),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::BadRequest {
        reason: format!("the body is not the JSON object this endpoint expects: {e}"),
    })
}

// ---- responses ----

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            error!(error = %self, code = self.error_code(), "request failed");
        } else {
            debug!(error = %self, code = self.error_code(), "request rejected");
        }
        let body = json!({ "error_code": self.error_code(), "message": self.to_string() });
        with_status(status, &body)
    }
}

fn reply<T: Serialize + ?Sized>(body: &T) -> Response {
    with_status(StatusCode::OK, body)
}

fn with_status<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        bytes,
    )
        .into_response()
}

/// A schema's own JSON as the body (for the `/schema` endpoints).
fn raw(schema: String) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        schema,
    )
        .into_response()
}

fn version_json(found: &SubjectVersion) -> Value {
    let mut body = json!({
        "subject": found.subject,
        "version": found.version,
        "id": found.id,
        "schema": found.schema,
    });
    if !found.references.is_empty() {
        body["references"] = json!(found.references);
    }
    if found.deleted {
        body["deleted"] = json!(true);
    }
    body
}

fn parse_id(raw: &str) -> Result<u32> {
    raw.parse::<u32>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| Error::SchemaIdNotFound { id: raw.to_owned() })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
