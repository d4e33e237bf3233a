//! The documentation cannot rot: every ```sh block in docs/ runs here, in order, in a fresh
//! HOME with the real binary on PATH, and must succeed. Port 5110 in a block means the test's
//! own relay port. Fence info words say how a block runs:
//!
//! - `sh`: run in the file's shell (variables carry over to later blocks).
//! - `sh server`: started in the background; the test waits until `$RELAY_URL/health` answers,
//!   and at the end the server must still be running.
//! - `sh root`, `sh remote`, `sh network`, `sh host`, `sh slow`: not run (they change the
//!   machine, need another machine, download, need an AI host account, or take minutes),
//!   only checked to be valid shell. Each is a promise the surrounding text explains.
//! - `<!-- sh: COMMAND -->` is a step the reader does not need to see (a wait, a check).
//!
//! docs/api-for-ai-and-devs.md and docs/features.md hold generated parts (from the relay's
//! OpenAPI document and the CLI's own definitions); `GTSW_BLESS_DOCS=1` rewrites them.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// The seed's documentation set, and ours.
const DOCS: &[&str] = &[
    "index.md",
    "high-level-features.md",
    "how-to.md",
    "features.md",
    "private-relay.md",
    "private-server-install.md",
    "ai-session-quickstart.md",
    "ai-connection.md",
    "api-for-ai-and-devs.md",
    "watchdog.md",
    "missing-features.md",
    "benchmarks.md",
];

const NOT_RUN: &[&str] = &["root", "remote", "network", "host", "slow"];

#[derive(Debug, PartialEq)]
enum Kind {
    Run,
    Server,
    Hidden,
    NotRun,
}

#[derive(Debug)]
struct Block {
    line: usize,
    kind: Kind,
    text: String,
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

fn read_doc(name: &str) -> String {
    let path = docs_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shell blocks of one markdown file, in order. Panics on a shell fence under another name
/// (```bash, ```console…), so nothing dodges the test by its spelling.
fn shell_blocks(name: &str, md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(cmd) = trimmed
            .strip_prefix("<!-- sh:")
            .and_then(|r| r.strip_suffix("-->"))
        {
            out.push(Block {
                line: i + 1,
                kind: Kind::Hidden,
                text: cmd.trim().to_string(),
            });
            continue;
        }
        let Some(info) = trimmed.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push_str(l.get(indent..).unwrap_or(l.trim_start()));
            body.push('\n');
        }
        assert!(
            !matches!(lang, "bash" | "shell" | "console" | "zsh" | "shell-session"),
            "{name}:{}: write shell commands as ```sh so the docs test runs them",
            i + 1
        );
        if lang != "sh" {
            assert!(
                !body
                    .lines()
                    .any(|l| l.starts_with("gts-webchat ") || l.starts_with("$ ")),
                "{name}:{}: a command line in a ```{lang} block; use ```sh",
                i + 1
            );
            continue;
        }
        let kind = match rest.as_slice() {
            [] => Kind::Run,
            ["server"] => Kind::Server,
            [why] if NOT_RUN.contains(why) => Kind::NotRun,
            other => panic!("{name}:{}: unknown sh block kind {other:?}", i + 1),
        };
        out.push(Block {
            line: i + 1,
            kind,
            text: body,
        });
    }
    out
}

