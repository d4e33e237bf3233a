//! One turn of a host: find its program, start or continue its session (by the id saved for
//! this task), feed it the prompt, read its answer, and remember the session. Each task has a
//! working directory of its own, so two tasks never share a host's sessions or files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::output::{self, Parsed};
use super::presets::{Preset, PromptIn, Reader};
use crate::private_fs::{self, FsError};

/// The most of a host's stdout kept (its answer, its JSON events).
const MAX_STDOUT: usize = 8 * 1024 * 1024;
/// The end of stderr kept for error messages.
const STDERR_TAIL: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "{program} (the {preset} host) is not installed or not on PATH; install it with `{install}`"
    )]
    Missing {
        preset: &'static str,
        program: &'static str,
        install: &'static str,
    },
    #[error("{host} failed: {reason}")]
    Failed { host: &'static str, reason: String },
    #[error("could not start {host}: {source}")]
    Spawn {
        host: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// A session this task continues, per host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub workdir: PathBuf,
    pub turns: u64,
    /// The newest message the session has seen: a continued turn's prompt needs only the
    /// history after it.
    #[serde(default)]
    pub last_message: Option<String>,
}

/// The session a turn would continue, if any.
pub fn continued(preset: &Preset, sessions_path: &Path, workdir: &Path) -> Option<SessionRecord> {
    load_sessions(sessions_path)
        .remove(preset.name)
        .filter(|s| s.workdir == workdir)
}

/// `host-sessions.json` in the task folder: preset name → session.
pub type Sessions = HashMap<String, SessionRecord>;

pub fn load_sessions(path: &Path) -> Sessions {
    private_fs::read_optional(path)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_sessions(path: &Path, s: &Sessions) -> Result<(), FsError> {
    let bytes = serde_json::to_vec_pretty(s).unwrap_or_default();
    private_fs::atomic_write(path, &bytes)
}

/// The program's full path, from PATH.
pub fn locate(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A random UUID (v4 form), for hosts that take the session id we choose.
fn new_session_id() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The host's arguments, with the placeholders filled in.
pub fn argv(template: &[&str], flags: &[String], session: &str, prompt_file: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in template {
        match *t {
            "{flags}" => out.extend(flags.iter().cloned()),
            "{session}" => out.push(session.to_string()),
            "{prompt_file}" => out.push(prompt_file.to_string()),
            other => out.push(other.to_string()),
        }
    }
    out
}

/// What to run.
pub struct Turn<'a> {
    pub preset: &'static Preset,
    /// The program to run instead of the preset's one from PATH.
    pub program: Option<&'a Path>,
    /// Extra arguments for the host (WEBCHAT_RUNNER_FLAGS and run-host's trailing arguments).
    pub flags: &'a [String],
    pub workdir: &'a Path,
    /// Where sessions are remembered (`host-sessions.json` of the task).
    pub sessions_path: &'a Path,
    /// Continue the saved session (false: a fresh one every turn).
    pub resume: bool,
    pub prompt: &'a str,
    /// A private folder for the prompt file (hosts that read one).
    pub scratch: &'a Path,
    /// The newest message this turn answers (remembered with the session).
    pub last_message: &'a str,
}

/// What a turn produced.
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    pub session: Option<String>,
    pub resumed: bool,
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Runs the turn; `progress` hears each progress line as the host prints it.
pub async fn run(turn: Turn<'_>, mut progress: impl FnMut(String)) -> Result<Answer, HostError> {
    let p = turn.preset;
    let found = match turn.program {
        Some(path) => Some(path.to_path_buf()).filter(|p| p.is_file()),
        None => locate(p.program),
    };
    let Some(program) = found else {
        return Err(HostError::Missing {
            preset: p.name,
            program: p.program,
            install: p.install,
        });
    };
    private_fs::private_dir(turn.workdir)?;
    let mut sessions = load_sessions(turn.sessions_path);
    let saved = sessions
        .get(p.name)
        .filter(|s| turn.resume && p.has_sessions() && s.workdir == turn.workdir)
        .cloned();
    let (template, session, resumed) = match &saved {
        Some(s) => (p.resume, s.id.clone(), true),
        None => (p.first, new_session_id(), false),
    };
    let prompt_file = turn.scratch.join("prompt.txt");
    if p.prompt == PromptIn::File {
        private_fs::atomic_write(&prompt_file, turn.prompt.as_bytes())?;
    }
    let history_file = turn.workdir.join(".aider.chat.history.md");
    let history_before = if p.reader == Reader::AiderHistory {
        std::fs::metadata(&history_file)
            .map(|m| m.len())
            .unwrap_or(0)
    } else {
        0
    };

    let args = argv(
        template,
        turn.flags,
        &session,
        &prompt_file.display().to_string(),
    );
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .current_dir(turn.workdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in p.env {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().map_err(|source| HostError::Spawn {
        host: p.name,
        source,
    })?;
    let input = match p.prompt {
        PromptIn::Stdin => turn.prompt.as_bytes().to_vec(),
        PromptIn::File => Vec::new(),
    };
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
    }
    let stderr = child.stderr.take().map(|mut e| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(n) = e.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > STDERR_TAIL {
                    buf.drain(..buf.len() - STDERR_TAIL);
                }
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    });
    let mut stdout = String::new();
    if let Some(out) = child.stdout.take() {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            for step in output::parse(p.reader, &line, None).progress {
                progress(step);
            }
            if stdout.len() < MAX_STDOUT {
                stdout.push_str(&line);
                stdout.push('\n');
            }
        }
    }
    let status = child.wait().await.map_err(|source| HostError::Spawn {
        host: p.name,
        source,
    })?;
    let stderr = match stderr {
        Some(h) => h.await.unwrap_or_default(),
        None => String::new(),
    };
    let history = if p.reader == Reader::AiderHistory {
        let all = std::fs::read(&history_file).unwrap_or_default();
        let from = usize::try_from(history_before).unwrap_or(0).min(all.len());
        Some(String::from_utf8_lossy(&all[from..]).into_owned())
    } else {
        None
    };
    let parsed: Parsed = output::parse(p.reader, &stdout, history.as_deref());
    let reason = |fallback: String| -> String {
        parsed
            .error
            .clone()
            .or_else(|| Some(tail_lines(&stderr, 3)).filter(|s| !s.is_empty()))
            .unwrap_or(fallback)
    };
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed".to_string(),
        };
        return Err(HostError::Failed {
            host: p.name,
            reason: format!("{} ({how})", reason(how.clone())),
        });
    }
    if let Some(e) = &parsed.error {
        return Err(HostError::Failed {
            host: p.name,
            reason: e.clone(),
        });
    }
    let Some(text) = parsed.answer.clone().filter(|a| !a.trim().is_empty()) else {
        return Err(HostError::Failed {
            host: p.name,
            reason: reason("it printed no answer".into()),
        });
    };
    let id = parsed.session.clone().unwrap_or(session);
    let record = SessionRecord {
        id: id.clone(),
        workdir: turn.workdir.to_path_buf(),
        turns: saved.map(|s| s.turns).unwrap_or(0) + 1,
        last_message: Some(turn.last_message.to_string()),
    };
    sessions.insert(p.name.to_string(), record);
    save_sessions(turn.sessions_path, &sessions)?;
    Ok(Answer {
        text,
        session: Some(id),
        resumed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let flags = vec!["--allowedTools".to_string(), "Read,Edit".to_string()];
        assert_eq!(
            argv(
                &["-p", "{flags}", "--resume", "{session}"],
                &flags,
                "s1",
                "f"
            ),
            ["-p", "--allowedTools", "Read,Edit", "--resume", "s1"]
        );
        let id = new_session_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
