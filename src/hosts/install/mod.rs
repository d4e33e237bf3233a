//! `gts-webchat hosts install|uninstall|status`: our MCP server and live-session hooks in a
//! host's own config files. Each install keeps a manifest with the bytes each file had before
//! and a hash of what we wrote, so uninstall restores the file byte for byte when nobody
//! changed it since, and otherwise takes out exactly our entries and nothing else.
//!
//! - `targets`: where each host keeps what, and our entries.
//! - `edits`: putting entries into JSON and TOML and taking them out again.

pub mod edits;
pub mod targets;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::edits::{Edit, EditError, Format};
pub use self::targets::{Host, Wanted};
use crate::private_fs::{self, FsError};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{path} is not UTF-8 text; gts-webchat leaves it alone")]
    NotText { path: PathBuf },
    #[error(
        "the install record {path} is damaged ({why}); remove our entries by hand and delete it"
    )]
    Manifest { path: PathBuf, why: String },
    #[error("nothing of gts-webchat is installed in {host} for task {task}")]
    NotInstalled { host: String, task: String },
}

/// What one install changed in one file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: PathBuf,
    /// The whole file before the install; None when it did not exist.
    pub original: Option<String>,
    /// sha256 of what the install wrote.
    pub written_sha256: String,
    /// Folders the install created for the file (removed again when empty).
    #[serde(default)]
    pub created_dirs: Vec<PathBuf>,
    pub edits: Vec<Edit>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub host: String,
    pub task: String,
    pub installed_at: String,
    pub mcp: bool,
    pub hooks: bool,
    pub files: Vec<FileRecord>,
}

/// How a file stands against its install record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Exactly as the install left it.
    AsInstalled,
    /// Changed since, our entries still in it.
    Changed,
    /// Changed since, and our entries are gone.
    EntriesGone,
    Missing,
}

/// What uninstall did to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Undone {
    /// Put back byte for byte (or deleted, when the install created it).
    Restored,
    /// Changed since the install: only our entries were taken out.
    EntriesRemoved,
    /// Already gone.
    Nothing,
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn manifests_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .unwrap_or_else(|| PathBuf::from("."))
        .join("gts-webchat/hosts")
}

fn manifest_path(host: Host, task: &str) -> PathBuf {
    manifests_dir().join(format!("{}--{task}.json", host.as_str()))
}

fn read_text(path: &Path) -> Result<Option<String>, InstallError> {
    match private_fs::read_optional(path)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| InstallError::NotText {
                path: path.to_path_buf(),
            }),
    }
}

/// Writes a host's file atomically, keeping its mode (a config is often 0644; ours 0600).
fn write_keeping_mode(path: &Path, text: &str) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok().map(|m| m.permissions().mode());
    private_fs::atomic_write(path, text.as_bytes())?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::new("setting permissions on", path, e))?;
    }
    Ok(())
}

fn load(path: &Path) -> Result<Option<Manifest>, InstallError> {
    match private_fs::read_optional(path)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| InstallError::Manifest {
                path: path.to_path_buf(),
                why: e.to_string(),
            }),
    }
}