/// One bash script for a whole file: blocks run in order in one shell, servers in their own
/// process groups, killed at the end (and must have survived until then).
fn script(name: &str, blocks: &[Block], port: u16) -> String {
    let mut s = String::from(
        r#"set -euo pipefail
__servers=()
__cleanup() {
    for p in "${__servers[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap __cleanup EXIT
__at() { printf '%s\n' "$1" > "$__DOCS_AT"; }
__wait_health() {
    local i
    for i in $(seq 600); do
        if curl -fsS -o /dev/null "$RELAY_URL/health" 2>/dev/null; then return 0; fi
        if ! kill -0 "$1" 2>/dev/null; then echo "the server exited:"; tail -20 "$2"; return 1; fi
        sleep 0.1
    done
    echo "no answer from $RELAY_URL/health within 60 s:"; tail -20 "$2"; return 1
}
"#,
    );
    let port = port.to_string();
    for (n, b) in blocks.iter().enumerate() {
        let text = b.text.replace("5110", &port);
        let at = format!("{name}:{}", b.line);
        match b.kind {
            Kind::NotRun => {
                let check = std::process::Command::new("bash")
                    .args(["-n", "-c", &text])
                    .output()
                    .expect("bash");
                assert!(
                    check.status.success(),
                    "{at}: not valid shell: {}",
                    String::from_utf8_lossy(&check.stderr)
                );
            }
            Kind::Run | Kind::Hidden => {
                s.push_str(&format!("__at '{at}'\n{text}\n"));
            }
            Kind::Server => {
                let file = format!("server-{n}.sh");
                s.push_str(&format!(
                    "__at '{at}'\ncat > {file} <<'__DOCS_EOF'\n{text}__DOCS_EOF\n\
                     setsid bash {file} > {file}.log 2>&1 &\n\
                     __servers+=($!)\n__wait_health $! {file}.log\n"
                ));
            }
        }
    }
    s.push_str(
        r#"__at 'the end (servers must still run)'
for p in "${__servers[@]}"; do kill -0 "$p" || { echo "a server started by the docs exited early"; exit 1; }; done
"#,
    );
    s
}

/// Runs every shell block of `name` in a fresh sandbox with the binary on PATH.
fn run_doc(name: &str) {
    let md = read_doc(name);
    let blocks = shell_blocks(name, &md);
    let sb = Sandbox::new();
    let work = sb.path().join("work");
    let bin = sb.path().join("bin");
    let tmp = sb.path().join("tmp");
    for d in [&work, &bin, &tmp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A checkout's scripts and hooks, as the docs' "from a checkout" steps expect.
    for d in ["scripts", "hooks", "packaging", "systemd"] {
        std::os::unix::fs::symlink(root.join(d), work.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(BIN, bin.join("gts-webchat")).unwrap();
    let port = free_port();
    let text = script(name, &blocks, port);
    let script_path = sb.path().join("docs.sh");
    std::fs::write(&script_path, &text).unwrap();
    let at = sb.path().join("at");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script_path)
        .env_clear()
        .envs(sb.env())
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        )
        .env("LANG", "C.UTF-8")
        .env("TMPDIR", &tmp)
        .env("USER", "docs")
        .env("PORT", port.to_string())
        .env("RELAY_URL", format!("http://127.0.0.1:{port}"))
        .env("GTSW_PACKAGE_BIN", BIN)
        .env("__DOCS_AT", &at)
        .current_dir(&work)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(sb.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(sb.path().join("stderr")).unwrap())
        .process_group(0);
    std::fs::create_dir_all(sb.path().join("home")).unwrap();
    let mut child = cmd.spawn().expect("bash");
    let limit = Duration::from_secs(300);
    let status = wait_child(&mut child, limit);
    if status.is_none() {
        signal_group(child.id(), "KILL");
    }
    let block = std::fs::read_to_string(&at).unwrap_or_default();
    let read = |f: &str| tail(&std::fs::read_to_string(sb.path().join(f)).unwrap_or_default());
    assert!(
        status.is_some_and(|s| s.success()),
        "docs/{name}: the block at {} failed ({status:?}; a limit of {limit:?})\n--- stdout\n{}\n--- stderr\n{}",
        block.trim(),
        read("stdout"),
        read("stderr"),
    );
}

fn signal_group(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .status();
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

macro_rules! doc_tests {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(#[test]
        fn $test() {
            run_doc($file);
        })*
        /// Every doc is listed (and so run), and every listed doc exists.
        #[test]
        fn every_doc_is_tested() {
            let tested = [$($file),*];
            let mut present: Vec<String> = std::fs::read_dir(docs_dir())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".md"))
                .collect();
            present.sort();
            let mut want: Vec<String> = DOCS.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(present, want, "docs/ holds exactly the documentation set");
            let mut t: Vec<&str> = tested.to_vec();
            t.sort();
            let mut d: Vec<&str> = DOCS.to_vec();
            d.sort();
            assert_eq!(t, d, "a test runs every doc");
        }
    };
}

doc_tests! {
    index_runs => "index.md",
    high_level_features_runs => "high-level-features.md",
    how_to_runs => "how-to.md",
    features_runs => "features.md",
    private_relay_runs => "private-relay.md",
    private_server_install_runs => "private-server-install.md",
    ai_session_quickstart_runs => "ai-session-quickstart.md",
    ai_connection_runs => "ai-connection.md",
    api_for_ai_and_devs_runs => "api-for-ai-and-devs.md",
    watchdog_runs => "watchdog.md",
    missing_features_runs => "missing-features.md",
    benchmarks_runs => "benchmarks.md",
}

/// Every link between docs points at a doc that exists.
#[test]
fn links_between_docs_resolve() {
    for name in DOCS {
        let md = read_doc(name);
        for link in md.split("](").skip(1) {
            let target = link.split([')', '#']).next().unwrap_or("");
            if !target.ends_with(".md") || target.contains("://") {
                continue;
            }
            let path = docs_dir().join(target);
            assert!(
                path.is_file(),
                "docs/{name} links to {target}, which is not there"
            );
        }
    }
}

const API_BEGIN: &str =
    "<!-- BEGIN GENERATED FROM /api/v1/openapi.json (GTSW_BLESS_DOCS=1 cargo test --test docs) -->";
const API_END: &str = "<!-- END GENERATED -->";

