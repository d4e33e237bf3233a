//! Private (0700 dirs, 0600 files), durable file writes shared by the client and the daemon:
//! atomic replace (temp, fsync, rename, fsync dir) and fsynced appends.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A filesystem failure with the action and the path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    pub fn new(action: &'static str, path: &Path, source: std::io::Error) -> FsError {
        FsError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(28) | Some(122))
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// Creates `path` and its parents with mode 0700 (existing dirs are tightened to 0700).
pub fn private_dir(path: &Path) -> FsResult<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| FsError::new("creating directory", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| FsError::new("setting permissions on", path, e))
}

/// Replaces `path` with `bytes` atomically and durably: write a temp file (0600) beside it,
/// fsync, rename over, fsync the directory. A crash leaves the old or the new file, whole.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> FsResult<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| FsError::new("creating a temp file in", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| FsError::new("writing", tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FsError::new("syncing", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| FsError::new("renaming into place", path, e.error))?;
    sync_dir(dir)
}

/// fsyncs a directory so a rename or create in it is durable.
pub fn sync_dir(dir: &Path) -> FsResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("syncing directory", dir, e))
}

/// Opens `path` for appending (created 0600).
pub fn open_append(path: &Path) -> FsResult<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| FsError::new("opening for append", path, e))
}

/// Reads a file that may not exist yet.
pub fn read_optional(path: &Path) -> FsResult<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("reading", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_optional(&dir.path().join("none")).unwrap(), None);
    }
}
