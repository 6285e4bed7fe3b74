//! The HTTP listener: `/metrics` (Prometheus text exposition), `/healthz`
//! (the process is up), `/readyz` (events flow: the source is connected,
//! in Kafka mode partitions are assigned) and `/kpis` (the current value
//! of every series, as JSON).

use crate::config::HttpConfig;
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

/// The credentials a request may show, read at start-up.
#[derive(Clone, Default)]
struct Auth {
    /// `Authorization: Basic …` value that passes (base64 of `user:password`).
    basic: Option<Vec<u8>>,
    bearer: Option<Vec<u8>>,
    open: Arc<Vec<String>>,
}

/// Compares without returning early on the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Auth {
    fn allows(&self, req: &axum::extract::Request) -> bool {
        if self.open.iter().any(|p| p == req.uri().path()) {
            return true;
        }
        let Some(h) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let h = h.as_bytes();
        let scheme = |s: &str| {
            h.len() > s.len()
                && h[..s.len()].eq_ignore_ascii_case(s.as_bytes())
                && h[s.len()] == b' '
        };
        if let Some(want) = &self.basic {
            if scheme("Basic") && same(h[6..].trim_ascii(), want) {
                return true;
            }
        }
        if let Some(want) = &self.bearer {
            if scheme("Bearer") && same(h[7..].trim_ascii(), want) {
                return true;
            }
        }
        false
    }
}

fn secret(field: &str, p: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(p).map_err(|e| {
        anyhow::anyhow!(
            "{field}: cannot read {}: {e} (fix: give a readable file)",
            p.display()
        )
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        anyhow::bail!(
            "{field}: {} is empty (fix: write the secret on its first line)",
            p.display()
        );
    }
    Ok(line.as_bytes().to_vec())
}

fn auth_of(c: &HttpConfig) -> anyhow::Result<Option<Auth>> {
    if !c.auth() {
        return Ok(None);
    }
    use base64::Engine as _;
    let mut a = Auth {
        open: Arc::new(c.open_paths.clone()),
        ..Auth::default()
    };
    if !c.basic_auth_username.is_empty() {
        let pw = secret("http.basic_auth_password_file", &c.basic_auth_password_file)?;
        let mut userpass = c.basic_auth_username.as_bytes().to_vec();
        userpass.push(b':');
        userpass.extend_from_slice(&pw);
        a.basic = Some(
            base64::engine::general_purpose::STANDARD
                .encode(userpass)
                .into_bytes(),
        );
    }
    if !c.bearer_token_file.as_os_str().is_empty() {
        a.bearer = Some(secret("http.bearer_token_file", &c.bearer_token_file)?);
    }
    Ok(Some(a))
}

/// The TLS acceptor of `http.tls_*`, if on.
fn tls_of(c: &HttpConfig) -> anyhow::Result<Option<tokio_native_tls::TlsAcceptor>> {
    if !c.tls() {
        return Ok(None);
    }
    let read = |field: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            anyhow::anyhow!(
                "{field}: cannot read {}: {e} (fix: give a readable PEM file)",
                p.display()
            )
        })
    };
    let cert = read("http.tls_cert_file", &c.tls_cert_file)?;
    let key = read("http.tls_key_file", &c.tls_key_file)?;
    let id = tokio_native_tls::native_tls::Identity::from_pkcs8(&cert, &key).map_err(|e| {
        anyhow::anyhow!("http.tls_cert_file / http.tls_key_file: not a usable certificate and key: {e} (fix: PEM files, the key in PKCS#8 — `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.pk8.pem` converts one)")
    })?;
    let acceptor = tokio_native_tls::native_tls::TlsAcceptor::new(id)
        .map_err(|e| anyhow::anyhow!("http.tls_cert_file: {e}"))?;
    Ok(Some(acceptor.into()))
}

/// TLS connections, their handshakes done apart (a slow client does not
/// hold the others up), handed to the server as they complete.
struct TlsListener {
    local: std::net::SocketAddr,
    rx: tokio::sync::mpsc::Receiver<(
        tokio_native_tls::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
}

impl TlsListener {
    fn new(
        tcp: tokio::net::TcpListener,
        acceptor: tokio_native_tls::TlsAcceptor,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = Arc::new(acceptor);
        tokio::spawn(async move {
            loop {
                let (s, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (conn_tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(s),
                    );
                    match hs.await {
                        Ok(Ok(t)) => {
                            let _ = conn_tx.send((t, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { local, rx })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_native_tls::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Binds `http.listen` and serves until `shutdown` resolves, over TLS and
/// behind authentication when `[http]` says so (certificate, key and
/// secrets are read here: an error names the setting). Returns the bound
/// address.
pub async fn serve(
    c: &HttpConfig,
    m: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<std::net::SocketAddr> {
    let tls = tls_of(c)?;
    let mut app = router(m);
    if let Some(auth) = auth_of(c)? {
        app = app.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let ok = auth.allows(&req);
                async move {
                    if ok {
                        next.run(req).await
                    } else {
                        (
                            axum::http::StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Basic realm=\"salespulse\"")],
                            "unauthorized\n",
                        )
                            .into_response()
                    }
                }
            },
        ));
    }
    let listener = tokio::net::TcpListener::bind(&c.listen)
        .await
        .map_err(|e| anyhow::anyhow!("http.listen: cannot listen on {}: {e}", c.listen))?;
    let local = listener.local_addr()?;
    match tls {
        Some(acceptor) => {
            let l = TlsListener::new(listener, acceptor)?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, "https server failed");
                }
            });
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %e, "http server failed");
                }
            });
        }
    }
    Ok(local)
}
