//! The PhoneRelay bridge: API keys, external contacts, and the outbox of messages leaving the
//! relay by email or over the bridge (PostgreSQL).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{Pending, RowExt, execute, messages, query, query_one, query_opt};
use crate::relay::store::{
    ApiKeyRecord, ContactRef, MessageStatusRow, NewApiKey, NewMessage, Outbound, OutboundEnd,
    OutboundItem, OutboundState, SentMessage, StoreError, StoreResult, Target,
};

const KEY_COLS: &str = "k.id, k.public_id, k.name, k.user_id, u.chat_address, k.phone_ids, \
     k.created_at, k.revoked_at";

fn key_from_row(r: &Row) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.at(0)?,
        public_id: r.at(1)?,
        name: r.at(2)?,
        user_id: r.at(3)?,
        owner_address: r.at(4)?,
        phone_ids: serde_json::from_str(&r.at::<String>(5)?).unwrap_or_default(),
        created_at: r.at(6)?,
        revoked_at: r.at(7)?,
    })
}

async fn keys_where(
    c: &impl GenericClient,
    filter: &str,
    arg: &(dyn tokio_postgres::types::ToSql + Sync),
) -> StoreResult<Vec<ApiKeyRecord>> {
    let sql = format!(
        "SELECT {KEY_COLS} FROM api_keys k JOIN users u ON u.id = k.user_id
         WHERE {filter} ORDER BY k.id"
    );
    query(c, "reading API keys", &sql, &[arg])
        .await?
        .iter()
        .map(key_from_row)
        .collect()
}

pub(super) async fn create_key(
    c: &impl GenericClient,
    key: &NewApiKey,
) -> StoreResult<ApiKeyRecord> {
    let id: i64 = query_one(
        c,
        "creating an API key",
        "INSERT INTO api_keys (public_id, name, user_id, key_hash, phone_ids, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            &key.public_id,
            &key.name,
            &key.user_id,
            &key.key_hash,
            &serde_json::to_string(&key.phone_ids).unwrap_or_else(|_| "[]".into()),
            &key.now,
        ],
    )
    .await?
    .at(0)?;
    keys_where(c, "k.id = $1", &id)
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound("the new API key is gone".into()))
}

pub(super) async fn all_keys(c: &impl GenericClient) -> StoreResult<Vec<ApiKeyRecord>> {
    keys_where(c, "$1", &true).await
}

pub(super) async fn key_by_hash(
    c: &impl GenericClient,
    hash: &str,
) -> StoreResult<Option<ApiKeyRecord>> {
    Ok(keys_where(c, "k.key_hash = $1", &hash).await?.pop())
}

pub(super) async fn revoke_key(
    c: &impl GenericClient,
    public_id: &str,
    now: i64,
) -> StoreResult<bool> {
    execute(
        c,
        "revoking an API key",
        "UPDATE api_keys SET revoked_at = $1 WHERE public_id = $2 AND revoked_at IS NULL",
        &[&now, &public_id],
    )
    .await
    .map(|n| n > 0)
}

/// The identity row of an external contact, made on first use (see the SQLite backend).
async fn ensure_contact(
    c: &impl GenericClient,
    contact: &ContactRef,
    now: i64,
) -> StoreResult<i64> {
    let number = contact
        .address
        .split_once(':')
        .map_or(contact.address.as_str(), |(_, r)| r);
    let name = contact.name.as_deref().unwrap_or(number);
    execute(
        c,
        "recording an external contact",
        "INSERT INTO users (email, chat_address, display_name, kind, public_visible, created_at)
         VALUES ('external:' || $1, $1, $2, 'human', FALSE, $3) ON CONFLICT DO NOTHING",
        &[&contact.address, &name, &now],
    )
    .await?;
    if let Some(name) = &contact.name {
        execute(
            c,
            "naming an external contact",
            "UPDATE users SET display_name = $1 WHERE chat_address = $2 AND display_name != $1",
            &[name, &contact.address],
        )
        .await?;
    }
    query_one(
        c,
        "reading an external contact",
        "SELECT id FROM users WHERE chat_address = $1",
        &[&contact.address],
    )
    .await?
    .at(0)
}

