//! The enrichment worker: two lanes (voice clips, and text), each taking the oldest due job.
//! A clip is transcribed (retried with backoff while the engine is down or slow, up to
//! `MAX_ATTEMPTS`), then everyone the message reached gets a caption: the transcript, and for
//! each receiver whose receive language differs, a translation (one per target language) and,
//! with read-aloud on, a spoken clip stored as an ordinary file. Whatever cannot be made is
//! said in `caption_failed`. Jobs a crash interrupted run again at the next start.

use std::collections::HashMap;
use std::time::Duration;

use super::engines::EngineError;
use super::languages;
use crate::api::messages::{Attachment, Caption};
use crate::api::now_millis;
use crate::relay::AppState;
use crate::relay::store::{VOICE_LEASE_MS, VoiceContext, VoiceJob, VoiceJobEnd};

/// Tries of one job before its captions say why it failed.
pub const MAX_ATTEMPTS: u32 = 3;

/// Runs both lanes until shutdown.
pub async fn run(state: AppState) {
    match state.store.requeue_running_voice_jobs().await {
        Ok(n) if n > 0 => tracing::info!(jobs = n, "voice jobs interrupted by a restart run again"),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot requeue voice jobs: {e}"),
    }
    let clips = tokio::spawn(lane(state.clone(), true));
    let texts = tokio::spawn(lane(state, false));
    let _ = tokio::join!(clips, texts);
}

