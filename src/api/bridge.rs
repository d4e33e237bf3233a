//! The PhoneRelay bridge: messages to and from addresses outside the relay (SMS, WhatsApp,
//! Telegram, phone notifications, email), and the channel rules shared by relay and clients.
//!
//! An external contact has an address of the form `channel:recipient` (`wa:+15551230001`,
//! `email:bob@example.com`); a pChat address never holds a `:`, so the two cannot meet.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::address::normalize_email;

/// Where a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Pchat,
    Email,
    Sms,
    Wa,
    Tg,
    Notify,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Pchat,
        Channel::Email,
        Channel::Sms,
        Channel::Wa,
        Channel::Tg,
        Channel::Notify,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Pchat => "pchat",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Wa => "wa",
            Channel::Tg => "tg",
            Channel::Notify => "notify",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Handed to the PhoneRelay bridge (email the relay sends itself).
    pub fn via_bridge(self) -> bool {
        matches!(
            self,
            Channel::Sms | Channel::Wa | Channel::Tg | Channel::Notify
        )
    }
}

/// An address outside the relay, as a channel and the recipient on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalContact {
    pub channel: Channel,
    /// `+15551230001`, `bob@example.com`, or for Telegram also `@name` or a numeric chat id.
    pub recipient: String,
}

impl ExternalContact {
    /// The contact's address in conversations: `wa:+15551230001`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.channel.as_str(), self.recipient)
    }

    /// Checks `raw` as a recipient on `channel`; the error names what is wrong.
    pub fn new(channel: Channel, raw: &str) -> Result<ExternalContact, String> {
        let recipient = match channel {
            Channel::Pchat => return Err("a pchat address is not external".into()),
            Channel::Email => normalize_email(raw)?,
            Channel::Sms | Channel::Wa | Channel::Notify => normalize_phone(raw)?,
            Channel::Tg => normalize_phone(raw).or_else(|_| telegram_handle(raw))?,
        };
        Ok(ExternalContact { channel, recipient })
    }

    /// Reads a `channel:recipient` address; None when `raw` has no external channel prefix.
    pub fn parse_address(raw: &str) -> Option<Result<ExternalContact, String>> {
        let (prefix, rest) = raw.trim().split_once(':')?;
        let channel = Channel::parse(prefix).filter(|c| *c != Channel::Pchat)?;
        Some(ExternalContact::new(channel, rest))
    }
}

/// The channel of a conversation address: `wa` for `wa:+1555…`, None for pChat addresses.
pub fn channel_of(address: &str) -> Option<&'static str> {
    let (prefix, _) = address.split_once(':')?;
    Channel::parse(prefix)
        .filter(|c| *c != Channel::Pchat)
        .map(Channel::as_str)
}

/// E.164: `+`, then 8–15 digits, the first not 0. Spaces, dots, dashes and parentheses people
/// type are dropped; anything else is refused.
pub fn normalize_phone(raw: &str) -> Result<String, String> {
    let kept: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = kept.strip_prefix('+').unwrap_or("");
    let valid = (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(kept)
    } else {
        Err(format!(
            "{raw:?} is not a phone number in international form (+ and country code, e.g. +15551230001)"
        ))
    }
}

/// A Telegram `@username` (5–32 of a-z 0-9 _) or numeric chat id.
fn telegram_handle(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if let Some(name) = t.strip_prefix('@') {
        let ok = (5..=32).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            return Ok(format!("@{}", name.to_ascii_lowercase()));
        }
    } else if (5..=20).contains(&t.len()) && t.chars().all(|c| c.is_ascii_digit()) {
        return Ok(t.to_string());
    }
    Err(format!(
        "{raw:?} is not a Telegram recipient (a phone number like +15551230001, an @username or a chat id)"
    ))
}

