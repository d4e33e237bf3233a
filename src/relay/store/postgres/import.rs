//! `relay migrate`: copies a whole SQLite relay into an empty PostgreSQL database in one
//! transaction, so a failure leaves the target as empty as it was.
//!
//! Rows go over COPY (binary), table by table in foreign-key order, read from one SQLite read
//! transaction on a thread of their own (rusqlite blocks). Ids are kept as they are, so stream
//! positions, cursors and every public id stay valid; the id sequences and each identity's
//! stream head are then set from the copied rows, and every table's count is compared.

use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::{pg, schema};
use crate::relay::store::StoreError;

/// Every table, parents before children.
const TABLES: &[&str] = &[
    "users",
    "sessions",
    "login_challenges",
    "auth_events",
    "messages",
    "events",
    "deliveries",
    "dm_peers",
    "files",
    "message_files",
    "groups",
    "group_members",
    "join_requests",
    "reads",
    "reports",
    "voice_jobs",
    "captions",
    "callbacks",
    "callback_outbox",
    "api_keys",
    "bridge_outbox",
];

/// Rows per batch handed from the SQLite reader to the COPY writer.
const BATCH: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "the target database already holds data ({table} has rows); migrate into an empty database"
    )]
    NotEmpty { table: String },
    #[error("reading {path} ({action}): {source}")]
    Sqlite {
        path: PathBuf,
        action: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} has {table}.{column}, which the PostgreSQL schema lacks; upgrade gts-webchat on the target side"
    )]
    Schema {
        path: PathBuf,
        table: String,
        column: String,
    },
    #[error("{table}.{column} row {row}: {what}")]
    Value {
        table: String,
        column: String,
        row: u64,
        what: String,
    },
    #[error(
        "copied {table}: {sqlite} rows in SQLite but {postgres} in PostgreSQL; nothing was kept"
    )]
    Count {
        table: String,
        sqlite: u64,
        postgres: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the SQLite reader stopped unexpectedly")]
    ReaderGone,
}

/// One table's column as PostgreSQL types it.
#[derive(Clone)]
struct Column {
    name: String,
    ty: Type,
}

/// What the reader thread sends: rows of one table, or that table's end with its count.
enum Batch {
    Rows(Vec<Vec<Value>>),
    End(u64),
}

/// Rows copied per table, in copy order.
pub struct ImportReport {
    pub tables: Vec<(String, u64)>,
}

fn pg_type(data_type: &str) -> Option<Type> {
    match data_type {
        "bigint" => Some(Type::INT8),
        "integer" => Some(Type::INT4),
        "boolean" => Some(Type::BOOL),
        "text" => Some(Type::TEXT),
        _ => None,
    }
}

