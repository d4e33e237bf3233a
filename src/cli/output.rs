//! How the CLI prints messages and maps library errors to one line and an exit code.

use std::io::Write;

use crate::api::ErrorCode;
use crate::api::messages::{EventType, Message};
use crate::client::{ClientError, LoginError, PersonaError};
use crate::private_fs::FsError;

use super::{Failure, exit};

/// Text a sender wrote, made safe to print on a terminal: control characters (ESC and the
/// rest of C0 but newline and tab, DEL, C1) and the bidirectional overrides that reorder what
/// is shown are printed as visible `\x..` / `\u{..}` escapes. Otherwise a message could set
/// the terminal's title, write its clipboard (OSC 52), clear the screen, or disguise itself.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// One message as a person reads it: time, sender, text, then attachment links. Everything
/// the sender controls is passed through `terminal_safe`.
pub fn message_text(m: &Message, relay_base: &str) -> String {
    terminal_safe(&message_text_raw(m, relay_base))
}

fn message_text_raw(m: &Message, relay_base: &str) -> String {
    let who = format!("{} ({})", m.from_name, m.from);
    let kind = if m.from_kind == crate::api::Kind::Agent {
        " [agent]"
    } else {
        ""
    };
    let place = match &m.group_id {
        Some(g) => format!(" in group:{g}"),
        None => String::new(),
    };
    let head = format!("[{}] {who}{kind}{place}", m.created_at);
    let mut out = match m.event_type {
        EventType::Message => {
            let reply = m
                .reply_to
                .as_ref()
                .map(|r| format!(" (reply to {r})"))
                .unwrap_or_default();
            format!("{head}{reply}: {}", indent_rest(&m.text))
        }
        EventType::Edit => format!("{head} edited {}: {}", m.message_id, indent_rest(&m.text)),
        EventType::Delete => format!("{head} deleted {}", m.message_id),
        EventType::Read => format!("{head} read {}", m.message_id),
        EventType::Caption => {
            let c = m.caption.clone().unwrap_or_default();
            match (&c.caption_failed, &c.translation) {
                (Some(why), None) if c.transcript.is_none() => {
                    format!("{head} no caption for {}: {why}", m.message_id)
                }
                _ => {
                    let mut line = format!("{head} caption for {}", m.message_id);
                    if let Some(t) = &c.transcript {
                        let lang = c.language.as_deref().unwrap_or("?");
                        line.push_str(&format!("\n    transcript ({lang}): {}", indent_rest(t)));
                    }
                    if let Some(t) = &c.translation {
                        let lang = c.translation_language.as_deref().unwrap_or("?");
                        line.push_str(&format!("\n    translation ({lang}): {}", indent_rest(t)));
                    }
                    if let Some(a) = &c.audio {
                        let url = if a.url.starts_with("http") {
                            a.url.clone()
                        } else {
                            format!("{relay_base}{}", a.url)
                        };
                        line.push_str(&format!("\n    read aloud: {url}"));
                    }
                    line
                }
            }
        }
    };
    if m.event_type == EventType::Message {
        out.push_str(&format!("  [{}]", m.message_id));
    }
    for a in &m.attachments {
        let url = if a.url.starts_with("http") {
            a.url.clone()
        } else {
            format!("{relay_base}{}", a.url)
        };
        out.push_str(&format!(
            "\n    {} {} ({}, {}) {url}",
            a.kind,
            a.name,
            a.mime,
            human_size(a.size)
        ));
    }
    out
}

fn indent_rest(text: &str) -> String {
    text.replace('\n', "\n    ")
}

pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints one JSON value as a line and flushes (programs read these as they come).
pub fn json_line(v: &impl serde::Serialize) -> Result<(), Failure> {
    let line = serde_json::to_string(v)
        .map_err(|e| Failure::new(exit::INTERNAL, format!("encoding output: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .map_err(|e| Failure::new(exit::LOCAL, format!("writing to stdout: {e}")))
}

/// Prints a line of text and flushes.
pub fn text_line(s: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")
        .and_then(|_| out.flush())
        .map_err(|e| Failure::new(exit::LOCAL, format!("writing to stdout: {e}")))
}

fn hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidToken | ErrorCode::Unauthorized => {
            "; log in again with `gts-webchat persona EMAIL`"
        }
        ErrorCode::RateLimited => "; wait a few minutes and try again",
        ErrorCode::EmailNotConfigured => "; ask the relay's operator to configure SMTP",
        _ => "",
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match &e {
            ClientError::BadUrl { .. } => Failure::new(exit::USAGE, e.to_string()),
            ClientError::Unreachable { relay, reason, .. } => Failure::new(
                exit::UNREACHABLE,
                format!(
                    "cannot reach the relay at {relay} ({reason}); is it running? Start one with `gts-webchat relay`, or point --relay / $RELAY_URL at yours"
                ),
            ),
            ClientError::Refused {
                code,
                message,
                action,
                ..
            } => Failure::new(
                exit::REFUSED,
                format!(
                    "the relay refused {action}: {message} [{code}]{}",
                    hint(*code)
                ),
            ),
            ClientError::LocalFile { .. } => Failure::new(exit::LOCAL, e.to_string()),
            ClientError::TooLarge { .. } => Failure::new(exit::REFUSED, e.to_string()),
            ClientError::Protocol { .. } => Failure::new(
                exit::UNREACHABLE,
                format!("{e}; is that URL really a gts-webchat relay?"),
            ),
        }
    }
}

impl From<PersonaError> for Failure {
    fn from(e: PersonaError) -> Failure {
        Failure::new(exit::LOCAL, e.to_string())
    }
}

impl From<FsError> for Failure {
    fn from(e: FsError) -> Failure {
        Failure::new(exit::LOCAL, e.to_string())
    }
}

impl From<LoginError> for Failure {
    fn from(e: LoginError) -> Failure {
        match e {
            LoginError::Client(c) => c.into(),
            LoginError::Persona(p) => p.into(),
            LoginError::BadInput(m) => Failure::new(exit::USAGE, m),
            LoginError::NeedCode { .. } => Failure::new(exit::USAGE, e.to_string()),
            LoginError::AddressTaken { .. } | LoginError::Expired { .. } => {
                Failure::new(exit::REFUSED, e.to_string())
            }
        }
    }
}

/// Renders rows as left-aligned columns (the first row is the header).
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        let hostile =
            "hi\u{1b}]0;pwned\u{7}\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}txt.exe";
        let safe = terminal_safe(hostile);
        assert_eq!(
            safe,
            "hi\\x1b]0;pwned\\x07\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x0d\\x9b31m\\u{202e}txt.exe"
        );
        assert_eq!(
            terminal_safe("two\nlines\tand tabs, café ✓"),
            "two\nlines\tand tabs, café ✓"
        );
    }

    proptest! {
        /// Whatever a message holds, what is printed has no control character but newline and
        /// tab.
        #[test]
        fn nothing_but_newline_and_tab_survives(s in any::<String>()) {
            let out = terminal_safe(&s);
            prop_assert!(!out.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        }
    }
}
