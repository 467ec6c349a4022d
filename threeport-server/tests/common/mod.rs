//! Test support shared by the server's test binaries.

#![allow(dead_code)] // each test binary uses its own subset

/// A plain HTTP client. The workspace's rustls has only the `ring` provider, which must be
/// installed for clients built without an explicit TLS configuration.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
