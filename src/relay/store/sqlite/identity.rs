//! Identities, login codes, sessions, presence and the directory.

use rusqlite::{Connection, OptionalExtension, params};

use super::{random_hex, sqlite_err};
use crate::api::directory::DirectoryEntry;
use crate::api::{Kind, rfc3339_from_millis};
use crate::relay::store::{
    AuthPressure, CodeAttempt, CodeRejection, LoginOutcome, NewChallenge, PresenceUpdate,
    Registration, SessionInfo, StoreResult, User,
};

pub(super) const USER_COLS: &str =
    "u.id, u.email, u.chat_address, u.display_name, u.kind, u.public_visible";

pub(super) fn user_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<User> {
    let kind: String = row.get(at + 4)?;
    Ok(User {
        id: row.get(at)?,
        email: row.get(at + 1)?,
        chat_address: row.get(at + 2)?,
        display_name: row.get(at + 3)?,
        kind: Kind::parse(&kind).unwrap_or_default(),
        public_visible: row.get::<_, i64>(at + 5)? != 0,
    })
}

pub(super) fn user_by_email(conn: &Connection, email: &str) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM users u WHERE u.email = ?1"
    ))
    .and_then(|mut st| st.query_row([email], |r| user_from_row(r, 0)).optional())
    .map_err(sqlite_err("looking up a user by email"))
}

pub(super) fn user_by_address(conn: &Connection, address: &str) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM users u WHERE u.chat_address = ?1"
    ))
    .and_then(|mut st| st.query_row([address], |r| user_from_row(r, 0)).optional())
    .map_err(sqlite_err("looking up a user by address"))
}

/// The challenge a verify try is about: the one its login id names, else the newest one this
/// client address asked for (the seed's verify call sends no login id).
fn challenge_for(
    conn: &Connection,
    attempt: &CodeAttempt,
) -> StoreResult<Option<(i64, String, i64, u32)>> {
    let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
    match &attempt.login_hash {
        Some(h) => conn
            .prepare_cached(
                "SELECT id, code_hash, expires_at, attempts FROM login_challenges
                 WHERE login_hash = ?1 AND email = ?2",
            )
            .and_then(|mut st| st.query_row(params![h, attempt.email], row).optional()),
        None => conn
            .prepare_cached(
                "SELECT id, code_hash, expires_at, attempts FROM login_challenges
                 WHERE email = ?1 AND client = ?2 AND expires_at > ?3
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![attempt.email, attempt.client, attempt.now], row)
                    .optional()
            }),
    }
    .map_err(sqlite_err("reading a login challenge"))
}

fn auth_event(
    conn: &Connection,
    kind: &str,
    email: &str,
    client: &str,
    at: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO auth_events (kind, email, client, at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut st| st.execute(params![kind, email, client, at]))
    .map_err(sqlite_err("recording login activity"))?;
    Ok(())
}

