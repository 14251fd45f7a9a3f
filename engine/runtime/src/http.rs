//! The engine's HTTP endpoint: `/metrics` (Prometheus) and `/health`.
//!
//! `/health` answers 200 `ok`, or 503 with each partition stopped by an error and the error:
//! the engine is up but not making progress there (a registry outage, say).

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::error;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Binds `listen` and serves `/metrics` and `/health` on the current tokio runtime.
pub async fn serve_http(listen: &str, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            action: format!("binding the HTTP endpoint to {listen}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        action: "reading the HTTP address".into(),
        source,
    })?;
    let health_metrics = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route(
            "/health",
            axum::routing::get(move || async move { health(&health_metrics) }),
        );
    drop(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "HTTP endpoint stopped");
        }
    }));
    Ok(addr)
}

fn health(metrics: &Metrics) -> (axum::http::StatusCode, String) {
    let failing = metrics.failing();
    if failing.is_empty() {
        return (axum::http::StatusCode::OK, "ok".into());
    }
    let mut body = format!(
        "degraded: {} partition(s) stopped, each restores again after a backoff\n",
        failing.len()
    );
    for (partition, error) in failing {
        body.push_str(&format!("partition {partition}: {error}\n"));
    }
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, body)
}
