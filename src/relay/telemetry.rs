//! `/metrics` in Prometheus text format, through the `metrics` facade and its Prometheus
//! exporter. Who may read it is a setting (`PCHAT_METRICS`): loopback callers only (the
//! default, for a scraper on the same host), everyone who reaches the relay, or no one.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;
use super::error::ApiError;
use crate::api::ErrorCode;

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exposure {
    #[default]
    Loopback,
    Everyone,
    Off,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, in seconds, for the wake and request histograms.
const BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process's recorder (once; a second relay in the same process shares it).
pub fn install() {
    if HANDLE.get().is_some() {
        return;
    }
    let built = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .and_then(|b| b.install_recorder());
    match built {
        Ok(handle) => {
            let _ = HANDLE.set(handle);
        }
        Err(e) => tracing::warn!("metrics are off: {e}"),
    }
}

/// Keeps the histograms from growing without bound (the minute sweeper calls it).
pub fn upkeep() {
    if let Some(h) = HANDLE.get() {
        h.run_upkeep();
    }
}

/// Counts every request by its route (the pattern, never the path with its ids) and status,
/// and times it.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("gtsw_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("gtsw_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`
pub async fn serve(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let allowed = match state.config.metrics {
        Exposure::Everyone => true,
        Exposure::Loopback => peer.ip().is_loopback(),
        Exposure::Off => false,
    };
    let Some(handle) = HANDLE.get().filter(|_| allowed) else {
        return ApiError::not_found(
            ErrorCode::NotFound,
            "no metrics here (PCHAT_METRICS is off, or they are for loopback callers only)",
        )
        .into_response();
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// A long-poll waiting: counted in `gtsw_long_polls_waiting` for as long as it lives (a
/// client that hangs up drops it too).
pub struct Waiting(());

impl Waiting {
    pub fn start() -> Waiting {
        metrics::gauge!("gtsw_long_polls_waiting").increment(1.0);
        Waiting(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("gtsw_long_polls_waiting").decrement(1.0);
    }
}

/// A woken long-poll answers: from the send (the message's time) to this answer.
pub fn woke(first: &crate::api::messages::Message) {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(&first.created_at, &Rfc3339) {
        let ms = crate::api::now_millis() - (at.unix_timestamp_nanos() / 1_000_000) as i64;
        metrics::histogram!("gtsw_wake_seconds").record(ms.max(0) as f64 / 1000.0);
    }
}
