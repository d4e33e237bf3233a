//! Waking AI hosts (Codex, Claude Code, Gemini CLI, Qwen Code, opencode, Copilot CLI, aider,
//! Cursor, goose) for one turn per chat message: `gts-webchat run-host PRESET`, which the daemon
//! runs as its hook (`daemon start --runner PRESET`).
//!
//! - `presets`: each host as a row of data.
//! - `prompt`: the fenced prompt.
//! - `turn`: running one turn and remembering its session.
//! - `output`: reading the answer, the session id and failures from what a host prints.
//! - `live`: hooks of interactive sessions (`gts-webchat host-hook`).
//! - `install`: our MCP server and hooks in each host's config (`gts-webchat hosts`).

pub mod install;
pub mod live;
pub mod output;
pub mod presets;
pub mod prompt;
pub mod turn;
