//! Uploads and downloads. An upload streams into a temp file in the upload dir with a byte
//! limit, is fsynced and renamed into place; over the limit it answers 413 and the temp file
//! is gone. Downloads support ranges (audio/video seeking) and carry headers that keep a
//! hostile file from running in the web app's origin.

use std::path::PathBuf;

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::Auth;
use super::store::FileRecord;
use crate::api::files::{
    UploadForm, UploadResponse, attachment_kind, file_url, sanitize_file_name,
};
use crate::api::messages::Attachment;
use crate::api::{ErrorBody, ErrorCode, now_millis};

fn new_file_id() -> String {
    let mut raw = [0u8; 16];
    rand::fill(&mut raw);
    format!("file_{}", hex::encode(raw))
}

/// Whether `id` looks like one of our file ids (so it is safe as a file name).
fn valid_file_id(id: &str) -> bool {
    id.strip_prefix("file_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn storage(e: impl std::fmt::Display, what: &str) -> ApiError {
    tracing::error!("upload storage failure while {what}: {e}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageUnavailable,
        "the relay could not store the file; try again shortly",
    )
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!(
                "the upload is not a valid multipart form: {}",
                e.body_text()
            ),
        )
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::too_large(format!(
        "the file is over this relay's limit of {} MiB",
        limit / (1024 * 1024)
    ))
}

/// A file received from a form: in a temp file in the upload dir (gone when dropped).
pub struct ReceivedFile {
    pub path: tempfile::TempPath,
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub sha256: String,
}

/// A multipart form: its `file` (streamed to disk, fsynced, at most `limit` bytes) and its
/// other fields as text.
pub struct ReceivedForm {
    pub file: Option<ReceivedFile>,
    pub fields: std::collections::HashMap<String, String>,
}

pub async fn read_form(
    multipart: &mut Multipart,
    dir: &std::path::Path,
    limit: u64,
) -> ApiResult<ReceivedForm> {
    let mut file = None;
    let mut fields = std::collections::HashMap::new();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
    {
        match field.name().map(str::to_string) {
            Some(n) if n == "file" && file.is_none() => {
                let name = sanitize_file_name(field.file_name().unwrap_or("file"));
                let declared = field
                    .content_type()
                    .map(str::to_string)
                    .filter(|m| !m.is_empty() && m != "application/octet-stream");
                let tmp = tempfile::Builder::new()
                    .prefix(".upload-")
                    .tempfile_in(dir)
                    .map_err(|e| storage(e, "creating a temp file"))?;
                let (std_file, path) = tmp.into_parts();
                // From here, dropping `path` deletes the temp file: every early return cleans up.
                let mut out = tokio::fs::File::from_std(std_file);
                let mut hasher = Sha256::new();
                let mut size: u64 = 0;
                while let Some(chunk) =
                    field.chunk().await.map_err(|e| multipart_error(e, limit))?
                {
                    size += chunk.len() as u64;
                    if size > limit {
                        // Read on (discarding, bounded) so the client gets the 413 rather
                        // than a reset connection; the temp file is removed first.
                        drop(path);
                        let mut drained = 0usize;
                        while let Ok(Some(c)) = field.chunk().await {
                            drained += c.len();
                            if drained > super::extract::DRAIN_LIMIT {
                                break;
                            }
                        }
                        return Err(too_large(limit));
                    }
                    hasher.update(&chunk);
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| storage(e, "writing an upload"))?;
                }
                out.sync_all()
                    .await
                    .map_err(|e| storage(e, "syncing an upload"))?;
                let mime = declared.unwrap_or_else(|| {
                    mime_guess::from_path(&name)
                        .first_or_octet_stream()
                        .essence_str()
                        .to_string()
                });
                file = Some(ReceivedFile {
                    path,
                    name,
                    mime,
                    size,
                    sha256: hex::encode(hasher.finalize()),
                });
            }
            Some(n) if n != "file" && n.len() <= 64 && fields.len() < 16 => {
                let text = field.text().await.map_err(|e| multipart_error(e, limit))?;
                fields.insert(n, text.trim().chars().take(256).collect());
            }
            _ => {
                // Unknown or repeated fields are read and ignored.
                while field
                    .chunk()
                    .await
                    .map_err(|e| multipart_error(e, limit))?
                    .is_some()
                {}
            }
        }
    }
    Ok(ReceivedForm { file, fields })
}

/// Uploads a file (multipart field `file`); returns its id and the attachment metadata.
#[utoipa::path(post, path = "/api/v1/webchat/upload", tag = "files",
    security(("session" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = UploadResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    Auth(session): Auth,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<UploadResponse>> {
    let limit = state.config.max_upload_bytes;
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!(
                "send the file as multipart/form-data with a field named \"file\": {}",
                e.body_text()
            ),
        )
    })?;
    let dir = state.config.upload_dir.clone();
    let form = read_form(&mut multipart, &dir, limit).await?;
    let requested_kind = form
        .fields
        .get("kind")
        .cloned()
        .unwrap_or_else(|| "auto".into())
        .to_ascii_lowercase();
    let Some(ReceivedFile {
        path: tmp_path,
        name,
        mime,
        size,
        sha256,
    }) = form.file
    else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "the form has no field named \"file\"",
        ));
    };
    if !matches!(
        requested_kind.as_str(),
        "auto" | "file" | "voice" | "image" | "video" | "audio"
    ) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "kind must be auto, file, voice, image, video or audio",
        ));
    }
    let kind = attachment_kind(&mime, &requested_kind).to_string();
    let file_id = new_file_id();
    let final_path = dir.join(&file_id);
    let dir_for_sync = dir.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        tmp_path.persist(&final_path).map_err(|e| e.error)?;
        std::fs::File::open(&dir_for_sync)?.sync_all()
    })
    .await
    .map_err(|e| storage(e, "finishing an upload"))?
    .map_err(|e| storage(e, "renaming an upload"))?;
    let record = FileRecord {
        public_id: file_id.clone(),
        owner_id: session.user.id,
        name: name.clone(),
        mime: mime.clone(),
        size,
        kind: kind.clone(),
        sha256: sha256.clone(),
        created_at: now_millis(),
    };
    if let Err(e) = state.store.put_file(record).await {
        let _ = tokio::fs::remove_file(dir.join(&file_id)).await;
        return Err(e.into());
    }
    Ok(Json(UploadResponse {
        ok: true,
        attachment: Attachment {
            url: file_url(&file_id),
            file_id: file_id.clone(),
            name,
            mime,
            size,
            kind,
            sha256,
        },
        file_id,
    }))
}

