//! `gts-webchat watchdog -- RELAY ARGS…`: systemd's watchdog for people without systemd. It
//! runs the relay, asks its `/health` every `--interval`, and when the relay has died or has
//! not answered within `--timeout` twice in a row (hung, stopped, deadlocked), kills it and
//! starts it again, saying why. SIGTERM or Ctrl-C stops the relay cleanly and then itself.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use clap::Args;

use super::{CliResult, Failure, exit};

#[derive(Debug, Args)]
pub struct WatchdogArgs {
    /// Seconds between health checks
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Seconds a health check may take
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
    /// Arguments for `gts-webchat relay` (give --port: a restart must come back on it)
    #[arg(last = true)]
    pub relay_args: Vec<String>,
}

fn secs(what: &str, v: f64) -> Result<Duration, Failure> {
    if v.is_finite() && (0.05..=3600.0).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(Failure::new(
            exit::USAGE,
            format!("--{what} must be 0.05-3600 seconds"),
        ))
    }
}

/// Starts the relay; its address once it says where it listens (its stdout passes through).
async fn start(args: &[String]) -> Result<(Child, String), Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(exit::LOCAL, format!("finding this program: {e}")))?;
    let mut child = Command::new(exe)
        .arg("relay")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::new(exit::LOCAL, format!("starting the relay: {e}")))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| Failure::new(exit::LOCAL, "the relay's output could not be read"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
            if let Some(url) = line.strip_prefix("relay listening on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(url)) => Ok((child, url)),
        _ => {
            let _ = child.kill().await;
            Err(Failure::new(
                exit::LOCAL,
                "the relay did not start listening within 60 s; its log above says why",
            ))
        }
    }
}

async fn healthy(http: &reqwest::Client, url: &str) -> bool {
    http.get(format!("{url}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

pub fn run(args: WatchdogArgs) -> CliResult {
    let interval = secs("interval", args.interval)?;
    let timeout = secs("timeout", args.timeout)?;
    super::small_runtime()?.block_on(watch(args.relay_args, interval, timeout))
}

async fn watch(relay_args: Vec<String>, interval: Duration, timeout: Duration) -> CliResult {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = |k| {
        signal(k).map_err(|e| Failure::new(exit::INTERNAL, format!("watching for signals: {e}")))
    };
    let (mut term, mut int) = (
        signals(SignalKind::terminate())?,
        signals(SignalKind::interrupt())?,
    );
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| Failure::new(exit::INTERNAL, format!("an HTTP client: {e}")))?;
    let (mut child, mut url) = start(&relay_args).await?;
    eprintln!("watchdog: relay pid {} at {url}", child.id().unwrap_or(0));
    let (mut missed, mut restarts) = (0u32, 0u32);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = term.recv() => return stop(child).await,
            _ = int.recv() => return stop(child).await,
        }
        let why = match child.try_wait() {
            Ok(Some(status)) => Some(format!("the relay exited ({status})")),
            _ if healthy(&http, &url).await => {
                missed = 0;
                None
            }
            _ => {
                missed += 1;
                (missed >= 2).then(|| {
                    format!(
                        "the relay did not answer /health within {:.1} s twice in a row",
                        timeout.as_secs_f64()
                    )
                })
            }
        };
        let Some(why) = why else { continue };
        restarts += 1;
        eprintln!(
            "watchdog: {why}; restarting it (pid {}, restart {restarts})",
            child.id().unwrap_or(0)
        );
        // SIGKILL ends a stopped or hung process too.
        let _ = child.kill().await;
        // Back off a little when it keeps failing.
        tokio::time::sleep(Duration::from_millis(200 * u64::from(restarts.min(25)))).await;
        (child, url) = start(&relay_args).await?;
        missed = 0;
        eprintln!("watchdog: relay pid {} at {url}", child.id().unwrap_or(0));
    }
}

/// A clean stop: the relay answers its long-polls and flushes storage.
async fn stop(mut child: Child) -> CliResult {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    eprintln!("watchdog: stopped");
    Ok(())
}
