//! Uploads and attachment kinds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::messages::Attachment;

/// `POST /api/v1/webchat/upload` (multipart, field `file`; optional field `kind`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadResponse {
    pub ok: bool,
    pub file_id: String,
    pub attachment: Attachment,
}

/// Multipart form of an upload, for the API description.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// auto (default: audio becomes a voice clip), file, voice, image, video or audio.
    pub kind: Option<String>,
}

/// Where a download path points.
pub fn file_url(file_id: &str) -> String {
    format!("/api/v1/webchat/files/{file_id}")
}

/// The attachment kind for a MIME type and a requested kind: `auto` sends audio as a voice
/// clip (the seed's rule), images and video as themselves, the rest as files. A request that
/// does not fit the type falls back to `auto`: anything may be sent as a plain file, but only
/// audio or video (a recorded webm clip) as a voice clip.
pub fn attachment_kind(mime: &str, requested: &str) -> &'static str {
    let top = mime.split('/').next().unwrap_or("");
    match requested {
        "file" => "file",
        "voice" if top == "audio" || top == "video" => "voice",
        "image" if top == "image" => "image",
        "video" if top == "video" => "video",
        "audio" if top == "audio" => "audio",
        _ => match top {
            "image" => "image",
            "video" => "video",
            "audio" => "voice",
            _ => "file",
        },
    }
}

/// A file name with no path parts and no control characters, at most 200 bytes.
pub fn sanitize_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = last
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if matches!(c, '"' | ':' | '*' | '?' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    clean = clean.trim().trim_start_matches('.').to_string();
    while clean.len() > 200 {
        clean.pop();
    }
    if clean.is_empty() {
        "file".to_string()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_paths() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_file_name("..."), "file");
        assert_eq!(sanitize_file_name(".bashrc"), "bashrc");
        assert_eq!(sanitize_file_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(sanitize_file_name("quo\"te.txt"), "quo_te.txt");
    }

    #[test]
    fn kinds() {
        assert_eq!(attachment_kind("audio/webm", "auto"), "voice");
        assert_eq!(attachment_kind("audio/webm", "file"), "file");
        assert_eq!(attachment_kind("image/gif", "auto"), "image");
        assert_eq!(attachment_kind("video/mp4", "auto"), "video");
        assert_eq!(attachment_kind("application/pdf", "auto"), "file");
        assert_eq!(attachment_kind("application/pdf", "voice"), "file");
        assert_eq!(attachment_kind("text/plain", "image"), "file");
        assert_eq!(attachment_kind("video/webm", "voice"), "voice");
        assert_eq!(attachment_kind("audio/ogg", "audio"), "audio");
    }
}
