//! Groups: chat and one-writer stream groups, members, join requests.

use rusqlite::{Connection, OptionalExtension, params};

use super::{identity, sqlite_err};
use crate::api::groups::{GroupInfo, JoinRequest, Member};
use crate::api::messages::ConversationSummary;
use crate::api::{Kind, rfc3339_from_millis};
use crate::relay::store::{NewGroup, StoreError, StoreResult};

pub(super) struct GroupRow {
    pub rowid: i64,
    pub visibility: String,
    pub mode: String,
}

pub(super) fn lookup(conn: &Connection, public_id: &str) -> StoreResult<Option<GroupRow>> {
    conn.prepare_cached("SELECT id, visibility, mode FROM groups WHERE public_id = ?1")
        .and_then(|mut st| {
            st.query_row([public_id], |r| {
                Ok(GroupRow {
                    rowid: r.get(0)?,
                    visibility: r.get(1)?,
                    mode: r.get(2)?,
                })
            })
            .optional()
        })
        .map_err(sqlite_err("looking up a group"))
}

fn must_exist(conn: &Connection, public_id: &str) -> StoreResult<GroupRow> {
    lookup(conn, public_id)?
        .ok_or_else(|| StoreError::NotFound(format!("no group has the id {public_id:?}")))
}

/// The user's role in the group, if a member.
pub(super) fn role(conn: &Connection, group: i64, user: i64) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT role FROM group_members WHERE group_id = ?1 AND user_id = ?2")
        .and_then(|mut st| st.query_row(params![group, user], |r| r.get(0)).optional())
        .map_err(sqlite_err("reading a group role"))
}

fn must_be_admin(conn: &Connection, group: &GroupRow, actor: i64, what: &str) -> StoreResult<()> {
    match role(conn, group.rowid, actor)?.as_deref() {
        Some("admin") => Ok(()),
        _ => Err(StoreError::Forbidden(format!(
            "only the group's admins can {what}"
        ))),
    }
}

pub(super) fn member_ids(conn: &Connection, group: i64) -> StoreResult<Vec<i64>> {
    let mut st = conn
        .prepare_cached("SELECT user_id FROM group_members WHERE group_id = ?1")
        .map_err(sqlite_err("listing group members"))?;
    st.query_map([group], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(sqlite_err("listing group members"))
}

fn insert_member(
    conn: &Connection,
    group: i64,
    user: i64,
    role: &str,
    now: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(group_id, user_id) DO UPDATE SET role = CASE
             WHEN excluded.role = 'admin' THEN 'admin' ELSE group_members.role END",
    )
    .and_then(|mut st| st.execute(params![group, user, role, now]))
    .map_err(sqlite_err("adding a group member"))?;
    conn.prepare_cached("DELETE FROM join_requests WHERE group_id = ?1 AND user_id = ?2")
        .and_then(|mut st| st.execute(params![group, user]))
        .map_err(sqlite_err("clearing a join request"))?;
    Ok(())
}

pub(super) fn create(conn: &Connection, g: &NewGroup) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO groups (public_id, name, visibility, mode, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            g.public_id,
            g.name,
            g.visibility,
            g.mode,
            g.creator_id,
            g.created_at
        ],
    )
    .map_err(sqlite_err("creating a group"))?;
    insert_member(
        conn,
        conn.last_insert_rowid(),
        g.creator_id,
        "admin",
        g.created_at,
    )
}

