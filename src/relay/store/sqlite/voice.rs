//! Languages and enrichment: receive-language settings, the durable job queue, and caption
//! events (a transcript or translation delivered like an edit, and kept for history).

use rusqlite::{Connection, OptionalExtension, params};

use super::messages::deliver;
use super::{WriterState, sqlite_err};
use crate::api::messages::{Attachment, Caption};
use crate::relay::store::{LanguagePrefs, StoreResult, VoiceContext, VoiceJob, VoiceJobEnd};

pub(super) fn language_prefs(conn: &Connection, user_id: i64) -> StoreResult<LanguagePrefs> {
    conn.prepare_cached("SELECT receive_language, read_aloud FROM users WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row([user_id], |r| {
                Ok(LanguagePrefs {
                    receive_language: r.get(0)?,
                    read_aloud: r.get::<_, i64>(1)? != 0,
                })
            })
            .optional()
        })
        .map(Option::unwrap_or_default)
        .map_err(sqlite_err("reading language prefs"))
}

pub(super) fn set_language_prefs(
    conn: &Connection,
    user_id: i64,
    language: Option<Option<&str>>,
    read_aloud: Option<bool>,
    shared: &mut WriterState,
) -> StoreResult<()> {
    if let Some(lang) = language {
        conn.execute(
            "UPDATE users SET receive_language = ?1 WHERE id = ?2",
            params![lang, user_id],
        )
        .map_err(sqlite_err("saving language prefs"))?;
        shared.languages_in_use = None;
    }
    if let Some(on) = read_aloud {
        conn.execute(
            "UPDATE users SET read_aloud = ?1 WHERE id = ?2",
            params![on as i64, user_id],
        )
        .map_err(sqlite_err("saving language prefs"))?;
    }
    Ok(())
}

/// Whether anyone has a receive language, remembered by the writer until one changes.
pub(super) fn languages_in_use(conn: &Connection, shared: &mut WriterState) -> StoreResult<bool> {
    if let Some(known) = shared.languages_in_use {
        return Ok(known);
    }
    let any: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE receive_language IS NOT NULL)")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .map_err(sqlite_err("checking language prefs"))?;
    shared.languages_in_use = Some(any);
    Ok(any)
}

pub(super) fn queue_job(
    conn: &Connection,
    message_rowid: i64,
    voice: bool,
    now: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO voice_jobs (message_id, voice, created_at) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut st| st.execute(params![message_rowid, voice as i64, now]))
    .map_err(sqlite_err("queueing a voice job"))?;
    Ok(())
}

