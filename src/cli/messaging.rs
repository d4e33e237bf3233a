//! `gts-webchat send`, `inbox` and `watch`.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::output::{json_line, message_text, text_line};
use super::persona_cmd::{client_for, resolve, store};
use super::{CliResult, Failure, exit};
use crate::api::messages::{AttachmentRef, PollRequest, SendRequest};
use crate::api::{FREE_PHONE_ID, PCHAT_CHANNEL};
use crate::client::login::{gui_url, presence_request, relogin_quietly};
use crate::client::{ClientResult, Persona, RelayClient};

/// How a file is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttachmentKind {
    /// Audio as a voice clip, anything else as a file (images and video render inline)
    Auto,
    /// Always a plain file
    File,
    /// A voice clip
    Voice,
}

/// What to send: text, or a file with an optional caption.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub to: String,
    pub text: Option<String>,
    pub reply_to: Option<String>,
    pub file: Option<PathBuf>,
    pub caption: Option<String>,
    pub attachment_kind: Option<AttachmentKind>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The persona to send as (email or chat address)
    #[arg(
        long = "as",
        value_name = "EMAIL|ADDRESS",
        required_unless_present = "task"
    )]
    pub as_: Option<String>,
    /// Send through a running daemon, as its persona
    #[arg(long, conflicts_with = "as_")]
    pub task: Option<String>,
    /// Recipient chat address (or group:grp_…)
    #[arg(long)]
    pub to: String,
    /// Message text
    #[arg(long)]
    pub message: Option<String>,
    /// Message id this replies to
    #[arg(long)]
    pub reply_to: Option<String>,
    /// A file to attach
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Caption for the file
    #[arg(long)]
    pub caption: Option<String>,
    /// How to send the file [default: auto]
    #[arg(long, value_enum)]
    pub attachment_kind: Option<AttachmentKind>,
    /// Relay URL [default: the persona's]
    #[arg(long, env = "RELAY_URL")]
    pub relay: Option<String>,
    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InboxArgs {
    /// The persona to read as (email or chat address)
    #[arg(long = "as", value_name = "EMAIL|ADDRESS")]
    pub as_: String,
    /// Most messages to claim
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Seconds to wait for a message when none is queued (0–90; scripts waiting for an answer)
    #[arg(long, default_value_t = 0.0, value_parser = wait_secs)]
    pub wait: f64,
    /// Relay URL [default: the persona's]
    #[arg(long, env = "RELAY_URL")]
    pub relay: Option<String>,
    /// One JSON object per message
    #[arg(long)]
    pub json: bool,
}

fn wait_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if (0.0..=90.0).contains(&w) => Ok(w),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 90")),
    }
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The persona to watch as (email or chat address)
    #[arg(long = "as", value_name = "EMAIL|ADDRESS")]
    pub as_: String,
    /// Seconds to pause before retrying after an error
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Most messages per poll
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Leave the GUI auto-login URL out of the start banner
    #[arg(long)]
    pub quiet_url: bool,
    /// Relay URL [default: the persona's]
    #[arg(long, env = "RELAY_URL")]
    pub relay: Option<String>,
    /// One JSON object per message
    #[arg(long)]
    pub json: bool,
}

/// Runs `op` with the persona's session; when the relay no longer takes the token, logs in
/// again (if that needs no person) and retries once.
pub async fn with_session<T, F, Fut>(persona: &mut Persona, op: F) -> Result<T, Failure>
where
    F: Fn(RelayClient) -> Fut,
    Fut: Future<Output = ClientResult<T>>,
{
    match op(client_for(persona)?).await {
        Err(e) if e.is_auth() => {
            relogin_quietly(&store()?, persona).await?;
            Ok(op(client_for(persona)?).await?)
        }
        other => Ok(other?),
    }
}

/// A progress bar on stderr for a transfer, only when stderr is a terminal.
fn transfer_bar(what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    Some(pb)
}

