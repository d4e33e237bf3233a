//! Inbound callbacks and their durable outbox.

use rusqlite::{Connection, OptionalExtension, params};

use super::messages::stream_head;
use super::sqlite_err;
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

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallbackRecord> {
    Ok(CallbackRecord {
        id: r.get(0)?,
        public_id: r.get(1)?,
        user_id: r.get(2)?,
        url: r.get(3)?,
        channels: list(&r.get::<_, String>(4)?),
        keywords: list(&r.get::<_, String>(5)?),
        secret: r.get(6)?,
        enabled: r.get::<_, i64>(7)? != 0,
        disabled_reason: r.get(8)?,
        cursor: r.get::<_, i64>(9)? as u64,
        created_at: r.get(10)?,
        pending: r.get::<_, i64>(11)? as u64,
        dead: r.get::<_, i64>(12)? as u64,
        owner_address: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
    })
}

fn by_id(conn: &Connection, id: i64) -> StoreResult<Option<CallbackRecord>> {
    conn.prepare_cached(&format!("SELECT {COLS} FROM callbacks c WHERE c.id = ?1"))
        .and_then(|mut st| st.query_row([id], record).optional())
        .map_err(sqlite_err("reading a callback"))
}

pub(super) fn find(
    conn: &Connection,
    user_id: i64,
    public_id: &str,
) -> StoreResult<Option<CallbackRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLS} FROM callbacks c WHERE c.user_id = ?1 AND c.public_id = ?2"
    ))
    .and_then(|mut st| st.query_row(params![user_id, public_id], record).optional())
    .map_err(sqlite_err("reading a callback"))
}

pub(super) fn create(conn: &Connection, cb: &NewCallback) -> StoreResult<CallbackRecord> {
    let have: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM callbacks WHERE user_id = ?1")
        .and_then(|mut st| st.query_row([cb.user_id], |r| r.get(0)))
        .map_err(sqlite_err("counting callbacks"))?;
    if have >= i64::from(cb.max_per_user) {
        return Err(StoreError::Conflict(format!(
            "you have {have} callbacks, the most this relay allows; delete one first"
        )));
    }
    // From now on: what the owner received before is not news.
    let cursor = stream_head(conn, cb.user_id)?;
    conn.execute(
        "INSERT INTO callbacks (public_id, user_id, url, channels, keywords, secret, cursor,
                                created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            cb.public_id,
            cb.user_id,
            cb.url,
            serde_json::to_string(&cb.channels).unwrap_or_else(|_| "[]".into()),
            serde_json::to_string(&cb.keywords).unwrap_or_else(|_| "[]".into()),
            cb.secret,
            cursor as i64,
            cb.now
        ],
    )
    .map_err(sqlite_err("creating a callback"))?;
    by_id(conn, conn.last_insert_rowid())?
        .ok_or_else(|| StoreError::NotFound("the new callback is gone".into()))
}

pub(super) fn of_user(conn: &Connection, user_id: i64) -> StoreResult<Vec<CallbackRecord>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM callbacks c WHERE c.user_id = ?1 ORDER BY c.id"
        ))
        .map_err(sqlite_err("listing callbacks"))?;
    let rows = st
        .query_map([user_id], record)
        .map_err(sqlite_err("listing callbacks"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sqlite_err("listing callbacks"))
}

pub(super) fn enabled(conn: &Connection) -> StoreResult<Vec<CallbackRecord>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLS} FROM callbacks c WHERE c.enabled = 1 ORDER BY c.id"
        ))
        .map_err(sqlite_err("listing callbacks"))?;
    let rows = st
        .query_map([], record)
        .map_err(sqlite_err("listing callbacks"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sqlite_err("listing callbacks"))
}

pub(super) fn delete(conn: &Connection, user_id: i64, public_id: &str) -> StoreResult<bool> {
    let Some(cb) = find(conn, user_id, public_id)? else {
        return Ok(false);
    };
    conn.execute(
        "DELETE FROM callback_outbox WHERE callback_id = ?1",
        [cb.id],
    )
    .and_then(|_| conn.execute("DELETE FROM callbacks WHERE id = ?1", [cb.id]))
    .map_err(sqlite_err("deleting a callback"))?;
    Ok(true)
}