pub(super) fn next_job(conn: &Connection, voice: bool, now: i64) -> StoreResult<Option<VoiceJob>> {
    conn.prepare_cached(
        "UPDATE voice_jobs SET state = 'running', attempts = attempts + 1
         WHERE id = (SELECT id FROM voice_jobs
                     WHERE voice = ?2 AND state = 'pending' AND not_before <= ?1
                     ORDER BY id LIMIT 1)
         RETURNING id, message_id, attempts",
    )
    .and_then(|mut st| {
        st.query_row(params![now, voice as i64], |r| {
            Ok(VoiceJob {
                id: r.get(0)?,
                message_rowid: r.get(1)?,
                attempts: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(sqlite_err("claiming a voice job"))
}

pub(super) fn end_job(conn: &Connection, id: i64, end: &VoiceJobEnd) -> StoreResult<()> {
    let (state, error, not_before) = match end {
        VoiceJobEnd::Done => ("done", None, 0),
        VoiceJobEnd::Retry { error, not_before } => ("pending", Some(error.as_str()), *not_before),
        VoiceJobEnd::Failed { error } => ("failed", Some(error.as_str()), 0),
    };
    conn.execute(
        "UPDATE voice_jobs SET state = ?1, error = ?2, not_before = ?3 WHERE id = ?4",
        params![state, error, not_before, id],
    )
    .map_err(sqlite_err("ending a voice job"))?;
    Ok(())
}

pub(super) fn backlog(conn: &Connection) -> StoreResult<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM voice_jobs WHERE state IN ('pending', 'running')")
        .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(sqlite_err("counting voice jobs"))
}

/// Fails the newest pending jobs beyond the oldest `keep`, returning their messages.
pub(super) fn shed(conn: &Connection, keep: u64) -> StoreResult<Vec<i64>> {
    conn.prepare_cached(
        "UPDATE voice_jobs SET state = 'failed', error = 'too many voice jobs waiting'
         WHERE state = 'pending' AND id NOT IN
             (SELECT id FROM voice_jobs WHERE state IN ('pending', 'running') ORDER BY id LIMIT ?1)
         RETURNING message_id",
    )
    .and_then(|mut st| st.query_map([keep as i64], |r| r.get(0))?.collect())
    .map_err(sqlite_err("shedding voice jobs"))
}

pub(super) fn requeue_running(conn: &Connection) -> StoreResult<u64> {
    conn.execute(
        "UPDATE voice_jobs SET state = 'pending' WHERE state = 'running'",
        [],
    )
    .map(|n| n as u64)
    .map_err(sqlite_err("requeueing voice jobs"))
}

pub(super) fn context(conn: &Connection, message_rowid: i64) -> StoreResult<Option<VoiceContext>> {
    let found = conn
        .prepare_cached(
            "SELECT public_id, sender_id, text, language, attachments, deleted_at IS NOT NULL
             FROM messages WHERE id = ?1",
        )
        .and_then(|mut st| {
            st.query_row([message_rowid], |r| {
                let attachments: Option<String> = r.get(4)?;
                Ok(VoiceContext {
                    message_id: r.get(0)?,
                    sender_id: r.get(1)?,
                    text: r.get(2)?,
                    language: r.get(3)?,
                    attachments: attachments
                        .and_then(|a| serde_json::from_str::<Vec<Attachment>>(&a).ok())
                        .unwrap_or_default(),
                    deleted: r.get(5)?,
                    people: Vec::new(),
                })
            })
            .optional()
        })
        .map_err(sqlite_err("reading a message for its captions"))?;
    let Some(mut ctx) = found else {
        return Ok(None);
    };
    let sender_id = ctx.sender_id;
    let mut st = conn
        .prepare_cached(
            "SELECT u.id, u.receive_language, u.read_aloud FROM users u
             WHERE u.id IN (SELECT user_id FROM deliveries WHERE message_id = ?1 AND event_id IS NULL)
                OR u.id = ?2
             ORDER BY u.id",
        )
        .map_err(sqlite_err("reading a message's receivers"))?;
    let people = st
        .query_map(params![message_rowid, sender_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                LanguagePrefs {
                    receive_language: r.get(1)?,
                    read_aloud: r.get::<_, i64>(2)? != 0,
                },
            ))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(sqlite_err("reading a message's receivers"))?;
    ctx.people = people;
    Ok(Some(ctx))
}

fn keep_caption(
    conn: &Connection,
    message_rowid: i64,
    user_id: i64,
    data: &str,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO captions (message_id, user_id, data) VALUES (?1, ?2, ?3)
         ON CONFLICT(message_id, user_id) DO UPDATE SET data = excluded.data",
    )
    .and_then(|mut st| st.execute(params![message_rowid, user_id, data]))
    .map_err(sqlite_err("keeping a caption"))?;
    Ok(())
}

pub(super) fn set_transcript(
    conn: &Connection,
    message_rowid: i64,
    caption: &Caption,
    language: Option<&str>,
) -> StoreResult<()> {
    if let Some(l) = language {
        conn.execute(
            "UPDATE messages SET language = ?1 WHERE id = ?2",
            params![l, message_rowid],
        )
        .map_err(sqlite_err("recording a message's language"))?;
    }
    let data = serde_json::to_string(caption).unwrap_or_default();
    keep_caption(conn, message_rowid, 0, &data)
}

pub(super) fn add_caption(
    conn: &Connection,
    message_rowid: i64,
    user_id: i64,
    caption: &Caption,
    now: i64,
    shared: &mut WriterState,
) -> StoreResult<()> {
    let sender: Option<i64> = conn
        .prepare_cached("SELECT sender_id FROM messages WHERE id = ?1 AND deleted_at IS NULL")
        .and_then(|mut st| st.query_row([message_rowid], |r| r.get(0)).optional())
        .map_err(sqlite_err("reading a message for its caption"))?;
    // Deleted meanwhile: no caption for what is gone.
    let Some(sender) = sender else {
        return Ok(());
    };
    let data = serde_json::to_string(caption).unwrap_or_default();
    conn.prepare_cached(
        "INSERT INTO events (kind, message_id, actor_id, text, created_at, data)
         VALUES ('caption', ?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| st.execute(params![message_rowid, sender, caption.text(), now, data]))
    .map_err(sqlite_err("recording a caption"))?;
    let event = conn.last_insert_rowid();
    keep_caption(conn, message_rowid, user_id, &data)?;
    if let Some(a) = &caption.audio {
        // The read-aloud clip goes with its message: deleting the message removes it.
        conn.prepare_cached(
            "INSERT OR IGNORE INTO message_files (message_id, file_id) VALUES (?1, ?2)",
        )
        .and_then(|mut st| st.execute(params![message_rowid, a.file_id]))
        .map_err(sqlite_err("linking a read-aloud clip"))?;
    }
    deliver(conn, user_id, message_rowid, Some(event), None, shared)?;
    Ok(())
}
