//! `gts-webchat hosts install|uninstall|status` (our MCP server and hooks in a host's config)
//! and `gts-webchat host-hook EVENT` (what those hooks run).

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use super::{CliResult, Failure, exit};
use crate::daemon::control;
use crate::daemon::paths::{TaskName, TaskPaths};
use crate::daemon::protocol::ClaimBody;
use crate::hosts::install::{self, FileState, Host, InstallError, Undone, Wanted};
use crate::hosts::live::{self, LiveEvent, LiveHost};
use crate::hosts::prompt::{self, Entry};

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Register the MCP server and/or the live-session hooks in a host's own config
    Install(InstallArgs),
    /// Take out exactly what `hosts install` put in
    Uninstall(UninstallArgs),
    /// Show what is installed where
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[arg(value_enum)]
    pub host: Host,
    /// The daemon task whose persona the host chats as
    #[arg(long)]
    pub task: String,
    /// The MCP server (chat as tools) [default: with --hooks unset, both]
    #[arg(long)]
    pub mcp: bool,
    /// The hooks that bring waiting messages into a running session
    #[arg(long)]
    pub hooks: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[arg(value_enum)]
    pub host: Host,
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HostHookArgs {
    /// The host's event: Stop or UserPromptSubmit (Claude Code, Codex), AfterAgent or
    /// BeforeAgent (Gemini CLI), stop (Cursor)
    pub event: String,
    #[arg(long, value_enum)]
    pub host: LiveHost,
    /// The daemon task whose inbox the session reads
    #[arg(long)]
    pub task: String,
    /// The daemon's control socket [default: the task's]
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

fn task_paths(task: &str) -> Result<TaskPaths, Failure> {
    let name = TaskName::parse(task).map_err(|e| Failure::new(exit::USAGE, e))?;
    TaskPaths::new(&name).ok_or_else(|| {
        Failure::new(
            exit::LOCAL,
            "no home directory to keep daemon state in; set HOME or XDG_STATE_HOME",
        )
    })
}

fn local(e: InstallError) -> Failure {
    let code = match e {
        InstallError::Unsupported(_) => exit::USAGE,
        _ => exit::LOCAL,
    };
    Failure::new(code, e.to_string())
}

pub fn dispatch(cmd: HostsCommand) -> CliResult {
    match cmd {
        HostsCommand::Install(a) => install_cmd(a),
        HostsCommand::Uninstall(a) => uninstall_cmd(a),
        HostsCommand::Status(a) => status_cmd(a),
    }
}

fn install_cmd(a: InstallArgs) -> CliResult {
    let paths = task_paths(&a.task)?;
    if !paths.settings.is_file() {
        return Err(Failure::new(
            exit::LOCAL,
            format!(
                "there is no task {0}: start its daemon first (`gts-webchat daemon start --task {0} --as PERSONA`)",
                a.task
            ),
        ));
    }
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Failure::new(exit::LOCAL, format!("finding this program's path: {e}")))?;
    let (mcp, hooks) = match (a.mcp, a.hooks) {
        (false, false) => (true, a.host.live().is_some()),
        pair => pair,
    };
    let w = Wanted {
        host: a.host,
        task: &a.task,
        exe: &exe,
        socket: &paths.socket,
        mcp,
        hooks,
    };
    let m = install::install(
        &w,
        &crate::api::rfc3339_from_millis(crate::api::now_millis()),
    )
    .map_err(local)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        return Ok(());
    }
    for f in &m.files {
        println!("wrote {}", f.path.display());
    }
    if mcp {
        let name = install::targets::server_name(&a.task);
        println!("MCP server: {name} (gts-webchat mcp --task {})", a.task);
        if a.host == Host::Claude {
            println!("  allow its tools in claude -p with: --allowedTools mcp__{name}");
        }
    }
    if hooks {
        println!("hooks: waiting chat messages continue a turn that ends, and go with each prompt");
        if a.host == Host::Codex {
            println!("  Codex runs new hooks only after you trust them (/hooks in codex)");
        }
    }
    println!(
        "undo with: gts-webchat hosts uninstall {} --task {}",
        a.host.as_str(),
        a.task
    );
    Ok(())
}

