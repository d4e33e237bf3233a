//! Inbound callbacks and their durable outbox (PostgreSQL). The cursor compare-and-set in
//! `queue` (under the callback's row lock) keeps two relays' followers from queueing an event
//! twice.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::messages::stream_head;
use super::{RowExt, execute, query, query_one, query_opt};
use crate::relay::store::{
    AttemptEnd, CallbackChange, CallbackRecord, DeliveryRow, NewCallback, OutboxItem, QueuedEvent,
    StoreError, StoreResult,
};

const COLS: &str = "c.id, c.public_id, c.user_id, c.url, c.channels, c.keywords, c.secret, \
     c.enabled, c.disabled_reason, c.cursor, c.created_at, \
     (SELECT COUNT(*) FROM callback_outbox o WHERE o.callback_id = c.id AND o.state = 'pending'), \
     (SELECT COUNT(*) FROM callback_outbox o WHERE o.callback_id = c.id AND o.state = 'dead'), \
     (SELECT u.chat_address FROM users u WHERE u.id = c.user_id)";

fn list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn record(r: &Row) -> StoreResult<CallbackRecord> {
    Ok(CallbackRecord {
        id: r.at(0)?,
        public_id: r.at(1)?,
        user_id: r.at(2)?,
        url: r.at(3)?,
        channels: list(&r.at::<String>(4)?),
        keywords: list(&r.at::<String>(5)?),
        secret: r.at(6)?,
        enabled: r.at(7)?,
        disabled_reason: r.at(8)?,
        cursor: r.at::<i64>(9)?.max(0) as u64,
        created_at: r.at(10)?,
        pending: r.at::<i64>(11)?.max(0) as u64,
        dead: r.at::<i64>(12)?.max(0) as u64,
        owner_address: r.at::<Option<String>>(13)?.unwrap_or_default(),
    })
}

async fn by_id(c: &impl GenericClient, id: i64) -> StoreResult<Option<CallbackRecord>> {
    let sql = format!("SELECT {COLS} FROM callbacks c WHERE c.id = $1");
    query_opt(c, "reading a callback", &sql, &[&id])
        .await?
        .map(|r| record(&r))
        .transpose()
}

pub(super) async fn find(
    c: &impl GenericClient,
    user_id: i64,
    public_id: &str,
) -> StoreResult<Option<CallbackRecord>> {
    let sql = format!("SELECT {COLS} FROM callbacks c WHERE c.user_id = $1 AND c.public_id = $2");
    query_opt(c, "reading a callback", &sql, &[&user_id, &public_id])
        .await?
        .map(|r| record(&r))
        .transpose()
}

pub(super) async fn create(
    c: &impl GenericClient,
    cb: &NewCallback,
) -> StoreResult<CallbackRecord> {
    // The owner's row lock serializes creations, so the limit holds across relays.
    execute(
        c,
        "counting callbacks",
        "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
        &[&cb.user_id],
    )
    .await?;
    let have: i64 = query_one(
        c,
        "counting callbacks",
        "SELECT COUNT(*) FROM callbacks WHERE user_id = $1",
        &[&cb.user_id],
    )
    .await?
    .at(0)?;
    if have >= i64::from(cb.max_per_user) {
        return Err(StoreError::Conflict(format!(
            "you have {have} callbacks, the most this relay allows; delete one first"
        )));
    }
    let cursor = stream_head(c, cb.user_id).await? as i64;
    let id: i64 = query_one(
        c,
        "creating a callback",
        "INSERT INTO callbacks (public_id, user_id, url, channels, keywords, secret, cursor,
                                created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        &[
            &cb.public_id,
            &cb.user_id,
            &cb.url,
            &serde_json::to_string(&cb.channels).unwrap_or_else(|_| "[]".into()),
            &serde_json::to_string(&cb.keywords).unwrap_or_else(|_| "[]".into()),
            &cb.secret,
            &cursor,
            &cb.now,
        ],
    )
    .await?
    .at(0)?;
    by_id(c, id)
        .await?
        .ok_or_else(|| StoreError::NotFound("the new callback is gone".into()))
}

