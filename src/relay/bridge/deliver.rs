//! The outbox worker: mails each queued email and POSTs each bridge message (signed like a
//! callback, `webhook-id` = the message id), a bounded number at a time, retrying with backoff
//! until the retry period ends. Nothing here runs on a request's path.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::api::now_millis;
use crate::relay::AppState;
use crate::relay::callbacks::dispatch::{backoff_ms, idle};
use crate::relay::callbacks::sign;
use crate::relay::store::{OUTBOX_CLAIM_MS, OutboundEnd, OutboundItem};

/// Tries in flight at once.
const IN_FLIGHT: usize = 16;
/// Longest an email try may take (bridge POSTs time out at 10 s), under OUTBOX_CLAIM_MS.
const TRY_LIMIT_SECS: u64 = 15;
/// Longest reason kept from a bridge's answer.
const MAX_REASON_CHARS: usize = 300;

/// Runs until shutdown.
pub async fn run(state: AppState) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let busy: Arc<Mutex<HashSet<i64>>> = Arc::default();
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        let rung = state.bridge.bell.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        let due = match state.store.due_outbound(now_millis(), 64).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("reading due outbound messages: {e}");
                Vec::new()
            }
        };
        let mut started = 0;
        for item in due {
            if !busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(item.id)
            {
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                busy.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&item.id);
                break;
            };
            started += 1;
            let (state, busy) = (state.clone(), busy.clone());
            tokio::spawn(async move {
                let id = item.id;
                let now = now_millis();
                let claimed = state
                    .store
                    .claim_outbound(id, now, now + OUTBOX_CLAIM_MS)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!("claiming an outbound message: {e}");
                        false
                    });
                if !claimed {
                    // Another relay on the same database took it.
                    busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    return;
                }
                let end = attempt(&state, &item).await;
                let result = match &end {
                    OutboundEnd::Sent => "sent",
                    OutboundEnd::Retry { .. } => "retry",
                    OutboundEnd::Failed { .. } => "failed",
                };
                metrics::counter!("gtsw_bridge_tries_total", "channel" => item.channel.clone(),
                    "result" => result)
                .increment(1);
                if let Err(e) = state.store.end_outbound(id, end, now_millis()).await {
                    tracing::warn!("recording an outbound try: {e}");
                }
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                drop(permit);
                state.bridge.wake();
            });
        }
        if started > 0 {
            continue;
        }
        let next = state.store.next_outbound_due().await.ok().flatten();
        if !idle(rung, next, &state.shutdown).await {
            return;
        }
    }
}

/// Whether a failure is for good (the recipient or message is refused) or worth retrying.
enum Failure {
    Permanent(String),
    Transient(String),
}

async fn attempt(state: &AppState, item: &OutboundItem) -> OutboundEnd {
    crate::failpoints::hit("relay-bridge-before-send");
    let tried = if item.channel == "email" {
        // Bounded, so a try never outlives its claim (another relay would send it again).
        let limit = Duration::from_secs(TRY_LIMIT_SECS);
        tokio::time::timeout(limit, mail(state, item))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Transient(format!(
                    "the SMTP server did not finish within {TRY_LIMIT_SECS} s"
                )))
            })
    } else {
        post(state, item).await
    };
    let error = match tried {
        Ok(()) => return OutboundEnd::Sent,
        Err(Failure::Permanent(error)) => return OutboundEnd::Failed { error },
        Err(Failure::Transient(error)) => error,
    };
    let tries = item.attempts + 1;
    let next = now_millis() + backoff_ms(state.callbacks.config.backoff_ms, tries) as i64;
    if next > item.give_up_at {
        OutboundEnd::Failed {
            error: format!("gave up after {tries} tries: {error}"),
        }
    } else {
        OutboundEnd::Retry {
            error,
            not_before: next,
        }
    }
}

async fn mail(state: &AppState, item: &OutboundItem) -> Result<(), Failure> {
    let Some(mailer) = &state.mailer else {
        return Err(Failure::Transient(
            "the relay has no SMTP settings any more".into(),
        ));
    };
    let subject = item.subject.as_deref().unwrap_or_default();
    mailer
        .send_text(&item.recipient, subject, &item.payload, &item.message_id)
        .await
        .map_err(|e| {
            if e.is_permanent() {
                Failure::Permanent(e.to_string())
            } else {
                Failure::Transient(e.to_string())
            }
        })
}

async fn post(state: &AppState, item: &OutboundItem) -> Result<(), Failure> {
    let (Some(url), Some(secret)) = (&state.bridge.config.url, &state.bridge.config.secret) else {
        return Err(Failure::Transient(
            "the relay has no PhoneRelay bridge configured any more".into(),
        ));
    };
    let ts = now_millis() / 1000;
    let sig = sign::signature(secret, &item.message_id, ts, item.payload.as_bytes());
    let sent = state
        .bridge
        .client
        .post(url)
        .header("webhook-id", &item.message_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .header("content-type", "application/json")
        .body(item.payload.clone())
        .send()
        .await;
    let answer = match sent {
        Ok(a) => a,
        Err(e) if e.is_timeout() => {
            return Err(Failure::Transient(
                "the bridge did not answer within 10 s".into(),
            ));
        }
        Err(e) => {
            return Err(Failure::Transient(format!(
                "could not reach the bridge: {}",
                e.without_url()
            )));
        }
    };
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let body = answer.text().await.unwrap_or_default();
    let reason = format!(
        "the bridge answered HTTP {}: {}",
        status.as_u16(),
        reason_in(&body)
    );
    if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
        Err(Failure::Permanent(reason))
    } else {
        Err(Failure::Transient(reason))
    }
}

/// The bridge's own words: `error` (a string, or an object's `message`), `message`, or the
/// body's start, on one line without control characters.
fn reason_in(body: &str) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let said = v.as_ref().and_then(|v| {
        let e = v.get("error");
        e.and_then(|e| e.as_str().map(str::to_string))
            .or_else(|| {
                e.and_then(|e| e.get("message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .or_else(|| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
    });
    let text = said.unwrap_or_else(|| body.to_string());
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    match clean.trim() {
        "" => "no reason given".into(),
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::reason_in;

    #[test]
    fn reasons() {
        assert_eq!(reason_in(r#"{"error":"number blocked"}"#), "number blocked");
        assert_eq!(
            reason_in(r#"{"error":{"message":"no such chat"}}"#),
            "no such chat"
        );
        assert_eq!(reason_in("bad\u{1b}[31m thing"), "bad [31m thing");
        assert_eq!(reason_in(""), "no reason given");
    }
}