pub(super) fn list_for(conn: &Connection, user: i64) -> StoreResult<Vec<GroupInfo>> {
    let mut st = conn
        .prepare_cached(
            "SELECT g.public_id, g.name, g.visibility, g.mode, gm.role,
                    (SELECT COUNT(*) FROM group_members x WHERE x.group_id = g.id),
                    u.chat_address, g.created_at
             FROM groups g
             JOIN users u ON u.id = g.created_by
             LEFT JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = ?1
             WHERE gm.user_id IS NOT NULL OR g.visibility = 'public'
             ORDER BY gm.user_id IS NULL, lower(g.name)",
        )
        .map_err(sqlite_err("listing groups"))?;
    st.query_map([user], |r| {
        let mode: String = r.get(3)?;
        let role: Option<String> = r.get(4)?;
        let can_post = match role.as_deref() {
            Some("admin") => true,
            Some(_) => mode == "chat",
            None => false,
        };
        Ok(GroupInfo {
            group_id: r.get(0)?,
            name: r.get(1)?,
            visibility: r.get(2)?,
            mode,
            role,
            member_count: r.get(5)?,
            created_by: r.get(6)?,
            created_at: rfc3339_from_millis(r.get(7)?),
            can_post,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(sqlite_err("listing groups"))
}

fn user_id(conn: &Connection, address: &str) -> StoreResult<i64> {
    identity::user_by_address(conn, address)?
        .map(|u| u.id)
        .ok_or_else(|| StoreError::UnknownRecipient(address.to_string()))
}

pub(super) fn add_member(
    conn: &Connection,
    actor: i64,
    public_id: &str,
    address: &str,
    role: &str,
    now: i64,
) -> StoreResult<()> {
    let g = must_exist(conn, public_id)?;
    must_be_admin(conn, &g, actor, "add members")?;
    let user = user_id(conn, address)?;
    insert_member(conn, g.rowid, user, role, now)
}

pub(super) fn remove_member(
    conn: &Connection,
    actor: i64,
    public_id: &str,
    address: &str,
) -> StoreResult<()> {
    let g = must_exist(conn, public_id)?;
    let user = user_id(conn, address)?;
    if user != actor {
        must_be_admin(conn, &g, actor, "remove other members")?;
    }
    let removed = conn
        .execute(
            "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
            params![g.rowid, user],
        )
        .map_err(sqlite_err("removing a group member"))?;
    if removed == 0 {
        return Err(StoreError::NotFound(format!(
            "{address} is not a member of group:{public_id}"
        )));
    }
    // A group is never left without an admin while it has members: the longest-standing
    // member takes over.
    let admins: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM group_members WHERE group_id = ?1 AND role = 'admin'",
            [g.rowid],
            |r| r.get(0),
        )
        .map_err(sqlite_err("counting admins"))?;
    if admins == 0 {
        conn.execute(
            "UPDATE group_members SET role = 'admin' WHERE group_id = ?1 AND user_id =
                (SELECT user_id FROM group_members WHERE group_id = ?1 ORDER BY joined_at LIMIT 1)",
            [g.rowid],
        )
        .map_err(sqlite_err("promoting an admin"))?;
    }
    Ok(())
}

pub(super) fn members(conn: &Connection, actor: i64, public_id: &str) -> StoreResult<Vec<Member>> {
    let g = must_exist(conn, public_id)?;
    if g.visibility != "public" && role(conn, g.rowid, actor)?.is_none() {
        return Err(StoreError::NotMember(format!(
            "group:{public_id} is private; only its members see who is in it"
        )));
    }
    let mut st = conn
        .prepare_cached(
            "SELECT u.chat_address, u.display_name, u.kind, gm.role, gm.joined_at
             FROM group_members gm JOIN users u ON u.id = gm.user_id
             WHERE gm.group_id = ?1 ORDER BY gm.role = 'admin' DESC, gm.joined_at",
        )
        .map_err(sqlite_err("listing members"))?;
    st.query_map([g.rowid], |r| {
        let kind: String = r.get(2)?;
        Ok(Member {
            chat_address: r.get(0)?,
            display_name: r.get(1)?,
            kind: Kind::parse(&kind).unwrap_or_default(),
            role: r.get(3)?,
            joined_at: rfc3339_from_millis(r.get(4)?),
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(sqlite_err("listing members"))
}

/// Joins a public group (true) or files a join request for a private one (false).
pub(super) fn join_or_request(
    conn: &Connection,
    user: i64,
    public_id: &str,
    now: i64,
) -> StoreResult<bool> {
    let g = must_exist(conn, public_id)?;
    if role(conn, g.rowid, user)?.is_some() {
        return Ok(true);
    }
    if g.visibility == "public" {
        insert_member(conn, g.rowid, user, "member", now)?;
        return Ok(true);
    }
    conn.execute(
        "INSERT OR IGNORE INTO join_requests (group_id, user_id, created_at) VALUES (?1, ?2, ?3)",
        params![g.rowid, user, now],
    )
    .map_err(sqlite_err("filing a join request"))?;
    Ok(false)
}

pub(super) fn join_requests(
    conn: &Connection,
    actor: i64,
    public_id: &str,
) -> StoreResult<Vec<JoinRequest>> {
    let g = must_exist(conn, public_id)?;
    must_be_admin(conn, &g, actor, "see join requests")?;
    let mut st = conn
        .prepare_cached(
            "SELECT u.chat_address, u.display_name, u.kind, jr.created_at
             FROM join_requests jr JOIN users u ON u.id = jr.user_id
             WHERE jr.group_id = ?1 ORDER BY jr.created_at",
        )
        .map_err(sqlite_err("listing join requests"))?;
    st.query_map([g.rowid], |r| {
        let kind: String = r.get(2)?;
        Ok(JoinRequest {
            chat_address: r.get(0)?,
            display_name: r.get(1)?,
            kind: Kind::parse(&kind).unwrap_or_default(),
            requested_at: rfc3339_from_millis(r.get(3)?),
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(sqlite_err("listing join requests"))
}

pub(super) fn decide_join(
    conn: &Connection,
    actor: i64,
    public_id: &str,
    address: &str,
    accept: bool,
    now: i64,
) -> StoreResult<()> {
    let g = must_exist(conn, public_id)?;
    must_be_admin(conn, &g, actor, "decide join requests")?;
    let user = user_id(conn, address)?;
    let pending = conn
        .execute(
            "DELETE FROM join_requests WHERE group_id = ?1 AND user_id = ?2",
            params![g.rowid, user],
        )
        .map_err(sqlite_err("deciding a join request"))?;
    if pending == 0 {
        return Err(StoreError::NotFound(format!(
            "{address} has no pending request to join group:{public_id}"
        )));
    }
    if accept {
        insert_member(conn, g.rowid, user, "member", now)?;
    }
    Ok(())
}

/// A group as a conversation-list entry (no last message yet).
pub(super) fn summary(
    conn: &Connection,
    user: i64,
    public_id: &str,
) -> StoreResult<Option<ConversationSummary>> {
    conn.prepare_cached(
        "SELECT g.name, g.mode, gm.role FROM groups g
         LEFT JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = ?2
         WHERE g.public_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row(params![public_id, user], |r| {
            let mode: String = r.get(1)?;
            let role: Option<String> = r.get(2)?;
            Ok(ConversationSummary {
                with: format!("group:{public_id}"),
                conversation_type: "group".into(),
                display_name: r.get(0)?,
                kind: None,
                can_post: matches!(role.as_deref(), Some("admin"))
                    || (role.is_some() && mode == "chat"),
                mode: Some(mode),
                last_message: None,
                unread: 0,
            })
        })
        .optional()
    })
    .map_err(sqlite_err("reading a group"))
}
