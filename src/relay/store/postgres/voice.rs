//! Languages and enrichment: receive-language settings, the durable job queue, and caption
//! events (PostgreSQL). Several relays share the queue: a job is claimed with SKIP LOCKED.

use deadpool_postgres::GenericClient;

use super::{Pending, RowExt, execute, query, query_one, query_opt};
use crate::api::messages::{Attachment, Caption};
use crate::relay::store::{
    LanguagePrefs, StoreResult, VOICE_LEASE_MS, VoiceContext, VoiceJob, VoiceJobEnd,
};

pub(super) async fn language_prefs(
    c: &impl GenericClient,
    user_id: i64,
) -> StoreResult<LanguagePrefs> {
    query_opt(
        c,
        "reading language prefs",
        "SELECT receive_language, read_aloud FROM users WHERE id = $1",
        &[&user_id],
    )
    .await?
    .map(|r| {
        Ok(LanguagePrefs {
            receive_language: r.at(0)?,
            read_aloud: r.at(1)?,
        })
    })
    .transpose()
    .map(Option::unwrap_or_default)
}

pub(super) async fn set_language_prefs(
    c: &impl GenericClient,
    user_id: i64,
    language: Option<Option<&str>>,
    read_aloud: Option<bool>,
) -> StoreResult<()> {
    if let Some(lang) = language {
        execute(
            c,
            "saving language prefs",
            "UPDATE users SET receive_language = $1 WHERE id = $2",
            &[&lang, &user_id],
        )
        .await?;
    }
    if let Some(on) = read_aloud {
        execute(
            c,
            "saving language prefs",
            "UPDATE users SET read_aloud = $1 WHERE id = $2",
            &[&on, &user_id],
        )
        .await?;
    }
    Ok(())
}

/// Whether anyone has a receive language (a partial index makes this one probe).
pub(super) async fn languages_in_use(c: &impl GenericClient) -> StoreResult<bool> {
    query_one(
        c,
        "checking language prefs",
        "SELECT EXISTS (SELECT 1 FROM users WHERE receive_language IS NOT NULL)",
        &[],
    )
    .await?
    .at(0)
}

pub(super) async fn queue_job(
    c: &impl GenericClient,
    message_rowid: i64,
    voice: bool,
    now: i64,
) -> StoreResult<()> {
    execute(
        c,
        "queueing a voice job",
        "INSERT INTO voice_jobs (message_id, voice, created_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&message_rowid, &voice, &now],
    )
    .await
    .map(drop)
}