/// Stores bytes the relay made itself (a read-aloud clip) as an ordinary upload: temp file,
/// fsync, rename, record.
pub async fn store_bytes(
    state: &AppState,
    owner: i64,
    name: &str,
    mime: &str,
    kind: &str,
    bytes: Vec<u8>,
) -> ApiResult<Attachment> {
    let file_id = new_file_id();
    let dir = state.config.upload_dir.clone();
    let final_path = dir.join(&file_id);
    let size = bytes.len() as u64;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut tmp = tempfile::Builder::new()
            .prefix(".made-")
            .tempfile_in(&dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&final_path).map_err(|e| e.error)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| storage(e, "storing a made file"))?
    .map_err(|e| storage(e, "storing a made file"))?;
    let record = FileRecord {
        public_id: file_id.clone(),
        owner_id: owner,
        name: sanitize_file_name(name),
        mime: mime.to_string(),
        size,
        kind: kind.to_string(),
        sha256: sha256.clone(),
        created_at: now_millis(),
    };
    state.store.put_file(record.clone()).await?;
    Ok(Attachment {
        url: file_url(&file_id),
        file_id,
        name: record.name,
        mime: record.mime,
        size,
        kind: record.kind,
        sha256,
    })
}

/// Removes the bytes of uploads whose records were dropped. A failure only leaves an
/// unreachable file behind (downloads check the record first), so it is logged, not returned.
pub async fn remove_stored(state: &AppState, file_ids: Vec<String>) {
    for id in file_ids {
        if !valid_file_id(&id) {
            continue;
        }
        let path = state.config.upload_dir.join(&id);
        if let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %id, "could not remove a deleted message's file: {e}");
        }
    }
}

/// `filename="…"` (ASCII fallback) and `filename*=UTF-8''…` (the real name).
fn content_disposition(disposition: &str, name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .map(|c| if c == '"' || c == '\\' { '_' } else { c })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    HeaderValue::from_str(&format!(
        "{disposition}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Whether a stored type is shown in the page rather than downloaded: raster images, audio and
/// video only. (`image/svg+xml` parses as subtype `svg` with suffix `xml`: it is a document.)
fn shows_inline(mime: &mime::Mime) -> bool {
    match mime.type_() {
        mime::IMAGE => matches!(
            mime.subtype().as_str(),
            "png" | "jpeg" | "gif" | "webp" | "avif" | "bmp"
        ),
        mime::VIDEO | mime::AUDIO => mime.suffix().is_none(),
        _ => false,
    }
}

/// Downloads a stored file by id (the id is the capability: no session needed, so `<img>`,
/// `<audio>` and `curl -OJ` work). Range requests are supported.
#[utoipa::path(get, path = "/api/v1/webchat/files/{file_id}", tag = "files",
    params(("file_id" = String, Path, description = "The id upload returned")),
    responses(
        (status = 200, description = "The file's bytes"),
        (status = 206, description = "A range of them"),
        (status = 404, body = ErrorBody),
    ))]
pub async fn download(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
    req: Request<Body>,
) -> ApiResult<Response> {
    let missing = || ApiError::not_found(ErrorCode::NotFound, "no file has that id");
    if !valid_file_id(&file_id) {
        return Err(missing());
    }
    let Some(file) = state.store.file(&file_id).await? else {
        return Err(missing());
    };
    let path: PathBuf = state.config.upload_dir.join(&file_id);
    let mime: mime::Mime = file.mime.parse().unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let resp = ServeFile::new_with_mime(&path, &mime)
        .oneshot(req)
        .await
        .map_err(|e| storage(e, "reading a file"))?;
    if resp.status() == StatusCode::NOT_FOUND {
        tracing::error!(file = %file_id, "an upload's bytes are missing from the upload dir");
        return Err(missing());
    }
    let mut resp = resp.map(Body::new).into_response();
    // Media shows inline; everything else (SVG above all, which can carry script) downloads.
    let inline = shows_inline(&mime);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(if inline { "inline" } else { "attachment" }, &file.name),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_shows_inline() {
        for (m, inline) in [
            ("image/png", true),
            ("image/gif", true),
            ("audio/webm", true),
            ("video/mp4", true),
            ("image/svg+xml", false),
            ("text/html", false),
            ("application/pdf", false),
            ("image/x-unknown", false),
        ] {
            assert_eq!(shows_inline(&m.parse().unwrap()), inline, "{m}");
        }
    }
}
