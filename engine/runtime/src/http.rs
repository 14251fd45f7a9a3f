//! The engine's HTTP endpoint: `/metrics` (Prometheus) and `/health`.

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
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route("/health", axum::routing::get(|| async { "ok" }));
    drop(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "HTTP endpoint stopped");
        }
    }));
    Ok(addr)
}
