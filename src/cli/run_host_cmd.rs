//! `gts-webchat run-host PRESET`: one turn of an AI host per message, as the daemon's hook.
//! It reads the daemon's records on stdin, builds the fenced prompt (history from the relay
//! through the daemon's socket, the agent's own replies included), runs the host in the task's
//! own working directory, continues its session by id, and prints only the answer. A failed
//! host prints its own reason on stderr and exits non-zero, so nothing is sent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use hyper::Method;

use super::{CliResult, Failure, exit};
use crate::api::messages::{EventType, Message};
use crate::daemon::control;
use crate::daemon::inbox::InboxRecord;
use crate::daemon::protocol::{HistoryBody, SendBody};
use crate::hosts::presets;
use crate::hosts::prompt::{self, Entry};
use crate::hosts::turn::{self, HostError};

#[derive(Debug, Args)]
pub struct RunHostArgs {
    /// The host: codex, claude, gemini, qwen, opencode, copilot, aider, cursor or goose
    pub preset: String,
    /// Extra arguments for the host, after `--` (added to WEBCHAT_RUNNER_FLAGS)
    #[arg(last = true, value_name = "HOST ARGS")]
    pub host_args: Vec<String>,
    /// Where the host works [default: $WEBCHAT_WORKDIR, else a folder of the task's own]
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Earlier messages in the prompt [default: $WEBCHAT_HISTORY, else 20]
    #[arg(long)]
    pub history: Option<usize>,
    /// The prompt's budget in bytes; the oldest history goes first [default:
    /// $WEBCHAT_PROMPT_BYTES, else 100000]
    #[arg(long)]
    pub prompt_bytes: Option<usize>,
    /// A fresh host session every turn instead of continuing the task's ($WEBCHAT_RESUME=0)
    #[arg(long)]
    pub fresh: bool,
    /// Print the prompt instead of running the host
    #[arg(long)]
    pub print_prompt: bool,
    /// Run this program instead of the preset's one from PATH (with `text`: any program that
    /// reads the prompt on stdin and prints its answer)
    #[arg(long, value_name = "PATH")]
    pub program: Option<PathBuf>,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn env_num(key: &str) -> Option<usize> {
    env(key).and_then(|v| v.trim().parse().ok())
}

/// The conversation a record belongs to, as history names it.
fn conversation(m: &Message) -> String {
    match &m.group_id {
        Some(g) => format!("group:{g}"),
        None => m.from.clone(),
    }
}

fn read_records() -> Result<Vec<InboxRecord>, Failure> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| Failure::new(exit::LOCAL, format!("reading the records on stdin: {e}")))?;
    let records: Vec<InboxRecord> = input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("stdin is not the daemon's inbox records (one JSON line each): {e}"),
            )
        })?;
    let wanted: Vec<InboxRecord> = records
        .into_iter()
        .filter(|r| matches!(r.message.event_type, EventType::Message | EventType::Edit))
        .collect();
    if wanted.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            "no message on stdin: run-host is the daemon's hook (`gts-webchat daemon start --runner PRESET`)",
        ));
    }
    Ok(wanted)
}

/// Talks to the daemon that runs this hook, when there is one.
struct Daemon {
    task: String,
    socket: PathBuf,
}

impl Daemon {
    fn from_env() -> Option<Daemon> {
        Some(Daemon {
            task: env("GTS_WEBCHAT_TASK")?,
            socket: PathBuf::from(env("GTS_WEBCHAT_SOCKET")?),
        })
    }

    async fn history(&self, with: &str, limit: usize) -> Result<Vec<Message>, String> {
        let body = serde_json::to_value(HistoryBody {
            with: with.to_string(),
            limit: Some(limit.clamp(1, 200) as u32),
        })
        .map_err(|e| e.to_string())?;
        control::request(
            &self.task,
            &self.socket,
            Method::POST,
            "/history",
            Some(body),
        )
        .await
        .map(|r| r.messages.unwrap_or_default())
        .map_err(|e| e.to_string())
    }

