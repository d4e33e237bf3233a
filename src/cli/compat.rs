//! `gts-webchat cli`: the seed's `scripts/webchat_cli.py` flag set, unchanged, mapped onto the
//! native commands. The mode follows the seed: --list lists, --watch watches, --inbox polls
//! once, --to with --message/--file sends, and otherwise the persona is created or reused and
//! its details and GUI URL printed.

use std::path::PathBuf;

use clap::Args;

use super::messaging::{self, AttachmentKind, Outgoing, WatchArgs};
use super::persona_cmd::{self, IdentityArgs, ListArgs};
use super::{CliResult, Failure, exit};

#[derive(Debug, Args)]
pub struct CompatArgs {
    /// Email of the identity (not needed with --list)
    pub email: Option<String>,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// List local personas
    #[arg(long)]
    pub list: bool,
    /// Stay online and print messages as they arrive
    #[arg(long)]
    pub watch: bool,
    /// Seconds between retries after an error while watching
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Most messages per poll
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Leave the GUI auto-login URL out
    #[arg(long)]
    pub quiet_url: bool,
    /// Claim queued messages once
    #[arg(long)]
    pub inbox: bool,
    /// Recipient chat address (or group:grp_…)
    #[arg(long)]
    pub to: Option<String>,
    /// Message text
    #[arg(long)]
    pub message: Option<String>,
    /// A file to send
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Caption for the file
    #[arg(long)]
    pub caption: Option<String>,
    /// auto, file or voice [default: auto: audio goes as a voice clip]
    #[arg(long, value_enum)]
    pub attachment_kind: Option<AttachmentKind>,
    /// Message id this replies to
    #[arg(long)]
    pub reply_to: Option<String>,
    /// Machine-readable output, one JSON object per line
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: CompatArgs) -> CliResult {
    if args.list {
        return persona_cmd::list(&ListArgs { json: args.json });
    }
    let Some(email) = args.email.clone() else {
        return Err(Failure::new(
            exit::USAGE,
            "give the persona's EMAIL (for example `gts-webchat cli ai@example.com --name \"AI\"`), or --list",
        ));
    };
    let sending = args.message.is_some() || args.file.is_some();
    if sending && args.to.is_none() {
        return Err(Failure::new(
            exit::USAGE,
            "--message and --file need --to ADDRESS",
        ));
    }
    let (mut persona, outcome) = persona_cmd::ensure(&email, &args.identity).await?;

    if args.watch {
        let opts = WatchArgs {
            as_: persona.email.clone(),
            interval: args.interval,
            limit: args.limit,
            quiet_url: args.quiet_url,
            relay: None,
            json: args.json,
        };
        return messaging::watch_as(&mut persona, &opts).await;
    }
    if args.inbox {
        return messaging::inbox_as(&mut persona, args.limit, 0.0, args.json).await;
    }
    if let Some(to) = &args.to {
        if !sending {
            return Err(Failure::new(
                exit::USAGE,
                "--to needs --message TEXT or --file PATH",
            ));
        }
        let out = Outgoing {
            to: to.clone(),
            text: args.message.clone(),
            reply_to: args.reply_to.clone(),
            file: args.file.clone(),
            caption: args.caption.clone(),
            attachment_kind: args.attachment_kind,
        };
        let id = messaging::send_as(&mut persona, &out).await?;
        return messaging::print_sent(&id, to, args.json);
    }
    persona_cmd::print_persona(
        &persona,
        Some(outcome),
        args.quiet_url,
        args.json,
        args.identity.site.as_deref(),
    )
}
