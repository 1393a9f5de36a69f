//! Reading checkpoint files (feature `std`).

pub mod safetensors;

use std::string::String;

/// A file that could not be read or is malformed; the message names the file, tensor or field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError(pub String);

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Builds a [`LoadError`] from format arguments.
#[macro_export]
#[doc(hidden)]
macro_rules! load_err {
    ($($arg:tt)*) => { $crate::io::LoadError(std::format!($($arg)*)) };
}
