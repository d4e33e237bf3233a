//! Creating or reusing a persona: log in only when there is no working token, and the GUI
//! auto-login URL.

use crate::api::address::{normalize_address, normalize_email};
use crate::api::auth::{RequestCodeRequest, VerifyCodeRequest};
use crate::api::presence::PresenceRequest;
use crate::api::{ErrorCode, Kind, PCHAT_CHANNEL, now_millis, rfc3339_from_millis};

use super::personas::{Persona, PersonaError, PersonaStore};
use super::relay_client::{ClientError, RelayClient, normalize_relay_url};

/// Where a relay is when nothing else says.
pub const DEFAULT_RELAY: &str = "http://127.0.0.1:5110";

/// Who to be: the identity flags of `persona`, `cli` and `daemon start`.
#[derive(Debug, Clone, Default)]
pub struct IdentitySpec {
    pub email: String,
    pub name: Option<String>,
    pub persona: Option<String>,
    pub computer: Option<String>,
    pub session_name: Option<String>,
    pub chat_address: Option<String>,
    pub listen_channel: Option<String>,
    pub kind: Option<Kind>,
    /// From --relay or $RELAY_URL; falls back to the saved relay, then the default.
    pub relay: Option<String>,
    pub site: Option<String>,
    pub relay_mode: Option<String>,
    /// A code the user already has (from the email).
    pub code: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Persona(#[from] PersonaError),
    #[error("{0}")]
    BadInput(String),
    #[error(
        "the relay mailed a login code to {email}; run the same command again with --code CODE"
    )]
    NeedCode { email: String },
    #[error("the chat address {address:?} is taken on {relay}; choose another with --chat-address")]
    AddressTaken { address: String, relay: String },
    #[error(
        "the session of {who} has expired and a new login needs the emailed code; run `gts-webchat persona {who}` to log in again"
    )]
    Expired { who: String },
}

/// Asks the person at the terminal for the emailed code (None when there is no terminal).
pub type CodePrompt<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Reused,
    LoggedIn,
}

