//! `relay backup` and `relay restore` as an operator runs them: a backup taken while senders
//! keep writing, restored on a fresh machine (data dir) where the relay starts with the same
//! identities, sessions, messages and files; a running relay's data is never overwritten, and
//! one database serves one relay.

mod common;

use common::*;
use serde_json::{Value, json};

fn relay_cmd(sb: &Sandbox, data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let dir = data_dir.display().to_string();
    let mut all = vec!["relay", "--data-dir", dir.as_str()];
    all.extend_from_slice(args);
    gw(sb, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_relay_writes_restores_on_a_fresh_machine() {
    let sb = Sandbox::new();
    let mut relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;
    for i in 0..30 {
        api.send(&bob, "bob", "ana", &format!("before {i}")).await;
    }
    let bytes = b"quarterly numbers\n".repeat(1000);
    let (st, up) = api
        .upload(&bob, "report.txt", bytes.clone(), Some("text/plain"))
        .await;
    assert_eq!(st, 200, "{up}");
    let file_id = up["file_id"].as_str().unwrap().to_string();
    let (st, v) = api
        .post(
            "/api/v1/messages",
            Some(&bob),
            json!({"to": "ana", "text": "the report", "attachments": [{"file_id": file_id}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");

    // Senders keep writing while the backup runs.
    let writer = {
        let (api, bob) = (relay.api(), bob.clone());
        tokio::spawn(async move {
            for i in 0..300 {
                api.send(&bob, "bob", "ana", &format!("during {i}")).await;
            }
        })
    };
    let dest = sb.path().join("backups/2026-12-02");
    let out = relay_cmd(
        &sb,
        &relay.data_dir,
        &["backup", dest.to_str().unwrap(), "--json"],
    );
    let made: Value = serde_json::from_str(ok(&out).trim()).unwrap();
    assert!(made["messages"].as_i64().unwrap() >= 31, "{made}");
    assert_eq!(made["identities"], 2);
    assert_eq!(made["upload_files"], 1);
    assert!(dest.join("manifest.json").is_file());
    writer.await.unwrap();

    // A running relay's data is not overwritten, and a second relay cannot share it.
    let o = relay_cmd(
        &sb,
        &relay.data_dir,
        &["restore", dest.to_str().unwrap(), "--force"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains("another relay"), "{}", err(&o));
    let o = relay_cmd(&sb, &relay.data_dir, &["--port", "0"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("another relay"), "{}", err(&o));
    // Backing up into a directory that holds something is refused.
    let o = relay_cmd(&sb, &relay.data_dir, &["backup", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    relay.terminate();

    // A fresh machine: restore, start, and everything from before the backup is there.
    let fresh = Sandbox::new();
    let fresh_dir = fresh.path().join("relay-data");
    ok(&relay_cmd(
        &fresh,
        &fresh_dir,
        &["restore", dest.to_str().unwrap()],
    ));
    let restored = Relay::start(&fresh);
    let api = restored.api();
    // Ana's session survived the restore (history answers 200 to her token).
    let texts = api.history_texts(&ana, "bob").await;
    assert_eq!(texts.len() as i64, made["messages"].as_i64().unwrap());
    assert_eq!(texts[0], "before 0");
    assert!(texts.iter().any(|t| t == "the report"));
    let (st, got, _) = api
        .raw(
            reqwest::Method::GET,
            &format!("/api/v1/webchat/files/{file_id}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(got.as_str().unwrap().len(), bytes.len());
    // Sending goes on from where the backup left off.
    api.send(&ana, "ana", "bob", "back in business").await;
    drop(restored);

    // Over existing data only with --force, which keeps the old database beside it.
    let mut restored = Relay::start(&fresh);
    restored.terminate();
    let o = relay_cmd(&fresh, &fresh_dir, &["restore", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    ok(&relay_cmd(
        &fresh,
        &fresh_dir,
        &["restore", dest.to_str().unwrap(), "--force"],
    ));
    let kept = std::fs::read_dir(&fresh_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("before-restore"));
    assert!(kept, "the replaced database is kept");
    // Not a backup: a clear refusal.
    let o = relay_cmd(
        &fresh,
        &fresh_dir,
        &["restore", sb.path().to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}
