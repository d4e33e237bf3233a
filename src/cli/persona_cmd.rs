//! `gts-webchat persona` and `gts-webchat list`, and the identity flags other commands share.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, ValueEnum};
use serde_json::json;

use super::output::{json_line, text_line};
use super::{CliResult, Failure, exit};
use crate::api::Kind;
use crate::client::login::{self, gui_url};
use crate::client::{Ensured, IdentitySpec, Persona, PersonaStore, RelayClient};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Agent,
    Human,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Agent => Kind::Agent,
            KindArg::Human => Kind::Human,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RelayMode {
    Public,
    Private,
}

/// Who to be on the relay: the flags of `persona`, `cli` and `daemon start`.
#[derive(Debug, Clone, Default, Args)]
pub struct IdentityArgs {
    /// Display name shown to others
    #[arg(long)]
    pub name: Option<String>,
    /// Free label for this identity, such as "Codex agent"
    #[arg(long)]
    pub persona: Option<String>,
    /// Name of the machine the session runs on
    #[arg(long)]
    pub computer: Option<String>,
    /// Name of this session, such as "live support"
    #[arg(long)]
    pub session_name: Option<String>,
    /// Stable chat address (3-40 of a-z 0-9 - _ .); kept once registered
    #[arg(long)]
    pub chat_address: Option<String>,
    /// Channel this session listens on
    #[arg(long)]
    pub listen_channel: Option<String>,
    /// Person or AI/tool session [default: agent]
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Relay URL [default: the persona's saved relay, else http://127.0.0.1:5110]
    #[arg(long, env = "RELAY_URL")]
    pub relay: Option<String>,
    /// Web app URL for the GUI link [default: the relay's /app/webchat/chat.html]
    #[arg(long, env = "WEBCHAT_URL")]
    pub site: Option<String>,
    /// Whether this is the public relay or a private one (shown, and stored)
    #[arg(long, value_enum)]
    pub relay_mode: Option<RelayMode>,
    /// The login code from the email, when the relay does not hand one out
    #[arg(long)]
    pub code: Option<String>,
}

impl IdentityArgs {
    pub fn spec(&self, email: &str) -> IdentitySpec {
        IdentitySpec {
            email: email.to_string(),
            name: self.name.clone(),
            persona: self.persona.clone(),
            computer: self.computer.clone(),
            session_name: self.session_name.clone(),
            chat_address: self.chat_address.clone(),
            listen_channel: self.listen_channel.clone(),
            // The CLI is how AI and tool sessions join: agent unless told otherwise.
            kind: Some(self.kind.map(Kind::from).unwrap_or(Kind::Agent)),
            relay: self.relay.clone(),
            site: self.site.clone(),
            relay_mode: self.relay_mode.map(|m| match m {
                RelayMode::Public => "public".to_string(),
                RelayMode::Private => "private".to_string(),
            }),
            code: self.code.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct PersonaArgs {
    /// Email of the identity
    pub email: String,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Leave the GUI auto-login URL out of the output
    #[arg(long)]
    pub quiet_url: bool,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Reads the emailed code at a terminal; None without one.
fn prompt_code(email: &str) -> Option<String> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("A login code was mailed to {email}. Enter it: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    Some(line.trim().to_string()).filter(|c| !c.is_empty())
}

pub fn store() -> Result<PersonaStore, Failure> {
    Ok(PersonaStore::open_default()?)
}

/// Creates or reuses a persona from identity flags (shared by `persona`, `cli`, `daemon`).
pub async fn ensure(email: &str, identity: &IdentityArgs) -> Result<(Persona, Ensured), Failure> {
    let store = store()?;
    let spec = identity.spec(email);
    let (persona, outcome) = login::ensure(&store, &spec, Some(&prompt_code)).await?;
    if let Some(wanted) = spec
        .chat_address
        .as_deref()
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        && wanted != persona.chat_address
    {
        eprintln!(
            "note: {} already has the chat address {:?} on this relay; an identity keeps its address",
            persona.email, persona.chat_address
        );
    }
    Ok((persona, outcome))
}

/// Finds the persona named by `--as` (email or chat address). With a relay override that is
/// not the persona's relay, logs that identity in there.
pub async fn resolve(who: &str, relay: Option<&str>) -> Result<Persona, Failure> {
    let store = store()?;
    let found = store.find(who)?;
    let Some(persona) = found else {
        return Err(Failure::new(
            exit::LOCAL,
            format!(
                "no local persona matches {who:?}; create one with `gts-webchat persona EMAIL --name NAME`, or see `gts-webchat list`"
            ),
        ));
    };
    match relay {
        Some(r)
            if crate::client::relay_client::normalize_relay_url(r).map_err(Failure::from)?
                != persona.relay =>
        {
            let spec = IdentitySpec {
                email: persona.email.clone(),
                relay: Some(r.to_string()),
                kind: Some(persona.kind),
                ..Default::default()
            };
            let (p, _) = login::ensure(&store, &spec, Some(&prompt_code)).await?;
            Ok(p)
        }
        _ => Ok(persona),
    }
}

/// A client for the persona's relay with its token.
pub fn client_for(p: &Persona) -> Result<RelayClient, Failure> {
    Ok(RelayClient::new(&p.relay)?.with_token(p.token.clone().unwrap_or_default()))
}

/// Prints a persona's details (and its GUI URL unless quiet).
pub fn print_persona(
    p: &Persona,
    outcome: Option<Ensured>,
    quiet_url: bool,
    json: bool,
    site: Option<&str>,
) -> CliResult {
    let url = (!quiet_url).then(|| gui_url(p, site));
    if json {
        let mut v = persona_json(p);
        if let Some(o) = outcome {
            v["outcome"] = json!(match o {
                Ensured::Reused => "reused",
                Ensured::LoggedIn => "logged_in",
            });
        }
        if let Some(u) = &url {
            v["gui_url"] = json!(u);
        }
        return json_line(&v);
    }
    let head = match outcome {
        Some(Ensured::Reused) => "persona ready (existing session reused)",
        Some(Ensured::LoggedIn) => "persona ready (logged in)",
        None => "persona",
    };
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mode = p
        .relay_mode
        .as_deref()
        .map(|m| format!(" ({m} relay)"))
        .unwrap_or_default();
    let mut lines = vec![
        head.to_string(),
        format!("  display name:  {}", p.display_name),
        format!("  chat address:  {}", p.chat_address),
        format!("  email:         {}", p.email),
        format!("  kind:          {}", p.kind),
        format!("  persona:       {}", dash(&p.persona)),
        format!("  computer:      {}", dash(&p.computer)),
        format!("  session name:  {}", dash(&p.session_name)),
        format!("  channel:       {}", p.listen_channel),
        format!("  relay:         {}{mode}", p.relay),
    ];
    if let Some(u) = url {
        lines.push("GUI auto-login URL (holds a session token: do not share it):".into());
        lines.push(u);
    }
    text_line(&lines.join("\n"))
}

/// A persona as JSON, without its token.
pub fn persona_json(p: &Persona) -> serde_json::Value {
    json!({
        "email": p.email,
        "display_name": p.display_name,
        "chat_address": p.chat_address,
        "kind": p.kind,
        "persona": p.persona,
        "computer": p.computer,
        "session_name": p.session_name,
        "listen_channel": p.listen_channel,
        "relay": p.relay,
        "relay_mode": p.relay_mode,
        "verified": p.verified,
        "last_seen": p.last_seen,
    })
}

pub async fn run(args: PersonaArgs) -> CliResult {
    let (p, outcome) = ensure(&args.email, &args.identity).await?;
    print_persona(
        &p,
        Some(outcome),
        args.quiet_url,
        args.json,
        args.identity.site.as_deref(),
    )
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per persona
    #[arg(long)]
    pub json: bool,
}

pub fn list(args: &ListArgs) -> CliResult {
    let personas = store()?.list()?;
    if args.json {
        for p in &personas {
            json_line(&persona_json(p))?;
        }
        return Ok(());
    }
    if personas.is_empty() {
        return text_line(
            "no local personas yet; create one with `gts-webchat persona EMAIL --name NAME`",
        );
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut rows = vec![[
        "EMAIL".to_string(),
        "ADDRESS".into(),
        "VERIFIED".into(),
        "DEVICE".into(),
        "SESSION".into(),
        "CHANNEL".into(),
        "RELAY".into(),
        "LAST SEEN".into(),
    ]];
    for p in &personas {
        rows.push([
            p.email.clone(),
            p.chat_address.clone(),
            if p.verified { "yes" } else { "no" }.into(),
            dash(&p.computer),
            dash(&p.session_name),
            p.listen_channel.clone(),
            p.relay.clone(),
            dash(&p.last_seen),
        ]);
    }
    text_line(&super::output::table(&rows))
}
