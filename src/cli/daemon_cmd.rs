//! `gts-webchat daemon …`

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::json;

use super::output::{human_size, json_line, text_line};
use super::persona_cmd::IdentityArgs;
use super::{CliResult, Failure, exit};
use crate::api::Kind;
use crate::daemon::control::{self, ControlError};
use crate::daemon::launch::{self, LaunchError};
use crate::daemon::paths::{TaskName, TaskPaths};
use crate::daemon::protocol::{Phase, Status};
use crate::daemon::service;
use crate::daemon::settings::{BusyPolicy, HookSettings, Identity, TaskSettings};
use crate::daemon::state::DaemonState;

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start a background daemon for a task; returns once it answers on its socket.
    Start(StartArgs),
    /// The daemon in the foreground (for systemd, launchd and debugging).
    Run(StartArgs),
    /// Stop a task's daemon: offline presence, a running hook's grace period, then exit.
    Stop(TaskArgs),
    /// Stop (if running) and start again with the saved settings.
    Restart(TaskArgs),
    /// Show a task's daemon: running or not, relay, cursor, queue, hooks, dead letters.
    Status(TaskArgs),
    /// Every task and its state.
    List(ListArgs),
    /// Run dead-lettered messages' hooks again.
    Retry(TaskArgs),
    /// Hold hooks (messages keep arriving and are kept).
    Pause(TaskArgs),
    /// Run hooks again after a pause.
    Resume(TaskArgs),
    /// Install and enable a systemd user unit (Linux) or launchd agent (macOS) for a task.
    Install(TaskArgs),
    /// Disable and remove what `install` set up.
    Uninstall(TaskArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BusyArg {
    /// One run per message, in order
    Queue,
    /// Everything that arrived while busy goes to the next single run
    Coalesce,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// Task name (1-64 of A-Z a-z 0-9 . _ -)
    #[arg(long)]
    pub task: String,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per task
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Task name (1-64 of A-Z a-z 0-9 . _ -)
    #[arg(long)]
    pub task: String,
    /// An existing local persona (email or chat address) to run as
    #[arg(long = "as", value_name = "PERSONA")]
    pub as_: Option<String>,
    /// Email of the identity, created or reused like `gts-webchat cli EMAIL …`
    pub email: Option<String>,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Program run once per inbound message (directly, never through a shell), with the
    /// message as one JSON line on stdin. Put it last: its arguments run to the next flag.
    #[arg(long, num_args = 1.., value_name = "PROGRAM [ARGS]", conflicts_with = "runner")]
    pub on_message: Option<Vec<String>>,
    /// Wake an AI host for one turn per message: runs `gts-webchat run-host PRESET` as the
    /// hook (codex, claude, gemini, qwen, opencode, copilot, aider, cursor, goose)
    #[arg(long, value_name = "PRESET")]
    pub runner: Option<String>,
    /// An extra argument for the host (repeat for several), e.g. --runner-arg=--model
    #[arg(long = "runner-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub runner_args: Vec<String>,
    /// Post a live status of each turn (started, progress, finished or failed) into this stream
    /// group (group:grp_…), so a person sees the agent work
    #[arg(long, value_name = "group:ID")]
    pub publish: Option<String>,
    /// Stop posting turn status (undoes a saved --publish)
    #[arg(long, conflicts_with = "publish")]
    pub no_publish: bool,
    /// What to do with messages that arrive while a hook runs [default: queue]
    #[arg(long, value_enum)]
    pub on_busy: Option<BusyArg>,
    /// Send the hook's stdout back to the sender as a reply
    #[arg(long)]
    pub reply: bool,
    /// Stop sending the hook's stdout back (undoes a saved --reply)
    #[arg(long, conflicts_with = "reply")]
    pub no_reply: bool,
    /// Seconds before a hook is terminated (TERM, then KILL) [default: 600]
    #[arg(long)]
    pub hook_timeout: Option<u64>,
    /// Runs per message before it is dead-lettered [default: 3]
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Loop guard: automatic replies allowed per peer per window [default: 20]
    #[arg(long)]
    pub reply_limit: Option<u32>,
    /// Loop guard window in seconds [default: 600]
    #[arg(long)]
    pub reply_window: Option<u64>,
    /// Seconds a running hook may finish when the daemon stops [default: 10]
    #[arg(long)]
    pub stop_grace: Option<u64>,
    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
}

fn task_paths(task: &str) -> Result<(TaskName, TaskPaths), Failure> {
    let name = TaskName::parse(task).map_err(|e| Failure::new(exit::USAGE, e))?;
    let paths = TaskPaths::new(&name).ok_or_else(|| {
        Failure::new(
            exit::LOCAL,
            "no state directory for this user; set XDG_STATE_HOME or HOME",
        )
    })?;
    Ok((name, paths))
}

impl From<LaunchError> for Failure {
    fn from(e: LaunchError) -> Failure {
        let code = match &e {
            LaunchError::Invalid(_) => exit::USAGE,
            LaunchError::AlreadyRunning { .. } => exit::ALREADY_RUNNING,
            LaunchError::NotRunning { .. } => exit::NOT_RUNNING,
            LaunchError::Failed { .. } => exit::REFUSED,
            LaunchError::Control(c) => return Failure::from_control(c),
            _ => exit::LOCAL,
        };
        Failure::new(code, e.to_string())
    }
}

impl Failure {
    fn from_control(e: &ControlError) -> Failure {
        let code = match e {
            ControlError::NotRunning { .. } => exit::NOT_RUNNING,
            ControlError::Refused { .. } => exit::REFUSED,
            _ => exit::LOCAL,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Failure {
        Failure::from_control(&e)
    }
}

/// Saved settings overlaid with the flags given now.
fn merged_settings(args: &StartArgs, paths: &TaskPaths) -> Result<TaskSettings, Failure> {
    let saved =
        launch::saved_settings(paths).map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?;
    let id = &args.identity;
    let identity = if let Some(who) = &args.as_ {
        Some(Identity::Persona { who: who.clone() })
    } else {
        args.email.as_ref().map(|email| Identity::Flags {
            email: email.clone(),
            name: id.name.clone(),
            persona: id.persona.clone(),
            computer: id.computer.clone(),
            session_name: id.session_name.clone(),
            chat_address: id.chat_address.clone(),
            listen_channel: id.listen_channel.clone(),
            kind: Some(id.kind.map(Kind::from).unwrap_or(Kind::Agent)),
            relay: id.relay.clone(),
            site: id.site.clone(),
            relay_mode: id.relay_mode.map(|m| format!("{m:?}").to_ascii_lowercase()),
        })
    };
    let mut s = match (identity, saved) {
        (Some(identity), Some(saved)) => TaskSettings { identity, ..saved },
        (Some(identity), None) => TaskSettings::new(identity),
        (None, Some(saved)) => saved,
        (None, None) => {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "task {} has no saved settings yet: give --as PERSONA, or EMAIL --name NAME --chat-address ADDRESS",
                    paths.task
                ),
            ));
        }
    };
    if args.as_.is_some() {
        // With a persona, --relay moves it to another relay; without, the persona's own.
        s.relay = id.relay.clone();
    }
    if let Some(hook) = &args.on_message {
        let (program, rest) = hook
            .split_first()
            .ok_or_else(|| Failure::new(exit::USAGE, "--on-message needs a PROGRAM"))?;
        let program = launch::resolve_program(&PathBuf::from(program))?;
        s.hook = Some(HookSettings {
            program,
            args: rest.to_vec(),
        });
    }
    if let Some(preset) = &args.runner {
        if crate::hosts::presets::find(preset).is_none() {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "--runner {preset:?} is not a host gts-webchat knows; choose one of: {}",
                    crate::hosts::presets::names().join(", ")
                ),
            ));
        }
        let program = std::env::current_exe().map_err(|e| {
            Failure::new(
                exit::LOCAL,
                format!("cannot find this gts-webchat binary: {e}"),
            )
        })?;
        let mut hook_args = vec!["run-host".to_string(), preset.clone()];
        if !args.runner_args.is_empty() {
            hook_args.push("--".into());
            hook_args.extend(args.runner_args.iter().cloned());
        }
        s.hook = Some(HookSettings {
            program,
            args: hook_args,
        });
    }
    if let Some(target) = &args.publish {
        if crate::api::address::group_target(target).is_none() {
            return Err(Failure::new(
                exit::USAGE,
                format!("--publish takes a stream group as group:grp_…, not {target:?}"),
            ));
        }
        s.publish = Some(target.clone());
    }
    if args.no_publish {
        s.publish = None;
    }
    if let Some(b) = args.on_busy {
        s.on_busy = match b {
            BusyArg::Queue => BusyPolicy::Queue,
            BusyArg::Coalesce => BusyPolicy::Coalesce,
        };
    }
    if args.reply {
        s.reply = true;
    }
    if args.no_reply {
        s.reply = false;
    }
    if let Some(v) = args.hook_timeout {
        s.hook_timeout_secs = v.max(1);
    }
    if let Some(v) = args.max_attempts {
        s.max_attempts = v.max(1);
    }
    if let Some(v) = args.reply_limit {
        s.reply_limit = v;
    }
    if let Some(v) = args.reply_window {
        s.reply_window_secs = v.max(1);
    }
    if let Some(v) = args.stop_grace {
        s.stop_grace_secs = v;
    }
    if s.reply && s.hook.is_none() {
        return Err(Failure::new(
            exit::USAGE,
            "--reply sends the hook's output back, so it needs --on-message PROGRAM or --runner PRESET",
        ));
    }
    Ok(s)
}

