//! The real AI host CLIs, installed by tests/hosts/install.sh (GTSW_HOSTS_BIN names their bin
//! folders), each configured in a test's sandbox to talk only to the local model server.

use std::path::PathBuf;

use super::Sandbox;
use super::model::ModelServer;

/// Folders holding the host programs: GTSW_HOSTS_BIN (colon-separated), then PATH.
pub fn bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("GTSW_HOSTS_BIN")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// PATH for the daemon and its hooks: the host folders first.
pub fn path_with_hosts() -> String {
    std::env::join_paths(bin_dirs())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn installed(program: &str) -> bool {
    bin_dirs().iter().any(|d| d.join(program).is_file())
}

/// Whether every host must be present (CI sets GTSW_REQUIRE_HOSTS=1 after installing them).
pub fn required() -> bool {
    std::env::var("GTSW_REQUIRE_HOSTS").as_deref() == Ok("1")
}

/// How one host is pointed at the model server: its environment and extra arguments.
pub struct HostSetup {
    pub env: Vec<(String, String)>,
    pub runner_args: Vec<String>,
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Configures `preset` in the sandbox (its HOME and XDG dirs) for the model server.
pub fn setup(preset: &str, sb: &Sandbox, model: &ModelServer) -> HostSetup {
    let home = sb.path().join("home");
    let url = &model.url;
    let mut env: Vec<(String, String)> = vec![("PATH".into(), path_with_hosts())];
    let mut runner_args = Vec::new();
    let mut set = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
    match preset {
        "codex" => {
            let codex_home = sb.path().join("codex-home");
            write(
                codex_home.join("config.toml"),
                &format!(
                    r#"model = "test-model"
model_provider = "local"
check_for_update_on_startup = false
[analytics]
enabled = false
[model_providers.local]
name = "local"
base_url = "{url}/v1"
wire_api = "responses"
env_key = "LOCAL_MODEL_KEY"
request_max_retries = 0
stream_max_retries = 0
"#
                ),
            );
            set("CODEX_HOME", &codex_home.display().to_string());
            set("LOCAL_MODEL_KEY", "local-test-key");
        }
        "claude" => {
            set("ANTHROPIC_BASE_URL", url);
            set("ANTHROPIC_API_KEY", "sk-local-test-key");
            for k in [
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
                "DISABLE_TELEMETRY",
                "DISABLE_AUTOUPDATER",
                "DISABLE_ERROR_REPORTING",
            ] {
                set(k, "1");
            }
            set("CLAUDE_CODE_MAX_RETRIES", "0");
        }
        "gemini" => {
            write(
                home.join(".gemini/settings.json"),
                r#"{"security":{"auth":{"selectedType":"gemini-api-key"}},"privacy":{"usageStatisticsEnabled":false},"telemetry":{"enabled":false},"general":{"disableAutoUpdate":true}}"#,
            );
            set("GEMINI_API_KEY", "local-test-key");
            set("GOOGLE_GEMINI_BASE_URL", url);
            // A named model: "auto" first asks a router model, which the test server is not.
            runner_args.extend(["-m".to_string(), "gemini-2.5-flash".to_string()]);
        }
        "qwen" => {
            write(
                home.join(".qwen/settings.json"),
                r#"{"security":{"auth":{"selectedType":"openai"}},"privacy":{"usageStatisticsEnabled":false},"telemetry":{"enabled":false},"general":{"disableAutoUpdate":true}}"#,
            );
            set("OPENAI_BASE_URL", &format!("{url}/v1"));
            set("OPENAI_API_KEY", "local-test-key");
            set("OPENAI_MODEL", "test-model");
        }
        "opencode" => {
            write(
                sb.path().join("config/opencode/opencode.json"),
                &format!(
                    r#"{{"$schema":"https://opencode.ai/config.json",
 "provider":{{"local":{{"npm":"@ai-sdk/openai-compatible","name":"Local","options":{{"baseURL":"{url}/v1","apiKey":"local-test-key"}},"models":{{"test-model":{{"name":"Test"}}}}}}}},
 "model":"local/test-model","autoupdate":false,"share":"disabled"}}"#
                ),
            );
        }
        "copilot" => {
            set("COPILOT_OFFLINE", "true");
            set("COPILOT_PROVIDER_BASE_URL", &format!("{url}/v1"));
            set("COPILOT_PROVIDER_API_KEY", "local-test-key");
            set("COPILOT_MODEL", "test-model");
        }
        "aider" => {
            set("OPENAI_API_BASE", &format!("{url}/v1"));
            set("OPENAI_API_KEY", "local-test-key");
            set("LITELLM_LOCAL_MODEL_COST_MAP", "True");
            runner_args.extend(["--model".to_string(), "openai/test-model".to_string()]);
        }
        other => panic!("no test setup for host {other}"),
    }
    HostSetup { env, runner_args }
}