pub(super) async fn next_job(
    c: &impl GenericClient,
    voice: bool,
    now: i64,
) -> StoreResult<Option<VoiceJob>> {
    query_opt(
        c,
        "claiming a voice job",
        // A running job whose lease lapsed lost its relay: it is taken like a pending one.
        "UPDATE voice_jobs SET state = 'running', attempts = attempts + 1, not_before = $3
         WHERE id = (SELECT id FROM voice_jobs
                     WHERE voice = $2 AND state IN ('pending', 'running') AND not_before <= $1
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING id, message_id, attempts",
        &[&now, &voice, &(now + VOICE_LEASE_MS)],
    )
    .await?
    .map(|r| {
        Ok(VoiceJob {
            id: r.at(0)?,
            message_rowid: r.at(1)?,
            attempts: r.at::<i64>(2)?.clamp(0, u32::MAX as i64) as u32,
        })
    })
    .transpose()
}

pub(super) async fn end_job(c: &impl GenericClient, id: i64, end: &VoiceJobEnd) -> StoreResult<()> {
    let (state, error, not_before) = match end {
        VoiceJobEnd::Done => ("done", None, 0i64),
        VoiceJobEnd::Retry { error, not_before } => ("pending", Some(error.as_str()), *not_before),
        VoiceJobEnd::Failed { error } => ("failed", Some(error.as_str()), 0),
    };
    execute(
        c,
        "ending a voice job",
        "UPDATE voice_jobs SET state = $1, error = $2, not_before = $3 WHERE id = $4",
        &[&state, &error, &not_before, &id],
    )
    .await
    .map(drop)
}

pub(super) async fn backlog(c: &impl GenericClient) -> StoreResult<u64> {
    let n: i64 = query_one(
        c,
        "counting voice jobs",
        "SELECT COUNT(*) FROM voice_jobs WHERE state IN ('pending', 'running')",
        &[],
    )
    .await?
    .at(0)?;
    Ok(n.max(0) as u64)
}

pub(super) async fn shed(c: &impl GenericClient, keep: u64) -> StoreResult<Vec<i64>> {
    query(
        c,
        "shedding voice jobs",
        "UPDATE voice_jobs SET state = 'failed', error = 'too many voice jobs waiting'
         WHERE state = 'pending' AND id NOT IN
             (SELECT id FROM voice_jobs WHERE state IN ('pending', 'running') ORDER BY id LIMIT $1)
         RETURNING message_id",
        &[&(keep.min(i64::MAX as u64) as i64)],
    )
    .await?
    .iter()
    .map(|r| r.at(0))
    .collect()
}

/// Jobs left running go back to pending. With several relays on one database a running job
/// may be another relay's: only those whose lease lapsed (their relay stopped renewing).
pub(super) async fn requeue_running(c: &impl GenericClient, now: i64) -> StoreResult<u64> {
    execute(
        c,
        "requeueing voice jobs",
        "UPDATE voice_jobs SET state = 'pending' WHERE state = 'running' AND not_before <= $1",
        &[&now],
    )
    .await
}

pub(super) async fn renew(c: &impl GenericClient, id: i64, until: i64) -> StoreResult<()> {
    execute(
        c,
        "renewing a voice job",
        "UPDATE voice_jobs SET not_before = $1 WHERE id = $2 AND state = 'running'",
        &[&until, &id],
    )
    .await
    .map(drop)
}

pub(super) async fn context(
    c: &impl GenericClient,
    message_rowid: i64,
) -> StoreResult<Option<VoiceContext>> {
    let found = query_opt(
        c,
        "reading a message for its captions",
        "SELECT public_id, sender_id, text, language, attachments, deleted_at IS NOT NULL
         FROM messages WHERE id = $1",
        &[&message_rowid],
    )
    .await?;
    let Some(r) = found else {
        return Ok(None);
    };
    let attachments: Option<String> = r.at(4)?;
    let mut ctx = VoiceContext {
        message_id: r.at(0)?,
        sender_id: r.at(1)?,
        text: r.at(2)?,
        language: r.at(3)?,
        attachments: attachments
            .and_then(|a| serde_json::from_str::<Vec<Attachment>>(&a).ok())
            .unwrap_or_default(),
        deleted: r.at(5)?,
        people: Vec::new(),
    };
    let rows = query(
        c,
        "reading a message's receivers",
        "SELECT u.id, u.receive_language, u.read_aloud FROM users u
         WHERE u.id IN (SELECT user_id FROM deliveries WHERE message_id = $1 AND event_id IS NULL)
            OR u.id = $2
         ORDER BY u.id",
        &[&message_rowid, &ctx.sender_id],
    )
    .await?;
    ctx.people = rows
        .iter()
        .map(|r| {
            Ok((
                r.at(0)?,
                LanguagePrefs {
                    receive_language: r.at(1)?,
                    read_aloud: r.at(2)?,
                },
            ))
        })
        .collect::<StoreResult<_>>()?;
    Ok(Some(ctx))
}

async fn keep_caption(
    c: &impl GenericClient,
    message_rowid: i64,
    user_id: i64,
    data: &str,
) -> StoreResult<()> {
    execute(
        c,
        "keeping a caption",
        "INSERT INTO captions (message_id, user_id, data) VALUES ($1, $2, $3)
         ON CONFLICT (message_id, user_id) DO UPDATE SET data = excluded.data",
        &[&message_rowid, &user_id, &data],
    )
    .await
    .map(drop)
}

pub(super) async fn set_transcript(
    c: &impl GenericClient,
    message_rowid: i64,
    caption: &Caption,
    language: Option<&str>,
) -> StoreResult<()> {
    if let Some(l) = language {
        execute(
            c,
            "recording a message's language",
            "UPDATE messages SET language = $1 WHERE id = $2",
            &[&l, &message_rowid],
        )
        .await?;
    }
    let data = serde_json::to_string(caption).unwrap_or_default();
    keep_caption(c, message_rowid, 0, &data).await
}

pub(super) async fn add_caption(
    c: &impl GenericClient,
    message_rowid: i64,
    user_id: i64,
    caption: &Caption,
    now: i64,
    p: &mut Pending,
) -> StoreResult<()> {
    let sender: Option<i64> = query_opt(
        c,
        "reading a message for its caption",
        "SELECT sender_id FROM messages WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
        &[&message_rowid],
    )
    .await?
    .map(|r| r.at(0))
    .transpose()?;
    let Some(sender) = sender else {
        return Ok(());
    };
    let data = serde_json::to_string(caption).unwrap_or_default();
    let event: i64 = query_one(
        c,
        "recording a caption",
        "INSERT INTO events (kind, message_id, actor_id, text, created_at, data)
         VALUES ('caption', $1, $2, $3, $4, $5) RETURNING id",
        &[&message_rowid, &sender, &caption.text(), &now, &data],
    )
    .await?
    .at(0)?;
    keep_caption(c, message_rowid, user_id, &data).await?;
    if let Some(a) = &caption.audio {
        execute(
            c,
            "linking a read-aloud clip",
            "INSERT INTO message_files (message_id, file_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&message_rowid, &a.file_id],
        )
        .await?;
    }
    p.deliver(user_id, message_rowid, Some(event), None);
    Ok(())
}
