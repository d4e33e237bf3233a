//! Uploaded files and abuse reports (PostgreSQL).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{RowExt, execute, query, query_opt};
use crate::relay::store::{FileRecord, Report, StoreResult};

pub(super) async fn put_file(c: &impl GenericClient, f: &FileRecord) -> StoreResult<()> {
    execute(
        c,
        "recording an upload",
        "INSERT INTO files (public_id, owner_id, name, mime, size, kind, sha256, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &f.public_id,
            &f.owner_id,
            &f.name,
            &f.mime,
            &(f.size as i64),
            &f.kind,
            &f.sha256,
            &f.created_at,
        ],
    )
    .await
    .map(drop)
}

fn file_from_row(r: &Row) -> StoreResult<FileRecord> {
    Ok(FileRecord {
        public_id: r.at(0)?,
        owner_id: r.at(1)?,
        name: r.at(2)?,
        mime: r.at(3)?,
        size: r.at::<i64>(4)?.max(0) as u64,
        kind: r.at(5)?,
        sha256: r.at(6)?,
        created_at: r.at(7)?,
    })
}

pub(super) async fn file(
    c: &impl GenericClient,
    public_id: &str,
) -> StoreResult<Option<FileRecord>> {
    query_opt(
        c,
        "looking up a file",
        "SELECT public_id, owner_id, name, mime, size, kind, sha256, created_at
         FROM files WHERE public_id = $1",
        &[&public_id],
    )
    .await?
    .map(|r| file_from_row(&r))
    .transpose()
}

pub(super) async fn report(
    c: &impl GenericClient,
    reporter: i64,
    message_id: Option<&str>,
    address: Option<&str>,
    reason: &str,
    now: i64,
) -> StoreResult<()> {
    execute(
        c,
        "recording a report",
        "INSERT INTO reports (reporter_id, message_id, chat_address, reason, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[&reporter, &message_id, &address, &reason, &now],
    )
    .await
    .map(drop)
}

pub(super) async fn reports(c: &impl GenericClient) -> StoreResult<Vec<Report>> {
    let rows = query(
        c,
        "listing reports",
        "SELECT u.chat_address, r.message_id, r.chat_address, r.reason, r.created_at,
                su.chat_address, m.text
         FROM reports r
         JOIN users u ON u.id = r.reporter_id
         LEFT JOIN messages m ON m.public_id = r.message_id
         LEFT JOIN users su ON su.id = m.sender_id
         ORDER BY r.id",
        &[],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Report {
                reporter: r.at(0)?,
                message_id: r.at(1)?,
                chat_address: r.at(2)?,
                reason: r.at(3)?,
                created_at: r.at(4)?,
                message_author: r.at(5)?,
                message_text: r.at(6)?,
            })
        })
        .collect()
}
