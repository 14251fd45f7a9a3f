//! A client of the admin API, for `sagaflow jobs` and scripts.

use serde_json::Value;

use crate::error::{Error, Result};

/// Calls one admin API with one bearer token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    /// A client of the admin API at `base` (e.g. `http://127.0.0.1:9480`).
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        }
    }

    /// `GET path`: the status and the JSON answer, whatever the status.
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with an optional JSON body: the status and the JSON answer.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// `method path` with an optional JSON body: the status and the JSON answer, whatever the
    /// status. An error only when the API cannot be reached or does not answer JSON.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let error = |status: Option<u16>, message: String| Error::AdminApi {
            url: self.base.clone(),
            status,
            message,
        };
        let mut request = self.client.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            error(
                None,
                format!("cannot be reached ({e}); is `sagaflow admin-server` serving there? (--api-url, SAGAFLOW_ADMIN_URL)"),
            )
        })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| error(Some(status), format!("reading its answer: {e}")))?;
        let json = serde_json::from_str(&text).map_err(|_| {
            error(
                Some(status),
                format!("answered {status} with something that is not JSON: {text}"),
            )
        })?;
        Ok((status, json))
    }
}
