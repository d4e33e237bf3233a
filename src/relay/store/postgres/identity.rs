//! Identities, login challenges, sessions, presence and the directory (PostgreSQL).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{RowExt, execute, query, query_one, query_opt, random_hex};
use crate::api::directory::DirectoryEntry;
use crate::api::{Kind, rfc3339_from_millis};
use crate::relay::store::{
    AuthPressure, CodeAttempt, CodeRejection, LoginOutcome, NewChallenge, PresenceUpdate,
    Registration, SessionInfo, StoreResult, User,
};

pub(super) const USER_COLS: &str =
    "u.id, u.email, u.chat_address, u.display_name, u.kind, u.public_visible";

pub(super) fn user_from_row(row: &Row, at: usize) -> StoreResult<User> {
    let kind: String = row.at(at + 4)?;
    Ok(User {
        id: row.at(at)?,
        email: row.at(at + 1)?,
        chat_address: row.at(at + 2)?,
        display_name: row.at(at + 3)?,
        kind: Kind::parse(&kind).unwrap_or_default(),
        public_visible: row.at(at + 5)?,
    })
}

pub(super) async fn user_by_email(
    c: &impl GenericClient,
    email: &str,
) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users u WHERE u.email = $1");
    query_opt(c, "looking up a user by email", &sql, &[&email])
        .await?
        .map(|r| user_from_row(&r, 0))
        .transpose()
}

pub(super) async fn user_by_address(
    c: &impl GenericClient,
    address: &str,
) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users u WHERE u.chat_address = $1");
    query_opt(c, "looking up a user by address", &sql, &[&address])
        .await?
        .map(|r| user_from_row(&r, 0))
        .transpose()
}

/// The challenge a verify try is about (locked for the try): the one its login id names, else
/// the newest one this client address asked for.
async fn challenge_for(
    c: &impl GenericClient,
    attempt: &CodeAttempt,
) -> StoreResult<Option<(i64, String, i64, i64)>> {
    let row = match &attempt.login_hash {
        Some(h) => {
            query_opt(
                c,
                "reading a login challenge",
                "SELECT id, code_hash, expires_at, attempts FROM login_challenges
                 WHERE login_hash = $1 AND email = $2 FOR UPDATE",
                &[h, &attempt.email],
            )
            .await?
        }
        None => {
            query_opt(
                c,
                "reading a login challenge",
                "SELECT id, code_hash, expires_at, attempts FROM login_challenges
                 WHERE email = $1 AND client = $2 AND expires_at > $3
                 ORDER BY id DESC LIMIT 1 FOR UPDATE",
                &[&attempt.email, &attempt.client, &attempt.now],
            )
            .await?
        }
    };
    row.map(|r| Ok((r.at(0)?, r.at(1)?, r.at(2)?, r.at(3)?)))
        .transpose()
}

async fn auth_event(
    c: &impl GenericClient,
    kind: &str,
    email: &str,
    client: &str,
    at: i64,
) -> StoreResult<()> {
    execute(
        c,
        "recording login activity",
        "INSERT INTO auth_events (kind, email, client, at) VALUES ($1, $2, $3, $4)",
        &[&kind, &email, &client, &at],
    )
    .await
    .map(drop)
}

