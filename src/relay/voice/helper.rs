//! The built-in transcriber's process: `whisper_helper.py` in the voice venv that
//! scripts/install-voice.sh made. The relay starts it, waits for its "listening on" line, and restarts it
//! (with backoff) whenever it exits; while it is down, transcription jobs fail and are retried.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The helper script, written next to the venv at start so it always matches this binary.
const SCRIPT: &str = include_str!("whisper_helper.py");

/// Where scripts/install-voice.sh puts things under the voice folder.
pub struct VoiceDir {
    pub root: PathBuf,
}

impl VoiceDir {
    pub fn python(&self) -> PathBuf {
        self.root.join("venv/bin/python")
    }
    /// The multilingual model, when it was installed (`install-voice.sh --multilingual`).
    pub fn multilingual_model(&self) -> Option<PathBuf> {
        let m = self.root.join("models/base");
        m.join("model.bin").is_file().then_some(m)
    }
    pub fn installed(&self) -> bool {
        self.python().is_file()
    }
}

pub struct Helper {
    url: watch::Sender<Option<String>>,
    model: String,
    /// The running process's pid (for tests and status).
    pid: watch::Sender<Option<u32>>,
}

impl Helper {
    /// The helper's base URL once it listens; waits up to 60 s for a (re)start.
    pub async fn ready_url(&self) -> Option<String> {
        let mut rx = self.url.subscribe();
        let wait = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(u) = rx.borrow_and_update().clone() {
                    return Some(u);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        });
        wait.await.ok().flatten()
    }

    pub fn model_name(&self) -> &str {
        &self.model
    }

    pub fn pid(&self) -> Option<u32> {
        *self.pid.borrow()
    }
}

/// Starts and supervises the helper until `shutdown`.
pub fn start(dir: &VoiceDir, shutdown: CancellationToken) -> std::io::Result<Arc<Helper>> {
    let script = dir.root.join("whisper_helper.py");
    crate::private_fs::atomic_write(&script, SCRIPT.as_bytes()).map_err(|e| e.source)?;
    let model = dir.multilingual_model();
    let helper = Arc::new(Helper {
        url: watch::channel(None).0,
        model: if model.is_some() { "base" } else { "tiny.en" }.to_string(),
        pid: watch::channel(None).0,
    });
    let python = dir.python();
    let h = helper.clone();
    tokio::spawn(async move {
        let mut pause = Duration::from_secs(1);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let started = std::time::Instant::now();
            match run_once(&python, &script, model.as_deref(), &h, &shutdown).await {
                Ok(status) => tracing::warn!("the whisper helper exited ({status}); restarting"),
                Err(e) => tracing::warn!("the whisper helper could not start: {e}; retrying"),
            }
            h.url.send_replace(None);
            h.pid.send_replace(None);
            if started.elapsed() > Duration::from_secs(60) {
                pause = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    });
    Ok(helper)
}

async fn run_once(
    python: &Path,
    script: &Path,
    model: Option<&Path>,
    h: &Helper,
    shutdown: &CancellationToken,
) -> std::io::Result<std::process::ExitStatus> {
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script)
        .args(["--port", "0", "--threads", "1", "--parent"])
        .arg(std::process::id().to_string())
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let mut child = cmd.spawn()?;
    h.pid.send_replace(child.id());
    if let Some(err) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(target: "whisper_helper", "{l}");
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        let mut lines = BufReader::new(out).lines();
        let announce = async {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(addr) = l.strip_prefix("listening on ") {
                    return Some(format!("http://{}", addr.trim()));
                }
            }
            None
        };
        tokio::select! {
            url = announce => {
                if let Some(u) = url {
                    tracing::info!(url = %u, model = %h.model, "whisper helper ready");
                    h.url.send_replace(Some(u));
                }
            }
            _ = shutdown.cancelled() => {
                let _ = child.kill().await;
                return child.wait().await;
            }
        }
    }
    tokio::select! {
        s = child.wait() => s,
        _ = shutdown.cancelled() => {
            let _ = child.kill().await;
            child.wait().await
        }
    }
}
