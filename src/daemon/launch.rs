//! Starting, stopping and finding daemons. `start` validates settings, takes the task lock,
//! forks with `daemonize` before any async runtime exists, and returns once the daemon answers
//! on its socket. The lock (flock on `daemon.lock`) travels to the daemon through the inherited
//! file description, so two concurrent starts are decided before either forks.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper::Method;

use super::control::{self, ControlError};
use super::paths::{TaskName, TaskPaths};
use super::protocol::{Phase, Status};
use super::settings::{Identity, SettingsError, TaskSettings};
use super::{DaemonError, supervisor};
use crate::api::address::{normalize_address, normalize_email};
use crate::client::PersonaStore;
use crate::client::relay_client::normalize_relay_url;
use crate::private_fs::{self, FsError};

/// How long `start` waits for the daemon to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the daemon for task {task} is already running{pid}; stop it with `gts-webchat daemon stop --task {task}`"
    )]
    AlreadyRunning { task: String, pid: String },
    #[error("the daemon for task {task} is not running")]
    NotRunning { task: String },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the daemon for task {task} did not come up: {why}; its log is in {logs}")]
    DidNotStart {
        task: String,
        why: String,
        logs: PathBuf,
    },
    #[error("the daemon for task {task} could not start: {why}")]
    Failed { task: String, why: String },
    #[error("the daemon for task {task} did not stop within {secs} s")]
    StopTimeout { task: String, secs: u64 },
    #[error("cannot fork the daemon: {0}")]
    Fork(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

/// Resolves a hook program to an absolute path to an executable file (the daemon runs in `/`).
pub fn resolve_program(raw: &Path) -> Result<PathBuf, LaunchError> {
    let bad = |why: &str| {
        LaunchError::Invalid(format!(
            "--on-message {}: {why}; give the path of an executable file",
            raw.display()
        ))
    };
    let candidate = if raw.components().count() > 1 || raw.is_absolute() {
        raw.to_path_buf()
    } else {
        // A bare name is looked up on PATH, like a shell would, but nothing is run by one.
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(raw))
            .find(|p| p.is_file())
            .ok_or_else(|| bad("not found on PATH"))?
    };
    let abs = std::fs::canonicalize(&candidate).map_err(|e| bad(&e.to_string()))?;
    if !abs.is_file() {
        return Err(bad("not a file"));
    }
    if nix::unistd::access(&abs, nix::unistd::AccessFlags::X_OK).is_err() {
        return Err(bad("not executable (chmod +x it)"));
    }
    Ok(abs)
}

/// Checks everything that can be checked without the network.
pub fn validate(settings: &TaskSettings) -> Result<(), LaunchError> {
    if let Some(hook) = &settings.hook {
        resolve_program(&hook.program)?;
    }
    if let Some(r) = &settings.relay {
        normalize_relay_url(r).map_err(|e| LaunchError::Invalid(e.to_string()))?;
    }
    match &settings.identity {
        Identity::Persona { who } => {
            let store =
                PersonaStore::open_default().map_err(|e| LaunchError::Invalid(e.to_string()))?;
            if store
                .find(who)
                .map_err(|e| LaunchError::Invalid(e.to_string()))?
                .is_none()
            {
                return Err(LaunchError::Invalid(format!(
                    "no local persona matches {who:?}; create it with `gts-webchat persona EMAIL --name NAME`, or see `gts-webchat list`"
                )));
            }
        }
        Identity::Flags {
            email,
            chat_address,
            relay,
            ..
        } => {
            normalize_email(email).map_err(LaunchError::Invalid)?;
            if let Some(a) = chat_address {
                normalize_address(a).map_err(LaunchError::Invalid)?;
            }
            if let Some(r) = relay {
                normalize_relay_url(r).map_err(|e| LaunchError::Invalid(e.to_string()))?;
            }
        }
    }
    Ok(())
}