    async fn post(&self, to: &str, text: String) {
        let body = SendBody {
            to: to.to_string(),
            text: Some(text),
            reply_to: None,
            attachments: None,
            client_message_id: Some(crate::client::new_client_message_id("pub")),
        };
        let Ok(body) = serde_json::to_value(body) else {
            return;
        };
        if let Err(e) =
            control::request(&self.task, &self.socket, Method::POST, "/send", Some(body)).await
        {
            eprintln!("gts-webchat: run-host: could not post the turn's status: {e}");
        }
    }
}

/// Earlier messages from the inbox file alone (inbound only), when no daemon answers.
fn inbox_history(inbox: &Path, with: &str) -> Vec<Entry> {
    crate::daemon::inbox::read_from(inbox, 0)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.record.message.event_type == EventType::Message
                && conversation(&p.record.message) == with
        })
        .map(|p| Entry {
            message: p.record.message,
            attachment_paths: p.record.attachment_paths,
        })
        .collect()
}

/// Posts status lines of a turn to the --publish group, at most one every 2 s.
struct Publisher<'a> {
    daemon: Option<&'a Daemon>,
    to: Option<String>,
    last: Option<Instant>,
    sent: usize,
}

impl Publisher<'_> {
    async fn say(&mut self, text: String, always: bool) {
        let (Some(d), Some(to)) = (self.daemon, self.to.as_deref()) else {
            return;
        };
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if !always && (!due || self.sent >= 20) {
            return;
        }
        self.last = Some(Instant::now());
        self.sent += 1;
        d.post(to, text).await;
    }
}

