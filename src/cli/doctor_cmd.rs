//! `gts-webchat doctor`: one line per check of what this machine relies on — each relay its
//! personas use (reachable, version, TLS, how login codes go out), each persona's token, each
//! task's daemon (running, its hook executable, its last problem), and which AI host CLIs are
//! on PATH (information, never a failure). Exit 0 only when every check passes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::output::{json_line, text_line};
use super::{CliResult, Failure, exit};
use crate::client::{DEFAULT_RELAY, RelayClient};
use crate::daemon::launch;
use crate::daemon::paths::TaskPaths;
use crate::hosts::presets::PRESETS;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check this relay (default: every relay a local persona uses, else the default relay)
    #[arg(long)]
    pub relay: Option<String>,
    /// One JSON object per check: {check, status: ok|fail|info, detail}
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    status: Verdict,
    detail: String,
}

fn check(name: impl Into<String>, status: Verdict, detail: impl Into<String>) -> Check {
    Check {
        check: name.into(),
        status,
        detail: detail.into(),
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

fn is_loopback_url(url: &str) -> bool {
    crate::relay::config::is_loopback(host_of(url).trim_matches(['[', ']']))
}

async fn relay_checks(url: &str, out: &mut Vec<Check>) {
    let name = format!("relay {url}");
    let client = match RelayClient::new(url) {
        Ok(c) => c,
        Err(e) => {
            out.push(check(name, Verdict::Fail, e.to_string()));
            return;
        }
    };
    let health = match tokio::time::timeout(TIMEOUT, client.health()).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            out.push(check(
                name,
                Verdict::Fail,
                format!("not reachable ({e}); start it with `gts-webchat relay` or fix the URL"),
            ));
            return;
        }
        Err(_) => {
            out.push(check(
                name,
                Verdict::Fail,
                "did not answer /health within 5 s",
            ));
            return;
        }
    };
    out.push(check(
        &name,
        Verdict::Ok,
        format!("reachable, {} storage", health.database),
    ));
    let ours = env!("CARGO_PKG_VERSION");
    out.push(if health.version == ours {
        check(format!("{name} version"), Verdict::Ok, ours)
    } else {
        check(
            format!("{name} version"),
            Verdict::Fail,
            format!(
                "the relay runs {}, this client is {ours}: upgrade the older one",
                health.version
            ),
        )
    });
    let loopback = is_loopback_url(url);
    out.push(if url.starts_with("https://") {
        check(format!("{name} TLS"), Verdict::Ok, "https")
    } else if loopback {
        check(
            format!("{name} TLS"),
            Verdict::Ok,
            "plain http on loopback (nothing crosses a network)",
        )
    } else {
        check(
            format!("{name} TLS"),
            Verdict::Fail,
            "plain http off loopback: tokens and codes cross the network in clear; put HTTPS in front (README, \"A private relay\")",
        )
    });
    out.push(match (health.smtp, health.dev_codes, loopback) {
        (_, true, false) => check(
            format!("{name} login codes"),
            Verdict::Fail,
            "shown to whoever asks on a non-loopback relay; set PCHAT_DEV_EXPOSE_CODES=false and SMTP_*",
        ),
        (true, _, _) => check(format!("{name} login codes"), Verdict::Ok, "mailed over SMTP"),
        (false, true, true) => check(
            format!("{name} login codes"),
            Verdict::Ok,
            "shown on screen (loopback development mode; set SMTP_* to mail them)",
        ),
        (false, false, _) => check(
            format!("{name} login codes"),
            Verdict::Fail,
            "no way to hand out login codes: set SMTP_HOST and the other SMTP_* settings",
        ),
    });
}

async fn persona_checks(personas: &[crate::client::Persona], out: &mut Vec<Check>) {
    for p in personas {
        let name = format!("persona {} ({})", p.chat_address, p.email);
        let Some(token) = p.token.clone() else {
            out.push(check(
                name,
                Verdict::Fail,
                format!(
                    "no session token; run `gts-webchat persona {}` again",
                    p.email
                ),
            ));
            continue;
        };
        let client = match RelayClient::new(&p.relay) {
            Ok(c) => c.with_token(token),
            Err(e) => {
                out.push(check(name, Verdict::Fail, e.to_string()));
                continue;
            }
        };
        out.push(match tokio::time::timeout(TIMEOUT, client.me()).await {
            Ok(Ok(_)) => check(name, Verdict::Ok, format!("token accepted by {}", p.relay)),
            Ok(Err(e)) if e.is_auth() => check(
                name,
                Verdict::Fail,
                format!(
                    "{} refused its token; sign in again with `gts-webchat persona {}`",
                    p.relay, p.email
                ),
            ),
            Ok(Err(e)) => check(
                name,
                Verdict::Fail,
                format!("could not ask {}: {e}", p.relay),
            ),
            Err(_) => check(
                name,
                Verdict::Fail,
                format!("{} did not answer within 5 s", p.relay),
            ),
        });
    }
}

