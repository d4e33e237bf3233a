//! The three jobs (speech to text, translation, text to speech), each a provider behind a trait,
//! chosen by settings: an HTTP service users run (OpenAI-style transcription and speech,
//! LibreTranslate), or what runs offline here (the built-in whisper helper, Apertium,
//! espeak-ng). Every call is bounded by the caller's timeout; process engines die with it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::helper::Helper;
use super::languages;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// No provider is configured for the job.
    #[error("no {job} engine is set up on this relay; {how}")]
    Unavailable {
        job: &'static str,
        how: &'static str,
    },
    #[error("{engine} cannot translate from {from} to {to}")]
    UnsupportedPair {
        engine: String,
        from: String,
        to: String,
    },
    /// The input is not something the engine can take (not audio, an unknown language).
    #[error("{engine} refused it: {detail}")]
    Refused { engine: String, detail: String },
    #[error("{engine} failed: {detail}")]
    Failed { engine: String, detail: String },
    #[error("{engine} took longer than {secs} s")]
    Timeout { engine: String, secs: u64 },
}

impl EngineError {
    /// Whether trying again (later, or after a restart) may work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EngineError::Failed { .. } | EngineError::Timeout { .. }
        )
    }
}

pub type EngineResult<T> = Result<T, EngineError>;

/// What speech to text produced.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub text: String,
    pub language: Option<String>,
    pub duration_ms: u64,
}

#[async_trait]
pub trait Transcriber: Send + Sync {
    fn name(&self) -> String;
    async fn transcribe(
        &self,
        audio: &Path,
        file_name: &str,
        mime: &str,
        language: Option<&str>,
    ) -> EngineResult<Transcript>;
}

#[async_trait]
pub trait Translator: Send + Sync {
    fn name(&self) -> String;
    async fn translate(&self, text: &str, source: &str, target: &str) -> EngineResult<String>;
}