/// `POST /api/v1/bridge/inbound` (bridge key auth): a reply from outside, for the key's owner.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct InboundRequest {
    /// One of the key's phone ids.
    pub phone_id: String,
    /// sms, wa, tg, notify or email.
    pub channel: String,
    /// The sender on that channel: `+15551230001`, an email address, a Telegram @name.
    pub from: String,
    pub text: String,
    /// The sender's name, when the channel knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The bridge's own id for this message: the same id sent again stores nothing new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InboundResponse {
    pub ok: bool,
    pub message_id: String,
    /// The conversation it went into: the contact's address (`wa:+15551230001`).
    pub conversation: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// Where an outbound message on a channel stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Accepted, waiting for (another) try.
    Queued,
    /// The bridge or the SMTP server took it.
    Sent,
    /// Given up: `error` says why.
    Failed,
    /// A pchat message: in its receivers' streams.
    Delivered,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Delivered => "delivered",
        }
    }
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "queued" => Some(DeliveryStatus::Queued),
            "sent" => Some(DeliveryStatus::Sent),
            "failed" => Some(DeliveryStatus::Failed),
            "delivered" => Some(DeliveryStatus::Delivered),
            _ => None,
        }
    }
}

/// `GET /api/v1/messages/{message_id}`: a message the caller sent, and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageStatus {
    pub ok: bool,
    pub message_id: String,
    pub channel: String,
    /// A chat address, `group:grp_…`, or the external recipient (`+15551230001`).
    pub to: String,
    pub status: DeliveryStatus,
    /// Why the last try failed (the bridge's or SMTP server's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: u32,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

/// What the relay POSTs to `PHONE_RELAY_BRIDGE_URL` for each outbound message, signed like a
/// callback (`webhook-id` is the message id, stable across retries). The bridge answers 2xx
/// when it has taken the message; 4xx (not 408 or 429) fails it for good with the body's
/// `error`; anything else is retried.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BridgeOutbound {
    /// `message.outbound`
    #[serde(rename = "type")]
    pub event_type: String,
    pub message_id: String,
    pub phone_id: String,
    pub channel: String,
    /// The recipient on the channel.
    pub to: String,
    /// The pChat address of the sender, and their name.
    pub from: String,
    pub from_name: String,
    pub text: String,
    pub created_at: String,
}

/// An API key as `relay keys list` shows it (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    pub key_id: String,
    pub name: String,
    /// The owner's chat address: messages sent with the key are theirs, replies reach them.
    pub owner: String,
    pub phone_ids: Vec<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones() {
        assert_eq!(
            normalize_phone("+1 (555) 123-0001").unwrap(),
            "+15551230001"
        );
        assert!(normalize_phone("15551230001").is_err());
        assert!(normalize_phone("+0555123001").is_err());
        assert!(normalize_phone("+1555").is_err());
        assert!(normalize_phone("+1555123000x").is_err());
        assert!(normalize_phone("+1234567890123456").is_err());
    }

    #[test]
    fn addresses() {
        let c = ExternalContact::parse_address("WA:+15551230001")
            .unwrap()
            .unwrap();
        assert_eq!(c.address(), "wa:+15551230001");
        assert_eq!(channel_of("wa:+15551230001"), Some("wa"));
        assert_eq!(channel_of("alice"), None);
        assert_eq!(channel_of("group:grp_1"), None);
        assert!(ExternalContact::parse_address("alice").is_none());
        assert!(ExternalContact::parse_address("group:grp_1").is_none());
        assert!(
            ExternalContact::parse_address("sms:hello")
                .unwrap()
                .is_err()
        );
        let e = ExternalContact::new(Channel::Email, "Bob@Example.com").unwrap();
        assert_eq!(e.address(), "email:bob@example.com");
        assert_eq!(
            ExternalContact::new(Channel::Tg, "@Some_Body")
                .unwrap()
                .recipient,
            "@some_body"
        );
        assert!(ExternalContact::new(Channel::Tg, "@ab").is_err());
    }
}