fn open_lock_file(paths: &TaskPaths) -> Result<File, LaunchError> {
    private_fs::private_dir(&paths.dir)?;
    private_fs::private_dir(&paths.logs)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&paths.lock)
        .map_err(|e| FsError::new("opening", &paths.lock, e).into())
}

/// How long a lock may outlive the daemon that recorded itself in it. A daemon killed while
/// it spawns a hook leaves a child between fork and exec that still shares the lock (and the
/// control socket) until its exec closes them; that takes milliseconds, not seconds.
const ORPHANED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The pid the daemon wrote into its lock file, if any.
pub fn recorded_pid(paths: &TaskPaths) -> Option<i32> {
    std::fs::read_to_string(&paths.lock)
        .ok()
        .and_then(|p| p.trim().parse().ok())
}

/// Whether the process `pid` still runs. A zombie does not: it has let go of its files, and a
/// daemon orphaned under a container's init may stay a zombie for long.
fn pid_alive(pid: i32) -> bool {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        return !matches!(state, Some('Z' | 'X'));
    }
    if Path::new("/proc/self/stat").exists() {
        return false;
    }
    // No procfs (macOS): signal 0 checks existence; EPERM means it exists under another user.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// Tries to lock `file`, waiting out a holder that is only the remnant of a dead daemon.
/// Returns whether the lock is now ours.
fn try_lock_past_orphans(file: &File, paths: &TaskPaths) -> Result<bool, LaunchError> {
    let deadline = Instant::now() + ORPHANED_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) => {
                let daemon_gone = recorded_pid(paths).is_some_and(|pid| !pid_alive(pid));
                if !daemon_gone || Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::Error(e)) => {
                return Err(FsError::new("locking", &paths.lock, e).into());
            }
        }
    }
}

/// Takes the task lock, or says who holds it.
fn lock_task(paths: &TaskPaths) -> Result<File, LaunchError> {
    let file = open_lock_file(paths)?;
    if try_lock_past_orphans(&file, paths)? {
        return Ok(file);
    }
    let pid = recorded_pid(paths)
        .map(|p| format!(" (pid {p})"))
        .unwrap_or_default();
    Err(LaunchError::AlreadyRunning {
        task: paths.task.to_string(),
        pid,
    })
}

/// Whether no daemon holds the task lock (the daemon is gone).
pub fn lock_is_free(paths: &TaskPaths) -> bool {
    match File::open(&paths.lock) {
        Ok(f) => match try_lock_past_orphans(&f, paths) {
            Ok(true) => {
                let _ = f.unlock();
                true
            }
            _ => false,
        },
        Err(_) => true,
    }
}

/// `lock_is_free` from async code: waiting out a dead daemon's remnant may take seconds, so
/// it runs off the async thread.
pub async fn lock_is_free_async(paths: &TaskPaths) -> bool {
    let p = paths.clone();
    tokio::task::spawn_blocking(move || lock_is_free(&p))
        .await
        .unwrap_or(false)
}

/// Sets up logging in the daemon process: daily files in the task's logs folder (7 kept), and
/// stderr too in the foreground.
fn init_logging(
    paths: &TaskPaths,
    foreground: bool,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let appender = tracing_appender::rolling::RollingFileAppender::builder()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("daemon")
        .filename_suffix("log")
        .max_log_files(7)
        .build(&paths.logs)
        .ok()?;
    // The default buffer preallocates 128,000 lines (4 MB); a daemon logs a few per message.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(1024)
        .finish(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_env("GTS_WEBCHAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false);
    let stderr_layer = foreground.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    Some(guard)
}

/// The daemon's body in its own process (after the fork, or `daemon run`). Returns the exit code.
fn daemon_main(
    task: TaskName,
    paths: TaskPaths,
    settings: TaskSettings,
    mut lock: File,
    foreground: bool,
) -> i32 {
    let _ = lock.set_len(0);
    let _ = write!(lock, "{}", std::process::id());
    let _ = lock.sync_data();
    let _guard = init_logging(&paths, foreground);
    crate::client::install_crypto();
    // One thread: the daemon mostly waits (on the relay, a hook, a timer).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = std::fs::write(
                &paths.last_error,
                format!("cannot start the async runtime: {e}"),
            );
            return 1;
        }
    };
    let last_error = paths.last_error.clone();
    let result = rt.block_on(supervisor::run(task, paths, settings));
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(lock);
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = std::fs::write(&last_error, e.to_string());
            if foreground {
                eprintln!("gts-webchat: daemon: {e}");
            }
            1
        }
    }
}

