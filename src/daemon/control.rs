//! The control plane: HTTP/1.1 over the task's unix socket (hyper). Socket folder 0700, socket
//! 0600, and the peer's uid must be ours. A socket left by a killed daemon is removed only when
//! connecting to it says ECONNREFUSED, so a live daemon's socket is never taken over.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::protocol::{ClaimBody, HistoryBody, PROTOCOL_VERSION, Reply, SendBody, Status};
use crate::private_fs::{self, FsError};

/// Largest control request body.
const MAX_BODY: usize = 1024 * 1024;

/// What the control plane asks of the running daemon.
#[async_trait]
pub trait Controller: Send + Sync + 'static {
    async fn status(&self) -> Status;
    fn stop(&self);
    async fn send(&self, body: SendBody) -> Result<String, String>;
    async fn history(
        &self,
        body: HistoryBody,
    ) -> Result<Vec<crate::api::messages::Message>, String>;
    /// Records not yet claimed; with `advance`, they become claimed.
    async fn claim(
        &self,
        body: ClaimBody,
        advance: bool,
    ) -> Result<Vec<super::inbox::InboxRecord>, String>;
    fn set_paused(&self, paused: bool);
    fn retry_dead_letters(&self) -> usize;
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the daemon for task {task} is not running")]
    NotRunning { task: String },
    #[error(
        "the daemon for task {task} speaks control protocol {theirs} and this gts-webchat speaks {ours}; restart it with `gts-webchat daemon restart --task {task}`"
    )]
    Version {
        task: String,
        theirs: u32,
        ours: u32,
    },
    #[error("something else is listening on {path}; stop it or remove the socket")]
    Occupied { path: PathBuf },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("talking to the daemon for task {task}: {detail}")]
    Protocol { task: String, detail: String },
    #[error("the daemon for task {task} refused: {message}")]
    Refused { task: String, message: String },
}

/// Binds the task's socket: folder 0700, socket 0600; a stale socket is removed first.
pub fn bind(socket: &Path) -> Result<UnixListener, ControlError> {
    let dir = socket.parent().unwrap_or(Path::new("/tmp"));
    private_fs::private_dir(dir)?;
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => {
            return Err(ControlError::Occupied {
                path: socket.to_path_buf(),
            });
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %socket.display(), "removing a stale control socket");
            std::fs::remove_file(socket)
                .map_err(|e| FsError::new("removing stale socket", socket, e))?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::new("probing socket", socket, e).into()),
    }
    let listener =
        UnixListener::bind(socket).map_err(|e| FsError::new("binding socket", socket, e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| FsError::new("setting permissions on", socket, e))?;
    Ok(listener)
}

fn json_response(status: StatusCode, reply: &Reply) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(reply).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn handle(
    req: Request<Incoming>,
    ctl: Arc<dyn Controller>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Reply::err("request body too large"),
            ));
        }
    };
    let reply = match (method, path.as_str()) {
        (Method::GET, "/status") => Reply {
            status: Some(Box::new(ctl.status().await)),
            ..Reply::ok()
        },
        (Method::POST, "/stop") => {
            ctl.stop();
            Reply::ok()
        }
        (Method::POST, "/pause") => {
            ctl.set_paused(true);
            Reply::ok()
        }
        (Method::POST, "/resume") => {
            ctl.set_paused(false);
            Reply::ok()
        }
        (Method::POST, "/retry") => Reply {
            retried: Some(ctl.retry_dead_letters()),
            ..Reply::ok()
        },
        (Method::POST, "/send") => match serde_json::from_slice::<SendBody>(&body) {
            Ok(b) => match ctl.send(b).await {
                Ok(id) => Reply {
                    message_id: Some(id),
                    ..Reply::ok()
                },
                Err(e) => Reply::err(e),
            },
            Err(e) => {
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    &Reply::err(format!("bad send request: {e}")),
                ));
            }
        },
        (Method::POST, path @ ("/claim" | "/peek")) => {
            match serde_json::from_slice::<ClaimBody>(if body.is_empty() { b"{}" } else { &body }) {
                Ok(b) => match ctl.claim(b, path == "/claim").await {
                    Ok(records) => Reply {
                        records: Some(records),
                        ..Reply::ok()
                    },
                    Err(e) => Reply::err(e),
                },
                Err(e) => {
                    return Ok(json_response(
                        StatusCode::BAD_REQUEST,
                        &Reply::err(format!("bad claim request: {e}")),
                    ));
                }
            }
        }
        (Method::POST, "/history") => match serde_json::from_slice::<HistoryBody>(&body) {
            Ok(b) => match ctl.history(b).await {
                Ok(messages) => Reply {
                    messages: Some(messages),
                    ..Reply::ok()
                },
                Err(e) => Reply::err(e),
            },
            Err(e) => {
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    &Reply::err(format!("bad history request: {e}")),
                ));
            }
        },
        _ => {
            return Ok(json_response(
                StatusCode::NOT_FOUND,
                &Reply::err("no such control request"),
            ));
        }
    };
    Ok(json_response(StatusCode::OK, &reply))
}

