//! Uploaded files and abuse reports.

use rusqlite::{Connection, OptionalExtension, params};

use super::sqlite_err;
use crate::relay::store::{FileRecord, Report, StoreResult};

pub(super) fn put_file(conn: &Connection, f: &FileRecord) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO files (public_id, owner_id, name, mime, size, kind, sha256, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            f.public_id,
            f.owner_id,
            f.name,
            f.mime,
            f.size as i64,
            f.kind,
            f.sha256,
            f.created_at
        ],
    )
    .map_err(sqlite_err("recording an upload"))?;
    Ok(())
}

pub(super) fn file(conn: &Connection, public_id: &str) -> StoreResult<Option<FileRecord>> {
    conn.prepare_cached(
        "SELECT public_id, owner_id, name, mime, size, kind, sha256, created_at FROM files WHERE public_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([public_id], |r| {
            Ok(FileRecord {
                public_id: r.get(0)?,
                owner_id: r.get(1)?,
                name: r.get(2)?,
                mime: r.get(3)?,
                size: r.get::<_, i64>(4)? as u64,
                kind: r.get(5)?,
                sha256: r.get(6)?,
                created_at: r.get(7)?,
            })
        })
        .optional()
    })
    .map_err(sqlite_err("looking up a file"))
}

pub(super) fn report(
    conn: &Connection,
    reporter: i64,
    message_id: Option<&str>,
    address: Option<&str>,
    reason: &str,
    now: i64,
) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO reports (reporter_id, message_id, chat_address, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![reporter, message_id, address, reason, now],
    )
    .map_err(sqlite_err("recording a report"))?;
    Ok(())
}

pub(super) fn reports(conn: &Connection) -> StoreResult<Vec<Report>> {
    let mut st = conn
        .prepare_cached(
            "SELECT u.chat_address, r.message_id, r.chat_address, r.reason, r.created_at,
                    su.chat_address, m.text
             FROM reports r
             JOIN users u ON u.id = r.reporter_id
             LEFT JOIN messages m ON m.public_id = r.message_id
             LEFT JOIN users su ON su.id = m.sender_id
             ORDER BY r.id",
        )
        .map_err(sqlite_err("listing reports"))?;
    st.query_map([], |r| {
        Ok(Report {
            reporter: r.get(0)?,
            message_id: r.get(1)?,
            chat_address: r.get(2)?,
            reason: r.get(3)?,
            created_at: r.get(4)?,
            message_author: r.get(5)?,
            message_text: r.get(6)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(sqlite_err("listing reports"))
}
