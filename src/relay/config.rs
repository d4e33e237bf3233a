//! Relay settings: command-line flags, then the process environment, then an env file
//! (`--env-file`, or `.env.local` in the working directory), then defaults. The keys are the
//! seed's (HOST, PORT, BRIDGE_DB_PATH, PCHAT_UPLOAD_DIR, PCHAT_FREE_MODE_ENABLED,
//! PCHAT_DEV_EXPOSE_CODES, SMTP_*), plus a few PCHAT_* tuning keys of our own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::store::SyncMode;

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 5110;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading env file {path}: {source}")]
    EnvFile {
        path: String,
        #[source]
        source: dotenvy::Error,
    },
    #[error("{key}={value:?} is not valid: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("no data directory could be found for this user; pass --data-dir or set XDG_DATA_HOME")]
    NoDataDir,
}

/// Flags of `gts-webchat relay` that override the environment.
#[derive(Debug, Clone, Default)]
pub struct RelayFlags {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
    /// `postgres://…` or `sqlite:PATH` (else DATABASE_URL; neither: SQLite in the data dir).
    pub database: Option<String>,
}

/// How the relay reaches its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    StartTls,
    Tls,
    None,
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub security: SmtpSecurity,
}

// Hand-written so the password can never reach a log through `{:?}`.
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("security", &self.security)
            .finish()
    }
}

/// Which engines enrich messages (speech to text, translation, speech), and their limits.
#[derive(Clone)]
pub struct VoiceConfig {
    /// `PCHAT_VOICE_ENGINES`: `auto` (the default: what is configured or installed) or `none`.
    pub enabled: bool,
    /// The venv and models scripts/install-voice.sh made (PCHAT_VOICE_DIR).
    pub dir: Option<PathBuf>,
    /// OpenAI-style transcription service (PCHAT_TRANSCRIBE_URL, _KEY, _MODEL).
    pub transcribe_url: Option<String>,
    pub transcribe_key: Option<String>,
    pub transcribe_model: String,
    /// LibreTranslate (PCHAT_TRANSLATE_URL, _KEY).
    pub translate_url: Option<String>,
    pub translate_key: Option<String>,
    /// OpenAI-style speech (PCHAT_TTS_URL, _KEY, _VOICE).
    pub tts_url: Option<String>,
    pub tts_key: Option<String>,
    pub tts_voice: String,
    /// Per job step, seconds (PCHAT_VOICE_TIMEOUT_SECS, default 120).
    pub timeout_secs: u64,
    /// Jobs waiting beyond this are captioned "too busy" at once (PCHAT_VOICE_QUEUE, 200).
    pub queue_bound: u64,
}

// Hand-written so keys never reach a log.
impl std::fmt::Debug for VoiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceConfig")
            .field("enabled", &self.enabled)
            .field("dir", &self.dir)
            .field("transcribe_url", &self.transcribe_url)
            .field("translate_url", &self.translate_url)
            .field("tts_url", &self.tts_url)
            .field("timeout_secs", &self.timeout_secs)
            .field("queue_bound", &self.queue_bound)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    /// Whether a port was asked for (flag or PORT); if not, a busy default moves on.
    pub port_explicit: bool,
    pub data_dir: PathBuf,
    pub db_path: PathBuf,
    /// A PostgreSQL URL: storage shared with other relays instead of the SQLite file.
    pub postgres_url: Option<String>,
    pub upload_dir: PathBuf,
    /// Anyone may register by email (the seed's free public relay). When off, only
    /// existing identities and PCHAT_ALLOWED_EMAILS may log in.
    pub free_mode: bool,
    pub allowed_emails: Vec<String>,
    /// PCHAT_DEV_EXPOSE_CODES as set; `None` means "decide from SMTP and the bind address".
    pub dev_expose_codes: Option<bool>,
    pub smtp: Option<SmtpConfig>,
    pub session_ttl_secs: i64,
    /// Presence not refreshed for this long is offline (PCHAT_PRESENCE_TTL_SECS, default 90).
    pub presence_ttl_secs: i64,
    /// How long a login code stays valid (PCHAT_CODE_TTL_SECS, default 600).
    pub code_ttl_secs: u64,
    pub max_upload_bytes: u64,
    /// Login codes one email may request per 10 minutes (0 = unlimited).
    pub code_rate_per_email: u32,
    /// Login codes one IP may request per 10 minutes (0 = unlimited).
    pub code_rate_per_ip: u32,
    pub sync: SyncMode,
    /// Web origins besides the relay's own that may call it from a browser
    /// (PCHAT_CORS_ORIGINS, comma-separated `scheme://host[:port]`).
    pub cors_origins: Vec<String>,
    /// Host names a loopback-bound relay answers to besides loopback ones (PCHAT_ALLOWED_HOSTS).
    pub allowed_hosts: Vec<String>,
    pub voice: VoiceConfig,
    pub callbacks: CallbacksConfig,
    pub bridge: BridgeConfig,
    /// PCHAT_TRUSTED_PROXIES: reverse proxies whose X-Forwarded-For is believed (addresses or
    /// CIDR networks, comma-separated).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// PCHAT_METRICS: who may read `/metrics` (`loopback`, the default; `on`; `off`).
    pub metrics: super::telemetry::Exposure,
}

