//! The PhoneRelay bridge double (tests/callbacks/receiver.py: checks every signature with the
//! official Standard Webhooks library and answers as its mode file says), the relay wired to
//! it, and API keys made with the CLI as an operator does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{Api, Background, Relay, Sandbox, gw, ok};

const WAIT: Duration = Duration::from_secs(30);
/// The bridge's signing secret (the Standard Webhooks specification's example).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn venv_python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    assert!(
        py.exists(),
        "tests/.venv is missing: run tests/run.sh (it installs tests/bridge/requirements.txt)"
    );
    py
}

/// A helper script of ours under tests/, run with the test venv, after it printed `PORT n`.
pub fn start_py(sb: &Sandbox, script: &str, args: &[&Path], name: &str) -> (Background, u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(venv_python());
    cmd.arg(root.join(script)).args(args);
    let bg = Background::start_cmd(cmd, Vec::<String>::new(), sb.path(), name);
    let line = bg.expect_line("PORT ", WAIT);
    let port = line.trim_start_matches("PORT ").trim().parse().unwrap();
    (bg, port)
}

/// The bridge double: verifies signatures with SECRET, answers as its mode file says.
pub struct BridgeDouble {
    pub bg: Background,
    pub url: String,
    pub mode: PathBuf,
}

impl BridgeDouble {
    pub fn start(sb: &Sandbox) -> BridgeDouble {
        let secret = sb.path().join("bridge.secret");
        let mode = sb.path().join("bridge.mode");
        std::fs::write(&secret, SECRET).unwrap();
        let (bg, port) = start_py(
            sb,
            "tests/callbacks/receiver.py",
            &[&secret, &mode],
            "bridge",
        );
        BridgeDouble {
            bg,
            url: format!("http://127.0.0.1:{port}/outbound"),
            mode,
        }
    }
    pub fn answer(&self, mode: &str) {
        std::fs::write(&self.mode, mode).unwrap();
    }
    pub fn next(&self) -> Value {
        serde_json::from_str(&self.bg.expect_line("{", WAIT)).expect("bridge line")
    }
}

/// A relay with the bridge double as its bridge.
pub struct Site {
    pub sb: Sandbox,
    pub bridge: BridgeDouble,
    pub relay: Relay,
    pub api: Api,
    pub env: Vec<(&'static str, String)>,
}

impl Site {
    pub fn start(extra: &[(&'static str, &str)]) -> Site {
        let sb = Sandbox::new();
        let bridge = BridgeDouble::start(&sb);
        let env = bridge_env(&bridge.url);
        let mut with = refs(&env);
        with.extend_from_slice(extra);
        let relay = Relay::start_with(&sb, &with);
        let api = relay.api();
        Site {
            sb,
            bridge,
            relay,
            api,
            env,
        }
    }
}

pub fn bridge_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PHONE_RELAY_BRIDGE_URL", url.to_string()),
        ("PHONE_RELAY_BRIDGE_SECRET", SECRET.to_string()),
        ("PCHAT_CALLBACK_BACKOFF_MS", "100".to_string()),
    ]
}

pub fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `relay keys create` with the CLI, as an operator does; the key it printed once.
pub fn create_key(sb: &Sandbox, relay: &Relay, owner: &str, phone_ids: &[&str]) -> Value {
    let dir = relay.data_dir.display().to_string();
    let mut args = vec![
        "relay",
        "--data-dir",
        &dir,
        "keys",
        "create",
        "--name",
        "test bridge",
        "--owner",
        owner,
        "--json",
    ];
    for p in phone_ids {
        args.extend(["--phone-id", p]);
    }
    let v: Value = serde_json::from_str(ok(&gw(sb, &args)).trim()).expect("keys create --json");
    assert!(v["key"].as_str().unwrap().starts_with("prk_"), "{v}");
    v
}
