//! The HTTP listener: `/metrics` (Prometheus text exposition), `/healthz`
//! (the process is up), `/readyz` (events flow: the source is connected,
//! in Kafka mode partitions are assigned) and `/kpis` (the current value
//! of every series, as JSON).

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition, gzip-compressed when the client accepts it (Prometheus does).
async fn metrics(State(m): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let body = m.render();
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        });
    if gzip {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 6),
            flate2::Compression::fast(),
        );
        if z.write_all(body.as_bytes()).is_ok() {
            if let Ok(zipped) = z.finish() {
                return (
                    [
                        (header::CONTENT_TYPE, TEXT_FORMAT),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    zipped,
                )
                    .into_response();
            }
        }
    }
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response()
}

async fn kpis(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let mut all = m.kpis.records();
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
