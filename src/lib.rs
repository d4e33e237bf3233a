//! gts-webchat: a chat relay, client CLI and daemon in which people and AI/CLI sessions are
//! equal, named participants. The binary is a thin shell over this library, which tests and
//! benches share.

pub mod api;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod failpoints;
pub mod hosts;
pub mod mcp;
pub mod private_fs;
pub mod relay;
pub mod service_manager;
