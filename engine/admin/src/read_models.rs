//! The read models' query API (`sagaflow projections`), as bulk jobs and the admin API ask it.

use reqwest::StatusCode;
use serde_json::Value;

use crate::error::{Error, Result};

/// The filter names the query API's `GET /sagas` takes, in the order they are documented.
pub const FILTERS: [&str; 8] = [
    "definition",
    "version",
    "status",
    "step",
    "error_code",
    "key",
    "started_after",
    "started_before",
];

/// A client of one query API.
#[derive(Debug, Clone)]
pub struct ReadModels {
    client: reqwest::Client,
    base: String,
}

/// An answer passed through as it came: status and JSON body.
#[derive(Debug)]
pub struct Passed {
    /// HTTP status.
    pub status: u16,
    /// The body, JSON.
    pub body: Value,
}

impl ReadModels {
    /// A client of the query API at `base` (e.g. `http://127.0.0.1:9470`).
    pub fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// The query API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn error(&self, status: Option<u16>, message: impl Into<String>) -> Error {
        Error::ReadModels {
            url: self.base.clone(),
            status,
            message: message.into(),
        }
    }

    /// `GET {base}{path}` with `params`: the status and JSON body, whatever the status.
    pub async fn get(&self, path: &str, params: &[(String, String)]) -> Result<Passed> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params)
            .map_err(|e| self.error(None, format!("not a URL: {e}")))?;
        let response = self.client.get(url).send().await.map_err(|e| {
            self.error(
                None,
                format!("cannot be reached ({e}); is `sagaflow projections` serving there? (--query-url, SAGAFLOW_QUERY_URL)"),
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.error(Some(status.as_u16()), format!("reading its answer: {e}")))?;
        let body = serde_json::from_str(&text).map_err(|_| {
            self.error(
                Some(status.as_u16()),
                format!("answered {status} with something that is not JSON: {text}"),
            )
        })?;
        Ok(Passed {
            status: status.as_u16(),
            body,
        })
    }

    /// Every saga the filter matches, page by page. A filter the query API refuses is an error
    /// with its message (which names the parameter and what it takes).
    pub async fn matching(&self, filter: &[(String, String)]) -> Result<Vec<Value>> {
        let mut sagas = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = filter.to_vec();
            params.push(("limit".into(), "500".into()));
            if let Some(c) = &cursor {
                params.push(("cursor".into(), c.clone()));
            }
            let page = self.get("/sagas", &params).await?;
            if page.status != StatusCode::OK.as_u16() {
                let message = page.body["error"]
                    .as_str()
                    .map_or_else(|| page.body.to_string(), str::to_string);
                return Err(self.error(Some(page.status), message));
            }
            if let Some(items) = page.body["items"].as_array() {
                sagas.extend(items.iter().cloned());
            }
            cursor = page.body["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                return Ok(sagas);
            }
        }
    }
}
