//! [`CliError`]: one readable line, its causes for `--verbose`, and the exit code.

use threeport_api::ClientError;

/// What went wrong, as the user sees it.
#[derive(Debug)]
pub struct CliError {
    /// The one line printed.
    pub message: String,
    /// What led to it, outermost first (printed with `--verbose`).
    pub causes: Vec<String>,
    /// Exit status: 1 for errors, 2 for usage.
    pub code: u8,
}

impl CliError {
    /// An error (exit status 1).
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            causes: Vec::new(),
            code: 1,
        }
    }

    /// A usage error (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            ..CliError::new(message)
        }
    }

    /// The same error, explained by `context` first: `context: message`.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.causes.insert(0, self.message.clone());
        self.message = format!("{}: {}", context.into(), self.message);
        self
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ClientError> for CliError {
    fn from(err: ClientError) -> Self {
        let mut error = CliError::new(err.to_string());
        error.causes.push(format!("{err:?}"));
        error
    }
}