/// Installs for `w` (after taking out an earlier install for the same host and task, so
/// running it twice leaves one copy). Returns the record.
pub fn install(w: &Wanted, now: &str) -> Result<Manifest, InstallError> {
    let plan = targets::plan(w).map_err(InstallError::Unsupported)?;
    let mpath = manifest_path(w.host, w.task);
    if let Some(old) = load(&mpath)? {
        // Installed and untouched, with the same entries: nothing to do.
        let same_plan = old.mcp == w.mcp
            && old.hooks == w.hooks
            && old.files.iter().all(|f| state(f) == FileState::AsInstalled)
            && plan.iter().all(|(path, wanted)| {
                read_text(path).ok().flatten().is_some_and(|t| {
                    edits::present(&path.display().to_string(), Format::of(path), &t, wanted)
                })
            });
        if same_plan {
            return Ok(old);
        }
        undo(&old)?;
        let _ = std::fs::remove_file(&mpath);
    }
    let mut files = Vec::new();
    for (path, wanted) in plan {
        let shown = path.display().to_string();
        let original = read_text(&path)?;
        let (text, done) = edits::apply(&shown, Format::of(&path), original.as_deref(), &wanted)?;
        if done.is_empty() {
            continue; // everything was there already
        }
        let mut created_dirs = Vec::new();
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            created_dirs.push(d.to_path_buf());
            dir = d.parent();
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| FsError::new("creating directory", parent, e))?;
        }
        write_keeping_mode(&path, &text)?;
        files.push(FileRecord {
            written_sha256: sha256(text.as_bytes()),
            path,
            original,
            created_dirs,
            edits: done,
        });
        // Saved after each file, so a failure later still lets uninstall undo this one.
        save(
            &mpath,
            &Manifest {
                host: w.host.as_str().into(),
                task: w.task.into(),
                installed_at: now.into(),
                mcp: w.mcp,
                hooks: w.hooks,
                files: files.clone(),
            },
        )?;
    }
    let m = Manifest {
        host: w.host.as_str().into(),
        task: w.task.into(),
        installed_at: now.into(),
        mcp: w.mcp,
        hooks: w.hooks,
        files,
    };
    save(&mpath, &m)?;
    Ok(m)
}

fn save(path: &Path, m: &Manifest) -> Result<(), InstallError> {
    if let Some(dir) = path.parent() {
        private_fs::private_dir(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(m).map_err(|e| InstallError::Manifest {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    private_fs::atomic_write(path, &bytes)?;
    Ok(())
}

fn state(f: &FileRecord) -> FileState {
    match read_text(&f.path) {
        Ok(Some(t)) if sha256(t.as_bytes()) == f.written_sha256 => FileState::AsInstalled,
        Ok(Some(t)) => {
            let shown = f.path.display().to_string();
            if edits::present(&shown, Format::of(&f.path), &t, &f.edits) {
                FileState::Changed
            } else {
                FileState::EntriesGone
            }
        }
        _ => FileState::Missing,
    }
}

fn undo(m: &Manifest) -> Result<Vec<(PathBuf, Undone)>, InstallError> {
    let mut out = Vec::new();
    for f in m.files.iter().rev() {
        let what = match (state(f), read_text(&f.path)?) {
            (FileState::AsInstalled, _) => {
                match &f.original {
                    Some(text) => write_keeping_mode(&f.path, text)?,
                    None => std::fs::remove_file(&f.path)
                        .map_err(|e| FsError::new("removing", &f.path, e))?,
                }
                for d in &f.created_dirs {
                    let _ = std::fs::remove_dir(d); // only when empty
                }
                Undone::Restored
            }
            (FileState::Changed, Some(text)) => {
                let shown = f.path.display().to_string();
                let back = edits::remove(&shown, Format::of(&f.path), &text, &f.edits)?;
                write_keeping_mode(&f.path, &back)?;
                Undone::EntriesRemoved
            }
            _ => Undone::Nothing,
        };
        out.push((f.path.clone(), what));
    }
    Ok(out)
}

/// Takes out what `install` put in for this host and task.
pub fn uninstall(host: Host, task: &str) -> Result<Vec<(PathBuf, Undone)>, InstallError> {
    let mpath = manifest_path(host, task);
    let m = load(&mpath)?.ok_or_else(|| InstallError::NotInstalled {
        host: host.as_str().into(),
        task: task.into(),
    })?;
    let done = undo(&m)?;
    std::fs::remove_file(&mpath).map_err(|e| FsError::new("removing", &mpath, e))?;
    Ok(done)
}

/// Every install on this machine (for this user), with each file's state.
pub fn status() -> Result<Vec<(Manifest, Vec<FileState>)>, InstallError> {
    let dir = manifests_dir();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for p in paths {
        if let Some(m) = load(&p)? {
            let states = m.files.iter().map(state).collect();
            out.push((m, states));
        }
    }
    Ok(out)
}
