//! Messages and each receiver's stream: send (with group fan-out), poll, edits, deletions,
//! read receipts, claim cursors and conversation history (PostgreSQL).

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{
    Pending, RowExt, execute, files, groups, identity, query, query_one, query_opt, voice,
};
use crate::api::files::{attachment_kind, file_url};
use crate::api::messages::{
    Attachment, AttachmentRef, Caption, ConversationSummary, EventType, Message,
};
use crate::api::{Kind, rfc3339_from_millis};
use crate::relay::store::{Conversation, NewMessage, SentMessage, StoreError, StoreResult, Target};

async fn resolve_attachments(
    c: &impl GenericClient,
    wanted: &[AttachmentRef],
) -> StoreResult<Vec<Attachment>> {
    let mut out = Vec::with_capacity(wanted.len());
    for a in wanted {
        let f = files::file(c, &a.file_id).await?.ok_or_else(|| {
            StoreError::InvalidAttachment(format!(
                "no uploaded file has the id {:?}; upload it with /api/v1/webchat/upload first",
                a.file_id
            ))
        })?;
        let kind = match a.kind.as_deref().map(str::trim) {
            Some(k) if !k.is_empty() && k != f.kind => attachment_kind(&f.mime, k).to_string(),
            _ => f.kind,
        };
        out.push(Attachment {
            url: file_url(&f.public_id),
            file_id: f.public_id,
            name: f.name,
            mime: f.mime,
            size: f.size,
            kind,
            sha256: f.sha256,
        });
    }
    Ok(out)
}

async fn sent_before(
    c: &impl GenericClient,
    sender_id: i64,
    client_id: &str,
) -> StoreResult<Option<SentMessage>> {
    query_opt(
        c,
        "looking up a client message id",
        "SELECT public_id, created_at FROM messages WHERE sender_id = $1 AND client_id = $2",
        &[&sender_id, &client_id],
    )
    .await?
    .map(|r| {
        Ok(SentMessage {
            public_id: r.at(0)?,
            created_at: r.at(1)?,
            recipients: 0,
            duplicate: true,
            enrich: false,
        })
    })
    .transpose()
}

/// The event receivers get for a message just stored; `from`: the sender's address, name
/// and kind.
pub(super) fn new_event(
    msg: &NewMessage,
    from: (String, String, Kind),
    to: String,
    group_id: Option<String>,
    attachments: Vec<Attachment>,
) -> Arc<Message> {
    let (from, from_name, from_kind) = from;
    let channel = crate::api::bridge::channel_of(&to)
        .or_else(|| crate::api::bridge::channel_of(&from))
        .map(str::to_string);
    Arc::new(Message {
        cursor: String::new(),
        event_type: EventType::Message,
        message_id: msg.public_id.clone(),
        from,
        from_name,
        from_kind,
        to,
        text: msg.text.clone(),
        created_at: rfc3339_from_millis(msg.created_at),
        reply_to: msg.reply_to.clone(),
        group_id,
        attachments,
        edited_at: None,
        deleted: false,
        read: false,
        caption: None,
        channel,
    })
}

/// The message a send whose client id was stored before returns (it stores nothing).
pub(super) async fn first_send(
    c: &impl GenericClient,
    msg: &NewMessage,
) -> StoreResult<SentMessage> {
    let client_id = msg.client_id.as_deref().unwrap_or_default();
    sent_before(c, msg.sender_id, client_id)
        .await?
        .ok_or_else(|| {
            StoreError::Conflict("a send with this client id is still being stored".into())
        })
}

/// The key of a direct conversation, the same from either side.
pub(super) fn dm_conv(a: i64, b: i64) -> i64 {
    (a.min(b) << 32) | a.max(b)
}

fn group_conv(group_rowid: i64) -> i64 {
    -group_rowid
}

/// Records both directions, the lower id's row first: two first messages crossing (a to b and
/// b to a at once) then wait on the same row instead of deadlocking.
async fn remember_peers(c: &impl GenericClient, a: i64, b: i64) -> StoreResult<()> {
    let (lo, hi) = (a.min(b), a.max(b));
    execute(
        c,
        "recording a conversation",
        "INSERT INTO dm_peers (user_id, peer_id) VALUES ($1, $2), ($2, $1) ON CONFLICT DO NOTHING",
        &[&lo, &hi],
    )
    .await
    .map(drop)
}

