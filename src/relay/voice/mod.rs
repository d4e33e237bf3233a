//! Voice in your own language: a voice clip is transcribed once when stored, every receiver
//! whose receive language differs from the message's gets a translation, and with read-aloud
//! on a spoken clip of it. Delivery never waits: the work is a durable job (written with the
//! message), done by a worker, and its results arrive as `caption` events like edits.
//!
//! - `engines`: the providers (HTTP services, or Apertium, espeak-ng and the whisper helper).
//! - `helper`: the supervised faster-whisper process.
//! - `worker`: the job lanes.
//! - `api`: `/transcribe` and `/translate-text`.
//! - `languages`: tags and detection.

pub mod api;
pub mod engines;
pub mod helper;
pub mod languages;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::engines::{
    Apertium, EngineError, Espeak, HelperTranscriber, HttpSpeaker, HttpTranscriber, LibreTranslate,
    Speaker, Transcriber, Translator,
};
use self::helper::{Helper, VoiceDir};
use super::config::VoiceConfig;

/// How to get each engine, for the "unavailable" answers.
pub const HOW_TRANSCRIBE: &str = "install the offline engines with scripts/install-voice.sh (then restart the relay), or set PCHAT_TRANSCRIBE_URL to a whisper server";
pub const HOW_TRANSLATE: &str = "install Apertium (apt-get install apertium apertium-eng-spa), or set PCHAT_TRANSLATE_URL to a LibreTranslate server";
pub const HOW_SPEAK: &str =
    "install espeak-ng (apt-get install espeak-ng), or set PCHAT_TTS_URL to a speech server";

/// The engines this relay has, and the worker's doorbell.
pub struct Voice {
    pub transcriber: Option<Arc<dyn Transcriber>>,
    pub translator: Option<Arc<dyn Translator>>,
    pub speaker: Option<Arc<dyn Speaker>>,
    pub helper: Option<Arc<Helper>>,
    pub config: VoiceConfig,
    bell: Notify,
}

impl Voice {
    /// No engines (tests of the rest of the relay, and `PCHAT_VOICE_ENGINES=none`).
    pub fn none(config: VoiceConfig) -> Voice {
        Voice {
            transcriber: None,
            translator: None,
            speaker: None,
            helper: None,
            config,
            bell: Notify::new(),
        }
    }

    /// Whatever is configured, else whatever is installed. The helper starts now (inside the
    /// runtime) and lives until `shutdown`.
    pub fn start(config: VoiceConfig, shutdown: CancellationToken) -> Voice {
        if !config.enabled {
            return Voice::none(config);
        }
        let mut helper = None;
        let transcriber: Option<Arc<dyn Transcriber>> = match &config.transcribe_url {
            Some(url) => Some(Arc::new(HttpTranscriber::new(
                "transcription service",
                url,
                config.transcribe_key.clone(),
                &config.transcribe_model,
            ))),
            None => match config.dir.as_ref().map(|d| VoiceDir { root: d.clone() }) {
                Some(dir) if dir.installed() => match helper::start(&dir, shutdown) {
                    Ok(h) => {
                        helper = Some(h.clone());
                        Some(Arc::new(HelperTranscriber::new(h)))
                    }
                    Err(e) => {
                        tracing::warn!("cannot start the whisper helper: {e}");
                        None
                    }
                },
                _ => None,
            },
        };
        let translator: Option<Arc<dyn Translator>> = match &config.translate_url {
            Some(url) => Some(Arc::new(LibreTranslate::new(
                url,
                config.translate_key.clone(),
            ))),
            None => Apertium::discover().map(|a| Arc::new(a) as Arc<dyn Translator>),
        };
        let speaker: Option<Arc<dyn Speaker>> = match &config.tts_url {
            Some(url) => Some(Arc::new(HttpSpeaker::new(
                url,
                config.tts_key.clone(),
                &config.tts_voice,
            ))),
            None => Espeak::discover().map(|e| Arc::new(e) as Arc<dyn Speaker>),
        };
        let name = |e: Option<String>| e.unwrap_or_else(|| "none".into());
        tracing::info!(
            transcription = %name(transcriber.as_ref().map(|t| t.name())),
            translation = %name(translator.as_ref().map(|t| t.name())),
            speech = %name(speaker.as_ref().map(|t| t.name())),
            "voice engines"
        );
        Voice {
            transcriber,
            translator,
            speaker,
            helper,
            config,
            bell: Notify::new(),
        }
    }

    /// Tells the worker a job was queued.
    pub fn wake(&self) {
        self.bell.notify_waiters();
    }

    /// What a waiting worker lane listens on (enable it before looking for work).
    pub fn bell_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.bell.notified()
    }

    pub fn transcriber(&self) -> Result<&Arc<dyn Transcriber>, EngineError> {
        self.transcriber.as_ref().ok_or(EngineError::Unavailable {
            job: "speech-to-text",
            how: HOW_TRANSCRIBE,
        })
    }

    pub fn translator(&self) -> Result<&Arc<dyn Translator>, EngineError> {
        self.translator.as_ref().ok_or(EngineError::Unavailable {
            job: "translation",
            how: HOW_TRANSLATE,
        })
    }

    pub fn speaker(&self) -> Result<&Arc<dyn Speaker>, EngineError> {
        self.speaker.as_ref().ok_or(EngineError::Unavailable {
            job: "text-to-speech",
            how: HOW_SPEAK,
        })
    }

    /// Bounds one engine call by the configured timeout.
    pub async fn bounded<T>(
        &self,
        engine: &str,
        work: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let secs = self.config.timeout_secs;
        match tokio::time::timeout(std::time::Duration::from_secs(secs), work).await {
            Ok(r) => r,
            Err(_) => Err(EngineError::Timeout {
                engine: engine.to_string(),
                secs,
            }),
        }
    }
}
