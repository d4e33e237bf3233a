//! The PhoneRelay bridge: API keys, external contacts, and the outbox of messages leaving the
//! relay by email or over the bridge.

use rusqlite::{Connection, OptionalExtension, params};

use super::{WriterState, messages, sqlite_err};
use crate::relay::store::{
    ApiKeyRecord, ContactRef, MessageStatusRow, NewApiKey, NewMessage, Outbound, OutboundEnd,
    OutboundItem, OutboundState, SentMessage, StoreError, StoreResult, Target,
};

const KEY_COLS: &str = "k.id, k.public_id, k.name, k.user_id, u.chat_address, k.phone_ids, \
     k.created_at, k.revoked_at";

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        public_id: r.get(1)?,
        name: r.get(2)?,
        user_id: r.get(3)?,
        owner_address: r.get(4)?,
        phone_ids: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
        created_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

pub(super) fn create_key(conn: &Connection, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
    conn.execute(
        "INSERT INTO api_keys (public_id, name, user_id, key_hash, phone_ids, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key.public_id,
            key.name,
            key.user_id,
            key.key_hash,
            serde_json::to_string(&key.phone_ids).unwrap_or_else(|_| "[]".into()),
            key.now
        ],
    )
    .map_err(sqlite_err("creating an API key"))?;
    keys_where(conn, "k.id = ?1", conn.last_insert_rowid())?
        .pop()
        .ok_or_else(|| StoreError::NotFound("the new API key is gone".into()))
}

fn keys_where(
    conn: &Connection,
    filter: &str,
    arg: impl rusqlite::ToSql,
) -> StoreResult<Vec<ApiKeyRecord>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {KEY_COLS} FROM api_keys k JOIN users u ON u.id = k.user_id
             WHERE {filter} ORDER BY k.id"
        ))
        .map_err(sqlite_err("reading API keys"))?;
    let rows = st
        .query_map([arg], key_from_row)
        .map_err(sqlite_err("reading API keys"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sqlite_err("reading API keys"))
}

pub(super) fn all_keys(conn: &Connection) -> StoreResult<Vec<ApiKeyRecord>> {
    keys_where(conn, "?1", 1)
}

pub(super) fn key_by_hash(conn: &Connection, hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
    Ok(keys_where(conn, "k.key_hash = ?1", hash)?.pop())
}

pub(super) fn revoke_key(conn: &Connection, public_id: &str, now: i64) -> StoreResult<bool> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = ?1 WHERE public_id = ?2 AND revoked_at IS NULL",
        params![now, public_id],
    )
    .map(|n| n > 0)
    .map_err(sqlite_err("revoking an API key"))
}

/// The identity row of an external contact, made on first use. Its email holds no `@`, so no
/// login code can ever be asked for it, and it is never listed in the directory.
fn ensure_contact(conn: &Connection, c: &ContactRef, now: i64) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO users (email, chat_address, display_name, kind, public_visible,
                                      created_at)
         VALUES ('external:' || ?1, ?1, ?2, 'human', 0, ?3)",
    )
    .and_then(|mut st| {
        let number = c
            .address
            .split_once(':')
            .map_or(c.address.as_str(), |(_, r)| r);
        st.execute(params![c.address, c.name.as_deref().unwrap_or(number), now])
    })
    .map_err(sqlite_err("recording an external contact"))?;
    if let Some(name) = &c.name {
        conn.prepare_cached(
            "UPDATE users SET display_name = ?1 WHERE chat_address = ?2 AND display_name != ?1",
        )
        .and_then(|mut st| st.execute(params![name, c.address]))
        .map_err(sqlite_err("naming an external contact"))?;
    }
    conn.prepare_cached("SELECT id FROM users WHERE chat_address = ?1")
        .and_then(|mut st| st.query_row([&c.address], |r| r.get(0)))
        .map_err(sqlite_err("reading an external contact"))
}

pub(super) fn send_outbound(
    conn: &Connection,
    msg: &NewMessage,
    out: &Outbound,
    shared: &mut WriterState,
) -> StoreResult<SentMessage> {
    ensure_contact(conn, &out.contact, msg.created_at)?;
    let msg = NewMessage {
        target: Target::Address(out.contact.address.clone()),
        ..msg.clone()
    };
    let sent = messages::send(conn, &msg, shared)?;
    if sent.duplicate {
        return Ok(sent);
    }
    conn.prepare_cached(
        "INSERT INTO bridge_outbox (message_id, key_id, channel, phone_id, recipient, subject,
                                    payload, not_before, give_up_at, created_at)
         VALUES ((SELECT id FROM messages WHERE public_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                 ?8)",
    )
    .and_then(|mut st| {
        st.execute(params![
            sent.public_id,
            out.key_id,
            out.channel,
            out.phone_id,
            out.recipient,
            out.subject,
            out.payload,
            msg.created_at,
            out.give_up_at
        ])
    })
    .map_err(sqlite_err("queueing an outbound message"))?;
    Ok(sent)
}

