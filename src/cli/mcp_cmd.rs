//! `gts-webchat mcp --as PERSONA`: the MCP server over stdio. When a daemon runs for the
//! persona, messages come through its socket (one cursor for both); otherwise from the relay.

use clap::Args;
use hyper::Method;

use super::persona_cmd::store;
use super::{CliResult, Failure, exit};
use crate::daemon::control;
use crate::daemon::paths::{self, TaskName, TaskPaths};
use crate::daemon::settings::{Identity, TaskSettings};
use crate::mcp::chat::{Chat, DaemonLink};
use crate::mcp::server::{ChatServer, Source};

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The local persona (email or chat address) the tools act as [default: the task's]
    #[arg(long = "as", value_name = "PERSONA", required_unless_present = "task")]
    pub as_: Option<String>,
    /// Read through this task's daemon (when it runs; else from the relay) [default: the
    /// running daemon of this persona, if any]
    #[arg(long)]
    pub task: Option<String>,
    /// Talk to the relay directly even when a daemon runs for the persona
    #[arg(long, conflicts_with = "task")]
    pub no_daemon: bool,
}

/// The running daemon of `address`, if any: the task's, or the first that answers as it.
async fn find_daemon(address: &str, task: Option<&str>) -> Result<Option<DaemonLink>, Failure> {
    let names: Vec<String> = match task {
        Some(t) => vec![t.to_string()],
        None => paths::tasks_root()
            .and_then(|root| std::fs::read_dir(root).ok())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect(),
    };
    for name in names {
        let Ok(task_name) = TaskName::parse(&name) else {
            continue;
        };
        let Some(p) = TaskPaths::new(&task_name) else {
            continue;
        };
        let status = control::request(&name, &p.socket, Method::GET, "/status", None).await;
        match status {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.chat_address == address) => {
                return Ok(Some(DaemonLink {
                    task: name,
                    socket: p.socket,
                }));
            }
            Ok(_) if task.is_some() => {
                return Err(Failure::new(
                    exit::USAGE,
                    format!("the daemon of task {name} does not run as {address}"),
                ));
            }
            Err(e) if task.is_some() => {
                // Not running now: the tools talk to the relay directly.
                tracing::warn!("{e}; reading from the relay directly");
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The persona a task's daemon runs as (from its saved settings).
fn persona_of_task(task: &str) -> Result<String, Failure> {
    let name = TaskName::parse(task).map_err(|e| Failure::new(exit::USAGE, e))?;
    let paths = TaskPaths::new(&name)
        .ok_or_else(|| Failure::new(exit::LOCAL, "no home directory; set HOME"))?;
    let settings = TaskSettings::load(&paths.settings)
        .map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?
        .ok_or_else(|| {
            Failure::new(
                exit::LOCAL,
                format!(
                    "there is no task {task}: start it with `gts-webchat daemon start --task {task} --as PERSONA`, or pass --as"
                ),
            )
        })?;
    Ok(match settings.identity {
        Identity::Persona { who } => who,
        Identity::Flags {
            email,
            chat_address,
            ..
        } => chat_address.unwrap_or(email),
    })
}

pub fn run(args: McpArgs) -> CliResult {
    // stdout is the protocol: every log line goes to stderr.
    super::init_stderr_logging("warn");
    let rt = super::small_runtime()?;
    rt.block_on(async {
        let store = store()?;
        let who = match (&args.as_, &args.task) {
            (Some(who), _) => who.clone(),
            (None, Some(task)) => persona_of_task(task)?,
            (None, None) => return Err(Failure::new(exit::USAGE, "pass --as PERSONA or --task T")),
        };
        let persona = store.find(&who)?.ok_or_else(|| {
            Failure::new(
                exit::LOCAL,
                format!(
                    "no local persona matches {who:?}; create it with `gts-webchat persona EMAIL`"
                ),
            )
        })?;
        let daemon = if args.no_daemon {
            None
        } else {
            find_daemon(&persona.chat_address, args.task.as_deref()).await?
        };
        if let Some(d) = &daemon {
            tracing::info!(task = %d.task, "reading through the daemon");
        }
        let chat = Chat::for_persona(&persona, daemon)
            .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
        let server = ChatServer::new(Source::Fixed(chat));
        let service = rmcp::ServiceExt::serve(server, rmcp::transport::stdio())
            .await
            .map_err(|e| Failure::new(exit::INTERNAL, format!("MCP over stdio: {e}")))?;
        service
            .waiting()
            .await
            .map_err(|e| Failure::new(exit::INTERNAL, format!("MCP session: {e}")))?;
        Ok(())
    })
}