fn print_started(st: &Status, json: bool) -> CliResult {
    if json {
        return json_line(&json!({
            "ok": true, "task": st.task, "pid": st.pid, "phase": st.phase,
            "inbox": st.inbox_path, "socket": st.socket, "problem": st.problem,
        }));
    }
    let mut lines = vec![
        format!("daemon for task {} started (pid {})", st.task, st.pid),
        format!("  inbox:  {}", st.inbox_path),
        format!("  socket: {}", st.socket),
    ];
    if let Some(p) = &st.problem {
        lines.push(format!("  note:   {p}"));
    }
    text_line(&lines.join("\n"))
}

fn start(args: &StartArgs) -> CliResult {
    let (task, paths) = task_paths(&args.task)?;
    if control::answers(&paths.socket) && !launch::lock_is_free(&paths) {
        return Err(LaunchError::AlreadyRunning {
            task: task.to_string(),
            pid: launch::recorded_pid(&paths)
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default(),
        }
        .into());
    }
    let settings = merged_settings(args, &paths)?;
    let started = launch::start(&task, &paths, &settings)?;
    print_started(&started.status, args.json)
}

fn run(args: &StartArgs) -> CliResult {
    let (task, paths) = task_paths(&args.task)?;
    let settings = merged_settings(args, &paths)?;
    match launch::run_foreground(&task, &paths, &settings)? {
        0 => Ok(()),
        code => Err(Failure::new(
            code,
            format!("the daemon for task {task} stopped with an error"),
        )),
    }
}

