//! directfile-journal
