//! The browser app, embedded in the binary (no CDN, no network at run time).

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

use super::AppState;

const CHAT_HTML: &str = include_str!("../../web/chat.html");

pub const APP_PATH: &str = "/app/webchat/chat.html";

async fn chat_html() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // The auto-login URL carries a token in its query: never send it on as a referrer.
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        CHAT_HTML,
    )
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(APP_PATH, get(chat_html))
        .route("/", get(|| async { Redirect::to(APP_PATH) }))
        .route("/app/webchat/", get(|| async { Redirect::to(APP_PATH) }))
}
