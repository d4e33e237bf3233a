//! A typed HTTP client for the relay, on the same wire types the relay serves.

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::auth::{
    MeResponse, RequestCodeRequest, RequestCodeResponse, VerifyCodeRequest, VerifyCodeResponse,
};
use crate::api::directory::DirectoryResponse;
use crate::api::files::UploadResponse;
use crate::api::messages::{
    AckRequest, AckResponse, MessageRef, PollRequest, PollResponse, SendRequest, SendResponse,
};
use crate::api::presence::{PresenceRequest, PresenceResponse};
use crate::api::{ErrorBody, ErrorCode, HealthResponse, OkResponse, SESSION_HEADER};

/// What can go wrong talking to a relay.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url:?} is not a relay URL ({why}); use something like http://127.0.0.1:5110")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the relay at {relay} while {action}: {reason}")]
    Unreachable {
        relay: String,
        action: &'static str,
        reason: String,
    },
    #[error("the relay at {relay} refused {action}: {message} ({code})")]
    Refused {
        relay: String,
        action: &'static str,
        status: u16,
        code: ErrorCode,
        message: String,
    },
    #[error(
        "the relay at {relay} gave an unexpected answer while {action} (HTTP {status}): {detail}"
    )]
    Protocol {
        relay: String,
        action: &'static str,
        status: u16,
        detail: String,
    },
    #[error("{action} {path}: {source}")]
    LocalFile {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} is {size} bytes, over the {cap}-byte limit for downloads")]
    TooLarge { url: String, size: u64, cap: u64 },
}

impl ClientError {
    /// The relay's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the session token is no longer good (log in again).
    pub fn is_auth(&self) -> bool {
        matches!(
            self.code(),
            Some(ErrorCode::InvalidToken) | Some(ErrorCode::Unauthorized)
        )
    }

    /// Whether trying again later could succeed (relay down, overloaded, storage hiccup).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused { status, code, .. } => {
                *status >= 500 || *code == ErrorCode::RateLimited
            }
            ClientError::Protocol { status, .. } => *status >= 500,
            ClientError::BadUrl { .. }
            | ClientError::LocalFile { .. }
            | ClientError::TooLarge { .. } => false,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// Normalises a relay URL: scheme and host required, no trailing slash.