pub(super) fn change(
    conn: &Connection,
    user_id: i64,
    public_id: &str,
    ch: &CallbackChange,
) -> StoreResult<Option<(CallbackRecord, u64)>> {
    let Some(cb) = find(conn, user_id, public_id)? else {
        return Ok(None);
    };
    if ch.enable {
        conn.execute(
            "UPDATE callbacks SET enabled = 1, disabled_reason = NULL WHERE id = ?1",
            [cb.id],
        )
        .map_err(sqlite_err("enabling a callback"))?;
    }
    if let Some(secret) = &ch.secret {
        conn.execute(
            "UPDATE callbacks SET secret = ?1 WHERE id = ?2",
            params![secret, cb.id],
        )
        .map_err(sqlite_err("rotating a callback secret"))?;
    }
    let mut requeued = 0;
    if let Some(until) = ch.requeue_dead_until {
        requeued = conn
            .execute(
                "UPDATE callback_outbox SET state = 'pending', attempts = 0, not_before = ?1,
                        give_up_at = ?2
                 WHERE callback_id = ?3 AND state = 'dead'",
                params![ch.now, until, cb.id],
            )
            .map_err(sqlite_err("queueing deliveries again"))? as u64;
    }
    Ok(by_id(conn, cb.id)?.map(|r| (r, requeued)))
}