/// The PhoneRelay bridge that carries sms, wa, tg and notify messages (retried like callbacks,
/// for PCHAT_CALLBACK_RETRY_SECS).
#[derive(Clone, Default)]
pub struct BridgeConfig {
    /// PHONE_RELAY_BRIDGE_URL: where outbound messages are POSTed.
    pub url: Option<String>,
    /// PHONE_RELAY_BRIDGE_SECRET: the `whsec_…` they are signed with.
    pub secret: Option<String>,
}

// Hand-written so the secret never reaches a log.
impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Inbound callbacks: where they may point and how long a delivery is retried.
#[derive(Debug, Clone)]
pub struct CallbacksConfig {
    /// PCHAT_CALLBACKS_ALLOW_PRIVATE: URLs on loopback, private and link-local addresses too.
    pub allow_private: bool,
    /// PCHAT_CALLBACK_RETRY_SECS: how long a delivery is retried (default 24 h).
    pub retry_secs: u64,
    /// PCHAT_CALLBACK_BACKOFF_MS: the first retry's delay, doubled each try (default 5 s, at
    /// most an hour between tries).
    pub backoff_ms: u64,
    /// PCHAT_CALLBACKS_PER_IDENTITY (default 10).
    pub per_identity: u32,
}

/// `scheme://host[:port]` in the form browsers send in `Origin` (lowercase, no default port,
/// no path), or why not.
pub fn normalize_origin(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{raw:?} is not an http(s) origin"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "{raw:?} has a path; give only scheme://host[:port]"
        ));
    }
    Ok(url.origin().ascii_serialization())
}

fn comma_list(v: Option<&str>) -> impl Iterator<Item = &str> {
    v.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Invalid {
            key,
            value: v.to_string(),
            why: "expected true or false".into(),
        }),
    }
}

fn parse_num<T: std::str::FromStr>(key: &'static str, v: &str) -> Result<T, ConfigError> {
    v.trim().parse().map_err(|_| ConfigError::Invalid {
        key,
        value: v.to_string(),
        why: "expected a whole number".into(),
    })
}

/// The data directory a relay uses when none is given: `$XDG_DATA_HOME/gts-webchat`.
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("gts-webchat"))
}

pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

impl RelayConfig {
    /// Loads settings; `env` is the process environment (passed in so tests stay pure).
    pub fn load(
        flags: &RelayFlags,
        env: &HashMap<String, String>,
    ) -> Result<RelayConfig, ConfigError> {
        let mut vars: HashMap<String, String> = HashMap::new();
        let env_file = flags
            .env_file
            .clone()
            .or_else(|| Some(PathBuf::from(".env.local")).filter(|p| p.is_file()));
        if let Some(path) = env_file {
            let iter = dotenvy::from_path_iter(&path).map_err(|source| ConfigError::EnvFile {
                path: path.display().to_string(),
                source,
            })?;
            for item in iter {
                let (k, v) = item.map_err(|source| ConfigError::EnvFile {
                    path: path.display().to_string(),
                    source,
                })?;
                vars.insert(k, v);
            }
        }
        // The process environment wins over the file, as with dotenv everywhere.
        for (k, v) in env {
            vars.insert(k.clone(), v.clone());
        }
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());

