//! Voice benchmarks on the real offline engines (the relay's faster-whisper helper, Apertium,
//! espeak-ng), through the real relay. Run by hand (never in `cargo test`):
//!
//!     GTSW_VOICE_DIR=~/.cache/gts-webchat/voice cargo bench --bench voice -- [wer|speed|caption|load|all]
//!
//! - wer: word error rate of English clips espeak-ng speaks, clean and with white noise at
//!   10 dB SNR (no package ships recorded human speech, so synthetic only).
//! - speed: a 10 s clip transcribed (median of 5), and 10 s of silence.
//! - caption: from a 10 s voice clip's send to its Spanish caption at the receiver; and from a
//!   text message's send to its translation.
//! - load: send-to-receive latency of text messages, idle and while 20 clips are transcribed.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use gts_webchat::api::Kind;
use gts_webchat::client::RelayClient;
use serde_json::{Value, json};

const SENTENCES: &[&str] = &[
    "the build finished and every test passed on the first try",
    "please send me the report before the meeting tomorrow morning",
    "the server restarted at midnight and the logs look clean",
    "we moved the release to thursday because of a late bug",
    "can you review the pull request when you have a moment",
    "the database backup took twelve minutes last night",
    "our customer asked for a short summary of the changes",
    "the new dashboard shows the error rate for each service",
    "remember to rotate the keys before the end of the month",
    "the deploy is waiting for one more approval from the team",
    "i fixed the flaky test by waiting for the file to appear",
    "the agent answered the question and closed the ticket",
    "traffic doubled after the announcement on monday",
    "let us meet in the small room after lunch",
    "the translation arrived a second after the message",
    "this branch needs a rebase before we can merge it",
    "the phone app shows the new messages right away",
    "we should write down how to restore from a backup",
    "the load test ran for an hour without a single error",
    "thank you for the quick answer and the clear notes",
];

fn voice_dir() -> String {
    std::env::var("GTSW_VOICE_DIR")
        .or_else(|_| std::env::var("PCHAT_VOICE_DIR"))
        .unwrap_or_else(|_| {
            dirs_home()
                .join(".cache/gts-webchat/voice")
                .display()
                .to_string()
        })
}

fn dirs_home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
}

/// A WAV clip of `text` spoken by espeak-ng.
fn speak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let wav = dir.join(format!("{name}.wav"));
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "espeak-ng is needed: apt-get install espeak-ng");
    wav
}

/// 16-bit PCM mono WAV: (header bytes, samples).
fn read_wav(path: &Path) -> (Vec<u8>, Vec<i16>) {
    let bytes = std::fs::read(path).unwrap();
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    let header = bytes[..data + 8].to_vec();
    let samples = bytes[data + 8..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (header, samples)
}

fn write_wav(path: &Path, header: &[u8], samples: &[i16]) {
    let mut out = header.to_vec();
    let data_len = (samples.len() * 2) as u32;
    let n = out.len();
    out[n - 4..].copy_from_slice(&data_len.to_le_bytes());
    let riff = (n as u32 - 8) + data_len;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// The clip with white noise added at `snr_db` (against the speech's own RMS).
fn with_noise(clean: &Path, snr_db: f64) -> PathBuf {
    let (header, samples) = read_wav(clean);
    let speech: Vec<f64> = samples.iter().map(|s| *s as f64).collect();
    let rms = (speech
        .iter()
        .filter(|s| s.abs() > 50.0)
        .map(|s| s * s)
        .sum::<f64>()
        / speech.iter().filter(|s| s.abs() > 50.0).count().max(1) as f64)
        .sqrt();
    let noise_rms = rms / 10f64.powf(snr_db / 20.0);
    // Uniform noise in [-a, a] has RMS a/sqrt(3).
    let a = noise_rms * 3f64.sqrt();
    let noisy: Vec<i16> = speech
        .iter()
        .map(|s| (s + rand::random_range(-a..a)).clamp(-32768.0, 32767.0) as i16)
        .collect();
    let out = clean.with_file_name(format!(
        "{}-noisy.wav",
        clean.file_stem().unwrap().to_string_lossy()
    ));
    write_wav(&out, &header, &noisy);
    out
}

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Word-level edit distance.
fn errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut cur = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(r != h))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[hypothesis.len()]
}

