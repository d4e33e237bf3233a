//! Where each host keeps its MCP servers and hooks, and the entries gts-webchat puts there.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::edits::{Edit, How};
use crate::hosts::live::LiveHost;

/// A host `hosts install` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Host {
    Claude,
    Codex,
    Gemini,
    Cursor,
    Opencode,
}

impl Host {
    pub fn as_str(self) -> &'static str {
        match self {
            Host::Claude => "claude",
            Host::Codex => "codex",
            Host::Gemini => "gemini",
            Host::Cursor => "cursor",
            Host::Opencode => "opencode",
        }
    }

    pub fn parse(s: &str) -> Option<Host> {
        [
            Host::Claude,
            Host::Codex,
            Host::Gemini,
            Host::Cursor,
            Host::Opencode,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
    }

    /// The host's live-session hooks, when it has ones we answer.
    pub fn live(self) -> Option<LiveHost> {
        match self {
            Host::Claude => Some(LiveHost::Claude),
            Host::Codex => Some(LiveHost::Codex),
            Host::Gemini => Some(LiveHost::Gemini),
            Host::Cursor => Some(LiveHost::Cursor),
            Host::Opencode => None,
        }
    }
}

/// What goes into the host's config for one task.
pub struct Wanted<'a> {
    pub host: Host,
    pub task: &'a str,
    pub exe: &'a Path,
    pub socket: &'a Path,
    pub mcp: bool,
    pub hooks: bool,
}