fn stop_grace(paths: &TaskPaths) -> Duration {
    let secs = launch::saved_settings(paths)
        .ok()
        .flatten()
        .map(|s| s.stop_grace_secs)
        .unwrap_or(10);
    Duration::from_secs(secs)
}

fn stop(args: &TaskArgs) -> CliResult {
    let (task, paths) = task_paths(&args.task)?;
    super::small_runtime()?.block_on(launch::stop(&paths, stop_grace(&paths)))?;
    if args.json {
        json_line(&json!({"ok": true, "task": task.as_str(), "stopped": true}))
    } else {
        text_line(&format!("daemon for task {task} stopped"))
    }
}

fn restart(args: &TaskArgs) -> CliResult {
    let (task, paths) = task_paths(&args.task)?;
    match super::small_runtime()?.block_on(launch::stop(&paths, stop_grace(&paths))) {
        Ok(()) | Err(LaunchError::NotRunning { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let settings = launch::saved_settings(&paths)
        .map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?
        .ok_or_else(|| {
            Failure::new(
                exit::USAGE,
                format!("task {task} has no saved settings; start it with `gts-webchat daemon start --task {task} …`"),
            )
        })?;
    let started = launch::start(&task, &paths, &settings)?;
    print_started(&started.status, args.json)
}

fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn print_status(st: &Status) -> CliResult {
    let phase = match st.phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Failed => "failed",
        Phase::Stopping => "stopping",
    };
    let mut l = vec![format!(
        "task {}: {phase} (pid {}, up {}, version {})",
        st.task,
        st.pid,
        ago(st.uptime_secs),
        st.version
    )];
    l.push(format!(
        "  relay:        {} as {} ({})",
        if st.relay.is_empty() { "-" } else { &st.relay },
        if st.chat_address.is_empty() {
            "-"
        } else {
            &st.chat_address
        },
        if st.online { "online" } else { "offline" }
    ));
    if let Some(p) = &st.problem {
        l.push(format!("  problem:      {p}"));
    }
    if let Some(e) = &st.error {
        l.push(format!("  error:        {e}"));
    }
    let past: Vec<_> = st.incidents.iter().filter(|i| i.until.is_some()).collect();
    if !past.is_empty() {
        l.push("  earlier problems:".into());
        for i in past.iter().rev().take(5) {
            l.push(format!(
                "    {} to {}: {}",
                i.since,
                i.until.as_deref().unwrap_or(""),
                i.what
            ));
        }
    }
    l.push(format!(
        "  cursor:       {}",
        st.cursor.as_deref().unwrap_or("-")
    ));
    l.push(format!(
        "  inbox:        {} ({} records, {})",
        st.inbox_path,
        st.inbox_records,
        human_size(st.inbox_bytes)
    ));
    l.push(format!(
        "  queue:        {} waiting{}",
        st.queue_depth,
        if st.hooks_paused {
            "; hooks paused"
        } else {
            ""
        }
    ));
    match &st.hook {
        Some(h) => l.push(format!(
            "  hook:         {h} ({}{})",
            st.on_busy,
            if st.reply { ", replies on" } else { "" }
        )),
        None => l.push("  hook:         none (messages are kept in the inbox)".into()),
    }
    if let Some(r) = &st.running_hook {
        l.push(format!(
            "  running hook: {} (attempt {}, {} message(s), pid {}, since {})",
            r.message_id,
            r.attempt,
            r.batch,
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.started_at
        ));
    }
    if let Some(h) = &st.last_hook {
        l.push(format!(
            "  last hook:    {} {} in {} ms at {} ({})",
            h.message_id,
            if h.ok { "ok" } else { "failed" },
            h.duration_ms,
            h.finished_at,
            h.detail
        ));
    }
    if st.hook_runs > 0 {
        l.push(format!(
            "  hook runs:    {} ({} failed)",
            st.hook_runs, st.hook_failures
        ));
    }
    if !st.dead_letters.is_empty() {
        l.push(format!(
            "  dead letters: {} (run `gts-webchat daemon retry --task {}`)",
            st.dead_letters.len(),
            st.task
        ));
        for d in st.dead_letters.iter().take(5) {
            l.push(format!(
                "    {} after {} attempts: {}",
                d.record.message.message_id, d.attempts, d.error
            ));
        }
    }
    if !st.loop_guarded.is_empty() {
        l.push(format!(
            "  loop guard:   not replying to {}",
            st.loop_guarded.join(", ")
        ));
    }
    l.push(format!("  socket:       {}", st.socket));
    text_line(&l.join("\n"))
}

fn status(args: &TaskArgs) -> CliResult {
    let (task, paths) = task_paths(&args.task)?;
    match super::small_runtime()?.block_on(launch::status(&paths)) {
        Ok(st) => {
            if args.json {
                let mut v = serde_json::to_value(&st).unwrap_or_default();
                v["running"] = json!(true);
                json_line(&v)
            } else {
                print_status(&st)
            }
        }
        Err(ControlError::NotRunning { .. }) => {
            // What is known without the daemon.
            let state = DaemonState::load(&paths.state).unwrap_or_default();
            let last_error = std::fs::read_to_string(&paths.last_error).ok();
            if args.json {
                json_line(&json!({
                    "running": false, "task": task.as_str(), "cursor": state.cursor,
                    "inbox_path": paths.inbox, "dead_letters": state.dead,
                    "last_hook": state.last_hook, "last_error": last_error,
                }))?;
            } else {
                let mut l = vec![format!("task {task}: not running")];
                if let Some(e) = last_error {
                    l.push(format!("  last error:   {}", e.trim()));
                }
                if let Some(c) = &state.cursor {
                    l.push(format!("  cursor:       {c}"));
                }
                if !state.dead.is_empty() {
                    l.push(format!("  dead letters: {}", state.dead.len()));
                }
                l.push(format!(
                    "  start it with `gts-webchat daemon start --task {task}`"
                ));
                text_line(&l.join("\n"))?;
            }
            Err(Failure::new(exit::NOT_RUNNING, ""))
        }
        Err(e) => Err(e.into()),
    }
}

fn list(args: &ListArgs) -> CliResult {
    let rt = super::small_runtime()?;
    let tasks = launch::list_tasks();
    if tasks.is_empty() && !args.json {
        return text_line(
            "no tasks yet; start one with `gts-webchat daemon start --task NAME --as PERSONA`",
        );
    }
    let mut rows = vec![[
        "TASK".to_string(),
        "STATE".into(),
        "PID".into(),
        "ADDRESS".into(),
        "QUEUE".into(),
        "DEAD".into(),
        "PROBLEM".into(),
    ]];
    for task in tasks {
        let Some(paths) = TaskPaths::new(&task) else {
            continue;
        };
        match rt.block_on(launch::status(&paths)) {
            Ok(st) => {
                if args.json {
                    json_line(
                        &json!({"task": task.as_str(), "running": true, "pid": st.pid,
                        "phase": st.phase, "chat_address": st.chat_address, "queue_depth": st.queue_depth,
                        "dead_letters": st.dead_letters.len(), "problem": st.problem}),
                    )?;
                }
                rows.push([
                    task.to_string(),
                    format!("{:?}", st.phase).to_ascii_lowercase(),
                    st.pid.to_string(),
                    st.chat_address,
                    st.queue_depth.to_string(),
                    st.dead_letters.len().to_string(),
                    st.problem.unwrap_or_default(),
                ]);
            }
            Err(_) => {
                let state = DaemonState::load(&paths.state).unwrap_or_default();
                if args.json {
                    json_line(&json!({"task": task.as_str(), "running": false,
                        "dead_letters": state.dead.len()}))?;
                }
                rows.push([
                    task.to_string(),
                    "stopped".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    state.dead.len().to_string(),
                    String::new(),
                ]);
            }
        }
    }
    if args.json {
        return Ok(());
    }
    text_line(&super::output::table(&rows))
}

fn simple(args: &TaskArgs, path: &str, done: &str) -> CliResult {
    let (task, paths) = task_paths(&args.task)?;
    let reply = super::small_runtime()?.block_on(control::request(
        task.as_str(),
        &paths.socket,
        Method::POST,
        path,
        None,
    ))?;
    if args.json {
        json_line(&json!({"ok": true, "task": task.as_str(), "retried": reply.retried}))
    } else {
        let extra = reply
            .retried
            .map(|n| format!(" ({n} dead letter(s) queued)"))
            .unwrap_or_default();
        text_line(&format!("task {task}: {done}{extra}"))
    }
}

fn install(args: &TaskArgs) -> CliResult {
    let (task, paths) = task_paths(&args.task)?;
    if launch::saved_settings(&paths)
        .map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?
        .is_none()
    {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "task {task} has no saved settings; run `gts-webchat daemon start --task {task} …` once first"
            ),
        ));
    }
    // The service manager runs it from now on: a daemon started by hand would hold the lock.
    match super::small_runtime()?.block_on(launch::stop(&paths, stop_grace(&paths))) {
        Ok(()) | Err(LaunchError::NotRunning { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let done = service::install(&task).map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?;
    if args.json {
        json_line(&json!({"ok": true, "task": task.as_str(), "unit": done.unit, "file": done.file}))
    } else {
        text_line(&format!(
            "installed and enabled {} ({})\non Linux, `loginctl enable-linger $USER` keeps it running after you log out",
            done.unit,
            done.file.display()
        ))
    }
}

fn uninstall(args: &TaskArgs) -> CliResult {
    let (task, _) = task_paths(&args.task)?;
    let done = service::uninstall(&task).map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?;
    if args.json {
        json_line(&json!({"ok": true, "task": task.as_str(), "unit": done.unit}))
    } else {
        text_line(&format!("disabled and removed {}", done.unit))
    }
}

/// `daemon start` forks, so it must run before any runtime exists: this dispatcher is sync.
pub fn dispatch(cmd: DaemonCommand) -> CliResult {
    match cmd {
        DaemonCommand::Start(a) => start(&a),
        DaemonCommand::Run(a) => run(&a),
        DaemonCommand::Stop(a) => stop(&a),
        DaemonCommand::Restart(a) => restart(&a),
        DaemonCommand::Status(a) => status(&a),
        DaemonCommand::List(a) => list(&a),
        DaemonCommand::Retry(a) => simple(&a, "/retry", "dead letters queued again"),
        DaemonCommand::Pause(a) => simple(&a, "/pause", "hooks paused"),
        DaemonCommand::Resume(a) => simple(&a, "/resume", "hooks resumed"),
        DaemonCommand::Install(a) => install(&a),
        DaemonCommand::Uninstall(a) => uninstall(&a),
    }
}

/// `gts-webchat send --task T …`: through the running daemon.
pub fn send_via_task(task: &str, body: serde_json::Value) -> Result<String, Failure> {
    let (task, paths) = task_paths(task)?;
    let reply = super::small_runtime()?.block_on(control::request(
        task.as_str(),
        &paths.socket,
        Method::POST,
        "/send",
        Some(body),
    ))?;
    reply
        .message_id
        .ok_or_else(|| Failure::new(exit::INTERNAL, "the daemon sent no message id"))
}