pub(super) async fn send_outbound(
    c: &impl GenericClient,
    msg: &NewMessage,
    out: &Outbound,
    p: &mut Pending,
) -> StoreResult<SentMessage> {
    ensure_contact(c, &out.contact, msg.created_at).await?;
    let msg = NewMessage {
        target: Target::Address(out.contact.address.clone()),
        ..msg.clone()
    };
    let (sent, rowid) = messages::send(c, &msg, p).await?;
    if sent.duplicate {
        return Ok(sent);
    }
    execute(
        c,
        "queueing an outbound message",
        "INSERT INTO bridge_outbox (message_id, key_id, channel, phone_id, recipient, subject,
                                    payload, not_before, give_up_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8)",
        &[
            &rowid,
            &out.key_id,
            &out.channel,
            &out.phone_id,
            &out.recipient,
            &out.subject,
            &out.payload,
            &msg.created_at,
            &out.give_up_at,
        ],
    )
    .await?;
    Ok(sent)
}

pub(super) async fn receive_inbound(
    c: &impl GenericClient,
    msg: &NewMessage,
    from: &ContactRef,
    p: &mut Pending,
) -> StoreResult<SentMessage> {
    let sender_id = ensure_contact(c, from, msg.created_at).await?;
    let msg = NewMessage {
        sender_id,
        ..msg.clone()
    };
    Ok(messages::send(c, &msg, p).await?.0)
}

pub(super) async fn due(
    c: &impl GenericClient,
    now: i64,
    limit: u32,
) -> StoreResult<Vec<OutboundItem>> {
    let rows = query(
        c,
        "reading due outbound messages",
        "SELECT o.id, m.public_id, o.channel, o.recipient, o.subject, o.payload, o.attempts,
                o.give_up_at
         FROM bridge_outbox o JOIN messages m ON m.id = o.message_id
         WHERE o.state = 'queued' AND o.not_before <= $1
         ORDER BY o.not_before, o.id LIMIT $2",
        &[&now, &(limit as i64)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OutboundItem {
                id: r.at(0)?,
                message_id: r.at(1)?,
                channel: r.at(2)?,
                recipient: r.at(3)?,
                subject: r.at(4)?,
                payload: r.at(5)?,
                attempts: r.at::<i64>(6)?.clamp(0, u32::MAX as i64) as u32,
                give_up_at: r.at(7)?,
            })
        })
        .collect()
}

pub(super) async fn next_due(c: &impl GenericClient) -> StoreResult<Option<i64>> {
    query_one(
        c,
        "reading the next outbound message",
        "SELECT MIN(not_before) FROM bridge_outbox WHERE state = 'queued'",
        &[],
    )
    .await?
    .at(0)
}

pub(super) async fn end(
    c: &impl GenericClient,
    id: i64,
    end: &OutboundEnd,
    now: i64,
) -> StoreResult<()> {
    let action = "recording an outbound try";
    match end {
        OutboundEnd::Sent => {
            execute(
                c,
                action,
                "UPDATE bridge_outbox SET state = 'sent', attempts = attempts + 1,
                        last_error = NULL, sent_at = $1
                 WHERE id = $2 AND state = 'queued'",
                &[&now, &id],
            )
            .await?
        }
        OutboundEnd::Retry { error, not_before } => {
            execute(
                c,
                action,
                "UPDATE bridge_outbox SET attempts = attempts + 1, last_error = $1, not_before = $2
                 WHERE id = $3 AND state = 'queued'",
                &[error, not_before, &id],
            )
            .await?
        }
        OutboundEnd::Failed { error } => {
            execute(
                c,
                action,
                "UPDATE bridge_outbox SET state = 'failed', attempts = attempts + 1,
                        last_error = $1
                 WHERE id = $2 AND state = 'queued'",
                &[error, &id],
            )
            .await?
        }
    };
    Ok(())
}

pub(super) async fn status(
    c: &impl GenericClient,
    sender_id: i64,
    public_id: &str,
) -> StoreResult<Option<MessageStatusRow>> {
    query_opt(
        c,
        "reading a message's status",
        "SELECT m.to_target, m.created_at, o.channel, o.recipient, o.state, o.last_error,
                o.attempts, o.sent_at
         FROM messages m LEFT JOIN bridge_outbox o ON o.message_id = m.id
         WHERE m.public_id = $1 AND m.sender_id = $2",
        &[&public_id, &sender_id],
    )
    .await?
    .map(|r| {
        let channel: Option<String> = r.at(2)?;
        Ok(MessageStatusRow {
            to_target: r.at(0)?,
            created_at: r.at(1)?,
            outbound: match channel {
                Some(channel) => Some(OutboundState {
                    channel,
                    recipient: r.at(3)?,
                    state: r.at(4)?,
                    last_error: r.at(5)?,
                    attempts: r.at::<i64>(6)?.clamp(0, u32::MAX as i64) as u32,
                    sent_at: r.at(7)?,
                }),
                None => None,
            },
        })
    })
    .transpose()
}
