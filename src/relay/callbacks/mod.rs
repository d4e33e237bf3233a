//! Inbound callbacks: the relay POSTs each new message for its owner to a URL of theirs.
//!
//! - `api`: subscribe, list, remove, turn back on, rotate the secret, redeliver, deliveries.
//! - `dispatch`: followers that queue events into the durable outbox, and the deliverer.
//! - `guard`: which URLs and addresses a callback may reach.
//! - `sign`: Standard Webhooks signatures.

pub mod api;
pub mod dispatch;
pub mod guard;
pub mod sign;

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::config::CallbacksConfig;

pub struct Callbacks {
    pub config: CallbacksConfig,
    client: reqwest::Client,
    /// The follower of each enabled callback.
    followers: DashMap<i64, CancellationToken>,
    /// Rung when deliveries may have come due.
    bell: Notify,
}

impl Callbacks {
    pub fn new(config: CallbacksConfig) -> Callbacks {
        Callbacks {
            client: guard::client(config.allow_private),
            config,
            followers: DashMap::new(),
            bell: Notify::new(),
        }
    }
}

/// Starts the followers of every enabled callback, then delivers until shutdown.
pub async fn run(state: AppState) {
    match state.store.enabled_callbacks().await {
        Ok(all) => {
            for cb in all {
                dispatch::start_follower(&state, cb);
            }
        }
        Err(e) => tracing::warn!("cannot read callbacks: {e}"),
    }
    dispatch::deliver(state).await;
}
