//! The one portable error type shared by every backend trait (store, bus, locker, outbox).
//!
//! Backends map their native failures onto these variants so callers can branch on
//! [`Error::kind`] without knowing which backend they talk to (the `object_store` model).

use std::fmt;

/// A boxed error from a backend's own library, kept as the [`Error::Backend`] source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for backend operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by [`Store`](crate::Store), [`Bus`](crate::Bus),
/// [`Locker`](crate::Locker) and [`Outbox`](crate::Outbox) implementations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object (or lease, or delivery) does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Kind of the missing thing (an object kind, `lease`, `delivery`, ...).
        kind: String,
        /// Its id or name.
        id: String,
    },
    /// A create collided with an existing object of the same kind and name.
    #[error("{kind} named {name:?} already exists")]
    AlreadyExists {
        /// Object kind.
        kind: String,
        /// The contested name.
        name: String,
    },
    /// A conditional write lost: version mismatch, stale fencing token, lost lease,
    /// or a deletion blocked by objects that still reference the target.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicted, for humans.
        message: String,
    },
    /// The request itself is invalid; `field` names the offending field when known.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Dotted path of the offending field (`spec.replicas`, `limit`, ...).
        field: String,
        /// Why it is invalid.
        message: String,
    },
    /// The backend cannot be reached right now; retrying later may succeed.
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
    /// Any other backend failure.
    #[error("backend error: {source}")]
    Backend {
        /// The backend's own error.
        #[source]
        source: BoxError,
    },
}

/// Coarse classification of an [`Error`], stable across backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::AlreadyExists`].
    AlreadyExists,
    /// See [`Error::Conflict`].
    Conflict,
    /// See [`Error::Invalid`].
    Invalid,
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::Backend`].
    Backend,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Backend => "backend",
        })
    }
}

impl Error {
    /// The portable classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Invalid { .. } => ErrorKind::Invalid,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }

    /// Whether retrying the same call later may succeed (only [`ErrorKind::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(kind: impl Into<String>, id: impl ToString) -> Self {
        Error::NotFound {
            kind: kind.into(),
            id: id.to_string(),
        }
    }

    /// Shorthand for [`Error::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
        }
    }

    /// Wraps a backend library error as [`Error::Backend`].
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Error::Backend {
            source: source.into(),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::invalid("body", err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_classify_every_variant() {
        assert_eq!(Error::not_found("Widget", "x").kind(), ErrorKind::NotFound);
        assert_eq!(Error::conflict("v").kind(), ErrorKind::Conflict);
        assert_eq!(Error::invalid("spec.a", "bad").kind(), ErrorKind::Invalid);
        assert!(Error::unavailable("down").is_transient());
        assert!(!Error::backend("boom").is_transient());
        assert_eq!(
            Error::invalid("spec.a", "must be positive").to_string(),
            "invalid spec.a: must be positive"
        );
    }
}
