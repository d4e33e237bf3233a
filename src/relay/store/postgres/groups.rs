//! Groups: chat and one-writer stream groups, members, join requests (PostgreSQL).

use deadpool_postgres::GenericClient;

use super::{RowExt, execute, identity, query, query_one, query_opt};
use crate::api::groups::{GroupInfo, JoinRequest, Member};
use crate::api::messages::ConversationSummary;
use crate::api::{Kind, rfc3339_from_millis};
use crate::relay::store::{NewGroup, StoreError, StoreResult};

pub(super) struct GroupRow {
    pub rowid: i64,
    pub visibility: String,
    pub mode: String,
}

pub(super) async fn lookup(
    c: &impl GenericClient,
    public_id: &str,
) -> StoreResult<Option<GroupRow>> {
    query_opt(
        c,
        "looking up a group",
        "SELECT id, visibility, mode FROM groups WHERE public_id = $1",
        &[&public_id],
    )
    .await?
    .map(|r| {
        Ok(GroupRow {
            rowid: r.at(0)?,
            visibility: r.at(1)?,
            mode: r.at(2)?,
        })
    })
    .transpose()
}

async fn must_exist(c: &impl GenericClient, public_id: &str) -> StoreResult<GroupRow> {
    lookup(c, public_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no group has the id {public_id:?}")))
}

pub(super) async fn role(
    c: &impl GenericClient,
    group: i64,
    user: i64,
) -> StoreResult<Option<String>> {
    query_opt(
        c,
        "reading a group role",
        "SELECT role FROM group_members WHERE group_id = $1 AND user_id = $2",
        &[&group, &user],
    )
    .await?
    .map(|r| r.at(0))
    .transpose()
}

async fn must_be_admin(
    c: &impl GenericClient,
    group: &GroupRow,
    actor: i64,
    what: &str,
) -> StoreResult<()> {
    match role(c, group.rowid, actor).await?.as_deref() {
        Some("admin") => Ok(()),
        _ => Err(StoreError::Forbidden(format!(
            "only the group's admins can {what}"
        ))),
    }
}

pub(super) async fn member_ids(c: &impl GenericClient, group: i64) -> StoreResult<Vec<i64>> {
    query(
        c,
        "listing group members",
        "SELECT user_id FROM group_members WHERE group_id = $1",
        &[&group],
    )
    .await?
    .iter()
    .map(|r| r.at(0))
    .collect()
}

async fn insert_member(
    c: &impl GenericClient,
    group: i64,
    user: i64,
    role: &str,
    now: i64,
) -> StoreResult<()> {
    execute(
        c,
        "adding a group member",
        "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (group_id, user_id) DO UPDATE SET role = CASE
             WHEN excluded.role = 'admin' THEN 'admin' ELSE group_members.role END",
        &[&group, &user, &role, &now],
    )
    .await?;
    execute(
        c,
        "clearing a join request",
        "DELETE FROM join_requests WHERE group_id = $1 AND user_id = $2",
        &[&group, &user],
    )
    .await
    .map(drop)
}

pub(super) async fn create(c: &impl GenericClient, g: &NewGroup) -> StoreResult<()> {
    let row = query_one(
        c,
        "creating a group",
        "INSERT INTO groups (public_id, name, visibility, mode, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            &g.public_id,
            &g.name,
            &g.visibility,
            &g.mode,
            &g.creator_id,
            &g.created_at,
        ],
    )
    .await?;
    insert_member(c, row.at(0)?, g.creator_id, "admin", g.created_at).await
}

pub(super) async fn list_for(c: &impl GenericClient, user: i64) -> StoreResult<Vec<GroupInfo>> {
    let rows = query(
        c,
        "listing groups",
        "SELECT g.public_id, g.name, g.visibility, g.mode, gm.role,
                (SELECT COUNT(*) FROM group_members x WHERE x.group_id = g.id),
                u.chat_address, g.created_at
         FROM groups g
         JOIN users u ON u.id = g.created_by
         LEFT JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = $1
         WHERE gm.user_id IS NOT NULL OR g.visibility = 'public'
         ORDER BY gm.user_id IS NULL, lower(g.name)",
        &[&user],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let mode: String = r.at(3)?;
            let role: Option<String> = r.at(4)?;
            let can_post = match role.as_deref() {
                Some("admin") => true,
                Some(_) => mode == "chat",
                None => false,
            };
            let members: i64 = r.at(5)?;
            Ok(GroupInfo {
                group_id: r.at(0)?,
                name: r.at(1)?,
                visibility: r.at(2)?,
                mode,
                role,
                member_count: members.max(0) as _,
                created_by: r.at(6)?,
                created_at: rfc3339_from_millis(r.at(7)?),
                can_post,
            })
        })
        .collect()
}

async fn user_id(c: &impl GenericClient, address: &str) -> StoreResult<i64> {
    identity::user_by_address(c, address)
        .await?
        .map(|u| u.id)
        .ok_or_else(|| StoreError::UnknownRecipient(address.to_string()))
}

pub(super) async fn add_member(
    c: &impl GenericClient,
    actor: i64,
    public_id: &str,
    address: &str,
    role: &str,
    now: i64,
) -> StoreResult<()> {
    let g = must_exist(c, public_id).await?;
    must_be_admin(c, &g, actor, "add members").await?;
    let user = user_id(c, address).await?;
    insert_member(c, g.rowid, user, role, now).await
}

