//! The HTTP listener: `/metrics` (Prometheus text exposition), `/healthz`
//! (the process is up), `/readyz` (events flow: the source is connected,
//! in Kafka mode partitions are assigned) and `/kpis` (the current value
//! of every series, as JSON).

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

async fn kpis(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let mut all: Vec<_> = m.table.iter().map(|e| e.value().clone()).collect();
    all.sort_by_key(|r| r.series_key());
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&all).unwrap_or_else(|_| "[]".into()),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(std::sync::atomic::Ordering::Relaxed) {
        (axum::http::StatusCode::OK, "ready\n")
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/kpis", get(kpis))
        .with_state(m)
}

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound address.
pub async fn serve(
    addr: &str,
    m: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(m))
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "http server failed");
        }
    });
    Ok(local)
}
