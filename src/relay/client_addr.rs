//! The client's real address. Behind a reverse proxy every request comes from the proxy, so
//! per-address limits would lump everyone together; the proxy's `X-Forwarded-For` is believed
//! only when the connection comes from an address the operator listed in
//! `PCHAT_TRUSTED_PROXIES`, and then read from the right, skipping trusted hops, so a client
//! cannot pick its own address by sending the header itself.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::api::ErrorCode;

/// The address the request is from, as far as the relay can tell.
pub struct ClientAddr(pub IpAddr);

/// The client's address: the peer's, or (from a trusted proxy) the nearest untrusted
/// address in `X-Forwarded-For`.
pub fn resolve(peer: IpAddr, forwarded: &[&str], trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .rev()
        .map(|h| h.parse::<IpAddr>().ok());
    let mut nearest = peer;
    for hop in hops {
        match hop {
            Some(ip) if is_trusted(&ip) => nearest = ip,
            Some(ip) => return ip,
            // A hop that is not an address: nothing further left can be believed.
            None => return nearest,
        }
    }
    nearest
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied()
        else {
            return Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "the relay could not tell the connection's address",
            ));
        };
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(ClientAddr(resolve(
            peer.ip(),
            &forwarded,
            &state.config.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn believes_only_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // Straight from a client: the header is ignored.
        assert_eq!(
            resolve(ip("203.0.113.5"), &["198.51.100.1"], &trusted),
            ip("203.0.113.5")
        );
        // Through the proxy: the nearest untrusted hop, whatever the client prepended.
        assert_eq!(
            resolve(ip("10.0.0.2"), &["1.2.3.4, 203.0.113.5"], &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            resolve(ip("10.0.0.2"), &["203.0.113.5", "10.0.0.9"], &trusted),
            ip("203.0.113.5")
        );
        // No header, or nothing usable: the proxy itself.
        assert_eq!(resolve(ip("10.0.0.2"), &[], &trusted), ip("10.0.0.2"));
        assert_eq!(
            resolve(ip("10.0.0.2"), &["junk, 10.0.0.7"], &trusted),
            ip("10.0.0.7")
        );
        // Nothing trusted: never the header.
        assert_eq!(
            resolve(ip("10.0.0.2"), &["203.0.113.5"], &[]),
            ip("10.0.0.2")
        );
    }
}