/// Stores a message; the sender id's identity must exist. Its deliveries are queued in `p`.
pub(super) async fn send(
    c: &impl GenericClient,
    msg: &NewMessage,
    p: &mut Pending,
) -> StoreResult<(SentMessage, i64)> {
    if let Some(client_id) = &msg.client_id
        && let Some(first) = sent_before(c, msg.sender_id, client_id).await?
    {
        return Ok((first, 0));
    }
    let (to_target, group_id, recipients, conv, peer) = match &msg.target {
        Target::Address(address) => {
            let Some(user) = identity::user_by_address(c, address).await? else {
                return Err(StoreError::UnknownRecipient(address.clone()));
            };
            (
                address.clone(),
                None::<String>,
                vec![user.id],
                dm_conv(msg.sender_id, user.id),
                Some(user.id),
            )
        }
        Target::Group(public_id) => {
            let g = groups::lookup(c, public_id)
                .await?
                .ok_or_else(|| StoreError::UnknownRecipient(format!("group:{public_id}")))?;
            match groups::role(c, g.rowid, msg.sender_id).await? {
                None => {
                    return Err(StoreError::NotMember(format!(
                        "you are not a member of group:{public_id}; join it first"
                    )));
                }
                Some(role) if g.mode == "stream" && role != "admin" => {
                    return Err(StoreError::StreamReadOnly);
                }
                Some(_) => {}
            }
            let members = groups::member_ids(c, g.rowid)
                .await?
                .into_iter()
                .filter(|id| *id != msg.sender_id)
                .collect();
            (
                format!("group:{public_id}"),
                Some(public_id.clone()),
                members,
                group_conv(g.rowid),
                None,
            )
        }
    };
    let attachments = resolve_attachments(c, &msg.attachments).await?;
    let attachments_json = if attachments.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&attachments)
                .map_err(|e| StoreError::InvalidAttachment(e.to_string()))?,
        )
    };
    if let Some(peer) = peer {
        remember_peers(c, msg.sender_id, peer).await?;
    }
    // A retried send racing its first try on another relay: the unique client id index
    // lets one in and the other reads the first.
    let row = query_opt(
        c,
        "storing a message",
        "INSERT INTO messages (public_id, sender_id, to_target, group_id, text, reply_to,
                               attachments, created_at, conv, client_id, language)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
         RETURNING id",
        &[
            &msg.public_id,
            &msg.sender_id,
            &to_target,
            &group_id,
            &msg.text,
            &msg.reply_to,
            &attachments_json,
            &msg.created_at,
            &conv,
            &msg.client_id,
            &msg.language,
        ],
    )
    .await?;
    let Some(row) = row else {
        let client_id = msg.client_id.as_deref().unwrap_or_default();
        let first = sent_before(c, msg.sender_id, client_id)
            .await?
            .ok_or_else(|| {
                StoreError::Conflict("a send with this client id is still being stored".into())
            })?;
        return Ok((first, 0));
    };
    let rowid: i64 = row.at(0)?;
    for a in &attachments {
        execute(
            c,
            "recording a message's files",
            "INSERT INTO message_files (message_id, file_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&rowid, &a.file_id],
        )
        .await?;
    }
    let voice_clip = attachments.iter().any(|a| a.kind == "voice");
    let enrich = voice_clip || (!msg.text.trim().is_empty() && voice::languages_in_use(c).await?);
    if enrich {
        voice::queue_job(c, rowid, voice_clip, msg.created_at).await?;
    }
    let sender = query_one(
        c,
        "reading the sender",
        "SELECT chat_address, display_name, kind FROM users WHERE id = $1",
        &[&msg.sender_id],
    )
    .await?;
    let (from, from_name, from_kind): (String, String, String) =
        (sender.at(0)?, sender.at(1)?, sender.at(2)?);
    let from = (from, from_name, Kind::parse(&from_kind).unwrap_or_default());
    let event = new_event(msg, from, to_target.clone(), group_id, attachments);
    for user_id in &recipients {
        p.deliver(*user_id, rowid, None, Some(event.clone()));
    }
    Ok((
        SentMessage {
            public_id: msg.public_id.clone(),
            created_at: msg.created_at,
            recipients: recipients.len(),
            duplicate: false,
            enrich,
        },
        rowid,
    ))
}

