//! Moving events out: a follower per enabled callback reads its owner's stream from the
//! callback's cursor and queues what passes the filters (queue and cursor move commit
//! together); one deliverer POSTs what is due, signed, a bounded number at a time, and records
//! each try. Nothing here runs on a request's path, so a slow or dead receiver never slows
//! sending.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::sign;
use crate::api::callbacks::{CallbackEvent, CallbackEventData};
use crate::api::messages::{EventType, Message};
use crate::api::{now_millis, rfc3339_from_millis};
use crate::relay::AppState;
use crate::relay::store::{AttemptEnd, CallbackRecord, OUTBOX_CLAIM_MS, OutboxItem, QueuedEvent};

/// Deliveries in flight at once, over all callbacks, and per callback (so one slow receiver
/// cannot take every slot).
const IN_FLIGHT: usize = 64;
const IN_FLIGHT_PER_CALLBACK: usize = 8;
/// Stream events read per step of a follower.
const READ_BATCH: u32 = 500;
/// The longest wait between retries.
const MAX_BACKOFF_MS: u64 = 3_600_000;

/// Whether a callback passes this event on.
pub fn passes(cb: &CallbackRecord, m: &Message) -> bool {
    if m.event_type != EventType::Message || m.deleted || m.from == cb.owner_address {
        return false;
    }
    let channel = m.channel.as_deref().unwrap_or("pchat");
    if !cb.channels.is_empty() && !cb.channels.iter().any(|c| c == channel) {
        return false;
    }
    if cb.keywords.is_empty() {
        return true;
    }
    let text = m.text.to_lowercase();
    cb.keywords.iter().any(|k| text.contains(k.as_str()))
}

fn webhook_id() -> String {
    let mut raw = [0u8; 12];
    rand::fill(&mut raw);
    format!("evt_{:012x}{}", now_millis().max(0), hex::encode(raw))
}

/// Starts following `cb` unless a follower already runs for it.
pub fn start_follower(state: &AppState, cb: CallbackRecord) {
    let stop = CancellationToken::new();
    match state.callbacks.followers.entry(cb.id) {
        dashmap::Entry::Occupied(_) => return,
        dashmap::Entry::Vacant(v) => {
            v.insert(stop.clone());
        }
    }
    let state = state.clone();
    tokio::spawn(async move {
        let id = cb.id;
        follow(&state, cb, &stop).await;
        state.callbacks.followers.remove(&id);
    });
}

/// Stops the follower of a callback (deleted or turned off).
pub fn stop_follower(state: &AppState, callback_id: i64) {
    if let Some((_, stop)) = state.callbacks.followers.remove(&callback_id) {
        stop.cancel();
    }
}

async fn follow(state: &AppState, cb: CallbackRecord, stop: &CancellationToken) {
    let mut cursor = cb.cursor;
    loop {
        // Subscribe before reading, so an event committed in between still rings.
        let mut bell = state.hub.subscribe(cb.user_id);
        let events = match state.store.poll(cb.user_id, cursor, READ_BATCH).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(callback = %cb.public_id, "reading a stream for a callback: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        if let Some(last) = events.last() {
            let to = last.cursor.parse::<u64>().unwrap_or(cursor);
            let now = now_millis();
            let queued: Vec<QueuedEvent> = events
                .into_iter()
                .filter(|m| passes(&cb, m))
                .map(|message| {
                    let event = CallbackEvent {
                        event_type: "message.received".into(),
                        timestamp: rfc3339_from_millis(now),
                        data: CallbackEventData {
                            callback_id: cb.public_id.clone(),
                            channel: message.channel.clone().unwrap_or_else(|| "pchat".into()),
                            message,
                        },
                    };
                    QueuedEvent {
                        webhook_id: webhook_id(),
                        payload: serde_json::to_string(&event).unwrap_or_default(),
                    }
                })
                .collect();
            let any = !queued.is_empty();
            if any {
                crate::failpoints::hit("relay-callback-before-queue");
            }
            let give_up = now + (state.callbacks.config.retry_secs as i64) * 1000;
            match state
                .store
                .queue_callback_events(cb.id, cursor, to.max(cursor), queued, now, give_up)
                .await
            {
                Ok(true) => {
                    cursor = to.max(cursor);
                    if any {
                        state.callbacks.bell.notify_one();
                    }
                    continue;
                }
                // Deleted, turned off, or followed by another follower: this one ends.
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(callback = %cb.public_id, "queueing callback events: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
        tokio::select! {
            _ = bell.changed() => {}
            // Now and then even without a bell: a write the hub did not see still goes out.
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Deliveries in flight: their outbox ids, and how many each callback has.
#[derive(Default)]
struct Busy {
    ids: HashSet<i64>,
    per_callback: HashMap<i64, usize>,
}

/// The deliverer: runs until shutdown.
pub async fn deliver(state: AppState) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let busy: Arc<Mutex<Busy>> = Arc::default();
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        let rung = state.callbacks.bell.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        let now = now_millis();
        let due = match state.store.due_deliveries(now, 256).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("reading due callback deliveries: {e}");
                Vec::new()
            }
        };
        let mut started = 0;
        for item in due {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            {
                let mut b = busy.lock().unwrap_or_else(|p| p.into_inner());
                let per = b.per_callback.get(&item.callback_id).copied().unwrap_or(0);
                if b.ids.contains(&item.id) || per >= IN_FLIGHT_PER_CALLBACK {
                    continue;
                }
                b.ids.insert(item.id);
                *b.per_callback.entry(item.callback_id).or_default() += 1;
            }
            started += 1;
            let (state, busy) = (state.clone(), busy.clone());
            tokio::spawn(async move {
                let (id, cb) = (item.id, item.callback_id);
                let now = now_millis();
                match state
                    .store
                    .claim_delivery(id, now, now + OUTBOX_CLAIM_MS)
                    .await
                {
                    Ok(true) => attempt(&state, item).await,
                    // Another relay on the same database took it.
                    Ok(false) => {}
                    Err(e) => tracing::warn!("claiming a callback delivery: {e}"),
                }
                {
                    let mut b = busy.lock().unwrap_or_else(|p| p.into_inner());
                    b.ids.remove(&id);
                    if let Some(n) = b.per_callback.get_mut(&cb) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            b.per_callback.remove(&cb);
                        }
                    }
                }
                drop(permit);
                state.callbacks.bell.notify_one();
            });
        }
        if started > 0 {
            continue;
        }
        // Nothing startable: wait for a new event, a finished try, or the next retry.
        let next = state.store.next_delivery_due().await.ok().flatten();
        if !idle(rung, next, &state.shutdown).await {
            return;
        }
    }
}