/// What `start` reports.
#[derive(Debug)]
pub struct Started {
    pub status: Status,
    pub paths: TaskPaths,
}

/// Forks a background daemon for the task and waits until it answers.
pub fn start(
    task: &TaskName,
    paths: &TaskPaths,
    settings: &TaskSettings,
) -> Result<Started, LaunchError> {
    validate(settings)?;
    let lock = lock_task(paths)?;
    settings.save(&paths.settings)?;
    let _ = std::fs::remove_file(&paths.last_error);
    let stderr_log = private_fs::open_append(&paths.logs.join("daemon.stderr"))?;
    let outcome = daemonize::Daemonize::new()
        .working_directory("/")
        .umask(0o077)
        .stdout(daemonize::Stdio::devnull())
        .stderr(stderr_log)
        .execute();
    match outcome {
        daemonize::Outcome::Parent(Ok(_)) => {
            // Close our copy: the lock stays with the daemon's copy of the same description.
            drop(lock);
            wait_ready(task, paths)
        }
        daemonize::Outcome::Parent(Err(e)) => Err(LaunchError::Fork(e.to_string())),
        daemonize::Outcome::Child(Ok(_)) => {
            let code = daemon_main(task.clone(), paths.clone(), settings.clone(), lock, false);
            std::process::exit(code)
        }
        daemonize::Outcome::Child(Err(e)) => {
            let _ = std::fs::write(&paths.last_error, format!("daemonizing failed: {e}"));
            std::process::exit(1)
        }
    }
}

/// `daemon run`: the daemon in the foreground (systemd, launchd, debugging). Returns the exit
/// code.
pub fn run_foreground(
    task: &TaskName,
    paths: &TaskPaths,
    settings: &TaskSettings,
) -> Result<i32, LaunchError> {
    validate(settings)?;
    let lock = lock_task(paths)?;
    settings.save(&paths.settings)?;
    Ok(daemon_main(
        task.clone(),
        paths.clone(),
        settings.clone(),
        lock,
        true,
    ))
}

fn client_runtime() -> Result<tokio::runtime::Runtime, LaunchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LaunchError::Runtime(e.to_string()))
}

/// Asks the daemon for its status.
pub async fn status(paths: &TaskPaths) -> Result<Status, ControlError> {
    let reply = control::request(
        paths.task.as_str(),
        &paths.socket,
        Method::GET,
        "/status",
        None,
    )
    .await?;
    reply
        .status
        .map(|s| *s)
        .ok_or_else(|| ControlError::Protocol {
            task: paths.task.to_string(),
            detail: "status reply without a status".into(),
        })
}

