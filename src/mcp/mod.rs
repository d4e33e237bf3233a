//! gts-webchat as an MCP server, so any MCP-capable host (Claude Code, Codex, Cursor, Gemini
//! CLI, opencode, Claude Desktop) can use chat as tools: `gts-webchat mcp --as PERSONA` over
//! stdio, and `/mcp` on the relay (Streamable HTTP, session-token auth).
//!
//! - `chat`: where messages come from (the relay, or the persona's daemon).
//! - `server`: the tools and resources.
//! - `watch`: resource subscriptions.

pub mod chat;
pub mod server;
pub mod watch;