fn uninstall_cmd(a: UninstallArgs) -> CliResult {
    let done = install::uninstall(a.host, &a.task).map_err(|e| match e {
        InstallError::NotInstalled { .. } => Failure::new(exit::LOCAL, e.to_string()),
        other => local(other),
    })?;
    if a.json {
        let rows: Vec<Value> = done
            .iter()
            .map(|(p, u)| json!({"path": p, "undone": u}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    for (path, what) in done {
        let how = match what {
            Undone::Restored => "restored as it was",
            Undone::EntriesRemoved => "changed since the install: took out only our entries",
            Undone::Nothing => "our entries were already gone",
        };
        println!("{}: {how}", path.display());
    }
    Ok(())
}

fn status_cmd(a: StatusArgs) -> CliResult {
    let all = install::status().map_err(local)?;
    if a.json {
        let rows: Vec<Value> = all
            .iter()
            .map(|(m, states)| {
                let files: Vec<Value> = m
                    .files
                    .iter()
                    .zip(states)
                    .map(|(f, s)| json!({"path": f.path, "state": s}))
                    .collect();
                json!({"host": m.host, "task": m.task, "mcp": m.mcp, "hooks": m.hooks,
                       "installed_at": m.installed_at, "files": files})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    if all.is_empty() {
        println!("nothing installed (gts-webchat hosts install HOST --task T)");
    }
    for (m, states) in all {
        let what: Vec<&str> = [("MCP server", m.mcp), ("hooks", m.hooks)]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(w, _)| *w)
            .collect();
        println!("{} task {}: {}", m.host, m.task, what.join(" and "));
        for (f, s) in m.files.iter().zip(states) {
            let state = match s {
                FileState::AsInstalled => "as installed",
                FileState::Changed => "changed since, our entries in it",
                FileState::EntriesGone => "changed since, our entries gone",
                FileState::Missing => "missing",
            };
            println!("  {} ({state})", f.path.display());
        }
    }
    Ok(())
}

/// Largest hook input read from stdin.
const HOOK_INPUT_BYTES: u64 = 1024 * 1024;
/// Text budget of what one hook injects.
const INJECT_BYTES: usize = 24_000;

/// The hook: read what the host sent, and when chat messages wait, print what makes the host
/// take them into the session. Messages are acknowledged to the daemon only after they were
/// printed, so a hook killed halfway loses none.
pub fn host_hook(a: HostHookArgs) -> CliResult {
    // Exit 2 means "blocking error" to Claude and Codex: never use it here.
    let event = live::event_of(a.host, &a.event).map_err(|e| Failure::new(exit::LOCAL, e))?;
    let mut raw = Vec::new();
    let _ = std::io::stdin()
        .take(HOOK_INPUT_BYTES)
        .read_to_end(&mut raw);
    let input: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    if event == LiveEvent::TurnEnd && live::already_continued(a.host, &input) {
        return Ok(());
    }
    let socket = match a.socket.clone() {
        Some(s) => s,
        None => task_paths(&a.task)?.socket,
    };
    let rt = super::small_runtime()?;
    rt.block_on(async {
        let hook_err = |e: control::ControlError| Failure::new(exit::NOT_RUNNING, e.to_string());
        let status = control::request(&a.task, &socket, Method::GET, "/status", None)
            .await
            .map_err(hook_err)?;
        let me = status.status.map(|s| s.chat_address).unwrap_or_default();
        let peek = ClaimBody {
            limit: Some(20),
            wait_secs: None,
            through: None,
        };
        let body = serde_json::to_value(peek).unwrap_or_default();
        let records = control::request(&a.task, &socket, Method::POST, "/peek", Some(body))
            .await
            .map_err(hook_err)?
            .records
            .unwrap_or_default();
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(());
        };
        let entries: Vec<Entry> = records
            .into_iter()
            .filter(|r| !matches!(r.message.event_type, crate::api::messages::EventType::Read))
            .map(|r| Entry {
                message: r.message,
                attachment_paths: r.attachment_paths,
            })
            .collect();
        if !entries.is_empty() {
            let mut text = prompt::render(&me, &entries, INJECT_BYTES);
            text.push_str(&live::answer_hint(&a.task));
            let out = live::response(a.host, event, &text);
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{out}")
                .and_then(|_| stdout.flush())
                .map_err(|e| {
                    Failure::new(exit::INTERNAL, format!("writing the hook answer: {e}"))
                })?;
        }
        let ack = ClaimBody {
            limit: Some(20),
            wait_secs: None,
            through: Some(last),
        };
        let body = serde_json::to_value(ack).unwrap_or_default();
        control::request(&a.task, &socket, Method::POST, "/claim", Some(body))
            .await
            .map_err(hook_err)?;
        Ok(())
    })
}