/// The endpoint reference in docs/api-for-ai-and-devs.md is the relay's own OpenAPI document
/// rendered as markdown: it fails here when the two differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_is_the_openapi_document() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let (status, doc) = relay.api().get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200, "{doc}");
    let generated = api_reference(&doc);
    let path = docs_dir().join("api-for-ai-and-devs.md");
    let md = read_doc("api-for-ai-and-devs.md");
    let (Some(b), Some(e)) = (md.find(API_BEGIN), md.find(API_END)) else {
        panic!("docs/api-for-ai-and-devs.md lacks the generated section's markers");
    };
    let current = &md[b + API_BEGIN.len()..e];
    if std::env::var_os("GTSW_BLESS_DOCS").is_some() {
        let new = format!("{}{API_BEGIN}{generated}{}", &md[..b], &md[e..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert!(
        current == generated,
        "docs/api-for-ai-and-devs.md differs from the relay's OpenAPI document; \
         run `GTSW_BLESS_DOCS=1 cargo test --test docs` and review the diff"
    );
}

fn schema_name(v: &serde_json::Value) -> String {
    if let Some(r) = v.get("$ref").and_then(|r| r.as_str()) {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    for k in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = v.get(k).and_then(|l| l.as_array()) {
            let names: Vec<String> = list
                .iter()
                .map(schema_name)
                .filter(|n| n != "null")
                .collect();
            return names.join(" \\| ");
        }
    }
    let types: Vec<String> = match v.get("type") {
        Some(serde_json::Value::String(t)) => vec![t.clone()],
        Some(serde_json::Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .filter(|t| *t != "null")
            .map(str::to_string)
            .collect(),
        _ => vec!["object".into()],
    };
    types
        .iter()
        .map(|t| match (t.as_str(), v.get("items")) {
            ("array", Some(items)) => format!("[{}]", schema_name(items)),
            _ => t.clone(),
        })
        .collect::<Vec<_>>()
        .join(" \\| ")
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The fields of a request body's schema as a table.
fn fields(doc: &serde_json::Value, schema: &serde_json::Value, out: &mut String) {
    let name = schema_name(schema);
    let Some(s) = doc["components"]["schemas"].get(&name) else {
        out.push_str(&format!("Body: `{name}`\n\n"));
        return;
    };
    let required: Vec<&str> = s["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let Some(props) = s["properties"].as_object() else {
        out.push_str(&format!("Body: `{name}`\n\n"));
        return;
    };
    out.push_str(&format!(
        "Body `{name}`:\n\n| field | type | required | meaning |\n|---|---|---|---|\n"
    ));
    for (field, p) in props {
        out.push_str(&format!(
            "| `{field}` | {} | {} | {} |\n",
            schema_name(p),
            if required.contains(&field.as_str()) {
                "yes"
            } else {
                ""
            },
            one_line(p["description"].as_str().unwrap_or(""))
        ));
    }
    out.push('\n');
}

fn api_reference(doc: &serde_json::Value) -> String {
    let mut out = String::from("\n");
    let tags = doc["tags"].as_array().cloned().unwrap_or_default();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for tag in &tags {
        let tag_name = tag["name"].as_str().unwrap_or("");
        out.push_str(&format!(
            "\n### {}\n\n",
            one_line(tag["description"].as_str().unwrap_or(tag_name))
        ));
        for (path, ops) in &paths {
            let Some(ops) = ops.as_object() else { continue };
            for (method, op) in ops {
                let in_tag = op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == tag_name));
                if !in_tag {
                    continue;
                }
                out.push_str(&format!("#### `{} {path}`\n\n", method.to_uppercase()));
                if let Some(s) = op["summary"].as_str() {
                    out.push_str(&format!("{}\n\n", one_line(s)));
                }
                if let Some(d) = op["description"].as_str() {
                    out.push_str(&format!("{}\n\n", one_line(d)));
                }
                let auth: Vec<&str> = op["security"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|x| x.as_object())
                            .flat_map(|o| o.keys())
                            .map(|k| match k.as_str() {
                                "session" => "session token (`X-PChat-Session`)",
                                "api_key" => "API key (`Authorization: Bearer prk_…`)",
                                other => other,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push_str(&format!(
                    "Auth: {}.\n\n",
                    if auth.is_empty() {
                        "none".to_string()
                    } else {
                        auth.join(" or ")
                    }
                ));
                if let Some(params) = op["parameters"].as_array() {
                    out.push_str("| parameter | in | type | meaning |\n|---|---|---|---|\n");
                    for p in params {
                        out.push_str(&format!(
                            "| `{}` | {} | {} | {} |\n",
                            p["name"].as_str().unwrap_or(""),
                            p["in"].as_str().unwrap_or(""),
                            schema_name(&p["schema"]),
                            one_line(p["description"].as_str().unwrap_or(""))
                        ));
                    }
                    out.push('\n');
                }
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    for (mime, c) in content {
                        if mime == "application/json" {
                            fields(doc, &c["schema"], &mut out);
                        } else {
                            out.push_str(&format!("Body: `{mime}`\n\n"));
                        }
                    }
                }
                if let Some(responses) = op["responses"].as_object() {
                    let list: Vec<String> = responses
                        .iter()
                        .map(|(code, r)| {
                            let schema = r["content"]
                                .as_object()
                                .and_then(|c| c.values().next())
                                .map(|c| schema_name(&c["schema"]));
                            match schema {
                                Some(s) => format!("{code} `{s}`"),
                                None => code.clone(),
                            }
                        })
                        .collect();
                    out.push_str(&format!("Answers: {}.\n\n", list.join(", ")));
                }
            }
        }
    }
    out
}