pub fn run(args: RunHostArgs) -> CliResult {
    let preset = presets::find(&args.preset).ok_or_else(|| {
        Failure::new(
            exit::USAGE,
            format!(
                "{:?} is not a host gts-webchat knows; choose one of: {}",
                args.preset,
                presets::names().join(", ")
            ),
        )
    })?;
    if preset.program.is_empty() && args.program.is_none() && !args.print_prompt {
        return Err(Failure::new(
            exit::USAGE,
            "run-host text runs a program of yours: give it with --program PATH",
        ));
    }
    let records = read_records()?;
    let inbox = env("GTS_WEBCHAT_INBOX").map(PathBuf::from);
    let task_dir = inbox
        .as_ref()
        .and_then(|i| i.parent().map(Path::to_path_buf))
        .ok_or_else(|| {
            Failure::new(
                exit::USAGE,
                "GTS_WEBCHAT_INBOX is not set: run-host runs as the daemon's hook (`gts-webchat daemon start --runner PRESET`)",
            )
        })?;
    let me = env("GTS_WEBCHAT_CHAT_ADDRESS").unwrap_or_else(|| "the agent".into());
    let workdir = args
        .workdir
        .clone()
        .or_else(|| env("WEBCHAT_WORKDIR").map(PathBuf::from))
        .unwrap_or_else(|| task_dir.join("workdir"));
    let history_n = args.history.or(env_num("WEBCHAT_HISTORY")).unwrap_or(20);
    let budget = args
        .prompt_bytes
        .or(env_num("WEBCHAT_PROMPT_BYTES"))
        .unwrap_or(prompt::DEFAULT_BUDGET);
    let resume =
        preset.has_sessions() && !args.fresh && env("WEBCHAT_RESUME").as_deref() != Some("0");
    let mut flags = match env("WEBCHAT_RUNNER_FLAGS") {
        Some(f) => shlex::split(&f).ok_or_else(|| {
            Failure::new(exit::USAGE, "WEBCHAT_RUNNER_FLAGS has an unclosed quote")
        })?,
        None => Vec::new(),
    };
    flags.extend(args.host_args.iter().cloned());

    let new: Vec<Entry> = records
        .into_iter()
        .map(|r| Entry {
            message: r.message,
            attachment_paths: r.attachment_paths,
        })
        .collect();
    let with = new
        .last()
        .map(|e| conversation(&e.message))
        .unwrap_or_default();
    let daemon = Daemon::from_env();
    let rt = super::small_runtime()?;
    rt.block_on(async {
        let fetched = match &daemon {
            Some(d) => d.history(&with, history_n + new.len()).await,
            None => Err("no daemon socket".into()),
        };
        let mut history: Vec<Entry> = match fetched {
            Ok(messages) => messages
                .into_iter()
                .filter(|m| m.event_type == EventType::Message && !m.deleted)
                .map(|message| Entry {
                    message,
                    attachment_paths: Vec::new(),
                })
                .collect(),
            Err(e) => {
                eprintln!(
                    "gts-webchat: run-host: history from the relay unavailable ({e}); using the inbox only"
                );
                inbox.as_deref().map(|i| inbox_history(i, &with)).unwrap_or_default()
            }
        };
        history.retain(|h| !new.iter().any(|n| n.message.message_id == h.message.message_id));
        // A continued session has seen the conversation up to its last turn: only what came
        // after goes into the prompt (messages answered elsewhere, group chatter).
        let sessions_path = task_dir.join("host-sessions.json");
        let seen = resume
            .then(|| turn::continued(preset, &sessions_path, &workdir))
            .flatten()
            .and_then(|s| s.last_message);
        if let Some(pos) = seen
            .as_deref()
            .and_then(|id| history.iter().position(|h| h.message.message_id == id))
        {
            history.drain(..=pos);
        }
        let skip = history.len().saturating_sub(history_n);
        let history = &history[skip..];
        let (text, _) = prompt::build(&prompt::Turn {
            me: &me,
            history,
            new: &new,
            budget,
        });
        if args.print_prompt {
            print!("{text}");
            return Ok(());
        }
        let mut publisher = Publisher {
            daemon: daemon.as_ref(),
            to: env("GTS_WEBCHAT_PUBLISH"),
            last: None,
            sent: 0,
        };
        let peer = new
            .last()
            .map(|e| e.message.from.clone())
            .unwrap_or_default();
        publisher
            .say(format!("▶ {me} is answering {peer} ({})", preset.name), true)
            .await;
        let scratch = tempfile::Builder::new()
            .prefix(".run-host-")
            .tempdir_in(&task_dir)
            .map_err(|e| {
                Failure::new(
                    exit::LOCAL,
                    format!("creating a scratch folder in {}: {e}", task_dir.display()),
                )
            })?;
        let started = Instant::now();
        // Progress goes out while the host works, not after.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let last_message = new
            .last()
            .map(|e| e.message.message_id.clone())
            .unwrap_or_default();
        let work = turn::run(
            turn::Turn {
                preset,
                program: args.program.as_deref(),
                flags: &flags,
                workdir: &workdir,
                sessions_path: &sessions_path,
                resume,
                prompt: &text,
                scratch: scratch.path(),
                last_message: &last_message,
            },
            move |step| {
                let _ = tx.send(step);
            },
        );
        let relay_progress = async {
            while let Some(step) = rx.recv().await {
                publisher.say(format!("… {step}"), false).await;
            }
        };
        let (outcome, ()) = tokio::join!(work, relay_progress);
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(answer) => {
                publisher
                    .say(format!("✓ {me} answered {peer} in {secs:.1} s"), true)
                    .await;
                println!("{}", answer.text.trim());
                Ok(())
            }
            Err(e) => {
                publisher
                    .say(format!("✗ {me}'s turn failed after {secs:.1} s: {e}"), true)
                    .await;
                let code = match e {
                    HostError::Missing { .. } => exit::HOST_MISSING,
                    HostError::Fs(_) => exit::LOCAL,
                    _ => exit::HOST_FAILED,
                };
                Err(Failure::new(code, format!("run-host: {e}")))
            }
        }
    })
}