pub(super) fn login(
    conn: &Connection,
    attempt: &CodeAttempt,
    reg: &Registration,
    token_hash: &str,
    session_expires_at: i64,
) -> StoreResult<LoginOutcome> {
    let now = attempt.now;
    let Some((challenge_id, stored_hash, expires_at, attempts)) = challenge_for(conn, attempt)?
    else {
        return Ok(LoginOutcome::Rejected(CodeRejection::Expired));
    };
    if expires_at <= now {
        conn.execute("DELETE FROM login_challenges WHERE id = ?1", [challenge_id])
            .map_err(sqlite_err("dropping an expired login challenge"))?;
        return Ok(LoginOutcome::Rejected(CodeRejection::Expired));
    }
    if attempts >= attempt.max_attempts {
        return Ok(LoginOutcome::Rejected(CodeRejection::Locked));
    }
    if stored_hash != attempt.code_hash {
        conn.execute(
            "UPDATE login_challenges SET attempts = attempts + 1 WHERE id = ?1",
            [challenge_id],
        )
        .map_err(sqlite_err("counting a wrong login code"))?;
        auth_event(conn, "fail", &attempt.email, &attempt.client, now)?;
        return Ok(LoginOutcome::Rejected(CodeRejection::Wrong {
            remaining: attempt.max_attempts.saturating_sub(attempts + 1),
        }));
    }

    let user = match user_by_email(conn, &reg.email)? {
        Some(existing) => {
            let display_name = reg
                .display_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or(existing.display_name.clone());
            let kind = reg.kind.unwrap_or(existing.kind);
            let public_visible = reg.public_visible.unwrap_or(existing.public_visible);
            conn.execute(
                "UPDATE users SET display_name = ?1, kind = ?2, public_visible = ?3 WHERE id = ?4",
                params![
                    display_name,
                    kind.as_str(),
                    public_visible as i64,
                    existing.id
                ],
            )
            .map_err(sqlite_err("updating a user at login"))?;
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
                    if user_by_address(conn, a)?.is_some() {
                        return Ok(LoginOutcome::AddressTaken);
                    }
                    a.clone()
                }
                None => loop {
                    let candidate = random_hex(8);
                    if user_by_address(conn, &candidate)?.is_none() {
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
            conn.execute(
                "INSERT INTO users (email, chat_address, display_name, kind, public_visible, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![reg.email, address, display_name, kind.as_str(), public_visible as i64, now],
            )
            .map_err(sqlite_err("creating a user"))?;
            User {
                id: conn.last_insert_rowid(),
                email: reg.email.clone(),
                chat_address: address,
                display_name,
                kind,
                public_visible,
            }
        }
    };

    // Signed in: every other outstanding code for this email is void too.
    conn.execute(
        "DELETE FROM login_challenges WHERE email = ?1",
        [&reg.email],
    )
    .map_err(sqlite_err("consuming a login code"))?;
    // A new session continues from the furthest claim of the identity's earlier sessions,
    // so logging in again does not hand back what was already claimed.
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, cursor)
         VALUES (?1, ?2, ?3, ?4, COALESCE((SELECT MAX(cursor) FROM sessions WHERE user_id = ?2), 0))",
        params![token_hash, user.id, now, session_expires_at],
    )
    .map_err(sqlite_err("creating a session"))?;
    Ok(LoginOutcome::LoggedIn {
        session_id: conn.last_insert_rowid(),
        user,
    })
}

pub(super) fn put_challenge(conn: &Connection, c: &NewChallenge) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO login_challenges (login_hash, email, client, code_hash, expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| {
        st.execute(params![
            c.login_hash,
            c.email,
            c.client,
            c.code_hash,
            c.expires_at,
            c.now
        ])
    })
    .map_err(sqlite_err("storing a login challenge"))?;
    auth_event(conn, "code", &c.email, &c.client, c.now)
}

pub(super) fn auth_pressure(
    conn: &Connection,
    email: &str,
    client: &str,
    short_since: i64,
    long_since: i64,
) -> StoreResult<AuthPressure> {
    let count = |sql: &str, a: &str, b: Option<&str>, since: i64| -> StoreResult<u32> {
        conn.prepare_cached(sql)
            .and_then(|mut st| match b {
                Some(b) => st.query_row(params![a, b, since], |r| r.get(0)),
                None => st.query_row(params![a, since], |r| r.get(0)),
            })
            .map_err(sqlite_err("counting login activity"))
    };
    Ok(AuthPressure {
        codes_from_client: count(
            "SELECT COUNT(*) FROM auth_events WHERE kind = 'code' AND client = ?1 AND at >= ?2",
            client,
            None,
            short_since,
        )?,
        codes_for_email_from_client: count(
            "SELECT COUNT(*) FROM auth_events
             WHERE kind = 'code' AND email = ?1 AND client = ?2 AND at >= ?3",
            email,
            Some(client),
            short_since,
        )?,
        fails_for_email: count(
            "SELECT COUNT(*) FROM auth_events WHERE kind = 'fail' AND email = ?1 AND at >= ?2",
            email,
            None,
            long_since,
        )?,
        fails_from_client: count(
            "SELECT COUNT(*) FROM auth_events WHERE kind = 'fail' AND client = ?1 AND at >= ?2",
            client,
            None,
            short_since,
        )?,
    })
}

pub(super) fn sweep_auth(conn: &Connection, events_before: i64, now: i64) -> StoreResult<()> {
    conn.execute("DELETE FROM auth_events WHERE at < ?1", [events_before])
        .map_err(sqlite_err("sweeping login activity"))?;
    conn.execute("DELETE FROM login_challenges WHERE expires_at <= ?1", [now])
        .map_err(sqlite_err("sweeping login challenges"))?;
    Ok(())
}

