//! The relay: HTTP API, web app, storage. `serve` runs it on a listener it is given, so tests
//! and benches can bind port 0.

pub mod auth;
pub mod bridge;
pub mod callbacks;
pub mod client_addr;
pub mod config;
pub mod error;
pub mod extract;
pub mod files;
pub mod groups;
pub mod hub;
pub mod language;
pub mod lock;
pub mod login_policy;
pub mod mailer;
pub mod messages;
pub mod origin;
pub mod presence;
pub mod store;
pub mod telemetry;
pub mod voice;
pub mod web;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderName, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::config::RelayConfig;
use self::error::ApiError;
use self::hub::Hub;
use self::mailer::Mailer;
use self::store::{PgOptions, PgStore, SessionInfo, SqliteOptions, SqliteStore, Store, StoreError};
use crate::api::{ErrorBody, ErrorCode, HealthResponse, now_millis};

/// How long a looked-up session is trusted before it is read again.
const SESSION_CACHE_TTL: Duration = Duration::from_secs(30);
/// With several relays: a logout on one is refused by all others within this.
const SHARED_SESSION_CACHE_TTL: Duration = Duration::from_millis(500);

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub config: RelayConfig,
    pub mailer: Option<Mailer>,
    /// Transcription, translation and read-aloud engines, and their worker's doorbell.
    pub voice: voice::Voice,
    /// Inbound callbacks: their HTTP client, followers and deliverer's doorbell.
    pub callbacks: callbacks::Callbacks,
    /// The PhoneRelay bridge: its HTTP client and the outbox worker's doorbell.
    pub bridge: bridge::Bridge,
    /// Released at shutdown so waiting long-polls answer at once.
    pub shutdown: CancellationToken,
    /// This relay's own loopback URL, known once it listens: the `/mcp` tools call the API
    /// through it with the caller's token, so they pass the same checks as any client.
    pub self_url: Arc<std::sync::OnceLock<String>>,
    sessions: DashMap<String, (SessionInfo, Instant)>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The session for a token hash, from a short cache or the store.
    pub async fn session(&self, hash: &str) -> Result<Option<SessionInfo>, StoreError> {
        let now = now_millis();
        if let Some(entry) = self.sessions.get(hash) {
            let (info, at) = entry.value();
            // Shared storage: another relay may end the session, so trust the cache briefly.
            let ttl = if self.store.shared() {
                SHARED_SESSION_CACHE_TTL
            } else {
                SESSION_CACHE_TTL
            };
            if at.elapsed() < ttl && info.expires_at > now {
                return Ok(Some(info.clone()));
            }
        }
        let found = self.store.session(hash, now).await?;
        match &found {
            Some(info) => {
                self.sessions
                    .insert(hash.to_string(), (info.clone(), Instant::now()));
            }
            None => {
                self.sessions.remove(hash);
            }
        }
        Ok(found)
    }

    pub async fn end_session(&self, session: &SessionInfo) -> Result<(), StoreError> {
        self.store
            .end_session(session.session_id, now_millis())
            .await?;
        self.sessions
            .retain(|_, (info, _)| info.session_id != session.session_id);
        Ok(())
    }

    /// Drops cached sessions of a user whose identity changed.
    pub fn forget_sessions_of(&self, user_id: i64) {
        self.sessions.retain(|_, (info, _)| info.user.id != user_id);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Mail(#[from] mailer::MailError),
}

#[derive(OpenApi)]
#[openapi(
    info(title = "gts-webchat relay", description = "The pChat/WebChat relay API: identity, presence, directory, messages."),
    modifiers(&SecurityAddon),
    tags(
        (name = "auth", description = "Login by emailed code and sessions"),
        (name = "presence", description = "Presence and the directory"),
        (name = "messages", description = "Sending, polling, edits, deletions, read receipts, history"),
        (name = "files", description = "Uploads and downloads"),
        (name = "groups", description = "Chat and stream groups"),
        (name = "bridge", description = "The PhoneRelay bridge: replies from sms, wa, tg and email"),
        (name = "language", description = "Language preferences, transcription and translation"),
        (name = "meta", description = "Health and this document"),
    )
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-PChat-Session"))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(utoipa::openapi::security::Http::new(
                utoipa::openapi::security::HttpAuthScheme::Bearer,
            )),
        );
    }
}