fn hook_check(name: &str, paths: &TaskPaths, out: &mut Vec<Check>) {
    let Ok(Some(settings)) = launch::saved_settings(paths) else {
        return;
    };
    if let Some(hook) = &settings.hook {
        out.push(match launch::resolve_program(&hook.program) {
            Ok(p) => check(format!("{name} hook"), Verdict::Ok, p.display().to_string()),
            Err(e) => check(format!("{name} hook"), Verdict::Fail, e.to_string()),
        });
    }
}

async fn daemon_checks(out: &mut Vec<Check>) {
    for task in launch::list_tasks() {
        let Some(paths) = TaskPaths::new(&task) else {
            continue;
        };
        let name = format!("daemon {task}");
        match tokio::time::timeout(TIMEOUT, launch::status(&paths)).await {
            Ok(Ok(st)) => {
                let runs = format!("{} hook runs, {} failed", st.hook_runs, st.hook_failures);
                out.push(match (&st.error, &st.problem, st.dead_letters.len()) {
                    (Some(e), _, _) => check(&name, Verdict::Fail, format!("failed: {e}")),
                    (None, Some(p), _) => check(&name, Verdict::Fail, format!("running, but: {p}")),
                    (None, None, n) if n > 0 => check(
                        &name,
                        Verdict::Fail,
                        format!("{n} dead letter(s); `gts-webchat daemon retry --task {task}` after fixing the hook"),
                    ),
                    _ => check(
                        &name,
                        Verdict::Ok,
                        format!("running (pid {}) as {}, {runs}", st.pid, st.chat_address),
                    ),
                });
            }
            Ok(Err(_)) if launch::lock_is_free_async(&paths).await => {
                let last = std::fs::read_to_string(&paths.last_error).ok();
                out.push(match last {
                    Some(e) => check(
                        &name,
                        Verdict::Fail,
                        format!("not running; it stopped with: {}", e.trim()),
                    ),
                    None => check(
                        &name,
                        Verdict::Info,
                        format!("not running (`gts-webchat daemon start --task {task}`)"),
                    ),
                });
            }
            _ => out.push(check(
                &name,
                Verdict::Fail,
                format!(
                    "holds its task but does not answer on {}; `gts-webchat daemon restart --task {task}`",
                    paths.socket.display()
                ),
            )),
        }
        hook_check(&name, &paths, out);
    }
}

fn host_checks(out: &mut Vec<Check>) {
    let mut seen = BTreeSet::new();
    for p in PRESETS {
        if p.program.is_empty() || !seen.insert(p.program) {
            continue;
        }
        out.push(match launch::resolve_program(Path::new(p.program)) {
            Ok(path) => check(
                format!("host {}", p.program),
                Verdict::Info,
                format!("on PATH at {}", path.display()),
            ),
            Err(_) => check(format!("host {}", p.program), Verdict::Info, "not on PATH"),
        });
    }
}

pub fn run(args: DoctorArgs) -> CliResult {
    let personas = super::persona_cmd::store()?.list()?;
    let relays: BTreeSet<String> = match &args.relay {
        Some(r) => std::iter::once(r.trim_end_matches('/').to_string()).collect(),
        None if personas.is_empty() => std::iter::once(DEFAULT_RELAY.to_string()).collect(),
        None => personas
            .iter()
            .map(|p| p.relay.trim_end_matches('/').to_string())
            .collect(),
    };
    let checks = super::small_runtime()?.block_on(async {
        let mut out = Vec::new();
        for r in &relays {
            relay_checks(r, &mut out).await;
        }
        persona_checks(&personas, &mut out).await;
        daemon_checks(&mut out).await;
        host_checks(&mut out);
        out
    });
    for c in &checks {
        if args.json {
            json_line(c)?;
        } else {
            let tag = match c.status {
                Verdict::Ok => "ok  ",
                Verdict::Fail => "FAIL",
                Verdict::Info => "info",
            };
            text_line(&format!("{tag} {}: {}", c.check, c.detail))?;
        }
    }
    let failed = checks.iter().filter(|c| c.status == Verdict::Fail).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(Failure::new(
            exit::REFUSED,
            format!("doctor: {failed} check(s) failed (the FAIL lines above say what to do)"),
        ))
    }
}
