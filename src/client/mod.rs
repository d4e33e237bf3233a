//! The client side: a typed HTTP client for the relay, the local persona store, and login.

pub mod login;
pub mod personas;
pub mod relay_client;

pub use login::{DEFAULT_RELAY, Ensured, IdentitySpec, LoginError};
pub use personas::{Persona, PersonaError, PersonaStore};
pub use relay_client::{ClientError, ClientResult, RelayClient};

/// Installs the process-wide TLS crypto provider (ring) that reqwest and lettre use.
/// Idempotent: later calls are no-ops.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A fresh `client_message_id`: `PREFIX-` and 24 random hex digits. Sending twice with the same
/// id stores one message, so every retry of one send reuses it.
pub fn new_client_message_id(prefix: &str) -> String {
    let mut raw = [0u8; 12];
    rand::fill(&mut raw);
    format!("{prefix}-{}", hex::encode(raw))
}