/// Uploads `path` and returns the attachment to send.
async fn upload_file(
    persona: &mut Persona,
    path: &std::path::Path,
    kind: AttachmentKind,
) -> Result<crate::api::messages::Attachment, Failure> {
    if !path.is_file() {
        return Err(Failure::new(
            exit::LOCAL,
            format!("cannot send {}: no such file", path.display()),
        ));
    }
    let kind = match kind {
        AttachmentKind::Auto => "auto",
        AttachmentKind::File => "file",
        AttachmentKind::Voice => "voice",
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let uploaded = with_session(persona, |c| {
        let name = name.clone();
        async move {
            let bar = transfer_bar(&name);
            let r = c.upload(path, kind, bar.clone()).await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            r
        }
    })
    .await?;
    Ok(uploaded.attachment)
}

/// Sends text or a file (with a caption) as `persona`; returns the message id.
pub async fn send_as(persona: &mut Persona, out: &Outgoing) -> Result<String, Failure> {
    let mut attachments = None;
    let text = match &out.file {
        Some(path) => {
            let a = upload_file(
                persona,
                path,
                out.attachment_kind.unwrap_or(AttachmentKind::Auto),
            )
            .await?;
            attachments = Some(vec![AttachmentRef::from(&a)]);
            out.caption
                .clone()
                .or_else(|| out.text.clone())
                .unwrap_or_default()
        }
        None => out.text.clone().unwrap_or_default(),
    };
    if text.trim().is_empty() && attachments.is_none() {
        return Err(Failure::new(
            exit::USAGE,
            "nothing to send: give --message TEXT or --file PATH",
        ));
    }
    let req = SendRequest {
        phone_id: Some(FREE_PHONE_ID.into()),
        channel: Some(PCHAT_CHANNEL.into()),
        subject: None,
        source: Some(persona.chat_address.clone()),
        to: out.to.clone(),
        text: Some(text),
        reply_to: out.reply_to.clone(),
        attachments,
        // One id for every try below: a retry after a lost answer cannot send twice.
        client_message_id: Some(crate::client::new_client_message_id("cli")),
    };
    let sent = with_session(persona, |c| {
        let req = req.clone();
        async move { c.send(&req).await }
    })
    .await?;
    Ok(sent.message_id)
}

pub fn print_sent(message_id: &str, to: &str, json: bool) -> CliResult {
    if json {
        json_line(&json!({"ok": true, "message_id": message_id, "to": to}))
    } else {
        text_line(&format!("sent {message_id} to {to}"))
    }
}

pub async fn send(args: SendArgs) -> CliResult {
    let who = args.as_.clone().unwrap_or_default();
    let mut persona = resolve(&who, args.relay.as_deref()).await?;
    let out = Outgoing {
        to: args.to.clone(),
        text: args.message,
        reply_to: args.reply_to,
        file: args.file,
        caption: args.caption,
        attachment_kind: args.attachment_kind,
    };
    let id = send_as(&mut persona, &out).await?;
    print_sent(&id, &args.to, args.json)
}

/// `send --task T`: the running daemon sends as its persona.
pub fn send_via_daemon(task: &str, args: &SendArgs) -> CliResult {
    if args.file.is_some() {
        return Err(Failure::new(
            exit::USAGE,
            "--file is not supported with --task yet; send files with --as",
        ));
    }
    let text = args.message.clone().unwrap_or_default();
    if text.trim().is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            "nothing to send: give --message TEXT",
        ));
    }
    let id = super::daemon_cmd::send_via_task(
        task,
        json!({"to": args.to, "text": text, "reply_to": args.reply_to}),
    )?;
    print_sent(&id, &args.to, args.json)
}

/// Claims queued messages once and prints them.
pub async fn inbox_as(persona: &mut Persona, limit: u32, wait: f64, json: bool) -> CliResult {
    let req = PollRequest {
        phone_id: Some(FREE_PHONE_ID.into()),
        chat_address: Some(persona.chat_address.clone()),
        limit: Some(limit.clamp(1, 500)),
        after: None,
        wait: (wait > 0.0).then_some(wait),
    };
    let resp = with_session(persona, |c| {
        let req = req.clone();
        async move { c.poll(&req).await }
    })
    .await?;
    if resp.messages.is_empty() && !json {
        return text_line("no new messages");
    }
    for m in &resp.messages {
        if json {
            json_line(m)?;
        } else {
            text_line(&message_text(m, &persona.relay))?;
        }
    }
    Ok(())
}

