//! directfile
