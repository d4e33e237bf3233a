//! Wake-ups across relays: LISTEN/NOTIFY as a doorbell only (the database stays the truth).
//!
//! A transaction that appends to streams sends `gtsw_wake` with `user:newest_seq` pairs; it
//! reaches listeners only if it commits, in commit order. Every relay listens on a connection of
//! its own and rings its hub. After that connection is lost (and again once it is back), every
//! waiter re-reads, so a commit made while nobody was listening still wakes its pollers.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use futures::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{execute, pg};
use crate::relay::hub::Hub;
use crate::relay::store::StoreResult;

const CHANNEL: &str = "gtsw_wake";

/// Queues a wake-up in the current transaction.
pub(super) async fn ring(c: &impl GenericClient, payload: &str) -> StoreResult<()> {
    execute(
        c,
        "ringing other relays",
        "SELECT pg_notify('gtsw_wake', $1)",
        &[&payload],
    )
    .await
    .map(drop)
}

fn heard(hub: &Hub, payload: &str) {
    for pair in payload.split_ascii_whitespace() {
        if let Some((user, seq)) = pair.split_once(':')
            && let (Ok(user), Ok(seq)) = (user.parse::<i64>(), seq.parse::<u64>())
        {
            hub.notify(user, seq, None);
        }
    }
}

/// Listens until `stop`, reconnecting with backoff.
pub(super) async fn listen(config: tokio_postgres::Config, hub: Arc<Hub>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!("doorbell connection lost: {e}");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        // Anything committed before LISTEN took effect went unheard.
                        hub.wake_all();
                        loop {
                            tokio::select! {
                                got = rx.recv() => match got {
                                    Some(payload) => heard(&hub, &payload),
                                    None => break,
                                },
                                _ = stop.cancelled() => {
                                    driver.abort();
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!("doorbell: {}", pg("listening")(e)),
                }
                driver.abort();
                // Whatever was committed while the bell was down: everyone reads again.
                hub.wake_all();
            }
            Err(e) => tracing::warn!("doorbell: {}", pg("connecting")(e)),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
