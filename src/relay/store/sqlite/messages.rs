//! Messages and each receiver's stream: send (with group fan-out), poll, edits, deletions,
//! read receipts, claim cursors and conversation history.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::{WriterState, files, groups, identity, sqlite_err, voice};
use crate::api::files::attachment_kind;
use crate::api::files::file_url;
use crate::api::messages::{
    Attachment, AttachmentRef, Caption, ConversationSummary, EventType, Message,
};
use crate::api::{Kind, rfc3339_from_millis};
use crate::relay::store::{Conversation, NewMessage, SentMessage, StoreError, StoreResult, Target};

/// Appends one event to a receiver's stream and records the wakeup (with the event itself when
/// the caller has it, so a caught-up poller need not read it back).
pub(super) fn deliver(
    conn: &Connection,
    user_id: i64,
    message_rowid: i64,
    event_id: Option<i64>,
    event: Option<&Arc<Message>>,
    shared: &mut WriterState,
) -> StoreResult<u64> {
    let seq = match shared.seqs.get(&user_id) {
        Some(s) => s + 1,
        None => stream_head(conn, user_id)? + 1,
    };
    conn.prepare_cached(
        "INSERT INTO deliveries (user_id, seq, message_id, event_id) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut st| st.execute(params![user_id, seq as i64, message_rowid, event_id]))
    .map_err(sqlite_err("recording a delivery"))?;
    shared.seqs.insert(user_id, seq);
    shared.wakes.push((user_id, seq, event.cloned()));
    Ok(seq)
}

/// The stored metadata for attachments named by file id. The kind a sender asks for is taken
/// only where it fits the file's type (see `attachment_kind`).
fn resolve_attachments(
    conn: &Connection,
    wanted: &[AttachmentRef],
) -> StoreResult<Vec<Attachment>> {
    wanted
        .iter()
        .map(|a| {
            let f = files::file(conn, &a.file_id)?.ok_or_else(|| {
                StoreError::InvalidAttachment(format!(
                    "no uploaded file has the id {:?}; upload it with /api/v1/webchat/upload first",
                    a.file_id
                ))
            })?;
            let kind = match a.kind.as_deref().map(str::trim) {
                Some(k) if !k.is_empty() && k != f.kind => attachment_kind(&f.mime, k).to_string(),
                _ => f.kind,
            };
            Ok(Attachment {
                url: file_url(&f.public_id),
                file_id: f.public_id,
                name: f.name,
                mime: f.mime,
                size: f.size,
                kind,
                sha256: f.sha256,
            })
        })
        .collect()
}

/// The message a sender already sent under this client id, if any.
fn sent_before(
    conn: &Connection,
    sender_id: i64,
    client_id: &str,
) -> StoreResult<Option<SentMessage>> {
    conn.prepare_cached(
        "SELECT public_id, created_at FROM messages WHERE sender_id = ?1 AND client_id = ?2",
    )
    .and_then(|mut st| {
        st.query_row(params![sender_id, client_id], |r| {
            Ok(SentMessage {
                public_id: r.get(0)?,
                created_at: r.get(1)?,
                recipients: 0,
                duplicate: true,
                enrich: false,
            })
        })
        .optional()
    })
    .map_err(sqlite_err("looking up a client message id"))
}

/// The key of a direct conversation, the same from either side (see migration 005).
pub(super) fn dm_conv(a: i64, b: i64) -> i64 {
    (a.min(b) << 32) | a.max(b)
}

/// The key of a group's conversation: negative, so it never meets a direct one.
fn group_conv(group_rowid: i64) -> i64 {
    -group_rowid
}

/// Most pairs the writer remembers as recorded before it starts over (bounds its memory).
const KNOWN_PEERS_CAP: usize = 100_000;

/// Records that two people have a direct conversation (a no-op after their first message).
fn remember_peers(conn: &Connection, a: i64, b: i64, shared: &mut WriterState) -> StoreResult<()> {
    let pair = (a.min(b), a.max(b));
    if shared.known_peers.contains(&pair) {
        return Ok(());
    }
    let mut st = conn
        .prepare_cached("INSERT OR IGNORE INTO dm_peers (user_id, peer_id) VALUES (?1, ?2)")
        .map_err(sqlite_err("recording a conversation"))?;
    st.execute([a, b])
        .and_then(|_| if a == b { Ok(0) } else { st.execute([b, a]) })
        .map_err(sqlite_err("recording a conversation"))?;
    if shared.known_peers.len() >= KNOWN_PEERS_CAP {
        shared.known_peers.clear();
    }
    shared.known_peers.insert(pair);
    Ok(())
}

pub(super) fn send(
    conn: &Connection,
    msg: &NewMessage,
    shared: &mut WriterState,
) -> StoreResult<SentMessage> {
    if let Some(client_id) = &msg.client_id
        && let Some(first) = sent_before(conn, msg.sender_id, client_id)?
    {
        return Ok(first);
    }
    // Every check that can refuse comes before the first write (see the module doc).
    let (to_target, group_id, recipients, conv, peer) = match &msg.target {
        Target::Address(address) => {
            let Some(user) = identity::user_by_address(conn, address)? else {
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
            let g = groups::lookup(conn, public_id)?
                .ok_or_else(|| StoreError::UnknownRecipient(format!("group:{public_id}")))?;
            match groups::role(conn, g.rowid, msg.sender_id)? {
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
            let members = groups::member_ids(conn, g.rowid)?
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
    let attachments = resolve_attachments(conn, &msg.attachments)?;
    let attachments_json = if attachments.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&attachments)
                .map_err(|e| StoreError::InvalidAttachment(e.to_string()))?,
        )
    };
    if let Some(peer) = peer {
        remember_peers(conn, msg.sender_id, peer, shared)?;
    }
    conn.prepare_cached(
        "INSERT INTO messages (public_id, sender_id, to_target, group_id, text, reply_to, attachments, created_at, conv, client_id, language)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut st| {
        st.execute(params![
            msg.public_id,
            msg.sender_id,
            to_target,
            group_id,
            msg.text,
            msg.reply_to,
            attachments_json,
            msg.created_at,
            conv,
            msg.client_id,
            msg.language
        ])
    })
    .map_err(sqlite_err("storing a message"))?;
    let rowid = conn.last_insert_rowid();
    for a in &attachments {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO message_files (message_id, file_id) VALUES (?1, ?2)",
        )
        .and_then(|mut st| st.execute(params![rowid, a.file_id]))
        .map_err(sqlite_err("recording a message's files"))?;
    }
    // Enrichment follows the message as a job of its own: a voice clip always (its
    // transcript), text when someone may want it in another language.
    let voice_clip = attachments.iter().any(|a| a.kind == "voice");
    let enrich =
        voice_clip || (!msg.text.trim().is_empty() && voice::languages_in_use(conn, shared)?);
    if enrich {
        voice::queue_job(conn, rowid, voice_clip, msg.created_at)?;
    }
    // The message as every receiver will see it, for the wakeup.
    let (from, from_name, from_kind): (String, String, String) = conn
        .prepare_cached("SELECT chat_address, display_name, kind FROM users WHERE id = ?1")
        .and_then(|mut st| st.query_row([msg.sender_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .map_err(sqlite_err("reading the sender"))?;
    let channel = crate::api::bridge::channel_of(&to_target)
        .or_else(|| crate::api::bridge::channel_of(&from))
        .map(str::to_string);
    let event = Arc::new(Message {
        cursor: String::new(),
        event_type: EventType::Message,
        message_id: msg.public_id.clone(),
        from,
        from_name,
        from_kind: Kind::parse(&from_kind).unwrap_or_default(),
        to: to_target.clone(),
        text: msg.text.clone(),
        created_at: rfc3339_from_millis(msg.created_at),
        reply_to: msg.reply_to.clone(),
        group_id: group_id.clone(),
        attachments: attachments.clone(),
        edited_at: None,
        deleted: false,
        read: false,
        caption: None,
        channel,
    });
    for user_id in &recipients {
        deliver(conn, *user_id, rowid, None, Some(&event), shared)?;
    }
    Ok(SentMessage {
        public_id: msg.public_id.clone(),
        created_at: msg.created_at,
        recipients: recipients.len(),
        duplicate: false,
        enrich,
    })
}

/// Columns shared by poll and history, in the order `message_from_row` reads them.
const MESSAGE_COLS: &str = "
       m.public_id, m.to_target, m.group_id, m.text, m.reply_to, m.attachments, m.created_at, m.deleted_at,
       su.chat_address, su.display_name, su.kind,
       e.kind, e.text, e.created_at,
       au.chat_address, au.display_name, au.kind,
       m.edited_at,
       EXISTS (SELECT 1 FROM reads rd WHERE rd.message_id = m.id),
       e.data";

/// The caption a history row shows: the reader's own (a translation), else the transcript.
const HISTORY_CAPTION: &str = "(SELECT c.data FROM captions c WHERE c.message_id = m.id
        AND c.user_id IN (?4, 0) ORDER BY c.user_id DESC LIMIT 1)";

fn poll_sql() -> String {
    format!(
        "SELECT d.seq, {MESSAGE_COLS}, NULL
         FROM deliveries d
         JOIN messages m ON m.id = d.message_id
         JOIN users su ON su.id = m.sender_id
         LEFT JOIN events e ON e.id = d.event_id
         LEFT JOIN users au ON au.id = e.actor_id
         WHERE d.user_id = ?1 AND d.seq > ?2
         ORDER BY d.seq
         LIMIT ?3"
    )
}

fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let seq: i64 = row.get(0)?;
    let deleted_at: Option<i64> = row.get(8)?;
    let attachments: Option<String> = row.get(6)?;
    let attachments: Vec<Attachment> = match (deleted_at, attachments) {
        (None, Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
        _ => Vec::new(),
    };
    let event_kind: Option<String> = row.get(12)?;
    let event_type = event_kind
        .as_deref()
        .and_then(EventType::parse)
        .unwrap_or(EventType::Message);
    let edited_at: Option<i64> = row.get(18)?;
    let (from, from_name, from_kind, text, created_at) = match event_type {
        EventType::Message => (
            row.get::<_, String>(9)?,
            row.get::<_, String>(10)?,
            row.get::<_, String>(11)?,
            if deleted_at.is_some() {
                String::new()
            } else {
                row.get::<_, String>(4)?
            },
            row.get::<_, i64>(7)?,
        ),
        _ => (
            row.get::<_, String>(15)?,
            row.get::<_, String>(16)?,
            row.get::<_, String>(17)?,
            if matches!(event_type, EventType::Edit | EventType::Caption) && deleted_at.is_none() {
                row.get::<_, Option<String>>(13)?.unwrap_or_default()
            } else {
                String::new()
            },
            row.get::<_, i64>(14)?,
        ),
    };
    let is_message = event_type == EventType::Message;
    let to: String = row.get(2)?;
    let channel = crate::api::bridge::channel_of(&to)
        .or_else(|| crate::api::bridge::channel_of(&from))
        .map(str::to_string);
    Ok(Message {
        cursor: seq.to_string(),
        event_type,
        message_id: row.get(1)?,
        from,
        from_name,
        from_kind: Kind::parse(&from_kind).unwrap_or_default(),
        to,
        text,
        created_at: rfc3339_from_millis(created_at),
        reply_to: if is_message { row.get(5)? } else { None },
        group_id: row.get(3)?,
        attachments: if is_message { attachments } else { Vec::new() },
        edited_at: if is_message {
            edited_at.map(rfc3339_from_millis)
        } else {
            None
        },
        deleted: is_message && deleted_at.is_some(),
        read: is_message && row.get::<_, bool>(19)?,
        caption: if deleted_at.is_some() {
            None
        } else {
            // A caption event carries its own; a history row the reader's newest.
            let data: Option<String> = match event_type {
                EventType::Caption => row.get(20)?,
                EventType::Message => row.get(21)?,
                _ => None,
            };
            data.and_then(|d| serde_json::from_str::<Caption>(&d).ok())
        },
        channel,
    })
}

pub(super) fn poll(
    conn: &Connection,
    user_id: i64,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<Message>> {
    let mut st = conn
        .prepare_cached(&poll_sql())
        .map_err(sqlite_err("reading a stream"))?;
    let rows = st
        .query_map(params![user_id, after as i64, limit], message_from_row)
        .map_err(sqlite_err("reading a stream"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(sqlite_err("reading stream rows"))
}

pub(super) fn stream_head(conn: &Connection, user_id: i64) -> StoreResult<u64> {
    conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM deliveries WHERE user_id = ?1")
        .and_then(|mut st| st.query_row([user_id], |r| r.get::<_, i64>(0)))
        .map(|v| v as u64)
        .map_err(sqlite_err("reading a stream head"))
}

pub(super) fn session_cursor(conn: &Connection, session_id: i64) -> StoreResult<u64> {
    conn.prepare_cached("SELECT cursor FROM sessions WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row([session_id], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|v| v.unwrap_or(0) as u64)
        .map_err(sqlite_err("reading a claim cursor"))
}

pub(super) fn advance_session_cursor(
    conn: &Connection,
    session_id: i64,
    from: u64,
    to: u64,
) -> StoreResult<bool> {
    let n = conn
        .prepare_cached("UPDATE sessions SET cursor = ?1 WHERE id = ?2 AND cursor = ?3")
        .and_then(|mut st| st.execute(params![to as i64, session_id, from as i64]))
        .map_err(sqlite_err("advancing a claim cursor"))?;
    Ok(n == 1)
}

pub(super) fn ack_session_cursor(conn: &Connection, session_id: i64, to: u64) -> StoreResult<u64> {
    conn.prepare_cached(
        "UPDATE sessions SET cursor = MAX(cursor, ?1) WHERE id = ?2 RETURNING cursor",
    )
    .and_then(|mut st| st.query_row(params![to as i64, session_id], |r| r.get::<_, i64>(0)))
    .map(|c| c as u64)
    .map_err(sqlite_err("acknowledging a cursor"))
}

/// What lifecycle operations need to know about a message.
struct Stored {
    rowid: i64,
    sender_id: i64,
    group_id: Option<String>,
    deleted: bool,
}

fn stored(conn: &Connection, public_id: &str) -> StoreResult<Stored> {
    conn.prepare_cached(
        "SELECT id, sender_id, group_id, deleted_at IS NOT NULL FROM messages WHERE public_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([public_id], |r| {
            Ok(Stored {
                rowid: r.get(0)?,
                sender_id: r.get(1)?,
                group_id: r.get(2)?,
                deleted: r.get(3)?,
            })
        })
        .optional()
    })
    .map_err(sqlite_err("looking up a message"))?
    .ok_or_else(|| StoreError::NotFound(format!("no message has the id {public_id:?}")))
}

/// Who received a message (not events about it).
fn receivers(conn: &Connection, rowid: i64) -> StoreResult<Vec<i64>> {
    let mut st = conn
        .prepare_cached(
            "SELECT DISTINCT user_id FROM deliveries WHERE message_id = ?1 AND event_id IS NULL",
        )
        .map_err(sqlite_err("finding a message's receivers"))?;
    st.query_map([rowid], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(sqlite_err("finding a message's receivers"))
}

fn add_event(
    conn: &Connection,
    kind: &str,
    rowid: i64,
    actor: i64,
    text: Option<&str>,
    now: i64,
) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO events (kind, message_id, actor_id, text, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| st.execute(params![kind, rowid, actor, text, now]))
    .map_err(sqlite_err("recording an event"))?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn edit(
    conn: &Connection,
    actor: i64,
    public_id: &str,
    text: &str,
    now: i64,
    shared: &mut WriterState,
) -> StoreResult<()> {
    let m = stored(conn, public_id)?;
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
    conn.execute(
        "UPDATE messages SET text = ?1, edited_at = ?2 WHERE id = ?3",
        params![text, now, m.rowid],
    )
    .map_err(sqlite_err("editing a message"))?;
    let event = add_event(conn, "edit", m.rowid, actor, Some(text), now)?;
    for user in receivers(conn, m.rowid)? {
        deliver(conn, user, m.rowid, Some(event), None, shared)?;
    }
    Ok(())
}

pub(super) fn delete(
    conn: &Connection,
    actor: i64,
    public_id: &str,
    now: i64,
    shared: &mut WriterState,
) -> StoreResult<Vec<String>> {
    let m = stored(conn, public_id)?;
    let group_admin = match &m.group_id {
        Some(g) => match groups::lookup(conn, g)? {
            Some(info) => groups::role(conn, info.rowid, actor)?.as_deref() == Some("admin"),
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
    conn.execute(
        "UPDATE messages SET deleted_at = ?1, text = '', attachments = NULL WHERE id = ?2",
        params![now, m.rowid],
    )
    .map_err(sqlite_err("deleting a message"))?;
    let event = add_event(conn, "delete", m.rowid, actor, None, now)?;
    let mut told = receivers(conn, m.rowid)?;
    // An admin's deletion is news to the author too.
    if actor != m.sender_id {
        told.push(m.sender_id);
    }
    for user in told {
        deliver(conn, user, m.rowid, Some(event), None, shared)?;
    }
    release_files(conn, m.rowid)
}

/// Drops a deleted message's links to its uploads and the records of uploads nothing links to
/// any more; returns those uploads' ids.
fn release_files(conn: &Connection, rowid: i64) -> StoreResult<Vec<String>> {
    let linked: Vec<String> = conn
        .prepare_cached("DELETE FROM message_files WHERE message_id = ?1 RETURNING file_id")
        .and_then(|mut st| st.query_map([rowid], |r| r.get(0))?.collect())
        .map_err(sqlite_err("unlinking a message's files"))?;
    let mut orphaned = Vec::new();
    for file_id in linked {
        let still_used: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM message_files WHERE file_id = ?1)")
            .and_then(|mut st| st.query_row([&file_id], |r| r.get(0)))
            .map_err(sqlite_err("checking a file's other messages"))?;
        if !still_used {
            conn.prepare_cached("DELETE FROM files WHERE public_id = ?1")
                .and_then(|mut st| st.execute([&file_id]))
                .map_err(sqlite_err("removing a file record"))?;
            orphaned.push(file_id);
        }
    }
    Ok(orphaned)
}

pub(super) fn mark_read(
    conn: &Connection,
    reader: i64,
    public_id: &str,
    now: i64,
    shared: &mut WriterState,
) -> StoreResult<()> {
    let m = stored(conn, public_id)?;
    if m.sender_id == reader {
        return Ok(()); // your own message: nothing to tell anyone
    }
    if !receivers(conn, m.rowid)?.contains(&reader) {
        return Err(StoreError::Forbidden(
            "you did not receive that message".into(),
        ));
    }
    let fresh = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO reads (message_id, user_id, read_at) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut st| st.execute(params![m.rowid, reader, now]))
        .map_err(sqlite_err("recording a read"))?;
    if fresh == 1 && !m.deleted {
        let event = add_event(conn, "read", m.rowid, reader, None, now)?;
        deliver(conn, m.sender_id, m.rowid, Some(event), None, shared)?;
    }
    Ok(())
}

pub(super) fn history(
    conn: &Connection,
    user_id: i64,
    with: &Conversation,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<(i64, Message)>> {
    let base = format!(
        "SELECT m.id, {MESSAGE_COLS}, {HISTORY_CAPTION}
         FROM messages m
         JOIN users su ON su.id = m.sender_id
         LEFT JOIN events e ON 0
         LEFT JOIN users au ON 0"
    );
    let before = before.unwrap_or(i64::MAX);
    let mut rows: Vec<(i64, Message)> = match with {
        Conversation::With(address) => {
            let other = identity::user_by_address(conn, address)?
                .ok_or_else(|| StoreError::UnknownRecipient(address.clone()))?;
            let sql = format!("{base} WHERE m.conv = ?1 AND m.id < ?2 ORDER BY m.id DESC LIMIT ?3");
            let mut st = conn
                .prepare_cached(&sql)
                .map_err(sqlite_err("reading a conversation"))?;
            st.query_map(
                params![dm_conv(user_id, other.id), before, limit, user_id],
                |r| Ok((r.get(0)?, message_from_row(r)?)),
            )
            .and_then(|rows| rows.collect())
            .map_err(sqlite_err("reading a conversation"))?
        }
        Conversation::Group(public_id) => {
            let g = groups::lookup(conn, public_id)?.ok_or_else(|| {
                StoreError::NotFound(format!("no group has the id {public_id:?}"))
            })?;
            if groups::role(conn, g.rowid, user_id)?.is_none() {
                return Err(StoreError::NotMember(format!(
                    "you are not a member of group:{public_id}"
                )));
            }
            let sql = format!("{base} WHERE m.conv = ?1 AND m.id < ?2 ORDER BY m.id DESC LIMIT ?3");
            let mut st = conn
                .prepare_cached(&sql)
                .map_err(sqlite_err("reading a group"))?;
            st.query_map(params![group_conv(g.rowid), before, limit, user_id], |r| {
                Ok((r.get(0)?, message_from_row(r)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(sqlite_err("reading a group"))?
        }
    };
    rows.reverse();
    Ok(rows)
}

/// A single message by rowid, as history shows it.
fn message_by_rowid(conn: &Connection, rowid: i64) -> StoreResult<Option<Message>> {
    let sql = format!(
        "SELECT m.id, {MESSAGE_COLS}, NULL
         FROM messages m
         JOIN users su ON su.id = m.sender_id
         LEFT JOIN events e ON 0
         LEFT JOIN users au ON 0
         WHERE m.id = ?1"
    );
    conn.prepare_cached(&sql)
        .and_then(|mut st| st.query_row([rowid], message_from_row).optional())
        .map_err(sqlite_err("reading a message"))
}

pub(super) fn conversations(
    conn: &Connection,
    user_id: i64,
) -> StoreResult<Vec<ConversationSummary>> {
    // Every conversation the user is in: direct peers, groups they belong to, and groups
    // they heard from before leaving; each with its newest message and unread count.
    // The direct key is computed as in `dm_conv`, the group key as in `group_conv`.
    let mut st = conn
        .prepare_cached(
            "WITH peers AS (
                 SELECT u.chat_address AS peer, (MIN(?1, p.peer_id) << 32) | MAX(?1, p.peer_id) AS conv
                 FROM dm_peers p JOIN users u ON u.id = p.peer_id
                 WHERE p.user_id = ?1
                 UNION
                 SELECT 'group:' || g.public_id, -g.id
                 FROM group_members gm JOIN groups g ON g.id = gm.group_id
                 WHERE gm.user_id = ?1
                 UNION
                 SELECT m.to_target, m.conv
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.user_id = ?1 AND d.event_id IS NULL AND m.group_id IS NOT NULL
             ),
             unread AS (
                 SELECT CASE WHEN m.group_id IS NOT NULL THEN m.to_target ELSE su.chat_address END AS peer,
                        COUNT(*) AS n
                 FROM deliveries d
                 JOIN messages m ON m.id = d.message_id
                 JOIN users su ON su.id = m.sender_id
                 LEFT JOIN reads r ON r.message_id = m.id AND r.user_id = ?1
                 WHERE d.user_id = ?1 AND d.event_id IS NULL AND r.message_id IS NULL
                   AND m.deleted_at IS NULL
                 GROUP BY 1
             ),
             latest AS (
                 SELECT p.peer, (SELECT MAX(m.id) FROM messages m WHERE m.conv = p.conv) AS last,
                        COALESCE(u.n, 0) AS unread
                 FROM peers p LEFT JOIN unread u ON u.peer = p.peer
             )
             SELECT peer, last, unread FROM latest ORDER BY last IS NULL, last DESC, peer",
        )
        .map_err(sqlite_err("listing conversations"))?;
    let rows: Vec<(String, Option<i64>, u32)> = st
        .query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(sqlite_err("listing conversations"))?;
    let mut out = Vec::new();
    let mut with_messages = 0;
    for (peer, last_id, unread) in rows {
        // The 200 most recent conversations, then every group where nothing was said yet.
        if last_id.is_some() {
            with_messages += 1;
            if with_messages > 200 {
                continue;
            }
        }
        let last = match last_id {
            Some(id) => message_by_rowid(conn, id)?,
            None => None,
        };
        let summary = match crate::api::address::group_target(&peer) {
            Some(gid) => {
                let Some(info) = groups::summary(conn, user_id, gid)? else {
                    continue;
                };
                ConversationSummary {
                    last_message: last,
                    unread,
                    ..info
                }
            }
            None => {
                let Some(user) = identity::user_by_address(conn, &peer)? else {
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