async fn lane(state: AppState, voice: bool) {
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        // Listen before looking, so a job queued in between still rings.
        let rung = state.voice.bell_notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        if voice {
            shed(&state).await;
        }
        match state.store.next_voice_job(voice, now_millis()).await {
            Ok(Some(job)) => {
                crate::failpoints::hit("relay-voice-job-claimed");
                let end = with_lease(&state, job.id, process(&state, &job)).await;
                if let Err(e) = state.store.end_voice_job(job.id, end).await {
                    tracing::warn!("cannot record a voice job's end: {e}");
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read voice jobs: {e}"),
        }
        // Nothing due: wait for a new job, a retry coming due, or shutdown.
        tokio::select! {
            _ = rung => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
}

/// Runs a job, renewing its claim meanwhile where other relays could otherwise take it over.
async fn with_lease<F: std::future::Future<Output = VoiceJobEnd>>(
    state: &AppState,
    id: i64,
    work: F,
) -> VoiceJobEnd {
    if !state.store.shared() {
        return work.await;
    }
    tokio::pin!(work);
    let every = Duration::from_millis((VOICE_LEASE_MS / 3) as u64);
    loop {
        tokio::select! {
            end = &mut work => return end,
            _ = tokio::time::sleep(every) => {
                let until = now_millis() + VOICE_LEASE_MS;
                if let Err(e) = state.store.renew_voice_job(id, until).await {
                    tracing::warn!("cannot renew a voice job's claim: {e}");
                }
            }
        }
    }
}

/// Past the queue bound, the newest waiting jobs are captioned "too busy" at once.
async fn shed(state: &AppState) {
    let bound = state.voice.config.queue_bound.max(1);
    match state.store.voice_backlog().await {
        Ok(n) if n > bound => {}
        _ => return,
    }
    let Ok(shed) = state.store.shed_voice_jobs(bound).await else {
        return;
    };
    for rowid in shed {
        if let Ok(Some(ctx)) = state.store.voice_context(rowid).await {
            let why = "the relay had too many voice clips waiting; this one was not captioned";
            deliver_failure(state, rowid, &ctx, why).await;
        }
    }
}

/// Everyone the message reached (and its sender) learns why there is no caption.
async fn deliver_failure(state: &AppState, rowid: i64, ctx: &VoiceContext, why: &str) {
    for (user, _) in &ctx.people {
        let caption = Caption {
            caption_failed: Some(why.to_string()),
            ..Caption::default()
        };
        if let Err(e) = state
            .store
            .add_caption(rowid, *user, caption, now_millis())
            .await
        {
            tracing::warn!("cannot deliver a caption: {e}");
        }
    }
}

async fn process(state: &AppState, job: &VoiceJob) -> VoiceJobEnd {
    let ctx = match state.store.voice_context(job.message_rowid).await {
        Ok(Some(c)) if !c.deleted => c,
        Ok(_) => return VoiceJobEnd::Done,
        Err(e) => return retry_or_fail(job, e.to_string()),
    };
    let voice = &state.voice;
    let clip = ctx.attachments.iter().find(|a| a.kind == "voice").cloned();
    let mut base = Caption::default();
    let (text, language) = match &clip {
        Some(clip) => match transcribe(state, clip).await {
            Ok((caption, text, language)) => {
                if let Err(e) = state
                    .store
                    .set_transcript(job.message_rowid, caption.clone(), language.clone())
                    .await
                {
                    return retry_or_fail(job, e.to_string());
                }
                base = caption;
                (text, language)
            }
            Err(e) if e.is_transient() && job.attempts < MAX_ATTEMPTS => {
                tracing::warn!(
                    attempt = job.attempts,
                    "transcription failed, retrying: {e}"
                );
                return VoiceJobEnd::Retry {
                    error: e.to_string(),
                    not_before: now_millis() + 1000 * (1 << job.attempts.min(6)),
                };
            }
            Err(e) => {
                deliver_failure(state, job.message_rowid, &ctx, &e.to_string()).await;
                return VoiceJobEnd::Failed {
                    error: e.to_string(),
                };
            }
        },
        None => {
            let sender_language = ctx
                .people
                .iter()
                .find(|(u, _)| *u == ctx.sender_id)
                .and_then(|(_, p)| p.receive_language.clone());
            let language = ctx
                .language
                .clone()
                .or_else(|| languages::detect(&ctx.text).map(str::to_string))
                .or(sender_language);
            (ctx.text.clone(), language)
        }
    };
    // One translation (and one spoken clip) per target language, however many want it.
    let mut translations: HashMap<String, Result<String, EngineError>> = HashMap::new();
    let mut spoken: HashMap<String, Result<Attachment, String>> = HashMap::new();
    for (user, prefs) in &ctx.people {
        let is_sender = *user == ctx.sender_id;
        let mut caption = base.clone();
        let target = prefs
            .receive_language
            .clone()
            .filter(|t| {
                !language
                    .as_deref()
                    .is_some_and(|l| languages::same_language(l, t))
            })
            .filter(|_| !is_sender && !text.trim().is_empty());
        if let Some(target) = target {
            let key = languages::primary(&target);
            match &language {
                None => {
                    caption.caption_failed =
                        Some("the language of the message could not be told".into());
                }
                Some(source) => {
                    let result = match translations.get(&key) {
                        Some(r) => r.clone(),
                        None => {
                            let r = translate(state, &text, source, &target).await;
                            translations.insert(key.clone(), r.clone());
                            r
                        }
                    };
                    match result {
                        Ok(t) => {
                            caption.translation = Some(t.clone());
                            caption.translation_language = Some(key.clone());
                            if let Some(tr) = voice.translator.as_ref() {
                                caption.engines.push(tr.name());
                            }
                            if prefs.read_aloud {
                                let audio = match spoken.get(&key) {
                                    Some(a) => a.clone(),
                                    None => {
                                        let a =
                                            speak(state, &t, &key, *user, &ctx.message_id).await;
                                        spoken.insert(key.clone(), a.clone());
                                        a
                                    }
                                };
                                match audio {
                                    Ok(a) => caption.audio = Some(a),
                                    Err(why) => caption.caption_failed = Some(why),
                                }
                            }
                        }
                        Err(e) => caption.caption_failed = Some(e.to_string()),
                    }
                }
            }
        }
        let something = caption.transcript.is_some()
            || caption.translation.is_some()
            || caption.caption_failed.is_some();
        if !something {
            continue;
        }
        if let Err(e) = state
            .store
            .add_caption(job.message_rowid, *user, caption, now_millis())
            .await
        {
            tracing::warn!("cannot deliver a caption: {e}");
        }
    }
    VoiceJobEnd::Done
}

fn retry_or_fail(job: &VoiceJob, error: String) -> VoiceJobEnd {
    if job.attempts < MAX_ATTEMPTS {
        VoiceJobEnd::Retry {
            error,
            not_before: now_millis() + 1000 * (1 << job.attempts.min(6)),
        }
    } else {
        VoiceJobEnd::Failed { error }
    }
}

/// The clip's transcript: (its caption, the text, its language).
async fn transcribe(
    state: &AppState,
    clip: &Attachment,
) -> Result<(Caption, String, Option<String>), EngineError> {
    let voice = &state.voice;
    let engine = voice.transcriber()?;
    let path = state.config.upload_dir.join(&clip.file_id);
    let t = voice
        .bounded(
            &engine.name(),
            engine.transcribe(&path, &clip.name, &clip.mime, None),
        )
        .await?;
    let caption = Caption {
        transcript: Some(t.text.clone()),
        language: t.language.clone(),
        engines: vec![engine.name()],
        ..Caption::default()
    };
    Ok((caption, t.text, t.language))
}

async fn translate(
    state: &AppState,
    text: &str,
    source: &str,
    target: &str,
) -> Result<String, EngineError> {
    let voice = &state.voice;
    let engine = voice.translator()?;
    voice
        .bounded(&engine.name(), engine.translate(text, source, target))
        .await
}

/// The translation read aloud, stored as an ordinary file owned by the receiver.
async fn speak(
    state: &AppState,
    text: &str,
    language: &str,
    owner: i64,
    message_id: &str,
) -> Result<Attachment, String> {
    let voice = &state.voice;
    let engine = voice.speaker().map_err(|e| e.to_string())?;
    let (bytes, mime) = voice
        .bounded(&engine.name(), engine.speak(text, language))
        .await
        .map_err(|e| e.to_string())?;
    let name = format!("read-aloud-{message_id}-{language}.wav");
    crate::relay::files::store_bytes(state, owner, &name, mime, "audio", bytes)
        .await
        .map_err(|e| e.message)
}