/// An outbox worker's rest: until its doorbell rings, the next retry comes due (looked at
/// again at least every second), or shutdown (then false).
pub async fn idle(
    rung: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    next_due: Option<i64>,
    shutdown: &CancellationToken,
) -> bool {
    let wait = next_due
        .map(|t| (t - now_millis()).clamp(20, 1000) as u64)
        .unwrap_or(1000);
    tokio::select! {
        _ = rung => true,
        _ = tokio::time::sleep(Duration::from_millis(wait)) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// How long before try `n + 1` (n >= 1 tries made): doubling from the configured first
/// delay, at most an hour, with jitter so a receiver coming back is not hit all at once.
pub fn backoff_ms(first_ms: u64, tries: u32) -> u64 {
    let exp = first_ms.saturating_mul(1u64 << tries.saturating_sub(1).min(30));
    let capped = exp.min(MAX_BACKOFF_MS);
    (capped as f64 * rand::random_range(0.5..1.0)) as u64
}

async fn attempt(state: &AppState, item: OutboxItem) {
    crate::failpoints::hit("relay-callback-before-post");
    let ts = now_millis() / 1000;
    let sig = sign::signature(&item.secret, &item.webhook_id, ts, item.payload.as_bytes());
    let sent = state
        .callbacks
        .client
        .post(&item.url)
        .header("webhook-id", &item.webhook_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .header("content-type", "application/json")
        .body(item.payload.clone())
        .send()
        .await;
    let (status, error) = match sent {
        Ok(r) if r.status().is_success() => {
            let status = r.status().as_u16();
            end(state, item.id, AttemptEnd::Delivered { status }).await;
            return;
        }
        Ok(r) => {
            let s = r.status().as_u16();
            (Some(s), format!("the receiver answered HTTP {s}"))
        }
        // The URL can hold the receiver's own secret: never in the error.
        Err(e) => (None, describe(e.without_url())),
    };
    let now = now_millis();
    let tries = item.attempts + 1;
    let next = now + backoff_ms(state.callbacks.config.backoff_ms, tries) as i64;
    let end_as = if next > item.give_up_at {
        AttemptEnd::Dead {
            status,
            disable_reason: format!(
                "turned off: a delivery failed for {} after {tries} tries ({error}); fix the \
                 receiver, then POST …/enable and …/redeliver",
                humane(state.callbacks.config.retry_secs)
            ),
            error,
        }
    } else {
        AttemptEnd::Retry {
            status,
            error,
            not_before: next,
        }
    };
    if matches!(end_as, AttemptEnd::Dead { .. }) {
        stop_follower(state, item.callback_id);
    }
    end(state, item.id, end_as).await;
}

async fn end(state: &AppState, id: i64, end: AttemptEnd) {
    let result = match &end {
        AttemptEnd::Delivered { .. } => "delivered",
        AttemptEnd::Retry { .. } => "retry",
        AttemptEnd::Dead { .. } => "dead",
    };
    metrics::counter!("gtsw_callback_tries_total", "result" => result).increment(1);
    if let Err(e) = state.store.end_delivery(id, end, now_millis()).await {
        tracing::warn!("recording a callback delivery: {e}");
    }
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within 10 s".into()
    } else if e.is_connect() {
        let mut why = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            why = s.to_string();
            src = s.source();
        }
        format!("could not connect: {why}")
    } else {
        e.to_string()
    }
}

fn humane(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 && s >= 3600 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_an_hour() {
        for tries in 1..40 {
            let full = (5_000u64 << (tries - 1).min(30)).min(MAX_BACKOFF_MS);
            let b = backoff_ms(5_000, tries);
            assert!(b >= full / 2 && b <= full, "try {tries}: {b} of {full}");
        }
    }
}
