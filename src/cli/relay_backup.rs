//! `gts-webchat relay backup DEST` and `relay restore SRC`: a consistent copy of a relay's
//! database (SQLite's online backup API, in one read transaction, so the relay keeps serving
//! and writing meanwhile) and its uploads, and putting one back where no relay is running.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{CliResult, Failure, exit, output};
use crate::api::{now_millis, rfc3339_from_millis};
use crate::relay::config::RelayConfig;
use crate::relay::lock;

/// Names inside a backup directory.
const DB_FILE: &str = "bridge.db";
const UPLOADS: &str = "uploads";
const MANIFEST: &str = "manifest.json";

fn local(what: String) -> Failure {
    Failure::new(exit::LOCAL, what)
}

fn io(action: &str, path: &Path) -> impl Fn(std::io::Error) -> Failure {
    let what = format!("{action} {}", path.display());
    move |e| local(format!("{what}: {e}"))
}

fn sql(action: &str, path: &Path) -> impl Fn(rusqlite::Error) -> Failure {
    let what = format!("{action} {}", path.display());
    move |e| local(format!("{what}: {e}"))
}

/// `PRAGMA integrity_check` says "ok", and how many messages and identities the copy holds.
fn check(db: &Path) -> Result<(i64, i64), Failure> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sql("opening", db))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sql("checking", db))?;
    if verdict != "ok" {
        return Err(local(format!(
            "{} is damaged ({verdict}); it is not a usable backup",
            db.display()
        )));
    }
    let count = |table: &str| -> Result<i64, Failure> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| {
                local(format!(
                    "{} is not a gts-webchat database ({table}: {e})",
                    db.display()
                ))
            })
    };
    Ok((count("messages")?, count("users")?))
}

/// Copies the finished uploads (temp files start with '.'); files, bytes.
fn copy_uploads(from: &Path, to: &Path) -> Result<(u64, u64), Failure> {
    crate::private_fs::private_dir(to).map_err(|e| local(e.to_string()))?;
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok((0, 0));
    };
    let (mut files, mut bytes) = (0, 0);
    for entry in entries {
        let entry = entry.map_err(io("reading", from))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || !entry.path().is_file() {
            continue;
        }
        let target = to.join(&name);
        if target.exists() {
            continue;
        }
        match std::fs::copy(entry.path(), &target) {
            Ok(n) => {
                files += 1;
                bytes += n;
            }
            // Deleted (its message was) since the database was copied: not needed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("copying into", &target)(e)),
        }
    }
    Ok((files, bytes))
}

pub fn backup(config: &RelayConfig, dest: &Path, json: bool) -> CliResult {
    let db = &config.db_path;
    if !db.exists() {
        return Err(local(format!(
            "no relay database at {}; pass the relay's --data-dir",
            db.display()
        )));
    }
    let empty = std::fs::read_dir(dest).map_or(true, |mut d| d.next().is_none());
    if !empty {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "{} is not empty; back up into a new directory (e.g. one named by the date)",
                dest.display()
            ),
        ));
    }
    crate::private_fs::private_dir(dest).map_err(|e| local(e.to_string()))?;
    let copy = dest.join(DB_FILE);
    {
        let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql("opening", db))?;
        src.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql("opening", db))?;
        let mut dst = Connection::open(&copy).map_err(sql("creating", &copy))?;
        let backup =
            rusqlite::backup::Backup::new(&src, &mut dst).map_err(sql("backing up", db))?;
        // All pages in one step: one read transaction, so one consistent moment, and a relay
        // writing meanwhile never makes it start over.
        backup.step(-1).map_err(sql("backing up", db))?;
    }
    let (messages, identities) = check(&copy)?;
    let (files, bytes) = copy_uploads(&config.upload_dir, &dest.join(UPLOADS))?;
    let manifest = serde_json::json!({
        "gts_webchat": env!("CARGO_PKG_VERSION"),
        "created_at": rfc3339_from_millis(now_millis()),
        "database": DB_FILE, "messages": messages, "identities": identities,
        "uploads": UPLOADS, "upload_files": files, "upload_bytes": bytes,
    });
    crate::private_fs::atomic_write(
        &dest.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(|e| local(e.to_string()))?;
    if json {
        output::json_line(&manifest)
    } else {
        output::text_line(&format!(
            "backed up {messages} messages, {identities} identities and {files} uploads ({:.1} MiB) to {}",
            bytes as f64 / 1048576.0,
            dest.display()
        ))
    }
}

pub fn restore(config: &RelayConfig, src: &Path, force: bool) -> CliResult {
    let copy = src.join(DB_FILE);
    if !copy.is_file() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} holds no {DB_FILE}; name a directory `relay backup` made",
                src.display()
            ),
        ));
    }
    let (messages, identities) = check(&copy)?;
    let db = &config.db_path;
    if let Some(parent) = db.parent() {
        crate::private_fs::private_dir(parent).map_err(|e| local(e.to_string()))?;
    }
    // Held until the restore is done: no relay can start on a half-restored database.
    let _lock = lock::exclusive(db).map_err(|e| {
        Failure::new(
            exit::REFUSED,
            format!("{e}; a running relay's data is never overwritten"),
        )
    })?;
    if db.exists() {
        if !force {
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "{} already holds a database; pass --force to replace it (it is kept beside it)",
                    db.display()
                ),
            ));
        }
        let aside = PathBuf::from(format!("{}.before-restore-{}", db.display(), now_millis()));
        std::fs::rename(db, &aside).map_err(io("moving aside", db))?;
    }
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", db.display()));
        if side.exists() {
            std::fs::remove_file(&side).map_err(io("removing", &side))?;
        }
    }
    let tmp = PathBuf::from(format!("{}.restoring", db.display()));
    std::fs::copy(&copy, &tmp).map_err(io("copying into", &tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", &tmp))?;
    std::fs::rename(&tmp, db).map_err(io("moving into place", db))?;
    if let Some(parent) = db.parent() {
        crate::private_fs::sync_dir(parent).map_err(|e| local(e.to_string()))?;
    }
    let (files, _) = copy_uploads(&src.join(UPLOADS), &config.upload_dir)?;
    output::text_line(&format!(
        "restored {messages} messages, {identities} identities and {files} uploads into {}; start the relay",
        config.data_dir.display()
    ))
}