        let host = flags
            .host
            .clone()
            .or_else(|| get("HOST").map(str::to_string))
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let (port, port_explicit) = match (flags.port, get("PORT")) {
            (Some(p), _) => (p, true),
            (None, Some(p)) => (parse_num("PORT", p)?, true),
            (None, None) => (DEFAULT_PORT, false),
        };
        let data_dir = match &flags.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        let rel = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                data_dir.join(p)
            }
        };
        let mut db_path = get("BRIDGE_DB_PATH")
            .map(rel)
            .unwrap_or_else(|| data_dir.join("bridge.db"));
        let mut postgres_url = None;
        let database = flags
            .database
            .clone()
            .or_else(|| get("DATABASE_URL").map(str::to_string))
            .filter(|d| !d.trim().is_empty());
        if let Some(d) = database {
            let d = d.trim();
            if d.starts_with("postgres://") || d.starts_with("postgresql://") {
                postgres_url = Some(d.to_string());
            } else if let Some(path) = d.strip_prefix("sqlite:") {
                db_path = rel(path.trim_start_matches("//"));
            } else {
                return Err(ConfigError::Invalid {
                    key: "DATABASE_URL",
                    // Only the scheme: the rest may hold a password.
                    value: d.split(':').next().unwrap_or_default().to_string(),
                    why: "expected postgres://user@host/db or sqlite:PATH".into(),
                });
            }
        }
        let upload_dir = get("PCHAT_UPLOAD_DIR")
            .map(rel)
            .unwrap_or_else(|| data_dir.join("pchat_uploads"));
        let free_mode = match get("PCHAT_FREE_MODE_ENABLED") {
            Some(v) => parse_bool("PCHAT_FREE_MODE_ENABLED", v)?,
            None => true,
        };
        let allowed_emails = get("PCHAT_ALLOWED_EMAILS")
            .map(|v| {
                v.split(',')
                    .map(|e| e.trim().to_ascii_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let dev_expose_codes = match get("PCHAT_DEV_EXPOSE_CODES") {
            Some(v) => Some(parse_bool("PCHAT_DEV_EXPOSE_CODES", v)?),
            None => None,
        };
        let smtp = match get("SMTP_HOST") {
            None => None,
            Some(h) => {
                let port: u16 = match get("SMTP_PORT") {
                    Some(p) => parse_num("SMTP_PORT", p)?,
                    None => 587,
                };
                let security = match get("SMTP_SECURITY").map(str::to_ascii_lowercase) {
                    None if port == 465 => SmtpSecurity::Tls,
                    None => SmtpSecurity::StartTls,
                    Some(s) if s == "starttls" => SmtpSecurity::StartTls,
                    Some(s) if s == "tls" => SmtpSecurity::Tls,
                    Some(s) if s == "none" => SmtpSecurity::None,
                    Some(s) => {
                        return Err(ConfigError::Invalid {
                            key: "SMTP_SECURITY",
                            value: s,
                            why: "expected starttls, tls or none".into(),
                        });
                    }
                };
                let username = get("SMTP_USERNAME").map(str::to_string);
                let from = get("SMTP_FROM")
                    .map(str::to_string)
                    .or_else(|| username.clone().filter(|u| u.contains('@')))
                    .unwrap_or_else(|| format!("webchat@{h}"));
                Some(SmtpConfig {
                    host: h.to_string(),
                    port,
                    username,
                    password: get("SMTP_PASSWORD").map(str::to_string),
                    from,
                    security,
                })
            }
        };
        let session_ttl_days: i64 = match get("PCHAT_SESSION_TTL_DAYS") {
            Some(v) => parse_num("PCHAT_SESSION_TTL_DAYS", v)?,
            None => 30,
        };
        let presence_ttl_secs: i64 = match get("PCHAT_PRESENCE_TTL_SECS") {
            Some(v) => parse_num("PCHAT_PRESENCE_TTL_SECS", v)?,
            None => crate::api::PRESENCE_TTL_SECS,
        };
        let code_ttl_secs: u64 = match get("PCHAT_CODE_TTL_SECS") {
            Some(v) => parse_num("PCHAT_CODE_TTL_SECS", v)?,
            None => 600,
        };
        let max_upload_mb: u64 = match get("PCHAT_MAX_UPLOAD_MB") {
            Some(v) => parse_num("PCHAT_MAX_UPLOAD_MB", v)?,
            None => 25,
        };
        let code_rate_per_email = match get("PCHAT_CODE_RATE_PER_EMAIL") {
            Some(v) => parse_num("PCHAT_CODE_RATE_PER_EMAIL", v)?,
            None => 5,
        };
        let code_rate_per_ip = match get("PCHAT_CODE_RATE_PER_IP") {
            Some(v) => parse_num("PCHAT_CODE_RATE_PER_IP", v)?,
            None => 60,
        };
        let sync = match get("PCHAT_SQLITE_SYNC").map(str::to_ascii_lowercase) {
            None => SyncMode::Full,
            Some(s) if s == "full" => SyncMode::Full,
            Some(s) if s == "normal" => SyncMode::Normal,
            Some(s) => {
                return Err(ConfigError::Invalid {
                    key: "PCHAT_SQLITE_SYNC",
                    value: s,
                    why: "expected full or normal".into(),
                });
            }
        };
        let cors_origins = comma_list(get("PCHAT_CORS_ORIGINS"))
            .map(|o| {
                normalize_origin(o).map_err(|why| ConfigError::Invalid {
                    key: "PCHAT_CORS_ORIGINS",
                    value: o.to_string(),
                    why,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allowed_hosts = comma_list(get("PCHAT_ALLOWED_HOSTS"))
            .map(str::to_ascii_lowercase)
            .collect();
        let voice = VoiceConfig {
            enabled: match get("PCHAT_VOICE_ENGINES").map(str::to_ascii_lowercase) {
                None => true,
                Some(v) if v == "auto" => true,
                Some(v) if v == "none" => false,
                Some(v) => {
                    return Err(ConfigError::Invalid {
                        key: "PCHAT_VOICE_ENGINES",
                        value: v,
                        why: "expected auto or none".into(),
                    });
                }
            },
            dir: get("PCHAT_VOICE_DIR")
                .map(PathBuf::from)
                .or_else(|| default_data_dir().map(|d| d.join("voice"))),
            transcribe_url: get("PCHAT_TRANSCRIBE_URL").map(str::to_string),
            transcribe_key: get("PCHAT_TRANSCRIBE_KEY").map(str::to_string),
            transcribe_model: get("PCHAT_TRANSCRIBE_MODEL")
                .unwrap_or("whisper-1")
                .to_string(),
            translate_url: get("PCHAT_TRANSLATE_URL").map(str::to_string),
            translate_key: get("PCHAT_TRANSLATE_KEY").map(str::to_string),
            tts_url: get("PCHAT_TTS_URL").map(str::to_string),
            tts_key: get("PCHAT_TTS_KEY").map(str::to_string),
            tts_voice: get("PCHAT_TTS_VOICE").unwrap_or("alloy").to_string(),
            timeout_secs: match get("PCHAT_VOICE_TIMEOUT_SECS") {
                Some(v) => parse_num::<u64>("PCHAT_VOICE_TIMEOUT_SECS", v)?.clamp(1, 3600),
                None => 120,
            },
            queue_bound: match get("PCHAT_VOICE_QUEUE") {
                Some(v) => parse_num("PCHAT_VOICE_QUEUE", v)?,
                None => 200,
            },
        };
        let callbacks = CallbacksConfig {
            allow_private: match get("PCHAT_CALLBACKS_ALLOW_PRIVATE") {
                Some(v) => parse_bool("PCHAT_CALLBACKS_ALLOW_PRIVATE", v)?,
                None => false,
            },
            retry_secs: match get("PCHAT_CALLBACK_RETRY_SECS") {
                Some(v) => parse_num::<u64>("PCHAT_CALLBACK_RETRY_SECS", v)?.clamp(1, 30 * 86_400),
                None => 86_400,
            },
            backoff_ms: match get("PCHAT_CALLBACK_BACKOFF_MS") {
                Some(v) => parse_num::<u64>("PCHAT_CALLBACK_BACKOFF_MS", v)?.clamp(10, 3_600_000),
                None => 5_000,
            },
            per_identity: match get("PCHAT_CALLBACKS_PER_IDENTITY") {
                Some(v) => parse_num::<u32>("PCHAT_CALLBACKS_PER_IDENTITY", v)?.clamp(1, 1000),
                None => 10,
            },
        };
        let bridge = BridgeConfig {
            url: match get("PHONE_RELAY_BRIDGE_URL")
                .map(str::trim)
                .filter(|u| !u.is_empty())
            {
                None => None,
                Some(u) => match url::Url::parse(u) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") => Some(u.to_string()),
                    _ => {
                        return Err(ConfigError::Invalid {
                            key: "PHONE_RELAY_BRIDGE_URL",
                            value: u.to_string(),
                            why: "expected an http or https URL".into(),
                        });
                    }
                },
            },
            secret: get("PHONE_RELAY_BRIDGE_SECRET")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        };
        if bridge.url.is_some() && bridge.secret.is_none() {
            return Err(ConfigError::Invalid {
                key: "PHONE_RELAY_BRIDGE_SECRET",
                value: String::new(),
                why: "the bridge URL is set, so its signing secret is needed too: \
                      a whsec_… shared with the bridge"
                    .into(),
            });
        }
        let metrics = match get("PCHAT_METRICS").map(str::to_ascii_lowercase).as_deref() {
            None | Some("loopback") => super::telemetry::Exposure::Loopback,
            Some("on") => super::telemetry::Exposure::Everyone,
            Some("off") => super::telemetry::Exposure::Off,
            Some(v) => {
                return Err(ConfigError::Invalid {
                    key: "PCHAT_METRICS",
                    value: v.to_string(),
                    why: "expected loopback, on or off".into(),
                });
            }
        };
        let trusted_proxies = comma_list(get("PCHAT_TRUSTED_PROXIES"))
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        key: "PCHAT_TRUSTED_PROXIES",
                        value: p.to_string(),
                        why: "expected addresses or networks like 10.0.0.0/8, comma-separated"
                            .into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RelayConfig {
            trusted_proxies,
            metrics,
            bridge,
            callbacks,
            voice,
            cors_origins,
            allowed_hosts,
            host,
            port,
            port_explicit,
            data_dir,
            db_path,
            postgres_url,
            upload_dir,
            free_mode,
            allowed_emails,
            dev_expose_codes,
            smtp,
            session_ttl_secs: session_ttl_days.max(1) * 86_400,
            code_ttl_secs: code_ttl_secs.clamp(1, 86_400),
            presence_ttl_secs: presence_ttl_secs.clamp(1, 86_400),
            max_upload_bytes: max_upload_mb.saturating_mul(1024 * 1024),
            code_rate_per_email,
            code_rate_per_ip,
            sync,
        })
    }

    /// Whether login codes go back in the request-code answer.
    pub fn expose_codes(&self) -> bool {
        self.dev_expose_codes
            .unwrap_or(self.smtp.is_none() && is_loopback(&self.host))
    }

    /// Whether anyone can receive a login code at all.
    pub fn can_deliver_codes(&self) -> bool {
        self.smtp.is_some() || self.expose_codes()
    }

    /// Whether `email` may create a new identity here.
    pub fn may_register(&self, email: &str) -> bool {
        self.free_mode
            || self
                .allowed_emails
                .iter()
                .any(|pattern| match pattern.strip_prefix("*@") {
                    Some(domain) => email.rsplit_once('@').is_some_and(|(_, d)| d == domain),
                    None => pattern == email,
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flags() -> RelayFlags {
        RelayFlags {
            data_dir: Some(PathBuf::from("/tmp/x")),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_expose_codes_on_loopback_only() {
        let c = RelayConfig::load(&flags(), &env(&[])).unwrap();
        assert_eq!(c.port, DEFAULT_PORT);
        assert!(!c.port_explicit);
        assert!(c.expose_codes());
        assert_eq!(c.db_path, PathBuf::from("/tmp/x/bridge.db"));
        let c = RelayConfig::load(&flags(), &env(&[("HOST", "0.0.0.0")])).unwrap();
        assert!(!c.expose_codes());
        assert!(!c.can_deliver_codes());
        let c = RelayConfig::load(
            &flags(),
            &env(&[("HOST", "0.0.0.0"), ("PCHAT_DEV_EXPOSE_CODES", "true")]),
        )
        .unwrap();
        assert!(c.expose_codes());
    }

    #[test]
    fn smtp_password_is_not_in_debug_output() {
        let c = RelayConfig::load(
            &flags(),
            &env(&[
                ("SMTP_HOST", "mail.example.com"),
                ("SMTP_PASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.expose_codes());
    }

    #[test]
    fn bad_values_are_named() {
        let e = RelayConfig::load(&flags(), &env(&[("PORT", "eleven")])).unwrap_err();
        assert!(e.to_string().contains("PORT"));
    }

    #[test]
    fn cors_origins_are_normalized_and_checked() {
        let c = RelayConfig::load(
            &flags(),
            &env(&[(
                "PCHAT_CORS_ORIGINS",
                "http://App.Example:8026, https://chat.example.com:443",
            )]),
        )
        .unwrap();
        assert_eq!(
            c.cors_origins,
            ["http://app.example:8026", "https://chat.example.com"]
        );
        let e = RelayConfig::load(
            &flags(),
            &env(&[("PCHAT_CORS_ORIGINS", "http://app.example/chat.html")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("PCHAT_CORS_ORIGINS"), "{e}");
    }

    #[test]
    fn allowlist_patterns() {
        let c = RelayConfig::load(
            &flags(),
            &env(&[
                ("PCHAT_FREE_MODE_ENABLED", "false"),
                ("PCHAT_ALLOWED_EMAILS", "a@x.com, *@team.dev"),
            ]),
        )
        .unwrap();
        assert!(c.may_register("a@x.com"));
        assert!(c.may_register("bob@team.dev"));
        assert!(!c.may_register("eve@evil.dev"));
    }
}
