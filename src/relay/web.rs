//! The browser app, embedded in the binary (no CDN, no network at run time).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;

const CHAT_HTML: &str = include_str!("../../web/chat.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");

pub const APP_PATH: &str = "/app/webchat/chat.html";

/// Scripts and styles only from the app's own files; the relay (maybe another origin) for
/// data and media.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src * blob: data:; media-src * blob:; connect-src *; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The auto-login URL carries a token in its query: never send it on as a referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn chat_html() -> Response {
    let mut resp = asset(CHAT_HTML, "text/html; charset=utf-8");
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(APP_PATH, get(chat_html))
        .route(
            "/app/webchat/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app/webchat/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/", get(|| async { Redirect::to(APP_PATH) }))
        .route("/app/webchat/", get(|| async { Redirect::to(APP_PATH) }))
}