async fn transcribe(relay: &str, token: &str, clip: &Path) -> (String, Duration) {
    let bytes = std::fs::read(clip).unwrap();
    let part = reqwest::multipart::Part::bytes(bytes).file_name("clip.wav");
    let t = Instant::now();
    let v: Value = reqwest::Client::new()
        .post(format!("{relay}/api/v1/webchat/transcribe"))
        .header("X-PChat-Session", token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("transcribe")
        .json()
        .await
        .expect("json");
    let took = t.elapsed();
    (
        v["transcript"]
            .as_str()
            .unwrap_or_else(|| panic!("no transcript: {v}"))
            .to_string(),
        took,
    )
}

fn token(c: &RelayClient) -> String {
    c.token().unwrap_or_default().to_string()
}

async fn voice_relay(env: &Env) -> (Relay, RelayClient) {
    let dir = voice_dir();
    assert!(
        Path::new(&dir).join("venv/bin/python").is_file(),
        "no voice engines at {dir}: run scripts/install-voice.sh {dir}"
    );
    let relay = Relay::start(env, &[("PCHAT_VOICE_DIR", dir.as_str())]);
    let ana = login(&relay.url, "ana@example.com", "ana", Kind::Human).await;
    // The helper loads its model at start: wait for the first transcription to answer.
    let warm = speak(env.path(), "warm", "warming up");
    transcribe(&relay.url, &token(&ana), &warm).await;
    (relay, ana)
}

async fn bench_wer() -> Value {
    let env = Env::new();
    let (relay, ana) = voice_relay(&env).await;
    let (mut ref_words, mut clean_err, mut noisy_err) = (0, 0, 0);
    for (i, s) in SENTENCES.iter().enumerate() {
        let clip = speak(env.path(), &format!("s{i}"), s);
        let noisy = with_noise(&clip, 10.0);
        let reference = words(s);
        let (clean, _) = transcribe(&relay.url, &token(&ana), &clip).await;
        let (dirty, _) = transcribe(&relay.url, &token(&ana), &noisy).await;
        ref_words += reference.len();
        clean_err += errors(&reference, &words(&clean));
        noisy_err += errors(&reference, &words(&dirty));
    }
    let clean_wer = clean_err as f64 / ref_words as f64;
    let noisy_wer = noisy_err as f64 / ref_words as f64;
    println!(
        "\nword error rate ({} sentences, {ref_words} words, espeak-ng en-us)",
        SENTENCES.len()
    );
    println!(
        "  clean                 {:>6.1} %   (target <= 5 %)",
        clean_wer * 100.0
    );
    println!(
        "  white noise, 10 dB    {:>6.1} %   (target <= 10 %)",
        noisy_wer * 100.0
    );
    json!({"sentences": SENTENCES.len(), "words": ref_words, "clean_wer": clean_wer, "noisy_10db_wer": noisy_wer})
}

/// A clip of about ten seconds: sentences spoken one after another.
fn ten_second_clip(dir: &Path) -> PathBuf {
    speak(dir, "ten", &SENTENCES[..4].join(". "))
}

fn clip_secs(clip: &Path) -> f64 {
    let (header, samples) = read_wav(clip);
    let rate = u32::from_le_bytes([header[24], header[25], header[26], header[27]]);
    samples.len() as f64 / rate as f64
}

async fn bench_speed() -> Value {
    let env = Env::new();
    let (relay, ana) = voice_relay(&env).await;
    let clip = ten_second_clip(env.path());
    let secs = clip_secs(&clip);
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(transcribe(&relay.url, &token(&ana), &clip).await.1);
    }
    let s = stats(times);
    // Ten seconds of silence (the clip with every sample zeroed).
    let (header, samples) = read_wav(&clip);
    let silence = env.path().join("silence.wav");
    write_wav(&silence, &header, &vec![0; samples.len()]);
    let (quiet, _) = transcribe(&relay.url, &token(&ana), &silence).await;
    println!("\ntranscription, {secs:.1} s clip (target <= 3 s on 2 cores)");
    header_row();
    row("transcribe (5 runs)", &s);
    println!("  silence gives {:?}", quiet);
    json!({"clip_secs": secs, "transcribe": s, "silence_transcript": quiet})
}

fn header_row() {
    println!(
        "  {:<44} {:>6} {:>10} {:>10} {:>10}",
        "", "n", "p50 ms", "p99 ms", "max ms"
    );
}

