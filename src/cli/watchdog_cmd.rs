//! `gts-webchat watchdog [--task T]… [-- RELAY ARGS…]`: systemd's watchdog for people without
//! systemd. It runs the relay and asks its `/health` every `--interval`; each `--task`'s daemon
//! it asks for its status over the task's socket. A relay or daemon that has died, or has not
//! answered within `--timeout` twice in a row (hung, stopped, deadlocked), is killed and
//! started again, saying why. SIGTERM or Ctrl-C stops the relay cleanly and then itself; the
//! daemons are left running (`daemon stop` stops one; while watched it is started again).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use clap::Args;

use super::{CliResult, Failure, exit};
use crate::daemon::launch;
use crate::daemon::paths::{TaskName, TaskPaths};

#[derive(Debug, Args)]
pub struct WatchdogArgs {
    /// Seconds between health checks
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Seconds a health check may take
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
    /// Keep this task's daemon running too (repeat for more; each must have been started
    /// once with `daemon start`, whose settings a restart uses). With tasks and no relay
    /// arguments, no relay is run.
    #[arg(long = "task", value_name = "TASK")]
    pub tasks: Vec<String>,
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

/// A little longer before each further restart of something that keeps failing (≤ 5 s).
async fn back_off(restarts: u32) {
    tokio::time::sleep(Duration::from_millis(200 * u64::from(restarts.min(25)))).await;
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
    let mut daemons = Vec::new();
    for t in &args.tasks {
        let task = TaskName::parse(t).map_err(|e| Failure::new(exit::USAGE, e))?;
        let paths = TaskPaths::new(&task)
            .ok_or_else(|| Failure::new(exit::LOCAL, "no home or state directory for this user"))?;
        match launch::saved_settings(&paths) {
            Ok(Some(_)) => daemons.push(Watched::new(paths)),
            Ok(None) => {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "task {task} has never been started; start it once with `gts-webchat daemon start --task {task} --as PERSONA …`"
                    ),
                ));
            }
            Err(e) => return Err(Failure::new(exit::LOCAL, e.to_string())),
        }
    }
    let relay = (!args.relay_args.is_empty() || daemons.is_empty()).then_some(args.relay_args);
    super::small_runtime()?.block_on(watch(relay, daemons, interval, timeout))
}

/// A task's daemon under watch.
struct Watched {
    paths: TaskPaths,
    missed: u32,
    restarts: u32,
}

impl Watched {
    fn new(paths: TaskPaths) -> Watched {
        Watched {
            paths,
            missed: 0,
            restarts: 0,
        }
    }

    /// Why it needs a restart, if it does.
    async fn check(&mut self, timeout: Duration) -> Option<String> {
        let task = &self.paths.task;
        match tokio::time::timeout(timeout, launch::status(&self.paths)).await {
            Ok(Ok(_)) => {
                self.missed = 0;
                None
            }
            // No daemon holds the task: it exited or was killed.
            _ if launch::lock_is_free_async(&self.paths).await => {
                Some(format!("the daemon for task {task} is not running"))
            }
            _ => {
                self.missed += 1;
                (self.missed >= 2).then(|| {
                    format!(
                        "the daemon for task {task} did not answer on its socket within {:.1} s twice in a row",
                        timeout.as_secs_f64()
                    )
                })
            }
        }
    }

    /// Kills what is left of it and starts it with its saved settings.
    async fn restart(&mut self, why: &str) {
        let task = self.paths.task.clone();
        self.restarts += 1;
        let held = !launch::lock_is_free_async(&self.paths).await;
        let pid = launch::recorded_pid(&self.paths).filter(|_| held);
        eprintln!(
            "watchdog: {why}; restarting it ({}restart {})",
            pid.map(|p| format!("pid {p}, ")).unwrap_or_default(),
            self.restarts
        );
        if let Some(p) = pid {
            // SIGKILL ends a stopped or hung process too; its lock goes with it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        back_off(self.restarts).await;
        let Ok(exe) = std::env::current_exe() else {
            eprintln!("watchdog: cannot find this program to start task {task}");
            return;
        };
        // A child process, not a fork of this (threaded) one: `daemon start` daemonizes.
        let out = Command::new(exe)
            .args(["daemon", "start", "--task", task.as_str(), "--json"])
            .stdin(Stdio::null())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {
                let pid = launch::recorded_pid(&self.paths).unwrap_or(0);
                eprintln!("watchdog: daemon for task {task} started (pid {pid})");
                self.missed = 0;
            }
            Ok(o) => eprintln!(
                "watchdog: starting the daemon for task {task} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("watchdog: starting the daemon for task {task} failed: {e}"),
        }
    }
}

/// The relay under watch.
struct WatchedRelay {
    args: Vec<String>,
    child: Child,
    url: String,
    missed: u32,
    restarts: u32,
}

impl WatchedRelay {
    async fn start(args: Vec<String>) -> Result<WatchedRelay, Failure> {
        let (child, url) = start(&args).await?;
        eprintln!("watchdog: relay pid {} at {url}", child.id().unwrap_or(0));
        Ok(WatchedRelay {
            args,
            child,
            url,
            missed: 0,
            restarts: 0,
        })
    }

    async fn check(&mut self, http: &reqwest::Client, timeout: Duration) -> Result<(), Failure> {
        let why = match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("the relay exited ({status})")),
            _ if healthy(http, &self.url).await => {
                self.missed = 0;
                None
            }
            _ => {
                self.missed += 1;
                (self.missed >= 2).then(|| {
                    format!(
                        "the relay did not answer /health within {:.1} s twice in a row",
                        timeout.as_secs_f64()
                    )
                })
            }
        };
        let Some(why) = why else { return Ok(()) };
        self.restarts += 1;
        eprintln!(
            "watchdog: {why}; restarting it (pid {}, restart {})",
            self.child.id().unwrap_or(0),
            self.restarts
        );
        // SIGKILL ends a stopped or hung process too.
        let _ = self.child.kill().await;
        back_off(self.restarts).await;
        (self.child, self.url) = start(&self.args).await?;
        self.missed = 0;
        eprintln!(
            "watchdog: relay pid {} at {}",
            self.child.id().unwrap_or(0),
            self.url
        );
        Ok(())
    }
}

async fn watch(
    relay_args: Option<Vec<String>>,
    mut daemons: Vec<Watched>,
    interval: Duration,
    timeout: Duration,
) -> CliResult {
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
    let mut relay = match relay_args {
        Some(args) => Some(WatchedRelay::start(args).await?),
        None => None,
    };
    for d in &daemons {
        eprintln!("watchdog: watching the daemon for task {}", d.paths.task);
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = term.recv() => return stop(relay).await,
            _ = int.recv() => return stop(relay).await,
        }
        if let Some(r) = relay.as_mut() {
            r.check(&http, timeout).await?;
        }
        for d in &mut daemons {
            if let Some(why) = d.check(timeout).await {
                d.restart(&why).await;
            }
        }
    }
}

/// A clean stop: the relay answers its long-polls and flushes storage.
async fn stop(relay: Option<WatchedRelay>) -> CliResult {
    let Some(WatchedRelay { mut child, .. }) = relay else {
        eprintln!("watchdog: stopped");
        return Ok(());
    };
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