fn home() -> PathBuf {
    dirs::home_dir().unwrap_or_else(|| PathBuf::from("."))
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn claude_dir() -> PathBuf {
    env_dir("CLAUDE_CONFIG_DIR").unwrap_or_else(|| home().join(".claude"))
}

/// Claude Code keeps user-scope MCP servers in `~/.claude.json` (inside CLAUDE_CONFIG_DIR
/// when that is set), hooks in `settings.json`.
fn claude_state_file() -> PathBuf {
    match env_dir("CLAUDE_CONFIG_DIR") {
        Some(d) => d.join(".claude.json"),
        None => home().join(".claude.json"),
    }
}

fn codex_dir() -> PathBuf {
    env_dir("CODEX_HOME").unwrap_or_else(|| home().join(".codex"))
}

fn opencode_file() -> PathBuf {
    dirs::config_dir()
        .unwrap_or_else(|| home().join(".config"))
        .join("opencode/opencode.json")
}

/// The MCP server's name in the host (one per task, so tasks do not collide).
pub fn server_name(task: &str) -> String {
    format!("webchat-{task}")
}

fn quoted(p: &Path) -> String {
    let s = p.display().to_string();
    shlex::try_quote(&s).map(|q| q.into_owned()).unwrap_or(s)
}

/// The shell command a host runs for one hook event.
fn hook_command(w: &Wanted, live: LiveHost, event: &str) -> String {
    format!(
        "{} host-hook {event} --host {} --task {} --socket {}",
        quoted(w.exe),
        live.as_str(),
        w.task,
        quoted(w.socket)
    )
}

/// The XDG folders this install ran with: they say where the task's persona, state and socket
/// are, and some hosts (Codex, Gemini CLI) start MCP servers with a scrubbed environment.
fn server_env() -> serde_json::Map<String, Value> {
    [
        "XDG_CONFIG_HOME",
        "XDG_STATE_HOME",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
    ]
    .iter()
    .filter_map(|k| {
        let v = std::env::var(k).ok().filter(|v| !v.is_empty())?;
        Some((k.to_string(), Value::String(v)))
    })
    .collect()
}

fn mcp_args(task: &str) -> Value {
    json!(["mcp", "--task", task])
}

fn set(at: &[&str], value: Value) -> Edit {
    Edit::new(at, value, How::Set)
}

fn append(at: &[&str], value: Value) -> Edit {
    Edit::new(at, value, How::Append)
}

/// Every file to change and the edits in it, in order.
pub fn plan(w: &Wanted) -> Result<Vec<(PathBuf, Vec<Edit>)>, String> {
    let name = server_name(w.task);
    let exe = w.exe.display().to_string();
    let mut files: Vec<(PathBuf, Vec<Edit>)> = Vec::new();
    let mut add = |path: PathBuf, edits: Vec<Edit>| match files.iter_mut().find(|(p, _)| *p == path)
    {
        Some((_, e)) => e.extend(edits),
        None => files.push((path, edits)),
    };
    if w.mcp {
        let env = server_env();
        let mut stdio = json!({"command": exe, "args": mcp_args(w.task)});
        if !env.is_empty() {
            stdio["env"] = Value::Object(env.clone());
        }
        match w.host {
            Host::Claude => add(
                claude_state_file(),
                vec![set(
                    &["mcpServers", &name],
                    json!({"type": "stdio", "command": exe, "args": mcp_args(w.task), "env": env}),
                )],
            ),
            Host::Codex => {
                // Codex asks before every MCP call, and `codex exec` (approval "never") then
                // refuses them all. Chatting as the persona is what this install is for, so
                // those calls run; the two that touch local files still ask (and are refused
                // headless), so a message cannot talk a session into sending ~/.ssh away.
                let mut entry = stdio.clone();
                entry["default_tools_approval_mode"] = json!("approve");
                entry["tools"] = json!({
                    "send_file": {"approval_mode": "prompt"},
                    "download_attachment": {"approval_mode": "prompt"},
                });
                add(
                    codex_dir().join("config.toml"),
                    vec![set(&["mcp_servers", &name], entry)],
                )
            }
            Host::Gemini => add(
                home().join(".gemini/settings.json"),
                vec![set(&["mcpServers", &name], stdio)],
            ),
            Host::Cursor => add(
                home().join(".cursor/mcp.json"),
                vec![set(&["mcpServers", &name], stdio)],
            ),
            Host::Opencode => {
                let mut command = vec![json!(exe)];
                command.extend(mcp_args(w.task).as_array().cloned().unwrap_or_default());
                let mut entry = json!({"type": "local", "command": command, "enabled": true});
                if !env.is_empty() {
                    entry["environment"] = Value::Object(env);
                }
                add(opencode_file(), vec![set(&["mcp", &name], entry)])
            }
        }
    }
    if w.hooks {
        let live = w.host.live().ok_or_else(|| {
            format!(
                "{} has no hooks gts-webchat can answer (its plugins are JavaScript); use --mcp",
                w.host.as_str()
            )
        })?;
        let (end, submit) = live.events();
        let command_hook = |event: &str, timeout: u64| json!({"hooks": [{"type": "command", "command": hook_command(w, live, event), "timeout": timeout}]});
        match w.host {
            Host::Claude | Host::Codex => {
                let file = if w.host == Host::Claude {
                    claude_dir().join("settings.json")
                } else {
                    codex_dir().join("hooks.json")
                };
                let mut edits = vec![append(&["hooks", end], command_hook(end, 30))];
                if let Some(s) = submit {
                    edits.push(append(&["hooks", s], command_hook(s, 30)));
                }
                add(file, edits)
            }
            Host::Gemini => {
                // Gemini counts hook timeouts in milliseconds.
                let mut edits = vec![append(&["hooks", end], command_hook(end, 30_000))];
                if let Some(s) = submit {
                    edits.push(append(&["hooks", s], command_hook(s, 30_000)));
                }
                add(home().join(".gemini/settings.json"), edits)
            }
            Host::Cursor => add(
                home().join(".cursor/hooks.json"),
                vec![
                    set(&["version"], json!(1)),
                    append(
                        &["hooks", end],
                        json!({"command": hook_command(w, live, end)}),
                    ),
                ],
            ),
            Host::Opencode => {}
        }
    }
    Ok(files)
}