/// A SQLite value in the column's PostgreSQL type.
fn convert(v: Value, ty: &Type) -> Result<Box<dyn ToSql + Sync + Send>, String> {
    Ok(match (v, ty) {
        (Value::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (Value::Null, t) if *t == Type::INT4 => Box::new(None::<i32>),
        (Value::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
        (Value::Null, _) => Box::new(None::<String>),
        (Value::Integer(i), t) if *t == Type::INT8 => Box::new(i),
        (Value::Integer(i), t) if *t == Type::INT4 => {
            Box::new(i32::try_from(i).map_err(|_| format!("{i} does not fit"))?)
        }
        (Value::Integer(i), t) if *t == Type::BOOL => Box::new(i != 0),
        (Value::Integer(i), _) => Box::new(i.to_string()),
        (Value::Text(s), t) if *t == Type::TEXT => Box::new(s),
        (Value::Text(s), t) if *t == Type::INT8 => Box::new(
            s.parse::<i64>()
                .map_err(|_| "text where a number belongs".to_string())?,
        ),
        (Value::Real(_), _) => return Err("a real number where none belongs".into()),
        (Value::Blob(_), _) => return Err("binary data where none belongs".into()),
        (Value::Text(_), _) => return Err("text where none belongs".into()),
    })
}

/// Reads every table's rows in one read transaction and sends them on, table by table.
fn read_sqlite(
    path: PathBuf,
    tables: Vec<(String, Vec<Column>)>,
    tx: tokio::sync::mpsc::Sender<Result<Batch, ImportError>>,
) {
    let sql = |action: String| {
        let path = path.clone();
        move |source| ImportError::Sqlite {
            path,
            action,
            source,
        }
    };
    let run = || -> Result<(), ImportError> {
        let mut conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .map_err(sql("opening".into()))?;
        let snapshot = conn.transaction().map_err(sql("starting a read".into()))?;
        for (table, columns) in &tables {
            let list = column_list(columns);
            let mut st = snapshot
                .prepare(&format!("SELECT {list} FROM \"{table}\""))
                .map_err(sql(format!("reading {table}")))?;
            let mut rows = st.query([]).map_err(sql(format!("reading {table}")))?;
            let (mut batch, mut count) = (Vec::with_capacity(BATCH), 0u64);
            while let Some(row) = rows.next().map_err(sql(format!("reading {table}")))? {
                let mut values = Vec::with_capacity(columns.len());
                for i in 0..columns.len() {
                    values.push(
                        row.get::<_, Value>(i)
                            .map_err(sql(format!("reading {table}")))?,
                    );
                }
                batch.push(values);
                count += 1;
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    tx.blocking_send(Ok(Batch::Rows(full)))
                        .map_err(|_| ImportError::ReaderGone)?;
                }
            }
            if !batch.is_empty() {
                tx.blocking_send(Ok(Batch::Rows(batch)))
                    .map_err(|_| ImportError::ReaderGone)?;
            }
            tx.blocking_send(Ok(Batch::End(count)))
                .map_err(|_| ImportError::ReaderGone)?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = tx.blocking_send(Err(e));
    }
}

fn column_list(columns: &[Column]) -> String {
    let quoted: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    quoted.join(", ")
}

/// The columns SQLite has for `table` (empty when it has no such table).
fn sqlite_columns(conn: &rusqlite::Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = st.query_map([table], |r| r.get::<_, String>(0))?;
    names.collect()
}

/// Copies the SQLite database at `sqlite` (at the newest schema) into the empty database at
/// `url`, migrating it first.
pub async fn import_sqlite(url: &str, sqlite: &Path) -> Result<ImportReport, ImportError> {
    let config = schema::config(url)?;
    schema::migrate(&config).await?;
    let (mut client, connection) = config.connect(NoTls).await.map_err(pg("connecting"))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("migration connection: {e}");
        }
    });
    let result = copy_all(&mut client, sqlite).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn copy_all(
    client: &mut tokio_postgres::Client,
    sqlite: &Path,
) -> Result<ImportReport, ImportError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting the copy"))?;
    // Nobody writes while we copy, and two migrations into one database cannot both run.
    let all = TABLES.join(", ");
    tx.batch_execute(&format!("LOCK TABLE {all} IN EXCLUSIVE MODE"))
        .await
        .map_err(pg("locking the target tables"))?;
    for table in TABLES {
        let any = tx
            .query_opt(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
            .await
            .map_err(pg("checking the target is empty"))?;
        if any.is_some() {
            return Err(ImportError::NotEmpty {
                table: table.to_string(),
            });
        }
    }

    // Which columns to copy: PostgreSQL's, each of which SQLite must have (and the reverse, so
    // nothing is silently dropped).
    let source = sqlite.to_path_buf();
    let probe = {
        let path = source.clone();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            TABLES
                .iter()
                .map(|t| sqlite_columns(&conn, t).map(|c| (t.to_string(), c)))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
        .map_err(|source| ImportError::Sqlite {
            path: sqlite.to_path_buf(),
            action: "reading its schema".into(),
            source,
        })?
    };
    let mut plan = Vec::with_capacity(TABLES.len());
    for (table, in_sqlite) in probe {
        let rows = tx
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .map_err(pg("reading the target schema"))?;
        let mut columns = Vec::new();
        for row in rows {
            let name: String = row.get(0);
            let data_type: String = row.get(1);
            let ty = pg_type(&data_type).ok_or_else(|| ImportError::Value {
                table: table.clone(),
                column: name.clone(),
                row: 0,
                what: format!("the target column has type {data_type}"),
            })?;
            columns.push(Column { name, ty });
        }
        for name in &in_sqlite {
            if !columns.iter().any(|c| &c.name == name) {
                return Err(ImportError::Schema {
                    path: source.clone(),
                    table,
                    column: name.clone(),
                });
            }
        }
        // A column SQLite lacks (none today) is left to its default.
        columns.retain(|c| in_sqlite.contains(&c.name));
        plan.push((table, columns));
    }

    let (send, mut recv) = tokio::sync::mpsc::channel(4);
    let reader_plan = plan.clone();
    let reader = std::thread::spawn(move || read_sqlite(source, reader_plan, send));

    let mut report = ImportReport { tables: Vec::new() };
    for (table, columns) in &plan {
        let list = column_list(columns);
        let types: Vec<Type> = columns.iter().map(|c| c.ty.clone()).collect();
        let sink = tx
            .copy_in(&format!("COPY {table} ({list}) FROM STDIN BINARY"))
            .await
            .map_err(pg("copying"))?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures::pin_mut!(writer);
        let mut row_no = 0u64;
        let sqlite_count = loop {
            match recv.recv().await.ok_or(ImportError::ReaderGone)?? {
                Batch::End(n) => break n,
                Batch::Rows(rows) => {
                    for row in rows {
                        row_no += 1;
                        let mut values = Vec::with_capacity(row.len());
                        for (v, c) in row.into_iter().zip(columns) {
                            values.push(convert(v, &c.ty).map_err(|what| ImportError::Value {
                                table: table.clone(),
                                column: c.name.clone(),
                                row: row_no,
                                what,
                            })?);
                        }
                        let refs: Vec<&(dyn ToSql + Sync)> =
                            values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
                        writer.as_mut().write(&refs).await.map_err(pg("copying"))?;
                    }
                }
            }
        };
        let copied = writer.as_mut().finish().await.map_err(pg("copying"))?;
        let counted: i64 = tx
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(pg("counting"))?
            .get(0);
        if copied != sqlite_count || counted as u64 != sqlite_count {
            return Err(ImportError::Count {
                table: table.clone(),
                sqlite: sqlite_count,
                postgres: counted as u64,
            });
        }
        report.tables.push((table.clone(), sqlite_count));
    }
    let _ = reader.join();

    // What SQLite derives and PostgreSQL keeps: each identity's newest stream position, and
    // the next id of every table.
    tx.batch_execute(
        "INSERT INTO stream_heads (user_id, head)
             SELECT user_id, MAX(seq) FROM deliveries GROUP BY user_id",
    )
    .await
    .map_err(pg("setting stream heads"))?;
    for (table, columns) in &plan {
        if !columns.iter().any(|c| c.name == "id") {
            continue;
        }
        tx.query_one(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                               COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            ),
            &[],
        )
        .await
        .map_err(pg("setting a sequence"))?;
    }
    tx.commit().await.map_err(pg("committing the copy"))?;
    Ok(report)
}