fn now_text() -> String {
    rfc3339_from_millis(now_millis())
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Creates or reuses the persona for `spec.email`: reuses a saved token while the relay still
/// takes it, logs in (request-code, verify-code) otherwise. Saves the result.
pub async fn ensure(
    store: &PersonaStore,
    spec: &IdentitySpec,
    prompt: Option<CodePrompt<'_>>,
) -> Result<(Persona, Ensured), LoginError> {
    let email = normalize_email(&spec.email).map_err(LoginError::BadInput)?;
    let wanted_address = match non_empty(&spec.chat_address) {
        Some(a) => Some(normalize_address(&a).map_err(LoginError::BadInput)?),
        None => None,
    };
    let saved = store.by_email(&email)?;
    let relay = match (non_empty(&spec.relay), &saved) {
        (Some(r), _) => normalize_relay_url(&r)?,
        (None, Some(p)) => p.relay.clone(),
        (None, None) => DEFAULT_RELAY.to_string(),
    };

    let mut persona = match saved {
        Some(p) if p.relay == relay => p,
        // New, or moved to another relay: a fresh identity record for that relay.
        _ => Persona {
            email: email.clone(),
            display_name: String::new(),
            chat_address: String::new(),
            kind: Kind::Agent,
            persona: None,
            computer: None,
            session_name: None,
            listen_channel: PCHAT_CHANNEL.to_string(),
            relay: relay.clone(),
            site: None,
            relay_mode: None,
            token: None,
            verified: false,
            created_at: now_text(),
            last_seen: None,
        },
    };
    // Flags given now update the saved metadata.
    if let Some(v) = non_empty(&spec.name) {
        persona.display_name = v;
    }
    if let Some(v) = non_empty(&spec.persona) {
        persona.persona = Some(v);
    }
    if let Some(v) = non_empty(&spec.computer) {
        persona.computer = Some(v);
    }
    if let Some(v) = non_empty(&spec.session_name) {
        persona.session_name = Some(v);
    }
    if let Some(v) = non_empty(&spec.listen_channel) {
        persona.listen_channel = v;
    }
    if let Some(v) = non_empty(&spec.site) {
        persona.site = Some(v);
    }
    if let Some(v) = non_empty(&spec.relay_mode) {
        persona.relay_mode = Some(v);
    }
    if let Some(k) = spec.kind {
        persona.kind = k;
    }

    let client = RelayClient::new(&relay)?;
    let mut outcome = Ensured::Reused;
    // A saved token is reused while the relay takes it. (An identity keeps its address, so a
    // different --chat-address cannot change it; the caller tells the user.)
    let reusable = match &persona.token {
        Some(token) if spec.code.is_none() => {
            match client.clone().with_token(token.clone()).me().await {
                Ok(me) => {
                    persona.chat_address = me.chat_address;
                    if persona.display_name.is_empty() {
                        persona.display_name = me.display_name;
                    }
                    true
                }
                Err(e) if e.is_auth() => false,
                Err(e) => return Err(e.into()),
            }
        }
        _ => false,
    };
    if !reusable {
        let address = wanted_address
            .or_else(|| (!persona.chat_address.is_empty()).then(|| persona.chat_address.clone()));
        login(&client, &mut persona, address, spec.code.clone(), prompt).await?;
        outcome = Ensured::LoggedIn;
    }
    persona.last_seen = Some(now_text());
    // Register the session metadata so the directory shows it (offline until a watcher runs).
    let authed = client.with_token(persona.token.clone().unwrap_or_default());
    authed
        .presence(&presence_request(&persona, false, None))
        .await?;
    store.save(&persona)?;
    Ok((persona, outcome))
}

/// Logs in afresh (request-code, verify-code) and stores the new token in `persona`.
async fn login(
    client: &RelayClient,
    persona: &mut Persona,
    address: Option<String>,
    code: Option<String>,
    prompt: Option<CodePrompt<'_>>,
) -> Result<(), LoginError> {
    let display_name = (!persona.display_name.is_empty()).then(|| persona.display_name.clone());
    let (code, login_id) = match code {
        // A code from the email: the relay matches it to the newest code this machine asked for.
        Some(c) => (c, None),
        None => {
            let sent = client
                .request_code(&RequestCodeRequest {
                    email: persona.email.clone(),
                    display_name: display_name.clone(),
                    purpose: Some("login".into()),
                })
                .await?;
            let login_id = Some(sent.login_id).filter(|l| !l.is_empty());
            match (sent.dev_code, prompt) {
                (Some(c), _) => (c, login_id),
                (None, Some(ask)) => (
                    ask(&persona.email).ok_or(LoginError::NeedCode {
                        email: persona.email.clone(),
                    })?,
                    login_id,
                ),
                (None, None) => {
                    return Err(LoginError::NeedCode {
                        email: persona.email.clone(),
                    });
                }
            }
        }
    };
    let verified = client
        .verify_code(&VerifyCodeRequest {
            email: persona.email.clone(),
            code: code.trim().to_string(),
            login_id,
            display_name,
            chat_address: address.clone(),
            public_visible: Some(true),
            kind: Some(persona.kind),
        })
        .await
        .map_err(|e| match e.code() {
            Some(ErrorCode::AddressTaken) => LoginError::AddressTaken {
                address: address.unwrap_or_default(),
                relay: client.base().to_string(),
            },
            _ => e.into(),
        })?;
    persona.token = Some(verified.session_token);
    persona.chat_address = verified.chat_address;
    persona.display_name = verified.display_name;
    persona.kind = verified.kind;
    persona.verified = true;
    Ok(())
}

/// After the relay refused a token: log in again without a person if the relay hands out
/// codes (dev mode); otherwise say how to log in again.
pub async fn relogin_quietly(
    store: &PersonaStore,
    persona: &mut Persona,
) -> Result<(), LoginError> {
    let client = RelayClient::new(&persona.relay)?;
    let address = Some(persona.chat_address.clone()).filter(|a| !a.is_empty());
    match login(&client, persona, address, None, None).await {
        Ok(()) => {
            store.save(persona)?;
            Ok(())
        }
        Err(LoginError::NeedCode { .. }) => Err(LoginError::Expired {
            who: persona.email.clone(),
        }),
        Err(e) => Err(e),
    }
}

/// The presence report for a persona.
pub fn presence_request(p: &Persona, visible: bool, status: Option<&str>) -> PresenceRequest {
    PresenceRequest {
        chat_address: Some(p.chat_address.clone()),
        display_name: Some(p.display_name.clone()).filter(|n| !n.is_empty()),
        visible: Some(visible),
        device_name: p.computer.clone(),
        session_name: p.session_name.clone(),
        listen_channel: Some(p.listen_channel.clone()),
        status: status.map(str::to_string),
    }
}

/// The web app URL that signs the browser in as this persona. Holds the token: never log it.
pub fn gui_url(p: &Persona, site_override: Option<&str>) -> String {
    let site = site_override
        .map(str::to_string)
        .or_else(|| p.site.clone())
        .unwrap_or_else(|| format!("{}{}", p.relay, crate::relay::web::APP_PATH));
    let mut url = match url::Url::parse(&site) {
        Ok(u) => u,
        Err(_) => return site,
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("server_url", &p.relay)
            .append_pair("display_name", &p.display_name)
            .append_pair("chat_address", &p.chat_address)
            .append_pair("pchat_session", p.token.as_deref().unwrap_or(""))
            .append_pair("persona", p.persona.as_deref().unwrap_or(""))
            .append_pair("computer_name", p.computer.as_deref().unwrap_or(""))
            .append_pair("session_name", p.session_name.as_deref().unwrap_or(""))
            .append_pair("listen_channel", &p.listen_channel);
    }
    url.to_string()
}