pub(super) fn session(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> StoreResult<Option<SessionInfo>> {
    conn.prepare_cached(&format!(
        "SELECT s.id, s.expires_at, {USER_COLS} FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2"
    ))
    .and_then(|mut st| {
        st.query_row(params![token_hash, now], |r| {
            Ok(SessionInfo {
                session_id: r.get(0)?,
                expires_at: r.get(1)?,
                user: user_from_row(r, 2)?,
            })
        })
        .optional()
    })
    .map_err(sqlite_err("looking up a session"))
}

pub(super) fn end_session(conn: &Connection, session_id: i64, now: i64) -> StoreResult<()> {
    conn.execute(
        "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
        params![now, session_id],
    )
    .map_err(sqlite_err("ending a session"))?;
    Ok(())
}

pub(super) fn set_presence(
    conn: &Connection,
    user_id: i64,
    update: &PresenceUpdate,
    now: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE users SET visible = ?1, last_seen = ?2,
            display_name = COALESCE(?3, display_name),
            device_name = COALESCE(?4, device_name),
            session_name = COALESCE(?5, session_name),
            listen_channel = COALESCE(?6, listen_channel),
            status = CASE WHEN ?7 IS NULL THEN status WHEN ?7 = '' THEN NULL ELSE ?7 END
         WHERE id = ?8",
    )
    .and_then(|mut st| {
        st.execute(params![
            update.visible as i64,
            now,
            update.display_name,
            update.device_name,
            update.session_name,
            update.listen_channel,
            update.status,
            user_id
        ])
    })
    .map_err(sqlite_err("updating presence"))?;
    Ok(())
}

/// Public identities (online first) and public groups whose name or address holds `needle`.
pub(super) fn directory(
    conn: &Connection,
    needle: &str,
    limit: u32,
    fresh_after: i64,
) -> StoreResult<Vec<DirectoryEntry>> {
    let mut st = conn
        .prepare_cached(
            "SELECT chat_address, display_name, kind,
                    (visible = 1 AND last_seen >= ?2) AS online,
                    last_seen, device_name, session_name, listen_channel, status
             FROM users
             WHERE public_visible = 1
               AND (?1 = '' OR instr(lower(display_name), ?1) > 0 OR instr(chat_address, ?1) > 0)
             ORDER BY online DESC, lower(display_name), chat_address
             LIMIT ?3",
        )
        .map_err(sqlite_err("searching the directory"))?;
    let mut out = st
        .query_map(params![needle, fresh_after, limit], |r| {
            let kind: String = r.get(2)?;
            let online: bool = r.get::<_, i64>(3)? != 0;
            let last_seen: Option<i64> = r.get(4)?;
            Ok(DirectoryEntry {
                entry_type: "user".into(),
                chat_address: r.get(0)?,
                display_name: r.get(1)?,
                kind: Kind::parse(&kind),
                online,
                last_seen: last_seen.map(rfc3339_from_millis),
                device_name: r.get(5)?,
                session_name: r.get(6)?,
                listen_channel: r.get(7)?,
                status: if online { r.get(8)? } else { None },
                group_id: None,
                mode: None,
                member_count: None,
            })
        })
        .map_err(sqlite_err("searching the directory"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sqlite_err("reading directory rows"))?;
    let room = limit.saturating_sub(out.len() as u32);
    if room > 0 {
        let mut st = conn
            .prepare_cached(
                "SELECT g.public_id, g.name, g.mode,
                        (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id)
                 FROM groups g
                 WHERE g.visibility = 'public'
                   AND (?1 = '' OR instr(lower(g.name), ?1) > 0 OR instr(g.public_id, ?1) > 0)
                 ORDER BY lower(g.name)
                 LIMIT ?2",
            )
            .map_err(sqlite_err("searching groups"))?;
        let groups = st
            .query_map(params![needle, room], |r| {
                let id: String = r.get(0)?;
                Ok(DirectoryEntry {
                    entry_type: "group".into(),
                    chat_address: format!("group:{id}"),
                    display_name: r.get(1)?,
                    kind: None,
                    online: false,
                    last_seen: None,
                    device_name: None,
                    session_name: None,
                    listen_channel: None,
                    status: None,
                    group_id: Some(id),
                    mode: Some(r.get(2)?),
                    member_count: Some(r.get(3)?),
                })
            })
            .map_err(sqlite_err("searching groups"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite_err("reading group rows"))?;
        out.extend(groups);
    }
    Ok(out)
}

pub(super) fn set_profile(
    conn: &Connection,
    user_id: i64,
    display_name: Option<&str>,
    public_visible: Option<bool>,
) -> StoreResult<()> {
    conn.execute(
        "UPDATE users SET display_name = COALESCE(?1, display_name),
                          public_visible = COALESCE(?2, public_visible) WHERE id = ?3",
        params![display_name, public_visible.map(i64::from), user_id],
    )
    .map_err(sqlite_err("updating a profile"))?;
    Ok(())
}