pub(super) fn queue(
    conn: &Connection,
    callback_id: i64,
    from: u64,
    to: u64,
    events: &[QueuedEvent],
    now: i64,
    give_up_at: i64,
) -> StoreResult<bool> {
    let at: Option<(i64, i64)> = conn
        .prepare_cached("SELECT cursor, enabled FROM callbacks WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row([callback_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sqlite_err("reading a callback cursor"))?;
    if at != Some((from as i64, 1)) {
        return Ok(false);
    }
    conn.execute(
        "UPDATE callbacks SET cursor = ?1 WHERE id = ?2",
        params![to as i64, callback_id],
    )
    .map_err(sqlite_err("moving a callback cursor"))?;
    let mut st = conn
        .prepare_cached(
            "INSERT INTO callback_outbox (callback_id, webhook_id, payload, not_before,
                                          give_up_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
        )
        .map_err(sqlite_err("queueing a callback event"))?;
    for e in events {
        st.execute(params![
            callback_id,
            e.webhook_id,
            e.payload,
            now,
            give_up_at
        ])
        .map_err(sqlite_err("queueing a callback event"))?;
    }
    Ok(true)
}

pub(super) fn due(conn: &Connection, now: i64, limit: u32) -> StoreResult<Vec<OutboxItem>> {
    let mut st = conn
        .prepare_cached(
            "SELECT o.id, o.callback_id, o.webhook_id, o.payload, o.attempts, o.give_up_at,
                    c.url, c.secret
             FROM callback_outbox o JOIN callbacks c ON c.id = o.callback_id
             WHERE o.state = 'pending' AND o.not_before <= ?1 AND c.enabled = 1
             ORDER BY o.not_before, o.id
             LIMIT ?2",
        )
        .map_err(sqlite_err("reading due deliveries"))?;
    let rows = st
        .query_map(params![now, limit], |r| {
            Ok(OutboxItem {
                id: r.get(0)?,
                callback_id: r.get(1)?,
                webhook_id: r.get(2)?,
                payload: r.get(3)?,
                attempts: r.get::<_, i64>(4)? as u32,
                give_up_at: r.get(5)?,
                url: r.get(6)?,
                secret: r.get(7)?,
            })
        })
        .map_err(sqlite_err("reading due deliveries"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sqlite_err("reading due deliveries"))
}

pub(super) fn next_due(conn: &Connection) -> StoreResult<Option<i64>> {
    conn.prepare_cached(
        "SELECT MIN(o.not_before) FROM callback_outbox o JOIN callbacks c ON c.id = o.callback_id
         WHERE o.state = 'pending' AND c.enabled = 1",
    )
    .and_then(|mut st| st.query_row([], |r| r.get::<_, Option<i64>>(0)))
    .map_err(sqlite_err("reading the next delivery"))
}

pub(super) fn end(conn: &Connection, id: i64, end: &AttemptEnd, now: i64) -> StoreResult<()> {
    let r = match end {
        AttemptEnd::Delivered { status } => conn.execute(
            "UPDATE callback_outbox SET state = 'delivered', attempts = attempts + 1,
                    last_status = ?1, last_error = NULL, delivered_at = ?2, payload = ''
             WHERE id = ?3 AND state = 'pending'",
            params![status, now, id],
        ),
        AttemptEnd::Retry {
            status,
            error,
            not_before,
        } => conn.execute(
            "UPDATE callback_outbox SET attempts = attempts + 1, last_status = ?1,
                    last_error = ?2, not_before = ?3
             WHERE id = ?4 AND state = 'pending'",
            params![status, error, not_before, id],
        ),
        AttemptEnd::Dead {
            status,
            error,
            disable_reason,
        } => conn
            .execute(
                "UPDATE callback_outbox SET state = 'dead', attempts = attempts + 1,
                        last_status = ?1, last_error = ?2
                 WHERE id = ?3 AND state = 'pending'",
                params![status, error, id],
            )
            .and_then(|_| {
                conn.execute(
                    "UPDATE callbacks SET enabled = 0, disabled_reason = ?1
                     WHERE id = (SELECT callback_id FROM callback_outbox WHERE id = ?2)",
                    params![disable_reason, id],
                )
            }),
    };
    r.map(|_| ())
        .map_err(sqlite_err("recording a delivery try"))
}

/// Most delivered rows forgotten in one write, so the writer is never held for long.
const PRUNE_BATCH: i64 = 20_000;

/// A delivered row's `not_before` is its last try, so the due index finds old ones directly.
pub(super) fn prune(conn: &Connection, before: i64) -> StoreResult<u64> {
    conn.prepare_cached(
        "DELETE FROM callback_outbox WHERE id IN (
             SELECT id FROM callback_outbox WHERE state = 'delivered' AND not_before < ?1
             LIMIT ?2)",
    )
    .and_then(|mut st| st.execute(params![before, PRUNE_BATCH]))
    .map(|n| n as u64)
    .map_err(sqlite_err("forgetting old deliveries"))
}

pub(super) fn deliveries(
    conn: &Connection,
    user_id: i64,
    public_id: &str,
    limit: u32,
) -> StoreResult<Option<Vec<DeliveryRow>>> {
    let Some(cb) = find(conn, user_id, public_id)? else {
        return Ok(None);
    };
    let mut st = conn
        .prepare_cached(
            "SELECT webhook_id, state, attempts, last_status, last_error, created_at,
                    delivered_at
             FROM callback_outbox WHERE callback_id = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .map_err(sqlite_err("listing deliveries"))?;
    let rows = st
        .query_map(params![cb.id, limit], |r| {
            Ok(DeliveryRow {
                webhook_id: r.get(0)?,
                state: r.get(1)?,
                attempts: r.get::<_, i64>(2)? as u32,
                last_status: r.get::<_, Option<i64>>(3)?.map(|s| s as u16),
                last_error: r.get(4)?,
                created_at: r.get(5)?,
                delivered_at: r.get(6)?,
            })
        })
        .map_err(sqlite_err("listing deliveries"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(sqlite_err("listing deliveries"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Old delivered rows go; recent ones, pending ones and dead letters stay.
    #[test]
    fn prune_forgets_only_old_deliveries() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        super::super::migrated(&mut conn)?;
        conn.execute_batch(
            "INSERT INTO users (id, email, chat_address, display_name, created_at)
                 VALUES (1, 'a@x', 'ann', 'Ann', 0);
             INSERT INTO callbacks (id, public_id, user_id, url, channels, keywords, secret,
                                    cursor, created_at)
                 VALUES (1, 'cb_1', 1, 'http://x/', '[]', '[]', 'whsec_x', 0, 0);
             INSERT INTO callback_outbox (callback_id, webhook_id, payload, state, not_before,
                                          give_up_at, created_at)
                 VALUES (1, 'old', '', 'delivered', 10, 0, 10),
                        (1, 'new', '', 'delivered', 5000, 0, 5000),
                        (1, 'waiting', 'x', 'pending', 10, 0, 10),
                        (1, 'dead', 'x', 'dead', 10, 0, 10);",
        )?;
        assert_eq!(prune(&conn, 1000)?, 1);
        assert_eq!(prune(&conn, 1000)?, 0);
        let left: Vec<String> = conn
            .prepare("SELECT webhook_id FROM callback_outbox ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        assert_eq!(left, ["new", "waiting", "dead"]);
        Ok(())
    }
}
