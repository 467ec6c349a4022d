//! Bearer-token authentication: tokens are kept only as SHA-256 hashes.
//!
//! A token is `tp_` and 64 hex digits of system randomness. The server holds the hashes of
//! the tokens it accepts (a file of hex lines, see [`TokenSet::load`]); a request to the API
//! without `Authorization: Bearer <token>` for one of them gets 401.
//!
//! A token may be limited to reconciling some kinds ([`Scope::Reconcile`]): it reads
//! everything, but writes (objects, status, leases, notifications) only objects of its kinds,
//! and only through the engine API ([`crate::remote`]); the REST API's writes answer it 403.

use std::collections::{BTreeSet, HashMap};
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

/// The hashes of the tokens the API accepts, each with what it may do.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    hashes: HashMap<[u8; 32], Scope>,
}

/// What a request may do, by the credentials it came with; handlers find it among the
/// request's extensions (absent when authentication is off: everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything (a token without limits, a client certificate).
    Full,
    /// A remote reconciler of these kinds: reads anything, writes only objects of these kinds,
    /// through the engine API.
    Reconcile(BTreeSet<String>),
}

impl Scope {
    /// Whether objects of `kind` may be written.
    pub fn may_write(&self, kind: &str) -> bool {
        match self {
            Scope::Full => true,
            Scope::Reconcile(kinds) => kinds.contains(kind),
        }
    }

    /// `Ok` if objects of `kind` may be written; else why not, for a 403.
    pub fn check_write(&self, kind: &str) -> Result<(), String> {
        match self {
            Scope::Reconcile(kinds) if !self.may_write(kind) => Err(format!(
                "this token reconciles {} only: it cannot write {kind} objects",
                kinds.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// The `kinds=` suffix of a token file line (`<hash> kinds=Certificate,Issuer`).
    fn parse(text: &str) -> Result<Scope, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Scope::Full);
        }
        let kinds = text.strip_prefix("kinds=").ok_or_else(|| {
            Error::invalid(
                "token file",
                format!("{text:?}: after the hash only `kinds=<Kind>,<Kind>` may follow"),
            )
        })?;
        let mut set = BTreeSet::new();
        for kind in kinds.split(',').map(str::trim) {
            threeport_core::object::validate_kind(kind)
                .map_err(|e| Error::invalid("token file", format!("kinds={kinds}: {e}")))?;
            set.insert(kind.to_owned());
        }
        Ok(Scope::Reconcile(set))
    }
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

    /// Accepts the token whose SHA-256 is `hash_hex`, for everything.
    pub fn add_hash(&mut self, hash_hex: &str) -> Result<(), Error> {
        self.add_scoped(hash_hex, Scope::Full)
    }

    /// Accepts the token whose SHA-256 is `hash_hex`, for what `scope` allows.
    pub fn add_scoped(&mut self, hash_hex: &str, scope: Scope) -> Result<(), Error> {
        let bytes = hex::decode(hash_hex.trim()).ok().filter(|b| b.len() == 32);
        let Some(bytes) = bytes else {
            return Err(Error::invalid(
                "token hash",
                format!("{hash_hex:?} is not a SHA-256 in hex (64 hex digits)"),
            ));
        };
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        self.hashes.insert(out, scope);
        Ok(())
    }

    /// Reads a token file: one SHA-256 hex hash per line, optionally followed by
    /// `kinds=<Kind>,<Kind>` for a token limited to reconciling those kinds ([`Scope`]); blank
    /// lines and `#` comments skipped.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("token file", format!("cannot read {}: {e}", path.display()))
        })?;
        let mut set = TokenSet::new();
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                let (hash, scope) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
                set.add_scoped(hash, Scope::parse(scope)?)?;
            }
        }
        Ok(set)
    }

    /// Whether `token` is one of the accepted ones.
    pub fn accepts(&self, token: &str) -> bool {
        self.hashes.contains_key(&hash(token))
    }

    /// What `token` may do, if it is accepted.
    pub fn scope(&self, token: &str) -> Option<&Scope> {
        self.hashes.get(&hash(token))
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
/// authenticated by a client certificate (see [`crate::tls`]), with its [`Scope`] among the
/// request's extensions. A token limited to reconciling kinds writes through the engine API
/// only (which checks the kinds); elsewhere it may only read.
pub async fn require_token(
    State(tokens): State<Arc<TokenSet>>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.extensions().get::<ClientCertificate>().is_some() {
        request.extensions_mut().insert(Scope::Full);
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented.and_then(|token| tokens.scope(token)) {
        Some(Scope::Reconcile(kinds))
            if !request.method().is_safe() && !request.uri().path().starts_with("/v0/engine/") =>
        {
            let message = format!(
                "this token reconciles {} only: it reads the API and writes through /v0/engine",
                kinds.iter().cloned().collect::<Vec<_>>().join(", ")
            );
            forbidden(message)
        }
        Some(scope) => {
            request.extensions_mut().insert(scope.clone());
            next.run(request).await
        }
        None => {
            let message = if presented.is_some() {
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

/// A 403 answer in the API's error format.
pub fn forbidden(message: String) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "error": "forbidden", "message": message })),
    )
        .into_response()
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

    #[test]
    fn token_files_limit_tokens_to_kinds() {
        let (full, scoped) = (mint_token().unwrap(), mint_token().unwrap());
        let dir = std::env::temp_dir().join(format!("tokens-{}", std::process::id()));
        std::fs::write(
            &dir,
            format!(
                "# tokens\n{}\n{} kinds=Certificate,Issuer\n",
                full.hash, scoped.hash
            ),
        )
        .unwrap();
        let set = TokenSet::load(&dir).unwrap();
        assert_eq!(set.scope(&full.token), Some(&Scope::Full));
        let scope = set.scope(&scoped.token).unwrap();
        assert!(scope.may_write("Certificate") && scope.may_write("Issuer"));
        assert!(!scope.may_write("WorkloadInstance"));
        assert!(
            scope
                .check_write("WorkloadInstance")
                .unwrap_err()
                .contains("Certificate, Issuer")
        );
        std::fs::write(&dir, format!("{} kinds=not a kind\n", scoped.hash)).unwrap();
        assert!(TokenSet::load(&dir).is_err());
        std::fs::write(&dir, format!("{} everything\n", scoped.hash)).unwrap();
        assert!(TokenSet::load(&dir).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