#[async_trait]
pub trait Speaker: Send + Sync {
    fn name(&self) -> String;
    /// Speech for `text` in `language`: the bytes and their MIME type.
    async fn speak(&self, text: &str, language: &str) -> EngineResult<(Vec<u8>, &'static str)>;
}

fn http() -> reqwest::Client {
    crate::client::install_crypto();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

fn endpoint(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(path.trim_start_matches("/v1")) {
        base.to_string()
    } else {
        format!("{base}{path}")
    }
}

/// The error text of an HTTP engine's answer: `{error: {message}}`, `{error: "…"}`, or text.
fn http_error(status: u16, body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let msg = v["error"]["message"]
        .as_str()
        .or(v["error"].as_str())
        .or(v["detail"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    format!("HTTP {status}: {msg}")
}

/// OpenAI-style `POST /v1/audio/transcriptions` (faster-whisper-server, whisper.cpp's server,
/// LocalAI, speaches, OpenAI, and the built-in helper).
pub struct HttpTranscriber {
    pub label: String,
    pub url: String,
    pub key: Option<String>,
    pub model: String,
    client: reqwest::Client,
}

impl HttpTranscriber {
    pub fn new(label: &str, url: &str, key: Option<String>, model: &str) -> HttpTranscriber {
        HttpTranscriber {
            label: label.to_string(),
            url: endpoint(url, "/v1/audio/transcriptions"),
            key,
            model: model.to_string(),
            client: http(),
        }
    }
}

impl HttpTranscriber {
    async fn post(
        &self,
        audio: &Path,
        file_name: &str,
        mime: &str,
        language: Option<&str>,
    ) -> EngineResult<Transcript> {
        let (client, engine, url, key, model) = (
            &self.client,
            self.label.as_str(),
            self.url.as_str(),
            self.key.as_deref(),
            self.model.as_str(),
        );
        let failed = |detail: String| EngineError::Failed {
            engine: engine.to_string(),
            detail,
        };
        let bytes = tokio::fs::read(audio)
            .await
            .map_err(|e| failed(format!("reading the clip: {e}")))?;
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(file_name.to_string())
            .mime_str(mime)
            .or_else(|_| {
                reqwest::multipart::Part::bytes(Vec::new()).mime_str("application/octet-stream")
            })
            .map_err(|e| failed(e.to_string()))?;
        let mut form = reqwest::multipart::Form::new()
            .part("file", part)
            .text("model", model.to_string())
            .text("response_format", "verbose_json");
        if let Some(l) = language {
            form = form.text("language", languages::primary(l));
        }
        let mut req = client.post(url).multipart(form);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| failed(format!("cannot reach {url}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?;
        if !(200..300).contains(&status) {
            let detail = http_error(status, &body);
            return Err(if status < 500 {
                EngineError::Refused {
                    engine: engine.to_string(),
                    detail,
                }
            } else {
                failed(detail)
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("the answer is not JSON: {e}")))?;
        Ok(Transcript {
            text: v["text"].as_str().unwrap_or_default().trim().to_string(),
            language: v["language"]
                .as_str()
                .map(|l| languages::bcp47(l).unwrap_or(l).to_string())
                .map(|l| languages::primary(&l)),
            duration_ms: (v["duration"].as_f64().unwrap_or(0.0) * 1000.0) as u64,
        })
    }
}

#[async_trait]
impl Transcriber for HttpTranscriber {
    fn name(&self) -> String {
        self.label.clone()
    }
    async fn transcribe(
        &self,
        audio: &Path,
        file_name: &str,
        mime: &str,
        language: Option<&str>,
    ) -> EngineResult<Transcript> {
        self.post(audio, file_name, mime, language).await
    }
}

/// The built-in helper: faster-whisper in a local process the relay supervises.
pub struct HelperTranscriber {
    pub helper: Arc<Helper>,
    client: reqwest::Client,
}

impl HelperTranscriber {
    pub fn new(helper: Arc<Helper>) -> HelperTranscriber {
        HelperTranscriber {
            helper,
            client: http(),
        }
    }
}

#[async_trait]
impl Transcriber for HelperTranscriber {
    fn name(&self) -> String {
        format!("faster-whisper {} (built in)", self.helper.model_name())
    }
    async fn transcribe(
        &self,
        audio: &Path,
        file_name: &str,
        mime: &str,
        language: Option<&str>,
    ) -> EngineResult<Transcript> {
        let base = self
            .helper
            .ready_url()
            .await
            .ok_or_else(|| EngineError::Failed {
                engine: self.name(),
                detail: "the whisper helper is not running (it is being restarted)".into(),
            })?;
        let endpoint = HttpTranscriber {
            label: self.name(),
            url: format!("{base}/v1/audio/transcriptions"),
            key: None,
            model: "whisper".into(),
            client: self.client.clone(),
        };
        endpoint.post(audio, file_name, mime, language).await
    }
}

/// Runs `program args`, feeding `input`, and returns stdout (bounded by the caller's timeout:
/// the process is killed when the future is dropped).
async fn run_process(
    engine: &str,
    program: &Path,
    args: &[&str],
    input: &str,
) -> EngineResult<Vec<u8>> {
    let failed = |detail: String| EngineError::Failed {
        engine: engine.to_string(),
        detail,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot start {}: {e}", program.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.as_bytes().to_vec();
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!(
            "{} ({})",
            err.trim().lines().last().unwrap_or("no message"),
            out.status
        )));
    }
    Ok(out.stdout)
}

/// Apertium (`apertium -u eng-spa`): offline, gist quality, the installed pairs only.
pub struct Apertium {
    pub program: PathBuf,
    /// Installed modes, such as "eng-spa".
    pub modes: Vec<String>,
}

impl Apertium {
    /// Finds apertium on PATH and its installed pairs.
    pub fn discover() -> Option<Apertium> {
        let program = crate::hosts::turn::locate("apertium")?;
        let mut modes: Vec<String> = [
            "/usr/share/apertium/modes",
            "/usr/local/share/apertium/modes",
        ]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".mode"))
                .map(str::to_string)
        })
        .collect();
        modes.sort();
        (!modes.is_empty()).then_some(Apertium { program, modes })
    }

    fn mode(&self, source: &str, target: &str) -> Option<String> {
        let (s, t) = (languages::iso3(source)?, languages::iso3(target)?);
        let (s2, t2) = (languages::primary(source), languages::primary(target));
        [format!("{s}-{t}"), format!("{s2}-{t2}")]
            .into_iter()
            .find(|m| self.modes.contains(m))
    }
}

#[async_trait]
impl Translator for Apertium {
    fn name(&self) -> String {
        "apertium".into()
    }
    async fn translate(&self, text: &str, source: &str, target: &str) -> EngineResult<String> {
        let Some(mode) = self.mode(source, target) else {
            return Err(EngineError::UnsupportedPair {
                engine: format!("apertium (installed pairs: {})", self.modes.join(", ")),
                from: source.to_string(),
                to: target.to_string(),
            });
        };
        let out = run_process("apertium", &self.program, &["-u", &mode], text).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }
}

/// LibreTranslate's API: `POST /translate {q, source, target, format}`.
pub struct LibreTranslate {
    pub url: String,
    pub key: Option<String>,
    client: reqwest::Client,
}

impl LibreTranslate {
    pub fn new(url: &str, key: Option<String>) -> LibreTranslate {
        LibreTranslate {
            url: endpoint(url, "/translate"),
            key,
            client: http(),
        }
    }
}

#[async_trait]
impl Translator for LibreTranslate {
    fn name(&self) -> String {
        "libretranslate".into()
    }
    async fn translate(&self, text: &str, source: &str, target: &str) -> EngineResult<String> {
        let failed = |detail: String| EngineError::Failed {
            engine: self.name(),
            detail,
        };
        let mut body = serde_json::json!({
            "q": text, "source": languages::primary(source),
            "target": languages::primary(target), "format": "text",
        });
        if let Some(k) = &self.key {
            body["api_key"] = serde_json::json!(k);
        }
        let resp = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| failed(format!("cannot reach {}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| failed(e.to_string()))?;
        if status == 400 {
            return Err(EngineError::UnsupportedPair {
                engine: format!("libretranslate ({})", http_error(status, &bytes)),
                from: source.to_string(),
                to: target.to_string(),
            });
        }
        if !(200..300).contains(&status) {
            return Err(failed(http_error(status, &bytes)));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| failed(e.to_string()))?;
        Ok(v["translatedText"].as_str().unwrap_or_default().to_string())
    }
}

/// espeak-ng: offline speech in many languages, written as WAV.
pub struct Espeak {
    pub program: PathBuf,
}

impl Espeak {
    pub fn discover() -> Option<Espeak> {
        crate::hosts::turn::locate("espeak-ng").map(|program| Espeak { program })
    }
}

#[async_trait]
impl Speaker for Espeak {
    fn name(&self) -> String {
        "espeak-ng".into()
    }
    async fn speak(&self, text: &str, language: &str) -> EngineResult<(Vec<u8>, &'static str)> {
        let dir = tempfile::tempdir().map_err(|e| EngineError::Failed {
            engine: self.name(),
            detail: e.to_string(),
        })?;
        let wav = dir.path().join("speech.wav");
        let voice = languages::primary(language);
        let wav_text = wav.display().to_string();
        run_process(
            "espeak-ng",
            &self.program,
            &["-v", &voice, "--stdin", "-w", &wav_text],
            text,
        )
        .await?;
        let bytes = tokio::fs::read(&wav)
            .await
            .map_err(|e| EngineError::Failed {
                engine: self.name(),
                detail: e.to_string(),
            })?;
        Ok((bytes, "audio/wav"))
    }
}

/// OpenAI-style `POST /v1/audio/speech {model, input, voice, response_format}`.
pub struct HttpSpeaker {
    pub url: String,
    pub key: Option<String>,
    pub voice: String,
    client: reqwest::Client,
}

impl HttpSpeaker {
    pub fn new(url: &str, key: Option<String>, voice: &str) -> HttpSpeaker {
        HttpSpeaker {
            url: endpoint(url, "/v1/audio/speech"),
            key,
            voice: voice.to_string(),
            client: http(),
        }
    }
}

#[async_trait]
impl Speaker for HttpSpeaker {
    fn name(&self) -> String {
        "speech service".into()
    }
    async fn speak(&self, text: &str, _language: &str) -> EngineResult<(Vec<u8>, &'static str)> {
        let failed = |detail: String| EngineError::Failed {
            engine: self.name(),
            detail,
        };
        let mut req = self.client.post(&self.url).json(&serde_json::json!({
            "model": "tts-1", "input": text, "voice": self.voice, "response_format": "wav",
        }));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| failed(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| failed(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(failed(http_error(status, &bytes)));
        }
        Ok((bytes.to_vec(), "audio/wav"))
    }
}
