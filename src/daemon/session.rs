//! The daemon's identity at the relay: logging in at start (retrying while the relay is down),
//! logging in again when the relay refuses the token, and the current session for the other
//! tasks to use.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::health::{Health, Problem};
use super::protocol::Phase;
use super::settings::{Identity, TaskSettings};
use crate::client::login::{self, LoginError, relogin_quietly};
use crate::client::relay_client::normalize_relay_url;
use crate::client::{IdentitySpec, Persona, PersonaStore, RelayClient};

/// Capped, jittered exponential backoff.
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }
    pub fn reset(&mut self) {
        self.next = self.min;
    }
    pub fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::random_range(0.5..1.0))
    }
}

/// The logged-in identity and its client.
#[derive(Clone)]
pub struct Session {
    pub persona: Persona,
    pub client: RelayClient,
}

impl Session {
    /// `relay|address`: what the saved cursor belongs to.
    pub fn identity(&self) -> String {
        format!("{}|{}", self.persona.relay, self.persona.chat_address)
    }
}

/// Where the current session lives; the receiver sets it, everyone else waits for it.
#[derive(Clone)]
pub struct Sessions {
    tx: watch::Sender<Option<Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            tx: watch::channel(None).0,
        }
    }
}

impl Sessions {
    pub fn current(&self) -> Option<Session> {
        self.tx.borrow().clone()
    }

    pub fn set(&self, s: Session) {
        self.tx.send_replace(Some(s));
    }

    /// Waits until logged in (None at shutdown).
    pub async fn wait(&self, shutdown: &CancellationToken) -> Option<Session> {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return Some(s);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return None },
                _ = shutdown.cancelled() => return None,
            }
        }
    }
}

/// Why a login attempt failed.
enum LoginFail {
    /// Try again later (relay down, overloaded).
    Transient(String),
    /// Will not work without a person (bad identity, code needed).
    Permanent(String),
}

fn classify(e: LoginError) -> LoginFail {
    match e {
        LoginError::Client(c) if c.is_transient() => LoginFail::Transient(c.to_string()),
        LoginError::NeedCode { email } => LoginFail::Permanent(format!(
            "the relay mails login codes: run `gts-webchat persona {email} --code CODE` once, then start the task again"
        )),
        other => LoginFail::Permanent(other.to_string()),
    }
}

fn client_for(p: &Persona) -> Result<RelayClient, LoginFail> {
    Ok(RelayClient::new(&p.relay)
        .map_err(|e| LoginFail::Permanent(e.to_string()))?
        .with_token(p.token.clone().unwrap_or_default()))
}

async fn login_once(settings: &TaskSettings) -> Result<(Session, String), LoginFail> {
    let store = PersonaStore::open_default().map_err(|e| LoginFail::Permanent(e.to_string()))?;
    let mut persona = match &settings.identity {
        Identity::Persona { who } => {
            let found = store
                .find(who)
                .map_err(|e| LoginFail::Permanent(e.to_string()))?
                .ok_or_else(|| LoginFail::Permanent(format!("no local persona matches {who:?}")))?;
            let relay = match &settings.relay {
                Some(r) => {
                    Some(normalize_relay_url(r).map_err(|e| LoginFail::Permanent(e.to_string()))?)
                }
                None => None,
            };
            match relay {
                Some(r) if r != found.relay => {
                    let spec = IdentitySpec {
                        email: found.email.clone(),
                        relay: Some(r),
                        kind: Some(found.kind),
                        ..Default::default()
                    };
                    login::ensure(&store, &spec, None)
                        .await
                        .map_err(classify)?
                        .0
                }
                _ => found,
            }
        }
        Identity::Flags { .. } => {
            let spec = settings
                .identity
                .spec()
                .ok_or_else(|| LoginFail::Permanent("no identity".into()))?;
            login::ensure(&store, &spec, None)
                .await
                .map_err(classify)?
                .0
        }
    };
    let me = match client_for(&persona)?.me().await {
        Ok(me) => me,
        Err(e) if e.is_auth() => {
            relogin_quietly(&store, &mut persona)
                .await
                .map_err(classify)?;
            client_for(&persona)?
                .me()
                .await
                .map_err(|e| classify(LoginError::Client(e)))?
        }
        Err(e) => return Err(classify(LoginError::Client(e))),
    };
    let session = Session {
        client: client_for(&persona)?,
        persona,
    };
    Ok((session, me.claim_cursor))
}

/// Logs in, retrying while the relay is unreachable. Returns the identity's claim cursor;
/// `Ok(None)` at shutdown; `Err` for failures no retry can fix.
pub async fn log_in(
    settings: &TaskSettings,
    sessions: &Sessions,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<Option<String>, String> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match login_once(settings).await {
            Ok((session, claim)) => {
                tracing::info!(
                    address = %session.persona.chat_address,
                    relay = %session.persona.relay,
                    "logged in"
                );
                sessions.set(session);
                health.clear(Problem::RelayUnreachable);
                return Ok(Some(claim));
            }
            Err(LoginFail::Permanent(msg)) => return Err(msg),
            Err(LoginFail::Transient(msg)) => {
                // Not a failure: the daemon runs and keeps trying, and says so.
                health.set_phase(Phase::Running);
                health.report(Problem::RelayUnreachable, msg);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.step()) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// After the relay refused the token: log in again without a person when the relay hands out
/// codes. On success the new session is current.
pub async fn log_in_again(old: &Session, sessions: &Sessions, health: &Health) -> bool {
    let mut persona = old.persona.clone();
    let relogged = match PersonaStore::open_default() {
        Ok(store) => relogin_quietly(&store, &mut persona)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match relogged.and_then(|()| {
        RelayClient::new(&persona.relay)
            .map(|c| c.with_token(persona.token.clone().unwrap_or_default()))
            .map_err(|e| e.to_string())
    }) {
        Ok(client) => {
            sessions.set(Session { persona, client });
            health.clear(Problem::SessionExpired);
            true
        }
        Err(msg) => {
            health.report(Problem::SessionExpired, msg);
            false
        }
    }
}