fn wait_ready(task: &TaskName, paths: &TaskPaths) -> Result<Started, LaunchError> {
    let rt = client_runtime()?;
    let deadline = Instant::now() + READY_TIMEOUT;
    rt.block_on(async {
        loop {
            match status(paths).await {
                Ok(s) if s.phase == Phase::Failed => {
                    return Err(LaunchError::Failed {
                        task: task.to_string(),
                        why: s.error.unwrap_or_else(|| "unknown".into()),
                    });
                }
                Ok(s) if s.phase != Phase::Starting => {
                    return Ok(Started {
                        status: s,
                        paths: paths.clone(),
                    });
                }
                Ok(_) => {}
                Err(ControlError::NotRunning { .. }) if lock_is_free(paths) => {
                    // The daemon exited before answering; it left its reason behind.
                    let why = std::fs::read_to_string(&paths.last_error)
                        .ok()
                        .filter(|s| !s.trim().is_empty())
                        .unwrap_or_else(|| "it exited at once".into());
                    return Err(LaunchError::Failed {
                        task: task.to_string(),
                        why: why.trim().to_string(),
                    });
                }
                Err(ControlError::NotRunning { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                return Err(LaunchError::DidNotStart {
                    task: task.to_string(),
                    why: format!(
                        "no answer on {} within {} s",
                        paths.socket.display(),
                        READY_TIMEOUT.as_secs()
                    ),
                    logs: paths.logs.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Asks the daemon to stop and waits until it has released its lock.
pub async fn stop(paths: &TaskPaths, grace: Duration) -> Result<(), LaunchError> {
    match control::request(
        paths.task.as_str(),
        &paths.socket,
        Method::POST,
        "/stop",
        None,
    )
    .await
    {
        Ok(_) => {}
        Err(ControlError::NotRunning { .. }) => {
            return Err(LaunchError::NotRunning {
                task: paths.task.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    let limit = grace + Duration::from_secs(20);
    let deadline = Instant::now() + limit;
    while !lock_is_free(paths) {
        if Instant::now() > deadline {
            return Err(LaunchError::StopTimeout {
                task: paths.task.to_string(),
                secs: limit.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Every task that has a state folder.
pub fn list_tasks() -> Vec<TaskName> {
    let Some(root) = super::paths::tasks_root() else {
        return Vec::new();
    };
    let mut tasks: Vec<TaskName> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().and_then(|n| TaskName::parse(n).ok()))
                .collect()
        })
        .unwrap_or_default();
    tasks.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    tasks
}

/// Loads a task's saved settings.
pub fn saved_settings(paths: &TaskPaths) -> Result<Option<TaskSettings>, DaemonError> {
    Ok(TaskSettings::load(&paths.settings)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> TaskPaths {
        let task = TaskName::parse("t").expect("valid task name");
        TaskPaths::under(&task, dir, &dir.join("sockets"))
    }

    /// A pid that existed and is gone: a child we started and reaped.
    fn dead_pid() -> i32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        child.wait().expect("reap true");
        pid
    }

    fn hold_lock(paths: &TaskPaths, pid: i32) -> File {
        let holder = open_lock_file(paths).expect("open lock");
        holder.try_lock().expect("first lock");
        std::fs::write(&paths.lock, pid.to_string()).expect("record pid");
        holder
    }

    #[test]
    fn a_dead_daemons_lingering_lock_is_waited_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = paths(dir.path());
        // The holder stands for a hook child between fork and exec: its daemon is dead.
        let holder = hold_lock(&p, dead_pid());
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(holder);
        });
        let lock = lock_task(&p).expect("the lock once the remnant lets go");
        release.join().expect("release thread");
        drop(lock);
        assert!(lock_is_free(&p));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_zombie_daemon_counts_as_gone() {
        // A killed daemon orphaned under a container's init can stay a zombie for a while.
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "true never exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!pid_alive(pid), "a zombie is not a running daemon");
        assert!(pid_alive(std::process::id() as i32));
        child.wait().expect("reap true");
    }

    #[test]
    fn a_live_daemons_lock_is_refused_at_once_with_its_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = paths(dir.path());
        let me = std::process::id() as i32;
        let _holder = hold_lock(&p, me);
        let t0 = Instant::now();
        match lock_task(&p) {
            Err(LaunchError::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, format!(" (pid {me})"))
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        assert!(!lock_is_free(&p));
        // Refused without waiting out the orphan grace period.
        assert!(t0.elapsed() < ORPHANED_LOCK_WAIT);
    }
}