pub(super) async fn remove_member(
    c: &impl GenericClient,
    actor: i64,
    public_id: &str,
    address: &str,
) -> StoreResult<()> {
    let g = must_exist(c, public_id).await?;
    let user = user_id(c, address).await?;
    if user != actor {
        must_be_admin(c, &g, actor, "remove other members").await?;
    }
    let removed = execute(
        c,
        "removing a group member",
        "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2",
        &[&g.rowid, &user],
    )
    .await?;
    if removed == 0 {
        return Err(StoreError::NotFound(format!(
            "{address} is not a member of group:{public_id}"
        )));
    }
    // A group is never left without an admin while it has members.
    let admins: i64 = query_one(
        c,
        "counting admins",
        "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND role = 'admin'",
        &[&g.rowid],
    )
    .await?
    .at(0)?;
    if admins == 0 {
        execute(
            c,
            "promoting an admin",
            "UPDATE group_members SET role = 'admin' WHERE group_id = $1 AND user_id =
                (SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY joined_at LIMIT 1)",
            &[&g.rowid],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn members(
    c: &impl GenericClient,
    actor: i64,
    public_id: &str,
) -> StoreResult<Vec<Member>> {
    let g = must_exist(c, public_id).await?;
    if g.visibility != "public" && role(c, g.rowid, actor).await?.is_none() {
        return Err(StoreError::NotMember(format!(
            "group:{public_id} is private; only its members see who is in it"
        )));
    }
    let rows = query(
        c,
        "listing members",
        "SELECT u.chat_address, u.display_name, u.kind, gm.role, gm.joined_at
         FROM group_members gm JOIN users u ON u.id = gm.user_id
         WHERE gm.group_id = $1 ORDER BY gm.role = 'admin' DESC, gm.joined_at",
        &[&g.rowid],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.at(2)?;
            Ok(Member {
                chat_address: r.at(0)?,
                display_name: r.at(1)?,
                kind: Kind::parse(&kind).unwrap_or_default(),
                role: r.at(3)?,
                joined_at: rfc3339_from_millis(r.at(4)?),
            })
        })
        .collect()
}

pub(super) async fn join_or_request(
    c: &impl GenericClient,
    user: i64,
    public_id: &str,
    now: i64,
) -> StoreResult<bool> {
    let g = must_exist(c, public_id).await?;
    if role(c, g.rowid, user).await?.is_some() {
        return Ok(true);
    }
    if g.visibility == "public" {
        insert_member(c, g.rowid, user, "member", now).await?;
        return Ok(true);
    }
    execute(
        c,
        "filing a join request",
        "INSERT INTO join_requests (group_id, user_id, created_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&g.rowid, &user, &now],
    )
    .await?;
    Ok(false)
}

pub(super) async fn join_requests(
    c: &impl GenericClient,
    actor: i64,
    public_id: &str,
) -> StoreResult<Vec<JoinRequest>> {
    let g = must_exist(c, public_id).await?;
    must_be_admin(c, &g, actor, "see join requests").await?;
    let rows = query(
        c,
        "listing join requests",
        "SELECT u.chat_address, u.display_name, u.kind, jr.created_at
         FROM join_requests jr JOIN users u ON u.id = jr.user_id
         WHERE jr.group_id = $1 ORDER BY jr.created_at",
        &[&g.rowid],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.at(2)?;
            Ok(JoinRequest {
                chat_address: r.at(0)?,
                display_name: r.at(1)?,
                kind: Kind::parse(&kind).unwrap_or_default(),
                requested_at: rfc3339_from_millis(r.at(3)?),
            })
        })
        .collect()
}

pub(super) async fn decide_join(
    c: &impl GenericClient,
    actor: i64,
    public_id: &str,
    address: &str,
    accept: bool,
    now: i64,
) -> StoreResult<()> {
    let g = must_exist(c, public_id).await?;
    must_be_admin(c, &g, actor, "decide join requests").await?;
    let user = user_id(c, address).await?;
    let pending = execute(
        c,
        "deciding a join request",
        "DELETE FROM join_requests WHERE group_id = $1 AND user_id = $2",
        &[&g.rowid, &user],
    )
    .await?;
    if pending == 0 {
        return Err(StoreError::NotFound(format!(
            "{address} has no pending request to join group:{public_id}"
        )));
    }
    if accept {
        insert_member(c, g.rowid, user, "member", now).await?;
    }
    Ok(())
}

pub(super) async fn summary(
    c: &impl GenericClient,
    user: i64,
    public_id: &str,
) -> StoreResult<Option<ConversationSummary>> {
    query_opt(
        c,
        "reading a group",
        "SELECT g.name, g.mode, gm.role FROM groups g
         LEFT JOIN group_members gm ON gm.group_id = g.id AND gm.user_id = $2
         WHERE g.public_id = $1",
        &[&public_id, &user],
    )
    .await?
    .map(|r| {
        let mode: String = r.at(1)?;
        let role: Option<String> = r.at(2)?;
        Ok(ConversationSummary {
            with: format!("group:{public_id}"),
            conversation_type: "group".into(),
            display_name: r.at(0)?,
            kind: None,
            can_post: matches!(role.as_deref(), Some("admin"))
                || (role.is_some() && mode == "chat"),
            mode: Some(mode),
            last_message: None,
            unread: 0,
        })
    })
    .transpose()
}
