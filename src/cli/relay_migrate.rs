//! `gts-webchat relay migrate --from sqlite:PATH --to postgres://…`: moves a single relay onto
//! PostgreSQL, so several relays can share its data.

use std::path::PathBuf;

use super::{CliResult, Failure, exit, output};
use crate::relay::config::RelayConfig;
use crate::relay::lock;
use crate::relay::store::{ImportError, import_sqlite, upgrade_sqlite_file};

pub fn run(config: &RelayConfig, from: Option<&str>, to: &str, json: bool) -> CliResult {
    let source = match from {
        None => config.db_path.clone(),
        Some(f) => match f.strip_prefix("sqlite:") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                return Err(Failure::new(
                    exit::USAGE,
                    "--from takes sqlite:PATH (the relay's bridge.db)",
                ));
            }
        },
    };
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(Failure::new(
            exit::USAGE,
            "--to takes postgres://user@host/db (an empty database)",
        ));
    }
    if !source.is_file() {
        return Err(Failure::new(
            exit::LOCAL,
            format!(
                "no relay database at {}; pass --from sqlite:PATH",
                source.display()
            ),
        ));
    }
    // A relay writing meanwhile would lose what it accepts after the copy: stop it first. The
    // lock is held to the end, so none starts during the copy.
    let _lock = lock::exclusive(&source).map_err(|e| Failure::new(exit::REFUSED, e.to_string()))?;
    upgrade_sqlite_file(&source).map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?;

    let rt = super::small_runtime()?;
    let report = rt.block_on(import_sqlite(to, &source)).map_err(|e| {
        let code = match e {
            ImportError::NotEmpty { .. } => exit::REFUSED,
            ImportError::Store(_) => exit::UNREACHABLE,
            _ => exit::LOCAL,
        };
        Failure::new(code, e.to_string())
    })?;
    let count = |name: &str| {
        report
            .tables
            .iter()
            .find(|(t, _)| t == name)
            .map_or(0, |(_, n)| *n)
    };
    if json {
        let tables: serde_json::Map<String, serde_json::Value> = report
            .tables
            .iter()
            .map(|(t, n)| (t.clone(), (*n).into()))
            .collect();
        output::json_line(&serde_json::json!({
            "from": source.display().to_string(), "verified": true, "tables": tables,
        }))
    } else {
        output::text_line(&format!(
            "copied and verified {} identities, {} messages, {} groups and {} files' metadata \
             from {}; start relays with --database on it, with PCHAT_UPLOAD_DIR at {}",
            count("users"),
            count("messages"),
            count("groups"),
            count("files"),
            source.display(),
            config.upload_dir.display()
        ))
    }
}
