//! Connecting and migrating: the schema is versioned in `gtsw_schema`, and migrations run
//! under a session advisory lock, so relays starting together apply each one once.

use std::time::Duration;

use tokio_postgres::NoTls;

use super::pg;
use crate::relay::store::{StoreError, StoreResult};

const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("migrations/001_init.sql"))];

/// Any 64-bit key no other application on the database would pick: "gtswchat".
const MIGRATION_LOCK: i64 = 0x6774_7377_6368_6174;

/// The connection settings from a URL, with what every connection of ours needs.
pub(super) fn config(url: &str) -> StoreResult<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        // The parse error never echoes the URL (it may hold a password).
        StoreError::PgConfig(e.to_string())
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(3));
    }
    // A 2xx means committed, whatever the server's default.
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c synchronous_commit=on"),
        _ => "-c synchronous_commit=on".to_string(),
    };
    config.options(&options);
    config.application_name("gts-webchat");
    Ok(config)
}

pub(super) async fn migrate(config: &tokio_postgres::Config) -> StoreResult<()> {
    let (mut client, connection) = config.connect(NoTls).await.map_err(pg("connecting"))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("migration connection: {e}");
        }
    });
    let result = async {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("waiting for the migration lock"))?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS gtsw_schema (
                     version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await
            .map_err(pg("creating the schema table"))?;
        for (version, sql) in MIGRATIONS {
            let done = client
                .query_opt("SELECT 1 FROM gtsw_schema WHERE version = $1", &[version])
                .await
                .map_err(pg("reading the schema version"))?
                .is_some();
            if done {
                continue;
            }
            let tx = client.transaction().await.map_err(pg("migrating"))?;
            tx.batch_execute(sql).await.map_err(pg("migrating"))?;
            tx.execute(
                "INSERT INTO gtsw_schema (version, applied_at) VALUES ($1, $2)",
                &[version, &crate::api::now_millis()],
            )
            .await
            .map_err(pg("migrating"))?;
            tx.commit().await.map_err(pg("migrating"))?;
            tracing::info!(version, "database migrated");
        }
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("releasing the migration lock"))?;
        Ok::<(), StoreError>(())
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}
