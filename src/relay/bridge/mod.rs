//! The PhoneRelay bridge: messages to addresses outside the relay and replies from them.
//!
//! - `keys`: API keys (made, listed and revoked by the operator) and the caller extractor that
//!   takes a key or a session.
//! - `api`: sending on a channel, a message's delivery status, replies from the bridge.
//! - `deliver`: the outbox worker that mails or POSTs each queued message, with retries.

pub mod api;
pub mod deliver;
pub mod keys;

use std::time::Duration;

use tokio::sync::Notify;

use super::config::BridgeConfig;

pub struct Bridge {
    pub config: BridgeConfig,
    client: reqwest::Client,
    /// Rung when an outbound message was queued.
    bell: Notify,
}

impl Bridge {
    pub fn new(config: BridgeConfig) -> Bridge {
        // The operator names the bridge, so private addresses are fine; redirects are not
        // followed (a signed body must not be replayed elsewhere).
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Bridge {
            config,
            client,
            bell: Notify::new(),
        }
    }

    pub fn wake(&self) {
        self.bell.notify_one();
    }
}
