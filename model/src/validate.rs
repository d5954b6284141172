//! Schema validation (IST0106). PLACEHOLDER.
