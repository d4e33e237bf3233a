//! Where a task's files live: state under `$XDG_STATE_HOME/gts-webchat/tasks/<task>/`, the
//! control socket under `$XDG_RUNTIME_DIR/gts-webchat/` (or `/tmp/gts-webchat-$UID/`).

use std::path::{Path, PathBuf};

/// A validated task name: 1–64 of A-Z a-z 0-9 . _ - (it names files and a socket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskName(String);

impl TaskName {
    pub fn parse(raw: &str) -> Result<TaskName, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && !raw.starts_with('.')
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(TaskName(raw.to_string()))
        } else {
            Err(format!(
                "task name {raw:?} is not valid: use 1-64 of A-Z a-z 0-9 . _ - (not starting with '.')"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TaskName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The root of every task's state folder.
pub fn tasks_root() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|d| d.join("gts-webchat").join("tasks"))
}

/// The folder holding every task's control socket.
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(run) => PathBuf::from(run).join("gts-webchat"),
        None => PathBuf::from(format!("/tmp/gts-webchat-{}", nix::unistd::getuid())),
    }
}

/// Every path of one task.
#[derive(Debug, Clone)]
pub struct TaskPaths {
    pub task: TaskName,
    pub dir: PathBuf,
    pub inbox: PathBuf,
    pub state: PathBuf,
    pub settings: PathBuf,
    pub lock: PathBuf,
    pub logs: PathBuf,
    pub attachments: PathBuf,
    pub last_error: PathBuf,
    pub socket_dir: PathBuf,
    pub socket: PathBuf,
}

impl TaskPaths {
    pub fn new(task: &TaskName) -> Option<TaskPaths> {
        Some(TaskPaths::under(task, &tasks_root()?, &socket_dir()))
    }

    pub fn under(task: &TaskName, root: &Path, sockets: &Path) -> TaskPaths {
        let dir = root.join(task.as_str());
        TaskPaths {
            task: task.clone(),
            inbox: dir.join("inbox.jsonl"),
            state: dir.join("state.json"),
            settings: dir.join("settings.json"),
            lock: dir.join("daemon.lock"),
            logs: dir.join("logs"),
            attachments: dir.join("attachments"),
            last_error: dir.join("last_error"),
            socket: sockets.join(format!("{task}.sock")),
            socket_dir: sockets.to_path_buf(),
            dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names() {
        assert!(TaskName::parse("support-1.a_b").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert!(TaskName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
