//! Wire types shared by the relay and every client (CLI, daemon, tests, benches).
//!
//! One definition per type: the relay serialises these, the client deserialises the same ones.

pub mod address;
pub mod auth;
pub mod bridge;
pub mod callbacks;
pub mod directory;
pub mod error;
pub mod files;
pub mod groups;
pub mod messages;
pub mod presence;
pub mod voice;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};

/// The protocol's default phone id for plain relay (non-bridge) traffic.
pub const FREE_PHONE_ID: &str = "pchat_free_phone";
/// The relay's own channel.
pub const PCHAT_CHANNEL: &str = "pchat";
/// Session header the app endpoints take.
pub const SESSION_HEADER: &str = "x-pchat-session";
/// Session tokens start with this.
pub const TOKEN_PREFIX: &str = "pct_";
/// Longest message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Presence not refreshed for this long counts as offline.
pub const PRESENCE_TTL_SECS: i64 = 90;
/// Longest long-poll wait the relay honours.
pub const MAX_POLL_WAIT_SECS: f64 = 90.0;

/// Whether an identity is a person or an AI/tool session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Human,
    Agent,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Human => "human",
            Kind::Agent => "agent",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "human" => Some(Kind::Human),
            "agent" => Some(Kind::Agent),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"ok": true}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OkResponse {
    pub ok: bool,
}

impl OkResponse {
    pub fn ok() -> Self {
        OkResponse { ok: true }
    }
}

/// `GET /health`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    pub ok: bool,
    pub version: String,
    /// Largest upload this relay takes, in bytes.
    pub max_upload_bytes: u64,
    /// The storage this relay uses: `sqlite` or `postgres`.
    pub database: String,
    /// Login codes go out by email (SMTP is configured).
    #[serde(default)]
    pub smtp: bool,
    /// Login codes are shown to whoever asks (development mode; never on a public relay).
    #[serde(default)]
    pub dev_codes: bool,
}

/// Accepts a cursor written as a JSON string (`"42"`) or number (`42`): the cursor is opaque
/// text on the wire, but a client that sends it back as a number should not be refused.
pub(crate) fn de_opt_string_or_number<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StrOrNum {
        S(String),
        N(u64),
    }
    Ok(match Option::<StrOrNum>::deserialize(d)? {
        None => None,
        Some(StrOrNum::S(s)) => Some(s),
        Some(StrOrNum::N(n)) => Some(n.to_string()),
    })
}

/// Like `de_opt_string_or_number`, for a required field.
pub(crate) fn de_string_or_number<'de, D>(d: D) -> Result<String, D::Error>
where
    D: Deserializer<'de>,
{
    de_opt_string_or_number(d)?.ok_or_else(|| serde::de::Error::custom("cursor is required"))
}

/// RFC 3339 text for a unix time in milliseconds (UTC, millisecond precision).
pub fn rfc3339_from_millis(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Milliseconds since the unix epoch, now.
pub fn now_millis() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_names_match_serde() {
        for code in [
            ErrorCode::InvalidJson,
            ErrorCode::SenderMismatch,
            ErrorCode::StreamReadOnly,
            ErrorCode::StorageUnavailable,
            ErrorCode::Internal,
            ErrorCode::AddressTaken,
        ] {
            let v = serde_json::to_value(code).unwrap();
            assert_eq!(v.as_str().unwrap(), code.as_str());
        }
    }

    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(rfc3339_from_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_millis(1_500), "1970-01-01T00:00:01.5Z");
    }
}
