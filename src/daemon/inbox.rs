//! `inbox.jsonl`: one JSON record per delivered event, appended and fsynced before the cursor
//! moves or a hook runs. A crash can leave at most a partial last line, which recovery cuts off.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::messages::Message;
use crate::private_fs::{self, FsError};

/// One line of inbox.jsonl: the relay's message fields plus where it sits locally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxRecord {
    /// 1, 2, 3… in file order; the hook runner's progress is counted in these.
    pub seq: u64,
    #[serde(flatten)]
    pub message: Message,
    /// When the daemon stored it (RFC 3339).
    pub received_at: String,
    /// Local copies of the attachments, in the same order (empty until downloaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_paths: Vec<String>,
}

/// A record and the byte offset just after its line.
#[derive(Debug, Clone)]
pub struct Placed {
    pub record: InboxRecord,
    pub end: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("encoding an inbox record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The append side, owned by the receiver.
pub struct Inbox {
    path: PathBuf,
    file: File,
    /// Length of the file up to its last complete line.
    len: u64,
    last_seq: u64,
    last_cursor: Option<String>,
}

/// Reads backwards from the end until `n` complete lines are found (or the start). Returns
/// (offset of the first returned line, the lines). A trailing partial line is ignored.
pub fn read_tail(file: &mut File, len: u64, n: usize) -> std::io::Result<(u64, Vec<String>)> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let newlines = buf.iter().filter(|&&b| b == b'\n').count();
        // n lines need n+1 newlines (one before the first) unless we reached the start.
        if newlines > n || start == 0 {
            break;
        }
        let step = CHUNK.min(start);
        start -= step;
        let mut chunk = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    // Cut the partial trailing line, if any.
    let complete = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => &buf[..=i],
        None => &buf[..0],
    };
    // Unless we reached the start, bytes before the first newline belong to a line that
    // began before the chunk: skip them.
    let (mut offset, body) = if start > 0 {
        match complete.iter().position(|&b| b == b'\n') {
            Some(i) => (start + i as u64 + 1, &complete[i + 1..]),
            None => (len, &complete[..0]),
        }
    } else {
        (0, complete)
    };
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    lines.pop(); // the empty piece after the final newline
    let skip = lines.len().saturating_sub(n);
    for l in &lines[..skip] {
        offset += l.len() as u64 + 1;
    }
    Ok((
        offset,
        lines[skip..]
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect(),
    ))
}

