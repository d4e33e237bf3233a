//! `gts-webchat relay`

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliResult, Failure, exit};
use crate::relay::config::{RelayConfig, RelayFlags};

#[derive(Debug, Subcommand)]
pub enum RelaySub {
    /// List abuse reports (reads the relay's database; the relay may be running).
    Reports {
        /// One JSON object per report
        #[arg(long)]
        json: bool,
    },
    /// PhoneRelay API keys: what sends on sms, wa, tg, notify and email, and what a bridge
    /// posts replies with (reads and writes the relay's database; the relay may be running).
    Keys {
        #[command(subcommand)]
        sub: KeysSub,
    },
    /// Copy the database and uploads into DEST (a new or empty directory) while the relay runs.
    Backup {
        dest: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the web app link that points the app at this (private) relay.
    Link {
        /// Where the web app is served, e.g. https://chat.example.com/app/webchat/chat.html
        #[arg(long)]
        site: String,
        /// The relay's public URL, e.g. https://relay.example.com
        #[arg(long)]
        relay: String,
        #[arg(long)]
        json: bool,
    },
    /// Copy a whole SQLite relay (identities, sessions, messages with their stream positions,
    /// groups, files' metadata, cursors, callbacks, keys) into an empty PostgreSQL database.
    /// Stop the relay first; uploads stay where they are (point PCHAT_UPLOAD_DIR at them).
    Migrate {
        /// The SQLite database: sqlite:PATH [default: the one in --data-dir]
        #[arg(long)]
        from: Option<String>,
        /// The PostgreSQL database: postgres://user@host/db (must be empty)
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a backup back; refused while a relay uses the data, and over existing data
    /// without --force (which keeps the old database beside it).
    Restore {
        src: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysSub {
    /// Make a key for an identity; it is printed once and only its hash is kept.
    Create {
        /// What the key is for (shown by `list`)
        #[arg(long)]
        name: String,
        /// The identity it sends as and whose conversations replies reach (chat address or
        /// email)
        #[arg(long)]
        owner: String,
        /// A phone id the key may use (repeat for several); without any, email only
        #[arg(long = "phone-id")]
        phone_ids: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (key_…); requests with it are refused from then on.
    Revoke { key_id: String },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct RelayArgs {
    #[command(subcommand)]
    pub sub: Option<RelaySub>,
    /// Address to listen on [env: HOST] [default: 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one [env: PORT] [default: 5110, or the next free]
    #[arg(long)]
    pub port: Option<u16>,
    /// Where the database and uploads live [default: $XDG_DATA_HOME/gts-webchat]
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Settings file in .env form [default: ./.env.local when present]
    #[arg(long, global = true)]
    pub env_file: Option<PathBuf>,
    /// Storage: postgres://user@host/db (several relays may share it) or sqlite:PATH
    /// [env: DATABASE_URL] [default: SQLite in the data dir]
    #[arg(long, global = true)]
    pub database: Option<String>,
}

pub fn run(args: RelayArgs) -> CliResult {
    // Needs no settings and no data.
    if let Some(RelaySub::Link { site, relay, json }) = &args.sub {
        return link(site, relay, *json);
    }
    let flags = RelayFlags {
        host: args.host,
        port: args.port,
        data_dir: args.data_dir,
        env_file: args.env_file,
        database: args.database,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let config =
        RelayConfig::load(&flags, &env).map_err(|e| Failure::new(exit::LOCAL, format!("{e}")))?;
    match args.sub {
        Some(RelaySub::Reports { json }) => return reports(config, json),
        Some(RelaySub::Keys { sub }) => return super::relay_keys::run(config, sub),
        Some(RelaySub::Backup { .. } | RelaySub::Restore { .. })
            if config.postgres_url.is_some() =>
        {
            return Err(Failure::new(
                exit::USAGE,
                "relay backup and restore are for the SQLite database; back PostgreSQL up with \
                 pg_dump or base backups",
            ));
        }
        Some(RelaySub::Backup { dest, json }) => {
            return super::relay_backup::backup(&config, &dest, json);
        }
        Some(RelaySub::Restore { src, force }) => {
            return super::relay_backup::restore(&config, &src, force);
        }
        Some(RelaySub::Migrate { from, to, json }) => {
            return super::relay_migrate::run(&config, from.as_deref(), &to, json);
        }
        Some(RelaySub::Link { .. }) | None => {}
    }
    super::init_stderr_logging("info,gts_webchat=info");
    let rt = super::runtime()?;
    rt.block_on(crate::relay::run(config))
        .map_err(|e| Failure::new(exit::LOCAL, format!("the relay stopped: {e}")))
}

/// Opens the relay's storage beside a running relay (SQLite in WAL mode allows it; PostgreSQL
/// is shared anyway).
pub(super) fn open_store(
    config: &RelayConfig,
) -> Result<
    (
        tokio::runtime::Runtime,
        std::sync::Arc<dyn crate::relay::store::Store>,
    ),
    Failure,
> {
    let rt = super::small_runtime()?;
    let hub = std::sync::Arc::new(crate::relay::hub::Hub::new());
    if let Some(url) = &config.postgres_url {
        let store = rt
            .block_on(crate::relay::store::PgStore::open(
                crate::relay::store::PgOptions {
                    url: url.clone(),
                    pool_size: 2,
                },
                hub,
            ))
            .map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?;
        return Ok((rt, std::sync::Arc::new(store)));
    }
    if !config.db_path.exists() {
        return Err(Failure::new(
            exit::LOCAL,
            format!(
                "no relay database at {}; pass the relay's --data-dir",
                config.db_path.display()
            ),
        ));
    }
    let store = crate::relay::store::SqliteStore::open(
        crate::relay::store::SqliteOptions {
            path: config.db_path.clone(),
            sync: config.sync,
            readers: 1,
        },
        hub,
    )
    .map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?;
    Ok((rt, std::sync::Arc::new(store)))
}

fn reports(config: RelayConfig, json: bool) -> CliResult {
    let (rt, store) = open_store(&config)?;
    let list = rt.block_on(async {
        let r = store.reports().await;
        store.close().await;
        r
    });
    let list = list.map_err(|e| Failure::new(exit::LOCAL, e.to_string()))?;
    if list.is_empty() && !json {
        return super::output::text_line("no abuse reports");
    }
    for r in list {
        let when = crate::api::rfc3339_from_millis(r.created_at);
        if json {
            super::output::json_line(&serde_json::json!({
                "created_at": when, "reporter": r.reporter, "message_id": r.message_id,
                "chat_address": r.chat_address, "reason": r.reason,
                "message_author": r.message_author, "message_text": r.message_text,
            }))?;
        } else {
            let what = match (&r.message_id, &r.chat_address) {
                (Some(m), _) => format!(
                    "message {m} by {}: {:?}",
                    r.message_author.as_deref().unwrap_or("?"),
                    r.message_text.as_deref().unwrap_or("")
                ),
                (None, Some(a)) => format!("identity {a}"),
                (None, None) => "-".into(),
            };
            super::output::text_line(&format!(
                "[{when}] {} reported {what}: {}",
                r.reporter, r.reason
            ))?;
        }
    }
    Ok(())
}

/// The seed's `private_relay_link.py`: `SITE?server_url=RELAY`. The app asks before it
/// follows such a link to a relay it does not use yet.
fn link(site: &str, relay: &str, json: bool) -> CliResult {
    let parse = |what: &str, raw: &str| -> Result<url::Url, Failure> {
        url::Url::parse(raw.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Failure::new(
                    exit::USAGE,
                    format!("--{what} {raw:?} is not an http(s) URL"),
                )
            })
    };
    let mut page = parse("site", site)?;
    let relay = parse("relay", relay)?;
    let relay_str = relay.as_str().trim_end_matches('/').to_string();
    page.query_pairs_mut().append_pair("server_url", &relay_str);
    let same_origin = page.origin() == relay.origin();
    let plain = relay.scheme() == "http"
        && !matches!(relay.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if json {
        return super::output::json_line(&serde_json::json!({
            "link": page.as_str(), "relay": relay_str,
            "cors_origin": (!same_origin).then(|| page.origin().ascii_serialization()),
        }));
    }
    super::output::text_line(page.as_str())?;
    if !same_origin {
        eprintln!(
            "the relay must let this site call it: set PCHAT_CORS_ORIGINS={} on the relay",
            page.origin().ascii_serialization()
        );
    }
    if plain {
        eprintln!("{relay_str} is plain http: use https for a relay people reach over a network");
    }
    Ok(())
}
