//! Where a callback may point: http(s) only, and (unless the operator allows it) never this
//! machine, a private or link-local network, or a cloud metadata address. The check is made on
//! the addresses actually connected to (a resolver of our own), so a name that resolves to a
//! public address when the callback is created and to 127.0.0.1 later gets nowhere.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotAllowed(String),
}

/// Addresses a callback may not reach unless the operator allows private ones.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local() // 169.254/16, cloud metadata among them
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10, carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24, protocol assignments
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 among them)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 of any IPv4
        }
    }
}

/// Checks a callback URL's form and, for an address literal, the address; returns it
/// normalised.
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, UrlRefused> {
    let url = url::Url::parse(raw.trim())
        .map_err(|e| UrlRefused::Invalid(format!("url: not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlRefused::Invalid(format!(
            "url: only http and https callbacks are allowed, not {}:",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused::Invalid(
            "url: leave credentials out of the URL; check the webhook-signature header instead"
                .into(),
        ));
    }
    if raw.len() > 2048 {
        return Err(UrlRefused::Invalid("url: longer than 2048 bytes".into()));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if !allow_private && (d == "localhost" || d.ends_with(".localhost")) {
                return Err(not_allowed(&d));
            }
            None
        }
        None => return Err(UrlRefused::Invalid("url: it has no host".into())),
    };
    if let Some(ip) = ip.filter(|ip| !allow_private && forbidden(*ip)) {
        return Err(not_allowed(&ip.to_string()));
    }
    Ok(url)
}

fn not_allowed(what: &str) -> UrlRefused {
    UrlRefused::NotAllowed(format!(
        "url: {what} is this machine or a private network; callbacks go to public addresses \
         (an operator can allow private ones with PCHAT_CALLBACKS_ALLOW_PRIVATE=true)"
    ))
}

/// Resolves names for deliveries, dropping the addresses a callback may not reach.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow || !forbidden(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client deliveries use: guarded names, 10 s per try, no redirects followed.
pub fn client(allow_private: bool) -> reqwest::Client {
    crate::client::install_crypto();
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "gts-webchat/",
            env!("CARGO_PKG_VERSION"),
            " (callbacks)"
        ))
        .pool_max_idle_per_host(16)
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_refused() {
        for bad in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:9/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
        ] {
            assert!(
                matches!(check_url(bad, false), Err(UrlRefused::NotAllowed(_))),
                "{bad}"
            );
            assert!(check_url(bad, true).is_ok(), "{bad} with private allowed");
        }
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert!(check_url("http://93.184.216.34/", false).is_ok());
    }

    #[test]
    fn only_http_urls_without_credentials() {
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "not a url",
            "https://u:p@example.com/",
        ] {
            assert!(
                matches!(check_url(bad, true), Err(UrlRefused::Invalid(_))),
                "{bad}"
            );
        }
    }

    /// The address connected to is checked, not the one seen at creation: a name that
    /// resolves to this machine gets no address at all.
    #[tokio::test]
    async fn the_resolver_drops_private_addresses() {
        let name = |n: &str| n.parse::<Name>().unwrap();
        let guarded = GuardedResolver {
            allow_private: false,
        };
        assert!(guarded.resolve(name("localhost")).await.is_err());
        let open = GuardedResolver {
            allow_private: true,
        };
        let found: Vec<SocketAddr> = open.resolve(name("localhost")).await.unwrap().collect();
        assert!(found.iter().all(|a| a.ip().is_loopback()) && !found.is_empty());
    }
}