pub(super) async fn of_user(
    c: &impl GenericClient,
    user_id: i64,
) -> StoreResult<Vec<CallbackRecord>> {
    let sql = format!("SELECT {COLS} FROM callbacks c WHERE c.user_id = $1 ORDER BY c.id");
    query(c, "listing callbacks", &sql, &[&user_id])
        .await?
        .iter()
        .map(record)
        .collect()
}

pub(super) async fn enabled(c: &impl GenericClient) -> StoreResult<Vec<CallbackRecord>> {
    let sql = format!("SELECT {COLS} FROM callbacks c WHERE c.enabled ORDER BY c.id");
    query(c, "listing callbacks", &sql, &[])
        .await?
        .iter()
        .map(record)
        .collect()
}

pub(super) async fn delete(
    c: &impl GenericClient,
    user_id: i64,
    public_id: &str,
) -> StoreResult<bool> {
    let Some(cb) = find(c, user_id, public_id).await? else {
        return Ok(false);
    };
    execute(
        c,
        "deleting a callback",
        "DELETE FROM callback_outbox WHERE callback_id = $1",
        &[&cb.id],
    )
    .await?;
    execute(
        c,
        "deleting a callback",
        "DELETE FROM callbacks WHERE id = $1",
        &[&cb.id],
    )
    .await?;
    Ok(true)
}

pub(super) async fn change(
    c: &impl GenericClient,
    user_id: i64,
    public_id: &str,
    ch: &CallbackChange,
) -> StoreResult<Option<(CallbackRecord, u64)>> {
    let Some(cb) = find(c, user_id, public_id).await? else {
        return Ok(None);
    };
    if ch.enable {
        execute(
            c,
            "enabling a callback",
            "UPDATE callbacks SET enabled = TRUE, disabled_reason = NULL WHERE id = $1",
            &[&cb.id],
        )
        .await?;
    }
    if let Some(secret) = &ch.secret {
        execute(
            c,
            "rotating a callback secret",
            "UPDATE callbacks SET secret = $1 WHERE id = $2",
            &[secret, &cb.id],
        )
        .await?;
    }
    let mut requeued = 0;
    if let Some(until) = ch.requeue_dead_until {
        requeued = execute(
            c,
            "queueing deliveries again",
            "UPDATE callback_outbox SET state = 'pending', attempts = 0, not_before = $1,
                    give_up_at = $2
             WHERE callback_id = $3 AND state = 'dead'",
            &[&ch.now, &until, &cb.id],
        )
        .await?;
    }
    Ok(by_id(c, cb.id).await?.map(|r| (r, requeued)))
}

pub(super) async fn queue(
    c: &impl GenericClient,
    callback_id: i64,
    from: u64,
    to: u64,
    events: &[QueuedEvent],
    now: i64,
    give_up_at: i64,
) -> StoreResult<bool> {
    let moved = execute(
        c,
        "moving a callback cursor",
        "UPDATE callbacks SET cursor = $1 WHERE id = $2 AND cursor = $3 AND enabled",
        &[&(to as i64), &callback_id, &(from as i64)],
    )
    .await?;
    if moved != 1 {
        return Ok(false);
    }
    if events.is_empty() {
        return Ok(true);
    }
    let ids: Vec<&str> = events.iter().map(|e| e.webhook_id.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    execute(
        c,
        "queueing callback events",
        "INSERT INTO callback_outbox (callback_id, webhook_id, payload, not_before, give_up_at,
                                      created_at)
         SELECT $1, w, p, $4, $5, $4 FROM unnest($2::text[], $3::text[]) AS t(w, p)",
        &[&callback_id, &ids, &payloads, &now, &give_up_at],
    )
    .await?;
    Ok(true)
}