pub fn normalize_relay_url(raw: &str) -> ClientResult<String> {
    let bad = |why: &str| ClientError::BadUrl {
        url: raw.to_string(),
        why: why.to_string(),
    };
    let url = url::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("there is no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it may not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[derive(Clone)]
pub struct RelayClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

// Hand-written: the token must never show up in `{:?}` output.
impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Requests that are not long-polls give up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl RelayClient {
    pub fn new(relay: &str) -> ClientResult<RelayClient> {
        super::install_crypto();
        let base = normalize_relay_url(relay)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("gts-webchat/", env!("CARGO_PKG_VERSION")))
            // The session header is ours, not one reqwest strips on a cross-site redirect:
            // follow none, so a redirect can never carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::BadUrl {
                url: relay.to_string(),
                why: format!("the HTTP client could not start: {e}"),
            })?;
        Ok(RelayClient {
            base,
            token: None,
            http,
        })
    }

    pub fn with_token(mut self, token: impl Into<String>) -> RelayClient {
        self.token = Some(token.into());
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Absolute URL for a relay path (`/api/...`), or the URL itself when already absolute.
    pub fn absolute(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Whether an absolute URL lies on this relay (same origin, under its base path): only
    /// such URLs get the session token.
    pub fn is_on_relay(&self, url: &str) -> bool {
        let (Ok(target), Ok(base)) = (url::Url::parse(url), url::Url::parse(&self.base)) else {
            return false;
        };
        let base_path = base.path().trim_end_matches('/');
        target.origin() == base.origin()
            && (target.path() == base_path
                || target
                    .path()
                    .strip_prefix(base_path)
                    .is_some_and(|rest| rest.starts_with('/')))
    }

    /// Starts a request; the session header is set only when the URL is on the relay (an
    /// attachment may name an absolute URL anywhere).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = self.absolute(path);
        let on_relay = self.is_on_relay(&url);
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token
            && on_relay
        {
            req = req.header(SESSION_HEADER, t);
        }
        req
    }

    /// Sends a prepared request and decodes the answer or the relay's error.
    pub async fn execute<T: DeserializeOwned>(
        &self,
        action: &'static str,
        req: reqwest::RequestBuilder,
    ) -> ClientResult<T> {
        let resp = req.send().await.map_err(|e| self.unreachable(action, &e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(action, &e))?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                relay: self.base.clone(),
                action,
                status,
                detail: format!("undecodable body: {e}"),
            })
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => Err(ClientError::Refused {
                    relay: self.base.clone(),
                    action,
                    status,
                    code: body.error.code,
                    message: body.error.message,
                }),
                Err(_) => Err(ClientError::Protocol {
                    relay: self.base.clone(),
                    action,
                    status,
                    detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                }),
            }
        }
    }

    fn unreachable(&self, action: &'static str, e: &reqwest::Error) -> ClientError {
        // reqwest's Display is terse ("error sending request"); its sources say why.
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        if e.is_timeout() {
            reason = "timed out".into();
        }
        ClientError::Unreachable {
            relay: self.base.clone(),
            action,
            reason,
        }
    }

    async fn json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        action: &'static str,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> ClientResult<T> {
        let mut req = self.request(method, path).timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.execute(action, req).await
    }

    pub async fn health(&self) -> ClientResult<HealthResponse> {
        self.json::<(), _>(
            "checking health",
            Method::GET,
            "/health",
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    pub async fn request_code(
        &self,
        req: &RequestCodeRequest,
    ) -> ClientResult<RequestCodeResponse> {
        self.json(
            "requesting a login code",
            Method::POST,
            "/api/v1/pchat/auth/request-code",
            Some(req),
            REQUEST_TIMEOUT,
        )
        .await
    }

    pub async fn verify_code(&self, req: &VerifyCodeRequest) -> ClientResult<VerifyCodeResponse> {
        self.json(
            "verifying the login code",
            Method::POST,
            "/api/v1/pchat/auth/verify-code",
            Some(req),
            REQUEST_TIMEOUT,
        )
        .await
    }

    pub async fn me(&self) -> ClientResult<MeResponse> {
        self.json::<(), _>(
            "checking the session",
            Method::GET,
            "/api/v1/webchat/me",
            None,
            REQUEST_TIMEOUT,
        )
        .await
    }

    pub async fn logout(&self) -> ClientResult<OkResponse> {
        self.json(
            "logging out",
            Method::POST,
            "/api/v1/pchat/auth/logout",
            Some(&serde_json::json!({})),
            REQUEST_TIMEOUT,
        )
        .await
    }

    pub async fn presence(&self, req: &PresenceRequest) -> ClientResult<PresenceResponse> {
        self.json(
            "updating presence",
            Method::POST,
            "/api/v1/webchat/presence",
            Some(req),
            REQUEST_TIMEOUT,
        )
        .await
    }

    pub async fn directory(&self, q: &str, limit: u32) -> ClientResult<DirectoryResponse> {
        let req = self
            .request(Method::GET, "/api/v1/webchat/directory")
            .query(&[("q", q), ("limit", &limit.to_string())])
            .timeout(REQUEST_TIMEOUT);
        self.execute("searching the directory", req).await
    }

    /// A conversation (`with` an address or `group:grp_…`), oldest first: the newest `limit`
    /// messages, or those before the history position `before`.
    pub async fn history(
        &self,
        with: &str,
        before: Option<i64>,
        limit: u32,
    ) -> ClientResult<PollResponse> {
        let mut q = vec![("with", with.to_string()), ("limit", limit.to_string())];
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        let req = self
            .request(Method::GET, "/api/v1/webchat/history")
            .query(&q)
            .timeout(REQUEST_TIMEOUT);
        self.execute("reading a conversation", req).await
    }

    pub async fn conversations(&self) -> ClientResult<crate::api::messages::ConversationsResponse> {
        let req = self
            .request(Method::GET, "/api/v1/webchat/conversations")
            .timeout(REQUEST_TIMEOUT);
        self.execute("listing conversations", req).await
    }

    pub async fn groups(&self) -> ClientResult<crate::api::groups::GroupListResponse> {
        let req = self
            .request(Method::GET, "/api/v1/webchat/groups")
            .timeout(REQUEST_TIMEOUT);
        self.execute("listing groups", req).await
    }

    pub async fn join_group(&self, id: &str) -> ClientResult<crate::api::groups::JoinResponse> {
        let path = format!(
            "/api/v1/webchat/groups/{}/join",
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
        );
        let req = self
            .request(Method::POST, &path)
            .json(&serde_json::json!({}))
            .timeout(REQUEST_TIMEOUT);
        self.execute("joining a group", req).await
    }

    pub async fn send(&self, req: &SendRequest) -> ClientResult<SendResponse> {
        self.json(
            "sending a message",
            Method::POST,
            "/api/v1/messages",
            Some(req),
            REQUEST_TIMEOUT,
        )
        .await
    }

    pub async fn ack(&self, cursor: &str) -> ClientResult<AckResponse> {
        self.json(
            "acknowledging received messages",
            Method::POST,
            "/api/v1/webchat/ack",
            Some(&AckRequest {
                cursor: cursor.to_string(),
            }),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// Marks a received message read (its author gets a read receipt).
    pub async fn mark_read(&self, message_id: &str) -> ClientResult<OkResponse> {
        self.json(
            "sending a read receipt",
            Method::POST,
            "/api/v1/webchat/read",
            Some(&MessageRef {
                message_id: message_id.to_string(),
            }),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// Uploads a file as a stream; `progress` is told of every chunk sent.
    pub async fn upload(
        &self,
        path: &std::path::Path,
        kind: &str,
        progress: Option<indicatif::ProgressBar>,
    ) -> ClientResult<UploadResponse> {
        use futures::TryStreamExt;
        let local = |action: &'static str| {
            let path = path.to_path_buf();
            move |source| ClientError::LocalFile {
                action,
                path,
                source,
            }
        };
        let file = tokio::fs::File::open(path)
            .await
            .map_err(local("opening"))?;
        let len = file.metadata().await.map_err(local("reading"))?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        if let Some(pb) = &progress {
            pb.set_length(len);
        }
        let stream = tokio_util::io::ReaderStream::new(file).inspect_ok(move |chunk| {
            if let Some(pb) = &progress {
                pb.inc(chunk.len() as u64);
            }
        });
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
                .file_name(name)
                .mime_str(mime.essence_str())
                .map_err(|e| ClientError::BadUrl {
                    url: self.base.clone(),
                    why: format!("bad content type: {e}"),
                })?;
        let form = reqwest::multipart::Form::new()
            .text("kind", kind.to_string())
            .part("file", part);
        let req = self
            .request(Method::POST, "/api/v1/webchat/upload")
            .multipart(form)
            .timeout(Duration::from_secs(3600));
        self.execute("uploading a file", req).await
    }

    /// Downloads a relay file (path or URL) into `dest` (via a temp file beside it), refusing
    /// anything over `cap` bytes. Returns the size.
    pub async fn download_to(
        &self,
        url: &str,
        dest: &std::path::Path,
        cap: u64,
    ) -> ClientResult<u64> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let action = "downloading an attachment";
        let url = self.absolute(url);
        let resp = self
            .request(Method::GET, &url)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| self.unreachable(action, &e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ClientError::Protocol {
                relay: self.base.clone(),
                action,
                status,
                detail: format!("GET {url}"),
            });
        }
        if let Some(n) = resp.content_length()
            && n > cap
        {
            return Err(ClientError::TooLarge { url, size: n, cap });
        }
        let dir = dest
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        let tmp_dir = dir.clone();
        // File creation and the final rename are blocking calls: off the async threads.
        let tmp = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(".download-")
                .tempfile_in(&tmp_dir)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|source| ClientError::LocalFile {
            action: "creating a temp file in",
            path: dir.clone(),
            source,
        })?;
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let mut size = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(action, &e))?;
            size += chunk.len() as u64;
            if size > cap {
                return Err(ClientError::TooLarge { url, size, cap });
            }
            file.write_all(&chunk)
                .await
                .map_err(|source| ClientError::LocalFile {
                    action: "writing",
                    path: dest.to_path_buf(),
                    source,
                })?;
        }
        file.sync_all()
            .await
            .map_err(|source| ClientError::LocalFile {
                action: "syncing",
                path: dest.to_path_buf(),
                source,
            })?;
        let target = dest.to_path_buf();
        tokio::task::spawn_blocking(move || tmp_path.persist(&target).map_err(|e| e.error))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| ClientError::LocalFile {
                action: "saving",
                path: dest.to_path_buf(),
                source,
            })?;
        Ok(size)
    }

    /// A poll; the HTTP timeout stretches to cover the long-poll wait.
    pub async fn poll(&self, req: &PollRequest) -> ClientResult<PollResponse> {
        let wait = req
            .wait
            .unwrap_or(0.0)
            .clamp(0.0, crate::api::MAX_POLL_WAIT_SECS);
        self.json(
            "polling for messages",
            Method::POST,
            "/api/v1/webchat/poll",
            Some(req),
            REQUEST_TIMEOUT + Duration::from_secs_f64(wait),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        assert_eq!(
            normalize_relay_url("http://127.0.0.1:5110/").unwrap(),
            "http://127.0.0.1:5110"
        );
        assert_eq!(
            normalize_relay_url("https://relay.example.com/base").unwrap(),
            "https://relay.example.com/base"
        );
        assert!(normalize_relay_url("127.0.0.1:5110").is_err());
        assert!(normalize_relay_url("ftp://x").is_err());
        assert!(normalize_relay_url("not a url").is_err());
    }

    #[test]
    fn only_relay_urls_get_the_token() {
        let c = RelayClient::new("http://127.0.0.1:5110/base")
            .unwrap()
            .with_token("pct_secret");
        assert!(c.is_on_relay("http://127.0.0.1:5110/base/api/v1/webchat/files/x"));
        assert!(!c.is_on_relay("http://127.0.0.1:5110/basement/x"));
        assert!(!c.is_on_relay("http://127.0.0.1:5111/base/api"));
        assert!(!c.is_on_relay("https://127.0.0.1:5110/base/api"));
        assert!(!c.is_on_relay("http://evil.example/base/api"));
        let has_token = |url: &str| {
            c.request(Method::GET, url)
                .build()
                .unwrap()
                .headers()
                .contains_key(SESSION_HEADER)
        };
        assert!(has_token("/api/v1/webchat/me"));
        assert!(!has_token("http://evil.example/steal"));
    }

    #[test]
    fn token_is_not_in_debug() {
        let c = RelayClient::new("http://127.0.0.1:1")
            .unwrap()
            .with_token("pct_secret");
        assert!(!format!("{c:?}").contains("pct_secret"));
    }
}
