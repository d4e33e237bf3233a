//! The command line: one module per command group. `main` maps every failure to one line on
//! stderr and a distinct exit code.

pub mod exit;
mod relay_cmd;

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
    };
    match result {
        Ok(()) => exit::OK,
        Err(f) => {
            eprintln!("gts-webchat: {}", f.message);
            f.code
        }
    }
}

/// Logging to stderr, filtered by RUST_LOG (default: info for us, warn for the rest).
pub fn init_stderr_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A multi-threaded tokio runtime, built after any fork.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(
                exit::INTERNAL,
                format!("cannot start the async runtime: {e}"),
            )
        })
}
