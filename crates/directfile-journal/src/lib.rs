//! directfile-journal
#![forbid(unsafe_code)]
pub mod format;
pub mod recovery;
