//! Which web pages may talk to the relay.
//!
//! A browser attaches `Origin` to every cross-origin request and to same-origin writes. The
//! relay answers a page from its own origin, or from one listed in `PCHAT_CORS_ORIGINS` (with
//! CORS headers), and refuses every other origin outright: bodies are read as JSON whatever
//! their Content-Type, so a "simple" text/plain POST from any page would otherwise reach the
//! handlers without a preflight. Clients that are not browsers send no `Origin` and are
//! unaffected. A loopback-bound relay also checks `Host`, so a page whose name was rebound to
//! 127.0.0.1 (DNS rebinding) is not mistaken for the relay's own origin.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::config::{RelayConfig, is_loopback, normalize_origin};
use super::error::ApiError;
use crate::api::ErrorCode;

/// Who is calling, as far as web origins go. Handlers that hand out secrets (dev login codes)
/// give them only to `NoOrigin` and `SameOrigin` callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No `Origin` header: a program, or a same-origin GET.
    NoOrigin,
    /// A page served by this relay.
    SameOrigin,
    /// A page from an origin in `PCHAT_CORS_ORIGINS`.
    AllowedOrigin,
    /// The guard did not run (never in the served router); treated as cross-origin.
    Unchecked,
}

impl Caller {
    /// Whether the caller may be handed a development login code.
    pub fn may_see_dev_codes(self) -> bool {
        matches!(self, Caller::NoOrigin | Caller::SameOrigin)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .copied()
            .unwrap_or(Caller::Unchecked))
    }
}

/// The host part of a Host header value (`name`, `1.2.3.4`, `[::1]`), lowercase, no port.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => a,
    }
}

/// Names that always mean this machine: no DNS answer can point them elsewhere.
fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a loopback-bound relay should answer a request for `host_header`.
pub fn host_allowed(config: &RelayConfig, host_header: &str) -> bool {
    if !is_loopback(&config.host) {
        return true;
    }
    let name = host_name(host_header);
    is_loopback_name(&name) || config.allowed_hosts.contains(&name)
}

/// Whether `origin` is the origin the request's own Host names. The scheme is taken from the
/// origin: behind a TLS-terminating proxy the relay sees plain HTTP for an https page, and
/// nothing else can answer on the relay's own host and port.
fn same_origin(origin: &str, host_header: Option<&str>) -> bool {
    let (Some(host), Ok(parsed)) = (host_header, url::Url::parse(origin)) else {
        return false;
    };
    let own = format!("{}://{}", parsed.scheme(), host.trim());
    match (normalize_origin(origin), normalize_origin(&own)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Classifies the caller, or refuses the request.
pub fn classify(
    config: &RelayConfig,
    origin: Option<&str>,
    host: Option<&str>,
) -> Result<Caller, ApiError> {
    if let Some(h) = host
        && !host_allowed(config, h)
    {
        return Err(ApiError::forbidden(
            ErrorCode::HostNotAllowed,
            format!(
                "this relay listens on loopback and does not answer for the host {:?}; \
                 its operator can allow a name with PCHAT_ALLOWED_HOSTS",
                host_name(h)
            ),
        ));
    }
    let Some(origin) = origin else {
        return Ok(Caller::NoOrigin);
    };
    if same_origin(origin, host) {
        return Ok(Caller::SameOrigin);
    }
    if normalize_origin(origin).is_ok_and(|o| config.cors_origins.contains(&o)) {
        return Ok(Caller::AllowedOrigin);
    }
    Err(ApiError::forbidden(
        ErrorCode::OriginNotAllowed,
        format!(
            "this relay does not take requests from web pages at {origin:?}; its operator can \
             allow that origin with PCHAT_CORS_ORIGINS"
        ),
    ))
}

/// The middleware: refuses foreign origins and hosts, and tells handlers who called.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match classify(&state.config, text(header::ORIGIN), text(header::HOST)) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// CORS for the configured origins only (the relay's own pages need none).
pub fn cors_layer(config: &RelayConfig) -> tower_http::cors::CorsLayer {
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static(crate::api::SESSION_HEADER),
        ])
        .expose_headers([header::CONTENT_DISPOSITION])
        .vary([header::ORIGIN])
        .max_age(std::time::Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> RelayConfig {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let flags = super::super::config::RelayFlags {
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        RelayConfig::load(&flags, &env).unwrap()
    }

    #[test]
    fn origins() {
        let c = config(&[("PCHAT_CORS_ORIGINS", "http://app.example:8026")]);
        let host = Some("127.0.0.1:5110");
        assert_eq!(classify(&c, None, host).unwrap(), Caller::NoOrigin);
        assert_eq!(
            classify(&c, Some("http://127.0.0.1:5110"), host).unwrap(),
            Caller::SameOrigin
        );
        assert_eq!(
            classify(&c, Some("http://app.example:8026"), host).unwrap(),
            Caller::AllowedOrigin
        );
        for bad in ["http://evil.example", "http://127.0.0.1:5111", "null", ""] {
            let e = classify(&c, Some(bad), host).unwrap_err();
            assert_eq!(e.code, ErrorCode::OriginNotAllowed, "{bad}");
        }
    }

    #[test]
    fn rebound_names_are_refused_on_loopback_only() {
        let c = config(&[]);
        // DNS rebinding: the page and the Host agree, but the name is not this machine's.
        let e = classify(
            &c,
            Some("http://evil.example:5110"),
            Some("evil.example:5110"),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::HostNotAllowed);
        for ok in [
            "localhost:5110",
            "[::1]:5110",
            "127.0.0.2",
            "app.localhost:1",
        ] {
            assert!(host_allowed(&c, ok), "{ok}");
        }
        let public = config(&[("HOST", "0.0.0.0")]);
        assert_eq!(
            classify(
                &public,
                Some("https://chat.example.com"),
                Some("chat.example.com")
            )
            .unwrap(),
            Caller::SameOrigin
        );
        let named = config(&[("PCHAT_ALLOWED_HOSTS", "chat.internal")]);
        assert!(host_allowed(&named, "chat.internal:5110"));
    }
}
