//! `gts-webchat tail --task T [-n 20] [-f] [--json]`: the task's inbox, readable; `-f` follows
//! new records as they land (filesystem notifications, not a sleep loop).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc;

use clap::Args;
use notify::{RecursiveMode, Watcher};

use super::output::{json_line, message_text, text_line};
use super::{CliResult, Failure, exit};
use crate::daemon::inbox::{self, InboxRecord};
use crate::daemon::paths::{TaskName, TaskPaths};

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Task name
    #[arg(long)]
    pub task: String,
    /// How many of the newest records to show
    #[arg(short = 'n', long = "lines", default_value_t = 20)]
    pub lines: usize,
    /// Keep printing records as they arrive
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// One JSON record per line, as stored
    #[arg(long)]
    pub json: bool,
}

fn relay_of(paths: &TaskPaths) -> String {
    crate::daemon::launch::saved_settings(paths)
        .ok()
        .flatten()
        .and_then(|s| match s.identity {
            crate::daemon::settings::Identity::Flags { relay, .. } => relay,
            crate::daemon::settings::Identity::Persona { who } => s.relay.or_else(|| {
                crate::client::PersonaStore::open_default()
                    .ok()
                    .and_then(|st| st.find(&who).ok().flatten())
                    .map(|p| p.relay)
            }),
        })
        .unwrap_or_default()
}

fn print_line(line: &str, json: bool, relay: &str) -> CliResult {
    if json {
        return text_line(line);
    }
    match serde_json::from_str::<InboxRecord>(line) {
        Ok(r) => {
            let mut text = message_text(&r.message, relay);
            for p in &r.attachment_paths {
                text.push_str(&format!("\n    saved: {}", super::output::terminal_safe(p)));
            }
            text_line(&text)
        }
        Err(_) => json_line(&serde_json::json!({"unparsed": line})),
    }
}

/// Reads complete lines from `offset`; returns the new offset.
fn read_new(path: &Path, offset: u64, json: bool, relay: &str) -> Result<u64, Failure> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(_) => return Ok(offset),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // Shorter than before: recovery cut a partial line; continue from the new end.
    let from = if len < offset { len } else { offset };
    if len == from {
        return Ok(from);
    }
    f.seek(SeekFrom::Start(from))
        .map_err(|e| Failure::new(exit::LOCAL, format!("reading {}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| Failure::new(exit::LOCAL, format!("reading {}: {e}", path.display())))?;
    let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok(from);
    };
    for line in buf[..last_nl].split(|&b| b == b'\n') {
        if !line.is_empty() {
            print_line(&String::from_utf8_lossy(line), json, relay)?;
        }
    }
    Ok(from + last_nl as u64 + 1)
}

pub fn run(args: &TailArgs) -> CliResult {
    let task = TaskName::parse(&args.task).map_err(|e| Failure::new(exit::USAGE, e))?;
    let paths = TaskPaths::new(&task)
        .ok_or_else(|| Failure::new(exit::LOCAL, "no state directory for this user"))?;
    if !paths.dir.exists() {
        return Err(Failure::new(
            exit::LOCAL,
            format!(
                "there is no task {task}; start one with `gts-webchat daemon start --task {task} …`"
            ),
        ));
    }
    let relay = relay_of(&paths);
    let (mut offset, lines) = inbox::last_lines(&paths.inbox, args.lines)
        .map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?;
    for l in &lines {
        print_line(l, args.json, &relay)?;
    }
    if !args.follow {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    })
    .map_err(|e| {
        Failure::new(
            exit::LOCAL,
            format!("cannot watch {}: {e}", paths.dir.display()),
        )
    })?;
    // The folder, not the file: the inbox may not exist yet.
    watcher
        .watch(&paths.dir, RecursiveMode::NonRecursive)
        .map_err(|e| {
            Failure::new(
                exit::LOCAL,
                format!("cannot watch {}: {e}", paths.dir.display()),
            )
        })?;
    // Anything that landed between the first read and the watch starting.
    offset = read_new(&paths.inbox, offset, args.json, &relay)?;
    for event in rx {
        let touches_inbox = match &event {
            Ok(ev) => ev.paths.iter().any(|p| p.ends_with("inbox.jsonl")),
            Err(_) => true,
        };
        if touches_inbox {
            offset = read_new(&paths.inbox, offset, args.json, &relay)?;
        }
    }
    Ok(())
}
