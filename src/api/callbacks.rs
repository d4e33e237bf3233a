//! Inbound callbacks: the relay POSTs each new message for its owner to a URL, signed the
//! Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::messages::Message;

/// `POST /api/v1/webchat/callbacks/inbound`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CreateCallback {
    /// Where to POST events: http or https.
    pub url: String,
    /// Channels to pass (`pchat`, `sms`, `wa`, `tg`, `email`, `notify`); all when empty.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Pass only messages whose text holds one of these (case-insensitive); all when empty.
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// A callback as its owner sees it (the secret only at creation and rotation).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackInfo {
    pub callback_id: String,
    pub url: String,
    pub channels: Vec<String>,
    pub keywords: Vec<String>,
    pub enabled: bool,
    /// Why the relay turned it off, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub created_at: String,
    /// Deliveries waiting (first tries and retries).
    pub pending: u64,
    /// Deliveries that gave up (see `/redeliver`).
    pub dead: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackCreated {
    pub ok: bool,
    pub callback: CallbackInfo,
    /// `whsec_…`: the signing secret, shown only now.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackList {
    pub ok: bool,
    pub callbacks: Vec<CallbackInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackUpdated {
    pub ok: bool,
    pub callback: CallbackInfo,
    /// The new secret, after a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How many dead deliveries were queued again (`/redeliver`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued: Option<u64>,
}

/// One delivery of one event, and how its tries went.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryInfo {
    /// The `webhook-id` header: the same on every try, so receivers can drop duplicates.
    pub webhook_id: String,
    /// pending, delivered or dead.
    pub state: String,
    pub attempts: u32,
    /// The receiver's HTTP status on the last try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub ok: bool,
    pub deliveries: Vec<DeliveryInfo>,
}

/// The body POSTed to a callback URL.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackEvent {
    /// `message.received`
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339 time the event was queued.
    pub timestamp: String,
    pub data: CallbackEventData,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackEventData {
    pub callback_id: String,
    /// The channel it came in on (`pchat` for relay traffic).
    pub channel: String,
    pub message: Message,
}
