//! Bearer-token authentication: tokens are kept only as SHA-256 hashes.
//!
//! A token is `tp_` and 64 hex digits of system randomness. The server holds the hashes of
//! the tokens it accepts (a file of hex lines, see [`TokenSet::load`]); a request to the API
//! without `Authorization: Bearer <token>` for one of them gets 401.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use threeport_core::Error;

/// The hashes of the tokens the API accepts.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    hashes: HashSet<[u8; 32]>,
}

/// A freshly minted token and the hash to store for it.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The token: shown once, to whoever will use it; never stored.
    pub token: String,
    /// Its SHA-256, in hex: what a token file holds.
    pub hash: String,
}

/// Mints a token from the operating system's randomness.
pub fn mint_token() -> Result<MintedToken, Error> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::unavailable("the system random generator failed"))?;
    let token = format!("tp_{}", hex::encode(bytes));
    let hash = hash_hex(&token);
    Ok(MintedToken { token, hash })
}

fn hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

fn hash_hex(token: &str) -> String {
    hex::encode(hash(token))
}

impl TokenSet {
    /// No tokens: every request is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts the token whose SHA-256 is `hash_hex`.
    pub fn add_hash(&mut self, hash_hex: &str) -> Result<(), Error> {
        let bytes = hex::decode(hash_hex.trim()).ok().filter(|b| b.len() == 32);
        let Some(bytes) = bytes else {
            return Err(Error::invalid(
                "token hash",
                format!("{hash_hex:?} is not a SHA-256 in hex (64 hex digits)"),
            ));
        };
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        self.hashes.insert(out);
        Ok(())
    }

    /// Reads a token file: one SHA-256 hex hash per line; blank lines and `#` comments skipped.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("token file", format!("cannot read {}: {e}", path.display()))
        })?;
        let mut set = TokenSet::new();
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                set.add_hash(line)?;
            }
        }
        Ok(set)
    }

    /// Whether `token` is one of the accepted ones.
    pub fn accepts(&self, token: &str) -> bool {
        self.hashes.contains(&hash(token))
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// Marks a request whose connection presented a client certificate the client CA signed (the
/// HTTPS server, [`crate::tls`], sets it); such a request needs no token.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate;

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1), spaces around the token are ignored.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware: lets a request through with a bearer token from the set, or over a connection
/// authenticated by a client certificate (see [`crate::tls`]).
pub async fn require_token(
    State(tokens): State<Arc<TokenSet>>,
    request: Request,
    next: Next,
) -> Response {
    if request.extensions().get::<ClientCertificate>().is_some() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if tokens.accepts(token) => next.run(request).await,
        other => {
            let message = if other.is_some() {
                "the bearer token is not valid"
            } else {
                "an Authorization: Bearer <token> header is required"
            };
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({ "error": "unauthorized", "message": message })),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_accepted_by_their_hash_only() {
        let minted = mint_token().unwrap();
        let mut set = TokenSet::new();
        assert!(!set.accepts(&minted.token));
        set.add_hash(&minted.hash).unwrap();
        assert!(set.accepts(&minted.token));
        assert!(!set.accepts(&minted.hash), "the hash is not a token");
        assert!(!set.accepts(&mint_token().unwrap().token));
        assert!(set.add_hash("abc").is_err());
    }
}