/// Long-polls `c` until an event of `kind` about `message_id` arrives; the time it did.
async fn wait_event(c: &RelayClient, after: &mut String, kind: &str, message_id: &str) -> Instant {
    loop {
        let r = c.poll(&poll_req(after, 30.0)).await.expect("poll");
        *after = r.next_cursor.clone();
        if r.messages
            .iter()
            .any(|m| m.event_type.as_str() == kind && m.message_id == message_id)
        {
            return Instant::now();
        }
    }
}

async fn upload_voice(c: &RelayClient, clip: &Path) -> String {
    let up = c.upload(clip, "voice", None).await.expect("upload");
    up.file_id
}

async fn send_voice(c: &RelayClient, from: &str, to: &str, file_id: &str) -> String {
    let mut req = send_req(from, to, String::new());
    req.attachments = Some(vec![gts_webchat::api::messages::AttachmentRef {
        file_id: file_id.to_string(),
        kind: Some("voice".into()),
    }]);
    c.send(&req).await.expect("send").message_id
}

async fn bench_caption() -> Value {
    let env = Env::new();
    let (relay, ana) = voice_relay(&env).await;
    let bea = login(&relay.url, "bea@example.com", "bea", Kind::Human).await;
    bea.request(reqwest::Method::PUT, "/api/v1/webchat/language-prefs")
        .json(&json!({"receive_language": "es"}))
        .send()
        .await
        .expect("prefs");
    let clip = ten_second_clip(env.path());
    let mut after = bea.me().await.expect("me").stream_head;
    let (mut voice, mut text) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let file = upload_voice(&ana, &clip).await;
        let sent = Instant::now();
        let id = send_voice(&ana, "ana", "bea", &file).await;
        let got = wait_event(&bea, &mut after, "caption", &id).await;
        voice.push(got - sent);
    }
    for (i, sentence) in SENTENCES.iter().take(10).enumerate() {
        let sent = Instant::now();
        let id = ana
            .send(&send_req("ana", "bea", format!("{sentence} number {i}")))
            .await
            .expect("send")
            .message_id;
        let got = wait_event(&bea, &mut after, "caption", &id).await;
        text.push(got - sent);
    }
    let (v, t) = (stats(voice), stats(text));
    println!("\ncaption latency at a Spanish-reading receiver");
    header_row();
    row("10 s voice clip -> caption (target <= 4 s)", &v);
    row("text -> translation (target <= 1 s)", &t);
    json!({"voice_clip_to_caption": v, "text_to_translation": t})
}

async fn bench_load() -> Value {
    let env = Env::new();
    let (relay, ana) = voice_relay(&env).await;
    let bea = login(&relay.url, "bea@example.com", "bea", Kind::Human).await;
    let cy = login(&relay.url, "cy@example.com", "cyd", Kind::Human).await;
    let measure = |n: usize| {
        let (ana, bea) = (ana.clone(), bea.clone());
        async move {
            let mut after = bea.me().await.expect("me").stream_head;
            let mut v = Vec::new();
            for i in 0..n {
                let t = Instant::now();
                let id = ana
                    .send(&send_req("ana", "bea", format!("ping {i}")))
                    .await
                    .expect("send")
                    .message_id;
                wait_event(&bea, &mut after, "message", &id).await;
                v.push(t.elapsed());
            }
            stats(v)
        }
    };
    let idle = measure(200).await;
    let clip = ten_second_clip(env.path());
    let file = upload_voice(&ana, &clip).await;
    for _ in 0..20 {
        send_voice(&ana, "ana", "cyd", &file).await;
    }
    let busy = measure(200).await;
    drop(cy);
    println!("\nsend -> receive (long-poll) latency, idle and with 20 clips being transcribed");
    header_row();
    row("idle", &idle);
    row("20 clips transcribing", &busy);
    json!({"idle": idle, "while_transcribing_20": busy})
}

fn main() {
    gts_webchat::client::install_crypto();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = which.is_empty() || which.iter().any(|w| w == "all");
    let wants = |name: &str| all || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if wants("wer") {
            write_json("voice-wer", bench_wer().await);
        }
        if wants("speed") {
            write_json("voice-speed", bench_speed().await);
        }
        if wants("caption") {
            write_json("voice-caption", bench_caption().await);
        }
        if wants("load") {
            write_json("voice-load", bench_load().await);
        }
    });
    let _ = Duration::ZERO;
}
