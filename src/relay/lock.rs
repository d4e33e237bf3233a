//! One relay per database: the relay holds an exclusive lock on `<database>.lock` while it
//! runs (the kernel lets go when the process dies, however it dies), and `relay restore`
//! refuses to replace a database whose lock is held.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another relay (pid {pid}) is using the database {db}; stop it first, or give this one its own --data-dir"
    )]
    Held { db: String, pid: String },
    #[error("locking {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held for as long as it lives.
#[derive(Debug)]
pub struct RelayLock {
    _file: File,
}

pub fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Opens the lock file and takes the lock, or says who holds it.
fn take(db: &Path) -> Result<File, LockError> {
    let path = lock_path(db);
    let io = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LockError::Held {
            db: db.display().to_string(),
            pid: std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string(),
        }),
        Err(TryLockError::Error(source)) => Err(io(source)),
    }
}

/// Takes the lock for a relay about to serve `db`, writing its pid into the file.
pub fn acquire(db: &Path) -> Result<RelayLock, LockError> {
    let mut file = take(db)?;
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    let _ = file.flush();
    Ok(RelayLock { _file: file })
}

/// Checks that no relay serves `db` now; the lock is kept until the guard is dropped, so a
/// relay cannot start in the meantime.
pub fn exclusive(db: &Path) -> Result<RelayLock, LockError> {
    take(db).map(|file| RelayLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bridge.db");
        let first = acquire(&db).unwrap();
        let again = exclusive(&db).unwrap_err();
        assert!(
            again.to_string().contains(&std::process::id().to_string()),
            "{again}"
        );
        drop(first);
        exclusive(&db).unwrap();
    }
}
