//! The CLI's error: one line of text that says what was wrong and what to do.

use std::fmt;

/// An error shown to the user as `directfile: error: <message>`.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the source said.
        f.write_str(&self.0.replace('\n', " "))
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        CliError(err.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// Builds a [`CliError`] from `format!` arguments.
macro_rules! cli_error {
    ($($arg:tt)*) => { $crate::error::CliError(format!($($arg)*)) };
}
pub(crate) use cli_error;
