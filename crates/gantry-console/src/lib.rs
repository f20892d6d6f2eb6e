//! Gantry's web console and HTTP API, served by the `gantry` binary: the
//! live namespace, history, KPIs with explanations, dead letters, health,
//! clients, identities and the audit log, behind the same identities and
//! permissions as MQTT. See docs/api.md; the OpenAPI document is served at
//! `/api/v1/openapi.json`.

pub mod admin;
pub mod assets;
pub mod auth;
pub mod error;
pub mod history;
pub mod kpi;
pub mod live;
pub mod metrics;
pub mod model_index;
pub mod namespace;
pub mod openapi;
pub mod ops;
pub mod state;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::watch;

pub use live::LiveHub;
pub use state::{ConsoleDeps, ConsoleSettings, KpiAccess, SourceRef};

use crate::error::ApiError;
use crate::state::{AppState, SharedState};

/// What went wrong starting the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen for the console on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The API and the console's pages.
pub fn router(state: SharedState) -> Router {
    let api = Router::new()
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/me", get(auth::me))
        .route("/namespace", get(namespace::browse))
        .route("/namespace/search", get(namespace::search))
        .route("/tag", get(namespace::tag))
        .route("/history/raw", get(history::raw))
        .route("/history/aggregate", get(history::aggregate))
        .route("/history/snapshot", get(history::snapshot))
        .route("/kpi/units", get(kpi::units))
        .route("/kpi", get(kpi::show))
        .route("/kpi/explain", get(kpi::explain))
        .route("/dead-letters", get(ops::dead_letters))
        .route("/connectors", get(ops::connectors))
        .route("/broker", get(ops::broker))
        .route("/clients", get(ops::clients))
        .route("/users", get(admin::users))
        .route("/users/{name}/disable", post(admin::disable_user))
        .route("/users/{name}/enable", post(admin::enable_user))
        .route("/users/{name}/roles", post(admin::change_roles))
        .route("/roles", get(admin::roles))
        .route("/audit", get(admin::audit))
        .route("/live", get(live::feed))
        .route("/openapi.json", get(openapi::openapi))
        // Nested: the path seen here lacks the `/api/v1` prefix.
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!(
                "no API endpoint {} /api/v1{} (see /api/v1/openapi.json)",
                req.method(),
                req.uri().path()
            ))
        });
    Router::new()
        .nest("/api/v1", api)
        .route("/", get(assets::index))
        .route("/assets/{name}", get(assets::asset))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!(
                "nothing at {} (the console is at /)",
                req.uri().path()
            ))
        })
        .method_not_allowed_fallback(|uri: axum::extract::OriginalUri, req: Request| async move {
            ApiError::MethodNotAllowed(format!(
                "{} is not allowed on {} (see /api/v1/openapi.json)",
                req.method(),
                uri.0.path()
            ))
        })
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers every answer carries: no sniffing, no framing, scripts and
/// styles from Gantry only.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The client's address, as handlers see it (`ConnectInfo<PeerAddr>`),
/// for plain and TLS connections alike.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Where the console listens.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub http: Option<SocketAddr>,
    pub https: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
}

/// The addresses the console was bound to.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundConsole {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

/// Binds the listeners and serves until `shutdown` turns true.
pub async fn serve(
    mut deps: ConsoleDeps,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
) -> Result<BoundConsole, ConsoleError> {
    // Cookies are `Secure` when the console is only reachable over HTTPS.
    deps.settings.secure_cookies = listeners.https.is_some() && listeners.http.is_none();
    let state = AppState::new(deps);
    let app = router(state);
    let mut bound = BoundConsole::default();
    if let Some(addr) = listeners.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ConsoleError::Bind { addr, source })?;
        bound.http = listener.local_addr().ok();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<PeerAddr>();
            if let Err(e) = axum::serve(listener, service)
                .with_graceful_shutdown(wait_for(shutdown))
                .await
            {
                tracing::error!("console (HTTP) stopped: {e}");
            }
        });
    }
    if let Some((addr, config)) = listeners.https {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ConsoleError::Bind { addr, source })?;
        bound.https = listener.local_addr().ok();
        let tls = tls::TlsListener::new(listener, config, shutdown.clone());
        tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<PeerAddr>();
            if let Err(e) = axum::serve(tls, service)
                .with_graceful_shutdown(wait_for(shutdown))
                .await
            {
                tracing::error!("console (HTTPS) stopped: {e}");
            }
        });
    }
    Ok(bound)
}

async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