pub(super) async fn login(
    c: &impl GenericClient,
    attempt: &CodeAttempt,
    reg: &Registration,
    token_hash: &str,
    session_expires_at: i64,
) -> StoreResult<LoginOutcome> {
    let now = attempt.now;
    let Some((challenge_id, stored_hash, expires_at, attempts)) = challenge_for(c, attempt).await?
    else {
        return Ok(LoginOutcome::Rejected(CodeRejection::Expired));
    };
    let attempts = attempts.max(0) as u32;
    if expires_at <= now {
        execute(
            c,
            "dropping an expired login challenge",
            "DELETE FROM login_challenges WHERE id = $1",
            &[&challenge_id],
        )
        .await?;
        return Ok(LoginOutcome::Rejected(CodeRejection::Expired));
    }
    if attempts >= attempt.max_attempts {
        return Ok(LoginOutcome::Rejected(CodeRejection::Locked));
    }
    if stored_hash != attempt.code_hash {
        execute(
            c,
            "counting a wrong login code",
            "UPDATE login_challenges SET attempts = attempts + 1 WHERE id = $1",
            &[&challenge_id],
        )
        .await?;
        auth_event(c, "fail", &attempt.email, &attempt.client, now).await?;
        return Ok(LoginOutcome::Rejected(CodeRejection::Wrong {
            remaining: attempt.max_attempts.saturating_sub(attempts + 1),
        }));
    }

    let user = match user_by_email(c, &reg.email).await? {
        Some(existing) => {
            let display_name = reg
                .display_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or(existing.display_name.clone());
            let kind = reg.kind.unwrap_or(existing.kind);
            let public_visible = reg.public_visible.unwrap_or(existing.public_visible);
            execute(
                c,
                "updating a user at login",
                "UPDATE users SET display_name = $1, kind = $2, public_visible = $3 WHERE id = $4",
                &[&display_name, &kind.as_str(), &public_visible, &existing.id],
            )
            .await?;
            User {
                display_name,
                kind,
                public_visible,
                ..existing
            }
        }
        None => {
            if !reg.allow_new {
                return Ok(LoginOutcome::RegistrationClosed);
            }
            let address = match &reg.chat_address {
                Some(a) => {
                    if user_by_address(c, a).await?.is_some() {
                        return Ok(LoginOutcome::AddressTaken);
                    }
                    a.clone()
                }
                None => loop {
                    let candidate = random_hex(8);
                    if user_by_address(c, &candidate).await?.is_none() {
                        break candidate;
                    }
                },
            };
            let display_name = reg
                .display_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| address.clone());
            let kind = reg.kind.unwrap_or_default();
            let public_visible = reg.public_visible.unwrap_or(true);
            // Two relays may register the same email or address at once: the loser finds the
            // row taken and says so instead of failing.
            let row = query_opt(
                c,
                "creating a user",
                "INSERT INTO users (email, chat_address, display_name, kind, public_visible, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
                &[&reg.email, &address, &display_name, &kind.as_str(), &public_visible, &now],
            )
            .await?;
            let Some(row) = row else {
                return Ok(LoginOutcome::AddressTaken);
            };
            User {
                id: row.at(0)?,
                email: reg.email.clone(),
                chat_address: address,
                display_name,
                kind,
                public_visible,
            }
        }
    };

    execute(
        c,
        "consuming a login code",
        "DELETE FROM login_challenges WHERE email = $1",
        &[&reg.email],
    )
    .await?;
    let row = query_one(
        c,
        "creating a session",
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, cursor)
         VALUES ($1, $2, $3, $4, COALESCE((SELECT MAX(cursor) FROM sessions WHERE user_id = $2), 0))
         RETURNING id",
        &[&token_hash, &user.id, &now, &session_expires_at],
    )
    .await?;
    Ok(LoginOutcome::LoggedIn {
        session_id: row.at(0)?,
        user,
    })
}

pub(super) async fn put_challenge(c: &impl GenericClient, ch: &NewChallenge) -> StoreResult<()> {
    execute(
        c,
        "storing a login challenge",
        "INSERT INTO login_challenges (login_hash, email, client, code_hash, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &ch.login_hash,
            &ch.email,
            &ch.client,
            &ch.code_hash,
            &ch.expires_at,
            &ch.now,
        ],
    )
    .await?;
    auth_event(c, "code", &ch.email, &ch.client, ch.now).await
}

pub(super) async fn auth_pressure(
    c: &impl GenericClient,
    email: &str,
    client: &str,
    short_since: i64,
    long_since: i64,
) -> StoreResult<AuthPressure> {
    let row = query_one(
        c,
        "counting login activity",
        "SELECT
           (SELECT COUNT(*) FROM auth_events WHERE kind = 'code' AND client = $2 AND at >= $3),
           (SELECT COUNT(*) FROM auth_events
             WHERE kind = 'code' AND email = $1 AND client = $2 AND at >= $3),
           (SELECT COUNT(*) FROM auth_events WHERE kind = 'fail' AND email = $1 AND at >= $4),
           (SELECT COUNT(*) FROM auth_events WHERE kind = 'fail' AND client = $2 AND at >= $3)",
        &[&email, &client, &short_since, &long_since],
    )
    .await?;
    let n = |i| row.at::<i64>(i).map(|v| v.clamp(0, u32::MAX as i64) as u32);
    Ok(AuthPressure {
        codes_from_client: n(0)?,
        codes_for_email_from_client: n(1)?,
        fails_for_email: n(2)?,
        fails_from_client: n(3)?,
    })
}

pub(super) async fn sweep_auth(
    c: &impl GenericClient,
    events_before: i64,
    now: i64,
) -> StoreResult<()> {
    execute(
        c,
        "sweeping login activity",
        "DELETE FROM auth_events WHERE at < $1",
        &[&events_before],
    )
    .await?;
    execute(
        c,
        "sweeping login challenges",
        "DELETE FROM login_challenges WHERE expires_at <= $1",
        &[&now],
    )
    .await
    .map(drop)
}

