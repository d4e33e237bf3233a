//! Sending and receiving: the message as delivered, send and poll.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Kind, de_opt_string_or_number};

/// What a delivered event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A new message.
    #[default]
    Message,
    /// The author changed a message's text; `text` is the new text.
    Edit,
    /// The author (or a group admin) deleted a message.
    Delete,
    /// `from` has read the message `message_id` (which the receiver sent).
    Read,
    /// A transcript, translation or read-aloud clip of `message_id` for this receiver, in
    /// `caption` (`text` is the caption to show: the translation, else the transcript).
    Caption,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Message => "message",
            EventType::Edit => "edit",
            EventType::Delete => "delete",
            EventType::Read => "read",
            EventType::Caption => "caption",
        }
    }
    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "message" => Some(EventType::Message),
            "edit" => Some(EventType::Edit),
            "delete" => Some(EventType::Delete),
            "read" => Some(EventType::Read),
            "caption" => Some(EventType::Caption),
            _ => None,
        }
    }
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    pub file_id: String,
    pub name: String,
    pub mime: String,
    pub size: u64,
    /// image, video, audio, voice or file
    pub kind: String,
    /// Download path on the relay (`/api/v1/webchat/files/<file_id>`), or an absolute URL.
    pub url: String,
    #[serde(default)]
    pub sha256: String,
}

/// An attachment as a sender names it: the upload's `file_id`, and optionally the kind to show
/// it as. Everything else about the file (name, type, size) comes from the upload itself, so
/// extra fields (a whole upload answer pasted in) are ignored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct AttachmentRef {
    pub file_id: String,
    /// file, voice, image, video or audio; a kind that does not fit the file's type is not
    /// taken (an image stays an image unless sent as a plain file, voice needs audio or video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl From<&Attachment> for AttachmentRef {
    fn from(a: &Attachment) -> AttachmentRef {
        AttachmentRef {
            file_id: a.file_id.clone(),
            kind: Some(a.kind.clone()).filter(|k| !k.is_empty()),
        }
    }
}

/// Longest `client_message_id`.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// What enrichment made of a message for one receiver. The original text and audio are never
/// changed; this rides beside them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct Caption {
    /// For a voice clip: what was said, in `language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// The language of the original text or speech (BCP 47 primary subtag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The text or transcript in the receiver's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation_language: Option<String>,
    /// The translation read aloud (when the receiver has read-aloud on): an ordinary file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Attachment>,
    /// Why (some of) it could not be made: `caption_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption_failed: Option<String>,
    /// The engines that made it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<String>,
}

impl Caption {
    /// What to show: the translation, else the transcript.
    pub fn text(&self) -> String {
        self.translation
            .clone()
            .or_else(|| self.transcript.clone())
            .unwrap_or_default()
    }
}

/// One delivered event, as poll returns it (and as the daemon writes it to inbox.jsonl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// Position of this event in the receiver's stream; pass it back as `after`.
    pub cursor: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub message_id: String,
    /// Address of the author (for "read": of the reader).
    pub from: String,
    pub from_name: String,
    pub from_kind: Kind,
    /// The receiver's address, or `group:grp_…` for a group message.
    pub to: String,
    pub text: String,
    /// RFC 3339 time of this event.
    pub created_at: String,
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// For a message: when it was last edited (its text is the edited one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// For a message: it was deleted (text and attachments are gone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// For a message: a receiver has marked it read (for the author's ticks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read: bool,
    /// For a caption event, and for a message in history: its transcript and translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<Caption>,
    /// For a message to or from an address outside the relay (`wa:+1555…`): its channel
    /// (sms, wa, tg, notify, email). Absent for pchat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `POST /api/v1/messages`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SendRequest {
    /// `pchat_free_phone` for relay traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_id: Option<String>,
    /// `pchat` (the default), or `email`, `sms`, `wa`, `tg`, `notify`: those need a PhoneRelay
    /// API key (`Authorization: Bearer …`) and go to `to` on that channel (`+15551230001`,
    /// an email address). `to` may also carry the channel itself: `wa:+15551230001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// For email: the subject (default: the text's first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The sender's address; must be the caller's own when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A chat address, or `group:grp_…`.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<AttachmentRef>>,
    /// The sender's own id for this message (1–64 characters). Sending again with the same id
    /// stores nothing new and answers with the first message: retries are safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    pub ok: bool,
    pub message_id: String,
    pub created_at: String,
    /// True when `client_message_id` named a message already sent: nothing new was stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// For email and bridge channels: `queued` (see `GET /api/v1/messages/{message_id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::api::bridge::DeliveryStatus>,
}

/// `POST /api/v1/webchat/poll`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PollRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_id: Option<String>,
    /// Must be the caller's own address when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_address: Option<String>,
    /// 1–500, default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Read after this cursor without consuming ("0" = from the start). Without it the
    /// session's own cursor is used and advanced (claim).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_string_or_number"
    )]
    #[schema(value_type = Option<String>)]
    pub after: Option<String>,
    /// Seconds to hold the request open until something arrives (0–90, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 90)]
    pub wait: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollResponse {
    pub ok: bool,
    pub messages: Vec<Message>,
    /// Pass as `after` to read what comes next.
    pub next_cursor: String,
}

/// `POST /api/v1/webchat/ack`: moves the session's claim cursor forward to `cursor` (never
/// back), for clients that read with `after` and store what they got before acknowledging.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct AckRequest {
    #[serde(deserialize_with = "super::de_string_or_number")]
    #[schema(value_type = String)]
    pub cursor: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AckResponse {
    pub ok: bool,
    /// The claim cursor after the ack.
    pub claim_cursor: String,
}

/// `POST /api/v1/webchat/edit`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EditRequest {
    pub message_id: String,
    pub text: String,
}

/// `POST /api/v1/webchat/delete` and `POST /api/v1/webchat/read`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageRef {
    pub message_id: String,
}

/// `POST /api/v1/webchat/report`: a message or an identity, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportRequest {
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub chat_address: Option<String>,
    pub reason: String,
}

/// One conversation in the list: a person, an agent or a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationSummary {
    /// A chat address, or `group:grp_…`.
    pub with: String,
    /// "direct" or "group".
    #[serde(rename = "type")]
    pub conversation_type: String,
    pub display_name: String,
    /// For direct conversations: human or agent.
    pub kind: Option<Kind>,
    /// For groups: chat or stream.
    pub mode: Option<String>,
    /// For groups: whether you may post.
    pub can_post: bool,
    pub last_message: Option<Message>,
    /// Received messages you have not marked read.
    pub unread: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationsResponse {
    pub ok: bool,
    pub conversations: Vec<ConversationSummary>,
}
