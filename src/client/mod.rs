//! The client side: a typed HTTP client for the relay and the local persona store.

/// Installs the process-wide TLS crypto provider (ring) that reqwest and lettre use.
/// Idempotent: later calls are no-ops.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
