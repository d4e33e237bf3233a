//! The web app end to end: a real relay and daemon, driven from a real headless Chromium by
//! tests/web/e2e.mjs (playwright-core). Screenshots land in test-artifacts/web/.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn persona_url(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.cmd().args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["gui_url"].as_str().expect("gui url").to_string()
}

fn web_dir() -> PathBuf {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/web` (tests/run.sh does it)"
    );
    assert!(
        chromium().exists(),
        "no Chromium at {}: install Debian's chromium package (apt-get install chromium) or set CHROMIUM",
        chromium().display()
    );
    web
}

fn artifacts() -> PathBuf {
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts/web");
    std::fs::create_dir_all(&artifacts).unwrap();
    artifacts
}

/// Runs a browser script with `env`; panics with its output and the relay log's tail when it
/// fails, returns its stdout when it passes.
fn run_script(script: &str, relay: &Relay, env: &[(&str, &str)]) -> String {
    let web = web_dir();
    let out = Command::new("node")
        .arg(web.join(script))
        .current_dir(&web)
        .env("RELAY_URL", &relay.url)
        .env("APP_URL", format!("{}/app/webchat/chat.html", relay.url))
        .env("ARTIFACTS", artifacts())
        .env("CHROMIUM", chromium())
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::null())
        .output()
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{stderr}\nrelay log tail:\n{}",
        {
            let log = relay.log_text();
            log.lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        }
    );
    stdout
}

fn human_url(sb: &Sandbox, relay: &Relay, email: &str, name: &str, address: &str) -> String {
    persona_url(
        sb,
        &[
            "persona",
            email,
            "--name",
            name,
            "--chat-address",
            address,
            "--kind",
            "human",
            "--relay",
            &relay.url,
        ],
    )
}

/// Settings → Advanced and conversations over the PhoneRelay bridge (tests/web/bridge.mjs),
/// against the bridge double.
#[test]
fn web_app_sends_over_the_phone_bridge() {
    let site = common::bridge::Site::start(&[]);
    let dora = human_url(&site.sb, &site.relay, "dora@example.com", "Dora", "dora");
    let made = common::bridge::create_key(&site.sb, &site.relay, "dora", &["phone-1"]);
    let mode = site.bridge.mode.display().to_string();
    let out = run_script(
        "bridge.mjs",
        &site.relay,
        &[
            ("DORA_URL", &dora),
            ("BRIDGE_KEY", made["key"].as_str().unwrap()),
            ("PHONE_ID", "phone-1"),
            ("BRIDGE_MODE", &mode),
        ],
    );
    eprintln!("{out}");
    // What the bridge got: both messages, signed, to the number, from dora; then the refused one.
    let texts: Vec<String> = (0..3)
        .map(|_| {
            let got = site.bridge.next();
            assert_eq!(got["verified"], true, "{got}");
            assert_eq!(got["body"]["to"], "+15551230001", "{got}");
            assert_eq!(got["body"]["from"], "dora", "{got}");
            assert_eq!(got["body"]["phone_id"], "phone-1", "{got}");
            got["body"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        texts,
        ["Your table is ready", "See you soon", "Are you there?"]
    );
}

/// Pages of other origins, rebound names and hostile links (tests/web/attack.mjs).
#[test]
fn web_pages_and_links_cannot_take_over_or_move_a_session() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let ben = human_url(&sb, &relay, "ben@example.com", "Ben", "ben");
    let mallory = human_url(&sb, &relay, "mallory@example.com", "Mallory", "mallory");
    let out = run_script(
        "attack.mjs",
        &relay,
        &[("BEN_URL", &ben), ("MALLORY_URL", &mallory)],
    );
    eprintln!("{out}");
}

#[test]
fn web_app_in_headless_chromium() {
    let sb = Sandbox::new();
    // With the offline voice engines (GTSW_VOICE_DIR), a voice clip step runs too.
    let voice_dir = std::env::var("GTSW_VOICE_DIR")
        .ok()
        .filter(|d| std::path::Path::new(d).join("venv/bin/python").is_file());
    let clip = sb.path().join("report.wav");
    let voice = voice_dir.is_some()
        && Command::new("espeak-ng")
            .args(["-v", "en-us", "-w"])
            .arg(&clip)
            .arg("the report is ready")
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        voice || std::env::var("GTSW_REQUIRE_VOICE").as_deref() != Ok("1"),
        "GTSW_REQUIRE_VOICE=1 but the voice engines or espeak-ng are missing"
    );
    let mut env = vec![("PCHAT_MAX_UPLOAD_MB", "1")];
    if let Some(d) = voice_dir.as_deref() {
        env.push(("PCHAT_VOICE_DIR", d));
    }
    let relay = Relay::start_with(&sb, &env);
    let r = relay.url.as_str();

    // An AI session the person will talk to: a daemon whose hook echoes back.
    let out = sb
        .cmd()
        .args([
            "persona",
            "ai-codex@example.com",
            "--name",
            "Codex Test Side",
            "--chat-address",
            "codex-test",
            "--computer",
            "codex",
            "--session-name",
            "live support",
            "--relay",
            r,
            "--quiet-url",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hook = sb.path().join("echo.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncat >/dev/null\nprintf 'echo: %s\\n' \"$GTS_WEBCHAT_TEXT\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sb
        .cmd()
        .args([
            "daemon",
            "start",
            "--task",
            "web",
            "--as",
            "codex-test",
            "--reply",
            "--on-message",
        ])
        .arg(&hook)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // People who sign in through auto-login URLs.
    let ben_url = persona_url(
        &sb,
        &[
            "persona",
            "ben@example.com",
            "--name",
            "Ben",
            "--chat-address",
            "ben",
            "--kind",
            "human",
            "--relay",
            r,
        ],
    );
    let cara_url = persona_url(
        &sb,
        &[
            "persona",
            "cara@example.com",
            "--name",
            "Cara",
            "--chat-address",
            "cara",
            "--kind",
            "human",
            "--relay",
            r,
        ],
    );

    let fixtures = sb.path().display().to_string();
    let clip_path = clip.display().to_string();
    let mut script_env = vec![
        ("BEN_URL", ben_url.as_str()),
        ("CARA_URL", cara_url.as_str()),
        ("FIXTURES", fixtures.as_str()),
    ];
    if voice {
        script_env.push(("VOICE_CLIP", clip_path.as_str()));
    }
    let out = run_script("e2e.mjs", &relay, &script_env);
    let _ = sb.cmd().args(["daemon", "stop", "--task", "web"]).output();
    eprintln!("{out}");
    let artifacts = artifacts();
    for shot in [
        "login.png",
        "directory.png",
        "conversation.png",
        "stream-observer.png",
        "phone-list.png",
        "phone-conversation.png",
    ] {
        assert!(artifacts.join(shot).is_file(), "screenshot {shot} missing");
    }
}