/// Length of the file up to and including its last newline.
fn complete_len(file: &mut File, len: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = len;
    while end > 0 {
        let step = CHUNK.min(end);
        let start = end - step;
        let mut chunk = vec![0u8; step as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

impl Inbox {
    /// Opens (creating) the inbox, cuts a partial last line left by a crash, and finds the last
    /// record's seq and cursor.
    pub fn open(path: &Path) -> Result<Inbox, InboxError> {
        let file = private_fs::open_append(path)?;
        let mut reader = File::open(path).map_err(|e| FsError::new("opening", path, e))?;
        let len = reader
            .metadata()
            .map_err(|e| FsError::new("reading the size of", path, e))?
            .len();
        let good = complete_len(&mut reader, len).map_err(|e| FsError::new("reading", path, e))?;
        if good < len {
            tracing::warn!(
                path = %path.display(),
                cut = len - good,
                "cutting a partial last line left by a crash"
            );
            file.set_len(good)
                .map_err(|e| FsError::new("truncating", path, e))?;
            file.sync_all()
                .map_err(|e| FsError::new("syncing", path, e))?;
        }
        let mut last_seq = 0;
        let mut last_cursor = None;
        let (_, lines) =
            read_tail(&mut reader, good, 1).map_err(|e| FsError::new("reading", path, e))?;
        if let Some(line) = lines.last() {
            match serde_json::from_str::<InboxRecord>(line) {
                Ok(r) => {
                    last_seq = r.seq;
                    last_cursor = Some(r.message.cursor);
                }
                Err(e) => tracing::warn!("the last inbox line does not parse: {e}"),
            }
        }
        Ok(Inbox {
            path: path.to_path_buf(),
            file,
            len: good,
            last_seq,
            last_cursor,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    pub fn last_cursor(&self) -> Option<&str> {
        self.last_cursor.as_deref()
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next record's seq.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Appends records (seq already set) and fsyncs once. On failure (a full disk, say) the
    /// file is cut back to its last complete line, so a retry appends cleanly.
    pub fn append(&mut self, records: &[InboxRecord]) -> Result<Vec<Placed>, InboxError> {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(records.len());
        for r in records {
            serde_json::to_writer(&mut bytes, r)?;
            bytes.push(b'\n');
            ends.push(self.len + bytes.len() as u64);
        }
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(self.len);
            return Err(FsError::new("appending to", &self.path, e).into());
        }
        self.len += bytes.len() as u64;
        if let Some(last) = records.last() {
            self.last_seq = last.seq;
            self.last_cursor = Some(last.message.cursor.clone());
        }
        Ok(records
            .iter()
            .cloned()
            .zip(ends)
            .map(|(record, end)| Placed { record, end })
            .collect())
    }
}

/// Every record after byte `offset` (the hook runner's backlog at start).
pub fn read_from(path: &Path, offset: u64) -> Result<Vec<Placed>, FsError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FsError::new("opening", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| FsError::new("reading the size of", path, e))?
        .len();
    if offset >= len {
        return Ok(Vec::new());
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| FsError::new("seeking in", path, e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| FsError::new("reading", path, e))?;
    let mut out = Vec::new();
    let mut pos = offset;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line.last() != Some(&b'\n') {
            break; // partial line: not a record yet
        }
        pos += line.len() as u64;
        match serde_json::from_slice::<InboxRecord>(&line[..line.len() - 1]) {
            Ok(record) => out.push(Placed { record, end: pos }),
            Err(e) => tracing::warn!("skipping an inbox line that does not parse: {e}"),
        }
    }
    Ok(out)
}

/// The last `n` lines of an inbox (for tail).
pub fn last_lines(path: &Path, n: usize) -> Result<(u64, Vec<String>), FsError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, Vec::new())),
        Err(e) => return Err(FsError::new("opening", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| FsError::new("reading the size of", path, e))?
        .len();
    let (_, lines) = read_tail(&mut file, len, n).map_err(|e| FsError::new("reading", path, e))?;
    let end = complete_len(&mut file, len).map_err(|e| FsError::new("reading", path, e))?;
    Ok((end, lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;
    use crate::api::messages::EventType;

    fn rec(seq: u64) -> InboxRecord {
        InboxRecord {
            seq,
            message: Message {
                cursor: (seq * 10).to_string(),
                event_type: EventType::Message,
                message_id: format!("msg_{seq}"),
                from: "a".into(),
                from_name: "A".into(),
                from_kind: Kind::Human,
                to: "b".into(),
                text: format!("text {seq}\nwith a newline"),
                created_at: "2026-01-01T00:00:00Z".into(),
                reply_to: None,
                group_id: None,
                attachments: vec![],
                edited_at: None,
                deleted: false,
                read: false,
                caption: None,
                channel: None,
            },
            received_at: "2026-01-01T00:00:00Z".into(),
            attachment_paths: vec![],
        }
    }

    #[test]
    fn append_recover_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.jsonl");
        let mut inbox = Inbox::open(&path).unwrap();
        assert_eq!(inbox.next_seq(), 1);
        let placed = inbox.append(&[rec(1), rec(2)]).unwrap();
        assert_eq!(placed[1].end, inbox.len());
        // A crash mid-write leaves half a line.
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"{\"seq\":3,\"mess").unwrap();
        }
        let mut inbox = Inbox::open(&path).unwrap();
        assert_eq!(inbox.last_seq(), 2);
        assert_eq!(inbox.last_cursor(), Some("20"));
        inbox.append(&[rec(3)]).unwrap();
        let all = read_from(&path, 0).unwrap();
        assert_eq!(
            all.iter().map(|p| p.record.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let after_first = read_from(&path, all[0].end).unwrap();
        assert_eq!(after_first.len(), 2);
        let (_, tail) = last_lines(&path, 2).unwrap();
        assert_eq!(tail.len(), 2);
        assert!(tail[1].contains("\"seq\":3"));
        let (_, tail) = last_lines(&path, 10).unwrap();
        assert_eq!(tail.len(), 3);
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever a crash or a stray writer left after real records, opening cuts it back to
        /// whole lines and reading skips what does not parse; nothing panics.
        #[test]
        fn garbage_after_records_is_survivable(garbage in proptest::collection::vec(any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("inbox.jsonl");
            Inbox::open(&path).unwrap().append(&[rec(1), rec(2)]).unwrap();
            {
                let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                f.write_all(&garbage).unwrap();
            }
            let mut inbox = Inbox::open(&path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            prop_assert!(bytes.is_empty() || bytes.ends_with(b"\n"));
            let read = read_from(&path, 0).unwrap();
            prop_assert!(read.iter().filter(|p| p.record.seq <= 2).count() >= 2);
            let next = inbox.next_seq().max(3);
            inbox.append(&[rec(next)]).unwrap();
            prop_assert_eq!(read_from(&path, 0).unwrap().last().unwrap().record.seq, next);
            let _ = last_lines(&path, 5).unwrap();
        }

        /// Any text (newlines, quotes, unicode) round-trips through a line.
        #[test]
        fn texts_round_trip(texts in proptest::collection::vec(any::<String>(), 1..8)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("inbox.jsonl");
            let mut inbox = Inbox::open(&path).unwrap();
            let records: Vec<InboxRecord> = texts.iter().enumerate().map(|(i, t)| {
                let mut r = rec(i as u64 + 1);
                r.message.text = t.clone();
                r
            }).collect();
            inbox.append(&records).unwrap();
            let back: Vec<InboxRecord> = read_from(&path, 0).unwrap().into_iter().map(|p| p.record).collect();
            prop_assert_eq!(back, records);
        }
    }

    #[test]
    fn tail_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.jsonl");
        let mut inbox = Inbox::open(&path).unwrap();
        let mut big = rec(1);
        big.message.text = "x".repeat(100 * 1024);
        inbox.append(&[big, rec(2), rec(3)]).unwrap();
        let (_, tail) = last_lines(&path, 3).unwrap();
        assert_eq!(tail.len(), 3);
        assert!(tail[0].len() > 100 * 1024);
        let inbox = Inbox::open(&path).unwrap();
        assert_eq!(inbox.last_seq(), 3);
    }
}
