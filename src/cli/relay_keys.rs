//! `gts-webchat relay keys create|list|revoke`: PhoneRelay API keys, made on the relay's host.

use super::relay_cmd::{KeysSub, open_store};
use super::{CliResult, Failure, exit, output};
use crate::api::bridge::ApiKeyInfo;
use crate::api::{now_millis, rfc3339_from_millis};
use crate::relay::bridge::keys::new_key;
use crate::relay::config::RelayConfig;
use crate::relay::extract::token_hash;
use crate::relay::store::{ApiKeyRecord, NewApiKey};

/// Longest phone id and key name.
const MAX_FIELD_CHARS: usize = 64;

fn info(k: ApiKeyRecord) -> ApiKeyInfo {
    ApiKeyInfo {
        key_id: k.public_id,
        name: k.name,
        owner: k.owner_address,
        phone_ids: k.phone_ids,
        created_at: rfc3339_from_millis(k.created_at),
        revoked_at: k.revoked_at.map(rfc3339_from_millis),
    }
}

fn field(what: &str, raw: &str) -> Result<String, Failure> {
    let v = raw.trim();
    if v.is_empty() || v.chars().count() > MAX_FIELD_CHARS || v.chars().any(char::is_control) {
        return Err(Failure::new(
            exit::USAGE,
            format!("{what} must be 1-{MAX_FIELD_CHARS} characters without control characters"),
        ));
    }
    Ok(v.to_string())
}

pub fn run(config: RelayConfig, sub: KeysSub) -> CliResult {
    let (rt, store) = open_store(&config)?;
    rt.block_on(async {
        let r = work(store.as_ref(), sub).await;
        store.close().await;
        r
    })
}

async fn work(store: &dyn crate::relay::store::Store, sub: KeysSub) -> CliResult {
    let db = |e: crate::relay::store::StoreError| Failure::new(exit::LOCAL, e.to_string());
    match sub {
        KeysSub::Create {
            name,
            owner,
            phone_ids,
            json,
        } => {
            let name = field("--name", &name)?;
            let phone_ids = phone_ids
                .iter()
                .map(|p| field("--phone-id", p))
                .collect::<Result<Vec<_>, _>>()?;
            let who = owner.trim().to_ascii_lowercase();
            let user = match store.user_by_address(&who).await.map_err(db)? {
                Some(u) => Some(u),
                None => store.user_by_email(&who).await.map_err(db)?,
            };
            let user = user.filter(|u| !u.email.starts_with("external:")).ok_or_else(|| {
                Failure::new(
                    exit::REFUSED,
                    format!(
                        "no identity {who:?} on this relay; it must log in once before it can own a key"
                    ),
                )
            })?;
            let (key, key_id) = new_key();
            let made = store
                .create_api_key(NewApiKey {
                    public_id: key_id,
                    name,
                    user_id: user.id,
                    key_hash: token_hash(&key),
                    phone_ids,
                    now: now_millis(),
                })
                .await
                .map_err(db)?;
            let made = info(made);
            if json {
                let mut v = serde_json::to_value(&made).unwrap_or_default();
                v["key"] = serde_json::Value::String(key);
                output::json_line(&v)
            } else {
                output::text_line(&format!(
                    "{} for {} (phone ids: {}); the key, shown only now:\n{key}",
                    made.key_id,
                    made.owner,
                    if made.phone_ids.is_empty() {
                        "none, email only".to_string()
                    } else {
                        made.phone_ids.join(", ")
                    }
                ))
            }
        }
        KeysSub::List { json } => {
            let all = store.api_keys().await.map_err(db)?;
            if all.is_empty() && !json {
                return output::text_line(
                    "no API keys; make one with: gts-webchat relay keys create --name N --owner ADDRESS --phone-id P",
                );
            }
            for k in all.into_iter().map(info) {
                if json {
                    output::json_line(&k)?;
                } else {
                    output::text_line(&format!(
                        "{}  {}  owner {}  phone ids [{}]  created {}{}",
                        k.key_id,
                        k.name,
                        k.owner,
                        k.phone_ids.join(", "),
                        k.created_at,
                        k.revoked_at
                            .map(|r| format!("  REVOKED {r}"))
                            .unwrap_or_default()
                    ))?;
                }
            }
            Ok(())
        }
        KeysSub::Revoke { key_id } => {
            if store
                .revoke_api_key(key_id.trim(), now_millis())
                .await
                .map_err(db)?
            {
                output::text_line(&format!("revoked {}", key_id.trim()))
            } else {
                Err(Failure::new(
                    exit::REFUSED,
                    format!(
                        "no unrevoked key {:?}; gts-webchat relay keys list shows them",
                        key_id.trim()
                    ),
                ))
            }
        }
    }
}