/// `GET /health`
#[utoipa::path(get, path = "/health", tag = "meta",
    responses((status = 200, body = HealthResponse)))]
async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<HealthResponse>, ApiError> {
    // A database that is down or hanging makes the relay unhealthy, answered quickly.
    let answered = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    match answered {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(StoreError::PgPool("the database did not answer within 2 s".into()).into());
        }
    }
    Ok(Json(HealthResponse {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_string(),
        max_upload_bytes: state.config.max_upload_bytes,
        database: if state.store.shared() {
            "postgres"
        } else {
            "sqlite"
        }
        .to_string(),
        smtp: state.config.smtp.is_some(),
        dev_codes: state.config.expose_codes(),
    }))
}

/// `GET /api/v1/openapi.json`: this API, generated from the handlers.
async fn openapi_json(
    axum::extract::State(doc): axum::extract::State<Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json((*doc).clone())
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        ErrorCode::NotFound,
        "no such endpoint; see /api/v1/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that HTTP method; see /api/v1/openapi.json",
    )
}

/// Longest request target (path and query) the relay takes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// hyper's own cap on the request head: past it hyper answers 431 itself, with no body. Kept
/// well above `MAX_URI_BYTES` so a long URL gets our JSON error instead.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Refuses over-long request targets with the JSON error shape.
async fn uri_limit(req: Request<axum::body::Body>, next: axum::middleware::Next) -> Response {
    let len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::UriTooLong,
            format!(
                "the request URL is {len} bytes; this relay takes up to {} KiB",
                MAX_URI_BYTES / 1024
            ),
        )
        .into_response();
    }
    next.run(req).await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; answered 500");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(ErrorBody::new(
            ErrorCode::Internal,
            "the relay hit an internal error; nothing may have been changed, try again",
        )),
    )
        .into_response()
}

/// The whole HTTP surface and its OpenAPI document.
pub fn router(state: AppState) -> (axum::Router, serde_json::Value) {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(auth::request_code))
        .routes(routes!(auth::verify_code))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::profile))
        .routes(routes!(language::get_prefs, language::put_prefs))
        .routes(routes!(voice::api::transcribe))
        .routes(routes!(voice::api::translate_text))
        .routes(routes!(messages::conversations))
        .routes(routes!(presence::presence))
        .routes(routes!(presence::directory))
        .routes(routes!(messages::send))
        .routes(routes!(bridge::api::status))
        .routes(routes!(bridge::api::inbound))
        .routes(routes!(messages::poll))
        .routes(routes!(messages::ack))
        .routes(routes!(messages::edit))
        .routes(routes!(messages::delete))
        .routes(routes!(messages::read))
        .routes(routes!(messages::report))
        .routes(routes!(messages::history))
        .routes(routes!(files::upload))
        .routes(routes!(files::download))
        .routes(routes!(groups::create, groups::list))
        .routes(routes!(groups::add_member, groups::members))
        .routes(routes!(groups::remove_member))
        .routes(routes!(groups::leave))
        .routes(routes!(groups::join))
        .routes(routes!(groups::request_join, groups::join_requests))
        .routes(routes!(groups::decide))
        .routes(routes!(callbacks::api::create, callbacks::api::list))
        .routes(routes!(callbacks::api::remove))
        .routes(routes!(callbacks::api::enable))
        .routes(routes!(callbacks::api::rotate_secret))
        .routes(routes!(callbacks::api::redeliver))
        .routes(routes!(callbacks::api::deliveries))
        .split_for_parts();
    let doc = serde_json::to_value(&doc).unwrap_or_default();
    let openapi = axum::Router::new()
        .route("/api/v1/openapi.json", axum::routing::get(openapi_json))
        .with_state(Arc::new(doc.clone()));
    let metrics_route = axum::Router::new()
        .route("/metrics", axum::routing::get(telemetry::serve))
        .with_state(state.clone());

    let sensitive: Arc<[HeaderName]> = Arc::new([
        HeaderName::from_static(crate::api::SESSION_HEADER),
        header::AUTHORIZATION,
        header::COOKIE,
    ]);
    // Only multipart uploads read bodies through axum's own limit (JSON bodies have theirs):
    // the upload limit plus room for the form around the file.
    let body_limit = usize::try_from(state.config.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1024 * 1024);
    let app = api
        .merge(web::router())
        .nest_service("/mcp", mcp_service(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .merge(openapi)
        .merge(metrics_route)
        .layer(axum::middleware::from_fn(telemetry::track))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        // CORS only for the configured origins; the guard (outside it) refuses other origins,
        // and foreign Hosts on a loopback relay, before anything else runs.
        .layer(origin::cors_layer(&state.config))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::guard,
        ))
        .layer(axum::middleware::from_fn(uri_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            // Spans carry the method and path only: a query string can hold a token
            // (the GUI auto-login URL), so the full URI never reaches a log.
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                })
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::WARN)),
        )
        .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive));
    (app, doc)
}

