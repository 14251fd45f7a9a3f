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

    /// The body of an answer that is a 200; else an error with the query API's message (which
    /// names the parameter and what it takes).
    fn ok(&self, passed: Passed) -> Result<Value> {
        if passed.status == StatusCode::OK.as_u16() {
            return Ok(passed.body);
        }
        let message = passed.body["error"]
            .as_str()
            .map_or_else(|| passed.body.to_string(), str::to_string);
        Err(self.error(Some(passed.status), message))
    }

    /// How many sagas the filter matches, and the newest `sample` of them (at most 500),
    /// without paging through every match: what a dry run shows.
    pub async fn count_and_sample(
        &self,
        filter: &[(String, String)],
        sample: usize,
    ) -> Result<(u64, Vec<Value>)> {
        // The first page also checks the filter (every parameter, the status included).
        let mut params = filter.to_vec();
        params.push(("limit".into(), sample.clamp(1, 500).to_string()));
        let page = self.ok(self.get("/sagas", &params).await?)?;
        let mut items = page["items"].as_array().cloned().unwrap_or_default();
        items.truncate(sample);
        // The counts by status take the other filters; the status filter picks one count.
        let others: Vec<(String, String)> = filter
            .iter()
            .filter(|(name, _)| name != "status")
            .cloned()
            .collect();
        let counts = self.ok(self.get("/stats/status", &others).await?)?;
        let count = match filter.iter().find(|(name, _)| name == "status") {
            Some((_, status)) => counts["by_status"][status].as_u64().unwrap_or(0),
            None => counts["total"].as_u64().unwrap_or(0),
        };
        Ok((count, items))
    }

    /// The id of every saga the filter matches, page by page: only the ids are kept, so a job
    /// over millions of sagas holds their ids, not their read-model rows. A filter the query
    /// API refuses is an error with its message (which names the parameter and what it takes).
    /// `listed` hears how many ids are in after each page, for progress.
    pub async fn matching_ids(
        &self,
        filter: &[(String, String)],
        mut listed: impl FnMut(usize),
    ) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = filter.to_vec();
            params.push(("limit".into(), "500".into()));
            if let Some(c) = &cursor {
                params.push(("cursor".into(), c.clone()));
            }
            let page = self.ok(self.get("/sagas", &params).await?)?;
            if let Some(items) = page["items"].as_array() {
                ids.extend(
                    items
                        .iter()
                        .filter_map(|s| s["saga_id"].as_str().map(str::to_string)),
                );
            }
            listed(ids.len());
            cursor = page["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                return Ok(ids);
            }
        }
    }
}
