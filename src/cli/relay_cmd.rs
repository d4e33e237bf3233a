//! `gts-webchat relay`

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

use super::{CliResult, Failure, exit};
use crate::relay::config::{RelayConfig, RelayFlags};

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on [env: HOST] [default: 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one [env: PORT] [default: 5110, or the next free]
    #[arg(long)]
    pub port: Option<u16>,
    /// Where the database and uploads live [default: $XDG_DATA_HOME/gts-webchat]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Settings file in .env form [default: ./.env.local when present]
    #[arg(long)]
    pub env_file: Option<PathBuf>,
}

pub fn run(args: RelayArgs) -> CliResult {
    super::init_stderr_logging("info,gts_webchat=info");
    let flags = RelayFlags {
        host: args.host,
        port: args.port,
        data_dir: args.data_dir,
        env_file: args.env_file,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let config =
        RelayConfig::load(&flags, &env).map_err(|e| Failure::new(exit::LOCAL, format!("{e}")))?;
    let rt = super::runtime()?;
    rt.block_on(crate::relay::run(config))
        .map_err(|e| Failure::new(exit::LOCAL, format!("the relay stopped: {e}")))
}