pub(super) fn receive_inbound(
    conn: &Connection,
    msg: &NewMessage,
    from: &ContactRef,
    shared: &mut WriterState,
) -> StoreResult<SentMessage> {
    let sender_id = ensure_contact(conn, from, msg.created_at)?;
    let msg = NewMessage {
        sender_id,
        ..msg.clone()
    };
    messages::send(conn, &msg, shared)
}

pub(super) fn due(conn: &Connection, now: i64, limit: u32) -> StoreResult<Vec<OutboundItem>> {
    let mut st = conn
        .prepare_cached(
            "SELECT o.id, m.public_id, o.channel, o.recipient, o.subject, o.payload, o.attempts,
                    o.give_up_at
             FROM bridge_outbox o JOIN messages m ON m.id = o.message_id
             WHERE o.state = 'queued' AND o.not_before <= ?1
             ORDER BY o.not_before, o.id LIMIT ?2",
        )
        .map_err(sqlite_err("reading due outbound messages"))?;
    let rows = st
        .query_map(params![now, limit], |r| {
            Ok(OutboundItem {
                id: r.get(0)?,
                message_id: r.get(1)?,
                channel: r.get(2)?,
                recipient: r.get(3)?,
                subject: r.get(4)?,
                payload: r.get(5)?,
                attempts: r.get::<_, i64>(6)? as u32,
                give_up_at: r.get(7)?,
            })
        })
        .map_err(sqlite_err("reading due outbound messages"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sqlite_err("reading due outbound messages"))
}

pub(super) fn next_due(conn: &Connection) -> StoreResult<Option<i64>> {
    conn.prepare_cached("SELECT MIN(not_before) FROM bridge_outbox WHERE state = 'queued'")
        .and_then(|mut st| st.query_row([], |r| r.get::<_, Option<i64>>(0)))
        .map_err(sqlite_err("reading the next outbound message"))
}

pub(super) fn end(conn: &Connection, id: i64, end: &OutboundEnd, now: i64) -> StoreResult<()> {
    let r = match end {
        OutboundEnd::Sent => conn.execute(
            "UPDATE bridge_outbox SET state = 'sent', attempts = attempts + 1, last_error = NULL,
                    sent_at = ?1
             WHERE id = ?2 AND state = 'queued'",
            params![now, id],
        ),
        OutboundEnd::Retry { error, not_before } => conn.execute(
            "UPDATE bridge_outbox SET attempts = attempts + 1, last_error = ?1, not_before = ?2
             WHERE id = ?3 AND state = 'queued'",
            params![error, not_before, id],
        ),
        OutboundEnd::Failed { error } => conn.execute(
            "UPDATE bridge_outbox SET state = 'failed', attempts = attempts + 1, last_error = ?1
             WHERE id = ?2 AND state = 'queued'",
            params![error, id],
        ),
    };
    r.map(|_| ())
        .map_err(sqlite_err("recording an outbound try"))
}

pub(super) fn status(
    conn: &Connection,
    sender_id: i64,
    public_id: &str,
) -> StoreResult<Option<MessageStatusRow>> {
    conn.prepare_cached(
        "SELECT m.to_target, m.created_at, o.channel, o.recipient, o.state, o.last_error,
                o.attempts, o.sent_at
         FROM messages m LEFT JOIN bridge_outbox o ON o.message_id = m.id
         WHERE m.public_id = ?1 AND m.sender_id = ?2",
    )
    .and_then(|mut st| {
        st.query_row(params![public_id, sender_id], |r| {
            let channel: Option<String> = r.get(2)?;
            Ok(MessageStatusRow {
                to_target: r.get(0)?,
                created_at: r.get(1)?,
                outbound: match channel {
                    Some(channel) => Some(OutboundState {
                        channel,
                        recipient: r.get(3)?,
                        state: r.get(4)?,
                        last_error: r.get(5)?,
                        attempts: r.get::<_, i64>(6)? as u32,
                        sent_at: r.get(7)?,
                    }),
                    None => None,
                },
            })
        })
        .optional()
    })
    .map_err(sqlite_err("reading a message's status"))
}
