//! [`ConfigError`]: what went wrong reading, expanding or writing a config: one readable line,
//! its causes (a CLI prints them with `--verbose`), and the exit status a CLI should use.

use crate::ClientError;

/// What went wrong, as the user sees it.
#[derive(Debug)]
pub struct ConfigError {
    /// The one line printed.
    pub message: String,
    /// What led to it, outermost first (printed with `--verbose`).
    pub causes: Vec<String>,
    /// Exit status: 1 for errors, 2 for usage.
    pub code: u8,
    /// What kind of failure it is, when that is known: `AlreadyExists` (a create found the
    /// object), `Unavailable` (the store or API did not answer), … An API answers with it.
    pub kind: Option<threeport_core::ErrorKind>,
}

impl ConfigError {
    /// An error (exit status 1).
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
            causes: Vec::new(),
            code: 1,
            kind: None,
        }
    }

    /// A usage error (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        ConfigError {
            code: 2,
            ..ConfigError::new(message)
        }
    }

    /// The same error, of kind `kind`.
    pub fn of_kind(mut self, kind: threeport_core::ErrorKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// The same error, explained by `context` first: `context: message`.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.causes.insert(0, self.message.clone());
        self.message = format!("{}: {}", context.into(), self.message);
        self
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ClientError> for ConfigError {
    fn from(err: ClientError) -> Self {
        let mut error = ConfigError::new(err.to_string());
        error.causes.push(format!("{err:?}"));
        error
    }
}

impl From<threeport_core::Error> for ConfigError {
    /// A store's or engine's error, its kind kept (an API answers with it).
    fn from(err: threeport_core::Error) -> Self {
        ConfigError::new(err.to_string()).of_kind(err.kind())
    }
}