pub(super) async fn session(
    c: &impl GenericClient,
    token_hash: &str,
    now: i64,
) -> StoreResult<Option<SessionInfo>> {
    let sql = format!(
        "SELECT s.id, s.expires_at, {USER_COLS} FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2"
    );
    query_opt(c, "looking up a session", &sql, &[&token_hash, &now])
        .await?
        .map(|r| {
            Ok(SessionInfo {
                session_id: r.at(0)?,
                expires_at: r.at(1)?,
                user: user_from_row(&r, 2)?,
            })
        })
        .transpose()
}

pub(super) async fn end_session(
    c: &impl GenericClient,
    session_id: i64,
    now: i64,
) -> StoreResult<()> {
    execute(
        c,
        "ending a session",
        "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        &[&now, &session_id],
    )
    .await
    .map(drop)
}

pub(super) async fn set_presence(
    c: &impl GenericClient,
    user_id: i64,
    u: &PresenceUpdate,
    now: i64,
) -> StoreResult<()> {
    execute(
        c,
        "updating presence",
        "UPDATE users SET visible = $1, last_seen = $2,
            display_name = COALESCE($3, display_name),
            device_name = COALESCE($4, device_name),
            session_name = COALESCE($5, session_name),
            listen_channel = COALESCE($6, listen_channel),
            status = CASE WHEN $7::text IS NULL THEN status WHEN $7 = '' THEN NULL ELSE $7 END
         WHERE id = $8",
        &[
            &u.visible,
            &now,
            &u.display_name,
            &u.device_name,
            &u.session_name,
            &u.listen_channel,
            &u.status,
            &user_id,
        ],
    )
    .await
    .map(drop)
}

pub(super) async fn directory(
    c: &impl GenericClient,
    needle: &str,
    limit: u32,
    fresh_after: i64,
) -> StoreResult<Vec<DirectoryEntry>> {
    let rows = query(
        c,
        "searching the directory",
        "SELECT chat_address, display_name, kind,
                (visible AND COALESCE(last_seen >= $2, FALSE)) AS online,
                last_seen, device_name, session_name, listen_channel, status
         FROM users
         WHERE public_visible
           AND ($1 = '' OR strpos(lower(display_name), $1) > 0 OR strpos(chat_address, $1) > 0)
         ORDER BY online DESC, lower(display_name), chat_address
         LIMIT $3",
        &[&needle, &fresh_after, &(limit as i64)],
    )
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let kind: String = r.at(2)?;
            let online: bool = r.at(3)?;
            let last_seen: Option<i64> = r.at(4)?;
            Ok(DirectoryEntry {
                entry_type: "user".into(),
                chat_address: r.at(0)?,
                display_name: r.at(1)?,
                kind: Kind::parse(&kind),
                online,
                last_seen: last_seen.map(rfc3339_from_millis),
                device_name: r.at(5)?,
                session_name: r.at(6)?,
                listen_channel: r.at(7)?,
                status: if online { r.at(8)? } else { None },
                group_id: None,
                mode: None,
                member_count: None,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let room = limit.saturating_sub(out.len() as u32);
    if room > 0 {
        let rows = query(
            c,
            "searching groups",
            "SELECT g.public_id, g.name, g.mode,
                    (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id)
             FROM groups g
             WHERE g.visibility = 'public'
               AND ($1 = '' OR strpos(lower(g.name), $1) > 0 OR strpos(g.public_id, $1) > 0)
             ORDER BY lower(g.name)
             LIMIT $2",
            &[&needle, &(room as i64)],
        )
        .await?;
        for r in rows {
            let id: String = r.at(0)?;
            let members: i64 = r.at(3)?;
            out.push(DirectoryEntry {
                entry_type: "group".into(),
                chat_address: format!("group:{id}"),
                display_name: r.at(1)?,
                kind: None,
                online: false,
                last_seen: None,
                device_name: None,
                session_name: None,
                listen_channel: None,
                status: None,
                group_id: Some(id),
                mode: Some(r.at(2)?),
                member_count: Some(members.max(0) as _),
            });
        }
    }
    Ok(out)
}

pub(super) async fn set_profile(
    c: &impl GenericClient,
    user_id: i64,
    display_name: Option<&str>,
    public_visible: Option<bool>,
) -> StoreResult<()> {
    execute(
        c,
        "updating a profile",
        "UPDATE users SET display_name = COALESCE($1, display_name),
                          public_visible = COALESCE($2, public_visible) WHERE id = $3",
        &[&display_name, &public_visible, &user_id],
    )
    .await
    .map(drop)
}
