//! The full message model: files, edits, deletions, read receipts, groups, stream groups,
//! abuse reports, and attachments through the CLI and the daemon.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn curl(args: &[&str], cwd: &Path) -> (String, std::process::ExitStatus) {
    let out = Command::new("curl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status,
    )
}

fn upload_dir_files(relay: &Relay) -> Vec<String> {
    std::fs::read_dir(relay.data_dir.join("pchat_uploads"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_upload_then_send_flow_and_curl_oj_download() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let agent = api.login("agent@example.com", "codex-agent", "agent").await;
    let user = api.login("user@example.com", "user-one", "human").await;
    let work = sb.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(work.join("demo.mp4"), &bytes).unwrap();

    // Step 1, verbatim: multipart upload.
    let (out, status) = curl(
        &[
            "-s",
            "-X",
            "POST",
            &format!("{}/api/v1/webchat/upload", relay.url),
            "-H",
            &format!("X-PChat-Session: {agent}"),
            "-F",
            "file=@./demo.mp4",
        ],
        &work,
    );
    assert!(status.success());
    let up: Value = serde_json::from_str(&out).expect("upload answer is JSON");
    assert_eq!(up["ok"], json!(true));
    let file_id = up["file_id"].as_str().unwrap().to_string();
    let a = &up["attachment"];
    assert_eq!(a["file_id"], json!(file_id));
    assert_eq!(a["name"], json!("demo.mp4"));
    assert_eq!(a["mime"], json!("video/mp4"));
    assert_eq!(a["size"], json!(bytes.len()));
    assert_eq!(a["kind"], json!("video"));
    assert_eq!(a["url"], json!(format!("/api/v1/webchat/files/{file_id}")));
    assert_eq!(a["sha256"].as_str().unwrap().len(), 64);

    // Step 2, verbatim: a normal message whose text holds the metadata from step 1.
    let body = json!({
        "phone_id": "pchat_free_phone", "channel": "pchat", "source": "codex-agent",
        "to": "user-one", "text": out,
    });
    let (s, _) = curl_json(
        &relay.url,
        "/api/v1/messages",
        &agent,
        &body.to_string(),
        &work,
    );
    assert_eq!(s, 0);
    let v = api.poll(&user, json!({"after": "0"})).await;
    let m = &events_of(&v, "message")[0];
    assert_eq!(
        m["text"],
        json!(""),
        "the metadata block is not shown as text"
    );
    assert_eq!(m["attachments"][0]["file_id"], json!(file_id));
    assert_eq!(m["attachments"][0]["name"], json!("demo.mp4"));
    assert_eq!(m["attachments"][0]["kind"], json!("video"));

    // `curl -OJ` saves it under its own name, with the same bytes.
    let dl = sb.path().join("dl");
    std::fs::create_dir_all(&dl).unwrap();
    let (_, status) = curl(
        &[
            "-s",
            "-OJ",
            &format!("{}/api/v1/webchat/files/{file_id}", relay.url),
        ],
        &dl,
    );
    assert!(status.success());
    assert_eq!(std::fs::read(dl.join("demo.mp4")).unwrap(), bytes);

    // Headers: type, nosniff, and ranges for media.
    let (s, _, h) = api
        .raw(
            reqwest::Method::GET,
            &format!("/api/v1/webchat/files/{file_id}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "video/mp4");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .contains("filename=\"demo.mp4\"")
    );
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/webchat/files/{file_id}", relay.url))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 100-199/{}", bytes.len()).as_str()
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[100..200]);

    // The attachments field form, with a caption; a made-up file id is refused.
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&agent),
            json!({"to": "user-one", "text": "here it is", "attachments": [{"file_id": file_id, "name": "x", "mime": "x", "size": 1, "kind": "video", "url": "x", "sha256": ""}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let v = api.poll(&user, json!({"after": "1"})).await;
    let m = &events_of(&v, "message")[0];
    assert_eq!(m["text"], json!("here it is"));
    assert_eq!(
        m["attachments"][0]["size"],
        json!(bytes.len()),
        "metadata comes from the relay"
    );
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&agent),
            json!({"to": "user-one", "attachments": [{"file_id": "file_00000000000000000000000000000000", "name": "", "mime": "", "size": 0, "kind": "", "url": "", "sha256": ""}]}),
        )
        .await;
    assert_error(s, &v, 400, "invalid_attachment");
    let (s, v) = api.get("/api/v1/webchat/files/file_nope", None).await;
    assert_error(s, &v, 404, "not_found");
}

