//! The engine's error type: every failure names what was wrong (file, tensor, field, offset).

use std::fmt;

/// An engine error with a message that says what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A file could not be read or written.
    Io(String),
    /// A file's contents are malformed or truncated.
    Format(String),
    /// The model or a request is outside what the engine supports.
    Unsupported(String),
    /// A caller-supplied argument is invalid (shape, index, capacity).
    InvalidArgument(String),
    /// An external tool (pip, python) failed or is missing.
    Tool(String),
    /// The specblock library reported an error.
    Library(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(m) => write!(f, "I/O error: {m}"),
            Error::Format(m) => write!(f, "malformed file: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Tool(m) => write!(f, "tool error: {m}"),
            Error::Library(m) => write!(f, "specblock: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<specblock::error::Error> for Error {
    fn from(e: specblock::error::Error) -> Self {
        Error::Library(e.to_string())
    }
}

/// Result with the engine's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