/// MCP over Streamable HTTP. The origin guard outside it already checks `Host` and `Origin`
/// for the whole relay, so rmcp's own loopback-only Host list is turned off.
fn mcp_service(
    state: &AppState,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    crate::mcp::server::ChatServer,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let base = state.self_url.clone();
    StreamableHttpService::new(
        move || {
            Ok(crate::mcp::server::ChatServer::new(
                crate::mcp::server::Source::Relay { base: base.clone() },
            ))
        },
        Default::default(),
        StreamableHttpServerConfig::default()
            .disable_allowed_hosts()
            .with_cancellation_token(state.shutdown.child_token())
            .with_max_request_body_bytes(1024 * 1024),
    )
}

/// Binds the configured address; when no port was asked for and the default is busy, the next
/// free one (up to 50 further).
pub async fn bind(config: &RelayConfig) -> Result<TcpListener, RelayError> {
    let tries = if config.port_explicit || config.port == 0 {
        1
    } else {
        50
    };
    let mut last = None;
    for offset in 0..tries {
        let port = config.port.saturating_add(offset);
        let addr = format!("{}:{}", config.host, port);
        match TcpListener::bind(&addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && offset + 1 < tries => {
                tracing::info!(port, "port busy, trying the next one");
                last = Some((addr, e));
            }
            Err(source) => return Err(RelayError::Bind { addr, source }),
        }
    }
    let (addr, source) =
        last.unwrap_or_else(|| (config.host.clone(), std::io::Error::other("no port to try")));
    Err(RelayError::Bind { addr, source })
}

fn make_private_dir(path: &std::path::Path) -> Result<(), RelayError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| RelayError::Io {
            action: "creating",
            path: path.to_path_buf(),
            source,
        })
}

/// Opens storage and builds the shared state.
pub async fn open_state(
    config: RelayConfig,
    shutdown: CancellationToken,
) -> Result<AppState, RelayError> {
    make_private_dir(&config.data_dir)?;
    if let Some(parent) = config.db_path.parent() {
        make_private_dir(parent)?;
    }
    make_private_dir(&config.upload_dir)?;
    let hub = Arc::new(Hub::new());
    let store: Arc<dyn Store> = match &config.postgres_url {
        Some(url) => Arc::new(
            PgStore::open(
                PgOptions {
                    url: url.clone(),
                    pool_size: 32,
                },
                hub.clone(),
            )
            .await?,
        ),
        None => Arc::new(SqliteStore::open(
            SqliteOptions {
                path: config.db_path.clone(),
                sync: config.sync,
                readers: 4,
            },
            hub.clone(),
        )?),
    };
    let mailer = config.smtp.as_ref().map(Mailer::new).transpose()?;
    // Called inside the runtime: the whisper helper (a supervised process) starts here.
    let voice = voice::Voice::start(config.voice.clone(), shutdown.clone());
    let callbacks = callbacks::Callbacks::new(config.callbacks.clone());
    let bridge = bridge::Bridge::new(config.bridge.clone());
    Ok(AppState(Arc::new(Inner {
        voice,
        callbacks,
        bridge,
        store,
        hub,
        mailer,
        config,
        shutdown,
        self_url: Arc::new(std::sync::OnceLock::new()),
        sessions: DashMap::new(),
    })))
}

fn announce_login_mode(config: &RelayConfig) {
    if config.expose_codes() {
        tracing::warn!(
            "login codes are returned in API answers (dev_code): fine on loopback for development; \
             set SMTP_HOST to mail them, and PCHAT_DEV_EXPOSE_CODES=false to stop exposing them"
        );
    } else if !config.can_deliver_codes() {
        tracing::warn!(
            "no SMTP_HOST and PCHAT_DEV_EXPOSE_CODES is off: nobody can log in; set SMTP_HOST \
             (and SMTP_PORT/USERNAME/PASSWORD/FROM) to mail login codes"
        );
    }
}