pub(super) async fn due(
    c: &impl GenericClient,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<OutboxItem>> {
    let rows = query(
        c,
        "reading due deliveries",
        "SELECT o.id, o.callback_id, o.webhook_id, o.payload, o.attempts, o.give_up_at,
                c.url, c.secret
         FROM callback_outbox o JOIN callbacks c ON c.id = o.callback_id
         WHERE o.state = 'pending' AND o.not_before <= $1 AND c.enabled
         ORDER BY o.not_before, o.id
         LIMIT $2",
        &[&now, &(limit as i64)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OutboxItem {
                id: r.at(0)?,
                callback_id: r.at(1)?,
                webhook_id: r.at(2)?,
                payload: r.at(3)?,
                attempts: r.at::<i64>(4)?.clamp(0, u32::MAX as i64) as u32,
                give_up_at: r.at(5)?,
                url: r.at(6)?,
                secret: r.at(7)?,
            })
        })
        .collect()
}

pub(super) async fn next_due(c: &impl GenericClient) -> StoreResult<Option<i64>> {
    query_one(
        c,
        "reading the next delivery",
        "SELECT MIN(o.not_before) FROM callback_outbox o JOIN callbacks c ON c.id = o.callback_id
         WHERE o.state = 'pending' AND c.enabled",
        &[],
    )
    .await?
    .at(0)
}

pub(super) async fn end(
    c: &impl GenericClient,
    id: i64,
    end: &AttemptEnd,
    now: i64,
) -> StoreResult<()> {
    let action = "recording a delivery try";
    match end {
        AttemptEnd::Delivered { status } => {
            execute(
                c,
                action,
                "UPDATE callback_outbox SET state = 'delivered', attempts = attempts + 1,
                        last_status = $1, last_error = NULL, delivered_at = $2, payload = ''
                 WHERE id = $3 AND state = 'pending'",
                &[&i64::from(*status), &now, &id],
            )
            .await?;
        }
        AttemptEnd::Retry {
            status,
            error,
            not_before,
        } => {
            execute(
                c,
                action,
                "UPDATE callback_outbox SET attempts = attempts + 1, last_status = $1,
                        last_error = $2, not_before = $3
                 WHERE id = $4 AND state = 'pending'",
                &[&status.map(i64::from), error, not_before, &id],
            )
            .await?;
        }
        AttemptEnd::Dead {
            status,
            error,
            disable_reason,
        } => {
            execute(
                c,
                action,
                "UPDATE callback_outbox SET state = 'dead', attempts = attempts + 1,
                        last_status = $1, last_error = $2
                 WHERE id = $3 AND state = 'pending'",
                &[&status.map(i64::from), error, &id],
            )
            .await?;
            execute(
                c,
                action,
                "UPDATE callbacks SET enabled = FALSE, disabled_reason = $1
                 WHERE id = (SELECT callback_id FROM callback_outbox WHERE id = $2)",
                &[disable_reason, &id],
            )
            .await?;
        }
    }
    Ok(())
}

const PRUNE_BATCH: i64 = 20_000;

pub(super) async fn prune(c: &impl GenericClient, before: i64) -> StoreResult<u64> {
    execute(
        c,
        "forgetting old deliveries",
        "DELETE FROM callback_outbox WHERE id IN (
             SELECT id FROM callback_outbox WHERE state = 'delivered' AND not_before < $1
             LIMIT $2)",
        &[&before, &PRUNE_BATCH],
    )
    .await
}

pub(super) async fn deliveries(
    c: &impl GenericClient,
    user_id: i64,
    public_id: &str,
    limit: u32,
) -> StoreResult<Option<Vec<DeliveryRow>>> {
    let Some(cb) = find(c, user_id, public_id).await? else {
        return Ok(None);
    };
    let rows = query(
        c,
        "listing deliveries",
        "SELECT webhook_id, state, attempts, last_status, last_error, created_at, delivered_at
         FROM callback_outbox WHERE callback_id = $1 ORDER BY id DESC LIMIT $2",
        &[&cb.id, &(limit as i64)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeliveryRow {
                webhook_id: r.at(0)?,
                state: r.at(1)?,
                attempts: r.at::<i64>(2)?.clamp(0, u32::MAX as i64) as u32,
                last_status: r.at::<Option<i64>>(3)?.map(|s| s.clamp(0, 999) as u16),
                last_error: r.at(4)?,
                created_at: r.at(5)?,
                delivered_at: r.at(6)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()
        .map(Some)
}
