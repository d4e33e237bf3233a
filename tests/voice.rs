//! Voice in your own language, against the real offline engines: faster-whisper (the relay's
//! supervised helper, from the venv scripts/install-voice.sh makes), Apertium and espeak-ng
//! (Debian packages). Clips are spoken by espeak-ng in the test.
//!
//! GTSW_VOICE_DIR names the installed engines (tests/run.sh installs them once into
//! ~/.cache/gts-webchat/voice); without them the tests that need them say so and skip, unless
//! GTSW_REQUIRE_VOICE=1 (as in CI) makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn voice_dir() -> Option<String> {
    let dir = std::env::var("GTSW_VOICE_DIR")
        .ok()
        .filter(|d| !d.is_empty());
    let usable = dir
        .as_ref()
        .is_some_and(|d| Path::new(d).join("venv/bin/python").is_file());
    let tools = ["espeak-ng", "apertium", "ffmpeg"]
        .iter()
        .all(|t| gts_webchat::hosts::turn::locate(t).is_some());
    if usable && tools {
        return dir;
    }
    let line = "SKIPPED: the voice engines are not installed here (scripts/install-voice.sh, and apt-get install espeak-ng apertium apertium-eng-spa ffmpeg)";
    assert!(
        std::env::var("GTSW_REQUIRE_VOICE").as_deref() != Ok("1"),
        "{line}, but GTSW_REQUIRE_VOICE=1"
    );
    eprintln!("{line}");
    None
}

/// A clip of `text` spoken by espeak-ng, as WAV (`.wav`) or converted by ffmpeg.
fn speak(sb: &Sandbox, text: &str, name: &str) -> PathBuf {
    let wav = sb.path().join(format!("{name}.wav"));
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .unwrap()
        .success();
    assert!(ok, "espeak-ng made a clip");
    wav
}

fn convert(wav: &Path, ext: &str) -> PathBuf {
    let out = wav.with_extension(ext);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-y", "-loglevel", "error", "-i"]).arg(wav);
    match ext {
        "webm" => cmd.args(["-c:a", "libopus"]),
        "ogg" => cmd.args(["-c:a", "libvorbis"]),
        "mp3" => cmd.args(["-c:a", "libmp3lame"]),
        "m4a" => cmd.args(["-c:a", "aac"]),
        _ => &mut cmd,
    };
    assert!(
        cmd.arg(&out).status().unwrap().success(),
        "ffmpeg made {ext}"
    );
    out
}