const MESSAGE_COLS: &str = "
       m.public_id, m.to_target, m.group_id, m.text, m.reply_to, m.attachments, m.created_at, m.deleted_at,
       su.chat_address, su.display_name, su.kind,
       e.kind, e.text, e.created_at,
       au.chat_address, au.display_name, au.kind,
       m.edited_at,
       EXISTS (SELECT 1 FROM reads rd WHERE rd.message_id = m.id),
       e.data";

const HISTORY_CAPTION: &str = "(SELECT c.data FROM captions c WHERE c.message_id = m.id
        AND c.user_id IN ($4, 0) ORDER BY c.user_id DESC LIMIT 1)";

fn message_from_row(row: &Row) -> StoreResult<Message> {
    let seq: i64 = row.at(0)?;
    let deleted_at: Option<i64> = row.at(8)?;
    let attachments: Option<String> = row.at(6)?;
    let attachments: Vec<Attachment> = match (deleted_at, attachments) {
        (None, Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
        _ => Vec::new(),
    };
    let event_kind: Option<String> = row.at(12)?;
    let event_type = event_kind
        .as_deref()
        .and_then(EventType::parse)
        .unwrap_or(EventType::Message);
    let edited_at: Option<i64> = row.at(18)?;
    let (from, from_name, from_kind, text, created_at): (String, String, String, String, i64) =
        match event_type {
            EventType::Message => (
                row.at(9)?,
                row.at(10)?,
                row.at(11)?,
                if deleted_at.is_some() {
                    String::new()
                } else {
                    row.at(4)?
                },
                row.at(7)?,
            ),
            _ => (
                row.at(15)?,
                row.at(16)?,
                row.at(17)?,
                if matches!(event_type, EventType::Edit | EventType::Caption)
                    && deleted_at.is_none()
                {
                    row.at::<Option<String>>(13)?.unwrap_or_default()
                } else {
                    String::new()
                },
                row.at(14)?,
            ),
        };
    let is_message = event_type == EventType::Message;
    let to: String = row.at(2)?;
    let channel = crate::api::bridge::channel_of(&to)
        .or_else(|| crate::api::bridge::channel_of(&from))
        .map(str::to_string);
    let caption = if deleted_at.is_some() {
        None
    } else {
        let data: Option<String> = match event_type {
            EventType::Caption => row.at(20)?,
            EventType::Message => row.at(21)?,
            _ => None,
        };
        data.and_then(|d| serde_json::from_str::<Caption>(&d).ok())
    };
    Ok(Message {
        cursor: seq.to_string(),
        event_type,
        message_id: row.at(1)?,
        from,
        from_name,
        from_kind: Kind::parse(&from_kind).unwrap_or_default(),
        to,
        text,
        created_at: rfc3339_from_millis(created_at),
        reply_to: if is_message { row.at(5)? } else { None },
        group_id: row.at(3)?,
        attachments: if is_message { attachments } else { Vec::new() },
        edited_at: if is_message {
            edited_at.map(rfc3339_from_millis)
        } else {
            None
        },
        deleted: is_message && deleted_at.is_some(),
        read: is_message && row.at::<bool>(19)?,
        caption,
        channel,
    })
}

pub(super) async fn poll(
    c: &impl GenericClient,
    user_id: i64,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let sql = format!(
        "SELECT d.seq, {MESSAGE_COLS}, NULL::text
         FROM deliveries d
         JOIN messages m ON m.id = d.message_id
         JOIN users su ON su.id = m.sender_id
         LEFT JOIN events e ON e.id = d.event_id
         LEFT JOIN users au ON au.id = e.actor_id
         WHERE d.user_id = $1 AND d.seq > $2
         ORDER BY d.seq
         LIMIT $3"
    );
    query(
        c,
        "reading a stream",
        &sql,
        &[&user_id, &(after as i64), &(limit as i64)],
    )
    .await?
    .iter()
    .map(message_from_row)
    .collect()
}

pub(super) async fn stream_head(c: &impl GenericClient, user_id: i64) -> StoreResult<u64> {
    let head: Option<i64> = query_opt(
        c,
        "reading a stream head",
        "SELECT head FROM stream_heads WHERE user_id = $1",
        &[&user_id],
    )
    .await?
    .map(|r| r.at(0))
    .transpose()?;
    Ok(head.unwrap_or(0).max(0) as u64)
}

pub(super) async fn session_cursor(c: &impl GenericClient, session_id: i64) -> StoreResult<u64> {
    let cursor: Option<i64> = query_opt(
        c,
        "reading a claim cursor",
        "SELECT cursor FROM sessions WHERE id = $1",
        &[&session_id],
    )
    .await?
    .map(|r| r.at(0))
    .transpose()?;
    Ok(cursor.unwrap_or(0).max(0) as u64)
}

pub(super) async fn advance_session_cursor(
    c: &impl GenericClient,
    session_id: i64,
    from: u64,
    to: u64,
) -> StoreResult<bool> {
    let n = execute(
        c,
        "advancing a claim cursor",
        "UPDATE sessions SET cursor = $1 WHERE id = $2 AND cursor = $3",
        &[&(to as i64), &session_id, &(from as i64)],
    )
    .await?;
    Ok(n == 1)
}

pub(super) async fn ack_session_cursor(
    c: &impl GenericClient,
    session_id: i64,
    to: u64,
) -> StoreResult<u64> {
    let cursor: Option<i64> = query_opt(
        c,
        "acknowledging a cursor",
        "UPDATE sessions SET cursor = GREATEST(cursor, $1) WHERE id = $2 RETURNING cursor",
        &[&(to as i64), &session_id],
    )
    .await?
    .map(|r| r.at(0))
    .transpose()?;
    Ok(cursor.unwrap_or(0).max(0) as u64)
}

struct Stored {
    rowid: i64,
    sender_id: i64,
    group_id: Option<String>,
    deleted: bool,
}

/// The message, locked: edits, deletions and reads of one message serialize across relays.
async fn stored(c: &impl GenericClient, public_id: &str) -> StoreResult<Stored> {
    query_opt(
        c,
        "looking up a message",
        "SELECT id, sender_id, group_id, deleted_at IS NOT NULL FROM messages
         WHERE public_id = $1 FOR UPDATE",
        &[&public_id],
    )
    .await?
    .map(|r| -> StoreResult<Stored> {
        Ok(Stored {
            rowid: r.at(0)?,
            sender_id: r.at(1)?,
            group_id: r.at(2)?,
            deleted: r.at(3)?,
        })
    })
    .transpose()?
    .ok_or_else(|| StoreError::NotFound(format!("no message has the id {public_id:?}")))
}

async fn receivers(c: &impl GenericClient, rowid: i64) -> StoreResult<Vec<i64>> {
    query(
        c,
        "finding a message's receivers",
        "SELECT DISTINCT user_id FROM deliveries WHERE message_id = $1 AND event_id IS NULL",
        &[&rowid],
    )
    .await?
    .iter()
    .map(|r| r.at(0))
    .collect()
}

async fn add_event(
    c: &impl GenericClient,
    kind: &str,
    rowid: i64,
    actor: i64,
    text: Option<&str>,
    now: i64,
) -> StoreResult<i64> {
    query_one(
        c,
        "recording an event",
        "INSERT INTO events (kind, message_id, actor_id, text, created_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
        &[&kind, &rowid, &actor, &text, &now],
    )
    .await?
    .at(0)
}

pub(super) async fn edit(
    c: &impl GenericClient,
    actor: i64,
    public_id: &str,
    text: &str,
    now: i64,
    p: &mut Pending,
) -> StoreResult<()> {
    let m = stored(c, public_id).await?;
    if m.sender_id != actor {
        return Err(StoreError::Forbidden(
            "only the author can edit a message".into(),
        ));
    }
    if m.deleted {
        return Err(StoreError::Conflict(
            "that message was deleted; it cannot be edited".into(),
        ));
    }
    execute(
        c,
        "editing a message",
        "UPDATE messages SET text = $1, edited_at = $2 WHERE id = $3",
        &[&text, &now, &m.rowid],
    )
    .await?;
    let event = add_event(c, "edit", m.rowid, actor, Some(text), now).await?;
    for user in receivers(c, m.rowid).await? {
        p.deliver(user, m.rowid, Some(event), None);
    }
    Ok(())
}

pub(super) async fn delete(
    c: &impl GenericClient,
    actor: i64,
    public_id: &str,
    now: i64,
    p: &mut Pending,
) -> StoreResult<Vec<String>> {
    let m = stored(c, public_id).await?;
    let group_admin = match &m.group_id {
        Some(g) => match groups::lookup(c, g).await? {
            Some(info) => groups::role(c, info.rowid, actor).await?.as_deref() == Some("admin"),
            None => false,
        },
        None => false,
    };
    if m.sender_id != actor && !group_admin {
        return Err(StoreError::Forbidden(
            "only the author (or an admin of its group) can delete a message".into(),
        ));
    }
    if m.deleted {
        return Ok(Vec::new());
    }
    execute(
        c,
        "deleting a message",
        "UPDATE messages SET deleted_at = $1, text = '', attachments = NULL WHERE id = $2",
        &[&now, &m.rowid],
    )
    .await?;
    let event = add_event(c, "delete", m.rowid, actor, None, now).await?;
    let mut told = receivers(c, m.rowid).await?;
    if actor != m.sender_id {
        told.push(m.sender_id);
    }
    for user in told {
        p.deliver(user, m.rowid, Some(event), None);
    }
    release_files(c, m.rowid).await
}

async fn release_files(c: &impl GenericClient, rowid: i64) -> StoreResult<Vec<String>> {
    let linked: Vec<String> = query(
        c,
        "unlinking a message's files",
        "DELETE FROM message_files WHERE message_id = $1 RETURNING file_id",
        &[&rowid],
    )
    .await?
    .iter()
    .map(|r| r.at(0))
    .collect::<StoreResult<_>>()?;
    let mut orphaned = Vec::new();
    for file_id in linked {
        let still_used: bool = query_one(
            c,
            "checking a file's other messages",
            "SELECT EXISTS (SELECT 1 FROM message_files WHERE file_id = $1)",
            &[&file_id],
        )
        .await?
        .at(0)?;
        if !still_used {
            execute(
                c,
                "removing a file record",
                "DELETE FROM files WHERE public_id = $1",
                &[&file_id],
            )
            .await?;
            orphaned.push(file_id);
        }
    }
    Ok(orphaned)
}

pub(super) async fn mark_read(
    c: &impl GenericClient,
    reader: i64,
    public_id: &str,
    now: i64,
    p: &mut Pending,
) -> StoreResult<()> {
    let m = stored(c, public_id).await?;
    if m.sender_id == reader {
        return Ok(());
    }
    if !receivers(c, m.rowid).await?.contains(&reader) {
        return Err(StoreError::Forbidden(
            "you did not receive that message".into(),
        ));
    }
    let fresh = execute(
        c,
        "recording a read",
        "INSERT INTO reads (message_id, user_id, read_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&m.rowid, &reader, &now],
    )
    .await?;
    if fresh == 1 && !m.deleted {
        let event = add_event(c, "read", m.rowid, reader, None, now).await?;
        p.deliver(m.sender_id, m.rowid, Some(event), None);
    }
    Ok(())
}

pub(super) async fn history(
    c: &impl GenericClient,
    user_id: i64,
    with: &Conversation,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<(i64, Message)>> {
    let sql = format!(
        "SELECT m.id, {MESSAGE_COLS}, {HISTORY_CAPTION}
         FROM messages m
         JOIN users su ON su.id = m.sender_id
         LEFT JOIN events e ON FALSE
         LEFT JOIN users au ON FALSE
         WHERE m.conv = $1 AND m.id < $2 ORDER BY m.id DESC LIMIT $3"
    );
    let before = before.unwrap_or(i64::MAX);
    let conv = match with {
        Conversation::With(address) => {
            let other = identity::user_by_address(c, address)
                .await?
                .ok_or_else(|| StoreError::UnknownRecipient(address.clone()))?;
            dm_conv(user_id, other.id)
        }
        Conversation::Group(public_id) => {
            let g = groups::lookup(c, public_id).await?.ok_or_else(|| {
                StoreError::NotFound(format!("no group has the id {public_id:?}"))
            })?;
            if groups::role(c, g.rowid, user_id).await?.is_none() {
                return Err(StoreError::NotMember(format!(
                    "you are not a member of group:{public_id}"
                )));
            }
            group_conv(g.rowid)
        }
    };
    let mut rows = query(
        c,
        "reading a conversation",
        &sql,
        &[&conv, &before, &(limit as i64), &user_id],
    )
    .await?
    .iter()
    .map(|r| Ok((r.at(0)?, message_from_row(r)?)))
    .collect::<StoreResult<Vec<(i64, Message)>>>()?;
    rows.reverse();
    Ok(rows)
}

async fn message_by_rowid(c: &impl GenericClient, rowid: i64) -> StoreResult<Option<Message>> {
    let sql = format!(
        "SELECT m.id, {MESSAGE_COLS}, NULL::text
         FROM messages m
         JOIN users su ON su.id = m.sender_id
         LEFT JOIN events e ON FALSE
         LEFT JOIN users au ON FALSE
         WHERE m.id = $1"
    );
    query_opt(c, "reading a message", &sql, &[&rowid])
        .await?
        .map(|r| message_from_row(&r))
        .transpose()
}

pub(super) async fn conversations(
    c: &impl GenericClient,
    user_id: i64,
) -> StoreResult<Vec<ConversationSummary>> {
    let rows = query(
        c,
        "listing conversations",
        "WITH peers AS (
             SELECT u.chat_address AS peer,
                    (LEAST($1, p.peer_id) << 32) | GREATEST($1, p.peer_id) AS conv
             FROM dm_peers p JOIN users u ON u.id = p.peer_id
             WHERE p.user_id = $1
             UNION
             SELECT 'group:' || g.public_id, -g.id
             FROM group_members gm JOIN groups g ON g.id = gm.group_id
             WHERE gm.user_id = $1
             UNION
             SELECT m.to_target, m.conv
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.user_id = $1 AND d.event_id IS NULL AND m.group_id IS NOT NULL
         ),
         unread AS (
             SELECT CASE WHEN m.group_id IS NOT NULL THEN m.to_target ELSE su.chat_address END AS peer,
                    COUNT(*) AS n
             FROM deliveries d
             JOIN messages m ON m.id = d.message_id
             JOIN users su ON su.id = m.sender_id
             LEFT JOIN reads r ON r.message_id = m.id AND r.user_id = $1
             WHERE d.user_id = $1 AND d.event_id IS NULL AND r.message_id IS NULL
               AND m.deleted_at IS NULL
             GROUP BY 1
         ),
         latest AS (
             SELECT p.peer, (SELECT MAX(m.id) FROM messages m WHERE m.conv = p.conv) AS last,
                    COALESCE(u.n, 0) AS unread
             FROM peers p LEFT JOIN unread u ON u.peer = p.peer
         )
         SELECT peer, last, unread FROM latest ORDER BY last IS NULL, last DESC, peer",
        &[&user_id],
    )
    .await?;
    let mut out = Vec::new();
    let mut with_messages = 0;
    for r in rows {
        let peer: String = r.at(0)?;
        let last_id: Option<i64> = r.at(1)?;
        let unread: i64 = r.at(2)?;
        let unread = unread.clamp(0, u32::MAX as i64) as u32;
        if last_id.is_some() {
            with_messages += 1;
            if with_messages > 200 {
                continue;
            }
        }
        let last = match last_id {
            Some(id) => message_by_rowid(c, id).await?,
            None => None,
        };
        let summary = match crate::api::address::group_target(&peer) {
            Some(gid) => {
                let Some(info) = groups::summary(c, user_id, gid).await? else {
                    continue;
                };
                ConversationSummary {
                    last_message: last,
                    unread,
                    ..info
                }
            }
            None => {
                let Some(user) = identity::user_by_address(c, &peer).await? else {
                    continue;
                };
                ConversationSummary {
                    with: peer.clone(),
                    conversation_type: "direct".into(),
                    display_name: user.display_name,
                    kind: Some(user.kind),
                    mode: None,
                    can_post: true,
                    last_message: last,
                    unread,
                }
            }
        };
        out.push(summary);
    }
    Ok(out)
}