pub async fn inbox(args: InboxArgs) -> CliResult {
    let mut persona = resolve(&args.as_, args.relay.as_deref()).await?;
    inbox_as(&mut persona, args.limit, args.wait, args.json).await
}

/// How long each long-poll waits; short enough that presence stays fresh between them.
const WATCH_WAIT_SECS: f64 = 25.0;
/// How often presence is refreshed while watching (the relay lapses it after 90 s).
const PRESENCE_EVERY: Duration = Duration::from_secs(30);

/// Marks the persona online, prints messages as they arrive (long-poll), keeps presence fresh;
/// on SIGINT or SIGTERM marks it offline and returns.
pub async fn watch_as(persona: &mut Persona, opts: &WatchArgs) -> CliResult {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot watch for SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(exit::INTERNAL, format!("cannot watch for SIGINT: {e}")))?;

    let online = presence_request(persona, true, None);
    with_session(persona, |c| {
        let online = online.clone();
        async move { c.presence(&online).await }
    })
    .await?;
    let mode = persona
        .relay_mode
        .as_deref()
        .map(|m| format!(" ({m} relay)"))
        .unwrap_or_default();
    eprintln!(
        "watching as {} ({}) on {}{mode}; Ctrl-C stops and goes offline",
        persona.display_name, persona.chat_address, persona.relay
    );
    if !opts.quiet_url {
        eprintln!("GUI auto-login URL (holds a session token: do not share it):");
        eprintln!("{}", gui_url(persona, None));
    }

    let retry = Duration::from_secs_f64(opts.interval.clamp(0.1, 3600.0));
    // Presence is refreshed by its own task: a timer racing the poll in one select would
    // cancel in-flight claims.
    let (client_tx, client_rx) = tokio::sync::watch::channel(client_for(persona)?);
    let refresher = tokio::spawn(refresh_presence(
        client_rx,
        presence_request(persona, true, None),
    ));
    let mut failing = false;
    let req = PollRequest {
        phone_id: Some(FREE_PHONE_ID.into()),
        chat_address: Some(persona.chat_address.clone()),
        limit: Some(opts.limit.clamp(1, 500)),
        after: None,
        wait: Some(WATCH_WAIT_SECS),
    };
    let result: CliResult = loop {
        let client = client_for(persona)?;
        let polled = tokio::select! {
            r = client.poll(&req) => r,
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
        };
        match polled {
            Ok(resp) => {
                if failing {
                    eprintln!("relay reachable again; watching");
                    failing = false;
                }
                for m in &resp.messages {
                    if opts.json {
                        json_line(m)?;
                    } else {
                        text_line(&message_text(m, &persona.relay))?;
                    }
                }
            }
            Err(e) if e.is_auth() => {
                if let Err(e) = relogin_quietly(&store()?, persona).await {
                    break Err(e.into());
                }
                let _ = client_tx.send(client_for(persona)?);
            }
            Err(e) if e.is_transient() => {
                if !failing {
                    eprintln!(
                        "gts-webchat: {e}; retrying every {:.1} s",
                        retry.as_secs_f64()
                    );
                    failing = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = term.recv() => break Ok(()),
                    _ = int.recv() => break Ok(()),
                }
            }
            Err(e) => break Err(e.into()),
        }
    };
    refresher.abort();
    result?;
    // Best effort: the relay may be the reason we are stopping.
    let offline = presence_request(persona, false, None);
    let client = client_for(persona)?;
    match tokio::time::timeout(Duration::from_secs(5), client.presence(&offline)).await {
        Ok(Ok(_)) => eprintln!("offline; stopped watching"),
        _ => eprintln!("stopped watching (could not tell the relay we went offline)"),
    }
    Ok(())
}

async fn refresh_presence(
    client: tokio::sync::watch::Receiver<RelayClient>,
    online: crate::api::presence::PresenceRequest,
) {
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let c = client.borrow().clone();
        if let Err(e) = c.presence(&online).await {
            tracing::debug!("presence refresh failed: {e}");
        }
    }
}

pub async fn watch(args: WatchArgs) -> CliResult {
    let mut persona = resolve(&args.as_, args.relay.as_deref()).await?;
    watch_as(&mut persona, &args).await
}
