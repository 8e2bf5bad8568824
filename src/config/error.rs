//! Why settings could not be resolved, each kind with Gunicorn's exit code and message.

use std::fmt;

/// Why the settings could not be resolved; `main` maps each kind to Gunicorn's exit code.
#[derive(Debug)]
pub enum ConfigError {
    /// Clap's own usage error (unknown flag, missing value): printed by clap, exit 2.
    Usage(clap::Error),
    /// An argument of the wrong type (argparse's `invalid int value`): exit 2.
    BadArgument(String),
    /// A value a setting refuses: `Error: <msg>`, exit 1.
    Invalid(String),
    /// The configuration file failed to run (message and traceback), exit 1.
    File(String),
    /// A value in the configuration file is invalid, exit 1.
    FileValue {
        name: String,
        value: String,
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(e) => write!(f, "{e}"),
            ConfigError::BadArgument(msg) | ConfigError::Invalid(msg) | ConfigError::File(msg) => {
                write!(f, "{msg}")
            }
            ConfigError::FileValue {
                name,
                value,
                reason,
            } => {
                // Gunicorn prints "Invalid value…\n" and then "\nError: …", each with a
                // newline of print()'s own: two empty lines between them.
                write!(f, "Invalid value for {name}: {value}\n\n\nError: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}
