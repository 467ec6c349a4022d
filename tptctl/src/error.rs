//! The CLI's error: the config module's ([`threeport_api::config::ConfigError`]): one readable
//! line, its causes for `--verbose`, and the exit code.

pub use threeport_api::config::ConfigError as CliError;
