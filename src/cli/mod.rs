//! The command line: one module per command group. `main` maps every failure to one line on
//! stderr and a distinct exit code.

mod compat;
mod daemon_cmd;
mod docs;
mod doctor_cmd;
pub mod exit;
mod hosts_cmd;
mod mcp_cmd;
mod messaging;
pub mod output;
mod persona_cmd;
mod relay_backup;
mod relay_cmd;
mod relay_keys;
mod relay_migrate;
mod run_host_cmd;
mod tail_cmd;
mod watchdog_cmd;

use clap::{Parser, Subcommand};

/// People and AI sessions as equal participants: relay, client and daemon in one binary.
#[derive(Debug, Parser)]
#[command(name = "gts-webchat", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay: HTTP API, web app and embedded SQLite storage.
    Relay(relay_cmd::RelayArgs),
    /// Run the relay and restart it when it dies or stops answering (for hosts without systemd).
    Watchdog(watchdog_cmd::WatchdogArgs),
    /// Create or reuse an identity on a relay and print its details and GUI login URL.
    Persona(persona_cmd::PersonaArgs),
    /// Send a message as a persona.
    Send(messaging::SendArgs),
    /// Claim queued messages once and print them.
    Inbox(messaging::InboxArgs),
    /// Stay online and print messages as they arrive.
    Watch(messaging::WatchArgs),
    /// List the personas stored on this machine.
    List(persona_cmd::ListArgs),
    /// Keep a persona online and wake a program once per inbound message.
    #[command(subcommand)]
    Daemon(daemon_cmd::DaemonCommand),
    /// Show a task's inbox (the last N messages; -f follows).
    Tail(tail_cmd::TailArgs),
    /// One turn of an AI host per message: the daemon's hook for `--runner PRESET`.
    RunHost(run_host_cmd::RunHostArgs),
    /// An MCP server over stdio: chat as tools for Claude Code, Codex, Cursor, Gemini CLI…
    Mcp(mcp_cmd::McpArgs),
    /// Register the MCP server and live-session hooks in an AI host's config (and take them out)
    #[command(subcommand)]
    Hosts(hosts_cmd::HostsCommand),
    /// What a host's hook runs: brings waiting chat messages into the running session
    HostHook(hosts_cmd::HostHookArgs),
    /// The seed's webchat_cli.py flags, unchanged (`gts-webchat cli EMAIL --name … --watch`).
    Cli(compat::CompatArgs),
    /// Check this machine's relays, personas' tokens, daemons and AI host CLIs; one line each.
    Doctor(doctor_cmd::DoctorArgs),
    /// Print a shell completion script.
    Completions(docs::CompletionsArgs),
    /// Print the man page.
    Man,
}

/// A failure on its way to the user: one line, and the exit code that goes with it.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

pub type CliResult = Result<(), Failure>;

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> i32 {
    crate::client::install_crypto();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Relay(args) => relay_cmd::run(args),
        Command::Watchdog(args) => watchdog_cmd::run(args),
        Command::Persona(args) => client_runtime(persona_cmd::run(args)),
        Command::Send(args) => match args.task.clone() {
            Some(task) => messaging::send_via_daemon(&task, &args),
            None => client_runtime(messaging::send(args)),
        },
        Command::Inbox(args) => client_runtime(messaging::inbox(args)),
        Command::Watch(args) => client_runtime(messaging::watch(args)),
        Command::List(args) => persona_cmd::list(&args),
        Command::Cli(args) => client_runtime(compat::run(args)),
        Command::Daemon(cmd) => daemon_cmd::dispatch(cmd),
        Command::Tail(args) => tail_cmd::run(&args),
        Command::RunHost(args) => run_host_cmd::run(args),
        Command::Mcp(args) => mcp_cmd::run(args),
        Command::Hosts(cmd) => hosts_cmd::dispatch(cmd),
        Command::HostHook(args) => hosts_cmd::host_hook(args),
        Command::Doctor(args) => {
            init_stderr_logging("warn");
            doctor_cmd::run(args)
        }
        Command::Completions(args) => docs::completions(&args),
        Command::Man => docs::man(),
    };
    match result {
        Ok(()) => exit::OK,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("gts-webchat: {}", f.message);
            }
            f.code
        }
    }
}

/// Logging to stderr, filtered by RUST_LOG (default: info for us, warn for the rest).
fn quiet_database_driver() -> tracing_subscriber::filter::Directive {
    "tokio_postgres=info"
        .parse()
        .expect("a constant, valid filter directive")
}

pub fn init_stderr_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
        // tokio-postgres logs every statement's parameters at debug level: tokens' hashes,
        // callback secrets, message text. Never at any RUST_LOG.
        .add_directive(quiet_database_driver());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A single-threaded runtime for client commands (built after any fork).
pub fn small_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime_failure)
}

/// A multi-threaded runtime for the relay (built after any fork).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(runtime_failure)
}

fn runtime_failure(e: std::io::Error) -> Failure {
    Failure::new(
        exit::INTERNAL,
        format!("cannot start the async runtime: {e}"),
    )
}

/// Runs a client command on a small runtime, with warnings (not info chatter) on stderr.
fn client_runtime(fut: impl std::future::Future<Output = CliResult>) -> CliResult {
    init_stderr_logging("warn");
    small_runtime()?.block_on(fut)
}