/// Serves on `listener` until `shutdown` is cancelled, then drains and closes storage.
pub async fn serve(listener: TcpListener, state: AppState) -> Result<(), RelayError> {
    let shutdown = state.shutdown.clone();
    if let Ok(addr) = listener.local_addr() {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        let _ = state.self_url.set(format!(
            "http://{}",
            std::net::SocketAddr::new(ip, addr.port())
        ));
    }
    let (app, _) = router(state.clone());
    announce_login_mode(&state.config);

    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                state.hub.sweep();
                let now = now_millis();
                if let Err(e) = state
                    .store
                    .sweep_auth(now - login_policy::LONG_WINDOW_MS, now)
                    .await
                {
                    tracing::warn!("sweeping login activity: {e}");
                }
                // Delivered callback events are kept an hour (GET …/deliveries shows them),
                // so the outbox stays small however many pass through it.
                for _ in 0..100 {
                    match state.store.prune_deliveries(now - 3_600_000).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!("forgetting delivered callback events: {e}");
                            break;
                        }
                    }
                }
                state
                    .sessions
                    .retain(|_, (_, at)| at.elapsed() < SESSION_CACHE_TTL);
                telemetry::upkeep();
            }
        })
    };
    let worker = tokio::spawn(voice::worker::run(state.clone()));
    let deliverer = tokio::spawn(callbacks::run(state.clone()));
    let outbox = tokio::spawn(bridge::deliver::run(state.clone()));
    let served = accept_loop(listener, app, shutdown).await;
    sweeper.abort();
    // A message in flight is cut short; it is still queued and goes out after the restart.
    outbox.abort();
    // A delivery in flight is cut short; it is still pending and goes out after the restart.
    deliverer.abort();
    // A job in an engine call is cut short; it runs again at the next start.
    let abort = worker.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), worker)
        .await
        .is_err()
    {
        abort.abort();
    }
    state.store.close().await;
    served.map_err(|source| RelayError::Io {
        action: "serving",
        path: PathBuf::from("http"),
        source,
    })
}

/// Serves HTTP/1.1 connections until `shutdown`, then lets open requests finish (long-polls
/// are released by the same token). Written out (rather than `axum::serve`) to set hyper's
/// connection options: thousands of idle long-polls each hold hyper's buffers.
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: wait a moment rather than spin or stop serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small request/response exchanges: never wait on Nagle.
        let _ = stream.set_nodelay(true);
        let svc = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        );
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(svc),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    // Waiting polls were released by the shutdown token; give other requests a moment.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// `gts-webchat relay`: bind, print the addresses, serve until SIGINT/SIGTERM.
pub async fn run(config: RelayConfig) -> Result<(), RelayError> {
    make_private_dir(&config.data_dir)?;
    if let Some(parent) = config.db_path.parent() {
        make_private_dir(parent)?;
    }
    // Held until the relay stops (or dies): one relay per SQLite database. PostgreSQL is
    // made to be shared by several.
    let _lock = match config.postgres_url {
        None => Some(lock::acquire(&config.db_path)?),
        Some(_) => None,
    };
    telemetry::install();
    let listener = bind(&config).await?;
    let addr = listener.local_addr().map_err(|source| RelayError::Io {
        action: "reading the address of",
        path: PathBuf::from("listener"),
        source,
    })?;
    let shutdown = CancellationToken::new();
    let state = open_state(config, shutdown.clone()).await?;
    match &state.config.postgres_url {
        Some(_) => tracing::info!("storage ready: PostgreSQL"),
        None => tracing::info!(db = %state.config.db_path.display(), "storage ready"),
    }
    // Printed (not logged) so scripts and tests can read the real port from stdout.
    println!("relay listening on http://{addr}");
    println!("web app: http://{addr}/app/webchat/chat.html");
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: releasing long-polls and flushing storage");
        crate::service_manager::stopping();
        shutdown.cancel();
    });
    crate::service_manager::ready("relay");
    {
        let state = state.clone();
        tokio::spawn(async move {
            let store = state.store.clone();
            crate::service_manager::keep_alive(state.shutdown.clone(), "storage", || {
                let store = store.clone();
                async move { store.stream_head(0).await.map(|_| ()) }
            })
            .await
        });
    }
    serve(listener, state).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
