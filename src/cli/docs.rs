//! `gts-webchat completions SHELL` and `gts-webchat man`, generated from the clap definitions.

use clap::{Args, CommandFactory};

use super::{Cli, CliResult, Failure, exit};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn completions(args: &CompletionsArgs) -> CliResult {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "gts-webchat", &mut std::io::stdout());
    Ok(())
}

pub fn man() -> CliResult {
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd)
        .render(&mut std::io::stdout())
        .map_err(|e| Failure::new(exit::LOCAL, format!("writing the man page: {e}")))
}