async fn transcribe(api: &Api, token: &str, clip: &Path) -> (u16, Value) {
    let bytes = std::fs::read(clip).unwrap();
    let name = clip.file_name().unwrap().to_string_lossy().into_owned();
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/webchat/transcribe", api.base))
        .header("X-PChat-Session", token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn send_voice(api: &Api, token: &str, to: &str, clip: &Path) -> String {
    let bytes = std::fs::read(clip).unwrap();
    let name = clip.file_name().unwrap().to_string_lossy().into_owned();
    let (s, up) = api.upload(token, &name, bytes, Some("audio/wav")).await;
    assert_eq!(s, 200, "{up}");
    assert_eq!(up["attachment"]["kind"], json!("voice"));
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(token),
            json!({"to": to, "attachments": [{"file_id": up["file_id"]}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["message_id"].as_str().unwrap().to_string()
}

/// The caption event for `message_id` in `token`'s stream, once it arrives.
async fn caption_for(api: &Api, token: &str, message_id: &str, limit: Duration) -> Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let got = api.poll(token, json!({"after": "0", "limit": 500})).await;
        if let Some(c) = events_of(&got, "caption")
            .into_iter()
            .find(|e| e["message_id"] == json!(message_id))
        {
            return c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no caption for {message_id} within {limit:?}: {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn words(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clip_format_transcribes_and_silence_is_empty() {
    let Some(dir) = voice_dir() else { return };
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_VOICE_DIR", &dir)]);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let wav = speak(&sb, "the report is ready for review", "report");
    for ext in ["wav", "webm", "ogg", "mp3", "m4a"] {
        let clip = if ext == "wav" {
            wav.clone()
        } else {
            convert(&wav, ext)
        };
        let (s, v) = transcribe(&api, &ana, &clip).await;
        assert_eq!(s, 200, "{ext}: {v}");
        assert!(
            words(v["transcript"].as_str().unwrap()).contains("report is ready"),
            "{ext}: {v}"
        );
        assert_eq!(v["language"], json!("en"), "{ext}");
        assert!(v["duration_ms"].as_u64().unwrap() > 1000, "{ext}: {v}");
        assert!(v["engine"].as_str().unwrap().contains("faster-whisper"));
    }
    // Two seconds of silence: an empty transcript, not a hallucinated "You".
    let silence = sb.path().join("silence.wav");
    assert!(
        Command::new("ffmpeg")
            .args([
                "-y",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=16000:cl=mono",
                "-t",
                "2"
            ])
            .arg(&silence)
            .status()
            .unwrap()
            .success()
    );
    let (s, v) = transcribe(&api, &ana, &silence).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["transcript"], json!(""), "{v}");
    // Not audio at all: refused with the engine's reason, not a 500.
    let junk = sb.path().join("junk.webm");
    std::fs::write(&junk, b"this is not audio").unwrap();
    let (s, v) = transcribe(&api, &ana, &junk).await;
    assert_error(s, &v, 422, "engine_refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_get_transcripts_translations_and_read_aloud_in_their_language() {
    let Some(dir) = voice_dir() else { return };
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_VOICE_DIR", &dir)]);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bea = api.login("bea@example.com", "bea", "human").await;
    let cy = api.login("cy@example.com", "cyd", "human").await;
    // Bea reads Spanish, with read-aloud; Cy reads English.
    let (s, v) = api
        .put(
            "/api/v1/webchat/language-prefs",
            Some(&bea),
            json!({"receive_language": "es", "read_aloud": true}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["read_aloud"], json!(true));
    let (s, _) = api
        .put(
            "/api/v1/webchat/language-prefs",
            Some(&cy),
            json!({"receive_language": "en"}),
        )
        .await;
    assert_eq!(s, 200);
    // Leaving a field out keeps it.
    let (_, v) = api.get("/api/v1/webchat/language-prefs", Some(&bea)).await;
    assert_eq!(v["receive_language"], json!("es"));

    let clip = speak(&sb, "the report is ready", "clip");
    let to_bea = send_voice(&api, &ana, "bea", &clip).await;
    let to_cy = send_voice(&api, &ana, "cyd", &clip).await;
    // The message itself arrives at once; the caption follows as its own event.
    let got = api.poll(&bea, json!({"after": "0"})).await;
    assert_eq!(events_of(&got, "message")[0]["message_id"], json!(to_bea));

    let c = caption_for(&api, &bea, &to_bea, Duration::from_secs(60)).await;
    let cap = &c["caption"];
    assert!(
        words(cap["transcript"].as_str().unwrap()).contains("report is ready"),
        "{c}"
    );
    assert_eq!(cap["language"], json!("en"));
    assert_eq!(cap["translation_language"], json!("es"));
    let es = cap["translation"].as_str().unwrap();
    assert!(es.to_lowercase().contains("informe"), "Spanish: {es}");
    assert_eq!(c["text"], json!(es), "the caption shows the translation");
    // Read aloud: an ordinary file, served, non-empty audio.
    let audio = &cap["audio"];
    let (s, _, h) = api
        .raw(
            reqwest::Method::GET,
            audio["url"].as_str().unwrap(),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "audio/wav");
    assert!(audio["size"].as_u64().unwrap() > 1000, "{audio}");

    // Cy reads English: the transcript, no translation.
    let c = caption_for(&api, &cy, &to_cy, Duration::from_secs(60)).await;
    assert!(c["caption"]["translation"].is_null(), "{c}");
    assert!(words(c["caption"]["transcript"].as_str().unwrap()).contains("report is ready"));
    // The sender sees the transcript of their own clip.
    caption_for(&api, &ana, &to_bea, Duration::from_secs(10)).await;

    // Text: a translation for the Spanish reader only.
    let text_id = api
        .send(&ana, "ana", "bea", "The meeting moved to Thursday morning.")
        .await;
    let c = caption_for(&api, &bea, &text_id, Duration::from_secs(30)).await;
    assert_eq!(c["caption"]["translation_language"], json!("es"));
    assert!(c["caption"]["transcript"].is_null());
    let text_to_cy = api
        .send(&ana, "ana", "cyd", "The meeting moved to Thursday morning.")
        .await;
    let marker = api.send(&ana, "ana", "cyd", "and this one too").await;
    // Once the later message's turn is past, the first still has no caption for Cy.
    wait_for(
        Duration::from_secs(30),
        "the text lane to pass both",
        || {
            let st = block_on(api.get("/api/v1/webchat/history?with=ana", Some(&cy))).1;
            st["messages"]
                .as_array()
                .map(|m| m.len() >= 3)
                .and_then(|b| b.then_some(()))
        },
    );
    let got = api.poll(&cy, json!({"after": "0", "limit": 200})).await;
    assert!(
        !events_of(&got, "caption")
            .iter()
            .any(|e| e["message_id"] == json!(text_to_cy) || e["message_id"] == json!(marker)),
        "an English reader got a caption for English text: {got}"
    );

    // History shows each reader their own caption; the original audio is untouched.
    let (_, h) = api
        .get("/api/v1/webchat/history?with=ana", Some(&bea))
        .await;
    let voice_msg = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message_id"] == json!(to_bea))
        .unwrap()
        .clone();
    assert_eq!(voice_msg["caption"]["translation_language"], json!("es"));
    assert_eq!(voice_msg["attachments"][0]["kind"], json!("voice"));
    // Replayable through cursors: the same `after` gives the same caption again.
    let again = api.poll(&bea, json!({"after": "0", "limit": 200})).await;
    assert!(events_of(&again, "caption").len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translate_text_and_its_refusals() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    if gts_webchat::hosts::turn::locate("apertium").is_some() {
        let (s, v) = api
            .post(
                "/api/v1/webchat/translate-text",
                Some(&ana),
                json!({"text": "Hello world, the report is ready for you to read.", "target": "es"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["source"], json!("en"));
        assert_eq!(v["engine"], json!("apertium"));
        assert!(
            v["text"].as_str().unwrap().to_lowercase().contains("mundo"),
            "{v}"
        );
        // A pair nobody installed: 422 naming the pair, not a garbled answer.
        let (s, v) = api
            .post(
                "/api/v1/webchat/translate-text",
                Some(&ana),
                json!({"text": "hello world", "source": "en", "target": "de"}),
            )
            .await;
        assert_error(s, &v, 422, "unsupported_language_pair");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("en") && m.contains("de"), "{m}");
    } else {
        assert!(
            std::env::var("GTSW_REQUIRE_VOICE").as_deref() != Ok("1"),
            "apertium is not installed"
        );
    }
    let (s, v) = api
        .post(
            "/api/v1/webchat/translate-text",
            Some(&ana),
            json!({"text": "x", "target": "not a tag"}),
        )
        .await;
    assert_error(s, &v, 400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_engines_messages_still_arrive_and_captions_say_why() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_VOICE_ENGINES", "none")]);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bea = api.login("bea@example.com", "bea", "human").await;
    let clip = sb.path().join("clip.wav");
    std::fs::write(&clip, b"RIFF....WAVEfmt not really").unwrap();
    let (s, v) = transcribe(&api, &ana, &clip).await;
    assert_error(s, &v, 503, "engine_unavailable");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("install-voice"),
        "{v}"
    );
    let (s, v) = api
        .post(
            "/api/v1/webchat/translate-text",
            Some(&ana),
            json!({"text": "hello", "source": "en", "target": "es"}),
        )
        .await;
    assert_error(s, &v, 503, "engine_unavailable");
    let id = send_voice(&api, &ana, "bea", &clip).await;
    let got = api.poll(&bea, json!({"after": "0"})).await;
    assert_eq!(events_of(&got, "message")[0]["message_id"], json!(id));
    let c = caption_for(&api, &bea, &id, Duration::from_secs(30)).await;
    assert!(
        c["caption"]["caption_failed"]
            .as_str()
            .unwrap()
            .contains("speech-to-text"),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_is_restarted_and_slow_ones_time_out() {
    let Some(dir) = voice_dir() else { return };
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_VOICE_DIR", &dir)]);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bea = api.login("bea@example.com", "bea", "human").await;
    // The helper is a child of the relay: kill it (as a crash would) before a clip arrives.
    let helper = wait_for(Duration::from_secs(60), "the whisper helper", || {
        helper_pid(relay.pid())
    });
    signal(helper, "KILL");
    let clip = speak(&sb, "the helper came back", "back");
    let id = send_voice(&api, &ana, "bea", &clip).await;
    let c = caption_for(&api, &bea, &id, Duration::from_secs(120)).await;
    assert!(
        words(c["caption"]["transcript"].as_str().unwrap_or_default()).contains("helper came back"),
        "retried after the restart: {c}"
    );
    let restarted = wait_for(Duration::from_secs(10), "a new helper", || {
        helper_pid(relay.pid()).filter(|p| *p != helper)
    });
    assert_ne!(restarted, helper);
    // A relay killed outright takes its helper with it (no orphaned model in memory).
    let mut relay = relay;
    relay.kill9();
    wait_for(
        Duration::from_secs(15),
        "the orphaned helper to exit",
        || {
            (!Path::new(&format!("/proc/{restarted}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{restarted}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")))
            .then_some(())
        },
    );
    drop(relay);

    // A step that takes longer than PCHAT_VOICE_TIMEOUT_SECS: retried, then said so.
    let sb = Sandbox::new();
    let relay = Relay::start_with(
        &sb,
        &[("PCHAT_VOICE_DIR", &dir), ("PCHAT_VOICE_TIMEOUT_SECS", "1")],
    );
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bea = api.login("bea@example.com", "bea", "human").await;
    let long = speak(
        &sb,
        &"this clip is long enough that one second is never enough to transcribe it. ".repeat(6),
        "long",
    );
    let id = send_voice(&api, &ana, "bea", &long).await;
    let c = caption_for(&api, &bea, &id, Duration::from_secs(120)).await;
    assert!(
        c["caption"]["caption_failed"]
            .as_str()
            .unwrap_or_default()
            .contains("longer than 1 s"),
        "{c}"
    );
    // The message and its audio are untouched.
    let got = api.poll(&bea, json!({"after": "0"})).await;
    assert_eq!(
        events_of(&got, "message")[0]["attachments"][0]["kind"],
        json!("voice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_a_crash_finishes_after_the_restart() {
    let Some(dir) = voice_dir() else { return };
    let sb = Sandbox::new();
    let mut relay = Relay::start_with(
        &sb,
        &[
            ("PCHAT_VOICE_DIR", &dir),
            ("GTS_WEBCHAT_FAILPOINTS", "relay-voice-job-claimed"),
        ],
    );
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bea = api.login("bea@example.com", "bea", "human").await;
    let clip = speak(&sb, "survive the crash", "crash");
    let id = send_voice(&api, &ana, "bea", &clip).await;
    // The relay aborts the moment the worker claims the job.
    let pid = relay.pid();
    wait_for(Duration::from_secs(30), "the relay to abort", || {
        (!Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    });
    relay.restart_env(&[("PCHAT_VOICE_DIR", &dir)]);
    let api = relay.api();
    let c = caption_for(&api, &bea, &id, Duration::from_secs(120)).await;
    assert!(words(c["caption"]["transcript"].as_str().unwrap()).contains("survive the crash"));
}

/// The whisper helper under `relay` (a python process running whisper_helper.py).
fn helper_pid(relay: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(relay) && cmd.contains("whisper_helper.py") && !stat.contains(") Z ") {
            return Some(pid);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_hook_gets_the_words_of_a_voice_clip() {
    let Some(dir) = voice_dir() else { return };
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_VOICE_DIR", &dir)]);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    persona(&sb, &relay.url, "agent@example.com", "agent-1");
    let seen = sb.path().join("seen");
    std::fs::create_dir_all(&seen).unwrap();
    let hook = script(
        &sb,
        "hook.sh",
        &format!(
            "cat > {s}/$GTS_WEBCHAT_MESSAGE_ID.json\nprintf '%s' \"$GTS_WEBCHAT_TRANSCRIPT\" > {s}/$GTS_WEBCHAT_MESSAGE_ID.transcript",
            s = seen.display()
        ),
    );
    ok(&gw(
        &sb,
        &[
            "daemon",
            "start",
            "--task",
            "v",
            "--as",
            "agent-1",
            "--on-message",
            hook.to_str().unwrap(),
        ],
    ));
    let clip = speak(&sb, "please summarize the meeting notes", "ask");
    let id = send_voice(&api, &ana, "agent-1", &clip).await;
    let transcript = wait_for(Duration::from_secs(90), "the hook to run", || {
        std::fs::read_to_string(seen.join(format!("{id}.transcript"))).ok()
    });
    assert!(
        words(&transcript).contains("summarize the meeting notes"),
        "{transcript}"
    );
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(seen.join(format!("{id}.json"))).unwrap())
            .unwrap();
    assert!(
        words(record["caption"]["transcript"].as_str().unwrap()).contains("meeting notes"),
        "{record}"
    );
    // tail shows the caption too.
    let out = ok(&gw(&sb, &["tail", "--task", "v", "-n", "5"]));
    assert!(out.contains("transcript (en):"), "{out}");
    ok(&gw(&sb, &["daemon", "stop", "--task", "v"]));
}
