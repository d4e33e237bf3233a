//! `daemon install` / `uninstall`: a systemd user unit on Linux, a launchd agent on macOS, from
//! the templates in `systemd/` and `launchd/` (embedded, so the binary alone can install).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::paths::TaskName;
use crate::private_fs::{self, FsError};

const UNIT_TEMPLATE: &str = include_str!("../../systemd/gts-webchat@.service");
const PLIST_TEMPLATE: &str = include_str!("../../launchd/dev.gts-webchat.daemon.plist");
const TEMPLATE_BIN: &str = "/usr/local/bin/gts-webchat";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cannot find this program's own path: {0}")]
    NoExe(std::io::Error),
    #[error("no home or config directory for this user")]
    NoHome,
    #[error("`{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    #[error("service install is supported on Linux (systemd) and macOS (launchd) only")]
    Unsupported,
}

/// What was installed where.
#[derive(Debug)]
pub struct Installed {
    pub file: PathBuf,
    pub unit: String,
}

fn run(cmd: &str, args: &[&str]) -> Result<(), ServiceError> {
    let shown = format!("{cmd} {}", args.join(" "));
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| ServiceError::Command {
            cmd: shown.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ServiceError::Command {
            cmd: shown,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn exe() -> Result<String, ServiceError> {
    Ok(std::env::current_exe()
        .map_err(ServiceError::NoExe)?
        .display()
        .to_string())
}

fn systemd_dir() -> Result<PathBuf, ServiceError> {
    Ok(dirs::config_dir()
        .ok_or(ServiceError::NoHome)?
        .join("systemd")
        .join("user"))
}

fn launchd_dir() -> Result<PathBuf, ServiceError> {
    Ok(dirs::home_dir()
        .ok_or(ServiceError::NoHome)?
        .join("Library")
        .join("LaunchAgents"))
}

fn write(path: &Path, text: &str) -> Result<(), ServiceError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| FsError::new("creating", dir, e))?;
    }
    private_fs::atomic_write(path, text.as_bytes())?;
    // Unit files are read by the service manager, not secret.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| FsError::new("setting permissions on", path, e))?;
    Ok(())
}

/// The unit text for this binary.
pub fn unit_text(exe: &str) -> String {
    UNIT_TEMPLATE.replace(TEMPLATE_BIN, exe)
}

/// The plist text for a task and this binary.
pub fn plist_text(task: &TaskName, exe: &str) -> String {
    PLIST_TEMPLATE
        .replace(TEMPLATE_BIN, exe)
        .replace("TASK", task.as_str())
}

pub fn install(task: &TaskName) -> Result<Installed, ServiceError> {
    let exe = exe()?;
    if cfg!(target_os = "macos") {
        let label = format!("dev.gts-webchat.daemon.{task}");
        let file = launchd_dir()?.join(format!("{label}.plist"));
        write(&file, &plist_text(task, &exe))?;
        run("launchctl", &["load", "-w", &file.display().to_string()])?;
        Ok(Installed { file, unit: label })
    } else if cfg!(target_os = "linux") {
        let file = systemd_dir()?.join("gts-webchat@.service");
        write(&file, &unit_text(&exe))?;
        let unit = format!("gts-webchat@{task}.service");
        run("systemctl", &["--user", "daemon-reload"])?;
        run("systemctl", &["--user", "enable", "--now", &unit])?;
        Ok(Installed { file, unit })
    } else {
        Err(ServiceError::Unsupported)
    }
}

pub fn uninstall(task: &TaskName) -> Result<Installed, ServiceError> {
    if cfg!(target_os = "macos") {
        let label = format!("dev.gts-webchat.daemon.{task}");
        let file = launchd_dir()?.join(format!("{label}.plist"));
        let _ = run("launchctl", &["unload", "-w", &file.display().to_string()]);
        let _ = std::fs::remove_file(&file);
        Ok(Installed { file, unit: label })
    } else if cfg!(target_os = "linux") {
        let dir = systemd_dir()?;
        let unit = format!("gts-webchat@{task}.service");
        run("systemctl", &["--user", "disable", "--now", &unit])?;
        // The template serves every task: remove it only when no instance is left enabled.
        let wants = dir.join("default.target.wants");
        let others = std::fs::read_dir(&wants)
            .map(|rd| {
                rd.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with("gts-webchat@") && n != unit)
                })
            })
            .unwrap_or(false);
        let file = dir.join("gts-webchat@.service");
        if !others {
            let _ = std::fs::remove_file(&file);
            let _ = run("systemctl", &["--user", "daemon-reload"]);
        }
        Ok(Installed { file, unit })
    } else {
        Err(ServiceError::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_get_the_binary_and_task() {
        let task = TaskName::parse("support").unwrap();
        let plist = plist_text(&task, "/opt/bin/gts-webchat");
        assert!(plist.contains("<string>dev.gts-webchat.daemon.support</string>"));
        assert!(plist.contains("<string>/opt/bin/gts-webchat</string>"));
        assert!(plist.contains("<string>--task</string>\n        <string>support</string>"));
        assert!(!plist.contains(TEMPLATE_BIN));
        let unit = unit_text("/opt/bin/gts-webchat");
        assert!(unit.contains("ExecStart=/opt/bin/gts-webchat daemon run --task %i"));
    }
}