/// POST with curl exactly as the seed does (Content-Type and session headers).
fn curl_json(base: &str, path: &str, token: &str, body: &str, cwd: &Path) -> (i32, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            &format!("{base}{path}"),
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("X-PChat-Session: {token}"),
            "-d",
            body,
        ])
        .current_dir(cwd)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (if v["ok"] == json!(true) { 0 } else { 1 }, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_leaves_nothing_and_names_are_sanitised() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_MAX_UPLOAD_MB", "1")]);
    let api = relay.api();
    let token = api.login("a@example.com", "aaa", "human").await;
    let client = reqwest::Client::new();
    let upload = |name: &'static str, len: usize| {
        let client = client.clone();
        let url = format!("{}/api/v1/webchat/upload", relay.url);
        let token = token.clone();
        async move {
            let part = reqwest::multipart::Part::bytes(vec![b'x'; len]).file_name(name);
            let form = reqwest::multipart::Form::new().part("file", part);
            let resp = client
                .post(url)
                .header("X-PChat-Session", token)
                .multipart(form)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = upload("big.bin", 1024 * 1024 + 1).await;
    assert_error(s, &v, 413, "payload_too_large");
    assert!(
        upload_dir_files(&relay).is_empty(),
        "an over-limit upload left {:?}",
        upload_dir_files(&relay)
    );

    let (s, v) = upload("../../etc/evil.txt", 10).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["attachment"]["name"], json!("evil.txt"));
    assert_eq!(v["attachment"]["kind"], json!("file"));
    let id = v["file_id"].as_str().unwrap();
    assert_eq!(
        upload_dir_files(&relay),
        vec![id.to_string()],
        "stored under its id only"
    );
    assert!(!sb.path().join("etc/evil.txt").exists());
    let (_, _, h) = api
        .raw(
            reqwest::Method::GET,
            &format!("/api/v1/webchat/files/{id}"),
            None,
            None,
            None,
        )
        .await;
    let cd = h["content-disposition"].to_str().unwrap();
    assert!(
        cd.starts_with("attachment;") && cd.contains("filename=\"evil.txt\""),
        "{cd}"
    );
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );

    // No file field, no session: clear errors.
    let form = reqwest::multipart::Form::new().text("other", "x");
    let resp = client
        .post(format!("{}/api/v1/webchat/upload", relay.url))
        .header("X-PChat-Session", &token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (s, v, _) = api
        .raw(
            reqwest::Method::POST,
            "/api/v1/webchat/upload",
            None,
            Some(b"x".to_vec()),
            None,
        )
        .await;
    assert_error(s, &v, 401, "unauthorized");
    let (s, v, _) = api
        .raw(
            reqwest::Method::POST,
            "/api/v1/webchat/upload",
            Some(&token),
            Some(b"not multipart".to_vec()),
            Some("text/plain"),
        )
        .await;
    assert_error(s, &v, 400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_and_read_receipts() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let alice = api.login("alice@example.com", "alice", "human").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;
    let mid = api.send(&alice, "alice", "bob", "helo").await;

    // The seed's examples send these without a Content-Type.
    let (s, v) = api
        .post_untyped(
            "/api/v1/webchat/edit",
            Some(&bob),
            json!({"message_id": mid, "text": "hijack"}),
        )
        .await;
    assert_error(s, &v, 403, "forbidden");
    let (s, v) = api
        .post_untyped(
            "/api/v1/webchat/delete",
            Some(&bob),
            json!({"message_id": mid}),
        )
        .await;
    assert_error(s, &v, 403, "forbidden");
    let (s, _) = api
        .post_untyped(
            "/api/v1/webchat/edit",
            Some(&alice),
            json!({"message_id": mid, "text": "hello"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .post_untyped(
            "/api/v1/webchat/read",
            Some(&bob),
            json!({"message_id": mid}),
        )
        .await;
    assert_eq!(s, 200);
    // Reading twice sends one receipt.
    let (s, _) = api
        .post_untyped(
            "/api/v1/webchat/read",
            Some(&bob),
            json!({"message_id": mid}),
        )
        .await;
    assert_eq!(s, 200);

    let v = api.poll(&bob, json!({"after": "0"})).await;
    let types: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["message", "edit"]);
    assert_eq!(
        v["messages"][0]["text"],
        json!("hello"),
        "a later read shows the edited text"
    );
    assert!(v["messages"][0]["edited_at"].is_string());
    assert_eq!(v["messages"][1]["message_id"], json!(mid));
    assert_eq!(v["messages"][1]["text"], json!("hello"));
    let cursor = v["next_cursor"].as_str().unwrap().to_string();

    let a = api.poll(&alice, json!({"after": "0"})).await;
    let reads = events_of(&a, "read");
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0]["message_id"], json!(mid));
    assert_eq!(reads[0]["from"], json!("bob"));
    assert_eq!(reads[0]["from_kind"], json!("agent"));

    let (s, _) = api
        .post_untyped(
            "/api/v1/webchat/delete",
            Some(&alice),
            json!({"message_id": mid}),
        )
        .await;
    assert_eq!(s, 200);
    let v = api.poll(&bob, json!({"after": cursor})).await;
    assert_eq!(events_of(&v, "delete")[0]["message_id"], json!(mid));
    let v = api.poll(&bob, json!({"after": "0"})).await;
    assert_eq!(v["messages"][0]["deleted"], json!(true));
    assert_eq!(v["messages"][0]["text"], json!(""), "deleted text is gone");
    let (s, v) = api
        .post_untyped(
            "/api/v1/webchat/edit",
            Some(&alice),
            json!({"message_id": mid, "text": "back"}),
        )
        .await;
    assert_error(s, &v, 409, "conflict");
    let (s, v) = api
        .post_untyped(
            "/api/v1/webchat/read",
            Some(&alice),
            json!({"message_id": "msg_nope"}),
        )
        .await;
    assert_error(s, &v, 404, "not_found");

    // History of the conversation, both directions, oldest first.
    api.send(&bob, "bob", "alice", "reply").await;
    let texts = api.history_texts(&alice, "bob").await;
    assert_eq!(texts, vec!["", "reply"]);
}

async fn make_group(api: &Api, token: &str, name: &str, visibility: &str, mode: &str) -> String {
    let (s, v) = api
        .post(
            "/api/v1/webchat/groups",
            Some(token),
            json!({"name": name, "visibility": visibility, "mode": mode}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["group_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_groups_and_private_join_requests() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let writer = api.login("w@example.com", "build-bot", "agent").await;
    let obs1 = api.login("o1@example.com", "observer-1", "human").await;
    let obs2 = api.login("o2@example.com", "observer-2", "human").await;
    let outsider = api.login("x@example.com", "outsider", "human").await;

    // The seed's example: a public stream group.
    let gid = make_group(&api, &writer, "Builds", "public", "stream").await;
    assert!(gid.starts_with("grp_"));
    // The seed's member add sends no Content-Type.
    for who in ["observer-1", "observer-2"] {
        let (s, v) = api
            .post_untyped(
                &format!("/api/v1/webchat/groups/{gid}/members"),
                Some(&writer),
                json!({"member_address": who}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = api
        .post_untyped(
            &format!("/api/v1/webchat/groups/{gid}/members"),
            Some(&obs1),
            json!({"member_address": "outsider"}),
        )
        .await;
    assert_error(s, &v, 403, "forbidden");

    let to = format!("group:{gid}");
    api.send(&writer, "build-bot", &to, "build 1 passed").await;
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&obs1),
            json!({"to": to, "text": "can I post?"}),
        )
        .await;
    assert_error(s, &v, 403, "stream_read_only");
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&outsider),
            json!({"to": to, "text": "me too"}),
        )
        .await;
    assert_error(s, &v, 403, "not_member");
    for token in [&obs1, &obs2] {
        let v = api.poll(token, json!({"after": "0"})).await;
        let msgs = events_of(&v, "message");
        assert_eq!(msgs.len(), 1, "{v}");
        assert_eq!(msgs[0]["text"], json!("build 1 passed"));
        assert_eq!(msgs[0]["group_id"], json!(gid));
        assert_eq!(msgs[0]["to"], json!(to));
    }
    // The refused post was not stored anywhere.
    let (_, hist) = api
        .get(&format!("/api/v1/webchat/history?with={to}"), Some(&writer))
        .await;
    let texts: Vec<&str> = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["build 1 passed"]);
    let v = api.poll(&writer, json!({"after": "0"})).await;
    assert!(
        events_of(&v, "message").is_empty(),
        "the writer does not get its own post"
    );

    // Listing, the directory, members; a group admin may delete in the group.
    let (_, v) = api.get("/api/v1/webchat/groups", Some(&obs1)).await;
    let g = &v["groups"][0];
    assert_eq!(g["mode"], json!("stream"));
    assert_eq!(g["role"], json!("member"));
    assert_eq!(g["can_post"], json!(false));
    assert_eq!(g["member_count"], json!(3));
    let (_, v) = api
        .get("/api/v1/webchat/directory?q=builds", Some(&outsider))
        .await;
    assert_eq!(v["results"][0]["type"], json!("group"));
    assert_eq!(v["results"][0]["chat_address"], json!(to));
    let (_, v) = api
        .get(
            &format!("/api/v1/webchat/groups/{gid}/members"),
            Some(&outsider),
        )
        .await;
    assert_eq!(
        v["members"].as_array().unwrap().len(),
        3,
        "a public group's members are listed"
    );

    // Private chat group: join requests.
    let pid = make_group(&api, &writer, "Inner circle", "private", "chat").await;
    let (_, v) = api
        .get("/api/v1/webchat/directory?q=inner", Some(&outsider))
        .await;
    assert!(
        v["results"].as_array().unwrap().is_empty(),
        "private groups are not listed"
    );
    let (s, v) = api
        .get(
            &format!("/api/v1/webchat/groups/{pid}/members"),
            Some(&outsider),
        )
        .await;
    assert_error(s, &v, 403, "not_member");
    let (s, v) = api
        .post(
            &format!("/api/v1/webchat/groups/{pid}/join-requests"),
            Some(&outsider),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["pending"], json!(true));
    let (s, v) = api
        .get(
            &format!("/api/v1/webchat/groups/{pid}/join-requests"),
            Some(&outsider),
        )
        .await;
    assert_error(s, &v, 403, "forbidden");
    let (s, v) = api
        .get(
            &format!("/api/v1/webchat/groups/{pid}/join-requests"),
            Some(&writer),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["requests"][0]["chat_address"], json!("outsider"));
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&outsider),
            json!({"to": format!("group:{pid}"), "text": "early"}),
        )
        .await;
    assert_error(s, &v, 403, "not_member");
    let (s, _) = api
        .post_untyped(
            &format!("/api/v1/webchat/groups/{pid}/join-requests/outsider/accept"),
            Some(&writer),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let mid = api
        .send(
            &outsider,
            "outsider",
            &format!("group:{pid}"),
            "thanks for having me",
        )
        .await;
    let v = api.poll(&writer, json!({"after": "0"})).await;
    assert!(
        events_of(&v, "message")
            .iter()
            .any(|m| m["message_id"] == json!(mid))
    );
    // The admin deletes the new member's message in the admin's group.
    let (s, _) = api
        .post_untyped(
            "/api/v1/webchat/delete",
            Some(&writer),
            json!({"message_id": mid}),
        )
        .await;
    assert_eq!(s, 200);
    let v = api.poll(&outsider, json!({"after": "0"})).await;
    assert!(
        events_of(&v, "delete")
            .iter()
            .any(|m| m["message_id"] == json!(mid)),
        "the author hears of it"
    );
    // Reject and leave.
    let (_, _) = api
        .post(
            &format!("/api/v1/webchat/groups/{pid}/join-requests"),
            Some(&obs2),
            json!({}),
        )
        .await;
    let (s, _) = api
        .post_untyped(
            &format!("/api/v1/webchat/groups/{pid}/join-requests/observer-2/reject"),
            Some(&writer),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&obs2),
            json!({"to": format!("group:{pid}"), "text": "?"}),
        )
        .await;
    assert_error(s, &v, 403, "not_member");
    let (s, _) = api
        .post(
            &format!("/api/v1/webchat/groups/{pid}/leave"),
            Some(&outsider),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v, _) = api
        .raw(
            reqwest::Method::DELETE,
            &format!("/api/v1/webchat/groups/{gid}/members/observer-2"),
            Some(&obs1),
            None,
            None,
        )
        .await;
    assert_error(s, &v, 403, "forbidden");
    let (s, _, _) = api
        .raw(
            reqwest::Method::DELETE,
            &format!("/api/v1/webchat/groups/{gid}/members/observer-2"),
            Some(&writer),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    // A removed member keeps the group among their conversations (what they heard stays
    // listed), without the right to post.
    let (_, v) = api.get("/api/v1/webchat/conversations", Some(&obs2)).await;
    let convs = v["conversations"].as_array().unwrap();
    let gone = convs
        .iter()
        .find(|c| c["with"] == json!(to))
        .unwrap_or_else(|| panic!("the group is still listed: {v}"));
    assert_eq!(gone["can_post"], json!(false));
    assert_eq!(gone["last_message"]["text"], json!("build 1 passed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reaches_each_of_200_members_exactly_once() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_CODE_RATE_PER_IP", "0")]);
    let api = relay.api();
    let owner = api.login("owner@example.com", "owner", "human").await;
    let gid = make_group(&api, &owner, "Everyone", "private", "chat").await;
    let mut members = Vec::new();
    for i in 0..199 {
        let addr = format!("member-{i:03}");
        let token = api
            .login(&format!("m{i}@example.com"), &addr, "agent")
            .await;
        let (s, _) = api
            .post(
                &format!("/api/v1/webchat/groups/{gid}/members"),
                Some(&owner),
                json!({"member_address": addr}),
            )
            .await;
        assert_eq!(s, 200);
        members.push(token);
    }
    let (_, v) = api.get("/api/v1/webchat/groups", Some(&owner)).await;
    assert_eq!(v["groups"][0]["member_count"], json!(200));
    let mid = api
        .send(&owner, "owner", &format!("group:{gid}"), "all hands")
        .await;
    for token in &members {
        let v = api.poll(token, json!({"after": "0", "limit": 500})).await;
        let got: Vec<Value> = events_of(&v, "message");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["message_id"], json!(mid));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_reports_are_kept_for_the_operator() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let a = api.login("a@example.com", "spammer", "agent").await;
    let b = api.login("b@example.com", "victim", "human").await;
    let mid = api.send(&a, "spammer", "victim", "buy my stuff").await;
    let (s, _) = api
        .post(
            "/api/v1/webchat/report",
            Some(&b),
            json!({"message_id": mid, "reason": "spam"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .post(
            "/api/v1/webchat/report",
            Some(&b),
            json!({"chat_address": "spammer", "reason": "keeps at it"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = api
        .post("/api/v1/webchat/report", Some(&b), json!({"reason": "?"}))
        .await;
    assert_error(s, &v, 400, "invalid_request");
    let out = sb
        .relay_cmd()
        .args(["relay", "reports", "--json", "--data-dir"])
        .arg(&relay.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["reporter"], json!("victim"));
    assert_eq!(rows[0]["message_author"], json!("spammer"));
    assert_eq!(rows[0]["message_text"], json!("buy my stuff"));
    assert_eq!(rows[1]["chat_address"], json!("spammer"));
    let out = sb
        .relay_cmd()
        .args(["relay", "reports", "--data-dir"])
        .arg(&relay.data_dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("victim reported message"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sends_files_and_the_daemon_hands_the_hook_a_local_copy() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let human = api.login("human@example.com", "user-one", "human").await;
    let r = relay.url.as_str();
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(sb
        .cmd()
        .args([
            "persona",
            "agent@example.com",
            "--name",
            "Agent",
            "--chat-address",
            "agent-1",
            "--relay",
            r,
        ])
        .output()
        .unwrap());

    // The hook records its stdin record and the attachment env.
    let seen = sb.path().join("seen");
    std::fs::create_dir_all(&seen).unwrap();
    let hook = sb.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\ncat > {s}/$GTS_WEBCHAT_MESSAGE_ID.json\nprintf '%s' \"$GTS_WEBCHAT_ATTACHMENTS\" > {s}/$GTS_WEBCHAT_MESSAGE_ID.env\n", s = seen.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(sb
        .cmd()
        .args([
            "daemon",
            "start",
            "--task",
            "files",
            "--as",
            "agent-1",
            "--on-message",
        ])
        .arg(&hook)
        .output()
        .unwrap());

    // 001's line: "Attach Files, Images, GIFs" (a tiny GIF), with the program replaced.
    let gif: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    std::fs::write(sb.path().join("demo.gif"), gif).unwrap();
    let out = ok(sb
        .cmd()
        .args([
            "cli",
            "ai-claude@example.com",
            "--name",
            "Claude Test Side",
            "--chat-address",
            "claude-test",
            "--relay",
            r,
            "--to",
            "agent-1",
            "--file",
            "./demo.gif",
            "--caption",
            "GIF test",
        ])
        .output()
        .unwrap());
    assert!(out.contains("sent msg_"), "{out}");
    // And a voice clip: audio defaults to voice; --attachment-kind voice forces it.
    std::fs::write(
        sb.path().join("clip.webm"),
        b"\x1aE\xdf\xa3 not really webm",
    )
    .unwrap();
    ok(sb
        .cmd()
        .args([
            "cli",
            "ai-claude@example.com",
            "--chat-address",
            "claude-test",
            "--relay",
            r,
            "--to",
            "agent-1",
            "--file",
            "./clip.webm",
            "--attachment-kind",
            "voice",
            "--caption",
            "Voice reply",
        ])
        .output()
        .unwrap());
    // Native form, to a person, as a plain file.
    ok(sb
        .cmd()
        .args([
            "send",
            "--as",
            "claude-test",
            "--to",
            "user-one",
            "--file",
            "./clip.webm",
            "--attachment-kind",
            "file",
        ])
        .output()
        .unwrap());
    let v = api.poll(&human, json!({"after": "0"})).await;
    assert_eq!(
        events_of(&v, "message")[0]["attachments"][0]["kind"],
        json!("file")
    );

    wait_for(Duration::from_secs(30), "two hook runs", || {
        let files: Vec<_> = std::fs::read_dir(&seen)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "env"))
            .collect();
        (files.len() == 2).then_some(())
    });
    let inbox: Vec<Value> =
        std::fs::read_to_string(sb.path().join("state/gts-webchat/tasks/files/inbox.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let gif_rec = &inbox[0];
    assert_eq!(gif_rec["text"], json!("GIF test"));
    assert_eq!(gif_rec["attachments"][0]["kind"], json!("image"));
    assert_eq!(gif_rec["attachments"][0]["mime"], json!("image/gif"));
    let local = gif_rec["attachment_paths"][0].as_str().unwrap();
    assert!(local.contains("/attachments/"), "{local}");
    assert_eq!(
        std::fs::read(local).unwrap(),
        gif,
        "the daemon saved the same bytes"
    );
    let id = gif_rec["message_id"].as_str().unwrap();
    let stdin: Value = serde_json::from_str(
        std::fs::read_to_string(seen.join(format!("{id}.json")))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(
        stdin["attachment_paths"][0],
        json!(local),
        "the hook's stdin has the path"
    );
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(seen.join(format!("{id}.env"))).unwrap())
            .unwrap();
    assert_eq!(env[0]["path"], json!(local));
    assert_eq!(env[0]["name"], json!("demo.gif"));
    assert_eq!(inbox[1]["attachments"][0]["kind"], json!("voice"));
    assert_eq!(inbox[1]["text"], json!("Voice reply"));

    // tail shows the link and the saved copy (and, last, that the clip got no caption: this
    // relay has no speech-to-text engine).
    let out = ok(sb
        .cmd()
        .args(["tail", "--task", "files", "-n", "3"])
        .output()
        .unwrap());
    assert!(
        out.contains("image demo.gif (image/gif") && out.contains("/api/v1/webchat/files/file_"),
        "{out}"
    );
    assert!(out.contains("saved: "), "{out}");
    assert!(out.contains("no caption for"), "{out}");
    ok(sb
        .cmd()
        .args(["daemon", "stop", "--task", "files"])
        .output()
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_language_prefs_profile_and_cors() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bot = api.login("bot@example.com", "bot", "agent").await;
    let cy = api.login("cy@example.com", "cyd", "human").await;
    api.send(&bot, "bot", "ana", "one").await;
    let two = api.send(&bot, "bot", "ana", "two").await;
    api.send(&ana, "ana", "cyd", "hi cy").await;
    let gid = make_group(&api, &ana, "Team", "private", "chat").await;

    let (s, v) = api.get("/api/v1/webchat/conversations", Some(&ana)).await;
    assert_eq!(s, 200, "{v}");
    let convs = v["conversations"].as_array().unwrap();
    let with: Vec<&str> = convs.iter().map(|c| c["with"].as_str().unwrap()).collect();
    assert_eq!(
        with,
        vec!["cyd", "bot", &format!("group:{gid}")],
        "newest first; a quiet group last"
    );
    let bot_conv = &convs[1];
    assert_eq!(bot_conv["unread"], json!(2));
    assert_eq!(bot_conv["kind"], json!("agent"));
    assert_eq!(bot_conv["display_name"], json!("bot"));
    assert_eq!(bot_conv["last_message"]["text"], json!("two"));
    assert_eq!(
        convs[0]["unread"],
        json!(0),
        "your own messages are not unread"
    );
    assert_eq!(convs[2]["type"], json!("group"));
    assert_eq!(convs[2]["can_post"], json!(true));
    // Reading clears the count; the sender's message then shows read.
    let (s, _) = api
        .post(
            "/api/v1/webchat/read",
            Some(&ana),
            json!({"message_id": two}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = api.get("/api/v1/webchat/conversations", Some(&ana)).await;
    assert_eq!(v["conversations"][1]["unread"], json!(1));
    let (_, v) = api
        .get("/api/v1/webchat/history?with=ana", Some(&bot))
        .await;
    assert_eq!(v["messages"][1]["read"], json!(true));
    assert!(
        v["messages"][0].get("read").is_none(),
        "unread messages carry no read flag"
    );

    // Language prefs.
    let (s, v) = api.get("/api/v1/webchat/language-prefs", Some(&ana)).await;
    assert_eq!(s, 200);
    assert_eq!(v["receive_language"], Value::Null);
    let (s, v, _) = api
        .raw(
            reqwest::Method::PUT,
            "/api/v1/webchat/language-prefs",
            Some(&ana),
            Some(br#"{"receive_language":"es"}"#.to_vec()),
            Some("application/json"),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = api.get("/api/v1/webchat/language-prefs", Some(&ana)).await;
    assert_eq!(v["receive_language"], json!("es"));
    let (s, v, _) = api
        .raw(
            reqwest::Method::PUT,
            "/api/v1/webchat/language-prefs",
            Some(&ana),
            Some(br#"{"receive_language":"not a language"}"#.to_vec()),
            None,
        )
        .await;
    assert_error(s, &v, 400, "invalid_request");

    // Profile: hidden from the directory, renamed.
    let (s, _, _) = api
        .raw(
            reqwest::Method::PUT,
            "/api/v1/webchat/profile",
            Some(&cy),
            Some(br#"{"public_visible":false,"display_name":"Cy R."}"#.to_vec()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = api.get("/api/v1/webchat/directory?q=cyd", Some(&ana)).await;
    assert!(v["results"].as_array().unwrap().is_empty(), "hidden: {v}");
    let (_, v) = api.get("/api/v1/webchat/me", Some(&cy)).await;
    assert_eq!(v["display_name"], json!("Cy R."));
    assert_eq!(v["public_visible"], json!(false));

    // Which web origins may call the relay is tested in tests/security.rs.

    // The web app's files come from the binary, with a strict CSP.
    let (s, _, h) = api
        .raw(
            reqwest::Method::GET,
            "/app/webchat/chat.html",
            None,
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    for asset in ["/app/webchat/app.js", "/app/webchat/app.css"] {
        let (s, _, _) = api.raw(reqwest::Method::GET, asset, None, None, None).await;
        assert_eq!(s, 200, "{asset}");
    }
}

/// Every endpoint that acts on something of someone else's, called with another user's valid
/// token: refused with the right code, and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_token_is_refused_everywhere() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let alice = api.login("alice@example.com", "alice", "human").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;
    let _carol = api.login("carol@example.com", "carol", "human").await;
    let mid = api.send(&alice, "alice", "carol", "alice to carol").await;
    let private = make_group(&api, &alice, "Alice's", "private", "chat").await;
    let stream = make_group(&api, &alice, "Alice's stream", "public", "stream").await;
    for g in [&private, &stream] {
        let (s, _) = api
            .post(
                &format!("/api/v1/webchat/groups/{g}/members"),
                Some(&alice),
                json!({"member_address": "carol"}),
            )
            .await;
        assert_eq!(s, 200);
    }
    let (s, _) = api
        .post(
            &format!("/api/v1/webchat/groups/{stream}/join"),
            Some(&bob),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "bob observes the public stream group");

    let cases: Vec<(reqwest::Method, String, Value, u16, &str)> = vec![
        (
            reqwest::Method::POST,
            "/api/v1/messages".into(),
            json!({"source": "alice", "to": "carol", "text": "spoof"}),
            403,
            "sender_mismatch",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webchat/poll".into(),
            json!({"chat_address": "alice"}),
            403,
            "address_mismatch",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webchat/presence".into(),
            json!({"chat_address": "alice", "visible": false}),
            403,
            "address_mismatch",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webchat/edit".into(),
            json!({"message_id": mid, "text": "hijacked"}),
            403,
            "forbidden",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webchat/delete".into(),
            json!({"message_id": mid}),
            403,
            "forbidden",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/webchat/read".into(),
            json!({"message_id": mid}),
            403,
            "forbidden",
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/webchat/history?with=group:{private}"),
            Value::Null,
            403,
            "not_member",
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/webchat/groups/{private}/members"),
            Value::Null,
            403,
            "not_member",
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/webchat/groups/{private}/members"),
            json!({"member_address": "bob"}),
            403,
            "forbidden",
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/webchat/groups/{private}/members/carol"),
            Value::Null,
            403,
            "forbidden",
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/webchat/groups/{private}/join-requests"),
            Value::Null,
            403,
            "forbidden",
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/webchat/groups/{private}/join-requests/carol/accept"),
            json!({}),
            403,
            "forbidden",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/messages".into(),
            json!({"to": format!("group:{private}"), "text": "let me in"}),
            403,
            "not_member",
        ),
        (
            reqwest::Method::POST,
            "/api/v1/messages".into(),
            json!({"to": format!("group:{stream}"), "text": "observer writes"}),
            403,
            "stream_read_only",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let bytes = (!body.is_null()).then(|| body.to_string().into_bytes());
        let (s, v, _) = api
            .raw(method.clone(), &path, Some(&bob), bytes, None)
            .await;
        assert_eq!(s, status, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], json!(code), "{method} {path}: {v}");
    }
    // Nothing changed.
    let (_, v) = api
        .get("/api/v1/webchat/history?with=alice", Some(&_carol))
        .await;
    assert_eq!(texts(&v), vec!["alice to carol"]);
    let (_, v) = api
        .get(
            &format!("/api/v1/webchat/groups/{private}/members"),
            Some(&alice),
        )
        .await;
    assert_eq!(v["members"].as_array().unwrap().len(), 2, "{v}");
    let (_, v) = api
        .get(
            &format!("/api/v1/webchat/history?with=group:{stream}"),
            Some(&alice),
        )
        .await;
    assert!(
        v["messages"].as_array().unwrap().is_empty(),
        "the observer's post was not stored"
    );
    let log = relay.log_text();
    for t in [&alice, &bob] {
        assert!(!log.contains(t.trim_start_matches("pct_")));
    }
}

/// Sends that arrive together are stored together (the PostgreSQL backend batches them into
/// one transaction, SQLite's writer commits them together): each still gets its own answer,
/// an unknown recipient fails only its own send, and a client id sent twice stores once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_arriving_together_each_get_their_own_answer() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let cy = api.login("cyd@example.com", "cyd", "agent").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;
    const N: usize = 120;
    let sends = (0..N).map(|i| {
        let (api, token, from) = if i % 2 == 0 {
            (api.clone(), ana.clone(), "ana")
        } else {
            (api.clone(), cy.clone(), "cyd")
        };
        async move {
            let to = if i % 10 == 7 { "nobody-here" } else { "bob" };
            // Sends 20 and 22 (both ana's) carry the same client id.
            let client = if i == 20 || i == 22 {
                "same-retry".to_string()
            } else {
                format!("c{i}")
            };
            let body = json!({"phone_id": "pchat_free_phone", "channel": "pchat", "source": from,
                              "to": to, "text": format!("m{i}"), "client_message_id": client});
            (i, api.post("/api/v1/messages", Some(&token), body).await)
        }
    });
    let answers = futures::future::join_all(sends).await;
    let mut stored = Vec::new();
    let mut same_retry = Vec::new();
    for (i, (s, v)) in answers {
        if i % 10 == 7 {
            assert_error(s, &v, 404, "unknown_recipient");
            continue;
        }
        assert_eq!(s, 200, "send {i}: {v}");
        let id = v["message_id"].as_str().expect("message id").to_string();
        if i == 20 || i == 22 {
            same_retry.push((id, v["duplicate"].as_bool().unwrap_or(false)));
        } else {
            assert_ne!(v["duplicate"], json!(true), "send {i}: {v}");
            stored.push(id);
        }
    }
    assert_eq!(same_retry.len(), 2);
    assert_eq!(
        same_retry[0].0, same_retry[1].0,
        "one message for one client id"
    );
    assert_eq!(
        same_retry.iter().filter(|(_, dup)| *dup).count(),
        1,
        "{same_retry:?}"
    );
    stored.push(same_retry[0].0.clone());
    let v = api.poll(&bob, json!({"after": "0", "limit": 500})).await;
    let got: Vec<String> = events_of(&v, "message")
        .iter()
        .map(|m| m["message_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut want = stored.clone();
    want.sort();
    let mut seen = got.clone();
    seen.sort();
    assert_eq!(seen, want, "bob has every stored message exactly once");
    let cursors: Vec<u64> = v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            m["cursor"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .expect("a cursor")
        })
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    // Ana's 60 sends to bob, two of them one message.
    assert_eq!(api.history_texts(&ana, "bob").await.len(), 59);
}