/// Serves control requests until `shutdown`.
pub async fn serve(listener: UnixListener, ctl: Arc<dyn Controller>, shutdown: CancellationToken) {
    let me = nix::unistd::getuid().as_raw();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "refused a control connection from another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!("could not check a control peer's credentials: {e}");
                continue;
            }
        }
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, ctl.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("control connection ended: {e}");
            }
        });
    }
}

/// Sends one control request to the daemon of `task` and checks the protocol version.
pub async fn request(
    task: &str,
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Reply, ControlError> {
    let not_running = || ControlError::NotRunning {
        task: task.to_string(),
    };
    let proto = |detail: String| ControlError::Protocol {
        task: task.to_string(),
        detail,
    };
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Err(not_running());
        }
        Err(e) => return Err(FsError::new("connecting to", socket, e).into()),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| proto(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap_or_default())
        .unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "gts-webchat-daemon")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| proto(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| proto(e.to_string()))?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| proto(e.to_string()))?
        .to_bytes();
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| proto(format!("undecodable reply: {e}")))?;
    let theirs = value.get("protocol").and_then(|p| p.as_u64()).unwrap_or(0) as u32;
    if theirs != PROTOCOL_VERSION {
        return Err(ControlError::Version {
            task: task.to_string(),
            theirs,
            ours: PROTOCOL_VERSION,
        });
    }
    let reply: Reply =
        serde_json::from_value(value).map_err(|e| proto(format!("undecodable reply: {e}")))?;
    if !reply.ok {
        return Err(ControlError::Refused {
            task: task.to_string(),
            message: reply.error.unwrap_or_default(),
        });
    }
    Ok(reply)
}

/// Whether a daemon answers on `socket` (blocking; usable before any runtime exists).
pub fn answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::protocol::Phase;
    use proptest::prelude::*;

    struct Stub;

    #[async_trait]
    impl Controller for Stub {
        async fn status(&self) -> Status {
            Status {
                protocol: PROTOCOL_VERSION,
                version: "test".into(),
                task: "t".into(),
                pid: 1,
                phase: Phase::Running,
                relay: String::new(),
                chat_address: String::new(),
                online: true,
                problem: None,
                problem_kind: None,
                incidents: Vec::new(),
                error: None,
                cursor: None,
                inbox_path: String::new(),
                inbox_records: 0,
                inbox_bytes: 0,
                queue_depth: 0,
                running_hook: None,
                last_hook: None,
                hook_runs: 0,
                hook_failures: 0,
                dead_letters: Vec::new(),
                outbox: 0,
                claimed_seq: 0,
                hooks_paused: false,
                hook: None,
                on_busy: "queue".into(),
                reply: false,
                loop_guarded: Vec::new(),
                started_at: String::new(),
                uptime_secs: 0,
                socket: String::new(),
            }
        }
        fn stop(&self) {}
        async fn send(&self, body: SendBody) -> Result<String, String> {
            if body.to.is_empty() {
                Err("no recipient".into())
            } else {
                Ok("msg_1".into())
            }
        }
        async fn history(
            &self,
            _: HistoryBody,
        ) -> Result<Vec<crate::api::messages::Message>, String> {
            Ok(Vec::new())
        }
        async fn claim(
            &self,
            _: ClaimBody,
            _: bool,
        ) -> Result<Vec<crate::daemon::inbox::InboxRecord>, String> {
            Ok(Vec::new())
        }
        fn set_paused(&self, _: bool) {}
        fn retry_dead_letters(&self) -> usize {
            0
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any method, path and body bytes get a JSON reply that carries the protocol version.
        #[test]
        fn any_request_gets_a_versioned_json_reply(
            method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
            path in "/[a-z/]{0,16}",
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("t.sock");
            let reply: serde_json::Value = rt.block_on(async {
                let listener = bind(&socket).unwrap();
                let stop = CancellationToken::new();
                let server = tokio::spawn(serve(listener, Arc::new(Stub), stop.clone()));
                let stream = UnixStream::connect(&socket).await.unwrap();
                let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let req = Request::builder()
                    .method(method)
                    .uri(path.as_str())
                    .header(hyper::header::HOST, "x")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let resp = tx.send_request(req).await.unwrap();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                stop.cancel();
                let _ = server.await;
                serde_json::from_slice(&bytes).unwrap()
            });
            prop_assert_eq!(reply["protocol"].as_u64(), Some(PROTOCOL_VERSION as u64));
            prop_assert!(reply["ok"].is_boolean());
        }
    }
}
